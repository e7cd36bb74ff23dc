"""Tables of benchmarks/recipe_fidelity/run.sh: mean ± sample std over 3 seeds of the final validation row
(epoch-1 training loss, AUC, AP, ECE, Brier) before and after each recipe-fidelity change."""
import json, sys
import numpy as np
from pathlib import Path

R = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/tmp/recipe_fidelity")
MET = ["auc", "ap", "ece", "brier"]


def load(name):
    recs = [json.loads(l) for l in (R / name / "metrics.jsonl").read_text().splitlines()]
    final = next(r for r in recs if r["event"] == "final")
    ep1 = next(r for r in recs if r["event"] == "epoch" and r["epoch"] == 1)["train_loss"]
    return final["rows"], ep1


def row_at(rows, key, value):
    if key is None:
        return rows[0]["metrics"]
    return min(rows, key=lambda r: abs(r["lambda"][key] - value))["metrics"]


def table(item, key, value, label, extra_rows=None):
    print(f"\n### {item}: {label}")
    print("| run | epoch-1 train loss | " + " | ".join(f"val {m}" for m in MET) + " |")
    print("|---|---:|" + "---:|" * len(MET))
    for side in ("before", "after"):
        vals, ep = [], []
        for s in range(3):
            rows, e1 = load(f"{item}_{side}_s{s}")
            m = row_at(rows, key, value)
            vals.append([m[k] for k in MET]); ep.append(e1)
        v = np.array(vals); e = np.array(ep)
        cells = [f"{a:.4f} ± {b:.4f}" for a, b in zip(v.mean(0), v.std(0, ddof=1))]
        print(f"| {side} | {e.mean():.3f} ± {e.std(ddof=1):.3f} | " + " | ".join(cells) + " |")


def grid_table(item, key):
    print(f"\n#### {item}: every {key} of the evaluation grid (val, mean ± std over 3 seeds)")
    rows0, _ = load(f"{item}_before_s0")
    lams = [r["lambda"][key] for r in rows0]
    print(f"| {key} | run | " + " | ".join(MET) + " |")
    print("|---:|---|" + "---:|" * len(MET))
    for lam in lams:
        for side in ("before", "after"):
            v = np.array([[row_at(load(f"{item}_{side}_s{s}")[0], key, lam)[k] for k in MET] for s in range(3)])
            print(f"| {lam:g} | {side} | " + " | ".join(f"{a:.4f} ± {b:.4f}" for a, b in zip(v.mean(0), v.std(0, ddof=1))) + " |")


which = ["ldam", "decay", "focal"]
if "ldam" in which:
    table("ldam", None, None, "LDAM baseline (s = 30, max margin 0.5, no DRW); before = linear head, after = cosine head")
if "decay" in which:
    table("decay", "tau", 1.0, "demo LCT model (VS, tau ~ L(0,3,0.33)) at tau = 1; before = decay_norm_and_bias false, after = true")
    grid_table("decay", "tau")
if "focal" in which:
    table("focal", "alpha", 0.5, "focal LCT over alpha ~ U(0.25, 0.75), phi = 2, at alpha = 0.5; before = weighted mean, after = plain mean")
    grid_table("focal", "alpha")
