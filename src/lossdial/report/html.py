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


def build_report(runs: Sequence, out: str | Path, *, split: str = "val", lambdas=None,
                 prevalence: float | None = None, prior=None, adjustments=None) -> Path:
    """Write OUT/report.html and OUT/*.png for `runs` (the first is the main run, others are overlaid).

    All runs must be of one task type. Multi-class runs (``prior``, ``adjustments``):
    :func:`lossdial.report.multiclass.build_multiclass_report`; binary runs (``prevalence``): below.
    """
    from sklearn.metrics import precision_recall_curve, roc_curve

    from lossdial.evaluate.select import _check_task_options
    from lossdial.report.multiclass import build_multiclass_report, check_same_task

    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    task = check_same_task(runs)
    for r in runs:
        _check_task_options(r, prevalence=prevalence, prior=prior, adjustments=adjustments)
    if task == "multiclass":
        return build_multiclass_report(runs, out, split=split, lambdas=lambdas, prior=prior, adjustments=adjustments)
    plt = _plt()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    main = runs[0]
    prev = float(prevalence) if prevalence is not None else float(main.data["train_prevalence"])
    main_lams = (lambdas or _default_lambdas(main)) if main.is_lct else None
    main_sweep = sweep_split(main, split, main_lams, prevalence=prev)
    others = [(r, sweep_split(r, split, _default_lambdas(r, 3) if r.is_lct else None, prevalence=prev))
              for r in runs[1:]]
    figures: list[tuple[str, str, str]] = []
    cmap = plt.get_cmap("viridis")

    def curves(kind: str):
        fig, ax = plt.subplots(figsize=(6.4, 4.8))
        k_total = len(main_sweep.lambdas)
        for j, (lam, s) in enumerate(zip(main_sweep.lambdas, main_sweep.scores)):
            y = main_sweep.labels
            w = prevalence_weights(y, prev)
            color = cmap(j / max(1, k_total - 1))
            label = f"{'LCT' if main.is_lct else 'run'} {_lam_label(lam)}"
            if kind == "pr":
                p, r, _ = precision_recall_curve(y, s, sample_weight=w)
                ax.plot(r, p, color=color, label=label)
            else:
                fpr, tpr, _ = roc_curve(y, s)
                ax.plot(fpr, tpr, color=color, label=label)
        for r_, sw in others:
            for lam, s in zip(sw.lambdas, sw.scores):
                y = sw.labels
                lbl = f"{'LCT' if r_.is_lct else 'baseline'} {Path(r_.path).name} {_lam_label(lam)}"
                if kind == "pr":
                    p, rc, _ = precision_recall_curve(y, s, sample_weight=prevalence_weights(y, prev))
                    ax.plot(rc, p, "--", label=lbl)
                else:
                    fpr, tpr, _ = roc_curve(y, s)
                    ax.plot(fpr, tpr, "--", label=lbl)
        if kind == "pr":
            ax.set(xlabel="recall", ylabel=f"precision (prevalence {prev:.3g})", xlim=(0, 1), ylim=(0, 1.02),
                   title=f"Precision-recall, {split} split")
        else:
            ax.plot([0, 1], [0, 1], ":", color="grey")
            ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC, {split} split")
        ax.legend(fontsize=7, loc="lower left" if kind == "pr" else "lower right")
        ax.grid(alpha=0.3)
        return fig

    _save(curves("pr"), out, "pr_curves.png", figures,
          f"Precision-recall curves on the {split} split for several lambda values (dashed: other runs). "
          f"Precision at prevalence {prev:.4g}.")
    _save(curves("roc"), out, "roc_curves.png", figures, f"ROC curves on the {split} split.")

    if main.is_lct:
        dense = sweep_split(main, split, lambdas or _default_lambdas(main, 25), prevalence=prev)
        names = list(dense.lambdas[0])
        x = [lam[names[0]] for lam in dense.lambdas] if len(names) == 1 else list(range(len(dense.lambdas)))
        fig, axes = plt.subplots(2, 3, figsize=(11, 6))
        for ax, key in zip(axes.flat, ("auc", "ap", "brier", "ece", "precision", "recall")):
            ax.plot(x, [row["metrics"][key] for row in dense.table], "o-", ms=3)
            for r_, sw in others:
                if not r_.is_lct:
                    ax.axhline(sw.table[0]["metrics"][key], ls="--", color="grey", lw=1)
            ax.set(title=key + (" @thr" if key in ("precision", "recall") else ""),
                   xlabel=names[0] if len(names) == 1 else "lambda index")
            ax.grid(alpha=0.3)
        fig.tight_layout()
        _save(fig, out, "metrics_vs_lambda.png", figures,
              f"Metrics against lambda on the {split} split (dashed: baseline runs); precision and recall at "
              f"threshold {dense.threshold:g}.")

    fig, ax = plt.subplots(figsize=(5.2, 5))
    bins = np.linspace(0, 1, 11)
    for j, (lam, s) in enumerate(zip(main_sweep.lambdas, main_sweep.scores)):
        y = main_sweep.labels
        idx = np.minimum(np.digitize(s, bins) - 1, 9)
        xs, ys = [], []
        for b in range(10):
            m = idx == b
            if m.any():
                xs.append(s[m].mean())
                ys.append(y[m].mean())
        ax.plot(xs, ys, "o-", color=cmap(j / max(1, len(main_sweep.lambdas) - 1)), label=_lam_label(lam) or "run")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="mean predicted P(positive)", ylabel="observed positive rate",
           title=f"Reliability, {split} split (its own prevalence)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    _save(fig, out, "reliability.png", figures, "Reliability diagram (10 equal-width bins).")

    card = load_card(main.path)
    points = (card or {}).get("points", {})
    for name, p in points.items():
        from lossdial.evaluate.scoring import score_lambdas

        task = main.task()
        data = getattr(task, split)
        s = score_lambdas(main.model, data.x, [p["lambda"]] if main.is_lct else None, main.space,
                          device=main.device, transform=task.normalizer)[0]
        c = confusion_at(data.y.numpy(), s, p["threshold"])
        mat = np.array([[c["tn"], c["fp"]], [c["fn"], c["tp"]]])
        fig, ax = plt.subplots(figsize=(3.8, 3.4))
        ax.imshow(mat, cmap="Blues")
        for (i, j), v in np.ndenumerate(mat):
            ax.text(j, i, f"{int(v)}", ha="center", va="center")
        cls = main.data["class_names"]
        ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=cls, yticklabels=cls, xlabel="predicted", ylabel="true",
               title=f"'{name}' on {split}")
        _save(fig, out, f"confusion_{name}.png", figures,
              f"Confusion matrix at point '{name}' ({_lam_label(p['lambda']) or 'fixed'}, threshold "
              f"{p['threshold']:.4g}), {split} split, raw counts.")

    page = out / "report.html"
    page.write_text(_render(main, others, main_sweep, figures, points, prev, split))
    return page


def _render(main, others, sw, figures, points: dict[str, Any], prev: float, split: str) -> str:
    e = html.escape
    d = main.data
    rows = []
    for row in sw.table:
        m = row["metrics"]
        rows.append("<tr><td>" + e(_lam_label(row["lambda"]) or "fixed") + "</td>" + "".join(
            f"<td>{fmt_value(m.get(k), '.4f')}</td>" for k in ("auc", "ap", "brier", "ece", "f1", "precision", "recall"))
            + "</tr>")
    card_rows = []
    for name, p in points.items():
        for k in CARD_METRICS:
            ci = p.get("test_ci95", {}).get(k)
            card_rows.append(f"<tr><td>{e(name)}</td><td>{e(k)}</td><td>{fmt_value(p['val'].get(k), '.4f')}</td>"
                             f"<td>{fmt_value(p['test'].get(k), '.4f')}</td>"
                             f"<td>{'' if not ci else f'[{fmt_value(ci[0])}, {fmt_value(ci[1])}]'}</td></tr>")
    figs = "\n".join(
        f'<figure><img alt="{e(n)}" src="data:image/png;base64,{b}"><figcaption>{e(c)} '
        f'<a href="{e(n)}">{e(n)}</a></figcaption></figure>' for n, b, c in figures)
    others_txt = ", ".join(e(str(r.path)) for r, _ in others) or "none"
    return page_head(str(main.path)) + f"""
<h1>lossdial report</h1>
<p>Run <code>{e(str(main.path))}</code> ({'LCT' if main.is_lct else 'baseline'}); overlaid: {others_txt}.
Positive class <b>{e(d['class_names'][1])}</b>; counts (neg, pos) train {d['counts']['train']},
val {d['counts']['val']}, test {d['counts']['test']}. Curves and tables use the <b>{e(split)}</b> split;
precision-type metrics at prevalence {prev:.4g}. Generated {e(time.strftime('%Y-%m-%d %H:%M'))}.</p>
<h2>Metrics per lambda ({e(split)})</h2>
<table><tr><th>lambda</th><th>AUC</th><th>AP</th><th>Brier</th><th>ECE</th><th>best F1</th><th>P@thr</th><th>R@thr</th></tr>
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


def page_head(run: str) -> str:
    """The opening of a report page (doctype, title, the one inline stylesheet, <body>), for both task types."""
    return f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>lossdial report: {html.escape(run)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}figure{{display:inline-block;margin:1em}}
img{{max-width:100%}}</style></head>
<body>"""
