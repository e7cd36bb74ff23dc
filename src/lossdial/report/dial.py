"""The live dial of `lossdial report`: the data the page's sliders read, and the HTML of the controls.

Everything the page shows live is computed in the browser (``dial.js``, inlined) from numbers embedded here as
strict JSON (``<script type="application/json" id="dial-data">``, no NaN: :func:`lossdial.rundir.dumps_json`),
all from the runs' VALIDATION split (test numbers appear only as the model card's measured points):

Binary (``task: "binary"``), per run and per lambda of its grid: the threshold curve (every distinct
validation score as a threshold, highest first, thinned to at most :data:`DIAL_CURVE_POINTS` by
:func:`~lossdial.evaluate.sweep.thin_curve`) as unweighted ``tp`` / ``fp`` counts when predicting positive
for ``score >= threshold``, the split's positives / negatives, and a reliability diagram (10 equal-width bins;
negatives reweighted to the page's prevalence). At a deployment prevalence pi the page computes, for the
operating point ``j`` = the lowest stored threshold that is >= the slider's threshold:
TPR = tp/P, FPR = fp/N, precision = pi TPR / (pi TPR + (1-pi) FPR), F1 from those two, counts per 10,000
cases 10^4 pi TPR (TP), 10^4 (1-pi) FPR (FP), ..., and the expected cost per case
``c_FP (1-pi) FPR + c_FN pi (1-TPR)``.

Multi-class (``task: "multiclass"``), per run and per (lambda, t) of its grid: the validation confusion counts
(classes <= :data:`MAX_CONFUSION_CLASSES`; above that only the per-class correct counts). The page computes
per-class recall, balanced / worst-class / many / medium / few-shot accuracy (prior-free) and the accuracy at a
deployment class prior ``q_c proportional to n_c^gamma`` (n_c the training count; gamma = 1 the training
prior, 0 uniform, -1 the reversed tail): ``sum_c q_c recall_c``.
"""

from __future__ import annotations

import html
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lossdial.evaluate.sweep import MIN_TP
from lossdial.rundir import dumps_json

#: at most this many thresholds per lambda in the page (the sweep's curves file keeps up to 1024)
DIAL_CURVE_POINTS = 512
#: multi-class: confusion matrices are embedded up to this many classes (per-class recall always)
MAX_CONFUSION_CLASSES = 30


def dial_grid(loaded, lambdas=None, extra: Sequence[dict] = ()) -> list[dict[str, float]] | None:
    """The lambda grid of a run's dial: ``lambdas`` if given, else 25 points per name (one name; fewer per name
    with several, about 100 combinations in all) over the support; plus ``extra`` (the model card's lambdas),
    without duplicates. None for a baseline run."""
    if not loaded.is_lct:
        return None
    from lossdial.conditioning import grid_points_from_space

    names = list(loaded.space.names)
    grid = [dict(l) for l in lambdas] if lambdas else grid_points_from_space(
        loaded.space, 25 if len(names) == 1 else max(2, int(100 ** (1 / len(names)))))
    seen = {tuple(float(l[n]) for n in names) for l in grid}
    for lam in extra:
        if lam and set(lam) == set(names):
            key = tuple(float(lam[n]) for n in names)
            if key not in seen:
                seen.add(key)
                grid.append({n: float(lam[n]) for n in names})
    if len(names) == 1:
        grid.sort(key=lambda l: l[names[0]])
    return grid


def card_lambdas(loaded) -> list[dict[str, float]]:
    from lossdial.report.card import load_card

    points = (load_card(loaded.path) or {}).get("points") or {}
    return [dict(p["lambda"]) for p in points.values() if p.get("lambda")]


def reliability_bins(y: np.ndarray, s: np.ndarray, bins: int = 15) -> list[list[float]]:
    """Equal-width score bins (bin ``min(floor(s * bins), bins - 1)``, the binning of
    :func:`~lossdial.evaluate.classification.expected_calibration_error`): ``[bin, sum of the positives' scores,
    positives, sum of the negatives' scores, negatives]`` per non-empty bin. Prevalence-free: a page reweights them
    to any prevalence (:func:`reliability_at`)."""
    y, s = np.asarray(y), np.asarray(s, float)
    idx = np.minimum((s * bins).astype(int), bins - 1)
    out = []
    for b in np.unique(idx):
        m = idx == b
        p, n = m & (y == 1), m & (y == 0)
        out.append([int(b), float(s[p].sum()), int(p.sum()), float(s[n].sum()), int(n.sum())])
    return out


def reliability_at(bins: list[list[float]], prevalence: float, n_pos: int, n_neg: int
                   ) -> tuple[list[float], list[float], list[float], float]:
    """(mean score, observed positive rate, weight share) per bin and the ECE, with each positive weighing
    prevalence / n_pos and each negative (1 - prevalence) / n_neg (so positives are a fraction `prevalence`)."""
    wp = prevalence / n_pos if n_pos else 0.0
    wn = (1 - prevalence) / n_neg if n_neg else 0.0
    xs, ys, ws = [], [], []
    for _, sp, npos, sn, nneg in bins:
        w = wp * npos + wn * nneg
        if w <= 0:
            continue
        xs.append((wp * sp + wn * sn) / w)
        ys.append(wp * npos / w)
        ws.append(w)
    total = sum(ws)
    ece = sum(w * abs(yv - xv) for xv, yv, w in zip(xs, ys, ws)) / total if total else float("nan")
    return xs, ys, [w / total for w in ws], ece


def _card_points(loaded) -> list[dict[str, Any]]:
    from lossdial.report.card import load_card

    points = (load_card(loaded.path) or {}).get("points") or {}
    keep = ("lambda", "threshold", "adjustment", "prevalence", "prior", "prior_source", "objective", "constraint",
            "val", "test", "test_ci95", "test_exact_ci95")
    return [{"name": name, **{k: p.get(k) for k in keep}} for name, p in points.items()]


def binary_run_data(loaded, sweep, name: str) -> dict[str, Any]:
    """One binary run's dial data from its validation ``sweep`` (a :class:`~lossdial.evaluate.sweep.SweepResult`
    at the page's prevalence)."""
    from lossdial.evaluate.sweep import thin_curve

    y = sweep.labels
    n_pos, n_neg = int(y.sum()), int((y == 0).sum())
    curves, calib = [], []
    for k, row in enumerate(sweep.table):
        c = sweep.curve(k)
        tpr = c.tp_count / max(1, n_pos)
        fpr = c.fp_count / max(1, n_neg)
        keep = thin_curve(fpr, tpr, DIAL_CURVE_POINTS)
        curves.append({"threshold": [float(v) for v in c.thresholds[keep]],
                       "tp": [int(v) for v in c.tp_count[keep]], "fp": [int(v) for v in c.fp_count[keep]]})
        m = row["metrics"]
        s = sweep.scores[k]
        calib.append({"bins": reliability_bins(y, s), "auc": m.get("auc"), "ap": m.get("ap"),
                      # Brier at prevalence pi = pi * mean_pos (1 - s)^2 + (1 - pi) * mean_neg s^2
                      "sq_pos": float(np.mean((1 - s[y == 1]) ** 2)) if n_pos else None,
                      "sq_neg": float(np.mean(s[y == 0] ** 2)) if n_neg else None})
    return {"name": name, "path": str(loaded.path), "kind": "LCT" if loaded.is_lct else "baseline",
            "n_pos": n_pos, "n_neg": n_neg, "lambdas": [dict(l) for l in sweep.lambdas],
            "lambda_names": list(loaded.space.names) if loaded.is_lct else [],
            "curves": curves, "calibration": calib, "card": _card_points(loaded)}


def binary_dial_data(pairs: Sequence[tuple[Any, Any]], *, prevalence: float, costs=(1.0, 1.0),
                     class_names: Sequence[str]) -> dict[str, Any]:
    """The page's data: ``pairs`` = (loaded run, its validation sweep), the main run first."""
    return {"task": "binary", "split": "val", "prevalence": float(prevalence), "costs": [float(c) for c in costs],
            "min_tp": MIN_TP, "class_names": [str(c) for c in class_names],
            "runs": [binary_run_data(r, s, _short(r, i, pairs)) for i, (r, s) in enumerate(pairs)]}


def _short(loaded, i: int, pairs) -> str:
    """A run's label on the page: its folder name (with its parent when two runs share a folder name)."""
    names = [Path(r.path).name for r, _ in pairs]
    p = Path(loaded.path)
    return f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 else p.name


def multiclass_run_data(loaded, sweep, name: str) -> dict[str, Any]:
    """One multi-class run's dial data from its validation ``sweep`` (a
    :class:`~lossdial.evaluate.sweep.MultiClassSweepResult`): per (lambda, t) the confusion counts (or, above
    :data:`MAX_CONFUSION_CLASSES` classes, the correct count per class) and the calibration metrics."""
    from lossdial.report.multiclass import confusion_matrix

    C = sweep.logits.shape[-1]
    full = C <= MAX_CONFUSION_CLASSES
    rows = []
    for k, lam in enumerate(sweep.lambdas):
        for t in sweep.adjustments:
            pred = sweep.scores(k, t).argmax(1)
            cm = confusion_matrix(sweep.labels, pred, C)
            rows.append({"k": k, "t": float(t), **({"confusion": cm.tolist()} if full else
                                                   {"correct": np.diag(cm).tolist()})})
    # calibration metrics from the sweep table (the rows are lambda-major, t in grid order, as `rows`)
    for r, tr in zip(rows, sweep.table):
        r.update({key: tr["metrics"][key] for key in ("nll", "ece", "brier")})
    return {"name": name, "path": str(loaded.path), "kind": "LCT" if loaded.is_lct else "baseline",
            "lambdas": [dict(l) for l in sweep.lambdas] if loaded.is_lct else [{}],
            "lambda_names": list(loaded.space.names) if loaded.is_lct else [],
            "adjustments": [float(t) for t in sweep.adjustments], "rows": rows, "card": _card_points(loaded)}


def multiclass_dial_data(pairs, *, class_names, prior_source: str, prior: list[float]) -> dict[str, Any]:
    from lossdial.evaluate.multiclass import shot_groups

    s0 = pairs[0][1]
    counts = np.bincount(s0.labels, minlength=len(class_names)).tolist()
    return {"task": "multiclass", "split": "val", "class_names": [str(c) for c in class_names],
            "train_counts": list(s0.train_counts), "val_counts": counts,
            "shot_groups": shot_groups(s0.train_counts, s0.shot_thresholds),
            "shot_thresholds": [float(v) for v in s0.shot_thresholds],
            "prior_source": prior_source, "prior": [float(v) for v in prior],
            "confusion": len(class_names) <= MAX_CONFUSION_CLASSES,
            "runs": [multiclass_run_data(r, s, _short(r, i, pairs)) for i, (r, s) in enumerate(pairs)]}


def _js() -> str:
    return resources.files("lossdial.report").joinpath("dial.js").read_text()


def embed_json(data: dict[str, Any]) -> str:
    """Strict JSON for a ``<script type="application/json">`` element ('</' escaped so it cannot end it)."""
    return dumps_json(data, indent=None).replace("</", "<\\/")


def _slider(id_: str, label: str, lo, hi, step, value, note: str = "") -> str:
    return (f'<div class="ctl"><label for="{id_}">{html.escape(label)}</label>'
            f'<input type="range" id="{id_}" min="{lo}" max="{hi}" step="{step}" value="{value}">'
            f'<output id="{id_}-value" for="{id_}"></output>{note}</div>')


def dial_section(data: dict[str, Any]) -> str:
    """The live part of the page: controls, readouts, the inline SVG plots and the script that drives them."""
    main = data["runs"][0]
    lam_sliders = "".join(_slider(f"lam-{n}", f"lambda {n}", 0, len({l[n] for l in main["lambdas"]}) - 1, 1,
                                  len({l[n] for l in main["lambdas"]}) // 2) for n in main["lambda_names"])
    if data["task"] == "binary":
        pi = data["prevalence"]
        controls = (lam_sliders
                    + _slider("ctl-threshold", "threshold (predict positive when score >= it)", 0, 1, "any", 0.5)
                    + _slider("ctl-prevalence", "deployment prevalence (log scale)", -4, f"{np.log10(0.99):.6f}",
                              "any", f"{np.log10(pi):.6f}")
                    + _slider("ctl-cost-fp", "cost of a false positive", 0, 10, "any", data["costs"][0])
                    + _slider("ctl-cost-fn", "cost of a false negative", 0, 100, "any", data["costs"][1])
                    + '<div class="ctl"><label for="ctl-mode">operating point</label><select id="ctl-mode">'
                      '<option value="manual">set by the sliders</option>'
                      '<option value="recall">target recall: best precision with recall >= target</option>'
                      '<option value="precision">target precision: best recall with precision >= target</option>'
                      '</select></div>'
                    + _slider("ctl-target", "target", 0, 1, "any", 0.9,
                              ' <span id="snap-status" class="note"></span>'))
        body = _BINARY_BODY
    else:
        main_ts = main["adjustments"]
        controls = (lam_sliders
                    + _slider("ctl-adjustment", "adjustment t (scores z_c - t log pi_c)", 0, len(main_ts) - 1, 1,
                              _closest(main_ts, 0.0))
                    + _slider("ctl-prior", "deployment class prior: q_c proportional to n_c^gamma", -1, 1, "any",
                              1.0 if data["prior_source"] != "uniform" else 0.0,
                              ' <span class="note">gamma 1: the training prior, 0: uniform, -1: the tail '
                              'reversed</span>'))
        body = _MULTICLASS_BODY
    return f"""<section id="dial">
<h2>The dial (validation split, live)</h2>
<p class="note">Move the sliders: every number below is computed in this page from the validation sweep embedded
in it (no server, nothing fetched). Test-split numbers appear only for the model card's points, measured once
after they were chosen.</p>
<div id="controls">{controls}</div>
{body}
<script type="application/json" id="dial-data">{embed_json(data)}</script>
<script>{_js()}</script>
</section>"""


def _closest(values: Sequence[float], v: float) -> int:
    return int(np.argmin(np.abs(np.asarray(values, float) - v)))


_BINARY_BODY = """<div class="grid">
<div><h3>At this setting</h3>
<p id="point-desc"></p>
<table class="cm" id="cm"><caption>Confusion matrix per 10,000 cases at the deployment prevalence
(rates in brackets)</caption>
<tr><th></th><th>predicted negative</th><th>predicted positive</th></tr>
<tr><th>true negative</th><td id="cm-tn"></td><td id="cm-fp"></td></tr>
<tr><th>true positive</th><td id="cm-fn"></td><td id="cm-tp"></td></tr></table>
<table class="vals"><tr><th>precision</th><td id="val-precision"></td></tr>
<tr><th>recall (TPR)</th><td id="val-recall"></td></tr>
<tr><th>F1</th><td id="val-f1"></td></tr>
<tr><th>false positive rate</th><td id="val-fpr"></td></tr>
<tr><th>expected cost per case</th><td id="val-cost"></td></tr>
<tr><th>validation counts (tp, fp, fn, tn)</th><td id="val-counts"></td></tr>
<tr><th>calibration at this lambda: Brier, ECE</th><td id="val-calibration"></td></tr>
<tr><th>ranking at this lambda: AUC, AP</th><td id="val-ranking"></td></tr></table></div>
</div>
<div class="plots"><svg id="pr-svg" class="plot" viewBox="0 0 380 300" role="img" aria-label="precision-recall curve"></svg>
<svg id="roc-svg" class="plot" viewBox="0 0 380 300" role="img" aria-label="ROC curve"></svg>
<svg id="cal-svg" class="plot" viewBox="0 0 380 300" role="img" aria-label="reliability diagram"></svg></div>
<h3>Other runs at the same target</h3>
<p class="note" id="cmp-note"></p>
<table id="cmp"></table>
<h3>Model card points</h3>
<p class="note">Chosen on validation; test measured once afterwards (95% bootstrap intervals). Marked on the
curves (triangles: the validation point at this page's prevalence).</p>
<table id="card"></table>"""

_MULTICLASS_BODY = """<div class="grid">
<div><h3>At this setting</h3>
<p id="point-desc"></p>
<table class="vals"><tr><th>accuracy at the deployment prior</th><td id="val-accuracy"></td></tr>
<tr><th>balanced accuracy</th><td id="val-balanced"></td></tr>
<tr><th>worst-class accuracy</th><td id="val-worst"></td></tr>
<tr><th>many-shot accuracy</th><td id="val-many"></td></tr>
<tr><th>medium-shot accuracy</th><td id="val-medium"></td></tr>
<tr><th>few-shot accuracy</th><td id="val-few"></td></tr>
<tr><th>calibration: NLL, ECE, Brier (at the report's prior)</th><td id="val-calibration"></td></tr></table>
<p class="note" id="prior-desc"></p></div>
<div><svg id="recall-svg" class="plot wide" viewBox="0 0 560 280" role="img" aria-label="per-class recall"></svg>
<svg id="dial-svg" class="plot wide" viewBox="0 0 560 280" role="img" aria-label="the dial against t"></svg>
<svg id="dial-lam-svg" class="plot wide" viewBox="0 0 560 280" role="img" aria-label="the dial against lambda"></svg></div>
</div>
<table class="cm" id="cm"></table>
<h3>Other runs at the same t</h3>
<table id="cmp"></table>
<h3>Model card points</h3>
<p class="note">Chosen on validation; test measured once afterwards (95% bootstrap intervals).</p>
<table id="card"></table>"""
