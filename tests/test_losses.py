import numpy as np
import pytest
import tensorflow as tf
from scipy.ndimage import correlate1d

from tfanomaly import losses

RNG = np.random.default_rng(0)
X = RNG.uniform(size=(3, 24, 24, 2)).astype(np.float32)
Y = np.clip(X + RNG.normal(0, 0.2, X.shape), 0, 1).astype(np.float32)


def np_ssim(x, y, window=11, sigma=1.5):
    """SSIM of Wang et al. with a Gaussian window, VALID filtering, mean over pixels and channels."""
    ax = np.arange(window) - (window - 1) / 2
    g = np.exp(-(ax**2) / (2 * sigma**2))
    g /= g.sum()
    half = window // 2

    def blur(t):
        t = correlate1d(correlate1d(t, g, axis=0, mode="constant"), g, axis=1, mode="constant")
        return t[half:-half, half:-half]

    out = []
    for a, b in zip(x.astype(np.float64), y.astype(np.float64)):
        vals = []
        for c in range(a.shape[-1]):
            p, q = a[..., c], b[..., c]
            mx, my = blur(p), blur(q)
            sxx, syy, sxy = blur(p * p) - mx**2, blur(q * q) - my**2, blur(p * q) - mx * my
            c1, c2 = 0.01**2, 0.03**2
            vals.append(((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2)))
        out.append(np.mean(vals))
    return np.array(out)


def test_ssim_against_numpy():
    np.testing.assert_allclose(losses.ssim(X, Y, 11).numpy(), np_ssim(X, Y, 11), atol=2e-5)
    np.testing.assert_allclose(losses.ssim(X, Y, 7).numpy(), np_ssim(X, Y, 7), atol=2e-5)
    np.testing.assert_allclose(losses.ssim(X, X).numpy(), 1.0, atol=1e-6)


def test_ssim_map_mean_matches_interior():
    m = losses.ssim_map(X, Y, 7).numpy()
    assert m.shape == (3, 24, 24, 1)
    np.testing.assert_allclose(m[:, 3:-3, 3:-3].mean(axis=(1, 2, 3)), np_ssim(X, Y, 7), atol=2e-5)


def test_pixel_losses_against_numpy():
    d = X - Y
    np.testing.assert_allclose(losses.l1(X, Y).numpy(), np.abs(d).mean(axis=(1, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(losses.l2(X, Y).numpy(), (d**2).mean(axis=(1, 2, 3)), rtol=1e-6)
    big = 3.0 * X
    a = np.abs(big - Y)
    ref = np.where(a <= 1.0, 0.5 * a**2, a - 0.5).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(losses.huber(big, Y).numpy(), ref, rtol=1e-6)


def test_focal_and_bce_against_numpy():
    p = RNG.uniform(0.01, 0.99, (2, 8, 8, 1)).astype(np.float32)
    t = (RNG.uniform(size=p.shape) > 0.7).astype(np.float32)
    ref = -(0.25 * (1 - p) ** 2 * t * np.log(p) + 0.75 * p**2 * (1 - t) * np.log(1 - p))
    np.testing.assert_allclose(losses.focal(p, t, 2.0, 0.25).numpy(), ref.mean(axis=(1, 2, 3)), rtol=1e-5)
    logits = np.array([[2.0], [-1.0]], np.float32)
    np.testing.assert_allclose(losses.bce_logits(logits, 1.0).numpy(), np.log1p(np.exp(-logits[:, 0])), rtol=1e-6)
    np.testing.assert_allclose(losses.bce_logits(logits, 0.0).numpy(), np.log1p(np.exp(logits[:, 0])), rtol=1e-6)


def test_average_is_over_the_global_batch():
    v = tf.constant([1.0, 2.0, 3.0, 6.0])
    assert float(losses.average(v)) == pytest.approx(3.0)
    assert float(losses.average(v, global_batch_size=8)) == pytest.approx(1.5)


@pytest.mark.parametrize("shape", [(2, 13, 17, 3), (16, 64, 64, 1)])
def test_gaussian_blur_equals_the_2d_convolution(shape):
    """The banded-matmul blur is the gaussian convolution (SAME with zero padding, and VALID), values
    against scipy in float64 and gradients against TF's depthwise convolution, eager and in a
    tf.function. The single-channel batch of 16 is the demo's SSIM shape: the broadcast batched matmul
    this blur once used returned wrong values or segfaulted there on Intel AVX-512/AMX hosts."""
    from tfanomaly.filters import gaussian_1d, gaussian_blur, gaussian_kernel, gaussian_window

    x = tf.random.stateless_uniform(shape, [0, 1])
    k = gaussian_kernel(1.2, shape[-1])  # radius ceil(3.6) = 4: 9 taps
    g = gaussian_1d(gaussian_window(1.2), 1.2).astype(np.float64)
    ref = correlate1d(correlate1d(x.numpy().astype(np.float64), g, axis=1, mode="constant"), g, axis=2, mode="constant")
    for pad, valid in (("SAME", False), ("VALID", True)):

        def both(x, pad=pad, valid=valid):
            with tf.GradientTape(persistent=True) as t:
                t.watch(x)
                want = tf.nn.depthwise_conv2d(x, k, [1, 1, 1, 1], pad)
                got = gaussian_blur(x, 1.2, valid=valid)
                lw, lg = tf.reduce_sum(want**2), tf.reduce_sum(got**2)
            return got, t.gradient(lg, x), t.gradient(lw, x)

        for fn in (both, tf.function(both)):
            got, grad, grad_ref = (v.numpy() for v in fn(x))
            np.testing.assert_allclose(got, ref[:, 4:-4, 4:-4] if valid else ref, atol=1e-6)
            np.testing.assert_allclose(grad, grad_ref, atol=1e-5)


def test_ssim_equals_tf_image_ssim():
    import tensorflow as tf

    x = tf.random.stateless_uniform([3, 32, 40, 3], [2, 3])
    y = tf.clip_by_value(x + tf.random.stateless_normal(x.shape, [4, 5], stddev=0.1), 0.0, 1.0)
    for window in (7, 11):
        want = tf.image.ssim(x, y, 1.0, filter_size=window, filter_sigma=1.5)
        np.testing.assert_allclose(losses.ssim(x, y, window).numpy(), want.numpy(), atol=1e-6)
