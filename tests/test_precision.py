"""mixed_bfloat16: every family trains and scores under it, close to float32 on the
same weights, and the export of a bf16 model serves float32 images."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests._distributed_run import TINY
from tests.conftest import save_run
from tfanomaly.batch import ABNORMAL, make
from tfanomaly.config import load_config
from tfanomaly.export import export
from tfanomaly.models import registry

# Score tolerance, relative to the spread of the float32 scores over the batch: bf16 keeps 8 bits of
# mantissa, so every layer rounds its activations to about 0.4%.
SCORE_TOL = 0.1


def tiny(family, *extra):
    return load_config(None, [f"family={family}", "data.root=unused", "data.image_size=[32, 32]", "train.batch_size=4", *TINY[family], *extra])


@pytest.fixture
def bf16():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


def textured(n=8, seed=0):
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    x = np.stack([0.3 + 0.4 * yy * (1 - xx) + 0.08 * g.normal(size=(32, 32)) for _ in range(n)])[..., None]
    x[n // 2 :, 10:16, 10:16] = 0.95  # half of them with a bright square
    return np.clip(x, 0, 1).astype(np.float32)


@pytest.mark.parametrize("family", sorted(TINY))
def test_bfloat16_trains_and_scores_like_float32(family, bf16):
    keras.mixed_precision.set_global_policy("float32")
    keras.utils.set_random_seed(0)
    ref = registry.build(tiny(family))
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    cfg = tiny(family, "train.mixed_precision=mixed_bfloat16")
    model = registry.build(cfg)
    assert all(v.dtype == "float32" for v in model.weights if "float" in v.dtype)  # float variables stay float32
    model.set_weights(ref.get_weights())
    x = tf.constant(textured())
    a, b = ref.score(x), model.score(x)
    assert b["score"].dtype == tf.float32 and b["heatmap"].dtype == tf.float32
    s32, s16 = a["score"].numpy(), b["score"].numpy()
    assert np.all(np.isfinite(s16))
    spread = s32.max() - s32.min()
    assert np.abs(s16 - s32).max() <= SCORE_TOL * spread + 1e-6, (s32, s16)
    # two train steps: finite losses
    model.compile_for_training(cfg.train, 10, 4)
    m = np.zeros((4, 32, 32, 1), np.float32)
    m[:, 8:16, 8:16] = 1
    batch = {**make(x[:4], x[:4] * (1 - 0.5 * m), tf.constant(m), tf.constant(m * 0.5)), ABNORMAL: x[4:]}
    step = tf.function(model.train_step)
    for _ in range(2):
        logs = step(batch)
    assert all(np.isfinite(float(v)) for v in logs.values()), logs


def test_bfloat16_export_serves_float32_images(bf16, tmp_path):
    cfg = tiny("grdnet", "train.mixed_precision=mixed_bfloat16")
    keras.utils.set_random_seed(0)
    model = registry.build(cfg)
    run = save_run(model, cfg, tmp_path / "run")
    keras.mixed_precision.set_global_policy("float32")  # the line's process does not set a policy
    loaded = tf.saved_model.load(str(export(run, tmp_path / "sm")))
    x = textured(4)
    got = loaded.signatures["serving_default"](images=tf.constant(x))
    assert got["score"].dtype == tf.float32
    # the same bf16 computation in another graph: equal to bf16's rounding of a few ops (measured 3e-5)
    np.testing.assert_allclose(got["score"].numpy(), model.score(tf.constant(x))["score"].numpy(), rtol=1e-3, atol=1e-6)
