"""DCGAN networks shared by GANomaly (encoders, decoder, discriminator) and
ADGAN (generator, critic): 4x4 stride-2 convolutions between the image and a
1x1 latent, with the DCGAN initialisation."""

from __future__ import annotations

import math

import keras
from keras import layers

from tfanomaly.models import blocks

_INIT = keras.initializers.RandomNormal(0.0, 0.02)  # the DCGAN / GANomaly weights_init
_GAMMA_INIT = keras.initializers.RandomNormal(1.0, 0.02)


def dcgan_widths(size: int, base: int, cap: int = 0) -> list[int]:
    """Channels at size/2, size/4, ..., 4 (doubling from ``base``, capped at ``cap``)."""
    n = int(math.log2(size // 4))
    return [min(base * 2**i, cap) if cap else base * 2**i for i in range(n)]


def _bn(name):
    return blocks.batch_norm(name, gamma_initializer=_GAMMA_INIT)


def _norm(kind, name):
    if kind == "batch":
        return _bn(name)
    if kind == "layer":  # per-sample normalisation: keeps the WGAN-GP penalty per sample
        return layers.LayerNormalization(axis=[1, 2, 3], name=name)
    return layers.Identity(name=name)


def dcgan_encoder(shape, out_dim: int, base: int, cap: int, extra: int, name: str, features: bool = False, norm: str = "batch") -> keras.Model:
    """[S, S, C] -> [1, 1, out_dim] (GANomaly's Encoder, the DCGAN discriminator).
    With ``features`` the model also returns the last 4x4 feature map (the
    discriminator's f_D). ``norm``: batch (DCGAN), layer or none (WGAN critics)."""
    widths = dcgan_widths(shape[0], base, cap)
    inp = keras.Input(shape, name=f"{name}_input")
    x = layers.Conv2D(widths[0], 4, strides=2, padding="same", use_bias=False, kernel_initializer=_INIT, name=f"{name}_conv1")(inp)
    x = layers.LeakyReLU(0.2, name=f"{name}_lrelu1")(x)
    for t in range(extra):
        x = layers.Conv2D(widths[0], 3, padding="same", use_bias=False, kernel_initializer=_INIT, name=f"{name}_extra{t + 1}_conv")(x)
        x = _norm(norm, f"{name}_extra{t + 1}_bn")(x)
        x = layers.LeakyReLU(0.2, name=f"{name}_extra{t + 1}_lrelu")(x)
    for i, w in enumerate(widths[1:], start=2):
        x = layers.Conv2D(w, 4, strides=2, padding="same", use_bias=False, kernel_initializer=_INIT, name=f"{name}_conv{i}")(x)
        x = _norm(norm, f"{name}_bn{i}")(x)
        x = layers.LeakyReLU(0.2, name=f"{name}_lrelu{i}")(x)
    feats = x
    z = layers.Conv2D(out_dim, 4, padding="valid", use_bias=False, kernel_initializer=_INIT, dtype="float32", name=f"{name}_out")(x)
    return keras.Model(inp, [z, feats] if features else z, name=name)


def dcgan_decoder(shape, latent: int, base: int, cap: int, extra: int, name: str) -> keras.Model:
    """[1, 1, latent] -> [S, S, C] in [-1, 1] (GANomaly's Decoder, tanh output)."""
    widths = dcgan_widths(shape[0], base, cap)
    inp = keras.Input((1, 1, latent), name=f"{name}_input")
    x = layers.Conv2DTranspose(widths[-1], 4, padding="valid", use_bias=False, kernel_initializer=_INIT, name=f"{name}_up1")(inp)
    x = _bn(f"{name}_bn1")(x)
    x = layers.ReLU(name=f"{name}_relu1")(x)
    for i, w in enumerate(reversed(widths[:-1]), start=2):
        x = layers.Conv2DTranspose(w, 4, strides=2, padding="same", use_bias=False, kernel_initializer=_INIT, name=f"{name}_up{i}")(x)
        x = _bn(f"{name}_bn{i}")(x)
        x = layers.ReLU(name=f"{name}_relu{i}")(x)
    for t in range(extra):
        x = layers.Conv2D(widths[0], 3, padding="same", use_bias=False, kernel_initializer=_INIT, name=f"{name}_extra{t + 1}_conv")(x)
        x = _bn(f"{name}_extra{t + 1}_bn")(x)
        x = layers.ReLU(name=f"{name}_extra{t + 1}_relu")(x)
    x = layers.Conv2DTranspose(shape[2], 4, strides=2, padding="same", use_bias=False, kernel_initializer=_INIT, name=f"{name}_to_image")(x)
    out = layers.Activation("tanh", dtype="float32", name=f"{name}_tanh")(x)
    return keras.Model(inp, out, name=name)
