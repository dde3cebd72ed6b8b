import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import ROOT, assert_one_train_step, save_run, shipped_configs
from tfanomaly.config import load_config
from tfanomaly.export import export
from tfanomaly.models import registry
from tfanomaly.models.adgan import ADGAN, gradient_penalty
from tfanomaly.train import load_model


def tiny(size=32, channels=1, **over):
    args = [
        "family=adgan",
        f"data.image_size=[{size}, {size}]",
        f"data.channels={channels}",
        "data.root=unused",
        "perturb.enabled=false",
        "model.base_width=8",
        "model.latent_dim=8",
        "model.search_steps=10",
        "train.batch_size=8",
        "train.lr_schedule=constant",
    ]
    return load_config(None, args + [f"{k}={v}" for k, v in over.items()])


def build(cfg):
    keras.utils.set_random_seed(cfg.seed)
    m = registry.build(cfg)
    m.compile_for_training(cfg.train, 100, cfg.train.batch_size)
    return m


def unrelated(n=1, size=32, channels=1):
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1.0)
    img = ((np.sin(9 * xx) * np.cos(7 * yy)) > 0).astype(np.float32)  # a hard checker-like pattern
    return np.repeat(np.repeat(img[None, ..., None], channels, -1), n, 0)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_dcgan_shapes(channels):
    m = registry.build(tiny(channels=channels))
    assert m.generator.input.shape == (None, 1, 1, 8) and m.generator.output.shape == (None, 32, 32, channels)
    assert m.critic.output.shape == (None, 1, 1, 1)
    out = m.score(unrelated(2, channels=channels))
    assert out["score"].shape == (2,) and out["heatmap"].shape == (2, 32, 32, 1)
    assert out["reconstruction"].shape == (2, 32, 32, channels)


def test_gradient_penalty_against_finite_differences():
    keras.utils.set_random_seed(0)
    inp = keras.Input((4, 4, 1), dtype="float64")
    h = keras.layers.Conv2D(3, 3, activation="tanh", dtype="float64")(inp)
    out = keras.layers.Dense(1, dtype="float64")(keras.layers.Flatten(dtype="float64")(h))
    critic = keras.Model(inp, out)
    g = np.random.default_rng(0)
    real, fake = g.uniform(-1, 1, (3, 4, 4, 1)), g.uniform(-1, 1, (3, 4, 4, 1))
    eps = np.array([0.2, 0.5, 0.9])
    got = gradient_penalty(critic, tf.constant(real), tf.constant(fake), tf.constant(eps)).numpy()
    mix = eps[:, None, None, None] * real + (1 - eps[:, None, None, None]) * fake
    f = lambda x: critic(tf.constant(x)).numpy()[:, 0]  # noqa: E731
    grad = np.zeros_like(mix)
    hstep = 1e-6
    for idx in np.ndindex(4, 4, 1):
        d = np.zeros_like(mix)
        d[(slice(None), *idx)] = hstep
        grad[(slice(None), *idx)] = (f(mix + d) - f(mix - d)) / (2 * hstep)
    ref = (np.sqrt((grad**2).sum(axis=(1, 2, 3))) - 1) ** 2
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-8)  # the penalty is computed in float32


def test_training_objectives():
    x = {"image": tf.constant(np.random.default_rng(0).uniform(size=(8, 32, 32, 1)).astype(np.float32))}
    w = build(tiny(**{"model.objective": "wgan", "model.n_critic": 3, "model.clip_value": 0.01}))
    out = tf.function(w.train_step)(x)
    assert {"d_loss", "g_loss", "w_dist"} <= set(out)
    assert int(w.d_optimizer.iterations.numpy()) == 3 and int(w.g_optimizer.iterations.numpy()) == 1
    assert all(np.abs(v.numpy()).max() <= 0.01 + 1e-7 for v in w.critic.trainable_variables)
    gp = build(tiny(**{"model.objective": "wgan_gp"}))
    out = tf.function(gp.train_step)(x)
    np.testing.assert_allclose(float(out["d_loss"]), -float(out["w_dist"]) + 10 * float(out["gp"]), rtol=1e-4, atol=1e-5)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in gp.critic.layers)  # per-sample penalty


def test_latent_search_lowers_the_loss_and_ranks_generated_samples_first():
    m = registry.build(tiny(**{"model.search_steps": 30}))
    for v in m.generator.weights:  # a generator whose output really depends on z (the DCGAN init is nearly flat)
        if v.name == "kernel":
            v.assign(v * 16)
    z = m.initial_z()[:1] + 0.3 * tf.random.stateless_normal([1, 1, 1, 8], [5, 5])
    generated = m.render(z).numpy()
    x = np.concatenate([generated, unrelated()])
    final, _, trace = tf.function(lambda v: m.search(v, trace=True))(tf.constant(x))
    trace = trace.numpy()
    assert trace.shape == (31,)
    steps = np.diff(trace)
    assert trace[-1] < 0.7 * trace[0] and (steps <= 1e-7).mean() >= 0.9
    s = m.score(x)["score"].numpy()
    assert s[0] < s[1]
    np.testing.assert_allclose(s, final.numpy().mean(1), rtol=1e-6)


@pytest.mark.parametrize("lr_theta", [0.0, 1e-3])
def test_scores_do_not_depend_on_the_batch_and_weights_are_reset(lr_theta):
    m = registry.build(tiny(**{"model.lr_theta": lr_theta, "model.search_steps": 5, "model.n_seed": 2}))
    before = [v.numpy().copy() for v in m.generator.weights]
    a = unrelated()
    b = np.random.default_rng(1).uniform(size=(1, 32, 32, 1)).astype(np.float32)
    score = tf.function(m.score)
    alone = score(a)["score"].numpy()
    twice = score(a)["score"].numpy()
    batch = score(np.concatenate([b, a, b]))["score"].numpy()
    np.testing.assert_array_equal(alone, twice)
    np.testing.assert_allclose(batch[1], alone[0], rtol=1e-4)
    np.testing.assert_allclose(batch[0], batch[2], rtol=1e-4)
    for v, old in zip(m.generator.weights, before):
        np.testing.assert_array_equal(v.numpy(), old)
    if lr_theta:  # the adaptation really changes the result
        plain = registry.build(tiny(**{"model.search_steps": 5, "model.n_seed": 2}))
        plain.set_weights(m.get_weights())
        assert not np.allclose(plain.score(a)["score"].numpy(), alone, rtol=1e-6)


def test_save_load_and_export_carry_the_search(tmp_path):
    cfg = tiny(**{"model.search_steps": 4})
    m = build(cfg)
    tf.function(m.train_step)({"image": tf.constant(unrelated(8))})
    run = save_run(m, cfg, tmp_path / "run")
    again = load_model(run)
    assert isinstance(again, ADGAN)
    x = np.concatenate([unrelated(), np.random.default_rng(2).uniform(size=(1, 32, 32, 1)).astype(np.float32)])
    ref = m.score(x)
    for k in ref:
        np.testing.assert_allclose(again.score(x)[k].numpy(), ref[k].numpy(), rtol=1e-6, atol=1e-7)
    sm = tf.saved_model.load(str(export(run, tmp_path / "sm")))
    got = sm.signatures["serving_default"](images=tf.constant(x))
    for k in ref:
        np.testing.assert_allclose(got[k].numpy(), ref[k].numpy(), rtol=1e-5, atol=1e-6)
    assert len(sm.variables) == len(m.generator.variables)  # the critic stays behind
    assert json.loads((tmp_path / "sm" / "tfanomaly.json").read_text())["family"] == "adgan"


@pytest.mark.parametrize("name", shipped_configs("adgan"))
def test_every_shipped_config_train_step_runs(name):
    cfg = load_config(ROOT / "configs" / name)
    small = load_config(ROOT / "configs" / name, ["data.image_size=[32, 32]", "model.base_width=8", "model.latent_dim=8", "train.batch_size=2"])
    assert small.model.objective == cfg.model.objective and small.data.channels == cfg.data.channels
    assert_one_train_step(build(small), 32, small.data.channels)
