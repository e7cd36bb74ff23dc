"""`lossdial report`: one self-contained HTML page (figures embedded) with PNG copies beside it."""

from __future__ import annotations

import base64
import html
import io
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lossdial.evaluate.classification import confusion_at, prevalence_weights
from lossdial.evaluate.select import sweep_split
from lossdial.report.card import CARD_METRICS, load_card
from lossdial.rundir import fmt_value


def _plt():
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - matplotlib is a dependency
        raise ValueError("lossdial report needs matplotlib: pip install matplotlib") from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _lam_label(lam: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in lam.items())


def _save(fig, out: Path, name: str, figures: list[tuple[str, str, str]], caption: str) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    data = buf.getvalue()
    (out / name).write_bytes(data)
    figures.append((name, base64.b64encode(data).decode(), caption))
    _plt().close(fig)


def _default_lambdas(loaded, k: int = 5):
    from lossdial.conditioning import grid_points_from_space

    return grid_points_from_space(loaded.space, k)


def learning_curve_figure(plt, runs: Sequence):
    """Training loss, learning rate and the periodic validation metrics per epoch (``metrics.jsonl``), one line
    style per run; legends below the panels."""
    from lossdial.rundir import RunDir

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.9))
    styles = ["-", "--", ":", "-."]
    val_seen = False
    for i, r in enumerate(runs):
        epochs = [rec for rec in RunDir(r.path).read_log() if rec.get("event") == "epoch"]
        name = Path(r.path).name
        ls = styles[i % len(styles)]
        ep = [rec["epoch"] for rec in epochs]
        axes[0].plot(ep, [rec["train_loss"] for rec in epochs], ls, marker="o", ms=3, label=name)
        axes[1].plot(ep, [rec["lr"] for rec in epochs], ls, marker="o", ms=3, label=name)
        with_val = [rec for rec in epochs if isinstance(rec.get("val"), dict)]
        keys = list(with_val[0]["val"]) if with_val else []
        for j, key in enumerate(keys):
            val_seen = True
            ys = [rec["val"].get(key) for rec in with_val]
            axes[2].plot([rec["epoch"] for rec in with_val], [np.nan if v is None else v for v in ys], ls,
                         marker="o", ms=3, color=f"C{j}", label=f"{name} {key}")
    axes[0].set(xlabel="epoch", ylabel="training loss (epoch mean)", title="Training loss")
    axes[1].set(xlabel="epoch", ylabel="learning rate (end of epoch)", title="Learning rate")
    axes[2].set(xlabel="epoch", ylabel="validation metric", title="Periodic validation (reference lambda)")
    if not val_seen:
        axes[2].text(0.5, 0.5, "no periodic validation\n(train.eval_every = 0)", ha="center", va="center",
                     transform=axes[2].transAxes, color="grey")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    fig.tight_layout()
    return fig


def _legend_outside(ax) -> None:
    """The legend to the right of the axes, never over the curves."""
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)


def _cell_text_colour(fraction: float) -> str:
    """Text colour readable on a 'Blues' cell whose colour is at `fraction` of the scale."""
    return "white" if fraction > 0.55 else "black"


def build_report(runs: Sequence, out: str | Path, *, split: str = "val", lambdas=None,
                 prevalence: float | None = None, prior=None, adjustments=None) -> Path:
    """Write OUT/report.html and OUT/*.png for `runs` (the first is the main run, the others are drawn beside it).

    All runs must be of one task type. Multi-class runs (``prior``, ``adjustments``):
    :func:`lossdial.report.multiclass.build_multiclass_report`; binary runs (``prevalence``): below. The page's
    live dial (:mod:`lossdial.report.dial`) always reads the validation split; ``split`` chooses the split of
    the static figures and tables.
    """
    from sklearn.metrics import precision_recall_curve, roc_curve

    from lossdial.evaluate.select import _check_task_options
    from lossdial.report.dial import (binary_dial_data, card_lambdas, dial_grid, dial_section, reliability_at,
                                      reliability_bins)
    from lossdial.report.multiclass import build_multiclass_report, check_same_task

    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    task = check_same_task(runs)
    for r in runs:
        _check_task_options(r, prevalence=prevalence, prior=prior, adjustments=adjustments)
    if task == "multiclass":
        return build_multiclass_report(runs, out, split=split, lambdas=lambdas, prior=prior, adjustments=adjustments)
    plt = _plt()
    main = runs[0]
    prev = float(prevalence) if prevalence is not None else float(main.data["train_prevalence"])
    # the live dial: every run's validation sweep (main: a dense grid plus the model card's lambdas)
    dial_sweeps = [sweep_split(r, "val", dial_grid(r, lambdas if i == 0 else None, card_lambdas(r))
                               if r.is_lct else None, prevalence=prev) for i, r in enumerate(runs)]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    main_lams = (lambdas or _default_lambdas(main)) if main.is_lct else None
    main_sweep = sweep_split(main, split, main_lams, prevalence=prev)
    others = [(r, sweep_split(r, split, _default_lambdas(r, 3) if r.is_lct else None, prevalence=prev))
              for r in runs[1:]]
    figures: list[tuple[str, str, str]] = []
    cmap = plt.get_cmap("viridis")

    def label(r_, lam) -> str:
        return f"{'LCT' if r_.is_lct else 'baseline'} {Path(r_.path).name}" + (f" {_lam_label(lam)}" if r_.is_lct
                                                                                else "")

    def curves(kind: str):
        fig, ax = plt.subplots(figsize=(7.6, 4.8))
        k_total = len(main_sweep.lambdas)
        series = [(main, main_sweep, lam, s, cmap(j / max(1, k_total - 1)), "-")
                  for j, (lam, s) in enumerate(zip(main_sweep.lambdas, main_sweep.scores))]
        series += [(r_, sw, lam, s, None, "--") for r_, sw in others for lam, s in zip(sw.lambdas, sw.scores)]
        for r_, sw, lam, s, color, ls in series:
            y = sw.labels
            if kind == "pr":
                p, rc, _ = precision_recall_curve(y, s, sample_weight=prevalence_weights(y, prev))
                ax.plot(rc, p, ls, color=color, label=label(r_, lam))
            else:
                fpr, tpr, _ = roc_curve(y, s)
                ax.plot(fpr, tpr, ls, color=color, label=label(r_, lam))
        if kind == "pr":
            ax.set(xlabel="recall", ylabel="precision at the report's prevalence", xlim=(0, 1), ylim=(0, 1.02),
                   title=f"Precision-recall, {split} split")
        else:
            ax.plot([0, 1], [0, 1], ":", color="grey", label="chance")
            ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.02),
                   title=f"ROC, {split} split")
        _legend_outside(ax)
        ax.grid(alpha=0.3)
        return fig

    _save(curves("pr"), out, "pr_curves.png", figures,
          f"Precision-recall curves on the {split} split for several lambda values (dashed: the other runs).")
    _save(curves("roc"), out, "roc_curves.png", figures, f"ROC curves on the {split} split (prevalence-free).")

    if main.is_lct:
        dense = sweep_split(main, split, lambdas or _default_lambdas(main, 25), prevalence=prev)
        names = list(dense.lambdas[0])
        x = [lam[names[0]] for lam in dense.lambdas] if len(names) == 1 else list(range(len(dense.lambdas)))
        fig, axes = plt.subplots(2, 3, figsize=(12, 6.4))
        titles = {"auc": "AUC", "ap": "average precision", "brier": "Brier score", "ece": "ECE (15 bins)",
                  "precision": f"precision at threshold {dense.threshold:g}",
                  "recall": f"recall at threshold {dense.threshold:g}"}
        for ax, key in zip(axes.flat, ("auc", "ap", "brier", "ece", "precision", "recall")):
            ax.plot(x, [row["metrics"][key] for row in dense.table], "o-", ms=3, label=f"LCT {Path(main.path).name}")
            for i, (r_, sw) in enumerate(others):
                if not r_.is_lct:
                    ax.axhline(sw.table[0]["metrics"][key], ls="--", color=f"C{i + 1}", lw=1,
                               label=f"baseline {Path(r_.path).name}")
            ax.set(title=titles[key], ylabel=titles[key], xlabel=names[0] if len(names) == 1 else "lambda index")
            ax.grid(alpha=0.3)
        handles, labels_ = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels_, loc="lower center", ncol=max(1, len(labels_)), fontsize=8, frameon=False)
        fig.tight_layout(rect=(0, 0.05, 1, 1))
        _save(fig, out, "metrics_vs_lambda.png", figures,
              f"Metrics against lambda on the {split} split (dashed: baseline runs).")

    fig, ax = plt.subplots(figsize=(7.0, 5))
    y = main_sweep.labels
    n_pos, n_neg = int(y.sum()), int((y == 0).sum())
    for j, (lam, s) in enumerate(zip(main_sweep.lambdas, main_sweep.scores)):
        xs, ys, _, _ = reliability_at(reliability_bins(y, s), prev, n_pos, n_neg)
        ax.plot(xs, ys, "o-", ms=3, color=cmap(j / max(1, len(main_sweep.lambdas) - 1)), label=label(main, lam))
    for r_, sw in others:
        yo = sw.labels
        for lam, s in zip(sw.lambdas, sw.scores):
            xs, ys, _, _ = reliability_at(reliability_bins(yo, s), prev, int(yo.sum()), int((yo == 0).sum()))
            ax.plot(xs, ys, "s--", ms=3, label=label(r_, lam))
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect calibration")
    ax.set(xlabel="mean predicted P(positive)", ylabel="observed positive rate", xlim=(0, 1), ylim=(0, 1.02),
           title=f"Reliability, {split} split")
    _legend_outside(ax)
    ax.grid(alpha=0.3)
    _save(fig, out, "reliability.png", figures, "Reliability diagram (15 equal-width bins; negatives reweighted to "
                                                "the report's prevalence).")

    _save(learning_curve_figure(plt, runs), out, "learning_curves.png", figures,
          "Training loss, learning rate and the periodic validation metrics per epoch (metrics.jsonl).")

    card = load_card(main.path)
    points = (card or {}).get("points", {})
    for name, p in points.items():
        from lossdial.evaluate.scoring import score_lambdas

        task = main.task()
        data = getattr(task, split)
        s = score_lambdas(main.model, data.x, [p["lambda"]] if main.is_lct else None, main.space,
                          device=main.device, transform=task.normalizer)[0]
        yy = data.y.numpy()
        c = confusion_at(yy, s, p["threshold"])
        raw = np.array([[c["tn"], c["fp"]], [c["fn"], c["tp"]]], dtype=float)
        n = raw.sum(1, keepdims=True)
        rates = np.divide(raw, n, out=np.zeros_like(raw), where=n > 0)
        per10k = rates * np.array([[1 - prev], [prev]]) * 1e4
        fig, ax = plt.subplots(figsize=(4.6, 3.8))
        ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        for (i, j), v in np.ndenumerate(per10k):
            ax.text(j, i, f"{v:.0f} per 10,000\n{rates[i, j]:.3f} of the row\n({int(raw[i, j])} cases)",
                    ha="center", va="center", fontsize=8, color=_cell_text_colour(rates[i, j]))
        cls = main.data["class_names"]
        ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=cls, yticklabels=cls, xlabel="predicted class",
               ylabel="true class", title=f"'{name}' on {split}")
        _save(fig, out, f"confusion_{name}.png", figures,
              f"Confusion matrix at point '{name}' ({_lam_label(p['lambda']) or 'fixed'}, threshold "
              f"{p['threshold']:.4g}), {split} split: cases per 10,000 at the report's prevalence, the fraction of "
              f"the true class, and the raw {split} counts.")

    dial = dial_section(binary_dial_data(list(zip(runs, dial_sweeps)), prevalence=prev,
                                         class_names=main.data["class_names"]))
    page = out / "report.html"
    page.write_text(_render(main, others, main_sweep, figures, points, prev, split, dial))
    return page


def _render(main, others, sw, figures, points: dict[str, Any], prev: float, split: str, dial: str = "") -> str:
    e = html.escape
    d = main.data
    keys = ("auc", "ap", "brier", "ece", "f1", "precision", "recall")
    rows = []
    for r_, sweep_ in [(main, sw)] + list(others):
        for row in sweep_.table:
            m = row["metrics"]
            who = f"{'LCT' if r_.is_lct else 'baseline'} {Path(r_.path).name}"
            lam = _lam_label(row["lambda"]) + ("" if r_.is_lct else " (fixed)")
            rows.append(f"<tr><td>{e(who)}</td><td>{e(lam)}</td>"
                        + "".join(f"<td>{fmt_value(m.get(k), '.3f')}</td>" for k in keys) + "</tr>")
    card_rows = []
    for name, p in points.items():
        other_prev = p.get("prevalence") is not None and abs(float(p["prevalence"]) - prev) > 1e-12
        for k in CARD_METRICS:
            ci = p.get("test_ci95", {}).get(k)
            card_rows.append(f"<tr><td>{e(name)}{' (prevalence ' + format(p['prevalence'], '.4g') + ')' if other_prev else ''}"
                             f"</td><td>{e(k)}</td><td>{fmt_value(p['val'].get(k), '.3f')}</td>"
                             f"<td>{fmt_value(p['test'].get(k), '.3f')}</td>"
                             f"<td>{'' if not ci else f'[{fmt_value(ci[0])}, {fmt_value(ci[1])}]'}</td></tr>")
    figs = figures_html(figures)
    others_txt = ", ".join(e(str(r.path)) for r, _ in others) or "none"
    return page_head(str(main.path)) + f"""
<h1>lossdial report</h1>
<p>Run <code>{e(str(main.path))}</code> ({'LCT' if main.is_lct else 'baseline'}); beside it: {others_txt}.
Positive class <b>{e(d['class_names'][1])}</b>; counts (neg, pos) train {d['counts']['train']},
val {d['counts']['val']}, test {d['counts']['test']}. <b>Prevalence: {prev:.4g}</b> (every precision-type number,
Brier, ECE and reliability curve on this page is at this deployment prevalence, negatives reweighted, unless the
dial's slider moves it). Static figures and tables use the <b>{e(split)}</b> split; the dial uses validation.
Generated {e(time.strftime('%Y-%m-%d %H:%M'))}.</p>
{dial}
<h2>Metrics per lambda ({e(split)})</h2>
<table><tr><th>run</th><th>lambda</th><th>AUC</th><th>AP</th><th>Brier</th><th>ECE</th><th>best F1</th>
<th>precision at threshold {sw.threshold:g}</th><th>recall at threshold {sw.threshold:g}</th></tr>
{''.join(rows)}</table>
<h2>Figures</h2>
{figs}
<h2>Model card points</h2>
<p>Chosen on the validation split; test measured once after choosing.</p>
<table><tr><th>point</th><th>metric</th><th>validation</th><th>test</th><th>test 95% CI</th></tr>
{''.join(card_rows) or '<tr><td colspan="5">no points yet: run lossdial pick</td></tr>'}</table>
</body>
</html>
"""


def figures_html(figures: list[tuple[str, str, str]]) -> str:
    """The static figures, embedded (the page stays one file) and linked to their PNG beside it."""
    e = html.escape
    return "\n".join(
        f'<figure><img alt="{e(n)}" src="data:image/png;base64,{b}"><figcaption>{e(c)} '
        f'<a href="{e(n)}">{e(n)}</a></figcaption></figure>' for n, b, c in figures)


def page_head(run: str) -> str:
    """The opening of a report page (doctype, title, the one inline stylesheet, <body>), for both task types."""
    return f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>lossdial report: {html.escape(run)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1200px;margin:1.5em auto;padding:0 1em;line-height:1.4}}
table{{border-collapse:collapse;margin:.5em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
th{{background:#f4f4f4}}caption{{text-align:left;font-size:.9em;color:#444}}
figure{{display:inline-block;margin:1em;max-width:100%}}img{{max-width:100%}}
.note{{color:#555;font-size:.9em}}#controls{{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));
gap:.4em 1.5em;padding:.6em;background:#f7f9fc;border:1px solid #dde}}.ctl label{{display:block;font-size:.9em}}
.ctl input[type=range]{{width:70%;vertical-align:middle}}.ctl output{{margin-left:.5em;font-weight:bold}}
.grid{{display:flex;flex-wrap:wrap;gap:1em}}.grid>div{{flex:1 1 420px}}.plots{{display:flex;flex-wrap:wrap}}svg.plot{{width:380px;max-width:100%;
height:auto;border:1px solid #eee;margin:2px}}svg.plot.wide{{width:560px}}
table.cm td{{padding:2px 6px}}table.cm td.dark{{background:#08519c;color:#fff}}table.cm td.light{{background:#deebf7;color:#000}}
@media print{{body{{max-width:none;margin:0}}#controls{{break-inside:avoid}}figure,svg,table{{break-inside:avoid}}
button{{display:none}}}}</style></head>
<body>"""
