"""CycleGAN-AD: abnormal-to-normal translation trained on good *and* bad images.

Domains: X = defective (abnormal), Y = good (normal). Two generators,
G: X -> Y (used at inference: it should erase defects and leave good parts
alone) and F: Y -> X (training only), and two 70x70 PatchGAN discriminators
D_Y (normal) and D_X (abnormal). The generator loss is

    L = L_adv(G, D_Y) + L_adv(F, D_X) + lambda_cyc * L_cyc + lambda_ide * L_ide
    L_cyc = |F(G(x)) - x|_1 + |G(F(y)) - y|_1,   L_ide = |G(y) - y|_1 + |F(x) - x|_1

with a least-squares (the CycleGAN implementation) or log-likelihood (the
paper's formula) adversarial objective. ``score`` runs G only: the anomaly
score is the SSE between x and G(x), or a per-image FID between them (see
:func:`per_image_fid`); the heatmap is the squared difference.

Networks as CycleGAN (Zhu et al. 2017): generator c7s1-64, d128, d256,
n residual blocks, u128, u64, c7s1-C with instance normalisation and
reflection padding; discriminator C64-C128-C256-C512 (4x4 convs, LeakyReLU
0.2, no norm on the first), weights N(0, 0.02).
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from tfanomaly import losses
from tfanomaly.batch import ABNORMAL, IMAGE
from tfanomaly.family_configs import CycleGANConfig
from tfanomaly.models.base import AnomalyModel

_INIT = {"kernel_initializer": keras.initializers.RandomNormal(0.0, 0.02)}


@keras.saving.register_keras_serializable(package="tfanomaly")
class ReflectionPad2D(layers.Layer):
    """Reflection padding of H and W by ``pad`` pixels (as torch.nn.ReflectionPad2d)."""

    def __init__(self, pad: int, **kwargs):
        super().__init__(**kwargs)
        self.pad = int(pad)

    def call(self, x):
        p = self.pad
        return tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]], mode="REFLECT")

    def compute_output_shape(self, shape):
        grow = lambda v: None if v is None else v + 2 * self.pad  # noqa: E731
        return (shape[0], grow(shape[1]), grow(shape[2]), shape[3])

    def get_config(self):
        return {**super().get_config(), "pad": self.pad}


@keras.saving.register_keras_serializable(package="tfanomaly")
class MaxLeakyReLU(layers.Layer):
    """LeakyReLU written as max(x, a x): the same function (and gradient away
    from 0) without the LeakyRelu op. After a conv with bias, TF 2.21's grappler
    remapper tries to fuse Conv2D + BiasAdd + LeakyRelu in the train step, fails
    ("remapper failed: ... fanout ... LeakyReluGrad exist for missing node ...
    BiasAdd") and then skips every fusion of that graph (about 6% slower here)."""

    def __init__(self, negative_slope: float = 0.2, **kwargs):
        super().__init__(**kwargs)
        self.negative_slope = float(negative_slope)

    def call(self, x):
        return tf.maximum(x, self.negative_slope * x)

    def compute_output_shape(self, shape):
        return shape

    def get_config(self):
        return {**super().get_config(), "negative_slope": self.negative_slope}


def _inorm(name):
    # instance norm without affine parameters, as CycleGAN's InstanceNorm2d(affine=False)
    return layers.GroupNormalization(groups=-1, epsilon=1e-5, center=False, scale=False, name=name)


def resnet_generator(shape, n_res: int, base: int, name: str) -> keras.Model:
    """[H, W, C] in [-1, 1] -> [H, W, C] in [-1, 1] (tanh)."""
    c = shape[-1]
    inp = keras.Input(shape, name=f"{name}_in")
    x = ReflectionPad2D(3, name=f"{name}_pad_in")(inp)
    x = layers.Conv2D(base, 7, name=f"{name}_c7s1", **_INIT)(x)
    x = layers.ReLU(name=f"{name}_c7s1_relu")(_inorm(f"{name}_c7s1_in")(x))
    for i, mult in enumerate((2, 4)):
        x = layers.Conv2D(base * mult, 3, strides=2, padding="same", name=f"{name}_d{i}", **_INIT)(x)
        x = layers.ReLU(name=f"{name}_d{i}_relu")(_inorm(f"{name}_d{i}_in")(x))
    for i in range(n_res):
        r = ReflectionPad2D(1, name=f"{name}_r{i}_pad1")(x)
        r = layers.Conv2D(base * 4, 3, name=f"{name}_r{i}_conv1", **_INIT)(r)
        r = layers.ReLU(name=f"{name}_r{i}_relu")(_inorm(f"{name}_r{i}_in1")(r))
        r = ReflectionPad2D(1, name=f"{name}_r{i}_pad2")(r)
        r = layers.Conv2D(base * 4, 3, name=f"{name}_r{i}_conv2", **_INIT)(r)
        x = layers.Add(name=f"{name}_r{i}_add")([x, _inorm(f"{name}_r{i}_in2")(r)])
    for i, mult in enumerate((2, 1)):
        x = layers.Conv2DTranspose(base * mult, 3, strides=2, padding="same", name=f"{name}_u{i}", **_INIT)(x)
        x = layers.ReLU(name=f"{name}_u{i}_relu")(_inorm(f"{name}_u{i}_in")(x))
    x = ReflectionPad2D(3, name=f"{name}_pad_out")(x)
    x = layers.Conv2D(c, 7, name=f"{name}_out", **_INIT)(x)
    out = layers.Activation("tanh", dtype="float32", name=f"{name}_tanh")(x)
    return keras.Model(inp, out, name=name)


def patch_discriminator(shape, base: int, n_layers: int, name: str) -> keras.Model:
    """70x70 PatchGAN (n_layers = 3): [H, W, C] -> logits [H/8 - 2, W/8 - 2, 1].
    Zero padding 1 before every 4x4 conv, as the reference implementation."""
    inp = keras.Input(shape, name=f"{name}_in")
    x = inp
    widths = [base * min(2**i, 8) for i in range(n_layers + 1)]
    for i, w in enumerate(widths):
        stride = 2 if i < n_layers else 1
        x = layers.ZeroPadding2D(1, name=f"{name}_pad{i}")(x)
        x = layers.Conv2D(w, 4, strides=stride, name=f"{name}_c{i}", **_INIT)(x)
        if i > 0:
            x = layers.LeakyReLU(0.2, name=f"{name}_c{i}_lrelu")(_inorm(f"{name}_c{i}_in")(x))
        else:  # conv + bias + activation: see MaxLeakyReLU
            x = MaxLeakyReLU(0.2, name=f"{name}_c{i}_lrelu")(x)
    x = layers.ZeroPadding2D(1, name=f"{name}_pad_out")(x)
    out = layers.Conv2D(1, 4, name=f"{name}_logits", dtype="float32", **_INIT)(x)
    return keras.Model(inp, out, name=name)


def inception_features(size: int, layer: str, name: str = "fid_inception") -> keras.Model:
    """A frozen InceptionV3 [size, size, 3] (inputs in [-1, 1]) -> the feature
    map of ``layer``. Built without weights: see ``losses.load_imagenet_weights``.
    Refuses a map with no more positions than channels (a singular covariance:
    the per-image FID would not be well posed)."""
    from tfanomaly.errors import ConfigError

    net = keras.applications.InceptionV3(include_top=False, weights=None, input_shape=(size, size, 3))
    _, h, w, c = net.get_layer(layer).output.shape
    if h * w <= c:
        raise ConfigError(
            f"model.fid_layer: InceptionV3 {layer} at model.fid_size {size} is {h}x{w}x{c}: {h * w} positions for {c} "
            f"channels give a singular covariance; raise model.fid_size (299 gives mixed2 35x35x288) or pick an earlier block"
        )
    model = keras.Model(net.input, net.get_layer(layer).output, name=name)
    model.trainable = False
    return model


# -- per-image FID ---------------------------------------------------------------


def gaussian_stats(features):
    """Mean [B, C] and covariance [B, C, C] (unbiased, as numpy.cov) of the
    feature vectors at the H*W positions of each map [B, H, W, C] (float64)."""
    f = tf.cast(features, tf.float64)
    b, c = tf.shape(f)[0], tf.shape(f)[-1]
    f = tf.reshape(f, [b, -1, c])
    n = tf.cast(tf.shape(f)[1], tf.float64)
    mu = tf.reduce_mean(f, axis=1)
    d = f - mu[:, None, :]
    cov = tf.einsum("bni,bnj->bij", d, d) / (n - 1.0)
    return mu, cov


def frechet_distance(mu1, cov1, mu2, cov2):
    """||mu1 - mu2||^2 + Tr(C1 + C2 - 2 (C1 C2)^(1/2)) per batch row.

    Tr((C1 C2)^(1/2)) is the sum of the square roots of the eigenvalues of
    C1 C2, which are those of the symmetric PSD matrix C1^(1/2) C2 C1^(1/2):
    two symmetric eigendecompositions (float64), no general matrix square
    root (whose imaginary round-off scipy-based code has to discard)."""
    e1, v1 = tf.linalg.eigh(cov1)
    s1 = tf.matmul(v1 * tf.sqrt(tf.maximum(e1, 0.0))[:, None, :], v1, transpose_b=True)
    m = tf.matmul(s1, tf.matmul(cov2, s1))
    m = 0.5 * (m + tf.linalg.matrix_transpose(m))
    tr_sqrt = tf.reduce_sum(tf.sqrt(tf.maximum(tf.linalg.eigvalsh(m), 0.0)), axis=-1)
    diff = tf.reduce_sum(tf.square(mu1 - mu2), axis=-1)
    return diff + tf.linalg.trace(cov1) + tf.linalg.trace(cov2) - 2.0 * tr_sqrt


def per_image_fid(feat_a, feat_b):
    """FID between two images [B]: each image's feature map [H, W, C] gives H*W
    samples of a C-dimensional gaussian (well posed when H*W > C)."""
    mu1, c1 = gaussian_stats(feat_a)
    mu2, c2 = gaussian_stats(feat_b)
    return tf.cast(frechet_distance(mu1, c1, mu2, c2), tf.float32)


# -- the model -------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="tfanomaly")
class CycleGANAD(AnomalyModel):
    family = "cyclegan"
    config_class = CycleGANConfig
    trains_on_defects = True  # batches: "image" good (Y), "abnormal" defective (X)

    def __init__(self, model_config: dict, image_shape, **kwargs):
        super().__init__(model_config, image_shape, **kwargs)
        c = self.cfg
        n_res = c.n_res or (9 if min(self.image_shape[:2]) >= 256 else 6)
        self.n_res = n_res
        self.gen_g = resnet_generator(self.image_shape, n_res, c.gen_base, "G")  # X -> Y (abnormal -> normal)
        self.gen_f = resnet_generator(self.image_shape, n_res, c.gen_base, "F")  # Y -> X
        self.disc_y = patch_discriminator(self.image_shape, c.disc_base, c.disc_layers, "D_Y")
        self.disc_x = patch_discriminator(self.image_shape, c.disc_base, c.disc_layers, "D_X")
        self.inception = inception_features(c.fid_size, c.fid_layer) if c.score == "fid" else None
        self._track("g_loss", "adv_g", "adv_f", "cyc", "ide", "d_loss", "d_y", "d_x")
        self.built = True  # sub-networks are functional models, built above

    @classmethod
    def from_run_config(cls, cfg):
        model = super().from_run_config(cfg)
        model.load_pretrained()
        return model

    def load_pretrained(self):
        if self.inception is not None:
            losses.load_imagenet_weights(self.inception, "inception_v3", self.cfg.fid_weights, (self.cfg.fid_size, self.cfg.fid_size))

    # -- training -------------------------------------------------------------
    def optimizer_groups(self):
        # one Adam for both generators and one for both discriminators, as CycleGAN
        return {
            "g_optimizer": (1.0, self.gen_g.trainable_variables + self.gen_f.trainable_variables),
            "d_optimizer": (self.cfg.disc_lr_ratio, self.disc_y.trainable_variables + self.disc_x.trainable_variables),
        }

    def _adv(self, logits, target: float):
        """Per-example adversarial term [B]: least squares or cross-entropy to ``target``."""
        if self.cfg.adversarial == "lsgan":
            return losses.l2(logits, tf.fill(tf.shape(logits), target))
        return losses.bce_logits(logits, target)

    def adv_generator(self, fake_logits):
        """Per-example generator adversarial term [B]: fakes should look real."""
        return self._adv(fake_logits, 1.0)

    def adv_discriminator(self, real_logits, fake_logits):
        """Per-example discriminator loss [B], halved as in CycleGAN."""
        return 0.5 * (self._adv(real_logits, 1.0) + self._adv(fake_logits, 0.0))

    def forward(self, x, y, training=False):
        """All the images and logits of one step (x abnormal, y normal, in [-1, 1])."""
        fake_y = self.gen_g(x, training=training)
        fake_x = self.gen_f(y, training=training)
        return {
            "fake_y": fake_y,
            "fake_x": fake_x,
            "rec_x": self.gen_f(fake_y, training=training),
            "rec_y": self.gen_g(fake_x, training=training),
            "same_y": self.gen_g(y, training=training),
            "same_x": self.gen_f(x, training=training),
            "dy_fake": self.disc_y(fake_y, training=training),
            "dx_fake": self.disc_x(fake_x, training=training),
            "dy_real": self.disc_y(y, training=training),
            "dx_real": self.disc_x(x, training=training),
        }

    def loss_terms(self, x, y, o):
        """Per-example loss terms [B] from :meth:`forward`'s outputs."""
        c = self.cfg
        adv_g = self.adv_generator(o["dy_fake"])
        adv_f = self.adv_generator(o["dx_fake"])
        cyc = losses.l1(x, o["rec_x"]) + losses.l1(y, o["rec_y"])
        ide = losses.l1(y, o["same_y"]) + losses.l1(x, o["same_x"])
        # The discriminators see the same fakes; their gradients only reach D's
        # variables (the generator step is taken from g_loss alone).
        d_y = self.adv_discriminator(o["dy_real"], o["dy_fake"])
        d_x = self.adv_discriminator(o["dx_real"], o["dx_fake"])
        return {
            "g_loss": adv_g + adv_f + c.lambda_cyc * cyc + c.lambda_ide * ide,
            "adv_g": adv_g,
            "adv_f": adv_f,
            "cyc": cyc,
            "ide": ide,
            "d_loss": d_y + d_x,
            "d_y": d_y,
            "d_x": d_x,
        }

    def train_step(self, data):
        y = tf.cast(data[IMAGE], tf.float32) * 2.0 - 1.0
        x = tf.cast(data[ABNORMAL], tf.float32) * 2.0 - 1.0
        # One forward pass; D's loss on the fakes uses the same logits, so the
        # generators run once per step (D's gradient w.r.t. its own variables
        # is the same as with detached fakes).
        with tf.GradientTape(persistent=True) as tape:
            terms = self.loss_terms(x, y, self.forward(x, y, training=True))
            g_loss = self._avg(terms["g_loss"])
            d_loss = self._avg(terms["d_loss"])
        groups = self.optimizer_groups()
        g_vars, d_vars = groups["g_optimizer"][1], groups["d_optimizer"][1]
        g_grads = tape.gradient(g_loss, g_vars)
        d_grads = tape.gradient(d_loss, d_vars)
        del tape
        self.g_optimizer.apply_gradients(zip(g_grads, g_vars))
        self.d_optimizer.apply_gradients(zip(d_grads, d_vars))
        return self._report({k: self._avg(v) for k, v in terms.items()})

    def test_step(self, data):
        # validation holds good images only: identity and cycle on the normal domain
        y = tf.cast(data[IMAGE], tf.float32) * 2.0 - 1.0
        same_y = self.gen_g(y)
        rec_y = self.gen_g(self.gen_f(y))
        logs = self._report({"ide": self._avg(losses.l1(y, same_y)), "cyc": self._avg(losses.l1(y, rec_y))})
        return {k: logs[k] for k in ("ide", "cyc")}

    # -- inference (the exported path) ---------------------------------------
    def normalize(self, images):
        """G(x) for images in [0, 1], in [0, 1]."""
        x = tf.cast(images, tf.float32)
        return (tf.cast(self.gen_g(x * 2.0 - 1.0), tf.float32) + 1.0) * 0.5

    def fid_features(self, images01):
        s = self.cfg.fid_size
        x = tf.image.resize(tf.cast(images01, tf.float32), [s, s], method="bilinear")
        if x.shape[-1] == 1:
            x = tf.tile(x, [1, 1, 1, 3])
        return self.inception(x * 2.0 - 1.0, training=False)  # InceptionV3's own preprocessing

    def score(self, images):
        x01 = tf.cast(images, tf.float32)
        recon = self.normalize(x01)
        sq = tf.square(x01 - recon)
        if self.cfg.score == "sse":
            score = tf.reduce_sum(sq, axis=[1, 2, 3])
        else:
            score = per_image_fid(self.fid_features(x01), self.fid_features(recon))
        return {"score": score, "heatmap": tf.reduce_mean(sq, axis=-1, keepdims=True), "reconstruction": recon}

    def export_modules(self):
        return [self.gen_g] + ([self.inception] if self.inception is not None else [])

    def sample_outputs(self, batch):
        out = self.score(batch[IMAGE])
        res = {"Y (good)": batch[IMAGE], "G(Y)": out["reconstruction"], "(Y - G(Y))^2": out["heatmap"]}
        if ABNORMAL in batch:
            bad = batch[ABNORMAL]
            res.update({"X (bad)": bad, "G(X)": self.normalize(bad), "F(Y)": (self.gen_f(batch[IMAGE] * 2.0 - 1.0) + 1.0) * 0.5})
        return res
