"""Data sources: turn a folder on disk into a validated index of items.

An *item* is what one tf.data element is loaded from: one image (folder,
MVTec, polygon patch), one RGB-D pair, or one vial-strip acquisition of A
frames. Indexing is pure Python (no TensorFlow): it parses names, splits
train/test with a seed, and (``data.validate``) decodes every file once so
that a corrupt file, a wrong size or a mismatched mask is reported by name
before training starts. With ``data.on_error: skip`` bad files are counted
and logged instead.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from tfanomaly.errors import ConfigError, DataError
from tfanomaly.progress import track

log = logging.getLogger("tfanomaly.data")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass
class Item:
    kind: str  # "image" | "rgbd" | "acquisition"
    paths: list[str]  # image; [rgb, depth]; or the A frames of an acquisition
    masks: list[str]  # mask per path ("" = no mask: all good)
    label: int  # 0 good, 1 defective (for acquisitions: the product's label)
    subset: str  # "train" | "test"
    product: str = ""
    run: int = 0
    frame: int = 0
    box: list[int] | None = None  # [y0, x0, y1, x1] crop before resizing, None = whole image
    extra: dict = field(default_factory=dict)


@dataclass
class Index:
    items: list[Item]
    skipped: list[tuple[str, str]]  # (file, reason)
    source: str
    boxes: list[tuple[int, int, list[int]]] = field(default_factory=list)  # vials: (vial, region, [y0,x0,y1,x1])

    def subset(self, name: str) -> list[Item]:
        return [it for it in self.items if it.subset == name]


# --------------------------------------------------------------------------
# File checks


class _Checker:
    """Decodes files once, caches shapes, and reports or skips bad ones."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.skipped: list[tuple[str, str]] = []
        self.shapes: dict[str, tuple] = {}

    def fail(self, path, reason):
        if self.cfg.data.on_error == "skip":
            log.warning("skipping %s: %s", path, reason)
            self.skipped.append((str(path), reason))
            return False
        raise DataError(f"{path}: {reason}")

    def read(self, path, flags=cv2.IMREAD_UNCHANGED):
        p = Path(path)
        try:
            raw = p.read_bytes()
        except OSError as e:
            return None, f"cannot read ({e.strerror})"
        if not raw:
            return None, "empty file"
        if p.suffix.lower() in (".jpg", ".jpeg") and not raw.rstrip(b"\x00").endswith(b"\xff\xd9"):
            return None, "truncated JPEG (no end-of-image marker)"
        img = cv2.imdecode(np.frombuffer(raw, np.uint8), flags)
        if img is None:
            return None, "not a decodable image (corrupt or truncated)"
        return img, None

    def image(self, path, channels, depth=False) -> bool:
        if not self.cfg.data.validate:
            return True
        img, err = self.read(path)
        if err:
            return self.fail(path, err)
        if depth:
            if img.ndim != 2:
                return self.fail(path, f"expected a 1-channel depth image, got {img.shape[2]} channels")
        else:
            c = 1 if img.ndim == 2 else img.shape[2]
            if c == 4:
                return self.fail(path, f"expected {channels} channel(s), got 4 (RGBA); save without alpha")
            if c == 3 and channels == 1 and not (np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 1], img[..., 2])):
                return self.fail(path, "expected a grayscale image (data.channels: 1), got a colour image")
            if img.dtype != np.uint8:
                return self.fail(path, f"expected an 8-bit image, got {img.dtype}")
        self.shapes[str(path)] = img.shape[:2]
        return True

    def mask(self, mask_path, image_path) -> bool:
        if not mask_path or not self.cfg.data.validate:
            return True
        m, err = self.read(mask_path, cv2.IMREAD_GRAYSCALE)
        if err:
            return self.fail(mask_path, err)
        shape = self.shapes.get(str(image_path))
        if shape is not None and m.shape[:2] != shape:
            return self.fail(mask_path, f"mask size {m.shape[1]}x{m.shape[0]} differs from its image {image_path} ({shape[1]}x{shape[0]})")
        return True


def _list_images(folder: Path, mask_suffix: str) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    # A mask sits beside its image as <stem><mask_suffix>: it is not an image of its own.
    mask_names = {p.stem + mask_suffix for p in files if p.name != p.stem + mask_suffix}
    images = [p for p in files if p.name not in mask_names and not p.stem.endswith("_mask")]
    if not images:
        raise DataError(f"{folder}: no images ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
    return images


def _rel_id(path: Path, root: Path) -> str:
    """A sample id unique within the dataset: its path below the root, without suffix."""
    try:
        return str(path.relative_to(root).with_suffix(""))
    except ValueError:
        return str(path.with_suffix(""))


def split_good(names: list, fraction: float, seed: int) -> tuple[list, list]:
    """The evaluation protocol's split: sort, shuffle with default_rng(seed), first fraction trains."""
    order = sorted(names)
    perm = np.random.default_rng(seed).permutation(len(order))
    shuffled = [order[i] for i in perm]
    n_train = int(fraction * len(order) + 1e-9)  # floor: 80% of 952 is 761, as the protocol says
    return shuffled[:n_train], shuffled[n_train:]


def _mask_for(image: Path, cfg, root: Path) -> str:
    d = cfg.data
    if d.mask_dir:
        cand = root / d.mask_dir / image.parent.name / (image.stem + d.mask_suffix)
        if not cand.exists():
            cand = root / d.mask_dir / (image.stem + d.mask_suffix)
    else:
        cand = image.with_name(image.stem + d.mask_suffix)
    if cand == image:
        return ""
    return str(cand) if cand.exists() else ""


# --------------------------------------------------------------------------
# Sources


def index_folder(cfg, kind="image") -> Index:
    d = cfg.data
    root = Path(d.root)
    chk = _Checker(cfg)
    if not d.good_dirs:
        raise ConfigError(f"{cfg.source_file}: data.good_dirs: expected at least one folder of good images")
    good = [p for g in d.good_dirs for p in _list_images(root / g, d.mask_suffix if kind == "image" else d.rgbd.depth_suffix)]
    bad = [p for g in d.defect_dirs for p in _list_images(root / g, d.mask_suffix if kind == "image" else d.rgbd.depth_suffix)]
    train, test = split_good([str(p) for p in good], d.split.train_fraction, d.split.seed)
    items = []
    entries = [(p, 0, "train") for p in train] + [(p, 0, "test") for p in test] + [(str(p), 1, "test") for p in bad]
    for path, label, subset in track(entries, "indexing", len(entries)):
        path = Path(path)
        if kind == "rgbd":
            depth = path.with_name(path.stem + d.rgbd.depth_suffix)
            if path.name.endswith(d.rgbd.depth_suffix):
                continue
            if not depth.exists():
                chk.fail(path, f"no depth file {depth.name} beside it")
                continue
            if not (chk.image(path, 3) and chk.image(depth, 1, depth=True)):
                continue
            mask = _mask_for(path, cfg, root) if label else ""
            if not chk.mask(mask, path):
                continue
            items.append(Item("rgbd", [str(path), str(depth)], [mask], label, subset, product=_rel_id(path, root)))
            continue
        if not chk.image(path, d.channels):
            continue
        mask = _mask_for(path, cfg, root)
        if not chk.mask(mask, path):
            continue
        items.append(Item("image", [str(path)], [mask], label, subset, product=_rel_id(path, root)))
    return Index(items, chk.skipped, d.source)


def index_mvtec(cfg) -> Index:
    d = cfg.data
    root = Path(d.root)
    chk = _Checker(cfg)
    for sub in ("train/good", "test"):
        if not (root / sub).is_dir():
            raise DataError(f"{root}: not an MVTec-AD layout (missing {sub}/)")
    entries = [(p, 0, "train", "") for p in _list_images(root / "train" / "good", "_mask.png")]
    for defect in sorted(p for p in (root / "test").iterdir() if p.is_dir()):
        label = 0 if defect.name == "good" else 1
        for p in _list_images(defect, "_mask.png"):
            mask = root / "ground_truth" / defect.name / f"{p.stem}_mask.png"
            if label and not mask.exists():
                mask = ""
            entries.append((p, label, "test", str(mask) if label else ""))
    items = []
    for path, label, subset, mask in track(entries, "indexing", len(entries)):
        if chk.image(path, d.channels) and chk.mask(mask, path):
            items.append(Item("image", [str(path)], [mask], label, subset, product=f"{path.parent.name}/{path.stem}"))
    return Index(items, chk.skipped, d.source)


def strip_boxes(cfg) -> list[tuple[int, int, list[int]]]:
    s = cfg.data.strip
    if len(s.region_names) != len(s.region_y):
        raise ConfigError(f"{cfg.source_file}: data.strip.region_names: expected {len(s.region_y)} names (one per data.strip.region_y), got {len(s.region_names)}")
    return [(v, r, [y0, x0, y1, x1]) for v, (x0, x1) in enumerate(s.vial_x) for r, (y0, y1) in enumerate(s.region_y)]


def parse_name(regex: re.Pattern, name: str) -> dict | None:
    m = regex.search(name)
    return m.groupdict() if m else None


def compile_regex(cfg) -> re.Pattern:
    try:
        rx = re.compile(cfg.data.filename_regex)
    except re.error as e:
        raise ConfigError(f"{cfg.source_file}: data.filename_regex: not a valid regular expression ({e})") from None
    missing = {"product", "run", "frame"} - set(rx.groupindex)
    if missing:
        raise ConfigError(f"{cfg.source_file}: data.filename_regex: expected named groups product, run and frame, missing {', '.join(sorted(missing))}")
    return rx


def _product_table(root: Path) -> tuple[dict[str, int], dict[str, str]]:
    """``products.csv``: {product: label} and, where the optional ``subset``
    column is filled, {product: train | test} (a test kit sets every product
    to ``test``)."""
    f = root / "products.csv"
    if not f.exists():
        return {}, {}
    labels, subsets = {}, {}
    with f.open() as fh:
        for i, row in enumerate(csv.DictReader(fh), start=2):
            try:
                labels[row["product"]] = int(row["label"])
            except (KeyError, ValueError):
                raise DataError(f"{f}: line {i}: expected columns product,label with label 0 or 1") from None
            sub = (row.get("subset") or "").strip()
            if sub:
                if sub not in ("train", "test"):
                    raise DataError(f"{f}: line {i}: column subset: expected train, test or empty, got {sub!r}")
                if sub == "train" and labels[row["product"]] == 1:
                    raise DataError(f"{f}: line {i}: product {row['product']} is defective (label 1) but its subset is train: only good products train")
                subsets[row["product"]] = sub
    return labels, subsets


def index_vials(cfg) -> Index:
    d = cfg.data
    root = Path(d.root)
    chk = _Checker(cfg)
    rx = compile_regex(cfg)
    boxes = strip_boxes(cfg)
    need_h = max(y1 for _, _, (y0, x0, y1, x1) in boxes)
    need_w = max(x1 for _, _, (y0, x0, y1, x1) in boxes)
    img_dir = root / "images"
    if not img_dir.is_dir():
        raise DataError(f"{root}: not a vial-strip dataset (missing images/; make one with `tfanomaly data synth vials`)")
    files = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DataError(f"{img_dir}: no images in this folder")
    groups: dict[tuple[str, int], dict[int, Path]] = defaultdict(dict)
    for p in files:
        g = parse_name(rx, p.name)
        if g is None:
            chk.fail(p, f"file name does not match data.filename_regex {d.filename_regex!r}")
            continue
        groups[(g["product"], int(g["run"]))][int(g["frame"])] = p
    labels, fixed = _product_table(root)
    acqs = []
    for (product, run), frames in sorted(groups.items()):
        got = sorted(frames)  # frame numbers may start at 0, 1 or any offset: keep their order
        if len(got) != d.frames_per_acquisition:
            chk.fail(img_dir / f"{product}_r{run}", f"expected {d.frames_per_acquisition} frames (data.frames_per_acquisition), found {len(got)}")
            continue
        acqs.append((product, run, [frames[k] for k in got]))

    items = []
    for product, run, paths in track(acqs, "indexing", len(acqs)):
        masks = []
        ok = True
        for p in paths:
            if not chk.image(p, d.channels):
                ok = False
                break
            h, w = chk.shapes.get(str(p), (need_h, need_w))
            if h < need_h or w < need_w:
                chk.fail(p, f"image is {w}x{h}, smaller than the strip boxes need ({need_w}x{need_h}, data.strip)")
                ok = False
                break
            m = root / "masks" / p.name
            m = str(m) if m.exists() else ""
            if not chk.mask(m, p):
                ok = False
                break
            masks.append(m)
        if not ok:
            continue
        label = labels.get(product)
        if label is None:
            label = int(any(m and cv2.imread(m, cv2.IMREAD_GRAYSCALE).max() > 127 for m in masks))
        items.append(Item("acquisition", [str(p) for p in paths], masks, label, "", product=product, run=run))

    # Split products: a share of the good ones trains, the rest and all defective ones test;
    # products.csv's subset column, where filled (a test kit), fixes a product's side.
    good_products = sorted({it.product for it in items if it.label == 0 and it.product not in fixed})
    train_products, _ = split_good(good_products, d.split.train_fraction, d.split.seed)
    train_set = set(train_products) | {p for p, sub in fixed.items() if sub == "train"}
    for it in items:
        it.subset = "train" if it.product in train_set else "test"
    return Index(items, chk.skipped, d.source, boxes)


# --------------------------------------------------------------------------
# Polygon-annotated images


def load_polygons(path: Path) -> list[np.ndarray]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable JSON polygon file ({e})") from None
    if isinstance(data, dict) and "shapes" in data:
        raw = [s.get("points", []) for s in data["shapes"]]
    elif isinstance(data, dict) and "polygons" in data:
        raw = data["polygons"]
    elif isinstance(data, list):
        raw = data
    else:
        raise DataError(f"{path}: expected {{'polygons': [[[x, y], ...], ...]}} or labelme 'shapes'")
    polys = []
    for i, pts in enumerate(raw):
        arr = np.asarray(pts, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != 2 or len(arr) < 3:
            raise DataError(f"{path}: polygon {i}: expected at least 3 [x, y] points")
        polys.append(arr)
    return polys


def polygon_area(pts: np.ndarray) -> float:
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def rasterize(polys, shape) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    for p in polys:
        cv2.fillPoly(m, [np.round(p).astype(np.int32)], 255)
    return m


def polygon_patches(polys, img_shape, patch, stride, n_normal, rng) -> list[tuple[int, list[int]]]:
    """(label, [y0, x0, y1, x1]) patches: one centred on the largest polygon,
    normal ones from a sliding window that does not touch any polygon."""
    h, w = img_shape
    ph, pw = patch
    if h < ph or w < pw:
        return []
    out = []
    if polys:
        big = max(polys, key=polygon_area)
        cx, cy = big[:, 0].mean(), big[:, 1].mean()
        y0 = int(np.clip(round(cy - ph / 2), 0, h - ph))
        x0 = int(np.clip(round(cx - pw / 2), 0, w - pw))
        out.append((1, [y0, x0, y0 + ph, x0 + pw]))
    occupied = rasterize(polys, (h, w)) > 0 if polys else np.zeros((h, w), bool)
    integral = np.pad(occupied.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    normal = []
    for y0 in range(0, h - ph + 1, stride):
        for x0 in range(0, w - pw + 1, stride):
            s = integral[y0 + ph, x0 + pw] - integral[y0, x0 + pw] - integral[y0 + ph, x0] + integral[y0, x0]
            if s == 0:
                normal.append((0, [y0, x0, y0 + ph, x0 + pw]))
    if n_normal and len(normal) > n_normal:
        keep = sorted(rng.choice(len(normal), n_normal, replace=False))
        normal = [normal[i] for i in keep]
    return out + normal


def index_polygons(cfg) -> Index:
    d = cfg.data
    root = Path(d.root)
    chk = _Checker(cfg)
    images = [p for g in d.good_dirs for p in _list_images(root / g, d.mask_suffix)]
    train, _ = split_good([str(p) for p in images], d.split.train_fraction, d.split.seed)
    train = set(train)
    rng = np.random.default_rng(d.split.seed)
    items = []
    mask_dir = root / ".tfanomaly_masks"
    for path in track(images, "indexing", len(images)):
        if not chk.image(path, d.channels):
            continue
        h, w = chk.shapes.get(str(path)) or cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).shape[:2]
        ann = path.with_name(path.stem + d.polygons.annotation_suffix)
        polys = load_polygons(ann) if ann.exists() else []
        for i, p in enumerate(polys):
            if p[:, 0].min() < 0 or p[:, 1].min() < 0 or p[:, 0].max() > w or p[:, 1].max() > h:
                chk.fail(ann, f"polygon {i} lies outside the {w}x{h} image")
                polys = None
                break
        if polys is None:
            continue
        mask_path = ""
        if polys:
            mask_dir.mkdir(exist_ok=True)
            mask_path = str(mask_dir / f"{path.stem}.png")
            cv2.imwrite(mask_path, rasterize(polys, (h, w)))
        subset = "train" if str(path) in train else "test"
        patches = polygon_patches(polys, (h, w), d.image_size, d.polygons.stride, d.polygons.normal_per_image, rng)
        if not d.polygons.anomalous_per_image:
            patches = [p for p in patches if p[0] == 0]
        for label, box in patches:
            if subset == "train" and label:
                continue
            items.append(Item("image", [str(path)], [mask_path], label, subset, product=path.stem, box=box))
    return Index(items, chk.skipped, d.source)


def balanced_split(index: Index, seed: int, where: str = "") -> None:
    """CycleGAN-AD's split, in place: pool every sample of the dataset by product
    (an image, or a vial product with all its acquisitions), then the test set is
    half of the minority class (floor) plus as many randomly picked products of
    the majority class, all drawn with ``default_rng(seed)``; everything else
    trains, good and defective alike (imbalanced on purpose)."""
    groups: dict[str, list[Item]] = {}
    for it in index.items:
        groups.setdefault(it.product, []).append(it)
    label = {p: max(it.label for it in its) for p, its in groups.items()}
    good = sorted(p for p in groups if label[p] == 0)
    bad = sorted(p for p in groups if label[p] == 1)
    minority, majority = (bad, good) if len(bad) <= len(good) else (good, bad)
    k = len(minority) // 2
    if k == 0:
        raise DataError(f"{where}: data.split.mode balanced needs at least 2 good and 2 defective samples, found {len(good)} good and {len(bad)} defective")
    rng = np.random.default_rng(seed)
    test = {minority[i] for i in rng.permutation(len(minority))[:k]}
    test |= {majority[i] for i in rng.permutation(len(majority))[:k]}
    for p, its in groups.items():
        for it in its:
            it.subset = "test" if p in test else "train"


def build_index(cfg) -> Index:
    d = cfg.data
    if not d.root:
        raise ConfigError(f"{cfg.source_file}: data.root: expected the dataset folder, got an empty value")
    if not Path(d.root).is_dir():
        raise DataError(f"{d.root}: no such dataset folder (data.root)")
    if d.source == "vials":
        idx = index_vials(cfg)
    elif d.source == "mvtec":
        idx = index_mvtec(cfg)
    elif d.source == "folder":
        idx = index_folder(cfg)
    elif d.source == "rgbd":
        if d.channels != 4:
            raise ConfigError(f"{cfg.source_file}: data.channels: expected 4 for data.source: rgbd, got {d.channels}")
        idx = index_folder(cfg, kind="rgbd")
    else:
        idx = index_polygons(cfg)
    if not idx.items:
        raise DataError(f"{d.root}: no usable samples found (source {d.source}; {len(idx.skipped)} skipped)")
    if d.split.mode == "balanced":
        balanced_split(idx, d.split.seed, d.root)
    if idx.skipped:
        log.warning("%d file(s) skipped (data.on_error: skip); first: %s: %s", len(idx.skipped), *idx.skipped[0])
    return idx


def summarize(idx: Index) -> dict:
    c = Counter((it.subset, it.label) for it in idx.items)
    return {
        "source": idx.source,
        "items": len(idx.items),
        "train_good": c[("train", 0)],
        "train_defective": c[("train", 1)],
        "test_good": c[("test", 0)],
        "test_defective": c[("test", 1)],
        "skipped": len(idx.skipped),
    }
