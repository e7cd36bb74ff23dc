"""Baseline grids against LCT over seeds, in one call: train, pick on validation, score on test, aggregate.

The claim under test (Lieberman et al., the LCT paper): one LCT model does as well as the *best* of a
grid of baseline models at every operating point. So a baseline *method* is the whole grid: for each
metric, the grid member, its threshold (and for LCT the lambda) are chosen on the validation split, and
only that one choice is scored on the test split. Per seed::

    for every metric (AUC, AP, Brier, best F1, precision at recall r):
        baseline grid: pick (member, threshold) on val  -> score test once at that choice
        each LCT model: pick (lambda, threshold) on val -> score test once at that choice
    then mean +- std over seeds

Ablations (``variants``, ``--variant NAME=KEY=VALUE[,KEY=VALUE...]``): each variant is a method of its own,
the config with those dotted overrides (the ``--set`` rule, one override per comma outside brackets,
parentheses and quotes), and the config as given is then always the row ``base``; a variant is trained per
seed, picked on validation and scored once on test like any method (an LCT variant over its lambdas).

Run layout (one run directory per trained model; the run directory format is unchanged)::

    OUT/baseline_gamma0.1_tau2/seed0/   one baseline grid member, seed 0
    OUT/lct/seed0/                      the LCT model (lct1, lct2, ... when several --lct are given)
    OUT/base/seed0/, OUT/NAME/seed0/    with --variant: the config as given, and variant NAME
    OUT/compare.json | compare.csv | compare.md

A run directory that is COMPLETE is reused; an unfinished one resumes from its checkpoint (a killed
compare continues where it stopped, bit-identical to an uninterrupted one); a run killed before its first
checkpoint restarts. A finished run whose saved config differs from the one compare would train is an
error (choose another ``out``), never silently mixed in.

Multi-class runs (``data.task: multiclass``): the operating point is (member, lambda, t), t the post-hoc
logit adjustment (scores z_c - t log pi_c); the metrics come from the task type (:func:`task_metrics`:
balanced accuracy, accuracy at the deployment class prior, worst-class and the many/medium/few-shot
accuracies whose group has a class, macro F1, NLL, ECE), each picked on the pooled validation sweep over the
method's runs x lambdas x t and scored once on test at that point. The binary output is unchanged.

Threshold-type metrics (F1, precision at recall r) are scored on test *at the threshold chosen on
validation*: the test F1 is the F1 at that threshold and the test precision is the precision at that
threshold (the recall it reaches on test is recorded next to it, ``test_recall``). Nothing is tuned on test.
"""

from __future__ import annotations

import copy
import json
import os
import time
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

from lossdial.config import (Config, ConfigError, config_from_dict, load_config, parse_override, set_lct_law,
                             split_overrides)
from lossdial.evaluate.classification import RECALL_LEVELS, binary_metrics
from lossdial.rundir import RunDir, atomic_write_text, fmt_value, is_undefined, write_json

COMPARE_FORMAT_VERSION = 1


class CompareError(ValueError):
    """The comparison cannot run as asked; the message says what to change."""


# --------------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MetricSpec:
    key: str  # key in compare.json / binary_metrics
    label: str  # column head
    objective: str  # SweepResult.pick objective
    constraint: str | None = None  # SweepResult.pick constraint
    higher_is_better: bool = True

    @property
    def arrow(self) -> str:
        return "up" if self.higher_is_better else "down"


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("auc", "AUC", "auc"),
    MetricSpec("ap", "AP", "ap"),
    MetricSpec("brier", "Brier", "brier", higher_is_better=False),
    MetricSpec("f1", "F1", "f1"),
    *(MetricSpec(f"precision@recall={r:g}", f"P@R{r:g}", "precision", f"recall>={r:g}") for r in RECALL_LEVELS),
)


#: The multi-class metrics compare picks on (keys of ``multiclass_metrics``, as ``pick --maximize/--minimize``
#: takes them). A shot-group metric whose group has no class in the runs' training counts is left out
#: (:func:`task_metrics`): it is undefined there and cannot be picked on.
MULTICLASS_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("balanced_accuracy", "BalAcc", "balanced_accuracy"),
    MetricSpec("accuracy", "Acc@prior", "accuracy"),
    MetricSpec("worst_class_accuracy", "Worst", "worst_class_accuracy"),
    MetricSpec("many_shot_accuracy", "Many", "many_shot_accuracy"),
    MetricSpec("medium_shot_accuracy", "Medium", "medium_shot_accuracy"),
    MetricSpec("few_shot_accuracy", "Few", "few_shot_accuracy"),
    MetricSpec("macro_f1", "MacroF1", "macro_f1"),
    MetricSpec("nll", "NLL", "nll", higher_is_better=False),
    MetricSpec("ece", "ECE", "ece", higher_is_better=False),
)


def task_metrics(task: str | None, train_counts: Sequence[Sequence[int]] = (),
                 shot_thresholds: Sequence[int] | None = None) -> tuple[MetricSpec, ...]:
    """The metrics a compare of ``task`` (``data.task``) reports: binary :data:`METRICS`; multi-class
    :data:`MULTICLASS_METRICS` without the shot-group metrics whose group is empty in any of ``train_counts``
    (the training counts of every run compared)."""
    from lossdial.evaluate.multiclass import shot_groups
    from lossdial.evaluate.sweep import _SHOT_GROUP_OF
    from lossdial.evaluate.tasktype import task_type

    if task_type(task).name == "binary":
        return METRICS
    groups = [shot_groups(c) if shot_thresholds is None else shot_groups(c, shot_thresholds) for c in train_counts]
    return tuple(s for s in MULTICLASS_METRICS
                 if s.key not in _SHOT_GROUP_OF or all(g[_SHOT_GROUP_OF[s.key]] for g in groups))


def _test_value(spec: MetricSpec, m: Mapping[str, float]) -> float:
    """The test value of `spec` from binary_metrics at the chosen threshold."""
    if spec.objective == "f1":
        p, r = m["precision"], m["recall"]
        return 2 * p * r / (p + r) if p + r > 0 else 0.0
    if spec.objective == "precision":
        return float(m["precision"])
    return float(m[spec.objective])


# --------------------------------------------------------------------------------------------------
# the plan: methods, runs
# --------------------------------------------------------------------------------------------------
@dataclass
class Method:
    name: str  # "baseline", "lct", "lct1", "base", a variant's name, ...
    kind: str  # "baseline", "lct" or "variant" (the base config, or it with the variant's overrides)
    label: str  # shown in tables
    spec: str  # the grid, the LCT law, the variant's overrides or the tuned space as given
    members: list[tuple[str, dict[str, Any]]]  # (run directory, loss.params | lct.lambda | {"overrides": [...]})
    options: dict[str, Any] = field(default_factory=dict)  # kind "tuned": budget, metric (its runs come from a search)


@dataclass
class PlannedRun:
    method: str
    member: str  # run directory name under OUT (e.g. baseline_tau1, lct)
    seed: int
    data_seed: int
    path: Path
    config: Config
    action: str = "train"  # train | resume | restart | reuse
    kind: str = ""  # the method's kind (Method.kind)

    @property
    def label(self) -> str:
        return f"{self.member}/seed{self.seed}"


class CompareCallback(Protocol):
    """Progress hooks, all optional (the CLI draws progress bars; the library never prints)."""

    def on_plan(self, runs: list[PlannedRun]) -> None: ...
    def on_run_start(self, run: PlannedRun) -> None: ...
    def on_run_end(self, run: PlannedRun, seconds: float) -> None: ...
    def train_callback(self, run: PlannedRun) -> Any: ...  # a lossdial.train Callback, in-process only
    def on_evaluate(self, done: int, total: int) -> None: ...


def _call(cb: Any, name: str, *args: Any) -> Any:
    fn = getattr(cb, name, None) if cb is not None else None
    return fn(*args) if fn is not None else None


def _fmt_num(v: float) -> str:
    return f"{v:g}"


#: Keys a variant may not override: compare sets them per run (the seed axis and the run name).
_VARIANT_FIXED = {"seed": "the seed is compare's axis (--seeds)", "name": "compare names every run",
                  "data.seed": "the data seed is shared by all rows (or varied by --vary-data-seed)"}
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``"NAME=KEY=VALUE[,KEY=VALUE...]"`` -> (NAME, [override, ...]).

    The overrides are split at commas outside brackets, parentheses and quotes
    (:func:`~lossdial.config.split_overrides`) and each is read by :func:`~lossdial.config.parse_override`,
    the rule of ``--set``: ``"sam_a=optim.sam.rho=0.05,optim.sam.mode=asymmetric"`` or
    ``'lct=lct.lambda={tau: "L(0,3,0.33)"}'``. NAME (a run-directory name) is letters, digits, ``_``, ``.``
    and ``-``. Errors are :class:`CompareError` naming the variant.
    """
    name, sep, rest = text.partition("=")
    if not sep or not name.strip() or "=" not in rest:
        raise CompareError(f"--variant {text!r} must look like NAME=KEY=VALUE[,KEY=VALUE...]; {_VARIANT_EG}")
    try:
        overrides = split_overrides(rest)
    except ConfigError as exc:
        raise CompareError(f"--variant {name.strip()}: {exc}; {_VARIANT_EG}") from None
    return check_variant(name.strip(), overrides)


_VARIANT_EG = 'e.g. --variant "sam=optim.sam.rho=0.05" or "small_batch=train.batch_size=32,optim.lr=0.025"'


def check_variant(name: str, overrides: Sequence[str]) -> tuple[str, list[str]]:
    """One variant's checks (both spellings of ``variants``): a run-directory name, at least one override, each
    read by :func:`~lossdial.config.parse_override`, no key twice, none of the keys compare sets itself, and no
    ``data.*`` key (every row is scored on the same split at the same prevalence)."""
    if not name or not set(name) <= _NAME_CHARS or name.startswith("."):
        raise CompareError(f"--variant {name!r}: a variant's name names its run directory: use letters, digits, "
                           f"_ . - (not starting with .)")
    if not overrides:
        raise CompareError(f"--variant {name} has no override; {_VARIANT_EG}")
    seen = set()
    for ov in overrides:
        try:
            key = ".".join(parse_override(str(ov))[0])
        except ConfigError as exc:
            raise CompareError(f"--variant {name}: {exc}; {_VARIANT_EG}") from None
        if key in _VARIANT_FIXED:
            raise CompareError(f"--variant {name}: {key} cannot be a variant's override: {_VARIANT_FIXED[key]}")
        if key == "data" or key.startswith("data."):
            raise CompareError(f"--variant {name}: {key} cannot be a variant's override: a data.* key can change "
                               f"the splits, their counts or the prevalence, and every row must be scored on the same "
                               f"validation and test split; set it for all rows with --set {key}=...")
        if key in seen:
            raise CompareError(f"--variant {name} sets {key} twice; keep one")
        seen.add(key)
    return name, [str(ov) for ov in overrides]


def _variant_methods(variants: Sequence[str] | Mapping[str, Sequence[str]]) -> list[Method]:
    """The row ``base`` (the config as given) and one method per variant (the config with its overrides)."""
    items = [check_variant(str(k), list(v)) for k, v in variants.items()] if isinstance(variants, Mapping) else \
        [parse_variant(v) for v in variants]
    methods = [Method("base", "variant", "base", "", [("base", {"overrides": []})])]
    for name, overrides in items:
        methods.append(Method(name, "variant", name, ",".join(overrides), [(name, {"overrides": overrides})]))
    return methods


def build_methods(baseline_grid: str | Sequence[Mapping[str, float]] | None,
                  lct: str | Sequence[str] | None,
                  variants: Sequence[str] | Mapping[str, Sequence[str]] | None = None) -> list[Method]:
    """The methods to compare: with ``variants``, the row ``base`` (the config as given) and one row per variant
    (``NAME=KEY=VALUE[,KEY=VALUE...]`` texts, :func:`parse_variant`, or ``{NAME: [override, ...]}``); the
    baseline grid (one method); one method per LCT law. Names (methods and run directories) must be unique."""
    from lossdial.conditioning import parse_lambda_grid, parse_lct

    methods: list[Method] = _variant_methods(variants) if variants else []
    if baseline_grid:
        points = parse_lambda_grid(baseline_grid) if isinstance(baseline_grid, str) else \
            [dict(p) for p in baseline_grid]
        if not points:
            raise CompareError("--baseline-grid gives no configuration")
        members, seen = [], set()
        for p in points:
            name = "baseline_" + "_".join(f"{k}{_fmt_num(float(v))}" for k, v in p.items())
            if name in seen:
                raise CompareError(f"--baseline-grid lists {p} twice")
            seen.add(name)
            members.append((name, {k: float(v) for k, v in p.items()}))
        spec = baseline_grid if isinstance(baseline_grid, str) else \
            " ".join(",".join(f"{k}={_fmt_num(v)}" for k, v in p.items()) for p in points)
        keys = sorted({k for p in points for k in p})
        methods.append(Method("baseline", "baseline",
                              f"baseline grid ({len(points)} runs over {', '.join(keys)})", spec, members))
    specs = [lct] if isinstance(lct, str) else list(lct or [])
    for i, s in enumerate(specs):
        law = parse_lct(s)
        if not law:
            raise CompareError(f"--lct {s!r} names no hyperparameter; e.g. \"tau~L(0,3,0.33)\"")
        lam = {k: d.spec() for k, d in law.items()}
        name = "lct" if len(specs) == 1 else f"lct{i + 1}"
        label = "LCT " + " ".join(f"{k}~{v}" for k, v in lam.items())
        methods.append(Method(name, "lct", label, s, [(name, lam)]))
    if not methods:
        raise CompareError("nothing to compare: give a baseline grid, at least one LCT law and/or a --variant")
    names: dict[str, str] = {}
    for m in methods:
        for n in dict.fromkeys([m.name, *(member for member, _ in m.members)]):
            if n in names:
                what = "the row of the config as given" if n == "base" else f"{names[n]}"
                raise CompareError(f"the name {n!r} is used twice (by {what} and by {m.label}); give each "
                                   f"--variant its own name (base, baseline, baseline_*, lct, lctN are taken "
                                   f"when those rows are compared)")
            names[n] = m.label
    return methods


def _seed_list(base: Config, seeds: int | Sequence[int]) -> list[int]:
    if isinstance(seeds, int):
        if seeds < 1:
            raise CompareError(f"seeds must be >= 1, got {seeds}")
        return [base.seed + i for i in range(seeds)]
    out = [int(s) for s in seeds]
    if not out or len(set(out)) != len(out):
        raise CompareError(f"seeds must be distinct integers, got {list(seeds)}")
    return out


def member_config(base: Config, method: Method, params: Mapping[str, Any], seed: int, data_seed: int,
                  member: str) -> Config:
    """The config of one run: the base config with the seed, data seed and the method's loss settings."""
    raw = copy.deepcopy(base.to_dict())
    raw["seed"] = int(seed)
    raw["data"]["seed"] = int(data_seed)
    raw["name"] = f"{base.name}-{member}"
    if method.kind == "variant":
        try:
            return config_from_dict(raw, list(params["overrides"]), source=f"compare run {member}/seed{seed}")
        except ConfigError as exc:
            raise CompareError(f"--variant {method.name} ({method.spec}): {exc}") from None
    if method.kind == "baseline":
        raw["lct"]["enabled"] = False
        raw["loss"]["params"] = {**raw["loss"]["params"], **params}
    else:
        raw = set_lct_law(raw, params)
    return config_from_dict(raw, source=f"compare run {member}/seed{seed}")


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += _diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def _saved_config(path: Path) -> Config | None:
    import yaml

    f = RunDir(path).config
    if not f.is_file():
        return None
    return config_from_dict(yaml.safe_load(f.read_text()), source=str(f))


def plan_runs(base: Config, methods: list[Method], seeds: list[int], out: Path, *,
              vary_data_seed: bool = False) -> list[PlannedRun]:
    """Every run to train (seed-major order) with what to do about its directory."""
    runs: list[PlannedRun] = []
    for i, s in enumerate(seeds):
        data_seed = base.data.seed + (i if vary_data_seed else 0)
        for m in methods:
            for member, params in m.members:
                cfg = member_config(base, m, params, s, data_seed, member)
                runs.append(PlannedRun(m.name, member, s, data_seed, out / member / f"seed{s}", cfg, kind=m.kind))
    for r in runs:
        rd = RunDir(r.path)
        saved = _saved_config(r.path)
        if saved is not None and saved.to_dict() != r.config.to_dict():
            keys = _diff(saved.to_dict(), r.config.to_dict())
            raise CompareError(
                f"{r.path} holds a run trained with a different config (differs at: {', '.join(keys[:6])}); "
                f"use another --out, or delete that directory to retrain it")
        if rd.is_complete:
            r.action = "reuse"
        elif rd.checkpoint.is_file():
            r.action = "resume"
        elif r.path.is_dir() and any(r.path.iterdir()):
            r.action = "restart"  # killed before its first checkpoint
    return runs


# --------------------------------------------------------------------------------------------------
# training (in-process, or N concurrent worker processes)
# --------------------------------------------------------------------------------------------------
def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _train_job(raw_config: dict[str, Any], path: str, resume: bool, force: bool, device: str | None) -> float:
    from lossdial.train import train

    cfg = config_from_dict(raw_config, source=f"{path}/config.yaml")
    return train(cfg, path, resume=resume, force=force, device=device).seconds


def _train_runs(runs: list[PlannedRun], *, jobs: int, device: str | None, callback: Any) -> None:
    todo = [r for r in runs if r.action != "reuse"]
    for r in runs:
        if r.action == "reuse":
            _call(callback, "on_run_end", r, 0.0)
    if not todo:
        return
    if jobs <= 1:
        from lossdial.train import train

        for r in todo:
            _call(callback, "on_run_start", r)
            res = train(r.config, r.path, resume=r.action != "restart", force=r.action == "restart",
                        device=device, callback=_call(callback, "train_callback", r))
            _call(callback, "on_run_end", r, res.seconds)
        return
    import multiprocessing as mp

    threads = max(1, _available_cores() // jobs)
    ctx = mp.get_context("spawn")  # never fork a process that holds torch threads (or a CUDA context)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_worker_init,
                             initargs=(threads,)) as pool:
        futures = {}
        for r in todo:
            futures[pool.submit(_train_job, r.config.to_dict(), str(r.path), r.action != "restart",
                                r.action == "restart", device)] = r
            _call(callback, "on_run_start", r)
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for f in done:
                    exc = f.exception()
                    if exc is not None:
                        raise exc
                    _call(callback, "on_run_end", futures[f], f.result())
        except BaseException:
            for f in pending:
                f.cancel()
            raise


def stack_groups(runs: list[PlannedRun]) -> list[list[PlannedRun]]:
    """The runs to train as one stack each (``compare(stacked=True)``): the baseline grid members of all seeds
    form one stack, the LCT runs (every law and seed) another; runs on different data seeds or LCT runs
    conditioned on different hyperparameters go to separate stacks (a stack shares its data and FiLM size);
    each variant (and ``base``) is a stack of its seeds."""
    groups: dict[tuple, list[PlannedRun]] = {}
    for r in runs:
        cfg = r.config
        key = (cfg.lct.enabled, r.data_seed, tuple(sorted(cfg.lct.lambdas)) if cfg.lct.enabled else (),
               r.method if r.kind == "variant" else "")  # a variant has its own recipe: its own stack
        groups.setdefault(key, []).append(r)
    return list(groups.values())


def _train_stacked_runs(runs: list[PlannedRun], *, device: str | None, callback: Any) -> None:
    """Train every unfinished run in stacks (:func:`lossdial.train.stacked.train_stacked`).

    A stack does not resume: an unfinished run (a checkpoint of an earlier unstacked compare, or a stack
    killed midway) is retrained from the start. Its callback is the first member's train callback.
    """
    from lossdial.train.stacked import train_stacked

    for r in runs:
        if r.action == "reuse":
            _call(callback, "on_run_end", r, 0.0)
    for group in stack_groups([r for r in runs if r.action != "reuse"]):
        for r in group:
            _call(callback, "on_run_start", r)
        results = train_stacked([r.config for r in group], [r.path for r in group], device=device, force=True,
                                callback=_call(callback, "train_callback", group[0]))
        for r, res in zip(group, results):
            _call(callback, "on_run_end", r, res.seconds)


# --------------------------------------------------------------------------------------------------
# selection on validation, scoring on test
# --------------------------------------------------------------------------------------------------
def _run_seconds(path: Path) -> float:
    rd = RunDir(path)
    try:
        return float(rd.read_json(rd.complete_marker).get("seconds", 0.0))
    except (json.JSONDecodeError, OSError):
        return 0.0


def _run_device(path: Path) -> str | None:
    for rec in RunDir(path).read_log():
        if rec.get("event") == "start":
            return rec.get("device")
    return None


class _TaskCache:
    """One data task per data config (every run of a seed shares it); split indices checked per run."""

    def __init__(self) -> None:
        self._tasks: dict[str, Any] = {}

    def get(self, loaded) -> Any:
        from lossdial.rundir import RunError

        key = json.dumps(loaded.config.to_dict()["data"], sort_keys=True)
        if key not in self._tasks:
            self._tasks[key] = loaded.task()  # builds and checks against splits.npz
            return self._tasks[key]
        task = self._tasks[key]
        saved = np.load(RunDir(loaded.path).splits)
        for k in ("train", "val", "test"):
            if not np.array_equal(saved[k], getattr(task.indices, k)):
                raise RunError(f"the {k} split of {loaded.path} differs from the one rebuilt from its config")
        return task


def _test_output(cache: dict, i: int, lr, lam, task, output: str) -> np.ndarray:
    """The test split scored once per chosen (run i, lambda) (``output``: "positive" or "logits"), cached."""
    import torch

    from lossdial.evaluate.scoring import score_lambdas

    key = (i, json.dumps(lam, sort_keys=True))
    if key not in cache:
        with torch.no_grad():
            cache[key] = score_lambdas(lr.model, task.test.x, [lam] if lr.is_lct else None, lr.space,
                                       device=lr.device, batch_size=lr.config.evaluate.batch_size,
                                       transform=task.normalizer, output=output)[0]
    return cache[key]


def pick_on_validation(val, spec: MetricSpec) -> tuple[Any, float]:
    """The point ``spec`` picks on a validation sweep (binary :class:`SweepResult` at its prevalence, multi-class
    :class:`MultiClassSweepResult` over (lambda, t) at its prior) and its validation value: the one rule of a
    compare row's ``val`` and of a tuned search's trial objective (:func:`validation_objective`)."""
    from lossdial.evaluate.sweep import MultiClassSweepResult

    point = val.pick(spec.constraint, spec.objective)
    if isinstance(val, MultiClassSweepResult):
        return point, float(point.metrics[spec.key])
    return point, _test_value(spec, point.metrics)


def validation_objective(loaded, key: str, *, prevalence: float | None = None, prior=None, adjustments=None,
                         task=None) -> float:
    """A run's validation value of metric ``key`` as compare reports it: the run's validation sweep (binary: at
    ``prevalence``, None: the training prevalence, :func:`~lossdial.evaluate.select.run_prevalence`; multi-class:
    at the class ``prior`` over the ``adjustments`` grid) and :func:`pick_on_validation`. ``lossdial tune`` and
    ``compare --tuned`` score each trial with it, so the search optimises the number the tables report."""
    from lossdial.evaluate.select import run_prevalence, sweep_split

    if loaded.task_type.name == "multiclass":
        specs = {s.key: s for s in MULTICLASS_METRICS}
        val = sweep_split(loaded, "val", None, prior=prior, adjustments=adjustments, task=task)
    else:
        specs = {s.key: s for s in METRICS}
        val = sweep_split(loaded, "val", None, prevalence=run_prevalence(loaded, prevalence), task=task)
    if key not in specs:
        raise CompareError(f"{key!r} is not a {loaded.task_type.name} metric compare reports; choose one of "
                           f"{', '.join(specs)}")
    return pick_on_validation(val, specs[key])[1]


def _evaluate_group(members: list[tuple[str, Path]], task_cache: _TaskCache, *, lct_lambdas, prevalence,
                    device: str) -> list[dict[str, Any]]:
    """Pick every metric's point on the pooled validation sweep of `members`; score each once on test."""
    from lossdial.evaluate import load_run
    from lossdial.evaluate.select import run_prevalence, sweep_split
    from lossdial.evaluate.sweep import SweepResult

    loaded, cands, rows = [], [], []
    prev = None
    task = None
    for i, (member, path) in enumerate(members):
        lr = load_run(path, device=device)
        task = task_cache.get(lr)
        p = run_prevalence(lr, prevalence)
        if prev is not None and abs(p - prev) > 1e-12:
            raise CompareError(f"runs of one method disagree on the training prevalence ({prev} vs {p}); "
                               f"they must share the data (same data.seed)")
        prev = p
        sw = sweep_split(lr, "val", lct_lambdas if lr.is_lct else None, prevalence=p, task=task)
        loaded.append(lr)
        for k, lam in enumerate(sw.lambdas):
            cands.append((i, lam))
            rows.append(sw.scores[k])
    thr_default = loaded[0].config.evaluate.threshold
    pooled = SweepResult(lambdas=[{"candidate": float(j)} for j in range(len(cands))], scores=np.stack(rows),
                         labels=np.asarray(task.val.y), split="val", prevalence=prev, threshold=thr_default)
    y_test = task.test.y.numpy()
    test_scores: dict[tuple[int, str], np.ndarray] = {}
    out = []
    for spec in METRICS:
        point, val_value = pick_on_validation(pooled, spec)  # validation only; test is not read here
        i, lam = cands[point.index]
        lr = loaded[i]
        m_test = binary_metrics(y_test, _test_output(test_scores, i, lr, lam, task, "positive"),
                                threshold=point.threshold, prevalence=prev)
        out.append({
            "metric": spec.key,
            "member": members[i][0],
            "run": str(members[i][1]),
            "lambda": lam if lr.is_lct else None,
            "threshold": point.threshold if spec.constraint or spec.objective == "f1" else None,
            "val": val_value,
            "test": _test_value(spec, m_test),
            "test_recall": float(m_test["recall"]) if spec.objective == "precision" else None,
            "candidates": len(cands),
            "prevalence": prev,
        })
    return out


def _evaluate_multiclass_group(members: list[tuple[str, Path]], task_cache: _TaskCache, *,
                               metrics: Sequence[MetricSpec], lct_lambdas, prior, adjustments,
                               device: str) -> list[dict[str, Any]]:
    """:func:`_evaluate_group` for multi-class runs: every metric's (member, lambda, t) is the best row of the
    pooled validation sweep over the members' lambdas x the adjustment grid t (a baseline member has one
    lambda, its fixed loss parameters, so only its t varies); the test split is then scored once there."""
    from lossdial.evaluate import load_run
    from lossdial.evaluate.multiclass import class_prior
    from lossdial.evaluate.select import sweep_split
    from lossdial.evaluate.sweep import MultiClassSweepResult

    loaded, cands, logits = [], [], []
    counts, task, val = None, None, None
    for i, (member, path) in enumerate(members):
        lr = load_run(path, device=device)
        task = task_cache.get(lr)
        if counts is not None and lr.train_counts != counts:
            raise CompareError(f"runs of one method disagree on the training counts ({counts} vs "
                               f"{lr.train_counts}); they must share the data (same data.seed)")
        counts = lr.train_counts
        val = sweep_split(lr, "val", lct_lambdas if lr.is_lct else None, prior=prior, adjustments=adjustments,
                          task=task)
        loaded.append(lr)
        for k, lam in enumerate(val.lambdas):
            cands.append((i, lam))
            logits.append(val.logits[k])
    pooled = MultiClassSweepResult(lambdas=[{"candidate": float(j)} for j in range(len(cands))],
                                   logits=np.stack(logits), labels=val.labels, train_counts=counts,
                                   adjustments=val.adjustments, prior=val.prior, split="val",
                                   shot_thresholds=val.shot_thresholds)
    y_test = task.test.y.numpy()
    test_logits: dict[tuple[int, str], np.ndarray] = {}
    out = []
    for spec in metrics:
        point, val_value = pick_on_validation(pooled, spec)  # validation only; test is not read here
        i, lam = cands[point.index]
        lr = loaded[i]
        z_test = _test_output(test_logits, i, lr, lam, task, "logits")
        # the test split at the one chosen (lambda, t): the same rule as a sweep row
        m_test = MultiClassSweepResult(lambdas=[lam], logits=z_test[None], labels=y_test,
                                       train_counts=counts, adjustments=(point.adjustment,), prior=val.prior,
                                       split="test", shot_thresholds=val.shot_thresholds).table[0]["metrics"]
        out.append({
            "metric": spec.key,
            "member": members[i][0],
            "run": str(members[i][1]),
            "lambda": lam if lr.is_lct else None,
            "adjustment": point.adjustment,
            "val": val_value,
            "test": float(m_test[spec.key]),
            "candidates": len(pooled.table),
            "prior": [float(v) for v in class_prior(val.prior, counts)],
        })
    return out


def _csv_num(v: Any) -> str:
    """A CSV cell: an undefined value (None, NaN) is empty."""
    return "" if is_undefined(v) else f"{v:.6f}"


def _stats(values: list[float | None]) -> dict[str, Any]:
    """Mean and sample standard deviation (ddof=1) over the seeds where the value is defined.

    A seed's value can be undefined (None / NaN: e.g. test precision when nothing is predicted positive);
    ``n_defined`` says over how many seeds the mean runs, and tables show it when it is not all of them.
    ``mean`` is None when no seed defines the value; ``std`` is None with fewer than two defined seeds.
    """
    v = np.asarray([x for x in values if not is_undefined(x)], dtype=float)
    return {"mean": float(v.mean()) if len(v) else None, "std": float(v.std(ddof=1)) if len(v) > 1 else None,
            "n_defined": int(len(v))}


# --------------------------------------------------------------------------------------------------
# the result and its files
# --------------------------------------------------------------------------------------------------
@dataclass
class CompareResult:
    out: Path
    methods: list[Method]
    seeds: list[int]
    summary: dict[str, dict[str, dict[str, float]]]  # method -> metric -> {mean, std, ...}
    picks: list[dict[str, Any]]  # one per (seed, method, metric)
    train_seconds: dict[str, float]  # method -> total training seconds over its runs and seeds
    devices: dict[str, list[str]]
    prevalence: dict[str, Any]  # multi-class: the deployment class prior {source, values: [[q_1..q_C], ...]}
    settings: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    task: str = "binary"
    metric_specs: tuple[MetricSpec, ...] = METRICS  # task_metrics(task, ...)
    adjustments: tuple[float, ...] | None = None  # multi-class: the t grid searched
    sensitivity: dict[str, Any] | None = None  # lossdial.experiments.sensitivity.compare_sensitivity

    @property
    def is_multiclass(self) -> bool:
        return self.task == "multiclass"

    @property
    def protocol(self) -> str:
        return f"picked on: validation; scored on: test; seeds: {len(self.seeds)}"

    def to_dict(self) -> dict[str, Any]:
        if self.is_multiclass:
            return self._multiclass_dict()
        return {
            "format_version": COMPARE_FORMAT_VERSION,
            "protocol": {"picked_on": "val", "scored_on": "test", "seeds": self.seeds,
                         "n_seeds": len(self.seeds), "std": "sample standard deviation over seeds (ddof=1)",
                         "threshold_metrics": "F1 and precision@recall are measured on test at the threshold "
                                              "chosen on validation; test_recall is the recall reached there"},
            "prevalence": self.prevalence,
            "settings": self.settings,
            "methods": [{"name": m.name, "kind": m.kind, "label": m.label, "spec": m.spec,
                         "runs": [n for n, _ in m.members]} for m in self.methods],
            "metrics": [{"key": s.key, "label": s.label, "higher_is_better": s.higher_is_better}
                        for s in METRICS],
            "summary": self.summary,
            "train_seconds": self.train_seconds,
            "train_devices": self.devices,
            "picks": self.picks,
            "sensitivity": self.sensitivity,
        }

    def _multiclass_dict(self) -> dict[str, Any]:
        return {
            "format_version": COMPARE_FORMAT_VERSION,
            "task": "multiclass",
            "protocol": {"picked_on": "val", "scored_on": "test", "seeds": self.seeds,
                         "n_seeds": len(self.seeds), "std": "sample standard deviation over seeds (ddof=1)",
                         "operating_point": "each method's (run, lambda, t) is chosen per metric on validation: "
                                            "t the post-hoc logit adjustment (scores z_c - t log pi_c, pi the "
                                            "training prior); the test split is scored once at that point"},
            "prior": self.prevalence,
            "adjustments": list(self.adjustments or ()),
            "settings": self.settings,
            "methods": [{"name": m.name, "kind": m.kind, "label": m.label, "spec": m.spec,
                         "runs": [n for n, _ in m.members]} for m in self.methods],
            "metrics": [{"key": s.key, "label": s.label, "higher_is_better": s.higher_is_better}
                        for s in self.metric_specs],
            "summary": self.summary,
            "train_seconds": self.train_seconds,
            "train_devices": self.devices,
            "picks": self.picks,
            "sensitivity": self.sensitivity,
        }

    def cell(self, method: str, metric: str) -> str:
        s = self.summary[method][metric]
        text = fmt_value(s["mean"]) if s["std"] is None else f"{fmt_value(s['mean'])} ± {fmt_value(s['std'])}"
        n_def = s.get("n_defined", len(self.seeds))
        return text if n_def == len(self.seeds) or s["mean"] is None else f"{text} ({n_def}/{len(self.seeds)} seeds)"

    def write(self) -> dict[str, Path]:
        self.out.mkdir(parents=True, exist_ok=True)
        paths = {"json": self.out / "compare.json", "csv": self.out / "compare.csv", "md": self.out / "compare.md"}
        write_json(paths["json"], self.to_dict())
        atomic_write_text(paths["csv"], self._csv())
        if self.sensitivity is not None:
            from lossdial.report.sensitivity import figure

            png = figure(self.sensitivity, self.out / "sensitivity.png")
            if png is not None:
                paths["sensitivity"] = png
        atomic_write_text(paths["md"], self.markdown() + self._tuned_markdown() + self._sensitivity_markdown())
        self.files = paths
        return paths

    def _csv(self) -> str:
        import csv
        import io

        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["method", "metric", "higher_is_better", "mean", "std", "n_seeds", "val_mean",
                    "test_recall_mean", "per_seed_test"])
        for m in self.methods:
            for s in self.metric_specs:
                st = self.summary[m.name][s.key]
                w.writerow([m.name, s.key, s.higher_is_better, _csv_num(st["mean"]), _csv_num(st["std"]),
                            len(self.seeds), _csv_num(st["val_mean"]), _csv_num(st.get("test_recall_mean")),
                            " ".join(fmt_value(v, ".6f") for v in st["values"])])
            w.writerow([m.name, "train_seconds", False, f"{self.train_seconds[m.name]:.3f}", "", len(self.seeds),
                        "", "", ""])
        return buf.getvalue()

    def variants_text(self) -> str:
        """What each variant row is: "base = the config as given; NAME = base + overrides; ..." ("" without)."""
        rows = [m for m in self.methods if m.kind == "variant"]
        return "; ".join("base = the config as given" if m.name == "base" else
                         f"{m.name} = base + {', '.join(m.members[0][1]['overrides'])}" for m in rows)

    def _method_table(self, specs) -> list[str]:
        """The markdown summary table: one row per method, a column per metric of ``specs``, training seconds (and
        what each variant row is)."""
        heads = [f"{s.label} {'↑' if s.higher_is_better else '↓'}" for s in specs]
        lines = ["| method | " + " | ".join(heads) + " | train s |", "|---|" + "---:|" * (len(heads) + 1)]
        for m in self.methods:
            cells = [self.cell(m.name, s.key) for s in specs]
            lines.append(f"| {m.label} | " + " | ".join(cells) + f" | {self.train_seconds[m.name]:.0f} |")
        return lines + (["", f"Rows: {self.variants_text()}."] if self.variants_text() else [])

    def markdown(self) -> str:
        if self.is_multiclass:
            return self._multiclass_markdown()
        lines = [f"# lossdial compare: {self.settings.get('config', '')}", "",
                 f"**{self.protocol}** (mean ± sample std over seeds {self.seeds}). "
                 f"Precision-type metrics (AP, Brier, F1, P@R) at prevalence {self.prevalence_text()}.", "",
                 *self._method_table(METRICS)]
        lines += ["", "F1 and P@R are measured on test at the threshold chosen on validation; the recall that "
                  "threshold reaches on test (mean over seeds):", "",
                  "| method | " + " | ".join(s.label for s in METRICS if s.constraint) + " |",
                  "|---|" + "---:|" * sum(1 for s in METRICS if s.constraint)]
        for m in self.methods:
            lines.append(f"| {m.label} | " + " | ".join(
                fmt_value(self.summary[m.name][s.key]["test_recall_mean"]) for s in METRICS if s.constraint) + " |")
        lines += ["", "## Points chosen on validation", "",
                  "| seed | method | metric | run | lambda | threshold | val | test |", "|---|---|---|---|---|---:|---:|---:|"]
        for p in self.picks:
            lam = " ".join(f"{k}={v:.4g}" for k, v in (p["lambda"] or {}).items()) or "(fixed)"
            thr = "" if p["threshold"] is None else f"{p['threshold']:.4g}"
            lines.append(f"| {p['seed']} | {p['method']} | {p['metric']} | {p['member']} | {lam} | {thr} | "
                         f"{fmt_value(p['val'])} | {fmt_value(p['test'])} |")
        lines += ["", "Training time: seconds of training (sum over the method's runs and seeds, from each run's "
                  f"COMPLETE marker; a resumed run counts its last session only) on {self.device_text()}.", ""]
        return "\n".join(lines)

    def _multiclass_markdown(self) -> str:
        specs = self.metric_specs
        ts = ", ".join(f"{t:g}" for t in self.adjustments or ())
        lines = [f"# lossdial compare: {self.settings.get('config', '')}", "",
                 f"**{self.protocol}** (mean ± sample std over seeds {self.seeds}). Multi-class: each method's "
                 f"(run, lambda, t) chosen per metric on validation, t the post-hoc logit adjustment searched over "
                 f"({ts}). Acc@prior, NLL and ECE at the class prior {self.prevalence_text()}; the other metrics "
                 f"are per-class recall averages (prior-free).", "",
                 *self._method_table(specs)]
        missing = [s.label for s in MULTICLASS_METRICS if s not in specs]
        if missing:
            lines += ["", f"Not reported: {', '.join(missing)} (the shot group has no class in the runs' training "
                      f"counts, so the metric is undefined)."]
        lines += ["", "## Points chosen on validation", "",
                  "| seed | method | metric | run | lambda | t | val | test |", "|---|---|---|---|---|---:|---:|---:|"]
        for p in self.picks:
            lam = " ".join(f"{k}={v:.4g}" for k, v in (p["lambda"] or {}).items()) or "(fixed)"
            lines.append(f"| {p['seed']} | {p['method']} | {p['metric']} | {p['member']} | {lam} | "
                         f"{p['adjustment']:.4g} | {fmt_value(p['val'])} | {fmt_value(p['test'])} |")
        lines += ["", "Training time: seconds of training (sum over the method's runs and seeds, from each run's "
                  f"COMPLETE marker; a resumed run counts its last session only) on {self.device_text()}.", ""]
        return "\n".join(lines)

    def _tuned_markdown(self) -> str:
        tuned = self.settings.get("tuned")
        if not tuned:
            return ""
        lines = ["", "## Tuned baseline", "",
                 f"Per seed, an Optuna search of the baseline ({tuned['sampler'].upper()}, Optuna's defaults: its first "
                 f"10 trials are random) over {tuned['space']}, {tuned['budget']} trials chosen on validation "
                 f"{tuned['metric']} {tuned.get('scoring') or 'at the prevalence above'}; the best trial is the "
                 f"method's one run, picked on and scored like a baseline on "
                 f"every metric (so metrics other than {tuned['metric']} show what tuning for {tuned['metric']} "
                 f"gives them). Its train s counts every trial.", "",
                 "| seed | best trial | parameters | val " + tuned["metric"] + " | finished trials | train s |",
                 "|---:|---:|---|---:|---:|---:|"]
        for s, st in tuned["studies"].items():
            params = " ".join(f"{k}={v:.4g}" for k, v in st["best_params"].items())
            lines.append(f"| {s} | {st['best_trial']} | {params} | {fmt_value(st['best_val'])} | {st['finished']} | "
                         f"{st['train_seconds']:.0f} |")
        return "\n".join(lines) + "\n"

    def _sensitivity_markdown(self) -> str:
        if not self.sensitivity or not self.sensitivity["methods"]:
            return ""
        from lossdial.report.sensitivity import markdown

        imp_metric = next((p["importance_metric"] for p in self.sensitivity["methods"].values()
                           if p.get("importance_metric")), "")
        imp = (f"; importances: fANOVA of the loss parameters for val {imp_metric} (mean over seeds)" if imp_metric
               else "; no importances (no method varies loss parameters over three or more runs or trials)")
        at = self.sensitivity.get("at", "")
        return "\n".join(["", "## Sensitivity", "",
                          "Range (mean over seeds of max - min, then mean min–max) of each metric on validation"
                          + (f" at {at}" if at else "") + " across "
                          "what a method varies: an LCT run's lambda grid (dialled after training), a grid's runs or a "
                          "search's complete trials (chosen before training); seed std: the test score's sample std "
                          f"across seeds at the point picked on validation{imp}.", "", markdown(self.sensitivity), "",
                          "![sensitivity](sensitivity.png)", ""])

    def prevalence_text(self) -> str:
        if self.is_multiclass:
            vals = self.prevalence["values"]
            txt = "; ".join("(" + ", ".join(f"{v:.3g}" for v in q) + ")" for q in vals)
            return f"{txt} ({self.prevalence['source']})"
        vals = sorted(set(round(v, 6) for v in self.prevalence["values"]))
        txt = ", ".join(f"{v:.4g}" for v in vals)
        return f"{txt} ({self.prevalence['source']})"

    def device_text(self) -> str:
        devs = sorted({d for ds in self.devices.values() for d in ds})
        return ", ".join(devs) or "unknown device"


# --------------------------------------------------------------------------------------------------
# the entry point
# --------------------------------------------------------------------------------------------------
def compare(config: Config | str | Path, *, out: str | Path,
            baseline_grid: str | Sequence[Mapping[str, float]] | None = None,
            lct: str | Sequence[str] | None = None,
            variants: Sequence[str] | Mapping[str, Sequence[str]] | None = None, seeds: int | Sequence[int] = 3,
            overrides: Sequence[str] = (), jobs: int = 1, vary_data_seed: bool = False,
            device: str | None = None, eval_device: str = "auto", lct_lambdas: str | None = None,
            prevalence: float | None = None, callback: CompareCallback | None = None,
            stacked: bool = False, prior: str | Sequence[float] | None = None,
            adjustments: str | Sequence[float] | None = None, tuned: str | None = None,
            budget: int | None = None, tune_metric: str | None = None) -> CompareResult:
    """Train the baseline grid and the LCT model(s) for every seed; choose on val, score on test, aggregate.

    Args:
        config: a :class:`Config` or the path of a YAML config (``overrides`` applied on top).
        out: the comparison folder (run directories, compare.json/.csv/.md).
        baseline_grid: e.g. ``"gamma=0,0.1,0.2,0.3 tau=0,1,2,3"`` (cartesian product; each point
            overrides ``loss.params`` of a run with ``lct.enabled=false``), or a list of dicts.
        lct: one or several LCT laws, e.g. ``"tau~L(0,3,0.33)"`` (each replaces ``lct.lambda``).
        variants: ablation rows, ``"NAME=KEY=VALUE[,KEY=VALUE...]"`` texts (:func:`parse_variant`) or
            ``{NAME: [override, ...]}``: each is the config with those dotted overrides (the ``--set`` rule),
            trained per seed and picked on validation like any method (an LCT config is swept over lambda);
            with variants the config as given is also a row, ``base``. They mix with ``baseline_grid``/``lct``.
        seeds: a count (``config.seed``, ``config.seed + 1``, ...) or explicit seeds.
        jobs: trainings run at once (worker processes; on the CPU each gets ``cores // jobs`` threads).
        vary_data_seed: also vary ``data.seed`` with the seed (default: every seed reuses one subsample).
        device: training device (default: each config's ``train.device``); ``eval_device`` for scoring.
        lct_lambdas: the lambda grid LCT models are swept over on validation (default: the config's
            ``evaluate.lambda`` or 33 points over the training support).
        prevalence: positive prevalence for precision-type metrics (default: the training prevalence,
            as ``lossdial pick`` uses). Binary runs only.
        prior: multi-class runs only: the deployment class prior of ``accuracy``, ``nll`` and ``ece``
            (``"train"``, the default, ``"uniform"`` or C probabilities in label order).
        adjustments: multi-class runs only: the grid of post-hoc adjustment strengths t searched with every
            lambda (:func:`~lossdial.evaluate.multiclass.parse_adjustments`; default ``DEFAULT_T_GRID``).
        callback: progress hooks (:class:`CompareCallback`).
        tuned: a search space over loss parameters (``"gamma~U(0,0.3) tau~U(0,3)"``): adds the method "tuned",
            per seed a ``budget``-trial Optuna search (TPE) of the baseline on the validation metric
            ``tune_metric`` (:func:`lossdial.experiments.tune.tune`, studies under ``OUT/tuned/seedS``); its best
            trial is then picked on and scored like a one-run baseline, its training time is every trial's.
        stacked: train the baseline grid (all seeds) as one stacked model and the LCT runs as another
            (:func:`lossdial.train.stacked.train_stacked`; see :func:`stack_groups`): the same runs, weight
            for weight up to rounding, much faster on a GPU. Needs ``jobs=1`` and the in-memory data path;
            unfinished runs are retrained from the start (stacks do not resume).
    """
    from lossdial.conditioning import parse_lambda_grid

    t_start = time.perf_counter()
    if isinstance(config, Config):
        base = config_from_dict(config.to_dict(), list(overrides), source="config") if overrides else config
        config_name = base.name
    else:
        base = load_config(config, list(overrides))
        config_name = str(config)
    multiclass = _check_task_options(base, prevalence=prevalence, prior=prior, adjustments=adjustments)
    if jobs < 1:
        raise CompareError(f"jobs must be >= 1, got {jobs}")
    if stacked and jobs > 1:
        raise CompareError("--stacked trains each stack in this process on one device; drop --jobs (or use "
                           "--jobs without --stacked)")
    out = Path(out)
    methods = build_methods(baseline_grid, lct, variants) if baseline_grid or lct or variants or tuned is None \
        else []
    if tuned is not None or budget is not None:
        if any(m.name == "tuned" or any(n == "tuned" for n, _ in m.members) for m in methods):
            raise CompareError("the name 'tuned' is used twice (by a --variant and by the --tuned search); give "
                               "the variant another name")
        methods.append(_tuned_method(base, tuned, budget, tune_metric))
    seed_list = _seed_list(base, seeds)
    lam_grid = parse_lambda_grid(lct_lambdas) if lct_lambdas else None
    runs = plan_runs(base, methods, seed_list, out, vary_data_seed=vary_data_seed)
    _call(callback, "on_plan", runs)
    t_train = time.perf_counter()
    if stacked:
        from lossdial.train.stacked import StackedConfigError

        try:
            _train_stacked_runs(runs, device=device, callback=callback)
        except StackedConfigError as exc:
            raise CompareError(f"--stacked: {exc}") from exc
    else:
        _train_runs(runs, jobs=jobs, device=device, callback=callback)
    studies = {}
    for i, s in enumerate(seed_list):
        for m in methods:
            if m.kind == "tuned":
                studies[s] = _run_tuned(base, m, s, base.data.seed + (i if vary_data_seed else 0), out, device,
                                        callback, prevalence=prevalence, prior=prior, adjustments=adjustments)
    t_eval = time.perf_counter()

    task_cache = _TaskCache()
    picks: list[dict[str, Any]] = []
    paths = [r.path for r in runs] + [Path(t.best["run_dir"]) for t in studies.values()]
    train_counts = [RunDir(p).read_json(RunDir(p).data)["counts"]["train"] for p in paths] if multiclass else ()
    specs = task_metrics(base.data.task, train_counts, shot_thresholds=tuple(base.evaluate.shot_thresholds))
    groups = [(s, m) for s in seed_list for m in methods]
    for g, (s, m) in enumerate(groups):
        members = [(r.member, r.path) for r in runs if r.seed == s and r.method == m.name]
        if m.kind == "tuned":
            members = [(f"tuned/seed{s}/trial_{studies[s].best['number']}", Path(studies[s].best["run_dir"]))]
        if multiclass:
            group_picks = _evaluate_multiclass_group(members, task_cache, metrics=specs, lct_lambdas=lam_grid,
                                                     prior=prior, adjustments=adjustments, device=eval_device)
        else:
            group_picks = _evaluate_group(members, task_cache, lct_lambdas=lam_grid, prevalence=prevalence,
                                          device=eval_device)
        for p in group_picks:
            picks.append({"seed": s, "method": m.name, **p})
        _call(callback, "on_evaluate", g + 1, len(groups))

    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for m in methods:
        summary[m.name] = {}
        for spec in specs:
            ps = [p for p in picks if p["method"] == m.name and p["metric"] == spec.key]
            st: dict[str, Any] = _stats([p["test"] for p in ps])
            st["values"] = [p["test"] for p in ps]
            st["val_mean"] = _stats([p["val"] for p in ps])["mean"]
            if not multiclass:
                st["test_recall_mean"] = float(np.mean([p["test_recall"] for p in ps])) \
                    if spec.objective == "precision" else None
            summary[m.name][spec.key] = st
    train_seconds = {m.name: float(sum(_run_seconds(r.path) for r in runs if r.method == m.name)) for m in methods}
    devices = {m.name: sorted({d for r in runs if r.method == m.name for d in [_run_device(r.path)] if d})
               for m in methods}
    for m in methods:
        if m.kind == "tuned":  # every trial's training time (pruned ones up to their pruning)
            train_seconds[m.name] = float(sum(t.train_seconds for t in studies.values()))
            devices[m.name] = sorted({d for t in studies.values() for d in [_run_device(Path(t.best["run_dir"]))]
                                      if d})
    if multiclass:
        from lossdial.evaluate.multiclass import _prior_source, parse_adjustments

        priors = sorted({tuple(p["prior"]) for p in picks})
        point_of = {"source": _prior_source("train" if prior is None else prior), "values": [list(q) for q in priors]}
    else:
        prev_values = sorted({p["prevalence"] for p in picks})
        point_of = {"source": "given" if prevalence is not None else "training prevalence", "values": prev_values}
    result = CompareResult(
        out=out, methods=methods, seeds=seed_list, summary=summary, picks=picks, train_seconds=train_seconds,
        devices=devices,
        prevalence=point_of,
        settings={"config": config_name, "overrides": list(overrides),
                  "baseline_grid": next((m.spec for m in methods if m.kind == "baseline"), None),
                  "lct": [m.spec for m in methods if m.kind == "lct"],
                  "variants": {m.name: m.members[0][1]["overrides"] for m in methods if m.kind == "variant"},
                  "vary_data_seed": vary_data_seed,
                  "data_seeds": sorted({r.data_seed for r in runs}), "jobs": jobs, "stacked": stacked,
                  "lct_lambdas": lct_lambdas, "runs": {r.label: r.action for r in runs},
                  "tuned": _tuned_settings(methods, studies),
                  "seconds": {"wall": time.perf_counter() - t_start, "train_phase": t_eval - t_train,
                              "evaluate_phase": time.perf_counter() - t_eval}})
    if multiclass:
        result.task, result.metric_specs = "multiclass", specs
        result.adjustments = parse_adjustments(adjustments)
        result.settings["prior"] = "train" if prior is None else prior
    result.sensitivity = _sensitivity(result, runs, studies, prevalence=prevalence, prior=prior, device=eval_device,
                                      task_cache=task_cache)
    result.write()
    return result


# --------------------------------------------------------------------------------------------------
# the tuned baseline (an Optuna search per seed) and the sensitivity panel
# --------------------------------------------------------------------------------------------------
def _tuned_method(base: Config, space: str | None, budget: int | None, metric: str | None) -> Method:
    """The "tuned" method, its space, budget and metric checked before anything trains."""
    from lossdial.experiments.tune import TuneError, _optuna, baseline_config, parse_search_space, tune_metric

    if not space or budget is None:
        raise CompareError("--tuned SPACE and --budget N go together, e.g. --tuned \"gamma~U(0,0.3) tau~U(0,3)\" "
                           "--budget 16")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise CompareError(f"--budget must be an integer >= 1 (trials per seed), got {budget!r}")
    try:
        _optuna()
        bl = baseline_config(base)
        sp = parse_search_space(space, bl, loss_only=True, flag="--tuned")
        key, _ = tune_metric(bl, metric)
    except TuneError as exc:
        raise CompareError(str(exc).replace("--metric", "--tune-metric")) from None
    label = f"tuned baseline (TPE, {budget} trials over {sp.canonical()}; val {key})"
    return Method("tuned", "tuned", label, sp.canonical(), [], {"budget": budget, "metric": key})


def _run_tuned(base: Config, method: Method, seed: int, data_seed: int, out: Path, device: str | None,
               callback: Any, *, prevalence=None, prior=None, adjustments=None):
    """One seed's search (resumed if its study exists): OUT/tuned/seedS/{tune.journal, study-*/trial_*}; each
    trial scored at the compare's ``prevalence`` (binary) or ``prior`` and ``adjustments`` (multi-class), as the
    table scores every row (:func:`validation_objective`)."""
    from lossdial.data.loader import derive_seed
    from lossdial.experiments.tune import tune

    raw = copy.deepcopy(base.to_dict())
    raw["seed"], raw["data"]["seed"], raw["name"] = int(seed), int(data_seed), f"{base.name}-tuned"
    cfg = config_from_dict(raw, source=f"compare tuned/seed{seed}")
    opts = method.options
    res = tune(cfg, out=out / "tuned" / f"seed{seed}", space=method.spec, trials=opts["budget"], metric=opts["metric"],
               sampler="tpe", pruner="none", sampler_seed=derive_seed(seed, 0x7E5E) % 2 ** 32, loss_only=True,
               device=device, callback=_call(callback, "tune_callback", seed), score_test=False,
               prevalence=prevalence, prior=prior, adjustments=adjustments)
    if res.best is None:
        raise CompareError(f"the tuned search of seed {seed} finished no trial; see {res.files.get('md')}")
    return res


def _tuned_settings(methods: list[Method], studies: dict) -> dict[str, Any] | None:
    m = next((m for m in methods if m.kind == "tuned"), None)
    if m is None:
        return None
    return {"space": m.spec, **m.options, "sampler": "tpe",
            "scoring": next(iter(studies.values())).scoring_text() if studies else None,
            "studies": {str(s): {"study": t.study_name, "storage": t.storage, "best_trial": t.best["number"],
                                 "best_params": t.best["params"], "best_val": t.best["value"],
                                 "finished": len(t.finished), "train_seconds": t.train_seconds}
                        for s, t in studies.items()}}


def _sensitivity(result: "CompareResult", runs: list[PlannedRun], studies: dict, *, prevalence=None, prior=None,
                 device: str = "cpu", task_cache=None) -> dict[str, Any] | None:
    """The sensitivity panel (:mod:`lossdial.experiments.sensitivity`) of a compare."""
    from lossdial.experiments.sensitivity import compare_sensitivity

    paths: dict[str, list[list[Path]]] = {}
    names: dict[str, list[str]] = {}
    for m in result.methods:
        if m.kind == "tuned":
            paths[m.name] = [[Path(t["run_dir"]) for t in st.trials if t["state"] == "complete"]
                             for _, st in sorted(studies.items())]
            names[m.name] = next(iter(studies.values())).names if studies else []
        else:
            paths[m.name] = [[r.path for r in runs if r.method == m.name and r.seed == s] for s in result.seeds]
            names[m.name] = sorted({k for _, p in m.members for k in p}) if m.kind == "baseline" else []
    return compare_sensitivity(result, paths, names, prevalence=prevalence, prior=prior, device=device,
                               task_cache=task_cache)


def _check_task_options(base: Config, *, prevalence, prior, adjustments) -> bool:
    """Refuse the other task type's options before anything is trained; True for a multi-class compare.

    A multi-class prior given as C probabilities is checked against the task's training counts here (the data
    is built once for that), so a wrong length or sum fails before training, not after.
    """
    from lossdial.evaluate.multiclass import _prior_source, class_prior, parse_adjustments
    from lossdial.evaluate.tasktype import task_type

    tt = task_type(base.data.task)
    if tt.name == "binary":
        tt.check_options(train_counts=(), prior=prior)
        if adjustments is not None:
            raise CompareError("--adjustment (the post-hoc logit adjustment t) applies to multi-class runs; a "
                               "binary compare picks each method's threshold on validation already")
        return False
    if prevalence is not None:
        raise CompareError("--prevalence applies to binary runs (a threshold on P(positive)); a multi-class "
                           "compare takes --prior train|uniform|p1,...,pC (the deployment class prior)")
    parse_adjustments(adjustments)
    if prior is not None and _prior_source(prior) == "given":
        from lossdial.data.task import build_task

        class_prior(prior, build_task(base.data).class_counts)
    return True


def load_compare(out: str | Path) -> dict[str, Any]:
    """Read OUT/compare.json."""
    p = Path(out) / "compare.json"
    if not p.is_file():
        raise CompareError(f"{p} does not exist; run `lossdial compare` into {out} first")
    return json.loads(p.read_text())
