"""The vial line's test kit and its decisions (issue 15): the kit generator,
strip and product metrics, heatmap scores, rank images at evaluation."""

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import tensorflow as tf
from scipy.ndimage import gaussian_filter

from tests.conftest import save_run, vial_cfg
from tfanomaly import thresholds
from tfanomaly.data.sources import build_index
from tfanomaly.data.synth import synth_kit, synth_vials
from tfanomaly.errors import ConfigError, UserError
from tfanomaly.models import registry
from tfanomaly.run import Run


def defect_stats(root):
    """Per defect kind: mean mask area (px) and mean contrast (mean gray inside
    the mask minus its 7x7 ring) over every frame where the defect is visible."""
    rows = [r for r in csv.DictReader((root / "products.csv").open()) if r["label"] == "1"]
    out = {}
    for r in rows:
        for m in sorted((root / "masks").glob(f"{r['product']}_*.png")):
            mask = cv2.imread(str(m), 0) > 127
            img = cv2.imread(str(root / "images" / m.name), 0).astype(np.float64)
            ring = cv2.dilate(mask.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool) & ~mask
            out.setdefault(r["defect"], []).append((mask.sum(), img[mask].mean() - img[ring].mean()))
    return {k: np.mean(v, axis=0) for k, v in out.items()}


# the generator's defects as of the kit's introduction: a kit must not get easier than this
FROZEN = {  # kind: (mask area px, contrast gray levels), seed 7, 2 products per kind, 2 runs x 2 frames
    "black_spot": (59.67, -107.86),
    "burn": (233.0, -34.87),
    "deformation": (246.0, -11.21),
    "foam": (411.33, -2.03),
    "particle": (49.0, -104.3),
    "scratch": (112.0, 12.71),
}


def test_defect_appearance_is_frozen(tmp_path):
    synth_vials(tmp_path, good=1, defective=12, runs=2, frames=2, seed=7)
    got = defect_stats(tmp_path)
    assert set(got) == set(FROZEN)
    for kind, (area, contrast) in FROZEN.items():
        assert got[kind][0] == pytest.approx(area, rel=0.02), kind
        assert got[kind][1] == pytest.approx(contrast, abs=0.5), kind


def test_kit_is_a_separate_evaluation_set(tmp_path):
    info = synth_kit(tmp_path / "kit", good=2, defective=2, runs=1, frames=4, seed=1000)
    assert info == {"products": 4, "good": 2, "defective": 2, "images": 16}
    rows = list(csv.DictReader((tmp_path / "kit" / "products.csv").open()))
    assert [r["product"] for r in rows] == ["K001", "K002", "K003", "K004"]
    assert {r["subset"] for r in rows} == {"test"}
    # the same generator: a kit is synth_vials with its own names and seed
    synth_vials(tmp_path / "same", good=2, defective=2, runs=1, frames=4, seed=1000, prefix="K")
    for p in sorted((tmp_path / "kit" / "images").glob("*.png")):
        np.testing.assert_array_equal(cv2.imread(str(p), 0), cv2.imread(str(tmp_path / "same" / "images" / p.name), 0))
    # every kit product is evaluated, none trains, whatever data.split says
    idx = build_index(vial_cfg(tmp_path / "kit", "data.split.train_fraction=1.0"))
    assert {it.subset for it in idx.items} == {"test"} and len(idx.items) == 4


def test_a_defect_sliver_in_the_neighbouring_region_is_not_that_patch(tmp_path):
    """data.strip.min_defect_share: with 0.25, a box holding 6 of a vial's 30 mask
    pixels (a particle's margin across the region border) is a good patch with no
    mask, the box holding the other 24 is defective; a scratch split 50/50 over two
    regions is defective in both; with 0 (the default) any mask pixel counts."""
    from tfanomaly.data.pipeline import Data

    root = tmp_path / "kit"
    synth_kit(root, good=1, defective=1, runs=1, frames=4, seed=3)
    defective = next(r["product"] for r in csv.DictReader((root / "products.csv").open()) if r["label"] == "1")
    mask = np.zeros((256, 320), np.uint8)
    mask[206:208, 70:73] = 255  # vial 1: 6 px in R2 (rows 112-208) ...
    mask[208:214, 70:74] = 255  # ... and 24 px in R3 (rows 208-256)
    mask[180:240, 200:202] = 255  # vial 3: a line of 56 px in R2 and 64 px in R3
    for f in range(1, 5):
        cv2.imwrite(str(root / "masks" / f"{defective}_r01_f{f:02d}.png"), mask)

    def labels(share):
        cfg = vial_cfg(root, "data.eval_frames=[0]", f"data.strip.min_defect_share={share}")
        got = {}
        for e in Data(cfg).patches("test", False).as_numpy_iterator():
            if e["product"].decode() == defective:
                got[(int(e["vial"]), int(e["region"]))] = (int(e["label"]), bool((e["mask"] > 0).any()))
        return got

    assert {k for k, v in labels(0.0).items() if v[0]} == {(1, 2), (1, 3), (3, 2), (3, 3)}
    got = labels(0.25)
    assert {k for k, v in got.items() if v[0]} == {(1, 3), (3, 2), (3, 3)}
    assert got[(1, 2)] == (0, False) and all(v == (1, True) for k, v in got.items() if v[0])
    with pytest.raises(ConfigError, match=r"data.strip.min_defect_share"):
        vial_cfg(root, "data.strip.min_defect_share=1.5")


def test_products_csv_subset_column_is_checked(tmp_path):
    synth_vials(tmp_path, good=1, defective=1, runs=1, frames=4, seed=3)
    rows = list(csv.DictReader((tmp_path / "products.csv").open()))
    bad = next(r for r in rows if r["label"] == "1")["product"]
    with (tmp_path / "products.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[*rows[0], "subset"])
        w.writeheader()
        w.writerows({**r, "subset": "train"} for r in rows)
    with pytest.raises(UserError, match=rf"products.csv: line \d: product {bad} is defective .* subset is train"):
        build_index(vial_cfg(tmp_path))


def test_strip_and_product_metrics_by_hand(tmp_path):
    """Two runs of a good product and two of a defective one whose defect is
    hidden in its second run: strips are judged by what they show, products by
    their label."""
    from tfanomaly.evaluate import Scored, evaluate_split

    cfg = vial_cfg("unused", "eval.k_of_n=[1, 2]", "eval.product_level=false")
    products = np.array(["G"] * 4 + ["D"] * 4 + ["C"] * 4 + ["E"] * 4)
    runs = np.array([0, 0, 1, 1] * 4)
    labels = np.array([0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.9, 0.2, 0.95, 0.1, 0.1, 0.1, 0.2, 0.1, 0.2, 0.2, 0.9, 0.1, 0.95])
    n = len(scores)
    s = Scored(scores, labels, products, runs, np.zeros(n, int), np.zeros(n, int), np.zeros(n, int), np.zeros((n, 2, 2), np.float16), np.zeros((n, 2, 2), bool))
    cal = np.isin(products, ["C", "E"])
    res = evaluate_split(s, cfg, "youden", cal, ~cal, per_region=False)
    t = res["thresholds"]
    assert 0.2 < t <= 0.9  # youden on C (good) and E (defective) patches
    # strips: G r0 good/pass, G r1 good/flag (0.9), D r0 defect/flag, D r1 hidden (good)/pass
    m = res["strips"]["metrics"]
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (1, 1, 0, 2)
    assert res["strips"]["patches_per_strip"] == 2
    # products (1 of 2 runs): G flagged (wrong), D flagged (right)
    pm = res["products"]["metrics"]
    assert (pm["tp"], pm["fp"], pm["fn"], pm["tn"]) == (1, 1, 0, 0)


def test_product_level_calibrates_region_thresholds_on_run_maxima():
    """eval.product_level: each region's threshold is calibrated on per-run
    maxima of that region, and strips are flagged by those same thresholds
    (any patch), as every other door flags them."""
    from tfanomaly.evaluate import Scored, evaluate_split

    cfg = vial_cfg("unused", "eval.k_of_n=[1, 2]", "eval.product_level=true")
    # calibration products C (good) and E (defective in region 1, run 0), 2 runs x 2 regions x 2 patches
    products = np.array(["C"] * 8 + ["E"] * 8 + ["G"] * 8)
    runs = np.array([0, 0, 0, 0, 1, 1, 1, 1] * 3)
    regions = np.array([0, 0, 1, 1] * 6)
    labels = np.zeros(24, int)
    labels[[10, 11]] = 1  # E run 0 region 1: both patches show the defect
    scores = np.array(
        [
            0.10,
            0.15,
            0.30,
            0.50,
            0.12,
            0.11,
            0.40,
            0.20,  # C
            0.14,
            0.13,
            0.60,
            0.45,
            0.13,
            0.12,
            0.35,
            0.25,  # E: region 1 run 0 has max .60
            0.12,
            0.16,
            0.52,
            0.20,
            0.10,
            0.10,
            0.30,
            0.30,
        ]
    )  # G (reported)
    n = len(scores)
    s = Scored(scores, labels, products, runs, np.zeros(n, int), np.zeros(n, int), regions, np.zeros((n, 2, 2), np.float16), np.zeros((n, 2, 2), bool))
    cal = products != "G"
    res = evaluate_split(s, cfg, "youden", cal, ~cal, per_region=True)
    # region 1 run maxima: good .50 .40 .35, defective .60 -> midway between .50 and .60
    assert res["thresholds"][1] == pytest.approx(0.55)
    # patch by patch, Youden would take .45 (TPR 1, FPR 1/6) and sit at .425, flagging G's .52
    patch_t, _ = thresholds.calibrate_per_region("youden", labels[cal], scores[cal], regions[cal])
    assert patch_t[1] == pytest.approx(0.425)
    # region 0 has no defect: n_sigma on its good run maxima (4 runs: .15 .12 .14 .13)
    r0 = np.array([0.15, 0.12, 0.14, 0.13])
    assert res["thresholds"][0] == pytest.approx(r0.mean() + 3 * r0.std())  # 0.1685
    # G's strips: run 0 (.16 < .1685 in region 0, .52 < .55 in region 1) and run 1 pass; the strip
    # flags are the decision's patch flags, any per run
    flags = res["decision"].flags(scores[~cal], regions[~cal])
    assert not flags.any()
    m = res["strips"]["metrics"]
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (0, 0, 0, 2)


def tiny_grdnet(*extra):
    cfg = vial_cfg("unused", *extra)
    tf.keras.utils.set_random_seed(0)
    return registry.build(cfg), cfg


def test_residual_score_is_the_max_of_the_smoothed_residual():
    model, _ = tiny_grdnet("model.score=residual", "model.score_sigma=1.0")
    x = tf.random.stateless_uniform([3, 32, 32, 1], [1, 2])
    out = model.score(x)
    x_hat = model.decoder(model.encoder(x)).numpy()
    res = np.abs(x.numpy() - x_hat)[..., 0]
    want = np.stack([gaussian_filter(r.astype(np.float64), 1.0, mode="constant", truncate=3.0) for r in res])
    np.testing.assert_allclose(out["heatmap"].numpy()[..., 0], want, atol=1e-5)
    np.testing.assert_allclose(out["score"].numpy(), want.max(axis=(1, 2)), atol=1e-5)
    np.testing.assert_allclose(out["reconstruction"].numpy(), x_hat, atol=1e-6)


def test_ssim_map_score_and_option_checks():
    model, _ = tiny_grdnet("model.score=ssim_map", "model.score_sigma=0")
    x = tf.random.stateless_uniform([2, 32, 32, 1], [3, 4])
    out = model.score(x)
    from tfanomaly import losses

    want = 1.0 - losses.ssim_map(x, out["reconstruction"], model.cfg.ssim_window)
    np.testing.assert_allclose(out["heatmap"].numpy(), want.numpy(), atol=1e-6)
    np.testing.assert_allclose(out["score"].numpy(), want.numpy().max(axis=(1, 2, 3)), atol=1e-6)
    with pytest.raises(ConfigError, match="model.score: the full variant scores with its U-Net map"):
        vial_cfg("unused", "model.variant=full", "model.score=residual")
    with pytest.raises(UserError, match="grdnet has no score option 'widths'"):
        model.set_score_options({"widths": [8]})
    full, _ = tiny_grdnet("model.variant=full")
    with pytest.raises(ConfigError, match="full variant"):
        full.set_score_options({"score": "residual"})


def test_shift_tolerant_maps_against_numpy_and_what_they_forgive():
    """model.score_shift [dy, dx]: the map is the pixelwise min over G(X) shifted by
    -dy..dy rows, -dx..dx columns (mirrored edges), then smoothed: checked against
    numpy; a G(X) that draws a horizontal line 2 rows off costs nothing with dy = 2,
    while a spot that G(X) lacks keeps its full value."""
    from tfanomaly.models.grdnet import score_map

    g = np.random.default_rng(0)
    x = g.uniform(0.3, 0.5, (2, 32, 32, 1)).astype(np.float32)
    x_hat = g.uniform(0.3, 0.5, (2, 32, 32, 1)).astype(np.float32)

    def moved(a, dy, dx, m):  # numpy reference of the shift: mirror-pad by the max, then a window
        p = np.pad(a, [(0, 0), (m[0], m[0]), (m[1], m[1]), (0, 0)], mode="symmetric")
        return p[:, m[0] - dy : m[0] - dy + 32, m[1] - dx : m[1] - dx + 32]

    want = np.min([np.abs(x - moved(x_hat, dy, dx, (2, 1))) for dy in range(-2, 3) for dx in range(-1, 2)], axis=0)
    want = np.stack([gaussian_filter(w[..., 0].astype(np.float64), 1.0, mode="constant", truncate=3.0) for w in want])[..., None]
    got = score_map(tf.constant(x), tf.constant(x_hat), "residual", 1.0, 11, (2, 1)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert (score_map(tf.constant(x), tf.constant(x_hat), "residual", 0.0, 11, (2, 1)).numpy() <= np.abs(x - x_hat) + 1e-7).all()
    # a meniscus-like dark line at row 14 in X, at row 16 in G(X); plus a bright spot only in X
    flat = np.full((1, 32, 32, 1), 0.6, np.float32)
    xi, gi = flat.copy(), flat.copy()
    xi[0, 14, 4:28], gi[0, 16, 4:28] = 0.1, 0.1
    spot = xi.copy()
    spot[0, 24:27, 8:11] = 1.0
    for kind in ("residual", "ssim_map"):
        base = score_map(tf.constant(xi), tf.constant(gi), kind, 0.0, 7).numpy().max()
        tol = score_map(tf.constant(xi), tf.constant(gi), kind, 0.0, 7, (2, 0)).numpy().max()
        assert base > 0.3 and tol < 1e-4, (kind, base, tol)
        with_spot = score_map(tf.constant(spot), tf.constant(gi), kind, 0.0, 7, (2, 0)).numpy()[0, 22:29, 6:13].max()
        alone = score_map(tf.constant(spot), tf.constant(xi), kind, 0.0, 7).numpy()[0, 22:29, 6:13].max()
        assert with_spot == pytest.approx(alone, rel=1e-4), kind  # the spot is nowhere in G(X): nothing forgiven
    model, _ = tiny_grdnet("model.score=ssim_map", "model.score_shift=[2, 0]")
    out = model.score(tf.constant(x))
    ref = score_map(tf.constant(x), out["reconstruction"], "ssim_map", model.cfg.score_sigma, model.cfg.ssim_window, (2, 0)).numpy()
    np.testing.assert_allclose(out["heatmap"].numpy(), ref, atol=1e-6)
    with pytest.raises(ConfigError, match="model.score_shift: shifts apply to the maps of model.score: residual or ssim_map"):
        vial_cfg("unused", "model.score_shift=[2, 0]")  # score: ssim, one number per patch
    with pytest.raises(ConfigError, match=r"model.score_shift: expected a list of integers, every item >= 0, got \[-1, 0\]"):
        vial_cfg("unused", "model.score=ssim_map", "model.score_shift=[-1, 0]")
    with pytest.raises(ConfigError, match=r"model.score_shift\[0\]: expected an integer, got 1.5"):
        model.set_score_options({"score_shift": [1.5, 0]})  # options from a thresholds file get the same checks
    with pytest.raises(ConfigError, match="model.score_shift: expected shifts smaller than data.image_size"):
        vial_cfg("unused", "model.score=ssim_map", "model.score_shift=[32, 0]")


def test_score_options_travel_with_the_thresholds(vial_data, tmp_path):
    """Evaluated with model.score: residual, a run trained with the default score
    keeps the option in thresholds.json; export and predict score with it."""
    from tfanomaly.evaluate import evaluate
    from tfanomaly.export import export
    from tfanomaly.predict import predict

    model, cfg = tiny_grdnet(f"data.root={vial_data}")
    run = Run(save_run(model, cfg, tmp_path / "run"))  # config.yaml says score: ssim
    ev_cfg = vial_cfg(vial_data, "model.score=residual", "model.score_sigma=2.0", "model.score_shift=[1, 0]", "eval.per_region=true", "eval.calibration_fraction=0.5")
    evaluate(run.load_model(), ev_cfg, run.eval_dir, "youden", [0])
    th = json.loads(run.thresholds_file.read_text())
    assert th["score_options"] == {"score": "residual", "score_sigma": 2.0, "score_shift": [1, 0], "score_pool": ev_cfg.model.score_pool, "heatmap_sigma": 0.0}
    ref, _ = tiny_grdnet("model.score=residual", "model.score_sigma=2.0", "model.score_shift=[1, 0]")
    ref.set_weights(model.get_weights())
    x = tf.random.stateless_uniform([4, 32, 32, 1], [5, 6])
    want = ref.score(x)["score"].numpy()
    sm_path = export(run.path, tmp_path / "sm")
    meta = json.loads((Path(sm_path) / "tfanomaly.json").read_text())
    assert meta["score_options"] == {"score": "residual", "score_sigma": 2.0, "score_shift": [1, 0], "score_pool": ev_cfg.model.score_pool, "heatmap_sigma": 0.0}
    assert meta["aggregation"]["patches_per_strip"] == 2 * 20  # eval_frames [0, 2] x 5 vials x 4 regions
    sm = tf.saved_model.load(str(sm_path))
    got = sm.signatures["serving_default"](images=x, region=tf.zeros([4], tf.int32))["score"].numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)
    strip = sorted((vial_data / "images").glob("*_f01.png"))[0]
    rows = predict(run.path, [strip])
    from tfanomaly.data.sources import strip_boxes
    from tfanomaly.predict import _read, _resize

    img = _read(strip, 1)
    patches = [_resize(img[y0:y1, x0:x1], 32, 32, cfg.data.interpolation) for _, _, (y0, x0, y1, x1) in strip_boxes(cfg)]
    np.testing.assert_allclose([r["score"] for r in rows], ref.score(np.stack(patches).astype(np.float32))["score"].numpy(), atol=1e-5)


def test_rank_images_scored_at_eval(vial_data):
    """eval_ranks adds the darkest-value image of each acquisition to the scored
    patches (frame -1), cut and resized like a frame, with the union of the
    acquisition's masks."""
    from tfanomaly.data.pipeline import Data
    from tfanomaly.data.sources import strip_boxes

    cfg = vial_cfg(vial_data, "data.eval_frames=[]", "data.eval_ranks=[1]")
    data = Data(cfg)
    assert data.count("test", False) == len(data.index.subset("test")) * 20
    it = data.index.subset("test")[0]
    got = [e for e in data.patches("test", False).take(20).as_numpy_iterator()]
    assert {int(e["frame"]) for e in got} == {-1} and {int(e["rank"]) for e in got} == {1}
    frames = np.stack([cv2.imread(p, 0) for p in it.paths])
    low = frames.min(axis=0).astype(np.float32)
    masks = np.stack([cv2.imread(m, 0) if m else np.zeros_like(frames[0]) for m in it.masks]).max(axis=0)
    for e, (_, _, (y0, x0, y1, x1)) in zip(got, strip_boxes(cfg)):
        want = tf.image.resize(low[y0:y1, x0:x1, None], [32, 32], cfg.data.interpolation).numpy()
        np.testing.assert_array_equal(e["image"], np.clip(np.round(want), 0, 255).astype(np.uint8))
        m = tf.image.resize(masks[y0:y1, x0:x1, None], [32, 32], "nearest").numpy()
        assert int(e["label"]) == int(m.max() > 127)
    with pytest.raises(ConfigError, match="data.eval_frames: expected at least one frame"):
        vial_cfg(vial_data, "data.eval_frames=[]")
    with pytest.raises(ConfigError, match=r"data.eval_ranks: expected ranks in \[1, 4\]"):
        vial_cfg(vial_data, "data.eval_ranks=[5]")


def test_train_frames_select_what_trains(vial_data):
    """data.train_frames: [] trains on the rank images alone (here the 2nd
    darkest value of 4 frames, a median-like image), with the counts to match;
    a list of frames trains on those frames only."""
    from tfanomaly.data.pipeline import Data
    from tfanomaly.data.sources import strip_boxes

    cfg = vial_cfg(vial_data, "data.train_frames=[]", "data.rank_images=[2]")
    data = Data(cfg)
    train = data.index.subset("train")
    assert data.count("train", True) == len(train) * 20
    got = list(data.patches("train", True).take(20).as_numpy_iterator())
    assert {int(e["rank"]) for e in got} == {2} and {int(e["frame"]) for e in got} == {-1}
    it = train[0]
    second = np.sort(np.stack([cv2.imread(p, 0) for p in it.paths]), axis=0)[1].astype(np.float32)
    by_box = {(int(e["vial"]), int(e["region"])): e["image"] for e in got if e["product"].decode() == it.product and int(e["run"]) == it.run}
    assert len(by_box) == 20
    for v, r, (y0, x0, y1, x1) in strip_boxes(cfg):
        want = tf.image.resize(second[y0:y1, x0:x1, None], [32, 32], cfg.data.interpolation).numpy()
        np.testing.assert_array_equal(by_box[(v, r)], np.clip(np.round(want), 0, 255).astype(np.uint8))

    cfg = vial_cfg(vial_data, "data.train_frames=[0, 3]", "data.rank_images=[]")
    data = Data(cfg)
    assert data.count("train", True) == len(train) * 20 * 2
    assert {int(e["frame"]) for e in data.patches("train", True).take(40).as_numpy_iterator()} == {0, 3}
    with pytest.raises(ConfigError, match="data.train_frames: expected at least one frame"):
        vial_cfg(vial_data, "data.train_frames=[]", "data.rank_images=[]")
    with pytest.raises(ConfigError, match=r"data.train_frames: expected frame indices < 4"):
        vial_cfg(vial_data, "data.train_frames=[4]")


def test_scoring_images_the_model_never_trained_on_is_warned(vial_data):
    """The demo once scored rank 7 while training on frames and ranks 1, 16 only,
    and whether its generator reproduced the rank-7 meniscus depended on the
    seed: training says so when a scored kind of image is not trained on."""
    from tfanomaly.train import unseen_scored_images

    warn = unseen_scored_images(vial_cfg(vial_data, "data.rank_images=[1, 4]", "data.eval_ranks=[2]", "data.eval_frames=[]"))
    assert warn == ("warning: the model is scored on rank image 2 (data.eval_ranks / data.eval_frames) but never trains on it; add it to data.rank_images")
    warn = unseen_scored_images(vial_cfg(vial_data, "data.train_frames=[0]", "data.rank_images=[1]", "data.eval_ranks=[2]", "data.eval_frames=[0, 3]"))
    assert "rank image 2, frame 3 " in warn and warn.endswith("add them to data.rank_images and data.train_frames")
    assert unseen_scored_images(vial_cfg(vial_data, "data.rank_images=[1, 2]", "data.eval_ranks=[2]", "data.eval_frames=[0]")) is None
    assert unseen_scored_images(vial_cfg(vial_data, "data.train_frames=[0]", "data.rank_images=[]", "data.eval_ranks=[]", "data.eval_frames=[0]")) is None


def test_report_names_rank_images():
    from tfanomaly.evaluate import Scored
    from tfanomaly.report import sample_name

    z = np.zeros(2, int)
    s = Scored(
        np.zeros(2),
        z,
        np.array(["K001", "K001"]),
        np.array([3, 3]),
        np.array([5, -1]),
        np.array([1, 1]),
        np.array([2, 2]),
        np.zeros((2, 2, 2), np.float16),
        np.zeros((2, 2, 2), bool),
        ranks=np.array([0, 7]),
    )
    assert [sample_name(s, i, True) for i in range(2)] == ["K001 r3 f5 v1 R2", "K001 r3 rank7 v1 R2"]
