"""`lossdial predict` checks its inputs against the raw input format recorded at training time
(data.json `raw_input`): shape, channels, integer vs float kind and value range; it resizes images only for a
run trained with data.image_size, and says so; a run directory without the record gets a warning."""

import json
import shutil
import warnings

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lossdial.cli import app
from lossdial.config import load_config, packaged_config_path
from lossdial.evaluate import load_run
from lossdial.predict import PredictInputError, array_problems, column_problems, read_inputs
from lossdial.train import train

PIL = pytest.importorskip("PIL.Image")
runner = CliRunner()


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A baseline on sklearn digits: raw inputs are float32 [1, 8, 8] in [0, 1], no data.image_size."""
    root = tmp_path_factory.mktemp("digits")
    ov = ["train.epochs=1", "train.eval_every=0", "schedule.warmup_epochs=0", "model.backbone_kwargs.width=8",
          "lct.enabled=false"]
    train(load_config(packaged_config_path("demo_digits"), ov), root / "run", device="cpu")
    return root / "run"


def _by_hand(run, x: np.ndarray) -> np.ndarray:
    """P(positive) computed outside predict: normalise with data.json's mean/std, forward, softmax."""
    norm = json.loads((run / "data.json").read_text())["normalization"]
    mean = torch.tensor(norm["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(norm["std"]).view(1, -1, 1, 1)
    model = load_run(run).model
    with torch.no_grad():
        logits = model((torch.as_tensor(x).float() - mean) / std)
    return torch.softmax(logits.double(), dim=1)[:, 1].numpy()


def _predict(run, inp, out):
    return runner.invoke(app, ["predict", str(run), str(inp), "--threshold", "0.5", "--out", str(out)])


def _scores(path) -> np.ndarray:
    return np.genfromtxt(path, delimiter=",", names=True)["score"]


def test_matching_inputs_score_like_the_model_on_the_test_split(digits_run, tmp_path):
    rec = json.loads((digits_run / "data.json").read_text())["raw_input"]
    assert rec["shape"] == [1, 8, 8] and rec["dtype_kind"] == "float" and rec["value_range"] == [0.0, 1.0]
    assert rec["image_size"] is None and rec["channels"] == 1
    x = load_run(digits_run).task().test.x.numpy()
    np.savez(tmp_path / "test.npz", x=x)
    r = _predict(digits_run, tmp_path / "test.npz", tmp_path / "p.csv")
    assert r.exit_code == 0, r.output
    assert np.allclose(_scores(tmp_path / "p.csv"), _by_hand(digits_run, x), rtol=1e-5, atol=1e-7)
    # [N, H, W] is read as one channel, as training reads an .npz
    np.savez(tmp_path / "hw.npz", x=x[:, 0].astype(np.float64))
    r = _predict(digits_run, tmp_path / "hw.npz", tmp_path / "q.csv")
    assert r.exit_code == 0, r.output
    assert np.allclose(_scores(tmp_path / "q.csv"), _by_hand(digits_run, x), rtol=1e-5, atol=1e-7)
    # 8x8 grayscale PNGs: 0-255 pixels brought to the run's [0, 1] scale
    (tmp_path / "png").mkdir()
    pixels = np.round(x[:5, 0] * 255).astype(np.uint8)
    for i, a in enumerate(pixels):
        PIL.fromarray(a).save(tmp_path / "png" / f"{i}.png")
    r = _predict(digits_run, tmp_path / "png", tmp_path / "r.csv")
    assert r.exit_code == 0 and "resized" not in r.output, r.output
    assert np.allclose(_scores(tmp_path / "r.csv"), _by_hand(digits_run, pixels[:, None] / 255.0), atol=1e-6)


def test_refuses_32x32_rgb_images_on_an_8x8_grayscale_run(digits_run, tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "big").mkdir()
    for i in range(3):
        PIL.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "big" / f"{i}.png")
    r = _predict(digits_run, tmp_path / "big", tmp_path / "p.csv")
    assert r.exit_code == 2, r.output
    assert "0.png is 32x32 RGB" in r.output and "resize them to 8x8 grayscale first" in r.output
    assert not (tmp_path / "p.csv").exists()
    # the right size but colour: refused too (the run never saw colour, nothing converted it)
    (tmp_path / "colour").mkdir()
    PIL.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "colour" / "c.png")
    with pytest.raises(PredictInputError, match="hold colour.*convert them to grayscale"):
        read_inputs(tmp_path / "colour", json.loads((digits_run / "data.json").read_text()))
    # an RGB file whose channels are equal is a grayscale image: accepted
    g = rng.integers(0, 256, (8, 8), dtype=np.uint8)
    PIL.fromarray(np.stack([g] * 3, axis=-1)).save(tmp_path / "grey_rgb.png")
    got = read_inputs(tmp_path / "grey_rgb.png", json.loads((digits_run / "data.json").read_text()))
    assert np.allclose(got.x.numpy()[0, 0], g / 255.0, atol=1e-7)


def test_refuses_uint8_0_255_npz_on_a_float_0_1_run(digits_run, tmp_path):
    x = load_run(digits_run).task().test.x.numpy()
    np.savez(tmp_path / "u8.npz", x=np.round(x * 255).astype(np.uint8))
    r = _predict(digits_run, tmp_path / "u8.npz", tmp_path / "p.csv")
    assert r.exit_code == 2, r.output
    assert "x is uint8 0-255 but the run was trained on floats in [0, 1]: divide by 255" in r.output
    assert not (tmp_path / "p.csv").exists()
    data = json.loads((digits_run / "data.json").read_text())
    np.savez(tmp_path / "f255.npz", x=x * 255)  # floats, but on the wrong scale
    with pytest.raises(PredictInputError, match=r"float32 in \[0, 255\].*divide by 255"):
        read_inputs(tmp_path / "f255.npz", data)
    np.savez(tmp_path / "rgb.npz", x=np.repeat(x, 3, axis=1))
    with pytest.raises(PredictInputError, match=r"8x8 RGB images .* trained on 8x8 grayscale"):
        read_inputs(tmp_path / "rgb.npz", data)
    bad = x.copy()
    bad[4, 0, 2, 2] = np.nan
    np.savez(tmp_path / "nan.npz", x=bad)
    with pytest.raises(PredictInputError, match="NaN or infinite.*sample 4"):
        read_inputs(tmp_path / "nan.npz", data)
    # a small excursion past the training range is tolerated (0.05 on the [0, 1] scale), a large one is not
    np.savez(tmp_path / "near.npz", x=np.clip(x * 1.04, 0, None))
    assert read_inputs(tmp_path / "near.npz", data).x.shape == x.shape
    np.savez(tmp_path / "far.npz", x=x * 1.2)
    with pytest.raises(PredictInputError, match=r"in \[0, 1.2\]"):
        read_inputs(tmp_path / "far.npz", data)


def test_run_without_the_record_warns_instead_of_refusing(digits_run, tmp_path):
    old = tmp_path / "old_run"
    shutil.copytree(digits_run, old)
    data = json.loads((old / "data.json").read_text())
    data.pop("raw_input", None)
    (old / "data.json").write_text(json.dumps(data))
    x = load_run(digits_run).task().test.x.numpy()
    np.savez(tmp_path / "u8.npz", x=np.round(x * 255).astype(np.uint8))
    r = _predict(old, tmp_path / "u8.npz", tmp_path / "p.csv")
    assert r.exit_code == 0, r.output
    assert "warning: this run's data.json has no raw_input record" in r.output
    assert len(_scores(tmp_path / "p.csv")) == len(x)


def test_image_folder_run_resizes_only_because_it_was_trained_with_image_size(tmp_path, monkeypatch):
    """Trained through the CLI on 6x6 PNGs with data.image_size 4 and one unreadable file skipped."""
    monkeypatch.setenv("LOSSDIAL_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(1)
    for cls, n, base in (("neg", 48, 60), ("pos", 16, 180)):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(n):
            a = np.clip(rng.normal(base, 40, (6, 6, 3)), 0, 255).astype(np.uint8)
            PIL.fromarray(a).save(tmp_path / "imgs" / cls / f"{i:03d}.png")
    (tmp_path / "imgs" / "neg" / "broken.png").write_bytes(b"not a png")
    (tmp_path / "cfg.yaml").write_text(f"""name: tiny_folder
data: {{source: image_folder, path: {tmp_path / 'imgs'}, image_size: 4, channels: 3, positive_class: pos,
        beta: null, val_fraction: 0.25, test_fraction: 0.25, min_holdout_positives: 3, skip_bad_images: true}}
model: {{backbone: small_cnn, backbone_kwargs: {{width: 8}}}}
loss: {{family: vs, params: {{omega: 0.5, gamma: 0.2, tau: 1.0}}}}
train: {{epochs: 1, batch_size: 32, eval_every: 0}}
""")
    run = tmp_path / "run"
    r = runner.invoke(app, ["train", str(tmp_path / "cfg.yaml"), "--out", str(run), "-q"])
    assert r.exit_code == 0, r.output
    # the skipped-images notice is one clean line, not a Python warning with its source line
    notice = [ln for ln in r.output.splitlines() if "skipped 1 unreadable" in ln]
    assert len(notice) == 1 and notice[0].startswith("warning: skipped 1 unreadable image(s)"), r.output
    assert "UserWarning" not in r.output and "load_image_folder(" not in r.output
    rec = json.loads((run / "data.json").read_text())["raw_input"]
    assert rec["image_size"] == [4, 4] and rec["dtype_kind"] == "integer" and rec["decoded_as"] == "RGB"

    # new 9x7 images: resized as in training, and the output says so
    (tmp_path / "new").mkdir()
    new = [rng.integers(0, 256, (7, 9, 3), dtype=np.uint8) for _ in range(4)]
    for i, a in enumerate(new):
        PIL.fromarray(a).save(tmp_path / "new" / f"{i}.png")
    r = _predict(run, tmp_path / "new", tmp_path / "p.csv")
    assert r.exit_code == 0, r.output
    assert "resized 4 of 4 image(s) to 4x4" in " ".join(r.output.split())
    ref = np.stack([np.asarray(PIL.fromarray(a).resize((4, 4), PIL.BILINEAR)).transpose(2, 0, 1) for a in new])
    assert np.allclose(_scores(tmp_path / "p.csv"), _by_hand(run, ref.astype(np.float32)), atol=1e-6)
    # a float [0, 1] array on this uint8 0-255 run is refused with the fix
    np.savez(tmp_path / "f.npz", x=ref.astype(np.float32) / 255)
    r = _predict(run, tmp_path / "f.npz", tmp_path / "q.csv")
    assert r.exit_code == 2 and "multiply by 255" in r.output, r.output


def test_table_value_ranges_by_hand():
    """Table features may lie up to one training span beyond the training range (closed-form bounds)."""
    rec = {"kind": "table", "dtype_kind": "float", "value_range": [0.0, 20.0],
           "feature_ranges": [[0.0, 1.0], [10.0, 20.0], [5.0, 5.0]]}
    ok = np.array([[-0.99, 29.9, 0.0], [1.99, 0.1, 9.9]])  # bounds: [-1, 2], [0, 30], [0, 10] (constant: +-5)
    assert array_problems(ok, rec, "x") == []
    far = ok.copy()
    far[1, 1] = 30.5
    far[0, 2] = 10.5
    (msg,) = array_problems(far, rec, "x")
    assert "2 feature(s)" in msg and "feature 1 spans [29.9, 30.5]" in msg and "feature 2 spans [9.9, 10.5]" in msg
    cols = {"age": np.array(["30", None, "95", "1e9"], dtype=object), "city": np.array(["a"] * 4, dtype=object)}
    (msg,) = column_problems(cols, {"column_ranges": {"age": [20.0, 60.0]}}, "t.csv")  # bounds [-20, 100]
    assert "column 'age' has 1 value(s)" in msg and "'1e9' in data row 4" in msg
    assert column_problems({"age": cols["age"][:3]}, {"column_ranges": {"age": [20.0, 60.0]}}, "t.csv") == []


def test_sklearn_digit_levels_get_the_right_hint_and_a_wrong_rescale_warns(digits_run, tmp_path):
    """sklearn's digits come as 0-16 levels: the hint says x / 16, not x / 255; inputs divided by 255 anyway
    (values up to 16/255) are far narrower than the training range and get a warning, not silent scores."""
    data = json.loads((digits_run / "data.json").read_text())
    x16 = np.round(load_run(digits_run).task().test.x.numpy() * 16)
    np.savez(tmp_path / "raw16.npz", x=x16)
    with pytest.raises(PredictInputError, match=r"in \[0, 16\].*x / 16\.0") as exc:
        read_inputs(tmp_path / "raw16.npz", data)
    assert "255" not in str(exc.value)
    np.savez(tmp_path / "wrong.npz", x=x16 / 255.0)
    with pytest.warns(UserWarning, match=r"spans only \[0, 0\.06275\]"):
        read_inputs(tmp_path / "wrong.npz", data)
    np.savez(tmp_path / "right.npz", x=x16 / 16.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_inputs(tmp_path / "right.npz", data)
