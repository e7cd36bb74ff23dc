"""Benchmark: seconds per epoch of the real training loop, fast path against the standard DataLoader path.

    python benchmarks/speed.py [--device cpu|cuda] [--epochs 3] [--repeats 2] [--paths standard,device,...]
    python benchmarks/speed.py --device cuda --quality --epochs 100 --seeds 3   # final AUC, both paths

Workloads (each runs ``lossdial.train.train`` itself, in a fresh subprocess per measurement so peak memory is
per configuration; paths alternate within each repeat, so they see the same machine load):

* ``recipe``: the LCT paper's reference recipe -- ResNet-32 + FiLM, CIFAR-10 cat/dog at beta = 100 with
  ``data.val_from: test`` (train 5000 vs 50 = 5050 images, as the reference), batch 128, SGD, VS loss with
  tau ~ L(0, 3, 0.33), crop + flip, EMA, gradient clipping, evaluation every 10 epochs.
* ``demo``: the packaged demo (small CNN on scikit-learn digits, 992 training images, batch 64).

Paths (the same loop; only the data path or a switch differs):

* ``standard``: PIL images through torchvision transforms in 2 DataLoader workers (``train.loader: pil``),
  the way the reference implementation trains (the demo's float digits have no PIL form: tensors in workers);
* ``stream``: the same with uint8 tensors through transforms v2 (``train.loader: stream``);
* ``device``: the default -- the split resident on the device, whole batches augmented there;
* ``device+cl``: ``device`` with ``train.channels_last``;
* ``device+compile``: ``device`` with the experimental ``train.compile: default``.

Columns: s/epoch is the median over repeats of the steady-state epoch time (epochs after the first, from the
run's own metrics.jsonl, checkpoint writes included); eval s is one validation pass (scored every 10 epochs
in the recipe, so s/epoch + eval/10 is the amortised cost); peak memory is the subprocess's peak RSS on
CPU and torch.cuda.max_memory_allocated on CUDA. Writes benchmarks/results/speed_<device>.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, os.environ.get("LOSSDIAL_BENCH_SRC") or str(ROOT / "src"))

PATHS = {
    "standard": ["train.loader=pil", "train.num_workers=2", "train.channels_last=false"],
    "stream": ["train.loader=stream", "train.num_workers=2", "train.channels_last=false"],
    "device": ["train.loader=device", "train.channels_last=false"],
    "device+cl": ["train.loader=device", "train.channels_last=true"],
    "device+compile": ["train.loader=device", "train.channels_last=false", "train.compile=default"],
}

WORKLOADS = {
    "recipe": (str(ROOT / "configs" / "cifar10_cat_dog_beta100.yaml"),
               ["data.val_from=test", "train.eval_every=10", "train.checkpoint_epochs=10"]),
    "demo": (None, ["train.eval_every=10"]),
}


def _config(workload: str, path: str, epochs: int, seed: int, extra: list[str]):
    from lossdial.config import load_config, packaged_config_path

    from lossdial.config import ConfigError

    cfg_path, ov = WORKLOADS[workload]
    switch = PATHS[path.split("@")[0]]
    if workload == "demo" and path == "standard":  # the digits are float images: no PIL form, tensors in workers
        switch = PATHS["stream"]
    args = ov + switch + [f"train.epochs={epochs}", f"seed={seed}"] + extra
    try:
        return load_config(cfg_path or packaged_config_path("demo_digits"), args)
    except ConfigError:
        if "@" not in path:
            raise
        # an older lossdial (--before): drop the switches it does not know; its defaults are the plain path
        newer = ("train.loader", "train.checkpoint_epochs", "train.num_workers", "train.channels_last")
        return load_config(cfg_path or packaged_config_path("demo_digits"),
                           [a for a in args if not a.startswith(newer)])


def worker(args) -> None:
    """One measurement in this process: train, read the epoch times, print one JSON line."""
    import resource

    import numpy as np
    import torch

    from lossdial.data import build_task
    from lossdial.evaluate.scoring import score_lambdas
    from lossdial.train import train
    from lossdial.train.loop import reference_lambda
    from lossdial.train.factory import build_lambda_space

    torch.set_num_threads(args.threads) if args.threads else None
    cfg = _config(args.workload, args.path, args.epochs, args.seed, args.set)
    dev = torch.device(args.device)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = train(cfg, Path(tmp) / "run", device=dev)
        wall = time.perf_counter() - t0
        log = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    ep = [r["seconds"] for r in log if r.get("event") == "epoch"]
    start = next(r for r in log if r.get("event") == "start")
    steady = [b - a for a, b in zip(ep, ep[1:])] or ep
    final = next(r for r in log if r.get("event") == "final")
    # one validation pass as the loop runs it every eval_every epochs (model weights do not change the cost)
    task = build_task(cfg.data)
    from lossdial.train.factory import build_model_from_config

    space = build_lambda_space(cfg)
    model = build_model_from_config(cfg, task.input_shape, space.dim if space else 0).to(dev)
    lam = reference_lambda(space)
    score_lambdas(model, task.val.x, [lam] if lam else None, space, device=dev, transform=task.normalizer)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t1 = time.perf_counter()
    score_lambdas(model, task.val.x, [lam] if lam else None, space, device=dev, transform=task.normalizer)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    eval_s = time.perf_counter() - t1
    peak = (torch.cuda.max_memory_allocated(dev) if dev.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    rows = final["rows"]
    print(json.dumps({
        "workload": args.workload, "path": args.path, "seed": args.seed, "epochs": args.epochs,
        "n_train": int(sum(start["train_counts"])), "steps_per_epoch": start["steps_per_epoch"],
        "epoch_seconds": ep, "s_epoch": statistics.median(steady), "first_epoch_s": ep[0], "wall_s": wall,
        "eval_s": eval_s, "peak_bytes": int(peak), "steps": res.steps,
        "val_auc": float(np.mean([r["metrics"]["auc"] for r in rows])),
    }))


def run_one(args, workload: str, path: str, seed: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--workload", workload, "--path", path, "--device", args.device,
           "--epochs", str(args.epochs), "--seed", str(seed)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if "@" in path:  # "device@before": the same measurement with an older source tree first on the path
        env["LOSSDIAL_BENCH_SRC"] = args.before
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    for s in args.set:
        cmd += ["--set", s]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"{workload}/{path} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine(device: str) -> str:
    import torch

    dev = (torch.cuda.get_device_name(0) if device.startswith("cuda") else
           f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
           f"{torch.get_num_threads()} torch threads")
    return (f"{time.strftime('%Y-%m-%d')}; {platform.platform()}; Python {platform.python_version()}; "
            f"torch {torch.__version__}; device: {dev}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per measurement (s/epoch ignores the first)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--workloads", default="recipe,demo")
    ap.add_argument("--paths", default="standard,device,device+cl")
    ap.add_argument("--quality", action="store_true",
                    help="train --seeds full runs per path and report the validation AUC (mean over the grid)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads per worker (0: torch's default)")
    ap.add_argument("--set", action="append", default=[], help="extra config override for every run")
    ap.add_argument("--before", default=None, metavar="SRC_DIR",
                    help="also time the device path with this older source tree (e.g. a git worktree's src/), "
                         "as path 'device@before', to show what the loop's overhead removal bought")
    ap.add_argument("--out", default=None,
                    help="results file stem: writes STEM.md and STEM.json (default benchmarks/results/speed_<device>)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--workload", help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)

    paths = args.paths.split(",")
    if args.before:
        paths.append("device@before")
    unknown = [p for p in paths if p.split("@")[0] not in PATHS]
    if unknown:
        raise SystemExit(f"unknown path(s) {unknown}; choose from {list(PATHS)}")
    results: list[dict] = []
    for workload in args.workloads.split(","):
        seeds = range(args.seeds) if args.quality else [0] * args.repeats
        for rep, seed in enumerate(seeds):
            for path in (paths if rep % 2 == 0 else paths[::-1]):  # alternate the order between repeats
                r = run_one(args, workload, path, seed)
                results.append(r)
                print(f"  {workload:7s} {path:15s} seed {seed}: {r['s_epoch']:.3f} s/epoch "
                      f"(epoch end times {[round(e, 2) for e in r['epoch_seconds']]} s), eval {r['eval_s']:.3f} s, "
                      f"val AUC {r['val_auc']:.3f}", flush=True)

    lines = [f"# Training speed ({args.device})", "", machine(args.device), "",
             f"Command: `python benchmarks/speed.py {' '.join(sys.argv[1:])}`", "",
             f"{args.epochs} epochs per measurement, {'seeds 0..' + str(args.seeds - 1) if args.quality else str(args.repeats) + ' repeats'}"
             ", medians; s/epoch = steady-state epoch (first epoch excluded) incl. checkpoint writes; "
             "eval = one validation pass; ratio = standard path's s/epoch / this path's.", "",
             "| workload | path | train images | s/epoch | images/s | eval s | s/epoch + eval/10 | peak mem MiB "
             "| vs standard | val AUC |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    summary = []
    for workload in args.workloads.split(","):
        base = None
        for path in paths:
            rs = [r for r in results if r["workload"] == workload and r["path"] == path]
            if not rs:
                continue
            s = statistics.median(r["s_epoch"] for r in rs)
            ev = statistics.median(r["eval_s"] for r in rs)
            mem = max(r["peak_bytes"] for r in rs) / 2 ** 20
            auc = statistics.mean(r["val_auc"] for r in rs)
            base = s if path == "standard" else base
            ratio = f"{base / s:.2f}x" if base else "-"
            n = rs[0]["n_train"]
            distinct_seeds = len({r["seed"] for r in rs}) > 1
            auc_s = f"{auc:.3f}" + (f" ± {statistics.stdev(r['val_auc'] for r in rs):.3f}" if distinct_seeds else "")
            lines.append(f"| {workload} | {path} | {n} | {s:.3f} | {n / s:.0f} | {ev:.3f} | {s + ev / 10:.3f} | "
                         f"{mem:.0f} | {ratio} | {auc_s} |")
            summary.append({"workload": workload, "path": path, "s_epoch": s, "images_per_s": n / s, "eval_s": ev,
                            "peak_mib": mem, "speedup_vs_standard": (base / s) if base else None,
                            "val_auc_mean": auc, "runs": rs})
    if args.before:
        lines += ["", f"device@before: the device path with the source tree {args.before} (settings it lacks "
                      f"left at its defaults)."]
    lines += ["", "val AUC: the final EMA model on the validation split, mean over the evaluation lambda grid "
              "(after only the epochs above unless --quality was run for the full schedule)."]
    table = "\n".join(lines)
    print()
    print(table)
    stem = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"speed_{args.device.split(':')[0]}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".md").write_text(table + "\n")
    stem.with_suffix(".json").write_text(json.dumps({"machine": machine(args.device), "argv": sys.argv[1:],
                                                     "summary": summary}, indent=1) + "\n")
    print(f"\nwrote {stem.with_suffix('.md')} and .json")


if __name__ == "__main__":
    main()
