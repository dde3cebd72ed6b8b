"""Small image filters shared by the data pipeline and the models (a leaf:
it imports only TensorFlow)."""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf


def gaussian_window(sigma: float) -> int:
    """Taps of a gaussian cut at 3 sigma: 2 * ceil(3 sigma) + 1 (at least 3)."""
    return 2 * max(1, int(math.ceil(3.0 * sigma))) + 1


def gaussian_kernel(sigma: float, channels: int = 1):
    """[k, k, channels, 1] normalised gaussian for depthwise convolution."""
    g = gaussian_1d(gaussian_window(sigma), sigma)
    return tf.tile(tf.constant(np.outer(g, g))[:, :, None, None], [1, 1, channels, 1])


def gaussian_1d(window: int, sigma: float) -> np.ndarray:
    """Normalised 1-D gaussian of ``window`` taps (odd), centred."""
    ax = np.arange(window, dtype=np.float64) - (window - 1) / 2.0
    g = np.exp(-(ax**2) / (2.0 * sigma * sigma))
    return (g / g.sum()).astype(np.float32)


def band_matrix(n: int, taps: np.ndarray, valid: bool) -> np.ndarray:
    """The [m, n] matrix of a 1-D correlation with ``taps`` over n samples:
    ``valid`` keeps the m = n - k + 1 full windows; otherwise m = n, centred,
    with zeros beyond the border (TensorFlow's SAME padding)."""
    k = len(taps)
    r = (k - 1) // 2
    rows = n - k + 1 if valid else n
    m = np.zeros((max(rows, 0), n), np.float32)
    for i in range(rows):
        c = i + r if valid else i  # centre of output i on the input axis
        lo, hi = max(0, c - r), min(n, c + r + 1)
        m[i, lo:hi] = taps[lo - c + r : hi - c + r]
    return m


def gaussian_blur(x, sigma: float, window: int | None = None, valid: bool = False):
    """Gaussian blur of ``x`` [B, H, W, C] (float32), separable, as two banded
    matrix products: on 2-core CPUs far faster than a depthwise 2-D
    convolution for 7-13 tap windows and 64 px images (``bench/ssim_speed.py``,
    docs/benchmarks.md). ``window`` defaults to :func:`gaussian_window`;
    SAME (zero padding) or VALID. Needs static H and W."""
    window = window or gaussian_window(sigma)
    h, w = x.shape[1], x.shape[2]
    if h is None or w is None:
        raise ValueError("gaussian_blur needs static image height and width")
    g = gaussian_1d(window, sigma)
    bh = tf.constant(band_matrix(h, g, valid))
    bw = tf.constant(band_matrix(w, g, valid))
    c = x.shape[3]
    # Both passes are plain 2-D MatMuls on a flattened batch. A batched matmul with a broadcast 2-D
    # operand (tf.matmul([B, C, H, W], [W', W]^T)) is what this was before, and TF 2.21's oneDNN kernel for
    # it segfaults or returns wrong values on Intel AVX-512/AMX hosts when C is 1 (bench/onednn_crash.py
    # --matmul, docs/benchmarks.md); its gradient is the same kind of product.
    t = tf.transpose(x, [0, 3, 1, 2])  # [B, C, H, W]
    t = tf.reshape(tf.matmul(tf.reshape(t, [-1, w]), bw, transpose_b=True), [-1, c, h, bw.shape[0]])  # along W
    t = tf.transpose(t, [0, 1, 3, 2])  # [B, C, W', H]
    t = tf.reshape(tf.matmul(tf.reshape(t, [-1, h]), bh, transpose_b=True), [-1, c, bw.shape[0], bh.shape[0]])  # along H
    return tf.transpose(t, [0, 3, 2, 1])  # [B, H', W', C]


def mirrored_blur(x, sigma: float):
    """:func:`gaussian_blur` of ``x`` [B, H, W, C] with its edges mirrored
    (``SYMMETRIC`` padding) instead of zero padding: a tile's border is not a
    fall to zero. Needs the gaussian's radius <= H and W."""
    r = gaussian_window(sigma) // 2
    return gaussian_blur(tf.pad(x, [[0, 0], [r, r], [r, r], [0, 0]], mode="SYMMETRIC"), sigma, valid=True)
