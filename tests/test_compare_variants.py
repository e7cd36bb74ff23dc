"""lossdial compare --variant: the override splitter, variant parsing and refusals, and small ablations whose
outcome is known (a variant equal to base trains the same models; a variant's override is really trained)."""

import json

import pytest
import yaml
from typer.testing import CliRunner

from lossdial.cli import app
from lossdial.config import ConfigError, load_config, packaged_config_path, split_overrides
from lossdial.experiments import CompareError, build_methods, compare, plan_runs
from lossdial.experiments.compare import parse_variant

TINY = ["train.epochs=2", "train.eval_every=0", "schedule.warmup_epochs=0", "model.backbone_kwargs.width=8"]


@pytest.mark.parametrize("text, pieces", [
    ("optim.sam.rho=0.05", ["optim.sam.rho=0.05"]),
    ("optim.sam.rho=0.05,optim.sam.mode=asymmetric", ["optim.sam.rho=0.05", "optim.sam.mode=asymmetric"]),
    ('lct.lambda={tau: "L(0,3,0.33)"}', ['lct.lambda={tau: "L(0,3,0.33)"}']),
    ('lct.lambda={tau: L(0,3,0.33), gamma: U(0,1)},train.batch_size=32',
     ["lct.lambda={tau: L(0,3,0.33), gamma: U(0,1)}", "train.batch_size=32"]),
    ("schedule.milestones=[0.5, 0.8], optim.lr=0.1", ["schedule.milestones=[0.5, 0.8]", "optim.lr=0.1"]),
    ("a=[[1,2],[3,(4,5)]],b=2", ["a=[[1,2],[3,(4,5)]]", "b=2"]),
    ("name='a,b',x=\"c,d\"", ["name='a,b'", 'x="c,d"']),
    ('x="say \\"hi, there\\"",y=1', ['x="say \\"hi, there\\""', "y=1"]),
    ("x='it''s, ok',y=1", ["x='it''s, ok'", "y=1"]),
    ("data.path=/data/o'brien,y=1", ["data.path=/data/o'brien", "y=1"]),  # an apostrophe inside a plain value
    ("x=(,),y=[,]", ["x=(,)", "y=[,]"]),
])
def test_split_overrides_by_hand(text, pieces):
    assert split_overrides(text) == pieces


@pytest.mark.parametrize("text, msg", [
    ("a=1,,b=2", "empty override"), ("a=1,", "empty override"), (",a=1", "empty override"),
    ("a=[1,2", r"'\[' is never closed"), ("a={x: (1,2}", "closes nothing"), ("a=1)", "closes nothing"),
    ('a="x,b=2', "quote \" is never closed"),
])
def test_split_overrides_refuses_malformed(text, msg):
    with pytest.raises(ConfigError, match=msg):
        split_overrides(text)


def test_parse_variant_and_refusals():
    assert parse_variant('sam_a=optim.sam.rho=0.05,optim.sam.mode=asymmetric') == \
        ("sam_a", ["optim.sam.rho=0.05", "optim.sam.mode=asymmetric"])
    assert parse_variant('lct=lct.lambda={tau: "L(0,3,0.33)"}') == ("lct", ['lct.lambda={tau: "L(0,3,0.33)"}'])
    for bad, msg in [("sam", "must look like NAME=KEY=VALUE"), ("sam=0.05", "must look like NAME=KEY=VALUE"),
                     ("=optim.lr=1", "must look like"), ("a/b=optim.lr=1", "names its run directory"),
                     (".x=optim.lr=1", "names its run directory"), ("x=optim.lr=1,,optim.lr=2", "x: .*empty override"),
                     ("x=optim..lr=1", "x: .*empty key path"), ("x=optim.lr=[1", "never closed"),
                     ("x=optim.lr=1,optim.lr=2", "sets optim.lr twice"), ("x=seed=3", "seed cannot be"),
                     ("x=data.seed=3", "data.seed cannot be"),
                     ("x=data.val_fraction=0.5", "x: data.val_fraction cannot be.*same validation and test split"),
                     ("x=optim.lr=0.1,data.source=breast_cancer", "x: data.source cannot be"),
                     ("x=data={source: digits}", "x: data cannot be")]:
        with pytest.raises(CompareError, match=msg):
            parse_variant(bad)
    # the mapping spelling gets the same checks
    for bad, msg in [({"x": []}, "has no override"), ({"x y": ["optim.lr=1"]}, "names its run directory"),
                     ({"x": ["seed=1"]}, "seed cannot be"), ({"x": ["optim.lr"]}, "must look like key.path=value"),
                     ({"x": ["data.in_memory=false"]}, "x: data.in_memory cannot be")]:
        with pytest.raises(CompareError, match=msg):
            build_methods(None, None, bad)
    with pytest.raises(CompareError, match="'a' is used twice"):
        build_methods(None, None, ["a=optim.lr=0.1", "a=optim.lr=0.2"])
    with pytest.raises(CompareError, match="'base' is used twice"):
        build_methods(None, None, ["base=optim.lr=0.1"])
    with pytest.raises(CompareError, match="'lct' is used twice"):
        build_methods(None, "tau~U(0,1)", ["lct=optim.lr=0.1"])
    methods = build_methods("tau=0,1", "tau~U(0,1)", ["small=train.batch_size=32"])
    assert [(m.name, m.kind) for m in methods] == [("base", "variant"), ("small", "variant"),
                                                    ("baseline", "baseline"), ("lct", "lct")]


def test_unknown_key_fails_before_any_training(tmp_path):
    base = load_config(packaged_config_path("demo_digits_lt"), TINY)
    methods = build_methods(None, None, ["ok=train.batch_size=32", "typo=optim.lrr=0.1"])
    with pytest.raises(CompareError, match=r"(?s)--variant typo \(optim.lrr=0.1\).*optim.lrr: unknown key"):
        plan_runs(base, methods, [0], tmp_path)
    with pytest.raises(CompareError, match="optim.lrr: unknown key"):
        compare(base, out=tmp_path / "cmp", variants=["ok=train.batch_size=32", "typo=optim.lrr=0.1"], seeds=1)
    assert not (tmp_path / "cmp").exists()  # nothing was trained
    res = CliRunner().invoke(app, ["compare", str(packaged_config_path("demo_digits_lt")), "--variant", "x",
                                   "--out", str(tmp_path / "cli"), "-q"])
    assert res.exit_code != 0 and "NAME=KEY=VALUE" in res.output and not (tmp_path / "cli").exists()


def test_variant_equal_to_base_is_identical_and_override_is_trained(tmp_path):
    """Multi-class: a variant that sets a key to the base's value trains the same models (the same numbers for
    every seed); a variant changing the batch size trains with it (its saved config and its step count)."""
    base = load_config(packaged_config_path("demo_digits_lt"), TINY)
    res = compare(base, out=tmp_path, variants=["same=train.batch_size=64", "small=train.batch_size=16"],
                  seeds=2)
    d = json.loads((tmp_path / "compare.json").read_text())
    assert [m["name"] for m in d["methods"]] == ["base", "same", "small"]
    assert d["settings"]["variants"] == {"base": [], "same": ["train.batch_size=64"],
                                         "small": ["train.batch_size=16"]}
    assert d["summary"]["same"] == d["summary"]["base"]  # every metric, every seed
    assert d["summary"]["small"] != d["summary"]["base"]
    assert all(d["train_seconds"][m] > 0 for m in ("base", "same", "small"))
    for seed in (0, 1):
        saved = yaml.safe_load((tmp_path / "small" / f"seed{seed}" / "config.yaml").read_text())
        ref = yaml.safe_load((tmp_path / "base" / f"seed{seed}" / "config.yaml").read_text())
        assert saved["train"]["batch_size"] == 16 and ref["train"]["batch_size"] == 64 and saved["seed"] == seed
        saved["train"]["batch_size"], saved["name"], ref["name"] = 64, "", ""
        assert saved == ref  # nothing else differs
        starts = [json.loads(line) for line in (tmp_path / "small" / f"seed{seed}" / "metrics.jsonl").read_text()
                  .splitlines() if '"start"' in line]
        n_train = sum(json.loads((tmp_path / "small" / f"seed{seed}" / "data.json").read_text())["counts"]["train"])
        assert starts[0]["steps_per_epoch"] == -(-n_train // 16)  # ceil(n / 16) steps: batch 16 was trained
    md = (tmp_path / "compare.md").read_text()
    assert "| base |" in md and "| small |" in md and "small = base + train.batch_size=16" in md
    assert res.settings["variants"]["small"] == ["train.batch_size=16"]


def test_binary_cli_mixes_variants_with_baseline_grid(tmp_path):
    variant = 'lctlaw=lct.lambda={tau: "U(0,1)"},evaluate.lambda="tau=0:1:3",train.augment=crop_flip_randaugment'
    args = ["compare", str(packaged_config_path("demo_digits")), "--baseline-grid", "tau=0", "--variant", variant,
            "--seeds", "1", "--out", str(tmp_path), "-q"]
    args += [a for ov in TINY + ["train.epochs=1"] for a in ("--set", ov)]
    res = CliRunner().invoke(app, args, terminal_width=250)
    assert res.exit_code == 0, res.output
    d = json.loads((tmp_path / "compare.json").read_text())
    assert [m["name"] for m in d["methods"]] == ["base", "lctlaw", "baseline"]
    assert "AUC" in res.output and "lctlaw = base + lct.lambda=" in res.output.replace("\n", " ")
    saved = load_config(tmp_path / "lctlaw" / "seed0" / "config.yaml")
    assert saved.lct.enabled and saved.lct.lambdas == {"tau": "U(0,1)"} and saved.train.augment == \
        "crop_flip_randaugment"
    picks = {p["method"]: p for p in d["picks"] if p["metric"] == "auc"}
    assert picks["lctlaw"]["lambda"] is not None and picks["baseline"]["lambda"] is None


def test_cli_variant_and_tuned_together(tmp_path):
    """--variant and --tuned in one compare: the rows base, the variant and tuned; the tuned study of the seed ran
    exactly --budget trials, its one trial is the tuned row's run, and its objective is the validation AP at the
    training prevalence the table states (scikit-learn, negatives reweighted). The Sensitivity paragraph names
    no empty metric when no method has importances (one trial, one run each)."""
    optuna = pytest.importorskip("optuna")
    import numpy as np
    from sklearn.metrics import average_precision_score

    from lossdial.evaluate import load_run
    from lossdial.evaluate.scoring import score_lambdas

    args = ["compare", str(packaged_config_path("demo_digits")), "--variant", "smallb=train.batch_size=32",
            "--tuned", "tau~U(0,3)", "--budget", "1", "--seeds", "1", "--out", str(tmp_path), "-q"]
    args += [a for ov in TINY + ["train.epochs=1"] for a in ("--set", ov)]
    res = CliRunner().invoke(app, args, terminal_width=250)
    assert res.exit_code == 0, res.output
    d = json.loads((tmp_path / "compare.json").read_text())
    assert [m["name"] for m in d["methods"]] == ["base", "smallb", "tuned"]
    assert {p["method"] for p in d["picks"]} == {"base", "smallb", "tuned"}
    journal = tmp_path / "tuned" / "seed0" / "tune.journal"
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    trials = optuna.load_study(study_name=storage.get_all_studies()[0].study_name, storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE"]  # --budget 1
    run = trials[0].user_attrs["run_dir"]
    assert {p["run"] for p in d["picks"] if p["method"] == "tuned"} == {run}
    assert d["settings"]["tuned"]["budget"] == 1 and d["settings"]["tuned"]["studies"]["0"]["finished"] == 1
    loaded = load_run(run)
    task = loaded.task()
    s = score_lambdas(loaded.model, task.val.x, None, loaded.space, transform=task.normalizer)[0]
    y = task.val.y.numpy()
    pi = d["prevalence"]["values"][0]
    w = np.where(y == 1, pi / (y == 1).sum(), (1 - pi) / (y == 0).sum())
    assert trials[0].value == pytest.approx(average_precision_score(y, s, sample_weight=w), abs=1e-9)
    tuned_ap = next(p for p in d["picks"] if p["method"] == "tuned" and p["metric"] == "ap")
    assert tuned_ap["val"] == pytest.approx(trials[0].value, abs=1e-12)  # the row's val AP is the objective
    md = (tmp_path / "compare.md").read_text()
    assert "for val  (" not in md and "no importances" in md
