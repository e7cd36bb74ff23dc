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
from lossdial.data.augment import augment_batch, corrupt_features
from lossdial.data.loader import derive_seed
from lossdial.losses.ssl import nt_xent
from lossdial.optim.sam import (Objective, SharpnessAware, asymmetric_class_weights, minority_classes,
                                split_objective)

__all__ = ["ProjectionHead", "StepObjective", "build_projector", "build_sam", "check_run", "joint_ssl_forward",
           "second_view"]


class ProjectionHead(nn.Module):
    """Joint-SSL's projector ``g``: ``Linear(F, hidden) -> ReLU -> Linear(hidden, out)`` (SimCLR, Chen et al.
    2020; the Simplifying paper: feature -> 2048 -> 128)."""

    def __init__(self, in_features: int, hidden: int = 2048, out: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out))

    def forward(self, f: Tensor) -> Tensor:
        return self.net(f)


def check_run(cfg: Config, loader_kind: str, distributed: bool, class_counts, data_kind: str | None = None) -> None:
    """Refuse the combinations this module cannot train (before the run directory is written). ``data_kind``:
    the task's "image" or "table" (checked against ``ssl.views``; an npz source is known only here)."""
    views = cfg.ssl.views
    if cfg.ssl.enabled and data_kind is not None and (views == "corruption") != (data_kind == "table"):
        fit = "corruption (SCARF feature corruption)" if data_kind == "table" else "augment with train.augment"
        raise ValueError(f"ssl.views: {views} does not fit this data ({data_kind}s from data.source "
                         f"{cfg.data.source}); set ssl.views: {fit}")
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


def second_view(cfg: Config, raw: Tensor, pool: Tensor | None, generator: torch.Generator) -> Tensor:
    """Joint-SSL's second view of the raw batch ``raw`` (before normalisation), from ``generator`` (the run's
    augmentation stream, drawn right after the first view): another draw of ``train.augment``
    (``ssl.views: augment``), or the rows with a fraction ``ssl.corruption`` of their features replaced by the
    same features of random rows of ``pool``, the raw training split (``ssl.views: corruption``, SCARF; the
    first view is then the row itself)."""
    tc = cfg.train
    if cfg.ssl.views == "corruption":
        return corrupt_features(raw, pool, cfg.ssl.corruption, generator)[0]
    return augment_batch(raw, tc.augment, generator, tc.crop_padding, tc.random_erasing)


def joint_ssl_forward(model: nn.Module, projector: nn.Module, x: Tensor, x2: Tensor, z: Tensor | None,
                      supervised: str = "first") -> tuple[Tensor, Tensor, Tensor]:
    """One backbone pass on ``[x; x2]``: ``(logits, h1, h2)`` with ``h = projector(features)`` of each view
    (before FiLM) and the logits of the first view (``supervised: first``, [B, C]) or of both ([2B, C], the
    first view's rows first, both at ``z``)."""
    n = x.shape[0]
    f = model.features(torch.cat([x, x2]))
    if supervised == "first":
        logits = model.head(f[:n], z)
    else:
        logits = model.head(f, None if z is None else torch.cat([z, z]))
    h = projector(f)
    return logits, h[:n], h[n:]


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
                logits, h1, h2 = joint_ssl_forward(self.model, self.projector, x, x2, z, self.ssl.supervised)
                if self.ssl.supervised == "both":
                    y, lam = torch.cat([y, y]), _twice(lam, n)
        if self.projector is not None:
            extra = self.ssl.weight * nt_xent(_at_least_f32(h1), _at_least_f32(h2), self.ssl.temperature)
        logits = _at_least_f32(logits)
        if self.mode == "sam":
            sup = (self.loss_fn(logits, y, lam=lam) if self.dctx is None
                   else self.dctx.loss(self.loss_fn, logits, y, lam))
            return Objective(sup if extra is None else sup + extra)
        terms = self.loss_fn.sample_terms(logits, y, lam)
        return split_objective(self.mode, terms, y, class_weights=self.class_weights, minority=self.minority,
                               extra=extra)
