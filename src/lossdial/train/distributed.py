"""Data-parallel training under ``torchrun`` (PyTorch's own launcher and DistributedDataParallel).

``torchrun --nproc_per_node=N -m lossdial train CONFIG --out RUN`` starts N processes; each finds
``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in its environment, and :func:`from_env` joins the process group
(NCCL on CUDA, gloo otherwise). Without those variables (or with ``WORLD_SIZE=1``) nothing here is used
and training is the ordinary single-process loop, bit for bit.

How one step is split across ranks (the loop's changes are a handful of lines):

* **Data.** Every rank builds the same loader (same seed -> the same per-epoch permutation), draws the
  same global batch of ``train.batch_size`` samples, augments it with the same generator and draws the
  same lambda for it; then :meth:`DistContext.shard` keeps this rank's contiguous slice
  (``batch_size / world_size`` samples; ``train.batch_size`` must be divisible by the world size). So
  the lambda stream, the augmentation and the sample order are exactly those of a single-process run
  with the same global batch. (The last, smaller batch of an epoch is split as evenly as possible.)
* **Loss.** The losses normalise a weighted mean by the batch's weight sum, ``sum_i w_i l_i / sum_i w_i``
  (PyTorch ``cross_entropy(weight=)`` semantics), and ranks see different class mixes, so the average
  of per-rank weighted means is *not* the global weighted mean. :meth:`DistContext.loss` computes each
  rank's numerator ``sum_{i in rank} w_i l_i`` and all-reduces the denominators ``S = sum_all w_i``
  (a detached scalar, one small all-reduce per step), and returns ``numerator * world_size / S``; DDP
  averages gradients over ranks, so the gradient is exactly that of the global weighted mean
  ``sum_all w_i l_i / S``. The per-sample losses and weights come from the loss family's
  ``_per_sample`` hook (the documented subclass contract of ``ImbalanceLoss``), the same call its
  ``forward`` makes, and the family's ``mean_parts`` (focal's plain mean divides by the batch size: its
  denominator all-reduces to the global batch size the same way).
* **Metrics.** The logged training loss is all-reduced (mean over ranks of the rank terms = the global
  weighted mean). Validation runs on every rank on the full split (identical models, identical numbers).
* **Writes.** Only rank 0 prepares, writes and logs the run directory, checkpoints and weights; the other
  ranks wait at barriers and read the checkpoint only to resume (a filesystem shared by all ranks).
* **BatchNorm.** Per-rank statistics differ by design; on CUDA, ``train.sync_batchnorm`` (default true)
  converts BatchNorm layers to ``SyncBatchNorm``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

T = TypeVar("T")

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def env_world_size() -> int:
    """WORLD_SIZE from the environment (1 when not launched by torchrun)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def env_rank() -> int:
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def is_main_process() -> bool:
    """True unless this is a non-zero rank of a torchrun launch (for the CLI: print on rank 0 only)."""
    return env_rank() == 0


@dataclass
class DistContext:
    """This process's place in a data-parallel run."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    owns_group: bool  # we initialised the process group, so we destroy it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ---- setup ------------------------------------------------------------------------------------
    def check_batch_size(self, batch_size: int) -> None:
        if batch_size % self.world_size:
            raise ValueError(f"train.batch_size={batch_size} is the global batch and must be divisible by the "
                             f"number of processes ({self.world_size}); e.g. --set train.batch_size="
                             f"{max(1, batch_size // self.world_size) * self.world_size}")

    def wrap_model(self, model: nn.Module, device: torch.device, sync_batchnorm: bool = True
                   ) -> tuple[nn.Module, nn.Module]:
        """(the model to save/evaluate/optimise, the DDP wrapper to run the training forward pass with)."""
        if sync_batchnorm and device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ids = [device.index] if device.type == "cuda" else None
        ddp = nn.parallel.DistributedDataParallel(model, device_ids=ids, output_device=ids[0] if ids else None)
        return model, ddp

    # ---- per step ---------------------------------------------------------------------------------
    def bounds(self, n: int) -> tuple[int, int]:
        """[start, stop) of this rank's contiguous slice of a global batch of n samples (sizes differ by <= 1)."""
        base, extra = divmod(n, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return start, start + base + (1 if self.rank < extra else 0)

    def shard(self, xb: Tensor, yb: Tensor, lam: Mapping[str, Tensor] | None, z: Tensor | None):
        """This rank's slice of the global batch, of its per-sample lambdas and of the FiLM input."""
        n = len(yb)
        a, b = self.bounds(n)
        if lam is not None:
            lam = {k: (v[a:b] if v.ndim == 1 and v.shape[0] == n else v) for k, v in lam.items()}
        if z is not None:
            z = z[a:b]
        return xb[a:b], yb[a:b], lam, z

    def loss(self, loss_fn: nn.Module, logits: Tensor, targets: Tensor, lam: Mapping[str, Any] | None) -> Tensor:
        """This rank's term of the global weighted mean (see the module doc); DDP's gradient average
        of these terms is the gradient of ``sum_all w_i l_i / sum_all w_i``."""
        num, den = loss_parts(loss_fn, logits, targets, lam)
        total = den.detach().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return num * self.world_size / total.clamp_min(torch.finfo(total.dtype).tiny)

    def average_(self, t: Tensor) -> Tensor:
        """In place: the mean of `t` over ranks."""
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= self.world_size
        return t

    # ---- coordination -----------------------------------------------------------------------------
    def barrier(self) -> None:
        dist.barrier()

    def on_main(self, fn: Callable[[], T]) -> T:
        """Run `fn` on rank 0 only and hand its result (or its exception) to every rank."""
        box: list[Any] = [None]
        if self.is_main:
            try:
                box[0] = ("ok", fn())
            except Exception as exc:  # re-raised on every rank below
                box[0] = ("error", exc)
        dist.broadcast_object_list(box, src=0)
        status, value = box[0]
        if status == "error":
            raise value
        return value

    def close(self, wait: bool = True) -> None:
        """Wait for every rank (unless failing), then leave the process group if we created it."""
        if dist.is_initialized():
            if wait:
                dist.barrier()
            if self.owns_group:
                dist.destroy_process_group()


def from_env(device: torch.device) -> tuple[DistContext | None, torch.device]:
    """Join the process group torchrun describes in the environment, or (None, device) outside torchrun.

    On CUDA each rank takes ``cuda:LOCAL_RANK`` (unless the device names an index). The backend is NCCL
    on CUDA and gloo otherwise; an already initialised group (a launcher of your own) is used as is.
    """
    world = env_world_size()
    if world <= 1 or not all(v in os.environ for v in ENV_VARS):
        return None, device
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    local_rank = int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kw = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend=backend, **kw)
        owns = True
    ctx = DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank,
                      backend=str(dist.get_backend()), owns_group=owns)
    return ctx, device


def loss_parts(loss_fn: nn.Module, logits: Tensor, targets: Tensor, lam: Mapping[str, Any] | None,
               sample_weight: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(numerator, denominator) of one batch's mean, with the loss = their ratio.

    Uses :class:`~lossdial.losses.base.ImbalanceLoss`'s subclass contract (``_check_inputs``,
    ``resolve_hparams``, ``_per_sample``), exactly the calls its ``forward`` makes, and the family's own
    ``mean_parts`` (``(sum_i w_i l_i, sum_i w_i)``; focal's plain mean: ``(sum_i w_i l_i, B)``). A loss
    without it must use ``reduction="mean"`` semantics with all-one weights (plain mean), which is then assumed.

    ``sample_weight`` ``[B]`` (the scikit-learn estimator's ``fit(sample_weight=)``) multiplies each sample's
    weight: ``w_i -> s_i w_i`` in both parts (all-one weights become ``s_i``).
    """
    per_sample = getattr(loss_fn, "_per_sample", None)
    reduction = getattr(loss_fn, "reduction", "mean")
    if reduction not in ("mean", "weighted_mean"):
        raise ValueError("distributed training needs a loss with reduction='mean' (or focal's 'weighted_mean')")
    if per_sample is None:
        if sample_weight is not None:
            raise ValueError(f"{type(loss_fn).__name__} has no per-sample losses (_per_sample): it cannot take "
                             f"sample weights")
        value = loss_fn(logits, targets, lam=lam)
        n = torch.tensor(float(len(targets)), dtype=value.dtype, device=value.device)
        return value * n, n
    logits, targets = loss_fn._check_inputs(logits, targets)
    hp = loss_fn.resolve_hparams(lam, logits.shape[0], logits.device, logits.dtype)
    losses, weights = per_sample(logits, targets, hp)
    if sample_weight is not None:
        sample_weight = sample_weight.to(losses.dtype)
        weights = sample_weight if weights is None else weights * sample_weight
    return loss_fn.mean_parts(losses, weights)
