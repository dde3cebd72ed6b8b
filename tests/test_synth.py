import csv
import hashlib
import re

import cv2
import numpy as np

from tfanomaly.data.synth import DEFECTS, synth_vials


def digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*.png")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def test_counts_naming_and_masks(vial_data):
    rows = list(csv.DictReader((vial_data / "products.csv").open()))
    assert len(rows) == 5 and sum(r["label"] == "1" for r in rows) == 2
    images = sorted((vial_data / "images").glob("*.png"))
    assert len(images) == 5 * 2 * 4
    assert all(re.fullmatch(r"P\d{3}_r\d{2}_f\d{2}\.png", p.name) for p in images)
    defective = {r["product"] for r in rows if r["label"] == "1"}
    masks = sorted((vial_data / "masks").glob("*.png"))
    assert masks, "defective products must have masks"
    for m in masks:
        assert m.name.split("_")[0] in defective
        assert cv2.imread(str(m), 0).max() == 255  # only non-empty masks are written
    assert {m.name.split("_")[0] for m in masks} == defective
    img = cv2.imread(str(images[0]), cv2.IMREAD_UNCHANGED)
    assert img.shape == (256, 320) and img.dtype == np.uint8


def test_frames_differ_and_output_is_deterministic(tmp_path):
    a = synth_vials(tmp_path / "a", good=1, defective=6, runs=1, frames=3, seed=5)
    synth_vials(tmp_path / "b", good=1, defective=6, runs=1, frames=3, seed=5)
    assert a["images"] == 7 * 3
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    rows = list(csv.DictReader((tmp_path / "a" / "products.csv").open()))
    assert sorted(r["defect"] for r in rows if r["label"] == "1") == sorted(DEFECTS)
    f1 = cv2.imread(str(tmp_path / "a" / "images" / "P001_r01_f01.png"), 0).astype(int)
    f2 = cv2.imread(str(tmp_path / "a" / "images" / "P001_r01_f02.png"), 0).astype(int)
    assert np.abs(f1 - f2).mean() > 0.5  # bubbles, drops and the meniscus move
