"""Batched on-device augmentation: draw frequencies, and per-operation outputs against torchvision."""

import math

import numpy as np
import pytest
import torch

from lossdial.data.augment import (
    AUGMENT_MODES,
    TRIVIAL_OPS,
    apply_trivial,
    augment_batch,
    draw_trivial,
    signed_magnitudes,
    trivial_augment,
    trivial_magnitudes,
)
from lossdial.data.loader import make_generator

F = pytest.importorskip("torchvision.transforms.v2.functional")
from torchvision.transforms.v2 import InterpolationMode, TrivialAugmentWide  # noqa: E402

SIGNED = {"shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness", "color", "contrast",
          "sharpness"}


def tv_op(img, name, m):
    """torchvision's TrivialAugmentWide operation `name` at signed magnitude `m` (as its forward applies it)."""
    n = InterpolationMode.NEAREST
    if name == "identity":
        return img
    if name in ("shear_x", "shear_y"):
        sh = math.degrees(math.atan(m))
        return F.affine(img, angle=0.0, translate=[0, 0], scale=1.0, shear=[sh, 0.0] if name == "shear_x" else
                        [0.0, sh], interpolation=n, fill=None, center=[0, 0])
    if name in ("translate_x", "translate_y"):
        t = [int(m), 0] if name == "translate_x" else [0, int(m)]
        return F.affine(img, angle=0.0, translate=t, scale=1.0, shear=[0.0, 0.0], interpolation=n, fill=None)
    if name == "rotate":
        return F.rotate(img, angle=m, interpolation=n, fill=None)
    if name == "brightness":
        return F.adjust_brightness(img, 1.0 + m)
    if name == "color":
        return F.adjust_saturation(img, 1.0 + m)
    if name == "contrast":
        return F.adjust_contrast(img, 1.0 + m)
    if name == "sharpness":
        return F.adjust_sharpness(img, 1.0 + m)
    if name == "posterize":
        return F.posterize(img, int(m))
    if name == "solarize":
        return F.solarize(img, (1.0 if img.is_floating_point() else 255.0) * m)
    if name == "autocontrast":
        return F.autocontrast(img)
    if name == "equalize":
        return F.equalize(img)
    raise KeyError(name)


def test_our_operation_space_is_torchvisions():
    space = TrivialAugmentWide._AUGMENTATION_SPACE
    tv_names = [k.lower().replace("shearx", "shear_x").replace("sheary", "shear_y").replace("translatex", "translate_x")
                .replace("translatey", "translate_y") for k in space]
    assert tuple(tv_names) == TRIVIAL_OPS
    ours = trivial_magnitudes(31)
    for (key, (fn, signed)), name in zip(space.items(), TRIVIAL_OPS):
        ref = fn(31, 32, 32)
        assert (ref is None) == (ours[name] is None)
        if ref is not None:
            assert torch.equal(ref, ours[name]), name
        assert signed == (name in SIGNED), name


def test_draw_frequencies_are_uniform():
    from scipy.stats import chisquare

    n = 28_000
    op, mag_bin, sign = draw_trivial(n, make_generator(7))
    ops = np.bincount(op.numpy(), minlength=len(TRIVIAL_OPS))
    bins = np.bincount(mag_bin.numpy(), minlength=31)
    assert chisquare(ops).pvalue > 1e-3 and chisquare(bins).pvalue > 1e-3
    assert abs(float((sign < 0).double().mean()) - 0.5) < 0.02
    # each image's draws are independent of its position in the batch (one vectorised call, no loop)
    half = np.bincount(op[: n // 2].numpy(), minlength=14)
    assert chisquare(half).pvalue > 1e-3


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("shape", [(3, 12, 16), (1, 10, 10)])
def test_every_operation_matches_torchvision(dtype, shape):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (1, *shape), generator=g, dtype=torch.uint8)
    if dtype == torch.float32:
        x = x.float() / 255
    table = trivial_magnitudes()
    for k, name in enumerate(TRIVIAL_OPS):
        for b in (0, 3, 10, 17, 20, 30):  # bin 20 of rotate is exactly 90 degrees (torchvision's rot90 path)
            for s in ((1.0, -1.0) if name in SIGNED else (1.0,)):
                m = 0.0 if table[name] is None else float(table[name][b]) * s
                ours = apply_trivial(x, torch.tensor([k]), torch.tensor([m], dtype=torch.float64))[0]
                ref = tv_op(x[0], name, m)
                assert ours.dtype == ref.dtype
                if dtype == torch.uint8:
                    assert torch.equal(ours, ref), (name, b, s)
                else:
                    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0, msg=f"{name} bin {b} sign {s}")


def test_batched_trivial_equals_per_image_torchvision():
    """One vectorised call over a batch = torchvision applied image by image with the same draws."""
    x = torch.randint(0, 256, (96, 3, 16, 16), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    out = trivial_augment(x, make_generator(3))
    op, mag_bin, sign = draw_trivial(len(x), make_generator(3))
    mag = signed_magnitudes(op, mag_bin, sign)
    assert len(set(op.tolist())) == len(TRIVIAL_OPS)  # the batch exercises every operation
    for i in range(len(x)):
        assert torch.equal(out[i], tv_op(x[i], TRIVIAL_OPS[int(op[i])], float(mag[i]))), (i, TRIVIAL_OPS[int(op[i])])


def test_hflip_and_integer_translate_match_torchvision():
    x = torch.randint(0, 256, (64, 3, 8, 8), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    out = augment_batch(x, "flip", make_generator(0))
    for i in range(len(x)):
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], F.horizontal_flip(x[i]))
    k = TRIVIAL_OPS.index("translate_x")
    for t in (-3.0, 2.0, 5.0):
        ours = apply_trivial(x[:4], torch.full((4,), k), torch.full((4,), t, dtype=torch.float64))
        assert torch.equal(ours, F.affine(x[:4], angle=0.0, translate=[int(t), 0], scale=1.0, shear=[0.0, 0.0]))


def test_augment_modes_keep_shape_dtype_and_are_seeded():
    x = torch.randint(0, 256, (32, 3, 8, 8), generator=torch.Generator().manual_seed(4), dtype=torch.uint8)
    for mode in AUGMENT_MODES:
        a = augment_batch(x, mode, make_generator(5), padding=2)
        b = augment_batch(x, mode, make_generator(5), padding=2)
        assert a.shape == x.shape and a.dtype == x.dtype and torch.equal(a, b), mode
    c = augment_batch(x, "crop_flip_trivial", make_generator(6), padding=2)
    assert not torch.equal(c, augment_batch(x, "crop_flip_trivial", make_generator(5), padding=2))
    xf = x.float() / 255  # float images in [0, 1] work too
    assert augment_batch(xf, "trivial", make_generator(5)).dtype == torch.float32
    with pytest.raises(ValueError, match="unknown augmentation"):
        augment_batch(x, "autoaugmentt", make_generator(0))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        augment_batch(torch.zeros(4, 10), "trivial", make_generator(0))


def test_crop_flip_draws_unchanged_by_trivial_option():
    """Adding TrivialAugment did not move the crop/flip draws: old runs replay identically."""
    x = torch.arange(2 * 1 * 5 * 5).float().reshape(2, 1, 5, 5) + 1
    a = augment_batch(x, "crop_flip", make_generator(0), padding=1)
    from lossdial.data.augment import random_crop, random_hflip

    g = make_generator(0)
    b = random_hflip(random_crop(x, g, 1), g)
    assert torch.equal(a, b)


# --------------------------------------------------------------------------------------------------------
# AutoAugment (CIFAR-10 policy), RandAugment, Random Erasing: tables and batched outputs against torchvision

from torchvision.transforms.v2 import AutoAugment, AutoAugmentPolicy, RandAugment  # noqa: E402

from lossdial.data.augment import (  # noqa: E402
    AUTOAUGMENT_CIFAR10,
    OPS,
    RAND_OPS,
    apply_ops,
    auto_augment,
    autoaugment_steps,
    draw_autoaugment,
    draw_erasing,
    draw_randaugment,
    policy_magnitudes,
    rand_augment,
    randaugment_steps,
    random_erasing,
)


def _ours(tv_name: str) -> str:
    n = tv_name.lower()
    for a in ("shear", "translate"):
        for ax in ("x", "y"):
            n = n.replace(f"{a}{ax}", f"{a}_{ax}")
    return n


def test_policy_tables_are_torchvisions():
    """Our AutoAugment CIFAR-10 sub-policies and the AutoAugment/RandAugment magnitude bins (which scale with
    the image size for translations) are torchvision's, checked on a non-square image."""
    tv = AutoAugment(AutoAugmentPolicy.CIFAR10)
    ref = tuple(tuple((_ours(n), p, b) for n, p, b in pol) for pol in tv._policies)
    assert ref == AUTOAUGMENT_CIFAR10
    for cls, bins in ((AutoAugment, 10), (RandAugment, 31)):
        ours = policy_magnitudes(bins, 12, 20)
        for key, (fn, signed) in cls._AUGMENTATION_SPACE.items():
            r, name = fn(bins, 12, 20), _ours(key)
            assert (r is None) == (ours[name] is None), name
            if r is not None:
                assert torch.equal(r, ours[name]), name
            assert signed == (name in SIGNED), name
    assert tuple(_ours(k) for k in RandAugment._AUGMENTATION_SPACE) == RAND_OPS


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_invert_matches_torchvision(dtype):
    x = torch.randint(0, 256, (2, 3, 5, 6), generator=torch.Generator().manual_seed(9), dtype=torch.uint8)
    if dtype == torch.float32:
        x = x.float() / 255
    out = apply_ops(x, torch.full((2,), OPS.index("invert")), torch.zeros(2, dtype=torch.float64))
    assert torch.equal(out, F.invert(x))


def _tv_apply(img, name, m):
    """torchvision's AutoAugment/RandAugment operation (its own dispatch) at signed magnitude m."""
    tv = AutoAugment()
    if name == "identity":
        return img
    key = {_ours(k): k for k in AutoAugment._AUGMENTATION_SPACE}[name]
    return tv._apply_image_or_video_transform(img, key, m, interpolation=InterpolationMode.NEAREST, fill=tv._fill)


@pytest.mark.parametrize("policy", ["autoaugment", "randaugment"])
def test_batched_policy_equals_per_image_torchvision(policy):
    """One vectorised AutoAugment / RandAugment call over a batch = torchvision's operations applied image by
    image, step after step, with the same draws (non-square images: translations scale per axis)."""
    x = torch.randint(0, 256, (120, 3, 12, 16), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    if policy == "autoaugment":
        out = auto_augment(x, make_generator(3))
        steps = autoaugment_steps(*draw_autoaugment(len(x), make_generator(3)), 12, 16)
    else:
        out = rand_augment(x, make_generator(3))
        steps = randaugment_steps(*draw_randaugment(len(x), make_generator(3)), 12, 16)
    seen = set()
    for i in range(len(x)):
        ref = x[i]
        for op, mag in steps:
            seen.add(OPS[int(op[i])])
            ref = _tv_apply(ref, OPS[int(op[i])], float(mag[i]))
        assert torch.equal(out[i], ref), i
    assert len(seen) >= 13  # the batch exercises (nearly) every operation


def test_random_erasing_is_torchvisions_erase_at_the_drawn_rectangle():
    x = torch.randint(1, 256, (200, 3, 9, 13), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    out = random_erasing(x, make_generator(4), 0.7)
    erased, top, left, eh, ew = draw_erasing(len(x), 9, 13, 0.7, make_generator(4))
    assert 0.55 < float(erased.double().mean()) < 0.8
    for i in range(len(x)):
        ref = F.erase(x[i], int(top[i]), int(left[i]), int(eh[i]), int(ew[i]), torch.tensor([0.0])) if erased[i] \
            else x[i]
        assert torch.equal(out[i], ref), i
        if erased[i]:  # torchvision accepts a rectangle strictly smaller than the image, inside it
            assert 1 <= eh[i] < 9 and 1 <= ew[i] < 13 and top[i] + eh[i] <= 9 and left[i] + ew[i] <= 13
    xf = x.float() / 255
    assert torch.equal(random_erasing(xf, make_generator(4), 0.7) == 0, out == 0)
    assert torch.equal(augment_batch(x, "none", make_generator(4), erasing=0.7), out)
    with pytest.raises(ValueError, match="erasing probability"):
        augment_batch(x, "none", make_generator(4), erasing=1.5)


def test_mode_names_decompose_into_crop_flip_policy():
    from lossdial.data.augment import augment_parts

    assert augment_parts("crop_flip_autoaugment") == (True, True, "autoaugment")
    assert augment_parts("crop_randaugment") == (True, False, "randaugment")
    assert augment_parts("trivial") == (False, False, "trivial")
    assert augment_parts("crop_flip") == (True, True, None) and augment_parts("flip") == (False, True, None)
    # crop_POLICY = crop with the crop draws, then the policy with the next draws (no flip draws in between)
    x = torch.randint(0, 256, (16, 3, 8, 8), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    from lossdial.data.augment import random_crop

    g = make_generator(2)
    assert torch.equal(augment_batch(x, "crop_autoaugment", make_generator(2), padding=2),
                       auto_augment(random_crop(x, g, 2), g))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mode", AUGMENT_MODES)
def test_cuda_augmentation_equals_cpu(mode):
    """The draws come from the CPU generator, so a CUDA batch gets the CPU batch's augmentation: the same
    operations, rectangles and offsets; pixel values equal up to a float rounding that truncates one level
    differently (at most 1 of 255, on a tiny fraction of pixels)."""
    x = torch.randint(0, 256, (64, 3, 12, 12), generator=torch.Generator().manual_seed(8), dtype=torch.uint8)
    cpu = augment_batch(x, mode, make_generator(1), padding=2, erasing=0.5)
    gpu = augment_batch(x.cuda(), mode, make_generator(1), padding=2, erasing=0.5).cpu()
    diff = (gpu.int() - cpu.int()).abs()
    assert diff.max() <= 1 and (diff > 0).double().mean() < 1e-3
    assert torch.equal(gpu == 0, cpu == 0) or mode != "none"  # erasing alone: the same rectangles exactly
