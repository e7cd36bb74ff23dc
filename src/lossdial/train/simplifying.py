"""The training side of the "Simplifying" recipe (Shwartz-Ziv, Goldblum, Li, Bruss, Wilson, NeurIPS 2023):
SAM and its imbalance forms (``optim.sam``), Joint-SSL (``ssl``). Label smoothing lives in the losses
(``loss.smoothing``), strong augmentation in :mod:`lossdial.data.augment`.

The training loop asks this module for the pieces of a step: :class:`StepObjective` runs the forward pass of
one batch (one or two views) and returns the :class:`~lossdial.optim.sam.Objective` SAM needs, and
:func:`build_sam` the gradient rule. Without SAM and Joint-SSL the objective is exactly the plain loop's loss.
See docs/SIMPLIFYING.md.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, nn

from lossdial.config import Config
from lossdial.data.loader import derive_seed
from lossdial.losses.ssl import nt_xent
from lossdial.optim.sam import (Objective, SharpnessAware, asymmetric_class_weights, minority_classes,
                                split_objective)

__all__ = ["ProjectionHead", "StepObjective", "build_projector", "build_sam", "check_run"]


class ProjectionHead(nn.Module):
    """Joint-SSL's projector ``g``: ``Linear(F, hidden) -> ReLU -> Linear(hidden, out)`` (SimCLR, Chen et al.
    2020; the Simplifying paper: feature -> 2048 -> 128)."""

    def __init__(self, in_features: int, hidden: int = 2048, out: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out))

    def forward(self, f: Tensor) -> Tensor:
        return self.net(f)


def check_run(cfg: Config, loader_kind: str, distributed: bool, class_counts) -> None:
    """Refuse the combinations this module cannot train (before the run directory is written)."""
    s = cfg.optim.sam
    if s.enabled and s.mode == "groups":
        minority_classes(class_counts, s.minority_below)  # raises if a group is empty
    on = [name for name, flag in (("optim.sam", cfg.optim.sam.enabled), ("ssl", cfg.ssl.enabled)) if flag]
    if on and distributed:
        raise ValueError(f"{' and '.join(on)} {'is' if len(on) == 1 else 'are'} not supported under torchrun "
                         f"(several forward/backward passes per step, and the Joint-SSL projector, sit outside "
                         f"DistributedDataParallel's one-backward-per-forward contract): train with one process")
    if cfg.ssl.enabled and loader_kind != "device":
        raise ValueError(f"ssl (Joint-SSL) draws its two views from the on-device batch augmentation, but this "
                         f"config resolves to train.loader: {loader_kind} (batches arrive augmented once); set "
                         f"train.loader: device with data in memory, or remove ssl.weight")


def build_projector(cfg: Config, feature_dim: int) -> nn.Module | None:
    """The Joint-SSL projector (seeded from ``cfg.seed`` on its own stream), or None without ``ssl``."""
    if not cfg.ssl.enabled:
        return None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(cfg.seed, 0x55E1))
        return ProjectionHead(feature_dim, cfg.ssl.projector_hidden, cfg.ssl.projector_dim)


def build_sam(cfg: Config, params, module: nn.Module) -> SharpnessAware | None:
    """The SAM gradient rule of ``optim.sam`` over ``params`` (BatchNorm of ``module`` frozen in the perturbed
    passes), or None for plain steps."""
    s = cfg.optim.sam
    if not s.enabled:
        return None
    return SharpnessAware(params, module, rho=s.rho, adaptive=s.adaptive, eta=s.eta, mode=s.mode,
                          rho_min=s.rho_min, rho_maj=s.rho_maj)


def _at_least_f32(t: Tensor) -> Tensor:
    """bf16/fp16 autocast outputs as float32 for the losses; float32 and float64 unchanged."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def _twice(lam: Mapping[str, Any] | None, n: int) -> Mapping[str, Any] | None:
    if lam is None:
        return None
    return {k: torch.cat([v, v]) if isinstance(v, Tensor) and v.ndim == 1 and v.shape[0] == n else v
            for k, v in lam.items()}


class StepObjective:
    """One forward pass of a training step, as the objective SAM and the plain step descend.

    ``__call__(x, x2, y, lam, z)``: ``x`` the (first) view, ``x2`` the second view (Joint-SSL) or None. Returns
    an :class:`~lossdial.optim.sam.Objective` whose ``loss`` is ``L_sup (+ mu * NT-Xent)``; for SAM's
    asymmetric and group modes also the ascent loss or the two groups' losses, from the per-sample terms of the
    supervised loss (:meth:`~lossdial.losses.base.ImbalanceLoss.sample_terms`).

    Joint-SSL runs the backbone once on ``[x; x2]``; NT-Xent acts on ``projector(features)`` (before FiLM); the
    supervised loss on the first view's logits (``ssl.supervised: first``) or on both views'.
    """

    def __init__(self, cfg: Config, net: nn.Module, model: nn.Module, loss_fn: nn.Module,
                 projector: nn.Module | None, class_counts, dev: torch.device, amp: bool, dctx=None):
        self.net, self.model, self.loss_fn, self.projector = net, model, loss_fn, projector
        self.dev, self.amp, self.dctx = dev, amp, dctx
        self.ssl = cfg.ssl
        s = cfg.optim.sam
        self.mode = s.mode if s.enabled else "sam"
        self.class_weights = (asymmetric_class_weights(class_counts, s.k).to(dev)
                              if self.mode == "asymmetric" else None)
        self.minority = minority_classes(class_counts, s.minority_below).to(dev) if self.mode == "groups" else None

    def __call__(self, x: Tensor, x2: Tensor | None, y: Tensor, lam, z: Tensor | None) -> Objective:
        extra = None
        with torch.autocast(device_type=self.dev.type, dtype=torch.bfloat16, enabled=self.amp):
            if self.projector is None:
                logits = self.net(x, z)
            else:
                n = len(y)
                f = self.model.features(torch.cat([x, x2]))
                if self.ssl.supervised == "first":
                    logits = self.model.head(f[:n], z)
                else:
                    logits = self.model.head(f, None if z is None else torch.cat([z, z]))
                    y, lam = torch.cat([y, y]), _twice(lam, n)
                h = _at_least_f32(self.projector(f))
        if self.projector is not None:
            extra = self.ssl.weight * nt_xent(h[:n], h[n:], self.ssl.temperature)
        logits = _at_least_f32(logits)
        if self.mode == "sam":
            sup = (self.loss_fn(logits, y, lam=lam) if self.dctx is None
                   else self.dctx.loss(self.loss_fn, logits, y, lam))
            return Objective(sup if extra is None else sup + extra)
        terms = self.loss_fn.sample_terms(logits, y, lam)
        return split_objective(self.mode, terms, y, class_weights=self.class_weights, minority=self.minority,
                               extra=extra)
