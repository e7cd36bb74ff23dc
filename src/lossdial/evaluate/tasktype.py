"""The two task types, binary and multi-class, behind one interface.

Training, the periodic and final validation, and ``evaluate_run`` do not branch on the task: they ask the
run's task type (:func:`task_type`: :class:`BinaryTask` or :class:`MultiClassTask`) what to score and how
to measure it.

- ``score_output``: what :func:`lossdial.evaluate.scoring.score_lambdas` returns for the task --
  binary: P(positive) ``[K, N]``; multi-class: the logits ``[K, N, C]`` (the post-hoc adjustment
  ``z_c - t log pi_c`` acts on logits, and softmax of them gives the probabilities).
- ``metrics(y, scores, train_counts=, config=, ...)``: one row's metrics on one score array (binary:
  ``binary_metrics`` at a decision threshold and a deployment prevalence; multi-class: ``multiclass_metrics``
  of the softmax at a deployment class prior, at t = 0).
- ``check_options(...)``: the options given are those of this task type, and well formed.
- ``periodic_keys``: the validation entries of an epoch record (``metrics.jsonl``).

Options that belong to the other task type are refused here, at one place, naming the option that applies:
a binary run takes a threshold and a prevalence, a multi-class run a class prior.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

#: The multi-class deployment prior when none is given: the training class frequencies (as binary precision
#: defaults to the training prevalence in ``pick``).
DEFAULT_PRIOR = "train"


@dataclass(frozen=True)
class BinaryTask:
    name: str = "binary"
    score_output: str = "positive"
    periodic_keys: tuple[str, ...] = ("auc", "ap", "brier", "f1")

    def metrics(self, y: np.ndarray, scores: np.ndarray, *, train_counts: Sequence[int], config,
                threshold: float | None = None, prevalence: float | None = None,
                prior: Any = None) -> dict[str, Any]:
        """:func:`~lossdial.evaluate.classification.binary_metrics` of P(positive) ``scores`` ``[N]`` at
        ``threshold`` (default: the run's ``evaluate.threshold``) and ``prevalence`` (default: the split's own)."""
        from lossdial.evaluate.classification import binary_metrics

        self.check_options(train_counts=train_counts, threshold=threshold, prevalence=prevalence, prior=prior)
        thr = config.evaluate.threshold if threshold is None else threshold
        return binary_metrics(y, scores, threshold=thr, prevalence=prevalence)

    def check_options(self, *, train_counts: Sequence[int], threshold: float | None = None,
                      prevalence: float | None = None, prior: Any = None) -> None:
        """Refuse the options of the other task type (a class prior), naming the ones that apply."""
        if prior is not None:
            raise ValueError("--prior (a class prior) applies to multi-class runs; a binary run takes "
                             "--prevalence (the positive prevalence) and --threshold")


def shot_thresholds_of(config) -> tuple[int, int]:
    """``evaluate.shot_thresholds`` of a run's config ((100, 20) without a config)."""
    from lossdial.evaluate.multiclass import SHOT_THRESHOLDS

    return tuple(config.evaluate.shot_thresholds) if config is not None else tuple(SHOT_THRESHOLDS)


@dataclass(frozen=True)
class MultiClassTask:
    name: str = "multiclass"
    score_output: str = "logits"
    periodic_keys: tuple[str, ...] = ("accuracy", "balanced_accuracy", "worst_class_accuracy",
                                      "few_shot_accuracy", "nll")

    def metrics(self, y: np.ndarray, scores: np.ndarray, *, train_counts: Sequence[int], config=None,
                threshold: float | None = None, prevalence: float | None = None,
                prior: Any = None) -> dict[str, Any]:
        """:func:`~lossdial.evaluate.multiclass.multiclass_metrics` of the softmax of the logits ``scores``
        ``[N, C]`` (no adjustment: t = 0) at the deployment class ``prior`` (default: the training prior)."""
        from lossdial.evaluate.multiclass import multiclass_metrics, softmax

        self.check_options(train_counts=train_counts, threshold=threshold, prevalence=prevalence, prior=prior)
        return multiclass_metrics(np.asarray(y), softmax(scores), train_counts=list(train_counts),
                                  prior=DEFAULT_PRIOR if prior is None else prior,
                                  shot_thresholds=shot_thresholds_of(config))

    def check_options(self, *, train_counts: Sequence[int], threshold: float | None = None,
                      prevalence: float | None = None, prior: Any = None) -> None:
        """Refuse a threshold or a prevalence (binary options) and a malformed prior (wrong length, not a
        distribution: ``class_prior`` says which)."""
        from lossdial.evaluate.multiclass import class_prior

        if threshold is not None or prevalence is not None:
            given = " and ".join(f for f, v in (("--threshold", threshold), ("--prevalence", prevalence))
                                 if v is not None)
            raise ValueError(f"{given} apply to binary runs (a threshold on P(positive)); a multi-class run "
                             f"takes --prior train|uniform|p1,...,pC (the deployment class prior)")
        class_prior(DEFAULT_PRIOR if prior is None else prior, list(train_counts))


TASK_TYPES = {"binary": BinaryTask(), "multiclass": MultiClassTask()}


def task_type(name: str | None) -> BinaryTask | MultiClassTask:
    """The task type of ``data.task`` (``"binary"`` or ``"multiclass"``; None: binary, as old runs)."""
    try:
        return TASK_TYPES[name or "binary"]
    except KeyError:
        raise ValueError(f"unknown task type {name!r}; known: {sorted(TASK_TYPES)}") from None
