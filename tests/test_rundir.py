"""Run-directory JSON: strict JSON (RFC 8259) everywhere, an undefined number is null (issue 10, item 10)."""

import json
import math

import numpy as np
import pytest
import torch

from lossdial.report.card import render_markdown
from lossdial.rundir import RunDir, dumps_json, fmt_value, write_json


def _strict_loads(text: str):
    """A parser that rejects NaN / Infinity / -Infinity, as browsers' JSON.parse and many others do."""
    def bad(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=bad)


def _undefined_everywhere():
    return {"nan": math.nan, "inf": math.inf, "ninf": -math.inf, "np32": np.float32("nan"),
            "np64": np.float64("inf"), "arr": np.array([0.5, np.nan]), "tensor": torch.tensor([1.0, float("nan")]),
            "nested": [{"x": (math.nan, 2)}], "ok": 0.25, "n": np.int64(3), "flag": np.bool_(True), "s": "NaN"}


EXPECTED = {"nan": None, "inf": None, "ninf": None, "np32": None, "np64": None, "arr": [0.5, None],
            "tensor": [1.0, None], "nested": [{"x": [None, 2]}], "ok": 0.25, "n": 3, "flag": True, "s": "NaN"}


def test_write_json_writes_null_for_undefined_numbers(tmp_path):
    write_json(tmp_path / "a.json", _undefined_everywhere())
    assert _strict_loads((tmp_path / "a.json").read_text()) == EXPECTED


def test_metrics_log_is_strict_json_lines(tmp_path):
    run = RunDir(tmp_path)
    run.log({"event": "epoch", "val": {"precision": math.nan, "auc": 0.9}})
    run.log(_undefined_everywhere())
    lines = run.metrics.read_text().splitlines()
    assert [_strict_loads(line) for line in lines] == [{"event": "epoch", "val": {"precision": None, "auc": 0.9}},
                                                        EXPECTED]
    assert run.read_log()[0]["val"]["precision"] is None


def test_dumps_json_refuses_what_it_cannot_write():
    with pytest.raises(TypeError):
        dumps_json({"path": object()})


def test_readers_show_undefined_as_dash():
    assert fmt_value(None) == fmt_value(math.nan) == fmt_value(np.float32("inf")) == "-"
    assert fmt_value(0.12345) == "0.123"
    # a model card read back from JSON (undefined values are null) renders; null shows as "-"
    card = {"run": "r", "data": {"positive_class": "8", "class_names": ["rest", "8"], "source": "digits",
                                 "counts": {s: [10, 2] for s in ("train", "val", "test")}, "imbalance_ratio": 5.0,
                                 "train_prevalence": 0.1667},
            "model": {"backbone": "mlp", "lct": False, "film": None},
            "training": {"loss": "vs", "loss_params": {}, "lambda_distributions": None, "optimizer": "sgd",
                         "lr": 0.1, "weight_decay": 0.0, "epochs": 1, "batch_size": 8, "ema_decay": None,
                         "seed": 0, "data_seed": 0},
            "protocol": "p", "points": {"p": {"lambda": {}, "constraint": None, "objective": "f1", "threshold": 0.5,
                                              "prevalence": 0.1, "n_pos": {"val": 2, "test": 2},
                                              "val": {"precision": None}, "test": {"precision": None},
                                              "test_ci95": {"precision": [None, None]}}}}
    md = render_markdown(_strict_loads(dumps_json(card)))
    assert "| precision | - | - | [-, -] |" in md
