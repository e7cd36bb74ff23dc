"""Load a finished run directory and evaluate it at chosen lambda values."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import yaml

from lossdial.config import Config, config_from_dict, fixed_lambda, pin_legacy_defaults
from lossdial.data.task import Task, build_task
from lossdial.evaluate.scoring import score_lambdas
from lossdial.evaluate.tasktype import task_type
from lossdial.rundir import RunDir, RunError


@dataclass
class LoadedRun:
    path: Path
    config: Config
    model: torch.nn.Module  # evaluation weights (EMA when the run used it), eval mode
    space: Any  # LambdaSpace or None for a baseline run
    data: dict[str, Any]  # data.json
    device: torch.device

    @property
    def is_lct(self) -> bool:
        return self.space is not None

    @property
    def task_type(self):
        """The run's :class:`~lossdial.evaluate.tasktype.BinaryTask` or ``MultiClassTask`` (``data.task``)."""
        return task_type(self.config.data.task)

    @property
    def train_counts(self) -> list[int]:
        """Training samples per label, as data.json records them (what the losses were built with)."""
        return [int(v) for v in self.data["counts"]["train"]]

    def task(self) -> Task:
        """Rebuild the data splits, checking them against the indices saved at training time. A run written by
        ``lossdial retrain`` validates on its selection half only (the other half fitted its last layer)."""
        task = build_task(self.config.data)
        saved = np.load(RunDir(self.path).splits)
        for k in ("train", "val", "test"):
            if not np.array_equal(saved[k], getattr(task.indices, k)):
                raise RunError(f"the {k} split rebuilt from {self.path}/config.yaml differs from splits.npz; "
                               f"the data source or library version changed since training")
        if "retrain" in saved.files and not np.array_equal(saved["retrain"], task.retrain_indices):
            raise RunError(f"the retrain split (data.retrain_fraction) rebuilt from {self.path}/config.yaml differs "
                           f"from splits.npz; the data source or library version changed since training")
        if "retrain_select" in saved.files:  # a retrained last layer: validation = the selection half
            from lossdial.retrain.run import restrict_to_selection

            task = restrict_to_selection(task, saved)
        return task


def load_run(path: str | Path, device: str | torch.device = "cpu") -> LoadedRun:
    from lossdial.conditioning import LambdaSpace
    from lossdial.train.checkpoint import load_weights
    from lossdial.train.factory import build_model_from_config, resolve_device

    run = RunDir(path)
    run.require_complete()
    cfg = config_from_dict(pin_legacy_defaults(yaml.safe_load(run.config.read_text()) or {}), source=str(run.config))
    data = run.read_json(run.data)
    space = LambdaSpace.from_dict(run.read_json(run.lambda_space)) if run.lambda_space.is_file() else None
    dev = resolve_device(device)
    model = build_model_from_config(cfg, data["input_shape"], space.dim if space is not None else 0,
                                    int(data.get("num_classes", 2)))
    load_weights(run.weights, model)
    model.to(dev).eval()
    return LoadedRun(path=run.path, config=cfg, model=model, space=space, data=data, device=dev)


def evaluate_run(loaded: LoadedRun, lambdas: Sequence[Mapping[str, float]] | None = None, *,
                 split: str = "val", threshold: float | None = None, task: Task | None = None,
                 prevalence: float | None = None, prior: str | Sequence[float] | None = None
                 ) -> list[dict[str, Any]]:
    """Metrics per lambda value on `split` ("val" or "test"). Values outside the training support warn.

    Binary runs: ``threshold`` (None: the run's evaluate.threshold) and ``prevalence``, the positive prevalence
    for precision-type metrics (None: the split's own). Multi-class runs (at t = 0, no post-hoc adjustment):
    ``prior``, the deployment class prior of ``accuracy`` -- ``"train"`` (None: the default), ``"uniform"`` or
    C probabilities in label order; every row's metrics state it (``prior``, ``prior_source``). An option of
    the other task type is refused (:mod:`lossdial.evaluate.tasktype`).
    """
    if split not in ("val", "test", "train"):
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    tt = loaded.task_type
    tt.check_options(train_counts=loaded.train_counts, threshold=threshold, prevalence=prevalence, prior=prior)
    task = task or loaded.task()
    data = getattr(task, split)
    if loaded.is_lct:
        if not lambdas:
            from lossdial.train.loop import default_eval_grid

            lambdas = default_eval_grid(loaded.config, loaded.space)
        for lam in lambdas:
            loaded.space.check_support(lam)
    else:
        if lambdas:
            raise ValueError("this is a baseline run (fixed loss hyperparameters, no FiLM); it has no lambda "
                             "to vary. Drop --lambda, or evaluate an LCT run")
        lambdas = None
    scores = score_lambdas(loaded.model, data.x, lambdas, loaded.space, device=loaded.device,
                           batch_size=loaded.config.evaluate.batch_size, transform=task.normalizer,
                           output=tt.score_output)
    y = data.y.numpy()
    rows = []
    for k, s in enumerate(scores):
        lam = dict(lambdas[k]) if lambdas else fixed_lambda(loaded.config)
        rows.append({"lambda": lam, "metrics": tt.metrics(y, s, train_counts=loaded.train_counts,
                                                          config=loaded.config, threshold=threshold,
                                                          prevalence=prevalence, prior=prior)})
    return rows


def require_binary(task: str | None, command: str) -> None:
    """Stop a binary-only code path given a multi-class run, with one clear line (``task``: ``data.task``).

    Every command takes both task types; this guards the binary branches they dispatch to."""
    if task_type(task).name == "binary":
        return
    from lossdial.data.task import MultiClassNotSupported

    raise MultiClassNotSupported(
        f"{command} reached a binary-only path with a multi-class run (data.task: multiclass); this is a bug in "
        f"lossdial's task dispatch: please report it")
