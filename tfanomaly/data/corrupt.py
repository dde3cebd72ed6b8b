"""Patch-transformation corruption (Bauer et al. 2024), the self-supervised
training signal of the dilated-conv autoencoder: a tf.data stage beside the
Perlin perturbation.

For one image x [H, W, C] in [0, 1] and a stateless seed:
1. pick a random rectangle (side lengths a random fraction of the image),
2. deform its binary mask elastically (a smooth random displacement field,
   bilinear resampling) and blur it with a gaussian ("gaussian distortion"),
   which gives a real-valued mask M in [0, 1],
3. take a replacement patch y from a texture source (a random texture image,
   randomly flipped / rotated by 90 degrees, or a Perlin texture when no
   texture folder is configured),
4. blend: x_hat = M * y + (1 - M) * x.
With probability 1 - ``probability`` the image is left unchanged (M = 0).
Everything is pure TF with stateless seeds: the same seed gives the same
x_hat and M.
"""

from __future__ import annotations

import tensorflow as tf

from tfanomaly.data import perlin as perlin_mod
from tfanomaly.filters import gaussian_kernel


def gaussian_blur(x, sigma: float):
    """Blur [B, H, W, C] (or [H, W, C]) with a gaussian of std ``sigma`` (SAME, reflect)."""
    if sigma <= 0:
        return x
    single = x.shape.rank == 3
    if single:
        x = x[None]
    k = gaussian_kernel(sigma, x.shape[-1])
    r = (k.shape[0] - 1) // 2
    pad = tf.pad(x, [[0, 0], [r, r], [r, r], [0, 0]], mode="REFLECT" if min(x.shape[1], x.shape[2]) > r else "SYMMETRIC")
    y = tf.nn.depthwise_conv2d(pad, k, [1, 1, 1, 1], "VALID")
    return y[0] if single else y


def bilinear_sample(img, ys, xs):
    """Sample [H, W, C] at float coordinates (ys, xs) [H, W] with bilinear
    interpolation; outside the image the nearest edge value is used."""
    h, w = tf.shape(img)[0], tf.shape(img)[1]
    ys = tf.clip_by_value(ys, 0.0, tf.cast(h - 1, tf.float32))
    xs = tf.clip_by_value(xs, 0.0, tf.cast(w - 1, tf.float32))
    y0, x0 = tf.floor(ys), tf.floor(xs)
    wy, wx = (ys - y0)[..., None], (xs - x0)[..., None]
    y0i, x0i = tf.cast(y0, tf.int32), tf.cast(x0, tf.int32)
    y1i, x1i = tf.minimum(y0i + 1, h - 1), tf.minimum(x0i + 1, w - 1)

    def at(yi, xi):
        return tf.gather_nd(img, tf.stack([yi, xi], -1))

    top = at(y0i, x0i) * (1 - wx) + at(y0i, x1i) * wx
    bottom = at(y1i, x0i) * (1 - wx) + at(y1i, x1i) * wx
    return top * (1 - wy) + bottom * wy


def elastic(mask, seed, alpha: float, sigma: float):
    """Elastic deformation (Simard et al.): displace every pixel by a gaussian-
    smoothed uniform field scaled by ``alpha`` pixels."""
    h, w = mask.shape[0], mask.shape[1]
    s = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2)
    field = tf.random.stateless_uniform([2, h, w, 1], s[0], -1.0, 1.0)
    field = gaussian_blur(field, sigma)
    field = field / (tf.reduce_max(tf.abs(field)) + 1e-8) * alpha
    yy, xx = tf.meshgrid(tf.range(h, dtype=tf.float32), tf.range(w, dtype=tf.float32), indexing="ij")
    return bilinear_sample(mask, yy + field[0, ..., 0], xx + field[1, ..., 0])


def random_texture(textures, h: int, w: int, c: int, seed):
    """A replacement patch [H, W, C] in [0, 1]: one of ``textures`` [N, H, W, C]
    (random flip and 90-degree rotation), or a Perlin texture when None."""
    s = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=4)
    if textures is None:
        k = tf.random.stateless_uniform([2], s[0], 1, 5, dtype=tf.int32)  # grid 2..16 per axis
        res = tf.bitwise.left_shift(tf.ones([2], tf.int32), k)
        chans = [perlin_mod.stateless_perlin((h, w), (res[0], res[1]), tf.random.experimental.stateless_fold_in(s[1], i)) for i in range(c)]
        t = tf.stack(chans, -1)
        lo, hi = tf.reduce_min(t), tf.reduce_max(t)
        return (t - lo) / tf.maximum(hi - lo, 1e-6)
    n = tf.shape(textures)[0]
    i = tf.random.stateless_uniform([], s[0], 0, n, dtype=tf.int32)
    t = tf.gather(textures, i)
    t = tf.cond(tf.random.stateless_uniform([], s[2]) < 0.5, lambda: tf.reverse(t, [1]), lambda: t)
    if h == w:
        t = tf.image.rot90(t, tf.random.stateless_uniform([], s[3], 0, 4, dtype=tf.int32))
    return t


def corrupt(image, seed, *, textures=None, probability=1.0, size=(0.1, 0.5), elastic_alpha=8.0, elastic_sigma=4.0, blur_sigma=2.0):
    """Returns (x_hat [H, W, C], M [H, W, 1] in [0, 1], y [H, W, C]) for one image."""
    image = tf.convert_to_tensor(image, tf.float32)
    h, w, c = image.shape[0], image.shape[1], image.shape[2]
    s = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=6)
    frac = tf.random.stateless_uniform([2], s[0], size[0], size[1])
    ph = tf.maximum(tf.cast(tf.round(frac[0] * h), tf.int32), 1)
    pw = tf.maximum(tf.cast(tf.round(frac[1] * w), tf.int32), 1)
    y0 = tf.random.stateless_uniform([], s[1], 0, h - ph + 1, dtype=tf.int32)
    x0 = tf.random.stateless_uniform([], s[2], 0, w - pw + 1, dtype=tf.int32)
    yy, xx = tf.meshgrid(tf.range(h), tf.range(w), indexing="ij")
    rect = tf.cast((yy >= y0) & (yy < y0 + ph) & (xx >= x0) & (xx < x0 + pw), tf.float32)[..., None]
    m = elastic(rect, s[3], elastic_alpha, elastic_sigma) if elastic_alpha > 0 else rect
    m = tf.clip_by_value(gaussian_blur(m, blur_sigma), 0.0, 1.0)
    apply = tf.cast(tf.random.stateless_uniform([], s[4]) < probability, tf.float32)
    m = m * apply
    y = random_texture(textures, h, w, c, s[5])
    x_hat = m * y + (1.0 - m) * image
    return x_hat, m, y
