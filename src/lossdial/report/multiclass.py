"""`lossdial report` on multi-class runs: the confusion matrix, per-class recall against training count and the
dial curve, in one self-contained HTML page with PNG copies beside it (same style as the binary report).

What is drawn (all on one split, validation by default):

- the row-normalised confusion matrix of every run at its point: the model card's first point if it has
  one, else lambda = each distribution's mean (the reference lambda training logs at; a baseline's fixed
  lambda) and t = 0;
- per-class recall against the training count (log x), one series per run, each at its own point;
- the dial curve: balanced and many / medium / few-shot accuracy against the post-hoc adjustment t (scores
  z_c - t log pi_c), one line per (run, lambda): a baseline has one line, an LCT run one per lambda, so the
  figure shows the dial over lambda and t; empty shot groups are skipped;
- the table of those rows (lambda, t, accuracy at the prior, balanced, worst, many / medium / few);
- the live dial (:mod:`lossdial.report.dial`): sliders over lambda, t and the class prior, on validation.

The numbers drawn are embedded in the page as strict JSON (``<script type="application/json"
id="report-data">``; undefined values are ``null``) so they can be read back and checked.
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lossdial.evaluate.multiclass import adjusted_probs
from lossdial.rundir import dumps_json, fmt_value, is_undefined

SHOT_KEYS = ("many_shot_accuracy", "medium_shot_accuracy", "few_shot_accuracy")
DIAL_KEYS = ("accuracy", "balanced_accuracy", "worst_class_accuracy") + SHOT_KEYS


def _lam_label(lam: dict[str, float] | None) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in (lam or {}).items())


def report_point(loaded) -> tuple[dict[str, float] | None, float, str]:
    """The point a run is drawn at: (lambda or None for a baseline, t, where it comes from in words).

    The model card's first point if the card has one (its ``lambda`` on an LCT run and its ``adjustment``), else
    the reference lambda (each distribution's mean; a baseline has none) at t = 0.
    """
    from lossdial.report.card import load_card
    from lossdial.train.loop import reference_lambda

    points = (load_card(loaded.path) or {}).get("points") or {}
    for name, p in points.items():
        if p.get("adjustment") is None:
            continue
        lam = dict(p["lambda"]) if loaded.is_lct and p.get("lambda") else None
        if loaded.is_lct and lam is None:
            continue
        return lam, float(p["adjustment"]), f"model card point '{name}'"
    if loaded.is_lct:
        return reference_lambda(loaded.space), 0.0, "no model card point: the reference lambda (each " \
                                                      "distribution's mean) at t = 0"
    return None, 0.0, "no model card point: the trained model at t = 0"


def confusion_matrix(y: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts ``[true, predicted]`` (C x C, int)."""
    m = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(m, (np.asarray(y, dtype=int), np.asarray(pred, dtype=int)), 1)
    return m


def normalise_rows(counts: np.ndarray) -> np.ndarray:
    """Each true class's row divided by its count (a class absent from the split: a row of NaN)."""
    n = counts.sum(1, keepdims=True).astype(float)
    return np.divide(counts, n, out=np.full(counts.shape, np.nan), where=n > 0)


def confusion_figure(plt, mat: np.ndarray, class_names: Sequence[str], title: str):
    """The row-normalised confusion matrix ``mat`` (NaN: a class absent from the split, drawn '-') as a heat map
    with class names on both axes and, up to 30 classes, every value printed in a colour readable on its cell."""
    C = len(class_names)
    side = min(max(4.2, 0.5 * C + 2.2), 14.0)
    fig, ax = plt.subplots(figsize=(side + 1.0, side))
    im = ax.imshow(np.nan_to_num(mat, nan=0.0), cmap="Blues", vmin=0, vmax=1)
    if C <= 30:
        for (i, j), v in np.ndenumerate(mat):
            ax.text(j, i, "-" if np.isnan(v) else f"{v:.2f}", ha="center", va="center",
                    fontsize=8 if C <= 12 else 6, color="white" if (not np.isnan(v) and v > 0.55) else "black")
    step = max(1, int(np.ceil(C / 40)))  # at most 40 labelled ticks per axis
    ticks = list(range(0, C, step))
    long = max(map(len, class_names)) > 3
    ax.set(xticks=ticks, yticks=ticks, xlabel="predicted class", ylabel="true class", title=title)
    ax.set_xticklabels([class_names[i] for i in ticks], rotation=45 if long else 0, ha="right" if long else "center",
                       fontsize=8 if C <= 30 else 6)
    ax.set_yticklabels([class_names[i] for i in ticks], fontsize=8 if C <= 30 else 6)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    return fig


def _sweep(loaded, split, lambdas, prior, adjustments):
    from lossdial.evaluate.select import sweep_split

    return sweep_split(loaded, split, lambdas, prior=prior, adjustments=adjustments)


def run_panel(loaded, split: str, *, prior=None, adjustments=None, lambdas=None) -> dict[str, Any]:
    """Everything drawn for one run: its point, the confusion matrix and per-class recall there, and the dial rows:
    every t of ``adjustments`` (default grid 0:2:9) at every lambda of ``lambdas`` (LCT; default: the sweep's
    grid), lambda-major; a baseline has its fixed lambda only."""
    from lossdial.evaluate.multiclass import parse_adjustments

    lam, t, source = report_point(loaded)
    at = _sweep(loaded, split, [lam] if loaded.is_lct else None, prior, [t])
    C = at.logits.shape[-1]
    pred = adjusted_probs(at.logits[0], at.train_counts, t).argmax(1)
    counts = confusion_matrix(at.labels, pred, C)
    row = at.table[0]["metrics"]
    ts = parse_adjustments(adjustments)
    dial = _sweep(loaded, split, lambdas if loaded.is_lct else None, prior, ts)
    x_name, xs = "adjustment t", list(dial.adjustments)
    rows = [{"lambda": r["lambda"], "fixed": not loaded.is_lct, "adjustment": r["adjustment"],
             **{k: r["metrics"][k] for k in DIAL_KEYS}} for r in dial.table]
    return {"run": str(loaded.path), "kind": "LCT" if loaded.is_lct else "baseline", "lambda": lam,
            "adjustment": t, "point_source": source, "confusion_counts": counts.tolist(),
            "confusion": normalise_rows(counts).tolist(), "per_class_recall": row["per_class_recall"],
            "train_counts": list(at.train_counts), "dial_x": x_name, "dial_xs": xs, "dial": rows,
            "prior": row["prior"], "prior_source": row["prior_source"], "shot_groups": row["shot_groups"],
            "shot_thresholds": row["shot_thresholds"]}


def check_same_task(runs: Sequence) -> str:
    """The task of ``runs`` (all must be the same); a mix of binary and multi-class is a ValueError naming them."""
    tasks = {str(r.path): r.task_type.name for r in runs}
    if len(set(tasks.values())) > 1:
        listed = ", ".join(f"{p} ({t})" for p, t in tasks.items())
        raise ValueError(f"report draws runs of one task type on the same axes; these mix binary and multi-class: "
                         f"{listed}. Report the binary and the multi-class runs separately")
    names = {tuple(r.data.get("class_names") or ()) for r in runs}
    if "multiclass" in tasks.values() and len(names) > 1:
        raise ValueError(f"the runs have different classes ({', '.join(str(r.path) for r in runs)}); report runs "
                         f"trained on the same data together")
    return next(iter(tasks.values()))


def build_multiclass_report(runs: Sequence, out: str | Path, *, split: str = "val", lambdas=None, prior=None,
                            adjustments=None) -> Path:
    """Write OUT/report.html and OUT/*.png for multi-class ``runs`` (the first is the main run)."""
    from lossdial.report.card import load_card
    from lossdial.report.html import _plt, _save

    plt = _plt()
    panels = [run_panel(r, split, prior=prior, adjustments=adjustments, lambdas=lambdas if i == 0 else None)
              for i, r in enumerate(runs)]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    main, p0 = runs[0], panels[0]
    class_names = [str(c) for c in main.data["class_names"]]
    C = len(class_names)
    figures: list[tuple[str, str, str]] = []

    # (1) normalised confusion matrix of every run at its point
    for i, (r, p) in enumerate(zip(runs, panels)):
        fig = confusion_figure(plt, np.array(p["confusion"], dtype=float), class_names,
                               f"{Path(p['run']).name}: confusion matrix (rows sum to 1), {split} split")
        point = f"lambda {_lam_label(p['lambda'])}, " if p["lambda"] else ""
        _save(fig, out, "confusion_normalised.png" if i == 0 else f"confusion_normalised_{i}.png", figures,
              f"Confusion matrix of {r.path} ({p['kind']}) on the {split} split at {point}t = {p['adjustment']:g} "
              f"({p['point_source']}); each row is a true class, divided by its {split} count."
              + (" Values are printed up to 30 classes; all are in the page's embedded data." if C > 30 else ""))

    # (2) per-class recall against training count
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    markers = "osD^vP*X"
    for i, p in enumerate(panels):
        order = np.argsort(p["train_counts"])
        xs = np.array(p["train_counts"], dtype=float)[order]
        ys = np.array([np.nan if is_undefined(v) else v for v in p["per_class_recall"]], dtype=float)[order]
        lab = f"{p['kind']} {Path(p['run']).name} ({_lam_label(p['lambda']) + ', ' if p['lambda'] else ''}" \
              f"t={p['adjustment']:g})"
        ax.plot(xs, ys, marker=markers[i % len(markers)], ls="-" if i == 0 else "--", label=lab)
    ax.set_xscale("log")
    ax.set(xlabel="training samples of the class (log scale)", ylabel=f"recall on {split}", ylim=(-0.03, 1.08),
           title=f"Per-class recall against training count, {split} split")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=1, frameon=False)
    _save(fig, out, "per_class_recall.png", figures,
          f"Recall of every class on the {split} split against its training count; each run at its own point "
          f"(the model card's first point, else the reference lambda at t = 0).")

    # (3) the dial over lambda and t: one panel per metric, one line per (run, lambda)
    groups = p0["shot_groups"]
    hi, lo = p0["shot_thresholds"]
    shown = [k for k, g in zip(SHOT_KEYS, ("many", "medium", "few")) if groups[g]]
    skipped = [g for g in ("many", "medium", "few") if not groups[g]]
    titles = {"balanced_accuracy": "balanced accuracy", "many_shot_accuracy": f"many-shot accuracy (> {hi:g})",
              "medium_shot_accuracy": f"medium-shot accuracy ({lo:g}-{hi:g})",
              "few_shot_accuracy": f"few-shot accuracy (< {lo:g})"}
    keys = ("balanced_accuracy", *shown)
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys) + 2.2, 3.9), squeeze=False)
    cmap = plt.get_cmap("viridis")
    for i, p in enumerate(panels):
        lams = []
        for r in p["dial"]:
            if r["lambda"] not in lams:
                lams.append(r["lambda"])
        for j, lam in enumerate(lams):
            rows = [r for r in p["dial"] if r["lambda"] == lam]
            lab = f"{p['kind']} {Path(p['run']).name}" + (f" {_lam_label(lam)}" if p["kind"] == "LCT" else "")
            style = dict(color=cmap(j / max(1, len(lams) - 1)), ls="-") if i == 0 and p["kind"] == "LCT" else \
                dict(color=f"C{(i + 1) % 10}" if i else "k", ls="-" if i == 0 else "--")
            for ax, k in zip(axes[0], keys):
                ax.plot([r["adjustment"] for r in rows], [np.nan if is_undefined(r[k]) else r[k] for r in rows],
                        marker="o", ms=3, label=lab, **style)
    for ax, k in zip(axes[0], keys):
        ax.set(xlabel="adjustment t", ylabel=f"{titles[k].split(' (')[0]} on {split}", ylim=(-0.03, 1.03),
               title=titles[k])
        ax.grid(alpha=0.3)
    _legend_outside_fig(fig, axes[0][-1])
    fig.tight_layout()
    note = f" No class has {' or '.join(skipped)}-shot training counts, so {'that group is' if len(skipped) == 1 else 'those groups are'} not drawn." \
        if skipped else ""
    _save(fig, out, "dial_curve.png", figures,
          f"The dial over lambda and t on the {split} split: balanced accuracy and the mean recall of the many / "
          f"medium / few-shot classes against the post-hoc adjustment t (scores z_c - t log pi_c); one line per "
          f"lambda of an LCT run, one per baseline run (dashed).{note}")

    from lossdial.report.html import learning_curve_figure

    _save(learning_curve_figure(plt, runs), out, "learning_curves.png", figures,
          "Training loss, learning rate and the periodic validation metrics per epoch (metrics.jsonl).")

    # the live dial: every run's validation sweep over its dial grid and the t grid
    from lossdial.evaluate.multiclass import DEFAULT_T_GRID, class_prior, parse_adjustments
    from lossdial.report.dial import card_lambdas, dial_grid, dial_section, multiclass_dial_data

    ts = parse_adjustments(adjustments) if adjustments is not None else tuple(np.round(np.linspace(
        min(DEFAULT_T_GRID), max(DEFAULT_T_GRID), 21), 6))
    card_ts = [float(p["adjustment"]) for r in runs for p in ((load_card(r.path) or {}).get("points") or {}).values()
               if p.get("adjustment") is not None]
    ts = tuple(sorted(set(ts) | set(card_ts)))
    dial_sweeps = [_sweep(r, "val", dial_grid(r, lambdas if i == 0 else None, card_lambdas(r)) if r.is_lct else None,
                          prior, ts) for i, r in enumerate(runs)]
    live = multiclass_dial_data(list(zip(runs, dial_sweeps)), class_names=class_names,
                                prior_source=p0["prior_source"],
                                prior=class_prior(prior if prior is not None else "train", main.train_counts).tolist())
    dial = dial_section(live)

    data = {"task": "multiclass", "split": split, "class_names": class_names, "runs": panels}
    page = out / "report.html"
    page.write_text(_render(runs, panels, figures, data, class_names, split, dial))
    return page


def _legend_outside_fig(fig, ax) -> None:
    """One legend for the whole figure, right of the last panel (never over a curve)."""
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.03, 1.0), frameon=False)


def _render(runs, panels, figures, data, class_names, split, dial: str = "") -> str:
    e = html.escape
    main, p0 = runs[0], panels[0]
    rows = []
    for p in panels:
        for r in p["dial"]:
            rows.append(f"<tr><td>{e(Path(p['run']).name)}</td><td>{e(_lam_label(r['lambda']) + (' (fixed)' if r['fixed'] else ''))}</td>"
                        f"<td>{r['adjustment']:g}</td>"
                        + "".join(f"<td>{fmt_value(r[k], '.4f')}</td>" for k in DIAL_KEYS) + "</tr>")
    from lossdial.report.html import figures_html

    figs = figures_html(figures)
    counts = main.data["counts"]
    count_rows = "".join(f"<tr><td style='text-align:left'>{e(c)}</td><td>{counts['train'][i]}</td>"
                         f"<td>{counts['val'][i]}</td><td>{counts['test'][i]}</td></tr>"
                         for i, c in enumerate(class_names))
    prior = ", ".join(f"{v:.3g}" for v in p0["prior"])
    payload = dumps_json(data, indent=None).replace("</", "<\\/")
    others = ", ".join(e(str(r.path)) for r in runs[1:]) or "none"
    from lossdial.report.html import page_head

    return page_head(str(main.path)) + f"""
<h1>lossdial report (multi-class)</h1>
<p>Run <code>{e(str(main.path))}</code> ({e(p0['kind'])}); also drawn: {others}. {len(class_names)} classes.
Figures and tables use the <b>{e(split)}</b> split. <code>accuracy</code> is at the deployment class prior
({e(p0['prior_source'])}: {e(prior)}); the other columns are mean per-class recalls and do not depend on it.
Generated {e(time.strftime('%Y-%m-%d %H:%M'))}.</p>
{dial}
<h2>Class counts</h2>
<table><tr><th>class</th><th>train</th><th>val</th><th>test</th></tr>{count_rows}</table>
<h2>Figures</h2>
{figs}
<h2>Dial rows ({e(split)})</h2>
<p>Every post-hoc adjustment t, at every lambda of an LCT run (a baseline has its fixed lambda). '-': undefined
(no class in that shot group).</p>
<table><tr><th>run</th><th>lambda</th><th>t</th><th>accuracy</th><th>balanced</th><th>worst class</th>
<th>many-shot</th><th>medium-shot</th><th>few-shot</th></tr>
{''.join(rows)}</table>
<script type="application/json" id="report-data">{payload}</script>
</body>
</html>
"""


def read_report_data(page: str | Path) -> dict[str, Any]:
    """The JSON embedded in a multi-class report page (what was drawn)."""
    text = Path(page).read_text()
    start = text.index('<script type="application/json" id="report-data">')
    start = text.index(">", start) + 1
    return json.loads(text[start:text.index("</script>", start)])
