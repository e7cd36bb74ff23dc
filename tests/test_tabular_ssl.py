"""Joint-SSL on tables (issues 13 and 15): SCARF feature corruption (Bahri et al. 2022) as the second view,
``ssl.views`` / ``ssl.corruption`` at load, and the training loop on a table. The draws are checked against
hand-written counts and a chi-square test of their law; the loop against the training split it must draw from."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from scipy.stats import chisquare

from lossdial.config import ConfigError, load_config, packaged_config_path
from lossdial.data.augment import corrupt_features, corrupted_count
from lossdial.train import train
from conftest import assert_same_run_weights

DEMO = packaged_config_path("demo_digits")
#: the demo config on the bundled breast-cancer table, with an MLP, tiny and fast
TABLE = ["data.source=breast_cancer", "data.positive_class=malignant", "data.beta=5", "model.backbone=mlp",
         "model.backbone_kwargs={hidden: [16]}", "train.augment=none", "train.epochs=2", "train.eval_every=1",
         "schedule.warmup_epochs=0", "train.batch_size=32", "train.ema_decay=null"]
SSL = ["ssl.weight=0.5", "ssl.projector_hidden=16", "ssl.projector_dim=8"]


def _cfg(overrides):
    return load_config(DEMO, overrides)


def _coded_pool(n, d):
    """pool[r, j] = 1000 j + r: a value names its column and its donor row."""
    return torch.tensor([[1000.0 * j + r for j in range(d)] for r in range(n)])


# ------------------------------------------------------------------------------------------------------
# the corruption draws
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("d, c, q", [
    (5, 0.6, 3), (1, 0.6, 1), (2, 0.25, 1),   # 0.5 rounds up
    (4, 0.625, 3),                              # 2.5 rounds up
    (10, 0.05, 1), (3, 0.1, 1),                 # 0.5 -> 1; 0.3 -> 0, raised to at least one feature
    (7, 0.99, 7), (20, 0.6, 12), (8, 0.3, 2),   # 2.4 -> 2
])
def test_each_row_gets_exactly_q_entries_from_the_same_column_of_training_rows(d, c, q):
    n, b = 9, 40
    pool = _coded_pool(n, d)
    x = -torch.arange(1.0, b * d + 1).reshape(b, d)  # negative: never a pool value
    g = torch.Generator().manual_seed(3)
    out, mask = corrupt_features(x, pool, c, g)
    assert corrupted_count(d, c) == q
    assert mask.sum(dim=1).tolist() == [q] * b
    assert torch.equal(out[~mask], x[~mask])
    cols = torch.arange(d).expand(b, d)[mask]
    vals = out[mask]
    assert torch.equal(torch.div(vals, 1000, rounding_mode="floor"), cols.float())  # the same column
    donors = vals - 1000 * cols
    assert ((donors >= 0) & (donors < n)).all() and torch.equal(donors, donors.round())  # one of the n rows


def test_corruption_law_uniform_subsets_and_uniform_donor_rows_chi_square():
    d, c, n, b = 5, 0.6, 7, 30000  # q = 3: C(5, 3) = 10 subsets, each with probability 1/10
    g = torch.Generator().manual_seed(11)
    out, mask = corrupt_features(torch.full((b, d), -1.0), _coded_pool(n, d), c, g)
    subsets = list(itertools.combinations(range(d), 3))
    index = {s: k for k, s in enumerate(subsets)}
    counts = np.zeros(len(subsets))
    for row in mask.tolist():
        counts[index[tuple(j for j in range(d) if row[j])]] += 1
    assert chisquare(counts).pvalue > 1e-3
    cols = torch.arange(d).expand(b, d)[mask]
    donors = (out[mask] - 1000 * cols).long()
    assert chisquare(np.bincount(donors.numpy(), minlength=n)).pvalue > 1e-3
    # donors independent of the column: every (column, donor) cell about b * q / (d * n)
    cells = np.bincount((cols * n + donors).numpy(), minlength=d * n)
    assert chisquare(cells).pvalue > 1e-3
    # and independent within a row: two corrupted entries share their donor with probability 1/n
    first_two = donors.reshape(b, 3)[:, :2]
    same = int((first_two[:, 0] == first_two[:, 1]).sum())
    assert abs(same - b / n) < 4 * math.sqrt(b * (1 / n) * (1 - 1 / n))


def test_corruption_draws_come_from_the_generator_only():
    x, pool = torch.zeros(6, 4), _coded_pool(5, 4)
    torch.manual_seed(0)
    a = corrupt_features(x, pool, 0.5, torch.Generator().manual_seed(1))[0]
    torch.manual_seed(99)  # the global RNG plays no part
    b = corrupt_features(x, pool, 0.5, torch.Generator().manual_seed(1))[0]
    c = corrupt_features(x, pool, 0.5, torch.Generator().manual_seed(2))[0]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_corruption_refuses_bad_shapes_and_fractions():
    g = torch.Generator()
    with pytest.raises(ValueError, match="same d"):
        corrupt_features(torch.zeros(2, 3), torch.zeros(4, 2), 0.5, g)
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        corrupt_features(torch.zeros(2, 3), torch.zeros(4, 3), 1.0, g)


# ------------------------------------------------------------------------------------------------------
# config
# ------------------------------------------------------------------------------------------------------
def test_views_resolve_from_the_source_and_the_augment_rule_applies_to_images_only():
    images = _cfg(["ssl.weight=1"])
    assert images.ssl.views == "augment"
    table = _cfg(TABLE + ["ssl.weight=1"])  # train.augment: none is fine: the views come from corruption
    assert table.ssl.views == "corruption" and table.ssl.corruption == 0.6
    assert "views: corruption" in table.to_yaml()  # resolved into the saved config
    assert _cfg(TABLE).ssl.views is None  # Joint-SSL off: nothing resolved


@pytest.mark.parametrize("overrides, where, text", [
    (["ssl.weight=1", "train.augment=none"], "train.augment", "would be identical"),  # images: still refused
    (["ssl.weight=1", "ssl.views=corruption"], "ssl.views", "holds images"),
    (TABLE + ["ssl.weight=1", "ssl.views=augment"], "ssl.views", "is a table"),
    (TABLE + ["ssl.weight=1", "train.augment=flip"], "train.augment", "set train.augment: none"),
    (TABLE + ["ssl.weight=1", "ssl.corruption=0"], "ssl.corruption", r"in \(0, 1\)"),
    (TABLE + ["ssl.weight=1", "ssl.corruption=1"], "ssl.corruption", r"in \(0, 1\)"),
    (TABLE + ["ssl.weight=1", "ssl.corruption=-0.2"], "ssl.corruption", r"in \(0, 1\)"),
    (["ssl.weight=1", "ssl.views=augment", "ssl.corruption=0.3"], "ssl.corruption", "ssl.views is augment"),
    (TABLE + ["ssl.corruption=0.3"], "ssl.weight", "weight is null"),
    (TABLE + ["ssl.views=corruption"], "ssl.weight", "weight is null"),
    (["data.source=npz", "data.path=x.npz", "ssl.weight=1"], "ssl.views", "must be named"),
])
def test_bad_ssl_view_settings_are_refused_at_load_with_the_dotted_path(overrides, where, text):
    with pytest.raises(ConfigError, match=rf"\n  {where}: .*{text}"):
        _cfg(overrides)


def test_views_that_do_not_fit_an_npz_source_are_refused_when_the_run_starts():
    from lossdial.train.simplifying import check_run

    cfg = _cfg(["data.source=npz", "data.path=x.npz", "ssl.weight=1", "ssl.views=augment"])
    with pytest.raises(ValueError, match="ssl.views: augment does not fit this data .*set ssl.views: corruption"):
        check_run(cfg, "device", False, [50, 10], "table")
    check_run(cfg, "device", False, [50, 10], "image")
    cfg = _cfg(["data.source=npz", "data.path=x.npz", "ssl.weight=1", "ssl.views=corruption",
                "train.augment=none"])
    with pytest.raises(ValueError, match="ssl.views: corruption does not fit this data"):
        check_run(cfg, "device", False, [50, 10], "image")


# ------------------------------------------------------------------------------------------------------
# the training loop on a table
# ------------------------------------------------------------------------------------------------------
def test_loop_draws_the_second_view_from_the_whole_training_split(tmp_path, monkeypatch):
    import lossdial.train.simplifying as simplifying

    seen = []
    real = simplifying.corrupt_features

    def spy(x, pool, fraction, generator):
        out = real(x, pool, fraction, generator)
        seen.append((x.clone(), pool.clone(), fraction, out[0].clone(), out[1].clone()))
        return out

    monkeypatch.setattr(simplifying, "corrupt_features", spy)
    cfg = _cfg(TABLE + SSL + ["ssl.corruption=0.4"])
    train(cfg, tmp_path / "run", device="cpu")
    from lossdial.data.task import build_task

    task = build_task(cfg.data)
    n, d = task.train.x.shape
    steps = 2 * math.ceil(n / 32)
    assert len(seen) == steps
    rows = {tuple(r) for r in task.train.x.tolist()}
    for x, pool, fraction, out, mask in seen:
        assert fraction == 0.4 and torch.equal(pool, task.train.x)  # the training split, raw, every row
        assert all(tuple(r) in rows for r in x.tolist())  # the batch: rows of the training split
        assert mask.sum(dim=1).tolist() == [round(0.4 * d)] * len(x)
        for i, j in mask.nonzero().tolist():  # a corrupted entry is that column of some training row
            assert (pool[:, j] == out[i, j]).any()


def test_ssl_on_a_table_changes_training_and_keeps_the_exported_model_plain(tmp_path):
    train(_cfg(TABLE), tmp_path / "plain", device="cpu")
    train(_cfg(TABLE + SSL), tmp_path / "ssl", device="cpu")
    a = load_file(str(tmp_path / "plain" / "model.safetensors"))
    b = load_file(str(tmp_path / "ssl" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_killed_and_resumed_tabular_ssl_run_equals_uninterrupted(tmp_path, kill_at):
    cfg = _cfg(TABLE + SSL + ["train.epochs=3", "train.checkpoint_every=4", "loss.smoothing={a_max: 0.2}"])
    train(cfg, tmp_path / "full", device="cpu")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "killed", device="cpu", callback=kill_at(9))
    train(cfg, tmp_path / "killed", device="cpu", resume=True)
    assert_same_run_weights(tmp_path / "full", tmp_path / "killed")
