"""GRD-Net: a GAN whose generator is a residual autoencoder (encoder-decoder-
encoder) trained on Perlin-perturbed good images; in its ``full`` variant a
U-Net discriminative head maps anomalies inside a region of interest.

Industrial variant (BFS vial line):
    L_gen = w_adv*L_adv + w_con*L_con + w_enc*L_enc + w_nse*L_nse
    L_adv = L2(F_C(X), F_C(X_hat))          L_enc = L1(z, z_hat)
    L_con = w_a*Huber(X, X_hat) + w_b*(1 - SSIM(X, X_hat))
    L_nse = L1(|X_n - X_hat|, N)
    discriminator: BCE on X (real) vs X_hat (fake)
    score = 1 - SSIM(X, X_hat); heatmap = per-patch min-max of |X - X_hat|
    (model.score: residual / ssim_map: score = max of the smoothed |X - X_hat|
    or 1 - SSIM map, which is then the heatmap)
Full variant: L_con with L1; U-Net on concat(X_n, X_hat) trained with focal
loss against M * ROI; score = max of the average-pooled U-Net map; heatmap =
the U-Net map smoothed by ``heatmap_sigma`` (edges mirrored): two knobs, the
image score's and the pixel map's.
"""

from __future__ import annotations

import cv2
import keras
import numpy as np
import tensorflow as tf

from tfanomaly import losses
from tfanomaly.batch import IMAGE, NOISE, PERTURB_MASK, PERTURBED
from tfanomaly.family_configs import GRDNetConfig
from tfanomaly.filters import gaussian_blur, mirrored_blur
from tfanomaly.models import blocks
from tfanomaly.models.base import AnomalyModel


def roi_array(cfg: GRDNetConfig, shape) -> np.ndarray:
    """The ROI mask [H, W, 1] in {0, 1} from the config (whole image if none)."""
    h, w = shape[0], shape[1]
    if cfg.roi_mask:
        m = cv2.imread(cfg.roi_mask, cv2.IMREAD_GRAYSCALE)
        if m is None:
            from tfanomaly.errors import DataError

            raise DataError(f"{cfg.roi_mask}: cannot read the ROI mask (model.roi_mask)")
        m = cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST) > 127
    elif cfg.roi_polygon:
        m = np.zeros((h, w), np.uint8)
        cv2.fillPoly(m, [np.round(np.asarray(cfg.roi_polygon)).astype(np.int32)], 1)
        m = m > 0
    else:
        m = np.ones((h, w), bool)
    return m.astype(np.float32)[..., None]


def shifted(x, dy: int, dx: int, max_dy: int, max_dx: int):
    """``x`` [B, H, W, C] moved down by ``dy`` rows and right by ``dx`` columns
    (negative: up, left), the uncovered border filled by mirroring the edge."""
    pad = tf.pad(x, [[0, 0], [max_dy, max_dy], [max_dx, max_dx], [0, 0]], mode="SYMMETRIC")
    h, w = x.shape[1], x.shape[2]
    return pad[:, max_dy - dy : max_dy - dy + h, max_dx - dx : max_dx - dx + w, :]


def score_map(x, x_hat, kind: str, sigma: float, ssim_window: int = 11, shift=(0, 0)):
    """GRD-Net's heatmap scores (``model.score`` residual / ssim_map): |X - G(X)|
    (mean over channels) or the 1 - SSIM map, smoothed by a gaussian of
    ``sigma`` pixels (zero padding; 0 = none). The score is its max.

    ``shift`` = (dy, dx) > 0 tolerates a G(X) misplaced by up to dy rows and dx
    columns: the map is the pixelwise minimum of the maps of X against G(X)
    shifted by -dy..dy, -dx..dx (before smoothing). A structure that G redraws a
    pixel or two off (the vial's meniscus, whose height varies per vial) then
    costs little, while a defect that G(X) lacks everywhere nearby keeps its value."""

    def one(xh):
        if kind == "residual":
            return tf.reduce_mean(tf.abs(x - xh), axis=-1, keepdims=True)
        return 1.0 - losses.ssim_map(x, xh, ssim_window)

    my, mx = int(shift[0]), int(shift[1])
    amap = one(x_hat)
    for dy in range(-my, my + 1):
        for dx in range(-mx, mx + 1):
            if dy or dx:
                amap = tf.minimum(amap, one(shifted(x_hat, dy, dx, my, mx)))
    if sigma > 0:
        amap = gaussian_blur(amap, sigma)
    return amap


@keras.saving.register_keras_serializable(package="tfanomaly")
class GRDNet(AnomalyModel):
    family = "grdnet"
    config_class = GRDNetConfig
    SCORE_OPTIONS = ("score", "score_sigma", "score_shift", "score_pool", "heatmap_sigma")

    def __init__(self, model_config: dict, image_shape, **kwargs):
        super().__init__(model_config, image_shape, **kwargs)
        c = self.cfg
        shape = self.image_shape
        self.encoder = blocks.residual_encoder(shape, c.stem_width, c.widths, c.bottleneck, c.latent_dim, "g_encoder")
        self.decoder = blocks.residual_decoder(shape, c.widths, c.bottleneck, c.latent_dim, "g_decoder")
        self.encoder2 = blocks.residual_encoder(shape, c.stem_width, c.widths, c.bottleneck, c.latent_dim, "g_encoder2")
        self.discriminator = blocks.conv_discriminator(shape, c.disc_widths, "discriminator")
        self.full = c.variant == "full"
        if self.full:
            self.unet = blocks.unet((shape[0], shape[1], 2 * shape[2]), c.unet_widths, "unet")
            self.roi = self.add_weight(
                shape=(shape[0], shape[1], 1),
                initializer=keras.initializers.Constant(roi_array(c, shape)),
                trainable=False,
                name="roi",
            )
        names = ["g_loss", "adv", "con", "enc", "nse", "d_loss"] + (["seg"] if self.full else [])
        self._track(*names)
        self.built = True

    # -- training -------------------------------------------------------------
    def optimizer_groups(self):
        groups = {
            "g_optimizer": (1.0, self.generator_variables),
            "d_optimizer": (self.cfg.disc_lr_ratio, self.discriminator.trainable_variables),
        }
        if self.full:
            groups["u_optimizer"] = (1.0, self.unet.trainable_variables)
        return groups

    @property
    def generator_variables(self):
        return self.encoder.trainable_variables + self.decoder.trainable_variables + self.encoder2.trainable_variables

    def generate(self, x, training=False):
        z = self.encoder(x, training=training)
        x_hat = self.decoder(z, training=training)
        z_hat = self.encoder2(x_hat, training=training)
        return z, x_hat, z_hat

    def generator_losses(self, x, xn, noise, x_hat, z, z_hat, f_real, f_fake):
        """Per-example loss terms of the generator (dict of [B] tensors)."""
        c = self.cfg
        pix = losses.huber(x, x_hat) if c.con_loss == "huber" else losses.l1(x, x_hat)
        con = c.w_a * pix + c.w_b * (1.0 - losses.ssim(x, x_hat, c.ssim_window))
        adv = losses.l2(f_real, f_fake)
        enc = losses.l1(z, z_hat)
        nse = losses.l1(tf.abs(tf.cast(xn, tf.float32) - tf.cast(x_hat, tf.float32)), noise)
        total = c.w_adv * adv + c.w_con * con + c.w_enc * enc + c.w_nse * nse
        return {"g_loss": total, "adv": adv, "con": con, "enc": enc, "nse": nse}

    def train_step(self, data):
        x, xn, m, noise = data[IMAGE], data[PERTURBED], data[PERTURB_MASK], data[NOISE]
        with tf.GradientTape() as tape:
            z, x_hat, z_hat = self.generate(xn, training=True)
            _, f_real = self.discriminator(x, training=True)
            _, f_fake = self.discriminator(x_hat, training=True)
            terms = self.generator_losses(x, xn, noise, x_hat, z, z_hat, f_real, f_fake)
            g_loss = self._avg(terms["g_loss"])
        g_vars = self.generator_variables
        self.g_optimizer.apply_gradients(zip(tape.gradient(g_loss, g_vars), g_vars))

        x_fake = tf.stop_gradient(x_hat)
        with tf.GradientTape() as tape:
            real_logit, _ = self.discriminator(x, training=True)
            fake_logit, _ = self.discriminator(x_fake, training=True)
            d_loss = self._avg(0.5 * (losses.bce_logits(real_logit, 1.0) + losses.bce_logits(fake_logit, 0.0)))
        d_vars = self.discriminator.trainable_variables
        self.d_optimizer.apply_gradients(zip(tape.gradient(d_loss, d_vars), d_vars))

        values = {k: self._avg(v) for k, v in terms.items()}
        values["d_loss"] = d_loss
        if self.full:
            target = m * self.roi
            with tf.GradientTape() as tape:
                pred = self.unet(tf.concat([xn, tf.cast(x_fake, xn.dtype)], -1), training=True)
                seg = self.cfg.w_seg * self._avg(losses.focal(pred, target, self.cfg.focal_gamma, self.cfg.focal_alpha))
            u_vars = self.unet.trainable_variables
            self.u_optimizer.apply_gradients(zip(tape.gradient(seg, u_vars), u_vars))
            values["seg"] = seg
        return self._report(values)

    def test_step(self, data):
        x, xn, noise = data[IMAGE], data[PERTURBED], data[NOISE]
        z, x_hat, z_hat = self.generate(xn)
        _, f_real = self.discriminator(x)
        _, f_fake = self.discriminator(x_hat)
        terms = self.generator_losses(x, xn, noise, x_hat, z, z_hat, f_real, f_fake)
        return self._report({k: self._avg(v) for k, v in terms.items()})

    # -- inference (the exported path) ---------------------------------------
    def score(self, images):
        x = tf.cast(images, tf.float32)
        # The score needs only G_E and G_D: the second encoder is a training-time term.
        x_hat = tf.cast(self.decoder(self.encoder(x)), tf.float32)
        if self.full:
            amap = tf.cast(self.unet(tf.concat([x, x_hat], -1)), tf.float32) * self.roi
            k = self.cfg.score_pool
            pooled = tf.nn.avg_pool2d(amap, k, 1, "SAME") if k > 1 else amap
            heat = mirrored_blur(amap, self.cfg.heatmap_sigma) if self.cfg.heatmap_sigma > 0 else amap
            return {"score": tf.reduce_max(pooled, axis=[1, 2, 3]), "heatmap": heat, "reconstruction": x_hat}
        if self.cfg.score != "ssim":
            amap = self.score_map(x, x_hat)
            return {"score": tf.reduce_max(amap, axis=[1, 2, 3]), "heatmap": amap, "reconstruction": x_hat}
        score = 1.0 - losses.ssim(x, x_hat, self.cfg.ssim_window)
        diff = tf.reduce_mean(tf.abs(x - x_hat), axis=-1, keepdims=True)
        lo = tf.reduce_min(diff, axis=[1, 2, 3], keepdims=True)
        hi = tf.reduce_max(diff, axis=[1, 2, 3], keepdims=True)
        heatmap = (diff - lo) / tf.maximum(hi - lo, 1e-8)
        return {"score": score, "heatmap": heatmap, "reconstruction": x_hat}

    def score_map(self, x, x_hat):
        """The map [B, H, W, 1] whose max is the industrial score of ``model.score``."""
        c = self.cfg
        return score_map(x, x_hat, c.score, c.score_sigma, c.ssim_window, c.score_shift)

    def sample_outputs(self, batch):
        """Arrays for the image callback: X, X_n, G(X_n) and the heatmap of X."""
        out = self.score(batch[IMAGE])
        xn_hat = self.decoder(self.encoder(batch[PERTURBED]))
        return {
            "X": batch[IMAGE],
            "X_n": batch[PERTURBED],
            "G(X_n)": xn_hat,
            "heatmap": out["heatmap"],
        }
