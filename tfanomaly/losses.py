"""Loss terms and image similarity shared by the families.

Every function returns a per-example vector [B] in float32; a train_step
averages it over the *global* batch with ``tf.nn.compute_average_loss``, so
the same code is correct on one CPU and under any tf.distribute strategy.
"""

from __future__ import annotations

import tensorflow as tf

from tfanomaly.filters import gaussian_blur


def _f32(*xs):
    return [tf.cast(x, tf.float32) for x in xs]


def _per_example_mean(x):
    return tf.reduce_mean(tf.reshape(x, [tf.shape(x)[0], -1]), axis=1)


def _ssim_terms(x, y, window: int, sigma: float, valid: bool):
    """Per-pixel SSIM [B, H', W', C] with the gaussian window of Wang et al.
    (max value 1, k1 = 0.01, k2 = 0.03), computed with separable banded
    matrix products (:func:`tfanomaly.filters.gaussian_blur`)."""
    x, y = _f32(x, y)
    c1, c2 = 0.01**2, 0.03**2

    def blur(t):
        return gaussian_blur(t, sigma, window, valid)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))


def ssim(x, y, window: int = 11, sigma: float = 1.5):
    """Per-image SSIM [B] of images in [0, 1]: the mean over the valid windows
    and the channels, as ``tf.image.ssim`` (which it matches to float
    rounding, and outruns on CPU: docs/benchmarks.md, "SSIM on CPU")."""
    return tf.reduce_mean(_ssim_terms(x, y, window, sigma, valid=True), axis=[1, 2, 3])


def ssim_map(x, y, window: int = 11, sigma: float = 1.5):
    """Per-pixel SSIM map [B, H, W, 1] with SAME padding (for heatmaps)."""
    return tf.reduce_mean(_ssim_terms(x, y, window, sigma, valid=False), axis=-1, keepdims=True)


def l1(x, y):
    x, y = _f32(x, y)
    return _per_example_mean(tf.abs(x - y))


def l2(x, y):
    x, y = _f32(x, y)
    return _per_example_mean(tf.square(x - y))


def huber(x, y, delta: float = 1.0):
    x, y = _f32(x, y)
    d = tf.abs(x - y)
    quad = tf.minimum(d, delta)
    return _per_example_mean(0.5 * quad * quad + delta * (d - quad))


def bce_logits(logits, target: float):
    logits = tf.cast(tf.reshape(logits, [tf.shape(logits)[0], -1]), tf.float32)
    labels = tf.fill(tf.shape(logits), float(target))
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits), axis=1)


def focal(pred, target, gamma: float = 2.0, alpha: float = 0.25, eps: float = 1e-6):
    """Binary focal loss (Lin et al.) on probabilities, per example [B]."""
    p, y = _f32(pred, target)
    p = tf.clip_by_value(p, eps, 1.0 - eps)
    pos = -alpha * tf.pow(1.0 - p, gamma) * y * tf.math.log(p)
    neg = -(1.0 - alpha) * tf.pow(p, gamma) * (1.0 - y) * tf.math.log(1.0 - p)
    return _per_example_mean(pos + neg)


def average(per_example, global_batch_size=None):
    """Average a per-example loss over the global batch (strategy-safe)."""
    return tf.nn.compute_average_loss(per_example, global_batch_size=global_batch_size)


# --------------------------------------------------------------------------
# Perceptual loss on a frozen VGG16 (and the ImageNet plumbing it shares with
# the ResNet50 encoder).

_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def imagenet_input(x01):
    """Images in [0, 1] with 1 or 3 channels -> the 'caffe' input of Keras'
    VGG16/ResNet50 ImageNet weights: 0-255, RGB -> BGR, channel mean removed
    (gray images are replicated to three channels first)."""
    x = tf.cast(x01, tf.float32) * 255.0
    if x.shape[-1] == 1:
        x = tf.tile(x, [1, 1, 1, 3])
    return x[..., ::-1] - tf.constant(_CAFFE_MEAN_BGR, tf.float32)


def vgg16_taps(size, taps, name: str = "vgg16_taps"):
    """A frozen VGG16 [H, W, 3] (caffe input) -> one feature map per tap.

    ``taps`` are the paper's names (relu2_2, relu3_3, relu4_3, ...); the
    network stops at the deepest tap. Built without weights: see
    :func:`load_imagenet_weights`.
    """
    import keras

    from tfanomaly.family_configs import VGG16_TAPS

    h, w = size
    vgg = keras.applications.VGG16(include_top=False, weights=None, input_shape=(h, w, 3))
    outs = [vgg.get_layer(VGG16_TAPS[t]).output for t in taps]
    model = keras.Model(vgg.input, outs, name=name)
    model.trainable = False
    return model


def load_imagenet_weights(model, arch: str, weights: str, size) -> None:
    """Copy ``weights`` ("imagenet" or a local .h5 file, as Keras' applications
    take them) of the Keras application ``arch`` into ``model``'s layers of the
    same names. ``"none"`` keeps the random initialisation."""
    import keras

    if weights == "none":
        return
    app = {"vgg16": keras.applications.VGG16, "resnet50": keras.applications.ResNet50, "inception_v3": keras.applications.InceptionV3}[arch]
    try:
        ref = app(include_top=False, weights=weights, input_shape=(size[0], size[1], 3))
    except Exception as e:  # download refused offline, unreadable file, wrong file
        from tfanomaly.errors import UserError

        raise UserError(f"{arch} weights {weights!r}: cannot load them ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    by_name = {layer.name: layer for layer in ref.layers}
    for layer in model.layers:
        if layer.weights and layer.name in by_name:
            layer.set_weights(by_name[layer.name].get_weights())


def perceptual(extractor, x, y):
    """L_perc per example [B]: the mean over taps of mean |phi_l(x) - phi_l(y)|,
    with x, y in [0, 1] (one tap: the L1 distance of its features)."""
    fx = extractor(imagenet_input(x), training=False)
    fy = extractor(imagenet_input(y), training=False)
    if not isinstance(fx, (list, tuple)):
        fx, fy = [fx], [fy]
    return tf.add_n([l1(a, b) for a, b in zip(fx, fy)]) / float(len(fx))
