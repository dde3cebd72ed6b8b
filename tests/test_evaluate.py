import csv
import json
import os

import keras
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from tests.conftest import save_run, vial_cfg
from tfanomaly.data.pipeline import Data
from tfanomaly.errors import UserError
from tfanomaly.evaluate import evaluate, score_test_set, split_products
from tfanomaly.files import recover_staged, staged_dir
from tfanomaly.models import registry


@pytest.fixture(scope="module")
def setup(vial_data, tmp_path_factory):
    cfg = vial_cfg(vial_data, "eval.per_region=true", "eval.calibration_fraction=0.5", "eval.k_of_n=[1, 2]")
    keras.utils.set_random_seed(0)
    model = registry.build(cfg)
    data = Data(cfg)
    scored = score_test_set(model, cfg, data)
    return cfg, model, data, scored, tmp_path_factory.mktemp("eval")


def test_report_files_and_numbers(setup):
    cfg, model, data, scored, tmp = setup
    out = tmp / "report"
    summary = evaluate(model, cfg, out, "youden", [0, 1], scored=scored, data=data)
    for f in ("metrics.json", "thresholds.json", "patches.csv", "regions.csv", "products.csv", "roc.png", "pr.png", "histogram.png", "worst_cases.png", "ranking.png", "report.html"):
        assert (out / f).exists(), f
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["image_auroc"]["mean"] == pytest.approx(summary["image_auroc"]["mean"])
    runs = summary["runs"]
    assert len(runs) == 2 and summary["image_auroc"]["mean"] == pytest.approx(np.mean([r["image"]["auroc"] for r in runs]))
    rows = list(csv.DictReader((out / "patches.csv").open()))
    assert len(rows) == len(scored.scores)
    rep = [r for r in rows if r["split"] == "reported"]
    auc = roc_auc_score([int(r["label"]) for r in rep], [float(r["score"]) for r in rep])
    assert auc == pytest.approx(runs[0]["image"]["auroc"], abs=1e-6)
    cal_products = {r["product"] for r in rows if r["split"] == "calibration"}
    assert cal_products.isdisjoint({r["product"] for r in rep})  # never calibrate on reported products
    th = json.loads((out / "thresholds.json").read_text())
    assert th["per_region"] is True and set(th["thresholds"]) == {"0", "1", "2", "3"}
    for r in rows:  # flagged column follows the saved per-region thresholds
        assert int(r["flagged"]) == int(float(r["score"]) >= th["thresholds"][r["region"]])
    prods = list(csv.DictReader((out / "products.csv").open()))
    for p in prods:  # k of n = 1 of 2: defective when any run is flagged
        assert (p["verdict"] == "defective") == (int(p["flagged_runs"]) >= int(p["needed"]))
    # Knapp: visible runs from the reported patches' labels, zones and quality factors from them
    seen = {}
    for r in rep:
        seen[(r["product"], r["run"])] = max(seen.get((r["product"], r["run"]), 0), int(r["label"]))
    fqm = fqa = 0.0
    for p in prods:
        visible = sum(v for (q, _), v in seen.items() if q == p["product"])
        assert int(p["visible_runs"]) == visible
        rate = visible / int(p["runs"])
        assert p["zone"] == ("reject" if rate >= 0.7 else "accept" if rate < 0.3 else "grey")
        if p["zone"] == "reject":
            fqm, fqa = fqm + rate, fqa + int(p["flagged_runs"]) / int(p["runs"])
    kn = runs[0]["knapp"]
    assert (kn["fqm"], kn["fqa"]) == pytest.approx((fqm, fqa))
    assert saved["knapp_ratio"]["mean"] == pytest.approx(np.nanmean([r["knapp"]["ratio"] for r in runs]))  # the line's keys, over seeds (NaN: a seed without reject-zone products)
    assert saved["strip_tpr"]["mean"] == pytest.approx(np.mean([r["strips"]["metrics"]["tpr"] for r in runs]))
    assert kn["counts"]["reject"] == sum(p["zone"] == "reject" for p in prods)
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and f"{summary['image_auroc']['mean']:.4f}" in html


def test_refuses_calibrating_on_the_reported_split(setup):
    cfg, model, data, scored, tmp = setup
    cfg.eval.calibration_fraction = 0.0
    try:
        with pytest.raises(UserError, match="calibrated on the split being reported"):
            evaluate(model, cfg, tmp / "same", scored=scored, data=data)
        summary = evaluate(model, cfg, tmp / "same", force_same_split=True, scored=scored, data=data)
        assert summary["calibrated_on_reported_split"] is True
        assert "calibrated on the reported split (forced)" in (tmp / "same" / "report.html").read_text()
    finally:
        cfg.eval.calibration_fraction = 0.5


def test_split_products_is_stratified_and_seeded():
    truth = {f"g{i}": 0 for i in range(6)} | {f"d{i}": 1 for i in range(4)}
    cal, rep = split_products(list(truth), 0.3, 0, truth)
    assert cal.isdisjoint(rep) and cal | rep == set(truth)
    assert sum(truth[p] for p in cal) >= 1 and sum(1 - truth[p] for p in cal) >= 1
    assert split_products(list(truth), 0.3, 0, truth) == (cal, rep)
    assert split_products(list(truth), 0.3, 1, truth) != (cal, rep)


def test_predict_strips(setup, tmp_path, vial_data):
    cfg, model, _, _, _ = setup
    from tfanomaly.predict import predict

    th = {"per_region": True, "thresholds": {"0": 0.1, "1": 0.2, "2": 0.3, "3": 0.4}}
    run = save_run(model, cfg, tmp_path / "run", th)
    strips = sorted((vial_data / "images").glob("*.png"))[:2]
    rows = predict(run, strips, tmp_path / "out.csv", tmp_path / "heat")
    assert len(rows) == 40 and {(r["vial"], r["region"]) for r in rows} == {(v, r) for v in range(5) for r in range(4)}
    for r in rows:
        assert r["is_anomalous"] == (r["score"] >= th["thresholds"][str(r["region"])])
    assert len(list((tmp_path / "heat").glob("*.png"))) == 40
    assert len((tmp_path / "out.csv").read_text().splitlines()) == 41


def test_predict_refuses_files_that_do_not_fit_and_names_each(setup, tmp_path, vial_data):
    """An RGB strip for a gray model and a 16-bit strip are refused (not
    converted), in one error that names both files and leaves the good one out."""
    import cv2

    from tfanomaly.errors import DataError
    from tfanomaly.predict import predict

    cfg, model, _, _, _ = setup
    run = save_run(model, cfg, tmp_path / "run")
    good = sorted((vial_data / "images").glob("*.png"))[0]
    img = cv2.imread(str(good), cv2.IMREAD_GRAYSCALE)
    rgb, deep = tmp_path / "rgb.png", tmp_path / "deep.png"
    cv2.imwrite(str(rgb), np.repeat(img[..., None], 3, -1))
    cv2.imwrite(str(deep), img.astype(np.uint16) * 256)
    with pytest.raises(DataError) as e:
        predict(run, [good, rgb, deep])
    msg = str(e.value)
    assert msg.startswith("2 of 3 images do not fit the model")
    assert f"{rgb}: 3 channel(s), expected 1" in msg and f"{deep}: uint16 samples, expected an 8-bit image" in msg and str(good) not in msg


def test_ranking_picks_the_extremes():
    from tfanomaly.report import ranking

    least, most = ranking(np.array([0.5, 0.1, 0.9, 0.3, 0.7]), 2)
    assert list(least) == [1, 3] and list(most) == [2, 4]
    least, most = ranking(np.array([0.2, 0.1, 0.3]), 8)
    assert list(least) == [1] and list(most) == [2]


def test_kill_9_during_eval_leaves_a_whole_report(setup, tmp_path, vial_data):
    """`tfanomaly eval` killed with SIGKILL at a random moment: the eval folder is
    the old report or the new one, whole (it is staged beside it and swapped in
    by renames), every file in it is complete, and the next evaluation removes
    what a kill leaves beside it."""
    import subprocess
    import sys
    import time

    import cv2

    from tests.conftest import stop_group

    cfg, model, data, scored, _ = setup
    run = save_run(model, cfg, tmp_path / "run")
    out = tmp_path / "run" / "eval"
    evaluate(model, cfg, out, "youden", [0], scored=scored, data=data)
    stale = [out / ".metrics.json.ab12_xyz", out / ".roc.tmp.png"]  # what a kill during a write leaves
    for p in stale:
        p.write_bytes(b"partial")
    (tmp_path / "run" / ".eval.staging-9000001").mkdir()  # a kill while staging an earlier evaluation
    (tmp_path / "run" / ".eval.staging-9000001" / "metrics.json").write_text("{")
    cmd = [sys.executable, "-m", "tfanomaly.cli.app", "eval", "--model", str(run)]
    child = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        time.sleep(float(np.random.default_rng().uniform(2.0, 12.0)))
        stop_group(child)
    finally:
        stop_group(child)
    recover_staged(out)  # what the next evaluation does first: a kill between the swap's two renames is finished
    names = {p.name for p in out.iterdir()}
    assert {"metrics.json", "report.html", "patches.csv", "thresholds.json", "roc.png"} <= names  # a whole report
    for p in out.iterdir():
        if p.name.startswith("."):
            continue
        if p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".png":
            assert cv2.imread(str(p)) is not None, p
        elif p.suffix == ".csv":
            rows = list(csv.reader(p.open()))
            assert rows and all(len(r) == len(rows[0]) for r in rows), p
        elif p.suffix == ".html":
            assert p.read_text().rstrip().endswith("</html>"), p
    evaluate(model, cfg, out, "youden", [0], scored=scored, data=data)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".eval")]
    assert json.loads((out / "metrics.json").read_text())["seeds"] == [0]


def test_staged_dir_replaces_a_folder_as_one_unit(tmp_path):
    """staged_dir: the new folder replaces the old one whole (no old file left);
    an error inside keeps the old folder as it was; recover_staged finishes a
    swap killed between its two renames, and deletes a half-written stage."""
    target = tmp_path / "eval"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with staged_dir(target) as stage:
        assert stage.parent == tmp_path and not (stage / "old.txt").exists()
        (stage / "new.txt").write_text("new")
        assert (target / "old.txt").exists()  # readers still see the old folder
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["eval"]

    with pytest.raises(RuntimeError):
        with staged_dir(target) as stage:
            (stage / "half.txt").write_text("half")
            raise RuntimeError("scoring failed")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["eval"]

    # killed between the renames: eval moved aside, the complete stage not yet renamed
    target.rename(tmp_path / ".eval.old-9000123")
    (tmp_path / ".eval.staging-9000123").mkdir()
    (tmp_path / ".eval.staging-9000123" / "newer.txt").write_text("newer")
    (tmp_path / ".eval.staging-9000077").mkdir()  # another, half-written
    recover_staged(target)
    assert sorted(p.name for p in target.iterdir()) == ["newer.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["eval"]
    # killed after the first rename with the stage gone: the old folder comes back
    target.rename(tmp_path / ".eval.old-9000005")
    recover_staged(target)
    assert sorted(p.name for p in target.iterdir()) == ["newer.txt"]
    # the stage of an evaluation still running (this test's parent process stands in for it) is left to it
    running = tmp_path / f".eval.staging-{os.getppid()}"
    running.mkdir()
    recover_staged(target)
    assert running.is_dir()


def test_eval_refuses_an_output_folder_that_is_not_an_evaluation(setup, tmp_path):
    cfg, model, data, scored, _ = setup
    out = tmp_path / "somewhere"
    out.mkdir()
    (out / "model.keras").write_text("not to be lost")
    with pytest.raises(UserError, match=r"somewhere: not empty and not an earlier evaluation"):
        evaluate(model, cfg, out, "youden", [0], scored=scored, data=data)
    assert (out / "model.keras").read_text() == "not to be lost"
