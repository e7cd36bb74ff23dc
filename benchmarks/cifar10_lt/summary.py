"""The table of benchmarks/cifar10_lt/run.sh: per config, mean ± sample std over seeds of each method's test
metrics (each chosen on validation by `lossdial compare`), training time per seed, and the published anchors.

Usage: python benchmarks/cifar10_lt/summary.py OUT [OUT ...] [--title TEXT] [--note TEXT] > benchmarks/results/cifar10_lt_<mode>.md
"""
import argparse
import json
import statistics
from pathlib import Path

# (compare folder, compare method, row label); the order of the table
ROWS = [
    ("ce", "baseline", "CE (t = 0)"),
    ("ce_posthoc", "baseline", "CE + post-hoc logit adjustment (t chosen on val)"),
    ("la", "baseline", "logit-adjusted loss, tau = 1 (t = 0)"),
    ("ldam_drw", "baseline", "LDAM-DRW (t = 0)"),
    ("vs", "baseline", "VS grid {spec} (member and t chosen on val)"),
    ("vs", "lct", "LCT, VS over tau and gamma (lambda and t chosen on val)"),
]
METRICS = [("balanced_accuracy", "balanced acc"), ("accuracy", "acc @ train prior"),
           ("many_shot_accuracy", "many-shot"), ("medium_shot_accuracy", "medium-shot"),
           ("few_shot_accuracy", "few-shot"), ("worst_class_accuracy", "worst class")]
# top-1 on the balanced test set, ResNet-32, the 200-epoch recipe (issue 12); keyed by config name
ANCHORS = {
    "cifar10_lt_exp100": {"ce": "70-72", "ce_posthoc": "~77.3", "la": "~77.9", "ldam_drw": "~77 (75.4-77.8)"},
    "cifar10_lt_exp10": {"ldam_drw": "~88"},
}


def fmt(st, scale=100.0, digits=1):
    if st is None or st.get("mean") is None:
        return "—"
    m = st["mean"] * scale
    s = st.get("std")
    return f"{m:.{digits}f}" if s is None else f"{m:.{digits}f} ± {s * scale:.{digits}f}"


def seconds_per_seed(folder: Path, runs, seeds):
    """Sum over the method's runs of each seed's COMPLETE seconds (the member's share for a stack)."""
    out = []
    for s in seeds:
        tot = 0.0
        for r in runs:
            f = folder / r / f"seed{s}" / "COMPLETE"
            tot += json.loads(f.read_text())["seconds"]
        out.append(tot)
    return out


def chosen(d, method, metric="balanced_accuracy"):
    """The points chosen on validation for `metric`, one per seed: member, lambda, t."""
    cells = []
    for p in d["picks"]:
        if p["method"] == method and p["metric"] == metric:
            lam = "" if p["lambda"] is None else " " + ",".join(f"{k}={v:g}" for k, v in p["lambda"].items())
            member = p["member"].removeprefix("baseline_")
            cells.append(f"s{p['seed']}: {member}{lam} t={p['adjustment']:g}")
    return "; ".join(cells)


def table(cfg_dir: Path):
    name = cfg_dir.name
    anchors = ANCHORS.get(name, {})
    print(f"\n### {name}\n")
    first = json.loads((cfg_dir / "ce" / "compare.json").read_text())
    print(f"- seeds: {first['protocol']['seeds']} (mean ± sample std, ddof 1); data seed(s) "
          f"{first['settings']['data_seeds']}; chosen on `{first['protocol']['picked_on']}`, scored once on "
          f"`{first['protocol']['scored_on']}`")
    prior = first["prior"]["values"][0]
    print(f"- acc @ train prior: accuracy reweighted to the training class prior "
          f"({', '.join(f'{p:.3g}' for p in prior)}); every other column is prior-free (per-class recall)")
    print("- each cell is the test value at the point chosen on validation *for that metric* "
          "(compare.json has every pick); percent")
    cols = " | ".join(lab for _, lab in METRICS)
    print(f"\n| method | {cols} | train s / seed | anchor (balanced top-1) |")
    print("|---|" + "---:|" * (len(METRICS) + 1) + "---|")
    empty = []
    for folder, method, label in ROWS:
        f = cfg_dir / folder / "compare.json"
        d = json.loads(f.read_text()) if f.is_file() else {"summary": {}}
        if method not in d["summary"]:
            print(f"| {label.format(spec='').replace('  ', ' ')} | " + " | ".join("(not run)" for _ in METRICS) + " | | |")
            continue
        label = label.format(spec=next(m["spec"] for m in d["methods"] if m["name"] == method))
        summ = d["summary"][method]
        cells = []
        for key, _ in METRICS:
            if key not in summ:
                cells.append("— (no class)")
                empty.append(key)
            else:
                cells.append(fmt(summ[key]))
        runs = next(m["runs"] for m in d["methods"] if m["name"] == method)
        secs = seconds_per_seed(cfg_dir / folder, runs, d["protocol"]["seeds"])
        t = f"{statistics.mean(secs):.0f}" + (f" ± {statistics.stdev(secs):.0f}" if len(secs) > 1 else "")
        print(f"| {label} | {' | '.join(cells)} | {t} | {anchors.get(folder, '')} |")
    if empty:
        print(f"\n— (no class): {', '.join(sorted(set(empty)))} undefined: no class of this training split falls in "
              f"that shot group (many > 100, few < 20 training images)")
    print("\nPoints chosen on validation for balanced accuracy (member of the grid, LCT lambda, post-hoc t):\n")
    for folder, method, label in ROWS:
        f = cfg_dir / folder / "compare.json"
        d = json.loads(f.read_text()) if f.is_file() else {"summary": {}}
        if method in d["summary"] and folder not in ("ce", "la", "ldam_drw"):
            spec = next(m["spec"] for m in d["methods"] if m["name"] == method)
            print(f"- {label.format(spec=spec)}: {chosen(d, method)}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("outs", type=Path, nargs="+", help="run.sh output folders (one section each)")
    ap.add_argument("--title", default="CIFAR-10-LT protocol (issue 12)")
    ap.add_argument("--note", action="append", default=[], help="a paragraph under the title (repeatable)")
    a = ap.parse_args()
    print(f"# {a.title}")
    for note in a.note:
        print(f"\n{note}")
    for out in a.outs:
        settings = (out / "settings.txt").read_text().strip().splitlines()
        configs = next(ln for ln in settings if ln.startswith("configs:")).split(":", 1)[1].strip()
        print(f"\n## {configs}\n")
        for line in settings:
            print(f"- {line}")
        wall = out / "wall.txt"
        if wall.is_file():
            print("- wall clock per compare call (s): " + "; ".join(wall.read_text().split("\n")).strip("; "))
        print("\nCommands (`lossdial compare`, from benchmarks/cifar10_lt/run.sh):\n\n```")
        print((out / "commands.txt").read_text().strip())
        print("```")
        for cfg_dir in sorted(p for p in out.iterdir() if (p / "ce" / "compare.json").is_file()):
            table(cfg_dir)


if __name__ == "__main__":
    main()
