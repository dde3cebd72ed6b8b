"""2D Perlin noise and the GRD-Net perturbation P_q, in pure TF ops.

The noise follows the classic gradient-noise construction used by perlin-numpy
(a grid of ``res + 1`` unit gradients, quintic fade ``6t^5 - 15t^4 + 10t^3``,
scaled by sqrt(2)), so it can be checked against that reference value for
value given the same gradient angles. Everything is stateless: the same seed
gives the same noise inside tf.data, on any number of workers.
"""

from __future__ import annotations

import math

import tensorflow as tf


def _fade(t):
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


def perlin_from_uniforms(shape, res, uniforms):
    """Perlin noise of ``shape`` (H, W) with ``res`` (ry, rx) periods.

    ``uniforms`` [ry + 1, rx + 1] in [0, 1) give the gradient angles
    (angle = 2*pi*u), exactly as perlin-numpy draws them. H and W must be
    multiples of ry and rx.

    The sum over the four cell corners factors into two small matrix
    products: with cy(y) the cell row, fy its fraction and wy0 = 1 - fade(fy),
    wy1 = fade(fy) (likewise along x),
        noise = sqrt(2) * (A @ cos(G) @ B^T + C @ sin(G) @ D^T)
    where A[y, cy+d] = wy_d * (fy - d), C[y, cy+d] = wy_d,
          B[x, cx+d] = wx_d,            D[x, cx+d] = wx_d * (fx - d).
    """
    h, w = shape
    ry, rx = res[0], res[1]
    angles = 2.0 * math.pi * tf.cast(uniforms, tf.float32)

    def axis_weights(n, r):
        u = tf.cast(tf.range(n), tf.float32) * tf.cast(r, tf.float32) / float(n)
        cell = tf.cast(tf.floor(u), tf.int32)
        f = u - tf.floor(u)
        t = _fade(f)
        lo = tf.one_hot(cell, r + 1)
        hi = tf.one_hot(cell + 1, r + 1)
        w0, w1 = (1.0 - t)[:, None], t[:, None]
        plain = lo * w0 + hi * w1  # [n, r + 1]
        ramp = lo * (w0 * f[:, None]) + hi * (w1 * (f[:, None] - 1.0))
        return plain, ramp

    c_y, a_y = axis_weights(h, ry)
    b_x, d_x = axis_weights(w, rx)
    term_y = tf.matmul(tf.matmul(a_y, tf.cos(angles)), b_x, transpose_b=True)
    term_x = tf.matmul(tf.matmul(c_y, tf.sin(angles)), d_x, transpose_b=True)
    return math.sqrt(2.0) * (term_y + term_x)


def stateless_perlin(shape, res, seed):
    """Perlin noise with gradients drawn from a stateless seed ([2] int)."""
    uniforms = tf.random.stateless_uniform(tf.stack([res[0] + 1, res[1] + 1]), seed=seed)
    return perlin_from_uniforms(shape, res, uniforms)


def stroke_mask(h: int, w: int, seed, width=(1.0, 3.0)):
    """A binary [H, W] mask of one thin, slightly bent stroke (a scratch or a
    crack): centre anywhere, any angle, length 1/4 to all of the longer side,
    thickness ~ U(``width``) pixels, bent along a parabola of random sign."""
    u = tf.random.stateless_uniform([6], seed)
    cy, cx = u[0] * h, u[1] * w
    angle = u[2] * math.pi
    length = (0.25 + 0.75 * u[3]) * float(max(h, w))
    thick = width[0] + (width[1] - width[0]) * u[4]
    bend = (u[5] - 0.5) / length  # the ends up to 1/8 of the length off the chord
    yy, xx = tf.meshgrid(tf.range(h, dtype=tf.float32) + 0.5, tf.range(w, dtype=tf.float32) + 0.5, indexing="ij")
    ry, rx = yy - cy, xx - cx
    along = ry * tf.sin(angle) + rx * tf.cos(angle)
    across = rx * tf.sin(angle) - ry * tf.cos(angle) - bend * along * along
    return tf.cast((tf.abs(across) <= thick / 2.0) & (tf.abs(along) <= length / 2.0), tf.float32)


def band_mask(h: int, w: int, seed, wave: float = 0.04):
    """A binary [H, W] mask of one side of a gently wavy line (a band from an
    edge: an uneven or worn area, a piece broken off): the line passes through a
    random point of the image at any angle, and waves across by up to ``wave``
    times the longer side, with a wavelength of 1/3 to all of it. Both sides
    hold pixels (the line crosses the image's interior)."""
    u = tf.random.stateless_uniform([6], seed)
    cy, cx = (0.1 + 0.8 * u[0]) * h, (0.1 + 0.8 * u[1]) * w
    angle = u[2] * 2.0 * math.pi
    side = float(max(h, w))
    amp = wave * side * u[3]
    period = side * (1.0 / 3.0 + (2.0 / 3.0) * u[4])
    yy, xx = tf.meshgrid(tf.range(h, dtype=tf.float32) + 0.5, tf.range(w, dtype=tf.float32) + 0.5, indexing="ij")
    ry, rx = yy - cy, xx - cx
    along = ry * tf.cos(angle) - rx * tf.sin(angle)
    across = rx * tf.cos(angle) + ry * tf.sin(angle) + amp * tf.sin(2.0 * math.pi * along / period + 2.0 * math.pi * u[5])
    return tf.cast(across > 0.0, tf.float32)


def perturb(
    image,
    seed,
    *,
    probability=0.75,
    min_scale=0,
    max_scale=4,
    threshold=0.5,
    blend=(0.5, 1.0),
    source="perlin",
    gain=(0.2, 1.8),
    strokes=0.0,
    bands=0.0,
    other=0.0,
    other_image=None,
):
    """GRD-Net's P_q: returns (X_n, M, N) for one image [H, W, C] in [0, 1].

    With probability ``q`` a Perlin field P (random resolution 2**k per axis,
    k in [min_scale, max_scale]) is thresholded into the binary map
    M = [P > threshold]; the texture T is, by ``source``:
    ``perlin`` (the paper's): a second Perlin field mapped to [0, 1];
    ``self``: the image itself, rolled by a random offset and multiplied by a
    gain g ~ U(``gain``) (its own texture, darker or brighter, as real pits,
    cracks and uneven areas are); ``mixed``: either, with even odds per image.
    The noise is N = M * T (the texture alone on black), and the input is
    blended with it inside M: X_n = X * (1 - beta*M) + beta * N, beta ~ U(blend).
    With probability ``strokes`` the region M is a thin stroke
    (:func:`stroke_mask`: scratches and cracks, which Perlin blobs are not)
    instead of the thresholded field, and with probability ``bands`` (when it
    is not a stroke; ``strokes + bands <= 1``) one side of a wavy line
    (:func:`band_mask`: a worn or uneven band, a broken-off piece). Without
    perturbation, X_n = X and M = N = 0. With probability ``other`` the
    texture is ``other_image`` instead (another good image of the same shape,
    as is: another surface finish, brightness and grain, as an uneven area
    shows). With the ``perlin`` source and no strokes, bands or other images,
    the random numbers drawn are exactly the paper's (as before these options
    existed); adding bands keeps every stroke where it was, and ``other`` draws
    from a stream of its own.
    """
    image = tf.convert_to_tensor(image, tf.float32)
    h, w, c = image.shape[0], image.shape[1], image.shape[2]
    seed = tf.cast(seed, tf.int64)
    seeds = tf.random.experimental.stateless_split(seed, num=6)
    scales = tf.random.stateless_uniform([2], seeds[0], minval=min_scale, maxval=max_scale + 1, dtype=tf.int32)
    res = tf.bitwise.left_shift(tf.ones([2], tf.int32), scales)
    field = stateless_perlin((h, w), (res[0], res[1]), seeds[1])
    if source not in ("perlin", "self", "mixed"):
        raise ValueError(f"perturb source: expected perlin, self or mixed, got {source!r}")
    if source != "self":  # each stream has its own seeds: skipping one never shifts the other
        scales_t = tf.random.stateless_uniform([2], seeds[2], minval=min_scale, maxval=max_scale + 1, dtype=tf.int32)
        res_t = tf.bitwise.left_shift(tf.ones([2], tf.int32), scales_t)
        texture = tf.clip_by_value(0.5 * (stateless_perlin((h, w), (res_t[0], res_t[1]), seeds[3]) + 1.0), 0.0, 1.0)
        texture = tf.tile(texture[..., None], [1, 1, c])
    if source != "perlin":
        extra = tf.random.experimental.stateless_split(tf.random.experimental.stateless_fold_in(seed, 101), num=3)
        g = tf.random.stateless_uniform([], extra[0], minval=gain[0], maxval=gain[1])
        shift = tf.random.stateless_uniform([2], extra[1], minval=0, maxval=tf.int32.max, dtype=tf.int32) % tf.constant([h, w])
        own = tf.clip_by_value(tf.roll(image, shift, axis=[0, 1]) * g, 0.0, 1.0)
        texture = own if source == "self" else tf.where(tf.random.stateless_uniform([], extra[2]) < 0.5, own, texture)
    if other > 0:
        if other_image is None:
            raise ValueError("perturb other > 0: expected other_image")
        pick_other = tf.random.stateless_uniform([], tf.random.experimental.stateless_fold_in(seed, 404)) < other
        texture = tf.where(pick_other, tf.convert_to_tensor(other_image, tf.float32), texture)
    apply = tf.cast(tf.random.stateless_uniform([], seeds[4]) < probability, tf.float32)
    beta = tf.random.stateless_uniform([], seeds[5], minval=blend[0], maxval=blend[1])
    region = tf.cast(field > threshold, tf.float32)
    if strokes > 0 or bands > 0:
        ks = tf.random.experimental.stateless_split(tf.random.experimental.stateless_fold_in(seed, 202), num=2)
        pick = tf.random.stateless_uniform([], ks[0])
        if bands > 0:
            band_seed = tf.random.experimental.stateless_fold_in(seed, 303)
            region = tf.where((pick >= strokes) & (pick < strokes + bands), band_mask(h, w, band_seed), region)
        if strokes > 0:
            region = tf.where(pick < strokes, stroke_mask(h, w, ks[1]), region)
    mask = region[..., None] * apply  # [H, W, 1]
    noise = mask * texture
    perturbed = image * (1.0 - beta * mask) + beta * noise
    return perturbed, mask, noise
