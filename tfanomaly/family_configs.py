"""Per-family model configs (the ``model:`` section of a run config) and
``FAMILIES``, the family name -> config class map that :mod:`tfanomaly.config`
loads with and :mod:`tfanomaly.models.registry` pairs with the model classes.
Config layer: no TensorFlow, no import from ``models/``."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from tfanomaly.errors import ConfigError
from tfanomaly.validators import all_of, checked, each, length, non_negative, one_of, positive, unit_interval


@dataclass
class GRDNetConfig:
    """GRD-Net: residual AE generator (encoder-decoder-encoder) + discriminator,
    and in the ``full`` variant a U-Net discriminative head with an ROI mask."""

    variant: str = checked("industrial", one_of("industrial", "full"))
    widths: list[int] = checked(
        factory=lambda: [128, 256, 512, 1024],
        check=all_of(lambda v: None if v else "at least one stage", each(positive)),
        help="channels of each encoder stage; every stage halves H and W",
    )
    stem_width: int = checked(32, positive, help="channels of the first 3x3 conv")
    bottleneck: str = checked("dense", one_of("dense", "conv"))
    latent_dim: int = checked(64, positive, help="dense: features; conv: channels of the 1x1 bottleneck")
    disc_widths: list[int] = checked(factory=lambda: [32, 64, 128, 256], check=each(positive))
    unet_widths: list[int] = checked(factory=lambda: [32, 64, 128, 256], check=each(positive))
    con_loss: str = checked("huber", one_of("huber", "l1"), help="pixel term of L_con (industrial: huber, full: l1)")
    w_a: float = checked(2.0, non_negative, help="weight of the pixel term in L_con")
    w_b: float = checked(1.0, non_negative, help="weight of 1 - SSIM in L_con")
    w_adv: float = checked(1.0, non_negative)
    w_con: float = checked(50.0, non_negative)
    w_enc: float = checked(1.0, non_negative)
    w_nse: float = checked(3.0, non_negative)
    w_seg: float = checked(1.0, non_negative, help="weight of the U-Net focal loss (full)")
    focal_gamma: float = checked(2.0, non_negative)
    focal_alpha: float = checked(0.25, unit_interval)
    ssim_window: int = checked(11, lambda v: None if v >= 3 and v % 2 == 1 else "an odd size >= 3")
    score_pool: int = checked(8, positive, help="full: average-pool window on the U-Net map before the max")
    heatmap_sigma: float = checked(
        0.0,
        non_negative,
        help="full: gaussian sigma (pixels) smoothing the U-Net map (edges mirrored) into the heatmap; the image score stays the max of the score_pool-ed map; 0 = none",
    )
    score: str = checked(
        "ssim",
        one_of("ssim", "residual", "ssim_map"),
        help="industrial patch score: ssim = 1 - SSIM of the whole patch (the paper); residual = max of the smoothed "
        "|X - G(X)| map; ssim_map = max of the smoothed 1 - SSIM map (for both maps the heatmap is the map itself)",
    )
    score_sigma: float = checked(1.0, non_negative, help="residual, ssim_map: gaussian sigma (pixels) smoothing the map before its max; 0 = none")
    score_shift: list[int] = checked(
        factory=lambda: [0, 0],
        check=all_of(length(2), each(non_negative)),
        help="residual, ssim_map: [dy, dx] pixels of misplacement of G(X) to tolerate: the map is the pixelwise minimum "
        "over G(X) shifted by up to dy rows and dx columns (edges mirrored); [0, 0] = none",
    )
    roi_mask: str = checked("", help="full: ROI mask file (white = inspected); empty = whole image")
    roi_polygon: list[list[float]] = checked(factory=list, check=each(length(2)), help="full: ROI polygon [[x, y], ...] in patch pixels")
    disc_lr_ratio: float = checked(1.0, positive, help="discriminator lr relative to train.learning_rate")

    def check_score_options(self, src):
        if self.variant == "full" and self.score != "ssim":
            raise ConfigError(f"{src}: model.score: the full variant scores with its U-Net map; {self.score!r} is for variant: industrial")
        if any(self.score_shift) and (self.variant == "full" or self.score == "ssim"):
            raise ConfigError(f"{src}: model.score_shift: shifts apply to the maps of model.score: residual or ssim_map (variant: industrial), got score {self.score!r}, variant {self.variant!r}")
        if self.heatmap_sigma > 0 and self.variant != "full":
            raise ConfigError(f"{src}: model.heatmap_sigma: smooths the full variant's U-Net map; the industrial maps use model.score_sigma, got variant {self.variant!r}")

    def validate(self, cfg, src):
        self.check_score_options(src)
        h, w = cfg.data.image_size
        f = 2 ** len(self.widths)
        if h % f or w % f:
            raise ConfigError(f"{src}: model.widths: {len(self.widths)} stages halve the image {len(self.widths)} times, so data.image_size {cfg.data.image_size} must be divisible by {f}")
        if min(h, w) < self.ssim_window:
            raise ConfigError(f"{src}: model.ssim_window: expected <= the image size {min(h, w)}, got {self.ssim_window}")
        if math.ceil(3.0 * self.heatmap_sigma) >= min(h, w):
            raise ConfigError(f"{src}: model.heatmap_sigma: the gaussian's radius (3 sigma) must be smaller than data.image_size {cfg.data.image_size}, got sigma {self.heatmap_sigma}")
        if self.score_shift[0] >= h or self.score_shift[1] >= w:
            raise ConfigError(f"{src}: model.score_shift: expected shifts smaller than data.image_size {cfg.data.image_size}, got {self.score_shift}")
        u = 2 ** (len(self.unet_widths) - 1)
        if self.variant == "full" and (h % u or w % u):
            raise ConfigError(f"{src}: model.unet_widths: {len(self.unet_widths)} levels need data.image_size divisible by {u}")


# VGG16 taps: the paper's relu names -> Keras layer names (Keras' convs carry the ReLU).
VGG16_TAPS = {"relu1_2": "block1_conv2", "relu2_2": "block2_conv2", "relu3_3": "block3_conv3", "relu4_3": "block4_conv3", "relu5_3": "block5_conv3"}


def _weights(v):
    return None if v in ("none", "imagenet") or v.endswith(".h5") else "'none', 'imagenet' or a local .h5 weights file"


@dataclass
class GANomalyConfig:
    """GANomaly: encoder E1, decoder, second encoder E2 and a DCGAN discriminator;
    score = ||E1(x) - E2(G(x))||^2. The encoders are DCGAN or ResNet50, the
    reconstruction term pixel L1 or VGG16 perceptual."""

    encoder: str = checked("dcgan", one_of("dcgan", "resnet50"))
    latent_dim: int = checked(100, positive, help="size of z (512 at 256x256 in the cargo study)")
    base_width: int = checked(64, positive, help="ngf = ndf: channels of the first (last) DCGAN layer; doubles per stage")
    max_width: int = checked(0, non_negative, help="cap on DCGAN channels (0 = no cap, as the original)")
    extra_layers: int = checked(0, non_negative, help="extra 3x3 conv layers at the first DCGAN resolution")
    resnet_weights: str = checked("imagenet", _weights, help="ResNet50 encoder weights: none, imagenet or a .h5 file")
    recon_loss: str = checked("l1", one_of("l1", "perceptual"), help="L_con pixel L1, or the VGG16 perceptual loss replacing it")
    perceptual_taps: list[str] = checked(
        factory=lambda: ["relu3_3"],
        check=all_of(lambda v: None if v else "at least one tap", each(one_of(*VGG16_TAPS))),
        help="VGG16 layers compared (several are averaged: multi-scale)",
    )
    vgg_weights: str = checked("imagenet", _weights, help="VGG16 weights: none, imagenet or a .h5 file")
    w_adv: float = checked(1.0, non_negative)
    w_con: float = checked(50.0, non_negative)
    w_enc: float = checked(1.0, non_negative)
    w_perc: float = checked(15.0, non_negative, help="weight of L_perc when recon_loss is perceptual")
    d_reinit_threshold: float = checked(1e-5, non_negative, help="re-initialise the discriminator when its loss falls below this (0 = never)")
    disc_lr_ratio: float = checked(1.0, positive, help="discriminator lr relative to train.learning_rate")

    def validate(self, cfg, src):
        h, w = cfg.data.image_size
        if h != w or h < 16 or h & (h - 1):
            raise ConfigError(f"{src}: data.image_size: GANomaly needs a square power-of-two size >= 16, got {cfg.data.image_size}")
        if self.encoder == "resnet50" and h < 32:
            raise ConfigError(f"{src}: data.image_size: the ResNet50 encoder needs >= 32 px, got {h}")
        if cfg.data.channels not in (1, 3) and (self.encoder == "resnet50" or self.recon_loss == "perceptual"):
            raise ConfigError(f"{src}: data.channels: ImageNet networks take 1 or 3 channels, got {cfg.data.channels}")
        for key in ("resnet_weights", "vgg_weights"):
            v = getattr(self, key)
            if v.endswith(".h5") and not os.path.isfile(v):
                raise ConfigError(f"{src}: model.{key}: expected an existing weights file, got {v!r} (not found)")


@dataclass
class AutoencoderConfig:
    """Convolutional autoencoders trained on good images (capsule study):
    ``residual`` (model I: residual down/up-sampling blocks, MSE + SSIM) or
    ``sdc`` (model II: stacked dilated convolutions with convex-combination
    skips, trained on patch-transformation corruptions)."""

    variant: str = checked("residual", one_of("residual", "sdc"))
    # model I
    base_width: int = checked(64, positive, help="residual: channels of the first convolution")
    max_width: int = checked(512, positive, help="residual: cap on the channels of a block")
    down_blocks: int = checked(6, positive, help="residual: downsampling blocks (each halves H and W)")
    bottleneck: str = checked("vector", one_of("vector", "volumetric"))
    latent_dim: int = checked(512, positive, help="vector: features; volumetric: channels of the 1x1 bottleneck")
    attention: str = checked("none", one_of("none", "cbam"), help="CBAM after every residual block (the paper's architecture 2)")
    add_luminance: bool = checked(False, help="RGB input: add a luminance channel (4 channels inside the network)")
    # model II
    sdc_width: int = checked(64, positive, help="sdc: channels of every dilated convolution")
    dilations: list[int] = checked(factory=lambda: [1, 2, 4, 8, 16, 32], check=all_of(lambda v: None if v else "at least one", each(positive)))
    sdc_downsample: int = checked(0, non_negative, help="sdc: stride-2 convs before the dilated stack (0 = full resolution)")
    lambda_mask: float = checked(0.9, unit_interval, help="sdc: weight of the loss inside the corruption mask")
    # loss and score
    alpha: float = checked(0.3, unit_interval, help="alpha*MSE + (1 - alpha)*(1 - SSIM)")
    ssim_window: int = checked(11, lambda v: None if v >= 3 and v % 2 == 1 else "an odd size >= 3")
    heatmap_sigma: float = checked(4.0, non_negative, help="gaussian filter on the squared-error map, pixels")
    score: str = checked("loss", one_of("loss", "map_max"), help="image score: the combined loss, or the heatmap's max")

    def validate(self, cfg, src):
        h, w = cfg.data.image_size
        if self.add_luminance and cfg.data.channels != 3:
            raise ConfigError(f"{src}: model.add_luminance: needs RGB input (data.channels: 3), got {cfg.data.channels} channels")
        f = 2 ** (self.down_blocks if self.variant == "residual" else self.sdc_downsample)
        key = "model.down_blocks" if self.variant == "residual" else "model.sdc_downsample"
        if h % f or w % f:
            raise ConfigError(f"{src}: {key}: {int(math.log2(f))} halvings need data.image_size divisible by {f}, got {cfg.data.image_size}")
        if min(h, w) < self.ssim_window:
            raise ConfigError(f"{src}: model.ssim_window: expected <= the image size {min(h, w)}, got {self.ssim_window}")
        if self.variant == "sdc" and not (cfg.corrupt.enabled or cfg.perturb.enabled):
            raise ConfigError(
                f"{src}: corrupt.enabled: the sdc autoencoder restores synthetic anomalies; enable the patch corruptions "
                "(corrupt.enabled: true) or the Perlin / own-texture perturbation (perturb.enabled: true)"
            )


@dataclass
class ADGANConfig:
    """ADGAN (Deecke et al. 2018): a DCGAN generator trained as a GAN, WGAN or
    WGAN-GP; the anomaly score is the reconstruction loss left after a search
    for the latent vector (and optionally a small generator adaptation)."""

    objective: str = checked("gan", one_of("gan", "wgan", "wgan_gp"))
    latent_dim: int = checked(100, positive)
    base_width: int = checked(64, positive, help="DCGAN channels at the first (last) layer; doubles per stage")
    max_width: int = checked(0, non_negative, help="cap on the channels (0 = no cap)")
    n_critic: int = checked(1, positive, help="critic updates per generator update (5 for WGAN)")
    clip_value: float = checked(0.01, positive, help="wgan: critic weights clipped to [-c, c]")
    gp_weight: float = checked(10.0, non_negative, help="wgan_gp: lambda of the gradient penalty")
    critic_norm: str = checked("auto", one_of("auto", "batch", "layer", "none"), help="auto: batch for gan, layer for wgan_gp, none for wgan")
    # the latent search of score()
    n_seed: int = checked(3, positive, help="latent vectors searched per sample")
    search_steps: int = checked(19, non_negative, help="k: Adam steps of the search")
    lr_z: float = checked(5e-2, positive, help="gamma_z: Adam learning rate on z")
    lr_theta: float = checked(0.0, non_negative, help="gamma_theta: Adam learning rate on a per-sample copy of the generator (0 = off; 6e-9 in the 3D study)")
    search_seed: int = checked(1234, help="seed of the initial latent vectors (the same for every sample)")

    def validate(self, cfg, src):
        h, w = cfg.data.image_size
        if h != w or h < 16 or h & (h - 1):
            raise ConfigError(f"{src}: data.image_size: ADGAN's DCGAN needs a square power-of-two size >= 16, got {cfg.data.image_size}")


# InceptionV3 blocks (Keras layer names) that FID features may come from.
INCEPTION_BLOCKS = tuple(f"mixed{i}" for i in range(11))


@dataclass
class CycleGANConfig:
    """CycleGAN-AD: generators G (abnormal -> normal, used at inference) and F,
    PatchGAN discriminators D_Y and D_X; trained on good and defective images
    (``data.split.mode: balanced``); score SSE or per-image FID of x vs G(x)."""

    gen_base: int = checked(64, positive, help="channels of c7s1 (d/u layers: 2x and 4x)")
    n_res: int = checked(0, non_negative, help="residual blocks (0 = 9 at >= 256 px, else 6, as CycleGAN)")
    disc_base: int = checked(64, positive, help="channels of the first PatchGAN layer (C64-C128-C256-C512)")
    disc_layers: int = checked(3, positive, help="stride-2 PatchGAN layers (3 = the 70x70 PatchGAN)")
    adversarial: str = checked("lsgan", one_of("lsgan", "bce"), help="least squares (CycleGAN code) or log-likelihood (the paper's formula)")
    lambda_cyc: float = checked(10.0, non_negative)
    lambda_ide: float = checked(5.0, non_negative)
    score: str = checked("sse", one_of("sse", "fid"), help="anomaly score of x vs G(x): sum of squared differences or per-image FID")
    fid_layer: str = checked("mixed2", one_of(*INCEPTION_BLOCKS), help="InceptionV3 block whose positions are the FID samples")
    fid_size: int = checked(299, lambda v: None if v >= 75 else "InceptionV3 needs >= 75 px", help="images are resized to this for FID")
    fid_weights: str = checked("imagenet", _weights, help="InceptionV3 weights: none, imagenet or a local .h5 file")
    disc_lr_ratio: float = checked(1.0, positive, help="discriminator lr relative to train.learning_rate")

    def validate(self, cfg, src):
        h, w = cfg.data.image_size
        if h % 4 or w % 4:
            raise ConfigError(f"{src}: data.image_size: the generator halves H and W twice, so both must be divisible by 4, got {cfg.data.image_size}")
        f = 2**self.disc_layers
        if min(h, w) // f < 3:
            raise ConfigError(f"{src}: model.disc_layers: {self.disc_layers} stride-2 layers leave no patch at data.image_size {cfg.data.image_size}")
        if self.score == "fid" and cfg.data.channels not in (1, 3):
            raise ConfigError(f"{src}: model.score: fid feeds InceptionV3, which takes 1 or 3 channels, got data.channels {cfg.data.channels}")
        if self.fid_weights.endswith(".h5") and not os.path.isfile(self.fid_weights):
            raise ConfigError(f"{src}: model.fid_weights: expected an existing weights file, got {self.fid_weights!r} (not found)")


FAMILIES = {
    "grdnet": GRDNetConfig,
    "ganomaly": GANomalyConfig,
    "autoencoder": AutoencoderConfig,
    "adgan": ADGANConfig,
    "cyclegan": CycleGANConfig,
}
