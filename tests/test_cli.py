import json
import re

import pytest
from typer.testing import CliRunner

from lossdial.cli import app

runner = CliRunner()


def _ok(result):
    assert result.exit_code == 0, result.output
    return result.output


def test_print_config_shows_effective_values():
    out = _ok(runner.invoke(app, ["train", "configs/demo_digits.yaml", "--set", "optim.lr=0.0123",
                                  "--print-config"]))
    assert "lr: 0.0123" in out and "lambda:" in out


def test_bad_config_key_is_a_clear_error(tmp_path):
    r = runner.invoke(app, ["train", "configs/demo_digits.yaml", "--set", "train.epochz=3", "--print-config"])
    assert r.exit_code == 2
    assert "train.epochz" in r.output and "unknown key" in r.output


def test_train_then_evaluate(tmp_path, tiny_overrides):
    args = ["train", "configs/demo_digits.yaml", "--out", str(tmp_path / "run"), "-q"]
    for ov in tiny_overrides:
        args += ["--set", ov]
    out = _ok(runner.invoke(app, args))
    assert "run directory" in out
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "--force" in r.output
    out = _ok(runner.invoke(app, ["evaluate", str(tmp_path / "run"), "--lambda", "tau=0,1.5,3", "--json"]))
    rows = json.loads(out)["rows"]
    assert [r["lambda"]["tau"] for r in rows] == [0.0, 1.5, 3.0]
    r = runner.invoke(app, ["evaluate", str(tmp_path / "run"), "--lambda", "tau=5"])
    assert r.exit_code == 0 and "outside the training support" in r.output
    r = runner.invoke(app, ["evaluate", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "does not exist" in r.output


def test_resume_without_config_uses_saved_one(tmp_path, tiny_overrides):
    args = ["train", "configs/demo_digits.yaml", "--out", str(tmp_path / "run"), "-q"]
    for ov in tiny_overrides:
        args += ["--set", ov]
    _ok(runner.invoke(app, args))
    out = _ok(runner.invoke(app, ["train", "--out", str(tmp_path / "run"), "--resume", "-q"]))
    assert "run directory" in out


@pytest.mark.slow
def test_demo_quick_end_to_end(tmp_path):
    out = _ok(runner.invoke(app, ["demo", "--quick", "--out", str(tmp_path), "-q"]))
    assert (tmp_path / "baseline" / "COMPLETE").is_file() and (tmp_path / "lct" / "COMPLETE").is_file()
    assert re.search(r"train\s+\d+ positives", out)


def test_lct_option_sets_the_lambda_space():
    out = _ok(runner.invoke(app, ["train", "configs/demo_digits.yaml", "--lct", "gamma~U(0,0.3) tau~L(0,3,0.33)",
                                  "--print-config"]))
    assert "gamma: U(0,0.3)" in out and "tau: L(0,3,0.33)" in out
    r = runner.invoke(app, ["train", "configs/demo_digits.yaml", "--lct", "tau~L(0,3,0.9)", "--print-config"])
    assert r.exit_code == 2 and "hb must be in" in r.output
