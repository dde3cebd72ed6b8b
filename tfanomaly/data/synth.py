"""Synthetic Blow-Fill-Seal vial-strip acquisitions (the embedded demo data).

Each strip holds 5 plastic vials side by side; each vial has a flag (twist-off
tab), a neck and upper body, a liquid body with a meniscus, and a rounded
bottom. An acquisition is 16 frames of the same strip: bubbles rise and drops
slide between frames and the meniscus sways, so the rank images differ from
the frames. Each product is acquired in 10 runs (small shifts and gain
changes). Defective products carry one defect on one vial (stuck particle,
black spot, scratch, deformation, burn, foam), drawn with its pixel mask, and
visible in most runs (a hidden defect in some runs is what k-of-n is for).

Layout (parsed by the default ``data.filename_regex``)::

    OUT/images/P003_r07_f12.png     8-bit grayscale strip, 320x256
    OUT/masks/P003_r07_f12.png      defect mask (only where a defect is visible)
    OUT/products.csv                product,label,defect,vial,region[,subset]

A test kit (:func:`synth_kit`, ``tfanomaly data synth kit``) is the same
generator with its own seed, ``K``-named products and a ``subset`` column set
to ``test``: every product of a kit is evaluated, none trains, and no kit
product shares a random stream with the training data's products.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

DEFECTS = ("particle", "black_spot", "scratch", "deformation", "burn", "foam")
STRIP_W, STRIP_H, VIAL_W = 320, 256, 64
REGION_Y = ((0, 48), (48, 112), (112, 208), (208, 256))


@dataclass
class Vial:
    cx: float
    fill: float  # liquid level (y)
    bubbles: np.ndarray  # [n, 4] x, y, r, speed
    drops: np.ndarray  # [n, 3] x, y, speed


def _body_polygon(cx):
    half = VIAL_W * 0.36
    pts = [(cx - 7, 46), (cx + 7, 46), (cx + 7, 56), (cx + half, 80), (cx + half, 232), (cx - half, 232), (cx - half, 80), (cx - 7, 56)]
    return np.array(pts, np.float32)


def _draw_vial(img, v: Vial, frame):
    cx = v.cx
    S = float(1 << 4)  # drawing uses 4 fractional bits for anti-aliased sub-pixel shapes

    def p(pts):
        return [np.round(np.asarray(pts) * S).astype(np.int32)]

    # flag (twist-off tab) with an embossed inner plate
    flag = [(cx - 20, 6), (cx + 20, 6), (cx + 16, 40), (cx + 7, 46), (cx - 7, 46), (cx - 16, 40)]
    cv2.fillPoly(img, p(flag), 118, cv2.LINE_AA, 4)
    cv2.fillPoly(img, p([(cx - 12, 12), (cx + 12, 12), (cx + 10, 32), (cx - 10, 32)]), 100, cv2.LINE_AA, 4)
    # body (air part) and bottom
    body = _body_polygon(cx)
    cv2.fillPoly(img, p(body), 150, cv2.LINE_AA, 4)
    half = VIAL_W * 0.36
    cv2.ellipse(img, (int(cx * S), int(232 * S)), (int(half * S), int(16 * S)), 0, 0, 180, 150, -1, cv2.LINE_AA, 4)
    # liquid: below the (swaying) meniscus
    tilt = 1.8 * np.sin(0.7 * frame + cx)
    left, right = v.fill + tilt, v.fill - tilt
    liquid = [(cx - half + 1, left), (cx + half - 1, right), (cx + half - 1, 232), (cx - half + 1, 232)]
    cv2.fillPoly(img, p(liquid), 188, cv2.LINE_AA, 4)
    cv2.ellipse(img, (int(cx * S), int(232 * S)), (int((half - 1) * S), int(15 * S)), 0, 0, 180, 188, -1, cv2.LINE_AA, 4)
    # meniscus: a dark curved band
    xs = np.linspace(cx - half + 1, cx + half - 1, 24)
    t = (xs - (cx - half)) / (2 * half)
    ys = left + (right - left) * t - 3.0 * np.sin(np.pi * t) + 3.0
    cv2.polylines(img, p(np.stack([xs, ys], 1)), False, 70, 2, cv2.LINE_AA, 4)
    # walls: bright edges of the plastic
    cv2.polylines(img, p(body), True, 205, 2, cv2.LINE_AA, 4)
    # bubbles rise through the liquid
    for bx, by, r, speed in v.bubbles:
        y = by - speed * frame
        if y - r <= v.fill + 4 or y + r >= 240:
            continue
        x = bx + 1.2 * np.sin(0.9 * frame + by)
        cv2.circle(img, (int(x * S), int(y * S)), int(r * S), 90, 1, cv2.LINE_AA, 4)
        cv2.circle(img, (int((x - r / 3) * S), int((y - r / 3) * S)), max(int(r * S / 3), 4), 235, -1, cv2.LINE_AA, 4)
    # drops slide down the upper wall
    for dx, dy, speed in v.drops:
        y = dy + speed * frame
        if y >= v.fill - 3:
            continue
        cv2.ellipse(img, (int(dx * S), int(y * S)), (int(1.6 * S), int(2.4 * S)), 0, 0, 360, 110, -1, cv2.LINE_AA, 4)


def _defect(kind, cx, fill, rng):
    """Returns draw(img, mask, frame) for one defect on the vial centred at cx, and its region."""
    half = VIAL_W * 0.36

    if kind == "particle":
        x, y, r = cx + rng.uniform(-half + 6, half - 6), rng.uniform(fill + 15, 220), rng.uniform(2.0, 3.0)

        def draw(img, mask, frame):
            cv2.circle(img, (round(x), round(y)), round(r), 45, -1, cv2.LINE_AA)
            cv2.circle(mask, (round(x), round(y)), round(r) + 1, 255, -1)

        return draw, 2
    if kind == "black_spot":
        region = int(rng.choice([1, 3]))
        x = cx + rng.uniform(-half + 6, half - 6)
        y = rng.uniform(84, 104) if region == 1 else rng.uniform(214, 230)
        r = rng.uniform(3.0, 4.5)

        def draw(img, mask, frame):
            cv2.circle(img, (round(x), round(y)), round(r), 30, -1, cv2.LINE_AA)
            cv2.circle(mask, (round(x), round(y)), round(r) + 1, 255, -1)

        return draw, region
    if kind == "scratch":
        x, y = cx + rng.uniform(-half + 8, half - 8), rng.uniform(fill + 20, 200)
        a, n = rng.uniform(0, np.pi), rng.uniform(14, 24)
        p0 = (round(x - n / 2 * np.cos(a)), round(y - n / 2 * np.sin(a)))
        p1 = (round(x + n / 2 * np.cos(a)), round(y + n / 2 * np.sin(a)))

        def draw(img, mask, frame):
            cv2.line(img, p0, p1, 240, 1, cv2.LINE_AA)
            cv2.line(mask, p0, p1, 255, 3)

        return draw, 2
    if kind == "deformation":
        side = rng.choice([-1, 1])
        x, y = cx + side * half, rng.uniform(fill + 25, 195)

        def draw(img, mask, frame):
            dent = np.zeros_like(mask)
            cv2.ellipse(dent, (round(x), round(y)), (7, 13), 0, 0, 360, 255, -1)
            vial = np.zeros_like(mask)
            cv2.fillPoly(vial, [np.round(_body_polygon(cx)).astype(np.int32)], 255)
            region = (dent > 0) & (vial > 0)
            img[region] = (img[region] * 0.35 + 28).astype(img.dtype)
            edge = cv2.Canny(dent, 50, 150) > 0
            img[edge & (vial > 0)] = 205
            mask[cv2.dilate(region.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0] = 255

        return draw, 2
    if kind == "burn":
        region = int(rng.choice([0, 3]))
        x = cx + rng.uniform(-8, 8)
        y = rng.uniform(16, 34) if region == 0 else rng.uniform(216, 232)
        angle = float(rng.uniform(0, 180))

        def draw(img, mask, frame):
            blob = np.zeros(img.shape, np.float32)
            cv2.ellipse(blob, (round(x), round(y)), (8, 5), angle, 0, 360, 1.0, -1, cv2.LINE_AA)
            blob = cv2.GaussianBlur(blob, (0, 0), 2.0)
            img[:] = (img * (1.0 - 0.6 * blob)).astype(img.dtype)
            mask[blob > 0.15] = 255

        return draw, region
    if kind == "foam":
        pts = np.stack([cx + rng.uniform(-half + 4, half - 4, 18), rng.uniform(0, 7, 18), rng.uniform(1.0, 2.2, 18)], 1)

        def draw(img, mask, frame):
            for bx, dy, r in pts:
                y = fill + 5 + dy + 0.5 * np.sin(frame + bx)
                cv2.circle(img, (round(bx), round(y)), max(1, round(r)), 235, -1, cv2.LINE_AA)
                cv2.circle(img, (round(bx), round(y)), max(1, round(r)) + 1, 95, 1, cv2.LINE_AA)
                cv2.circle(mask, (round(bx), round(y)), max(1, round(r)) + 2, 255, -1)

        return draw, 2
    raise ValueError(kind)


def _write_png(path: Path, img):
    tmp = path.with_name("." + path.name)
    if not cv2.imwrite(str(tmp) + ".png", img):
        raise OSError(f"cannot write {path}")
    os.replace(str(tmp) + ".png", path)


KIT_SEED = 1000  # the kit's default seed: far from the training data's (0)


def synth_vials(out, good=10, defective=12, runs=10, frames=16, seed=0, progress=None, prefix="P", subset="") -> dict:
    """Write a vial-line dataset to ``out``; deterministic for ``seed``.
    ``prefix`` names the products (P001, ...); a non-empty ``subset`` is
    written to products.csv for every product (``test`` for a kit)."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    rows = []
    n_products = good + defective
    kinds = [None] * good + [DEFECTS[i % len(DEFECTS)] for i in range(defective)]
    order = np.random.default_rng(seed).permutation(n_products)
    total = n_products * runs * frames
    done = 0
    for pi, slot in enumerate(order):
        kind = kinds[slot]
        product = f"{prefix}{pi + 1:03d}"
        rng = np.random.default_rng([seed, pi])
        fills = rng.uniform(118, 128, 5)
        dvial = int(rng.integers(0, 5))
        defect_draw, dregion = _defect(kind, 32 + VIAL_W * dvial, fills[dvial], rng) if kind else (None, -1)
        rows.append({"product": product, "label": int(kind is not None), "defect": kind or "", "vial": dvial if kind else "", "region": dregion if kind else ""})
        if subset:
            rows[-1]["subset"] = subset
        for run in range(runs):
            rr = np.random.default_rng([seed, pi, run])
            shift = rr.uniform(-1.5, 1.5)
            gain = rr.uniform(0.94, 1.06)
            visible = kind is not None and rr.uniform() < 0.85
            vials = []
            for v in range(5):
                nb, nd = rr.integers(0, 4), rr.integers(0, 3)
                cx = 32 + VIAL_W * v + shift
                bubbles = np.stack([cx + rr.uniform(-14, 14, nb), rr.uniform(170, 235, nb), rr.uniform(2.0, 3.5, nb), rr.uniform(2.5, 5.0, nb)], 1)
                drops = np.stack([cx + rr.choice([-1, 1], nd) * rr.uniform(14, 20, nd), rr.uniform(60, 90, nd), rr.uniform(1.0, 2.5, nd)], 1)
                vials.append(Vial(cx, fills[v], bubbles.reshape(-1, 4), drops.reshape(-1, 3)))
            yy = np.linspace(0, 1, STRIP_H, dtype=np.float32)[:, None]
            background = (28 + 14 * yy) * np.ones((1, STRIP_W), np.float32)
            for frame in range(frames):
                rf = np.random.default_rng([seed, pi, run, frame])
                img = background.astype(np.uint8).copy()
                cv2.rectangle(img, (0, 20), (STRIP_W - 1, 30), 62, -1)  # the web joining the flags
                for v in vials:
                    _draw_vial(img, v, frame)
                mask = np.zeros_like(img)
                if visible:
                    m = np.zeros_like(img)
                    defect_draw(img, m, frame)
                    mask = m
                img = cv2.GaussianBlur(img, (3, 3), 0.8).astype(np.float32) * gain
                img += rf.normal(0, 2.5, img.shape)
                img = np.clip(np.round(img), 0, 255).astype(np.uint8)
                name = f"{product}_r{run + 1:02d}_f{frame + 1:02d}.png"
                _write_png(out / "images" / name, img)
                if mask.any():
                    _write_png(out / "masks" / name, mask)
                done += 1
                if progress:
                    progress(done, total)
    tmp = out / ".products.csv.tmp"
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["product", "label", "defect", "vial", "region"] + (["subset"] if subset else []))
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, out / "products.csv")
    return {"products": n_products, "good": good, "defective": defective, "images": total}


def synth_kit(out, good=120, defective=140, runs=10, frames=16, seed=KIT_SEED, progress=None) -> dict:
    """A vial-line test kit: the generator of :func:`synth_vials` (same defect
    kinds, sizes and contrasts), its own seed, products K001..., all in the
    ``test`` subset (the paper's kit: 120 good, 141 defective products, 10 runs)."""
    return synth_vials(out, good, defective, runs, frames, seed, progress, prefix="K", subset="test")
