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

:func:`auto_augment` (AutoAugment, Cubuk et al. 2019, CIFAR-10 policy) and :func:`rand_augment`
(RandAugment, Cubuk et al. 2020, N = 2 operations at magnitude 9 of 31) use the same per-operation
functions with torchvision's ``AutoAugment``/``RandAugment`` augmentation space (its magnitude tables, which
depend on the image size for translations; Invert added for AutoAugment): each step is one batched
:func:`apply_ops` call, an image whose sub-policy operation is not applied getting the identity.
:func:`random_erasing` (Zhong et al. 2020) is torchvision's ``RandomErasing`` (scale (0.02, 0.33), ratio
(0.3, 3.3), 10 attempts, fill 0) with every image's draws made in one vectorised call.

Table rows have one augmentation, for Joint-SSL's second view (``ssl.views: corruption``):
:func:`corrupt_features`, SCARF's feature corruption (Bahri et al., ICLR 2022).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lossdial.config import AUGMENT_MODES, AUGMENT_POLICIES  # noqa: F401  (the one list; config validates it)

TRIVIAL_OPS = ("identity", "shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness", "color",
               "contrast", "sharpness", "posterize", "solarize", "autocontrast", "equalize")
_SIGNED = {"shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness", "color", "contrast",
           "sharpness"}
_AFFINE = ("shear_x", "shear_y", "translate_x", "translate_y", "rotate")
#: Every operation :func:`apply_ops` knows: TrivialAugment's (same indices) and AutoAugment's Invert.
OPS = TRIVIAL_OPS + ("invert",)
#: RandAugment's operations (torchvision's RandAugment space: TrivialAugment's 14, in the same order).
RAND_OPS = TRIVIAL_OPS
RAND_NUM_OPS, RAND_MAGNITUDE, RAND_BINS = 2, 9, 31
#: torchvision's AutoAugment CIFAR-10 policy: 25 sub-policies of two (operation, probability, magnitude bin of
#: 10) steps; None: the operation has no magnitude.
AUTOAUGMENT_CIFAR10 = (
    (("invert", 0.1, None), ("contrast", 0.2, 6)), (("rotate", 0.7, 2), ("translate_x", 0.3, 9)),
    (("sharpness", 0.8, 1), ("sharpness", 0.9, 3)), (("shear_y", 0.5, 8), ("translate_y", 0.7, 9)),
    (("autocontrast", 0.5, None), ("equalize", 0.9, None)), (("shear_y", 0.2, 7), ("posterize", 0.3, 7)),
    (("color", 0.4, 3), ("brightness", 0.6, 7)), (("sharpness", 0.3, 9), ("brightness", 0.7, 9)),
    (("equalize", 0.6, None), ("equalize", 0.5, None)), (("contrast", 0.6, 7), ("sharpness", 0.6, 5)),
    (("color", 0.7, 7), ("translate_x", 0.5, 8)), (("equalize", 0.3, None), ("autocontrast", 0.4, None)),
    (("translate_y", 0.4, 3), ("sharpness", 0.2, 6)), (("brightness", 0.9, 6), ("color", 0.2, 8)),
    (("solarize", 0.5, 2), ("invert", 0.0, None)), (("equalize", 0.2, None), ("autocontrast", 0.6, None)),
    (("equalize", 0.2, None), ("equalize", 0.6, None)), (("color", 0.9, 9), ("equalize", 0.6, None)),
    (("autocontrast", 0.8, None), ("solarize", 0.2, 8)), (("brightness", 0.1, 3), ("color", 0.7, 0)),
    (("solarize", 0.4, 5), ("autocontrast", 0.9, None)), (("translate_y", 0.9, 9), ("translate_y", 0.7, 9)),
    (("autocontrast", 0.9, None), ("solarize", 0.8, 3)), (("equalize", 0.8, None), ("invert", 0.1, None)),
    (("translate_y", 0.7, 9), ("autocontrast", 0.9, None)),
)
AUTOAUGMENT_BINS = 10
ERASING_SCALE, ERASING_RATIO, ERASING_ATTEMPTS = (0.02, 0.33), (0.3, 3.3), 10


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


def policy_magnitudes(num_bins: int, height: int, width: int) -> dict[str, torch.Tensor | None]:
    """torchvision's AutoAugment / RandAugment magnitude bins per operation (float32 as torchvision builds
    them; translations scale with the image: up to 150/331 of its width or height)."""
    lin = lambda a, b: torch.linspace(a, b, num_bins)  # noqa: E731
    return {
        "identity": None, "shear_x": lin(0.0, 0.3), "shear_y": lin(0.0, 0.3),
        "translate_x": lin(0.0, 150.0 / 331.0 * width), "translate_y": lin(0.0, 150.0 / 331.0 * height),
        "rotate": lin(0.0, 30.0), "brightness": lin(0.0, 0.9), "color": lin(0.0, 0.9), "contrast": lin(0.0, 0.9),
        "sharpness": lin(0.0, 0.9), "posterize": (8 - (torch.arange(num_bins) / ((num_bins - 1) / 4))).round().int(),
        "solarize": lin(1.0, 0.0), "autocontrast": None, "equalize": None, "invert": None,
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
    return table_magnitudes(trivial_magnitudes(num_bins), op, mag_bin, sign)


def table_magnitudes(table: dict[str, torch.Tensor | None], op: torch.Tensor, mag_bin: torch.Tensor,
                     sign: torch.Tensor) -> torch.Tensor:
    """Per image: ``table[OPS[op]][mag_bin]`` as float64, times ``sign`` for signed operations (0 without one)."""
    mag = torch.zeros(len(op), dtype=torch.float64)
    for k, name in enumerate(OPS):
        if table.get(name) is None:
            continue
        sel = op == k
        m = table[name].double()[mag_bin[sel]]
        mag[sel] = m * sign[sel].double() if name in _SIGNED else m
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


def _invert(img, _):
    return (1.0 - img) if img.is_floating_point() else torch.bitwise_not(img)


_COLOR_FNS = {"brightness": lambda x, m: _brightness(x, 1.0 + m), "color": lambda x, m: _color(x, 1.0 + m),
              "contrast": lambda x, m: _contrast(x, 1.0 + m), "sharpness": lambda x, m: _sharpness(x, 1.0 + m),
              "posterize": lambda x, m: _posterize(x, m), "solarize": _solarize,
              "autocontrast": _autocontrast, "equalize": _equalize, "invert": _invert}


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


def apply_ops(x: torch.Tensor, op: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """Apply operation ``OPS[op[i]]`` at ``magnitude[i]`` (float64, already signed) to image i, batched by operation.

    Indices below ``len(TRIVIAL_OPS)`` are TrivialAugment's operations (same order); ``identity`` leaves the
    image as it is.
    """
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"augmentation needs [B, 1 or 3, H, W] image batches, got shape {tuple(x.shape)}")
    out = x.clone()
    op = op.cpu()
    magnitude = magnitude.cpu().double()
    _, _, h, w = x.shape
    geo = torch.zeros(len(op), dtype=torch.bool)
    for name in _AFFINE:
        geo |= op == OPS.index(name)
    sel = torch.nonzero(geo).squeeze(1)
    if len(sel):
        names = [OPS[int(k)] for k in op[sel]]
        mats = _affine_params(names, magnitude[sel], h, w)
        idx = to_device(sel, x.device)
        out[idx] = affine_batch(x[idx], mats)
    for name, fn in _COLOR_FNS.items():
        sel = torch.nonzero(op == OPS.index(name)).squeeze(1)
        if len(sel):
            idx = to_device(sel, x.device)
            out[idx] = fn(x[idx], to_device(magnitude[sel], x.device))
    return out


apply_trivial = apply_ops  # TrivialAugment's operations are the first len(TRIVIAL_OPS) of OPS


def trivial_augment(x: torch.Tensor, generator: torch.Generator, num_bins: int = 31) -> torch.Tensor:
    """TrivialAugment-Wide on a batch: each image its own operation, magnitude bin and sign."""
    op, mag_bin, sign = draw_trivial(len(x), generator, num_bins)
    return apply_trivial(x, op, signed_magnitudes(op, mag_bin, sign, num_bins))


def draw_autoaugment(batch_size: int, generator: torch.Generator
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image: the sub-policy index (uniform over 25), and per step a uniform deciding whether the step's
    operation is applied (``u <= p``, as torchvision) and one deciding its sign (``u <= 1/2``: negative)."""
    sub = torch.randint(len(AUTOAUGMENT_CIFAR10), (batch_size,), generator=generator)
    u_apply = torch.rand(batch_size, 2, generator=generator, dtype=torch.float64)
    u_sign = torch.rand(batch_size, 2, generator=generator, dtype=torch.float64)
    return sub, u_apply, u_sign


def autoaugment_steps(sub: torch.Tensor, u_apply: torch.Tensor, u_sign: torch.Tensor, height: int, width: int
                      ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The two (operation index into :data:`OPS`, signed float64 magnitude) steps of every image's sub-policy;
    a step not applied is the identity."""
    table = policy_magnitudes(AUTOAUGMENT_BINS, height, width)
    ops = torch.tensor([[OPS.index(name) for name, _, _ in pol] for pol in AUTOAUGMENT_CIFAR10])
    probs = torch.tensor([[p for _, p, _ in pol] for pol in AUTOAUGMENT_CIFAR10], dtype=torch.float64)
    bins = torch.tensor([[0 if b is None else b for _, _, b in pol] for pol in AUTOAUGMENT_CIFAR10])
    steps = []
    for k in range(2):
        applied = u_apply[:, k] <= probs[sub, k]
        op = torch.where(applied, ops[sub, k], OPS.index("identity"))
        sign = torch.where(u_sign[:, k] <= 0.5, -1.0, 1.0).double()
        steps.append((op, table_magnitudes(table, op, bins[sub, k], sign)))
    return steps


def auto_augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """AutoAugment with the CIFAR-10 policy on a batch: each image its own sub-policy, applications and signs."""
    for op, mag in autoaugment_steps(*draw_autoaugment(len(x), generator), x.shape[-2], x.shape[-1]):
        x = apply_ops(x, op, mag)
    return x


def draw_randaugment(batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image and step: the operation (uniform over :data:`RAND_OPS`) and the sign uniform (<= 1/2: negative)."""
    op = torch.randint(len(RAND_OPS), (batch_size, RAND_NUM_OPS), generator=generator)
    u_sign = torch.rand(batch_size, RAND_NUM_OPS, generator=generator, dtype=torch.float64)
    return op, u_sign


def randaugment_steps(op: torch.Tensor, u_sign: torch.Tensor, height: int, width: int
                      ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The :data:`RAND_NUM_OPS` (operation, signed magnitude) steps, all at bin ``RAND_MAGNITUDE`` of ``RAND_BINS``."""
    table = policy_magnitudes(RAND_BINS, height, width)
    mag_bin = torch.full((len(op),), RAND_MAGNITUDE)
    return [(op[:, k], table_magnitudes(table, op[:, k], mag_bin, torch.where(u_sign[:, k] <= 0.5, -1.0, 1.0)))
            for k in range(op.shape[1])]


def rand_augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """RandAugment (N = 2, M = 9 of 31 bins) on a batch: each image its own operations and signs."""
    for op, mag in randaugment_steps(*draw_randaugment(len(x), generator), x.shape[-2], x.shape[-1]):
        x = apply_ops(x, op, mag)
    return x


def draw_erasing(batch_size: int, height: int, width: int, p: float, generator: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """torchvision's RandomErasing draws for every image at once: (erased, top, left, height, width).

    An image is erased with probability ``p`` (torchvision: skipped when ``u >= p``); up to 10 attempts of an
    area fraction uniform in ``ERASING_SCALE`` and a log aspect ratio uniform in ``log ERASING_RATIO``, the
    rectangle ``round(sqrt(area * ratio))`` x ``round(sqrt(area / ratio))`` accepted when it is smaller than the
    image in both sides; the first accepted attempt is used (none accepted: the image is left as it is); the
    top-left corner is uniform over the positions where the rectangle fits.
    """
    area = float(height * width)
    u = torch.rand(batch_size, generator=generator)
    frac = torch.empty(batch_size, ERASING_ATTEMPTS).uniform_(*ERASING_SCALE, generator=generator).double()
    lo, hi = torch.log(torch.tensor(ERASING_RATIO))  # float32, as torchvision
    log_ratio = torch.empty(batch_size, ERASING_ATTEMPTS).uniform_(float(lo), float(hi), generator=generator)
    ratio = torch.exp(log_ratio).double()
    eh = torch.round(torch.sqrt(area * frac * ratio)).long()
    ew = torch.round(torch.sqrt(area * frac / ratio)).long()
    ok = (eh < height) & (ew < width)
    first = ok.to(torch.uint8).argmax(dim=1)
    rows = torch.arange(batch_size)
    eh, ew = eh[rows, first], ew[rows, first]
    erased = (u < p) & ok.any(dim=1)
    corner = torch.rand(batch_size, 2, generator=generator, dtype=torch.float64)
    top = (corner[:, 0] * (height - eh + 1)).floor().long().clamp(max=height - 1)
    left = (corner[:, 1] * (width - ew + 1)).floor().long().clamp(max=width - 1)
    return erased, top, left, eh, ew


def erase_rectangles(x: torch.Tensor, erased: torch.Tensor, top: torch.Tensor, left: torch.Tensor,
                     eh: torch.Tensor, ew: torch.Tensor) -> torch.Tensor:
    """Set rows [top, top + eh) x columns [left, left + ew) of each erased image to 0 (all channels)."""
    _, _, h, w = x.shape
    dev = x.device
    r = torch.arange(h, device=dev)[None, :, None]
    c = torch.arange(w, device=dev)[None, None, :]
    top, left, eh, ew, erased = (to_device(t, dev)[:, None, None] for t in (top, left, eh, ew, erased))
    mask = erased & (r >= top) & (r < top + eh) & (c >= left) & (c < left + ew)
    return x.masked_fill(mask[:, None], 0)


def random_erasing(x: torch.Tensor, generator: torch.Generator, p: float) -> torch.Tensor:
    """Random Erasing on a batch (torchvision's law; fill 0 on the raw image, before normalisation)."""
    return erase_rectangles(x, *draw_erasing(len(x), x.shape[-2], x.shape[-1], p, generator))


def augment_parts(mode: str) -> tuple[bool, bool, str | None]:
    """(crop, flip, policy) of an augmentation ``mode``: ``none``, ``flip``, ``crop``, ``crop_flip``, a policy
    of :data:`AUGMENT_POLICIES` alone, ``crop_flip_`` + policy (crop, then flip, then the policy) or ``crop_`` +
    policy (crop, then the policy)."""
    if mode not in AUGMENT_MODES:
        raise ValueError(f"unknown augmentation {mode!r}; choose from {AUGMENT_MODES}")
    rest = mode.removeprefix("crop_flip_").removeprefix("crop_")
    policy = rest if rest in AUGMENT_POLICIES else None
    crop = mode in ("crop", "crop_flip") or mode.startswith("crop_")
    flip = mode in ("flip", "crop_flip") or mode.startswith("crop_flip_")
    return crop, flip, policy


_POLICY_FNS = {"trivial": trivial_augment, "autoaugment": auto_augment, "randaugment": rand_augment}


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


def augment_batch(x: torch.Tensor, mode: str, generator: torch.Generator, padding: int = 4,
                  erasing: float = 0.0) -> torch.Tensor:
    """Augment a [B, C, H, W] batch: ``mode`` is one of :data:`AUGMENT_MODES`; ``erasing`` the Random Erasing
    probability (0: off), applied last.

    ``crop``: random crop with zero padding ``padding``; ``flip``: horizontal flip with probability 1/2;
    ``trivial``: TrivialAugment-Wide; ``autoaugment``: AutoAugment (CIFAR-10 policy); ``randaugment``:
    RandAugment (N = 2, M = 9); combined modes apply crop, then flip (``crop_flip_*``), then the policy.
    """
    crop, flip, policy = augment_parts(mode)
    if not 0.0 <= erasing <= 1.0:
        raise ValueError(f"the random erasing probability must be in [0, 1], got {erasing}")
    if mode == "none" and erasing == 0:
        return x
    if x.ndim != 4:
        raise ValueError(f"augmentation {mode!r} needs image batches [B, C, H, W], got shape {tuple(x.shape)}")
    if crop and padding > 0:
        x = random_crop(x, generator, padding)
    if flip:
        x = random_hflip(x, generator)
    if policy is not None:
        x = _POLICY_FNS[policy](x, generator)
    if erasing > 0:
        x = random_erasing(x, generator, erasing)
    return x


# ------------------------------------------------------------------------------------------ table rows (SCARF)
def corrupted_count(num_features: int, fraction: float) -> int:
    """How many of a row's ``num_features`` features :func:`corrupt_features` replaces: ``round(fraction * d)``
    (halves round up), at least 1 so the two views always differ, at most d."""
    if num_features < 1:
        raise ValueError(f"feature corruption needs at least one feature, got {num_features}")
    if not 0 < fraction < 1:
        raise ValueError(f"the corruption fraction must be in (0, 1), got {fraction}")
    return min(num_features, max(1, math.floor(fraction * num_features + 0.5)))


def corrupt_features(x: torch.Tensor, pool: torch.Tensor, fraction: float,
                     generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """SCARF's corrupted view of table rows (Bahri, Jiang, Tay, Metzler, ICLR 2022): ``(x_tilde, mask)``.

    For each row of ``x`` [B, d], a uniformly random subset of ``q = corrupted_count(d, fraction)`` features is
    chosen (``mask`` [B, d], bool, exactly q True per row), and each chosen entry ``(i, j)`` is replaced by
    ``pool[r, j]`` for a row ``r`` drawn uniformly from the ``N`` rows of ``pool`` [N, d] (the training split:
    SCARF's "empirical marginal distribution of the feature over the training set"), independently per entry.
    The other entries are copied. Draws come from the CPU ``generator`` (one ``rand`` [B, d] for the subsets,
    then one ``randint`` [B, d] for the donor rows, whatever the mask) and are moved to ``x``'s device.
    """
    if x.ndim != 2 or pool.ndim != 2 or x.shape[1] != pool.shape[1]:
        raise ValueError(f"feature corruption takes table rows [B, d] and a pool [N, d] with the same d, got "
                         f"{list(x.shape)} and {list(pool.shape)}")
    if pool.shape[0] < 1:
        raise ValueError("feature corruption needs a non-empty pool of rows to draw values from")
    b, d = x.shape
    q = corrupted_count(d, fraction)
    order = torch.rand(b, d, generator=generator).argsort(dim=1)
    mask = torch.zeros(b, d, dtype=torch.bool).scatter_(1, order[:, :q], True)
    donors = torch.randint(pool.shape[0], (b, d), generator=generator)
    mask, donors = to_device(mask, x.device), to_device(donors, pool.device)
    values = pool[donors, torch.arange(d, device=pool.device)].to(device=x.device, dtype=x.dtype)
    return torch.where(mask, values, x), mask
