"""Per-family model configs (the ``model:`` section of a run config)."""

from __future__ import annotations

from dataclasses import dataclass

from tfanomaly.config import all_of, checked, each, length, non_negative, one_of, positive, unit_interval
from tfanomaly.errors import ConfigError


@dataclass
class GRDNetConfig:
    """GRD-Net: residual AE generator (encoder-decoder-encoder) + discriminator,
    and in the ``full`` variant a U-Net discriminative head with an ROI mask."""

    variant: str = checked("industrial", one_of("industrial", "full"))
    widths: list[int] = checked(
        factory=lambda: [128, 256, 512, 1024], check=all_of(lambda v: None if v else "at least one stage", each(positive)),
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
    roi_mask: str = checked("", help="full: ROI mask file (white = inspected); empty = whole image")
    roi_polygon: list[list[float]] = checked(factory=list, check=each(length(2)), help="full: ROI polygon [[x, y], ...] in patch pixels")
    disc_lr_ratio: float = checked(1.0, positive, help="discriminator lr relative to train.learning_rate")

    def validate(self, cfg, src):
        h, w = cfg.data.image_size
        f = 2 ** len(self.widths)
        if h % f or w % f:
            raise ConfigError(
                f"{src}: model.widths: {len(self.widths)} stages halve the image {len(self.widths)} times, "
                f"so data.image_size {cfg.data.image_size} must be divisible by {f}"
            )
        if min(h, w) < self.ssim_window:
            raise ConfigError(f"{src}: model.ssim_window: expected <= the image size {min(h, w)}, got {self.ssim_window}")
        u = 2 ** (len(self.unet_widths) - 1)
        if self.variant == "full" and (h % u or w % u):
            raise ConfigError(f"{src}: model.unet_widths: {len(self.unet_widths)} levels need data.image_size divisible by {u}")
