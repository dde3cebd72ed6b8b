import numpy as np
import pytest
import tensorflow as tf
from perlin_numpy import generate_perlin_noise_2d

from tfanomaly.data.perlin import perlin_from_uniforms, perturb
from tfanomaly.data.rank import rank_images


class _Injected:
    """An rng for perlin-numpy that hands out given uniforms (the gradient angles)."""

    def __init__(self, u):
        self.u = u

    def uniform(self, size):
        assert tuple(size) == self.u.shape
        return self.u


@pytest.mark.parametrize("shape,res", [((64, 64), (4, 4)), ((32, 48), (2, 8)), ((16, 16), (1, 1)), ((64, 32), (16, 4))])
def test_perlin_matches_perlin_numpy(shape, res):
    u = np.random.default_rng(3).uniform(size=(res[0] + 1, res[1] + 1))
    ref = generate_perlin_noise_2d(shape, res, rng=_Injected(u))
    got = perlin_from_uniforms(shape, res, tf.constant(u, tf.float32)).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_perturb_invariants_and_determinism():
    x = tf.random.stateless_uniform([32, 32, 3], [1, 2])
    outs = [perturb(x, tf.constant([7, i], tf.int64), probability=1.0, min_scale=1, max_scale=3) for i in range(6)]
    for xn, m, n in outs:
        m, n, xn = m.numpy(), n.numpy(), xn.numpy()
        assert set(np.unique(m)) <= {0.0, 1.0}
        outside = m[..., 0] == 0
        np.testing.assert_array_equal(xn[outside], x.numpy()[outside])  # untouched outside M
        assert np.all(n[outside] == 0)  # noise alone on black
        assert 0.0 <= xn.min() and xn.max() <= 1.0
    assert any(o[1].numpy().any() for o in outs)
    again = perturb(x, tf.constant([7, 0], tf.int64), probability=1.0, min_scale=1, max_scale=3)
    for a, b in zip(outs[0], again):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_perturb_probability_zero_is_identity():
    x = tf.random.stateless_uniform([16, 16, 1], [1, 2])
    xn, m, n = perturb(x, tf.constant([1, 1], tf.int64), probability=0.0, max_scale=2)
    np.testing.assert_array_equal(xn.numpy(), x.numpy())
    assert not m.numpy().any() and not n.numpy().any()


def test_rank_filter_against_numpy():
    frames = np.random.default_rng(0).integers(0, 256, (16, 8, 9, 1)).astype(np.uint8)
    got = rank_images(tf.constant(frames), [1, 8, 16]).numpy()
    ref = np.sort(frames, axis=0)[[0, 7, 15]]
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(got[0], frames.min(0))
    np.testing.assert_array_equal(got[2], frames.max(0))
    with pytest.raises(ValueError, match="rank 17"):
        rank_images(tf.constant(frames), [17])


def _rolled_gain(x, n, m):
    """The (shift, gain) for which N = M * roll(x, shift) * gain inside M, or None."""
    inside = m[..., 0] > 0
    for dy in range(x.shape[0]):
        for dx in range(x.shape[1]):
            r = np.roll(x, (dy, dx), axis=(0, 1))[inside]
            g = n[inside] / r
            if np.allclose(g, g.flat[0], rtol=1e-4):
                return (dy, dx), float(g.flat[0])
    return None


def test_perturb_self_source_blends_in_the_image_itself_scaled_by_a_gain():
    """source='self': inside M the texture is the image rolled by some offset
    times one gain from the configured range (values kept below 1/gain so
    nothing clips); 'mixed' draws both sources; 'perlin' is unchanged."""
    x = 0.1 + 0.3 * tf.random.stateless_uniform([16, 16, 1], [3, 4])
    xs = x.numpy()
    seen = []
    for i in range(8):
        xn, m, n = (t.numpy() for t in perturb(x, tf.constant([9, i], tf.int64), probability=1.0, max_scale=2, source="self", gain=(0.5, 1.5)))
        outside = m[..., 0] == 0
        np.testing.assert_array_equal(xn[outside], xs[outside])
        if m.any():
            found = _rolled_gain(xs, n, m)
            assert found is not None and 0.5 <= found[1] <= 1.5
            seen.append(found[1])
    assert len(seen) >= 3 and np.ptp(seen) > 0.1  # the gain varies from image to image
    kinds = set()
    for i in range(12):
        xn, m, n = (t.numpy() for t in perturb(x, tf.constant([5, i], tf.int64), probability=1.0, max_scale=2, source="mixed"))
        if m.any():
            kinds.add(_rolled_gain(xs, n, m) is not None)
    assert kinds == {True, False}
    a = perturb(x, tf.constant([7, 1], tf.int64), probability=1.0, max_scale=2)
    b = perturb(x, tf.constant([7, 1], tf.int64), probability=1.0, max_scale=2, source="perlin")
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u.numpy(), v.numpy())


def test_perturb_other_blends_in_another_image_and_draws_nothing_else():
    """other=1: inside M the texture is the other image as is (N = M * other);
    other=0.5 mixes it with the source's; the mask, blend and source draws are
    those of the same seed without it."""
    x = 0.1 + 0.3 * tf.random.stateless_uniform([16, 16, 1], [3, 4])
    o = 0.6 + 0.3 * tf.random.stateless_uniform([16, 16, 1], [5, 6])
    kinds = set()
    for i in range(12):
        seed = tf.constant([9, i], tf.int64)
        base = [t.numpy() for t in perturb(x, seed, probability=1.0, max_scale=2, source="self")]
        xn, m, n = (t.numpy() for t in perturb(x, seed, probability=1.0, max_scale=2, source="self", other=1.0, other_image=o))
        np.testing.assert_array_equal(m, base[1])  # the same region
        np.testing.assert_allclose(n, m * o.numpy(), atol=1e-7)
        outside = m[..., 0] == 0
        np.testing.assert_array_equal(xn[outside], x.numpy()[outside])
        beta = (x.numpy() - xn)[~outside] / (x.numpy() - n)[~outside]  # X_n = X (1 - beta) + beta N inside M
        if beta.size:
            assert np.ptp(beta) < 1e-4 and 0.5 - 1e-6 <= beta[0] <= 1.0 + 1e-6
        _, m2, n2 = (t.numpy() for t in perturb(x, seed, probability=1.0, max_scale=2, source="self", other=0.5, other_image=o))
        if m2.any():
            kinds.add(bool(np.allclose(n2, m2 * o.numpy(), atol=1e-7)))
    assert kinds == {True, False}
    with pytest.raises(ValueError, match="other_image"):
        perturb(x, tf.constant([1, 1], tf.int64), other=0.5)


def test_stroke_mask_is_a_thin_segment_of_the_drawn_thickness():
    """A stroke is thin (its area ~ length x thickness, far below a blob's),
    stays inside its length, and ``strokes=1`` makes every perturbed region one."""
    from tfanomaly.data.perlin import stroke_mask

    for i in range(10):
        m = stroke_mask(96, 96, tf.constant([2, i], tf.int64), width=(2.0, 2.0)).numpy()
        ys, xs = np.nonzero(m)
        if len(ys) < 10:  # mostly outside the image
            continue
        extent = np.hypot(np.ptp(ys), np.ptp(xs))
        assert m.sum() <= 2.0 * 2 * (extent + 4)  # thickness 2: about 2 px per pixel of length
        assert extent <= 96 * 1.5  # at most the longer side, plus its bend
    x = tf.fill([64, 64, 1], 0.3)
    for i in range(5):
        _, m, _ = perturb(x, tf.constant([3, i], tf.int64), probability=1.0, max_scale=3, strokes=1.0)
        assert m.numpy().sum() < 64 * 4  # thin, never a Perlin blob


def test_band_mask_is_one_side_of_a_line_and_keeps_strokes_in_place():
    """Without a wave a band is exactly the half-plane of its line (numpy, from
    the same draws); with one, both sides still hold pixels and the region is
    one side: each row crossing the line changes value at most a few times.
    ``bands`` leaves every stroke where it was, and bands=1 makes every
    perturbed region a band."""
    import math

    from tfanomaly.data.perlin import band_mask

    h, w = 48, 64
    for i in range(8):
        seed = tf.constant([5, i], tf.int64)
        u = tf.random.stateless_uniform([6], seed).numpy()
        cy, cx, angle = (0.1 + 0.8 * u[0]) * h, (0.1 + 0.8 * u[1]) * w, u[2] * 2 * math.pi
        yy, xx = np.mgrid[0:h, 0:w] + 0.5
        ref = ((xx - cx) * math.cos(angle) + (yy - cy) * math.sin(angle)) > 0
        got = band_mask(h, w, seed, wave=0.0).numpy()
        assert (got != ref).sum() <= 2  # float rounding on the line itself
        wavy = band_mask(h, w, seed).numpy()
        assert 0 < wavy.sum() < h * w
        assert max(np.count_nonzero(np.diff(row)) for row in wavy) <= 3
    x = tf.fill([64, 64, 1], 0.3)
    for i in range(6):
        seed = tf.constant([3, i], tf.int64)
        kw = dict(probability=1.0, max_scale=3, strokes=0.5)
        a = perturb(x, seed, **kw)[1].numpy()
        b = perturb(x, seed, bands=0.5, **kw)[1].numpy()
        ks = tf.random.experimental.stateless_split(tf.random.experimental.stateless_fold_in(seed, 202), num=2)
        if float(tf.random.stateless_uniform([], ks[0])) < 0.5:  # this image's region is a stroke, with or without bands
            np.testing.assert_array_equal(a, b)
            assert a.sum() < 64 * 4
        m = perturb(x, seed, probability=1.0, max_scale=3, bands=1.0)[1].numpy()[..., 0]
        assert 0 < m.sum() < 64 * 64 and max(np.count_nonzero(np.diff(row)) for row in m) <= 3
