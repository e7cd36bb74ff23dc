"""The `lossdial` command line: parses, calls library functions, prints."""

from __future__ import annotations

import json
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train one imbalanced classifier over a family of loss settings (LCT), then dial the "
                       "precision/recall operating point after training.")
console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # error lines never wrap mid-path


def _fail(msg: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {escape(msg)}", highlight=False)  # the message verbatim, [x] included
    raise typer.Exit(code)


def _warn(msg: Any) -> None:
    """One `warning: ...` line on stderr, the message verbatim (no markup, no Python source line)."""
    err_console.print(f"[yellow]warning:[/] {escape(str(msg))}", highlight=False)


def _exc_text(exc: BaseException) -> str:
    """An exception's message as raised: ``str(KeyError("m"))`` wraps it in quotes, its ``args[0]`` does not."""
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        return exc.args[0]
    return str(exc)


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lossdial")
    except PackageNotFoundError:  # run from a source tree that is not installed
        from lossdial import __version__

        return __version__


def _print_version(value: bool) -> None:
    if value:
        console.print(f"lossdial {_package_version()}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    pass


def _plain_flags() -> None:
    """Show boolean flags bare in help (``--resume``), not as ``--resume <bool>`` as if they took a value.

    Recent typer renders every option's type, flags included; this keeps the type column empty for flags
    (a no-op on typer versions without ``TyperOption.display_type_rich``)."""
    from typer import core

    option = getattr(core, "TyperOption", None)
    shown = getattr(option, "display_type_rich", None)
    if shown is None or getattr(shown, "plain_flags", False):
        return

    def display_type_rich(self, ctx):
        return None if getattr(self, "is_flag", False) and self.metavar is None else shown(self, ctx)

    display_type_rich.plain_flags = True
    option.display_type_rich = display_type_rich


_plain_flags()


class _ProgressCallback:
    """Draws a rich progress bar over training steps; prints validation lines when they appear."""

    def __init__(self, progress: Progress, label: str):
        self.progress, self.label, self.task = progress, label, None
        self.total_steps = self.start_step = None

    def on_start(self, total_steps: int, start_step: int) -> None:
        self.total_steps, self.start_step = total_steps, start_step
        self.task = self.progress.add_task(self.label, total=total_steps, completed=start_step, info="")

    def on_step(self, step: int) -> None:
        self.progress.update(self.task, completed=step)

    def on_epoch_end(self, epoch: int, record: dict[str, Any]) -> None:
        info = f"epoch {epoch} loss {record['train_loss']:.4f}"
        if "val" in record:  # the task type's periodic entries (binary: AUC, AP; multi-class: bal_acc, worst)
            info += " | val " + " ".join(f"{head} {_fmt(record['val'][k])}" for k, head in _PROGRESS_KEYS
                                         if k in record["val"])
        self.progress.update(self.task, info=info)


_PROGRESS_KEYS = (("auc", "AUC"), ("ap", "AP"), ("balanced_accuracy", "bal_acc"), ("worst_class_accuracy", "worst"))


def _progress(quiet: bool) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                    console=err_console, disable=quiet, transient=False)


class _WarningLines(warnings.catch_warnings):
    """Within the block, each warning is printed at once as one `warning: MESSAGE` line on stderr (no Python
    source line, no category); the warning filters are left as they are."""

    def __enter__(self):
        super().__enter__()
        warnings.showwarning = lambda message, *args, **kwargs: _warn(message)
        return self


def _run_training(cfg, out: Path, *, resume: bool, force: bool, quiet: bool, label: str, device: str | None):
    from lossdial.train import train

    with _WarningLines(), _progress(quiet) as progress:
        cb = _ProgressCallback(progress, label)
        result = train(cfg, out, resume=resume, force=force, device=device, callback=cb)
    if resume and cb.start_step:
        console.print(f"resumed at step {cb.start_step} of {cb.total_steps} (from the run's checkpoint)",
                      highlight=False)
    return result


def _load_config_or_fail(config: Path | None, overrides: list[str], resume_dir: Path | None = None,
                         lct: dict[str, str] | None = None):
    from lossdial.config import ConfigError, load_config

    try:
        if config is None:
            if resume_dir is None:
                _fail("give a CONFIG.yaml (or --out RUN --resume to continue a run with its saved config)")
            if not (resume_dir / "config.yaml").is_file():
                what = "does not exist" if not resume_dir.exists() else \
                    "is not a lossdial run directory (no config.yaml)"
                _fail(f"cannot resume {resume_dir}: it {what}; to start a new run there, give CONFIG.yaml as well")
            return load_config(resume_dir / "config.yaml", overrides, lct=lct)
        return load_config(config, overrides, lct=lct)
    except ConfigError as exc:
        _fail(str(exc))


def _default_out(name: str) -> Path:
    return Path("runs") / name / time.strftime("%Y%m%d-%H%M%S")


@app.command()
def train(
    config: Optional[Path] = typer.Argument(None, help="YAML config (omit with --resume to reuse the run's own)."),
    set_: list[str] = typer.Option([], "--set", help="Dotted override, e.g. --set optim.lr=0.05 (repeatable)."),
    out: Optional[Path] = typer.Option(None, "--out", help="The run directory (default runs/NAME/TIMESTAMP)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the unfinished run in --out."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing run in --out."),
    print_config: bool = typer.Option(False, "--print-config", help="Print the effective config and exit."),
    device: Optional[str] = typer.Option(None, help="Override train.device (auto, cpu, cuda, cuda:1, ...)."),
    lct: Optional[str] = typer.Option(None, "--lct", help='Train LCT over these distributions, e.g. '
                                      '"tau~L(0,3,0.33)" (sets lct.enabled and lct.lambda; an evaluate.lambda '
                                      'over other names is dropped for the default grid over this law).'),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Train a baseline or LCT model from a YAML config into a run directory."""
    if resume and out is None:
        _fail("--resume needs --out RUN_DIR naming the run to continue")
    law = None
    if lct:
        from lossdial.conditioning import parse_lct

        try:
            law = {k: d.spec() for k, d in parse_lct(lct).items()}
        except ValueError as exc:
            _fail(f"--lct: {exc}")
    cfg = _load_config_or_fail(config, set_, out if resume else None, lct=law)
    if print_config:
        console.print(cfg.to_yaml(), highlight=False, markup=False)
        return
    from lossdial.train.distributed import env_world_size, is_main_process

    if out is None and env_world_size() > 1:
        _fail("under torchrun give --out RUN_DIR: every rank must name the same run directory")
    out = out or _default_out(cfg.name)
    from lossdial.rundir import RunDir, RunError

    finished = resume and not force and RunDir(out).is_complete
    try:
        result = _run_training(cfg, out, resume=resume, force=force, quiet=quiet or not is_main_process(),
                               label="LCT" if cfg.lct.enabled else "baseline", device=device)
    except (RunError, ValueError) as exc:
        _fail(str(exc))
    if not is_main_process():  # torchrun: rank 0 reports
        return
    if finished:
        steps = _finished_steps(result.run_dir)
        console.print(f"run directory: [bold]{escape(str(result.run_dir))}[/] is already finished"
                      f"{f' ({steps} steps)' if steps is not None else ''}: nothing to resume (--force trains it "
                      f"again from scratch)")
    else:
        console.print(f"run directory: [bold]{escape(str(result.run_dir))}[/]  ({result.steps} steps, "
                      f"{result.seconds:.1f} s)")
    task, rows = result.final.get("task", "binary"), result.final.get("rows", [])
    counts = _split_counts(result.run_dir, "val")
    if not counts:
        where = ""
    elif task == "multiclass":
        where = _multiclass_where(counts, rows)
    else:
        where = f" ({counts[1]} positives / {counts[0]} negatives); prevalence {counts[1] / sum(counts):.4f} " \
                f"(the split's own)"
    _print_rows(rows, title=f"{cfg.name}: validation split{where}", label="LCT" if cfg.lct.enabled else "baseline",
                task=task)


def _finished_steps(run_dir: Path) -> int | None:
    try:
        return int(json.loads((Path(run_dir) / "COMPLETE").read_text())["steps"])
    except (OSError, KeyError, ValueError, TypeError):
        return None


def _split_counts(run_dir: Path, split: str) -> list[int] | None:
    try:
        c = json.loads((Path(run_dir) / "data.json").read_text())["counts"][split]
        return c if len(c) >= 2 and sum(c) else None
    except (OSError, KeyError, ValueError):
        return None


_PRIOR_TEXT = {"train": "the training class prior", "uniform": "the uniform class prior (= balanced accuracy)",
               "given": "the given class prior"}


def _multiclass_where(counts: list[int], rows: list[dict[str, Any]],
                      rows_at: str = "rows at t = 0 (no post-hoc adjustment)") -> str:
    """A multi-class table title's tail: the split's size and class counts, the prior of `acc`, and `rows_at`."""
    src = rows[0]["metrics"].get("prior_source", "train") if rows else "train"
    prior = ("" if src != "given" or not rows else
             " [" + ", ".join(f"{v:.3g}" for v in rows[0]["metrics"]["prior"]) + "]")
    per = f"{min(counts)}" if min(counts) == max(counts) else f"{min(counts)}-{max(counts)}"
    return (f" ({sum(counts)} samples, {len(counts)} classes, {per} per class); acc at "
            f"{_PRIOR_TEXT.get(src, src)}{prior}; {rows_at}")


_COLUMNS = [("auc", "AUC"), ("ap", "AP"), ("brier", "Brier"), ("ece", "ECE"), ("f1", "bestF1"),
            ("precision@recall=0.9", "P@R.9"), ("precision", "P@thr"), ("recall", "R@thr")]


_CAPTION = ("bestF1: the best F1 over all thresholds (key f1, reached at f1_threshold), not the F1 at the "
            "decision threshold (f1_at_threshold); P@R.9: precision at recall 0.9; P@thr / R@thr: precision "
            "and recall at the decision threshold; -: undefined (precision when nothing is predicted positive)")


_MC_COLUMNS = [("accuracy", "acc"), ("balanced_accuracy", "bal_acc"), ("worst_class_accuracy", "worst"),
               ("many_shot_accuracy", "many"), ("medium_shot_accuracy", "med"), ("few_shot_accuracy", "few"),
               ("macro_f1", "macroF1"), ("nll", "NLL"), ("ece", "ECE")]

_MC_CAPTION = ("acc: accuracy at the class prior named in the title; bal_acc: mean per-class recall (accuracy at "
               "the uniform prior); worst: the lowest per-class recall; many / med / few: mean recall over the "
               "classes with > 100 / 20-100 / < 20 training samples (-: no class in the group); macroF1: mean "
               "per-class F1; NLL, ECE (top-label): at the same prior as acc")

#: Column sets of the tables (key, header) and their captions, by task type; "multiclass_dial" is the
#: narrower set of the multi-class demo's dial table.
_COLUMN_SETS = {"binary": (_COLUMNS, _CAPTION), "multiclass": (_MC_COLUMNS, _MC_CAPTION),
                "multiclass_dial": (_MC_COLUMNS[:6], _MC_CAPTION.split("; macroF1")[0])}


def _fmt(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def _lam_str(lam: dict[str, float]) -> str:
    return " ".join(f"{k}={v:g}" for k, v in lam.items())


def _print_rows(rows: list[dict[str, Any]], title: str, label: str | None = None,
                table: Table | None = None, show: bool = True, keys: list[str] | None = None,
                suffix: str = "", models: bool = False, task: str = "binary", t_column: bool = False) -> Table:
    """Rows of {lambda, metrics} (and ``t``, a post-hoc adjustment, where a row has one); `keys` limits the
    lambda column to the conditioned names; `task` picks the column set (:data:`_COLUMN_SETS`); ``t_column``:
    the rows' t in a column of its own (the multi-class sweep) rather than after the lambda.

    Fits 80 columns: the number cells never shrink (they would print as ``0.…``); the lambda column wraps
    between names instead. The model column is there only for a table of several models (``models=True``);
    otherwise the label goes into the lambda header."""
    columns, caption = _COLUMN_SETS[task]
    if table is None:
        table = Table(title=title, title_justify="left", caption=caption, caption_justify="left",
                      pad_edge=False, collapse_padding=True)
        if models:
            table.add_column("model", no_wrap=True)
        table.add_column("lambda" if models or not label else f"lambda ({label})", overflow="fold")
        if t_column:
            table.add_column("t", justify="right", no_wrap=True)
        for _, head in columns:
            table.add_column(head, justify="right", no_wrap=True, min_width=max(5, len(head)))
    with_model = table.columns[0].header == "model"
    for r in rows:
        m = r["metrics"]
        lam = {k: v for k, v in r["lambda"].items() if keys is None or k in keys}
        with_t = table.columns[2 if with_model else 1].header == "t"
        table.add_row(*([label or ""] if with_model else []),
                      _lam_str(lam) + suffix + (f" t={r['t']:g}" if "t" in r and not with_t else ""),
                      *([f"{r['t']:g}"] if with_t else []), *[_fmt(m.get(k)) for k, _ in columns])
    if show:
        console.print(table)
    return table


@app.command()
def evaluate(
    run: Path = typer.Argument(..., help="A finished run directory."),
    lambda_: Optional[str] = typer.Option(None, "--lambda", help='Lambda values, e.g. "tau=0:4:33" or "tau=0,1,2".'),
    split: str = typer.Option("val", help="val (default) or test. Choose lambda and threshold on val only."),
    threshold: Optional[float] = typer.Option(None, help="Decision threshold of the P@thr / R@thr columns (default: "
                                              "evaluate.threshold of the run's config); bestF1 is over all "
                                              "thresholds."),
    prevalence: Optional[float] = typer.Option(None, help="Positive prevalence for precision-type metrics "
                                               "(default: the split's own)."),
    prior: Optional[str] = typer.Option(None, "--prior", help="Multi-class runs: the deployment class prior of "
                                        "acc (and NLL, ECE): train (default, the training class frequencies), "
                                        "uniform, or p1,...,pC in label order summing to 1. bal_acc does not "
                                        "depend on it."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    device: str = typer.Option("auto", help="cpu, cuda, auto."),
) -> None:
    """Metrics of a finished run at several lambda values, on the validation (or test) split."""
    from lossdial.conditioning import parse_lambda_grid
    from lossdial.evaluate import evaluate_run, load_run
    from lossdial.rundir import RunError

    try:
        loaded = load_run(run, device=device)
        lambdas = parse_lambda_grid(lambda_) if lambda_ else None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rows = evaluate_run(loaded, lambdas, split=split, threshold=threshold, prevalence=prevalence,
                                prior=prior)
    except (RunError, ValueError, KeyError) as exc:
        _fail(_exc_text(exc))
    for w in caught:
        _warn(w.message)
    task = loaded.task_type.name
    if as_json:
        from lossdial.rundir import dumps_json

        extra = {"task": task, "prior": rows[0]["metrics"]["prior"],
                 "prior_source": rows[0]["metrics"]["prior_source"]} if task == "multiclass" and rows else {}
        print(dumps_json({"run": str(run), "split": split, **extra, "rows": rows}))
        return
    counts = loaded.data["counts"][split]
    if task == "multiclass":
        _print_rows(rows, title=f"{run}: {split} split{_multiclass_where(counts, rows)}",
                    label="LCT" if loaded.is_lct else "baseline",
                    keys=list(loaded.space.names) if loaded.is_lct else None, task=task)
        return
    prev_txt = f"prevalence {prevalence:g} (given)" if prevalence is not None else \
        f"prevalence {counts[1] / (counts[0] + counts[1]):.4f} (the split's own)"
    thr = loaded.config.evaluate.threshold if threshold is None else threshold
    _print_rows(rows, title=f"{run}: {split} split ({counts[1]} positives / {counts[0]} negatives); P@thr / R@thr at "
                            f"threshold {thr:g}; {prev_txt}",
                label="LCT" if loaded.is_lct else "baseline",
                keys=list(loaded.space.names) if loaded.is_lct else None)


@app.command()
def demo(
    quick: bool = typer.Option(False, "--quick", help="A short run (< 30 s) for smoke tests."),
    out: Optional[Path] = typer.Option(None, "--out", help="Put the runs at OUT/baseline and OUT/lct."),
    force: bool = typer.Option(False, "--force", help="Overwrite runs already in --out."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    multiclass: bool = typer.Option(False, "--multiclass", help="The multi-class demo: the ten digits with an "
                                    "exponential long tail (ratio 20); the dial between head and tail classes."),
) -> None:
    """Baseline vs LCT on an imbalanced digits task (digit 8 vs the rest), on the CPU in about a minute;
    --multiclass: the ten digits with a long tail, and the dial between head and tail classes."""
    from lossdial.demo import demo_configs, dial_summary
    from lossdial.data import build_task
    from lossdial.rundir import RunError

    if multiclass:
        return _demo_multiclass(quick=quick, out=out, force=force, quiet=quiet)

    base_cfg, lct_cfg = demo_configs(quick=quick)
    out = out or _default_out("demo")
    task = build_task(lct_cfg.data)
    d = task.describe()["counts"]
    console.print(f"[bold]Task:[/] sklearn digits, positive class '8' vs the other digits, beta = "
                  f"{lct_cfg.data.beta:g} (validation and test holdouts carved first, then training positives "
                  f"subsampled)")
    for s in ("train", "val", "test"):
        console.print(f"  {s:<5} {d[s][1]:>4} positives  {d[s][0]:>5} negatives")
    t0 = time.perf_counter()
    try:
        base = _run_training(base_cfg, out / "baseline", resume=False, force=force, quiet=quiet,
                             label="baseline (VS, tau=%g)" % base_cfg.loss.params["tau"], device="cpu")
        lct = _run_training(lct_cfg, out / "lct", resume=False, force=force, quiet=quiet,
                            label="LCT (tau ~ %s)" % lct_cfg.lct.lambdas["tau"], device="cpu")
    except (RunError, ValueError) as exc:
        _fail(str(exc))
    elapsed = time.perf_counter() - t0
    # The table is at the training prevalence, as sweep, pick, report and compare state their numbers (the
    # training loop's own final rows use the validation split's prevalence).
    from lossdial.evaluate import evaluate_run, load_run
    from lossdial.evaluate.select import run_prevalence

    base_run, lct_run = load_run(base.run_dir, device="cpu"), load_run(lct.run_dir, device="cpu")
    prev = run_prevalence(lct_run, None)
    base_rows = evaluate_run(base_run, split="val", prevalence=prev)
    lct_rows = evaluate_run(lct_run, split="val", prevalence=prev)
    title = (f"Validation split ({d['val'][1]} positives / {d['val'][0]} negatives); AP, Brier and precision at "
             f"the training prevalence {prev:.4g} (as sweep, pick and report); precision and recall at threshold "
             f"{lct_cfg.evaluate.threshold:g}")
    keys = list(lct_cfg.lct.lambdas)
    table = _print_rows(base_rows, title=title, label="baseline", show=False, keys=keys,
                        suffix=" fixed", models=True)
    _print_rows(lct_rows, title=title, label="LCT", table=table, show=False, keys=keys)
    console.print(table)
    s = dial_summary(lct_rows)
    console.print(
        f"One LCT model, dialled over tau: AUC stays within {s['auc'][0]:.3f}-{s['auc'][1]:.3f} (the ranking "
        f"barely moves) while recall at the default threshold spans {s['recall'][0]:.2f}-{s['recall'][1]:.2f}, "
        f"precision {s['precision'][0]:.2f}-{s['precision'][1]:.2f} and Brier {s['brier'][0]:.3f}-"
        f"{s['brier'][1]:.3f}: tau moves the operating point and the calibration.", highlight=False)
    console.print(f"Trained both models in {elapsed:.1f} s on the CPU.")
    console.print(f"Run directories: baseline [bold]{base.run_dir}[/], LCT [bold]{lct.run_dir}[/]")
    console.print(f"Next: lossdial evaluate {lct.run_dir} --lambda \"tau=0:3:13\"")


def _demo_multiclass(*, quick: bool, out: Optional[Path], force: bool, quiet: bool) -> None:
    """`lossdial demo --multiclass`: a VS baseline and an LCT model over tau on long-tailed digits; the dial
    table on validation (LCT: rows over tau at t = 0; baseline: rows over the post-hoc adjustment t)."""
    from lossdial.data import build_task
    from lossdial.demo import DEMO_T_GRID, demo_multiclass_configs, multiclass_dial_summary, posthoc_dial
    from lossdial.evaluate import load_run
    from lossdial.rundir import RunError

    base_cfg, lct_cfg = demo_multiclass_configs(quick=quick)
    out = out or _default_out("demo_multiclass")
    task = build_task(lct_cfg.data)
    d = task.describe()["counts"]
    console.print(f"[bold]Task:[/] sklearn digits, {task.num_classes} classes with an exponential long tail, "
                  f"ratio {lct_cfg.data.beta:g} (validation and test holdouts carved first, then class c keeps "
                  f"n_max * {lct_cfg.data.beta:g}^(-c/9) training samples)", highlight=False)
    counts = Table(title_justify="left", pad_edge=False, collapse_padding=True)
    counts.add_column("split")
    for name in task.class_names:
        counts.add_column(name, justify="right")
    for s in ("train", "val", "test"):
        counts.add_row(s, *[str(v) for v in d[s]])
    console.print(counts)
    t0 = time.perf_counter()
    try:
        base = _run_training(base_cfg, out / "baseline", resume=False, force=force, quiet=quiet,
                             label="baseline (VS, tau=%g)" % base_cfg.loss.params["tau"], device="cpu")
        lct = _run_training(lct_cfg, out / "lct", resume=False, force=force, quiet=quiet,
                            label="LCT (tau ~ %s)" % lct_cfg.lct.lambdas["tau"], device="cpu")
        base_rows = posthoc_dial(load_run(base.run_dir, device="cpu"), task, DEMO_T_GRID)
    except (RunError, ValueError) as exc:
        _fail(str(exc))
    elapsed = time.perf_counter() - t0
    keys = list(lct_cfg.lct.lambdas)
    title = (f"Validation split ({sum(d['val'])} samples, {min(d['val'])}-{max(d['val'])} per class); acc at the "
             f"training class prior; LCT rows at t = 0, baseline rows over the post-hoc adjustment "
             f"z_c - t log(pi_c)")
    table = _print_rows(base_rows, title=title, label="baseline", show=False, keys=keys, suffix=" fixed,",
                        models=True, task="multiclass_dial")
    _print_rows(lct.final["rows"], title=title, label="LCT", table=table, show=False, keys=keys,
                task="multiclass_dial")
    console.print(table)
    s = multiclass_dial_summary(base_rows, lct.final["rows"])
    b, m = s["baseline"], s["lct"]
    console.print(
        f"Two dials between head and tail classes: moving the baseline's post-hoc t from {b['from']:g} to "
        f"{b['to']:g} takes few-shot accuracy from {b['few_from']:.2f} to {b['few_to']:.2f} and many-shot from "
        f"{b['many_from']:.2f} to {b['many_to']:.2f}; the LCT model's tau from {m['from']:g} to {m['to']:g} "
        f"takes few-shot from {m['few_from']:.2f} to {m['few_to']:.2f} and many-shot from {m['many_from']:.2f} "
        f"to {m['many_to']:.2f}. Best balanced accuracy: baseline {b['best_balanced_accuracy']:.3f} at "
        f"t={b['best_at']:g}, LCT {m['best_balanced_accuracy']:.3f} at tau={m['best_at']:g}.", highlight=False)
    console.print(f"Trained both models in {elapsed:.1f} s on the CPU.")
    console.print(f"Run directories: baseline [bold]{base.run_dir}[/], LCT [bold]{lct.run_dir}[/]")
    console.print(f"Next: lossdial evaluate {lct.run_dir} --lambda \"tau=0:2:9\" --prior uniform")


# ---------------------------------------------------------------------------------------------------------
# Operating points: sweep, pick, predict, export, report

def _parse_costs(text: Optional[str]) -> tuple[float, float]:
    if not text:
        return (1.0, 1.0)
    vals = {}
    for part in text.replace(",", " ").split():
        k, _, v = part.partition("=")
        if k not in ("fp", "fn") or not v:
            _fail(f"--cost {text!r} must look like 'fp=1,fn=20'")
        try:
            vals[k] = float(v)
        except ValueError:
            _fail(f"--cost {text!r}: {v!r} is not a number")
    return (vals.get("fp", 1.0), vals.get("fn", 1.0))


def _load_or_fail(run: Path, device: str, command: str, multiclass: bool = False):
    """The finished run of `command` (sweep, pick, predict, export, report). A binary-only path
    (``multiclass=False``) stops a multi-class run here with one line, before anything is read or written."""
    from lossdial.evaluate import load_run
    from lossdial.evaluate.run import require_binary
    from lossdial.rundir import RunError

    try:
        loaded = load_run(run, device=device)
        if not multiclass:
            require_binary(loaded.config.data.task, f"lossdial {command} ({run})")
        return loaded
    except (RunError, ValueError) as exc:
        _fail(str(exc))


_SWEEP_HELP = "\n\n".join([
    "Every operating point: K lambda values x every threshold, written under RUN/sweeps/.",
    "SPLIT.csv and SPLIT.json, the summary (the table printed): one row per lambda, with the threshold-free "
    "metrics (auc, ap, brier, ece; f1 = the best F1 over all thresholds, reached at f1_threshold; "
    "precision@recall=r, recall@precision=p) and the metrics at the default threshold (the threshold column, "
    "usually 0.5: precision, recall, f1_at_threshold, accuracy, cost, ...).",
    "SPLIT_curves.csv: every operating point, one row per (lambda, threshold), with the lambda.NAME columns, "
    "threshold, tp, fp, fn, tn (counts when predicting positive for score >= threshold), tpr, fpr and "
    "precision at the prevalence. Every distinct score is a threshold; a lambda with more than 1024 is "
    "thinned to 1024, keeping the first and last, the ROC convex hull and points evenly spaced along the curve.",
    "Multi-class runs: every (lambda, t), t the post-hoc logit adjustment (scores z_c - t log pi_c, pi the "
    "training prior; --adjustment), every metric at the class prior --prior. SPLIT.csv: one row per (lambda, t) "
    "with the lambda.NAME columns, adjustment and the scalar metrics; SPLIT.json: the same rows with "
    "per_class_recall and per_class_precision.",
])


@app.command(help=_SWEEP_HELP)
def sweep(
    run: Path = typer.Argument(..., help="A finished run directory."),
    split: str = typer.Option("val", help="val (default) or test."),
    lambda_: Optional[str] = typer.Option(
        None, "--lambda", help='e.g. "tau=0:4:33". Default: evaluate.lambda of the run\'s config (7 values of tau in '
                               'the shipped configs), else 33 points per name over the training support.'),
    prevalence: Optional[float] = typer.Option(None, help="Positive prevalence for precision-type metrics "
                                               "(default: the training prevalence)."),
    cost: Optional[str] = typer.Option(None, help="Costs for the `cost` column, e.g. 'fp=1,fn=20'."),
    prior: Optional[str] = typer.Option(None, "--prior", help="Multi-class runs: the deployment class prior of the "
                                        "metrics: train (default), uniform, or p1,...,pC summing to 1."),
    adjustment: Optional[str] = typer.Option(None, "--adjustment", help="Multi-class runs: the grid of post-hoc "
                                             "adjustment strengths t, lo:hi:n or t1,t2,... (default 0:2:9)."),
    device: str = typer.Option("auto"),
) -> None:
    """The `sweep` command; its help is _SWEEP_HELP."""
    from lossdial.conditioning import parse_lambda_grid
    from lossdial.evaluate.select import search_grid, sweep_split

    loaded = _load_or_fail(run, device, "sweep", multiclass=True)
    try:
        lambdas = parse_lambda_grid(lambda_) if lambda_ else None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            lambdas, grid_text = search_grid(loaded, lambdas, given_as="--lambda")
            result = sweep_split(loaded, split, lambdas, prevalence=prevalence, costs=_parse_costs(cost),
                                 prior=prior, adjustments=adjustment)
            table = result.table
    except (ValueError, KeyError) as exc:
        _fail(_exc_text(exc))
    for w in caught:
        _warn(w.message)
    out = Path(run) / "sweeps"
    if loaded.task_type.name == "multiclass":
        return _print_multiclass_sweep(run, loaded, result, grid_text, out)
    result.to_csv(out / f"{split}.csv")
    result.to_json(out / f"{split}.json", extra={"run": str(run), "lambda_grid": grid_text})
    n_curve = result.to_curves_csv(out / f"{split}_curves.csv")
    counts = loaded.data["counts"][split]
    src = "given" if prevalence is not None else "the training prevalence"
    title = (f"{run}: {split} split ({counts[1]} positives / {counts[0]} negatives); P@thr / R@thr at threshold "
             f"{result.threshold:g}; precision-type metrics at prevalence {result.prevalence:.4f} ({src})")
    console.print(f"searched {grid_text}", highlight=False)
    _print_rows(table, title=title, label="LCT" if loaded.is_lct else "baseline",
                keys=list(loaded.space.names) if loaded.is_lct else None)
    console.print(f"wrote {out / (split + '.csv')} and {out / (split + '.json')} (one row per lambda: the table "
                  f"above, more columns) and {out / (split + '_curves.csv')} ({n_curve} rows: every lambda x "
                  f"threshold with tp, fp, fn, tn, tpr, fpr, precision)", highlight=False)


def _searched_text(loaded, grid_text: str, ts) -> str:
    """What a multi-class sweep or pick searched: the lambda grid (LCT) times the adjustments t."""
    what = f"{len(ts)} adjustment{'s' if len(ts) != 1 else ''} t ({', '.join(f'{t:g}' for t in ts)})"
    if not loaded.is_lct:
        return f"searched {what}; a baseline run has no lambda to vary"
    return f"searched {grid_text} x {what}"


def _print_multiclass_sweep(run: Path, loaded, result, grid_text: str, out: Path) -> None:
    """Write a multi-class sweep's CSV and JSON and print its table (one row per (lambda, t))."""
    split = result.split
    result.to_csv(out / f"{split}.csv")
    result.to_json(out / f"{split}.json", extra={"run": str(run), "lambda_grid": grid_text})
    rows = [{"lambda": r["lambda"], "t": r["adjustment"], "metrics": r["metrics"]} for r in result.table]
    console.print(_searched_text(loaded, grid_text, result.adjustments), highlight=False)
    _print_rows(rows, title=f"{run}: {split} split{_multiclass_where(loaded.data['counts'][split], rows, 'rows over (lambda, t): scores z_c - t log pi_c, pi the training prior')}",
                label="LCT" if loaded.is_lct else "baseline",
                keys=list(loaded.space.names) if loaded.is_lct else None, task="multiclass", t_column=True)
    console.print(f"wrote {out / (split + '.csv')} (one row per (lambda, t): the table above, more columns) and "
                  f"{out / (split + '.json')} (the same rows with per_class_recall and per_class_precision)",
                  highlight=False)


_PICK_HELP = "\n\n".join([
    "Choose (lambda, threshold) on the validation split, then measure it once on test; writes the model card.",
    "Prints the lambda grid searched and the counts behind the point (tp, fp, fn, tn, positives, negatives, on "
    "validation and on test); both go into the model card. No threshold is chosen with fewer than --min-tp "
    "validation true positives.",
    "--conservative: --at must hold for a lower confidence bound, not for the validation estimate. recall: the "
    "one-sided Clopper-Pearson lower bound of tp / positives at --confidence; with n validation positives it "
    "cannot exceed (1 - confidence)^(1/n) (0.918 for 35 positives at 95%). precision, reported at the "
    "prevalence pi, is bounded there: a Clopper-Pearson lower bound on TPR and upper bound on FPR, each at "
    "1 - alpha/2 (alpha = 1 - confidence), put into pi*TPR / (pi*TPR + (1-pi)*FPR).",
    "Multi-class runs: choose (lambda, t), t the post-hoc logit adjustment (--adjustment), with --maximize "
    "balanced_accuracy (default), accuracy, worst_class_accuracy, many_shot_accuracy, medium_shot_accuracy, "
    "few_shot_accuracy or macro_f1, or --minimize nll, ece or brier, under a constraint such as --at "
    "\"few_shot_accuracy>=0.7\" (any maximised metric with >=, nll/ece/brier with <=); metrics at --prior. Test "
    "intervals: per-class stratified bootstrap. --prevalence, --cost, --conservative, --confidence and --min-tp "
    "are binary options.",
])


@app.command(help=_PICK_HELP)
def pick(
    run: Path = typer.Argument(..., help="A finished run directory."),
    at: Optional[str] = typer.Option(None, "--at", help='Constraint, e.g. "recall>=0.95" or "precision>=0.9" '
                                     '(multi-class: e.g. "few_shot_accuracy>=0.7" or "nll<=0.5").'),
    maximize: Optional[str] = typer.Option(
        None, help="precision, recall, f1, ap, auc, balanced_accuracy, accuracy. Default: precision under a recall "
                   "constraint, recall under a precision constraint, else f1. Multi-class: balanced_accuracy "
                   "(default), accuracy, worst_class_accuracy, many_shot_accuracy, medium_shot_accuracy, "
                   "few_shot_accuracy, macro_f1."),
    minimize: Optional[str] = typer.Option(None, help="brier, ece, cost (multi-class: nll, ece, brier)."),
    name: Optional[str] = typer.Option(
        None, "--name", help="Name of the point in the model card (e.g. screening); default from the constraint "
                             "and objective, e.g. recall_ge_0.9_max_precision."),
    lambda_: Optional[str] = typer.Option(
        None, "--lambda", help="Lambda grid to search. Default: evaluate.lambda of the run's config (7 values of tau "
                               "in the shipped configs), else 33 points per name over the training support."),
    prevalence: Optional[float] = typer.Option(None, help="Prevalence for precision-type metrics (default: training)."),
    cost: Optional[str] = typer.Option(None, help="'fp=1,fn=20' for --minimize cost."),
    conservative: bool = typer.Option(False, help="--at must hold for a lower confidence bound (see above)."),
    confidence: float = typer.Option(0.95, help="Confidence of the --conservative bound (alpha = 1 - confidence)."),
    min_tp: int = typer.Option(5, "--min-tp", min=0, help="Choose no threshold with fewer validation true positives "
                                                          "than this (a point resting on one or two positives says "
                                                          "nothing about deployment)."),
    n_boot: int = typer.Option(1000, help="Bootstrap resamples for the test intervals."),
    prior: Optional[str] = typer.Option(None, "--prior", help="Multi-class runs: the deployment class prior of the "
                                        "metrics: train (default), uniform, or p1,...,pC summing to 1."),
    adjustment: Optional[str] = typer.Option(None, "--adjustment", help="Multi-class runs: the grid of post-hoc "
                                             "adjustment strengths t searched, lo:hi:n or t1,t2,... (default 0:2:9)."),
    device: str = typer.Option("auto"),
) -> None:
    """The `pick` command; its help is _PICK_HELP."""
    from lossdial.conditioning import parse_lambda_grid
    from lossdial.evaluate.select import SelectionSpec, resolve_objective, search_grid, select_point
    from lossdial.evaluate.sweep import NoFeasiblePoint
    from lossdial.report.card import COUNT_KEYS, add_point, bound_text, card_paths

    multiclass = _run_task(run) == "multiclass"  # the arguments are checked for the run's task before loading it
    try:
        objective = resolve_objective("multiclass" if multiclass else "binary", at, maximize, minimize)
    except ValueError as exc:
        _fail(_exc_text(exc))
    if name is None:
        import re

        goal = f"{'min' if minimize else 'max'}_{objective}"
        ops = {">=": "_ge_", "<=": "_le_", ">": "_gt_", "<": "_lt_", "==": "_eq_", "=": "_eq_"}
        cons = re.sub(r">=|<=|==|>|<|=", lambda m: ops[m.group(0)], (at or "").replace(" ", ""))
        name = f"{cons}_{goal}" if at else goal
        console.print(f"point name: {name} (--name to choose one)", highlight=False)
    if multiclass:
        spec = SelectionSpec(name=name, constraint=at, objective=objective, conservative=conservative,
                             confidence=confidence, prevalence=prevalence, costs=_parse_costs(cost), min_tp=min_tp,
                             prior=prior, adjustments=adjustment)
        return _pick_multiclass(run, device, spec, lambda_, n_boot)
    from lossdial.evaluate.sweep import parse_constraint

    try:  # the arguments are checked before any sweep runs
        parse_constraint(at)
    except ValueError as exc:
        _fail(_exc_text(exc))
    loaded = _load_or_fail(run, device, "pick")
    spec = SelectionSpec(name=name, constraint=at, objective=objective, conservative=conservative,
                         confidence=confidence, prevalence=prevalence, costs=_parse_costs(cost), min_tp=min_tp)
    try:
        lambdas = parse_lambda_grid(lambda_) if lambda_ else None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            console.print(f"searched {search_grid(loaded, lambdas, given_as='--lambda')[1]}", highlight=False)
            entry = select_point(loaded, spec, lambdas=lambdas, n_boot=n_boot, given_as="--lambda")
    except NoFeasiblePoint as exc:  # the message names the one closest point, with its counts
        err_console.print(f"[bold red]no point meets the constraint:[/] {exc}", highlight=False)
        raise typer.Exit(1)
    except (ValueError, KeyError) as exc:
        _fail(_exc_text(exc))
    for w in caught:
        _warn(w.message)
    add_point(loaded, name, entry)
    t = Table(title=f"point '{name}': lambda {_lam_str(entry['lambda']) or '(fixed)'}, threshold "
                    f"{entry['threshold']:.6g}; prevalence {entry['prevalence']:.4f}", title_justify="left",
              caption=f"{entry['n_pos']['val']} validation / {entry['n_pos']['test']} test positives; test 95% "
                      f"intervals: stratified bootstrap ({entry['n_boot']} resamples) and exact (Clopper-Pearson; "
                      f"precision from the TPR/FPR bounds at the prevalence)", caption_justify="left")
    t.add_column("metric", no_wrap=True)
    t.add_column("val", justify="right", no_wrap=True)
    t.add_column("test", justify="right", no_wrap=True)
    t.add_column("CI (bootstrap)", justify="right", no_wrap=True)
    t.add_column("CI (exact)", justify="right", no_wrap=True)
    from lossdial.report.card import CARD_METRICS

    def span(ci) -> str:  # "lo–hi", compact enough for 80 columns
        return "" if not ci else f"{_fmt(ci[0])}–{_fmt(ci[1])}"

    for k in CARD_METRICS:
        t.add_row(k, _fmt(entry["val"].get(k)), _fmt(entry["test"].get(k)), span(entry["test_ci95"].get(k)),
                  span(entry.get("test_exact_ci95", {}).get(k)))
    console.print(t)
    c = Table(title="counts at the threshold (unweighted)" + (f"; validation lower bound {entry['val_lower_bound']:.4f}"
                                                              + bound_text(entry) if entry["conservative"] else ""),
              title_justify="left")
    c.add_column("split")
    for k in COUNT_KEYS:
        c.add_column(k, justify="right")
    for split, label in (("val", "validation"), ("test", "test")):
        c.add_row(label, *[str(entry["counts"][split][k]) for k in COUNT_KEYS])
    console.print(c)
    console.print("chosen on the validation split; the test split was scored once, after the point was fixed.")
    console.print(f"model card: {card_paths(run)[0]} and {card_paths(run)[1]}")


def _run_task(run: Path) -> str:
    """``data.task`` of a run directory's config.yaml, read without loading the run (binary when it cannot be
    read: loading the run then says what is wrong)."""
    import yaml

    try:
        raw = yaml.safe_load((Path(run) / "config.yaml").read_text()) or {}
        return str((raw.get("data") or {}).get("task") or "binary")
    except (OSError, yaml.YAMLError, AttributeError):
        return "binary"


def _pick_multiclass(run: Path, device: str, spec, lambda_: Optional[str], n_boot: int) -> None:
    """`lossdial pick` on a multi-class run: (lambda, t) on validation, test once; the card entry and tables."""
    from lossdial.conditioning import parse_lambda_grid
    from lossdial.evaluate.multiclass import parse_adjustments
    from lossdial.evaluate.select import search_grid, select_point
    from lossdial.evaluate.sweep import NoFeasiblePoint, parse_multiclass_constraint
    from lossdial.report.card import MULTICLASS_CARD_METRICS, add_point, card_paths

    try:  # the arguments are checked before the run is loaded
        parse_multiclass_constraint(spec.constraint)
        parse_adjustments(spec.adjustments)
    except ValueError as exc:
        _fail(_exc_text(exc))
    loaded = _load_or_fail(run, device, "pick", multiclass=True)
    try:
        lambdas = parse_lambda_grid(lambda_) if lambda_ else None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            grid_text = search_grid(loaded, lambdas, given_as="--lambda")[1]
            entry = select_point(loaded, spec, lambdas=lambdas, n_boot=n_boot, given_as="--lambda")
    except NoFeasiblePoint as exc:  # the message names the one closest point
        err_console.print(f"[bold red]no point meets the constraint:[/] {exc}", highlight=False)
        raise typer.Exit(1)
    except (ValueError, KeyError) as exc:
        _fail(_exc_text(exc))
    for w in caught:
        _warn(w.message)
    console.print(_searched_text(loaded, grid_text, entry["adjustments_searched"]), highlight=False)
    add_point(loaded, spec.name, entry)
    prior = _PRIOR_TEXT.get(entry["prior_source"], entry["prior_source"])
    t = Table(title=f"point '{spec.name}': lambda {_lam_str(entry['lambda']) or '(fixed)'}, adjustment t "
                    f"{entry['adjustment']:g}; metrics at {prior}", title_justify="left",
              caption=f"{entry['n']['val']} validation / {entry['n']['test']} test samples; test 95% intervals: "
                      f"per-class stratified bootstrap ({entry['n_boot']} resamples); -: no class in the group",
              caption_justify="left")
    for col in ("metric", "val", "test", "CI (bootstrap)"):
        t.add_column(col, justify="left" if col == "metric" else "right", no_wrap=True)
    for k in MULTICLASS_CARD_METRICS:
        ci = entry["test_ci95"].get(k)
        t.add_row(k, _fmt(entry["val"].get(k)), _fmt(entry["test"].get(k)),
                  "" if not ci else f"{_fmt(ci[0])}–{_fmt(ci[1])}")
    console.print(t)
    c = Table(title="recall per class, with its training count", title_justify="left")
    for col in ("class", "train n", "val recall", "test recall"):
        c.add_column(col, justify="left" if col == "class" else "right", no_wrap=True)
    names = loaded.data["class_names"]
    for i, cname in enumerate(names):
        c.add_row(str(cname), str(entry["counts"]["train"][i]), _fmt(entry["val"]["per_class_recall"][i]),
                  _fmt(entry["test"]["per_class_recall"][i]))
    console.print(c)
    console.print("chosen on the validation split; the test split was scored once, after the point was fixed.")
    console.print(f"model card: {card_paths(run)[0]} and {card_paths(run)[1]}")


def _point_from_options(loaded, at: Optional[str], lambda_: Optional[str], threshold: Optional[float],
                        adjustment: Optional[float] = None):
    """The operating point of predict/export (:class:`lossdial.predict.OperatingPoint`): the model card's point
    ``at``, or the explicit --lambda with --threshold (binary) or --adjustment (multi-class)."""
    from lossdial.conditioning import parse_lambda_grid
    from lossdial.predict import operating_point
    from lossdial.report.card import load_card

    try:
        if at:
            given = [f for f, v in (("--lambda", lambda_), ("--threshold", threshold), ("--adjustment", adjustment))
                     if v is not None]
            if given:
                _fail(f"--at {at} fixes the whole operating point; drop {' and '.join(given)} (or drop --at and give "
                      f"the point explicitly)")
            card = load_card(loaded.path) or {"points": {}}
            if at not in card["points"]:
                _fail(f"no point named {at!r} in {loaded.path}/model_card.json; known: {sorted(card['points'])}. "
                      f"Create one with `lossdial pick {loaded.path} --name {at} ...`")
            return operating_point(loaded, card["points"][at], name=at)
        lam = None
        if loaded.is_lct and lambda_:
            grid = parse_lambda_grid(lambda_)
            if len(grid) != 1:
                _fail(f"--lambda must name one value per hyperparameter, got {len(grid)} combinations")
            lam = grid[0]
        return operating_point(loaded, lam=lam, threshold=threshold, adjustment=adjustment)
    except ValueError as exc:
        _fail(str(exc))


def _point_text(op) -> str:
    """'lambda tau=1, threshold 0.5' / 'lambda (fixed), adjustment t=0.5'."""
    lam = f"lambda {_lam_str(op.lam) if op.lam else '(fixed)'}"
    if op.adjustment is not None:
        return f"{lam}, adjustment t={op.adjustment:g}"
    return f"{lam}, threshold {op.threshold:.6g}"


@app.command()
def predict(
    run: Path = typer.Argument(..., help="A finished run directory."),
    input_: Path = typer.Argument(..., metavar="INPUT", help="Image folder/file, .npz (x [, ids]) or .csv."),
    at: Optional[str] = typer.Option(None, "--at", help="A named point from the model card."),
    lambda_: Optional[str] = typer.Option(None, "--lambda", help="Explicit lambda, e.g. tau=1.5."),
    threshold: Optional[float] = typer.Option(None, help="Explicit threshold on P(positive) (binary runs)."),
    adjustment: Optional[float] = typer.Option(None, "--adjustment", help="Explicit post-hoc logit adjustment t "
                                               "(multi-class runs): probabilities softmax(z_c - t log pi_c)."),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="Multi-class runs: how many classes per input "
                                        "(default 3, capped at the number of classes)."),
    out: Optional[Path] = typer.Option(None, "--out", help="CSV to write (default RUN/predictions/NAME.csv)."),
    device: str = typer.Option("auto"),
) -> None:
    """Score new data with the run's own preprocessing; writes a CSV of id, score, decision (binary) or id,
    class_1, prob_1, ..., class_k, prob_k (multi-class, most probable first)."""
    import numpy as np

    from lossdial.predict import (PredictInputError, check_top_k, predict as predict_fn, predict_topk, read_inputs,
                                  write_predictions, write_topk_predictions)

    loaded = _load_or_fail(run, device, "predict", multiclass=True)
    multiclass = loaded.task_type.name == "multiclass"
    if multiclass:
        top_k = 3 if top_k is None else top_k
        try:
            check_top_k(top_k)
        except ValueError as exc:
            _fail(str(exc))
    elif top_k is not None:
        _fail("--top-k applies to multi-class runs; a binary run writes one score (P(positive)) and a decision "
              "per input: drop --top-k")
    op = _point_from_options(loaded, at, lambda_, threshold, adjustment)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ids, x, notes = read_inputs(input_, loaded.data)
            if multiclass:
                top = predict_topk(loaded, x, op.lam, op.adjustment, top_k)
            else:
                scores, decisions = predict_fn(loaded, x, op.lam, op.threshold)
        except (PredictInputError, ValueError, KeyError) as exc:
            exc_text = _exc_text(exc)
        else:
            exc_text = None
    for w in caught:
        _warn(w.message)
    if exc_text is not None:
        _fail(exc_text)
    out = out or Path(run) / "predictions" / f"{at or 'custom'}-{Path(input_).stem}.csv"
    done = "; ".join(notes)
    head = f"{len(ids)} inputs scored at {_point_text(op)}{' (' + done + ')' if done else ''}"
    if multiclass:
        names = loaded.data["class_names"]
        write_topk_predictions(out, ids, top, names)
        n = np.bincount(top.classes[:, 0], minlength=len(names)) if len(ids) else np.zeros(len(names), int)
        counts = ", ".join(f"{names[c]} {int(n[c])}" for c in range(len(names)) if n[c])
        never = int((n == 0).sum())
        console.print(f"{head}: top-1 predictions per class: {counts or 'none'}"
                      f"{f' ({never} classes never top-1)' if never and len(ids) else ''}; top {top.classes.shape[1]} "
                      f"classes per input. Wrote {out}", highlight=False)
        return
    write_predictions(out, ids, scores, decisions)
    console.print(f"{head}: {int(decisions.sum())} predicted positive. Wrote {out}", highlight=False)


@app.command()
def export(
    run: Path = typer.Argument(..., help="A finished run directory."),
    at: Optional[str] = typer.Option(None, "--at", help="A named point from the model card."),
    lambda_: Optional[str] = typer.Option(None, "--lambda", help="Explicit lambda, e.g. tau=1.5 (instead of --at)."),
    threshold: Optional[float] = typer.Option(None, help="Explicit threshold on P(positive) (binary runs; recorded "
                                              "in export.json)."),
    adjustment: Optional[float] = typer.Option(None, "--adjustment", help="Explicit post-hoc logit adjustment t "
                                               "(multi-class runs), folded into the head."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder to write (default RUN/export/NAME)."),
) -> None:
    """Fix FiLM at the point's lambda (folded into a linear head; a fixed affine layer before a cosine head); for a
    multi-class run also the adjustment t (-t log pi_c added to the head's bias); write TorchScript, torch.export
    and a state dict."""
    from lossdial.export import export_run

    loaded = _load_or_fail(run, "cpu", "export", multiclass=True)
    op = _point_from_options(loaded, at, lambda_, threshold, adjustment)
    card_point = None
    if at:
        from lossdial.report.card import load_card

        card_point = load_card(run)["points"][at]
    if card_point is not None:
        point = dict(card_point)
    elif op.adjustment is not None:
        point = {"lambda": op.lam, "adjustment": op.adjustment}
    else:
        point = {"lambda": op.lam, "threshold": op.threshold}
    name = at or "custom"
    out = out or Path(run) / "export" / name
    try:
        meta = export_run(loaded, name, point, out)
    except ValueError as exc:
        _fail(str(exc))
    dial = (f"adjustment t={meta['adjustment']:g}" if meta.get("adjustment") is not None
            else f"threshold {meta['threshold']:.6g}")
    lam = _lam_str(meta["lambda"]) if meta["lambda"] else "(fixed)"
    console.print(f"exported point '{name}' (lambda {lam}, {dial}) to {out}: "
                  f"{', '.join(meta['files'].values())}, export.json (load model.pt2 with torch.export.load(...).module(), "
                  f"model.ts with torch.jit.load)")
    if meta.get("torch_export_error"):
        err_console.print(f"[yellow]warning:[/] torch.export failed ({meta['torch_export_error']}); TorchScript "
                          "and the state dict were written")


@app.command()
def report(
    runs: list[Path] = typer.Argument(..., help="One LCT run (first) and any baseline runs to overlay (all binary "
                                                "or all multi-class)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for report.html and PNGs (default FIRST_RUN/report)."),
    split: str = typer.Option("val", help="Split for the curves (val by default)."),
    lambda_: Optional[str] = typer.Option(None, "--lambda", help="Lambda values to draw (default 5 over the support; "
                                          "multi-class: the sweep's grid)."),
    prevalence: Optional[float] = typer.Option(None, help="Binary runs: prevalence for precision-type metrics "
                                               "(default: training)."),
    prior: Optional[str] = typer.Option(None, "--prior", help="Multi-class runs: the deployment class prior of "
                                        "`accuracy`: train (default), uniform, or p1,...,pC summing to 1."),
    adjustment: Optional[str] = typer.Option(None, "--adjustment", help="Multi-class runs: the post-hoc adjustment "
                                             "strengths t of a baseline's dial curve, lo:hi:n or t1,t2,... "
                                             "(default 0:2:9)."),
    device: str = typer.Option("auto"),
) -> None:
    """A self-contained, offline HTML report (OUT/report.html, PNGs beside it) with a live dial: sliders over
    lambda, the threshold (binary) or adjustment t (multi-class), the deployment prevalence or class prior and
    the costs, computed in the page from the validation sweep. Static figures: binary PR/ROC curves, metrics vs
    lambda, reliability, confusion matrices, learning curves; multi-class confusion matrices of every run,
    per-class recall against training count and the dial over lambda and t."""
    from lossdial.conditioning import parse_lambda_grid
    from lossdial.report.html import build_report

    loaded = [_load_or_fail(r, device, "report", multiclass=True) for r in runs]
    out = out or Path(runs[0]) / "report"
    try:
        lambdas = parse_lambda_grid(lambda_) if lambda_ else None
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            page = build_report(loaded, out, split=split, lambdas=lambdas, prevalence=prevalence, prior=prior,
                                adjustments=adjustment)
            from lossdial.report.sensitivity import add_to_report

            add_to_report(page, loaded, prevalence=prevalence, prior=prior)  # the sensitivity panel, its json
    except (ValueError, KeyError) as exc:
        _fail(_exc_text(exc))
    console.print(f"report: {page}")


@app.command()
def serve(
    run: Path = typer.Argument(..., help="A finished run directory."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (127.0.0.1: this machine only)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port to listen on (0: any free port)."),
    max_body_mb: float = typer.Option(16.0, "--max-body-mb", help="Largest request body accepted, in MiB; larger "
                                      "ones get 413 before they are read whole."),
    no_page: bool = typer.Option(False, "--no-page", help="Do not build the dial page (GET / answers 404)."),
    threads: int = typer.Option(1, "--threads", min=1, help="Torch threads per model pass (requests are scored one "
                                "after another). 1 suits small models and a shared CPU; raise it for large inputs on "
                                "a machine of its own."),
    device: str = typer.Option("auto"),
) -> None:
    """Serve the run over HTTP, the operating point chosen per request: POST /score (inputs as JSON arrays or
    rows, or uploaded files; "point": NAME, "points": [...], or "lambda" with "threshold" / "adjustment"),
    GET /points (the model card's points), GET /health, GET / (the dial page, built in the background at start)."""
    import socket
    import tempfile

    from lossdial.serve import require_serve_deps

    try:
        require_serve_deps()
    except ImportError as exc:
        _fail(str(exc))
    if not (math.isfinite(max_body_mb) and max_body_mb > 0):
        _fail(f"--max-body-mb must be a number > 0, got {max_body_mb}")
    import torch
    import uvicorn

    from lossdial.serve.app import create_app
    from lossdial.serve.page import PageBuild
    from lossdial.serve.service import Service

    torch.set_num_threads(threads)
    loaded = _load_or_fail(run, device, "serve", multiclass=True)
    if loaded.data.get("raw_input") is None:
        _warn(f"{run}/data.json has no raw_input record (the run was trained before lossdial recorded its input "
              f"format): requests are checked for their shape only, not their dtype and value range; retrain the "
              f"run to get the checks")
    try:
        sock = socket.create_server((host, port))
    except OSError as exc:
        _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc} (--port to choose another, --host another "
              f"address)")
    with tempfile.TemporaryDirectory(prefix="lossdial-serve-page-") as tmp:
        page = None if no_page else PageBuild(loaded, tmp, on_error=lambda e: _warn(
            f"the dial page could not be built ({e}); GET / answers 503, scoring is unaffected"))
        svc = Service(loaded)
        application = create_app(svc, max_body_bytes=max(1, int(max_body_mb * 2**20)), page=page)
        bound_host, bound_port = sock.getsockname()[:2]
        url_host = f"[{bound_host}]" if ":" in bound_host else bound_host
        points = ", ".join(svc.points) or "none (give lambda and the threshold/adjustment per request)"
        for name, why in svc.point_errors.items():
            _warn(f"model card point {name!r} is not served: {why}")
        console.print(f"serving {run} ({loaded.task_type.name}{', LCT' if loaded.is_lct else ', baseline'}) at "
                      f"http://{url_host}:{bound_port} on {loaded.device}; points: {points}; POST /score, GET /points, "
                      f"GET /health, GET /; request bodies up to {max_body_mb:g} MiB. Ctrl-C stops.",
                      highlight=False, soft_wrap=True)
        sys.stdout.flush()
        server = uvicorn.Server(uvicorn.Config(application, log_level="warning", access_log=False,
                                               timeout_graceful_shutdown=5))
        server.run(sockets=[sock])


def _beta(beta: float | None) -> str:
    return "natural (null)" if beta is None else f"{beta:g}"


@app.command()
def data(
    config: Path = typer.Argument(..., help="YAML config whose data section to build."),
    set_: list[str] = typer.Option([], "--set", help="Dotted override, e.g. --set data.beta=10 (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print data.json's content (as training would write it)."),
) -> None:
    """Build the data a config describes, without training: class counts per split, imbalance, cache."""
    from lossdial.data import build_task

    cfg = _load_config_or_fail(config, set_)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            task = build_task(cfg.data)
    except (ValueError, OSError) as exc:
        _fail(str(exc))
    for w in caught:
        _warn(w.message)
    d = task.describe()
    if as_json:
        from lossdial.rundir import dumps_json

        print(dumps_json(d))
        return
    src, tm = d["source"], d["task"]
    where = src.get("archive") or src.get("path") or ""
    console.print(f"[bold]source[/] {cfg.data.source} {where}", highlight=False)
    if src.get("cache"):
        state = "reused" if src.get("cache_hit") else "built now"
        console.print(f"[bold]cache[/] {src['cache']} ({state})", highlight=False)
    elif cfg.data.source == "image_folder" and not cfg.data.in_memory:
        console.print("[bold]cache[/] not used (data.in_memory: false: images are decoded from their files "
                      "while training)")
    elif cfg.data.source in ("image_folder", "cifar10_jpeg"):
        console.print("[bold]cache[/] off (data.cache: false)")
    console.print(f"[bold]inputs[/] {d['kind']} {d['dtype']} {d['input_shape']}", highlight=False)
    names = d["class_names"]
    if tm["task"] == "binary":
        console.print(f"[bold]task[/] binary: label 1 = {' + '.join(tm['positive_classes'])} (positive), label 0 = "
                      f"{' + '.join(tm['negative_classes'])}; beta = {_beta(tm['beta'])}", highlight=False)
    else:
        console.print(f"[bold]task[/] multiclass, {len(names)} classes, {tm['profile']} long tail, beta = "
                      f"{_beta(tm['beta'])}", highlight=False)
    pool = "test split" if tm["val_from"] == "test" else "training pool"
    console.print(f"[bold]splits[/] validation = {tm['val_fraction']:g} of the {pool} per class; test = "
                  f"{tm['test_split']}; data seed {tm['seed']}", highlight=False)
    table = Table(title_justify="left", pad_edge=False)
    table.add_column("label", justify="right")
    table.add_column("class")
    for s in ("train", "val", "test"):
        table.add_column(s, justify="right")
    for i, n in enumerate(names):
        table.add_row(str(i), n, *[str(d["counts"][s][i]) for s in ("train", "val", "test")])
    table.add_row("", "total", *[str(sum(d["counts"][s])) for s in ("train", "val", "test")])
    console.print(table)
    ratio = d["imbalance_ratio"]
    what = "n_neg / n_pos" if tm["task"] == "binary" else "n_max / n_min"
    console.print(f"training imbalance ratio {ratio:.2f} ({what})", highlight=False)


# ---------------------------------------------------------------------------------------------------------
# Experiments: baseline grid vs LCT over seeds

class _CompareProgress:
    """One bar over all runs (reused ones count as done), a step bar per run when training in-process."""

    def __init__(self, progress: Progress, jobs: int):
        self.progress, self.jobs = progress, jobs
        self.overall = None
        self.running: dict[str, _ProgressCallback] = {}
        self.eval_task = None

    def on_plan(self, runs) -> None:
        reused = sum(r.action == "reuse" for r in runs)
        info = f"{reused} finished runs reused" if reused else ""
        self.overall = self.progress.add_task("runs", total=len(runs), info=info)

    def on_run_start(self, run) -> None:
        if self.jobs > 1:
            self.progress.update(self.overall, info=f"training {self.jobs} at a time")

    def train_callback(self, run):
        cb = _ProgressCallback(self.progress, f"  {run.label}" + (" (resume)" if run.action == "resume" else ""))
        self.running[run.label] = cb
        return cb

    def on_run_end(self, run, seconds: float) -> None:
        self.progress.advance(self.overall)
        cb = self.running.pop(run.label, None)
        if cb is not None and cb.task is not None:
            self.progress.remove_task(cb.task)

    def tune_callback(self, seed: int):
        """Progress of the --tuned search of ``seed`` (a bar per trial, like a run)."""
        outer = self

        class _Trials:
            def on_study(self, name, storage, finished, total):
                task = next(t for t in outer.progress.tasks if t.id == outer.overall)
                outer.progress.update(outer.overall, total=(task.total or 0) + total - finished)

            def train_callback(self, number):
                cb = _ProgressCallback(outer.progress, f"  tuned/seed{seed} trial {number}")
                outer.running[f"tuned{seed}"] = cb
                return cb

            def on_trial_end(self, number, state, value, seconds):
                outer.progress.advance(outer.overall)
                cb = outer.running.pop(f"tuned{seed}", None)
                if cb is not None and cb.task is not None:
                    outer.progress.remove_task(cb.task)

        return _Trials()

    def on_evaluate(self, done: int, total: int) -> None:
        if self.eval_task is None:
            self.eval_task = self.progress.add_task("pick on val, score on test", total=total, info="")
        self.progress.update(self.eval_task, completed=done)


def _compare_table(result, transpose: bool) -> Table:
    METRICS = result.metric_specs  # the task type's metrics

    title = f"lossdial compare: {result.settings.get('config', '')} (mean ± std over seeds)"
    if result.is_multiclass:
        caption = (f"{result.protocol}. Each method's (run, lambda, t) is chosen per metric on validation, t the "
                   f"post-hoc logit adjustment over ({', '.join(f'{t:g}' for t in result.adjustments)}); Acc@prior, "
                   f"NLL and ECE at the class prior {result.prevalence_text()}. train s: total training seconds "
                   f"over runs and seeds ({result.device_text()}).")
    else:
        caption = (f"{result.protocol}. F1 and P@R (precision at recall r) are measured on test at the threshold "
                   f"chosen on validation; precision-type metrics at prevalence {result.prevalence_text()}. "
                   f"train s: total training seconds over runs and seeds ({result.device_text()}).")
    if result.variants_text():
        caption += f" Rows: {result.variants_text()}."
    heads = [f"{s.label} {'↑' if s.higher_is_better else '↓'}" for s in METRICS]
    t = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
    if not transpose:
        t.add_column("method", no_wrap=True)
        for h in heads:
            t.add_column(h, justify="right", no_wrap=True)
        t.add_column("train s", justify="right", no_wrap=True)
        for m in result.methods:
            t.add_row(m.label, *[result.cell(m.name, s.key) for s in METRICS],
                      f"{result.train_seconds[m.name]:.0f}")
        return t
    t.add_column("metric", no_wrap=True)
    for m in result.methods:
        t.add_column(m.label, justify="right")
    for s, h in zip(METRICS, heads):
        t.add_row(h, *[result.cell(m.name, s.key) for m in result.methods])
    t.add_row("train s", *[f"{result.train_seconds[m.name]:.0f}" for m in result.methods])
    return t


@app.command()
def compare(
    config: Path = typer.Argument(..., help="YAML config: the data, model and recipe every run shares."),
    baseline_grid: Optional[str] = typer.Option(
        None, "--baseline-grid", help='Baseline loss.params grid, e.g. "gamma=0,0.1,0.2,0.3 tau=0,1,2,3" '
        '(cartesian product; one baseline run per point and seed).'),
    lct: list[str] = typer.Option([], "--lct", help='LCT law, e.g. "tau~L(0,3,0.33)" (repeatable: one LCT model '
                                  'per law and seed).'),
    variant: list[str] = typer.Option([], "--variant", help='Ablation row NAME=KEY=VALUE[,KEY=VALUE...]: the config '
                                      'with those overrides (the --set rule; commas inside brackets, parentheses or '
                                      'quotes do not split), e.g. "sam=optim.sam.rho=0.05" (repeatable). With '
                                      '--variant, the config as given is also a row: base.'),
    seeds: int = typer.Option(3, "--seeds", help="Seeds per configuration: the config's seed, seed+1, ..."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Trainings at once (worker processes; the CPU cores are split "
                             "between them; on a GPU they share it)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Comparison folder (default runs/NAME/compare). "
                                       "Re-run the same command to continue a killed compare."),
    set_: list[str] = typer.Option([], "--set", help="Dotted override for every run, e.g. --set train.epochs=50."),
    quick: bool = typer.Option(False, "--quick", help="The demo's quick preset (fewer epochs, no periodic "
                               "validation) before --set."),
    vary_data_seed: bool = typer.Option(False, "--vary-data-seed", help="Vary data.seed with the seed (default: "
                                        "every seed reuses the same data subsample and splits)."),
    lambda_: Optional[str] = typer.Option(None, "--lambda", help='Lambda grid LCT models are swept over on validation '
                                          '(default: evaluate.lambda of the config, else 33 points over the support).'),
    prevalence: Optional[float] = typer.Option(None, help="Prevalence for precision-type metrics (default: the "
                                               "training prevalence, as `pick` uses)."),
    prior: Optional[str] = typer.Option(None, "--prior", help="Multi-class runs: the deployment class prior of "
                                        "Acc@prior, NLL and ECE: train (default), uniform, or p1,...,pC summing to 1."),
    adjustment: Optional[str] = typer.Option(None, "--adjustment", help="Multi-class runs: the grid of post-hoc "
                                             "adjustment strengths t searched with every lambda, lo:hi:n or "
                                             "t1,t2,... (default 0:2:9)."),
    device: Optional[str] = typer.Option(None, help="Training device (default: train.device of the config)."),
    stacked: bool = typer.Option(False, "--stacked", help="Train the baseline grid (all seeds) as one stacked model "
                                 "and the LCT runs as another (torch.func.vmap; fast on a GPU; in-memory data "
                                 "only; unfinished runs restart instead of resuming)."),
    tuned: Optional[str] = typer.Option(None, "--tuned", help='Add a tuned baseline: per seed an Optuna (TPE) search '
                                        'of the baseline over these loss parameters, e.g. "gamma~U(0,0.3) tau~U(0,3)" '
                                        '(needs --budget; pip install lossdial[tune]).'),
    budget: Optional[int] = typer.Option(None, "--budget", help="Trials per seed of the --tuned search."),
    tune_metric: Optional[str] = typer.Option(None, "--tune-metric", help="Validation metric of the --tuned search "
                                              "(default ap; balanced_accuracy for multi-class)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Baseline grid vs LCT vs ablation variants over seeds: train all, pick each method's best point per metric
    on validation, score it once on test; one table of mean ± std over seeds (+ compare.json/.csv/.md in --out)."""
    from lossdial.config import ConfigError
    from lossdial.demo import QUICK_OVERRIDES
    from lossdial.experiments import CompareError, compare as compare_fn
    from lossdial.rundir import RunError

    if not baseline_grid and not lct and not tuned and not variant:
        _fail('give --baseline-grid, --lct, --variant and/or --tuned, e.g. --baseline-grid "tau=0,1,2" --lct '
              '"tau~L(0,3,0.33)" --variant "small_batch=train.batch_size=32" --tuned "tau~U(0,3)" --budget 8')
    if tuned or budget is not None:
        try:
            import optuna

            optuna.logging.set_verbosity(optuna.logging.WARNING)
        except ImportError:
            _fail("compare --tuned needs Optuna: pip install lossdial[tune]")
    overrides = (list(QUICK_OVERRIDES) if quick else []) + list(set_)
    cfg = _load_config_or_fail(config, overrides)
    out = out or Path("runs") / cfg.name / "compare"
    t0 = time.perf_counter()
    try:
        with _progress(quiet) as progress:
            result = compare_fn(config, out=out, baseline_grid=baseline_grid, lct=lct, variants=variant, seeds=seeds,
                                overrides=overrides, jobs=jobs, vary_data_seed=vary_data_seed, device=device,
                                lct_lambdas=lambda_, prevalence=prevalence,
                                callback=_CompareProgress(progress, jobs), stacked=stacked, prior=prior,
                                adjustments=adjustment, tuned=tuned, budget=budget, tune_metric=tune_metric)
    except KeyboardInterrupt:
        err_console.print(f"interrupted; run the same command again (same --out {out}) to continue: finished "
                          f"runs are reused and unfinished ones " + ("restart (stacks do not checkpoint)" if stacked
                                                                    else "resume"))
        raise typer.Exit(130)
    except (CompareError, ConfigError, RunError, ValueError, KeyError) as exc:
        _fail(_exc_text(exc))
    wide = _compare_table(result, transpose=False)
    transpose = console.measure(wide, options=console.options.update(width=10_000)).maximum > console.width
    console.print(_compare_table(result, transpose=transpose))
    console.print(f"compare finished in {time.perf_counter() - t0:.1f} s; wrote {result.files['json']}, "
                  f"{result.files['csv']} and {result.files['md']}", highlight=False)


# ---------------------------------------------------------------------------------------------------------
# Hyperparameter search of the baseline (Optuna)

class _TuneProgress:
    """One line per finished trial; a step bar while a trial trains."""

    def __init__(self, progress: Progress, metric: str):
        self.progress, self.metric, self.bar, self.waiting = progress, metric, None, False

    def on_study(self, name: str, storage: str, finished: int, total: int) -> None:
        self.progress.console.print(f"study [bold]{escape(name)}[/] ({escape(storage)}): {finished} of {total} "
                                    f"trials finished before this worker", highlight=False)

    def on_trial_start(self, number: int, params: dict[str, Any], run_dir: Path) -> None:
        self.waiting = False

    def train_callback(self, number: int):
        self.bar = _ProgressCallback(self.progress, f"trial {number}")
        return self.bar

    def on_trial_end(self, number: int, state: str, value: float | None, seconds: float) -> None:
        if self.bar is not None and self.bar.task is not None:
            self.progress.remove_task(self.bar.task)
        self.bar = None
        val = "" if value is None else f" val {self.metric} {value:.4f}"
        self.progress.console.print(f"trial {number}: {state}{val} ({seconds:.1f} s)", highlight=False)

    def on_wait(self, running: int) -> None:
        if not self.waiting:
            self.progress.console.print(f"waiting for {running} trial(s) running in other workers (a killed "
                                        f"worker's trial is retried here)", highlight=False)
        self.waiting = True


@app.command()
def tune(
    config: Path = typer.Argument(..., help="YAML config; every trial trains its baseline (lct.enabled: false)."),
    space: str = typer.Option(..., "--space", help='Search space in lambda syntax: a bare name is a loss parameter, '
                              'a dotted one a config key, e.g. "gamma~U(0,0.3) tau~U(0,3) optim.lr~LogU(1e-3,1e-1)" '
                              '(U, LogU ranges; {v1,v2,...} choices).'),
    trials: int = typer.Option(..., "--trials", help="Finished (complete or pruned) trials of the study in total, "
                               "over all its workers."),
    metric: Optional[str] = typer.Option(None, "--metric", help="Validation metric to optimise: ap (binary default), "
                                         "auc, brier; balanced_accuracy (multi-class default), ..."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for this worker's trial runs and tune.json/.md/.csv "
                                       "and figures (default runs/NAME/tune)."),
    set_: list[str] = typer.Option([], "--set", help="Dotted override, as in train (repeatable)."),
    quick: bool = typer.Option(False, "--quick", help="The demo's quick preset (fewer epochs, no periodic "
                               "validation) before --set."),
    sampler: str = typer.Option("tpe", "--sampler", help="tpe, random or grid."),
    pruner: str = typer.Option("none", "--pruner", help="none, hyperband or median (fed each validation epoch's "
                               "metric; needs train.eval_every >= 1)."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage shared by the workers: a journal "
                                          "file path (default OUT/tune.journal), sqlite:///FILE or an RDB URL "
                                          "(postgresql://..., mysql://...)."),
    study: Optional[str] = typer.Option(None, "--study", help="Study name (default: from the config's name and "
                                        "the space, never from --out)."),
    device: Optional[str] = typer.Option(None, help="Training device (default: train.device of the config)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    prevalence: Optional[float] = typer.Option(None, help="Binary runs: the prevalence each trial's AP / Brier is "
                                               "measured at (default: the training prevalence, as compare and pick "
                                               "use)."),
    prior: Optional[str] = typer.Option(None, "--prior", help="Multi-class runs: the deployment class prior of "
                                        "Acc@prior, NLL and ECE: train (default), uniform, or p1,...,pC summing to 1."),
) -> None:
    """Optuna search of the baseline's hyperparameters, chosen on validation; the best trial scored once on test.
    Start the same command on several processes or machines (one --storage) to share the study; re-run it to
    continue a killed one."""
    from lossdial.config import ConfigError
    from lossdial.demo import QUICK_OVERRIDES
    from lossdial.experiments.tune import TuneError, tune as tune_fn
    from lossdial.rundir import RunError, fmt_value

    overrides = (list(QUICK_OVERRIDES) if quick else []) + list(set_)
    cfg = _load_config_or_fail(config, overrides)
    out = out or Path("runs") / cfg.name / "tune"
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
    except ImportError:
        _fail("lossdial tune needs Optuna: pip install lossdial[tune]")
    if cfg.lct.enabled:
        console.print("trials train the baseline: lct.enabled is set to false (loss.params at each trial's values)",
                      highlight=False)
    try:
        from lossdial.experiments.tune import baseline_config, tune_metric

        key = tune_metric(baseline_config(cfg), metric)[0]
        with _WarningLines(), _progress(quiet) as progress:
            result = tune_fn(config, out=out, space=space, trials=trials, metric=metric, overrides=overrides,
                             sampler=sampler, pruner=pruner, storage=storage, study=study, device=device,
                             callback=_TuneProgress(progress, key), prevalence=prevalence, prior=prior)
    except KeyboardInterrupt:
        err_console.print("interrupted; run the same command again to continue the study (this worker's running "
                          "trial is retried)")
        raise typer.Exit(130)
    except (TuneError, ConfigError, RunError, ValueError, KeyError) as exc:
        _fail(_exc_text(exc))
    t = Table(title=f"lossdial tune: {result.study_name}", title_justify="left",
              caption=f"baseline (LCT off) trials, chosen on validation {result.metric} "
                      f"{result.scoring_text()}; {len(result.finished)} of {result.target_trials} finished; "
                      f"{result.train_seconds:.0f} s of training", caption_justify="left")
    names = result.names
    for h in ["trial", "state", *names, f"val {result.metric}", "s"]:
        t.add_column(h, justify="left" if h == "state" else "right", no_wrap=True)
    for r in result.trials:
        if r["no_slot"]:
            continue
        t.add_row(str(r["number"]), r["state"] + (f" (retry of {r['retry_of']})" if r["retry_of"] is not None else ""),
                  *[fmt_value(r["params"].get(n), ".4g") for n in names], _fmt(r["value"]), _fmt(r["seconds"]))
    console.print(t)
    if result.best is None:
        console.print("no trial completed: nothing to score on test", highlight=False)
    else:
        b = result.best
        params = " ".join(f"{k}={v:.4g}" for k, v in b["params"].items())
        tm = (result.test or {}).get("metrics")
        test = f"test {result.metric} {_fmt(tm.get(result.metric))}" if tm else (result.test or {}).get("note", "")
        console.print(f"best: trial {b['number']} ({params}): val {result.metric} {_fmt(b['value'])}; {test} "
                      f"(run {b['run_dir']})", highlight=False)
    console.print(f"this worker: {result.sampler} sampler seed {result.worker['sampler_seed']} (worker "
                  f"{result.worker['worker'][:8]} on {result.worker['host']})", highlight=False)
    console.print(f"wrote {result.files['json']}, {result.files['md']}, {result.files['csv']} and figures "
                  f"({', '.join(p.name for k, p in result.files.items() if k not in ('json', 'md', 'csv'))})",
                  highlight=False)

def _weighting_option(text: str):
    """--weighting: a name of lossdial.retrain.WEIGHTINGS, or a number (binary: the minority class weight)."""
    from lossdial.retrain import WEIGHTINGS

    if text in WEIGHTINGS:
        return text
    try:
        value = float(text)
    except ValueError:
        _fail(f"--weighting {text!r}: use one of {', '.join(WEIGHTINGS)} or a number (the minority class weight)")
    return value


@app.command()
def retrain(
    run: Path = typer.Argument(..., help="A finished run directory (baseline or LCT) whose backbone is kept."),
    out: Path = typer.Option(..., "--out", help="The new run directory (backbone + retrained last layer)."),
    weighting: str = typer.Option("omega_star", "--weighting", help="omega_star (default; computed from n per "
                                  "class/group and d_eff), prior, none, downsample, tuned (a grid around omega*, "
                                  "chosen on the selection half) or a number (binary: the minority weight)."),
    alpha: float = typer.Option(0.0, "--alpha", help="Ridge strength on the standardised features (0: ridgeless)."),
    pca: Optional[int] = typer.Option(None, "--pca", help="Retrain on the first K principal components "
                                      "(default: all features; reduced automatically, with a warning, when no "
                                      "finite omega* exists)."),
    groups: Optional[str] = typer.Option(None, "--groups", help="A column of the run's table source holding "
                                         "group labels: weights per group, worst-group choices."),
    seed: int = typer.Option(0, "--seed", help="Seed of the retraining/selection halves of the validation split."),
    split: str = typer.Option("val", "--split", help="val: fit on half of the validation split, choose on the other "
                              "half (default); train: fit on the split that data.retrain_fraction held out of the "
                              "training pool, choose on the whole validation split."),
    device: str = typer.Option("auto"),
    force: bool = typer.Option(False, "--force", help="Overwrite a run already at --out."),
) -> None:
    """Retrain the last layer of RUN on frozen backbone features with loss weights that account for
    overparameterization (omega*; Stromberg, Thrampoulidis & Sankar 2025). Half of the validation split fits the
    layer, the other half is the new run's validation split (every later choice); or, with --split train, the
    share of the training pool that data.retrain_fraction kept from training fits it. The test split is not
    used. The new run works with sweep, pick, predict, export and report."""
    from lossdial.retrain.run import retrain_run
    from lossdial.rundir import RunError

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            res = retrain_run(run, out, weighting=_weighting_option(weighting), alpha=alpha, pca=pca,
                              groups=groups, seed=seed, split=split, device=device, force=force)
        except (RunError, ValueError) as exc:
            _fail(_exc_text(exc))
    for w in caught:
        if w.category.__name__ == "InfeasibleWeightWarning":
            _warn(w.message)
    r = res.record
    counts = " / ".join(str(v) for v in r["n_retrain"])
    dims = f"d = {r['d']}, d_eff = {r['d_eff']:.4g}" + (f" ({r['n_components']} PCA components)"
                                                        if r["n_components"] is not None else "")
    weight = (f"omega* = {r['omega_star']:.4g}" if r["omega_star"] is not None
              else "class weights " + ", ".join(f"{v:.4g}" for v in r["class_weight"]))
    if r["group_weight"]:
        weight = "group weights " + ", ".join(f"{k}: {v:.4g}" for k, v in r["group_weight"].items())
    console.print(f"retrained the last layer of {run} ({'LCT, FiLM dropped' if r['source_lct'] else 'baseline'}) "
                  f"with weighting {r['weighting']}: {counts} retraining samples per class, {dims}, {weight}"
                  f"{'' if r['feasible'] else ' (no finite omega* at the full dimension)'}; "
                  f"{' / '.join(str(v) for v in r['n_select'])} selection samples per class (the new run's "
                  f"validation split).", highlight=False)
    console.print(f"Run directory: [bold]{res.run_dir}[/]. Next: lossdial pick {res.run_dir} --at "
                  f"\"recall>=0.9\"", highlight=False)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted; resume with `lossdial train --out RUN --resume`")
        sys.exit(130)


if __name__ == "__main__":
    main()
