"""CycleGAN-AD: networks, losses against numpy, the identity loss at work,
the balanced split, the learning-rate schedule, per-image FID against
numpy/scipy, the two-domain pipeline, train/eval over splits and export."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import scipy.linalg
import tensorflow as tf

from tests.conftest import ROOT, assert_one_train_step, save_run, shipped_configs, write_img
from tfanomaly.config import load_config
from tfanomaly.data.sources import Index, Item, balanced_split
from tfanomaly.models import registry
from tfanomaly.models.base import HalfwayLinearDecay
from tfanomaly.models.cyclegan import frechet_distance, gaussian_stats, patch_discriminator, per_image_fid, resnet_generator
from tfanomaly.run import Run, split_run

TINY = ["model.gen_base=8", "model.disc_base=8", "model.n_res=1", "model.disc_layers=2"]


def tiny(size=32, channels=1, *extra):
    return load_config(
        None,
        ["family=cyclegan", f"data.image_size=[{size}, {size}]", f"data.channels={channels}", "data.root=unused", "perturb.enabled=false", "train.batch_size=2", "train.beta_1=0.5", *TINY, *extra],
    )


def build(cfg, total_steps=100):
    keras.utils.set_random_seed(cfg.seed)
    m = registry.build(cfg)
    m.compile_for_training(cfg.train, total_steps, cfg.train.batch_size)
    return m


# -- networks ---------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
def test_generator_and_patchgan_shapes_at_64(channels):
    g = resnet_generator((64, 64, channels), 6, 64, "G")
    d = patch_discriminator((64, 64, channels), 64, 3, "D")
    x = tf.random.uniform([2, 64, 64, channels], -1, 1)
    y = g(x)
    assert y.shape == (2, 64, 64, channels)
    assert float(tf.reduce_max(tf.abs(y))) <= 1.0  # tanh
    # 64 -> 32 -> 16 -> 8 (stride 2) -> 7 -> 6 (4x4, pad 1, stride 1), one logit per 70x70 patch
    assert d(x).shape == (2, 6, 6, 1)


def test_networks_match_the_reference_parameter_counts():
    # CycleGAN's resnet_9blocks generator and n_layers=3 PatchGAN for RGB at 256 px
    # (instance norm without affine parameters): 11,378,179 and 2,764,737 parameters.
    assert resnet_generator((256, 256, 3), 9, 64, "G").count_params() == 11_378_179
    d = patch_discriminator((256, 256, 3), 64, 3, "D")
    assert d.count_params() == 2_764_737
    assert d.output_shape == (None, 30, 30, 1)


def test_model_uses_six_blocks_below_256_and_nine_at_256():
    assert registry.build(tiny(32, 1, "model.n_res=0")).n_res == 6
    cfg = load_config(ROOT / "configs" / "cyclegan_256.yaml")
    assert cfg.model.n_res == 9 and cfg.data.image_size == [256, 256] and cfg.data.interpolation == "bicubic"


# -- losses against numpy ------------------------------------------------------------


def _np_mse(a, b):
    return np.mean((a - b) ** 2, axis=tuple(range(1, a.ndim)))


def _np_l1(a, b):
    return np.mean(np.abs(a - b), axis=tuple(range(1, a.ndim)))


def _np_bce(logits, t):
    z = logits.reshape(len(logits), -1)
    return np.mean(np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z))), axis=1)


@pytest.mark.parametrize("adversarial", ["lsgan", "bce"])
def test_each_loss_term_against_numpy(adversarial):
    m = registry.build(tiny(32, 3, f"model.adversarial={adversarial}", "model.lambda_cyc=7", "model.lambda_ide=3"))
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(-1, 1, (2, 32, 32, 3)), tf.float32)
    y = tf.constant(rng.uniform(-1, 1, (2, 32, 32, 3)), tf.float32)
    o = m.forward(x, y)
    got = {k: v.numpy() for k, v in m.loss_terms(x, y, o).items()}
    n = {k: v.numpy().astype(np.float64) for k, v in o.items()}
    xn, yn = x.numpy(), y.numpy()
    if adversarial == "lsgan":
        adv_g, adv_f = _np_mse(n["dy_fake"], 1.0), _np_mse(n["dx_fake"], 1.0)
        d_y = 0.5 * (_np_mse(n["dy_real"], 1.0) + _np_mse(n["dy_fake"], 0.0))
        d_x = 0.5 * (_np_mse(n["dx_real"], 1.0) + _np_mse(n["dx_fake"], 0.0))
    else:
        adv_g, adv_f = _np_bce(n["dy_fake"], 1.0), _np_bce(n["dx_fake"], 1.0)
        d_y = 0.5 * (_np_bce(n["dy_real"], 1.0) + _np_bce(n["dy_fake"], 0.0))
        d_x = 0.5 * (_np_bce(n["dx_real"], 1.0) + _np_bce(n["dx_fake"], 0.0))
    cyc = _np_l1(xn, n["rec_x"]) + _np_l1(yn, n["rec_y"])
    ide = _np_l1(yn, n["same_y"]) + _np_l1(xn, n["same_x"])
    want = {"adv_g": adv_g, "adv_f": adv_f, "cyc": cyc, "ide": ide, "d_y": d_y, "d_x": d_x, "d_loss": d_y + d_x, "g_loss": adv_g + adv_f + 7 * cyc + 3 * ide}
    for k, v in want.items():
        np.testing.assert_allclose(got[k], v, rtol=1e-5, atol=1e-6, err_msg=k)
    # forward's images are the compositions the terms name
    np.testing.assert_allclose(n["rec_x"], m.gen_f(m.gen_g(x)).numpy(), atol=1e-5)
    np.testing.assert_allclose(n["same_y"], m.gen_g(y).numpy(), atol=1e-5)


def test_train_step_updates_all_four_networks_and_is_finite():
    m = build(tiny(32, 1))
    nets = [m.gen_g, m.gen_f, m.disc_y, m.disc_x]
    before = [n.trainable_variables[0].numpy().copy() for n in nets]
    x = tf.random.uniform([2, 32, 32, 1])
    out = tf.function(m.train_step)({"image": x, "abnormal": x[::-1]})
    assert all(np.isfinite(float(v)) for v in out.values())
    for n, b in zip(nets, before):
        assert not np.allclose(n.trainable_variables[0].numpy(), b), n.name
    assert int(m.step_counter.numpy()) == 1


def test_identity_loss_keeps_a_good_image_unchanged_after_a_few_steps():
    """On a tiny set (one good image y, one defective image x) the identity term
    drives G(y) to y within a few dozen steps; without it (lambda_ide = 0,
    lambda_cyc = 0) G has no reason to keep y and does not."""
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    good = (0.3 + 0.4 * xx * yy)[None, :, :, None].astype(np.float32)
    bad = good.copy()
    bad[:, 10:18, 12:20] = 1.0
    batch = {"image": tf.constant(good), "abnormal": tf.constant(bad)}

    def trained(*over):
        m = build(tiny(32, 1, "train.learning_rate=2e-3", "train.lr_schedule=constant", "train.batch_size=1", *over))
        step = tf.function(m.train_step)
        err0 = float(np.abs(m.normalize(good).numpy() - good).mean())
        for _ in range(40):
            step(batch)
        return err0, float(np.abs(m.normalize(good).numpy() - good).mean())

    err0, err = trained()
    assert err < 0.05 and err < err0 / 4, (err0, err)  # mean abs error in [0, 1] units
    _, err_no_ide = trained("model.lambda_ide=0", "model.lambda_cyc=0")
    assert err_no_ide > 3 * err, (err, err_no_ide)


# -- data -------------------------------------------------------------------------------


def _index(n_good, n_bad):
    items = [Item("image", [f"g{i}.png"], [""], 0, "train", product=f"g{i}") for i in range(n_good)]
    items += [Item("image", [f"b{i}.png"], [""], 1, "test", product=f"b{i}") for i in range(n_bad)]
    return Index(items, [], "folder")


@pytest.mark.parametrize("n_good,n_bad", [(952, 392), (10, 7), (5, 12)])
def test_balanced_split_sizes(n_good, n_bad):
    idx = _index(n_good, n_bad)
    balanced_split(idx, seed=3)
    k = min(n_good, n_bad) // 2
    test, train = idx.subset("test"), idx.subset("train")
    assert sum(it.label == 1 for it in test) == k and sum(it.label == 0 for it in test) == k
    assert sum(it.label == 0 for it in train) == n_good - k and sum(it.label == 1 for it in train) == n_bad - k
    again = _index(n_good, n_bad)
    balanced_split(again, seed=3)
    assert [it.subset for it in again.items] == [it.subset for it in idx.items]  # seeded
    other = _index(n_good, n_bad)
    balanced_split(other, seed=4)
    assert [it.subset for it in other.items] != [it.subset for it in idx.items]


def test_balanced_split_moves_whole_products():
    items = [Item("acquisition", [], [], lab, "train", product=f"p{i // 3}", run=i % 3) for i, lab in enumerate([0] * 12 + [1] * 9)]  # 4 good, 3 defective products x 3 runs
    idx = Index(items, [], "vials")
    balanced_split(idx, seed=0)
    for p in {it.product for it in items}:
        assert len({it.subset for it in items if it.product == p}) == 1
    assert len({it.product for it in idx.subset("test")}) == 2  # 1 defective + 1 good product


def test_balanced_split_needs_two_of_each_class():
    from tfanomaly.errors import DataError

    with pytest.raises(DataError, match="at least 2 good and 2 defective"):
        balanced_split(_index(5, 1), seed=0)


@pytest.fixture
def folder_data(tmp_path):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:48]
    for i in range(10):
        img = (100 + 60 * np.sin(xx / 5.0 + i) + rng.normal(0, 4, (40, 48))).clip(0, 255).astype(np.uint8)
        write_img(tmp_path / "data" / "good" / f"g{i:02d}.png", img)
    for i in range(6):
        img = (100 + 60 * np.sin(xx / 5.0 + i)).astype(np.uint8)
        img[10:20, 10 + i : 20 + i] = 250
        write_img(tmp_path / "data" / "bad" / f"b{i:02d}.png", img)
    return tmp_path / "data"


def folder_cfg(root, *extra):
    return load_config(
        ROOT / "configs" / "cyclegan_64.yaml",
        [
            f"data.root={root}",
            "data.good_dirs=[good]",
            "data.defect_dirs=[bad]",
            "data.channels=1",
            "data.image_size=[32, 32]",
            "data.mask_suffix=_mask.png",
            "train.batch_size=2",
            "train.epochs=2",
            "train.steps_per_epoch=2",
            "eval.calibration_fraction=0.5",
            "eval.batch_size=4",
            *TINY,
            *extra,
        ],
    )


def test_two_domain_batches_come_from_the_balanced_training_split(folder_data):
    from tfanomaly.data.pipeline import Data

    cfg = folder_cfg(folder_data)
    data = Data(cfg)
    # 10 good, 6 bad: test 3 + 3, train 7 good + 3 bad; an epoch = the larger domain
    assert data.count("train", True) == 7 and data.count("train", True, (1,)) == 3
    assert data.count("test", False) == 6 and data.train_patches(two_domain=True) == 7
    batch = next(iter(data.train_dataset(2, two_domain=True)))
    assert batch["image"].shape == (2, 32, 32, 1) and batch["abnormal"].shape == (2, 32, 32, 1)
    # the defective stream holds the bright square of the defect images (rotated/flipped anywhere)
    assert float(tf.reduce_max(batch["abnormal"])) > 0.95
    train_bad = {it.paths[0] for it in data.index.subset("train") if it.label == 1}
    test_all = {it.paths[0] for it in data.index.subset("test")}
    assert len(train_bad) == 3 and not (train_bad & test_all)


def test_validation_hold_out_takes_good_products_only(folder_data):
    from tfanomaly.data.pipeline import Data

    data = Data(folder_cfg(folder_data, "train.validation_fraction=0.3"))
    val = data.index.subset("val")
    assert len(val) == 2 and all(it.label == 0 for it in val)  # round(0.3 * 7) good products
    assert data.count("train", True) == 5 and data.count("train", True, (1,)) == 3  # every defect still trains


def test_one_class_split_gives_a_clear_error_for_a_two_domain_family(folder_data):
    from tfanomaly.data.pipeline import Data
    from tfanomaly.errors import DataError

    cfg = folder_cfg(folder_data, "data.split.mode=one_class")
    with pytest.raises(DataError, match="no defective training samples.*balanced"):
        Data(cfg).train_dataset(2, two_domain=True)


def test_rot90_needs_a_square_patch():
    from tfanomaly.errors import ConfigError

    with pytest.raises(ConfigError, match="augment.rot90"):
        load_config(ROOT / "configs" / "cyclegan_64.yaml", ["data.image_size=[32, 48]"])


# -- learning rate --------------------------------------------------------------------------


def test_learning_rate_constant_for_half_then_linear_to_zero():
    total = 200
    cfg = tiny(32, 1, "train.lr_schedule=linear_decay", "train.learning_rate=2e-4")
    m = build(cfg, total_steps=total)
    sched = m.g_optimizer.learning_rate if callable(m.g_optimizer.learning_rate) else m.g_optimizer._learning_rate
    steps = np.arange(0, total + 1)
    got = np.array([float(sched(s)) for s in steps])
    want = np.where(steps <= 100, 2e-4, 2e-4 * (1 - (steps - 100) / 100))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-12)
    assert got[total] == 0.0
    # the discriminators' optimizer follows the same schedule
    assert isinstance(m.d_optimizer._learning_rate, HalfwayLinearDecay)


# -- per-image FID ---------------------------------------------------------------------------


def _np_fid(fa, fb):
    """The standard FID formula (as pytorch-fid) on the positions of one map each."""
    a = fa.reshape(-1, fa.shape[-1]).astype(np.float64)
    b = fb.reshape(-1, fb.shape[-1]).astype(np.float64)
    mu1, mu2 = a.mean(0), b.mean(0)
    c1, c2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(c1 @ c2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(c1) + np.trace(c2) - 2 * np.trace(covmean))


def test_per_image_fid_against_numpy_scipy():
    rng = np.random.default_rng(1)
    mix = rng.normal(size=(8, 8))
    fa = rng.normal(size=(3, 12, 12, 8)) @ mix  # correlated channels, 144 positions > 8 channels
    fb = 0.7 * fa + rng.normal(0.3, 0.5, size=fa.shape)
    got = per_image_fid(tf.constant(fa, tf.float32), tf.constant(fb, tf.float32)).numpy()
    want = [_np_fid(fa[i], fb[i]) for i in range(3)]
    np.testing.assert_allclose(got, want, rtol=1e-4)
    # a distance: zero for identical maps, symmetric
    np.testing.assert_allclose(per_image_fid(fa, fa).numpy(), 0.0, atol=1e-3)
    np.testing.assert_allclose(per_image_fid(fb, fa).numpy(), got, rtol=1e-4)
    mu, cov = gaussian_stats(tf.constant(fa))
    np.testing.assert_allclose(cov.numpy()[0], np.cov(fa[0].reshape(-1, 8), rowvar=False), rtol=1e-10)
    np.testing.assert_allclose(mu.numpy()[0], fa[0].reshape(-1, 8).mean(0), rtol=1e-10)
    assert frechet_distance(mu, cov, mu, cov).shape == (3,)


def test_fid_score_path_uses_inception_positions():
    cfg = tiny(32, 1, "model.score=fid", "model.fid_weights=none", "model.fid_layer=mixed0")
    m = registry.build(cfg)
    assert m.inception.output_shape == (None, 35, 35, 256)  # 1225 positions per image at 299 px
    x = tf.random.uniform([2, 32, 32, 1], seed=1)
    out = m.score(x)
    fa = m.fid_features(x).numpy()
    fb = m.fid_features(out["reconstruction"]).numpy()
    np.testing.assert_allclose(out["score"].numpy(), [_np_fid(fa[i], fb[i]) for i in range(2)], rtol=1e-3)
    np.testing.assert_allclose(out["heatmap"].numpy(), ((x - out["reconstruction"]) ** 2).numpy(), atol=1e-6)
    assert [mod.name for mod in m.export_modules()] == ["G", "fid_inception"]


def test_fid_refuses_an_ill_posed_feature_map():
    from tfanomaly.errors import ConfigError

    with pytest.raises(ConfigError, match="singular covariance"):
        registry.build(tiny(32, 1, "model.score=fid", "model.fid_weights=none", "model.fid_size=75"))


def test_sse_score_and_heatmap():
    m = registry.build(tiny(32, 3))
    x = tf.random.uniform([3, 32, 32, 3], seed=2)
    out = m.score(x)
    r = out["reconstruction"].numpy()
    np.testing.assert_allclose(r, (m.gen_g(x * 2 - 1).numpy() + 1) / 2, atol=1e-6)
    np.testing.assert_allclose(out["score"].numpy(), ((x.numpy() - r) ** 2).sum(axis=(1, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(out["heatmap"].numpy()[..., 0], ((x.numpy() - r) ** 2).mean(-1), atol=1e-6)
    assert [mod.name for mod in m.export_modules()] == ["G"]


# -- configs, CLI, export -----------------------------------------------------------------------


@pytest.mark.parametrize("name", shipped_configs("cyclegan"))
def test_every_shipped_config_train_step_runs(name):
    cfg = load_config(ROOT / "configs" / name)
    assert cfg.data.split.mode == "balanced" and cfg.train.lr_schedule == "linear_decay"
    small = load_config(ROOT / "configs" / name, ["data.image_size=[32, 32]", *TINY])
    assert_one_train_step(build(small), 32, small.data.channels)


def test_train_split_seeds_then_eval_over_splits(folder_data, tmp_path):
    from typer.testing import CliRunner

    from tfanomaly.cli.app import app
    from tfanomaly.config import save_config

    cfg_file = tmp_path / "cg.yaml"
    save_config(folder_cfg(folder_data), cfg_file)
    runs = tmp_path / "runs"
    r = CliRunner().invoke(app, ["train", "cyclegan", "--config", str(cfg_file), "--split-seeds", "0,1", "--run-dir", str(runs)])
    assert r.exit_code == 0, r.output
    for s in (0, 1):
        saved = load_config(split_run(runs, s).config_file)
        assert saved.seed == s and saved.data.split.seed == s
        summary = json.loads(split_run(runs, s).summary_file.read_text())
        assert summary["global_step"] == 4 and summary["train_patches"] == 7
    # a second call skips the finished splits
    r = CliRunner().invoke(app, ["train", "cyclegan", "--config", str(cfg_file), "--split-seeds", "0,1", "--run-dir", str(runs)])
    assert r.exit_code == 0 and r.output.count("already trained, skipped") == 2, r.output

    r = CliRunner().invoke(app, ["eval", "--model", str(runs)])
    assert r.exit_code == 0, r.output
    table = json.loads((Run(runs).eval_dir / "splits.json").read_text())
    assert [row["split_seed"] for row in table["splits"]] == [0, 1] and table["rule"] == "zero_fn"
    for row in table["splits"]:
        per = json.loads((split_run(runs, row["split_seed"]).eval_dir / "metrics.json").read_text())
        assert row["image_auroc"] == per["image_auroc"]["mean"] and per["seeds"] == [row["split_seed"]]
        assert row["n_reported"] == 2  # 6 balanced test images: round(0.5 * 3) of each class calibrate, 1 + 1 report
    vals = [row["zfn_accuracy"] for row in table["splits"]]
    assert table["zfn_accuracy"]["mean"] == pytest.approx(np.mean(vals))
    assert table["zfn_accuracy"]["std"] == pytest.approx(np.std(vals))
    assert "mean ± std" in (Run(runs).eval_dir / "splits.md").read_text()
    r = CliRunner().invoke(app, ["eval", "--model", str(runs), "--seeds", "7"])
    assert isinstance(r.exception, Exception) and "no split_7 run" in str(r.exception)


def test_export_round_trip_holds_only_the_normal_generator(tmp_path):
    from tfanomaly.export import export

    cfg = tiny(32, 1)
    keras.utils.set_random_seed(0)
    model = registry.build(cfg)
    run = save_run(model, cfg, tmp_path / "run", thresholds={"rule": "zero_fn", "per_region": False, "thresholds": 30.0})
    path = export(run, tmp_path / "sm")
    loaded = tf.saved_model.load(str(path))
    x = tf.random.uniform([3, 32, 32, 1], seed=4)
    got = loaded.signatures["serving_default"](images=x)
    ref = model.score(x)
    for k in ("score", "heatmap", "reconstruction"):
        np.testing.assert_allclose(got[k].numpy(), ref[k].numpy(), rtol=1e-5, atol=1e-6, err_msg=k)
    np.testing.assert_array_equal(got["is_anomalous"].numpy(), ref["score"].numpy() >= 30.0)
    n_g = sum(int(np.prod(v.shape)) for v in model.gen_g.variables)
    assert sum(int(np.prod(v.shape)) for v in loaded.variables) == n_g  # no F, no discriminators
    # and the run's .keras file reloads to the same scores
    from tfanomaly.train import load_model

    np.testing.assert_allclose(load_model(run).score(x)["score"].numpy(), ref["score"].numpy(), rtol=1e-6)


def test_max_leaky_relu_is_leaky_relu():
    from tfanomaly.models.cyclegan import MaxLeakyReLU

    x = tf.constant(np.linspace(-3, 3, 61), tf.float32)
    np.testing.assert_allclose(MaxLeakyReLU(0.2)(x).numpy(), keras.layers.LeakyReLU(0.2)(x).numpy(), atol=0)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = MaxLeakyReLU(0.2)(x * x * x)
    g = tape.gradient(y, x).numpy()
    xs = x.numpy()
    np.testing.assert_allclose(g, np.where(xs > 0, 1.0, 0.2) * 3 * xs**2, rtol=1e-6, atol=1e-6)
