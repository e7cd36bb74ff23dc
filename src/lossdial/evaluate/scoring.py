"""Score a split for K lambda values with one backbone pass (FiLM sits after the backbone)."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch


@torch.no_grad()
def score_lambdas(model, x: torch.Tensor, lambdas: Sequence[Mapping[str, float]] | None, space=None, *,
                  batch_size: int = 1024, device: torch.device | str = "cpu",
                  amp: bool = False, transform=None) -> np.ndarray:
    """Positive-class probabilities, shape [K, N] (K = len(lambdas), or 1 for an unconditioned model).

    The backbone runs once per input batch; only ``model.head`` runs K times. ``transform`` (e.g. the
    run's :class:`~lossdial.data.task.Normalizer`) is applied to each raw input batch on the device.
    """
    device = torch.device(device)
    conditioned = getattr(model, "conditioned", False)
    if conditioned:
        if not lambdas or space is None:
            raise ValueError("a conditioned (LCT) model needs lambda values and its LambdaSpace to be scored")
        z_all = [space.encode(lam, batch_size=1).to(device) for lam in lambdas]
    else:
        z_all = [None]
    was_training = model.training
    model.eval()
    out = np.empty((len(z_all), len(x)), dtype=np.float64)
    try:
        for start in range(0, len(x), batch_size):
            xb = x[start:start + batch_size].to(device, non_blocking=True)
            if transform is not None:
                xb = transform(xb)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                                enabled=amp and device.type == "cuda"):
                feats = model.features(xb)
                for k, z in enumerate(z_all):
                    zb = None if z is None else z.expand(len(xb), -1)
                    logits = model.head(feats, zb).float()
                    out[k, start:start + len(xb)] = torch.softmax(logits, dim=1)[:, 1].cpu().numpy()
    finally:
        model.train(was_training)
    return out
