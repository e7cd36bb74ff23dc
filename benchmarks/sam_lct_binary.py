"""Benchmark: does SAM hurt loss-conditional training (LCT) on a binary imbalanced task?

The LCT paper (Lieberman et al.) reports VS + SAM + LCT degrading badly on melanoma (test AUC 0.895 -> 0.650).
This runs the four cells of {VS baseline, LCT} x {plain steps, SAM} through `lossdial compare --variant`, each
picked on validation and scored once on test, over seeds, plus mechanism rows, and tabulates

- test AUC / AP mean ± std per row (compare's protocol: the LCT row's lambda picked on validation);
- for every LCT row, the validation AUC at each lambda of the config's evaluate.lambda grid (mean ± std over
  seeds): whether a degradation is uniform over lambda or sits at the ends of the support. These are the
  final-evaluation rows each run writes to metrics.jsonl, the same numbers `lossdial sweep RUN --split val`
  prints for that grid.

Rows:

    base          VS at the config's fixed (gamma, tau), LCT off
    vs_sam        base + SAM (optim.sam.rho = 0.05, Foret et al.)
    lct           LCT over VS's tau ~ L(0, 3, 0.33) (the config's law)
    lct_sam       lct + SAM rho = 0.05
    (digits only, mechanism rows)
    lct_ref       lct with model.film = reference (the LCT paper's FiLM: sigma * h + mu, PyTorch default init)
    lct_ref_sam   lct_ref + SAM rho = 0.05
    lct_sam_r02   lct + SAM rho = 0.2 (a large radius, to make an effect visible)
    (not run yet; for the GPU run)
    vs_sam_r03, lct_sam_r03   rho = 0.3, the radius of the LCT reference code's "Baseline + SAM" example

Settings:

    --setting full     CIFAR-10 automobile vs truck, beta = 100 (configs/cifar10_auto_truck_beta100.yaml),
                       ResNet-32, 200 epochs, 3 seeds, rows base..lct_sam (+ --only to choose); a GPU:
                       python benchmarks/sam_lct_binary.py --setting full --device cuda
    --setting quick    SHORT CPU VERSION of the same pair at beta = 10 (at beta = 100 a CPU-sized run does not
                       leave the prior): small_cnn (width 16) instead of ResNet-32, 6 epochs, 1 warm-up epoch,
                       2 seeds, 2 jobs; far from converged (see the table's note)
    --setting digits   the packaged digits demo (digit 8 vs rest, beta = 50, small CNN, 40 epochs), 2 seeds, all
                       seven rows: cheap enough on a CPU to see the mechanism rows over seeds

Output: benchmarks/results/sam_lct_binary_SETTING.md and .json. --summarize rebuilds them from an existing
compare folder (--out) without training; --print-command prints the `lossdial compare` command.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

SAM = "optim.sam.rho=0.05"
ROWS = {
    "vs_sam": [SAM],
    "lct": ["lct.enabled=true"],
    "lct_sam": ["lct.enabled=true", SAM],
    "lct_ref": ["lct.enabled=true", "model.film=reference"],
    "lct_ref_sam": ["lct.enabled=true", "model.film=reference", SAM],
    "lct_sam_r02": ["lct.enabled=true", "optim.sam.rho=0.2"],
    "vs_sam_r03": ["optim.sam.rho=0.3"],
    "lct_sam_r03": ["lct.enabled=true", "optim.sam.rho=0.3"],
}
CORE = ["vs_sam", "lct", "lct_sam"]

SETTINGS = {
    "full": {"config": "configs/cifar10_auto_truck_beta100.yaml", "seeds": 3, "jobs": 1, "rows": CORE,
             "extra": ["lct.enabled=false"],
             "what": "CIFAR-10 automobile vs truck, beta = 100, ResNet-32, 200 epochs (the config as shipped), "
                     "3 seeds"},
    "quick": {"config": "configs/cifar10_auto_truck_beta10.yaml", "seeds": 2, "jobs": 2, "rows": CORE,
              "extra": ["lct.enabled=false", "model.backbone=small_cnn", "model.backbone_kwargs={width: 16}",
                        "train.epochs=6", "train.eval_every=0", "schedule.warmup_epochs=1"],
              "what": "SHORT CPU VERSION: CIFAR-10 automobile vs truck at beta = 10, not 100 (train 4500 vs 450, "
                      "validation 500 vs 500, test 1000 vs 1000), small_cnn width 16 instead of ResNet-32, 6 epochs "
                      "(234 steps), 1 warm-up epoch, 2 seeds; far from converged. (At beta = 100 the same small "
                      "CNN had not left the prior after 8 epochs: train loss flat, validation AUC 0.59-0.61 in "
                      "every row, so the CPU run uses beta = 10.)"},
    "digits": {"config": "src/lossdial/configs/demo_digits.yaml", "seeds": 2, "jobs": 2, "rows": list(ROWS)[:6],
               "extra": ["lct.enabled=false", "train.eval_every=0"],
               "what": "CPU: the packaged digits demo (digit 8 vs the rest, beta = 50, train 973 vs 19, small CNN "
                       "width 32, 40 epochs), 2 seeds"},
}


def command(setting: str, rows: list[str], seeds: int, out: Path, device: str | None, jobs: int,
            config: str | None = None, epochs: int | None = None) -> list[str]:
    s = SETTINGS[setting]
    cmd = ["lossdial", "compare", config or s["config"], "--seeds", str(seeds), "--jobs", str(jobs),
           "--out", str(out), "-q"]
    extra = [ov for ov in s["extra"] if not (epochs and ov.startswith("train.epochs="))]
    for ov in extra + ([f"train.epochs={epochs}"] if epochs else []):
        cmd += ["--set", ov]
    for name in rows:
        cmd += ["--variant", f"{name}={','.join(ROWS[name])}"]
    if device:
        cmd += ["--device", device]
    return cmd


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _fmt(values: list[float]) -> str:
    m, s = _mean_std(values)
    return f"{m:.3f} ± {s:.3f}"


def final_val_rows(run: Path) -> list[dict]:
    """The run's final validation rows (one per lambda of evaluate.lambda) from metrics.jsonl."""
    rows = None
    for line in (run / "metrics.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event.get("event") == "final" and event.get("split") == "val":
            rows = event["rows"]
    if rows is None:
        raise SystemExit(f"{run}/metrics.jsonl has no final validation rows (unfinished run?)")
    return rows


def summarize(out: Path) -> dict:
    if not (out / "compare.json").is_file():
        raise SystemExit(f"{out}/compare.json not found: the compare has not finished (run the same command again "
                         f"to continue it), or --out names another folder")
    comp = json.loads((out / "compare.json").read_text())
    seeds = comp["protocol"]["seeds"]
    table = {}
    for method in comp["methods"]:
        name = method["name"]
        summ = comp["summary"][name]
        table[name] = {"test_auc": summ["auc"]["values"], "test_ap": summ["ap"]["values"],
                       "val_auc_picked": summ["auc"]["val_mean"], "train_s": comp["train_seconds"].get(name)}
    picks = {(p["method"], p["seed"]): p for p in comp["picks"] if p["metric"] == "auc"}
    per_lambda = {}
    for name in table:
        run0 = out / name / f"seed{seeds[0]}"
        if not (run0 / "lambda_space.json").exists():
            continue
        rows_by_seed = [final_val_rows(out / name / f"seed{s}") for s in seeds]
        if rows_by_seed[0][0].get("lambda") in (None, {}):
            continue
        lams = [r["lambda"] for r in rows_by_seed[0]]
        per_lambda[name] = {
            "lambda": lams,
            "val_auc": [[rows[i]["metrics"]["auc"] for rows in rows_by_seed] for i in range(len(lams))],
            "picked_lambda": [picks[(name, s)]["lambda"] for s in seeds if (name, s) in picks],
        }
    return {"seeds": seeds, "table": table, "per_lambda": per_lambda, "protocol": comp["protocol"],
            "settings": comp["settings"]}


def render(setting: str, summary: dict, shown: str, wall: float | None) -> str:
    import torch

    lines = [f"# SAM x LCT on a binary task ({setting}) ({time.strftime('%Y-%m-%d %H:%M')} UTC)", "",
             f"- setting: {SETTINGS[setting]['what']}",
             f"- machine: {platform.platform()}, {platform.machine()}, Python {platform.python_version()}, "
             f"torch {torch.__version__}, {os.cpu_count()} cores; load average when this table was written: "
             f"{os.getloadavg()[0]:.1f} (a shared machine: `train s`, each row's training time summed over seeds, is "
             f"wall clock under that load, not a cost measurement)",
             f"- seeds: {summary['seeds']}; picked on validation, scored once on test (compare's protocol); "
             f"std = sample std over seeds",
             *([f"- wall time of the whole compare: {wall:.0f} s"] if wall is not None else []),
             "- command (from the repository root; `lossdial` = `python -m lossdial` with src on the path):", "",
             "```", shown, "```", "",
             "## Test AUC / AP (picked on validation)", "",
             "| row | overrides | test AUC | test AP | val AUC (picked) | train s |",
             "|---|---|---:|---:|---:|---:|"]
    for name, r in summary["table"].items():
        ov = ", ".join(ROWS.get(name, [])) or "(the config + the setting's --set)"
        lines.append(f"| {name} | {ov} | {_fmt(r['test_auc'])} | {_fmt(r['test_ap'])} | {r['val_auc_picked']:.3f} "
                     f"| {r['train_s']:.0f} |")
    pairs = [(a, b) for a, b in (("vs_sam", "base"), ("lct_sam", "lct"), ("lct_ref_sam", "lct_ref"),
                                 ("lct_sam_r02", "lct"), ("lct_sam_r03", "lct"), ("vs_sam_r03", "base"))
             if a in summary["table"] and b in summary["table"]]
    if pairs:
        lines += ["", "## What SAM changes, paired by seed (row minus its plain-step row; test, picked on validation)",
                  "", "| SAM row - plain row | test AUC | test AP | per seed (AUC) |", "|---|---:|---:|---|"]
        for a, b in pairs:
            ta, tb = summary["table"][a], summary["table"][b]
            d_auc = [x - y for x, y in zip(ta["test_auc"], tb["test_auc"])]
            d_ap = [x - y for x, y in zip(ta["test_ap"], tb["test_ap"])]
            lines.append(f"| {a} - {b} | {_fmt(d_auc)} | {_fmt(d_ap)} | "
                         f"{', '.join(f'{d:+.3f}' for d in d_auc)} |")
        if {"vs_sam", "base", "lct_sam", "lct"} <= set(summary["table"]):
            t = summary["table"]
            inter = [(ls - lc) - (vs - b) for ls, lc, vs, b in zip(
                t["lct_sam"]["test_auc"], t["lct"]["test_auc"], t["vs_sam"]["test_auc"], t["base"]["test_auc"])]
            lines += ["", f"Interaction (what SAM does to LCT beyond what it does to the VS baseline), test AUC "
                          f"(lct_sam - lct) - (vs_sam - base): {_fmt(inter)} (per seed "
                          f"{', '.join(f'{d:+.3f}' for d in inter)})."]
    if summary["per_lambda"]:
        lams = next(iter(summary["per_lambda"].values()))["lambda"]
        keys = [", ".join(f"{k}={v:g}" for k, v in lam.items()) for lam in lams]
        lines += ["", "## Validation AUC across the lambda grid (LCT rows; mean ± std over seeds)", "",
                  "| row | " + " | ".join(keys) + " | lambda picked on val for AUC, per seed |",
                  "|---|" + "---:|" * len(keys) + "---|"]
        for name, p in summary["per_lambda"].items():
            cells = [_fmt(v) for v in p["val_auc"]]
            picked = "; ".join(", ".join(f"{k}={v:g}" for k, v in (lam or {}).items()) for lam in p["picked_lambda"])
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {picked} |")
        pl = summary["per_lambda"]
        for a, b in (("lct_sam", "lct"), ("lct_ref_sam", "lct_ref"), ("lct_sam_r02", "lct"), ("lct_sam_r03", "lct")):
            if a in pl and b in pl and pl[a]["lambda"] == pl[b]["lambda"]:
                cells = [_fmt([x - y for x, y in zip(va, vb)]) for va, vb in zip(pl[a]["val_auc"], pl[b]["val_auc"])]
                lines.append(f"| {a} - {b} (paired by seed) | " + " | ".join(cells) + " | |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--setting", choices=list(SETTINGS), default="quick")
    ap.add_argument("--only", default=None, help="comma-separated rows (base is always one)")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--epochs", type=int, default=None, help="train.epochs in place of the setting's")
    ap.add_argument("--config", default=None, help="another binary config in place of the setting's (e.g. "
                    "configs/cifar10_cat_dog_beta100.yaml)")
    ap.add_argument("--out", type=Path, default=None, help="compare folder (default /tmp/sam_lct_binary_SETTING)")
    ap.add_argument("--summarize", action="store_true", help="tabulate an existing --out folder, no training")
    ap.add_argument("--print-command", action="store_true")
    args = ap.parse_args()

    s = SETTINGS[args.setting]
    if args.epochs:  # the table states the epochs actually trained
        s = SETTINGS[args.setting] = {**s, "what": f"{s['what']} -- EXCEPT train.epochs = {args.epochs} (--epochs), "
                                                   f"in place of the epochs stated above"}
    rows = s["rows"]
    if args.only:
        want = [r.strip() for r in args.only.split(",") if r.strip() and r.strip() != "base"]
        unknown = [r for r in want if r not in ROWS]
        if unknown:
            ap.error(f"--only: unknown rows {unknown}; choose from {['base', *ROWS]}")
        rows = want
    out = args.out or Path(f"/tmp/sam_lct_binary_{args.setting}")
    cmd = command(args.setting, rows, args.seeds or s["seeds"], out, args.device, args.jobs or s["jobs"],
                  args.config, args.epochs)
    shown = " ".join(shlex.quote(c) for c in cmd)
    if args.print_command:
        print(shown)
        return
    wall = None
    if not args.summarize:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "lossdial", *cmd[1:]], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
        if proc.returncode != 0:
            sys.exit(proc.returncode)
        wall = time.perf_counter() - t0
    summary = summarize(out)
    RESULTS.mkdir(parents=True, exist_ok=True)
    tag = args.setting if not args.config else f"{args.setting}_{Path(args.config).stem}"
    tag += f"_e{args.epochs}" if args.epochs else ""
    dest = RESULTS / f"sam_lct_binary_{tag}"
    dest.with_suffix(".md").write_text(render(args.setting, summary, shown, wall))
    dest.with_suffix(".json").write_text(json.dumps({"command": shown, **summary}, indent=1, default=str))
    print(f"wrote {dest}.md and .json")


if __name__ == "__main__":
    main()
