"""Benchmark (issue 14, measurement 2b): does omega* equalise the class accuracies on *real* frozen features?

A trained binary run's backbone features are extracted once (validation and test splits). For each seed,
an imbalanced retraining set is drawn from the validation split (``--n-maj`` majority, ``--n-min`` minority
samples), the last layer is fitted on the first ``k`` principal components (d_eff = k, ridgeless) with each
weighting, and the test split (natural balance of the pair) is scored at the least-squares decision f > 0.
No choice is made on the test split: every weight is a formula of (n_maj, n_min, k).

    nice -n 10 python benchmarks/retrain/real_subsets.py --run LABEL=RUN [--n-maj 250] [--n-min 25,50]
        [--k 4,16,32,48] [--seeds 5] [--out-name NAME]

Writes benchmarks/results/NAME.{md,json} (default retrain_real_subsets).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from lossdial.evaluate import load_run  # noqa: E402
from lossdial.retrain import LastLayerClassifier  # noqa: E402
from lossdial.retrain.run import backbone_features  # noqa: E402

WEIGHTINGS = ("omega_star", "prior", "none", "downsample")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True, help="LABEL=RUN_DIR (a binary run)")
    ap.add_argument("--n-maj", type=int, default=250)
    ap.add_argument("--n-min", default="25,50")
    ap.add_argument("--k", default="4,16,32,48")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--out-name", default="retrain_real_subsets")
    args = ap.parse_args()
    label, run = args.run.split("=", 1)
    t0 = time.perf_counter()
    src = load_run(run)
    task = src.task()
    fv = backbone_features(src.model, task.val.x, normalizer=task.normalizer)
    ft = backbone_features(src.model, task.test.x, normalizer=task.normalizer)
    yv, yt = task.val.y.numpy(), task.test.y.numpy()
    rows = []
    for n_min in (int(v) for v in args.n_min.split(",")):
        for k in (int(v) for v in args.k.split(",")):
            if k >= 2 * n_min:
                continue
            per = {w: [] for w in WEIGHTINGS}
            for seed in range(args.seeds):
                rng = np.random.default_rng([seed, n_min, 0x5B5])
                ix = np.r_[rng.choice(np.flatnonzero(yv == 0), args.n_maj, replace=False),
                           rng.choice(np.flatnonzero(yv == 1), n_min, replace=False)]
                for wt in WEIGHTINGS:
                    clf = LastLayerClassifier(weighting=wt, pca=k, selection_fraction=0, random_state=seed)
                    pred = clf.fit(fv[ix], yv[ix]).predict(ft)
                    per[wt].append((np.mean(pred[yt == 1] == 1), np.mean(pred[yt == 0] == 0)))
            for wt in WEIGHTINGS:
                a = np.array(per[wt])
                rows.append({"n_maj": args.n_maj, "n_min": n_min, "k": k, "weighting": wt,
                             "omega": {"omega_star": (2 * args.n_maj - k) / (2 * n_min - k),
                                       "prior": args.n_maj / n_min}.get(wt, 1.0),
                             "minority_acc": float(a[:, 0].mean()), "minority_acc_std": float(a[:, 0].std()),
                             "majority_acc": float(a[:, 1].mean()), "majority_acc_std": float(a[:, 1].std()),
                             "balanced_acc": float(a.mean()), "gap": float(np.mean(a[:, 1] - a[:, 0])),
                             "abs_gap": float(np.mean(np.abs(a[:, 1] - a[:, 0])))})
            print(f"n_min={n_min} k={k}: done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    out = ROOT / "benchmarks" / "results"
    meta = {"run": run, "label": label, "feature_dim": int(fv.shape[1]), "val_counts": np.bincount(yv).tolist(),
            "test_counts": np.bincount(yt).tolist(), "seeds": args.seeds, "seconds": time.perf_counter() - t0}
    (out / f"{args.out_name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = [f"# omega* on real frozen features: {label} (feature dimension {fv.shape[1]}, {args.seeds} seeds)", "",
             f"`nice -n 10 python benchmarks/retrain/real_subsets.py --run {args.run} --n-maj {args.n_maj} "
             f"--n-min {args.n_min} --k {args.k} --seeds {args.seeds} --out-name {args.out_name}`", "",
             f"Retraining sets drawn from the validation split ({meta['val_counts']} per class): {args.n_maj} "
             "majority + n_min minority samples per seed; last layer on the first k principal components (d_eff = "
             f"k, ridgeless); test split ({meta['test_counts']} per class) scored at f > 0. Mean (std) over seeds; "
             "gap = majority acc - minority acc (|gap| averaged per seed).", "",
             "| n_min | k | weighting | omega | minority acc | majority acc | balanced acc | gap | mean abs gap |",
             "|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['n_min']} | {r['k']} | {r['weighting']} | {r['omega']:.3g} | {r['minority_acc']:.3f} "
                     f"({r['minority_acc_std']:.3f}) | {r['majority_acc']:.3f} ({r['majority_acc_std']:.3f}) | "
                     f"{r['balanced_acc']:.3f} | {r['gap']:+.3f} | {r['abs_gap']:.3f} |")
    (out / f"{args.out_name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
