"""What does each ingredient of the Simplifying recipe cost per epoch, against the plain recipe?

Trains the demo task (digits, 8 vs rest, beta = 50; small CNN) once per ingredient and per round, the
ingredients interleaved round by round so that every one sees the same machine load, and reports the
seconds per epoch (epochs 2..E, so start-up and the final evaluation are left out) and the ratio to the plain
run of the same round (median over rounds), in this process's CPU time (robust to other jobs on the same
cores) and in wall time. One thread, CPU.

    python benchmarks/simplifying_cost.py [--rounds 3] [--epochs 4] [--width 32]

Writes benchmarks/results/simplifying_cost_cpu.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from lossdial.config import load_config  # noqa: E402
from lossdial.rundir import RunDir  # noqa: E402
from lossdial.train import train  # noqa: E402

SAM = ["optim.sam.rho=0.05"]
SSL = ["ssl.weight=1.0"]
INGREDIENTS = {
    "plain": [],
    "SAM (rho 0.05)": SAM,
    "ASAM (rho 0.5, adaptive)": ["optim.sam.rho=0.5", "optim.sam.adaptive=true"],
    "SAM-A (asymmetric, k 1)": SAM + ["optim.sam.mode=asymmetric"],
    "ImbSAM (groups, rho_maj 0)": SAM + ["optim.sam.mode=groups"],
    "SAM groups (rho_maj 0.02)": SAM + ["optim.sam.mode=groups", "optim.sam.rho_maj=0.02"],
    "Joint-SSL (mu 1)": SSL,
    "class-conditional smoothing (a_max 0.2)": ["loss.smoothing={a_max: 0.2}"],
    "SAM-A + Joint-SSL + smoothing": SAM + ["optim.sam.mode=asymmetric"] + SSL + ["loss.smoothing={a_max: 0.2}"],
}


def epoch_seconds(run: Path) -> float:
    """Wall seconds per epoch over epochs 2..E from the run's epoch records (cumulative ``seconds``)."""
    recs = [r for r in RunDir(run).read_log() if r.get("event") == "epoch"]
    return (recs[-1]["seconds"] - recs[0]["seconds"]) / (len(recs) - 1)


class CPUClock:
    """A training callback that notes this process's CPU time at each epoch end (not disturbed by other jobs
    waiting for the same cores, unlike wall time)."""

    def __init__(self):
        self.marks: list[float] = []

    def on_start(self, total_steps, start_step):
        pass

    def on_step(self, step):
        pass

    def on_epoch_end(self, epoch, record):
        self.marks.append(time.process_time())

    def per_epoch(self) -> float:
        return (self.marks[-1] - self.marks[0]) / (len(self.marks) - 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--width", type=int, default=32, help="small_cnn width")
    ap.add_argument("--config", default=str(ROOT / "configs" / "demo_digits.yaml"))
    args = ap.parse_args()
    if args.epochs < 2:
        ap.error("--epochs must be >= 2 (the first epoch is left out)")
    torch.set_num_threads(1)
    base = [f"train.epochs={args.epochs}", "train.eval_every=0", f"model.backbone_kwargs.width={args.width}",
            "lct.enabled=false"]
    per = {name: [] for name in INGREDIENTS}  # wall seconds per epoch
    cpu = {name: [] for name in INGREDIENTS}  # CPU seconds per epoch
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for k, (name, ov) in enumerate(INGREDIENTS.items()):
                out = Path(tmp) / f"{r}-{k}"
                clock = CPUClock()
                train(load_config(args.config, base + ov), out, device="cpu", callback=clock)
                per[name].append(epoch_seconds(out))
                cpu[name].append(clock.per_epoch())
    ratios = {name: statistics.median(s / p for s, p in zip(per[name], per["plain"])) for name in INGREDIENTS}
    cpu_ratios = {name: statistics.median(s / p for s, p in zip(cpu[name], cpu["plain"])) for name in INGREDIENTS}
    cfg = load_config(args.config, base)
    machine = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "platform": platform.platform(),
               "processor": platform.processor() or platform.machine(), "python": platform.python_version(),
               "torch": torch.__version__, "threads": torch.get_num_threads(), "device": "cpu"}
    setup = {"config": str(Path(args.config).relative_to(ROOT)) if Path(args.config).is_relative_to(ROOT)
             else args.config, "overrides": base, "batch_size": cfg.train.batch_size,
             "augment": cfg.train.augment, "rounds": args.rounds, "epochs": args.epochs}
    lines = [f"# Per-epoch cost of the Simplifying ingredients (CPU; {machine['date']})", "",
             f"Demo task (digits 8 vs rest, beta 50), small_cnn width {args.width}, batch {cfg.train.batch_size}, "
             f"augment {cfg.train.augment}, baseline VS loss (no LCT); {args.epochs} epochs per run, seconds per "
             f"epoch over epochs 2..{args.epochs}; {args.rounds} rounds, ingredients interleaved within each round; "
             f"ratio = median over rounds of (ingredient / plain of the same round). Total {time.time() - t0:.0f} s.",
             "", f"Machine: {machine['processor']}, {machine['platform']}, Python {machine['python']}, "
                 f"torch {machine['torch']}, {machine['threads']} thread.", "",
             "| ingredient | CPU s / epoch (median) | x plain (CPU) | wall s / epoch (median) | x plain (wall) |",
             "|---|---:|---:|---:|---:|"]
    for name in INGREDIENTS:
        lines.append(f"| {name} | {statistics.median(cpu[name]):.3f} | {cpu_ratios[name]:.2f} | "
                     f"{statistics.median(per[name]):.3f} | {ratios[name]:.2f} |")
    lines += ["", "x plain: median over rounds of (ingredient / plain of the same round). CPU time is this process's "
                  "(one thread), so it measures the work of each ingredient even when other jobs share the cores; "
                  "wall time on a shared machine also counts the waiting, and varies from round to round."]
    text = "\n".join(lines) + "\n"
    print(text)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "simplifying_cost_cpu.md").write_text(text)
    (out / "simplifying_cost_cpu.json").write_text(json.dumps(
        {"machine": machine, "setup": setup, "ingredients": INGREDIENTS, "cpu_seconds_per_epoch": cpu,
         "cpu_ratio_to_plain": cpu_ratios, "wall_seconds_per_epoch": per, "wall_ratio_to_plain": ratios},
        indent=2) + "\n")


if __name__ == "__main__":
    main()
