"""The training loop shared by baseline and LCT runs.

One loop: a baseline run is an LCT run with no lambda space (fixed loss hyperparameters, plain head).
Each step draws lambda once per batch (or per sample), feeds ``space.encode(lam)`` to the network and the
same raw values to the loss. Random streams are separate and seeded from ``config.seed``: model init,
shuffling (per epoch), lambda draws, augmentation, and the global torch RNG (dropout), all saved in the
checkpoint so a killed run resumes to bit-identical weights.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from lossdial.config import Config, config_from_dict, fixed_lambda, pin_legacy_defaults
from lossdial.data.loader import augment_batch, derive_seed, make_generator, to_device
from lossdial.data.task import Task, build_task
from lossdial.evaluate.scoring import score_lambdas
from lossdial.evaluate.tasktype import task_type
from lossdial.rundir import RunDir, RunError, atomic_write_text, write_json
from lossdial.train import distributed as ddp
from lossdial.train.ema import EMA
from lossdial.train.checkpoint import load_checkpoint, save_checkpoint, save_weights
from lossdial.train.factory import (
    build_lambda_space,
    build_loss_fn,
    build_model_from_config,
    build_optimizer,
    build_scheduler,
    build_train_loader,
    resolve_device,
    resolve_loader_kind,
)
from lossdial.train import simplifying

RUN_FILES = ("config.yaml", "data.json", "splits.npz", "lambda_space.json", "checkpoint.pt",
             "model.safetensors", "metrics.jsonl", "COMPLETE")


class Callback(Protocol):
    """Progress hooks (the CLI draws a progress bar with them; the library itself never prints)."""

    def on_start(self, total_steps: int, start_step: int) -> None: ...
    def on_step(self, step: int) -> None: ...
    def on_epoch_end(self, epoch: int, record: dict[str, Any]) -> None: ...


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    seconds: float
    final: dict[str, Any] = field(default_factory=dict)


def reference_lambda(space) -> dict[str, float] | None:
    """The lambda at which training progress is logged: each distribution's mean."""
    if space is None:
        return None
    return {n: float(d.mean) for n, d in space.distributions.items()}


def default_eval_grid(cfg: Config, space, k: int = 7) -> list[dict[str, float]] | None:
    if space is None:
        return None
    from lossdial.conditioning import grid_points_from_space, parse_lambda_grid

    if cfg.evaluate.lambda_grid is not None:
        return parse_lambda_grid(cfg.evaluate.lambda_grid)
    return grid_points_from_space(space, k)


def _prepare_run_dir(run: RunDir, cfg: Config, resume: bool, force: bool) -> bool:
    """Check what is in the run directory; return True if training should resume from a checkpoint."""
    p = run.path
    if p.exists() and not p.is_dir():
        raise RunError(f"--out {p} exists and is not a directory")
    present = [f for f in RUN_FILES if (p / f).exists()] if p.is_dir() else []
    others = [x.name for x in p.iterdir() if x.name not in RUN_FILES and not x.name.startswith(".")] \
        if p.is_dir() else []
    if force:
        if others:
            raise RunError(f"--force would delete {p}, which holds files that are not a lossdial run "
                           f"({others[:3]}); choose another --out")
        for f in present:
            (p / f).unlink()
        return False
    if run.is_complete:
        if resume:
            _require_same_config(run, cfg, "it is already finished, trained with a different config; pass "
                                           "--force to retrain it with the config given, or choose another --out")
            return True
        raise RunError(f"{p} already holds a finished run; pass --force to overwrite it, or choose another --out")
    if present and not resume:
        raise RunError(f"{p} holds an unfinished run; pass --resume to continue it or --force to restart it")
    if others and not present:
        raise RunError(f"--out {p} is a non-empty directory that is not a lossdial run; choose another --out")
    if resume and not run.checkpoint.is_file():
        if present:
            raise RunError(f"cannot resume {p}: it has no checkpoint.pt yet; restart it with --force")
        return False  # nothing to resume: start fresh (a killed job restarted with --resume works)
    if resume:
        _require_same_config(run, cfg, "its config.yaml differs from the config given; resume with the same "
                                       "config (or omit CONFIG to use the saved one)")
    return resume


def _require_same_config(run: RunDir, cfg: Config, why: str) -> None:
    """Refuse to resume `run` (finished or not) under a config other than the one it was trained with."""
    saved = config_from_dict(pin_legacy_defaults(__import__("yaml").safe_load(run.config.read_text()) or {}),
                             source=str(run.config))
    if saved.to_dict() != cfg.to_dict():
        raise RunError(f"cannot resume {run.path}: {why}")


def _write_run_header(run: RunDir, cfg: Config, task: Task, space) -> None:
    run.path.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.config, cfg.to_yaml())
    write_json(run.data, task.describe())
    extra = {} if task.retrain_indices is None else {"retrain": task.retrain_indices}
    np.savez(run.splits, train=task.indices.train, val=task.indices.val, test=task.indices.test, **extra)
    if space is not None:
        write_json(run.lambda_space, space.to_dict())


def train(cfg: Config, out: str | Path, *, resume: bool = False, force: bool = False,
          callback: Callback | None = None, device: str | torch.device | None = None) -> TrainResult:
    """Train the run `cfg` describes into the run directory `out` (see docs/ARCHITECTURE.md).

    Under ``torchrun`` (WORLD_SIZE > 1) this process is one rank of a DistributedDataParallel run: see
    :mod:`lossdial.train.distributed` (only rank 0 writes ``out``).
    """
    dctx, ddp_dev = (ddp.from_env(resolve_device(device if device is not None else cfg.train.device))
                     if ddp.env_world_size() > 1 else (None, None))
    try:
        result = _train_run(cfg, RunDir(out), resume, force, callback, device, dctx, ddp_dev)
    except BaseException:
        if dctx is not None:
            dctx.close(wait=False)
        raise
    if dctx is not None:
        dctx.close()
    return result


def _train_run(cfg: Config, run: RunDir, resume: bool, force: bool, callback: Callback | None, device,
               dctx: ddp.DistContext | None, ddp_dev: torch.device | None) -> TrainResult:
    resuming = (_prepare_run_dir(run, cfg, resume, force) if dctx is None
                else dctx.on_main(lambda: _prepare_run_dir(run, cfg, resume, force)))
    if resuming and run.is_complete:
        return TrainResult(run_dir=run.path, steps=0, seconds=0.0, final=_final_record(run))
    dev = ddp_dev or resolve_device(device if device is not None else cfg.train.device)
    task = build_task(cfg.data)
    if resuming:
        saved = np.load(run.splits)
        if not all(np.array_equal(saved[k], getattr(task.indices, k)) for k in ("train", "val", "test")):
            raise RunError(f"cannot resume {run.path}: the data split rebuilt from the config differs from "
                           f"splits.npz (did the data or library version change?)")
    space = build_lambda_space(cfg)
    build_loss_fn(cfg, task.class_counts)  # per-class loss.params against the real class count, before any write
    simplifying.check_run(cfg, resolve_loader_kind(cfg, task), dctx is not None, task.class_counts, task.kind)
    if not resuming and (dctx is None or dctx.is_main):
        _write_run_header(run, cfg, task, space)

    fork_devices = [dev] if dev.type == "cuda" else []
    cudnn_prev = torch.backends.cudnn.benchmark  # set for this run only, restored after (no global state)
    torch.backends.cudnn.benchmark = cudnn_prev or (cfg.train.cudnn_benchmark and dev.type == "cuda")
    try:
        with torch.random.fork_rng(devices=fork_devices):
            torch.manual_seed(derive_seed(cfg.seed, 0x6107))
            return _train(cfg, run, task, space, dev, resuming, callback, dctx)
    finally:
        torch.backends.cudnn.benchmark = cudnn_prev


def _train(cfg: Config, run: RunDir, task: Task, space, dev: torch.device, resuming: bool,
           callback: Callback | None, dctx: ddp.DistContext | None = None) -> TrainResult:
    t0 = time.perf_counter()
    tc = cfg.train
    main = dctx is None or dctx.is_main  # only rank 0 writes the run directory
    lambda_dim = space.dim if space is not None else 0
    model = build_model_from_config(cfg, task.input_shape, lambda_dim, task.num_classes).to(dev)
    images = len(task.input_shape) == 3
    layout = torch.channels_last if tc.channels_last and images else torch.contiguous_format
    model = model.to(memory_format=layout)
    net = model  # what the training forward pass runs (the DDP wrapper under torchrun, torch.compile's wrapper)
    if dctx is not None:
        dctx.check_batch_size(tc.batch_size)
        model, net = dctx.wrap_model(model, dev, tc.sync_batchnorm)
    if tc.compile != "off":  # experimental (see docs): the eval/EMA/checkpoint paths keep the plain module
        net = torch.compile(net, mode=tc.compile)
    projector = simplifying.build_projector(cfg, model.feature_dim)  # Joint-SSL's g (None without ssl)
    trainable = model if projector is None else nn.ModuleList([model, projector.to(dev)])
    params = [p for p in trainable.parameters() if p.requires_grad]  # listed once, not on every step
    loss_fn = build_loss_fn(cfg, task.class_counts).to(dev)
    amp = tc.amp and dev.type == "cuda"
    objective = simplifying.StepObjective(cfg, net, model, loss_fn, projector, task.class_counts, dev, amp, dctx)
    sam = simplifying.build_sam(cfg, params, trainable)
    loader = build_train_loader(cfg, task, dev)
    steps_per_epoch = len(loader)
    total_steps = tc.epochs * steps_per_epoch
    optimizer = build_optimizer(cfg, trainable)
    scheduler = build_scheduler(cfg, optimizer, steps_per_epoch)
    ema = None
    if tc.ema_decay is not None:
        ema = EMA(model, tc.ema_decay)
    lam_gen = make_generator(cfg.seed, 0x1A3B)
    aug_gen = make_generator(cfg.seed, 0xA06E)
    state = {"epoch": 0, "batch": 0, "step": 0, "loss_sum": 0.0, "loss_count": 0}

    if resuming:
        ck = load_checkpoint(run.checkpoint, map_location=dev)
        model.load_state_dict(ck["model"])
        if projector is not None:
            projector.load_state_dict(ck["projector"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        if ema is not None:
            ema.load_state_dict(ck["ema"])
        lam_gen.set_state(ck["rng"]["lambda"])
        aug_gen.set_state(ck["rng"]["augment"])
        torch.set_rng_state(ck["rng"]["torch"])
        if dev.type == "cuda" and "cuda" in ck["rng"]:
            torch.cuda.set_rng_state(ck["rng"]["cuda"], dev)
        state.update({k: ck["state"][k] for k in state})

    def snapshot() -> dict[str, Any]:
        rng = {"lambda": lam_gen.get_state(), "augment": aug_gen.get_state(), "torch": torch.get_rng_state()}
        if dev.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(dev)
        out = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
               "scheduler": scheduler.state_dict(), "ema": ema.state_dict() if ema is not None else {},
               "rng": rng, "state": dict(state)}
        if projector is not None:
            out["projector"] = projector.state_dict()
        return out

    eval_model = ema.module if ema is not None else model
    ref_lam = reference_lambda(space)
    if callback is not None:
        callback.on_start(total_steps, state["step"])
    if not resuming and main:
        run.log({"event": "start", "total_steps": total_steps, "steps_per_epoch": steps_per_epoch,
                 "device": str(dev), "train_counts": task.class_counts, "loader": type(loader).__name__,
                 "num_workers": getattr(loader, "num_workers", 0),
                 "torch": torch.__version__, "python": platform.python_version()})

    model.train()
    loss_acc = torch.zeros((), device=dev)
    while state["epoch"] < tc.epochs:
        epoch = state["epoch"]
        if hasattr(loss_fn, "set_epoch"):  # e.g. LDAM's deferred re-weighting
            loss_fn.set_epoch(epoch)
        for xb, yb in loader.batches(epoch, start=state["batch"]):
            x2 = None
            if loader.augments_batches:
                raw = xb
                xb = augment_batch(raw, tc.augment, aug_gen, tc.crop_padding, tc.random_erasing)
                if projector is not None:  # Joint-SSL's second view, from the same stream right after the first
                    x2 = task.normalizer(simplifying.second_view(cfg, raw, loader.x, aug_gen))
            xb = task.normalizer(xb)
            if layout is not torch.contiguous_format:
                xb = xb.contiguous(memory_format=layout)
                x2 = x2.contiguous(memory_format=layout) if x2 is not None else None
            if space is not None:
                lam_cpu = space.sample(len(yb), lam_gen)
                z = to_device(space.encode(lam_cpu, batch_size=len(yb)), dev)
                lam = {k: to_device(v, dev) for k, v in lam_cpu.items()}
            else:
                lam, z = None, None
            if dctx is not None:  # this rank's slice of the global batch (same lambda stream everywhere)
                xb, yb, lam, z = dctx.shard(xb, yb, lam, z)
            optimizer.zero_grad(set_to_none=True)
            if sam is None:
                loss = objective(xb, x2, yb, lam, z).loss
                loss.backward()
            else:  # two passes (or one per perturbed group), same batch, views and lambda; BN updated in the first
                loss = sam.gradients(lambda: objective(xb, x2, yb, lam, z))
            if tc.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
            optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.update_parameters(model)
            loss_acc += loss.detach()
            state["loss_count"] += 1
            state["batch"] += 1
            state["step"] += 1
            if callback is not None:
                callback.on_step(state["step"])
            if tc.checkpoint_every and state["step"] % tc.checkpoint_every == 0 \
                    and state["batch"] < steps_per_epoch:
                state["loss_sum"] += float(loss_acc if dctx is None else dctx.average_(loss_acc))
                loss_acc.zero_()
                if main:
                    save_checkpoint(run.checkpoint, snapshot())
        # end of epoch
        state["loss_sum"] += float(loss_acc if dctx is None else dctx.average_(loss_acc))
        loss_acc.zero_()
        train_loss = state["loss_sum"] / max(1, state["loss_count"])
        if not np.isfinite(train_loss):
            raise FloatingPointError(
                f"training loss became {train_loss} in epoch {epoch + 1}; lower optim.lr or set train.grad_clip")
        record: dict[str, Any] = {"event": "epoch", "epoch": epoch + 1, "step": state["step"],
                                  "train_loss": train_loss, "lr": optimizer.param_groups[0]["lr"],
                                  "seconds": time.perf_counter() - t0}
        last = epoch + 1 == tc.epochs
        if tc.eval_every and ((epoch + 1) % tc.eval_every == 0) and not last:
            record.update(periodic_validation(cfg, task, space, eval_model, ref_lam, dev, amp))
        state.update({"epoch": epoch + 1, "batch": 0, "loss_sum": 0.0, "loss_count": 0})
        if main:
            run.log(record)
            if (epoch + 1) % tc.checkpoint_epochs == 0 or last:
                save_checkpoint(run.checkpoint, snapshot())
        if callback is not None:
            callback.on_epoch_end(epoch + 1, record)

    if hasattr(loader, "close"):  # stop DataLoader workers before the final evaluation
        loader.close()
    final = _final_evaluation(cfg, task, space, eval_model, dev, amp)
    if main:
        save_weights(run.weights, eval_model)
        run.log(final)
        write_json(run.complete_marker, {"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                         "steps": state["step"], "seconds": time.perf_counter() - t0})
    return TrainResult(run_dir=run.path, steps=state["step"], seconds=time.perf_counter() - t0, final=final)


def _score_val(cfg: Config, task: Task, space, model, lambdas, dev, amp):
    """The validation split's scores at ``lambdas`` (None: an unconditioned model), as the task type wants."""
    return score_lambdas(model, task.val.x, lambdas, space, batch_size=cfg.evaluate.batch_size, device=dev,
                         amp=amp, transform=task.normalizer, output=task_type(cfg.data.task).score_output)


def _val_metrics(cfg: Config, task: Task, scores) -> dict[str, Any]:
    """One row's validation metrics: binary at evaluate.threshold (the split's own prevalence); multi-class
    at t = 0 and the training class prior."""
    return task_type(cfg.data.task).metrics(task.val.y.numpy(), scores, train_counts=task.class_counts,
                                            config=cfg)


def periodic_validation(cfg: Config, task: Task, space, model, ref_lam, dev, amp) -> dict[str, Any]:
    """The epoch record's validation entries: metrics at the reference lambda (never the test split)."""
    scores = _score_val(cfg, task, space, model, [ref_lam] if ref_lam else None, dev, amp)[0]
    m = _val_metrics(cfg, task, scores)
    out: dict[str, Any] = {"val": {k: m[k] for k in task_type(cfg.data.task).periodic_keys}}
    if ref_lam:
        out["val_lambda"] = ref_lam
    return out


def _final_evaluation(cfg: Config, task: Task, space, model, dev, amp) -> dict[str, Any]:
    """Validation metrics at every point of the evaluation grid (never the test split); multi-class rows are at
    t = 0 (no post-hoc adjustment) and the training class prior."""
    grid = default_eval_grid(cfg, space)
    scores = _score_val(cfg, task, space, model, grid, dev, amp)
    rows = [{"lambda": grid[k] if grid else fixed_lambda(cfg), "metrics": _val_metrics(cfg, task, s)}
            for k, s in enumerate(scores)]
    return {"event": "final", "split": "val", "task": task_type(cfg.data.task).name, "rows": rows}


def _final_record(run: RunDir) -> dict[str, Any]:
    for rec in reversed(run.read_log()):
        if rec.get("event") == "final":
            return rec
    return {}
