"""Probe: where SAM's perturbation lands in an LCT model, and what it does to the loss, per lambda.

For a finished LCT run (its final weights, BatchNorm in train mode as in a training step, the training split,
batches of --batch-size drawn with a fixed seed, no augmentation), at each lambda of the run's evaluate.lambda
grid:

- share of ||g||^2 on the FiLM generator, the backbone and the head (g = grad of the training loss at lambda);
  a large FiLM share means e = rho g / ||g|| spends most of its radius on the FiLM MLPs;
- the loss rise L(w + e) - L(w) with e over all parameters, and with e restricted to the non-FiLM parameters
  (same rho, renormalised on that subset);
- the cosine between the ascent directions g(lambda) and g(lambda') at the two ends of the grid (how much the
  perturbation depends on lambda).

    python benchmarks/sam_lct_probe.py RUN [RUN ...] [--rho 0.05] [--batches 8]

Prints one table per run (mean over the batches). Diagnostic only; nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lossdial.evaluate.run import load_run  # noqa: E402
from lossdial.optim.sam import perturbation  # noqa: E402
from lossdial.train.factory import build_loss_fn  # noqa: E402
from lossdial.train.loop import default_eval_grid  # noqa: E402


def group(name: str) -> str:
    if name.startswith("film."):
        return "film"
    if name.startswith("backbone.") or name.startswith("features."):
        return "backbone"
    return "head"


def probe(run: str, rho: float, batches: int, batch_size: int) -> None:
    loaded = load_run(run)
    if not loaded.is_lct:
        print(f"{run}: not an LCT run; skipped")
        return
    model, space, cfg = loaded.model, loaded.space, loaded.config
    task = loaded.task()
    loss_fn = build_loss_fn(cfg, task.class_counts)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    groups = [group(n) for n, _ in named]
    x, y = task.train.x, task.train.y
    pos = torch.nonzero(y == 1).flatten()
    neg = torch.nonzero(y == 0).flatten()
    lams = default_eval_grid(cfg, space)
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}  # BN running stats restored after
    print(f"\n{run}  (rho = {rho}; {batches} batches of {batch_size}, each with >= 1 positive)")
    print("lambda | share film | backbone | head | dL (all) | dL (no film) | L(w)")
    first_last = []
    for lam in lams:
        acc = {"film": 0.0, "backbone": 0.0, "head": 0.0, "dl_all": 0.0, "dl_nofilm": 0.0, "l": 0.0}
        gsum = None
        g_local = torch.Generator().manual_seed(0)
        for _ in range(batches):
            idx = torch.cat([pos[torch.randint(len(pos), (1,), generator=g_local)],
                             neg[torch.randint(len(neg), (batch_size - 1,), generator=g_local)]])
            xb = x[idx].float()
            xb = task.normalizer(xb) if task.normalizer is not None else xb
            yb = y[idx]
            lam_t = {k: torch.full((len(yb),), float(v)) for k, v in lam.items()}
            z = space.encode(lam_t, batch_size=len(yb))

            def loss_at() -> torch.Tensor:
                return loss_fn(model(xb, z), yb, lam=lam_t)

            loss = loss_at()
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            sq = {"film": 0.0, "backbone": 0.0, "head": 0.0}
            for g, grp in zip(grads, groups):
                if g is not None:
                    sq[grp] += float(g.pow(2).sum())
            tot = sum(sq.values()) or 1.0
            for k in sq:
                acc[k] += sq[k] / tot
            flat = torch.cat([g.flatten() if g is not None else torch.zeros(p.numel())
                              for g, p in zip(grads, params)])
            gsum = flat if gsum is None else gsum + flat
            for key, keep in (("dl_all", lambda grp: True), ("dl_nofilm", lambda grp: grp != "film")):
                sub = [g if keep(grp) else None for g, grp in zip(grads, groups)]
                e = perturbation(params, sub, rho)
                saved = [p.detach().clone() for p in params]
                with torch.no_grad():
                    for p, d in zip(params, e):
                        if d is not None:
                            p.add_(d)
                    acc[key] += float(loss_at()) - float(loss.detach())
                    for p, s in zip(params, saved):
                        p.copy_(s)
            acc["l"] += float(loss.detach())
        first_last.append(gsum)
        name = ", ".join(f"{k}={v:g}" for k, v in lam.items())
        print(f"{name} | {acc['film'] / batches:.3f} | {acc['backbone'] / batches:.3f} | {acc['head'] / batches:.3f}"
              f" | {acc['dl_all'] / batches:.4f} | {acc['dl_nofilm'] / batches:.4f} | {acc['l'] / batches:.4f}")
    cos = torch.nn.functional.cosine_similarity(first_last[0], first_last[-1], dim=0)
    print(f"cosine between the summed gradients at the two ends of the grid: {float(cos):.3f}")
    model.load_state_dict(state)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--rho", type=float, default=0.05)
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(1)
    for run in args.runs:
        probe(run, args.rho, args.batches, args.batch_size)


if __name__ == "__main__":
    main()
