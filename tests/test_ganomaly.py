import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import ROOT, assert_one_train_step, save_run, shipped_configs
from tfanomaly import guards, losses
from tfanomaly.config import load_config
from tfanomaly.errors import ConfigError, UserError
from tfanomaly.export import export
from tfanomaly.models import registry
from tfanomaly.models.dcgan import dcgan_widths
from tfanomaly.models.ganomaly import GANomaly
from tfanomaly.run import Run
from tfanomaly.train import load_model, train


def tiny(size=32, channels=1, **over):
    args = [
        "family=ganomaly",
        f"data.image_size=[{size}, {size}]",
        f"data.channels={channels}",
        "data.root=unused",
        "model.latent_dim=16",
        "model.base_width=8",
        "model.vgg_weights=none",
        "model.resnet_weights=none",
        "train.batch_size=8",
        "train.lr_schedule=constant",
    ] + [f"{k}={v}" for k, v in over.items()]
    return load_config(None, args)


def build(cfg, steps=100):
    keras.utils.set_random_seed(cfg.seed)
    m = registry.build(cfg)
    m.compile_for_training(cfg.train, steps, cfg.train.batch_size)
    return m


def batch(n=8, size=32, channels=1, seed=0):
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1.0)
    x = np.stack([0.3 + 0.4 * yy * (1 - xx) + 0.05 * g.normal(size=(size, size)) for _ in range(n)])[..., None]
    return np.clip(np.repeat(x, channels, -1), 0, 1).astype(np.float32)


def caffe_numpy(x01):
    """VGG16/ResNet50 'caffe' preprocessing written out by hand."""
    x = x01 * 255.0
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, -1)
    return x[..., ::-1] - np.array([103.939, 116.779, 123.68], np.float32)


@pytest.mark.parametrize("channels", [1, 3])
def test_dcgan_shapes_and_widths(channels):
    assert dcgan_widths(64, 8) == [8, 16, 32, 64] and dcgan_widths(256, 64, 512) == [64, 128, 256, 512, 512, 512]
    m = registry.build(tiny(channels=channels))
    out = m.score(batch(2, channels=channels))
    assert out["score"].shape == (2,) and out["heatmap"].shape == (2, 32, 32, 1)
    assert out["reconstruction"].shape == (2, 32, 32, channels)
    r = out["reconstruction"].numpy()
    assert r.min() >= 0 and r.max() <= 1  # tanh output mapped back to [0, 1]
    assert m.encoder.output.shape == (None, 1, 1, 16)
    logit, feats = m.discriminator.outputs
    assert logit.shape == (None, 1, 1, 1) and feats.shape == (None, 4, 4, 32)


def test_generator_and_discriminator_losses_against_numpy():
    m = registry.build(tiny())
    g = np.random.default_rng(3)
    x = batch() * 2 - 1
    x_hat = np.tanh(x + 0.3 * g.normal(size=x.shape)).astype(np.float32)
    z_i, z_o = g.normal(size=(8, 1, 1, 16)).astype(np.float32), g.normal(size=(8, 1, 1, 16)).astype(np.float32)
    fr, ff = g.normal(size=(8, 4, 4, 32)).astype(np.float32), g.normal(size=(8, 4, 4, 32)).astype(np.float32)
    t = {k: v.numpy() for k, v in m.generator_losses(x, x_hat, z_i, z_o, fr, ff).items()}
    np.testing.assert_allclose(t["adv"], ((fr - ff) ** 2).mean(axis=(1, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(t["con"], np.abs(x - x_hat).mean(axis=(1, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(t["enc"], ((z_i - z_o) ** 2).mean(axis=(1, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(t["g_loss"], t["adv"] + 50 * t["con"] + t["enc"], rtol=1e-5)

    real, _ = m.discriminator(x, training=True)
    fake, _ = m.discriminator(x_hat, training=True)
    r, f = real.numpy().reshape(-1).astype(np.float64), fake.numpy().reshape(-1).astype(np.float64)
    ref = 0.5 * (-np.log(1 / (1 + np.exp(-r))) - np.log(1 - 1 / (1 + np.exp(-f))))
    np.testing.assert_allclose(m.discriminator_loss(x, x_hat).numpy(), ref, rtol=1e-4)


def test_score_is_squared_latent_distance():
    m = registry.build(tiny())
    x = batch()
    out = m.score(x)
    z_i = m.encoder(x * 2 - 1).numpy()
    x_hat = m.decoder(z_i).numpy()
    z_o = m.encoder2(x_hat).numpy()
    np.testing.assert_allclose(out["score"].numpy(), ((z_i - z_o) ** 2).sum(axis=(1, 2, 3)), rtol=1e-4)
    np.testing.assert_allclose(out["heatmap"].numpy()[..., 0], np.abs(x - (x_hat + 1) / 2).mean(-1), atol=1e-6)


def test_imagenet_input_matches_keras_preprocessing():
    x = batch(2, channels=3)
    np.testing.assert_allclose(losses.imagenet_input(x).numpy(), keras.applications.vgg16.preprocess_input(x * 255.0), atol=1e-4)
    gray = batch(2)
    np.testing.assert_allclose(losses.imagenet_input(gray).numpy(), caffe_numpy(gray), atol=1e-4)


def test_vgg16_taps_are_the_named_layers():
    ex = losses.vgg16_taps((64, 64), ["relu2_2", "relu3_3", "relu4_3"])
    assert [t.shape for t in ex.outputs] == [(None, 32, 32, 128), (None, 16, 16, 256), (None, 8, 8, 512)]
    names = [layer.name for layer in ex.layers]
    assert {"block2_conv2", "block3_conv3", "block4_conv3"} <= set(names)
    assert not any(n.startswith("block5") for n in names)  # stops at the deepest tap
    assert ex.trainable_weights == []
    for layer in ("block2_conv2", "block3_conv3", "block4_conv3"):
        assert ex.get_layer(layer).activation is keras.activations.relu


def test_perceptual_loss_against_direct_computation():
    ex = losses.vgg16_taps((32, 32), ["relu2_2", "relu3_3"])
    x, y = batch(3), np.clip(batch(3, seed=1) + 0.1, 0, 1)
    got = losses.perceptual(ex, x, y).numpy()
    fx, fy = ex(caffe_numpy(x)), ex(caffe_numpy(y))
    ref = np.mean([np.abs(a.numpy() - b.numpy()).mean(axis=(1, 2, 3)) for a, b in zip(fx, fy)], axis=0)
    np.testing.assert_allclose(got, ref, rtol=1e-4)
    m = registry.build(tiny(**{"model.recon_loss": "perceptual", "model.perceptual_taps": "[relu3_3]"}))
    xm, yh = x * 2 - 1, y * 2 - 1
    z = np.zeros((3, 1, 1, 16), np.float32)
    f = np.zeros((3, 4, 4, 32), np.float32)
    t = m.generator_losses(xm, yh, z, z, f, f)
    assert "con" not in t
    ref3 = np.abs(m.vgg(caffe_numpy(x)).numpy() - m.vgg(caffe_numpy(y)).numpy()).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(t["perc"].numpy(), ref3, rtol=1e-4)
    np.testing.assert_allclose(t["g_loss"].numpy(), 15 * ref3, rtol=1e-4)


def test_weights_from_a_local_file(tmp_path):
    ref = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path / "vgg16_notop.weights.h5"
    ref.save_weights(path)
    cfg = tiny(**{"model.recon_loss": "perceptual", "model.vgg_weights": str(path)})
    m = registry.build(cfg)  # a training build: loads the configured weights
    got = m.vgg.get_layer("block3_conv3").get_weights()[0]
    np.testing.assert_array_equal(got, ref.get_layer("block3_conv3").get_weights()[0])
    with pytest.raises(ConfigError, match=r"model.vgg_weights: expected an existing weights file"):
        tiny(**{"model.vgg_weights": str(tmp_path / "missing.h5")})
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    with pytest.raises(UserError, match=r"vgg16 weights .*bad.h5.*cannot load them"):
        registry.build(tiny(**{"model.recon_loss": "perceptual", "model.vgg_weights": str(bad)}))


@pytest.mark.parametrize("channels", [1, 3])
def test_resnet50_encoder_builds(channels):
    m = registry.build(tiny(64, channels, **{"model.encoder": "resnet50"}))
    backbone = m.encoder.get_layer("g_encoder_resnet50")
    assert backbone.get_layer("conv5_block3_out").output.shape == (None, 2, 2, 2048)
    assert backbone.get_layer("conv1_conv").input.shape[-1] == 3  # gray replicated to 3 channels
    assert m.encoder.output.shape == (None, 1, 1, 16)
    out = m.score(batch(2, 64, channels))
    assert out["score"].shape == (2,) and np.all(np.isfinite(out["score"].numpy()))
    guards.check_model(m)


def test_config_checks():
    with pytest.raises(ConfigError, match=r"data.image_size: GANomaly needs a square power-of-two size >= 16, got \[48, 48\]"):
        tiny(48)
    with pytest.raises(ConfigError, match=r"model.perceptual_taps: expected a list of strings, every item one of 'relu1_2'"):
        tiny(**{"model.perceptual_taps": "[relu9_9]"})


def test_train_steps_lower_the_generator_loss():
    m = build(tiny(**{"train.learning_rate": 2e-3}))
    b = {"image": tf.constant(batch())}
    step = tf.function(m.train_step)
    first = step(b)
    for _ in range(30):
        out = step(b)
    # L_G falls, driven by its reconstruction term (the adversarial term moves with D)
    assert float(out["g_loss"]) < 0.6 * float(first["g_loss"])
    assert float(out["con"]) < 0.5 * float(first["con"])
    assert float(out["d_reinits"]) == 0


def test_discriminator_reinit_fires_when_forced():
    m = build(tiny(**{"model.d_reinit_threshold": 1e9}))  # every loss is "collapsed"
    b = {"image": tf.constant(batch())}
    step = tf.function(m.train_step)
    before = [v.numpy().copy() for v in m.discriminator.variables]
    out = step(b)
    assert float(out["d_reinits"]) == 1
    for v, old in zip(m.discriminator.variables, before):
        new = v.numpy()
        if v.name == "kernel":
            assert not np.allclose(new, old) and abs(new.std() - 0.02) < 0.004
        elif v.name == "gamma":
            assert abs(new.mean() - 1) < 0.01
        elif v.name in ("beta", "moving_mean"):
            assert np.all(new == 0)
        elif v.name == "moving_variance":
            assert np.all(new == 1)
    assert float(step(b)["d_reinits"]) == 2
    never = build(tiny(**{"model.d_reinit_threshold": 0}))
    assert float(tf.function(never.train_step)(b)["d_reinits"]) == 0


def test_save_load_and_export_give_the_same_scores(tmp_path):
    cfg = tiny(**{"model.recon_loss": "perceptual"})
    m = build(cfg)
    x = batch(4)
    tf.function(m.train_step)({"image": tf.constant(batch())})  # move BN statistics away from their init
    ref = m.score(x)
    run = save_run(m, cfg, tmp_path / "run")
    again = load_model(run)
    assert isinstance(again, GANomaly)
    for k in ref:
        np.testing.assert_array_equal(again.score(x)[k].numpy(), ref[k].numpy())
    Run(run).eval_dir.mkdir()
    thr = float(np.median(ref["score"].numpy()))
    Run(run).thresholds_file.write_text(json.dumps({"rule": "youden", "per_region": False, "thresholds": thr}))
    sm = tf.saved_model.load(str(export(run, tmp_path / "sm")))
    got = sm.signatures["serving_default"](images=tf.constant(x))
    for k in ref:
        np.testing.assert_allclose(got[k].numpy(), ref[k].numpy(), atol=1e-5)
    np.testing.assert_array_equal(got["is_anomalous"].numpy(), ref["score"].numpy() >= thr)
    # only the score path is exported: E1, decoder, E2 (no discriminator, no VGG16)
    n_vars = len(m.encoder.variables) + len(m.decoder.variables) + len(m.encoder2.variables)
    assert len(sm.variables) == n_vars
    meta = json.loads((tmp_path / "sm" / "tfanomaly.json").read_text())
    assert meta["family"] == "ganomaly"


def shrink(cfg):
    size = 32
    return [f"data.image_size=[{size}, {size}]", "model.latent_dim=16", "model.base_width=8", "model.max_width=32", "model.vgg_weights=none", "model.resnet_weights=none", "train.batch_size=2"], size


@pytest.mark.parametrize("name", shipped_configs("ganomaly"))
def test_every_shipped_config_train_step_runs(name):
    cfg = load_config(ROOT / "configs" / name)
    over, size = shrink(cfg)
    small = load_config(ROOT / "configs" / name, over)
    assert (small.model.encoder, small.model.recon_loss, small.model.perceptual_taps) == (cfg.model.encoder, cfg.model.recon_loss, cfg.model.perceptual_taps)
    assert_one_train_step(build(small), size, small.data.channels)


def test_train_eval_export_through_the_shared_driver(vial_data, tmp_path):
    from tfanomaly.evaluate import evaluate

    cfg = load_config(
        None,
        [
            "family=ganomaly",
            f"data.root={vial_data}",
            "data.image_size=[32, 32]",
            "data.frames_per_acquisition=4",
            "data.rank_images=[1, 4]",
            "data.eval_frames=[0, 2]",
            "perturb.enabled=false",
            "model.base_width=8",
            "model.latent_dim=16",
            "train.epochs=1",
            "train.steps_per_epoch=3",
            "train.batch_size=4",
        ],
    )
    run = train(cfg, tmp_path / "run", verbose=0)
    summary = json.loads(Run(run).summary_file.read_text())
    assert summary["family"] == "ganomaly" and summary["global_step"] == 3
    assert {"g_loss", "adv", "con", "enc", "d_loss", "d_reinits"} <= set(summary["final_losses"])
    res = evaluate(load_model(run), cfg, Run(run).eval_dir)
    assert 0.0 <= res["image_auroc"]["mean"] <= 1.0 and Run(run).thresholds_file.exists()
    assert export(run, tmp_path / "sm").joinpath("saved_model.pb").exists()
