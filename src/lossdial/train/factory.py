"""Build the pieces of a run from its config: lambda space, loss, model, optimizer, schedule."""

from __future__ import annotations

import math
from typing import Sequence

import torch

from lossdial.config import Config
from lossdial.data.loader import derive_seed


def resolve_device(spec: str | torch.device | None) -> torch.device:
    """"auto" -> CUDA if available, then MPS, else CPU; anything else is passed to torch.device."""
    if isinstance(spec, torch.device):
        return spec
    if spec in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(spec)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device={spec!r} but CUDA is not available here; use \"auto\" or \"cpu\"")
    return dev


def build_lambda_space(cfg: Config):
    """The LCT lambda space, or None for a baseline run."""
    if not cfg.lct.enabled:
        return None
    from lossdial.conditioning import LambdaSpace, parse_lct

    return LambdaSpace(parse_lct(cfg.lct.lambdas), normalize=cfg.lct.normalize, per_sample=cfg.lct.per_sample)


def build_loss_fn(cfg: Config, class_counts: Sequence[int]):
    """The run's loss on the training class counts (loss.params, plus the cosine head's scale for LDAM)."""
    from lossdial.config import loss_kwargs
    from lossdial.losses import build_loss

    try:
        return build_loss(cfg.loss.family, list(class_counts), **loss_kwargs(cfg))
    except (ValueError, TypeError) as exc:  # e.g. a class_weights list whose length is not the class count
        raise ValueError(f"loss.params ({cfg.loss.family}, {len(class_counts)} classes): {exc}") from None


def build_model_from_config(cfg: Config, input_shape: Sequence[int], lambda_dim: int, num_classes: int = 2):
    """Build the network with its own seeded generator (the global RNG is left as it was)."""
    from lossdial.config import cosine_head_scale
    from lossdial.models import build_model

    conditioned = lambda_dim > 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(cfg.seed, 0x1417))
        return build_model(
            backbone=cfg.model.backbone,
            num_classes=num_classes,
            lambda_dim=lambda_dim,
            film=cfg.model.film if conditioned else None,
            film_hidden=cfg.model.film_hidden,
            placement=cfg.model.placement,
            head=cfg.model.head,
            head_scale=cosine_head_scale(cfg),
            in_channels=int(input_shape[0]) if len(input_shape) == 3 else 1,
            input_shape=tuple(input_shape),
            **cfg.model.backbone_kwargs,
        )


def decays(ndim: int, cfg: Config) -> bool:
    """Whether a parameter of (unstacked) rank ``ndim`` gets ``optim.weight_decay``.

    With ``optim.decay_norm_and_bias: true`` every parameter does (the reference code of LCT, LDAM-DRW and VS);
    otherwise only tensors of rank >= 2 (weight matrices, convolution kernels), and 1-D ones (biases,
    BatchNorm weights, FiLM biases) get 0.
    """
    return cfg.optim.decay_norm_and_bias or ndim > 1


def split_decay(cfg: Config, named: dict[str, torch.Tensor], ndims: dict[str, int] | None = None
                ) -> tuple[list, list]:
    """``(decay, no_decay)`` lists of the trainable tensors in ``named`` by :func:`decays`.

    ``ndims`` gives each name's rank when the tensors are stacked (the stacked trainer); default: their own.
    """
    decay, no_decay = [], []
    for name, p in named.items():
        if p.requires_grad:
            (decay if decays(p.ndim if ndims is None else ndims[name], cfg) else no_decay).append(p)
    return decay, no_decay


def build_optimizer(cfg: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    """SGD or AdamW over the parameter groups of :func:`split_decay` (``optim.decay_norm_and_bias``).

    ``optim.fused`` (default: on CUDA) takes one fused kernel per step instead of the foreach kernels.
    """
    return optimizer_from_groups(cfg, *split_decay(cfg, dict(model.named_parameters())))


def effective_lr(cfg: Config) -> float:
    """The base learning rate the optimizer uses: ``optim.lr``, or under ``optim.lr_scaling: linear``
    ``optim.lr * train.batch_size / optim.reference_batch_size`` (Goyal et al. 2017, "Accurate, large minibatch
    SGD"; the global batch under torchrun). The schedule multiplies this rate."""
    o = cfg.optim
    if o.lr_scaling == "linear":
        return o.lr * cfg.train.batch_size / o.reference_batch_size
    return o.lr


def optimizer_from_groups(cfg: Config, decay: list, no_decay: list) -> torch.optim.Optimizer:
    """The configured optimizer over two parameter groups: with and without weight decay (the second group is
    empty under ``optim.decay_norm_and_bias: true``; it is kept so the groups' layout never changes)."""
    groups = [{"params": decay, "weight_decay": cfg.optim.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    o = cfg.optim
    params = decay + no_decay
    on_cuda = bool(params) and params[0].device.type == "cuda"
    fused = on_cuda if o.fused is None else o.fused
    kind = {"fused": True} if fused else {}
    lr = effective_lr(cfg)
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0, **kind)
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(o.betas), **kind)


def lr_factor(step: int, total_steps: int, steps_per_epoch: int, cfg: Config) -> float:
    """Multiplier of the base lr at optimizer step `step` (0-based): linear warm-up, then step/cosine."""
    s = cfg.schedule
    warm = int(round(s.warmup_epochs * steps_per_epoch))
    if warm > 0 and step < warm:
        return (step + 1) / warm
    if s.kind == "constant":
        return 1.0
    if s.kind == "step":
        passed = sum(step >= int(round(m * total_steps)) for m in s.milestones)
        return s.factor ** passed
    t = (step - warm) / max(1, total_steps - warm)
    return s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def build_scheduler(cfg: Config, optimizer, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    total = cfg.train.epochs * steps_per_epoch
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, steps_per_epoch, cfg))


def resolve_loader_kind(cfg: Config, task) -> str:
    """"device", "stream" or "pil" for ``train.loader`` (auto: stream a lazy image folder, else device)."""
    from lossdial.data.images import is_lazy

    lazy = is_lazy(task.train.x)
    kind = cfg.train.loader
    if kind == "auto":
        return "stream" if lazy else "device"
    if kind == "device" and lazy:
        raise ValueError("train.loader: device needs the images in memory, but data.in_memory is false; set "
                         "train.loader: stream (or auto), or data.in_memory: true for data that fit in memory")
    if kind in ("stream", "pil") and len(task.input_shape) != 3:
        raise ValueError(f"train.loader: {kind} takes images [C, H, W]; this data is {list(task.input_shape)} "
                         f"(tables live in memory): set train.loader: device (or auto)")
    if kind == "pil" and task.train.x.dtype != torch.uint8:
        raise ValueError(f"train.loader: pil takes uint8 images; this data is "
                         f"{str(task.train.x.dtype).removeprefix('torch.')}: use train.loader: stream")
    return kind


def build_train_loader(cfg: Config, task, dev: torch.device):
    """The training-split loader: on-device tensors (augmented by the loop) or a streaming DataLoader."""
    from lossdial.data.loader import TensorLoader

    tc = cfg.train
    seed = derive_seed(cfg.seed, 0x5FF1)
    kind = resolve_loader_kind(cfg, task)
    if kind in ("stream", "pil"):
        from lossdial.data.streaming import StreamingLoader

        return StreamingLoader(task.train.x, task.train.y, tc.batch_size, augment=tc.augment,
                               padding=tc.crop_padding, erasing=tc.random_erasing, shuffle=True, seed=seed,
                               aug_seed=derive_seed(cfg.seed, 0xA06E), drop_last=tc.drop_last,
                               num_workers=tc.num_workers, pin_memory=tc.pin_memory, device=dev,
                               to_pil=kind == "pil")
    return TensorLoader(task.train.x.to(dev), task.train.y.to(dev), tc.batch_size, shuffle=True, seed=seed,
                        drop_last=tc.drop_last)
