import json
import re

import numpy as np
import pytest

from tests.conftest import vial_cfg, write_img
from tfanomaly.config import load_config
from tfanomaly.data.pipeline import Data
from tfanomaly.data.sources import build_index, parse_name, polygon_patches, split_good
from tfanomaly.errors import ConfigError, DataError


def folder_cfg(root, *extra):
    return load_config(
        None, [f"data.root={root}", "data.source=folder", "data.image_size=[16, 16]", "perturb.max_scale=2", "model.widths=[8]", "data.good_dirs=[good]", "data.defect_dirs=[bad]", *extra]
    )


def make_folder(root, n_good=5, n_bad=2, size=(20, 24)):
    rng = np.random.default_rng(0)
    for i in range(n_good):
        write_img(root / "good" / f"g{i}.png", rng.integers(0, 255, size, dtype=np.uint8))
    for i in range(n_bad):
        write_img(root / "bad" / f"b{i}.jpg", rng.integers(0, 255, size, dtype=np.uint8))
        m = np.zeros(size, np.uint8)
        m[2:6, 3:9] = 255
        write_img(root / "bad" / f"b{i}.png", m)  # mask beside its image (Magnetic Tile layout)


def test_regex_parsing():
    rx = re.compile(load_config(None).data.filename_regex)
    assert parse_name(rx, "P012_r03_f16.png") == {"product": "P012", "run": "03", "frame": "16"}
    assert parse_name(rx, "P012-run3.png") is None


def test_regex_needs_named_groups(vial_data):
    cfg = vial_cfg(vial_data, r"data.filename_regex=(?P<product>\w+)_r(\d+)\.png")
    with pytest.raises(ConfigError, match="data.filename_regex: expected named groups .* missing frame, run"):
        build_index(cfg)


def test_unmatched_name_is_an_error_or_a_counted_skip(tmp_path, vial_data):
    import shutil

    root = tmp_path / "v"
    shutil.copytree(vial_data, root)
    write_img(root / "images" / "stray.png", np.zeros((256, 320), np.uint8))
    with pytest.raises(DataError, match=r"stray.png: file name does not match data.filename_regex"):
        build_index(vial_cfg(root))
    idx = build_index(vial_cfg(root, "data.on_error=skip"))
    assert [s[0].endswith("stray.png") for s in idx.skipped] == [True]


def test_region_cutting_by_boxes(tmp_path):
    """A strip whose every (vial, region) box has its own gray value: each patch is constant with that value."""
    root = tmp_path / "strip"
    cfg = vial_cfg(root, "data.frames_per_acquisition=2", "data.rank_images=[1, 2]", "data.eval_frames=[0, 1]", "data.split.train_fraction=1.0")
    strip = np.zeros((256, 320), np.uint8)
    for v, (x0, x1) in enumerate(cfg.data.strip.vial_x):
        for r, (y0, y1) in enumerate(cfg.data.strip.region_y):
            strip[y0:y1, x0:x1] = 10 + 40 * v + 10 * r
    for f in (1, 2):
        write_img(root / "images" / f"A1_r01_f{f:02d}.png", strip)
    data = Data(cfg)
    patches = list(data.patches("train", training=True).as_numpy_iterator())
    assert len(patches) == data.count("train", True) == 20 * (2 + 2)
    for e in patches:
        assert e["image"].shape == (32, 32, 1)
        assert np.all(e["image"] == 10 + 40 * e["vial"] + 10 * e["region"])
    ids = {(int(e["vial"]), int(e["region"]), int(e["frame"]), int(e["rank"])) for e in patches}
    assert len(ids) == 80 and (0, 0, -1, 2) in ids and (4, 3, 1, 0) in ids


def test_vial_labels_come_from_masks(vial_data):
    cfg = vial_cfg(vial_data)
    data = Data(cfg)
    assert data.count("test", False) == sum(1 for _ in data.patches("test", False))
    rows = [line.split(",") for line in (vial_data / "products.csv").read_text().splitlines()[1:]]
    defect_region = {r[0]: (int(r[3]), int(r[4])) for r in rows if r[1] == "1"}
    for e in data.patches("test", False).as_numpy_iterator():
        assert e["label"] == int(e["mask"].max() > 0)
        if e["label"]:
            assert defect_region[e["product"].decode()] == (e["vial"], e["region"])


def test_folder_source_split_masks_and_labels(tmp_path):
    make_folder(tmp_path)
    cfg = folder_cfg(tmp_path)
    idx = build_index(cfg)
    assert [len(idx.subset("train")), len(idx.subset("test"))] == [4, 3]
    train_names = sorted(it.paths[0] for it in idx.subset("train"))
    expect, _ = split_good(sorted(str(tmp_path / "good" / f"g{i}.png") for i in range(5)), 0.8, 0)
    assert train_names == sorted(expect)
    bad = [it for it in idx.items if it.label == 1]
    assert len(bad) == 2 and all(it.masks[0].endswith(".png") for it in bad)
    e = next(Data(cfg).patches("test", False).filter(lambda e: e["label"] == 1).as_numpy_iterator())
    assert e["image"].shape == (16, 16, 1) and e["mask"].max() == 255


def test_split_follows_protocol():
    names = [f"n{i:03d}" for i in range(10)]
    train, test = split_good(names, 0.8, 2)
    perm = np.random.default_rng(2).permutation(10)
    assert train == [names[i] for i in perm[:8]] and len(test) == 2


def test_bad_inputs_name_the_file(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "good" / "g1.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match=r"good/g1.png: not a decodable image"):
        build_index(folder_cfg(tmp_path))
    assert len(build_index(folder_cfg(tmp_path, "data.on_error=skip")).skipped) == 1
    raw = (tmp_path / "bad" / "b0.jpg").read_bytes()
    (tmp_path / "bad" / "b0.jpg").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "good" / "g1.png").unlink()
    with pytest.raises(DataError, match=r"b0.jpg: truncated JPEG"):
        build_index(folder_cfg(tmp_path))


def test_mask_size_mismatch_and_empty_folder(tmp_path):
    make_folder(tmp_path, n_bad=1)
    write_img(tmp_path / "bad" / "b0.png", np.zeros((5, 5), np.uint8))
    with pytest.raises(DataError, match=r"b0.png: mask size 5x5 differs from its image .*b0.jpg \(24x20\)"):
        build_index(folder_cfg(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no images"):
        build_index(folder_cfg(tmp_path, "data.good_dirs=[empty]"))


def test_wrong_channel_count(tmp_path):
    make_folder(tmp_path)
    write_img(tmp_path / "good" / "g0.png", np.random.default_rng(0).integers(0, 255, (20, 24, 3), dtype=np.uint8))
    with pytest.raises(DataError, match="g0.png: expected a grayscale image"):
        build_index(folder_cfg(tmp_path))


def test_mvtec_layout(tmp_path):
    z = np.zeros((20, 20), np.uint8)
    for i in range(3):
        write_img(tmp_path / "train" / "good" / f"{i:03d}.png", z + i)
    write_img(tmp_path / "test" / "good" / "000.png", z)
    write_img(tmp_path / "test" / "crack" / "000.png", z + 50)
    m = z.copy()
    m[5:10, 5:10] = 255
    write_img(tmp_path / "ground_truth" / "crack" / "000_mask.png", m)
    cfg = load_config(None, [f"data.root={tmp_path}", "data.source=mvtec", "data.image_size=[20, 20]", "perturb.max_scale=2", "model.widths=[4]", "model.ssim_window=5"])
    idx = build_index(cfg)
    assert len(idx.subset("train")) == 3
    labels = sorted((it.product, it.label, bool(it.masks[0])) for it in idx.subset("test"))
    assert labels == [("crack/000", 1, True), ("good/000", 0, False)]
    e = [x for x in Data(cfg).patches("test", False).as_numpy_iterator() if x["label"] == 1][0]
    assert e["mask"].sum() == 25 * 255 and np.all(e["image"] == 50)


def test_rgbd_source_and_depth_removals(tmp_path):
    rgb = np.full((8, 8, 3), 200, np.uint8)
    depth = np.full((8, 8), 500, np.uint16)
    depth[:, :2] = 900  # background: farther than 700
    depth[:, 6:] = 980  # supporting surface: 98% of the empty-surface depth
    surface = np.full((8, 8), 1000, np.uint16)
    for d in ("good", "bad"):
        write_img(tmp_path / d / "s0.png", rgb)
        write_img(tmp_path / d / "s0_depth.png", depth)
    write_img(tmp_path / "surface.png", surface)
    cfg = load_config(
        None,
        [
            f"data.root={tmp_path}",
            "data.source=rgbd",
            "data.channels=4",
            "data.image_size=[8, 8]",
            "data.good_dirs=[good]",
            "data.defect_dirs=[bad]",
            "data.rgbd.background_depth=700",
            f"data.rgbd.surface_frame={tmp_path / 'surface.png'}",
            "perturb.max_scale=1",
            "model.widths=[2]",
            "model.ssim_window=3",
        ],
    )
    e = next(Data(cfg).patches("test", False).as_numpy_iterator())
    assert e["image"].shape == (8, 8, 4)
    assert np.all(e["image"][:, :2] == 0) and np.all(e["image"][:, 6:] == 0)  # removed
    np.testing.assert_array_equal(e["image"][:, 2:6, :3], 200)
    np.testing.assert_array_equal(e["image"][:, 2:6, 3], round(500 / 700 * 255))


def test_polygon_patches():
    polys = [np.array([[40, 40], [60, 40], [60, 60], [40, 60]], float), np.array([[5, 5], [8, 5], [8, 8]], float)]
    out = polygon_patches(polys, (128, 160), (32, 32), 32, 0, np.random.default_rng(0))
    anomalous = [b for lab, b in out if lab == 1]
    assert anomalous == [[34, 34, 66, 66]]  # centred on the largest polygon
    normal = [b for lab, b in out if lab == 0]
    assert normal and all(not (b[0] < 61 and b[2] > 40 and b[1] < 61 and b[3] > 40) for b in normal)
    assert all(not (b[0] <= 8 and b[1] <= 8) for b in normal)
    assert len(polygon_patches(polys, (128, 160), (32, 32), 32, 1, np.random.default_rng(0))) == 2


def test_polygon_source_and_outside_polygon(tmp_path):
    img = np.full((96, 96), 80, np.uint8)
    for i in range(4):
        write_img(tmp_path / "imgs" / f"x{i}.png", img)
    (tmp_path / "imgs" / "x3.json").write_text(json.dumps({"polygons": [[[40, 40], [56, 40], [56, 56]]]}))
    cfg = load_config(
        None, [f"data.root={tmp_path}", "data.source=polygons", "data.good_dirs=[imgs]", "data.image_size=[32, 32]", "data.split.train_fraction=0.5", "perturb.max_scale=2", "model.widths=[4]"]
    )
    idx = build_index(cfg)
    assert all(it.label == 0 for it in idx.subset("train"))
    assert len(idx.items) == 4 + (1 if "x3" not in {it.product for it in idx.subset("train")} else 0)
    (tmp_path / "imgs" / "x2.json").write_text(json.dumps({"polygons": [[[40, 40], [156, 40], [56, 56]]]}))
    with pytest.raises(DataError, match=r"x2.json: polygon 0 lies outside the 96x96 image"):
        build_index(cfg)


def test_perturb_other_blends_in_another_training_image(tmp_path):
    """perturb.other = 1 with a full blend: inside each training sample's mask the
    input is another good training image's tile (flat images of 3 gray levels and
    3 sizes, tiled: every masked value is one of the levels, and some samples show
    a level that is not their own); the monitor's batch pairs each image with the
    next."""
    levels = [40, 128, 220]
    for i, (v, size) in enumerate(zip(levels, [(20, 24), (28, 20), (24, 30)])):
        write_img(tmp_path / "good" / f"g{i}.png", np.full(size, v, np.uint8))
    write_img(tmp_path / "bad" / "b0.png", np.full((20, 24), 90, np.uint8))
    extra = ["data.tiling.enabled=true", "data.tiling.stride=[8, 8]", "data.split.train_fraction=1.0", "train.validation_fraction=0"]
    extra += ["augment.rotation=0", "augment.hflip=false", "augment.vflip=false", "perturb.probability=1.0", "perturb.blend=[1.0, 1.0]", "perturb.other=1.0"]
    cfg = folder_cfg(tmp_path, *extra)
    foreign = 0
    for b in Data(cfg).train_dataset(batch_size=6).take(4):
        for x, xn, m in zip(b["image"].numpy(), b["perturbed"].numpy(), b["perturb_mask"].numpy()):
            inside = m[..., 0] > 0
            if not inside.any():
                continue
            got = np.unique(np.round(xn[inside] * 255))
            assert len(got) == 1 and int(got[0]) in levels
            foreign += int(got[0]) != int(round(x[0, 0, 0] * 255))
    assert foreign > 0
    mon = Data(cfg).monitor_batch(3)
    own = np.round(mon["image"].numpy()[:, 0, 0, 0] * 255)
    for k in range(3):
        inside = mon["perturb_mask"].numpy()[k, ..., 0] > 0
        if inside.any():
            assert np.round(mon["perturbed"].numpy()[k][inside] * 255).max() == own[(k + 1) % 3]
