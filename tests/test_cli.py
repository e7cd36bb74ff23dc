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


# ---- issue 10: checks at load through the CLI, and friction a new user hit ---------------------------------
TINY = ["train.epochs=1", "train.eval_every=0", "schedule.warmup_epochs=0", "model.backbone_kwargs.width=8",
        "train.batch_size=256"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    args = ["train", "configs/demo_digits.yaml", "--out", str(out), "-q"]
    for ov in TINY:
        args += ["--set", ov]
    _ok(runner.invoke(app, args))
    return out


def test_lct_option_is_checked_against_the_loss_ranges():
    r = runner.invoke(app, ["train", "configs/demo_digits.yaml", "--lct", "omega~U(0.5,1.5)", "--print-config"])
    assert r.exit_code == 2
    assert "lct.lambda.omega: U(0.5,1.5) reaches 1.5" in r.output and "omega in [0, 1]" in r.output
    r = runner.invoke(app, ["train", "configs/demo_digits.yaml", "--set", "lct.lambda.tau=U(3,1)", "--print-config"])
    assert r.exit_code == 2 and "lct.lambda.tau: invalid distribution 'U(3,1)'" in r.output


def test_error_message_printed_verbatim():
    # rich markup must not eat bracketed text of a message ([linear density, ...] is part of the hint)
    r = runner.invoke(app, ["train", "configs/demo_digits.yaml", "--lct", "tau~N(0,1)", "--print-config"])
    assert r.exit_code == 2 and "[linear density, height hb at b" in r.output and "[finite set;" in r.output
    # a KeyError's message keeps its own quotes (str() of a KeyError adds a pair around it)
    from lossdial.cli import _exc_text

    assert _exc_text(KeyError("no point named 'screening'")) == "no point named 'screening'"


def test_version_prints_the_installed_version():
    from importlib.metadata import version

    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == f"lossdial {version('lossdial')}"


def test_boolean_flags_are_shown_as_plain_flags_in_help():
    out = _ok(runner.invoke(app, ["train", "--help"]))
    opt = {x.strip("│ ").split()[0]: x for x in out.splitlines() if x.strip("│ ").startswith("--")}
    for flag in ("--resume", "--force", "--print-config", "--quiet", "--help"):
        assert "<bool>" not in opt[flag], opt[flag]
    assert "<path>" in opt["--out"]  # options that take a value keep their type


def test_resume_of_a_finished_run_says_so_and_does_not_train(tiny_run):
    before = (tiny_run / "model.safetensors").stat().st_mtime_ns
    out = _ok(runner.invoke(app, ["train", "--out", str(tiny_run), "--resume", "-q"]))
    assert "is already finished" in out and "(0 steps" not in out
    assert (tiny_run / "model.safetensors").stat().st_mtime_ns == before


def test_resume_of_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    r = runner.invoke(app, ["train", "--out", str(tmp_path), "--resume"])
    assert r.exit_code == 2 and "is not a lossdial run directory" in r.output and "config.yaml' does" not in r.output


def test_export_prints_no_torch_archive_warning(tiny_run, tmp_path, capfd):
    from lossdial.evaluate import load_run
    from lossdial.export import export_run

    meta = export_run(load_run(tiny_run, device="cpu"), "p", {"lambda": {"tau": 1.0}, "threshold": 0.5},
                      tmp_path / "exp")
    assert meta["files"].get("torch_export") == "model.pt2", meta["torch_export_error"]
    err = capfd.readouterr().err
    assert "archive" not in err and ".pt2" not in err, err


def test_metric_tables_fit_80_columns(monkeypatch):
    import io

    from rich.console import Console

    import lossdial.cli as cli

    buf = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=buf, width=80))
    metrics = {k: 0.123456 for k, _ in cli._COLUMNS}
    rows = [{"lambda": {"tau": 1.25, "gamma": 0.15, "omega": 0.35}, "metrics": metrics},
            {"lambda": {"tau": 2.5, "gamma": 0.3, "omega": 0.5}, "metrics": metrics}]
    cli._print_rows(rows, title="t", label="LCT")
    table = cli._print_rows(rows, title="t", label="baseline", show=False, models=True)  # the demo's table
    cli._print_rows(rows, title="t", label="LCT", table=table)
    out = buf.getvalue()
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "…" not in out and out.count("0.123") == 6 * len(cli._COLUMNS)
