"""Export a run at one operating point as a plain PyTorch model (no lossdial needed to deploy).

FiLM at a fixed lambda is an affine map with constant sigma and mu, so it folds into the final linear
layer (``ConditionedClassifier.fold_head``); a cosine head (``model.head: cosine``) normalises the features
FiLM modulates, so there the fixed affine layer stays and the normalised head follows it
(``ConditionedClassifier.fixed_head``). The exported module takes RAW inputs (as stored in the run's splits),
applies the run's normalisation, and returns P(positive), shape [B].
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from lossdial.rundir import atomic_write_bytes, write_json


class ExportedClassifier(nn.Module):
    """normalise -> backbone -> head at one lambda (folded linear, or fixed FiLM + cosine) -> softmax[:, 1]."""

    def __init__(self, backbone: nn.Module, head: nn.Module, mean: list[float], std: list[float], image: bool):
        super().__init__()
        shape = (1, -1, 1, 1) if image else (1, -1)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(shape))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(shape))
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.backbone((x.float() - self.mean) / self.std)
        return torch.softmax(self.head(h.flatten(1)), dim=1)[:, 1]


def build_exported(loaded, lam: Mapping[str, float] | None) -> ExportedClassifier:
    import copy

    model = loaded.model
    z = loaded.space.encode(lam, batch_size=1) if loaded.is_lct else None
    with torch.no_grad():
        head = model.fixed_head(z.to(loaded.device) if z is not None else None)
    norm = loaded.data["normalization"]
    exp = ExportedClassifier(copy.deepcopy(model.backbone), head, norm["mean"], norm["std"],
                             image=norm["kind"] == "image")
    return exp.eval()


def export_run(loaded, name: str, point: Mapping[str, Any], out_dir: str | Path) -> dict[str, Any]:
    """Write state dict (safetensors), TorchScript and metadata for `point` into `out_dir`."""
    from safetensors.torch import save

    from lossdial.evaluate.run import require_binary

    require_binary(loaded.config.data.task, "export")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lam = point.get("lambda") if loaded.is_lct else None
    module = build_exported(loaded, lam).to("cpu")
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
    meta = {"name": name, "lambda": lam, "threshold": point["threshold"], "input_shape": loaded.data["input_shape"],
            "input": "raw inputs as in the run's data (normalisation is inside the model)",
            "output": "P(positive) per sample; predict positive when output >= threshold",
            "positive_class": loaded.data["class_names"][1], "run": str(loaded.path),
            "files": files, "torch_export_error": export_error}
    write_json(out / "export.json", meta)
    return meta
