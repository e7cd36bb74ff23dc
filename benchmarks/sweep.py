"""Benchmark: a K-lambda sweep against a single-lambda evaluation of the same split (scoring only).

The LCT design puts FiLM after the backbone, so K lambda values cost one backbone pass plus K head
passes. Target: the 64-lambda sweep takes <= 1.5x the time of one single-lambda evaluation.

    python benchmarks/sweep.py [--device cpu|cuda] [--k 64] [--repeats 5] [--config configs/cifar10_cat_dog_beta100.yaml]

Uses ResNet-32 with FiLM (identity start, random init: weights do not change the cost) on the CIFAR-10
cat/dog test split (2000 images) when the config's data can be built, else on 2000 random 3x32x32 uint8
images of the same shape (stated in the output). Timings are medians over repeats, measured side by side
in one process; metric computation is excluded. Writes benchmarks/results/sweep_<device>.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lossdial.conditioning import LambdaSpace, parse_lambda_grid, parse_lct  # noqa: E402
from lossdial.data.task import Normalizer  # noqa: E402
from lossdial.evaluate.scoring import score_lambdas  # noqa: E402
from lossdial.models import build_model  # noqa: E402


def load_split(config: str | None):
    if config:
        try:
            from lossdial.config import load_config
            from lossdial.data import build_task

            task = build_task(load_config(config).data)
            return task.test.x, task.normalizer, f"{config} test split"
        except Exception as exc:  # noqa: BLE001 - fall back to synthetic data of the same shape
            print(f"(could not build {config}: {exc}; using synthetic images)", file=sys.stderr)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (2000, 3, 32, 32), dtype=torch.uint8, generator=g)
    return x, Normalizer([127.5] * 3, [64.0] * 3, "image"), "2000 synthetic 3x32x32 uint8 images"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--config", default=str(ROOT / "configs" / "cifar10_cat_dog_beta100.yaml"))
    args = ap.parse_args()
    device = torch.device(args.device)
    x, norm, what = load_split(args.config if Path(args.config).exists() else None)
    space = LambdaSpace(parse_lct("tau~L(0,3,0.33)"))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model("resnet32", num_classes=2, lambda_dim=space.dim, film="identity").to(device).eval()
    grid = parse_lambda_grid(f"tau=0:3:{args.k}")
    one = [grid[len(grid) // 2]]

    def run(lams):
        sync(device)
        t = time.perf_counter()
        score_lambdas(model, x, lams, space, batch_size=args.batch_size, device=device, transform=norm)
        sync(device)
        return time.perf_counter() - t

    run(one), run(grid)  # warm-up
    t_one, t_many = [], []
    for _ in range(args.repeats):  # interleaved, so drift affects both alike
        t_one.append(run(one))
        t_many.append(run(grid))
    m1, mk = statistics.median(t_one), statistics.median(t_many)
    ratio = mk / m1
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "device": str(device), "device_name": dev_name,
              "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
              "data": what, "n": int(len(x)), "k": args.k, "repeats": args.repeats,
              "single_lambda_s": m1, "sweep_s": mk, "ratio": ratio, "target": 1.5, "meets_target": ratio <= 1.5}
    rows = [("single lambda (1 head pass)", m1, 1.0), (f"{args.k}-lambda sweep", mk, ratio)]
    lines = [f"# Sweep benchmark ({result['date']}, {device} {dev_name}, torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads)", "",
             f"ResNet-32 + FiLM, {what}; scoring only, median of {args.repeats} interleaved repeats.", "",
             "| scoring | seconds | ratio to single |", "|---|---:|---:|"]
    lines += [f"| {name} | {s:.3f} | {r:.3f} |" for name, s, r in rows]
    lines += ["", f"Target <= 1.5x: {'met' if ratio <= 1.5 else 'NOT met'} ({ratio:.3f}x)."]
    text = "\n".join(lines) + "\n"
    print(text)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"sweep_{device.type}.md").write_text(text)
    (out / f"sweep_{device.type}.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
