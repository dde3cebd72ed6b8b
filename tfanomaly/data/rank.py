"""Pixelwise rank filter over the frames of one acquisition, in TF ops."""

from __future__ import annotations

import tensorflow as tf


def rank_images(frames, ranks):
    """Rank images of ``frames`` [A, H, W, C].

    For each pixel the A values are sorted: rank 1 is the darkest value, rank A
    the brightest. Returns [len(ranks), H, W, C] in the order of ``ranks``.
    Moving bubbles and drops vanish from the middle ranks while fixed defects
    stay in every rank.
    """
    frames = tf.convert_to_tensor(frames)
    a = frames.shape[0]
    for r in ranks:
        if not 1 <= r <= (a if a is not None else r):
            raise ValueError(f"rank {r} is outside [1, {a}] for {a} frames")
    ordered = tf.sort(frames, axis=0)
    return tf.gather(ordered, [r - 1 for r in ranks], axis=0)
