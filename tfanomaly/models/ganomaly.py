"""GANomaly (Akcay et al. 2018) with the X-ray cargo study's variants.

Generator: encoder E1 -> z_i, decoder -> X_hat, encoder E2 -> z_o; a DCGAN
discriminator D whose last layer is the real/fake logit and whose other layers
are the features of the adversarial (feature-matching) loss.

    L_G = w_adv * L2(f_D(X), f_D(X_hat)) + w_con * L1(X, X_hat) + w_enc * L2(z_i, z_o)
    perceptual variant: w_con * L_con is replaced by w_perc * L_perc (frozen VGG16 taps)
    L_D = (BCE(D(X), 1) + BCE(D(X_hat), 0)) / 2; D is re-initialised when L_D < threshold
    score A(x) = ||z_i - z_o||^2 (sum over the latent), heatmap = mean over channels of |X - X_hat|

The networks work in [-1, 1] (tanh decoder); the model's inputs and outputs
stay in [0, 1] like every family, the mapping happens inside. Scores are raw
(no normalisation): thresholds come from calibration data, never from the
test set's own min/max.

Encoders: DCGAN (4x4 stride-2 convs, BN, LeakyReLU 0.2, down to 4x4, then a
4x4 valid conv to the latent), or ResNet50 (stem and four stages, global
average pooling, 1x1 conv to the latent) with ImageNet or local weights.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from tfanomaly import losses
from tfanomaly.batch import IMAGE
from tfanomaly.family_configs import GANomalyConfig
from tfanomaly.models.base import AnomalyModel
from tfanomaly.models.dcgan import dcgan_decoder, dcgan_encoder


@keras.saving.register_keras_serializable(package="tfanomaly")
class ImagenetInput(layers.Layer):
    """[-1, 1] images (1 or 3 channels) -> the caffe input of Keras' ImageNet networks."""

    def call(self, x):
        return losses.imagenet_input((tf.cast(x, tf.float32) + 1.0) * 0.5)

    def compute_output_shape(self, shape):
        return (*shape[:-1], 3)


def resnet50_encoder(shape, latent: int, name: str) -> keras.Model:
    """[H, W, 1|3] in [-1, 1] -> [1, 1, latent]: ResNet50 stem + four stages (no
    top), global average pooling, 1x1 conv. The backbone is the nested model
    ``{name}_resnet50`` with Keras' layer names, so ImageNet weights load by name."""
    inp = keras.Input(shape, name=f"{name}_input")
    x = ImagenetInput(name=f"{name}_imagenet_input")(inp)
    backbone = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(shape[0], shape[1], 3), name=f"{name}_resnet50")
    x = backbone(x)
    x = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_gap")(x)
    z = layers.Conv2D(latent, 1, dtype="float32", name=f"{name}_latent")(x)
    return keras.Model(inp, z, name=name)


@keras.saving.register_keras_serializable(package="tfanomaly")
class GANomaly(AnomalyModel):
    family = "ganomaly"
    config_class = GANomalyConfig

    def __init__(self, model_config: dict, image_shape, **kwargs):
        super().__init__(model_config, image_shape, **kwargs)
        c, shape = self.cfg, self.image_shape
        if c.encoder == "resnet50":
            self.encoder = resnet50_encoder(shape, c.latent_dim, "g_encoder")
            self.encoder2 = resnet50_encoder(shape, c.latent_dim, "g_encoder2")
        else:
            self.encoder = dcgan_encoder(shape, c.latent_dim, c.base_width, c.max_width, c.extra_layers, "g_encoder")
            self.encoder2 = dcgan_encoder(shape, c.latent_dim, c.base_width, c.max_width, c.extra_layers, "g_encoder2")
        self.decoder = dcgan_decoder(shape, c.latent_dim, c.base_width, c.max_width, c.extra_layers, "g_decoder")
        self.discriminator = dcgan_encoder(shape, 1, c.base_width, c.max_width, c.extra_layers, "discriminator", features=True)
        self.perceptual = c.recon_loss == "perceptual"
        if self.perceptual:
            self.vgg = losses.vgg16_taps(shape[:2], c.perceptual_taps, "vgg16_taps")
        self.d_reinits = self.add_weight(shape=(), initializer="zeros", dtype="int32", trainable=False, name="d_reinits")
        self._track("g_loss", "adv", "perc" if self.perceptual else "con", "enc", "d_loss")
        self.built = True

    @classmethod
    def from_run_config(cls, cfg):
        """A new model for training: random init, then the configured pretrained
        weights (loading a saved model restores its own weights instead)."""
        model = super().from_run_config(cfg)
        model.load_pretrained()
        return model

    def load_pretrained(self):
        c, size = self.cfg, self.image_shape[:2]
        if c.encoder == "resnet50":
            for enc in (self.encoder, self.encoder2):
                losses.load_imagenet_weights(enc.get_layer(f"{enc.name}_resnet50"), "resnet50", c.resnet_weights, size)
        if self.perceptual:
            losses.load_imagenet_weights(self.vgg, "vgg16", c.vgg_weights, size)

    # -- training -------------------------------------------------------------
    def optimizer_groups(self):
        return {
            "g_optimizer": (1.0, self.generator_variables),
            "d_optimizer": (self.cfg.disc_lr_ratio, self.discriminator.trainable_variables),
        }

    @property
    def generator_variables(self):
        return self.encoder.trainable_variables + self.decoder.trainable_variables + self.encoder2.trainable_variables

    def generate(self, x01, training=False):
        """(z_i, X_hat in [-1, 1], z_o) for images in [0, 1]."""
        x = tf.cast(x01, tf.float32) * 2.0 - 1.0
        z_i = self.encoder(x, training=training)
        x_hat = self.decoder(z_i, training=training)
        z_o = self.encoder2(x_hat, training=training)
        return x, z_i, x_hat, z_o

    def generator_losses(self, x, x_hat, z_i, z_o, f_real, f_fake):
        """Per-example terms [B] (x, x_hat in [-1, 1])."""
        c = self.cfg
        adv = losses.l2(f_real, f_fake)
        enc = losses.l2(z_i, z_o)
        if self.perceptual:
            rec = losses.perceptual(self.vgg, (x + 1.0) * 0.5, (tf.cast(x_hat, tf.float32) + 1.0) * 0.5)
            total = c.w_adv * adv + c.w_perc * rec + c.w_enc * enc
            return {"g_loss": total, "adv": adv, "perc": rec, "enc": enc}
        rec = losses.l1(x, x_hat)
        total = c.w_adv * adv + c.w_con * rec + c.w_enc * enc
        return {"g_loss": total, "adv": adv, "con": rec, "enc": enc}

    def discriminator_loss(self, x, x_fake):
        real_logit, _ = self.discriminator(x, training=True)
        fake_logit, _ = self.discriminator(x_fake, training=True)
        return 0.5 * (losses.bce_logits(real_logit, 1.0) + losses.bce_logits(fake_logit, 0.0))

    def reinit_discriminator(self):
        """Fresh DCGAN initialisation of D (conv N(0, 0.02), BN gamma N(1, 0.02),
        beta and moving mean 0, moving variance 1), seeded by the step counter."""
        step = tf.cast(self.step_counter, tf.int64)
        for i, v in enumerate(self.discriminator.variables):
            seed = tf.stack([step, tf.constant(7919 + i, tf.int64)])
            if v.name == "gamma":
                new = 1.0 + 0.02 * tf.random.stateless_normal(v.shape, seed)
            elif v.name in ("beta", "moving_mean", "bias"):
                new = tf.zeros(v.shape)
            elif v.name == "moving_variance":
                new = tf.ones(v.shape)
            else:
                new = 0.02 * tf.random.stateless_normal(v.shape, seed)
            v.assign(tf.cast(new, v.dtype))
        self.d_reinits.assign_add(1)
        return tf.constant(True)

    def train_step(self, data):
        x01 = data[IMAGE]
        with tf.GradientTape() as tape:
            x, z_i, x_hat, z_o = self.generate(x01, training=True)
            _, f_real = self.discriminator(x, training=True)
            _, f_fake = self.discriminator(x_hat, training=True)
            terms = self.generator_losses(x, x_hat, z_i, z_o, f_real, f_fake)
            g_loss = self._avg(terms["g_loss"])
        g_vars = self.generator_variables
        self.g_optimizer.apply_gradients(zip(tape.gradient(g_loss, g_vars), g_vars))

        with tf.GradientTape() as tape:
            d_loss = self._avg(self.discriminator_loss(x, tf.stop_gradient(x_hat)))
        d_vars = self.discriminator.trainable_variables
        self.d_optimizer.apply_gradients(zip(tape.gradient(d_loss, d_vars), d_vars))

        # The original implementation re-initialises D when its loss collapses.
        # The decision uses the loss summed over replicas (the global mean).
        ctx = tf.distribute.get_replica_context()
        d_global = ctx.all_reduce("sum", d_loss) if ctx is not None else d_loss
        thr = self.cfg.d_reinit_threshold
        if thr > 0:
            tf.cond(d_global < thr, self.reinit_discriminator, lambda: tf.constant(False))

        values = {k: self._avg(v) for k, v in terms.items()}
        values["d_loss"] = d_loss
        return self._report(values, extra={"d_reinits": self.d_reinits})

    def test_step(self, data):
        x, z_i, x_hat, z_o = self.generate(data[IMAGE])
        _, f_real = self.discriminator(x)
        _, f_fake = self.discriminator(x_hat)
        terms = self.generator_losses(x, x_hat, z_i, z_o, f_real, f_fake)
        return self._report({k: self._avg(v) for k, v in terms.items()})

    # -- inference (the exported path) ---------------------------------------
    def score(self, images):
        x01 = tf.cast(images, tf.float32)
        _, z_i, x_hat, z_o = self.generate(x01)
        z_i, z_o = tf.cast(z_i, tf.float32), tf.cast(z_o, tf.float32)
        score = tf.reduce_sum(tf.square(tf.reshape(z_i - z_o, [tf.shape(z_i)[0], -1])), axis=1)
        recon = (tf.cast(x_hat, tf.float32) + 1.0) * 0.5
        heatmap = tf.reduce_mean(tf.abs(x01 - recon), axis=-1, keepdims=True)
        return {"score": score, "heatmap": heatmap, "reconstruction": recon}

    def export_modules(self):
        return [self.encoder, self.decoder, self.encoder2]

    def sample_outputs(self, batch):
        out = self.score(batch[IMAGE])
        return {"X": batch[IMAGE], "G(X)": out["reconstruction"], "|X - G(X)|": out["heatmap"]}
