"""Augmentation of good images, also used as the test-time domain-shift set.

Pure TF ops with stateless seeds: the same seed gives the same result, so a
training run is reproducible and the shifted test set is fixed.
"""

from __future__ import annotations

import math

import tensorflow as tf


def rotate(image, angle, fill_mode="REFLECT", interpolation="BILINEAR"):
    """Rotate [H, W, C] by ``angle`` radians about the centre."""
    h = tf.cast(tf.shape(image)[0], tf.float32)
    w = tf.cast(tf.shape(image)[1], tf.float32)
    cos, sin = tf.cos(angle), tf.sin(angle)
    x_off = ((w - 1) - (cos * (w - 1) - sin * (h - 1))) / 2.0
    y_off = ((h - 1) - (sin * (w - 1) + cos * (h - 1))) / 2.0
    transform = tf.stack([cos, -sin, x_off, sin, cos, y_off, 0.0, 0.0])[None]
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None],
        transforms=transform,
        output_shape=tf.shape(image)[:2],
        fill_value=0.0,
        interpolation=interpolation,
        fill_mode=fill_mode,
    )
    return out[0]


def translate(image, mask, seed, fraction):
    """Translate image and mask by whole pixels, at most ``fraction`` = [fy, fx] of the height and width,
    reflecting at the border. Whole pixels keep the image as sharp as it was (no resampling)."""
    h, w = image.shape[0], image.shape[1]
    my, mx = int(round(fraction[0] * h)), int(round(fraction[1] * w))
    seeds = tf.random.experimental.stateless_split(seed, num=2)
    dy = tf.random.stateless_uniform([], seeds[0], -my, my + 1, dtype=tf.int32)
    dx = tf.random.stateless_uniform([], seeds[1], -mx, mx + 1, dtype=tf.int32)
    pads = [[my, my], [mx, mx], [0, 0]]

    def move(x):
        big = tf.pad(x, pads, mode="REFLECT")
        return tf.ensure_shape(tf.slice(big, tf.stack([my - dy, mx - dx, 0]), tf.shape(x)), x.shape)

    return move(image), move(mask)


def augment(image, mask, seed, cfg):
    """Apply the augmentations of ``cfg`` (an AugmentConfig) to image and mask.

    Geometric operations move the mask with the image; photometric ones touch
    the image only. Returns (image, mask), image clipped to [0, 1].
    """
    if not cfg.enabled:
        return image, mask
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=10)
    h, w = image.shape[0], image.shape[1]

    if cfg.rotation > 0:
        angle = tf.random.stateless_uniform([], seeds[0], -cfg.rotation, cfg.rotation)
        image = rotate(image, angle)
        mask = rotate(mask, angle, interpolation="NEAREST")
    if cfg.shift[0] > 0 or cfg.shift[1] > 0:
        image, mask = translate(image, mask, tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), 7), cfg.shift)
    if cfg.rot90:  # square patches (checked by the config)
        s90 = tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), 90)  # the other draws stay as they were
        k = tf.random.stateless_uniform([], s90, 0, 4, dtype=tf.int32)
        image = tf.image.rot90(image, k)
        mask = tf.image.rot90(mask, k)
    if cfg.vflip:
        flip = tf.random.stateless_uniform([], seeds[1]) < 0.5
        image = tf.cond(flip, lambda: tf.reverse(image, [0]), lambda: image)
        mask = tf.cond(flip, lambda: tf.reverse(mask, [0]), lambda: mask)
    if cfg.hflip:
        flip = tf.random.stateless_uniform([], seeds[2]) < 0.5
        image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
        mask = tf.cond(flip, lambda: tf.reverse(mask, [1]), lambda: mask)

    def chance(s):
        return tf.cast(tf.random.stateless_uniform([], s) < cfg.probability, tf.float32)

    if cfg.downscale < 1.0:
        factor = tf.random.stateless_uniform([], seeds[3], cfg.downscale, 1.0)
        small = tf.maximum(tf.cast(tf.round(factor * tf.constant([h, w], tf.float32)), tf.int32), 1)
        scaled = tf.image.resize(tf.image.resize(image, small, "bilinear"), [h, w], "bilinear")
        use = chance(seeds[4])
        image = use * scaled + (1.0 - use) * image
    if cfg.brightness > 0:
        delta = tf.random.stateless_uniform([], seeds[5], -cfg.brightness, cfg.brightness)
        image = image + chance(seeds[6]) * delta
    if cfg.contrast > 0:
        factor = tf.random.stateless_uniform([], seeds[7], 1.0 - cfg.contrast, 1.0 + cfg.contrast)
        mean = tf.reduce_mean(image, axis=[0, 1], keepdims=True)
        use = chance(seeds[8])
        image = use * ((image - mean) * factor + mean) + (1.0 - use) * image
    if cfg.noise_std > 0:
        image = image + cfg.noise_std * tf.random.stateless_normal(tf.shape(image), seeds[9])
    return tf.clip_by_value(image, 0.0, 1.0), mask


def _affine(image, angle, scale, interpolation):
    """Rotate by ``angle`` and zoom by ``scale`` (> 1 enlarges) about the centre."""
    h = tf.cast(tf.shape(image)[0], tf.float32)
    w = tf.cast(tf.shape(image)[1], tf.float32)
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    # output pixel p maps to input pixel A p + b with A = R(-angle) / scale
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    x_off = cx - (cos * cx - sin * cy)
    y_off = cy - (sin * cx + cos * cy)
    transform = tf.stack([cos, -sin, x_off, sin, cos, y_off, 0.0, 0.0])[None]
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None],
        transforms=transform,
        output_shape=tf.shape(image)[:2],
        fill_value=0.0,
        interpolation=interpolation,
        fill_mode="REFLECT",
    )[0]


def shift(image, mask, seed, cfg):
    """The test-time domain shift of the capsule study (a ShiftConfig ``cfg``),
    every operation applied to every image, with per-image stateless draws:
    zoom (resize by ``zoom`` and centre-crop back: the object appears larger,
    nothing is padded), affine (rotation in +-``rotation`` degrees, scale in
    ``scale``), down to ``downscale`` of the resolution and back, brightness and
    contrast jitter, gaussian noise. Geometric operations move the mask too."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=6)
    h, w = image.shape[0], image.shape[1]
    if cfg.zoom != 1.0:
        zh, zw = int(round(h * cfg.zoom)), int(round(w * cfg.zoom))
        image = tf.image.resize_with_crop_or_pad(tf.image.resize(image, [zh, zw], "bilinear"), h, w)
        mask = tf.image.resize_with_crop_or_pad(tf.image.resize(mask, [zh, zw], "nearest"), h, w)
    if cfg.rotation > 0 or cfg.scale[1] > cfg.scale[0] or cfg.scale[0] != 1.0:
        angle = tf.random.stateless_uniform([], seeds[0], -cfg.rotation, cfg.rotation) * (math.pi / 180.0)
        scale = tf.random.stateless_uniform([], seeds[1], cfg.scale[0], cfg.scale[1]) if cfg.scale[1] > cfg.scale[0] else tf.constant(cfg.scale[0])
        image = _affine(image, angle, scale, "BILINEAR")
        mask = _affine(mask, angle, scale, "NEAREST")
    if cfg.downscale < 1.0:
        small = [max(1, int(round(h * cfg.downscale))), max(1, int(round(w * cfg.downscale)))]
        image = tf.image.resize(tf.image.resize(image, small, "bilinear"), [h, w], "bilinear")
    if cfg.brightness > 0:
        image = image + tf.random.stateless_uniform([], seeds[2], -cfg.brightness, cfg.brightness)
    if cfg.contrast > 0:
        factor = tf.random.stateless_uniform([], seeds[3], 1.0 - cfg.contrast, 1.0 + cfg.contrast)
        mean = tf.reduce_mean(image, axis=[0, 1], keepdims=True)
        image = (image - mean) * factor + mean
    if cfg.noise_std > 0:
        image = image + cfg.noise_std * tf.random.stateless_normal(tf.shape(image), seeds[4])
    return tf.clip_by_value(image, 0.0, 1.0), mask
