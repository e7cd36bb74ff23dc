"""``lossdial retrain``: a finished run's frozen backbone with a retrained last layer, as an ordinary run.

What is retrained: the last linear layer on the backbone's pooled features, ``model.features(x)``, i.e.
*before* FiLM. For an LCT run this loses nothing: FiLM at any fixed lambda is a per-feature affine map
``scale * h + shift``, and the retrainer standardises every feature, so retraining on FiLM's output at any
lambda (with no zero scale) gives exactly the same decision values as retraining on ``h``. The new run is
therefore a baseline run (no lambda, ``lct.enabled: false``) with a linear head, for any source head (linear
or cosine, FiLM on the features or on the logits).

Which data: the source run's validation split, which the backbone never trained on, split (stratified by
class, or class x group, seeded) into a *retraining* half (the least-squares fit) and a *selection* half
(the logistic probability map, ``tuned``'s choice, and every later choice: the new run's validation split
*is* the selection half, so ``sweep`` and ``pick`` choose on data the head was not fitted on). The test split
is never read. The halves are saved in ``splits.npz`` (``retrain_fit``, ``retrain_select``) and checked
against the backbone's training and test indices. With ``split="train"`` (``--split train``) the layer is fitted
instead on the *retrain* split that ``data.retrain_fraction`` carved from the training split before training
(same class imbalance as training; never trained on), and the whole validation split is the selection set.
"""

from __future__ import annotations

import math
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lossdial.rundir import RunDir, RunError, atomic_write_text, write_json

__all__ = ["RetrainResult", "backbone_features", "restrict_to_selection", "retrain_run", "split_validation"]

#: Where the retraining split comes from (``retrain_run(split=...)``; only validation halves today).
RETRAIN_SPLITS = ("val", "train")


@dataclass
class RetrainResult:
    run_dir: Path
    record: dict[str, Any]  # what data.json records under "retrain"
    warnings: list[str]


@torch.no_grad()
def backbone_features(model, x, *, normalizer=None, device="cpu", batch_size: int = 1024) -> np.ndarray:
    """The frozen backbone's features ``model.features(normalizer(x))`` [N, F] as float64 (eval mode)."""
    device = torch.device(device)
    was = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(x), batch_size):
            xb = x[start:start + batch_size]
            xb = (xb if isinstance(xb, torch.Tensor) else xb.load()).to(device)
            if normalizer is not None:
                xb = normalizer(xb)
            out.append(model.features(xb).double().cpu().numpy())
    finally:
        model.train(was)
    if not out:
        return np.zeros((0, getattr(model, "feature_dim", 0)))
    return np.concatenate(out)


def split_validation(y: np.ndarray, groups: np.ndarray | None, seed: int, fraction: float = 0.5
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(retraining positions, selection positions) into the validation split: ``floor(fraction * n_k)`` of
    every class (class x group) stratum ``k`` to selection, drawn with ``seed``."""
    from .estimator import _stratified_split

    keys = y if groups is None else y * (int(groups.max()) + 1) + groups
    return _stratified_split(keys, fraction, np.random.default_rng([int(seed), 0x11A]))


def restrict_to_selection(task, saved) -> Any:
    """A retrained run's task: the validation split becomes the selection half (``splits.npz``'s
    ``retrain_select``, pool indices), which is what every later choice is made on."""
    from lossdial.data.task import Split

    val_ix = np.asarray(saved["val"])
    sel = np.asarray(saved["retrain_select"])
    pos = np.flatnonzero(np.isin(val_ix, sel))
    if len(pos) != len(sel):
        raise RunError("splits.npz's retrain_select holds indices outside the validation split; the run "
                       "directory is inconsistent: retrain it again")
    v = task.val
    task.val = Split(x=v.x[torch.from_numpy(pos)] if isinstance(v.x, torch.Tensor) else v.x[pos],
                     y=v.y[torch.from_numpy(pos)], num_classes=v.num_classes)
    return task


def _group_column(loaded, column: str, rows: np.ndarray) -> np.ndarray:
    """The values of the table column ``column`` at pool rows ``rows``, as strings (the groups)."""
    from lossdial.data.sources import load_source

    pool = load_source(loaded.config.data)
    if not pool.columns:
        raise ValueError(f"--groups {column}: data.source {loaded.config.data.source!r} has no named columns; "
                         f"groups need a table source (csv, parquet) with a group column")
    if column not in pool.columns:
        raise ValueError(f"--groups {column}: the table has no column {column!r}; its columns: "
                         f"{list(pool.columns)}")
    vals = np.asarray(pool.columns[column], dtype=object)[rows]
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in vals):
        raise ValueError(f"--groups {column}: the column has missing values in the retraining or selection rows; "
                         f"every sample needs a group")
    return np.array([str(v) for v in vals])


def _check_separable(loaded) -> None:
    from lossdial.models.classifier import ConditionedClassifier

    m = loaded.model
    if not isinstance(m, ConditionedClassifier) or not hasattr(m, "fc"):
        raise RunError(f"{loaded.path}: its model ({type(m).__name__}) has no separate backbone and last layer "
                       f"(lossdial.models.ConditionedClassifier with features() and fc); it cannot be retrained")


def _check_disjoint(name: str, ix: np.ndarray, other: np.ndarray, other_name: str) -> None:
    both = np.intersect1d(ix, other)
    if both.size:
        raise RunError(f"the retraining data overlaps the backbone's {other_name} split ({both.size} samples, "
                       f"e.g. pool row {int(both[0])}): the {name} must be data the backbone never "
                       f"{'trained on' if other_name == 'training' else 'saw'}")


def _new_config(loaded, threshold: float | None):
    from lossdial.config import config_from_dict

    raw = loaded.config.to_dict()
    raw["name"] = f"{raw.get('name') or 'run'}_llr"
    raw["lct"]["enabled"] = False
    raw["model"]["head"] = "linear"
    raw["model"]["head_scale"] = None
    if threshold is not None:
        raw["evaluate"]["threshold"] = threshold
    return config_from_dict(raw, source="lossdial retrain")


def retrain_run(source: str | Path, out: str | Path, *, weighting: Any = "omega_star", alpha: float = 0.0,
                pca: int | None = None, d_eff: Any = "auto", groups: str | None = None, seed: int = 0,
                split: str = "val", device: str | torch.device = "cpu", force: bool = False) -> RetrainResult:
    """Retrain the last layer of the finished run ``source`` and write the result as the run ``out``.

    ``weighting``, ``alpha``, ``pca``, ``d_eff``: :class:`~lossdial.retrain.LastLayerClassifier`'s. ``groups``:
    a column of the run's table source whose values are the groups (weights per group, worst-group choices).
    ``seed`` draws the retraining / selection halves of the validation split (and ``downsample``). ``split``:
    ``"val"`` (the validation halves) or ``"train"`` (the run's ``data.retrain_fraction`` split; selection on the
    whole validation split). Warnings
    (the announced PCA fallback) are returned in ``RetrainResult.warnings`` and re-issued.
    """
    from lossdial.evaluate.run import load_run
    from lossdial.train.checkpoint import save_weights
    from lossdial.train.factory import build_model_from_config

    from .estimator import InfeasibleWeightWarning, LastLayerClassifier

    if split not in RETRAIN_SPLITS:
        raise ValueError(f"--split must be val (the validation split, halved) or train (the retrain split carved "
                         f"from the training pool by data.retrain_fraction), got {split!r}")
    out = Path(out)
    if Path(source).resolve() == out.resolve():
        raise RunError("--out must be a new directory, not the source run")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise RunError(f"--out {out} exists and is not empty; pass --force to overwrite a run there, or choose "
                           f"another --out")
        if not (out / "config.yaml").is_file():
            raise RunError(f"--force would delete {out}, which is not a lossdial run; choose another --out")
    loaded = load_run(source, device=device)
    if "retrain" in loaded.data:
        raise RunError(f"{source} is itself a retrained run (its validation split is only the selection half); "
                       f"retrain the original run {loaded.data['retrain']['source_run']} instead")
    _check_separable(loaded)
    task = loaded.task()
    idx = task.indices
    norm, bs = task.normalizer, loaded.config.evaluate.batch_size

    def features(x, what: str) -> np.ndarray:
        f = backbone_features(loaded.model, x, normalizer=norm, device=loaded.device, batch_size=bs)
        if not np.isfinite(f).all():
            raise ValueError(f"the backbone of {source} gives non-finite features (NaN/inf) on "
                             f"{int((~np.isfinite(f)).any(axis=1).sum())} {what} samples; the run's weights are "
                             f"broken: retrain the backbone")
        return f

    y_val = task.val.y.numpy()
    f_val = features(task.val.x, "validation")
    if split == "val":
        g_val = None if groups is None else _group_column(loaded, groups, idx.val)
        g_codes = None if g_val is None else np.unique(g_val, return_inverse=True)[1]
        fit_pos, sel_pos = split_validation(y_val, g_codes, seed)
        fit_ix, sel_ix = idx.val[fit_pos], idx.val[sel_pos]
        x_fit, y_fit, x_sel, y_sel = f_val[fit_pos], y_val[fit_pos], f_val[sel_pos], y_val[sel_pos]
        g_fit, g_sel = (None, None) if g_val is None else (g_val[fit_pos], g_val[sel_pos])
        where = f"the retraining half of the validation split ({len(y_val)} samples)"
    else:
        if task.retrain is None:
            raise ValueError(f"--split train needs a run trained with data.retrain_fraction > 0 (a share of the "
                             f"training split held out from training); {source} has none: use --split val, or "
                             f"train with --set data.retrain_fraction=0.2")
        fit_ix, sel_ix = task.retrain_indices, idx.val
        x_fit, y_fit = features(task.retrain.x, "retraining"), task.retrain.y.numpy()
        x_sel, y_sel = f_val, y_val
        g_fit, g_sel = ((None, None) if groups is None else
                        (_group_column(loaded, groups, fit_ix), _group_column(loaded, groups, idx.val)))
        where = f"the retrain split carved from the training pool ({len(y_fit)} samples)"
    for name, ix in (("retraining data", fit_ix), ("selection data", sel_ix)):
        _check_disjoint(name, ix, idx.train, "training")
        _check_disjoint(name, ix, idx.test, "test")
    _check_disjoint("retraining data", fit_ix, sel_ix, "selection")
    present = np.unique(y_fit)
    if len(present) < task.num_classes:
        missing = [task.class_names[c] for c in range(task.num_classes) if c not in present]
        raise ValueError(f"classes {missing} have no sample in {where}; a last layer cannot be retrained without "
                         f"them")
    clf = LastLayerClassifier(weighting=weighting, alpha=alpha, d_eff=d_eff, pca=pca, random_state=seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InfeasibleWeightWarning)
        clf.fit(x_fit, y_fit, g_fit, X_select=x_sel, y_select=y_sel, groups_select=g_sel)
    notes = [str(w.message) for w in caught if issubclass(w.category, InfeasibleWeightWarning)]
    for w in caught:  # re-issue: the caller (the CLI) decides how to show them
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)

    binary = task.num_classes == 2
    threshold = None
    if binary:
        threshold = min(max(clf.decision_probability(), 1e-6), 1 - 1e-6)
    cfg = _new_config(loaded, threshold)
    model = build_model_from_config(cfg, loaded.data["input_shape"], 0, task.num_classes)
    model.backbone.load_state_dict(loaded.model.backbone.state_dict())
    W, b = clf.logit_layer(prevalence=binary)
    with torch.no_grad():
        model.fc.weight.copy_(torch.as_tensor(W, dtype=model.fc.weight.dtype))
        model.fc.bias.copy_(torch.as_tensor(b, dtype=model.fc.bias.dtype))

    d = int(x_fit.shape[1])
    n_fit = np.bincount(y_fit, minlength=task.num_classes).tolist()
    n_sel = np.bincount(y_sel, minlength=task.num_classes).tolist()
    record: dict[str, Any] = {
        "source_run": str(Path(source)),
        "retrained": "the last linear layer on the backbone's features (before FiLM: FiLM at any fixed lambda is "
                     "a per-feature affine map, which the retrainer's standardisation absorbs, so the head is the "
                     "same for every lambda)" + ("; the source's FiLM and head are dropped" if loaded.is_lct else
                                                 "; the source's head is replaced"),
        "source_lct": loaded.is_lct,
        "source_head": loaded.config.model.head,
        "split": ("validation halves: retraining (least-squares fit) and selection (probability map, choices; "
                  "the new run's validation split); test never used" if split == "val" else
                  f"retrain split carved from the training pool (data.retrain_fraction = "
                  f"{loaded.config.data.retrain_fraction:g}; least-squares fit) and the whole validation split "
                  f"(probability map, choices); test never used"),
        "seed": seed,
        "weighting": weighting if isinstance(weighting, (str, int, float)) else {str(k): v for k, v in
                                                                                 weighting.items()},
        "alpha": float(alpha), "pca": pca, "d_eff_setting": d_eff,
        "groups": groups,
        "n_retrain": n_fit, "n_select": n_sel,
        "n_per_group": clf.counts_ if groups is not None else None,
        "d": d, "d_eff": clf.d_eff_, "n_components": clf.n_components_, "feasible": clf.feasible_,
        "omega_star": clf.omega_star_,
        "class_weight": clf.class_weight_.tolist(),
        "group_weight": clf.group_weight_,
        "weight_power": clf.weight_power_,
        "probability_map": ({"form": "sigmoid(a f + c)", "a": clf.prevalence_calibration_[0],
                             "c": clf.prevalence_calibration_[1], "threshold_at_f0": threshold} if binary else
                            {"form": "softmax(a f)", "a": clf.calibration_[0]}),
        "notes": notes,
    }
    data = dict(loaded.data)
    if split == "val":
        data["counts"] = dict(data["counts"], val=n_sel)
    data["retrain"] = record

    if out.exists() and force:
        shutil.rmtree(out)
    run = RunDir(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.config, cfg.to_yaml())
    write_json(run.data, data)
    extra = {} if task.retrain_indices is None else {"retrain": task.retrain_indices}
    if split == "val":  # the new run validates on the selection half (LoadedRun.task)
        extra["retrain_select"] = sel_ix
    np.savez(run.splits, train=idx.train, val=idx.val, test=idx.test, retrain_fit=fit_ix, **extra)
    save_weights(run.weights, model)
    run.log({"event": "retrain", **record})
    write_json(run.complete_marker, {"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "retrained_from":
                                     str(Path(source))})
    return RetrainResult(run_dir=out, record=record, warnings=notes)
