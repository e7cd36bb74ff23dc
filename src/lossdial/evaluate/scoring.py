"""Score a split for K lambda values with one backbone pass (FiLM sits after the backbone)."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

#: What :func:`score_lambdas` can return.
SCORE_OUTPUTS = ("positive", "probs", "logits")


@torch.no_grad()
def score_lambdas(model, x: torch.Tensor, lambdas: Sequence[Mapping[str, float]] | None, space=None, *,
                  batch_size: int = 1024, device: torch.device | str = "cpu",
                  amp: bool = False, transform=None, output: str = "positive") -> np.ndarray:
    """The model's scores of ``x`` at K lambda values (K = len(lambdas), or 1 for an unconditioned model).

    ``output``: ``"positive"`` -- the positive-class probability softmax(z)[:, 1], shape [K, N] (binary
    tasks); ``"probs"`` -- every class's probability, [K, N, C]; ``"logits"`` -- the logits z, [K, N, C]
    (multi-class tasks: the post-hoc adjustment z_c - t log pi_c acts on them).

    The backbone runs once per input batch; only ``model.head`` runs K times. ``transform`` (e.g. the
    run's :class:`~lossdial.data.task.Normalizer`) is applied to each raw input batch on the device.
    """
    if output not in SCORE_OUTPUTS:
        raise ValueError(f"output must be one of {list(SCORE_OUTPUTS)}, got {output!r}")
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
    out = None
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
                    s = logits if output == "logits" else torch.softmax(logits, dim=1)
                    if output == "positive":
                        s = s[:, 1]
                    if out is None:
                        out = np.empty((len(z_all), len(x), *s.shape[1:]), dtype=np.float64)
                    out[k, start:start + len(xb)] = s.cpu().numpy()
    finally:
        model.train(was_training)
    if out is None:  # no inputs
        c = getattr(model, "num_classes", 2)
        out = np.empty((len(z_all), 0) if output == "positive" else (len(z_all), 0, c), dtype=np.float64)
    return out
