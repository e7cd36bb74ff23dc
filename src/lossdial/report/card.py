"""The model card: RUN/model_card.json (machine-readable) and RUN/model_card.md (for people).

``points.<name>`` holds ``lambda``, ``threshold``, and ``val`` / ``test`` metric mappings keyed by the
sweep table's metric names, plus the test bootstrap intervals, how many positives each split had, and the
counts behind the point (``counts.val`` / ``counts.test``: unweighted ``tp``, ``fp``, ``fn``, ``tn``,
``positives``, ``negatives`` at the point's threshold). An undefined value (precision when nothing is
predicted positive) is null in the JSON and "-" in the Markdown.

A multi-class run's card (``"task": "multiclass"``) has per-class counts, and its points hold ``lambda``,
``adjustment`` (the post-hoc strength t: predict argmax_c z_c - t log pi_c), ``prior`` (the deployment class
prior the metrics are at, one probability per class) and ``prior_source``, ``objective``, ``constraint``,
``val`` / ``test`` metric maps (with ``per_class_recall`` / ``per_class_precision``), ``test_ci95`` (per-class
stratified bootstrap), ``counts`` (samples per class on train / val / test) and ``chosen_on: "val"``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from lossdial.rundir import atomic_write_text, fmt_value, write_json

CARD_FORMAT_VERSION = 1
CARD_METRICS = ("recall", "precision", "f1_at_threshold", "auc", "ap", "brier", "ece", "balanced_accuracy", "cost")
#: the metric rows of a multi-class point (MULTICLASS_KEYS of lossdial.evaluate.multiclass, in its order)
MULTICLASS_CARD_METRICS = ("balanced_accuracy", "accuracy", "worst_class_accuracy", "many_shot_accuracy",
                           "medium_shot_accuracy", "few_shot_accuracy", "macro_f1", "nll", "ece", "brier")


def card_paths(run: str | Path) -> tuple[Path, Path]:
    p = Path(run)
    return p / "model_card.json", p / "model_card.md"


def load_card(run: str | Path) -> dict[str, Any] | None:
    path = card_paths(run)[0]
    return json.loads(path.read_text()) if path.is_file() else None


def base_card(loaded) -> dict[str, Any]:
    if loaded.task_type.name == "multiclass":
        return _base_card_multiclass(loaded)
    cfg = loaded.config
    d = loaded.data
    return {
        "format_version": CARD_FORMAT_VERSION,
        "run": str(loaded.path),
        "model": {"backbone": cfg.model.backbone, "film": cfg.model.film if loaded.is_lct else None,
                  "lct": loaded.is_lct},
        "data": {"source": cfg.data.source, "class_names": d["class_names"], "positive_class": d["class_names"][1],
                 "counts": d["counts"], "imbalance_ratio": d["imbalance_ratio"],
                 "train_prevalence": d["train_prevalence"]},
        "training": _training(loaded),
        "protocol": "Each point's lambda and threshold were chosen on the validation split only; the test "
                    "split was scored once, after the point was fixed. Precision-type metrics are reported "
                    "at the stated prevalence (negatives reweighted).",
        "points": {},
    }


def _training(loaded) -> dict[str, Any]:
    cfg = loaded.config
    return {"loss": cfg.loss.family, "loss_params": dict(cfg.loss.params),
            "lambda_distributions": dict(cfg.lct.lambdas) if loaded.is_lct else None,
            "optimizer": cfg.optim.name, "lr": cfg.optim.lr, "weight_decay": cfg.optim.weight_decay,
            "epochs": cfg.train.epochs, "batch_size": cfg.train.batch_size,
            "ema_decay": cfg.train.ema_decay, "seed": cfg.seed, "data_seed": cfg.data.seed,
            "last_layer_retraining": loaded.data.get("retrain")}


def _base_card_multiclass(loaded) -> dict[str, Any]:
    cfg, d = loaded.config, loaded.data
    return {
        "format_version": CARD_FORMAT_VERSION,
        "run": str(loaded.path),
        "task": "multiclass",
        "model": {"backbone": cfg.model.backbone, "film": cfg.model.film if loaded.is_lct else None,
                  "lct": loaded.is_lct},
        "data": {"source": cfg.data.source, "class_names": d["class_names"], "counts": d["counts"],
                 "imbalance_ratio": d["imbalance_ratio"]},
        "training": _training(loaded),
        "protocol": "Each point's lambda and post-hoc adjustment t were chosen on the validation split only; the "
                    "test split was scored once, after the point was fixed. Metrics other than recall are at the "
                    "stated deployment class prior (each class's samples reweighted to its prior share).",
        "points": {},
    }


def add_point(loaded, name: str, entry: dict[str, Any]) -> dict[str, Any]:
    """Insert/replace point `name` in the run's card and rewrite both files; returns the card."""
    card = load_card(loaded.path) or base_card(loaded)
    card["points"][name] = entry
    card["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    jpath, mpath = card_paths(loaded.path)
    write_json(jpath, card)
    atomic_write_text(mpath, render_markdown(card))
    return card


COUNT_KEYS = ("tp", "fp", "fn", "tn", "positives", "negatives")


def _f(v: Any) -> str:
    return fmt_value(v, ".4g") if v is None or isinstance(v, float) else str(v)


def ci_text(ci: Any) -> str:
    """'[lo, hi]' to 3 decimals; '' without an interval, '-' for an undefined end (null / NaN)."""
    return f"[{fmt_value(ci[0])}, {fmt_value(ci[1])}]" if ci else ""


def bound_text(p: dict[str, Any]) -> str:
    """How a conservative point's constraint was checked, in words ('' for a plain point)."""
    if not p.get("conservative"):
        return ""
    conf = f"{p['confidence']:.0%}"
    if (p.get("constraint") or "").strip().startswith("precision"):
        return (f" (checked on a {conf} lower bound of precision at the prevalence: Clopper-Pearson bounds on TPR "
                f"and FPR, each at 1 - alpha/2)")
    return f" (checked on the one-sided Clopper-Pearson {conf} lower bound of recall)"


def render_markdown(card: dict[str, Any]) -> str:
    if card.get("task") == "multiclass":
        return _render_multiclass(card)
    d = card["data"]
    lines = [f"# Model card: `{card['run']}`", "",
             f"Positive class **{d['positive_class']}** vs {d['class_names'][0]} (source `{d['source']}`).", "",
             "| split | positives | negatives |", "|---|---:|---:|"]
    for s in ("train", "val", "test"):
        n0, n1 = d["counts"][s]
        lines.append(f"| {s} | {n1} | {n0} |")
    lines += ["", f"Training imbalance ratio {d['imbalance_ratio']:.1f} (prevalence {d['train_prevalence']:.4f}).",
              ""] + _training_lines(card) + ["", "## Operating points", "", card["protocol"], ""]
    for name, p in card["points"].items():
        lam = ", ".join(f"{k}={v:g}" for k, v in p["lambda"].items())
        rule = p["constraint"] or "no constraint"
        cons = bound_text(p)
        lines += [f"### `{name}`", "",
                  f"{'maximise' if p['objective'] not in ('brier', 'ece', 'cost') else 'minimise'} "
                  f"{p['objective']} subject to {rule}{cons}; lambda {lam}, threshold {p['threshold']:.6g} "
                  f"(predict positive when score >= threshold); prevalence {p['prevalence']:.4f}; "
                  f"{p['n_pos']['val']} validation / {p['n_pos']['test']} test positives.", "",
                  "| metric | validation | test | test 95% CI (bootstrap) | test 95% CI (exact) |",
                  "|---|---:|---:|---|---|"]
        for k in CARD_METRICS:
            ci_s = ci_text(p.get("test_ci95", {}).get(k))
            ex_s = ci_text((p.get("test_exact_ci95") or {}).get(k))
            lines.append(f"| {k} | {_f(p['val'].get(k))} | {_f(p['test'].get(k))} | {ci_s} | {ex_s} |")
        lines += ["", "Bootstrap: stratified percentile intervals; exact: Clopper-Pearson for recall, and for "
                  "precision at the prevalence the TPR/FPR Clopper-Pearson bounds (Bonferroni) put into "
                  "pi*TPR / (pi*TPR + (1-pi)*FPR). A bootstrap interval collapses to a point when a count is 0 "
                  "or full; the exact one does not."]
        lines.append("")
        counts = p.get("counts")
        if counts:
            lines += [f"Counts at the threshold (unweighted; min_tp {p.get('min_tp', '-')}"
                      + (f"; validation lower bound {p['val_lower_bound']:.4f}" if p.get("val_lower_bound")
                         is not None else "") + "):", "",
                      "| split | " + " | ".join(COUNT_KEYS) + " |", "|---|" + "---:|" * len(COUNT_KEYS)]
            for split, label in (("val", "validation"), ("test", "test")):
                c = counts.get(split, {})
                lines.append(f"| {label} | " + " | ".join(_f(c.get(k)) for k in COUNT_KEYS) + " |")
            lines.append("")
    return "\n".join(lines) + "\n"


def _training_lines(card: dict[str, Any]) -> list[str]:
    t = card["training"]
    return ["## Training", "",
            f"- model: {card['model']['backbone']}" + (f", FiLM ({card['model']['film']})" if card["model"]["lct"] else ""),
            f"- loss: {t['loss']} {t['loss_params']}" + (f"; LCT over {t['lambda_distributions']}"
                                                         if t["lambda_distributions"] else ""),
            f"- {t['optimizer']} lr {t['lr']} wd {t['weight_decay']}, {t['epochs']} epochs, batch {t['batch_size']}, "
            f"EMA {t['ema_decay']}, seed {t['seed']} (data seed {t['data_seed']})"] + _retrain_lines(t)


def _retrain_lines(t: dict[str, Any]) -> list[str]:
    """The card's lines for a run written by ``lossdial retrain`` (``training.last_layer_retraining``)."""
    r = t.get("last_layer_retraining")
    if not r:
        return []
    omega = f"omega* = {r['omega_star']:.4g}" if r.get("omega_star") is not None else "omega* undefined"
    lines = ["", "## Last-layer retraining", "",
             f"- backbone of `{r['source_run']}`; retrained: {r['retrained']}",
             f"- weighting {r['weighting']}, alpha {r['alpha']:g}, pca {r['pca']}; {r['split']}",
             f"- retraining samples per class {r['n_retrain']}, selection samples per class {r['n_select']}"
             + (f"; per group {r['n_per_group']}" if r.get("n_per_group") else ""),
             f"- d = {r['d']}, d_eff = {r['d_eff']:.4g}"
             + (f" ({r['n_components']} PCA components)" if r.get("n_components") is not None else "")
             + f"; {omega}; feasible at the requested dimension: {'yes' if r['feasible'] else 'no'}",
             f"- class weights {[round(v, 4) for v in r['class_weight']]}"
             + (f", group weights {r['group_weight']}" if r.get("group_weight") else "")]
    lines += [f"- note: {n}" for n in r.get("notes", [])]
    return lines


_PRIOR_WORDS = {"train": "the training class prior", "uniform": "the uniform class prior", "given": "a given class prior"}


def _render_multiclass(card: dict[str, Any]) -> str:
    d = card["data"]
    names, counts = d["class_names"], d["counts"]
    lines = [f"# Model card: `{card['run']}`", "",
             f"Multi-class, {len(names)} classes (source `{d['source']}`); training imbalance ratio "
             f"{d['imbalance_ratio']:.1f}.", "",
             "| class | train | val | test |", "|---|---:|---:|---:|"]
    for c, name in enumerate(names):
        lines.append(f"| {name} | {counts['train'][c]} | {counts['val'][c]} | {counts['test'][c]} |")
    lines += [""] + _training_lines(card) + ["", "## Operating points", "", card["protocol"], ""]
    for name, p in card["points"].items():
        lam = ", ".join(f"{k}={v:g}" for k, v in p["lambda"].items()) or "(fixed)"
        rule = p["constraint"] or "no constraint"
        prior = ", ".join(f"{v:.3g}" for v in p["prior"])
        hi, lo = p["shot_thresholds"]
        lines += [f"### `{name}`", "",
                  f"{'minimise' if p['objective'] in ('nll', 'ece', 'brier') else 'maximise'} {p['objective']} "
                  f"subject to {rule}; lambda {lam}, adjustment t = {p['adjustment']:g} (predict "
                  f"argmax_c z_c - t log pi_c, pi the training prior); metrics at "
                  f"{_PRIOR_WORDS.get(p['prior_source'], p['prior_source'])} [{prior}]; {p['n']['val']} validation "
                  f"/ {p['n']['test']} test samples; shot groups by training count: many > {hi}, medium {lo}-{hi}, "
                  f"few < {lo} (-: no class in the group).", "",
                  "| metric | validation | test | test 95% CI (bootstrap) |", "|---|---:|---:|---|"]
        for k in MULTICLASS_CARD_METRICS:
            lines.append(f"| {k} | {_f(p['val'].get(k))} | {_f(p['test'].get(k))} | "
                         f"{ci_text(p.get('test_ci95', {}).get(k))} |")
        lines += ["", f"Bootstrap: per-class stratified percentile intervals ({p.get('n_boot', '-')} resamples; "
                  "each resample keeps every class's test count).", "",
                  "| class | training count | validation recall | test recall | test precision |",
                  "|---|---:|---:|---:|---:|"]
        for c, cname in enumerate(names):
            lines.append(f"| {cname} | {p['counts']['train'][c]} | {_f(p['val']['per_class_recall'][c])} | "
                         f"{_f(p['test']['per_class_recall'][c])} | {_f(p['test']['per_class_precision'][c])} |")
        lines.append("")
    return "\n".join(lines) + "\n"
