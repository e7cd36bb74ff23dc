"""Benchmark: the "Simplifying" ablation (Shwartz-Ziv et al., NeurIPS 2023) over seeds, through `compare --variant`.

Rows (each ingredient added to plain cross-entropy alone, then all of them, then all of them + LCT):

    base          plain CE: VS with gamma = 0, tau = 0, no class weights (= cross-entropy), LCT off
    small_batch   batch 32 with the lr scaled linearly (0.1 x 32/128; the config's batch 128)
    strong_aug    crop + flip + AutoAugment (CIFAR-10 policy) + Random Erasing p = 0.25
    sam           SAM, rho = 0.05 (Foret et al.)
    sam_a         SAM-A: the authors' asymmetric ascent (optim.sam.mode=asymmetric)
    joint_ssl     Joint-SSL: NT-Xent on two views, weight ssl.weight
    cc_smoothing  class-conditional label smoothing (stronger for rarer classes)
    combined      all of the above (SAM-A for SAM)
    combined_lct  combined + LCT over VS's tau ~ L(0, 3, 0.33) (the config's law)

Full run (a GPU): configs/cifar10_lt_exp100.yaml (CIFAR-10-LT ratio 100, ResNet-32, 200 epochs), 3 seeds:

    python benchmarks/simplifying_ablation.py --device cuda
    -> benchmarks/results/simplifying_ablation_full.md (+ the compare folder's compare.json/.csv/.md)

Quick CPU version, reported as such: the packaged digits long-tail demo (src/lossdial/configs/
demo_digits_lt.yaml: ten digits, ratio 20, small CNN), fewer epochs, 2 seeds; digits are not mirrored, so
strong_aug is crop + AutoAugment (crop_autoaugment), and the small batch is 16 against the demo's 64:

    python benchmarks/simplifying_ablation.py --quick [--only base,small_batch,strong_aug]
    -> benchmarks/results/simplifying_ablation_quick.md

--only runs a subset of the rows (base is always a row); --print-command prints the `lossdial compare`
command and exits. The keys of the ingredients: optim.sam.rho, optim.sam.mode, ssl.weight and loss.smoothing
(docs/SIMPLIFYING.md); --smoothing replaces the smoothing overrides.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# The plain-CE base: VS with gamma = 0 and tau = 0 and no class weights is exactly cross-entropy; LCT off.
PLAIN_CE = ["lct.enabled=false", "loss.family=vs", "loss.params={gamma: 0.0, tau: 0.0, class_weights: none}"]
SAM = ["optim.sam.rho=0.05"]
SAM_A = ["optim.sam.rho=0.05", "optim.sam.mode=asymmetric"]
JOINT_SSL = ["ssl.weight=0.5", "ssl.temperature=0.5"]  # mu = 0.5 (our choice); t = 0.5 as the authors' SSL code
# a_c from a_max = 0.3 at the rarest class to a_min = 0 at the most frequent, in log-count (docs/SIMPLIFYING.md)
CC_SMOOTHING = ["loss.smoothing={a_max: 0.3, a_min: 0.0}"]

SETTINGS = {
    "full": {"config": "configs/cifar10_lt_exp100.yaml", "seeds": 3, "extra": [],
             "small_batch": ["train.batch_size=32", "optim.lr=0.025"],
             "strong_aug": ["train.augment=crop_flip_autoaugment", "train.random_erasing=0.25"],
             "what": "CIFAR-10-LT ratio 100, ResNet-32, 200 epochs (configs/cifar10_lt_exp100.yaml), "
                     "3 seeds"},
    "quick": {"config": "src/lossdial/configs/demo_digits_lt.yaml", "seeds": 2,
              "extra": ["train.epochs=20", "train.eval_every=0", "schedule.warmup_epochs=1"],
              "small_batch": ["train.batch_size=16", "optim.lr=0.0125"],
              "strong_aug": ["train.augment=crop_autoaugment", "train.random_erasing=0.25"],
              "what": "QUICK CPU VERSION: the digits long-tail demo (demo_digits_lt.yaml: 10 digits, ratio 20, "
                      "small CNN), 20 epochs, 2 seeds; not the CIFAR-10-LT measurement"},
}


def variants(mode: str, smoothing: list[str]) -> dict[str, list[str]]:
    s = SETTINGS[mode]
    combined = s["small_batch"] + s["strong_aug"] + SAM_A + JOINT_SSL + smoothing
    return {
        "small_batch": s["small_batch"],
        "strong_aug": s["strong_aug"],
        "sam": SAM,
        "sam_a": SAM_A,
        "joint_ssl": JOINT_SSL,
        "cc_smoothing": smoothing,
        "combined": combined,
        # LCT over VS's tau: the config's own lct.lambda (tau ~ L(0,3,0.33) for CIFAR-10-LT, U(0,2) for the demo)
        "combined_lct": combined + ["lct.enabled=true"],
    }


def command(mode: str, rows: dict[str, list[str]], seeds: int, out: Path, device: str | None,
            jobs: int) -> list[str]:
    s = SETTINGS[mode]
    cmd = ["lossdial", "compare", s["config"], "--seeds", str(seeds), "--out", str(out), "-q"]
    for ov in PLAIN_CE + s["extra"]:
        cmd += ["--set", ov]
    for name, ovs in rows.items():
        cmd += ["--variant", f"{name}={','.join(ovs)}"]
    if device:
        cmd += ["--device", device]
    if jobs > 1:
        cmd += ["--jobs", str(jobs)]
    return cmd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="the CPU version on the digits long-tail demo")
    ap.add_argument("--only", default=None, help="comma-separated rows to run (base is always one)")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="compare folder (default /tmp/simplifying_ablation_MODE)")
    ap.add_argument("--smoothing", default=None, help="the class-conditional smoothing overrides, comma-separated "
                    "as in --variant (replaces the placeholder)")
    ap.add_argument("--print-command", action="store_true")
    args = ap.parse_args()

    mode = "quick" if args.quick else "full"
    smoothing = CC_SMOOTHING
    if args.smoothing:
        sys.path.insert(0, str(ROOT / "src"))
        from lossdial.config import split_overrides

        smoothing = split_overrides(args.smoothing)
    rows = variants(mode, smoothing)
    if args.only:
        want = [r.strip() for r in args.only.split(",") if r.strip() and r.strip() != "base"]
        unknown = [r for r in want if r not in rows]
        if unknown:
            ap.error(f"--only: unknown rows {unknown}; choose from {['base', *rows]}")
        rows = {k: v for k, v in rows.items() if k in want}
    seeds = args.seeds or SETTINGS[mode]["seeds"]
    out = args.out or Path(f"/tmp/simplifying_ablation_{mode}")
    cmd = command(mode, rows, seeds, out, args.device, args.jobs)
    shown = " ".join(shlex.quote(c) for c in cmd)
    if args.print_command:
        print(shown)
        return
    t0 = time.perf_counter()
    env_cmd = [sys.executable, "-m", "lossdial", *cmd[1:]]
    proc = subprocess.run(env_cmd, cwd=ROOT, env={**__import__("os").environ,
                                                  "PYTHONPATH": str(ROOT / "src")})
    if proc.returncode != 0:
        sys.exit(proc.returncode)
    wall = time.perf_counter() - t0
    import torch

    partial = sorted(set(variants(mode, smoothing)) - set(rows))
    lines = [f"# Simplifying ablation ({mode}) ({time.strftime('%Y-%m-%d %H:%M')})", "",
             f"- setting: {SETTINGS[mode]['what']}",
             f"- machine: {platform.platform()}, {platform.machine()}, torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads; device: {args.device or 'the config train.device (auto)'}",
             f"- base = plain cross-entropy: {', '.join(PLAIN_CE)}",
             f"- wall time of the whole compare: {wall:.0f} s; `train s` in the table is each row's training "
             f"time summed over its seeds (wall clock: on a shared machine it includes other jobs' load, so it is "
             f"not a per-ingredient cost measurement)",
             "- command (from the repository root, `lossdial` = `python -m lossdial` with src on the path):", "",
             "```", shown, "```", ""]
    if partial:
        lines += [f"PARTIAL TABLE: rows not run here: {', '.join(partial)} (their keys are not on this branch, or "
                  f"left out with --only).", ""]
    md = (out / "compare.md").read_text()
    lines += ["## compare.md", "", md.split("\n", 2)[2] if md.startswith("# ") else md]
    RESULTS.mkdir(parents=True, exist_ok=True)
    dest = RESULTS / f"simplifying_ablation_{mode}.md"
    dest.write_text("\n".join(lines))
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
