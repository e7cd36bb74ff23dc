"""Train N runs at once as one stacked model ("many small runs at once" on one device).

:func:`train_stacked` trains a grid of configurations that share everything but ``name``, ``seed``,
``loss.params`` and the LCT lambda distributions (same names, so the same lambda dimension): the N
networks' parameters and buffers are stacked along a new leading dimension with
:func:`torch.func.stack_module_state`, and one forward pass runs all of them with
:func:`torch.func.functional_call` under :func:`torch.vmap`, member ``n`` on its own batch ``x[n]`` with its
own encoded lambda ``z[n]``. On a GPU a stack of small models fills the device far better than one model
(a batch-128 ResNet-32 step is launch-bound); see ``benchmarks/grid.py``.

Each member reproduces what ``lossdial.train.train(cfg_n, out_n)`` does, step for step (tested weight for
weight against sequential runs on the CPU):

- the model is built by ``build_model_from_config(cfg_n, ...)`` (seeded by ``cfg_n.seed``) and the loss by
  ``build_loss_fn(cfg_n, ...)``; the data are built once (the data config is shared);
- member ``n`` draws its batches from its own :class:`~lossdial.data.loader.TensorLoader` (seed
  ``derive_seed(seed_n, 0x5FF1)``), its lambdas from ``make_generator(seed_n, 0x1A3B)`` and its augmentation
  from ``make_generator(seed_n, 0xA06E)``, through the same ``augment_batch`` and normalizer calls;
- the loss is the sum over members of each member's loss on its own logits, so every member's gradient is
  exactly its own loss's gradient (the members share no parameter);
- SGD / AdamW act element-wise, so one optimizer over the stacked tensors is N optimizers; the parameter
  groups (``optim.decay_norm_and_bias``, :func:`lossdial.train.factory.split_decay`) are decided on the
  *unstacked* shapes, and the LambdaLR schedule is the single run's (the schedules are equal by construction);
- gradient-norm clipping is per member, with ``torch.nn.utils.clip_grad_norm_``'s formula
  (``coef = min(1, max_norm / (||(||g_p||_2)_p||_2 + 1e-6))``);
- the EMA follows :class:`lossdial.train.ema.EMA` on the stacked tensors (the first update copies, then
  ``lerp`` by ``1 - decay``; integer buffers as ``a * decay + b * (1 - decay)`` truncated).

BatchNorm under vmap: the stacked buffers are passed to ``functional_call`` as batched inputs, so in train
mode each member's ``running_mean`` / ``running_var`` / ``num_batches_tracked`` is updated in place with its
own batch statistics (torch.func's batch-norm batching rule writes through to the stacked tensor; this is
tested against sequential runs). Nothing else is needed as long as every buffer is stacked, which
``stack_module_state`` guarantees; the failure mode documented in torch.func ("Patching Batch Norm") is an
*unbatched* running stat with a batched input, which cannot occur here.

Randomness inside the forward pass (dropout) would draw from the global RNG in a different order than N
sequential runs do, so models with dropout are refused and the vmap runs with ``randomness="error"``.

Scope: only the in-memory path (``train.loader`` device, or auto with in-memory data), one process (no
torchrun); binary and multi-class tasks alike. There is no checkpoint and no resume: a killed stack restarts
(``force=True``).
Each member's run directory is written exactly as a single run writes it (config.yaml, data.json,
splits.npz, lambda_space.json, metrics.jsonl with the start / epoch / final records, model.safetensors,
COMPLETE) except that there is no checkpoint.pt, so ``lossdial sweep / pick / evaluate`` read it as any
run. The COMPLETE marker's ``seconds`` is the member's share of the stack's time (stack time / N), so sums
over runs stay wall-clock sums; ``stack_seconds`` and ``stack_members`` record the whole stack.
"""

from __future__ import annotations

import copy
import platform
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from lossdial.config import Config
from lossdial.data.loader import TensorLoader, augment_batch, derive_seed, make_generator, to_device
from lossdial.data.task import build_task
from lossdial.rundir import RunDir, RunError, write_json
from lossdial.train import distributed as ddp
from lossdial.train.checkpoint import save_weights
from lossdial.train.ema import ema_pairs, ema_update_
from lossdial.train.factory import (
    build_lambda_space,
    build_loss_fn,
    build_model_from_config,
    build_scheduler,
    optimizer_from_groups,
    resolve_device,
    split_decay,
    resolve_loader_kind,
)
from lossdial.train.loop import (
    periodic_validation,
    RUN_FILES,
    Callback,
    TrainResult,
    _final_evaluation,
    _prepare_run_dir,
    _write_run_header,
    reference_lambda,
)

__all__ = ["StackedConfigError", "StackedTrainer", "check_stackable", "clip_grad_norm_per_member_",
           "train_stacked"]

#: Fields that stacked members may set differently (dotted prefixes of Config.to_dict()).
MAY_DIFFER = ("name", "seed", "loss.params", "loss.smoothing", "lct.lambda")


class StackedConfigError(ValueError):
    """The configs cannot be trained as one stack; the message names the field and the fix."""


# --------------------------------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------------------------------
def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out if d else {prefix.rstrip("."): {}}
    return {prefix.rstrip("."): d}


def _may_differ(key: str) -> bool:
    return any(key == p or key.startswith(p + ".") for p in MAY_DIFFER)


def check_stackable(cfgs: Sequence[Config]) -> None:
    """Raise :class:`StackedConfigError` unless ``cfgs`` differ only where a stack allows it."""
    if not cfgs:
        raise StackedConfigError("train_stacked needs at least one config")
    ref = _flatten(cfgs[0].to_dict())
    for n, cfg in enumerate(cfgs[1:], start=1):
        other = _flatten(cfg.to_dict())
        for key in sorted(set(ref) | set(other)):
            if _may_differ(key):
                continue
            a, b = ref.get(key, "<unset>"), other.get(key, "<unset>")
            if a != b:
                raise StackedConfigError(
                    f"stacked configs differ at {key} (member 0: {a!r}, member {n}: {b!r}); stacked members may "
                    f"differ only in {', '.join(MAY_DIFFER)}: give every member the same {key}, or train the "
                    f"differing configs in separate stacks (or one by one with lossdial.train.train)")
        if cfgs[0].lct.enabled and set(cfg.lct.lambdas) != set(cfgs[0].lct.lambdas):
            raise StackedConfigError(
                f"stacked configs differ in the names of lct.lambda (member 0: {sorted(cfgs[0].lct.lambdas)}, "
                f"member {n}: {sorted(cfg.lct.lambdas)}): stacked LCT members must condition on the same "
                f"hyperparameters (one FiLM input size); stack them separately")
    off = [name for name, on in (("optim.sam", cfgs[0].optim.sam.enabled), ("ssl", cfgs[0].ssl.enabled)) if on]
    if off:
        raise StackedConfigError(f"{' and '.join(off)} {'is' if len(off) == 1 else 'are'} not supported by "
                                 f"train_stacked (the stacked step is one vmapped forward/backward of the plain loss); "
                                 f"train these runs one by one with lossdial.train.train")
    tc = cfgs[0].train
    if tc.channels_last:
        raise StackedConfigError("train.channels_last is not supported by train_stacked (vmap folds the members "
                                 "into the channel dimension of one grouped convolution); set "
                                 "train.channels_last: false")
    if tc.compile != "off":
        raise StackedConfigError(f"train.compile: {tc.compile} is not supported by train_stacked (the vmapped "
                                 f"forward is not compiled); set train.compile: off")


def _check_no_dropout(model: nn.Module) -> None:
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
            raise StackedConfigError(
                f"the model has dropout ({name or 'model'}: p={m.p}); dropout draws from the global RNG, which a "
                f"stack cannot replay member by member: set the backbone's dropout to 0 or train these runs "
                f"one by one with lossdial.train.train")


def _check_outs(outs: Sequence[str | Path], n: int, force: bool) -> list[RunDir]:
    if len(outs) != n:
        raise StackedConfigError(f"train_stacked got {n} configs but {len(outs)} output directories")
    resolved = [Path(o).resolve() for o in outs]
    if len(set(resolved)) != len(resolved):
        raise StackedConfigError("train_stacked: two members write the same output directory; give each its own")
    runs = [RunDir(o) for o in outs]
    if not force:
        for r in runs:
            if r.path.is_dir() and any((r.path / f).exists() for f in RUN_FILES):
                raise RunError(f"{r.path} already holds a run; stacked training does not resume: pass force=True "
                               f"(--force) to overwrite it, or choose another output directory")
    return runs


# --------------------------------------------------------------------------------------------------
# stacked pieces
# --------------------------------------------------------------------------------------------------
def _stacked_optimizer(cfg: Config, params: dict[str, torch.Tensor], unstacked_ndim: dict[str, int]):
    """:func:`lossdial.train.factory.build_optimizer` on stacked tensors (groups from the unstacked shapes)."""
    return optimizer_from_groups(cfg, *split_decay(cfg, params, unstacked_ndim))


@torch.no_grad()
def clip_grad_norm_per_member_(params: Sequence[torch.Tensor], max_norm: float) -> torch.Tensor:
    """``clip_grad_norm_`` (L2) applied to each member ``n`` of stacked parameters ``[N, ...]`` separately.

    Returns the per-member total norms ``[N]`` (before clipping).
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(0)
    n = grads[0].shape[0]
    norms = torch.stack([torch.linalg.vector_norm(g.reshape(n, -1), 2, dim=1) for g in grads])  # [P, N]
    total = torch.linalg.vector_norm(norms, 2, dim=0)  # [N]
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for g in grads:
        g.mul_(coef.view((n,) + (1,) * (g.ndim - 1)).to(g.dtype))
    return total


class StackedEMA:
    """:class:`lossdial.train.ema.EMA` over stacked tensors (parameters then buffers, as EMA pairs them)."""

    def __init__(self, tensors: dict[str, torch.Tensor], decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.avg = {k: v.detach().clone() for k, v in tensors.items()}
        self.n_averaged = 0
        self._pairs: tuple | None = None

    @torch.no_grad()
    def update(self, tensors: dict[str, torch.Tensor]) -> None:
        if self._pairs is None:  # the stacked tensors are fixed objects: list them once
            self._pairs = ema_pairs(list(self.avg.values()), [tensors[k].detach() for k in self.avg])
        ema_update_(self._pairs, self.decay, first=self.n_averaged == 0)
        self.n_averaged += 1


def _member_state(tensors: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
    return {k: v[n] for k, v in tensors.items()}


# --------------------------------------------------------------------------------------------------
# the entry point
# --------------------------------------------------------------------------------------------------
def train_stacked(cfgs: list[Config], outs: list[str | Path], *, device: str | torch.device | None = None,
                  force: bool = False, callback: Callback | None = None) -> list[TrainResult]:
    """Train ``cfgs[n]`` into ``outs[n]`` for every n, all at once as one stacked model.

    Every run directory ends up as ``lossdial.train.train(cfgs[n], outs[n])`` would write it (without
    checkpoint.pt), with the same weights up to floating-point reassociation. ``callback`` sees the stack's
    steps; its ``on_epoch_end`` record carries the mean ``train_loss`` and the per-member ``train_losses``.
    Raises :class:`StackedConfigError` (a ``ValueError``) for configs that cannot share a stack.
    """
    cfgs = list(cfgs)
    check_stackable(cfgs)
    if ddp.env_world_size() > 1:
        raise StackedConfigError("train_stacked runs in one process; it does not run under torchrun "
                                 "(WORLD_SIZE > 1): launch it with plain python")
    runs = _check_outs(outs, len(cfgs), force)
    cfg0 = cfgs[0]
    dev = resolve_device(device if device is not None else cfg0.train.device)
    task = build_task(cfg0.data)
    kind = resolve_loader_kind(cfg0, task)
    if kind != "device":
        raise StackedConfigError(
            f"train_stacked needs the in-memory, on-device data path (train.loader: device, or auto with "
            f"in-memory data); this config resolves to train.loader: {kind}: set train.loader: device with "
            f"data.in_memory: true, or train these runs one by one with lossdial.train.train")
    for cfg in cfgs:  # per-class loss.params against the real class count, before any write
        build_loss_fn(cfg, task.class_counts)
    for run, cfg in zip(runs, cfgs):
        _prepare_run_dir(run, cfg, False, force)
    spaces = [build_lambda_space(c) for c in cfgs]
    for run, cfg, space in zip(runs, cfgs, spaces):
        _write_run_header(run, cfg, task, space)
    fork_devices = [dev] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(derive_seed(cfg0.seed, 0x6107))  # unused by the forward (no dropout); kept tidy
        return _train_stacked(cfgs, runs, task, spaces, dev, callback)


class StackedTrainer:
    """The N stacked members and one optimisation step of all of them (the body of the training loop).

    ``step(batches)`` takes member n's raw batch ``batches[n] = (x_n, y_n)`` (as its TensorLoader yields
    it), augments, normalises and draws lambda with member n's generators, runs one vmapped forward and
    backward, clips per member, steps the optimizer, the schedule and the EMA, and returns the members'
    losses ``[N]`` (detached, on the device; no host sync).
    """

    def __init__(self, cfgs: list[Config], task, spaces: list, dev: torch.device, steps_per_epoch: int):
        from torch.func import functional_call, stack_module_state

        self.cfgs, self.task, self.spaces, self.dev = cfgs, task, spaces, dev
        self.n = len(cfgs)
        cfg0 = cfgs[0]
        self.tc = tc = cfg0.train
        lambda_dim = spaces[0].dim if spaces[0] is not None else 0
        self.models = [build_model_from_config(c, task.input_shape, lambda_dim, task.num_classes).to(dev)
                       for c in cfgs]
        _check_no_dropout(self.models[0])
        for m in self.models:
            m.train()
        self.loss_fns = [build_loss_fn(c, task.class_counts).to(dev) for c in cfgs]
        # parameters: new leaves [N, ...]; buffers (BatchNorm running stats, counters): [N, ...]
        self.params, self.buffers = stack_module_state(self.models)
        unstacked_ndim = {k: p.ndim for k, p in self.models[0].named_parameters()}
        base = copy.deepcopy(self.models[0]).to("meta")
        base.train()
        self.optimizer = _stacked_optimizer(cfg0, self.params, unstacked_ndim)
        self.scheduler = build_scheduler(cfg0, self.optimizer, steps_per_epoch)
        self.ema = StackedEMA(self.tensors(), tc.ema_decay) if tc.ema_decay is not None else None
        self.lam_gens = [make_generator(c.seed, 0x1A3B) for c in cfgs]
        self.aug_gens = [make_generator(c.seed, 0xA06E) for c in cfgs]
        self.conditioned = spaces[0] is not None
        self.amp = tc.amp and dev.type == "cuda"
        self.grad_params = [p for p in self.params.values() if p.requires_grad]

        def fmodel(p, b, x, z=None):
            return functional_call(base, (p, b), (x, z))

        self.forward = torch.vmap(fmodel, in_dims=(0, 0, 0, 0) if self.conditioned else (0, 0, 0),
                                  randomness="error")

    def tensors(self) -> dict[str, torch.Tensor]:
        """The live stacked parameters and buffers (parameters first, as EMA pairs them)."""
        return {**self.params, **self.buffers}

    def set_epoch(self, epoch: int) -> None:
        for fn in self.loss_fns:
            if hasattr(fn, "set_epoch"):  # e.g. LDAM's deferred re-weighting
                fn.set_epoch(epoch)

    def step(self, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        tc, dev, task = self.tc, self.dev, self.task
        xs, ys, lams, zs = [], [], [], []
        for n, (xb, yb) in enumerate(batches):
            xs.append(augment_batch(xb, tc.augment, self.aug_gens[n], tc.crop_padding, tc.random_erasing))
            ys.append(yb)
            if self.conditioned:  # drawn and encoded on the CPU, copied without a host sync (as the loop)
                lam_cpu = self.spaces[n].sample(len(yb), self.lam_gens[n])
                zs.append(to_device(self.spaces[n].encode(lam_cpu, batch_size=len(yb)), dev))
                lams.append({k: to_device(v, dev) for k, v in lam_cpu.items()})
            else:
                lams.append(None)
        x = torch.stack(xs)
        x = task.normalizer(x.flatten(0, 1)).unflatten(0, x.shape[:2])  # element-wise: same as per member
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=self.amp):
            logits = self.forward(self.params, self.buffers, x, torch.stack(zs)) if self.conditioned \
                else self.forward(self.params, self.buffers, x)
        logits = logits.float()
        losses = torch.stack([self.loss_fns[n](logits[n], ys[n], lam=lams[n]) for n in range(self.n)])
        self.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()  # the members share nothing: each gets exactly its own loss's gradient
        if tc.grad_clip is not None:
            clip_grad_norm_per_member_(self.grad_params, tc.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.tensors())
        return losses.detach()

    def member_model(self, n: int, use_ema: bool = True) -> nn.Module:
        """Member n as an ordinary model holding its EMA weights (if enabled and ``use_ema``) or live ones.

        The model is member n's own (built for its initialisation); it is overwritten on every call.
        """
        source = self.ema.avg if (use_ema and self.ema is not None) else self.tensors()
        with torch.no_grad():
            self.models[n].load_state_dict(_member_state(source, n))
        return self.models[n]


def _train_stacked(cfgs: list[Config], runs: list[RunDir], task, spaces: list, dev: torch.device,
                   callback: Callback | None) -> list[TrainResult]:
    t0 = time.perf_counter()
    n_members = len(cfgs)
    cfg0 = cfgs[0]
    tc = cfg0.train
    x_dev, y_dev = task.train.x.to(dev), task.train.y.to(dev)  # one copy of the split for every member
    loaders = [TensorLoader(x_dev, y_dev, tc.batch_size, shuffle=True, seed=derive_seed(c.seed, 0x5FF1),
                            drop_last=tc.drop_last) for c in cfgs]
    steps_per_epoch = len(loaders[0])
    total_steps = tc.epochs * steps_per_epoch
    stack = StackedTrainer(cfgs, task, spaces, dev, steps_per_epoch)
    amp = stack.amp

    ref_lams = [reference_lambda(s) for s in spaces]
    if callback is not None:
        callback.on_start(total_steps, 0)
    for n, run in enumerate(runs):
        run.log({"event": "start", "total_steps": total_steps, "steps_per_epoch": steps_per_epoch,
                 "device": str(dev), "train_counts": task.class_counts,
                 "torch": torch.__version__, "python": platform.python_version(),
                 "stacked": {"members": n_members, "index": n}})

    step = 0
    for epoch in range(tc.epochs):
        stack.set_epoch(epoch)
        loss_acc = torch.zeros(n_members, device=dev)
        count = 0
        for batches in zip(*(ld.batches(epoch) for ld in loaders)):
            loss_acc += stack.step(batches)
            count += 1
            step += 1
            if callback is not None:
                callback.on_step(step)
        # end of epoch
        train_losses = [v / max(1, count) for v in loss_acc.tolist()]  # as the loop: float sum / count
        bad = [n for n, v in enumerate(train_losses) if not np.isfinite(v)]
        if bad:
            raise FloatingPointError(
                f"training loss of stacked member(s) {bad} ({', '.join(str(runs[n].path) for n in bad)}) became "
                f"{train_losses[bad[0]]} in epoch {epoch + 1}; lower optim.lr or set train.grad_clip")
        last = epoch + 1 == tc.epochs
        do_eval = bool(tc.eval_every) and (epoch + 1) % tc.eval_every == 0 and not last
        seconds = time.perf_counter() - t0
        lr = stack.optimizer.param_groups[0]["lr"]
        for n, run in enumerate(runs):
            record: dict[str, Any] = {"event": "epoch", "epoch": epoch + 1, "step": step,
                                      "train_loss": train_losses[n], "lr": lr, "seconds": seconds}
            if do_eval:
                record.update(periodic_validation(cfg0, task, spaces[n], stack.member_model(n), ref_lams[n],
                                                  dev, amp))
            run.log(record)
        if callback is not None:
            callback.on_epoch_end(epoch + 1, {"event": "epoch", "epoch": epoch + 1, "step": step,
                                              "train_loss": float(np.mean(train_losses)),
                                              "train_losses": train_losses, "lr": lr, "seconds": seconds})

    finals = []
    for n, (cfg, run, space) in enumerate(zip(cfgs, runs, spaces)):
        eval_model = stack.member_model(n)
        final = _final_evaluation(cfg, task, space, eval_model, dev, amp)
        save_weights(run.weights, eval_model)
        run.log(final)
        finals.append(final)
    stack_seconds = time.perf_counter() - t0
    share = stack_seconds / n_members
    results = []
    for run, final in zip(runs, finals):
        write_json(run.complete_marker, {"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "steps": step,
                                         "seconds": share, "stack_seconds": stack_seconds,
                                         "stack_members": n_members})
        results.append(TrainResult(run_dir=run.path, steps=step, seconds=share, final=final))
    return results
