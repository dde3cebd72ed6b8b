"""``tfanomaly.evaluate``: scores -> calibrated thresholds -> metrics and verdicts.

The test patches are scored once. For each seed the test *products* (images
for single-image sources) are split into a calibration part and a reported
part; thresholds come from the calibration part only, metrics from the
reported part. Calibrating on the reported data is refused unless forced,
and then flagged in the report.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tfanomaly import aggregation, files, metrics, thresholds
from tfanomaly.config import Config
from tfanomaly.decision import FILE_NAME, Decision
from tfanomaly.errors import UserError


@dataclass
class Scored:
    """Everything computed from one pass of the model over the test set."""

    scores: np.ndarray
    labels: np.ndarray
    products: np.ndarray
    runs: np.ndarray
    frames: np.ndarray
    vials: np.ndarray
    regions: np.ndarray
    heatmaps: np.ndarray  # [N, H, W] float16
    masks: np.ndarray  # [N, H, W] bool
    product_labels: dict = field(default_factory=dict)
    keep_images: dict = field(default_factory=dict)  # index -> (image, reconstruction)
    ranks: np.ndarray | None = None  # rank of a rank image, 0 for a frame (vial line); None: all frames

    def __post_init__(self):
        if self.ranks is None:
            self.ranks = np.zeros(len(self.scores), np.int64)


def _ragged(arrays: list) -> np.ndarray:
    """A 1-D object array of per-image arrays of different shapes."""
    out = np.empty(len(arrays), object)
    out[:] = arrays
    return out


def score_dataset(model, ds, keep: int = 0, tiler=None) -> Scored:
    """Run ``model.score`` over a dataset of eval batches; with a ``tiler``
    (:class:`tfanomaly.tiling.TiledScorer`) each batch holds one whole image,
    scored by tiles, and heatmaps, masks and kept images are per-image arrays
    at the image's own resolution (1-D object arrays)."""
    import tensorflow as tf

    if tiler is None:
        score_fn = tf.function(model.score)
    else:

        def score_fn(images):
            o = tiler(images[0])
            return {k: o[k][None] for k in ("score", "heatmap", "reconstruction")}

    cols = {k: [] for k in ("score", "label", "product", "run", "frame", "rank", "vial", "region", "heatmap", "mask")}
    images, recons = [], []
    for batch in ds:
        out = score_fn(batch["image"])
        cols["score"].append(out["score"].numpy())
        cols["heatmap"].append(out["heatmap"].numpy()[..., 0].astype(np.float16))
        cols["mask"].append(batch["mask"].numpy()[..., 0] > 0.5)
        for k in ("label", "product", "run", "frame", "rank", "vial", "region"):
            cols[k].append(batch[k].numpy())
        if keep:
            images.append(batch["image"].numpy().astype(np.float16))
            recons.append(out["reconstruction"].numpy().astype(np.float16))
    if not cols["score"]:
        raise UserError("the test set is empty")
    if tiler is not None:  # one image per batch, sizes differ
        for k in ("heatmap", "mask"):
            cols[k] = [_ragged([a[0] for a in cols[k]])]
        images, recons = [_ragged([a[0] for a in images])], [_ragged([a[0] for a in recons])]
    cat = {k: np.concatenate(v) for k, v in cols.items()}
    s = Scored(
        scores=cat["score"].astype(np.float64),
        labels=cat["label"].astype(int),
        products=np.array([p.decode() if isinstance(p, bytes) else str(p) for p in cat["product"]]),
        runs=cat["run"],
        frames=cat["frame"],
        vials=cat["vial"],
        regions=cat["region"],
        heatmaps=cat["heatmap"],
        masks=cat["mask"],
        ranks=cat["rank"],
    )
    if keep:
        s.keep_images = {"image": np.concatenate(images), "reconstruction": np.concatenate(recons)}
    return s


def split_products(products, fraction: float, seed: int, truth: dict | None = None) -> tuple[set, set]:
    """Seeded split of the distinct products into (calibration, reported),
    stratified by product label: each class with at least two products puts
    at least one on each side."""
    names = sorted(set(products))
    truth = truth or {}
    rng = np.random.default_rng(1000 + seed)
    cal = set()
    for label in sorted({truth.get(p, 0) for p in names}):
        group = [p for p in names if truth.get(p, 0) == label]
        n = len(group)
        k = int(round(fraction * n))
        if n >= 2 and 0 < fraction < 1:
            k = min(max(k, 1), n - 1)
        cal |= {group[i] for i in rng.permutation(n)[:k]}
    return cal, set(names) - cal


def calibration_part(s: Scored, fraction: float, seed: int) -> np.ndarray:
    """Boolean [N]: the samples of the seeded calibration products of ``s``
    (:func:`split_products`, stratified by product truth); the rest is reported."""
    cal_p, _ = split_products(s.products, fraction, seed, _product_truth(s))
    return np.isin(s.products, list(cal_p))


def apply_score_options(model, cfg: Config) -> None:
    """Score as ``cfg.model`` says: its values of the model's score options
    (they change no weight, so options are compared without retraining)."""
    opts = {k: getattr(cfg.model, k) for k in model.SCORE_OPTIONS if hasattr(cfg.model, k)}
    if opts and opts != model.score_options():
        model.set_score_options(opts, where=f"{cfg.source_file}: model")


def _product_truth(s: Scored) -> dict:
    truth = dict(s.product_labels)
    for p, lab in zip(s.products, s.labels):
        truth[p] = max(truth.get(p, 0), int(lab))
    return truth


def _run_maxima(products, runs, regions, labels, scores):
    """Per (product, run, region): the max score and whether a defect is
    visible in any of those patches (:func:`aggregation.per_run_max`, which
    counts a NaN as +inf). Thresholds calibrated on these decide what the line
    decides -- a run is flagged when any patch of a region reaches that
    region's threshold -- instead of patch by patch, where one good patch in a
    hundred above the threshold already flags most good runs of 60 patches."""
    ys, ss, gs = [], [], []
    for g in np.unique(regions):
        sel = regions == g
        top = aggregation.per_run_max(products[sel], runs[sel], scores[sel])
        seen = aggregation.per_run_max(products[sel], runs[sel], labels[sel])
        ys += [int(seen[k]) for k in top]
        ss += list(top.values())
        gs += [int(g)] * len(top)
    return np.array(ys, np.int64), np.array(ss, np.float64), np.array(gs, np.int64)


def evaluate_split(s: Scored, cfg: Config, rule: str, cal: np.ndarray, rep: np.ndarray, per_region: bool) -> dict:
    """Calibrate on mask ``cal``, report on mask ``rep``."""
    e = cfg.eval
    kw = {"n_sigma": e.n_sigma, "percentile": e.percentile, "iqr_k": e.iqr_k}
    labels, scores, regions = s.labels[cal], s.scores[cal], s.regions[cal]
    if e.product_level:  # calibrate where the line decides: on each run's maxima
        labels, scores, regions = _run_maxima(s.products[cal], s.runs[cal], regions if per_region else np.zeros_like(regions), labels, scores)
    warnings = []
    if per_region:
        thr, warnings = thresholds.calibrate_per_region(rule, labels, scores, regions, cover=np.unique(s.regions[rep]), **kw)
    else:
        thr = thresholds.calibrate(rule, labels, scores, where="calibration split", **kw)
    all_rules = {}
    for r in thresholds.RULES:
        try:
            all_rules[r] = thresholds.calibrate(r, s.labels[cal], s.scores[cal], **kw)
        except thresholds.ThresholdError:
            pass
    decision = Decision(rule, thr, list(e.k_of_n))
    flags = decision.flags(s.scores[rep], s.regions[rep])
    lab = s.labels[rep]
    img = metrics.image_metrics(lab, s.scores[rep])
    img["at_threshold"] = metrics.at_threshold(lab, flags.astype(float), 0.5)
    img["at_threshold"]["threshold"] = thr if not isinstance(thr, dict) else None
    out = {"image": img, "thresholds": thr, "decision": decision, "all_rule_thresholds": all_rules, "warnings": warnings}

    regions = {}
    for r in np.unique(s.regions[rep]):
        sel = s.regions[rep] == r
        m = metrics.image_metrics(lab[sel], s.scores[rep][sel])
        m["at_threshold"] = metrics.at_threshold(lab[sel], flags[sel].astype(float), 0.5)
        regions[int(r)] = m
    out["regions"] = regions

    # product verdicts: a run is flagged when any of its patches is (the decision every door
    # applies), then k of n runs
    truth = _product_truth(s)
    run_flags = aggregation.per_run_max(s.products[rep], s.runs[rep], flags)
    run_scores = aggregation.per_run_max(s.products[rep], s.runs[rep], s.scores[rep])
    k, n = decision.k_of_n
    verdicts = aggregation.k_of_n(run_flags, k, n)
    names = sorted(verdicts)
    y = [truth[p] for p in names]
    pred = [float(verdicts[p]["defective"]) for p in names]
    out["products"] = {
        "k_of_n": [k, n],
        "metrics": metrics.at_threshold(y, pred, 0.5),
        "verdicts": {p: {**verdicts[p], "label": truth[p], "max_score": max(v for (q, _), v in run_scores.items() if q == p)} for p in names},
    }
    run_keys = sorted(run_scores)
    out["runs"] = metrics.image_metrics([truth[p] for p, _ in run_keys], [run_scores[k] for k in run_keys])
    # strips (the paper's per-acquisition verdict): the run's flag against whether a defect is
    # visible in any of its scored patches (a run whose defect is hidden is a good strip)
    seen = aggregation.per_run_max(s.products[rep], s.runs[rep], lab)
    out["strips"] = {
        "patches_per_strip": int(round(len(lab) / max(len(seen), 1))),
        "metrics": metrics.at_threshold([int(seen[k]) for k in run_keys], [float(run_flags[k]) for k in run_keys], 0.5),
    }
    # a test kit's reference: in how many runs each product's defect is visible (Knapp zones)
    visible = {p: 0 for p in names}
    for (p, _), v in seen.items():
        visible[p] += int(v > 0)
    out["knapp"] = aggregation.knapp(verdicts, visible, tuple(e.knapp_zones))
    for p, z in out["knapp"].pop("zone").items():
        out["products"]["verdicts"][p] |= {"visible_runs": visible[p], "zone": z}
    return out


def score_test_set(model, cfg: Config, data, keep: int = 1) -> Scored:
    """Score the test split of ``data`` (tiled when the config tiles), with
    each product's label taken from the index (a product is defective when
    any of its samples is)."""
    s = score_dataset(model, data.eval_dataset("test"), keep=keep, tiler=_tiler(model, cfg))
    if data.index is not None:
        for it in data.index.subset("test"):
            s.product_labels[it.product] = max(s.product_labels.get(it.product, 0), it.label)
    return s


def _tiler(model, cfg: Config):
    """The tiled scorer of a run whose config tiles its images (else None)."""
    if not cfg.data.tiling.enabled:
        return None
    from tfanomaly.tiling import TiledScorer

    return TiledScorer.from_config(model, cfg)


def _mean_std(values):
    v = np.array([x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))], np.float64)
    return {"mean": float(v.mean()) if v.size else float("nan"), "std": float(v.std()) if v.size else float("nan")}


def evaluate(
    model,
    cfg: Config,
    out_dir: str | Path,
    rule: str | None = None,
    seeds: list[int] | None = None,
    force_same_split: bool = False,
    scored: Scored | None = None,
    data=None,
    shift: bool = False,
) -> dict:
    """Evaluate ``model`` on the test split of ``cfg``; writes the report to ``out_dir``.

    With ``shift`` the test set is also scored under the seeded domain shift of
    ``eval.shift`` and evaluated the same way (same products in calibration and
    report, thresholds calibrated on the shifted calibration split); its full
    report goes to ``out_dir/shift`` and its headline numbers into
    ``summary["shift"]``, beside the clean ones."""
    from tfanomaly import report
    from tfanomaly.data.pipeline import Data

    rule = rule or cfg.eval.calibrate
    apply_score_options(model, cfg)  # the thresholds record them
    if rule not in thresholds.RULES:
        raise UserError(f"--calibrate: expected one of {', '.join(thresholds.RULES)}, got {rule!r}")
    seeds = seeds if seeds else [cfg.seed]
    data = data or Data(cfg)
    if scored is None:
        scored = score_test_set(model, cfg, data)
    s = scored
    same = cfg.eval.calibration_fraction == 0
    if same and not force_same_split:
        raise UserError(
            "eval.calibration_fraction is 0: thresholds would be calibrated on the split being reported; give a calibration fraction > 0, or pass --force to do it anyway (the report will say so)"
        )
    per_seed = []
    for seed in seeds:
        if same:
            cal = rep = np.ones(len(s.scores), bool)
        else:
            cal = calibration_part(s, cfg.eval.calibration_fraction, seed)
            rep = ~cal
            if not rep.any() or not cal.any():
                raise UserError(f"eval.calibration_fraction {cfg.eval.calibration_fraction} leaves an empty calibration or reported split")
        res = evaluate_split(s, cfg, rule, cal, rep, cfg.eval.per_region)
        res["seed"] = res["decision"].seed = seed
        res["decision"].score_options = model.score_options()
        res["decision"].flips = list(cfg.data.tiling.flips) if cfg.data.tiling.enabled else None
        res["n_calibration"], res["n_reported"] = int(cal.sum()), int(rep.sum())
        res["_masks"] = (cal, rep)
        per_seed.append(res)

    first = per_seed[0]
    rep = first["_masks"][1]
    pix = {}
    if any(m.any() for m in s.masks[rep]):
        pix = {
            "pixel_auroc": metrics.pixel_auroc(s.masks[rep], s.heatmaps[rep]),
            "aupro": metrics.aupro(s.masks[rep][:2000], s.heatmaps[rep][:2000]),
        }
    cal = first["_masks"][0]
    selection = {"image_auroc": metrics.roc_auc(s.labels[cal], s.scores[cal]), "n_images": int(cal.sum())}
    if not same and any(m.any() for m in s.masks[cal]):
        selection["pixel_auroc"] = metrics.pixel_auroc(s.masks[cal], s.heatmaps[cal])
    summary = {
        "family": cfg.family,
        "source": cfg.data.source,
        "tiling": dataclasses.asdict(cfg.data.tiling) if cfg.data.tiling.enabled else None,
        "rule": rule,
        "seeds": seeds,
        "calibrated_on_reported_split": same,
        "per_region": cfg.eval.per_region,
        "image_auroc": _mean_std([r["image"]["auroc"] for r in per_seed]),
        "image_pr_auc": _mean_std([r["image"]["pr_auc"] for r in per_seed]),
        "optimal_accuracy": _mean_std([r["image"]["optimal_accuracy"] for r in per_seed]),
        "max_accuracy": _mean_std([r["image"]["max_accuracy"] for r in per_seed]),
        "zfn_accuracy": _mean_std([r["image"]["zfn_accuracy"] for r in per_seed]),
        "accuracy_at_threshold": _mean_std([r["image"]["at_threshold"]["accuracy"] for r in per_seed]),
        "f1_at_threshold": _mean_std([r["image"]["at_threshold"]["f1"] for r in per_seed]),
        **(_line_summary(per_seed) if cfg.data.source == "vials" else {}),
        **pix,
        # the calibration part of the first seed: the numbers to choose settings on (never the reported ones)
        "selection": selection,
        "runs": [{k: v for k, v in r.items() if k not in ("_masks", "decision")} for r in per_seed],
    }
    out = Path(out_dir)
    check_eval_folder(out)
    with files.staged_dir(out) as stage:  # the folder is replaced as one unit: the old report or the new one
        if shift:
            shifted = score_dataset(model, data.eval_dataset("test", shifted=True), keep=1, tiler=_tiler(model, cfg))
            shifted.product_labels = dict(s.product_labels)
            sh = evaluate(model, cfg, stage / "shift", rule, seeds, force_same_split, scored=shifted, data=data)
            summary["shift"] = {k: sh.get(k) for k in ("image_auroc", "optimal_accuracy", "accuracy_at_threshold", "f1_at_threshold", "pixel_auroc", "aupro")}
            summary["shift"]["settings"] = dataclasses.asdict(cfg.eval.shift)
        report.write_all(stage, s, summary, first, cfg)
    return summary


def _line_summary(per_seed) -> dict:
    """The vial line's headline keys (strips, k-of-n products, the Knapp reading),
    mean and std over calibration seeds; an image data set has no strips, runs
    or kit, so its summary leaves them out."""
    out = {f"{what}_{k}": _mean_std([r[f"{what}s"]["metrics"][k] for r in per_seed]) for what in ("product", "strip") for k in ("accuracy", "tpr", "tnr")}
    return out | {f"knapp_{k}": _mean_std([r["knapp"][k] for r in per_seed]) for k in ("ratio", "accuracy", "tpr", "tnr")}


def check_eval_folder(out: Path) -> None:
    """An evaluation replaces its output folder as a whole, so that folder must
    be new, empty, or an earlier evaluation's (it has metrics.json or the
    decision file): never, say, a run folder given as ``--out`` by mistake."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: the evaluation output is a file; expected a folder (or a new path)")
    if out.is_dir() and any(out.iterdir()) and not ((out / "metrics.json").exists() or (out / FILE_NAME).exists()):
        raise UserError(f"{out}: not empty and not an earlier evaluation (no metrics.json): an evaluation replaces its whole output folder; give a new or empty folder")


# --------------------------------------------------------------------------
# Repeated data splits (one trained run per split seed)

SPLIT_KEYS = ("image_auroc", "max_accuracy", "zfn_accuracy", "accuracy_at_threshold", "f1_at_threshold", "optimal_accuracy")


def evaluate_splits(parent: str | Path, rule: str | None = None, seeds: list[int] | None = None, force: bool = False, out_dir: str | Path | None = None) -> dict:
    """Evaluate every ``split_<seed>`` run of ``parent`` (each on its own test
    split, calibrating with its own seed) and report the mean and std over the
    splits. Writes each run's report to ``RUN/eval`` and the table to
    ``out_dir`` (default ``parent/eval``): ``splits.json`` and ``splits.md``."""
    import json

    from tfanomaly.files import atomic_write_text
    from tfanomaly.run import Run, split_runs

    parent = Path(parent)
    runs = split_runs(parent)
    if seeds:
        missing = [s for s in seeds if s not in runs]
        if missing:
            raise UserError(f"{parent}: no split_{missing[0]} run (found: {', '.join(f'split_{s}' for s in runs) or 'none'})")
        runs = {s: runs[s] for s in seeds}
    if not runs:
        raise UserError(f"{parent}: neither a run (model.keras) nor a folder of split_<seed> runs")
    rows = []
    for s, run in runs.items():
        if not run.model_file.exists():
            raise UserError(f"{run.path}: no model.keras: this split has not finished training (resume it with `tfanomaly train ... --split-seeds {s} --run-dir {parent}`)")
        summ = evaluate(run.load_model(), run.config(), run.eval_dir, rule, [s], force)
        row = {"split_seed": s, "rule": summ["rule"], "n_reported": summ["runs"][0]["n_reported"]}
        row.update({k: summ[k]["mean"] for k in SPLIT_KEYS})
        row["pixel_auroc"] = summ.get("pixel_auroc", float("nan"))
        rows.append(row)
    keys = (*SPLIT_KEYS, "pixel_auroc")
    summary = {"parent": str(parent), "rule": rows[0]["rule"], "splits": rows, **{k: _mean_std([r[k] for r in rows]) for k in keys}}
    out = Path(out_dir) if out_dir else Run(parent).eval_dir
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "splits.json", json.dumps(summary, indent=2, default=float))
    atomic_write_text(out / "splits.md", splits_table(summary) + "\n")
    return summary


def splits_table(summary: dict) -> str:
    """Markdown: one row per split, then mean ± std."""
    rule = summary["rule"]
    cols = [
        ("image_auroc", "AUROC"),
        ("max_accuracy", "ACC (oracle)"),
        ("zfn_accuracy", "ZFN acc. (oracle)"),
        (("accuracy_at_threshold"), f"acc. at {rule} (calibrated)"),
        ("pixel_auroc", "pixel AUROC"),
    ]
    lines = ["| split seed | test images | " + " | ".join(c[1] for c in cols) + " |", "|---" * (len(cols) + 2) + "|"]
    for r in summary["splits"]:
        lines.append(f"| {r['split_seed']} | {r['n_reported']} | " + " | ".join(f"{r[k]:.4f}" for k, _ in cols) + " |")
    lines.append("| mean ± std | | " + " | ".join(f"{summary[k]['mean']:.4f} ± {summary[k]['std']:.4f}" for k, _ in cols) + " |")
    return "\n".join(lines)
