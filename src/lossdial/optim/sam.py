"""Sharpness-aware minimisation (SAM) and its class-imbalance forms, as a gradient rule for the training loop.

One SAM step (Foret, Kleiner, Mobahi, Neyshabur, "Sharpness-aware minimization for efficiently improving
generalization", ICLR 2021)::

    g  = grad L_asc(w)                       first pass, at w (BatchNorm running statistics updated here)
    e  = rho * g / ||g||                     (ASAM: e = rho * T^2 g / ||T g||,  T = |w| + eta)
    g' = grad L(w + e)                       second pass, at w + e (BatchNorm running statistics frozen)
    w  <- optimizer step from w with g'      (clipping, weight decay, momentum: as for a plain gradient)

``mode`` chooses the ascent loss and how the batch is split:

- ``"sam"``: ``L_asc = L`` (Foret et al.).
- ``"asymmetric"`` (SAM-A of Shwartz-Ziv, Goldblum, Li, Bruss, Wilson, NeurIPS 2023, as in their code): the
  ascent direction comes from the class-weighted loss ``sum_i c_{y_i} r_i`` with ``c_c = (n_max / n_c)^k``
  (``r_i``: sample i's term of the plain loss, ``sum_i r_i = L``), so the perturbation leans towards the
  rare classes; the descent gradient is that of the plain loss ``L`` at ``w + e``. The scale of the weighted
  loss is irrelevant (``e`` depends only on the direction of its gradient).
- ``"groups"``: ``L = L_min + L_maj`` (the minority and majority classes' terms of the batch loss), each
  group with its own radius: ``g' = grad L_min(w + e_min) + grad L_maj(w + e_maj)``,
  ``e_G = rho_G grad L_G(w) / ||grad L_G(w)||``. ``rho_maj = 0`` leaves the majority term at ``w``: ImbSAM
  (Zhou, Qu, Wang, Shen, Yu, "ImbSAM: A closer look at sharpness-aware minimization in class-imbalanced
  recognition", ICCV 2023). One extra forward and backward pass per perturbed group.

ASAM (Kwon, Kim, Park, Choi, "ASAM: Adaptive sharpness-aware minimization for scale-invariant learning of
deep neural networks", ICML 2021) uses ``T_w = |w| + eta`` (their eta = 0.01) on every parameter (Kwon et
al.'s code applies it to the parameters named ``weight`` and leaves biases at T = 1).

The weights are restored exactly (a saved copy, not ``w + e - e``) before the optimizer step, so EMA,
clipping and checkpoints see the ordinary parameters; SAM keeps no state of its own between steps (a
resumed run needs nothing extra).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

__all__ = ["SAM_MODES", "Objective", "SharpnessAware", "asymmetric_class_weights", "frozen_batchnorm",
           "minority_classes", "perturbation", "split_objective"]

#: Values of ``optim.sam.mode``.
SAM_MODES = ("sam", "asymmetric", "groups")

_EPS = 1e-12  # added to ||g|| (as davda54/sam): a zero gradient gives e = 0, not NaN


def asymmetric_class_weights(class_counts: Sequence[int], k: float = 1.0) -> Tensor:
    """SAM-A's ascent weights ``c_c = (n_max / n_c)^k`` (float32 ``[C]``; 1 for the largest class).

    >>> asymmetric_class_weights([100, 25, 1], k=0.5).tolist()
    [1.0, 2.0, 10.0]
    """
    n = torch.tensor([float(c) for c in class_counts], dtype=torch.float64)
    return (n.max() / n).pow(float(k)).float()


def minority_classes(class_counts: Sequence[int], below: float | None = None) -> Tensor:
    """The minority group of ``optim.sam.mode: groups`` as a bool mask ``[C]``.

    The rule: a class is in the minority group if its training count is below ``below``; by default below the
    geometric mean ``sqrt(n_max * n_min)`` of the largest and smallest counts (the midpoint in log-count, so a
    binary imbalanced task puts its smaller class there and a long tail splits into head and tail). Raises
    ``ValueError`` if the rule leaves either group empty.

    >>> minority_classes([5000, 50]).tolist(), minority_classes([1000, 300, 100, 30, 10]).tolist()
    ([False, True], [False, False, False, True, True])
    """
    n = torch.tensor([float(c) for c in class_counts], dtype=torch.float64)
    thr = math.sqrt(float(n.max()) * float(n.min())) if below is None else float(below)
    mask = n < thr
    if not bool(mask.any()) or bool(mask.all()):
        rule = (f"below the geometric mean sqrt(n_max * n_min) = {thr:g}" if below is None
                else f"below optim.sam.minority_below = {thr:g}")
        raise ValueError(f"optim.sam.mode groups: the minority group (classes with a training count {rule}) is "
                         f"{'empty' if not bool(mask.any()) else 'every class'} for the class counts "
                         f"{[int(c) for c in n.tolist()]}; set optim.sam.minority_below to a count that splits "
                         f"them, or use optim.sam.mode sam")
    return mask


@torch.no_grad()
def perturbation(params: Sequence[Tensor], grads: Sequence[Tensor | None], rho: float, adaptive: bool = False,
                 eta: float = 0.01) -> list[Tensor | None]:
    """The ascent step ``e`` for each parameter (None where the gradient is None).

    SAM: ``e = rho g / ||g||``; ASAM: ``e = rho T^2 g / ||T g||`` with ``T = |w| + eta``; the norm is over all
    parameters together, plus 1e-12.
    """
    live = [(p, g) for p, g in zip(params, grads) if g is not None]
    if not live:
        return [None] * len(params)
    scales = [p.abs().add_(eta) if adaptive else None for p, _ in live]
    scaled = [g if t is None else t * g for t, (_, g) in zip(scales, live)]  # T g
    norm = torch.linalg.vector_norm(torch.stack([  # at least float32 (bf16/fp16 gradients), float64 kept
        torch.linalg.vector_norm(s, dtype=torch.promote_types(s.dtype, torch.float32)) for s in scaled]))
    factor = rho / (norm + _EPS)
    steps = iter([(s if t is None else t * s) * factor.to(s.dtype) for s, t in zip(scaled, scales)])  # T^2 g
    return [next(steps) if g is not None else None for g in grads]


@contextmanager
def frozen_batchnorm(module: nn.Module) -> Iterator[None]:
    """Inside: BatchNorm layers of ``module`` normalise with the batch's statistics (train mode) but do not
    update their running statistics or ``num_batches_tracked`` (``track_running_stats`` off, restored after)."""
    bns = [m for m in module.modules()
           if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for m in bns:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in bns:
            m.track_running_stats = True


@dataclass
class Objective:
    """What the loop's closure returns for one pass: the loss descended (``loss``), and per mode the ascent
    loss (``asymmetric``) or the two groups' losses ``(L_min, L_maj)`` with ``L_min + L_maj = loss``."""

    loss: Tensor
    ascent: Tensor | None = None
    groups: tuple[Tensor, Tensor] | None = None


def split_objective(mode: str, terms: Tensor, labels: Tensor, *, class_weights: Tensor | None = None,
                    minority: Tensor | None = None, extra: Tensor | None = None) -> Objective:
    """The :class:`Objective` of ``mode`` from the per-sample terms of the supervised loss.

    ``terms[i]`` is sample i's share of the batch loss (``sum_i terms_i`` = the loss), ``labels`` its class,
    ``extra`` a class-free term added to the loss (Joint-SSL's ``mu * NT-Xent``; it goes with the ascent loss
    in ``asymmetric`` and with the majority group in ``groups``). ``class_weights`` (``[C]``) for
    ``asymmetric``, ``minority`` (bool ``[C]``) for ``groups``.
    """
    add = (lambda t: t) if extra is None else (lambda t: t + extra)  # noqa: E731
    loss = add(terms.sum())
    if mode == "sam":
        return Objective(loss)
    if mode == "asymmetric":
        return Objective(loss, ascent=add((class_weights[labels] * terms).sum()))
    if mode == "groups":
        in_min = minority[labels]
        l_min = torch.where(in_min, terms, torch.zeros_like(terms)).sum()
        l_maj = add(torch.where(in_min, torch.zeros_like(terms), terms).sum())
        return Objective(loss, groups=(l_min, l_maj))
    raise ValueError(f"unknown SAM mode {mode!r}; choose from {SAM_MODES}")


class SharpnessAware:
    """The SAM gradient of one step: :meth:`gradients` fills ``p.grad`` for every parameter in ``params``.

    Args:
        params: the trainable parameters (all are perturbed).
        module: the module(s) whose BatchNorm layers are frozen in the perturbed passes (an ``nn.Module``).
        rho: the radius (SAM, SAM-A; > 0).
        adaptive: ASAM's scaled perturbation, with ``eta``.
        mode: one of :data:`SAM_MODES`.
        rho_min, rho_maj: ``groups``: the minority and majority groups' radii (>= 0; 0 = unperturbed).
    """

    def __init__(self, params: Sequence[Tensor], module: nn.Module, *, rho: float, adaptive: bool = False,
                 eta: float = 0.01, mode: str = "sam", rho_min: float | None = None, rho_maj: float = 0.0):
        if mode not in SAM_MODES:
            raise ValueError(f"unknown SAM mode {mode!r}; choose from {SAM_MODES}")
        self.params = [p for p in params if p.requires_grad]
        self.module = module
        self.rho, self.adaptive, self.eta, self.mode = float(rho), bool(adaptive), float(eta), mode
        self.rho_min = float(rho if rho_min is None else rho_min)
        self.rho_maj = float(rho_maj)

    def _grads(self, loss: Tensor, retain: bool = False) -> list[Tensor | None]:
        return list(torch.autograd.grad(loss, self.params, retain_graph=retain, allow_unused=True))

    def _accumulate(self, grads: Sequence[Tensor | None]) -> None:
        for p, g in zip(self.params, grads):
            if g is None:
                continue
            if p.grad is None:
                p.grad = g.detach().clone()
            else:
                p.grad.add_(g)

    def _perturbed(self, grads: Sequence[Tensor | None], rho: float, closure: Callable[[], Objective]
                   ) -> Objective:
        """Run ``closure`` at ``w + e(grads, rho)`` with BatchNorm statistics frozen; restore ``w`` after."""
        e = perturbation(self.params, grads, rho, self.adaptive, self.eta)
        saved = [p.detach().clone() for p in self.params]
        try:
            with torch.no_grad():
                for p, d in zip(self.params, e):
                    if d is not None:
                        p.add_(d)
            with frozen_batchnorm(self.module):
                return closure()
        finally:
            with torch.no_grad():
                for p, s in zip(self.params, saved):
                    p.copy_(s)

    def gradients(self, closure: Callable[[], Objective]) -> Tensor:
        """Fill ``p.grad`` with this step's SAM gradient (``p.grad`` should be None or zero before); returns
        the loss at ``w`` (detached).

        ``closure()`` runs the forward pass on the step's fixed batch, views and lambda and returns an
        :class:`Objective`; it is called once at ``w`` and once per perturbed point. The backward pass at the
        perturbed point runs inside the weight restore, so the gradient is taken at ``w + e``.
        """
        first = closure()
        if self.mode == "groups":
            l_min, l_maj = first.groups
            g_min = self._grads(l_min, retain=True)
            g_maj = self._grads(l_maj)
            for grads, rho, index in ((g_min, self.rho_min, 0), (g_maj, self.rho_maj, 1)):
                if rho == 0:
                    self._accumulate(grads)
                else:
                    self._perturbed(grads, rho, lambda: _backward(closure().groups[index]))
            return first.loss.detach()
        ascent = first.ascent if self.mode == "asymmetric" else first.loss
        grads = self._grads(ascent)
        self._perturbed(grads, self.rho, lambda: _backward(closure().loss))
        return first.loss.detach()


def _backward(loss: Tensor) -> Objective:
    loss.backward()
    return Objective(loss.detach())
