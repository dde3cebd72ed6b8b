import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import ROOT, error_lines, run_cpp, save_run, vial_cfg
from tfanomaly.errors import UserError
from tfanomaly.export import export, variables_checksum
from tfanomaly.models import registry
from tfanomaly.run import Run


def make_run(tmp_path, thresholds=None, variant="industrial"):
    cfg = vial_cfg("unused", f"model.variant={variant}")
    tf.keras.utils.set_random_seed(0)
    model = registry.build(cfg)
    return save_run(model, cfg, tmp_path / f"run_{variant}", thresholds), model


def images(n=6, seed=0):
    g = np.random.default_rng(seed)
    u8 = g.integers(0, 256, (n, 32, 32, 1), dtype=np.uint8)
    return u8, u8.astype(np.float32) / 255.0


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    out = {}
    run, model = make_run(tmp, None)
    out["plain"] = (model, export(run, tmp / "sm_plain"))
    per_region = {"rule": "youden", "per_region": True, "thresholds": {"0": 0.5, "1": 0.6, "2": 0.55, "3": 0.0}}
    run2, model2 = make_run(tmp, per_region, "full")
    out["region"] = (model2, export(run2, tmp / "sm_region"))
    return out


def test_python_round_trip_both_signatures(exported):
    model, path = exported["plain"]
    loaded = tf.saved_model.load(str(path))
    u8, x = images()
    ref = model.score(x)
    got = loaded.signatures["serving_default"](images=tf.constant(x))
    assert set(got) == {"score", "heatmap", "reconstruction"}
    for k in ref:
        np.testing.assert_allclose(got[k].numpy(), ref[k].numpy(), atol=1e-6)
    pngs = tf.constant([cv2.imencode(".png", im)[1].tobytes() for im in u8])
    got_png = loaded.signatures["serve_png"](png=pngs)
    for k in ref:
        np.testing.assert_allclose(got_png[k].numpy(), ref[k].numpy(), atol=1e-6)


def test_per_region_decisions_and_metadata(exported):
    model, path = exported["region"]
    loaded = tf.saved_model.load(str(path))
    _, x = images()
    regions = np.array([0, 1, 2, 3, 0, 1], np.int32)
    got = loaded.signatures["serving_default"](images=tf.constant(x), region=tf.constant(regions))
    score = model.score(x)["score"].numpy()
    np.testing.assert_allclose(got["score"].numpy(), score, atol=1e-6)
    t = np.array([0.5, 0.6, 0.55, 0.0])[regions]
    np.testing.assert_array_equal(got["is_anomalous"].numpy(), score >= t)
    meta = json.loads((path / "tfanomaly.json").read_text())
    assert meta["thresholds"]["values"] == [0.5, 0.6, 0.55, 0.0] and meta["thresholds"]["per_region"] is True
    assert meta["image_size"] == [32, 32] and meta["channels"] == 1 and meta["family"] == "grdnet"
    assert meta["variables_sha256"] == variables_checksum(path)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_savedmodel_fails_closed_and_refuses_unknown_regions(exported):
    model, path = exported["region"]
    loaded = tf.saved_model.load(str(path))
    _, x = images(3)
    x[1, 5, 5, 0] = np.nan  # a pixel the model cannot judge
    got = loaded.signatures["serving_default"](images=tf.constant(x), region=tf.constant([3, 3, 3], tf.int32))
    assert not np.isfinite(got["score"].numpy()[1])
    # region 3's threshold is 0.0: everything finite is flagged there; the NaN patch is flagged too, never passed
    assert got["is_anomalous"].numpy().tolist() == [True, True, True]
    for bad in ([0, 4, 1], [0, -1, 1]):  # an id the model has no threshold for
        with pytest.raises(tf.errors.InvalidArgumentError, match="region id without a threshold"):
            loaded.signatures["serving_default"](images=tf.constant(x), region=tf.constant(bad, tf.int32))
    meta = json.loads((path / "tfanomaly.json").read_text())
    assert meta["thresholds"]["known_regions"] == [0, 1, 2, 3] and "fail closed" in meta["thresholds"]["rules"]["flag"]


def test_reexport_refuses_a_non_empty_folder_and_force_replaces_atomically(tmp_path):
    run, _ = make_run(tmp_path)
    out = export(run, tmp_path / "sm")
    first_hash = json.loads((out / "tfanomaly.json").read_text())["variables_sha256"]
    (out / "marker").write_text("old")
    with pytest.raises(UserError, match=r"sm: already exists and is not empty.*--force"):
        export(run, tmp_path / "sm")
    assert (out / "marker").read_text() == "old" and (out / "saved_model.pb").exists()  # untouched
    (tmp_path / ".sm.killed").mkdir()  # what a killed export leaves
    export(run, tmp_path / "sm", force=True)
    assert not (out / "marker").exists() and (out / "saved_model.pb").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".sm")]
    # the same run exported twice: the same variables hash (it identifies the weights)
    assert json.loads((out / "tfanomaly.json").read_text())["variables_sha256"] == first_hash


# ---------------------------------------------------------------- C++ binary


def test_cpp_equals_python(binary, exported, tmp_path):
    model, path = exported["plain"]
    u8, x = images(5, seed=3)
    ref = model.score(x)
    pngs, npys = [], []
    for i, im in enumerate(u8):
        p = tmp_path / f"p{i}.png"
        cv2.imwrite(str(p), im)
        pngs.append(p)
        n = tmp_path / f"n{i}.npy"
        np.save(n, x[i])
        npys.append(n)
    for files, heat in ((pngs, tmp_path / "hp"), (npys, tmp_path / "hn")):
        heat.mkdir()
        r = run_cpp(binary, path, *files, "--json", "--batch", 2, "--heatmaps", heat)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        scores = np.array([im["score"] for im in out["images"]], np.float32)
        assert np.max(np.abs(scores - ref["score"].numpy())) <= 1e-5
        for i, f in enumerate(files):
            h = np.load(heat / f"{f.stem}.npy")
            assert np.max(np.abs(h - ref["heatmap"].numpy()[i, ..., 0])) <= 1e-5
        assert len(out["strips"]) == 3  # 5 images in batches of 2
        assert out["strips"][0]["max_score"] == pytest.approx(float(scores[:2].max()), abs=1e-6)


def test_cpp_per_region_decisions(binary, exported, tmp_path):
    model, path = exported["region"]
    u8, x = images(4, seed=4)
    files = []
    for i, im in enumerate(u8):
        p = tmp_path / f"q{i}_R{i}.png"
        cv2.imwrite(str(p), im)
        files.append(p)
    r = run_cpp(binary, path, *files, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    score = model.score(x)["score"].numpy()
    flags = [im["is_anomalous"] for im in out["images"]]
    assert flags == list(score >= np.array([0.5, 0.6, 0.55, 0.0]))
    assert out["strips"][0]["defective"] is any(flags)


def test_cpp_bad_inputs_exit_codes(binary, exported, tmp_path):
    _, path = exported["plain"]
    good = tmp_path / "ok.png"
    cv2.imwrite(str(good), np.zeros((32, 32), np.uint8))
    r = run_cpp(binary)
    assert r.returncode == 2 and error_lines(r) == ["error: expected MODEL_DIR and at least one image"]
    r = run_cpp(binary, tmp_path / "nope", good)
    assert r.returncode == 3 and "no such model directory" in r.stderr
    broken = tmp_path / "broken_model"
    shutil.copytree(path, broken)
    (broken / "saved_model.pb").write_bytes(b"not a protobuf")
    r = run_cpp(binary, broken, good)
    assert r.returncode == 4 and len(error_lines(r)) == 1 and "cannot load" in error_lines(r)[0]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG garbage")
    r = run_cpp(binary, path, bad)
    assert r.returncode == 5 and len(error_lines(r)) == 1, r.stderr
    big = tmp_path / "big.png"
    cv2.imwrite(str(big), np.zeros((40, 32), np.uint8))
    r = run_cpp(binary, path, big)
    assert r.returncode == 6 and "32x40, expected 32x32" in error_lines(r)[0], r.stderr
    r = run_cpp(binary, path, tmp_path / "missing.png")
    assert r.returncode == 5 and "cannot read" in r.stderr
    # every PNG is checked against the model (8-bit, channels, size) before inference, every bad one named
    rgb, deep = tmp_path / "rgb.png", tmp_path / "deep.png"
    cv2.imwrite(str(rgb), np.zeros((32, 32, 3), np.uint8))
    cv2.imwrite(str(deep), np.zeros((32, 32), np.uint16))
    r = run_cpp(binary, path, good, rgb, good, deep, big)
    (line,) = error_lines(r)
    assert r.returncode == 6 and line.startswith("error: 3 of 5 inputs do not fit the model"), r.stderr
    assert f"{rgb}: RGB (3 channels), expected 1 channel(s)" in line and f"{deep}: 16-bit gray, expected 8-bit" in line
    assert f"{big}: 32x40, expected 32x32 (width x height)" in line and str(good) not in line
    r = run_cpp(binary, path, good, bad)
    assert r.returncode == 5 and f"{bad}: not a PNG file" in error_lines(r)[0]
    assert "Aborted" not in r.stderr and "terminate" not in r.stderr
    # .npy headers whose sizes overflow or run past the file: one line naming the file, never a crash
    from importlib.util import module_from_spec, spec_from_file_location

    spec = spec_from_file_location("make_corpus", ROOT / "cpp_inference" / "fuzz" / "make_corpus.py")
    corpus = module_from_spec(spec)
    spec.loader.exec_module(corpus)
    for shape, code, why in (
        ("(2147483648, 2147483648, 1)", 6, "a dimension above 65536"),
        ("(" + "9" * 40 + ", 32, 1)", 6, "a dimension above 65536"),
        ("(0, 32, 32, 1)", 6, "expected shape [32, 32, 1]"),
        ("(32, 32, 1)", 5, "truncated .npy data"),
    ):
        hostile = tmp_path / "hostile.npy"
        hostile.write_bytes(corpus.npy_header(shape))
        r = run_cpp(binary, path, hostile)
        (line,) = error_lines(r)
        assert r.returncode == code and line.startswith(f"error: {hostile}: ") and why in line, (shape, r.stderr)


FAMILY_CFGS = {
    "ganomaly": ["model.base_width=8", "model.latent_dim=16"],
    "autoencoder": ["model.variant=sdc", "corrupt.enabled=true", "model.sdc_width=8", "model.dilations=[1, 2, 4]", "model.ssim_window=7"],
    "adgan": ["model.base_width=8", "model.latent_dim=8", "model.search_steps=5"],
    "cyclegan": ["model.gen_base=8", "model.disc_base=8", "model.n_res=1", "model.disc_layers=2"],
}


@pytest.mark.parametrize("family", sorted(FAMILY_CFGS))
def test_cpp_equals_python_for_every_family(binary, tmp_path, family):
    from tests.conftest import save_run
    from tfanomaly.config import load_config

    cfg = load_config(None, [f"family={family}", "data.root=unused", "data.image_size=[32, 32]", "perturb.enabled=false", *FAMILY_CFGS[family]])
    tf.keras.utils.set_random_seed(0)
    model = registry.build(cfg)
    run = save_run(model, cfg, tmp_path / "run")
    path = export(run, tmp_path / "sm")
    _, x = images(3, seed=5)
    ref = model.score(x)["score"].numpy()
    files = []
    for i in range(3):
        files.append(tmp_path / f"n{i}.npy")
        np.save(files[-1], x[i])
    r = run_cpp(binary, path, *files, "--json", "--batch", 2)
    assert r.returncode == 0, r.stderr
    scores = np.array([im["score"] for im in json.loads(r.stdout)["images"]], np.float32)
    np.testing.assert_allclose(scores, ref, rtol=1e-4, atol=1e-6)


def test_same_verdicts_through_every_door(binary, vial_data, tmp_path):
    """The decision has one owner: evaluate calibrates per region (one region
    without calibration defects, so it falls back), and the verdicts of the
    evaluation, ``predict``, the Python SavedModel and the C++ binary agree on
    every patch of the same strips."""
    import csv

    import keras

    from tests.conftest import save_run, vial_cfg
    from tfanomaly.data.pipeline import Data
    from tfanomaly.evaluate import evaluate, score_test_set
    from tfanomaly.predict import predict

    cfg = vial_cfg(vial_data, "eval.per_region=true", "eval.calibration_fraction=0.5", "eval.k_of_n=[1, 2]")
    keras.utils.set_random_seed(0)
    model = registry.build(cfg)
    data = Data(cfg)
    scored = score_test_set(model, cfg, data)
    scored.labels[scored.regions == 2] = 0  # region 2: no defective patch to calibrate on
    run = save_run(model, cfg, tmp_path / "run")
    summary = evaluate(model, cfg, Run(run).eval_dir, "youden", [0], scored=scored, data=data)
    assert any("R2" in w for w in summary["runs"][0]["warnings"])  # the fallback is reported
    rows = list(csv.DictReader((Run(run).eval_dir / "patches.csv").open()))
    evaluated = {(r["product"], int(r["run"]), int(r["frame"]), int(r["vial"]), int(r["region"])): bool(int(r["flagged"])) for r in rows}

    tested = {k[0] for k in evaluated}
    strips = [p for p in sorted((vial_data / "images").glob("*_f01.png")) if p.name.split("_")[0] in tested][:3]  # frame index 0
    pred = predict(run, strips)
    sm = tf.saved_model.load(str(export(run, tmp_path / "sm")))
    patches = tmp_path / "patches"
    patches.mkdir()
    files, verdict_py = [], []
    for row in pred:
        name = Path(row["file"]).stem  # <product>_r<run>_f<frame>
        product, r, f = name.split("_")
        key = (product, int(r[1:]), int(f[1:]) - 1, row["vial"], row["region"])
        assert row["is_anomalous"] == evaluated[key], key  # evaluate == predict
        verdict_py.append(row["is_anomalous"])
    # the same patches, cut as predict cuts them, through the SavedModel and the binary
    from tfanomaly.data.sources import strip_boxes
    from tfanomaly.predict import _read, _resize

    x, regions = [], []
    for s in strips:
        img = _read(s, 1)
        for v, reg, (y0, x0, y1, x1) in strip_boxes(cfg):
            p = _resize(img[y0:y1, x0:x1], 32, 32, cfg.data.interpolation).astype(np.float32)
            x.append(p)
            regions.append(reg)
            files.append(patches / f"{s.stem}_v{v}_R{reg}.png")
            cv2.imwrite(str(files[-1]), np.round(p[..., 0] * 255).astype(np.uint8))
    got = sm.signatures["serving_default"](images=tf.constant(np.stack(x)), region=tf.constant(regions, tf.int32))
    assert got["is_anomalous"].numpy().tolist() == verdict_py  # Python SavedModel == predict
    r = run_cpp(binary, tmp_path / "sm", *files, "--json", "--batch", 20)
    assert r.returncode == 0, r.stderr
    assert [im["is_anomalous"] for im in json.loads(r.stdout)["images"]] == verdict_py  # C++ == Python


def test_cpp_fails_closed_on_non_finite_inputs(binary, exported, tmp_path):
    _, path = exported["region"]
    _, x = images(2, seed=6)
    x[1, 3, 3, 0] = np.nan
    files = []
    for i in range(2):
        files.append(tmp_path / f"n{i}_R1.npy")
        np.save(files[-1], x[i])
    r = run_cpp(binary, path, *files, "--json", "--batch", 2)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)  # valid JSON: no bare nan
    bad = out["images"][1]
    assert bad["score"] is None and bad["is_anomalous"] is True and "non-finite" in bad["error"]
    strip = out["strips"][0]
    assert strip["defective"] is True and strip["nonfinite_patches"] == 1 and strip["max_score"] is None
