"""Export a run at one operating point as a plain PyTorch model (no lossdial needed to deploy).

FiLM at a fixed lambda is an affine map with constant sigma and mu, so it folds into the final linear
layer (``ConditionedClassifier.fold_head``); a cosine head (``model.head: cosine``) normalises the features
FiLM modulates, so there the fixed affine layer stays and the normalised head follows it
(``ConditionedClassifier.fixed_head``). The exported module takes RAW inputs (as stored in the run's splits)
and applies the run's normalisation.

Binary runs: it returns P(positive), shape [B]. Multi-class runs: the point's post-hoc logit adjustment t is
part of the model -- ``-t log pi_c`` (pi the training class frequencies) is added to a linear head's bias, or
follows a cosine head as a bias-only :class:`LogitShift` layer -- and it returns the C class probabilities
``softmax(z_c - t log pi_c)``, shape [B, C], in label order (``export.json`` ``class_names``).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from lossdial.rundir import atomic_write_bytes, write_json


class LogitShift(nn.Module):
    """``z -> z + bias``: a constant per-class shift of the logits (the post-hoc adjustment -t log pi_c after a
    head that has no bias of its own, e.g. the cosine head)."""

    bias: torch.Tensor

    def __init__(self, bias: torch.Tensor):
        super().__init__()
        self.register_buffer("bias", bias.detach().clone())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z + self.bias


class ExportedClassifier(nn.Module):
    """normalise -> backbone -> head at one lambda (folded linear, or fixed FiLM + cosine) -> softmax:
    P(positive) ``[B]`` (binary) or every class's probability ``[B, C]`` (``all_classes``, multi-class)."""

    def __init__(self, backbone: nn.Module, head: nn.Module, mean: list[float], std: list[float], image: bool,
                 all_classes: bool = False):
        super().__init__()
        shape = (1, -1, 1, 1) if image else (1, -1)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(shape))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(shape))
        self.backbone = backbone
        self.head = head
        self.all_classes = all_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.backbone((x.float() - self.mean) / self.std)
        p = torch.softmax(self.head(h.flatten(1)), dim=1)
        return p if self.all_classes else p[:, 1]


def adjusted_head(head: nn.Module, train_counts: list[int], adjustment: float) -> nn.Module:
    """``head`` followed by the post-hoc logit adjustment z_c - t log pi_c (pi = train_counts / sum): folded
    into the bias of an ``nn.Linear`` head, appended as a :class:`LogitShift` to any other head."""
    from lossdial.evaluate.multiclass import adjust_logits

    # the shift -t log pi_c, from the one definition of the adjustment (applied to zero logits)
    shift = adjust_logits(torch.zeros(len(train_counts), dtype=torch.float64), train_counts, adjustment)
    if isinstance(head, nn.Linear) and head.bias is not None:
        with torch.no_grad():
            head.bias.add_(shift.to(head.bias.dtype).to(head.bias.device))
        return head
    param = next(iter(head.parameters()), None)
    return nn.Sequential(head, LogitShift(shift.to(torch.float32 if param is None else param.dtype)
                                          .to("cpu" if param is None else param.device)))


def build_exported(loaded, lam: Mapping[str, float] | None, adjustment: float | None = None) -> ExportedClassifier:
    """The run at lambda ``lam`` (None for a baseline) as an :class:`ExportedClassifier`; a multi-class run
    needs its ``adjustment`` t (0: no adjustment), folded into the head (:func:`adjusted_head`)."""
    import copy

    multiclass = loaded.task_type.name == "multiclass"
    if multiclass and adjustment is None:
        raise ValueError("a multi-class export needs the point's adjustment t (0: the model's own probabilities)")
    if not multiclass and adjustment is not None:
        raise ValueError("adjustment (the post-hoc logit adjustment t) applies to multi-class runs; a binary run "
                         "exports P(positive), thresholded by its point's threshold")
    model = loaded.model
    z = loaded.space.encode(lam, batch_size=1) if loaded.is_lct else None
    with torch.no_grad():
        head = model.fixed_head(z.to(loaded.device) if z is not None else None)
    if multiclass:
        head = adjusted_head(head, loaded.train_counts, adjustment)
    norm = loaded.data["normalization"]
    exp = ExportedClassifier(copy.deepcopy(model.backbone), head, norm["mean"], norm["std"],
                             image=norm["kind"] == "image", all_classes=multiclass)
    return exp.eval()


def export_run(loaded, name: str, point: Mapping[str, Any], out_dir: str | Path) -> dict[str, Any]:
    """Write state dict (safetensors), TorchScript and metadata for `point` into `out_dir`.

    ``point``: a model-card entry (``lambda`` and ``threshold`` for a binary run, ``lambda`` and ``adjustment``
    for a multi-class one; see :func:`lossdial.predict.operating_point`). A multi-class entry's ``prior`` (the
    deployment class prior it was picked at), when present, is recorded in export.json.
    """
    from safetensors.torch import save

    from lossdial.predict import operating_point

    op = operating_point(loaded, point, name=name)
    multiclass = op.adjustment is not None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lam = op.lam
    module = build_exported(loaded, lam, op.adjustment).to("cpu")
    sd = {k: v.detach().contiguous().clone() for k, v in module.state_dict().items()}
    atomic_write_bytes(out / "weights.safetensors", save(sd))
    example = torch.zeros((2, *loaded.data["input_shape"]), dtype=torch.float32)
    files = {"state_dict": "weights.safetensors"}
    # TorchScript (asked for by deployment targets that still load it; deprecated in recent torch)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(module, example, check_trace=False)
        tmp = out / ".model.ts.tmp"
        traced.save(str(tmp))
    tmp.replace(out / "model.ts")
    files["torchscript"] = "model.ts"
    # torch.export, PyTorch's successor format, with a dynamic batch dimension
    export_error = None
    try:
        ep = torch.export.export(module, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
        # into a buffer, then an atomic write: torch.export.save warns about any file name not ending in .pt2
        buf = io.BytesIO()
        torch.export.save(ep, buf)
        atomic_write_bytes(out / "model.pt2", buf.getvalue())
        files["torch_export"] = "model.pt2"
    except Exception as exc:  # noqa: BLE001 - some backbones may not export; TorchScript still works
        export_error = f"{type(exc).__name__}: {exc}"
    if multiclass:
        counts = loaded.train_counts
        meta = {"name": name, "task": "multiclass", "lambda": lam, "adjustment": op.adjustment,
                "input_shape": loaded.data["input_shape"],
                "input": "raw inputs as in the run's data (normalisation is inside the model)",
                "output": "class probabilities softmax(z_c - adjustment * log train_prior_c), shape [batch, C], "
                          "in the order of class_names (predict the argmax)",
                "class_names": loaded.data["class_names"], "train_counts": counts,
                "train_prior": [c / sum(counts) for c in counts], "prior": point.get("prior"),
                "run": str(loaded.path), "files": files, "torch_export_error": export_error}
    else:
        meta = {"name": name, "lambda": lam, "threshold": op.threshold, "input_shape": loaded.data["input_shape"],
                "input": "raw inputs as in the run's data (normalisation is inside the model)",
                "output": "P(positive) per sample; predict positive when output >= threshold",
                "positive_class": loaded.data["class_names"][1], "run": str(loaded.path),
                "files": files, "torch_export_error": export_error}
    write_json(out / "export.json", meta)
    return meta
