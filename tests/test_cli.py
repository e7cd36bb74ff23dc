import json
import re

import numpy as np
import pytest
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from lossdial.cli import app

runner = CliRunner()
DEMO = "configs/demo_digits.yaml"


def _leaves(d, prefix=""):
    """{dotted.key: value} for every leaf of a nested dict."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _hand_auc(y, s):
    d = s[y == 1][:, None] - s[y == 0][None, :]
    return ((d > 0).sum() + 0.5 * (d == 0).sum()) / d.size


def _ok(result):
    assert result.exit_code == 0, result.output
    return result.output


def test_print_config_shows_effective_values():
    """The printed YAML holds every value the config file sets, the --set override instead of the file's lr,
    and a default for what the file leaves out."""
    out = _ok(runner.invoke(app, ["train", DEMO, "--set", "optim.lr=0.0123", "--set", "train.epochs=7",
                                  "--print-config"], terminal_width=200))
    printed = _leaves(yaml.safe_load(out))
    with open(DEMO) as f:
        in_file = _leaves(yaml.safe_load(f))
    assert in_file["optim.lr"] == 0.05 and in_file["train.epochs"] == 40
    in_file.update({"optim.lr": 0.0123, "train.epochs": 7})
    for key, value in in_file.items():
        assert printed[key] == value, key
    assert printed["optim.nesterov"] is False and printed["evaluate.threshold"] == 0.5  # defaults


def test_bad_config_key_is_a_clear_error(tmp_path):
    r = runner.invoke(app, ["train", "configs/demo_digits.yaml", "--set", "train.epochz=3", "--print-config"])
    assert r.exit_code == 2
    assert "train.epochz" in r.output and "unknown key" in r.output


def test_train_then_evaluate(tmp_path, tiny_overrides):
    """--set changes what is trained (width-8 network, 2 epochs of 128-sample batches); evaluate --json
    reports the asked lambdas, threshold and prevalence, with numbers that match a hand computation on the
    run's scores."""
    import math

    from lossdial.evaluate import load_run, sweep

    run = tmp_path / "run"
    args = ["train", DEMO, "--out", str(run), "-q"]
    for ov in tiny_overrides:
        args += ["--set", ov]
    out = _ok(runner.invoke(app, args))
    assert str(run) in out
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert (saved["train"]["epochs"], saved["train"]["batch_size"], saved["model"]["backbone_kwargs"]["width"]) == \
        (2, 128, 8)
    weights = load_file(str(run / "model.safetensors"))
    assert tuple(weights["backbone.net.0.weight"].shape) == (8, 1, 3, 3)  # width 8, not the file's 32
    assert tuple(weights["fc.weight"].shape) == (2, 16)                    # feature_dim = 2 * width
    n_train = sum(json.loads((run / "data.json").read_text())["counts"]["train"])
    log = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["event"] == "epoch" for r in log) == 2
    assert json.loads((run / "COMPLETE").read_text())["steps"] == 2 * math.ceil(n_train / 128)

    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "--force" in r.output
    out = _ok(runner.invoke(app, ["evaluate", str(run), "--lambda", "tau=0,1.5,3", "--threshold", "0.3",
                                  "--prevalence", "0.05", "--json"]))
    rows = json.loads(out)["rows"]
    assert [r["lambda"]["tau"] for r in rows] == [0.0, 1.5, 3.0]
    loaded = load_run(run)
    task = loaded.task()
    y = task.val.y.numpy()
    for row in rows:
        s = sweep(loaded.model, task.val, [row["lambda"]], loaded.space, transform=task.normalizer).scores[0]
        m = row["metrics"]
        assert (m["threshold"], m["prevalence"], m["n"], m["n_pos"]) == (0.3, 0.05, len(y), y.sum())
        assert m["auc"] == pytest.approx(_hand_auc(y, s), abs=1e-9)
        tpr, fpr = (s[y == 1] >= 0.3).mean(), (s[y == 0] >= 0.3).mean()
        assert m["recall"] == pytest.approx(tpr, abs=1e-9)
        if tpr > 0:
            assert m["precision"] == pytest.approx(0.05 * tpr / (0.05 * tpr + 0.95 * fpr), abs=1e-9)
    assert rows[0]["metrics"]["auc"] != rows[2]["metrics"]["auc"]  # the lambdas were really applied
    r = runner.invoke(app, ["evaluate", str(run), "--lambda", "tau=5"])
    assert r.exit_code == 0 and "outside the training support" in r.output
    r = runner.invoke(app, ["evaluate", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "does not exist" in r.output


def test_resume_without_config_uses_saved_one(tmp_path, tiny_overrides, kill_at):
    """A run killed at step 3, resumed with no CONFIG: it finishes with the saved config's 2 epochs (the
    config file itself says 40), and its config.yaml is unchanged."""
    from lossdial.config import load_config
    from lossdial.train import train

    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(load_config(DEMO, tiny_overrides + ["train.checkpoint_every=2"]), run, device="cpu",
              callback=kill_at(3))
    before = (run / "config.yaml").read_text()
    assert not (run / "COMPLETE").exists()
    _ok(runner.invoke(app, ["train", "--out", str(run), "--resume", "-q"]))
    log = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    per_epoch = log[0]["steps_per_epoch"]
    assert [r["epoch"] for r in log if r["event"] == "epoch"] == [1, 2]
    assert json.loads((run / "COMPLETE").read_text())["steps"] == 2 * per_epoch
    assert (run / "config.yaml").read_text() == before


@pytest.mark.slow
def test_demo_quick_end_to_end(tmp_path):
    out = _ok(runner.invoke(app, ["demo", "--quick", "--out", str(tmp_path), "-q"]))
    assert (tmp_path / "baseline" / "COMPLETE").is_file() and (tmp_path / "lct" / "COMPLETE").is_file()
    base = yaml.safe_load((tmp_path / "baseline" / "config.yaml").read_text())
    lct = yaml.safe_load((tmp_path / "lct" / "config.yaml").read_text())
    assert base["lct"]["enabled"] is False and lct["lct"]["enabled"] is True
    assert base["data"] == lct["data"] and base["seed"] == lct["seed"]  # the same data for both
    n_pos = json.loads((tmp_path / "lct" / "data.json").read_text())["counts"]["train"][1]
    assert re.search(rf"train\s+{n_pos} positives", out)


def test_lct_option_sets_the_lambda_space():
    out = _ok(runner.invoke(app, ["train", DEMO, "--set", "lct.enabled=false", "--lct",
                                  "gamma~U(0,0.3) tau~L(0,3,0.33)", "--print-config"], terminal_width=200))
    lct = yaml.safe_load(out)["lct"]
    assert lct["enabled"] is True and lct["lambda"] == {"gamma": "U(0,0.3)", "tau": "L(0,3,0.33)"}
    r = runner.invoke(app, ["train", DEMO, "--lct", "tau~L(0,3,0.9)", "--print-config"])
    assert r.exit_code == 2 and "hb must be in" in r.output
