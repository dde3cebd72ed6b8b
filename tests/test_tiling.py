"""Native-scale tiling: the tiler on its own, tiled training and evaluation on
images of different sizes, and the training monitor's collapse warning."""

import json
import os
import stat

import numpy as np
import pytest
import tensorflow as tf

from tests._distributed_run import TINY
from tests.conftest import write_img
from tfanomaly import tiling
from tfanomaly.config import load_config
from tfanomaly.errors import ConfigError
from tfanomaly.run import Run


def probe_score(tiles):
    """A stand-in family: score = mean of the tile, heatmap = the tile itself."""
    return {"score": tf.reduce_mean(tiles, [1, 2, 3]), "heatmap": tiles[..., :1], "reconstruction": 1.0 - tiles}


@pytest.mark.parametrize("n, tile, stride", [(64, 64, 32), (100, 64, 32), (97, 32, 7), (33, 32, 32), (500, 64, 48)])
def test_axis_starts_cover_every_pixel_and_stay_inside(n, tile, stride):
    starts = tiling.axis_starts(n, tile, stride).numpy()
    covered = np.zeros(n, int)
    for s in starts:
        covered[s : s + tile] += 1
    assert covered.min() >= 1  # every pixel
    assert starts.min() == 0 and starts.max() == n - tile  # flush with both borders, no padding read
    assert np.all(np.diff(starts) > 0) and np.all(np.diff(starts) <= stride)  # no duplicate, no gap


@pytest.mark.parametrize("shape", [(64, 64), (100, 70), (37, 130), (200, 333), (20, 20)])
def test_stitching_a_known_pattern_gives_it_back(shape):
    rng = np.random.default_rng(sum(shape))
    img = rng.random(shape + (1,), np.float32)
    out = tiling.score_image(probe_score, img, (32, 32), (16, 16), chunk=5)
    # every tile carries the image's own pixels: the overlap average must be the image exactly
    np.testing.assert_allclose(out["heatmap"].numpy(), img, atol=1e-6)
    np.testing.assert_allclose(out["reconstruction"].numpy(), 1.0 - img, atol=1e-6)
    assert out["heatmap"].shape == shape + (1,)


def test_overlaps_are_averaged():
    # heatmap of each tile = its index + 1: a pixel under tiles i and j reads (i + j + 2) / 2
    def numbered(tiles):
        n = tf.shape(tiles)[0]
        ids = tf.cast(tf.range(1, n + 1), tf.float32)[:, None, None, None]
        return {"score": ids[:, 0, 0, 0], "heatmap": tf.ones_like(tiles[..., :1]) * ids, "reconstruction": tiles}

    out = tiling.score_image(numbered, np.zeros((8, 12, 1), np.float32), (8, 8), (4, 4), chunk=2)
    row = out["heatmap"].numpy()[0, :, 0]
    # columns start at 0 and 4: [0, 4) tile 1 only, [4, 8) both, [8, 12) tile 2 only
    np.testing.assert_allclose(row, [1] * 4 + [1.5] * 4 + [2] * 4)
    assert float(out["score"]) == 2.0  # the max rule


def test_image_score_is_the_max_over_tiles():
    img = np.zeros((96, 160, 1), np.float32)
    img[70:80, 130:140] = 1.0  # one bright defect near a corner
    out = tiling.score_image(probe_score, img, (32, 32), (16, 16))
    tile_scores = out["tile_scores"].numpy()
    assert float(out["score"]) == pytest.approx(tile_scores.max())
    # reference: the tiles cut by numpy at the same offsets
    ys, xs = out["tile_ys"].numpy(), out["tile_xs"].numpy()
    ref = [img[y : y + 32, x : x + 32].mean() for y in ys for x in xs]
    np.testing.assert_allclose(tile_scores, ref, rtol=1e-6)


def test_smaller_image_than_tile_is_reflect_padded_and_cropped_back():
    img = np.arange(10 * 6, dtype=np.float32).reshape(10, 6, 1) / 60.0
    padded = tiling.pad_to_tile(tf.constant(img), (32, 32)).numpy()
    assert padded.shape == (32, 32, 1)
    np.testing.assert_array_equal(padded[:10, :6], img)
    np.testing.assert_array_equal(padded[10:20, :6], img[::-1])  # symmetric reflection
    out = tiling.score_image(probe_score, img, (32, 32), (16, 16))
    np.testing.assert_allclose(out["heatmap"].numpy(), img, atol=1e-6)


def test_random_tile_keeps_image_and_mask_aligned():
    img = np.arange(50 * 80, dtype=np.float32).reshape(50, 80, 1)
    mask = img.copy()
    for i in range(5):
        a, b = tiling.random_tile(tf.constant(img), tf.constant(mask), (32, 32), tf.constant([3, i], tf.int64))
        assert a.shape == (32, 32, 1)
        np.testing.assert_array_equal(a.numpy(), b.numpy())
        # a true crop: consecutive pixels differ by 1 along x and 80 along y
        np.testing.assert_array_equal(np.diff(a.numpy()[..., 0], axis=1), 1)
        np.testing.assert_array_equal(np.diff(a.numpy()[..., 0], axis=0), 80)


def test_tiled_scorer_traces_once_for_every_size_and_is_deterministic():
    class Probe:
        image_shape = (32, 32, 1)
        score = staticmethod(probe_score)

    scorer = tiling.TiledScorer(Probe(), (32, 32), (16, 16), chunk=4)
    rng = np.random.default_rng(0)
    for shape in [(40, 50), (33, 200), (100, 32)]:
        img = rng.random(shape + (1,), np.float32)
        a, b = scorer(img), scorer(img)
        assert float(a["score"]) == float(b["score"])
        np.testing.assert_array_equal(a["heatmap"].numpy(), b["heatmap"].numpy())
    assert scorer._fn.experimental_get_tracing_count() == 1


def test_flips_average_each_tile_over_its_views_and_map_back():
    """Test-time flips: a score that reads one corner of the tile becomes the
    mean over the corners the flips bring there (numpy reference), and a heatmap
    that is the tile itself comes back unflipped (the plain map)."""

    def corner_score(tiles):
        return {"score": tiles[:, 0, 0, 0], "heatmap": tiles[..., :1], "reconstruction": tiles}

    rng = np.random.default_rng(3)
    img = rng.random((70, 90, 1)).astype(np.float32)
    plain = tiling.score_image(corner_score, img, (32, 32), (16, 16), chunk=5)
    ys, xs = plain["tile_ys"].numpy(), plain["tile_xs"].numpy()
    tiles = np.stack([img[y : y + 32, x : x + 32, 0] for y in ys for x in xs])
    for flips, corners in [(["h"], [(0, 0), (0, -1)]), (["h", "v", "hv"], [(0, 0), (0, -1), (-1, 0), (-1, -1)])]:
        out = tiling.score_image(corner_score, img, (32, 32), (16, 16), chunk=5, flips=flips)
        ref = np.mean([tiles[:, a, b] for a, b in corners], axis=0)
        np.testing.assert_allclose(out["tile_scores"].numpy(), ref, rtol=1e-6)
        assert float(out["score"]) == pytest.approx(ref.max())
        np.testing.assert_allclose(out["heatmap"].numpy(), plain["heatmap"].numpy(), atol=1e-6)
        np.testing.assert_allclose(out["reconstruction"].numpy(), img, atol=1e-6)


# --------------------------------------------------------------------------
# Config, pipeline and evaluation with tiling


def test_random_tile_grid_fraction_draws_the_scorers_tiles():
    """grid_fraction = 1: every training crop starts where the scorer cuts (so
    border and corner tiles are as common as at scoring); 0.5: both kinds;
    0: the plain uniform crop. The mask is cut at the same place."""
    h, w, tile, stride = 70, 150, [32, 32], [16, 16]
    img = tf.reshape(tf.range(h * w, dtype=tf.float32), [h, w, 1])
    ys, xs = (set(v.numpy().tolist()) for v in tiling.tile_starts(h, w, tile, stride))

    def starts(fraction, n=200):
        out = []
        for i in range(n):
            t, m = tiling.random_tile(img, img + 1, tile, tf.constant([4, i], tf.int64), stride, fraction)
            np.testing.assert_array_equal(m.numpy(), t.numpy() + 1)
            v = int(t[0, 0, 0])
            out.append((v // w, v % w))
        return out

    assert all(y in ys and x in xs for y, x in starts(1.0))
    half = starts(0.5)
    on = [y in ys and x in xs for y, x in half]
    assert 0.1 < np.mean(on) < 0.6  # ~0.25 both axes on the grid, plus chance hits
    assert {x for _, x in half} >= xs  # the flush last column is drawn
    plain = tiling.random_tile(img, img, tile, tf.constant([4, 0], tf.int64))[0]
    np.testing.assert_array_equal(plain.numpy(), tf.image.stateless_random_crop(img, [32, 32, 1], tf.constant([4, 0], tf.int64)).numpy())


@pytest.fixture(scope="module")
def sized_folder(tmp_path_factory):
    """Good and defective images of three different sizes (and aspect ratios), with masks."""
    root = tmp_path_factory.mktemp("sized")
    rng = np.random.default_rng(5)
    sizes = [(48, 80), (72, 40), (100, 130)]
    for i in range(9):
        h, w = sizes[i % 3]
        write_img(root / "good" / f"g{i}.png", (110 + rng.normal(0, 6, (h, w))).clip(0, 255).astype(np.uint8))
    for i in range(6):
        h, w = sizes[i % 3]
        img = (110 + rng.normal(0, 6, (h, w))).clip(0, 255).astype(np.uint8)
        mask = np.zeros((h, w), np.uint8)
        mask[h // 3 : h // 3 + 6, w // 4 : w // 4 + 6] = 255
        img[mask > 0] = 250
        write_img(root / "bad" / f"b{i}.png", img)
        write_img(root / "bad" / f"b{i}_mask.png", mask)
    return root


def tiled_cfg(root, *extra):
    return load_config(
        None,
        [
            "family=grdnet",
            "data.source=folder",
            f"data.root={root}",
            "data.good_dirs=[good]",
            "data.defect_dirs=[bad]",
            "data.mask_suffix=_mask.png",
            "data.image_size=[32, 32]",
            "data.tiling.enabled=true",
            "data.tiling.stride=[16, 16]",
            "data.split.train_fraction=0.67",
            *TINY["grdnet"],  # GRD-Net full, 8-16 wide
            "model.score_pool=4",
            "train.batch_size=4",
            "eval.calibration_fraction=0.5",
            *extra,
        ],
    )


def test_tiling_config_is_checked():
    with pytest.raises(ConfigError, match=r"data.tiling.stride: expected strides <= the tile"):
        load_config(None, ["data.source=folder", "data.image_size=[32, 32]", "data.tiling.enabled=true", "data.tiling.stride=[48, 16]", "perturb.max_scale=3"])
    with pytest.raises(ConfigError, match=r"data.tiling.enabled: vial strips"):
        load_config(None, ["data.tiling.enabled=true"])


def test_tiled_training_batches_are_tiles_of_native_scale_images(sized_folder):
    from tfanomaly.data.pipeline import Data

    cfg = tiled_cfg(sized_folder)
    data = Data(cfg)
    batch = next(iter(data.train_dataset(4)))
    assert batch["image"].shape == (4, 32, 32, 1)
    assert batch["perturbed"].shape == (4, 32, 32, 1)
    # the pixels are the file's own (no resize): good images are ~110/255 +- noise, never smoothed to a flat mean
    assert 0.3 < float(tf.reduce_mean(batch["image"])) < 0.55
    ev = next(iter(data.eval_dataset("test")))
    assert ev["image"].shape[0] == 1 and ev["image"].shape[1:3] in [(48, 80), (72, 40), (100, 130)]


def test_tiled_evaluation_on_three_sizes_reports_native_resolution(sized_folder, tmp_path):
    from tfanomaly import evaluate, metrics
    from tfanomaly.data.pipeline import Data
    from tfanomaly.models import registry

    cfg = tiled_cfg(sized_folder)
    tf.keras.utils.set_random_seed(0)
    model = registry.build(cfg)
    data = Data(cfg)
    scorer = tiling.TiledScorer.from_config(model, cfg)
    s = evaluate.score_dataset(model, data.eval_dataset("test"), keep=1, tiler=scorer)
    shapes = {h.shape for h in s.heatmaps}
    assert shapes == {(48, 80), (72, 40), (100, 130)}  # the defective test images come in all three sizes
    for h, m in zip(s.heatmaps, s.masks):
        assert h.shape == m.shape
    # image score = max over the image's tiles, computed again on its own
    first = next(iter(data.eval_dataset("test")))
    again = scorer(first["image"][0])
    assert s.scores[0] == pytest.approx(float(again["score"]), rel=1e-6)
    # pixel AUROC over images of different sizes = the AUROC of all their pixels together
    y = np.concatenate([m.ravel() for m in s.masks])
    v = np.concatenate([h.astype(np.float32).ravel() for h in s.heatmaps])
    from sklearn.metrics import roc_auc_score

    assert metrics.pixel_auroc(s.masks, s.heatmaps) == pytest.approx(roc_auc_score(y, v))
    summary = evaluate.evaluate(model, cfg, tmp_path / "eval", data=data, scored=s)
    assert summary["tiling"]["stride"] == [16, 16]
    assert 0.0 <= summary["pixel_auroc"] <= 1.0
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert not [k for k in saved if k.startswith(("strip_", "product_", "knapp_"))]  # no strips, runs or kit in an image data set
    page = (tmp_path / "eval" / "report.html").read_text()
    assert "images of held-out calibration images" in page and "r0 f0" not in page and "Per product" not in page
    mode = stat.S_IMODE(os.stat(tmp_path / "eval" / "metrics.json").st_mode)
    assert mode == 0o666 & ~_umask()  # the usual file mode, like the PNGs, not mkstemp's 0600


def _umask():
    m = os.umask(0)
    os.umask(m)
    return m


def test_collapse_warning_fires_on_a_constant_generator(sized_folder):
    from tfanomaly.data.pipeline import Data
    from tfanomaly.models import registry
    from tfanomaly.train import TrainingMonitor

    cfg = tiled_cfg(sized_folder)
    model = registry.build(cfg)
    batch = Data(cfg).monitor_batch(8)
    said = []
    mon = TrainingMonitor(batch, held_out=False, echo=said.append)
    mon.set_model(model)
    # force the generator's output to a constant: zero kernels and a fixed bias before the sigmoid
    head = model.decoder.get_layer("g_decoder_to_image")
    head.kernel.assign(tf.zeros_like(head.kernel))
    head.bias.assign(tf.fill(head.bias.shape, 0.3))
    logs = {}
    mon.on_epoch_end(0, logs)
    assert logs["mon_spread"] == pytest.approx(0.0, abs=1e-6)
    assert mon.collapsed_epochs == [1] and said == []  # one flat epoch: may be batch norm settling
    mon.on_epoch_end(1, logs)
    assert mon.collapsed_epochs == [1, 2]
    assert len(said) == 1 and "collapsed" in said[0] and "epoch 2" in said[0]
    mon.on_train_end()
    assert len(said) == 1  # said once
    # a run that ends on its first collapsed epoch is warned at the end
    said.clear()
    late = TrainingMonitor(batch, held_out=False, echo=said.append)
    late.set_model(model)
    late.on_epoch_end(0, {})
    late.on_train_end()
    assert len(said) == 1 and "epoch 1" in said[0]
    # reference values of the measures on the same batch
    x = batch["image"].numpy()
    rec = np.full_like(x, 1 / (1 + np.exp(-0.3)))
    mse = ((x - rec) ** 2).reshape(len(x), -1).mean(1)
    assert logs["mon_psnr"] == pytest.approx(float(np.mean(10 * np.log10(1.0 / mse))), rel=1e-4)


def test_monitor_is_quiet_on_a_working_reconstruction(sized_folder):
    from tfanomaly.data.pipeline import Data
    from tfanomaly.train import TrainingMonitor

    class Identity:  # a perfect reconstruction
        def score(self, x):
            return {"score": tf.reduce_mean(x, [1, 2, 3]), "heatmap": x[..., :1], "reconstruction": x}

    cfg = tiled_cfg(sized_folder)
    said = []
    mon = TrainingMonitor(Data(cfg).monitor_batch(8), held_out=True, echo=said.append)
    mon.set_model(Identity())
    logs = {}
    mon.on_epoch_end(0, logs)
    assert said == [] and logs["mon_spread"] == pytest.approx(1.0, rel=1e-5) and logs["mon_ssim"] == pytest.approx(1.0, abs=1e-5)


def test_monitor_warns_at_the_end_when_reconstructions_vary_less_than_the_images(sized_folder):
    """The vial demo's failed trajectories draw parts of every patch as a typical value
    (spread 0.71-0.73 where good runs end at 0.93-0.95): a run that ends below
    train.monitor_min_spread is told so once, at the end; one that ends above is not."""
    from tfanomaly.data.pipeline import Data
    from tfanomaly.train import TrainingMonitor

    class Shrunk:  # halfway to the batch's mean image: the spread across the batch is exactly halved
        def __init__(self, k):
            self.k = k

        def score(self, x):
            rec = self.k * x + (1 - self.k) * tf.reduce_mean(x, 0, keepdims=True)
            return {"score": tf.reduce_mean(x, [1, 2, 3]), "heatmap": x[..., :1], "reconstruction": rec}

    cfg = tiled_cfg(sized_folder)
    batch = Data(cfg).monitor_batch(8)
    for k, warned in ((0.5, True), (0.9, False)):
        said = []
        mon = TrainingMonitor(batch, held_out=True, echo=said.append, min_spread=0.8)
        mon.set_model(Shrunk(k))
        logs = {}
        for epoch in range(2):
            mon.on_epoch_end(epoch, logs)
        assert logs["mon_spread"] == pytest.approx(k, rel=1e-5)
        assert said == []  # nothing during training: a run is judged where it ends
        mon.on_train_end()
        assert len(said) == int(warned)
        if warned:
            assert "spread 0.5 of the inputs'" in said[0] and "train.monitor_min_spread 0.8" in said[0] and "collapsed" not in said[0]
    off = TrainingMonitor(batch, held_out=True, echo=said.append, min_spread=0.0)
    off.set_model(Shrunk(0.5))
    said.clear()
    off.on_epoch_end(0, {})
    off.on_train_end()
    assert said == []  # 0 = off


def test_monitor_leaves_out_an_undefined_image_auroc(sized_folder):
    """Every monitor image perturbed (a corruption of probability 1): the image AUROC
    has one class and is left out, not logged as nan (which training took for a
    diverged loss); the pixel AUROC is still measured."""
    from tfanomaly.data.pipeline import Data
    from tfanomaly.train import TrainingMonitor

    class Residual:  # heatmap = |perturbed - clean| of the batch: finds the perturbation exactly
        def __init__(self, clean):
            self.clean = clean

        def score(self, x):
            h = tf.abs(x - self.clean)[..., :1]
            return {"score": tf.reduce_max(h, [1, 2, 3]), "heatmap": h, "reconstruction": self.clean}

    cfg = tiled_cfg(sized_folder)
    batch = dict(Data(cfg).monitor_batch(8))
    m = np.zeros(batch["perturb_mask"].shape, np.float32)
    m[:, 4:12, 4:12] = 1.0  # every image has a square anomaly
    batch["perturb_mask"] = tf.constant(m)
    batch["perturbed"] = tf.constant(np.where(m > 0, 1.0 - batch["image"].numpy(), batch["image"].numpy()), tf.float32)
    vals = TrainingMonitor.measure(Residual(tf.cast(batch["image"], tf.float32)), batch)
    assert "mon_synth_image_auroc" not in vals
    assert np.isfinite(vals["mon_synth_pixel_auroc"]) and vals["mon_synth_pixel_auroc"] > 0.9


def test_checkpoint_every_keeps_step_files(sized_folder, tmp_path):
    from tfanomaly.train import train

    cfg = tiled_cfg(sized_folder, "train.epochs=2", "train.steps_per_epoch=2", "train.checkpoint_every=1")
    run = train(cfg, tmp_path / "run", verbose=0, echo=lambda m: None)
    assert sorted(p.name for p in Run(run).checkpoints_dir.glob("step_*.keras")) == ["step_0000002.keras", "step_0000004.keras"]
    summary = json.loads(Run(run).summary_file.read_text())
    assert set(summary["monitor"]) >= {"mon_ssim", "mon_psnr", "mon_spread"}
    header = Run(run).history_file.read_text().splitlines()[0].split(",")
    assert "mon_spread" in header and not any(h.startswith("val_") for h in header)  # no validation split: no empty val_ columns


@pytest.fixture(scope="module")
def whole_export(sized_folder, tmp_path_factory):
    """A tiled model evaluated on images of three sizes, saved as a run with a
    threshold, and exported with its whole-image signatures."""
    from tests.conftest import save_run
    from tfanomaly import evaluate
    from tfanomaly.data.pipeline import Data
    from tfanomaly.export import export
    from tfanomaly.models import registry

    tmp = tmp_path_factory.mktemp("whole")
    cfg = tiled_cfg(sized_folder, "data.tiling.scale=0.75", "data.tiling.flips=[h]")  # flips: inside the graph too
    tf.keras.utils.set_random_seed(1)
    model = registry.build(cfg)
    data = Data(cfg)
    s = evaluate.score_dataset(model, data.eval_dataset("test"), tiler=tiling.TiledScorer.from_config(model, cfg))
    files = [it.paths[0] for it in data.index.subset("test")]
    thr = float(np.median(s.scores))
    run = save_run(model, cfg, tmp / "run", thresholds={"rule": "youden", "per_region": False, "thresholds": thr})
    return {"scored": s, "files": files, "run": run, "out": export(run, tmp / "sm"), "threshold": thr}


def test_whole_image_export_and_predict_equal_the_evaluated_scores(whole_export):
    """One model, three doors: evaluation (tf.data pipeline, tiled scorer), the
    SavedModel's whole-image signatures (any size, tiling and scale in the graph)
    and ``tfanomaly predict`` give the same scores and heatmaps."""
    from tfanomaly.predict import predict

    s, files, out = whole_export["scored"], whole_export["files"], whole_export["out"]
    meta = json.loads((out / "tfanomaly.json").read_text())
    assert meta["tiling"]["scale"] == 0.75 and meta["tiling"]["tile"] == [32, 32] and meta["tiling"]["flips"] == ["h"]
    sm = tf.saved_model.load(str(out))
    rows = predict(whole_export["run"], files)
    sizes = set()
    for i, f in enumerate(files):
        png = tf.io.read_file(f)
        o = sm.signatures["serve_image_png"](png=png)
        img = tf.cast(tf.io.decode_png(png, channels=1), tf.float32) / 255.0
        o2 = sm.signatures["serve_image"](image=img)
        sizes.add(tuple(img.shape[:2]))
        assert float(o["score"][0]) == pytest.approx(s.scores[i], rel=1e-5, abs=1e-6)
        assert float(o2["score"][0]) == pytest.approx(s.scores[i], rel=1e-5, abs=1e-6)
        assert rows[i]["score"] == pytest.approx(s.scores[i], rel=1e-5, abs=1e-6)
        assert bool(o["is_anomalous"][0]) == (s.scores[i] >= whole_export["threshold"])
        np.testing.assert_allclose(o["heatmap"].numpy()[0, ..., 0], s.heatmaps[i].astype(np.float32), atol=2e-3)
    assert len(sizes) == 3


def test_export_tiles_with_the_flips_the_thresholds_were_calibrated_with(whole_export, tmp_path):
    """The run's config scores with flips [h]; thresholds calibrated without
    flips (an evaluation with --set data.tiling.flips=[]) make the export tile
    without them: its scores are then those of a flip-free scorer, not the
    evaluated (flipped) ones."""
    from tfanomaly.decision import Decision
    from tfanomaly.export import export
    from tfanomaly.run import Run

    run = Run(whole_export["run"])
    th = tmp_path / "thresholds.json"
    Decision("youden", whole_export["threshold"], flips=[]).save(th)
    assert Decision.load(th).flips == []
    out = export(run.path, tmp_path / "sm", thresholds_file=th)
    assert json.loads((out / "tfanomaly.json").read_text())["tiling"]["flips"] == []
    sm = tf.saved_model.load(str(out))
    cfg, model = run.config(), run.load_model()
    plain = tiling.TiledScorer(model, cfg.data.image_size, cfg.data.tiling.stride, flips=())
    moved = 0
    for i, f in enumerate(whole_export["files"]):
        img = tf.cast(tf.io.decode_png(tf.io.read_file(f), channels=1), tf.float32) / 255.0
        got = float(sm.signatures["serve_image"](image=img)["score"][0])
        want = float(plain(tiling.rescale(img, cfg.data.tiling.scale, cfg.data.interpolation))["score"])
        assert got == pytest.approx(want, rel=1e-5, abs=1e-6)
        moved += abs(got - whole_export["scored"].scores[i]) > 1e-6
    assert moved  # the flips do change the scores of this (random) model


def test_cpp_whole_images_equal_the_evaluated_scores(whole_export, binary, tmp_path):
    """The line binary with --whole: PNGs and float .npy images of three sizes,
    tiled inside the SavedModel, give the evaluated scores, verdicts and
    stitched heatmaps (each at its own size); a patch-only model refuses --whole."""
    from tests.conftest import error_lines, run_cpp

    s, files, out, thr = whole_export["scored"], whole_export["files"], whole_export["out"], whole_export["threshold"]
    npys = []
    for i, f in enumerate(files):
        img = tf.cast(tf.io.decode_png(tf.io.read_file(f), channels=1), tf.float32).numpy() / 255.0
        npys.append(tmp_path / f"img{i}.npy")
        np.save(npys[-1], img.astype(np.float32))
    heat = tmp_path / "heat"
    heat.mkdir()
    for inputs in (files, npys):
        r = run_cpp(binary, out, *inputs, "--whole", "--json", "--batch", 4, "--heatmaps", heat)
        assert r.returncode == 0, r.stderr[-2000:]
        doc = json.loads(r.stdout)
        got = np.array([im["score"] for im in doc["images"]])
        np.testing.assert_allclose(got, s.scores, rtol=1e-5, atol=1e-6)
        assert [im["is_anomalous"] for im in doc["images"]] == [bool(v >= thr) for v in s.scores]
        assert [st["defective"] for st in doc["strips"]] == [bool((s.scores[i : i + 4] >= thr).any()) for i in range(0, len(files), 4)]
        for i, im in enumerate(doc["images"]):
            np.testing.assert_allclose(np.load(heat / f"{im['name']}.npy"), s.heatmaps[i], atol=2e-3)
    wrong = tmp_path / "rgb.npy"
    np.save(wrong, np.zeros([40, 50, 3], np.float32))
    r = run_cpp(binary, out, wrong, "--whole")
    assert r.returncode == 6 and "rgb.npy" in error_lines(r)[0]
