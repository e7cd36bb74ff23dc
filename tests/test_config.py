from pathlib import Path

import pytest

from lossdial.config import ConfigError, config_from_dict, load_config, packaged_config_path


def test_demo_config_loads_and_overrides():
    cfg = load_config(packaged_config_path("demo_digits"), ["optim.lr=0.01", "lct.per_sample=true"])
    assert cfg.optim.lr == 0.01
    assert cfg.lct.per_sample is True
    assert cfg.lct.lambdas == {"tau": "L(0,3,0.33)"}
    # YAML alias round trip: the dumped config uses the `lambda` key and reloads equal
    again = config_from_dict(cfg.to_dict())
    assert again == cfg
    assert "lambda" in cfg.to_dict()["lct"]


def test_unknown_key_names_dotted_path(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("optim:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"optim\.lrr: unknown key"):
        load_config(p)


def test_wrong_type_names_path_and_expected():
    with pytest.raises(ConfigError, match=r"train\.epochs") as e:
        config_from_dict({"train": {"epochs": "many"}})
    assert "integer" in str(e.value)


def test_bad_loss_param_and_lct_key():
    with pytest.raises(ConfigError, match="does not take"):
        config_from_dict({"loss": {"family": "vs", "params": {"alpha": 0.3}}})
    with pytest.raises(ConfigError, match="conditionable names"):
        config_from_dict({"loss": {"family": "vs"}, "lct": {"enabled": True, "lambda": {"phi": "U(0,1)"}}})


def test_lct_enabled_needs_lambda():
    with pytest.raises(ConfigError, match="lct.lambda is empty"):
        config_from_dict({"lct": {"enabled": True}})


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="key.path=value"):
        config_from_dict({}, ["optim.lr"])
    with pytest.raises(ConfigError, match="is not a section"):
        config_from_dict({"name": "a"}, ["name.x=1"])


def test_missing_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("/nonexistent/cfg.yaml")


def test_beta_and_fraction_validation():
    with pytest.raises(ConfigError, match="beta"):
        config_from_dict({"data": {"beta": 0.5}})
    with pytest.raises(ConfigError, match="at least 10%"):
        config_from_dict({"data": {"val_fraction": 0.5, "test_fraction": 0.45}})


# ---- what the loss allows, checked at load (issue 10, items 3 and 4) --------------------------------------
# The valid ranges are the published ones: VS/focal class weights omega, alpha in [0, 1]; focal exponent
# phi >= 0; LDAM logit scale s > 0; label smoothing a in [0, 1] with a_min <= a_max.

def _demo_yaml(tmp_path, lct_lambda: str, extra: str = "") -> str:
    text = packaged_config_path("demo_digits").read_text()
    text = text.replace('lambda: {tau: "L(0,3,0.33)"}', f"lambda: {lct_lambda}")
    text = text.replace('  lambda: "tau=0:3:7"', "  lambda: null") + extra
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return str(p)


def test_lambda_law_outside_loss_range_rejected_at_load_yaml_and_set(tmp_path):
    # YAML
    with pytest.raises(ConfigError, match=r"lct\.lambda\.omega: U\(0\.5,1\.5\) reaches 1\.5.*omega in \[0, 1\]"):
        load_config(_demo_yaml(tmp_path, '{omega: "U(0.5,1.5)"}'))
    # --set, on the shipped config (its evaluate grid is over tau: drop it too)
    with pytest.raises(ConfigError, match=r"lct\.lambda\.omega: U\(0\.5,1\.5\) reaches 1\.5"):
        load_config(packaged_config_path("demo_digits"),
                    ['lct.lambda={omega: "U(0.5,1.5)"}', "evaluate.lambda=null"])
    # the ends of the valid range are allowed
    cfg = load_config(_demo_yaml(tmp_path, '{omega: "U(0,1)"}'))
    assert cfg.lct.lambdas == {"omega": "U(0,1)"}


@pytest.mark.parametrize("family,law,path,why", [
    ("focal", '{phi: "U(-1,3)"}', "lct.lambda.phi", r"reaches -1.*phi in \[0, inf\)"),
    ("focal", '{alpha: "{0.25,1.25}"}', "lct.lambda.alpha", r"reaches 1\.25.*alpha in \[0, 1\]"),
    ("ldam", '{scale: "U(0,30)"}', "lct.lambda.scale", r"reaches 0.*scale in \(0, inf\)"),
    ("smoothing", '{a_max: "L(0.5,1.2,0)"}', "lct.lambda.a_max", r"reaches 1\.2"),
    ("smoothing", '{a_min: "U(0,0.3)", a_max: "U(0.2,0.5)"}', "lct.lambda.a_min", r"a_min <= a_max for every draw"),
])
def test_every_family_range_checked_at_load(tmp_path, family, law, path, why):
    p = _demo_yaml(tmp_path, law)
    with pytest.raises(ConfigError, match=rf"{path.replace('.', chr(92) + '.')}: .*{why}"):
        load_config(p, [f"loss.family={family}", "loss.params={}"])


def test_fixed_params_and_evaluate_grid_checked_at_load():
    demo = packaged_config_path("demo_digits")
    with pytest.raises(ConfigError, match=r"loss\.params\.omega: 1\.5 is not allowed.*\[0, 1\]"):
        load_config(demo, ["loss.params.omega=1.5", "lct.enabled=false"])
    with pytest.raises(ConfigError, match=r"loss\.params: drw_beta must be in \[0, 1\)"):
        load_config(demo, ["loss.family=ldam", "loss.params={drw_beta: 1.0}", "lct.enabled=false"])
    # evaluate.lambda: values the loss does not allow, names that are not conditioned
    with pytest.raises(ConfigError, match=r"evaluate\.lambda: omega=1\.2 is not allowed"):
        load_config(demo, ['lct.lambda={omega: "U(0,1)"}', "evaluate.lambda=omega=0:1.2:3"])
    with pytest.raises(ConfigError, match=r"evaluate\.lambda: no values for gamma.*\(gamma, tau\)"):
        load_config(demo, ['lct.lambda={tau: "U(0,3)", gamma: "U(0,0.3)"}'])


def test_invalid_distribution_and_grid_caught_at_load_with_path(tmp_path):
    with pytest.raises(ConfigError, match=r"lct\.lambda\.tau: invalid distribution 'U\(3,1\)'.*a must be < b"):
        load_config(_demo_yaml(tmp_path, '{tau: "U(3,1)"}'))
    with pytest.raises(ConfigError, match=r"lct\.lambda\.tau: invalid distribution 'U\(3,1\)'"):
        load_config(packaged_config_path("demo_digits"), ["lct.lambda.tau=U(3,1)"])
    # a law is checked even where LCT is off (it is still part of the config)
    with pytest.raises(ConfigError, match=r"lct\.lambda\.tau: could not parse distribution 'N\(0,1\)'"):
        load_config(packaged_config_path("demo_digits"), ["lct.lambda.tau=N(0,1)", "lct.enabled=false"])
    with pytest.raises(ConfigError, match=r"evaluate\.lambda: could not parse lambda grid 'tau=0:3:x'"):
        load_config(packaged_config_path("demo_digits"), ["evaluate.lambda=tau=0:3:x"])


def test_unknown_lambda_name_lists_valid_names_without_dumping_the_config():
    with pytest.raises(ConfigError) as e:
        load_config(packaged_config_path("demo_digits"), ["lct.lambda.foo=U(0,1)"])
    msg = str(e.value)
    assert "lct.lambda.foo: 'foo' is not a hyperparameter" in msg
    assert "conditionable names: gamma, omega, tau" in msg
    assert "demo_digits" not in msg.split("\n", 1)[1] and "backbone" not in msg  # no copy of the config


def test_lct_law_replaces_an_evaluate_grid_over_other_names():
    from lossdial.config import set_lct_law

    cfg = load_config(packaged_config_path("demo_digits"), lct={"gamma": "U(0,0.3)"})
    assert cfg.lct.enabled and cfg.lct.lambdas == {"gamma": "U(0,0.3)"} and cfg.evaluate.lambda_grid is None
    cfg = load_config(packaged_config_path("demo_digits"), lct={"tau": "U(0,2)"})
    assert cfg.evaluate.lambda_grid == "tau=0:3:7"  # same names: the configured grid stays
    raw = {"evaluate": {"lambda": "tau=0:3:7"}}
    assert set_lct_law(raw, {"tau": "U(0,1)"})["evaluate"] == {"lambda": "tau=0:3:7"}
    assert raw == {"evaluate": {"lambda": "tau=0:3:7"}}  # the input is not modified


# ---- seeds (issue 10, item 9) -----------------------------------------------------------------------------
def test_seeds_outside_range_rejected_with_path():
    for bad in (-1, 2 ** 63):
        with pytest.raises(ConfigError, match=r"  seed: a seed is an integer in \[0, 2\*\*63 - 1\]"):
            config_from_dict({"seed": bad})
        with pytest.raises(ConfigError, match=r"data\.seed: a seed is an integer"):
            config_from_dict({"data": {"seed": bad}})
    assert config_from_dict({"seed": 2 ** 63 - 1}).seed == 2 ** 63 - 1


def test_seed_0_and_2_pow_32_give_different_streams():
    import torch

    from lossdial.conditioning import LambdaSpace, parse_lct
    from lossdial.data.loader import EpochOrder, derive_seed, make_generator
    from lossdial.train.factory import build_model_from_config

    a, b = config_from_dict({"seed": 0}), config_from_dict({"seed": 2 ** 32})
    # model initialisation
    wa = torch.cat([p.flatten() for p in build_model_from_config(a, (1, 8, 8), 0).parameters()])
    wb = torch.cat([p.flatten() for p in build_model_from_config(b, (1, 8, 8), 0).parameters()])
    assert not torch.equal(wa, wb)
    # lambda draws (the training loop's stream) and the epoch order
    space = LambdaSpace(parse_lct("tau~U(0,3)"))
    assert float(space.sample(1, make_generator(a.seed, 0x1A3B))["tau"]) != \
        float(space.sample(1, make_generator(b.seed, 0x1A3B))["tau"])
    oa = EpochOrder(100, 10, seed=derive_seed(a.seed, 0x5FF1)).order(0)
    ob = EpochOrder(100, 10, seed=derive_seed(b.seed, 0x5FF1)).order(0)
    assert not torch.equal(oa, ob)
    # a derived 63-bit seed is used whole too: two seeds equal in their low 32 bits differ
    assert derive_seed(5 + 2 ** 40, 1) != derive_seed(5, 1)
    with pytest.raises(ValueError, match="non-negative"):
        derive_seed(-1, 1)


def test_a_key_written_twice_is_an_error_naming_it_and_its_lines(tmp_path):
    """Plain YAML keeps the last of two equal keys silently (lr 0.9 would train); the loader refuses it."""
    p = tmp_path / "c.yaml"
    p.write_text("name: x\noptim:\n  lr: 0.05\n  lr: 0.9\n")
    with pytest.raises(ConfigError, match=r"'lr' is written twice \(lines 3 and 4\)"):
        load_config(p)


def test_shipped_configs_have_no_repeated_keys():
    from lossdial.config import read_yaml

    root = Path(__file__).resolve().parents[1]
    for path in sorted((root / "configs").glob("*.yaml")) + sorted((root / "src/lossdial/configs").glob("*.yaml")):
        read_yaml(path)  # raises on a repeated key
