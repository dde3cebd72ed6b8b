"""The tf.data pipeline shared by every family.

    index (sources.py) -> patches (decode, rank, cut, resize; uint8)
        -> [cache | TFRecord shards] -> shuffle -> repeat
        -> augment + perturb (stateless seeds) -> batch -> prefetch

A *patch element* is a dict:
    image  uint8 [h, w, C]      mask  uint8 [h, w, 1] (255 = defect)
    label  int32                product string, run/frame/rank/vial/region int32
Frames of an acquisition have rank 0; a rank image has frame -1 and rank r.
The same elements come out whether they are decoded from images or read back
from the TFRecord shards written by :func:`pack`, so both paths train alike.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfanomaly import tiling as tiling_mod
from tfanomaly.batch import ABNORMAL, IMAGE
from tfanomaly.batch import make as make_batch
from tfanomaly.data import corrupt as corrupt_mod
from tfanomaly.data import perlin as perlin_mod
from tfanomaly.data.augment import augment as augment_fn
from tfanomaly.data.augment import shift as shift_fn
from tfanomaly.data.rank import rank_images
from tfanomaly.data.sources import Index, build_index
from tfanomaly.errors import ConfigError, DataError, UserError
from tfanomaly.files import atomic_write_text

AUTOTUNE = tf.data.AUTOTUNE
ID_KEYS = ("product", "run", "frame", "rank", "vial", "region")
TILE_STREAM = 7919  # fold-in of the random-tile seed
OTHER_STREAM = 7001  # the other images of perturb.other: their shuffle and their tiles
MONITOR_STREAM = 104729  # the training monitor's fixed draws


def _decode(path, channels):
    raw = tf.io.read_file(path)
    img = tf.io.decode_image(raw, channels=channels, expand_animations=False, dtype=tf.uint8)
    return img


def _decode_mask(path, shape_like):
    def load():
        m = tf.io.decode_image(tf.io.read_file(path), channels=1, expand_animations=False, dtype=tf.uint8)
        return tf.where(m > 127, tf.constant(255, tf.uint8), tf.constant(0, tf.uint8))

    def empty():
        return tf.zeros(tf.concat([tf.shape(shape_like)[:2], [1]], 0), tf.uint8)

    return tf.cond(tf.strings.length(path) > 0, load, empty)


def _defect_share_keep(msk, boxes, share: float):
    """Per box, per image of ``msk`` [N, H, W, 1]: does the box hold at least
    ``share`` of its vial's defect-mask pixels (those inside any box of the same
    vial)? None when ``share`` is 0 (every mask pixel counts)."""
    if share <= 0:
        return None
    counts = [tf.reduce_sum(tf.cast(msk[:, y0:y1, x0:x1] > 0, tf.float32), axis=[1, 2, 3]) for _, _, (y0, x0, y1, x1) in boxes]
    totals = {}
    for (v, _, _), c in zip(boxes, counts):
        totals[v] = totals.get(v, 0.0) + c
    return [(c > 0) & (c >= share * totals[v]) for (v, _, _), c in zip(boxes, counts)]


def _resize(img, size, method):
    out = tf.image.resize(tf.cast(img, tf.float32), size, method=method)
    return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)


def _crop(img, box):
    # box [y0, x0, y1, x1]; negative y1 = whole image
    return img[box[0] : box[2], box[1] : box[3]]


def _depth_channel(rgb, depth_u16, rgbd_cfg, surface):
    """RGB-D: remove background (depth > background_depth) and the supporting
    surface (depth >= surface_tolerance * empty-surface depth); depth -> uint8."""
    depth = tf.cast(depth_u16, tf.float32) * rgbd_cfg.depth_scale
    keep = tf.ones_like(depth, tf.bool)
    if rgbd_cfg.background_depth > 0:
        keep &= depth <= rgbd_cfg.background_depth
    if surface is not None:
        keep &= ~((surface > 0) & (depth >= rgbd_cfg.surface_tolerance * surface))
    keep &= depth > 0
    top = rgbd_cfg.background_depth if rgbd_cfg.background_depth > 0 else 65535.0 * rgbd_cfg.depth_scale
    d8 = tf.cast(tf.clip_by_value(tf.round(depth / top * 255.0), 0, 255), tf.uint8)
    k = tf.cast(keep, tf.uint8)
    return tf.concat([rgb * k, d8 * k], axis=-1)


def acquisition_images(d, training: bool) -> tuple[list[int], list[int]]:
    """(frame indices, ranks) of a vial acquisition that become patches, for
    training (``data.train_frames``, all frames when unset, and ``data.rank_images``)
    or for scoring (``data.eval_frames``, ``data.eval_ranks``); ``d`` is the data config."""
    if training:
        return (list(range(d.frames_per_acquisition)) if d.train_frames is None else list(d.train_frames)), list(d.rank_images)
    return list(d.eval_frames), list(d.eval_ranks)


class PatchSource:
    """Loads an :class:`Index` into patch elements, as tf.data."""

    def __init__(self, cfg, index: Index):
        self.cfg = cfg
        self.index = index
        d = cfg.data
        self.size = list(d.image_size)
        self.channels = d.channels
        self.boxes = index.boxes
        self.surface = None
        if d.source == "rgbd" and d.rgbd.surface_frame:
            import cv2

            s = cv2.imread(d.rgbd.surface_frame, cv2.IMREAD_UNCHANGED)
            if s is None:
                raise DataError(f"{d.rgbd.surface_frame}: cannot read the empty-surface depth frame (data.rgbd.surface_frame)")
            self.surface = tf.constant(s.astype(np.float32)[..., None] * d.rgbd.depth_scale)

    # -- counts without decoding --------------------------------------------------------
    def images_per_acquisition(self, training: bool) -> int:
        return sum(map(len, acquisition_images(self.cfg.data, training)))

    def count(self, subset: str, training: bool, labels: tuple[int, ...] = (0, 1)) -> int:
        n = 0
        for it in self.index.subset(subset):
            if it.label not in labels:
                continue
            n += len(self.boxes) * self.images_per_acquisition(training) if it.kind == "acquisition" else 1
        return n

    # -- datasets -----------------------------------------------------------------------
    def dataset(self, subset: str, training: bool, labels: tuple[int, ...] = (0, 1)) -> tf.data.Dataset:
        items = [it for it in self.index.subset(subset) if it.label in labels]
        if not items:
            raise DataError(f"{self.cfg.data.root}: no {subset} samples with labels {labels}")
        kind = items[0].kind
        if kind == "acquisition":
            return self._acquisitions(items, training)
        return self._images(items)

    def _images(self, items) -> tf.data.Dataset:
        boxes = [it.box if it.box is not None else [0, 0, -1, -1] for it in items]
        table = {
            "path": [it.paths[0] for it in items],
            "path2": [it.paths[1] if len(it.paths) > 1 else "" for it in items],
            "mask": [it.masks[0] if it.masks else "" for it in items],
            "label": np.array([it.label for it in items], np.int32),
            "product": [it.product for it in items],
            "box": np.array(boxes, np.int32),
        }
        size, channels, rgbd = self.size, self.channels, self.cfg.data.source == "rgbd"
        rgbd_cfg, surface = self.cfg.data.rgbd, self.surface
        interp = self.cfg.data.interpolation
        tiling = self.cfg.data.tiling

        def load(e):
            if rgbd:
                rgb = _decode(e["path"], 3)
                depth = tf.io.decode_png(tf.io.read_file(e["path2"]), channels=1, dtype=tf.uint16)
                img = _depth_channel(rgb, depth, rgbd_cfg, surface)
            else:
                img = _decode(e["path"], channels)
            mask = _decode_mask(e["mask"], img)
            box = e["box"]
            full = box[2] < 0
            y1 = tf.where(full, tf.shape(img)[0], box[2])
            x1 = tf.where(full, tf.shape(img)[1], box[3])
            b = tf.stack([box[0], box[1], y1, x1])
            img, mask = _crop(img, b), _crop(mask, b)
            if tiling.enabled:  # whole image at a fixed pixel scale: the aspect is kept, tiles are cut later
                if tiling.scale != 1.0:
                    hw = tf.cast(tf.round(tf.cast(tf.shape(img)[:2], tf.float32) * tiling.scale), tf.int32)
                    img, mask = _resize(img, hw, interp), _resize(mask, hw, "nearest")
                img.set_shape([None, None, channels])
                mask.set_shape([None, None, 1])
            else:
                img = _resize(img, size, interp)
                mask = _resize(mask, size, "nearest")
                img.set_shape(size + [channels])
                mask.set_shape(size + [1])
            zero = tf.constant(0, tf.int32)
            return {
                "image": img,
                "mask": mask,
                "label": e["label"],
                "product": e["product"],
                "run": zero,
                "frame": zero,
                "rank": zero,
                "vial": zero,
                "region": zero,
            }

        return tf.data.Dataset.from_tensor_slices(table).map(load, num_parallel_calls=AUTOTUNE, deterministic=True)

    def _acquisitions(self, items, training: bool) -> tf.data.Dataset:
        d = self.cfg.data
        a = d.frames_per_acquisition
        frames_used, ranks = acquisition_images(d, training)
        size, channels, boxes = self.size, self.channels, self.boxes
        interp = d.interpolation
        share = float(d.strip.min_defect_share)
        table = {
            "paths": [it.paths for it in items],
            "masks": [it.masks for it in items],
            "product": [it.product for it in items],
            "run": np.array([it.run for it in items], np.int32),
        }
        n_img = len(frames_used) + len(ranks)
        frame_ids = tf.constant(frames_used + [-1] * len(ranks), tf.int32)
        rank_ids = tf.constant([0] * len(frames_used) + ranks, tf.int32)

        def load(e):
            frames = tf.stack([_decode(e["paths"][i], channels) for i in range(a)])  # [A, H, W, C]
            # each mask file is decoded once: the frames' own, plus (for rank images) all of them
            mask_ids = list(range(a)) if ranks else frames_used
            decoded = {i: _decode_mask(e["masks"][i], frames[0]) for i in mask_ids}
            parts = [tf.gather(frames, frames_used)] if frames_used else []
            mparts = [tf.stack([decoded[i] for i in frames_used])] if frames_used else []
            if ranks:
                parts.append(rank_images(frames, ranks))
                union = tf.reduce_max(tf.stack([decoded[i] for i in range(a)]), axis=0, keepdims=True)
                mparts.append(tf.repeat(union, len(ranks), axis=0))
            imgs = tf.concat(parts, 0)  # [n_img, H, W, C]
            msk = tf.concat(mparts, 0)
            out_i, out_m = [], []
            keep = _defect_share_keep(msk, boxes, share)
            for b, (_, _, (y0, x0, y1, x1)) in enumerate(boxes):
                out_i.append(_resize(imgs[:, y0:y1, x0:x1], size, interp))
                m = msk[:, y0:y1, x0:x1]
                if share > 0:  # a sliver of a defect that lies in the neighbouring region: not this patch's
                    m = m * tf.cast(keep[b], m.dtype)[:, None, None, None]
                out_m.append(_resize(m, size, "nearest"))
            pi = tf.reshape(tf.stack(out_i), [-1] + size + [channels])  # box-major
            pm = tf.reshape(tf.stack(out_m), [-1] + size + [1])
            nb = len(boxes)
            label = tf.cast(tf.reduce_max(pm, axis=[1, 2, 3]) > 0, tf.int32)
            return {
                "image": pi,
                "mask": pm,
                "label": label,
                "product": tf.fill([nb * n_img], e["product"]),
                "run": tf.fill([nb * n_img], e["run"]),
                "frame": tf.tile(frame_ids, [nb]),
                "rank": tf.tile(rank_ids, [nb]),
                "vial": tf.repeat(tf.constant([b[0] for b in boxes], tf.int32), n_img),
                "region": tf.repeat(tf.constant([b[1] for b in boxes], tf.int32), n_img),
            }

        ds = tf.data.Dataset.from_tensor_slices(table)
        return ds.map(load, num_parallel_calls=AUTOTUNE, deterministic=True).unbatch()


# --------------------------------------------------------------------------
# TFRecord shards


def _bytes(v):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))


def _int(v):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v)]))


FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "mask": tf.io.FixedLenFeature([], tf.string),
    "label": tf.io.FixedLenFeature([], tf.int64),
    "product": tf.io.FixedLenFeature([], tf.string),
    **{k: tf.io.FixedLenFeature([], tf.int64) for k in ID_KEYS[1:]},
}


def serialize_patch(e: dict) -> bytes:
    """One patch of a pack as a serialized tf.train.Example (``FEATURES``): PNG bytes of ``image`` and
    ``mask``, ``label``, ``product`` (bytes) and the integer ids."""
    feature = {"image": _bytes(e["image"]), "mask": _bytes(e["mask"]), "label": _int(e["label"]), "product": _bytes(e["product"])}
    feature.update({k: _int(e[k]) for k in ID_KEYS[1:]})
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def shard_bounds(n: int, shard_size: int, workers: int = 1) -> list[int]:
    """Boundaries of the shards of ``n`` patches (shard k holds patches [bounds[k], bounds[k + 1])):
    ceil(n / shard_size) shards, rounded up to a multiple of ``workers`` so that every worker of a job
    reads as many shards as the next, with sizes that differ by at most one patch, and none empty."""
    if n == 0:
        return [0]
    shards = -(-max(1, -(-n // shard_size)) // workers) * workers
    shards = min(shards, (n // workers) * workers)  # (n >= workers: checked by the caller)
    return [(k * n) // shards for k in range(shards + 1)]


def pack(cfg, out_dir: str | os.PathLike, shard_size: int = 4096, progress=None, workers: int = 1) -> dict:
    """Write the train (training layout) and test (eval layout) patches as
    TFRecord shards with PNG-encoded patches. The training shards are a multiple
    of ``workers`` in number and of equal size (within one patch), so that a
    multi-worker job reads each shard with one worker only (:func:`read_pack`).
    Each shard is written under a temporary name and renamed, and index.json
    last, so a crash never leaves a half-written pack that looks complete."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    index = build_index(cfg)
    src = PatchSource(cfg, index)
    summary = {
        "image_size": list(cfg.data.image_size),
        "channels": cfg.data.channels,
        "source": cfg.data.source,
        "rank_images": list(cfg.data.rank_images),
        "train_frames": cfg.data.train_frames,
        "eval_frames": list(cfg.data.eval_frames),
        "eval_ranks": list(cfg.data.eval_ranks),
        "workers": workers,
        "subsets": {},
    }
    for subset, training in (("train", True), ("test", False)):
        if not index.subset(subset):
            continue
        labels = (0,) if training else (0, 1)
        expected = src.count(subset, training, labels)
        if training and expected < workers:
            raise UserError(f"{out}: {expected} training patches cannot fill a shard for each of {workers} workers (--workers)")
        bounds = shard_bounds(expected, shard_size, workers if training else 1)
        ds = src.dataset(subset, training, labels=labels)
        ds = ds.map(
            lambda e: {**e, "image": tf.io.encode_png(e["image"]), "mask": tf.io.encode_png(e["mask"])},
            num_parallel_calls=AUTOTUNE,
            deterministic=True,
        )
        n, shards = write_shards(out, subset, (serialize_patch(e) for e in ds.as_numpy_iterator()), bounds, progress)
        if n != expected:
            raise DataError(f"{out}: wrote {n} {subset} patches, expected {expected}")
        summary["subsets"][subset] = {"patches": n, "shards": shards}
    atomic_write_text(out / "index.json", json.dumps(summary, indent=2))
    return summary


def write_shards(out: Path, subset: str, records, bounds: list[int], progress=None) -> tuple[int, int]:
    """Write serialized patches (``records``, bytes) as the shard files of a pack's ``subset``: shard k
    holds records bounds[k] .. bounds[k + 1] - 1 (:func:`shard_bounds`). Every shard is written under a
    temporary name and renamed once all are written. Returns (records written, shard files)."""
    n, shard, writer, tmp_names = 0, 0, None, []
    for rec in records:
        if shard < len(bounds) - 1 and n == bounds[shard]:
            if writer is not None:
                writer.close()
            tmp = out / f".{subset}-{shard:05d}.tmp"
            tmp_names.append(tmp)
            writer = tf.io.TFRecordWriter(str(tmp))
            shard += 1
        writer.write(rec)
        n += 1
        if progress:
            progress(subset, n)
    if writer is not None:
        writer.close()
    for i, tmp in enumerate(tmp_names):
        os.replace(tmp, out / f"{subset}-{i:05d}-of-{len(tmp_names):05d}.tfrecord")
    return n, len(tmp_names)


def read_pack_index(cfg) -> dict:
    folder = Path(cfg.data.tfrecords)
    f = folder / "index.json"
    if not f.exists():
        raise DataError(f"{folder}: no index.json: not a complete pack (data.tfrecords); run `tfanomaly data pack`")
    info = json.loads(f.read_text())
    for key, want in (("image_size", list(cfg.data.image_size)), ("channels", cfg.data.channels)):
        if info[key] != want:
            raise ConfigError(f"{cfg.source_file}: data.{key}: the pack in {folder} was written with {info[key]}, the config asks {want}")
    return info


def pack_files(cfg, subset: str, shard: tuple[int, int] | None = None) -> list[str]:
    """The shard files of a pack's subset, sorted; ``shard`` = (n, i): only the files i, i + n,
    i + 2n, ... (input pipeline i of n: a worker of a multi-worker job reads its own files, and no other
    worker reads them)."""
    folder = Path(cfg.data.tfrecords)
    files = sorted(str(p) for p in folder.glob(f"{subset}-*.tfrecord"))
    if not files:
        raise DataError(f"{folder}: no {subset} shards")
    if shard is not None and shard[0] > 1:
        n, i = shard
        if len(files) < n:
            raise DataError(f"{folder}: {len(files)} {subset} shards for {n} workers: each worker reads whole shards; repack with `tfanomaly data pack --workers {n}` (data.tfrecords)")
        files = files[i::n]
    return files


def read_pack(cfg, subset: str, shuffle: bool, seed: int = 0, shard: tuple[int, int] | None = None) -> tf.data.Dataset:
    """The patches of a pack's subset (of this input pipeline's files: :func:`pack_files`)."""
    files = pack_files(cfg, subset, shard)
    size, channels = list(cfg.data.image_size), cfg.data.channels
    files_ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
        files_ds = files_ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    # Training interleaves shards (bounded memory, mixed order); evaluation reads them in order.
    cycle = min(4, len(files)) if shuffle else 1
    ds = files_ds.interleave(tf.data.TFRecordDataset, cycle_length=cycle, num_parallel_calls=AUTOTUNE, deterministic=True)

    def parse(raw):
        e = tf.io.parse_single_example(raw, FEATURES)
        img = tf.io.decode_png(e["image"], channels=channels)
        mask = tf.io.decode_png(e["mask"], channels=1)
        img.set_shape(size + [channels])
        mask.set_shape(size + [1])
        out = {"image": img, "mask": mask, "label": tf.cast(e["label"], tf.int32), "product": e["product"]}
        out.update({k: tf.cast(e[k], tf.int32) for k in ID_KEYS[1:]})
        return out

    return ds.map(parse, num_parallel_calls=AUTOTUNE, deterministic=True)


# --------------------------------------------------------------------------
# Training and evaluation datasets


def to_float(image):
    return tf.cast(image, tf.float32) / 255.0


def training_map(cfg, textures=None, stream: int = 0):
    """Per-element training transform: uint8 patch -> augmented, perturbed floats.

    ``perturbed`` is the network input: the Perlin perturbation X_n (GRD-Net),
    the patch-transformation corruption x_hat (self-supervised autoencoder), or
    the image itself; ``perturb_mask`` is M (binary for Perlin, soft for the
    corruption) and ``noise`` the blended-in signal. ``stream`` > 0 draws an
    independent sequence of random transforms (a second training domain).
    """
    aug, pert, cor = cfg.augment, cfg.perturb, cfg.corrupt
    base = cfg.seed
    tile = list(cfg.data.image_size) if cfg.data.tiling.enabled else None

    def fn(counter, e):
        seed = tf.stack([tf.cast(base, tf.int64), counter])
        if stream:
            seed = tf.random.experimental.stateless_fold_in(seed, stream)
        s = tf.random.experimental.stateless_split(seed, num=2)
        image = to_float(e["image"])
        mask = to_float(e["mask"])
        if tile is not None:  # a random tile of the whole image (its own seed: untiled runs draw as before)
            image, mask = tiling_mod.random_tile(image, mask, tile, tf.random.experimental.stateless_fold_in(seed, TILE_STREAM), cfg.data.tiling.stride, cfg.data.tiling.grid_fraction)
            image = tf.ensure_shape(image, tile + [cfg.data.channels])
            mask = tf.ensure_shape(mask, tile + [1])
        image, mask = augment_fn(image, mask, s[0], aug)
        if pert.enabled:
            other = None
            if pert.other > 0:  # another good image's random tile (or patch), augmented like this one
                other = to_float(e["other"])
                oseed = tf.random.experimental.stateless_fold_in(seed, OTHER_STREAM)
                if tile is not None:
                    other, _ = tiling_mod.random_tile(other, tf.zeros_like(other[..., :1]), tile, oseed, cfg.data.tiling.stride, cfg.data.tiling.grid_fraction)
                    other = tf.ensure_shape(other, tile + [cfg.data.channels])
                other, _ = augment_fn(other, tf.zeros_like(other[..., :1]), tf.random.experimental.stateless_fold_in(oseed, 1), aug)
            xn, m, n = perlin_mod.perturb(
                image,
                s[1],
                **pert.kwargs(other_image=other),
            )
        elif cor.enabled:
            xn, m, n = corrupt_mod.corrupt(
                image,
                s[1],
                textures=textures,
                probability=cor.probability,
                size=tuple(cor.size),
                elastic_alpha=cor.elastic_alpha,
                elastic_sigma=cor.elastic_sigma,
                blur_sigma=cor.blur_sigma,
            )
        else:
            xn, m, n = image, tf.zeros_like(mask), tf.zeros_like(image)
        return make_batch(image, xn, m, n)

    return fn


def load_textures(cfg):
    """The texture images of ``corrupt.texture_dir`` as [N, H, W, C] floats in
    [0, 1] at the patch size (None when no folder is configured)."""
    folder = cfg.corrupt.texture_dir
    if not cfg.corrupt.enabled or not folder:
        return None
    import cv2

    from tfanomaly.data.sources import IMAGE_EXTENSIONS

    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"{cfg.source_file}: corrupt.texture_dir: expected a folder of images, got {folder!r} (not found)")
    h, w = cfg.data.image_size
    c = cfg.data.channels
    out = []
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        img = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE if c == 1 else cv2.IMREAD_COLOR)
        if img is None:
            raise DataError(f"{p}: not a decodable image (corrupt.texture_dir)")
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        img = img[..., None] if c == 1 else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        if c == 4:
            img = np.concatenate([img, img.mean(-1, keepdims=True).astype(np.uint8)], -1)
        out.append(img.astype(np.float32) / 255.0)
    if not out:
        raise DataError(f"{root}: no images in this folder (corrupt.texture_dir)")
    return tf.constant(np.stack(out))


def hold_out_validation(index: Index, fraction: float, seed: int) -> None:
    """Move a seeded ``fraction`` of the good training products (all their
    patches) to the subset "val"; at least one product stays in training."""
    products = sorted({it.product for it in index.subset("train") if it.label == 0})  # good ones: validation is clean
    n_val = min(len(products) - 1, max(1, int(round(fraction * len(products)))))
    if n_val < 1:
        return
    rng = np.random.default_rng(2000 + seed)
    val = {products[i] for i in rng.permutation(len(products))[:n_val]}
    for it in index.items:
        if it.subset == "train" and it.product in val:
            it.subset = "val"


SHARD_STREAM = 100  # random-transform stream of input pipeline i of a file-sharded pack: 100 + i


class Data:
    """Everything a training or evaluation run needs from the data config."""

    def __init__(self, cfg, index: Index | None = None):
        self.cfg = cfg
        if cfg.data.tfrecords:
            self.pack_info = read_pack_index(cfg)
            self.index = None
            self.source = None
        else:
            self.pack_info = None
            self.index = index or build_index(cfg)
            if cfg.train.validation_fraction > 0:
                hold_out_validation(self.index, cfg.train.validation_fraction, cfg.seed)
            self.source = PatchSource(cfg, self.index)

    def count(self, subset: str, training: bool, labels: tuple[int, ...] | None = None) -> int:
        """Patches of a subset (training: good only, unless ``labels`` says)."""
        if self.pack_info is not None:  # packs hold good training patches only
            return self.pack_info["subsets"].get(subset, {}).get("patches", 0)
        labels = labels or ((0,) if training else (0, 1))
        return self.source.count(subset, training, labels)

    def patches(self, subset: str, training: bool, shuffle: bool = False, labels: tuple[int, ...] | None = None, shard: tuple[int, int] | None = None) -> tf.data.Dataset:
        if self.pack_info is not None:
            return read_pack(self.cfg, subset, shuffle, self.cfg.seed, shard)
        labels = labels or ((0,) if training else (0, 1))
        return self.source.dataset(subset, training, labels)

    def _train_stream(self, label: int, stream: int, textures, shard: tuple[int, int] | None = None) -> tf.data.Dataset:
        cfg = self.cfg
        ds = self.patches("train", training=True, shuffle=True, labels=(label,), shard=shard)
        if cfg.train.max_train_patches:
            ds = ds.take(cfg.train.max_train_patches)
        ds = ds.map(lambda e: {"image": e["image"], "mask": e["mask"]})
        if cfg.data.cache and self.pack_info is None:
            ds = ds.cache()
        ds = ds.shuffle(cfg.data.shuffle_buffer, seed=cfg.seed + stream, reshuffle_each_iteration=True).repeat()
        if cfg.perturb.enabled and cfg.perturb.other > 0:  # a second, independently shuffled pass: the other images
            others = self.patches("train", training=True, shuffle=True, labels=(0,), shard=shard).map(lambda e: e["image"])
            if cfg.data.cache and self.pack_info is None:
                others = others.cache()
            others = others.shuffle(cfg.data.shuffle_buffer, seed=cfg.seed + stream + OTHER_STREAM, reshuffle_each_iteration=True).repeat()
            ds = tf.data.Dataset.zip(ds, others).map(lambda e, o: {**e, "other": o})
        return ds.enumerate().map(training_map(cfg, textures, stream), num_parallel_calls=AUTOTUNE, deterministic=True)

    def train_dataset(self, batch_size: int | None = None, two_domain: bool = False, shard: tuple[int, int] | None = None) -> tf.data.Dataset:
        """Infinite, shuffled, augmented and perturbed batches of good patches.

        ``two_domain`` (CycleGAN-AD): unpaired batches of both classes of the
        training split, ``image`` good (domain Y) and ``abnormal`` defective
        (domain X), each shuffled and augmented on its own. ``shard`` = (n, i),
        with a pack only: input pipeline i of n reads its own shards of the pack
        and draws its own random transforms (stream SHARD_STREAM + i)."""
        bs = batch_size or self.cfg.train.batch_size
        textures = load_textures(self.cfg)  # read once, shared by both streams
        if shard is not None and shard[0] > 1:
            if self.pack_info is None or two_domain:
                raise ConfigError(f"{self.cfg.source_file}: data.tfrecords: sharding the input by file needs a pack (tfanomaly data pack) of a family that trains on good patches only")
            return self._train_stream(0, SHARD_STREAM + shard[1], textures, shard).batch(bs, drop_remainder=True).prefetch(AUTOTUNE)
        ds = self._train_stream(0, 0, textures)
        if two_domain:
            if self.pack_info is not None:
                raise ConfigError(f"{self.cfg.source_file}: data.tfrecords: a pack holds good training patches only; this family trains on defects too")
            if not self.count("train", True, (1,)):
                raise DataError(
                    f"{self.cfg.data.root}: no defective training samples: this family trains on good and defective images; set data.split.mode: balanced (or add defects to the training split)"
                )
            bad = self._train_stream(1, 1, textures)
            ds = tf.data.Dataset.zip(ds, bad).map(lambda g, b: {**g, ABNORMAL: b[IMAGE]})
        return ds.batch(bs, drop_remainder=True).prefetch(AUTOTUNE)

    def train_patches(self, two_domain: bool = False) -> int:
        """Training patches per epoch (two domains: the larger one, as CycleGAN)."""
        n = self.count("train", training=True)
        if two_domain:
            n = max(n, self.count("train", True, (1,)))
        if self.cfg.train.max_train_patches:
            n = min(n, self.cfg.train.max_train_patches)
        return n

    def validation_dataset(self, batch_size: int | None = None):
        """Deterministic batches of the held-out good images (None without a validation split)."""
        if self.cfg.train.validation_fraction <= 0:
            return None
        if self.pack_info is not None:
            raise ConfigError(f"{self.cfg.source_file}: train.validation_fraction: not available with data.tfrecords; set it to 0")
        bs = batch_size or self.cfg.train.batch_size
        ds = self.source.dataset("val", training=True, labels=(0,))
        tile = list(self.cfg.data.image_size) if self.cfg.data.tiling.enabled else None
        cfg_t = self.cfg.data.tiling
        seed = self.cfg.seed

        def clean(i, e):  # no augmentation, no perturbation: the validation loss of the plain images
            x = to_float(e["image"])
            if tile is not None:  # one seeded tile per image, the same every epoch
                x, _ = tiling_mod.random_tile(x, x[..., :1], tile, tf.stack([tf.constant(seed + 3000, tf.int64), i]), cfg_t.stride, cfg_t.grid_fraction)
                x = tf.ensure_shape(x, tile + [self.cfg.data.channels])
            return make_batch(x)

        ds = ds.enumerate().map(clean, num_parallel_calls=AUTOTUNE)
        return ds.batch(bs).cache().prefetch(AUTOTUNE)

    def monitor_batch(self, n: int = 32) -> dict:
        """A fixed batch of up to ``n`` good images under the training
        transform (augmentation and perturbation with fixed seeds), from the
        validation split, or from the training split without one: what
        :class:`tfanomaly.train.TrainingMonitor` measures every epoch."""
        has_val = self.cfg.train.validation_fraction > 0 and self.pack_info is None
        ds = self.source.dataset("val", True, (0,)) if has_val else self.patches("train", True, labels=(0,))
        ds = ds.take(n).map(lambda e: {"image": e["image"], "mask": e["mask"]})
        if self.cfg.perturb.enabled and self.cfg.perturb.other > 0:  # each image's other: the next one of the batch
            others = ds.skip(1).concatenate(ds.take(1)).map(lambda e: e["image"])
            ds = tf.data.Dataset.zip(ds, others).map(lambda e, o: {**e, "other": o})
        ds = ds.enumerate().map(training_map(self.cfg, load_textures(self.cfg), stream=MONITOR_STREAM))
        return next(iter(ds.batch(n)))

    def eval_dataset(self, subset: str = "test", batch_size: int | None = None, shifted: bool = False) -> tf.data.Dataset:
        """Deterministic batches of float images with masks, labels and ids
        (with ``shifted``, under the seeded domain shift of ``eval.shift``)."""
        bs = batch_size or self.cfg.eval.batch_size
        ds = self.patches(subset, training=False)
        ds = ds.map(lambda e: {**e, "image": to_float(e["image"]), "mask": to_float(e["mask"])}, num_parallel_calls=AUTOTUNE)
        if shifted:
            sc = self.cfg.eval.shift

            def apply(i, e):
                img, mask = shift_fn(e["image"], e["mask"], tf.stack([tf.constant(sc.seed, tf.int64), i]), sc)
                return {**e, "image": img, "mask": tf.cast(mask > 0.5, tf.float32)}

            ds = ds.enumerate().map(apply, num_parallel_calls=AUTOTUNE, deterministic=True)
        if self.cfg.data.tiling.enabled:  # whole images of different sizes: one per batch, tiled by the scorer
            bs = 1
        return ds.batch(bs).prefetch(AUTOTUNE)
