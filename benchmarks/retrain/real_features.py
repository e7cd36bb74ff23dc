"""Benchmark (issue 14, measurement 2): last-layer retraining of trained runs' frozen backbones, per weighting,
over retraining-split seeds, scored on the test split against the end-to-end model.

For each source run (given as LABEL=RUN_DIR) and each seed, `lossdial.retrain.retrain_run` (the code path of
`lossdial retrain`) halves the validation split (seeded, stratified): the retraining half fits the layer, the
selection half is the new run's validation split; the test split is scored once per retrained run at its
default decision (binary: the least-squares decision f > 0, i.e. the run's evaluate.threshold; multi-class:
argmax at t = 0). The end-to-end model is the source run itself on the same test split (binary: threshold
0.5; an LCT run at its reference lambda, the mean of its lambda law; multi-class: argmax at t = 0).

    nice -n 10 python benchmarks/retrain/real_features.py --run digits=RUN --run cifar_catdog=RUN \\
        [--seeds 5] [--weightings omega_star,prior,none,downsample,tuned] [--out-name NAME]

Writes benchmarks/results/NAME.{md,json} (default retrain_real_features).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from lossdial.evaluate import load_run  # noqa: E402
from lossdial.evaluate.scoring import score_lambdas  # noqa: E402
from lossdial.retrain.run import retrain_run  # noqa: E402
from lossdial.train.loop import reference_lambda  # noqa: E402


def test_metrics(loaded, task, lam=None):
    """Per-class accuracy (recall), balanced and worst-class accuracy, minority accuracy and AUC on test."""
    y = task.test.y.numpy()
    lams = [lam] if lam else None
    if loaded.task_type.name == "binary":
        s = score_lambdas(loaded.model, task.test.x, lams, loaded.space, device=loaded.device,
                          transform=task.normalizer, output="positive")[0]
        thr = loaded.config.evaluate.threshold
        pred = (s >= thr).astype(int)
        from sklearn.metrics import roc_auc_score

        auc = float(roc_auc_score(y, s))
    else:
        z = score_lambdas(loaded.model, task.test.x, lams, loaded.space, device=loaded.device,
                          transform=task.normalizer, output="logits")[0]
        pred = z.argmax(1)
        auc = None
    rec = [float(np.mean(pred[y == c] == c)) for c in range(task.num_classes)]
    counts = loaded.train_counts
    minority = int(np.argmin(counts))
    return {"per_class_accuracy": rec, "balanced_accuracy": float(np.mean(rec)), "worst_class_accuracy":
            float(min(rec)), "minority_accuracy": rec[minority], "auc": auc}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", action="append", required=True, help="LABEL=RUN_DIR (repeatable)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--weightings", default="omega_star,prior,none,downsample,tuned")
    ap.add_argument("--extra", action="append", default=[],
                    help="NAME:key=value,... an extra retraining setting, e.g. 'omega_star+ridge:alpha=1'")
    ap.add_argument("--out-name", default="retrain_real_features")
    args = ap.parse_args()
    settings = [(w, {"weighting": w}) for w in args.weightings.split(",")]
    for spec in args.extra:
        name, kv = spec.split(":", 1)
        kw = {"weighting": "omega_star"}
        for item in kv.split(","):
            k, v = item.split("=")
            kw[k] = v if k == "weighting" else (int(v) if k == "pca" else float(v))
        settings.append((name, kw))
    results = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="llr_bench_") as tmp:
        for spec in args.run:
            label, run = spec.split("=", 1)
            src = load_run(run)
            task = src.task()
            lam = reference_lambda(src.space)
            e2e = test_metrics(src, task, lam)
            counts = src.data["counts"]
            entry = {"label": label, "run": run, "lct": src.is_lct, "reference_lambda": lam,
                     "counts": counts, "end_to_end": e2e, "settings": {}}
            for name, kw in settings:
                per_seed = []
                for seed in range(args.seeds):
                    out = Path(tmp) / f"{label}_{name}_{seed}"
                    with warnings.catch_warnings(record=True):
                        warnings.simplefilter("always")
                        res = retrain_run(run, out, seed=seed, force=True, **kw)
                    new = load_run(out)
                    m = test_metrics(new, new.task())
                    r = res.record
                    m.update({"d_eff": r["d_eff"], "n_components": r["n_components"], "feasible": r["feasible"],
                              "omega_star": r["omega_star"], "class_weight": r["class_weight"],
                              "weight_power": r["weight_power"], "n_retrain": r["n_retrain"]})
                    per_seed.append(m)
                entry["settings"][name] = {"setting": kw, "seeds": per_seed}
                print(f"{label} {name}: done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
            results.append(entry)
    outdir = ROOT / "benchmarks" / "results"
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / f"{args.out_name}.json").write_text(json.dumps({"seeds": args.seeds, "results": results}, indent=2,
                                                             default=float) + "\n")
    lines = [f"# Last-layer retraining on frozen backbones ({args.seeds} retraining-split seeds)", "",
             "`nice -n 10 python benchmarks/retrain/real_features.py " + " ".join(f"--run {r}" for r in args.run)
             + f" --seeds {args.seeds}`", "",
             "Retraining half / selection half of the validation split (seeded, stratified); test scored once "
             "per retrained run at its default decision. Mean (std) over seeds. End-to-end: the source run on the "
             "same test split (threshold 0.5 / argmax; LCT at its reference lambda).", ""]
    for e in results:
        c = e["counts"]
        lines += [f"## {e['label']} (`{e['run']}`{', LCT' if e['lct'] else ''})", "",
                  f"Samples per class: train {c['train']}, validation {c['val']} (halved), test {c['test']}.", "",
                  "| setting | class weight ratio (max/min) | d_eff | minority acc | worst-class acc | balanced acc "
                  "| AUC |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        ee = e["end_to_end"]
        auc = "-" if ee["auc"] is None else f"{ee['auc']:.3f}"
        lines.append(f"| end-to-end | - | - | {ee['minority_accuracy']:.3f} | {ee['worst_class_accuracy']:.3f} | "
                     f"{ee['balanced_accuracy']:.3f} | {auc} |")
        for name, s in e["settings"].items():
            seeds = s["seeds"]

            def ms(k):
                v = np.array([x[k] for x in seeds], dtype=float)
                return f"{v.mean():.3f} ({v.std():.3f})"

            cw = np.array([max(x["class_weight"]) / min(x["class_weight"]) for x in seeds])
            de = np.array([x["d_eff"] for x in seeds])
            pcs = {x["n_components"] for x in seeds}
            auc = "-" if seeds[0]["auc"] is None else ms("auc")
            lines.append(f"| {name} | {cw.mean():.3g} | {de.mean():.3g}{' (PCA)' if pcs != {None} else ''} | "
                         f"{ms('minority_accuracy')} | {ms('worst_class_accuracy')} | {ms('balanced_accuracy')} | "
                         f"{auc} |")
        lines.append("")
    (outdir / f"{args.out_name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
