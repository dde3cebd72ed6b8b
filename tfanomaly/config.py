"""Typed configuration: YAML -> dataclass tree, dotted overrides, validation.

Every config is a tree of dataclasses. ``load_config(path, overrides)`` reads a
YAML file, applies ``key.path=value`` overrides, and converts the result into
the dataclasses, checking types and ranges on the way. Any problem raises a
:class:`~tfanomaly.errors.ConfigError` that names the file and the key path::

    configs/vials.yaml: model.latent_dim: expected an integer > 0, got -3

The ``model`` section is typed by the family named in ``family`` (see
:mod:`tfanomaly.family_configs`), so one loader serves all five families.
This module does not import TensorFlow.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tfanomaly.errors import ConfigError
from tfanomaly.family_configs import FAMILIES
from tfanomaly.files import atomic_write_text
from tfanomaly.validators import (  # noqa: F401  (re-exported: field checks of the config sections)
    all_of,
    below_half,
    checked,
    each,
    length,
    non_negative,
    one_of,
    positive,
    range_pair,
    unit_interval,
)

# --------------------------------------------------------------------------
# Config sections shared by all families.


@dataclass
class StripConfig:
    """How a vial-strip image is cut into patches: vials (x spans) x regions (y spans)."""

    vial_x: list[list[int]] = checked(
        factory=lambda: [[0, 64], [64, 128], [128, 192], [192, 256], [256, 320]],
        check=each(range_pair),
        help="[x0, x1) pixel span of each vial in the strip image",
    )
    region_y: list[list[int]] = checked(
        factory=lambda: [[0, 48], [48, 112], [112, 208], [208, 256]],
        check=each(range_pair),
        help="[y0, y1) pixel span of each logical region (flag, top body, liquid body, bottom)",
    )
    region_names: list[str] = checked(factory=lambda: ["flag", "top", "liquid", "bottom"])
    min_defect_share: float = checked(
        0.0,
        unit_interval,
        help="a patch is defective when it holds at least this share of its vial's defect-mask pixels in that image (0: any mask pixel); "
        "a smaller sliver of a defect lying in the neighbouring region is labelled good and its mask cleared",
    )


@dataclass
class PolygonConfig:
    """Polygon-annotated images (CargoX-style JSON next to each image)."""

    annotation_suffix: str = ".json"
    stride: int = checked(32, positive)
    normal_per_image: int = checked(1, non_negative, help="normal patches kept per image (0 = all)")
    anomalous_per_image: int = checked(1, one_of(0, 1), help="one patch centred on the largest polygon")


@dataclass
class RGBDConfig:
    """RGB + depth samples: ``<name>.png`` (RGB) beside ``<name><depth_suffix>``."""

    depth_suffix: str = "_depth.png"
    depth_scale: float = checked(1.0, positive, help="depth units per stored unit (e.g. mm per 16-bit step)")
    background_depth: float = checked(0.0, non_negative, help="remove pixels with depth > this (0 = off; 700 in the 3D study)")
    surface_frame: str = checked("", help="empty-surface depth frame; remove pixels within surface_tolerance of it")
    surface_tolerance: float = checked(0.9, unit_interval, help="relative depth difference below which a pixel is the surface")


@dataclass
class SplitConfig:
    """Train/test split of good images where the layout has none (folder, polygons, vials)."""

    mode: str = checked(
        "one_class",
        one_of("one_class", "balanced"),
        help="one_class: good images split by train_fraction, every defect tests; balanced (CycleGAN-AD): "
        "test = half of the minority class + as many random majority samples, everything else (good and bad) trains",
    )
    train_fraction: float = checked(0.8, unit_interval, help="one_class: fraction of the good images that trains")
    seed: int = 0


@dataclass
class TilingConfig:
    """Native-scale tiling of whole images (folder, mvtec, polygons, rgbd sources).

    With tiling on, ``data.image_size`` is the *tile* the model sees. Images
    are resized by ``scale`` only (aspect kept), never squeezed to the tile:
    training draws random tiles; scoring cuts every image into overlapping
    tiles at ``stride``, the last row/column of tiles flush with the image's
    border (no padding), scores them in batches, and returns the max over tiles
    as the image score and the heatmap stitched at the image's (scaled)
    resolution, overlaps averaged. An image smaller than a tile is
    reflect-padded to the tile, and the padding is cut off the heatmap.
    With ``flips``, every tile is also scored flipped (in the same batch) and
    the tile's score and maps are the mean over its views: 1 + len(flips) times
    the scoring work, in Python and in the exported graph alike."""

    enabled: bool = checked(False, help="cut images into tiles at a fixed pixel scale (data.image_size = tile)")
    stride: list[int] = checked(factory=lambda: [32, 32], check=all_of(length(2), each(positive)), help="[sy, sx] between tiles at scoring time")
    scale: float = checked(1.0, positive, help="resize factor applied to every image (and mask) before tiling")
    grid_fraction: float = checked(0.5, unit_interval, help="chance that a training tile starts (per axis) where the scorer cuts one: borders and corners seen as often as at scoring")
    flips: list[str] = checked(
        factory=list,
        check=each(one_of("h", "v", "hv")),
        help="test-time flips at scoring (h: left-right, v: top-bottom, hv: both): each tile's score and heatmap are the mean over the tile and its flips; [] = off",
    )


@dataclass
class DataConfig:
    source: str = checked("vials", one_of("vials", "folder", "mvtec", "polygons", "rgbd"))
    root: str = checked("", help="dataset root folder")
    image_size: list[int] = checked(factory=lambda: [256, 256], check=all_of(length(2), each(positive)), help="patch [height, width]")
    channels: int = checked(1, one_of(1, 3, 4))
    interpolation: str = checked("bilinear", one_of("bilinear", "bicubic", "area"), help="resize of images to image_size (masks: nearest)")
    # folder layout
    good_dirs: list[str] = checked(factory=lambda: ["good"], help="folders of good images, relative to root")
    defect_dirs: list[str] = checked(factory=list, help="folders of defective images, relative to root")
    mask_suffix: str = checked(".png", help="mask file = image stem + this suffix, beside the image or in mask_dir")
    mask_dir: str = ""
    # vial strips
    filename_regex: str = r"(?P<product>[A-Za-z0-9]+)_r(?P<run>\d+)_f(?P<frame>\d+)\.png$"
    frames_per_acquisition: int = checked(16, positive)
    rank_images: list[int] = checked(factory=lambda: [1, 16], check=each(positive), help="pixelwise ranks added per acquisition (1 = darkest)")
    train_frames: list[int] | None = checked(
        None,
        check=lambda v: None if v is None else each(non_negative)(v),
        help="frames per acquisition used for training beside the rank_images (default: all of them; [] trains on rank images only)",
    )
    eval_frames: list[int] = checked(factory=lambda: [0, 5, 10], check=each(non_negative), help="frames per acquisition scored at eval (3 on the line)")
    eval_ranks: list[int] = checked(
        factory=list,
        check=each(positive),
        help="pixelwise rank images scored at eval beside (or, with eval_frames: [], instead of) the frames; "
        "1 = the darkest value of each pixel over the acquisition, where bright moving bubbles vanish",
    )
    strip: StripConfig = field(default_factory=StripConfig)
    polygons: PolygonConfig = field(default_factory=PolygonConfig)
    rgbd: RGBDConfig = field(default_factory=RGBDConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    tiling: TilingConfig = field(default_factory=TilingConfig)
    on_error: str = checked("raise", one_of("raise", "skip"), help="bad files: stop with an error, or skip them (counted and logged)")
    validate: bool = checked(True, help="decode every file once while indexing, to name bad files up front")
    tfrecords: str = checked("", help="folder of TFRecord shards written by `tfanomaly data pack` (empty = read images)")
    cache: bool = True
    shuffle_buffer: int = checked(2048, positive)


@dataclass
class AugmentConfig:
    """Augmentation of good training images (also the test-time domain-shift set)."""

    enabled: bool = True
    rotation: float = checked(math.pi / 8, non_negative, help="max abs rotation, radians")
    rot90: bool = checked(False, help="rotate by a random multiple of 90 degrees (square patches only)")
    shift: list[float] = checked(factory=lambda: [0.0, 0.0], check=all_of(length(2), each(below_half)), help="max shift [dy, dx] (of height, width): whole pixels, reflected at the border (0 = off)")
    vflip: bool = True
    hflip: bool = checked(False, help="off by default: on the vial line a mirrored vial is an anomaly")
    brightness: float = checked(0.0, non_negative, help="max abs brightness delta")
    contrast: float = checked(0.0, unit_interval, help="contrast factor drawn in [1 - c, 1 + c]")
    noise_std: float = checked(0.0, non_negative, help="gaussian sensor noise sigma")
    downscale: float = checked(1.0, unit_interval, help="down/up-scale by a factor drawn in [downscale, 1] (1 = off)")
    probability: float = checked(0.5, unit_interval, help="probability of each photometric/scale operation")


@dataclass
class PerturbConfig:
    """Perlin-noise perturbation P_q (GRD-Net)."""

    enabled: bool = True
    probability: float = checked(0.75, unit_interval, help="q: chance an image is perturbed")
    min_scale: int = checked(0, non_negative, help="log2 of the smallest Perlin grid resolution")
    max_scale: int = checked(4, non_negative, help="log2 of the largest Perlin grid resolution")
    threshold: float = checked(0.5, help="Perlin values above this are perturbed")
    blend: list[float] = checked(factory=lambda: [0.5, 1.0], check=all_of(range_pair, each(unit_interval)), help="beta range of the noise blend")
    source: str = checked("perlin", one_of("perlin", "self", "mixed"), help="texture blended in: a Perlin field (the paper), the image itself rolled and scaled by a gain, or either per image")
    gain: list[float] = checked(factory=lambda: [0.2, 1.8], check=all_of(range_pair, each(non_negative)), help="gain range of the 'self' texture")
    strokes: float = checked(0.0, unit_interval, help="chance that the perturbed region is a thin bent stroke (scratch, crack) instead of a Perlin blob")
    bands: float = checked(0.0, unit_interval, help="chance that the perturbed region is one side of a wavy line (an uneven or worn band, a broken-off piece); strokes + bands <= 1")
    other: float = checked(
        0.0,
        unit_interval,
        help="chance that the texture blended in is another good training image (a random tile of it: another surface finish, brightness and grain) instead of the source's",
    )

    def kwargs(self, **over) -> dict:
        """Keyword arguments of :func:`tfanomaly.data.perlin.perturb` (``over`` replaces some)."""
        keys = ("probability", "min_scale", "max_scale", "threshold", "source", "strokes", "bands", "other")
        args = {k: getattr(self, k) for k in keys} | {"blend": tuple(self.blend), "gain": tuple(self.gain)}
        return args | over


@dataclass
class CorruptConfig:
    """Patch-transformation corruption (self-supervised autoencoder): a random
    rectangle, elastically deformed and blurred into a soft mask M, blends in a
    texture patch y: x_hat = M*y + (1 - M)*x."""

    enabled: bool = False
    probability: float = checked(1.0, unit_interval, help="chance an image is corrupted")
    size: list[float] = checked(factory=lambda: [0.1, 0.5], check=all_of(range_pair, each(unit_interval)), help="patch side as a fraction of the image side")
    elastic_alpha: float = checked(8.0, non_negative, help="max displacement of the elastic deformation, pixels (0 = off)")
    elastic_sigma: float = checked(4.0, positive, help="smoothness of the displacement field, pixels")
    blur_sigma: float = checked(2.0, non_negative, help="gaussian distortion of the mask edge, pixels")
    texture_dir: str = checked("", help="folder of texture images for y (empty = Perlin textures, available offline)")


@dataclass
class ReducePlateauConfig:
    """Multiply every optimizer's learning rate by ``factor`` when the monitored
    loss has not improved for ``patience`` epochs (0 = off)."""

    patience: int = checked(0, non_negative)
    factor: float = checked(0.5, lambda v: None if 0 < v < 1 else "in (0, 1)")
    min_lr: float = checked(1e-7, non_negative)
    monitor: str = checked("", help="a logged loss (default: val_<first loss> with a validation split, else the first loss)")


@dataclass
class TrainConfig:
    epochs: int = checked(10, positive)
    steps_per_epoch: int = checked(0, non_negative, help="0 = one pass over the data")
    batch_size: int = checked(32, positive)
    learning_rate: float = checked(1.5e-4, positive)
    lr_schedule: str = checked("cosine_restarts", one_of("constant", "cosine_restarts", "linear_decay"))
    first_decay_steps: int = checked(1000, positive, help="cosine restarts: steps of the first cycle")
    restart_m_mul: float = checked(1 / 3, positive, help="each restart's peak relative to the previous one")
    warmup_steps: int = checked(0, non_negative, help="ramp every learning rate linearly from 0 over the first N updates (0 = off)")
    beta_1: float = checked(0.5, unit_interval)
    beta_2: float = checked(0.999, unit_interval)
    grad_accum_steps: int = checked(1, positive)
    jit_compile: bool = checked(False, help="XLA; about 2x slower than tf.function on these CPUs")
    mixed_precision: str = checked("float32", one_of("float32", "mixed_bfloat16"))
    distribute: str = checked("default", one_of("default", "mirrored", "multi_worker"))
    out_dir: str = "runs"
    samples_every: int = checked(1, positive, help="save sample grids every N epochs")
    max_train_patches: int = checked(0, non_negative, help="cap on training patches (0 = all)")
    time_budget_minutes: float = checked(0.0, non_negative, help="stop training after this many minutes (0 = no limit)")
    checkpoint_every: int = checked(0, non_negative, help="also keep checkpoints/step_N.keras every N epochs (learning curves; 0 = off)")
    backup_every_steps: int = checked(100, non_negative, help="back up weights, optimizers and step every N optimizer steps and at epoch ends; `--resume` continues there (0 = epoch ends only)")
    validation_fraction: float = checked(0.0, lambda v: None if 0 <= v < 1 else "in [0, 1)", help="good training images held out for the validation loss")
    monitor_min_spread: float = checked(0.8, non_negative, help="warn when training ends with the monitor's mon_spread below this (parts of the images drawn as a typical value; 0 = off)")
    reduce_on_plateau: ReducePlateauConfig = field(default_factory=ReducePlateauConfig)


@dataclass
class ShiftConfig:
    """Test-time domain shift (``tfanomaly eval --shift``): every operation on
    every test image, seeded."""

    zoom: float = checked(1.3, positive, help="resize by this factor and centre-crop back (1 = off)")
    rotation: float = checked(5.0, non_negative, help="max abs rotation, degrees")
    scale: list[float] = checked(factory=lambda: [1.0, 1.1], check=all_of(range_pair, each(positive)), help="affine zoom range")
    downscale: float = checked(0.5, lambda v: None if 0 < v <= 1 else "in (0, 1]", help="down to this fraction of the resolution and back (1 = off)")
    brightness: float = checked(0.3, non_negative)
    contrast: float = checked(0.3, unit_interval)
    noise_std: float = checked(0.03, non_negative)
    seed: int = 0


@dataclass
class EvalConfig:
    calibrate: str = checked("youden", one_of("youden", "max_accuracy", "zero_fn", "n_sigma", "percentile", "iqr"))
    per_region: bool = False
    calibration_fraction: float = checked(0.3, unit_interval)
    n_sigma: float = checked(3.0, positive)
    percentile: float = checked(99.0, lambda v: None if 0 < v <= 100 else "in (0, 100]", help="percentile of good calibration scores")
    iqr_k: float = checked(1.5, non_negative)
    k_of_n: list[int] = checked(factory=lambda: [7, 10], check=all_of(length(2), each(positive)), help="product defective when >= k of n runs say so")
    product_level: bool = checked(False, help="calibrate each threshold on per-run maxima (where the line decides) instead of per patch")
    knapp_zones: list[float] = checked(
        factory=lambda: [0.3, 0.7],
        check=all_of(range_pair, each(unit_interval)),
        help="a test kit's accept / reject zone bounds on how often a product's defect is visible over its runs (Knapp; the report's grey zone lies between)",
    )
    worst_cases: int = checked(8, non_negative)
    batch_size: int = checked(64, positive)
    shift: ShiftConfig = field(default_factory=ShiftConfig)


@dataclass
class ExportConfig:
    include_png: bool = True


@dataclass
class Config:
    family: str = "grdnet"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    perturb: PerturbConfig = field(default_factory=PerturbConfig)
    corrupt: CorruptConfig = field(default_factory=CorruptConfig)
    model: Any = None
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    source_file: str = field(default="", metadata={"internal": True})


# --------------------------------------------------------------------------
# Conversion of plain data into dataclasses.

_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _describe(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is list:
        (arg,) = typing.get_args(tp)
        return f"a list of {_describe(arg).removeprefix('a ').removeprefix('an ')}s"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return _TYPE_WORDS.get(tp, str(tp))


def _convert(value, tp, where: str, src: str):
    def fail(expect: str):
        raise ConfigError(f"{src}: {where}: expected {expect}, got {value!r}")

    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], where, src)
    if dataclasses.is_dataclass(tp):
        if value is None:
            return tp()
        if not isinstance(value, dict):
            fail("a mapping")
        return from_dict(tp, value, where, src)
    if origin is list:
        (arg,) = typing.get_args(tp)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            fail(_describe(tp))
        return [_convert(v, arg, f"{where}[{i}]", src) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            fail("true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail("an integer")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                fail("a number")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail("a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            fail("a string")
        return value
    return value


def from_dict(cls, data: dict, prefix: str = "", src: str = "<config>"):
    """Build dataclass ``cls`` from ``data``, validating keys, types and ranges."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    for key in data:
        if key not in fields:
            where = f"{prefix}.{key}" if prefix else str(key)
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{src}: {where}: unknown key (known keys here: {known})")
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            continue
        where = f"{prefix}.{name}" if prefix else name
        value = _convert(data[name], hints[name], where, src)
        check = f.metadata.get("check")
        if check is not None and value is not None:
            msg = check(value)
            if msg:
                word = _describe(hints[name])
                sep = ", " if msg.startswith("every item") else " "
                raise ConfigError(f"{src}: {where}: expected {word}{sep}{msg}, got {data[name]!r}")
        kwargs[name] = value
    return cls(**kwargs)


def to_dict(obj) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if not f.metadata.get("internal")}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


# --------------------------------------------------------------------------
# Overrides and loading.


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"--set {text}: expected key.path=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text}: expected key.path=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for part in path[:-1]:
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {text}: {part} is not a section")
            node = nxt
        node[path[-1]] = value
    return raw


def config_from_raw(raw: dict, src: str = "<config>", family: str | None = None) -> Config:

    if not isinstance(raw, dict):
        raise ConfigError(f"{src}: expected a mapping at the top level, got {type(raw).__name__}")
    raw = dict(raw)
    fam = family or raw.get("family", "grdnet")
    if family and raw.get("family") not in (None, family):
        raise ConfigError(f"{src}: family: the command trains {family!r} but the config says {raw['family']!r}")
    if fam not in FAMILIES:
        raise ConfigError(f"{src}: family: expected one of {', '.join(sorted(FAMILIES))}, got {fam!r}")
    raw["family"] = fam
    model_raw = raw.pop("model", None) or {}
    if not isinstance(model_raw, dict):
        raise ConfigError(f"{src}: model: expected a mapping, got {model_raw!r}")
    cfg = from_dict(Config, raw, "", src)
    cfg.model = from_dict(FAMILIES[fam], model_raw, "model", src)
    cfg.source_file = src
    _cross_checks(cfg, src)
    return cfg


def _cross_checks(cfg: Config, src: str) -> None:
    d = cfg.data
    for r in d.rank_images:
        if r > d.frames_per_acquisition:
            raise ConfigError(f"{src}: data.rank_images: expected ranks in [1, {d.frames_per_acquisition}] (data.frames_per_acquisition), got {r}")
    for f in d.train_frames or []:
        if f >= d.frames_per_acquisition:
            raise ConfigError(f"{src}: data.train_frames: expected frame indices < {d.frames_per_acquisition}, got {f}")
    if d.source == "vials" and d.train_frames == [] and not d.rank_images:
        raise ConfigError(f"{src}: data.train_frames: expected at least one frame or one data.rank_images rank to train on, got none")
    for f in d.eval_frames:
        if f >= d.frames_per_acquisition:
            raise ConfigError(f"{src}: data.eval_frames: expected frame indices < {d.frames_per_acquisition}, got {f}")
    for r in d.eval_ranks:
        if r > d.frames_per_acquisition:
            raise ConfigError(f"{src}: data.eval_ranks: expected ranks in [1, {d.frames_per_acquisition}] (data.frames_per_acquisition), got {r}")
    if d.source == "vials" and not d.eval_frames and not d.eval_ranks:
        raise ConfigError(f"{src}: data.eval_frames: expected at least one frame or one data.eval_ranks rank to score, got none")
    if cfg.perturb.strokes + cfg.perturb.bands > 1.0:
        raise ConfigError(f"{src}: perturb.bands: expected strokes + bands <= 1 (strokes is {cfg.perturb.strokes}), got {cfg.perturb.bands}")
    if cfg.perturb.min_scale > cfg.perturb.max_scale:
        raise ConfigError(f"{src}: perturb.min_scale: expected <= perturb.max_scale ({cfg.perturb.max_scale}), got {cfg.perturb.min_scale}")
    h, w = d.image_size
    if cfg.perturb.enabled and (h % (2**cfg.perturb.max_scale) or w % (2**cfg.perturb.max_scale)):
        raise ConfigError(f"{src}: perturb.max_scale: the Perlin grid 2**{cfg.perturb.max_scale} must divide data.image_size {d.image_size}")
    if cfg.perturb.enabled and cfg.corrupt.enabled:
        raise ConfigError(f"{src}: corrupt.enabled: the Perlin perturbation (perturb.enabled) is on too; enable one of them")
    if cfg.train.reduce_on_plateau.patience and cfg.train.lr_schedule != "constant":
        raise ConfigError(f"{src}: train.reduce_on_plateau.patience: reduce-on-plateau scales a constant learning rate, but train.lr_schedule is {cfg.train.lr_schedule!r}; set it to constant")
    if cfg.train.reduce_on_plateau.patience and cfg.train.warmup_steps:
        raise ConfigError(f"{src}: train.warmup_steps: reduce-on-plateau scales a constant learning rate, and a warm-up makes it a schedule; set one of them to 0")
    if cfg.augment.rot90 and h != w:
        raise ConfigError(f"{src}: augment.rot90: a 90-degree rotation needs a square data.image_size, got {d.image_size}")
    if d.split.mode == "balanced" and d.tfrecords:
        raise ConfigError(f"{src}: data.split.mode: balanced splits whole datasets again and cannot read a TFRecord pack (data.tfrecords); use one_class or read the images")
    if d.tiling.enabled:
        if d.source == "vials":
            raise ConfigError(f"{src}: data.tiling.enabled: vial strips are cut into patches by data.strip; tiling is for image sources (folder, mvtec, polygons, rgbd)")
        if d.tfrecords:
            raise ConfigError(f"{src}: data.tiling.enabled: a TFRecord pack (data.tfrecords) holds fixed-size patches; read the images to tile them")
        for st, t in zip(d.tiling.stride, d.image_size):
            if st > t:
                raise ConfigError(f"{src}: data.tiling.stride: expected strides <= the tile (data.image_size {d.image_size}) so tiles cover every pixel, got {d.tiling.stride}")
    check = getattr(cfg.model, "validate", None)
    if check is not None:
        check(cfg, src)


def load_config(path: str | os.PathLike | None, overrides: list[str] | None = None, family: str | None = None) -> Config:
    """Load a YAML config (or defaults when ``path`` is None) and apply overrides."""
    raw: dict = {}
    src = str(path) if path else "<defaults>"
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{src}: no such config file")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"line {mark.line + 1}" if mark else "?"
            raise ConfigError(f"{src}: {where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{src}: expected a mapping at the top level, got {type(raw).__name__}")
    raw = apply_overrides(raw, overrides or [])
    return config_from_raw(raw, src, family)


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    atomic_write_text(path, dump_config(cfg))
