"""Shared building blocks: pre-activation residual blocks, DCGAN-style
encoders, a small U-Net. Every layer is named after its place in the network."""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers


def _flip(kernel):
    """The kernel of the adjoint convolution: spatially reversed, in and out channels swapped."""
    return tf.transpose(tf.reverse(kernel, [0, 1]), [0, 1, 3, 2])


@tf.custom_gradient
def _conv_same(x, kernel):
    """A stride-1 SAME convolution (odd kernel) whose input gradient is a forward
    convolution with the flipped kernel. TF 2.21's CPU Conv2DBackpropInput takes
    about 3x the forward on the narrow stages of these models (8-16 channels at
    32-64 px, bench/conv_speed.py); the flipped forward is the same sum, about as
    fast as the forward. The weight gradient is TF's own."""
    y = tf.nn.conv2d(x, kernel, 1, "SAME")

    def grad(dy):
        dx = tf.nn.conv2d(dy, _flip(kernel), 1, "SAME")
        dk = tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=tf.shape(kernel), out_backprop=dy, strides=[1, 1, 1, 1], padding="SAME")
        return dx, dk

    return y, grad


def _plain_same(layer) -> bool:
    k = tuple(layer.kernel_size)
    return max(layer.strides) == 1 and max(layer.dilation_rate) == 1 and (layer.padding == "same" or k == (1, 1)) and all(n % 2 == 1 for n in k) and layer.data_format == "channels_last"


@keras.saving.register_keras_serializable(package="tfanomaly")
class Conv2D(layers.Conv2D):
    """keras Conv2D with the same weights and function; stride-1 SAME kernels
    train through :func:`_conv_same` (a faster input gradient on CPU)."""

    def convolution_op(self, inputs, kernel):
        if _plain_same(self):
            return _conv_same(inputs, tf.cast(kernel, inputs.dtype))
        return super().convolution_op(inputs, kernel)


@keras.saving.register_keras_serializable(package="tfanomaly")
class Conv2DTranspose(layers.Conv2DTranspose):
    """keras Conv2DTranspose with the same weights and function; at stride 1 it is
    a forward convolution with the flipped kernel, which TF runs about 3x faster
    than its transposed convolution (Conv2DBackpropInput) on the narrow stages."""

    def call(self, inputs):
        if not _plain_same(self) or self.output_padding is not None:
            return super().call(inputs)
        outputs = _conv_same(inputs, _flip(tf.cast(self.kernel, inputs.dtype)))
        if self.use_bias:
            outputs = outputs + tf.cast(self.bias, outputs.dtype)
        if self.activation is not None:
            return self.activation(outputs)
        return outputs


def batch_norm(name: str, **kw) -> layers.BatchNormalization:
    """Batch normalisation for every family. Built under a strategy with more than
    one replica (mirrored devices, several workers) it normalises with the
    statistics of the global batch (``synchronized``), so that N replicas of B/N
    images train as one process on B; in one process it is keras' plain layer."""
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return layers.BatchNormalization(synchronized=replicas > 1, name=name, **kw)


@keras.saving.register_keras_serializable(package="tfanomaly")
class Subsample2D(layers.Layer):
    """Keeps every second row and column: x[:, ::2, ::2, :]."""

    def call(self, x):
        return x[:, ::2, ::2, :]

    def compute_output_shape(self, shape):
        return (shape[0], None if shape[1] is None else (shape[1] + 1) // 2, None if shape[2] is None else (shape[2] + 1) // 2, shape[3])


def _bn_relu(x, name):
    x = batch_norm(f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def residual_block(x, width: int, kind: str, name: str, up: bool = False):
    """A ResNet-v2 pre-activation block of three 3x3 convs.

    kind "A": shortcut is a 1x1 conv (changes width);
    kind "B": identity shortcut;
    kind "C": the middle conv halves H and W (doubles them with ``up``) and
    the shortcut is a strided 1x1 conv (transposed conv when ``up``).
    """
    pre = _bn_relu(x, f"{name}_pre")
    if kind == "A":
        shortcut = Conv2D(width, 1, name=f"{name}_short")(pre)
    elif kind == "B":
        shortcut = x
    elif up:
        # nearest upsampling + 1x1 conv: no strided 1x1 kernel (see guards.py)
        shortcut = layers.UpSampling2D(2, name=f"{name}_short_up")(pre)
        shortcut = Conv2D(width, 1, name=f"{name}_short")(shortcut)
    else:
        # x[::2, ::2] + 1x1 conv equals a 1x1 stride-2 conv with SAME padding on
        # even sizes, without oneDNN's crashing strided 1x1 weight-gradient kernel.
        shortcut = Subsample2D(name=f"{name}_short_sub")(pre)
        shortcut = Conv2D(width, 1, name=f"{name}_short")(shortcut)

    conv = Conv2DTranspose if up else Conv2D
    y = conv(width, 3, padding="same", use_bias=False, name=f"{name}_conv1")(pre)
    y = _bn_relu(y, f"{name}_conv1")
    stride = 2 if kind == "C" else 1
    y = conv(width, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = _bn_relu(y, f"{name}_conv2")
    y = conv(width, 3, padding="same", name=f"{name}_conv3")(y)
    return layers.Add(name=f"{name}_add")([shortcut, y])


def residual_stage(x, width: int, name: str, up: bool = False):
    """Blocks A, B, C: change width, refine, then halve (or double) H and W."""
    x = residual_block(x, width, "A", f"{name}_a", up)
    x = residual_block(x, width, "B", f"{name}_b", up)
    return residual_block(x, width, "C", f"{name}_c", up)


def residual_encoder(shape, stem: int, widths, bottleneck: str, latent: int, name: str) -> keras.Model:
    """Image [H, W, C] -> latent (dense [latent] or conv [h, w, latent])."""
    inp = keras.Input(shape, name=f"{name}_input")
    x = Conv2D(stem, 3, padding="same", name=f"{name}_stem")(inp)
    for i, w in enumerate(widths):
        x = residual_stage(x, w, f"{name}_stage{i + 1}")
    x = _bn_relu(x, f"{name}_out")
    if bottleneck == "dense":
        x = layers.Flatten(name=f"{name}_flatten")(x)
        z = layers.Dense(latent, name=f"{name}_latent")(x)
    else:
        z = Conv2D(latent, 1, name=f"{name}_latent")(x)
    return keras.Model(inp, z, name=name)


def residual_decoder(shape, widths, bottleneck: str, latent: int, name: str) -> keras.Model:
    """Latent -> image [H, W, C] in [0, 1], mirroring :func:`residual_encoder`."""
    h, w, c = shape
    f = 2 ** len(widths)
    sh, sw = h // f, w // f
    if bottleneck == "dense":
        inp = keras.Input((latent,), name=f"{name}_input")
        x = layers.Dense(sh * sw * widths[-1], name=f"{name}_expand")(inp)
        x = layers.Reshape((sh, sw, widths[-1]), name=f"{name}_reshape")(x)
    else:
        inp = keras.Input((sh, sw, latent), name=f"{name}_input")
        x = Conv2D(widths[-1], 1, name=f"{name}_expand")(inp)
    for i, wd in enumerate(reversed(widths)):
        x = residual_stage(x, wd, f"{name}_stage{i + 1}", up=True)
    x = _bn_relu(x, f"{name}_out")
    x = Conv2D(c, 3, padding="same", name=f"{name}_to_image")(x)
    out = layers.Activation("sigmoid", dtype="float32", name=f"{name}_sigmoid")(x)
    return keras.Model(inp, out, name=name)


def conv_discriminator(shape, widths, name: str) -> keras.Model:
    """DCGAN-style encoder (4x4 stride-2 convs, BN, LeakyReLU 0.2) with a dense
    real/fake logit. Outputs (logit [B, 1], features of the last conv layer)."""
    inp = keras.Input(shape, name=f"{name}_input")
    x = inp
    for i, w in enumerate(widths):
        x = Conv2D(w, 4, strides=2, padding="same", use_bias=i == 0, name=f"{name}_conv{i + 1}")(x)
        if i > 0:
            x = batch_norm(f"{name}_bn{i + 1}")(x)
        x = layers.LeakyReLU(0.2, name=f"{name}_lrelu{i + 1}")(x)
    features = x
    logit = layers.Dense(1, dtype="float32", name=f"{name}_logit")(layers.Flatten(name=f"{name}_flatten")(x))
    return keras.Model(inp, [logit, features], name=name)


def unet(shape, widths, name: str) -> keras.Model:
    """U-Net: [H, W, C_in] -> probability map [H, W, 1]."""
    inp = keras.Input(shape, name=f"{name}_input")
    x = inp
    skips = []

    def double_conv(t, w, tag):
        for j in (1, 2):
            t = Conv2D(w, 3, padding="same", use_bias=False, name=f"{tag}_conv{j}")(t)
            t = batch_norm(f"{tag}_bn{j}")(t)
            t = layers.Activation("relu", name=f"{tag}_relu{j}")(t)
        return t

    for i, w in enumerate(widths[:-1]):
        x = double_conv(x, w, f"{name}_down{i + 1}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"{name}_pool{i + 1}")(x)
    x = double_conv(x, widths[-1], f"{name}_bottom")
    for i, (w, skip) in enumerate(zip(reversed(widths[:-1]), reversed(skips))):
        x = layers.UpSampling2D(2, interpolation="bilinear", name=f"{name}_up{i + 1}")(x)
        x = layers.Concatenate(name=f"{name}_cat{i + 1}")([x, skip])
        x = double_conv(x, w, f"{name}_upconv{i + 1}")
    x = Conv2D(1, 1, name=f"{name}_head")(x)
    out = layers.Activation("sigmoid", dtype="float32", name=f"{name}_sigmoid")(x)
    return keras.Model(inp, out, name=name)
