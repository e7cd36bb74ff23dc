"""Batched, vectorised image augmentation on the device: random crop, flip and TrivialAugment.

:func:`augment_batch` is the one entry point the training loop calls. Every random draw comes from the
CPU ``generator`` (so CPU and GPU runs see the same augmentations) in one vectorised call per batch, and
is moved to the batch's device; there is no Python loop over images and no round trip through PIL.

:func:`trivial_augment` is TrivialAugment-Wide (Müller & Hutter 2021) with torchvision's augmentation
space, operations and magnitudes (``torchvision.transforms.v2.TrivialAugmentWide``, 31 bins, nearest
interpolation, zero fill): each image draws one of 14 operations uniformly, one of 31 magnitude bins
uniformly and, for signed operations, a sign with probability 1/2. Images are grouped by operation and
each group is transformed in one batched call (all geometric operations share one ``grid_sample``); the
per-image result equals torchvision's functional op at that image's magnitude (tested against
``torchvision.transforms.v2.functional``). Inputs are uint8 [B, C, H, W] (values 0..255) or float in
[0, 1], with C = 1 or 3, like torchvision.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

AUGMENT_MODES = ("none", "flip", "crop", "crop_flip", "trivial", "crop_flip_trivial")

TRIVIAL_OPS = ("identity", "shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness", "color",
               "contrast", "sharpness", "posterize", "solarize", "autocontrast", "equalize")
_SIGNED = {"shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness", "color", "contrast",
           "sharpness"}
_AFFINE = ("shear_x", "shear_y", "translate_x", "translate_y", "rotate")


def to_device(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """Copy a CPU tensor to ``device`` without a host sync: on CUDA through pinned memory, asynchronously
    (a plain ``.to("cuda")`` of pageable memory waits for the GPU to drain its queue)."""
    device = torch.device(device)
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def trivial_magnitudes(num_bins: int = 31) -> dict[str, torch.Tensor | None]:
    """torchvision's TrivialAugmentWide magnitude bins per operation (float32, as torchvision builds them)."""
    lin = lambda a, b: torch.linspace(a, b, num_bins)  # noqa: E731
    return {
        "identity": None, "shear_x": lin(0.0, 0.99), "shear_y": lin(0.0, 0.99),
        "translate_x": lin(0.0, 32.0), "translate_y": lin(0.0, 32.0), "rotate": lin(0.0, 135.0),
        "brightness": lin(0.0, 0.99), "color": lin(0.0, 0.99), "contrast": lin(0.0, 0.99),
        "sharpness": lin(0.0, 0.99),
        "posterize": (8 - (torch.arange(num_bins) / ((num_bins - 1) / 6))).round().int(),
        "solarize": lin(1.0, 0.0), "autocontrast": None, "equalize": None,
    }


def draw_trivial(batch_size: int, generator: torch.Generator, num_bins: int = 31
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image (operation index, magnitude bin, sign in {+1, -1}) drawn in one call each (CPU tensors)."""
    op = torch.randint(len(TRIVIAL_OPS), (batch_size,), generator=generator)
    mag_bin = torch.randint(num_bins, (batch_size,), generator=generator)
    sign = torch.where(torch.rand(batch_size, generator=generator) <= 0.5, -1.0, 1.0).double()
    return op, mag_bin, sign


def signed_magnitudes(op: torch.Tensor, mag_bin: torch.Tensor, sign: torch.Tensor, num_bins: int = 31
                      ) -> torch.Tensor:
    """The float64 magnitude each image uses (0 for operations without one), signed where torchvision signs."""
    table = trivial_magnitudes(num_bins)
    mag = torch.zeros(len(op), dtype=torch.float64)
    for k, name in enumerate(TRIVIAL_OPS):
        if table[name] is None:
            continue
        sel = op == k
        m = table[name].double()[mag_bin[sel]]
        mag[sel] = m * sign[sel] if name in _SIGNED else m
    return mag


def _bound(x: torch.Tensor) -> float:
    return 1.0 if x.is_floating_point() else float(torch.iinfo(x.dtype).max)


def _finish(out: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Clamp to the valid range and cast back like torchvision (float->int truncates)."""
    out = out.clamp_(0, _bound(like))
    return out if like.is_floating_point() else out.to(like.dtype)


def _blend(img: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    r = ratio.view(-1, 1, 1, 1)
    alpha = (1.0 - ratio).float().view(-1, 1, 1, 1)
    # torchvision: image1.mul(ratio).add_(image2, alpha=1 - ratio), a fused multiply-add: addcmul matches it
    out = torch.addcmul(img.float() * r.float(), other.float(), alpha)
    return _finish(out, img)


def _grayscale(img: torch.Tensor) -> torch.Tensor:
    """torchvision's luma (0.2989, 0.587, 0.114), float, floored for integer images; [n, 1, H, W]."""
    if img.shape[1] == 1:
        return img.float()
    r, g, b = img.float().unbind(dim=1)
    gray = (r * 0.2989 + g * 0.587 + b * 0.114).unsqueeze(1)
    return gray if img.is_floating_point() else gray.floor_()


def _brightness(img, factor):
    out = img.float() * factor.float().view(-1, 1, 1, 1)
    return _finish(out, img)


def _contrast(img, factor):
    mean = _grayscale(img).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(img, mean, factor)


def _color(img, factor):
    if img.shape[1] == 1:
        return img
    return _blend(img, _grayscale(img), factor)


def _sharpness(img, factor):
    n, c, h, w = img.shape
    if h <= 2 or w <= 2:
        return img
    a, b = 1.0 / 13.0, 5.0 / 13.0
    kernel = to_device(torch.tensor([[a, a, a], [a, b, a], [a, a, a]], dtype=torch.float32), img.device)
    out = img.float().clone()
    blurred = F.conv2d(out, kernel.expand(c, 1, 3, 3), groups=c)
    if not img.is_floating_point():
        blurred = blurred.round_()
    view = out[..., 1:-1, 1:-1]
    alpha = (1.0 - factor).float().view(-1, 1, 1, 1)
    view.addcmul_(blurred - view, alpha)
    return _finish(out, img)


def _posterize(img, bits):
    bits = bits.to(torch.int64).view(-1, 1, 1, 1)
    if img.is_floating_point():
        levels = (1 << bits).to(img.dtype)
        return (img * levels).floor_().clamp_(min=0).minimum(levels - 1) / levels
    nbits = torch.iinfo(img.dtype).bits
    mask = (((1 << bits) - 1) << (nbits - bits)).to(img.dtype)
    return img & mask


def _solarize(img, magnitude):
    # torchvision compares `image >= bound * magnitude` with the threshold as a float32 scalar
    thr = (_bound(img) * magnitude).view(-1, 1, 1, 1).to(torch.float32)
    inv = (1.0 - img) if img.is_floating_point() else torch.bitwise_not(img)
    return torch.where(img.float() >= thr, inv, img)


def _autocontrast(img, _):
    from torchvision.transforms.v2.functional import autocontrast

    return autocontrast(img)


def _equalize(img, _):
    from torchvision.transforms.v2.functional import equalize

    return equalize(img)


_COLOR_FNS = {"brightness": lambda x, m: _brightness(x, 1.0 + m), "color": lambda x, m: _color(x, 1.0 + m),
              "contrast": lambda x, m: _contrast(x, 1.0 + m), "sharpness": lambda x, m: _sharpness(x, 1.0 + m),
              "posterize": lambda x, m: _posterize(x, m), "solarize": _solarize,
              "autocontrast": _autocontrast, "equalize": _equalize}


def inverse_affine_matrices(angle: torch.Tensor, translate: torch.Tensor, shear: torch.Tensor,
                            center: torch.Tensor) -> torch.Tensor:
    """torchvision's ``_get_inverse_affine_matrix`` (scale 1), vectorised: float64 [n, 2, 3].

    ``angle`` degrees [n]; ``translate``, ``shear`` (degrees) and ``center`` (pixels, relative to the image
    centre) are [n, 2].
    """
    rot = torch.deg2rad(angle)
    sx, sy = torch.deg2rad(shear[:, 0]), torch.deg2rad(shear[:, 1])
    cx, cy = center[:, 0], center[:, 1]
    tx, ty = translate[:, 0], translate[:, 1]
    cos_sy, tan_sx = torch.cos(sy), torch.tan(sx)
    a = torch.cos(rot - sy) / cos_sy
    b = -(a * tan_sx + torch.sin(rot))
    c = torch.sin(rot - sy) / cos_sy
    d = torch.cos(rot) - c * tan_sx
    m0, m1, m3, m4 = d, -b, -c, a
    m2 = cx - m0 * (cx + tx) - m1 * (cy + ty)
    m5 = cy - m3 * (cx + tx) - m4 * (cy + ty)
    return torch.stack([torch.stack([m0, m1, m2], 1), torch.stack([m3, m4, m5], 1)], 1)


def affine_batch(img: torch.Tensor, matrices: torch.Tensor, mode: str = "nearest") -> torch.Tensor:
    """Warp each image by its own inverse matrix (torchvision's grid convention, zero fill)."""
    n, c, h, w = img.shape
    dev = img.device
    theta = to_device(matrices.to(dtype=torch.float32), dev)
    base = torch.empty(1, h, w, 3, dtype=torch.float32, device=dev)
    base[..., 0].copy_(torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, steps=w, device=dev))
    base[..., 1].copy_(torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, steps=h, device=dev).unsqueeze(-1))
    base[..., 2].fill_(1)
    scale = to_device(torch.tensor([0.5 * w, 0.5 * h], dtype=torch.float32), dev)
    rescaled = theta.transpose(1, 2) / scale  # [n, 3, 2]
    grid = base.view(1, h * w, 3).expand(n, -1, -1).bmm(rescaled).view(n, h, w, 2)
    out = F.grid_sample(img.float(), grid, mode=mode, padding_mode="zeros", align_corners=False)
    return out if img.is_floating_point() else out.round_().to(img.dtype)


def _affine_params(names: list[str], mag: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Inverse matrices of the geometric TrivialAugment operations, as torchvision parametrises them."""
    n = len(names)
    angle = torch.zeros(n, dtype=torch.float64)
    translate = torch.zeros(n, 2, dtype=torch.float64)
    shear = torch.zeros(n, 2, dtype=torch.float64)
    center = torch.zeros(n, 2, dtype=torch.float64)
    corner = torch.tensor([-0.5 * w, -0.5 * h], dtype=torch.float64)  # center=[0, 0]: the top-left corner
    for i, name in enumerate(names):
        m = float(mag[i])
        if name == "shear_x":
            shear[i, 0] = math.degrees(math.atan(m))
            center[i] = corner
        elif name == "shear_y":
            shear[i, 1] = math.degrees(math.atan(m))
            center[i] = corner
        elif name == "translate_x":
            translate[i, 0] = float(int(m))
        elif name == "translate_y":
            translate[i, 1] = float(int(m))
        elif name == "rotate":
            angle[i] = -(m % 360)  # torchvision's rotate passes -angle to the affine matrix
    return inverse_affine_matrices(angle, translate, shear, center)


def apply_trivial(x: torch.Tensor, op: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """Apply operation ``op[i]`` at ``magnitude[i]`` (float64, already signed) to image i, batched by operation."""
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"TrivialAugment needs [B, 1 or 3, H, W] image batches, got shape {tuple(x.shape)}")
    out = x.clone()
    op = op.cpu()
    magnitude = magnitude.cpu().double()
    _, _, h, w = x.shape
    geo = torch.zeros(len(op), dtype=torch.bool)
    for name in _AFFINE:
        geo |= op == TRIVIAL_OPS.index(name)
    sel = torch.nonzero(geo).squeeze(1)
    if len(sel):
        names = [TRIVIAL_OPS[int(k)] for k in op[sel]]
        mats = _affine_params(names, magnitude[sel], h, w)
        idx = to_device(sel, x.device)
        out[idx] = affine_batch(x[idx], mats)
    for name, fn in _COLOR_FNS.items():
        sel = torch.nonzero(op == TRIVIAL_OPS.index(name)).squeeze(1)
        if len(sel):
            idx = to_device(sel, x.device)
            out[idx] = fn(x[idx], to_device(magnitude[sel], x.device))
    return out


def trivial_augment(x: torch.Tensor, generator: torch.Generator, num_bins: int = 31) -> torch.Tensor:
    """TrivialAugment-Wide on a batch: each image its own operation, magnitude bin and sign."""
    op, mag_bin, sign = draw_trivial(len(x), generator, num_bins)
    return apply_trivial(x, op, signed_magnitudes(op, mag_bin, sign, num_bins))


def random_crop(x: torch.Tensor, generator: torch.Generator, padding: int) -> torch.Tensor:
    """Each image shifted by its own (dy, dx) in [-padding, padding] with zero fill (crop of the padded image)."""
    b, c, h, w = x.shape
    off = to_device(torch.randint(0, 2 * padding + 1, (2, b), generator=generator), x.device)
    xp = F.pad(x, (padding, padding, padding, padding))
    rows = (off[0][:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (off[1][:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return xp[bi, ci, rows, cols]


def random_hflip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = to_device(torch.rand(len(x), generator=generator) < 0.5, x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def augment_batch(x: torch.Tensor, mode: str, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Augment a [B, C, H, W] batch: ``mode`` is one of :data:`AUGMENT_MODES`.

    ``crop``: random crop with zero padding ``padding``; ``flip``: horizontal flip with probability 1/2;
    ``trivial``: TrivialAugment-Wide; combined modes apply crop, then flip, then TrivialAugment.
    """
    if mode == "none":
        return x
    if mode not in AUGMENT_MODES:
        raise ValueError(f"unknown augmentation {mode!r}; choose from {AUGMENT_MODES}")
    if x.ndim != 4:
        raise ValueError(f"augmentation {mode!r} needs image batches [B, C, H, W], got shape {tuple(x.shape)}")
    if mode in ("crop", "crop_flip", "crop_flip_trivial") and padding > 0:
        x = random_crop(x, generator, padding)
    if mode in ("flip", "crop_flip", "crop_flip_trivial"):
        x = random_hflip(x, generator)
    if mode in ("trivial", "crop_flip_trivial"):
        x = trivial_augment(x, generator)
    return x
