import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import ndimage

from tests.conftest import ROOT, assert_one_train_step, shipped_configs
from tfanomaly import guards
from tfanomaly.config import load_config
from tfanomaly.data import corrupt as corrupt_mod
from tfanomaly.data.augment import shift
from tfanomaly.data.pipeline import hold_out_validation, training_map
from tfanomaly.data.sources import Index, Item
from tfanomaly.errors import ConfigError
from tfanomaly.export import export
from tfanomaly.models import registry
from tfanomaly.models.autoencoder import Autoencoder, ConvexCombination, masked_loss, sdc_receptive_field
from tfanomaly.run import Run
from tfanomaly.train import ReduceLROnPlateauAll, load_model, train

SDC = {"model.variant": "sdc", "corrupt.enabled": "true"}


def tiny(variant="residual", channels=1, size=32, **over):
    args = [
        "family=autoencoder",
        f"data.image_size=[{size}, {size}]",
        f"data.channels={channels}",
        "data.root=unused",
        "perturb.enabled=false",
        "model.base_width=8",
        "model.max_width=32",
        "model.down_blocks=3",
        "model.latent_dim=16",
        "model.sdc_width=8",
        "model.dilations=[1, 2, 4]",
        "model.ssim_window=7",
        "model.heatmap_sigma=2",
        "train.batch_size=4",
        "train.lr_schedule=constant",
        f"model.variant={variant}",
    ]
    if variant == "sdc":
        args.append("corrupt.enabled=true")
    return load_config(None, args + [f"{k}={v}" for k, v in over.items()])


def build(cfg, batch=None):
    keras.utils.set_random_seed(cfg.seed)
    m = registry.build(cfg)
    m.compile_for_training(cfg.train, 100, batch or cfg.train.batch_size)
    return m


def images(n=4, size=32, channels=1, seed=0):
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1.0)
    x = np.stack([0.3 + 0.4 * yy * (1 - xx) + 0.05 * g.normal(size=(size, size)) for _ in range(n)])[..., None]
    return np.clip(np.repeat(x, channels, -1) * np.linspace(1, 0.8, channels), 0, 1).astype(np.float32)


@pytest.mark.parametrize("variant", ["residual", "sdc"])
@pytest.mark.parametrize("channels,lum", [(1, False), (3, False), (4, False), (3, True)])
def test_shapes(variant, channels, lum):
    m = registry.build(tiny(variant, channels, **{"model.add_luminance": str(lum).lower()}))
    out = m.score(images(2, channels=channels))
    assert out["score"].shape == (2,) and out["heatmap"].shape == (2, 32, 32, 1)
    assert out["reconstruction"].shape == (2, 32, 32, channels)
    assert m.net.output.shape[-1] == (4 if lum else channels)
    guards.check_model(m)


def test_cbam_and_volumetric_bottleneck_build():
    m = registry.build(tiny(**{"model.attention": "cbam", "model.bottleneck": "volumetric"}))
    names = [layer.name for layer in m.net.layers]
    assert sum("cbam" in n for n in names) == 6  # after each of 3 down and 3 up blocks
    assert m.net.get_layer("autoencoder_latent").output.shape == (None, 4, 4, 16)
    assert m.score(images(2))["score"].shape == (2,)


def test_sdc_dilations_and_receptive_field():
    cfg = tiny("sdc", size=64, **{"model.dilations": "[1, 2, 4, 8]"})
    m = registry.build(cfg)
    enc = [layer for layer in m.net.layers if layer.name.startswith("autoencoder_enc_d")]
    assert [tuple(layer.dilation_rate) for layer in enc] == [(1, 1), (2, 2), (4, 4), (8, 8)]
    assert all(layer.output.shape[1:3] == (64, 64) for layer in enc)  # resolution kept
    rf = sdc_receptive_field([1, 2, 4, 8])
    assert rf == 1 + 2 * (1 + 1 + 2 + 4 + 8) == 33
    # Empirical footprint: positive weights keep every ReLU active, so the
    # gradient of the centre output reaches exactly the receptive field.
    stack = keras.Model(m.net.input, enc[-1].output)
    for v in stack.weights:
        v.assign(np.full(v.shape, 0.01 if v.name == "kernel" else 0.1, np.float32))
    x = tf.Variable(tf.ones([1, 64, 64, 1]))
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(stack(x)[0, 32, 32])
    g = tape.gradient(y, x).numpy()[0, :, :, 0]
    rows, cols = np.nonzero(g)
    assert rows.max() - rows.min() + 1 == rf and cols.max() - cols.min() + 1 == rf


def test_convex_combination_stays_between_its_inputs():
    layer = ConvexCombination()
    g = np.random.default_rng(0)
    e = tf.constant(g.normal(size=(2, 8, 8, 5)) * 3, tf.float32)
    d = tf.constant(g.normal(size=(2, 8, 8, 5)) * 3, tf.float32)
    out = layer([e, d]).numpy()
    gate = layer.gate_values(e, d).numpy()
    assert gate.shape == (2, 8, 8, 5) and gate.min() >= 0 and gate.max() <= 1
    lo, hi = np.minimum(e, d), np.maximum(e, d)
    assert np.all(out >= lo - 1e-5) and np.all(out <= hi + 1e-5)
    np.testing.assert_allclose(out, gate * e + (1 - gate) * d, atol=1e-5)


def masked_numpy(x, r, m, lam):
    se = ((r - x) ** 2).mean(-1, keepdims=True)
    out = ((1 - m) ** 2 * se).sum(axis=(1, 2, 3))
    ins = (m**2 * se).sum(axis=(1, 2, 3))
    n_out, n_in = (1 - m).sum(axis=(1, 2, 3)), m.sum(axis=(1, 2, 3))
    return (1 - lam) * np.where(n_out > 0, out / np.maximum(n_out, 1e-30), 0) + lam * np.where(n_in > 0, ins / np.maximum(n_in, 1e-30), 0)


def test_masked_loss_against_numpy_including_an_empty_mask():
    g = np.random.default_rng(1)
    x, r = g.uniform(size=(3, 16, 16, 3)).astype(np.float32), g.uniform(size=(3, 16, 16, 3)).astype(np.float32)
    m = np.zeros((3, 16, 16, 1), np.float32)
    m[1, 4:10, 3:9] = g.uniform(0.2, 1.0, size=(6, 6, 1))
    m[2] = 1.0  # everything corrupted: the outside term is empty
    got = masked_loss(x, r, m, 0.9).numpy()
    np.testing.assert_allclose(got, masked_numpy(x, r, m, 0.9), rtol=1e-5)
    np.testing.assert_allclose(got[0], 0.1 * ((r[0] - x[0]) ** 2).mean(), rtol=1e-5)  # empty mask: plain MSE part
    assert np.isfinite(got).all()


def test_combined_loss_score_and_heatmap_against_references():
    m = registry.build(tiny())
    x = images(3)
    out = m.score(x)
    r = m.net(x).numpy()
    mse = ((x - r) ** 2).mean(axis=(1, 2, 3))
    ssim = tf.image.ssim(x, r, 1.0, filter_size=7).numpy()
    np.testing.assert_allclose(out["score"].numpy(), 0.3 * mse + 0.7 * (1 - ssim), rtol=1e-4)
    ref = np.stack([ndimage.gaussian_filter(((x[i] - r[i]) ** 2).mean(-1), 2.0, mode="mirror", truncate=3.0) for i in range(3)])
    np.testing.assert_allclose(out["heatmap"].numpy()[..., 0], ref, rtol=1e-4, atol=1e-7)
    mx = registry.build(tiny(**{"model.score": "map_max"}))
    o = mx.score(x)
    np.testing.assert_allclose(o["score"].numpy(), o["heatmap"].numpy().max(axis=(1, 2, 3)), rtol=1e-6)


def test_corruption_stage():
    x = tf.constant(images(1, size=64, channels=3)[0])
    seed = tf.constant([3, 9], tf.int64)
    x_hat, m, y = corrupt_mod.corrupt(x, seed, size=(0.2, 0.4))
    m_np, xh, xn = m.numpy(), x_hat.numpy(), x.numpy()
    assert m_np.shape == (64, 64, 1) and m_np.min() >= 0 and m_np.max() <= 1
    assert 0.02 < (m_np > 0).mean() < 0.5 and m_np.max() > 0.9  # a soft patch, not the whole image
    outside = m_np[..., 0] == 0
    np.testing.assert_array_equal(xh[outside], xn[outside])
    np.testing.assert_allclose(xh, m_np * y.numpy() + (1 - m_np) * xn, atol=1e-6)
    inner = (m_np[..., 0] > 0) & (m_np[..., 0] < 1)
    assert inner.any()  # real-valued edge from the deformation and blur
    again = corrupt_mod.corrupt(x, seed, size=(0.2, 0.4))
    np.testing.assert_array_equal(again[0].numpy(), xh)
    other = corrupt_mod.corrupt(x, tf.constant([3, 10], tf.int64), size=(0.2, 0.4))
    assert not np.array_equal(other[1].numpy(), m_np)
    textures = tf.constant(np.full((2, 64, 64, 3), 0.25, np.float32))
    _, m2, y2 = corrupt_mod.corrupt(x, seed, textures=textures)
    np.testing.assert_allclose(y2.numpy(), 0.25)
    _, m0, _ = corrupt_mod.corrupt(x, seed, probability=0.0)
    assert m0.numpy().max() == 0


def test_corruption_in_the_training_map_is_deterministic():
    cfg = tiny("sdc", channels=1)
    fn = training_map(cfg)
    e = {"image": tf.constant((images(1)[0] * 255).astype(np.uint8)), "mask": tf.zeros([32, 32, 1], tf.uint8)}
    a, b = fn(tf.constant(5, tf.int64), e), fn(tf.constant(5, tf.int64), e)
    for k in a:
        np.testing.assert_array_equal(a[k].numpy(), b[k].numpy())
    assert a["perturb_mask"].numpy().max() > 0
    with pytest.raises(ConfigError, match="corrupt.enabled: the Perlin perturbation"):
        tiny("sdc", **{"perturb.enabled": "true"})
    with pytest.raises(ConfigError, match="corrupt.enabled: the sdc autoencoder restores synthetic anomalies"):
        load_config(None, ["family=autoencoder", "model.variant=sdc", "perturb.enabled=false"])


def test_sdc_restores_the_perlin_and_own_texture_perturbation_when_configured():
    # perturb.* instead of corrupt.*: the network input is X_n, the loss weights M of the perturbation
    cfg = tiny("sdc", **{"corrupt.enabled": "false", "perturb.enabled": "true", "perturb.probability": "1.0", "perturb.source": "mixed", "perturb.strokes": "0.5", "perturb.max_scale": "3"})
    fn = training_map(cfg)
    x = images(4, seed=3)
    batch = [fn(tf.constant(i, tf.int64), {"image": tf.constant((x[i] * 255).round().astype(np.uint8)), "mask": tf.zeros([32, 32, 1], tf.uint8)}) for i in range(4)]
    data = {k: tf.stack([b[k] for b in batch]) for k in batch[0]}
    m = data["perturb_mask"].numpy()
    assert m.max() == 1 and m.min() == 0  # the binary mask of the perturbation, every example perturbed
    changed = np.abs(data["perturbed"].numpy() - data["image"].numpy()).max(-1) > 1e-6
    assert not changed[m[..., 0] == 0].any()  # X_n differs from X only inside M
    model = build(cfg)
    terms = model.step_losses(data, training=False)
    rec = model.net(data["perturbed"], training=False).numpy()
    se = ((rec - data["image"].numpy()) ** 2).mean(-1, keepdims=True)
    inside = (m**2 * se).sum((1, 2, 3)) / m.sum((1, 2, 3))
    outside = ((1 - m) ** 2 * se).sum((1, 2, 3)) / (1 - m).sum((1, 2, 3))
    np.testing.assert_allclose(terms["inside"].numpy(), inside, rtol=1e-4)
    np.testing.assert_allclose(terms["loss"].numpy(), 0.1 * outside + 0.9 * inside, rtol=1e-4)


def test_gradient_accumulation_equals_one_step_on_the_doubled_batch():
    x = images(8, seed=2)
    x_hat = np.clip(x + 0.2 * np.random.default_rng(0).normal(size=x.shape), 0, 1).astype(np.float32)
    m = np.zeros((8, 32, 32, 1), np.float32)
    m[:, 8:20, 8:20] = 0.7

    def batch(sl):
        return {"image": tf.constant(x[sl]), "perturbed": tf.constant(x_hat[sl]), "perturb_mask": tf.constant(m[sl])}

    big = build(tiny("sdc", **{"train.batch_size": 8}))
    acc = build(tiny("sdc", **{"train.grad_accum_steps": 2, "train.batch_size": 4}))
    acc.net.set_weights(big.net.get_weights())
    big.train_step(batch(slice(0, 8)))
    acc.train_step(batch(slice(0, 4)))
    assert int(acc.step_counter.numpy()) == 0  # accumulated, not applied yet
    acc.train_step(batch(slice(4, 8)))
    assert int(acc.step_counter.numpy()) == 1
    for a, b in zip(acc.net.get_weights(), big.net.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_reduce_on_plateau_scales_every_optimizer():
    m = build(tiny())
    cb = ReduceLROnPlateauAll("loss", patience=2, factor=0.5, min_lr=1e-6)
    cb.set_model(m)
    lr0 = float(m.ae_optimizer.learning_rate.numpy())
    for epoch, loss in enumerate([1.0, 0.9, 0.95, 0.91, 0.85, 0.86, 0.87]):
        cb.on_epoch_end(epoch, {"loss": loss})
    assert [e for e, _ in cb.reductions] == [3, 6]
    np.testing.assert_allclose(float(m.ae_optimizer.learning_rate.numpy()), lr0 / 4, rtol=1e-6)
    with pytest.raises(ConfigError, match="reduce_on_plateau.patience: reduce-on-plateau scales a constant"):
        tiny(**{"train.reduce_on_plateau.patience": 5, "train.lr_schedule": "cosine_restarts"})


def test_validation_hold_out_moves_whole_products():
    items = [Item("image", [f"{p}_{i}.png"], [], 0, "train", product=p) for p in "abcdefghij" for i in range(2)]
    items.append(Item("image", ["t.png"], [], 1, "test", product="t"))
    idx = Index(items, [], "folder")
    hold_out_validation(idx, 0.1, 0)
    val = idx.subset("val")
    assert len(val) == 2 and len({it.product for it in val}) == 1
    assert len(idx.subset("train")) == 18 and idx.subset("test")[0].product == "t"


def test_shift_is_seeded_and_moves_the_mask():
    cfg = load_config(None).eval.shift
    img = tf.constant(images(1, size=64)[0])
    mask = np.zeros((64, 64, 1), np.float32)
    mask[24:40, 24:40] = 1
    a_img, a_mask = shift(img, tf.constant(mask), tf.constant([0, 1], tf.int64), cfg)
    b_img, _ = shift(img, tf.constant(mask), tf.constant([0, 1], tf.int64), cfg)
    np.testing.assert_array_equal(a_img.numpy(), b_img.numpy())
    assert a_img.numpy().min() >= 0 and a_img.numpy().max() <= 1
    area = float((a_mask.numpy() > 0.5).sum())
    assert 1.3**2 * 256 * 0.9 < area < 1.3**2 * 1.1**2 * 256 * 1.1  # zoom 1.3, affine scale 1..1.1
    plain = load_config(
        None, ["eval.shift.zoom=1", "eval.shift.rotation=0", "eval.shift.scale=[1, 1]", "eval.shift.downscale=1", "eval.shift.brightness=0", "eval.shift.contrast=0", "eval.shift.noise_std=0"]
    ).eval.shift
    same, same_mask = shift(img, tf.constant(mask), tf.constant([0, 1], tf.int64), plain)
    np.testing.assert_allclose(same.numpy(), img.numpy(), atol=1e-6)
    np.testing.assert_array_equal(same_mask.numpy(), mask)


def test_train_eval_shift_and_export(vial_data, tmp_path):
    from tfanomaly.evaluate import evaluate

    cfg = load_config(
        None,
        [
            "family=autoencoder",
            f"data.root={vial_data}",
            "data.image_size=[32, 32]",
            "data.frames_per_acquisition=4",
            "data.rank_images=[1, 4]",
            "data.eval_frames=[0, 2]",
            "perturb.enabled=false",
            "corrupt.enabled=true",
            "model.variant=sdc",
            "model.sdc_width=8",
            "model.dilations=[1, 2, 4]",
            "model.ssim_window=7",
            "train.epochs=2",
            "train.steps_per_epoch=2",
            "train.batch_size=4",
            "train.lr_schedule=constant",
            "train.validation_fraction=0.34",
            "train.reduce_on_plateau.patience=1",
            "train.grad_accum_steps=2",
        ],
    )
    run = train(cfg, tmp_path / "run", verbose=0)
    summary = json.loads(Run(run).summary_file.read_text())
    assert summary["global_step"] == 4 and summary["grad_accum_steps"] == 2
    assert {"loss", "val_loss", "lr"} <= set(summary["final_losses"])
    model = load_model(run)
    assert isinstance(model, Autoencoder)
    res = evaluate(model, cfg, Run(run).eval_dir, shift=True)
    assert set(res["shift"]) >= {"image_auroc", "pixel_auroc", "settings"}
    assert (Run(run).eval_dir / "shift" / "metrics.json").exists()
    x = images(3)
    ref = model.score(x)
    sm = tf.saved_model.load(str(export(run, tmp_path / "sm")))
    got = sm.signatures["serving_default"](images=tf.constant(x))
    for k in ref:
        np.testing.assert_allclose(got[k].numpy(), ref[k].numpy(), atol=1e-5)
    assert "is_anomalous" in got


@pytest.mark.parametrize("name", shipped_configs("autoencoder"))
def test_every_shipped_config_train_step_runs(name):
    cfg = load_config(ROOT / "configs" / name)
    size = 2 ** max(5, cfg.model.down_blocks if cfg.model.variant == "residual" else 5)
    small = load_config(
        ROOT / "configs" / name,
        [f"data.image_size=[{size}, {size}]", "model.base_width=8", "model.max_width=16", "model.sdc_width=8", "model.latent_dim=16", "model.ssim_window=7", "train.batch_size=2"],
    )
    assert_one_train_step(build(small), size, small.data.channels)


def test_texture_folder_is_loaded_at_the_patch_size(tmp_path):
    import cv2

    from tfanomaly.data.pipeline import load_textures

    (tmp_path / "tex").mkdir()
    cv2.imwrite(str(tmp_path / "tex" / "a.png"), np.full((50, 70), 255, np.uint8))
    cv2.imwrite(str(tmp_path / "tex" / "b.jpg"), np.zeros((40, 40), np.uint8))
    t = load_textures(tiny("sdc", **{"corrupt.texture_dir": str(tmp_path / "tex")})).numpy()
    assert t.shape == (2, 32, 32, 1)
    np.testing.assert_allclose(t[0], 1.0)
    assert np.abs(t[1]).max() < 0.02
    with pytest.raises(ConfigError, match="corrupt.texture_dir: expected a folder of images"):
        load_textures(tiny("sdc", **{"corrupt.texture_dir": str(tmp_path / "missing")}))
