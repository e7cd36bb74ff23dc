"""Hyperparameter search of the baseline with Optuna (``lossdial tune``): what a user would do instead of LCT.

A study trains the baseline (``lct.enabled: false``) at points of a search space written in lossdial's lambda
syntax, choosing on the validation split only; the best trial's run is scored once on test at the end::

    tune("demo.yaml", out="runs/tune", space="gamma~U(0,0.3) tau~U(0,3)", trials=20, metric="ap")

* Space: ``NAME~DIST`` entries (:func:`~lossdial.conditioning.parse_lct` with dotted names): a bare name is a
  loss parameter (``loss.params.NAME``), a dotted one any numeric config key (``optim.lr~LogU(1e-3,1e-1)``).
  ``U(a,b)`` / ``LogU(a,b)`` are ranges (integers for an integer key), ``{v1,v2,...}`` a set of choices. Every
  name and every range end is checked against the config before anything is trained (:func:`parse_search_space`).
* Trials are ordinary run directories, ``OUT/study-HASH/trial_0007`` (the number of the trial first given those
  parameters; a retried trial resumes its checkpoint when the directory is reachable).
* ``trials`` is the study's total of *finished* (complete or pruned) trials whatever the number of workers:
  before a trial trains, it takes a slot only if fewer than ``trials`` lower-numbered trials are complete,
  pruned, running or waiting (trial numbers are a total order in the shared storage), so workers never
  overshoot; a worker waits while the remaining slots are held by running trials of other workers.
* Storage (:func:`open_storage`): an Optuna journal file (default ``OUT/tune.journal``), a ``sqlite:///`` URL
  or an RDB server URL. Every running trial records a heartbeat (host, pid, time) every
  ``heartbeat_interval`` seconds; a trial whose worker process is gone (same host) or whose heartbeat is older
  than ``grace_period`` (any host) is failed and re-queued with the same parameters
  (Optuna's ``RetryHeartbeatStaleTrialCallback``). Re-running the command continues the study.
* The study records its space, metric and base config (user attribute ``lossdial``); opening it with another
  one is an error, before any trial starts.

Optuna is an optional dependency (``pip install lossdial[tune]``); this module imports it lazily.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import socket
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

from lossdial.config import Config, ConfigError, config_from_dict, load_config
from lossdial.rundir import RunDir, atomic_write_text, fmt_value, is_undefined, write_json

TUNE_FORMAT_VERSION = 1
SPACE_EXAMPLE = '"gamma~U(0,0.3) tau~U(0,3) optim.lr~LogU(1e-3,1e-1)"'
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("none", "hyperband", "median")
STUDY_ATTR = "lossdial"  # study user attribute: the space, metric and base config the study was created with
BEAT_ATTR = "lossdial:heartbeat"  # trial system attribute: {"time", "host", "pid", "start", "worker"}
TEST_ATTR = "lossdial:test"  # study user attribute: the best trial's test metrics, once scored
_IGNORED_KEYS = (("train", "device"),)  # config keys that may differ between the workers of one study


class TuneError(ValueError):
    """The search cannot run as asked; the message names the flag and the fix."""


def _optuna():
    try:
        import optuna
    except ImportError:
        raise TuneError("hyperparameter search needs Optuna: pip install lossdial[tune]") from None
    return optuna


# --------------------------------------------------------------------------------------------------
# the search space
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SearchParam:
    name: str  # as written: "gamma" or "optim.lr"
    path: tuple[str, ...]  # config path: ("loss", "params", "gamma")
    dist: Any  # a lossdial Distribution: Uniform, LogUniform or Grid
    integer: bool = False  # the config key holds an integer

    @property
    def is_loss_param(self) -> bool:
        return self.path[:2] == ("loss", "params")

    def choices(self) -> list[float] | None:
        from lossdial.conditioning import Grid

        return [self._cast(v) for v in self.dist.values] if isinstance(self.dist, Grid) else None

    def _cast(self, v: float) -> float | int:
        return int(round(v)) if self.integer else float(v)

    def check_values(self) -> list[float | int]:
        """The values checked against the config before a trial: the range's ends, or every choice."""
        c = self.choices()
        return c if c is not None else [self._cast(self.low), self._cast(self.high)]

    @property
    def low(self) -> float:
        return self.dist.support[0]

    @property
    def high(self) -> float:
        return self.dist.support[1]

    def suggest(self, trial) -> float | int:
        """The Optuna suggestion for this parameter (a retried trial gets its fixed value back)."""
        from lossdial.conditioning import LogUniform

        c = self.choices()
        if c is not None:
            return trial.suggest_categorical(self.name, c)
        log = isinstance(self.dist, LogUniform)
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=log)

    def grid_values(self, k: int) -> list[float | int]:
        """``k`` points over the range for ``--sampler grid`` (evenly spaced; in log space for LogU)."""
        from lossdial.conditioning import LogUniform

        c = self.choices()
        if c is not None:
            return c
        lo, hi = self.low, self.high
        if isinstance(self.dist, LogUniform):
            pts = [math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * i / (k - 1)) for i in range(k)]
        else:
            pts = [lo + (hi - lo) * i / (k - 1) for i in range(k)]
        pts[0], pts[-1] = lo, hi
        return sorted({self._cast(p) for p in pts})


@dataclass(frozen=True)
class SearchSpace:
    params: tuple[SearchParam, ...]

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def canonical(self) -> str:
        """The space as text in a canonical form (what a study records and compares)."""
        return " ".join(f"{p.name}~{p.dist.spec()}" for p in self.params)

    def apply(self, raw: dict[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of the raw config dict with every parameter of the space set to ``values[name]``."""
        out = copy.deepcopy(raw)
        for p in self.params:
            node = out
            for part in p.path[:-1]:
                node = node.setdefault(part, {})
            node[p.path[-1]] = values[p.name]
        return out

    def grid(self, trials: int) -> dict[str, list[float | int]]:
        """The ``--sampler grid`` search space: every choice of a set, and ``k`` points per range, ``k`` the
        smallest integer >= 2 with ``k ** d * (product of the set sizes) >= trials`` (d ranges)."""
        d = sum(1 for p in self.params if p.choices() is None)
        sets = math.prod(len(p.choices()) for p in self.params if p.choices() is not None)
        k = max(2, math.ceil((trials / sets) ** (1 / d) - 1e-9)) if d else 2
        return {p.name: p.grid_values(k) for p in self.params}


def _walk(raw: dict[str, Any], path: Sequence[str]) -> tuple[bool, Any]:
    node: Any = raw
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def parse_search_space(text: str, base: Config, *, loss_only: bool = False, flag: str = "--space") -> SearchSpace:
    """Parse and check a search space against the (baseline) config ``base``; raises :class:`TuneError`.

    A bare name must be a parameter of the config's loss family; a dotted name an existing numeric config key
    (``lct.*`` is refused: trials train the baseline). A range must be ``U(a,b)`` or ``LogU(a,b)``
    (``a < b``; integer ends for an integer key), a set ``{v1,v2,...}`` with equal masses. Every range end
    (every choice) is then validated as a config (:func:`lossdial.config.config_from_dict`), so a value the
    loss or the config refuses fails here, naming it, before any trial trains. ``loss_only`` refuses dotted
    keys other than ``loss.params.*`` (the compare of a tuned baseline with LCT searches the loss only).
    """
    from lossdial.conditioning import Grid, LogUniform, Uniform, parse_lct
    from lossdial.config import _loss_param_names
    from lossdial.losses import LOSSES

    try:
        laws = parse_lct(text, dotted=True, what=f"{flag}", example=SPACE_EXAMPLE)
    except ValueError as exc:
        raise TuneError(str(exc)) from None
    raw = base.to_dict()
    family = base.loss.family
    loss_names = _loss_param_names(LOSSES[family])
    params: list[SearchParam] = []
    for name, dist in laws.items():
        spec = f"{name}~{dist.spec()}"
        path = tuple(name.split(".")) if "." in name else ("loss", "params", name)
        if path[:2] == ("loss", "params") and len(path) == 3:
            if path[2] not in loss_names:
                raise TuneError(f"{flag} {spec}: the {family} loss has no parameter {path[2]!r}; its parameters: "
                                f"{', '.join(loss_names)} (a config key is written with its dotted path, e.g. "
                                f"optim.lr~LogU(1e-3,1e-1))")
            integer = False
        else:
            if loss_only:
                raise TuneError(f"{flag} {spec}: this search takes loss parameters only (so the tuned baseline "
                                f"and LCT get the same optimiser settings); drop {name!r} or set it with --set")
            if path[0] == "lct":
                raise TuneError(f"{flag} {spec}: trials train the baseline (lct.enabled: false), so lct.* cannot "
                                f"be searched; search the loss parameters themselves, e.g. tau~U(0,3)")
            found, value = _walk(raw, path)
            if not found:
                parent_found, parent = _walk(raw, path[:-1])
                keys = f"; keys of {'.'.join(path[:-1])}: {', '.join(sorted(parent))}" \
                    if parent_found and isinstance(parent, dict) and path[:-1] else ""
                raise TuneError(f"{flag} {spec}: the config has no key {name!r}{keys}")
            if isinstance(value, bool) or not (value is None or isinstance(value, (int, float))):
                raise TuneError(f"{flag} {spec}: config key {name!r} holds {value!r}, not a number; only numeric "
                                f"keys can be searched")
            integer = isinstance(value, int) and not isinstance(value, bool)
        if isinstance(dist, Grid):
            if len(set(dist.probs)) > 1:
                raise TuneError(f"{flag} {spec}: a search samples a set's values with equal chance; drop the "
                                f"masses, e.g. {name}~{{{','.join(f'{v:g}' for v in dist.values)}}}")
            if integer and any(v != int(v) for v in dist.values):
                raise TuneError(f"{flag} {spec}: {name} is an integer key; give integer choices")
        elif isinstance(dist, (Uniform, LogUniform)):
            if integer:
                lo, hi = dist.support
                if lo != int(lo) or hi != int(hi):
                    raise TuneError(f"{flag} {spec}: {name} is an integer key; give integer range ends, e.g. "
                                    f"{name}~U({math.ceil(lo)},{math.floor(hi)})")
        else:
            kind = "a single value" if type(dist).__name__ == "Fixed" else "an LCT training law"
            raise TuneError(f"{flag} {spec}: {dist.spec()} is {kind}, not a search range; use U(a,b), LogU(a,b) "
                            f"or {{v1,v2,...}}" + (f" (a fixed value is set with --set {name}=V)"
                                                  if kind == "a single value" else ""))
        params.append(SearchParam(name, path, dist, integer))
    paths = [p.path for p in params]
    if len(set(paths)) != len(paths):
        raise TuneError(f"{flag}: a parameter is named twice (bare and dotted: {text!r})")
    space = SearchSpace(tuple(params))
    _check_space_values(space, raw, flag)
    return space


def _check_space_values(space: SearchSpace, raw: dict[str, Any], flag: str) -> None:
    """Validate the config at every range end / choice of each parameter (the others at their first check
    value) and at the all-low and all-high corners."""
    firsts = {p.name: p.check_values()[0] for p in space.params}
    points = [dict(firsts), {p.name: p.check_values()[-1] for p in space.params}]
    for p in space.params:
        for v in p.check_values():
            points.append({**firsts, p.name: v})
    for values in points:
        try:
            config_from_dict(space.apply(raw, values), source=f"{flag} point")
        except ConfigError as exc:
            where = " ".join(f"{k}={v:g}" for k, v in values.items())
            detail = str(exc).split("\n", 1)[-1].strip()
            raise TuneError(f"{flag} {space.canonical()}: the config is invalid at {where}: {detail}") from None


def baseline_config(base: Config) -> Config:
    """``base`` with LCT off (trials train the baseline at the searched loss.params)."""
    raw = base.to_dict()
    raw["lct"]["enabled"] = False
    return config_from_dict(raw, source="tune baseline")


# --------------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------------
def tune_metric(base: Config, metric: str | None, *, pruning: bool = False) -> tuple[str, bool]:
    """The validation metric a study optimises and whether higher is better.

    Binary: ``ap`` (default), ``auc``, ``brier`` (threshold-free); multi-class: ``balanced_accuracy``
    (default) or another metric of the multi-class table (at t = 0 and the training prior). With a pruner the
    metric must be one the training loop reports each validation epoch (the task type's ``periodic_keys``)."""
    from lossdial.evaluate.tasktype import task_type
    from lossdial.experiments.compare import METRICS, MULTICLASS_METRICS

    tt = task_type(base.data.task)
    specs = {s.key: s for s in (METRICS if tt.name == "binary" else MULTICLASS_METRICS)
             if s.constraint is None and (tt.name != "binary" or s.key != "f1")}
    key = metric or ("ap" if tt.name == "binary" else "balanced_accuracy")
    if key not in specs:
        raise TuneError(f"--metric {key!r} is not a {tt.name} validation metric lossdial can tune on; choose one "
                        f"of {', '.join(specs)}")
    if pruning and key not in tt.periodic_keys:
        raise TuneError(f"--pruner needs a metric reported every validation epoch; {key!r} is not (those are "
                        f"{', '.join(k for k in tt.periodic_keys if k in specs)}); use --pruner none or another "
                        f"--metric")
    return key, specs[key].higher_is_better


# --------------------------------------------------------------------------------------------------
# storage, heartbeat
# --------------------------------------------------------------------------------------------------
def _proc_start(pid: int) -> str | None:
    """The start time of process ``pid`` (Linux /proc), None when it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] in ("Z", "X") else fields[19]


_HOST = socket.gethostname()
_HAS_PROC = Path("/proc/self/stat").is_file()


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


_PIDNS = _pid_namespace()


def worker_identity() -> dict[str, Any]:
    """This process as a worker: host, pid namespace, pid, process start time, and a fresh uuid."""
    return {"host": _HOST, "pidns": _PIDNS, "pid": os.getpid(),
            "start": _proc_start(os.getpid()) if _HAS_PROC else None, "worker": uuid.uuid4().hex}


def _is_stale(beat: Mapping[str, Any] | None, started: float | None, now: float, grace: float) -> bool:
    """A running trial is stale when its worker process is gone (checked only where its pid means the same
    process: same host and pid namespace), or its last heartbeat (its start without one) is older than
    ``grace`` seconds."""
    if beat is not None and beat.get("host") == _HOST and beat.get("pidns") == _PIDNS and _PIDNS is not None \
            and beat.get("start") is not None:
        if _proc_start(int(beat["pid"])) != beat["start"]:
            return True
    last = beat.get("time") if beat is not None else started
    return last is not None and now - float(last) > grace


class _Heartbeat:
    """The heartbeat part of a storage (Optuna's ``BaseHeartbeat`` interface), shared by the journal storage."""

    def _init_heartbeat(self, interval: int, grace: float, callback, identity: dict[str, Any]) -> None:
        self._beat_interval, self._beat_grace, self._beat_callback = interval, grace, callback
        self._identity = identity

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, BEAT_ATTR, {**self._identity, "time": time.time()})

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        from optuna.trial import TrialState

        now = time.time()
        return [t._trial_id for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
                if _is_stale(t.system_attrs.get(BEAT_ATTR),
                             t.datetime_start.timestamp() if t.datetime_start else None, now, self._beat_grace)]

    def get_heartbeat_interval(self) -> int:
        return self._beat_interval

    def get_heartbeat_stale_trial_callback(self):
        return self._beat_callback


def _journal_storage(path: Path, interval: int, grace: float, identity: dict[str, Any]):
    optuna = _optuna()
    from optuna.storages import JournalStorage
    from optuna.storages._heartbeat import BaseHeartbeat
    from optuna.storages.journal import JournalFileBackend

    class HeartbeatJournalStorage(_Heartbeat, JournalStorage, BaseHeartbeat):
        """Optuna's journal storage with a heartbeat (Optuna gives one to RDB storages only)."""

    storage = HeartbeatJournalStorage(JournalFileBackend(str(path)))
    storage._init_heartbeat(interval, grace, _retry_callback(optuna), identity)
    return storage


def _retry_callback(optuna):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ExperimentalWarning
        return optuna.storages.RetryHeartbeatStaleTrialCallback()


def open_storage(storage: str | Path | None, out: Path, *, heartbeat_interval: int = 10,
                 grace_period: float = 60.0, identity: dict[str, Any] | None = None) -> tuple[Any, str]:
    """Open ``--storage`` (None: ``OUT/tune.journal``): a journal-file path, a ``sqlite:///`` URL or an RDB URL
    (``postgresql://``, ``mysql://``...), with the heartbeat on; returns (storage, text naming it)."""
    optuna = _optuna()
    identity = identity or worker_identity()
    text = str(storage) if storage is not None else None
    if text is not None and "://" in text:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                st = optuna.storages.RDBStorage(text, heartbeat_interval=heartbeat_interval,
                                                grace_period=int(math.ceil(grace_period)),
                                                heartbeat_stale_trial_callback=_retry_callback(optuna))
        except Exception as exc:  # sqlalchemy: bad URL, no driver, server unreachable, ...
            raise TuneError(f"--storage {text!r} cannot be opened: {type(exc).__name__}: {exc}") from None
        return st, text
    path = Path(text) if text is not None else out / "tune.journal"
    if text is None:
        path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        raise TuneError(f"--storage {str(path)!r} is a directory; give a journal file path (e.g. "
                        f"{path / 'tune.journal'}), a sqlite:/// URL or an RDB URL")
    if not path.parent.is_dir():
        raise TuneError(f"--storage {str(path)!r} cannot be opened: its folder {str(path.parent)!r} does not exist")
    try:
        st = _journal_storage(path, heartbeat_interval, grace_period, identity)
        st.get_all_studies()  # reads the file: a file that is not a journal fails here
    except Exception as exc:
        raise TuneError(f"--storage journal {path} cannot be opened as an Optuna storage: "
                        f"{type(exc).__name__}: {exc}") from None
    return st, f"journal {path}"


def default_study_name(base: Config, space: SearchSpace) -> str:
    """The study name when ``--study`` is not given: the config's name and the space (never ``--out``, so workers
    with different output folders share the study)."""
    return f"{base.name}: {space.canonical()}"


def _study_attrs(base: Config, space: SearchSpace, metric: str, direction: str,
                 scoring: dict[str, Any] | None = None) -> dict[str, Any]:
    cfg = base.to_dict()
    for path in _IGNORED_KEYS:
        found, _ = _walk(cfg, path)
        if found:
            node = cfg
            for part in path[:-1]:
                node = node[part]
            node.pop(path[-1])
    return {"format_version": TUNE_FORMAT_VERSION, "space": space.canonical(), "metric": metric,
            "direction": direction, "config": cfg, "scoring": scoring}


def _check_study(study, want: dict[str, Any], name: str, storage_text: str) -> None:
    from lossdial.experiments.compare import _diff

    have = study.user_attrs.get(STUDY_ATTR)
    if have is None:
        if study.trials:
            raise TuneError(f"study {name!r} in {storage_text} was not created by lossdial tune; use --study "
                            f"ANOTHER_NAME")
        study.set_user_attr(STUDY_ATTR, want)
        return
    if have.get("space") != want["space"]:
        raise TuneError(f"study {name!r} in {storage_text} was created with --space {have.get('space')!r}, not "
                        f"{want['space']!r}; give that space to continue it, or a new --study NAME")
    if have.get("metric") != want["metric"]:
        raise TuneError(f"study {name!r} in {storage_text} optimises --metric {have.get('metric')!r}, not "
                        f"{want['metric']!r}; give that metric to continue it, or a new --study NAME")
    if have.get("scoring") != want["scoring"]:
        raise TuneError(f"study {name!r} in {storage_text} measured its trials at {have.get('scoring')}, not "
                        f"{want['scoring']} (--prevalence / --prior); give those to continue it, or a new --study "
                        f"NAME (a study made before lossdial measured trials at the training prevalence cannot be "
                        f"continued: its values are at the validation split's own prevalence)")
    if have.get("config") != want["config"]:
        keys = _diff(have.get("config") or {}, want["config"])
        raise TuneError(f"study {name!r} in {storage_text} was created with another config (differs at: "
                        f"{', '.join(keys[:6])}); use the same config and --set, or a new --study NAME")


# --------------------------------------------------------------------------------------------------
# the search
# --------------------------------------------------------------------------------------------------
class TuneCallback(Protocol):
    """Progress hooks, all optional (the CLI prints; the library never does)."""

    def on_study(self, study_name: str, storage: str, finished: int, total: int) -> None: ...
    def on_trial_start(self, number: int, params: dict[str, Any], run_dir: Path) -> None: ...
    def train_callback(self, number: int) -> Any: ...  # a lossdial.train Callback
    def on_trial_end(self, number: int, state: str, value: float | None, seconds: float) -> None: ...
    def on_wait(self, running: int) -> None: ...


def _call(cb: Any, name: str, *args: Any) -> Any:
    fn = getattr(cb, name, None) if cb is not None else None
    return fn(*args) if fn is not None else None


class _NoSlot(Exception):
    """The study's trials are all taken by lower-numbered trials: this one does not train."""


class _TrialCallback:
    """The training callback of one trial: reports each validation epoch's metric to Optuna (the pruner's
    input) and prunes; forwards to the caller's progress callback."""

    def __init__(self, trial, metric: str, pruning: bool, inner: Any):
        self.trial, self.metric, self.pruning, self.inner = trial, metric, pruning, inner
        self.t0 = time.perf_counter()

    def on_start(self, total_steps: int, start_step: int) -> None:
        _call(self.inner, "on_start", total_steps, start_step)

    def on_step(self, step: int) -> None:
        _call(self.inner, "on_step", step)

    def on_epoch_end(self, epoch: int, record: dict[str, Any]) -> None:
        _call(self.inner, "on_epoch_end", epoch, record)
        value = (record.get("val") or {}).get(self.metric)
        if not self.pruning or value is None or is_undefined(value):
            return
        self.trial.report(float(value), epoch)
        if self.trial.should_prune():
            self.trial.set_user_attr("train_seconds", time.perf_counter() - self.t0)
            raise _optuna().TrialPruned(f"pruned after epoch {epoch} ({self.metric} {value:.4g})")


def _make_sampler(optuna, kind: str, seed: int, space: SearchSpace, trials: int):
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "grid":
        return optuna.samplers.GridSampler(space.grid(trials), seed=seed)
    raise TuneError(f"--sampler {kind!r}: choose one of {', '.join(SAMPLERS)}")


def _make_pruner(optuna, kind: str, cfg: Config):
    if kind == "none":
        return optuna.pruners.NopPruner()
    if not cfg.train.eval_every:
        raise TuneError(f"--pruner {kind} needs a validation score during training: set train.eval_every >= 1 "
                        f"(e.g. --set train.eval_every=1)")
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=cfg.train.eval_every, max_resource=cfg.train.epochs)
    if kind == "median":
        return optuna.pruners.MedianPruner()
    raise TuneError(f"--pruner {kind!r}: choose one of {', '.join(PRUNERS)}")


def _run_root(out: Path, study_name: str) -> Path:
    return out / f"study-{hashlib.sha1(study_name.encode()).hexdigest()[:8]}"


def tune(config: Config | str | Path, *, out: str | Path, space: str, trials: int, metric: str | None = None,
         overrides: Sequence[str] = (), sampler: str = "tpe", pruner: str = "none",
         storage: str | Path | None = None, study: str | None = None, device: str | None = None,
         callback: TuneCallback | None = None, sampler_seed: int | None = None, loss_only: bool = False,
         heartbeat_interval: int = 10, grace_period: float = 60.0, poll_seconds: float = 2.0,
         score_test: bool = True, prevalence: float | None = None, prior: str | Sequence[float] | None = None,
         adjustments: str | Sequence[float] | None = None) -> "TuneResult":
    """Run (or continue, or join) a search of the baseline; write OUT/tune.json|csv|md and figures.

    Args:
        config: a :class:`Config` or a YAML path (``overrides`` applied); trials train it with LCT off.
        out: the folder for this worker's trial run directories and the result files.
        space: the search space (:func:`parse_search_space`).
        trials: finished (complete or pruned) trials the study should have in total, over all its workers.
        metric: the validation metric (:func:`tune_metric`; default ap / balanced_accuracy).
        sampler: tpe (default), random or grid; its seed is derived from the config seed and this worker's id
            (``sampler_seed`` fixes it instead), so two workers never propose the same first points.
        pruner: none (default), hyperband or median, fed each validation epoch's metric (train.eval_every).
        storage: journal path, ``sqlite:///`` URL or RDB URL (:func:`open_storage`); study: its name
            (default :func:`default_study_name`).
        heartbeat_interval, grace_period: a running trial records a heartbeat every ``heartbeat_interval`` s; one
            whose worker process is gone (same host), or silent for ``grace_period`` s, is failed and retried.
        poll_seconds: how often a worker waiting on other workers' running trials looks again.
        score_test: score the best trial's run on test at the end (once per best trial; recorded in the study).
        prevalence: binary runs: the positive prevalence of AP, Brier and the precision-type metrics (None: the
            training prevalence); prior, adjustments: multi-class runs: the deployment class prior (None:
            ``"train"``) and the t grid. A trial's objective is its run's validation value as ``lossdial compare``
            reports it at these (:func:`~lossdial.experiments.compare.validation_objective`), never the split's
            own prevalence; the pruner's per-epoch values are the training loop's (the split's own prevalence,
            t = 0), comparable with one another at one epoch.
    """
    optuna = _optuna()
    from lossdial.data.loader import derive_seed

    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise TuneError(f"--trials must be an integer >= 1, got {trials!r}")
    if sampler not in SAMPLERS:
        raise TuneError(f"--sampler {sampler!r}: choose one of {', '.join(SAMPLERS)}")
    if pruner not in PRUNERS:
        raise TuneError(f"--pruner {pruner!r}: choose one of {', '.join(PRUNERS)}")
    if isinstance(config, Config):
        given = config_from_dict(config.to_dict(), list(overrides), source="config") if overrides else config
        config_text = given.name
    else:
        given = load_config(config, list(overrides))
        config_text = str(config)
    base = baseline_config(given)
    from lossdial.experiments.compare import CompareError, _check_task_options

    try:
        _check_task_options(base, prevalence=prevalence, prior=prior, adjustments=adjustments)
    except CompareError as exc:
        raise TuneError(str(exc)) from None
    scoring = scoring_point(base, prevalence=prevalence, prior=prior, adjustments=adjustments)
    key, higher = tune_metric(base, metric, pruning=pruner != "none")
    direction = "maximize" if higher else "minimize"
    sp = parse_search_space(space, base, loss_only=loss_only)
    out = Path(out)
    identity = worker_identity()
    seed = sampler_seed if sampler_seed is not None else \
        derive_seed(base.seed, 0x7E5E, int(identity["worker"], 16)) % 2 ** 32  # numpy-based samplers take 32 bits
    st, storage_text = open_storage(storage, out, heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                                    identity=identity)
    name = study or default_study_name(base, sp)
    the_pruner = _make_pruner(optuna, pruner, base)
    try:
        st_study = optuna.create_study(study_name=name, storage=st, direction=direction, load_if_exists=True,
                                       sampler=_make_sampler(optuna, sampler, seed, sp, trials), pruner=the_pruner)
    except Exception as exc:
        raise TuneError(f"--storage {storage_text} cannot be opened as an Optuna storage (study {name!r}): "
                        f"{type(exc).__name__}: {exc}") from None
    _check_study(st_study, _study_attrs(base, sp, key, direction, scoring), name, storage_text)
    st_study._storage.set_study_system_attr(st_study._study_id, f"lossdial:worker:{identity['worker']}",
                             {**identity, "sampler": sampler, "sampler_seed": seed, "out": str(out.resolve())})
    run_root = _run_root(out, name)
    raw = base.to_dict()
    TS = optuna.trial.TrialState
    counted = (TS.COMPLETE, TS.PRUNED, TS.RUNNING, TS.WAITING)
    failures = 0
    current: dict[str, Any] = {}

    def objective(trial) -> float:
        current["trial"] = trial
        values = {p.name: p.suggest(trial) for p in sp.params}
        lower = sum(1 for t in st_study.get_trials(deepcopy=False, states=counted) if t.number < trial.number)
        if lower >= trials:
            trial.set_user_attr("no_slot", True)
            raise _NoSlot()
        # a retried trial keeps the directory of the trial first given its parameters (and resumes it)
        origin = st_study._storage.get_trial(trial._trial_id).system_attrs.get("failed_trial", trial.number)
        path = run_root / f"trial_{origin:04d}"
        trial.set_user_attr("run_dir", str(path.resolve()))
        cfg_raw = sp.apply(raw, values)
        cfg_raw["name"] = f"{base.name}-trial{origin}"
        cfg = config_from_dict(cfg_raw, source=f"tune trial {trial.number}")
        rd = RunDir(path)
        resume = rd.is_complete or rd.checkpoint.is_file()
        force = not resume and path.is_dir() and any(path.iterdir())
        _call(callback, "on_trial_start", trial.number, values, path)
        from lossdial.train import train

        cb = _TrialCallback(trial, key, pruner != "none", _call(callback, "train_callback", trial.number))
        res = train(cfg, path, resume=resume, force=force, device=device, callback=cb)
        trial.set_user_attr("train_seconds", _complete_seconds(path, res.seconds))
        value = _trial_value(path, key, device, prevalence=prevalence, prior=prior, adjustments=adjustments)
        if pruner != "none":
            trial.report(float(value), cfg.train.epochs)
        return float(value)

    def after(study_, frozen) -> None:
        nonlocal failures
        if frozen.state == TS.FAIL and not frozen.user_attrs.get("no_slot"):
            failures += 1
        if frozen.user_attrs.get("no_slot"):
            return
        _call(callback, "on_trial_end", frozen.number, frozen.state.name.lower(), frozen.value,
              float(frozen.user_attrs.get("train_seconds", 0.0)))

    def counts() -> tuple[int, int, int]:
        ts = st_study.get_trials(deepcopy=False)
        fin = sum(t.state in (TS.COMPLETE, TS.PRUNED) for t in ts)
        return fin, sum(t.state == TS.RUNNING for t in ts), sum(t.state == TS.WAITING for t in ts)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(st_study)
        _call(callback, "on_study", name, storage_text, counts()[0], trials)
        while True:
            finished, running, waiting = counts()
            if finished >= trials:
                break
            if sampler == "grid" and not waiting and st_study.sampler.is_exhausted(st_study) and not running:
                break
            if not waiting and (finished + running >= trials
                                or (sampler == "grid" and st_study.sampler.is_exhausted(st_study))):
                _call(callback, "on_wait", running)
                time.sleep(poll_seconds)
                optuna.storages.fail_stale_trials(st_study)
                continue
            if failures > trials:
                raise TuneError(f"{failures} trials failed (e.g. the loss diverged: lower the learning rate, narrow "
                                f"--space or set train.grad_clip); see {storage_text}")
            current.clear()
            try:
                st_study.optimize(objective, n_trials=1, catch=(_NoSlot, FloatingPointError), callbacks=[after],
                                  gc_after_trial=False)
            except KeyboardInterrupt:  # Optuna has failed the trial: queue it again, as the heartbeat would
                t = current.get("trial")
                frozen = st_study._storage.get_trial(t._trial_id) if t is not None else None
                if frozen is not None and frozen.state == TS.FAIL and not frozen.user_attrs.get("no_slot"):
                    _retry_callback(optuna)(st_study, frozen)
                raise
    result = _result(st_study, optuna, out=out, name=name, storage_text=storage_text, space=sp, metric=key,
                     direction=direction, sampler=sampler, pruner=pruner, trials=trials, identity=identity,
                     seed=seed, config_text=config_text)
    result.scoring = dict(scoring)
    if "prevalence" in scoring and prevalence is None and result.best is not None:
        data = RunDir(result.best["run_dir"]).data
        if data.is_file():  # the training prevalence, as a number (every trial shares the data)
            result.scoring["value"] = float(json.loads(data.read_text())["train_prevalence"])
    if score_test:
        result.test = _best_on_test(st_study, result, device, prevalence=prevalence, prior=prior,
                                    adjustments=adjustments, shot_thresholds=tuple(base.evaluate.shot_thresholds))
    result.write()
    return result


def scoring_point(base: Config, *, prevalence: float | None = None, prior=None, adjustments=None
                  ) -> dict[str, Any]:
    """Where a study's values are measured, as recorded in the study and tune.json (``scoring``): binary, the
    positive prevalence (the given one, or the training prevalence's name: it is known per run); multi-class,
    the class prior and the t grid."""
    from lossdial.evaluate.tasktype import task_type

    if task_type(base.data.task).name == "multiclass":
        return {"prior": "train" if prior is None else (prior if isinstance(prior, str) else [float(v) for v in prior]),
                "adjustments": None if adjustments is None else
                (adjustments if isinstance(adjustments, str) else [float(v) for v in adjustments])}
    return {"prevalence": "training prevalence" if prevalence is None else float(prevalence)}


def _trial_value(path: Path, key: str, device: str | None, *, prevalence, prior, adjustments) -> float:
    """A finished trial's objective: its run's validation ``key`` by compare's rule
    (:func:`~lossdial.experiments.compare.validation_objective`), at ``prevalence`` / ``prior``."""
    from lossdial.evaluate import load_run
    from lossdial.experiments.compare import validation_objective

    loaded = load_run(path, device=device or "auto")  # as compare scores (eval_device)
    return validation_objective(loaded, key, prevalence=prevalence, prior=prior, adjustments=adjustments)


def _complete_seconds(path: Path, fallback: float) -> float:
    from lossdial.experiments.compare import _run_seconds

    s = _run_seconds(path)
    return s if s > 0 else float(fallback)


def _best_on_test(study, result: "TuneResult", device: str | None, *, prevalence=None, prior=None,
                  adjustments=None, shot_thresholds=None) -> dict[str, Any] | None:
    """The best trial's test metrics: scored once (here, if its run directory is reachable), kept in the study;
    by compare's rule (:func:`~lossdial.experiments.compare._evaluate_group`: each metric's point picked on
    validation, test scored there) at ``prevalence`` / ``prior``, the values the objective was measured at."""
    best = result.best
    if best is None:
        return None
    have = study.user_attrs.get(TEST_ATTR)
    if have and have.get("trial") == best["number"]:
        return have
    path = Path(best["run_dir"])
    if not RunDir(path).is_complete:
        return {"trial": best["number"], "metrics": None,
                "note": f"the best trial's run directory {path} is not on this machine; score it with `lossdial "
                        f"evaluate {path} --split test` where it is"}
    from lossdial.experiments.compare import (_evaluate_group, _evaluate_multiclass_group, _TaskCache,
                                              task_metrics)

    members = [(f"trial_{best['number']}", path)]
    dev = device or "auto"
    if "prior" in (result.scoring or {}):
        counts = RunDir(path).read_json(RunDir(path).data)["counts"]["train"]
        specs = task_metrics("multiclass", [counts], shot_thresholds=shot_thresholds)
        rows = _evaluate_multiclass_group(members, _TaskCache(), metrics=specs, lct_lambdas=None, prior=prior,
                                          adjustments=adjustments, device=dev)
    else:
        rows = _evaluate_group(members, _TaskCache(), lct_lambdas=None, prevalence=prevalence, device=dev)
    rec = {"trial": best["number"], "run_dir": str(path), "scoring": result.scoring,
           "metrics": {r["metric"]: r["test"] for r in rows}}
    study.set_user_attr(TEST_ATTR, json.loads(json.dumps(rec, default=lambda v: None)))
    return rec


# --------------------------------------------------------------------------------------------------
# the result
# --------------------------------------------------------------------------------------------------
@dataclass
class TuneResult:
    out: Path
    study_name: str
    storage: str
    space: str
    metric: str
    direction: str
    sampler: str
    pruner: str
    target_trials: int
    trials: list[dict[str, Any]]
    best: dict[str, Any] | None
    worker: dict[str, Any]
    config: str
    importances: dict[str, float] | None = None
    test: dict[str, Any] | None = None
    files: dict[str, Path] = field(default_factory=dict)
    scoring: dict[str, Any] | None = None  # scoring_point: the prevalence / prior the values are measured at
    names: list[str] = field(default_factory=list)  # the space's parameter names (SearchSpace.names)

    @property
    def finished(self) -> list[dict[str, Any]]:
        return [t for t in self.trials if t["state"] in ("complete", "pruned")]

    @property
    def train_seconds(self) -> float:
        """Training seconds of every finished trial (pruned ones up to their pruning)."""
        return float(sum(t["seconds"] or 0.0 for t in self.finished))

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": TUNE_FORMAT_VERSION, "config": self.config, "study": self.study_name,
                "storage": self.storage, "space": self.space, "metric": self.metric, "direction": self.direction,
                "sampler": self.sampler, "pruner": self.pruner, "trials_target": self.target_trials,
                "scoring": self.scoring, "scoring_text": self.scoring_text(),
                "protocol": {"trains": "the baseline (lct.enabled: false) at each trial's parameters",
                             "chosen_on": "val", "scored_on": "test (the best trial only, once)"},
                "finished": len(self.finished), "train_seconds": self.train_seconds,
                "best": self.best, "test": self.test, "importances": self.importances, "worker": self.worker,
                "trials": self.trials}

    def scoring_text(self) -> str:
        """Where the trial values are measured, in words."""
        sc = self.scoring or {}
        if "prior" in sc:
            pr = sc["prior"] if isinstance(sc["prior"], str) else "(" + ", ".join(f"{v:.3g}" for v in sc["prior"]) + ")"
            return f"at class prior {pr}, best over the adjustment t grid as compare picks"
        p = sc.get("prevalence", "training prevalence")
        pv = f"prevalence {p:.4g} (given)" if not isinstance(p, str) else \
            f"the training prevalence {sc['value']:.4g}" if "value" in sc else "the training prevalence"
        pruned = "; a pruned trial's value is its last per-epoch report, at the split's own prevalence" \
            if self.pruner != "none" else ""
        return f"at {pv} (AP, Brier; negatives reweighted), as compare reports them{pruned}"

    def markdown(self) -> str:
        names = self.names
        arrow = "↑" if self.direction == "maximize" else "↓"
        lines = [f"# lossdial tune: {self.config}", "",
                 f"Study **{self.study_name}** ({self.storage}); sampler {self.sampler}, pruner {self.pruner}. "
                 f"Each trial trains the **baseline (LCT off)**; chosen on validation {self.metric} {arrow}, the best "
                 f"trial scored once on test. {len(self.finished)} of {self.target_trials} trials finished, "
                 f"{self.train_seconds:.0f} s of training. Validation and test values {self.scoring_text()}.", ""]
        if self.best is not None:
            bp = " ".join(f"{k}={v:.4g}" for k, v in self.best["params"].items())
            tv = (self.test or {}).get("metrics") or {}
            test_txt = fmt_value(tv.get(self.metric), ".4f") if tv else (self.test or {}).get("note", "not scored")
            lines += [f"**Best: trial {self.best['number']}** ({bp}): validation {self.metric} "
                      f"{fmt_value(self.best['value'], '.4f')}, test {self.metric} {test_txt}.", ""]
        lines += ["| trial | state | " + " | ".join(names) + f" | val {self.metric} | s |",
                  "|---:|---|" + "---:|" * (len(names) + 2)]
        for t in self.trials:
            if t.get("no_slot"):
                continue
            cells = [fmt_value(t["params"].get(n), ".4g") if n in t["params"] else "" for n in names]
            retry = f" (retry of {t['retry_of']})" if t["retry_of"] is not None else ""
            lines.append(f"| {t['number']} | {t['state']}{retry} | " + " | ".join(cells) +
                         f" | {fmt_value(t['value'], '.4f')} | {fmt_value(t['seconds'], '.1f')} |")
        if self.importances:
            lines += ["", "Parameter importances (fANOVA over the complete trials): " +
                      ", ".join(f"{k} {v:.2f}" for k, v in self.importances.items()), ""]
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        import csv
        import io

        names = self.names
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["trial", "state", *names, f"val_{self.metric}", "seconds", "retry_of", "run_dir"])
        for t in self.trials:
            w.writerow([t["number"], t["state"], *[t["params"].get(n, "") for n in names],
                        "" if t["value"] is None else f"{t['value']:.6f}",
                        "" if t["seconds"] is None else f"{t['seconds']:.3f}",
                        "" if t["retry_of"] is None else t["retry_of"], t.get("run_dir") or ""])
        return buf.getvalue()

    def write(self) -> dict[str, Path]:
        self.out.mkdir(parents=True, exist_ok=True)
        paths = {"json": self.out / "tune.json", "csv": self.out / "tune.csv", "md": self.out / "tune.md"}
        paths.update(_figures(self, self.out))
        write_json(paths["json"], self.to_dict())
        atomic_write_text(paths["csv"], self.csv())
        atomic_write_text(paths["md"], self.markdown())
        self.files = paths
        return paths


def _result(study, optuna, *, out, name, storage_text, space: SearchSpace, metric, direction, sampler, pruner,
            trials, identity, seed, config_text) -> TuneResult:
    TS = optuna.trial.TrialState
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append({"number": t.number, "state": t.state.name.lower(), "params": dict(t.params),
                     "value": t.value if t.state == TS.COMPLETE else
                     (t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None),
                     "intermediate": {str(k): v for k, v in sorted(t.intermediate_values.items())},
                     "seconds": t.user_attrs.get("train_seconds"), "run_dir": t.user_attrs.get("run_dir"),
                     "retry_of": t.system_attrs.get("failed_trial"),
                     "worker": (t.system_attrs.get(BEAT_ATTR) or {}).get("worker"),
                     "no_slot": bool(t.user_attrs.get("no_slot", False))})
    complete = [r for r in rows if r["state"] == "complete"]
    best = None
    if complete:
        pick = max if direction == "maximize" else min
        b = pick(complete, key=lambda r: r["value"])
        best = {"number": b["number"], "params": b["params"], "value": b["value"], "run_dir": b["run_dir"]}
    imp = param_importances([r["params"] for r in complete], [r["value"] for r in complete], space.names)
    return TuneResult(out=out, study_name=name, storage=storage_text, space=space.canonical(), metric=metric,
                      direction=direction, sampler=sampler, pruner=pruner, target_trials=trials, trials=rows,
                      best=best, worker={**identity, "sampler_seed": seed}, config=config_text, importances=imp,
                      names=space.names)


def param_importances(params: Sequence[Mapping[str, float]], values: Sequence[float],
                      names: Sequence[str]) -> dict[str, float] | None:
    """fANOVA parameter importances (Optuna's ``FanovaImportanceEvaluator``, seed 0) of ``values`` over the
    parameter points ``params``; None when Optuna is missing, fewer than 3 points are defined, or no parameter
    varies. A parameter that never varies gets 0."""
    try:
        optuna = _optuna()
    except TuneError:
        return None
    pts = [(p, float(v)) for p, v in zip(params, values) if not is_undefined(v) and all(n in p for n in names)]
    varying = [n for n in names if len({float(p[n]) for p, _ in pts}) > 1]
    if len(pts) < 3 or not varying:
        return None
    dists = {n: optuna.distributions.FloatDistribution(min(float(p[n]) for p, _ in pts),
                                                       max(float(p[n]) for p, _ in pts)) for n in varying}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "study created in memory" line; restored below
    try:
        study = optuna.create_study(direction="maximize")
        for p, v in pts:
            study.add_trial(optuna.trial.create_trial(params={n: float(p[n]) for n in varying}, distributions=dists,
                                                      value=v))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            imp = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    finally:
        optuna.logging.set_verbosity(verbosity)
    return {n: float(imp.get(n, 0.0)) for n in names}


def _figures(result: TuneResult, out: Path) -> dict[str, Path]:
    """tune_history.png (value per trial, best so far), tune_importances.png, tune_slices.png."""
    from lossdial.report.sensitivity import pyplot, save_png

    plt = pyplot()
    files: dict[str, Path] = {}
    rows = [t for t in result.trials if t["state"] in ("complete", "pruned") and t["value"] is not None]
    if not rows:
        return files
    better = max if result.direction == "maximize" else min
    fig, ax = plt.subplots(figsize=(6, 3.6))
    comp = [t for t in rows if t["state"] == "complete"]
    ax.scatter([t["number"] for t in comp], [t["value"] for t in comp], s=18, color="tab:blue", label="complete")
    pr = [t for t in rows if t["state"] == "pruned"]
    if pr:
        ax.scatter([t["number"] for t in pr], [t["value"] for t in pr], s=18, color="tab:gray", marker="x",
                   label="pruned (last report)")
    best_so_far, xs, ys = None, [], []
    for t in sorted(comp, key=lambda t: t["number"]):
        best_so_far = t["value"] if best_so_far is None else better(best_so_far, t["value"])
        xs.append(t["number"])
        ys.append(best_so_far)
    if xs:
        ax.step(xs, ys, where="post", color="tab:red", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"val {result.metric}")
    ax.set_title("Search history (validation)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    files["history"] = save_png(fig, out / "tune_history.png")
    if result.importances:
        fig, ax = plt.subplots(figsize=(5, 0.5 + 0.45 * len(result.importances)))
        items = sorted(result.importances.items(), key=lambda kv: kv[1])
        ax.barh([k for k, _ in items], [v for _, v in items], color="tab:blue")
        ax.set_xlabel("fANOVA importance")
        ax.set_title(f"Parameter importances for val {result.metric}")
        files["importances"] = save_png(fig, out / "tune_importances.png")
    names = result.names
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.2), squeeze=False, sharey=True)
    for ax, n in zip(axes[0], names):
        pts = [t for t in comp if n in t["params"]]
        ax.scatter([t["params"][n] for t in pts], [t["value"] for t in pts], s=18, c=[t["number"] for t in pts],
                   cmap="viridis")
        if "LogU(" in next((p for p in result.space.split() if p.startswith(n + "~")), ""):
            ax.set_xscale("log")
        ax.set_xlabel(n)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"val {result.metric}")
    fig.suptitle("Slices: each complete trial (colour: trial number)")
    files["slices"] = save_png(fig, out / "tune_slices.png")
    return files


def load_tune(out: str | Path) -> dict[str, Any]:
    """Read OUT/tune.json."""
    p = Path(out) / "tune.json"
    if not p.is_file():
        raise TuneError(f"{p} does not exist; run `lossdial tune` into {out} first")
    return json.loads(p.read_text())
