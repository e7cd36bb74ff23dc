"""lossdial compare: baseline grid vs LCT over seeds (plan, selection protocol, files, resume, CLI)."""

import json
import os

import numpy as np
import pytest
from typer.testing import CliRunner

from lossdial.cli import app
from lossdial.config import load_config, packaged_config_path
from lossdial.experiments import METRICS, CompareError, build_methods, compare, plan_runs
from lossdial.rundir import RunDir

TINY = ["train.epochs=2", "train.eval_every=0", "schedule.warmup_epochs=0", "model.backbone_kwargs.width=8",
        "train.batch_size=128"]


def _base():
    return load_config(packaged_config_path("demo_digits"), TINY)


def test_methods_and_plan(tmp_path):
    methods = build_methods("gamma=0,0.1 tau=0,2", ["tau~L(0,3,0.33)", "gamma~U(0,0.3) tau~L(0,3,0.33)"])
    assert [m.name for m in methods] == ["baseline", "lct1", "lct2"]
    assert [n for n, _ in methods[0].members] == ["baseline_gamma0_tau0", "baseline_gamma0_tau2",
                                                 "baseline_gamma0.1_tau0", "baseline_gamma0.1_tau2"]
    base = _base()
    runs = plan_runs(base, methods, [0, 1], tmp_path)
    assert len(runs) == 2 * (4 + 2)
    b = next(r for r in runs if r.member == "baseline_gamma0.1_tau2" and r.seed == 1)
    assert b.path == tmp_path / "baseline_gamma0.1_tau2" / "seed1"
    assert not b.config.lct.enabled and b.config.loss.params == {"omega": 0.5, "gamma": 0.1, "tau": 2.0}
    assert b.config.seed == 1 and b.config.data.seed == base.data.seed  # same data subsample by default
    l2 = next(r for r in runs if r.member == "lct2" and r.seed == 0)
    assert l2.config.lct.enabled and l2.config.lct.lambdas == {"gamma": "U(0,0.3)", "tau": "L(0,3,0.33)"}
    assert {r.action for r in runs} == {"train"}
    varied = plan_runs(base, methods, [0, 1], tmp_path, vary_data_seed=True)
    assert sorted({r.config.data.seed for r in varied}) == [base.data.seed, base.data.seed + 1]

    # a directory killed before its first checkpoint restarts; a foreign config is refused
    (tmp_path / "lct1" / "seed0").mkdir(parents=True)
    RunDir(tmp_path / "lct1" / "seed0").config.write_text(l2.config.to_yaml().replace("U(0,0.3)", "U(0,0.2)"))
    with pytest.raises(CompareError, match="different config"):
        plan_runs(base, methods, [0], tmp_path)
    RunDir(tmp_path / "lct1" / "seed0").config.write_text(runs[4].config.to_yaml())
    assert runs[4].member == "lct1"
    assert next(r for r in plan_runs(base, methods, [0], tmp_path) if r.member == "lct1").action == "restart"

    with pytest.raises(CompareError, match="nothing to compare"):
        build_methods(None, [])
    with pytest.raises(ValueError):
        build_methods("tau=0,,1", None)


class _Kill(Exception):
    pass


class _KillAfterEpoch:
    def on_start(self, total_steps, start_step):
        pass

    def on_step(self, step):
        pass

    def on_epoch_end(self, epoch, record):
        if epoch == 1:
            raise _Kill  # after the epoch-1 checkpoint is written


def _metric_table(result_json):
    return {m: {k: v["values"] for k, v in d.items()} for m, d in result_json["summary"].items()}


def test_compare_cli_then_resume_reuses_finished_runs(tmp_path):
    out = tmp_path / "cmp"
    cfg_path = packaged_config_path("demo_digits")
    args = ["compare", str(cfg_path), "--baseline-grid", "tau=0,2", "--lct", "tau~L(0,3,0.33)", "--seeds", "2",
            "--out", str(out), "-q"] + [a for ov in TINY for a in ("--set", ov)]
    res = CliRunner().invoke(app, args, terminal_width=250)
    assert res.exit_code == 0, res.output
    assert "picked on: validation; scored on: test; seeds: 2" in res.output
    for head in ("AUC", "AP", "Brier", "F1", "P@R0.5", "P@R0.99", "baseline grid", "LCT tau~L(0,3,0.33)"):
        assert head in res.output
    first = json.loads((out / "compare.json").read_text())
    assert "| method |" in (out / "compare.md").read_text()
    assert first["protocol"]["picked_on"] == "val" and first["protocol"]["scored_on"] == "test"
    assert len(first["picks"]) == 2 * 2 * len(METRICS)  # seeds x methods x metrics
    for p in first["picks"]:
        assert p["member"] in (("baseline_tau0", "baseline_tau2") if p["method"] == "baseline" else ("lct",))
        assert (p["lambda"] is None) == (p["method"] == "baseline")
        assert 0.0 <= p["test"] <= 1.0 and 0.0 <= p["val"] <= 1.0
        assert p["candidates"] == (2 if p["method"] == "baseline" else 7)  # grid members / evaluate.lambda
    assert first["train_seconds"]["baseline"] > 0 and first["train_seconds"]["lct"] > 0
    import csv

    csv_rows = list(csv.DictReader((out / "compare.csv").read_text().splitlines()))
    for m in ("baseline", "lct"):
        for spec in METRICS:
            st = first["summary"][m][spec.key]
            assert np.isclose(st["mean"], np.mean(st["values"])) and len(st["values"]) == 2
            assert np.isclose(st["std"], np.std(st["values"], ddof=1))
            # the CSV's mean and std are those of the two seeds' test values of the picks
            tests = [p["test"] for p in first["picks"] if p["method"] == m and p["metric"] == spec.key]
            row = next(r for r in csv_rows if r["method"] == m and r["metric"] == spec.key)
            assert float(row["mean"]) == pytest.approx(np.mean(tests), abs=1e-6)
            assert float(row["std"]) == pytest.approx(np.std(tests, ddof=1), abs=1e-6)
            assert sorted(map(float, row["per_seed_test"].split())) == pytest.approx(sorted(tests), abs=1e-6)

    # the best grid member on validation wins: the baseline AUC pick is the member with the higher val AUC
    from lossdial.evaluate import load_run
    from lossdial.evaluate.select import sweep_split

    pick = next(p for p in first["picks"] if p["method"] == "baseline" and p["metric"] == "auc" and p["seed"] == 0)
    aucs = {m: sweep_split(load_run(out / m / "seed0"), "val").table[0]["metrics"]["auc"]
            for m in ("baseline_tau0", "baseline_tau2")}
    assert pick["member"] == max(aucs, key=aucs.get) and np.isclose(pick["val"], max(aucs.values()))

    # kill one run mid-training (its checkpoint is from epoch 1, no COMPLETE), then run compare again
    victim = out / "lct" / "seed1"
    cfg = load_config(victim / "config.yaml")
    for f in victim.iterdir():
        f.unlink()
    from lossdial.train import train

    with pytest.raises(_Kill):
        train(cfg, victim, callback=_KillAfterEpoch())
    assert RunDir(victim).checkpoint.is_file() and not RunDir(victim).is_complete
    others = [p for p in out.glob("*/seed*/model.safetensors")]
    assert len(others) == 5
    mtimes = {p: os.stat(p).st_mtime_ns for p in others}

    second = compare(cfg_path, out=out, baseline_grid="tau=0,2", lct="tau~L(0,3,0.33)", seeds=2, overrides=TINY)
    assert RunDir(victim).is_complete
    assert all(os.stat(p).st_mtime_ns == t for p, t in mtimes.items())  # finished runs were reused
    assert second.settings["runs"]["lct/seed1"] == "resume"
    assert sum(a == "reuse" for a in second.settings["runs"].values()) == 5
    assert _metric_table(second.to_dict()) == _metric_table(first)  # bit-exact resume: the same table

    # a compare into the same folder with another recipe is refused, not mixed in
    with pytest.raises(CompareError, match="different config"):
        compare(cfg_path, out=out, baseline_grid="tau=0,2", lct="tau~L(0,3,0.33)", seeds=2,
                overrides=TINY + ["optim.lr=0.01"])


def test_compare_jobs_run_in_worker_processes(tmp_path):
    """--jobs 2: two trainings at once in spawned workers; the result matches the in-process run's shape."""
    res = compare(packaged_config_path("demo_digits"), out=tmp_path, lct=["tau~L(0,3,0.33)", "tau~U(0,3)"],
                  seeds=1, overrides=TINY + ["train.epochs=1"], jobs=2)
    assert [m.name for m in res.methods] == ["lct1", "lct2"]
    assert all(RunDir(tmp_path / m / "seed0").is_complete for m in ("lct1", "lct2"))
    assert res.summary["lct1"]["auc"]["std"] is None  # one seed: no spread claimed


def test_compare_stacked_trains_the_same_runs(tmp_path):
    """--stacked: the baseline grid (all seeds) as one stack, the LCT runs as another; the same runs as unstacked."""
    import torch
    from safetensors.torch import load_file

    from lossdial.experiments.compare import stack_groups

    cfg_path = packaged_config_path("demo_digits")
    lct = ["tau~L(0,3,0.33)", "tau~U(0,3)"]
    runs = plan_runs(_base(), build_methods("tau=0,2", lct), [0, 1], tmp_path / "x")
    assert [sorted(r.label for r in g) for g in stack_groups(runs)] == [
        ["baseline_tau0/seed0", "baseline_tau0/seed1", "baseline_tau2/seed0", "baseline_tau2/seed1"],
        ["lct1/seed0", "lct1/seed1", "lct2/seed0", "lct2/seed1"]]

    # trained: one seed and one epoch (two stacks of two members each), against the same runs unstacked
    tiny = TINY + ["train.epochs=1"]
    kw = dict(baseline_grid="tau=0,2", lct=lct, seeds=1, overrides=tiny)
    out = tmp_path / "stacked"
    args = ["compare", str(cfg_path), "--baseline-grid", kw["baseline_grid"], "--seeds", "1", "--stacked",
            "--out", str(out), "-q"] + [a for ov in tiny for a in ("--set", ov)]
    for law in kw["lct"]:
        args += ["--lct", law]
    res = CliRunner().invoke(app, args, terminal_width=250)
    assert res.exit_code == 0, res.output
    stacked = json.loads((out / "compare.json").read_text())
    assert stacked["settings"]["stacked"] is True
    done = json.loads((out / "lct2" / "seed0" / "COMPLETE").read_text())
    assert done["stack_members"] == 2
    plain = compare(cfg_path, out=tmp_path / "plain", **kw)
    for run in ("baseline_tau0/seed0", "baseline_tau2/seed0", "lct1/seed0", "lct2/seed0"):
        a = load_file(str(out / run / "model.safetensors"))
        b = load_file(str(tmp_path / "plain" / run / "model.safetensors"))
        for k in a:
            assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), (run, k)
    # the validation optimum of every pick is the same (test values may differ where two candidates tie on
    # validation to ~1e-7: these 2-epoch models are near chance, and the pick between tied points may flip)
    for p, q in zip(stacked["picks"], plain.picks):
        assert (p["seed"], p["method"], p["metric"]) == (q["seed"], q["method"], q["metric"])
        assert p["val"] == pytest.approx(q["val"], abs=1e-4), (p, q)

    # reuse: a second stacked compare retrains nothing
    again = compare(cfg_path, out=out, stacked=True, **kw)
    assert set(again.settings["runs"].values()) == {"reuse"}
    with pytest.raises(CompareError, match="--stacked"):
        compare(cfg_path, out=tmp_path / "j", stacked=True, jobs=2, **kw)


def test_seed_statistics_skip_undefined_values_and_say_so():
    """A seed whose test precision is undefined (nothing predicted positive) is left out of the mean and the
    table says over how many seeds the mean runs (NaN used to turn the whole cell into nan)."""
    from lossdial.experiments.compare import CompareResult, _stats

    st = _stats([0.5, None, 0.7, float("nan")])
    assert st["n_defined"] == 2
    assert st["mean"] == pytest.approx(0.6)
    assert st["std"] == pytest.approx(((0.1 ** 2 + 0.1 ** 2) / 1) ** 0.5)  # ddof = 1 by hand
    none = _stats([None, float("nan")])
    assert none["mean"] is None and none["std"] is None and none["n_defined"] == 0
    res = CompareResult(out=None, methods=[], seeds=[0, 1, 2, 3], summary={"m": {"ap": st, "f1": none}},
                        picks=[], train_seconds={}, devices={}, prevalence={})
    assert res.cell("m", "ap") == "0.600 ± 0.141 (2/4 seeds)"
    assert res.cell("m", "f1") == "-"
