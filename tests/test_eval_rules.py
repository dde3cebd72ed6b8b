import json

import numpy as np
import pytest
from sklearn import metrics as skm

from tfanomaly import aggregation, metrics, thresholds
from tfanomaly.decision import Decision
from tfanomaly.thresholds import ThresholdError, calibrate

LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 0, 1, 0])
SCORES = np.array([0.1, 0.2, 0.2, 0.4, 0.35, 0.8, 0.9, 0.5, 0.5, 0.3])


def test_youden_by_hand():
    # candidates >= t: t=0.35 -> TPR 4/4, FPR 2/6 (0.4, 0.5) -> J = 0.667; t=0.5 -> TPR 3/4, FPR 1/6 -> J = 0.583.
    # The threshold is the middle of the gap between 0.35 and the next lower score, 0.3.
    t = calibrate("youden", LABELS, SCORES)
    assert t == pytest.approx(0.325)
    np.testing.assert_array_equal(SCORES >= t, SCORES >= 0.35)  # same calibration verdicts


def test_max_accuracy_by_hand_with_ties():
    # t=0.35: 8/10 correct; t=0.4: 7/10; t=0.5: 8/10; t=0.8: 8/10 (2 FN, 0 FP); t=0.9: 7/10.
    # Three-way tie: the highest threshold (fewest alarms) wins, placed mid-gap to the next score (0.5).
    assert calibrate("max_accuracy", LABELS, SCORES) == pytest.approx(0.65)
    # perfectly separated classes: the middle between the highest good and the lowest defective score
    assert calibrate("max_accuracy", [0, 0, 1, 1], [0.1, 0.2, 0.6, 0.7]) == pytest.approx(0.4)
    assert calibrate("youden", [0, 0, 1, 1], [0.1, 0.2, 0.6, 0.7]) == pytest.approx(0.4)


def test_zero_fn_flags_every_defect():
    t = calibrate("zero_fn", LABELS, SCORES)
    assert t == 0.35 and np.all(SCORES[LABELS == 1] >= t)


def test_good_only_rules_by_hand():
    good = SCORES[LABELS == 0]  # 0.1 0.2 0.2 0.4 0.5 0.3
    assert calibrate("n_sigma", LABELS, SCORES, n_sigma=2) == pytest.approx(good.mean() + 2 * good.std())
    assert calibrate("percentile", LABELS, SCORES, percentile=50) == pytest.approx(0.25)
    q1, q3 = 0.2, 0.375  # numpy linear percentiles of the 6 good scores
    assert calibrate("iqr", LABELS, SCORES, iqr_k=1.5) == pytest.approx(q3 + 1.5 * (q3 - q1))
    assert calibrate("n_sigma", np.zeros(3), [1.0, 2.0, 3.0]) > 3.0  # works without any defective sample


def test_degenerate_cases_are_clear_errors():
    with pytest.raises(ThresholdError, match="zero_fn needs defective calibration samples, got none"):
        calibrate("zero_fn", [0, 0], [0.1, 0.2])
    with pytest.raises(ThresholdError, match="all 4 calibration scores are equal"):
        calibrate("youden", [0, 1, 0, 1], [0.3] * 4)
    with pytest.raises(ThresholdError, match="needs good calibration samples"):
        calibrate("percentile", [1, 1], [0.1, 0.2])


def test_per_region_thresholds_and_fallback():
    regions = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    labels = np.array([0, 0, 1, 1, 0, 0, 0, 0, 0, 0])
    scores = np.array([0.1, 0.2, 0.6, 0.7, 0.3, 0.5, 0.55, 0.4, 0.45, 0.5])
    thr, warn = thresholds.calibrate_per_region("youden", labels, scores, regions)
    assert thr[0] == pytest.approx(0.45)  # between the good 0.3 and the defective 0.6
    good1 = scores[5:]  # region 1 has no defect: n_sigma on its own good scores
    assert thr[1] == pytest.approx(good1.mean() + 3.0 * good1.std()) and "region R1 uses n_sigma" in warn[0]
    thr, warn = thresholds.calibrate_per_region("youden", labels, scores, np.array([0] * 9 + [1]))
    assert thr[1] == pytest.approx(scores[9])  # one good sample: std 0
    thr, warn = thresholds.calibrate_per_region("youden", labels, scores, regions, cover=[0, 1, 2])
    assert thr[2] == calibrate("youden", labels, scores) and "R2 has no calibration sample" in warn[-1]
    np.testing.assert_array_equal(Decision("youden", {0: 0.6, 1: 0.7}).flags([0.65, 0.65], [0, 1]), [True, False])


def test_metrics_equal_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    s = rng.normal(size=200) + y
    assert metrics.roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s))
    assert metrics.pr_auc(y, s) == pytest.approx(skm.average_precision_score(y, s))
    a = metrics.at_threshold(y, s, 0.4)
    pred = (s >= 0.4).astype(int)
    assert a["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert a["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert a["recall"] == pytest.approx(skm.recall_score(y, pred))
    assert a["f1"] == pytest.approx(skm.f1_score(y, pred))
    tn, fp, fn, tp = skm.confusion_matrix(y, pred).ravel()
    assert (a["tn"], a["fp"], a["fn"], a["tp"]) == (tn, fp, fn, tp)
    assert a["tnr"] == pytest.approx(tn / (tn + fp))


def test_optimal_accuracy_by_hand():
    o = metrics.optimal_accuracy([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9])
    assert o["accuracy"] == pytest.approx(0.5) or o["tpr"] == pytest.approx(o["tnr"])
    o = metrics.optimal_accuracy([0, 0, 1, 1], [0.1, 0.2, 0.4, 0.9])
    assert o["accuracy"] == 1.0 and o["threshold"] == 0.4


def test_pixel_auroc_and_aupro():
    masks = np.zeros((2, 8, 8), bool)
    masks[0, 2:4, 2:4] = True
    heat = np.zeros((2, 8, 8), np.float32)
    heat[0, 2:4, 2:4] = 1.0
    assert metrics.pixel_auroc(masks, heat) == 1.0
    assert metrics.aupro(masks, heat) == pytest.approx(1.0, abs=0.02)
    assert metrics.pixel_auroc(masks, 1.0 - heat) == 0.0


def test_per_run_max_and_k_of_n_boundary():
    products = ["A"] * 4 + ["B"] * 2
    runs = [1, 1, 2, 2, 1, 1]
    m = aggregation.per_run_max(products, runs, [0.1, 0.7, 0.2, 0.3, 0.9, 0.4])
    assert m == {("A", 1): 0.7, ("A", 2): 0.3, ("B", 1): 0.9}
    flags = {("P", r): r <= 7 for r in range(1, 11)}  # 7 of 10 runs flag
    assert aggregation.k_of_n(flags, 7, 10)["P"]["defective"] is True
    flags = {("P", r): r <= 6 for r in range(1, 11)}  # 6 of 10: not enough
    v = aggregation.k_of_n(flags, 7, 10)["P"]
    assert v["defective"] is False and v["flagged_runs"] == 6 and v["needed"] == 7
    # 5 runs present: k scales to ceil(7 * 5 / 10) = 4
    assert aggregation.k_of_n({("Q", r): r <= 4 for r in range(5)}, 7, 10)["Q"]["needed"] == 4


def test_knapp_zones_and_quality_factors_by_hand():
    # (visible runs, flagged runs) of 10: two reject-zone defects (one missed by 7 of 10), one
    # grey-zone defect (visible in 5 runs), a defect visible in 2 runs (accept zone) and two good
    # products, one of them rejected
    cases = {"D1": (10, 9), "D2": (7, 6), "G1": (5, 5), "A1": (2, 2), "N1": (0, 0), "N2": (0, 8)}
    flags = {(p, r): r < f for p, (_, f) in cases.items() for r in range(10)}
    verdicts = aggregation.k_of_n(flags, 7, 10)
    k = aggregation.knapp(verdicts, {p: v for p, (v, _) in cases.items() if v}, (0.3, 0.7))
    assert k["zone"] == {"D1": "reject", "D2": "reject", "G1": "grey", "A1": "accept", "N1": "accept", "N2": "accept"}
    assert k["counts"] == {"reject": 2, "grey": 1, "accept": 3}
    assert k["fqm"] == pytest.approx(1.0 + 0.7) and k["fqa"] == pytest.approx(0.9 + 0.6)
    assert k["ratio"] == pytest.approx(1.5 / 1.7)
    # reject zone: D1 caught, D2 missed; accept zone: A1 and N1 pass, N2 rejected; G1 not counted
    assert (k["tpr"], k["tnr"], k["accuracy"]) == pytest.approx((0.5, 2 / 3, 3 / 5))


def test_best_and_zfn_accuracy_by_hand():
    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    scores = [0.1, 0.2, 0.6, 0.7, 0.3, 0.8, 0.9, 0.95]
    # best threshold 0.8: flags 0.8, 0.9, 0.95 -> 3 TP + 4 TN = 7/8
    assert metrics.max_accuracy(labels, scores) == pytest.approx(7 / 8)
    # ZFN threshold = lowest defect 0.3: flags 0.3 and up -> 4 TP, TN only 0.1 and 0.2 -> 6/8
    assert metrics.zfn_accuracy(labels, scores) == pytest.approx(6 / 8)
    # brute force over every threshold agrees with the ROC-based max
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = rng.normal(size=300) + y
    brute = max(np.mean((s >= t) == (y == 1)) for t in np.append(s, np.inf))
    assert metrics.max_accuracy(y, s) == pytest.approx(brute)
    assert metrics.zfn_accuracy(y, s) == pytest.approx(np.mean((s >= s[y == 1].min()) == (y == 1)))
    m = metrics.image_metrics(y, s)
    assert m["max_accuracy"] >= m["zfn_accuracy"] and np.isnan(metrics.zfn_accuracy([0, 0], [1, 2]))


def test_decision_fails_closed_and_refuses_unknown_regions(tmp_path):
    from tfanomaly.errors import UserError

    d = Decision("youden", {0: 0.5, 2: 0.7}, [7, 10])
    np.testing.assert_array_equal(d.flags([0.4, np.nan, np.inf, -np.inf, 0.69], [0, 0, 2, 2, 2]), [False, True, True, True, False])
    with pytest.raises(UserError, match=r"no threshold for region 1; the model knows regions 0, 2"):
        d.flags([0.1], [1])
    assert d.region_table()[1] == [True, False, True]
    d.save(tmp_path / "t.json")
    back = Decision.load(tmp_path / "t.json")
    assert back.thresholds == {0: 0.5, 2: 0.7} and back.k_of_n == [7, 10] and back.per_region
    assert json.loads((tmp_path / "t.json").read_text())["format_version"] == 1
    g = Decision("youden", 0.3)
    np.testing.assert_array_equal(g.flags([0.2, 0.3, np.nan]), [False, True, True])
    # an older file without a version still loads
    (tmp_path / "old.json").write_text(json.dumps({"rule": "youden", "per_region": False, "thresholds": 0.25}))
    assert Decision.load(tmp_path / "old.json").thresholds == 0.25
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(UserError, match=r"bad.json: not a thresholds file"):
        Decision.load(tmp_path / "bad.json")


def test_a_nan_patch_is_not_dropped_from_its_run_maximum():
    runs = aggregation.per_run_max(["p", "p", "q"], [0, 0, 0], [0.2, np.nan, 0.1])
    assert runs[("p", 0)] == np.inf and runs[("q", 0)] == 0.1
