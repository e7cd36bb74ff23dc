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
    in_file.update({"optim.lr": 0.0123, "train.epochs": 7,
                    "model.head": "linear"})  # the file leaves it null: resolved at load (linear unless LDAM)
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
    # The table's AP is at the training prevalence (as sweep/pick/report), not at the validation split's own:
    # sklearn's AP with each validation negative weighted so the positives make up the training prevalence.
    from sklearn.metrics import average_precision_score

    from lossdial.evaluate import load_run
    from lossdial.evaluate.scoring import score_lambdas

    run = load_run(tmp_path / "lct")
    counts = json.loads((tmp_path / "lct" / "data.json").read_text())["counts"]
    pi = counts["train"][1] / sum(counts["train"])
    task = run.task()
    y = task.val.y.numpy()
    s = score_lambdas(run.model, task.val.x, [{"tau": 0.0}], run.space, transform=task.normalizer)[0]
    w = np.where(y == 1, 1.0, (1 - pi) / pi * (y == 1).sum() / (y == 0).sum())  # negatives / positives = (1-pi)/pi
    ap = average_precision_score(y, s, sample_weight=w)
    row = re.search(r"LCT\s*│\s*tau=0\s*│\s*([\d.]+)\s*│\s*([\d.]+)", out)
    assert row and abs(float(row.group(2)) - ap) < 6e-4, (row and row.group(0), ap)
    assert f"training prevalence {pi:.4g}" in out


def test_lct_option_sets_the_lambda_space():
    out = _ok(runner.invoke(app, ["train", DEMO, "--set", "lct.enabled=false", "--lct",
                                  "gamma~U(0,0.3) tau~L(0,3,0.33)", "--print-config"], terminal_width=200))
    lct = yaml.safe_load(out)["lct"]
    assert lct["enabled"] is True and lct["lambda"] == {"gamma": "U(0,0.3)", "tau": "L(0,3,0.33)"}
    r = runner.invoke(app, ["train", DEMO, "--lct", "tau~L(0,3,0.9)", "--print-config"])
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
    # the same finished run, resumed under another config: refused (it would not be the run the user asked for)
    r = runner.invoke(app, ["train", str(tiny_run / "config.yaml"), "--set", "optim.lr=0.031", "--out",
                            str(tiny_run), "--resume", "-q"])
    assert r.exit_code == 2 and "already finished, trained with a different config" in r.output, r.output
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


def test_pick_refuses_a_bad_constraint_or_objective_before_loading_the_run(tmp_path):
    """The arguments are checked first: the run path does not even exist, so reaching it would fail otherwise."""
    missing = str(tmp_path / "no_such_run")
    r = runner.invoke(app, ["pick", missing, "--at", "precison>=0.9"])
    assert r.exit_code == 2 and "must look like 'recall>=0.95'" in r.output, r.output
    r = runner.invoke(app, ["pick", missing, "--maximize", "brier"])
    assert r.exit_code == 2 and "--maximize takes" in r.output, r.output
