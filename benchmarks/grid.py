"""Benchmark: a grid of N ResNet-32 runs trained as one stacked model vs the same N runs one after another.

The issue's target: on one GPU, N = 16 stacked runs reach >= 4x the total images/s of running them
sequentially (a batch-128 ResNet-32 step is too small to fill a GPU; a stack of 16 is not).

    python benchmarks/grid.py [--device cpu|cuda] [--n 1 2 4] [--steps 3] [--repeats 3] [--quick] [--lct]
    python benchmarks/grid.py --device cuda --n 1 4 8 16 32

Training steps exactly as `lossdial train` runs them (augmentation with train.random_erasing included; a config
with optim.sam or ssl is refused: neither step here runs them), on the CIFAR-10 cat/dog beta=100 training split of
configs/cifar10_cat_dog_beta100.yaml (ResNet-32, batch 128, crop + flip on the device, grad clip 0.5, EMA
0.99, SGD with momentum; bf16 autocast on CUDA as the config's train.amp says). Member n has seed n and
loss.params.tau from a small grid (baseline runs; --lct trains LCT members with FiLM instead).

For each N, two ways to run K training steps of all N members are timed, interleaved in one process
(sequential block, stacked block, repeated; medians):
- sequential: N independent single-model runs, each doing one step in turn (the loop body of
  lossdial.train.loop: augment, normalise, forward, loss, backward, clip, SGD, schedule, EMA);
- stacked: one lossdial.train.stacked.StackedTrainer step of all N members (torch.func.vmap over the
  stacked weights).
Throughput is total training images per second (K * N * 128 / seconds). Peak memory: on CUDA
torch.cuda.max_memory_allocated during each mode's blocks (it includes the small persistent state of both
set-ups, about 8 MB per member); on the CPU the process's peak RSS so far (resource.getrusage; it only grows,
so read it per N in ascending N). Writes benchmarks/results/grid_<device>.md.
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lossdial.config import load_config  # noqa: E402
from lossdial.data.loader import TensorLoader, augment_batch, derive_seed, make_generator, to_device  # noqa: E402
from lossdial.data.task import build_task  # noqa: E402
from lossdial.train.ema import EMA  # noqa: E402
from lossdial.train.factory import (  # noqa: E402
    build_lambda_space,
    build_loss_fn,
    build_model_from_config,
    build_optimizer,
    build_scheduler,
)
from lossdial.train.stacked import StackedTrainer  # noqa: E402

TAUS = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0)


class SingleRun:
    """One ordinary run's training step, as lossdial.train.loop._train does it (no logging)."""

    def __init__(self, cfg, task, space, dev, steps_per_epoch):
        self.cfg, self.task, self.space, self.dev = cfg, task, space, dev
        self.model = build_model_from_config(cfg, task.input_shape, space.dim if space else 0).to(dev)
        self.model.train()
        self.loss_fn = build_loss_fn(cfg, task.class_counts).to(dev)
        self.optimizer = build_optimizer(cfg, self.model)
        self.scheduler = build_scheduler(cfg, self.optimizer, steps_per_epoch)
        self.ema = EMA(self.model, cfg.train.ema_decay) if cfg.train.ema_decay is not None else None
        self.lam_gen = make_generator(cfg.seed, 0x1A3B)
        self.aug_gen = make_generator(cfg.seed, 0xA06E)
        self.amp = cfg.train.amp and dev.type == "cuda"
        self.params = [p for p in self.model.parameters() if p.requires_grad]

    def step(self, xb, yb):
        tc = self.cfg.train
        xb = self.task.normalizer(augment_batch(xb, tc.augment, self.aug_gen, tc.crop_padding, tc.random_erasing))
        if self.space is not None:
            lam_cpu = self.space.sample(len(yb), self.lam_gen)
            z = to_device(self.space.encode(lam_cpu, batch_size=len(yb)), self.dev)
            lam = {k: to_device(v, self.dev) for k, v in lam_cpu.items()}
        else:
            lam, z = None, None
        with torch.autocast(device_type=self.dev.type, dtype=torch.bfloat16, enabled=self.amp):
            logits = self.model(xb, z)
        loss = self.loss_fn(logits.float(), yb, lam=lam)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if tc.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, tc.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return loss.detach()


class Batches:
    """Endless batches of one member's TensorLoader (its own seed), epoch after epoch."""

    def __init__(self, x, y, cfg):
        self.loader = TensorLoader(x, y, cfg.train.batch_size, shuffle=True, seed=derive_seed(cfg.seed, 0x5FF1),
                                   drop_last=True)
        self.epoch, self.it = 0, iter(self.loader.batches(0))

    def __next__(self):
        try:
            return next(self.it)
        except StopIteration:
            self.epoch += 1
            self.it = iter(self.loader.batches(self.epoch))
            return next(self.it)


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--n", type=int, nargs="+", default=None, help="stack sizes (default: 1 2 4 on CPU, "
                    "1 4 8 16 on CUDA)")
    ap.add_argument("--steps", type=int, default=None, help="K steps per timed block (default 3 CPU, 20 CUDA)")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 3 CPU, 5 CUDA)")
    ap.add_argument("--quick", action="store_true", help="K=1, 2 repeats (a smoke run)")
    ap.add_argument("--lct", action="store_true", help="LCT members (FiLM, tau ~ L(0,3,0.33)) instead of baselines")
    ap.add_argument("--config", default=str(ROOT / "configs" / "cifar10_cat_dog_beta100.yaml"))
    ap.add_argument("--out", default=None, help="results file (default benchmarks/results/grid_<device>.md)")
    args = ap.parse_args()
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    ns = args.n or ([1, 4, 8, 16] if cuda else [1, 2, 4])
    k_steps = 1 if args.quick else (args.steps or (20 if cuda else 3))
    repeats = 2 if args.quick else (args.repeats or (5 if cuda else 3))

    base_ov = ["train.batch_size=128", "train.augment=crop_flip", "train.ema_decay=0.99", "train.loader=device",
               "train.channels_last=false",  # both modes in the default layout (stacks refuse channels-last)
               f"lct.enabled={str(args.lct).lower()}"]
    cfg0 = load_config(args.config, base_ov)
    # the sequential step here is the plain loop body (no SAM passes, no second SSL view), as the stacked one is:
    # a config that asks for either would be timed as something it is not
    unsupported = [name for name, on in (("optim.sam (sharpness-aware minimisation)", cfg0.optim.sam.enabled),
                                         ("ssl (the Joint-SSL second view and projector)", cfg0.ssl.enabled)) if on]
    if unsupported:
        sys.exit(f"benchmarks/grid.py: {args.config} sets {' and '.join(unsupported)}, which this benchmark's step "
                 f"does not run (nor does the stacked trainer); remove it from the config (or time those runs with "
                 f"lossdial train)")
    t = time.perf_counter()
    task = build_task(cfg0.data)
    what = f"{Path(args.config).name} training split ({len(task.train.y)} images, {task.class_counts})"
    print(f"data: {what} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    x_dev, y_dev = task.train.x.to(dev), task.train.y.to(dev)
    b = cfg0.train.batch_size
    steps_per_epoch = len(task.train.y) // b

    rows = []
    for n in ns:
        cfgs = [load_config(args.config, base_ov + [f"seed={i}", f"loss.params.tau={TAUS[i % len(TAUS)]}"])
                for i in range(n)]
        spaces = [build_lambda_space(c) for c in cfgs]
        singles = [SingleRun(c, task, s, dev, steps_per_epoch) for c, s in zip(cfgs, spaces)]
        stack = StackedTrainer(cfgs, task, spaces, dev, steps_per_epoch)
        seq_batches = [Batches(x_dev, y_dev, c) for c in cfgs]
        stk_batches = [Batches(x_dev, y_dev, c) for c in cfgs]

        def seq_block(k):
            for _ in range(k):
                for run, bt in zip(singles, seq_batches):
                    run.step(*next(bt))

        def stk_block(k):
            for _ in range(k):
                stack.step([next(bt) for bt in stk_batches])

        def timed(fn, k):
            sync(dev)
            if cuda:
                torch.cuda.reset_peak_memory_stats(dev)
            t0 = time.perf_counter()
            fn(k)
            sync(dev)
            sec = time.perf_counter() - t0
            return sec, (torch.cuda.max_memory_allocated(dev) / 2**20 if cuda else 0.0)

        timed(seq_block, 1), timed(stk_block, 1)  # warm-up (allocator, cuDNN / kernel selection)
        t_seq, t_stk, m_seq, m_stk = [], [], [], []
        for _ in range(repeats):
            s, m = timed(seq_block, k_steps)
            t_seq.append(s)
            m_seq.append(m)
            s, m = timed(stk_block, k_steps)
            t_stk.append(s)
            m_stk.append(m)
        images = k_steps * n * b
        ips_seq, ips_stk = images / statistics.median(t_seq), images / statistics.median(t_stk)
        row = {"n": n, "seq": ips_seq, "stk": ips_stk, "ratio": ips_stk / ips_seq,
               "mem_seq": max(m_seq), "mem_stk": max(m_stk), "rss": peak_rss_mib()}
        rows.append(row)
        print(f"N={n}: sequential {ips_seq:.1f} img/s, stacked {ips_stk:.1f} img/s, ratio {row['ratio']:.2f}",
              file=sys.stderr)
        del singles, stack

    dev_name = torch.cuda.get_device_name(dev) if cuda else (platform.processor() or platform.machine())
    date = time.strftime("%Y-%m-%d %H:%M")
    members = "LCT (FiLM, tau~L(0,3,0.33))" if args.lct else "baseline (VS loss, tau grid)"
    lines = [f"# Grid benchmark: N stacked runs vs N sequential runs ({date})", "",
             f"- machine: {platform.platform()}, {platform.machine()}, {_cpu_count()} CPUs; device: {dev} "
             f"({dev_name}); torch {torch.__version__}, {torch.get_num_threads()} threads, python "
             f"{platform.python_version()}",
             f"- ResNet-32, {members} members (seed n), batch {b}, crop+flip on the device, grad clip "
             f"{cfg0.train.grad_clip}, EMA {cfg0.train.ema_decay}, SGD momentum"
             f"{', bf16 autocast' if cuda and cfg0.train.amp else ''}; data: {what}",
             f"- K = {k_steps} steps of all N members per timed block; median of {repeats} interleaved "
             f"repeats (sequential block, stacked block, ...) after one warm-up block each",
             ""]
    if cuda:
        lines += ["| N | images/s sequential | images/s stacked | ratio | peak MiB sequential | peak MiB stacked |",
                  "|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['n']} | {r['seq']:.0f} | {r['stk']:.0f} | {r['ratio']:.2f}x | {r['mem_seq']:.0f} | "
                  f"{r['mem_stk']:.0f} |" for r in rows]
        lines += ["", "Peak memory: torch.cuda.max_memory_allocated during each mode's timed blocks."]
    else:
        lines += ["| N | images/s sequential | images/s stacked | ratio | peak RSS MiB (process) |",
                  "|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['n']} | {r['seq']:.1f} | {r['stk']:.1f} | {r['ratio']:.2f}x | {r['rss']:.0f} |"
                  for r in rows]
        lines += ["", "Peak RSS: the whole process's peak so far (both modes, data included), read after each N."]
    big = [r for r in rows if r["n"] == 16]
    if cuda and big:
        lines += ["", f"Target >= 4x at N = 16: {'met' if big[0]['ratio'] >= 4 else 'NOT met'} "
                      f"({big[0]['ratio']:.2f}x)."]
    elif not cuda:
        lines += ["", "The >= 4x target (N = 16) is a GPU target; a CPU is already busy with one batch-128 "
                      "ResNet-32, so no speed-up is expected here. No GPU numbers are claimed in this file."]
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"grid_{dev.type}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


def _cpu_count() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


if __name__ == "__main__":
    main()
