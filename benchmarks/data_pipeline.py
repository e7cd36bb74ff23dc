"""Benchmark: the CIFAR-10 data path -- archive decode, cached load, task build, batch augmentation, one epoch.

    python benchmarks/data_pipeline.py [--archive PATH] [--device cpu|cuda] [--no-epoch]

1. First load of the CIFAR-10 JPEG archive into a fresh temporary cache (sha256 check, read the gzip stream,
   decode 60,000 JPEGs, write x.npy/y.npy), then the cached load (median of 5).
2. ``build_task`` for configs/cifar10_cat_dog_beta100.yaml from the warm cache (counts both val_from modes).
3. Batched on-device augmentation of a 128 x 3 x 32 x 32 uint8 batch per mode (median of 20), against
   torchvision's TrivialAugmentWide applied image by image in a Python loop (the DataLoader-style path).
4. One training epoch of ResNet-32 (LCT, VS loss) on cat/dog beta = 100 (4545 images, 36 steps) via
   ``lossdial.train.train`` (skip with --no-epoch).

Writes benchmarks/results/data_pipeline_<device>.{md,json}.
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

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lossdial.config import load_config  # noqa: E402
from lossdial.data import augment_batch, build_task  # noqa: E402
from lossdial.data.cifar_jpeg import find_archive, load_cifar10_jpeg  # noqa: E402
from lossdial.data.loader import make_generator  # noqa: E402

CONFIG = ROOT / "configs" / "cifar10_cat_dog_beta100.yaml"


def _median_time(fn, repeats: int, sync=lambda: None) -> float:
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--archive", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-epoch", action="store_true")
    args = ap.parse_args()
    dev = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    archive = find_archive(args.archive)
    if archive is None:
        sys.exit("the CIFAR-10 JPEG archive was not found (give --archive or set $LOSSDIAL_CIFAR10_JPEG)")
    res: dict = {"device": str(dev), "torch": torch.__version__, "python": platform.python_version(),
                 "threads": torch.get_num_threads(), "archive": str(archive)}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        pool = load_cifar10_jpeg(archive, cache_dir=tmp)
        res["first_load_s"] = time.perf_counter() - t0
        res["first_load_parts"] = {k: pool.meta.get(k) for k in ("build_seconds",)}
        meta = json.loads((Path(pool.meta["cache"]) / "meta.json").read_text())
        res["first_load_parts"].update({"read_s": meta["read_seconds"], "decode_s": meta["decode_seconds"]})
        res["cached_load_s"] = _median_time(lambda: load_cifar10_jpeg(archive, cache_dir=tmp), 5)
        counts = {}
        for vf in ("train", "test"):
            cfg = load_config(CONFIG, [f"data.cache_dir={tmp}", f"data.archive={archive}", f"data.val_from={vf}"])
            t0 = time.perf_counter()
            task = build_task(cfg.data)
            counts[vf] = {"seconds": time.perf_counter() - t0, **task.describe()["counts"]}
        res["cat_dog_beta100"] = counts
        x = task.train.x[:128].to(dev)

    aug = {}
    for mode in ("crop_flip", "trivial", "crop_flip_trivial"):
        g = make_generator(0)
        aug[mode] = _median_time(lambda: augment_batch(x, mode, g, 4), 20, sync)
    from torchvision.transforms.v2 import TrivialAugmentWide

    ta = TrivialAugmentWide()
    xc = x.cpu()
    aug["torchvision_trivial_per_image_loop_cpu"] = _median_time(lambda: torch.stack([ta(im) for im in xc]), 5)
    res["augment_batch128_s"] = aug

    if not args.no_epoch:
        from lossdial.train import train

        with tempfile.TemporaryDirectory() as tmp:
            cfg = load_config(CONFIG, ["train.epochs=1", f"train.device={args.device}"])
            r = train(cfg, Path(tmp) / "run", device=args.device)
            log = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
            res["epoch_resnet32_cat_dog_beta100_s"] = next(e["seconds"] for e in log if e["event"] == "epoch")
            res["train_total_s"] = r.seconds

    out = ROOT / "benchmarks" / "results" / f"data_pipeline_{dev.type}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    c = res["cat_dog_beta100"]
    lines = [
        f"# CIFAR-10 data path ({time.strftime('%Y-%m-%d')}, {dev.type}, torch {res['torch']}, "
        f"{res['threads']} threads)", "",
        "| step | time |", "|---|---:|",
        f"| archive first load (sha256 + read gzip stream {meta['read_seconds']:.1f} s + decode 60k JPEGs "
        f"{meta['decode_seconds']:.1f} s + write cache) | {res['first_load_s']:.2f} s |",
        f"| cached load (x.npy 184 MB + y.npy, sha256 of the archive) | {res['cached_load_s']:.3f} s |",
        f"| build_task cat/dog beta 100, val_from train: train {c['train']['train']}, val {c['train']['val']}, "
        f"test {c['train']['test']} | {c['train']['seconds']:.2f} s |",
        f"| build_task cat/dog beta 100, val_from test: train {c['test']['train']}, val {c['test']['val']}, "
        f"test {c['test']['test']} | {c['test']['seconds']:.2f} s |",
    ]
    for mode, s in aug.items():
        lines.append(f"| augment 128 x 3 x 32 x 32 uint8, {mode} | {s * 1e3:.1f} ms |")
    if "epoch_resnet32_cat_dog_beta100_s" in res:
        lines.append(f"| one epoch, ResNet-32 LCT, cat/dog beta 100 (4545 images, 36 steps of 128) | "
                     f"{res['epoch_resnet32_cat_dog_beta100_s']:.1f} s |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
