"""lossdial tune: the search space, the study's checks, resume, and two worker processes on one journal file."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from lossdial.config import load_config, packaged_config_path  # noqa: E402
from lossdial.experiments.tune import (  # noqa: E402
    TuneError,
    baseline_config,
    parse_search_space,
    param_importances,
    tune,
    tune_metric,
)

CONFIG = packaged_config_path("demo_digits")
TINY = ["train.epochs=2", "train.eval_every=0", "schedule.warmup_epochs=0", "model.backbone_kwargs.width=8",
        "train.batch_size=128"]
SPACE = "gamma~U(0,0.3) tau~U(0,3)"
SRC = str(Path(__file__).resolve().parents[1] / "src")


def _base(extra=()):
    return baseline_config(load_config(CONFIG, TINY + list(extra)))


def _storage(journal):
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))


def _name(journal):
    return _storage(journal).get_all_studies()[0].study_name


def _journal_trials(path, name=None):
    return optuna.load_study(study_name=name or _name(path), storage=_storage(path)).get_trials(deepcopy=False)


def _starts(run_dir):
    return sum(json.loads(line).get("event") == "start" for line in (Path(run_dir) / "metrics.jsonl").open())


# ------------------------------------------------------------------------------------------------ the space
def test_space_names_paths_types_and_grid():
    sp = parse_search_space("gamma~U(0,0.3) optim.lr~LogU(1e-3,1e-1) train.epochs~U(1,3) omega~{0.25,0.75}",
                            _base())
    assert [(p.name, p.path, p.integer) for p in sp.params] == [
        ("gamma", ("loss", "params", "gamma"), False), ("optim.lr", ("optim", "lr"), False),
        ("train.epochs", ("train", "epochs"), True), ("omega", ("loss", "params", "omega"), False)]
    raw = sp.apply(_base().to_dict(), {"gamma": 0.1, "optim.lr": 0.02, "train.epochs": 3, "omega": 0.25})
    assert (raw["loss"]["params"]["gamma"], raw["optim"]["lr"], raw["train"]["epochs"],
            raw["loss"]["params"]["omega"]) == (0.1, 0.02, 3, 0.25)
    # grid sampler: 3 ranges and a set of 2: 27 trials -> ceil((27/2) ** (1/3)) = 3 points per range, 8 -> 2
    g = sp.grid(27)
    assert g["optim.lr"] == pytest.approx([1e-3, 1e-2, 1e-1])  # log spaced by hand
    assert g["gamma"] == pytest.approx([0.0, 0.15, 0.3]) and g["train.epochs"] == [1, 2, 3]
    assert g["omega"] == [0.25, 0.75]
    assert sp.grid(8)["gamma"] == [0.0, 0.3]
    assert parse_search_space("tau~U(0,3) gamma~{0,0.2}", _base()).grid(4) == {"tau": [0.0, 3.0], "gamma": [0.0, 0.2]}
    assert sp.canonical() == "gamma~U(0,0.3) optim.lr~LogU(0.001,0.1) train.epochs~U(1,3) omega~{0.25,0.75}"


@pytest.mark.parametrize("text, words", [
    ("foo~U(0,1)", ["'foo'", "its parameters", "omega", "gamma", "tau"]),
    ("optim.lrr~LogU(1e-3,1e-1)", ["no key 'optim.lrr'", "keys of optim", "lr"]),
    ("gamma~U(0.3,0.3)", ["a must be < b"]),  # an empty range
    ("gamma~U(0.3,0.1)", ["a must be < b"]),
    ("tau~L(0,3,0.33)", ["LCT training law", "U(a,b)"]),
    ("tau~1.5", ["single value", "--set tau=V"]),
    ("tau~{0:0.2,1:0.8}", ["equal chance"]),
    ("train.epochs~U(1.5,3)", ["integer key"]),
    ("lct.per_sample~U(0,1)", ["baseline"]),
    ("model.backbone~U(0,1)", ["not a number"]),
    ("optim.lr~U(-0.1,0.1)", ["invalid at optim.lr=-0.1", "optim.lr"]),  # the config's own check, at a range end
    ("gamma~U(0,0.3) loss.params.gamma~U(0,0.2)", ["named twice"]),
    ("gamma=0.1", ["NAME~DIST"]),
])
def test_bad_space_is_refused_with_the_reason(text, words):
    with pytest.raises(TuneError) as e:
        parse_search_space(text, _base())
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_loss_only_space_refuses_config_keys():
    with pytest.raises(TuneError, match="loss parameters only"):
        parse_search_space("tau~U(0,3) optim.lr~LogU(1e-3,1e-1)", _base(), loss_only=True)
    assert parse_search_space("loss.params.tau~U(0,3)", _base(), loss_only=True).params[0].path == \
        ("loss", "params", "tau")


def test_metric_defaults_and_pruning_needs_a_periodic_metric():
    assert tune_metric(_base(), None) == ("ap", True)
    assert tune_metric(_base(), "brier") == ("brier", False)
    with pytest.raises(TuneError, match="f1"):
        tune_metric(_base(), "f1")  # threshold-dependent: not offered
    mc = baseline_config(load_config(packaged_config_path("demo_digits_lt"), TINY))
    assert tune_metric(mc, None) == ("balanced_accuracy", True)
    assert tune_metric(mc, "nll", pruning=True) == ("nll", False)
    with pytest.raises(TuneError, match="every validation epoch"):
        tune_metric(mc, "macro_f1", pruning=True)


def test_importances_follow_the_parameter_that_moves_the_value():
    # value = x exactly, y is noise-free but irrelevant: fANOVA gives x (nearly) all the importance
    pts = [{"x": i / 9, "y": ((7 * i) % 10) / 9} for i in range(10)]
    imp = param_importances(pts, [p["x"] for p in pts], ["x", "y"])
    assert imp["x"] > 0.9 and imp["y"] < 0.1
    assert param_importances(pts[:2], [0.0, 1.0], ["x", "y"]) is None  # too few points


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("storage, words", [
    ("{tmp}/missing/dir/t.journal", ["cannot be opened", "does not exist"]),
    ("sqlite:////{tmp_rel}missing/dir/t.db", ["cannot be opened"]),
    ("postgresql://nobody@127.0.0.1:9/none", ["cannot be opened"]),
    ("{tmp}/notjournal.txt", ["notjournal.txt cannot be opened as an Optuna storage"]),
])
def test_storage_that_cannot_be_opened_starts_no_trial(tmp_path, storage, words):
    (tmp_path / "notjournal.txt").write_text("this is not a journal\n")
    spec = storage.format(tmp=tmp_path, tmp_rel=str(tmp_path).lstrip("/") + "/")
    out = tmp_path / "out"
    with pytest.raises(TuneError) as e:
        tune(CONFIG, out=out, space=SPACE, trials=1, overrides=TINY, storage=spec)
    for w in words:
        assert w in str(e.value)
    assert not list(out.glob("study-*"))  # nothing trained


def test_study_created_with_another_space_or_metric_is_refused(tmp_path):
    journal = tmp_path / "t.journal"
    tune(CONFIG, out=tmp_path / "a", space="tau~U(0,3)", trials=1, overrides=TINY, storage=journal, study="s")
    for kw, words in [({"space": "tau~U(0,2)"}, ["created with --space 'tau~U(0,3)'", "new --study"]),
                      ({"space": "tau~U(0,3)", "metric": "auc"}, ["optimises --metric 'ap'"]),
                      ({"space": "tau~U(0,3)", "overrides": TINY + ["optim.lr=0.01"]}, ["another config", "optim.lr"])]:
        kw = {"overrides": TINY, **kw}
        with pytest.raises(TuneError) as e:
            tune(CONFIG, out=tmp_path / "b", storage=journal, study="s", trials=2, **kw)
        for w in words:
            assert w in str(e.value)
    assert len(_journal_trials(journal, "s")) == 1  # no trial was started by the refused commands
    assert not (tmp_path / "b").exists() or not list((tmp_path / "b").glob("study-*"))


# ------------------------------------------------------------------------------------------------ resume
class _KillSecondTrial:
    """Progress hooks that interrupt (KeyboardInterrupt, as Ctrl-C) the second trial in its second epoch."""

    def train_callback(self, number):
        return _Steps() if number == 1 else None


class _Steps:
    def on_start(self, total, start):
        self.total = total

    def on_step(self, step):
        if step == self.total // 2 + 1:  # in epoch 2: epoch 1's checkpoint is on disk
            raise KeyboardInterrupt

    def on_epoch_end(self, epoch, record):
        pass


def test_interrupted_study_resumes_and_continues(tmp_path):
    kw = dict(out=tmp_path / "o", space=SPACE, overrides=TINY, sampler="random", sampler_seed=3)
    with pytest.raises(KeyboardInterrupt):
        tune(CONFIG, trials=2, callback=_KillSecondTrial(), **kw)
    trials = _journal_trials(tmp_path / "o" / "tune.journal")
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "WAITING"]  # the interrupted trial is queued
    assert trials[2].params == trials[1].params
    run1 = Path(trials[1].user_attrs["run_dir"])
    assert (run1 / "checkpoint.pt").is_file() and not (run1 / "COMPLETE").exists()

    res = tune(CONFIG, trials=2, **kw)  # the same command again: finishes the queued trial, from its checkpoint
    states = [(t["number"], t["state"], t["retry_of"]) for t in res.trials]
    assert states == [(0, "complete", None), (1, "fail", None), (2, "complete", 1)]
    assert res.trials[2]["run_dir"] == str(run1) and _starts(run1) == 1  # resumed, not restarted
    assert res.best["number"] in (0, 2) and res.test["trial"] == res.best["number"]

    res3 = tune(CONFIG, trials=3, **kw)  # a larger budget continues the study: one new trial, none retrained
    assert [t["state"] for t in res3.trials] == ["complete", "fail", "complete", "complete"]
    assert all(_starts(t["run_dir"]) == 1 for t in res3.trials if t["state"] == "complete")
    data = json.loads((tmp_path / "o" / "tune.json").read_text())
    assert data["finished"] == 3 and data["trials_target"] == 3


# ------------------------------------------------------------------------------------------------ two workers
def _worker(tmp_path, name, journal, trials):
    cmd = [sys.executable, "-m", "lossdial", "tune", str(CONFIG), "--space", SPACE, "--trials", str(trials),
           "--storage", str(journal), "--out", str(tmp_path / name), "--sampler", "random", "-q",
           *[a for o in TINY + ["train.epochs=1"] for a in ("--set", o)]]
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _training_dirs(out):
    return [p for p in Path(out).glob("study-*/trial_*") if (p / "metrics.jsonl").is_file()]


def test_two_workers_one_journal_n_trials_none_twice_none_lost_after_kill(tmp_path):
    """Two worker processes share a journal file; one is killed (SIGKILL) mid-trial: the study still ends with
    exactly N finished trials, the killed trial retried once by the other worker, no parameters trained twice."""
    n = 5
    journal = tmp_path / "shared.journal"
    a = _worker(tmp_path, "a", journal, n)
    b = _worker(tmp_path, "b", journal, n)
    deadline = time.time() + 180
    while True:  # stop A (SIGSTOP) while one of its trials trains and B trains too; then SIGKILL it there
        assert time.time() < deadline and a.poll() is None and b.poll() is None, "workers did not start training"
        a_training = [d for d in _training_dirs(tmp_path / "a") if not (d / "COMPLETE").exists()]
        if _training_dirs(tmp_path / "b") and a_training:
            a.send_signal(signal.SIGSTOP)
            running = [t for t in _journal_trials(journal) if t.state.name == "RUNNING"
                       and t.user_attrs.get("run_dir", "").startswith(str(tmp_path / "a"))]
            if running and not (Path(running[0].user_attrs["run_dir"]) / "COMPLETE").exists():
                break
            a.send_signal(signal.SIGCONT)
        time.sleep(0.05)
    a.send_signal(signal.SIGKILL)
    a.wait()
    out_b, _ = b.communicate(timeout=120)
    assert b.returncode == 0, out_b
    trials = _journal_trials(journal)
    by_state = {}
    for t in trials:
        by_state.setdefault(t.state.name, []).append(t)
    assert len(by_state.get("COMPLETE", [])) == n  # N in total, across both workers
    killed = [t for t in by_state.get("FAIL", []) if "run_dir" in t.user_attrs and not t.user_attrs.get("no_slot")]
    assert len(killed) == 1 and killed[0].user_attrs["run_dir"].startswith(str(tmp_path / "a"))
    retries = [t for t in by_state["COMPLETE"] if t.system_attrs.get("failed_trial") is not None]
    assert [r.system_attrs["failed_trial"] for r in retries] == [killed[0].number]  # retried once, nothing lost
    assert retries[0].params == killed[0].params
    assert not by_state.get("RUNNING") and not by_state.get("WAITING")
    params = [tuple(sorted(t.params.items())) for t in by_state["COMPLETE"]]
    assert len(set(params)) == n  # no parameters trained twice (two samplers with their own seeds)
    dirs = [t.user_attrs["run_dir"] for t in by_state["COMPLETE"]]
    assert len(set(dirs)) == n and all(_starts(d) == 1 and (Path(d) / "COMPLETE").is_file() for d in dirs)
    assert not (Path(killed[0].user_attrs["run_dir"]) / "COMPLETE").exists()  # the killed run never finished
    res = json.loads((tmp_path / "b" / "tune.json").read_text())
    assert res["finished"] == n and res["best"]["number"] in [t.number for t in by_state["COMPLETE"]]
    st = _storage(journal)
    attrs = st.get_study_system_attrs(st.get_study_id_from_name(_name(journal)))
    seeds = [w["sampler_seed"] for k, w in attrs.items() if k.startswith("lossdial:worker:")]
    assert len(seeds) == 2 and seeds[0] != seeds[1]



# ------------------------------------------------------------------------------------------------ sensitivity
def test_sensitivity_ranges_importances_and_seed_spread_by_hand():
    from lossdial.experiments.sensitivity import method_panel, seed_spread

    def row(ap, auc, tau):
        return {"lambda": {"tau": tau}, "metrics": {"ap": ap, "auc": auc}}

    seed0 = [row(0.3, float("nan"), 2.0), row(0.2, 0.7, 0.0), row(0.5, 0.9, 1.0)]  # NaN first: min() would keep it
    seed1 = [row(0.4, 0.8, 0.0), row(0.6, 0.8, 1.0)]
    p = method_panel("lct", [seed0, seed1], ["ap", "auc"])
    assert p["range"]["ap"]["per_seed"] == [[0.2, 0.5], [0.4, 0.6]]
    assert p["range"]["ap"]["width_mean"] == pytest.approx((0.3 + 0.2) / 2)
    assert (p["range"]["ap"]["min"], p["range"]["ap"]["max"]) == pytest.approx((0.3, 0.55))
    assert p["range"]["auc"]["per_seed"] == [[0.7, 0.9], [0.8, 0.8]]  # NaN skipped
    assert p["importances"] is None and p["points"] == 2.5  # an LCT run has no parameter chosen before training
    s = seed_spread([0.61, 0.65, None, 0.7])
    assert s["std"] == pytest.approx(((0.61 - 0.6533333) ** 2 + (0.65 - 0.6533333) ** 2 + (0.7 - 0.6533333) ** 2) ** 0.5
                                     / 2 ** 0.5, abs=1e-6)
    assert s["range"] == pytest.approx(0.09) and s["n"] == 3


def test_report_sensitivity_matches_a_fresh_evaluation(tmp_path):
    """The report panel's LCT range is the min/max over the lambda grid of the validation metrics at the page's
    prevalence (the training prevalence, as the rest of the page), checked against the saved model's scores on
    that grid with AUC, AP and Brier written out (scikit-learn, negatives reweighted to the prevalence)."""
    import numpy as np
    from sklearn.metrics import average_precision_score, roc_auc_score

    from lossdial.evaluate import load_run
    from lossdial.evaluate.scoring import score_lambdas
    from lossdial.experiments.sensitivity import final_rows
    from lossdial.report.sensitivity import add_to_report
    from lossdial.train import train

    cfg = load_config(CONFIG, TINY + ["train.epochs=1"])
    train(cfg, tmp_path / "lct")
    loaded = load_run(tmp_path / "lct")
    grid = [r["lambda"] for r in final_rows(tmp_path / "lct")]
    task = loaded.task()
    scores = score_lambdas(loaded.model, task.val.x, grid, loaded.space, transform=task.normalizer)
    y = task.val.y.numpy()
    counts = json.loads((tmp_path / "lct" / "data.json").read_text())["counts"]["train"]
    pi = counts[1] / sum(counts)
    w = np.where(y == 1, pi / (y == 1).sum(), (1 - pi) / (y == 0).sum())
    fresh = {"auc": [roc_auc_score(y, s) for s in scores],
             "ap": [average_precision_score(y, s, sample_weight=w) for s in scores],
             "brier": [pi * np.mean((1 - s[y == 1]) ** 2) + (1 - pi) * np.mean(s[y == 0] ** 2) for s in scores]}
    page = tmp_path / "report.html"
    page.write_text("<html><body><p>x</p></body></html>")
    add_to_report(page, [loaded])
    panel = json.loads((tmp_path / "sensitivity.json").read_text())
    got = panel["methods"][str(tmp_path / "lct")]["range"]
    for k in ("auc", "ap", "brier"):
        vals = fresh[k]
        assert (got[k]["min"], got[k]["max"]) == pytest.approx((min(vals), max(vals)), abs=1e-6)
    assert f"{pi:.4g}" in panel["split"]
    assert page.read_text().index("Sensitivity") < page.read_text().index("</body>")


# ------------------------------------------------------------------------------------------------ compare --tuned
def test_compare_tuned_refuses_a_space_beyond_the_loss_before_training(tmp_path):
    from lossdial.experiments import CompareError, compare

    for kw, words in [({"tuned": "tau~U(0,3) optim.lr~LogU(1e-3,1e-1)", "budget": 2}, ["loss parameters only"]),
                      ({"tuned": "tau~U(0,3)"}, ["--budget"]),
                      ({"tuned": "tau~U(0,3)", "budget": 0}, [">= 1"]),
                      ({"tuned": "tau~U(0,3)", "budget": 2, "tune_metric": "f1"}, ["--tune-metric 'f1'"])]:
        with pytest.raises(CompareError) as e:
            compare(CONFIG, out=tmp_path / "c", lct="tau~L(0,3,0.33)", seeds=1, overrides=TINY, **kw)
        for w in words:
            assert w in str(e.value)
    assert not (tmp_path / "c").exists()


def _val_ap_by_hand(run, prevalence):
    """AP of a run's validation scores by scikit-learn: each negative weighted (1 - pi) / negatives and each
    positive pi / positives, so positives are a fraction pi (None: unweighted, the split's own prevalence)."""
    import numpy as np
    from sklearn.metrics import average_precision_score

    from lossdial.evaluate import load_run
    from lossdial.evaluate.scoring import score_lambdas

    loaded = load_run(run)
    task = loaded.task()
    s = score_lambdas(loaded.model, task.val.x, None, loaded.space, transform=task.normalizer)[0]
    y = task.val.y.numpy()
    if prevalence is None:
        return average_precision_score(y, s)
    w = np.where(y == 1, prevalence / (y == 1).sum(), (1 - prevalence) / (y == 0).sum())
    return average_precision_score(y, s, sample_weight=w)


def test_tune_objective_is_the_ap_at_the_given_prevalence_and_tune_json_states_it(tmp_path):
    res = tune(CONFIG, out=tmp_path / "o", space="tau~U(0,3)", trials=1, overrides=TINY + ["train.epochs=1"],
               sampler="random", sampler_seed=0, prevalence=0.3)
    assert res.best["value"] == pytest.approx(_val_ap_by_hand(res.best["run_dir"], 0.3), abs=1e-9)
    data = json.loads((tmp_path / "o" / "tune.json").read_text())
    assert data["scoring"] == {"prevalence": 0.3} and "0.3 (given)" in data["scoring_text"]
    assert "0.3 (given)" in (tmp_path / "o" / "tune.md").read_text()
    with pytest.raises(TuneError, match="measured its trials at"):  # continuing it at another prevalence
        tune(CONFIG, out=tmp_path / "o", space="tau~U(0,3)", trials=2, overrides=TINY + ["train.epochs=1"],
             prevalence=0.2)


def test_compare_tuned_picks_the_best_trial_and_counts_every_trials_time(tmp_path):
    from lossdial.experiments import compare

    res = compare(CONFIG, out=tmp_path / "c", lct="tau~L(0,3,0.33)", seeds=2, overrides=TINY + ["train.epochs=1"],
                  tuned="gamma~U(0,0.3) tau~U(0,3)", budget=2)
    total = 0.0
    for s in res.seeds:
        journal = tmp_path / "c" / "tuned" / f"seed{s}" / "tune.journal"
        trials = _journal_trials(journal)
        assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]  # the budget, per seed
        best = max(trials, key=lambda t: t.value)  # AP: higher is better
        picks = [p for p in res.picks if p["method"] == "tuned" and p["seed"] == s]
        assert {p["run"] for p in picks} == {best.user_attrs["run_dir"]}
        # the study's value is the best trial's validation AP at the training prevalence, as the table reports
        # AP (not at the validation split's own prevalence, which the training loop's final rows use)
        run = Path(best.user_attrs["run_dir"])
        counts = json.loads((run / "data.json").read_text())["counts"]["train"]
        assert best.value == pytest.approx(_val_ap_by_hand(run, counts[1] / sum(counts)), abs=1e-9)
        assert best.value != pytest.approx(_val_ap_by_hand(run, None), abs=1e-4)  # the two prevalences differ
        total += sum(json.loads((Path(t.user_attrs["run_dir"]) / "COMPLETE").read_text())["seconds"] for t in trials)
        rng = res.sensitivity["methods"]["tuned"]["range"]["ap"]["per_seed"][res.seeds.index(s)]
        assert rng == pytest.approx([min(t.value for t in trials), max(t.value for t in trials)])
    assert res.train_seconds["tuned"] == pytest.approx(total)
    ap = res.summary["tuned"]["ap"]["values"]
    spread = res.sensitivity["methods"]["tuned"]["seed_spread"]["ap"]["std"]
    assert spread == pytest.approx(abs(ap[0] - ap[1]) / 2 ** 0.5)  # sample std of two values
    data = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert data["settings"]["tuned"]["budget"] == 2 and data["sensitivity"]["methods"]["lct"]["kind"] == "lct"


def test_without_optuna_the_package_imports_and_the_commands_name_the_extra(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import lossdial.cli as cli

    code = ("import sys; sys.modules['optuna'] = None; import lossdial.cli, lossdial.experiments.tune, "
            "lossdial.experiments.sensitivity, lossdial.report.sensitivity, lossdial.experiments.compare")
    assert subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": SRC}).returncode == 0
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` now raises ImportError
    with pytest.raises(TuneError, match=r"pip install lossdial\[tune\]"):
        tune(CONFIG, out=tmp_path / "o", space=SPACE, trials=1, overrides=TINY)
    r = CliRunner().invoke(cli.app, ["tune", str(CONFIG), "--space", SPACE, "--trials", "1", "--out",
                                     str(tmp_path / "o")])
    assert r.exit_code == 2 and "pip install lossdial[tune]" in r.output
    from lossdial.experiments import CompareError, compare

    with pytest.raises(CompareError, match=r"pip install lossdial\[tune\]"):
        compare(CONFIG, out=tmp_path / "c", lct="tau~L(0,3,0.33)", seeds=1, overrides=TINY, tuned="tau~U(0,3)",
                budget=2)
    assert not (tmp_path / "o").exists() and not (tmp_path / "c").exists()


def test_a_trial_is_stale_when_its_process_is_gone_or_its_heartbeat_is_old():
    from lossdial.experiments.tune import _is_stale, _proc_start, worker_identity

    now = time.time()
    me = {**worker_identity(), "time": now}
    assert not _is_stale(me, None, now, grace=60)  # this process is alive, its heartbeat fresh
    child = subprocess.Popen(["sleep", "30"])
    beat = {**me, "pid": child.pid, "start": _proc_start(child.pid)}
    assert not _is_stale(beat, None, now, grace=60)
    child.kill()
    child.wait()
    assert _is_stale(beat, None, now, grace=60)  # gone: stale at once, no need to wait for the grace period
    assert not _is_stale({**beat, "pidns": "pid:[other]"}, None, now, grace=60)  # another pid namespace: its
    assert not _is_stale({**beat, "host": "elsewhere"}, None, now, grace=60)  # pids mean nothing here
    assert _is_stale({**beat, "host": "elsewhere", "time": now - 61}, None, now, grace=60)  # silent too long
    assert _is_stale(None, now - 61, now, grace=60) and not _is_stale(None, now - 5, now, grace=60)  # no beat yet


def test_multiclass_tune_objective_is_the_accuracy_at_the_given_prior_best_over_t(tmp_path):
    """Multi-class: a trial's objective is compare's validation value -- accuracy at the given class prior q
    (sum_c q_c recall_c), best over the adjustment grid t (scores z - t log pi) -- written out here."""
    import numpy as np

    from lossdial.evaluate import load_run
    from lossdial.evaluate.multiclass import DEFAULT_T_GRID
    from lossdial.evaluate.scoring import score_lambdas

    cfg = packaged_config_path("demo_digits_lt")
    q = np.arange(1, 11, dtype=float)
    q /= q.sum()
    res = tune(cfg, out=tmp_path / "o", space="tau~U(0,2)", trials=1, overrides=TINY + ["train.epochs=1"],
               sampler="random", sampler_seed=0, metric="accuracy", prior=list(q))
    loaded = load_run(res.best["run_dir"])
    task = loaded.task()
    z = score_lambdas(loaded.model, task.val.x, None, loaded.space, transform=task.normalizer, output="logits")[0]
    y = task.val.y.numpy()
    counts = np.asarray(json.loads((Path(res.best["run_dir"]) / "data.json").read_text())["counts"]["train"], float)
    log_pi = np.log(counts / counts.sum())
    acc = [sum(q[c] * np.mean(np.argmax(z - t * log_pi, axis=1)[y == c] == c) for c in range(10))
           for t in DEFAULT_T_GRID]
    assert res.best["value"] == pytest.approx(max(acc), abs=1e-9)
    assert res.scoring["prior"] == pytest.approx(list(q))
    with pytest.raises(TuneError, match="--prevalence"):
        tune(cfg, out=tmp_path / "p", space="tau~U(0,2)", trials=1, overrides=TINY, prevalence=0.1)
