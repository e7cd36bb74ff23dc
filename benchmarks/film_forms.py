"""Which FiLM form trains better? Reference (sigma*h + mu, raw lambda) vs identity start, raw vs normalised.

METHODS.md section 2 asks us to offer the normalised input and the identity start, measure which trains
better, and keep the reference available. This trains the demo task (digits, 8 vs rest, beta = 50) with
each combination over several seeds and reports VALIDATION metrics (never test), averaged over the
evaluation grid tau = 0, 0.5, ..., 3 and over seeds (mean +- std over seeds).

    python benchmarks/film_forms.py [--seeds 3] [--epochs 40] [--config configs/demo_digits.yaml]

Writes benchmarks/results/film_forms.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lossdial.config import load_config  # noqa: E402
from lossdial.train import train  # noqa: E402

VARIANTS = [("reference", False), ("reference", True), ("identity", False), ("identity", True)]
KEYS = ("auc", "ap", "brier", "ece", "f1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--config", default=str(ROOT / "configs" / "demo_digits.yaml"))
    args = ap.parse_args()
    results = {}
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for film, norm in VARIANTS:
            per_seed = []
            for seed in range(args.seeds):
                cfg = load_config(args.config, [f"model.film={film}", f"lct.normalize={str(norm).lower()}",
                                                f"seed={seed}", f"train.epochs={args.epochs}", "train.eval_every=0"])
                res = train(cfg, Path(tmp) / f"{film}-{norm}-{seed}", device="cpu")
                rows = res.final["rows"]
                per_seed.append({k: statistics.mean(r["metrics"][k] for r in rows) for k in KEYS})
            results[f"{film}, lambda {'normalised' if norm else 'raw'}"] = {
                k: (statistics.mean(s[k] for s in per_seed), statistics.stdev(s[k] for s in per_seed)
                    if len(per_seed) > 1 else 0.0) for k in KEYS}
    lines = [f"# FiLM forms on the demo task ({time.strftime('%Y-%m-%d')}, CPU, {args.epochs} epochs, "
             f"{args.seeds} seeds, {time.time() - t0:.0f} s)", "",
             "Validation split (35 positives / 325 negatives); each metric averaged over tau = 0, 0.5, ..., 3, "
             "then mean +- std over seeds. Higher is better for AUC, AP, F1; lower for Brier, ECE.", "",
             "| FiLM form | " + " | ".join(KEYS) + " |", "|---|" + "---:|" * len(KEYS)]
    for name, m in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{m[k][0]:.4f} +- {m[k][1]:.4f}" for k in KEYS) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "film_forms.md").write_text(text)
    (out / "film_forms.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
