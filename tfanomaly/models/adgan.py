"""ADGAN (Deecke et al., "Image anomaly detection with generative adversarial
networks", 2018) and its RGB-D use in the 3D study.

There is no encoder: a sample is anomalous when no latent vector lets the
generator reproduce it. Training is a plain DCGAN game (``gan``: non-saturating
cross-entropy), a WGAN (critic weights clipped) or a WGAN-GP (gradient
penalty lambda * (||grad D(x_mix)|| - 1)^2 on random mixes of real and fake),
with ``n_critic`` critic updates per generator update (each on the same real
batch with fresh latent vectors).

Score (algorithm 1): for every sample, ``n_seed`` latent vectors (the same
seeded starting points for every sample, so a score never depends on the rest
of the batch) are each optimised by ``k`` steps of Adam (lr gamma_z) on the
reconstruction loss MSE(G(z), x) (pixels in [0, 1]); the score is the mean of
the final losses over the seeds. All samples and seeds of a batch are searched
together as one [B * n_seed, latent] batch in one graph. With
``lr_theta > 0`` each (sample, seed) also adapts its own copy of the
generator's weights (Adam, lr gamma_theta), reset for every sample: exact, one
search at a time, slower. The heatmap is the squared error of the best seed's
reconstruction, averaged over channels. The search is part of ``score`` and so
of the exported SavedModel: C++ runs the same search.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfanomaly import losses
from tfanomaly.batch import IMAGE
from tfanomaly.family_configs import ADGANConfig
from tfanomaly.models.base import AnomalyModel
from tfanomaly.models.dcgan import dcgan_decoder, dcgan_encoder

_B1, _B2, _EPS = 0.9, 0.999, 1e-8  # Adam of the latent search


def gradient_penalty(critic, real, fake, eps):
    """Per-example WGAN-GP penalty (||grad_x D(x_mix)||_2 - 1)^2 with
    x_mix = eps * real + (1 - eps) * fake, eps [B] in [0, 1]."""
    eps = tf.reshape(tf.cast(eps, real.dtype), [-1, 1, 1, 1])
    mix = eps * real + (1.0 - eps) * fake
    with tf.GradientTape() as tape:
        tape.watch(mix)
        total = tf.reduce_sum(critic(mix, training=True))  # per-sample critic: per-sample gradients
    g = tape.gradient(total, mix)
    norm = tf.sqrt(tf.reduce_sum(tf.square(tf.cast(g, tf.float32)), axis=[1, 2, 3]) + 1e-12)
    return tf.square(norm - 1.0)


def _adam(p, g, m, v, t, lr):
    m = _B1 * m + (1.0 - _B1) * g
    v = _B2 * v + (1.0 - _B2) * tf.square(g)
    m_hat = m / (1.0 - tf.pow(_B1, t))
    v_hat = v / (1.0 - tf.pow(_B2, t))
    return p - lr * m_hat / (tf.sqrt(v_hat) + _EPS), m, v


def _mse(a, b):
    return tf.reduce_mean(tf.square(a - b), axis=[1, 2, 3])


@keras.saving.register_keras_serializable(package="tfanomaly")
class ADGAN(AnomalyModel):
    family = "adgan"
    config_class = ADGANConfig

    def __init__(self, model_config: dict, image_shape, **kwargs):
        super().__init__(model_config, image_shape, **kwargs)
        c, shape = self.cfg, self.image_shape
        norm = c.critic_norm if c.critic_norm != "auto" else {"gan": "batch", "wgan": "none", "wgan_gp": "layer"}[c.objective]
        self.generator = dcgan_decoder(shape, c.latent_dim, c.base_width, c.max_width, 0, "generator")
        self.critic = dcgan_encoder(shape, 1, c.base_width, c.max_width, 0, "critic", norm=norm)
        self.seed_generator = keras.random.SeedGenerator(c.search_seed, name="z_seed")
        names = ["d_loss", "g_loss"] + (["w_dist"] if c.objective != "gan" else []) + (["gp"] if c.objective == "wgan_gp" else [])
        self._track(*names)
        self.built = True

    # -- training -------------------------------------------------------------
    def optimizer_groups(self):
        return {"g_optimizer": (1.0, self.generator.trainable_variables), "d_optimizer": (1.0, self.critic.trainable_variables)}

    def sample_z(self, n):
        return self._replica_rows(lambda m: keras.random.normal([m, 1, 1, self.cfg.latent_dim], seed=self.seed_generator), n)

    def critic_terms(self, real, fake, eps=None):
        """Per-example critic loss terms for images in [-1, 1]."""
        c = self.cfg
        d_real = tf.reshape(tf.cast(self.critic(real, training=True), tf.float32), [-1])
        d_fake = tf.reshape(tf.cast(self.critic(fake, training=True), tf.float32), [-1])
        if c.objective == "gan":
            return {"d_loss": 0.5 * (losses.bce_logits(d_real[:, None], 1.0) + losses.bce_logits(d_fake[:, None], 0.0))}
        terms = {"w_dist": d_real - d_fake, "d_loss": d_fake - d_real}
        if c.objective == "wgan_gp":
            terms["gp"] = gradient_penalty(self.critic, real, fake, eps)
            terms["d_loss"] = terms["d_loss"] + c.gp_weight * terms["gp"]
        return terms

    def generator_loss(self, fake):
        d_fake = tf.reshape(tf.cast(self.critic(fake, training=True), tf.float32), [-1])
        if self.cfg.objective == "gan":
            return losses.bce_logits(d_fake[:, None], 1.0)
        return -d_fake

    def train_step(self, data):
        c = self.cfg
        x = tf.cast(data[IMAGE], tf.float32) * 2.0 - 1.0
        b = tf.shape(x)[0]
        for _ in range(c.n_critic):
            fake = self.generator(self.sample_z(b), training=True)
            eps = self._replica_rows(lambda m: keras.random.uniform([m], seed=self.seed_generator), b)
            with tf.GradientTape() as tape:
                terms = self.critic_terms(x, tf.stop_gradient(fake), eps)
                d_loss = self._avg(terms["d_loss"])
            d_vars = self.critic.trainable_variables
            self.d_optimizer.apply_gradients(zip(tape.gradient(d_loss, d_vars), d_vars))
            if c.objective == "wgan":
                for v in d_vars:
                    v.assign(tf.clip_by_value(v, -c.clip_value, c.clip_value))
        with tf.GradientTape() as tape:
            g_loss = self._avg(self.generator_loss(self.generator(self.sample_z(b), training=True)))
        g_vars = self.generator.trainable_variables
        self.g_optimizer.apply_gradients(zip(tape.gradient(g_loss, g_vars), g_vars))
        values = {k: self._avg(v) for k, v in terms.items()}
        values["g_loss"] = g_loss
        return self._report(values)

    def test_step(self, data):
        x = tf.cast(data[IMAGE], tf.float32) * 2.0 - 1.0
        fake = self.generator(self.sample_z(tf.shape(x)[0]))
        return self._report({"g_loss": self._avg(self.generator_loss(fake))})

    # -- the latent search (inference, exported) -------------------------------
    def initial_z(self):
        """The n_seed starting vectors [n_seed, 1, 1, latent], the same for every sample."""
        c = self.cfg
        return tf.random.stateless_normal([c.n_seed, 1, 1, c.latent_dim], seed=[c.search_seed, 0])

    def render(self, z, weights=None):
        """G(z) in [0, 1] (with ``weights``: a functional call on those trainable weights)."""
        if weights is None:
            out = self.generator(z, training=False)
        else:
            out, _ = self.generator.stateless_call(weights, [v.value for v in self.generator.non_trainable_variables], z, training=False)
        return (tf.cast(out, tf.float32) + 1.0) * 0.5

    def search(self, images, steps=None, trace=False):
        """Latent search for images [B, H, W, C] in [0, 1].

        Returns final losses [B, n_seed], reconstructions [B, n_seed, H, W, C]
        and, with ``trace``, the batch-mean loss before every step and after
        the last one [k + 1].
        """
        if self.cfg.lr_theta > 0:
            return self._search_adapt(images, steps, trace)
        c = self.cfg
        k = c.search_steps if steps is None else steps
        x = tf.cast(images, tf.float32)
        b = tf.shape(x)[0]
        n = c.n_seed
        xt = tf.repeat(x, n, axis=0)  # [B*n, H, W, C], sample-major
        z = tf.reshape(tf.tile(self.initial_z()[None], [b, 1, 1, 1, 1]), [b * n, 1, 1, c.latent_dim])
        hist = tf.TensorArray(tf.float32, size=k + 1)

        def step(t, z, m, v, hist):
            with tf.GradientTape() as tape:
                tape.watch(z)
                loss = _mse(self.render(z), xt)
                total = tf.reduce_sum(loss)  # each z_i only reaches its own loss: per-sample gradients
            hist = hist.write(t, tf.reduce_mean(loss))
            z, m, v = _adam(z, tape.gradient(total, z), m, v, tf.cast(t + 1, tf.float32), c.lr_z)
            return t + 1, z, m, v, hist

        # explicit while loops: the exported graph (traced without autograph) holds the search
        _, z, _, _, hist = tf.while_loop(lambda t, *_: t < k, step, (tf.constant(0), z, tf.zeros_like(z), tf.zeros_like(z), hist))
        recon = self.render(z)
        final = _mse(recon, xt)
        out = (tf.reshape(final, [b, n]), tf.reshape(recon, tf.concat([[b, n], tf.shape(x)[1:]], 0)))
        if not trace:  # an unread TensorArray write makes TensorFlow log an error ("Object was never used")
            return out
        return out + (hist.write(k, tf.reduce_mean(final)).stack(),)

    def _search_adapt(self, images, steps=None, trace=False):
        """Exact search with generator adaptation: every (sample, seed) pair
        starts from the trained weights and adapts its own copy."""
        c = self.cfg
        k = c.search_steps if steps is None else steps
        x = tf.cast(images, tf.float32)
        b = tf.shape(x)[0]
        n = c.n_seed
        z0 = self.initial_z()
        theta0 = [tf.identity(v.value) for v in self.generator.trainable_variables]
        finals = tf.TensorArray(tf.float32, size=b * n)
        recons = tf.TensorArray(tf.float32, size=b * n)

        def one(i, finals, recons, hist_sum):
            target = x[i // n][None]

            def step(t, z, theta, mz, vz, mt, vt, hist):
                with tf.GradientTape() as tape:
                    tape.watch(z)
                    tape.watch(theta)
                    loss = tf.reduce_sum(_mse(self.render(z, theta), target))
                grads = tape.gradient(loss, [z] + theta)
                tt = tf.cast(t + 1, tf.float32)
                z, mz, vz = _adam(z, grads[0], mz, vz, tt, c.lr_z)
                new = [_adam(w, g, m_, v_, tt, c.lr_theta) for w, g, m_, v_ in zip(theta, grads[1:], mt, vt)]
                return (t + 1, z, [u[0] for u in new], mz, vz, [u[1] for u in new], [u[2] for u in new], hist.write(t, loss))

            z = z0[i % n][None]  # every (sample, seed) starts from the trained weights
            zeros = [tf.zeros_like(w) for w in theta0]
            init = (tf.constant(0), z, list(theta0), tf.zeros_like(z), tf.zeros_like(z), zeros, list(zeros), tf.TensorArray(tf.float32, size=k + 1))
            _, z, theta, _, _, _, _, hist = tf.while_loop(lambda t, *_: t < k, step, init)
            rec = self.render(z, theta)
            final = tf.reduce_sum(_mse(rec, target))
            hist = hist.write(k, final)
            return i + 1, finals.write(i, final), recons.write(i, rec[0]), hist_sum + hist.stack()

        _, finals, recons, hist_sum = tf.while_loop(lambda i, *_: i < b * n, one, (tf.constant(0), finals, recons, tf.zeros([k + 1])))
        out = (tf.reshape(finals.stack(), [b, n]), tf.reshape(recons.stack(), tf.concat([[b, n], tf.shape(x)[1:]], 0)))
        return out + (hist_sum / tf.cast(b * n, tf.float32),) if trace else out

    def score(self, images):
        x = tf.cast(images, tf.float32)
        final, recon = self.search(x)
        best = tf.argmin(final, axis=1, output_type=tf.int32)
        rec = tf.gather(recon, best, axis=1, batch_dims=1)
        heat = tf.reduce_mean(tf.square(x - rec), axis=-1, keepdims=True)
        return {"score": tf.reduce_mean(final, axis=1), "heatmap": heat, "reconstruction": rec}

    def export_modules(self):
        return [self.generator]

    def sample_outputs(self, batch):
        x = batch[IMAGE]
        out = self.score(x)
        z = tf.random.stateless_normal([tf.shape(x)[0], 1, 1, self.cfg.latent_dim], seed=[self.cfg.search_seed, 1])
        heat = out["heatmap"] / (tf.reduce_max(out["heatmap"]) + 1e-8)
        return {"X": x, "G(z*)": out["reconstruction"], "heatmap": heat, "G(z), z~N(0,I)": self.render(z)}
