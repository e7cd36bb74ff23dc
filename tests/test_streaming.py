"""The streaming DataLoader path: same order, same augmentation distribution, same training as the device path."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from scipy.stats import chi2_contingency, chisquare

from lossdial.config import config_from_dict, load_config, packaged_config_path
from lossdial.data import DataSourceError, build_task
from lossdial.data.augment import TRIVIAL_OPS, _SIGNED, apply_trivial, augment_batch, signed_magnitudes
from lossdial.data.images import ImageFiles, ImageReadError, load_image_folder
from lossdial.data.loader import TensorLoader, make_generator
from lossdial.data.streaming import StreamingLoader
from lossdial.train import train
from lossdial.train.factory import resolve_loader_kind

PIL = pytest.importorskip("PIL.Image")


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSDIAL_CACHE", str(tmp_path / "cache"))


def _image(shape=(3, 10, 10), seed=0):
    # values 20..230: no pixel sits at a solarize/posterize edge case, and (almost) every op changes the image
    return torch.from_numpy(np.random.default_rng(seed).integers(20, 231, size=shape, dtype=np.uint8))


def _stream_outputs(img, mode, n, padding=4, workers=0, seed=3, erasing=0.0):
    x = img[None].expand(n, -1, -1, -1).contiguous()
    ld = StreamingLoader(x, torch.zeros(n, dtype=torch.long), 500, augment=mode, padding=padding, shuffle=False,
                         aug_seed=seed, num_workers=workers, erasing=erasing)
    return torch.cat([xb for xb, _ in ld.batches(0)])


def _device_outputs(img, mode, n, padding=4, seed=3, erasing=0.0):
    x = img[None].expand(n, -1, -1, -1).contiguous()
    return augment_batch(x, mode, make_generator(seed), padding, erasing)


# --------------------------------------------------------------------------------------------------------
# TrivialAugment: per-operation outputs and operation frequencies

def _trivial_candidates(img):
    """Every output TrivialAugment-Wide can give for `img` -> (set of operations giving it, probability)."""
    ops, bins, signs, probs = [], [], [], []
    for k, name in enumerate(TRIVIAL_OPS):
        for b in range(31):
            for s in ((1.0, -1.0) if name in _SIGNED else (1.0,)):
                ops.append(k), bins.append(b), signs.append(s)
                probs.append(1 / 14 / 31 / (2 if name in _SIGNED else 1))
    op, mb, sg = torch.tensor(ops), torch.tensor(bins), torch.tensor(signs, dtype=torch.float64)
    outs = apply_trivial(img[None].expand(len(op), -1, -1, -1).contiguous(), op, signed_magnitudes(op, mb, sg))
    table: dict[bytes, list] = {}
    for i in range(len(op)):
        entry = table.setdefault(outs[i].numpy().tobytes(), [set(), 0.0])
        entry[0].add(TRIVIAL_OPS[int(op[i])])
        entry[1] += probs[i]
    return table


def _label_counts(outputs, table, labels):
    counts = dict.fromkeys(labels, 0)
    for o in outputs:
        key = o.numpy().tobytes()
        assert key in table, "an augmented image is not any operation's output at any magnitude"
        counts[frozenset(table[key][0])] += 1
    return np.array([counts[lab] for lab in labels])


def test_trivial_augment_stream_and_device_same_outputs_and_op_frequencies():
    img = _image()
    table = _trivial_candidates(img)
    expected: dict[frozenset, float] = {}
    for ops_, p in table.values():
        expected[frozenset(ops_)] = expected.get(frozenset(ops_), 0.0) + p
    labels = sorted(expected, key=lambda s: sorted(s))
    probs = np.array([expected[lab] for lab in labels])
    assert probs.sum() == pytest.approx(1.0)
    # 14 operations; magnitude-0 bins of most ops coincide with identity, so identity's label is a set of ops
    assert len(labels) >= 14
    n = 4200
    stream = _label_counts(_stream_outputs(img, "trivial", n), table, labels)
    device = _label_counts(_device_outputs(img, "trivial", n), table, labels)
    # each path against the exact law (fixed seeds: deterministic), then the two paths against each other
    for counts in (stream, device):
        assert chisquare(counts, probs * n).pvalue > 1e-3
    assert chi2_contingency(np.stack([stream, device])).pvalue > 1e-3
    # every operation is actually drawn by the streaming (torchvision) path
    drawn = set().union(*[lab for lab, c in zip(labels, stream) if c > 0])
    assert drawn == set(TRIVIAL_OPS)


def test_stream_trivial_outputs_are_torchvision_outputs_uint8_float_grayscale():
    gray = _image((1, 9, 11), seed=5)
    table = _trivial_candidates(gray)
    outs = _stream_outputs(gray, "trivial", 300, seed=11)
    assert outs.dtype == torch.uint8 and outs.shape == (300, 1, 9, 11)
    for o in outs:
        assert o.numpy().tobytes() in table


# --------------------------------------------------------------------------------------------------------
# AutoAugment (CIFAR-10 policy) and RandAugment: the exact law over outputs, enumerated with torchvision's
# own policy list, magnitude tables and operations (independent of our tables and vectorised operations)

def _tv_policy_law(img, policy):
    """{output bytes: probability} of torchvision's AutoAugment(CIFAR10) / RandAugment() applied to `img`."""
    from itertools import product

    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import AutoAugment, AutoAugmentPolicy, RandAugment

    h, w = img.shape[-2:]
    if policy == "autoaugment":
        tv = AutoAugment(AutoAugmentPolicy.CIFAR10)
        # a sub-policy: uniform over 25; each step applied with its probability; a signed step's sign 1/2
        branches = []
        for pol in tv._policies:
            per_step = []
            for name, p, b in pol:
                fn, signed = tv._AUGMENTATION_SPACE[name]
                mags = fn(10, h, w)
                mag = None if mags is None else float(mags[b])
                opts = [((None, 0.0), 1 - p)] if p < 1 else []
                signs = (1, -1) if signed and mag is not None else (1,)
                opts += [((name, 0.0 if mag is None else s * mag), p / len(signs)) for s in signs if p > 0]
                per_step.append(opts)
            for (s1, p1), (s2, p2) in product(*per_step):
                branches.append(((s1, s2), p1 * p2 / len(tv._policies)))
    else:
        tv = RandAugment()
        per_step = []
        for name, (fn, signed) in tv._AUGMENTATION_SPACE.items():
            mags = fn(tv.num_magnitude_bins, h, w)
            mag = None if mags is None else float(mags[tv.magnitude])
            signs = (1, -1) if signed and mag is not None else (1,)
            per_step += [((name, 0.0 if mag is None else s * mag), 1 / len(tv._AUGMENTATION_SPACE) / len(signs))
                         for s in signs]
        branches = [((a, b), pa * pb) for (a, pa), (b, pb) in product(*[per_step] * tv.num_ops)]
    law: dict[bytes, float] = {}
    for steps, prob in branches:
        out = img
        for name, m in steps:
            if name is not None:
                out = tv._apply_image_or_video_transform(out, name, m, interpolation=InterpolationMode.NEAREST,
                                                         fill=tv._fill)
        key = out.numpy().tobytes()
        law[key] = law.get(key, 0.0) + prob
    return law


def _law_counts(outputs, law, n):
    """Counts per output of `law` whose expected count is >= 5, the rest pooled; expected probabilities alike."""
    keys = [k for k, p in law.items() if p * n >= 5]
    index = {k: i for i, k in enumerate(keys)}
    counts = np.zeros(len(keys) + 1)
    for o in outputs:
        key = o.numpy().tobytes()
        assert key in law, "an augmented image is not an output torchvision's transform can give"
        counts[index.get(key, len(keys))] += 1
    probs = np.array([law[k] for k in keys] + [1 - sum(law[k] for k in keys)])
    return counts, probs


@pytest.mark.parametrize("policy", ["autoaugment", "randaugment"])
def test_policy_stream_and_device_same_outputs_and_law(policy):
    img = _image((3, 10, 12), seed=4)
    law = _tv_policy_law(img, policy)
    assert sum(law.values()) == pytest.approx(1.0)
    n = 3000
    got = []
    for mode in (policy, f"crop_flip_{policy}"):
        if mode != policy:  # the combined mode runs on both paths (its law is not enumerated here)
            assert _stream_outputs(img, mode, 20).shape == _device_outputs(img, mode, 20).shape == (20, 3, 10, 12)
            continue
        for outs in (_stream_outputs(img, mode, n), _device_outputs(img, mode, n)):
            counts, probs = _law_counts(outs, law, n)
            assert len(counts) > 20  # enough distinct outputs for the test to have power
            assert chisquare(counts, probs * n).pvalue > 1e-3
            got.append(counts)
    assert chi2_contingency(np.stack(got)).pvalue > 1e-3


# --------------------------------------------------------------------------------------------------------
# Random Erasing: the exact law of the rectangle, computed by integration

def _erasing_law(hh, ww, p, scale=(0.02, 0.33), ratio=(0.3, 3.3), attempts=10):
    """{(eh, ew): P} and P(not erased) of torchvision's RandomErasing on an hh x ww image.

    One attempt draws s ~ U(scale), log r ~ U(log ratio); u = sqrt(A s r), v = sqrt(A s / r) has density
    2 / (A (s1 - s0) (log r1 - log r0)) on {s0 A <= u v <= s1 A, r0 <= u / v <= r1}, and (eh, ew) =
    (round u, round v): P(a, b) is that density integrated over the unit cell around (a, b) (midpoint rule in
    u, exact in v). The first attempt with eh < H and ew < W is used.
    """
    area = hh * ww
    dens = 2 / (area * (scale[1] - scale[0]) * (np.log(ratio[1]) - np.log(ratio[0])))
    one = {}
    for a in range(1, hh):
        u = a - 0.5 + (np.arange(4000) + 0.5) / 4000
        for b in range(1, ww):
            lo = np.maximum.reduce([np.full_like(u, b - 0.5), u / ratio[1], scale[0] * area / u])
            hi = np.minimum.reduce([np.full_like(u, b + 0.5), u / ratio[0], scale[1] * area / u])
            one[(a, b)] = dens * np.clip(hi - lo, 0, None).mean()
    valid = sum(one.values())
    p_found = 1 - (1 - valid) ** attempts
    law = {k: p * p_found * v / valid for k, v in one.items()}
    return law, 1 - p * p_found


def _rectangles(outs):
    """(eh, ew, top, left) of the zero rectangle of each output (None: not erased); asserts it is a rectangle."""
    rects = []
    for o in outs:
        z = (o == 0).all(0)
        if not z.any():
            rects.append(None)
            continue
        rows, cols = torch.nonzero(z.any(1)).squeeze(1), torch.nonzero(z.any(0)).squeeze(1)
        t, l, eh, ew = int(rows[0]), int(cols[0]), len(rows), len(cols)
        assert z.sum() == eh * ew and z[t:t + eh, l:l + ew].all() and (o == 0).sum() == eh * ew * o.shape[0]
        rects.append((eh, ew, t, l))
    return rects


def test_random_erasing_stream_and_device_same_law():
    img, p, n = _image((3, 9, 11), seed=6), 0.6, 2000  # values 20..230: the erased rectangle is the zeros
    law, p_none = _erasing_law(9, 11, p)
    sizes = sorted(law)
    tables = []
    for outs in (_stream_outputs(img, "none", n, erasing=p), _device_outputs(img, "none", n, erasing=p)):
        rects = _rectangles(outs)
        # the rectangle's sides, against the integrated law (rare sides pooled)
        keep = [k for k in sizes if law[k] * n >= 5]
        counts = np.zeros(len(keep) + 2)
        exp = np.array([law[k] for k in keep] + [1 - p_none - sum(law[k] for k in keep), p_none]) * n
        for r in rects:
            counts[-1 if r is None else keep.index(r[:2]) if r[:2] in keep else len(keep)] += 1
        assert chisquare(counts, exp).pvalue > 1e-3
        # the top-left corner: uniform over the positions where the rectangle fits, given its sides
        for axis, size in ((0, 9), (1, 11)):
            side = {}
            for k, v in law.items():
                side[k[axis]] = side.get(k[axis], 0.0) + v
            cells = {(a, t): side[a] / (size - a + 1) for a in side for t in range(size - a + 1)}
            keep = [c for c in cells if cells[c] * n >= 5]
            got = np.zeros(len(keep) + 1)
            for r in rects:
                if r is not None:
                    c = (r[axis], r[2 + axis])
                    assert c in cells
                    got[keep.index(c) if c in keep else len(keep)] += 1
            want = np.array([cells[c] for c in keep] + [1 - p_none - sum(cells[c] for c in keep)]) * n
            assert chisquare(got, want * got.sum() / want.sum()).pvalue > 1e-3
        tables.append(counts)
    assert chi2_contingency(np.stack(tables)).pvalue > 1e-3


# --------------------------------------------------------------------------------------------------------
# crop + flip

def _crop_flip_candidates(img, p):
    c, h, w = img.shape
    xp = F.pad(img, (p, p, p, p))
    table = {}
    for dy in range(2 * p + 1):
        for dx in range(2 * p + 1):
            crop = xp[:, dy:dy + h, dx:dx + w]
            for flip in (0, 1):
                out = crop.flip(-1) if flip else crop
                table.setdefault(out.numpy().tobytes(), (dy, dx, flip))
    return table


def test_crop_flip_stream_and_device_same_law():
    img, p, n = _image((3, 8, 8), seed=2), 2, 3000
    table = _crop_flip_candidates(img, p)
    assert len(table) == (2 * p + 1) ** 2 * 2  # a random image makes every (dy, dx, flip) distinct
    keys = sorted(table.values())
    counts = []
    for outs in (_stream_outputs(img, "crop_flip", n, padding=p), _device_outputs(img, "crop_flip", n, padding=p)):
        got = dict.fromkeys(keys, 0)
        for o in outs:
            got[table[o.numpy().tobytes()]] += 1  # KeyError = an output no crop/flip can give
        c = np.array([got[k] for k in keys])
        assert chisquare(c).pvalue > 1e-3  # uniform over 25 offsets x 2 flips
        flipped = sum(v for k, v in got.items() if k[2] == 1)
        assert abs(flipped / n - 0.5) < 4 * (0.25 / n) ** 0.5
        counts.append(c)
    assert chi2_contingency(np.stack(counts)).pvalue > 1e-3


# --------------------------------------------------------------------------------------------------------
# order, seeds, workers, resume

def test_stream_order_equals_tensor_loader_and_does_not_depend_on_workers():
    x = torch.randint(0, 256, (37, 3, 6, 6), dtype=torch.uint8)
    y = torch.arange(37) % 2
    ref = [(a.clone(), b.clone()) for a, b in TensorLoader(x, y, 8, seed=7).batches(2)]
    for w in (0, 2):
        got = list(StreamingLoader(x, y, 8, seed=7, num_workers=w).batches(2))
        assert len(got) == len(ref) == 5
        for (a, b), (c, d) in zip(ref, got):
            assert torch.equal(a, c) and torch.equal(b, d)
    aug = [list(StreamingLoader(x, y, 8, seed=7, aug_seed=1, augment="crop_flip_trivial", num_workers=w)
                .batches(1)) for w in (0, 2)]
    for (a, b), (c, d) in zip(*aug):
        assert torch.equal(a, c) and torch.equal(b, d)
    ld = StreamingLoader(x, y, 8, seed=7, aug_seed=1, augment="crop_flip_trivial", num_workers=2)
    tail = list(ld.batches(1, start=3))  # what a run resumed at batch 3 sees
    assert len(tail) == 2
    for (a, _), (c, _) in zip(aug[0][3:], tail):
        assert torch.equal(a, c)
    again = list(ld.batches(1))  # persistent workers: a second pass over the same epoch repeats it
    assert all(torch.equal(a, c) for (a, _), (c, _) in zip(aug[0], again))
    other = list(ld.batches(2))
    assert not all(torch.equal(a, c) for (a, _), (c, _) in zip(aug[0], other))


def test_stream_leaves_global_rng_alone():
    x = torch.randint(0, 256, (10, 3, 6, 6), dtype=torch.uint8)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    list(StreamingLoader(x, torch.zeros(10, dtype=torch.long), 4, augment="trivial", num_workers=0).batches(0))
    assert torch.equal(before, torch.get_rng_state())


def test_pil_path_gives_the_same_crop_flip_images():
    x = torch.randint(0, 256, (20, 3, 7, 7), dtype=torch.uint8)
    y = torch.zeros(20, dtype=torch.long)
    a = list(StreamingLoader(x, y, 5, augment="crop_flip", aug_seed=4, num_workers=0).batches(0))
    b = list(StreamingLoader(x, y, 5, augment="crop_flip", aug_seed=4, num_workers=0, to_pil=True).batches(0))
    for (p, _), (q, _) in zip(a, b):
        assert torch.equal(p, q)
    plain = list(StreamingLoader(x, y, 5, shuffle=False, num_workers=0, to_pil=True).batches(0))
    assert torch.equal(torch.cat([p for p, _ in plain]), x)


# --------------------------------------------------------------------------------------------------------
# lazy image folders end to end

def _folder(root, n_neg=60, n_pos=20, size=(12, 12), seed=0):
    rng = np.random.default_rng(seed)
    for cls, n in (("good", n_neg), ("defect", n_pos)):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            base = 60 if cls == "good" else 170
            arr = np.clip(rng.normal(base, 40, size=(*size, 3)), 0, 255).astype(np.uint8)
            PIL.fromarray(arr).save(root / cls / f"{i:03d}.png")
    return root


def _folder_cfg(root, tmp_path, extra=()):
    base = {"name": "folder", "data": {"source": "image_folder", "path": str(root), "positive_class": "defect",
                                       "beta": 4, "val_fraction": 0.25, "test_fraction": 0.25,
                                       "min_holdout_positives": 2}}
    ov = ["model.backbone=small_cnn", "model.backbone_kwargs.width=8", "train.epochs=2", "train.batch_size=8",
          "train.eval_every=1", "schedule.warmup_epochs=0", "lct.enabled=false", "train.num_workers=0",
          *extra]
    cfg = load_config(packaged_config_path("demo_digits"), ov)
    d = cfg.to_dict()
    d.update(base)
    return config_from_dict(d)


def test_lazy_folder_matches_in_memory_folder(tmp_path):
    root = _folder(tmp_path / "imgs")
    eager = load_image_folder(root)
    lazy = load_image_folder(root, in_memory=False)
    assert isinstance(lazy.x, ImageFiles) and lazy.x.shape == eager.x.shape
    assert np.array_equal(lazy.y, eager.y)
    assert torch.equal(lazy.x[np.arange(5, 15)].load(), torch.from_numpy(eager.x[5:15]))
    assert torch.equal(lazy.x[3:9].to("cpu"), torch.from_numpy(eager.x[3:9]))
    assert np.array_equal(lazy.x[4], eager.x[4])


@pytest.mark.parametrize("augment", ["none", "crop_flip"])
def test_streamed_folder_trains_like_the_device_path(tmp_path, augment):
    """augment none: streamed training gives the device path's weights exactly (same batches, same math);
    with augmentation the draws differ (per-image seeds vs batch draws) but the run completes and resumes."""
    root = _folder(tmp_path / "imgs")
    dev_cfg = _folder_cfg(root, tmp_path, [f"train.augment={augment}"])
    d = dev_cfg.to_dict()
    d["data"]["in_memory"] = False
    lazy_cfg = config_from_dict(d)
    task = build_task(lazy_cfg.data)
    assert resolve_loader_kind(lazy_cfg, task) == "stream"
    a = train(dev_cfg, tmp_path / "device", device="cpu")
    b = train(lazy_cfg, tmp_path / "stream", device="cpu")
    wa = load_file(str(a.run_dir / "model.safetensors"))
    wb = load_file(str(b.run_dir / "model.safetensors"))
    same = all(torch.equal(wa[k], wb[k]) for k in wa)
    assert same == (augment == "none")
    assert b.final["rows"][0]["metrics"]["auc"] > 0.9  # the classes differ in brightness: easy


def test_streamed_run_killed_and_resumed_equals_uninterrupted(tmp_path, kill_at):
    root = _folder(tmp_path / "imgs")
    cfg = _folder_cfg(root, tmp_path, ["train.augment=crop_flip_trivial", "train.checkpoint_every=3",
                                       "train.loader=stream", "train.num_workers=2", "train.epochs=3"])
    full = train(cfg, tmp_path / "full", device="cpu")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "killed", device="cpu", callback=kill_at(full.steps // 2 + 1))
    resumed = train(cfg, tmp_path / "killed", device="cpu", resume=True)
    assert resumed.steps == full.steps
    wa = load_file(str(tmp_path / "full" / "model.safetensors"))
    wb = load_file(str(tmp_path / "killed" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_stream_errors_name_the_fix(tmp_path):
    root = _folder(tmp_path / "imgs", n_neg=16, n_pos=12)
    d = _folder_cfg(root, tmp_path, ["train.loader=device"]).to_dict()
    d["data"]["in_memory"] = False
    cfg = config_from_dict(d)
    with pytest.raises(ValueError, match="train.loader: stream"):
        resolve_loader_kind(cfg, build_task(cfg.data))
    digits = load_config(packaged_config_path("demo_digits"), ["train.loader=pil"])
    with pytest.raises(ValueError, match="pil takes uint8 images"):
        resolve_loader_kind(digits, build_task(digits.data))
    table = load_config(packaged_config_path("demo_digits"), ["train.loader=stream", "data.source=breast_cancer",
                                                               "data.positive_class=malignant",
                                                               "model.backbone=mlp", "model.backbone_kwargs={}"])
    with pytest.raises(ValueError, match="tables live in memory"):
        resolve_loader_kind(table, build_task(table.data))
    with pytest.raises(DataSourceError, match="in_memory: true"):
        load_image_folder(root, in_memory=False, skip_bad_images=True)
    good = load_image_folder(root, in_memory=False)
    PIL.fromarray(np.zeros((5, 7, 3), np.uint8)).save(root / "good" / "zz_odd.png")
    with pytest.raises(DataSourceError, match="zz_odd.png is 7x5.*data.image_size"):  # headers read up front
        load_image_folder(root, in_memory=False)
    resized = load_image_folder(root, in_memory=False, image_size=12)
    assert resized.x.load().shape == (29, 3, 12, 12)
    # a file that changes size after listing fails in the worker; the message comes back as one line
    files = good.x.files[:8] + [str(root / "good" / "zz_odd.png")]
    lazy = ImageFiles(files, 3, None, item_shape=(3, 12, 12))
    loader = StreamingLoader(lazy, torch.zeros(9, dtype=torch.long), 4, num_workers=2)
    try:
        with pytest.raises(ImageReadError) as info:
            list(loader.batches(0))
    finally:  # stop the workers now: left to the garbage collector, their shutdown waits ~10 s in a later test
        loader.close()
    msg = str(info.value)
    assert "zz_odd.png" in msg and "data.image_size" in msg and "\n" not in msg and "Traceback" not in msg
