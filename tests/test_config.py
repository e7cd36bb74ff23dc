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
