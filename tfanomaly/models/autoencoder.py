"""Convolutional autoencoders trained on good images (the capsule study).

Model I (``variant: residual``): one convolution, ``down_blocks`` residual
downsampling blocks (optionally each followed by CBAM attention), a vector or
volumetric bottleneck, a symmetric decoder of residual upsampling blocks,
sigmoid output. Trained on clean images with
    L = alpha * MSE(x, f(x)) + (1 - alpha) * (1 - SSIM(x, f(x))).

Model II (``variant: sdc``, Bauer et al. 2024): stacked dilated 3x3
convolutions (dilations 1, 2, 4, ..., 32) that keep the resolution, a mirrored
decoder whose every layer is merged with the encoder layer of the same
dilation by a convex-combination module g*e + (1 - g)*d, g = sigmoid(conv[e, d]),
sigmoid output. Trained self-supervised on patch-transformation corruptions
x_hat = M*y + (1 - M)*x (``tfanomaly.data.corrupt``) to restore x:
    L = (1 - lambda)/||1 - M||_1 * ||(1 - M)*(f(x_hat) - x)||^2
        + lambda/||M||_1 * ||M*(f(x_hat) - x)||^2
(each norm taken over pixels, the squared error summed over pixels and
averaged over channels; an empty mask contributes 0).

Both: heatmap = squared error averaged over channels, then a gaussian filter;
image score = the combined loss alpha*MSE + (1 - alpha)*(1 - SSIM), or the
heatmap's maximum.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from tfanomaly import losses
from tfanomaly.batch import IMAGE, PERTURB_MASK, PERTURBED
from tfanomaly.family_configs import AutoencoderConfig
from tfanomaly.filters import gaussian_kernel
from tfanomaly.models import blocks
from tfanomaly.models.base import AnomalyModel
from tfanomaly.models.blocks import Subsample2D


@keras.saving.register_keras_serializable(package="tfanomaly")
class AddLuminance(layers.Layer):
    """RGB [.., 3] -> RGB + Y [.., 4], Y = 0.299 R + 0.587 G + 0.114 B."""

    def call(self, x):
        y = tf.reduce_sum(x * tf.constant([0.299, 0.587, 0.114], x.dtype), axis=-1, keepdims=True)
        return tf.concat([x, y], -1)

    def compute_output_shape(self, shape):
        return (*shape[:-1], shape[-1] + 1)


@keras.saving.register_keras_serializable(package="tfanomaly")
class CBAM(layers.Layer):
    """Convolutional block attention (Woo et al. 2018): channel attention from
    an MLP on average- and max-pooled features, then spatial attention from a
    7x7 conv on the channel-wise mean and max."""

    def __init__(self, ratio: int = 8, kernel: int = 7, **kwargs):
        super().__init__(**kwargs)
        self.ratio = ratio
        self.kernel = kernel

    def build(self, shape):
        c = shape[-1]
        self.fc1 = layers.Dense(max(1, c // self.ratio), activation="relu", name="fc1")
        self.fc2 = layers.Dense(c, name="fc2")
        self.spatial = blocks.Conv2D(1, self.kernel, padding="same", name="spatial")
        self.fc1.build((None, c))
        self.fc2.build((None, max(1, c // self.ratio)))
        self.spatial.build((None, None, None, 2))

    def call(self, x):
        avg = tf.reduce_mean(x, axis=[1, 2])
        mx = tf.reduce_max(x, axis=[1, 2])
        ch = tf.sigmoid(self.fc2(self.fc1(avg)) + self.fc2(self.fc1(mx)))
        x = x * ch[:, None, None, :]
        pooled = tf.concat([tf.reduce_mean(x, -1, keepdims=True), tf.reduce_max(x, -1, keepdims=True)], -1)
        return x * tf.sigmoid(self.spatial(pooled))

    def get_config(self):
        return {**super().get_config(), "ratio": self.ratio, "kernel": self.kernel}


@keras.saving.register_keras_serializable(package="tfanomaly")
class ConvexCombination(layers.Layer):
    """g * e + (1 - g) * d with a per-element gate g = sigmoid(1x1 conv [e, d]) in [0, 1]."""

    def build(self, shapes):
        e_shape, _ = shapes
        self.gate = blocks.Conv2D(e_shape[-1], 1, name="gate")
        self.gate.build((*e_shape[:-1], 2 * e_shape[-1]))

    def gate_values(self, e, d):
        return tf.sigmoid(self.gate(tf.concat([e, d], -1)))

    def call(self, inputs):
        e, d = inputs
        g = self.gate_values(e, d)
        return g * e + (1.0 - g) * d

    def compute_output_shape(self, shapes):
        return shapes[0]


def _bn_relu(x, name):
    x = blocks.batch_norm(f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def res_down(x, width, name):
    """Pre-activation residual block that halves H and W (shortcut: subsample + 1x1 conv)."""
    pre = _bn_relu(x, f"{name}_pre")
    y = blocks.Conv2D(width, 3, strides=2, padding="same", use_bias=False, name=f"{name}_conv1")(pre)
    y = _bn_relu(y, f"{name}_conv1")
    y = blocks.Conv2D(width, 3, padding="same", name=f"{name}_conv2")(y)
    s = blocks.Conv2D(width, 1, name=f"{name}_short")(Subsample2D(name=f"{name}_short_sub")(pre))
    return layers.Add(name=f"{name}_add")([s, y])


def res_up(x, width, name):
    """Pre-activation residual block that doubles H and W (nearest upsampling)."""
    pre = _bn_relu(x, f"{name}_pre")
    up = layers.UpSampling2D(2, name=f"{name}_up")(pre)
    y = blocks.Conv2D(width, 3, padding="same", use_bias=False, name=f"{name}_conv1")(up)
    y = _bn_relu(y, f"{name}_conv1")
    y = blocks.Conv2D(width, 3, padding="same", name=f"{name}_conv2")(y)
    s = blocks.Conv2D(width, 1, name=f"{name}_short")(up)
    return layers.Add(name=f"{name}_add")([s, y])


def residual_widths(c: AutoencoderConfig) -> list[int]:
    return [min(c.base_width * 2 ** (i + 1), c.max_width) for i in range(c.down_blocks)]


def residual_autoencoder(shape, c: AutoencoderConfig, name="autoencoder") -> keras.Model:
    h, w, ch = shape
    inp = keras.Input(shape, name=f"{name}_input")
    x = AddLuminance(name=f"{name}_luminance")(inp) if c.add_luminance else inp
    out_ch = x.shape[-1]
    x = blocks.Conv2D(c.base_width, 3, padding="same", name=f"{name}_stem")(x)
    widths = residual_widths(c)
    for i, wd in enumerate(widths):
        x = res_down(x, wd, f"{name}_down{i + 1}")
        if c.attention == "cbam":
            x = CBAM(name=f"{name}_down{i + 1}_cbam")(x)
    x = _bn_relu(x, f"{name}_enc_out")
    sh, sw = h // 2**c.down_blocks, w // 2**c.down_blocks
    if c.bottleneck == "vector":
        z = layers.Dense(c.latent_dim, name=f"{name}_latent")(layers.Flatten(name=f"{name}_flatten")(x))
        x = layers.Dense(sh * sw * widths[-1], name=f"{name}_expand")(z)
        x = layers.Reshape((sh, sw, widths[-1]), name=f"{name}_reshape")(x)
    else:
        z = blocks.Conv2D(c.latent_dim, 1, name=f"{name}_latent")(x)
        x = blocks.Conv2D(widths[-1], 1, name=f"{name}_expand")(z)
    for i, wd in enumerate(list(reversed(widths[:-1])) + [c.base_width]):
        x = res_up(x, wd, f"{name}_up{i + 1}")
        if c.attention == "cbam":
            x = CBAM(name=f"{name}_up{i + 1}_cbam")(x)
    x = _bn_relu(x, f"{name}_dec_out")
    x = blocks.Conv2D(out_ch, 3, padding="same", name=f"{name}_to_image")(x)
    out = layers.Activation("sigmoid", dtype="float32", name=f"{name}_sigmoid")(x)
    return keras.Model(inp, out, name=name)


def sdc_receptive_field(dilations, kernel: int = 3, stem: bool = True) -> int:
    """Receptive field (pixels per side) of the stem conv + the dilated stack."""
    return 1 + (kernel - 1) * (sum(dilations) + (1 if stem else 0))


def sdc_autoencoder(shape, c: AutoencoderConfig, name="autoencoder") -> keras.Model:
    inp = keras.Input(shape, name=f"{name}_input")
    x = AddLuminance(name=f"{name}_luminance")(inp) if c.add_luminance else inp
    out_ch = x.shape[-1]
    wd = c.sdc_width
    x = blocks.Conv2D(wd, 3, padding="same", activation="relu", name=f"{name}_stem")(x)
    for k in range(c.sdc_downsample):
        x = blocks.Conv2D(wd, 3, strides=2, padding="same", activation="relu", name=f"{name}_down{k + 1}")(x)
    skips = []
    for d in c.dilations:
        x = blocks.Conv2D(wd, 3, padding="same", dilation_rate=d, activation="relu", name=f"{name}_enc_d{d}")(x)
        skips.append(x)
    for d, skip in zip(reversed(c.dilations), reversed(skips)):
        x = blocks.Conv2D(wd, 3, padding="same", dilation_rate=d, activation="relu", name=f"{name}_dec_d{d}")(x)
        x = ConvexCombination(name=f"{name}_ccm_d{d}")([skip, x])
    for k in range(c.sdc_downsample):
        x = layers.UpSampling2D(2, interpolation="bilinear", name=f"{name}_upsample{k + 1}")(x)
        x = blocks.Conv2D(wd, 3, padding="same", activation="relu", name=f"{name}_up{k + 1}")(x)
    x = blocks.Conv2D(out_ch, 1, name=f"{name}_to_image")(x)
    out = layers.Activation("sigmoid", dtype="float32", name=f"{name}_sigmoid")(x)
    return keras.Model(inp, out, name=name)


def masked_terms(target, pred, m):
    """(outside, inside) per example [B]: ||(1-M)*e||^2 / ||1-M||_1 and
    ||M*e||^2 / ||M||_1 with e the channel-averaged squared error; 0 for an
    empty region."""
    target, pred, m = (tf.cast(t, tf.float32) for t in (target, pred, m))
    se = tf.reduce_mean(tf.square(pred - target), axis=-1, keepdims=True)  # [B, H, W, 1]
    inside = tf.math.divide_no_nan(tf.reduce_sum(tf.square(m) * se, axis=[1, 2, 3]), tf.reduce_sum(m, axis=[1, 2, 3]))
    outside = tf.math.divide_no_nan(tf.reduce_sum(tf.square(1.0 - m) * se, axis=[1, 2, 3]), tf.reduce_sum(1.0 - m, axis=[1, 2, 3]))
    return outside, inside


def masked_loss(target, pred, m, lam: float):
    """Bauer et al.'s corruption loss per example [B] (see the module docstring)."""
    outside, inside = masked_terms(target, pred, m)
    return (1.0 - lam) * outside + lam * inside


@keras.saving.register_keras_serializable(package="tfanomaly")
class Autoencoder(AnomalyModel):
    family = "autoencoder"
    config_class = AutoencoderConfig

    def __init__(self, model_config: dict, image_shape, **kwargs):
        super().__init__(model_config, image_shape, **kwargs)
        c = self.cfg
        self.sdc = c.variant == "sdc"
        build = sdc_autoencoder if self.sdc else residual_autoencoder
        self.net = build(self.image_shape, c)
        self._track(*(["loss", "outside", "inside"] if self.sdc else ["loss", "mse", "ssim"]))
        self.built = True

    def optimizer_groups(self):
        return {"ae_optimizer": (1.0, self.net.trainable_variables)}

    def target(self, x):
        """What the network reconstructs: x, plus its luminance when configured."""
        x = tf.cast(x, tf.float32)
        return AddLuminance()(x) if self.cfg.add_luminance else x

    def combined(self, x, x_rec):
        """alpha*MSE + (1 - alpha)*(1 - SSIM) per example, and its two terms."""
        c = self.cfg
        mse = losses.l2(x, x_rec)
        dssim = 1.0 - losses.ssim(x, x_rec, c.ssim_window)
        return c.alpha * mse + (1.0 - c.alpha) * dssim, mse, dssim

    def step_losses(self, data, training):
        x = self.target(data[IMAGE])
        if self.sdc:
            m = data.get(PERTURB_MASK)
            if m is None:
                m = tf.zeros_like(x[..., :1])
            rec = self.net(data[PERTURBED], training=training)
            out, ins = masked_terms(x, rec, m)
            total = (1.0 - self.cfg.lambda_mask) * out + self.cfg.lambda_mask * ins
            return {"loss": total, "outside": out, "inside": ins}
        rec = self.net(data[IMAGE], training=training)
        total, mse, dssim = self.combined(x, rec)
        return {"loss": total, "mse": mse, "ssim": dssim}

    def train_step(self, data):
        with tf.GradientTape() as tape:
            terms = self.step_losses(data, training=True)
            loss = self._avg(terms["loss"])
        v = self.net.trainable_variables
        self.ae_optimizer.apply_gradients(zip(tape.gradient(loss, v), v))
        return self._report({k: self._avg(t) for k, t in terms.items()})

    def test_step(self, data):
        terms = self.step_losses(data, training=False)
        return self._report({k: self._avg(t) for k, t in terms.items()})

    # -- inference (the exported path) ---------------------------------------
    def heatmap(self, x, rec):
        se = tf.reduce_mean(tf.square(x - rec), axis=-1, keepdims=True)
        s = self.cfg.heatmap_sigma
        if s <= 0:
            return se
        k = gaussian_kernel(s, 1)
        r = (k.shape[0] - 1) // 2
        mode = "REFLECT" if min(self.image_shape[:2]) > r else "SYMMETRIC"
        return tf.nn.depthwise_conv2d(tf.pad(se, [[0, 0], [r, r], [r, r], [0, 0]], mode=mode), k, [1, 1, 1, 1], "VALID")

    def score(self, images):
        x = self.target(images)
        rec = tf.cast(self.net(tf.cast(images, tf.float32)), tf.float32)
        heat = self.heatmap(x, rec)
        if self.cfg.score == "map_max":
            s = tf.reduce_max(heat, axis=[1, 2, 3])
        else:
            s = self.combined(x, rec)[0]
        c = self.image_shape[-1]
        return {"score": s, "heatmap": heat, "reconstruction": rec[..., :c]}

    def sample_outputs(self, batch):
        out = self.score(batch[IMAGE])
        cols = {"X": batch[IMAGE]}
        if self.sdc:
            cols["x_hat"] = batch[PERTURBED]
            cols["f(x_hat)"] = self.net(batch[PERTURBED])[..., : self.image_shape[-1]]
        cols["f(X)"] = out["reconstruction"]
        h = out["heatmap"]
        cols["heatmap"] = h / (tf.reduce_max(h, axis=[1, 2, 3], keepdims=True) + 1e-8)
        return cols
