"""Evaluation outputs: metrics.json, thresholds.json, CSV tables, plots and
one self-contained HTML page. Every file is written atomically."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
import string
from importlib import resources
from pathlib import Path

import matplotlib
import numpy as np

from tfanomaly.decision import FILE_NAME as DECISION_FILE
from tfanomaly.files import atomic_write_text

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (np.floating, float)):
        return None if np.isnan(o) else float(o)
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, np.bool_):
        return bool(o)
    return o


def _write_csv(path: Path, header, rows):
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _save_fig(fig, path: Path):
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)


def region_name(cfg, r: int) -> str:
    names = cfg.data.strip.region_names if cfg.data.source == "vials" else []
    return f"R{r} {names[r]}" if r < len(names) else f"R{r}"


def plot_curves(s, res, path_roc: Path, path_pr: Path):
    from sklearn.metrics import precision_recall_curve, roc_curve

    cal, rep = res["_masks"]
    y, sc = s.labels[rep], s.scores[rep]
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    fig2, ax2 = plt.subplots(figsize=(4.6, 4.2))
    if len(np.unique(y)) == 2:
        fpr, tpr, _ = roc_curve(y, sc)
        ax.plot(fpr, tpr, lw=1.8, label=f"AUROC {res['image']['auroc']:.3f}")
        prec, rec, _ = precision_recall_curve(y, sc)
        ax2.plot(rec, prec, lw=1.8, label=f"AP {res['image']['pr_auc']:.3f}")
        for i, (rule, t) in enumerate(sorted(res["all_rule_thresholds"].items())):
            p = sc >= t
            tp, fp = np.sum(p & (y == 1)), np.sum(p & (y == 0))
            tpr_t, fpr_t = tp / max(1, np.sum(y == 1)), fp / max(1, np.sum(y == 0))
            prec_t = tp / max(1, tp + fp)
            ax.plot(fpr_t, tpr_t, "o", ms=6, label=f"{rule} ({t:.3g})", color=f"C{i + 1}")
            ax2.plot(tpr_t, prec_t, "o", ms=6, label=rule, color=f"C{i + 1}")
        used = res["decision"].flags(sc, s.regions[rep])
        tp, fp = np.sum(used & (y == 1)), np.sum(used & (y == 0))
        tag = "in use (per region)" if res["decision"].per_region else "in use"
        ax.plot(fp / max(1, np.sum(y == 0)), tp / max(1, np.sum(y == 1)), "k*", ms=11, label=tag)
        ax2.plot(tp / max(1, np.sum(y == 1)), tp / max(1, tp + fp), "k*", ms=11, label=tag)
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (reported split)")
    ax.legend(fontsize=7, loc="lower right")
    ax2.set(xlabel="recall", ylabel="precision", title="Precision-recall (reported split)")
    ax2.legend(fontsize=7, loc="lower left")
    _save_fig(fig, path_roc)
    _save_fig(fig2, path_pr)


def plot_histogram(s, res, path: Path):
    cal, rep = res["_masks"]
    y, sc = s.labels[rep], s.scores[rep]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    bins = np.linspace(sc.min(), sc.max() + 1e-12, 60)
    ax.hist(sc[y == 0], bins=bins, alpha=0.6, label=f"good ({int(np.sum(y == 0))})", color="tab:green", log=True)
    ax.hist(sc[y == 1], bins=bins, alpha=0.6, label=f"defective ({int(np.sum(y == 1))})", color="tab:red", log=True)
    for i, (rule, t) in enumerate(sorted(res["all_rule_thresholds"].items())):
        ax.axvline(t, color=f"C{i + 1}", ls="--", lw=1.2, label=f"{rule} {t:.3g}")
    if res["decision"].per_region:
        for r, t in res["decision"].thresholds.items():
            ax.axvline(t, color="k", ls=":", lw=0.8)
    ax.set(xlabel="anomaly score (raw)", ylabel="patches (log)", title="Scores on the reported split; dashed: thresholds by rule, dotted: per-region thresholds in use")
    ax.title.set_fontsize(8)
    ax.legend(fontsize=7, ncol=2)
    _save_fig(fig, path)


def sample_name(s, i: int, vials: bool) -> str:
    """How a test sample is named in the report: run, frame, vial and region on
    the vial line; the image's own name for image data sets."""
    if vials:
        image = f"rank{s.ranks[i]}" if s.ranks[i] > 0 else f"f{s.frames[i]}"
        return f"{s.products[i]} r{s.runs[i]} {image} v{s.vials[i]} R{s.regions[i]}"
    return str(s.products[i])


def plot_worst(s, res, path: Path, n: int = 8, vials: bool = True):
    """Input, reconstruction and heatmap overlay for the worst false positives and negatives."""
    cal, rep = res["_masks"]
    idx = np.flatnonzero(rep)
    flags = res["decision"].flags(s.scores[idx], s.regions[idx])
    y = s.labels[idx]
    fp = idx[(flags == 1) & (y == 0)]
    fn = idx[(flags == 0) & (y == 1)]
    fp = fp[np.argsort(-s.scores[fp])][: n // 2]
    fn = fn[np.argsort(s.scores[fn])][: n // 2]
    # if there are no errors, show the highest-scoring defects and good patches instead
    if len(fp) == 0:
        good = idx[y == 0]
        fp = good[np.argsort(-s.scores[good])][: n // 2]
    if len(fn) == 0:
        bad = idx[y == 1]
        fn = bad[np.argsort(s.scores[bad])][: n // 2]
    rows = [("FP" if s.labels[i] == 0 and flags[np.searchsorted(idx, i)] else "good", i) for i in fp] + [("FN" if s.labels[i] == 1 and not flags[np.searchsorted(idx, i)] else "defect", i) for i in fn]
    if not rows or not s.keep_images:
        return False
    fig, axes = plt.subplots(len(rows), 4, figsize=(7.2, 1.9 * len(rows)), squeeze=False)
    for row, (kind, i) in zip(axes, rows):
        img = np.asarray(s.keep_images["image"][i], np.float32)
        rec = np.asarray(s.keep_images["reconstruction"][i], np.float32)
        show = img[..., 0] if img.shape[-1] in (1, 4) else img
        shr = rec[..., 0] if rec.shape[-1] in (1, 4) else rec
        row[0].imshow(show, cmap="gray", vmin=0, vmax=1)
        row[0].set_title(f"{kind} {sample_name(s, i, vials)}", fontsize=6)
        row[1].imshow(shr, cmap="gray", vmin=0, vmax=1)
        row[1].set_title("reconstruction", fontsize=6)
        row[2].imshow(show, cmap="gray", vmin=0, vmax=1)
        row[2].imshow(np.asarray(s.heatmaps[i], np.float32), cmap="jet", alpha=0.45)
        row[2].set_title(f"heatmap, score {s.scores[i]:.4g}", fontsize=6)
        row[3].imshow(s.masks[i], cmap="gray", vmin=0, vmax=1)
        row[3].set_title("ground truth", fontsize=6)
        for a in row:
            a.axis("off")
    fig.tight_layout()
    _save_fig(fig, path)
    return True


def ranking(scores, n: int):
    """Indices of the ``n`` lowest and the ``n`` highest scores (at most half each)."""
    order = np.argsort(scores, kind="stable")
    n = min(n, len(order) // 2)
    return order[:n], order[::-1][:n]


def plot_ranking(s, path: Path, n: int = 8) -> bool:
    """The unsupervised ranking: the ``n`` least and the ``n`` most anomalous
    test samples by score (all of the test set, labels only in the titles)."""
    if not s.keep_images or len(s.scores) < 2:
        return False
    least, most = ranking(s.scores, n)
    n = len(least)
    rows = [("least", least), ("most", most)]
    fig, axes = plt.subplots(2, n, figsize=(1.1 * n, 2.6), squeeze=False)
    for row, (kind, idx) in zip(axes, rows):
        for a, i in zip(row, idx):
            img = np.asarray(s.keep_images["image"][i], np.float32)
            a.imshow(img[..., 0] if img.shape[-1] in (1, 4) else img[..., :3], cmap="gray", vmin=0, vmax=1)
            a.set_title(f"{'bad' if s.labels[i] else 'good'} {s.scores[i]:.3g}", fontsize=6, color="red" if s.labels[i] else "black")
            a.axis("off")
        row[0].text(-0.15, 0.5, f"{kind}\nanomalous", transform=row[0].transAxes, ha="right", va="center", fontsize=7)
    fig.tight_layout()
    _save_fig(fig, path)
    return True


def _template(name: str) -> string.Template:
    """The page skeleton ``tfanomaly/templates/NAME``; ``write_all`` substitutes its ``$`` fields with the tables and figures."""
    return string.Template((resources.files("tfanomaly") / "templates" / name).read_text(encoding="utf-8"))


def _img_tag(path: Path) -> str:
    if not path.exists():
        return ""
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{path.name}">'


def _table(header, rows) -> str:
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _fmt(v) -> str:
    if isinstance(v, (float, np.floating)):
        return "n/a" if np.isnan(v) else f"{v:.4f}"
    return str(v)


def console_summary(summary: dict) -> str:
    def ms(d):
        return f"{d['mean']:.4f} ± {d['std']:.4f}" if d and not np.isnan(d["mean"]) else "n/a"

    lines = [
        f"{'metric':<28}{'value (mean ± std over seeds ' + ','.join(map(str, summary['seeds'])) + ')'}",
        f"{'image AUROC':<28}{ms(summary['image_auroc'])}",
        f"{'image PR-AUC':<28}{ms(summary['image_pr_auc'])}",
        f"{'optimal accuracy (TPR=TNR)':<28}{ms(summary['optimal_accuracy'])}",
        f"{'best accuracy (ACC, oracle)':<28}{ms(summary.get('max_accuracy'))}",
        f"{'ZFN accuracy (oracle)':<28}{ms(summary.get('zfn_accuracy'))}",
        f"{'accuracy at ' + summary['rule']:<28}{ms(summary['accuracy_at_threshold'])}",
        f"{'F1 at ' + summary['rule']:<28}{ms(summary['f1_at_threshold'])}",
    ]
    if summary.get("source", "vials") == "vials":
        for what in ("strip", "product"):
            name = f"{what} acc. / TPR / TNR" + (" (k of n)" if what == "product" else "")
            lines.append(f"{name:<28} {' / '.join(ms(summary.get(f'{what}_{k}')) for k in ('accuracy', 'tpr', 'tnr'))}")
        if "knapp_ratio" in summary:
            lines.append(f"{'Knapp FQA / FQM':<28}{ms(summary['knapp_ratio'])}")
            lines.append(f"{'... reject+accept zones':<28} {' / '.join(ms(summary.get(f'knapp_{k}')) for k in ('accuracy', 'tpr', 'tnr'))}")
    if "pixel_auroc" in summary:
        lines.append(f"{'pixel AUROC (first seed)':<28}{summary['pixel_auroc']:.4f}")
    sh = summary.get("shift")
    if sh:
        lines.append("")
        lines.append(f"{'domain shift':<28}{'clean':<22}{'shifted':<22}")

        def fmt(v):
            return f"{v:.4f}" if isinstance(v, float) else ms(v) if v else "n/a"

        for key, label in SHIFT_KEYS:
            a, b = summary.get(key), sh.get(key)
            lines.append(f"{label:<28}{fmt(a):<22}{fmt(b):<22}")
    return "\n".join(lines)


SHIFT_KEYS = [
    ("image_auroc", "image AUROC"),
    ("accuracy_at_threshold", "accuracy at threshold"),
    ("f1_at_threshold", "F1 at threshold"),
    ("pixel_auroc", "pixel AUROC (first seed)"),
]


def write_all(out: Path, s, summary: dict, first: dict, cfg) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "metrics.json", json.dumps(_jsonable(summary), indent=2))
    decision = first["decision"]
    decision.save(out / DECISION_FILE)
    thr = decision.thresholds
    cal, rep = first["_masks"]
    flags = decision.flags(s.scores, s.regions)
    _write_csv(
        out / "patches.csv",
        ["index", "product", "run", "frame", "rank", "vial", "region", "label", "score", "split", "flagged"],
        [
            [
                i,
                s.products[i],
                int(s.runs[i]),
                int(s.frames[i]),
                int(s.ranks[i]),
                int(s.vials[i]),
                int(s.regions[i]),
                int(s.labels[i]),
                repr(float(s.scores[i])),
                "calibration" if cal[i] else "reported",
                int(flags[i]),
            ]
            for i in range(len(s.scores))
        ],
    )
    reg_rows = []
    for r, m in sorted(first["regions"].items()):
        t = thr[r] if decision.per_region else thr
        a = m["at_threshold"]
        reg_rows.append([region_name(cfg, r), m["n"], m["n_defective"], m["auroc"], t, a["accuracy"], a["tpr"], a["tnr"], a["fp"], a["fn"]])
    reg_header = ["region", "patches", "defective", "auroc", "threshold", "accuracy", "tpr", "tnr", "fp", "fn"]
    _write_csv(out / "regions.csv", reg_header, reg_rows)
    prod = first["products"]
    prod_rows = [
        [p, v["label"], v["runs"], v["visible_runs"], v["zone"], v["flagged_runs"], v["needed"], "defective" if v["defective"] else "good", f"{v['max_score']:.6g}"]
        for p, v in prod["verdicts"].items()
    ]
    prod_header = ["product", "label", "runs", "visible_runs", "zone", "flagged_runs", "needed", "verdict", "max_score"]
    _write_csv(out / "products.csv", prod_header, prod_rows)

    plot_curves(s, first, out / "roc.png", out / "pr.png")
    plot_histogram(s, first, out / "histogram.png")
    vials = cfg.data.source == "vials"
    unit = "patches" if vials else "images"
    plot_worst(s, first, out / "worst_cases.png", 2 * max(1, cfg.eval.worst_cases // 2), vials)
    plot_ranking(s, out / "ranking.png")

    def ms(d):
        return f"{d['mean']:.4f} ± {d['std']:.4f}" if not np.isnan(d["mean"]) else "n/a"

    warn = ""
    if summary["calibrated_on_reported_split"]:
        warn += "<p class=warn>Thresholds were calibrated on the reported split (forced): the accuracies below are optimistic.</p>"
    for w in first["warnings"]:
        warn += f"<p class=warn>{html.escape(w)}</p>"
    pm = prod["metrics"]
    head_rows = [
        ["image AUROC", ms(summary["image_auroc"])],
        ["image PR-AUC", ms(summary["image_pr_auc"])],
        ["optimal accuracy (TPR = TNR)", ms(summary["optimal_accuracy"])],
        ["best accuracy of any threshold (ACC, oracle)", ms(summary["max_accuracy"])],
        ["accuracy at the lowest defective score (ZFN, oracle)", ms(summary["zfn_accuracy"])],
        [f"accuracy at {summary['rule']}", ms(summary["accuracy_at_threshold"])],
        [f"F1 at {summary['rule']}", ms(summary["f1_at_threshold"])],
    ]
    if vials:
        sm = first["strips"]
        head_rows.append(
            [f"strip accuracy / TPR / TNR (a strip = one run's {sm['patches_per_strip']} patches, flagged by its max)", " / ".join(ms(summary.get(f"strip_{k}")) for k in ("accuracy", "tpr", "tnr"))]
        )
        head_rows.append([f"product accuracy / TPR / TNR ({prod['k_of_n'][0]} of {prod['k_of_n'][1]} runs)", " / ".join(ms(summary.get(f"product_{k}")) for k in ("accuracy", "tpr", "tnr"))])
        kn = first["knapp"]
        head_rows.append(
            [
                f"Knapp: FQA / FQM over the reject zone ({kn['counts']['reject']} products whose defect is visible in >= {kn['zones'][1]:g} of their runs)",
                ms(summary["knapp_ratio"]),
            ]
        )
        head_rows.append(
            [
                f"product accuracy / TPR / TNR over the reject and accept zones ({kn['counts']['grey']} grey-zone products left out)",
                " / ".join(ms(summary.get(f"knapp_{k}")) for k in ("accuracy", "tpr", "tnr")),
            ]
        )
    if "pixel_auroc" in summary:
        head_rows.append(["pixel AUROC (first seed)", _fmt(summary["pixel_auroc"])])
        head_rows.append([f"AUPRO @30% FPR (first seed, up to 2000 {unit})", _fmt(summary["aupro"])])
    tiling = cfg.data.tiling
    how = (
        f"Each image is scored by {cfg.data.image_size[0]}x{cfg.data.image_size[1]} tiles at stride {tiling.stride[0]}x{tiling.stride[1]} "
        f"(scale {tiling.scale:g}); its score is the max over its tiles and its heatmap is stitched at its own resolution."
        if tiling.enabled
        else f"Each {unit[:-1]} is resized to {cfg.data.image_size[0]}x{cfg.data.image_size[1]}."
    )
    per_unit = ""
    if vials:
        per_unit = f"""<h2>Per region</h2>{_table(reg_header, reg_rows)}
<h2>Per product</h2><p>A run flags its product when any of its patches is flagged; a product is defective when
at least {prod["k_of_n"][0]} of {prod["k_of_n"][1]} runs flag it. Accuracy {_fmt(pm["accuracy"])}, TPR {_fmt(pm["tpr"])}, TNR {_fmt(pm["tnr"])}.
<code>visible_runs</code> counts the runs in which the product's defect is visible in a scored patch (its masks): a test
kit's reference. Its zone (Knapp) is <i>reject</i> when that is at least {kn["zones"][1]:g} of its runs, <i>accept</i>
below {kn["zones"][0]:g} (every good product), <i>grey</i> between; FQM and FQA sum the reference's and the machine's
detection rates (visible or flagged runs / runs) over the reject zone: FQM {kn["fqm"]:.2f}, FQA {kn["fqa"]:.2f}, ratio {_fmt(kn["ratio"])}
(at least 1: the machine finds what the reference finds).</p>
{_table(prod_header, prod_rows)}"""
    a = first["image"]["at_threshold"]
    groups = "products" if vials else "images"
    page = _template("report.html").substitute(
        family=html.escape(cfg.family),
        root=html.escape(cfg.data.root),
        rule=html.escape(summary["rule"]),
        per_region=" per region" if summary["per_region"] else "",
        n_calibration=first["n_calibration"],
        n_reported=first["n_reported"],
        unit=unit,
        groups=groups,
        seeds=", ".join(map(str, summary["seeds"])),
        seed=first["seed"],
        how=html.escape(how),
        warnings=warn,
        summary_table=_table(["metric", "value (mean ± std over seeds)"], head_rows),
        confusion_table=_table(["", "flagged", "passed"], [["defective", a["tp"], a["fn"]], ["good", a["fp"], a["tn"]]]),
        per_unit=per_unit,
        **{name: _img_tag(out / f"{name}.png") for name in ("roc", "pr", "histogram", "worst_cases", "ranking")},
    )
    atomic_write_text(out / "report.html", page)
