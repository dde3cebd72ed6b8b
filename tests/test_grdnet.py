import csv

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import ROOT, assert_one_train_step, shipped_configs, vial_cfg
from tfanomaly import guards
from tfanomaly.config import load_config
from tfanomaly.errors import UserError
from tfanomaly.models import blocks, registry
from tfanomaly.run import Run
from tfanomaly.train import load_model, train


def tiny(variant="industrial", channels=1, **over):
    args = [f"model.variant={variant}", f"data.channels={channels}", "data.root=unused"] + [f"{k}={v}" for k, v in over.items()]
    return vial_cfg("unused", *args)


def build(cfg, steps=100):
    keras.utils.set_random_seed(cfg.seed)
    m = registry.build(cfg)
    m.compile_for_training(cfg.train, steps, cfg.train.batch_size)
    return m


def fixed_batch(channels=1, n=8, seed=0):
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    x = np.stack([0.3 + 0.4 * yy * (1 - xx) + 0.05 * g.normal(size=(32, 32)) for _ in range(n)])[..., None]
    x = np.clip(np.repeat(x, channels, -1), 0, 1).astype(np.float32)
    m = np.zeros((n, 32, 32, 1), np.float32)
    m[:, 8:16, 8:16] = 1
    noise = m * 0.8
    xn = x * (1 - 0.5 * m) + 0.5 * noise
    return {"image": tf.constant(x), "perturbed": tf.constant(xn), "perturb_mask": tf.constant(m), "noise": tf.constant(np.repeat(noise, channels, -1))}


@pytest.mark.parametrize("variant,channels", [("industrial", 1), ("industrial", 3), ("full", 1), ("full", 3)])
def test_score_shapes(variant, channels):
    m = registry.build(tiny(variant, channels))
    out = m.score(tf.random.uniform([2, 32, 32, channels]))
    assert out["score"].shape == (2,) and out["heatmap"].shape == (2, 32, 32, 1)
    assert out["reconstruction"].shape == (2, 32, 32, channels)
    h = out["heatmap"].numpy()
    assert h.min() >= 0 and h.max() <= 1


def test_generator_losses_against_numpy():
    m = registry.build(tiny())
    c = m.cfg
    b = fixed_batch()
    x, xn, noise = (b[k].numpy() for k in ("image", "perturbed", "noise"))
    x_hat = np.clip(x + 0.1 * np.sin(7 * x), 0, 1).astype(np.float32)
    z = np.linspace(-1, 1, 8 * 16, dtype=np.float32).reshape(8, 16)
    z_hat = z[::-1].copy()
    fr = np.cos(np.arange(8 * 40, dtype=np.float32)).reshape(8, 40)
    ff = fr * 0.5
    t = {k: v.numpy() for k, v in m.generator_losses(x, xn, noise, x_hat, z, z_hat, fr, ff).items()}
    d = np.abs(x - x_hat)
    huber = np.where(d <= 1, 0.5 * d**2, d - 0.5).mean(axis=(1, 2, 3))
    ssim = tf.image.ssim(x, x_hat, 1.0, filter_size=c.ssim_window).numpy()
    np.testing.assert_allclose(t["con"], 2.0 * huber + 1.0 * (1 - ssim), rtol=1e-5)
    np.testing.assert_allclose(t["adv"], ((fr - ff) ** 2).mean(1), rtol=1e-5)
    np.testing.assert_allclose(t["enc"], np.abs(z - z_hat).mean(1), rtol=1e-5)
    np.testing.assert_allclose(t["nse"], np.abs(np.abs(xn - x_hat) - noise).mean(axis=(1, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(t["g_loss"], t["adv"] + 50 * t["con"] + t["enc"] + 3 * t["nse"], rtol=1e-5)


def test_score_is_one_minus_ssim_and_minmax_heatmap():
    m = registry.build(tiny())
    x = fixed_batch()["image"]
    out = m.score(x)
    _, x_hat, _ = m.generate(x)
    # losses.ssim sums in another order than tf.image.ssim (separable matmuls): float32 rounding apart
    np.testing.assert_allclose(out["score"].numpy(), 1 - tf.image.ssim(x, x_hat, 1.0, filter_size=7).numpy(), atol=2e-5)
    d = np.abs(x.numpy() - x_hat.numpy())
    ref = (d - d.min(axis=(1, 2, 3), keepdims=True)) / (d.max(axis=(1, 2, 3), keepdims=True) - d.min(axis=(1, 2, 3), keepdims=True))
    np.testing.assert_allclose(out["heatmap"].numpy(), ref, atol=1e-5)


def test_full_variant_focal_target_uses_roi():
    cfg = tiny("full", **{"model.roi_polygon": "[[0,0],[15,0],[15,31],[0,31]]"})
    m = registry.build(cfg)
    roi = m.roi.numpy()[..., 0]
    assert roi[:, :16].all() and not roi[:, 17:].any()
    out = m.score(tf.random.uniform([2, 32, 32, 1]))
    assert np.all(out["heatmap"].numpy()[:, :, 17:] == 0)


def test_full_variant_heatmap_sigma_is_a_mirrored_gaussian_of_the_unet_map():
    import cv2

    from tfanomaly.filters import gaussian_window

    m = registry.build(tiny("full"))
    x = fixed_batch(n=3)["image"]
    raw = m.score(x)["heatmap"].numpy()
    m.set_score_options({"heatmap_sigma": 2.0, "score_pool": 1})
    out = m.score(x)
    k = gaussian_window(2.0)
    ref = np.stack([cv2.GaussianBlur(h[..., 0], (k, k), 2.0, borderType=cv2.BORDER_REFLECT) for h in raw])[..., None]
    np.testing.assert_allclose(out["heatmap"].numpy(), ref, atol=1e-5)
    np.testing.assert_allclose(out["score"].numpy(), raw.max(axis=(1, 2, 3)), atol=1e-6)  # the image score is the raw map's
    with pytest.raises(UserError, match="model.heatmap_sigma"):
        load_config(ROOT / "configs" / "vials_demo.yaml", ["model.heatmap_sigma=1", "data.root=unused"])


@pytest.mark.parametrize("variant", ["industrial", "full"])
def test_train_steps_lower_the_generator_loss(variant):
    cfg = tiny(variant, **{"train.learning_rate": 2e-3, "train.lr_schedule": "constant"})
    m = build(cfg)
    b = fixed_batch()
    step = tf.function(m.train_step)
    first = [float(step(b)["con"]) for _ in range(1)][0]
    for _ in range(40):
        out = step(b)
    assert float(out["con"]) < 0.7 * first
    if variant == "full":
        assert np.isfinite(float(out["seg"]))


def test_same_seed_same_first_losses():
    b = fixed_batch()
    a = {k: float(v) for k, v in build(tiny()).train_step(b).items()}
    c = {k: float(v) for k, v in build(tiny()).train_step(b).items()}
    assert a == pytest.approx(c, rel=1e-6)


def test_save_load_round_trip_gives_identical_scores(tmp_path):
    m = registry.build(tiny("full"))
    x = fixed_batch()["image"]
    before = m.score(x)
    m.save(tmp_path / "m.keras")
    from tfanomaly.models.grdnet import GRDNet

    again = keras.models.load_model(tmp_path / "m.keras", safe_mode=True, compile=False)
    assert isinstance(again, GRDNet)
    after = again.score(x)
    for k in before:
        np.testing.assert_array_equal(before[k].numpy(), after[k].numpy())


def test_subsample_shortcut_equals_strided_1x1_conv():
    x = tf.random.uniform([2, 16, 16, 24])
    conv = keras.layers.Conv2D(8, 1, strides=2, padding="same")
    ref = conv(x)
    sub = keras.layers.Conv2D(8, 1)
    sub.build(blocks.Subsample2D().compute_output_shape(x.shape))
    sub.set_weights(conv.get_weights())
    np.testing.assert_allclose(sub(blocks.Subsample2D()(x)).numpy(), ref.numpy(), atol=1e-6)


@pytest.mark.parametrize(
    "cls, ref_cls, kw",
    [
        (blocks.Conv2D, keras.layers.Conv2D, {"kernel_size": 3, "padding": "same"}),
        (blocks.Conv2D, keras.layers.Conv2D, {"kernel_size": 1}),
        (blocks.Conv2D, keras.layers.Conv2D, {"kernel_size": 3, "strides": 2, "padding": "same"}),  # keras' own path
        (blocks.Conv2DTranspose, keras.layers.Conv2DTranspose, {"kernel_size": 3, "padding": "same"}),
        (blocks.Conv2DTranspose, keras.layers.Conv2DTranspose, {"kernel_size": 3, "strides": 2, "padding": "same"}),
    ],
)
def test_fast_convs_equal_keras_in_value_and_gradient(cls, ref_cls, kw):
    """blocks.Conv2D / Conv2DTranspose compute the same function as keras' layers on the
    same weights, and the same gradients for the input, kernel and bias."""
    x = tf.random.stateless_uniform([2, 12, 12, 5], seed=[1, 2])
    fast, ref = cls(7, **kw), ref_cls(7, **kw)
    ref(x)
    fast(x)
    fast.set_weights(ref.get_weights())
    outs = []
    for layer in (fast, ref):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * tf.sin(y))  # a non-uniform upstream gradient
        outs.append([y] + tape.gradient(loss, [x] + layer.trainable_variables))
    for a, b in zip(*outs):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5)


def test_onednn_guard_refuses_the_crashing_layer_and_passes_shipped_blocks():
    inp = keras.Input((32, 32, 8))
    bad = keras.Model(inp, keras.layers.Conv2D(8, 1, strides=2)(inp))
    with pytest.raises(UserError, match="1x1 stride-2 conv with 8 input channels"):
        guards.check_model(bad)
    up = keras.Model(inp, keras.layers.Conv2DTranspose(4, 1, strides=2)(inp))
    with pytest.raises(UserError, match="4 input channels"):
        guards.check_model(up)
    ok = keras.Model(inp, keras.layers.Conv2D(8, 1, strides=2)(keras.layers.Conv2D(16, 3)(inp)))
    guards.check_model(ok)  # 16 input channels: safe
    for variant in ("industrial", "full"):
        guards.check_model(registry.build(tiny(variant, **{"model.widths": "[8, 8]", "model.stem_width": 8})))


def shrink(cfg):
    """Same structure as the shipped config, at a tiny size: 32 px, widths / 16 (at least 16)."""
    n = len(cfg.model.widths)
    size = max(32, 2**n * 2)
    over = [
        f"data.image_size=[{size}, {size}]",
        f"model.widths={[max(16, w // 16) for w in cfg.model.widths]}",
        f"model.stem_width={max(16, cfg.model.stem_width // 16)}",
        f"model.disc_widths={[max(16, w // 16) for w in cfg.model.disc_widths]}",
        f"model.unet_widths={[max(16, w // 16) for w in cfg.model.unet_widths]}",
        "model.ssim_window=7",
        "perturb.max_scale=2",
        f"model.latent_dim={min(cfg.model.latent_dim, 16)}",
        "train.batch_size=2",
    ]
    return over, size


@pytest.mark.parametrize("name", shipped_configs("grdnet"))
def test_every_shipped_config_train_step_runs(name):
    cfg = load_config(ROOT / "configs" / name)
    over, size = shrink(cfg)
    small = load_config(ROOT / "configs" / name, over)
    assert_one_train_step(build(small), size, small.data.channels)


class _KillAt(keras.callbacks.Callback):
    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.step_counter.numpy()) == self.step:
            raise KeyboardInterrupt(f"simulated kill at step {self.step}")


def test_training_run_and_resume_mid_epoch(vial_data, tmp_path):
    """Killed at global step 7 of 2 x 5 with a backup every 2 steps: a plain
    rerun is refused; the resume starts at step 6 (epoch 2, its 2nd step),
    trains the 4 steps left (1 lost, at most the backup interval) and keeps
    epoch ends where they were; a finished run says so; more epochs (an
    epoch-end resume) train on from the kept backup."""
    import json

    cfg = vial_cfg(vial_data, "train.epochs=2", "train.steps_per_epoch=5", "train.batch_size=4", "train.backup_every_steps=2")
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, run, extra_callbacks=[_KillAt(7)], verbose=0)
    assert json.loads(Run(run).backup_info.read_text())["global_step"] == 6 and not Run(run).model_file.exists()
    started = Run(run).config_file.stat().st_mtime
    with pytest.raises(UserError, match="already holds a run"):
        train(cfg, run, verbose=0)
    said = []
    train(cfg, run, resume=True, verbose=0, echo=said.append)
    assert "resuming at global step 6 of 10: epoch 2, step 2 of 5" in said
    summary = json.loads(Run(run).summary_file.read_text())
    assert summary["global_step"] == 10 and summary["steps_this_session"] == 4  # 7 - 6 = 1 step lost
    assert [r["epoch"] for r in csv.DictReader(Run(run).history_file.open())] == ["0", "1"]
    assert json.loads(Run(run).backup_info.read_text()) | {"saved": 0} == {"global_step": 10, "optimizer_steps": 10, "epochs_done": 2, "saved": 0}
    assert (Run(run).samples_dir / "epoch_002.png").exists() and Run(run).config_file.exists()
    assert load_model(run).score(tf.zeros([1, 32, 32, 1]))["score"].shape == (1,)

    said.clear()
    train(cfg, run, resume=True, verbose=0, echo=said.append)
    assert any("already trained all 10 steps" in s for s in said)
    more = vial_cfg(vial_data, "train.epochs=3", "train.steps_per_epoch=5", "train.batch_size=4", "train.backup_every_steps=2")
    train(more, run, resume=True, verbose=0)
    summary = json.loads(Run(run).summary_file.read_text())
    assert summary["global_step"] == 15 and summary["steps_this_session"] == 5
    # the resumes rewrote config.yaml (epochs: 3) but kept its time: the run's start, for learning curves
    assert Run(run).config().train.epochs == 3 and Run(run).config_file.stat().st_mtime == started


def test_sigkill_during_training_then_resume(vial_data, tmp_path):
    """A real kill -9 of `tfanomaly train` at a random moment after its first
    backups; `--resume` restarts from the backup's step exactly (the backup is
    renamed into place, so it is never half-written) and finishes the plan."""
    import json
    import subprocess
    import sys
    import time

    import yaml

    from tests.conftest import stop_group
    from tfanomaly.config import save_config

    cfg = vial_cfg(vial_data, "train.epochs=1", "train.steps_per_epoch=30", "train.batch_size=4", "train.backup_every_steps=3")
    cfg_file = tmp_path / "cfg.yaml"
    save_config(cfg, cfg_file)
    assert yaml.safe_load(cfg_file.read_text())["train"]["backup_every_steps"] == 3
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "tfanomaly.cli.app", "train", "grdnet", "--config", str(cfg_file), "--run-dir", str(run)]
    wait_for = int(np.random.default_rng().integers(3, 25))  # a random point of training
    # run outside the source tree, so the installed package (with tfanomaly.cli) is imported
    child = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and child.poll() is None:
            info = Run(run).backup_info
            if info.exists() and json.loads(info.read_text())["global_step"] >= wait_for:
                break
            time.sleep(0.05)
        assert child.poll() is None, f"training ended before the kill: {child.stderr.read().decode()[-2000:]}"
        stop_group(child)
    finally:
        stop_group(child)
    backed_up = json.loads(Run(run).backup_info.read_text())["global_step"]
    assert backed_up >= wait_for and not Run(run).model_file.exists()
    said = []
    train(cfg, run, resume=True, verbose=0, echo=said.append)
    assert any(s.startswith(f"resuming at global step {backed_up} of 30") for s in said)
    summary = json.loads(Run(run).summary_file.read_text())
    assert summary["global_step"] == 30 and summary["steps_this_session"] == 30 - backed_up


def test_time_budget_stops_training():
    import time
    from types import SimpleNamespace

    from tfanomaly.train import TimeBudget

    long, short = TimeBudget(minutes=10), TimeBudget(minutes=0.0001)  # 10 min, 6 ms
    for cb in (long, short):
        cb.set_model(SimpleNamespace(stop_training=False))
        cb.on_train_begin()
    time.sleep(0.02)
    for cb in (long, short):
        cb.on_train_batch_end(0)
    assert long.model.stop_training is False and short.model.stop_training is True


def test_failed_start_leaves_no_run_folder(vial_data, tmp_path):
    """Training that fails before its first step (here: a truncated image)
    removes the run folder it created, so the corrected rerun is not refused;
    a folder that held a run before is left alone."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(vial_data, data)
    victim = sorted((data / "images").glob("*.png"))[0]
    good_bytes = victim.read_bytes()
    victim.write_bytes(good_bytes[: len(good_bytes) // 2])
    cfg = vial_cfg(data, "train.epochs=1", "train.steps_per_epoch=1", "train.batch_size=4")
    run = tmp_path / "run"
    with pytest.raises(UserError, match=victim.name):
        train(cfg, run, verbose=0)
    assert not run.exists()
    victim.write_bytes(good_bytes)
    train(cfg, run, verbose=0)
    assert Run(run).model_file.exists()
    victim.write_bytes(good_bytes[: len(good_bytes) // 2])
    with pytest.raises(UserError, match=victim.name):
        train(cfg, run, resume=True, verbose=0)
    assert Run(run).model_file.exists() and Run(run).config_file.exists()


def test_warmup_ramps_every_learning_rate_then_follows_the_schedule(tmp_path):
    """train.warmup_steps: the rate is min(1, (step + 1) / N) x the schedule's, for the
    generator's and the discriminator's optimizers alike; it survives a save and load."""
    from tfanomaly.models.base import LinearWarmup

    cfg = tiny(**{"train.warmup_steps": 4, "train.learning_rate": 1e-3, "train.first_decay_steps": 10})
    m = build(cfg)
    cosine = keras.optimizers.schedules.CosineDecayRestarts(1e-3, first_decay_steps=10, t_mul=2.0, m_mul=1 / 3, alpha=0.0)
    steps = np.arange(12)
    want = np.minimum(1.0, (steps + 1) / 4) * np.array([float(cosine(s)) for s in steps])
    for name in m._optimizer_names:
        sched = getattr(m, name)._learning_rate
        assert isinstance(sched, LinearWarmup)
        np.testing.assert_allclose([float(sched(s)) for s in steps], want, rtol=1e-6)
    assert want[0] == pytest.approx(0.25e-3) and want[3] == pytest.approx(float(cosine(3)))
    back = LinearWarmup.from_config(keras.saving.serialize_keras_object(sched)["config"])
    np.testing.assert_allclose([float(back(s)) for s in steps], want, rtol=1e-6)
    const = tiny(**{"train.warmup_steps": 2, "train.lr_schedule": "constant", "train.learning_rate": 1e-3})
    sched = getattr(build(const), m._optimizer_names[0])._learning_rate
    np.testing.assert_allclose([float(sched(s)) for s in range(4)], [5e-4, 1e-3, 1e-3, 1e-3], rtol=1e-6)
    with pytest.raises(Exception, match="train.warmup_steps: reduce-on-plateau"):
        tiny(**{"train.warmup_steps": 2, "train.lr_schedule": "constant", "train.reduce_on_plateau.patience": 2})
