"""``LossDialClassifier``: a scikit-learn classifier for tables, trained once over a family of loss settings.

It is the library's model, loss and lambda space behind scikit-learn's estimator contract::

    from sklearn.compose import make_column_transformer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder
    from lossdial.sklearn import LossDialClassifier

    encode = make_column_transformer((OneHotEncoder(handle_unknown="ignore"), ["merchant"]), remainder="passthrough")
    model = make_pipeline(encode, LossDialClassifier(lct="tau~L(0,3,0.33)", random_state=0)).fit(X_train, y_train)
    model[-1].pick(encode.transform(X_val), y_val, at="recall>=0.9")  # sets lam and threshold, no refit
    model.predict(X_test)

What ``fit`` builds (the same factories as ``lossdial train``: :func:`~lossdial.train.factory.build_lambda_space`,
:func:`~lossdial.train.factory.build_loss_fn`, :func:`~lossdial.train.factory.build_model_from_config`,
:func:`~lossdial.train.factory.build_optimizer`, :func:`~lossdial.train.factory.build_scheduler`, from a
validated :class:`~lossdial.config.Config`): an MLP backbone (``hidden``), with ``lct`` a FiLM head conditioned
on lambda, trained in memory by a short loop (no run directory, no validation split: ``fit`` uses every row it is
given). Features are standardised with the training mean and standard deviation
(:class:`~lossdial.data.task.Normalizer`), so no scaler is needed in front of it.

The positive class of a binary task is ``classes_[1]`` (scikit-learn's convention: the larger label in sorted
order), whichever class is rarer. Every binary loss parameter that weighs "the minority class" in the method
reference weighs ``classes_[1]`` here: VS's ``omega`` is the weight of ``classes_[1]`` (``1 - omega`` that of
``classes_[0]``), focal's ``alpha`` likewise, and ``predict_proba[:, 1]`` / ``threshold`` / ``pick``'s recall and
precision are about ``classes_[1]``. If the rare class sorts first, relabel ``y`` (e.g. ``y == "fraud"``) so it
sorts last.

The dial (ordinary parameters, not fitted state, so ``set_params`` changes predictions without refitting):

- ``lam``: the loss hyperparameters to predict at (an LCT model): a mapping such as ``{"tau": 2.0}`` or the text
  ``"tau=2"``; names left out take the mean of their training law; None: every law's mean. It must lie in the
  training support (``ValueError`` otherwise). A baseline model (``lct=None``) takes only ``lam=None``.
- ``threshold`` (binary): predict ``classes_[1]`` when ``predict_proba[:, 1] >= threshold``; None: 0.5.
- ``adjustment`` (multi-class): the post-hoc logit adjustment t, probabilities ``softmax(z_c - t log pi_c)`` with
  pi the training class frequencies; None: 0 (the model's own probabilities).

:meth:`LossDialClassifier.pick` sets them from a validation set with the rules of ``lossdial pick``.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, column_or_1d, validate_data

__all__ = ["LossDialClassifier"]

#: rows scored per forward pass at prediction time
_PREDICT_BATCH = 4096

#: config keys as the estimator's parameters (for messages from config validation)
_PARAM_OF_KEY = (
    ("loss.params", "loss_params"), ("loss.family", "loss"), ("lct.lambda", "lct"),
    ("model.backbone_kwargs", "hidden / dropout"), ("model.film_hidden", "film_hidden"), ("model.film", "film"),
    ("optim.name", "optimizer"), ("optim.lr", "learning_rate"), ("optim.weight_decay", "weight_decay"),
    ("train.epochs", "epochs"), ("train.batch_size", "batch_size"), ("train.device", "device"), ("seed", "random_state"),
    ("loss.smoothing.a_max", "smoothing_a_max"), ("loss.smoothing.a_min", "smoothing_a_min"),
    ("loss.smoothing", "smoothing_a_max"), ("ssl.weight", "ssl_weight"), ("ssl.corruption", "ssl_corruption"),
    ("ssl.temperature", "ssl_temperature"),
)

#: Joint-SSL's projector in the estimator: Linear(F, 256) -> ReLU -> Linear(256, 128) (SCARF's head width, not
#: the 2048 of the image recipe, which would dwarf a small MLP)
_SSL_PROJECTOR = (256, 128)


def _label(v) -> Any:
    """A class label as a plain Python value (for messages: 1, not np.int64(1))."""
    return v.item() if isinstance(v, np.generic) else v


def _non_numeric_columns(X) -> list[str]:
    """The columns of a DataFrame-like ``X`` whose dtype is not a number or a bool ([] for arrays)."""
    columns, dtypes = getattr(X, "columns", None), getattr(X, "dtypes", None)
    if columns is None or dtypes is None or not hasattr(dtypes, "__iter__"):
        return []
    return [str(c) for c, dt in zip(columns, dtypes) if getattr(dt, "kind", "O") not in "biuf"]


class LossDialClassifier(ClassifierMixin, BaseEstimator):
    """An MLP classifier for imbalanced tables, optionally trained over a whole family of losses (LCT).

    Parameters
    ----------
    hidden : tuple of int, default=(64, 64)
        Widths of the MLP's hidden layers (``()``: a linear model on the standardised features).
    dropout : float, default=0.0
        Dropout after each hidden layer.
    loss : str, default="vs"
        Loss family: ``"vs"``, ``"focal"``, ``"ldam"``, ``"logit_adjust"``, ``"weighted_ce"``, ``"smoothing"``.
    loss_params : dict or None, default=None
        Fixed hyperparameters of the family (None: its defaults; VS: ``omega=0.5, gamma=0.2, tau=1.0``, omega only
        for binary tasks). Binary ``omega`` (VS) and ``alpha`` (focal) weigh ``classes_[1]``.
    lct : str, dict or None, default=None
        The LCT law: the loss hyperparameters trained over and their distributions, e.g. ``"tau~L(0,3,0.33)"`` or
        ``{"tau": "L(0,3,0.33)", "gamma": "U(0,0.3)"}`` (lossdial's syntax). None trains one fixed loss.
    film : {"identity", "reference"}, default="identity"
        FiLM form of an LCT model.
    film_hidden : int, default=64
        Hidden width of the FiLM networks.
    optimizer : {"adamw", "sgd"}, default="adamw"
    learning_rate : float, default=1e-3
    weight_decay : float, default=1e-4
        Applied to weight matrices only (biases and FiLM biases are not decayed).
    epochs : int, default=50
        Passes over the training rows (cosine learning-rate schedule over them).
    batch_size : int or "auto", default="auto"
        Rows per step; "auto": ``min(256, max(32, n_samples // 10))``, about ten steps per epoch on small tables
        and batches of 256 on large ones.
    lam : dict, str or None, default=None
        The lambda predictions are made at (LCT models; see the module docstring).
    threshold : float or None, default=None
        Binary: the decision threshold on ``predict_proba[:, 1]`` (None: 0.5).
    adjustment : float or None, default=None
        Multi-class: the post-hoc logit adjustment t (None: 0).
    smoothing_a_max : float or None, default=None
        Class-conditional label smoothing (Shwartz-Ziv et al. 2023; ``loss.smoothing``): the smoothing of the
        rarest class, in [0, 1); None: off. Not for ``loss="smoothing"`` (which already is it).
    smoothing_a_min : float, default=0.0
        The smoothing of the most frequent class, in [0, smoothing_a_max] (classes between: interpolated in
        log-count). With ``lct``, ``a_max`` may be a dial like ``tau`` (``lct="a_max~U(0,0.3)"``).
    ssl_weight : float or None, default=None
        Joint-SSL (``ssl``): mu in ``loss + mu * NT-Xent`` of two views of each batch, the rows and their SCARF
        corruptions (Bahri et al. 2022), through a projector ``Linear(F, 256) -> ReLU -> Linear(256, 128)`` on the
        MLP's features; None: off.
    ssl_corruption : float, default=0.6
        The fraction of each row's features replaced by the same features of random training rows (SCARF's 0.6).
    ssl_temperature : float, default=0.5
        NT-Xent temperature.
    random_state : int, RandomState or None, default=None
        Seeds initialisation, shuffling and lambda draws (separate streams). With an int, ``fit`` on the CPU is
        reproducible bit for bit.
    device : str, default="cpu"
        Training device (``"auto"``: CUDA, then MPS, else CPU). Predictions run on the CPU.
    verbose : int, default=0
        1: print one line per epoch (training loss, seconds). 0: silent.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
    feature_names_in_ : ndarray of str (only when ``X`` had string column names)
    class_counts_ : ndarray of shape (n_classes,)
        Training rows per class (the loss's class counts and the prior of ``adjustment``).
    lambda_space_ : LambdaSpace or None
        The trained lambda space (None for a baseline model).
    model_ : ConditionedClassifier
        The network (on the CPU).
    normalizer_ : Normalizer
        Per-feature training mean and standard deviation.
    config_ : Config
        The validated lossdial configuration the parameters describe.
    loss_curve_ : list of float
        Mean training loss per epoch.
    n_iter_ : int
        Epochs run.
    operating_point_ : dict
        Set by :meth:`pick`: the chosen point and its validation metrics.
    """

    def __init__(self, hidden=(64, 64), dropout=0.0, loss="vs", loss_params=None, lct=None, film="identity",
                 film_hidden=64, optimizer="adamw", learning_rate=1e-3, weight_decay=1e-4, epochs=50,
                 batch_size="auto", lam=None, threshold=None, adjustment=None, smoothing_a_max=None,
                 smoothing_a_min=0.0, ssl_weight=None, ssl_corruption=0.6, ssl_temperature=0.5, random_state=None,
                 device="cpu", verbose=0):
        self.hidden = hidden
        self.dropout = dropout
        self.loss = loss
        self.loss_params = loss_params
        self.lct = lct
        self.film = film
        self.film_hidden = film_hidden
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.epochs = epochs
        self.batch_size = batch_size
        self.lam = lam
        self.threshold = threshold
        self.adjustment = adjustment
        self.smoothing_a_max = smoothing_a_max
        self.smoothing_a_min = smoothing_a_min
        self.ssl_weight = ssl_weight
        self.ssl_corruption = ssl_corruption
        self.ssl_temperature = ssl_temperature
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    # ------------------------------------------------------------------------------------------ sklearn plumbing
    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "model_")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags

    def _validate_X(self, X, reset: bool, y: Any = "no_validation"):
        bad = _non_numeric_columns(X)
        if bad:
            raise ValueError(f"{type(self).__name__} takes numeric features, but column(s) {bad} are not numeric; "
                             f"encode them first, e.g. with a ColumnTransformer and a OneHotEncoder in a Pipeline")
        if isinstance(X, np.ndarray) and X.dtype.kind in "US":
            raise ValueError(f"{type(self).__name__} takes numeric features, but X is an array of strings "
                             f"(dtype {X.dtype}); encode them first, e.g. with a OneHotEncoder")
        return validate_data(self, X, y, reset=reset, dtype=[np.float64, np.float32])

    # ------------------------------------------------------------------------------------------------ the config
    def _batch_size(self, n_samples: int):
        """``batch_size``, with "auto" resolved for ``n_samples`` rows (anything else is checked by the config)."""
        if isinstance(self.batch_size, str) and self.batch_size == "auto":
            return min(256, max(32, n_samples // 10))
        return self.batch_size

    def _config(self, task: str, seed: int, n_samples: int):
        """The lossdial Config these parameters describe, validated (messages name the parameters)."""
        from lossdial.config import ConfigError, config_from_dict

        if isinstance(self.hidden, (str, bytes)) or not isinstance(self.hidden, (Sequence, np.ndarray, int)):
            raise ValueError(f"hidden must be a tuple of layer widths such as (64, 64), got {self.hidden!r}")
        hidden = [self.hidden] if isinstance(self.hidden, (int, np.integer)) else list(self.hidden)
        raw: dict[str, Any] = {
            "name": "sklearn",
            "seed": seed,
            "data": {"task": task},
            "model": {"backbone": "mlp", "backbone_kwargs": {"hidden": hidden, "dropout": self.dropout},
                      "film": self.film, "film_hidden": self.film_hidden},
            "loss": {"family": self.loss},
            "optim": {"name": self.optimizer, "lr": self.learning_rate, "weight_decay": self.weight_decay},
            "schedule": {"kind": "cosine", "warmup_epochs": 0},
            "train": {"epochs": self.epochs, "batch_size": self._batch_size(n_samples), "device": self.device,
                      "grad_clip": None, "ema_decay": None, "eval_every": 0},
        }
        if self.loss_params is not None:
            if not isinstance(self.loss_params, Mapping):
                raise ValueError(f"loss_params must be a dict such as {{'omega': 0.5, 'tau': 1.0}} or None, got "
                                 f"{self.loss_params!r}")
            raw["loss"]["params"] = dict(self.loss_params)
        if self.smoothing_a_max is not None:
            raw["loss"]["smoothing"] = {"a_max": self.smoothing_a_max, "a_min": self.smoothing_a_min}
        elif self.smoothing_a_min != 0.0:
            raise ValueError(f"smoothing_a_min={self.smoothing_a_min!r} applies with smoothing_a_max (class-conditional "
                             f"smoothing is off while smoothing_a_max is None); set smoothing_a_max, e.g. 0.2")
        if self.ssl_weight is not None:
            raw["ssl"] = {"weight": self.ssl_weight, "views": "corruption", "corruption": self.ssl_corruption,
                          "temperature": self.ssl_temperature, "projector_hidden": _SSL_PROJECTOR[0],
                          "projector_dim": _SSL_PROJECTOR[1]}
            raw["data"]["source"] = "csv"  # a table (the estimator never reads a source; ssl.views checks its kind)
        else:
            off = [n for n, v, d in (("ssl_corruption", self.ssl_corruption, 0.6),
                                     ("ssl_temperature", self.ssl_temperature, 0.5)) if v != d]
            if off:
                raise ValueError(f"{' and '.join(off)} apply to Joint-SSL, which is off while ssl_weight is None; set "
                                 f"ssl_weight (e.g. 1.0)")
        if self.lct is not None:
            from lossdial.conditioning import parse_lct

            try:
                laws = parse_lct(self.lct)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"lct: {exc}") from None
            raw["lct"] = {"enabled": True, "lambda": {n: d.spec() for n, d in laws.items()}}
        try:
            return config_from_dict(raw, source=f"{type(self).__name__} parameters")
        except ConfigError as exc:
            text = str(exc)
            for key, param in _PARAM_OF_KEY:
                text = text.replace(f"  {key}", f"  {param}").replace(f"{key}:", f"{param}:")
            raise ValueError(text) from None

    # ------------------------------------------------------------------------------------------------------- fit
    def fit(self, X, y, sample_weight=None):
        """Train on every row of ``X`` (numeric array or DataFrame) and ``y``; returns self.

        ``sample_weight`` multiplies each row's term in the loss's weighted mean (the loss's own class counts
        stay the row counts of ``y``).
        """
        from lossdial.data.loader import EpochOrder, derive_seed, make_generator
        from lossdial.data.task import Normalizer
        from lossdial.losses.ssl import nt_xent
        from lossdial.train.distributed import loss_parts
        from lossdial.train.simplifying import build_projector, joint_ssl_forward, second_view
        from lossdial.train.factory import (build_lambda_space, build_loss_fn, build_model_from_config,
                                            build_optimizer, build_scheduler, resolve_device)

        X, y = self._validate_X(X, reset=True, y=y)
        check_classification_targets(y)
        classes, y_enc = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"{type(self).__name__} needs samples of at least 2 classes in the data, but the data "
                             f"contains only one class: {_label(classes[0])!r}")
        sw = None
        if sample_weight is not None:
            sw = _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
            empty = [_label(c) for k, c in enumerate(classes) if not sw[y_enc == k].sum() > 0]
            if empty:
                raise ValueError(f"sample_weight is zero for every sample of class(es) {empty}; each class needs "
                                 f"a positive total weight (drop the class from y, or give its samples weight)")
        task = "binary" if len(classes) == 2 else "multiclass"
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        cfg = self._config(task, seed, X.shape[0])
        try:
            dev = resolve_device(cfg.train.device)
        except (ValueError, RuntimeError) as exc:
            raise ValueError(f"device={self.device!r}: {exc}") from None
        counts = np.bincount(y_enc, minlength=len(classes))

        space = build_lambda_space(cfg)
        normalizer = Normalizer.fit(torch.tensor(X), "table")
        x = normalizer(torch.tensor(X)).to(dev)
        yt = torch.as_tensor(y_enc, dtype=torch.long).to(dev)
        wt = None if sw is None else torch.as_tensor(sw, dtype=torch.float32).to(dev)
        model = build_model_from_config(cfg, (X.shape[1],), space.dim if space is not None else 0,
                                        len(classes)).to(dev)
        loss_fn = build_loss_fn(cfg, counts.tolist()).to(dev)
        order = EpochOrder(len(x), cfg.train.batch_size, shuffle=True, seed=derive_seed(seed, 0x5FF1))
        projector = build_projector(cfg, model.feature_dim)  # Joint-SSL's g (None without ssl_weight)
        trainable = model if projector is None else torch.nn.ModuleList([model, projector.to(dev)])
        optimizer = build_optimizer(cfg, trainable)
        scheduler = build_scheduler(cfg, optimizer, len(order))
        lam_gen = make_generator(seed, 0x1A3B)
        aug_gen = make_generator(seed, 0xA06E)  # the corruption draws (the training loop's augmentation stream)
        curve: list[float] = []
        t0 = time.perf_counter()
        fork = [dev] if dev.type == "cuda" else []
        with torch.random.fork_rng(devices=fork):  # dropout draws from the global RNG: seed it, restore it after
            torch.manual_seed(derive_seed(seed, 0x6107))
            model.train()
            for epoch in range(cfg.train.epochs):
                perm = order.order(epoch).to(dev)
                total = torch.zeros((), device=dev)
                for b in range(len(order)):
                    ix = perm[b * order.batch_size:(b + 1) * order.batch_size]
                    lam, z = None, None
                    if space is not None:
                        lam_cpu = space.sample(len(ix), lam_gen)
                        z = space.encode(lam_cpu, batch_size=len(ix)).to(dev)
                        lam = {k: v.to(dev) for k, v in lam_cpu.items()}
                    if projector is None:
                        logits, extra = model(x[ix], z), None
                    else:  # SCARF views: the rows and their corruption; the supervised loss on the rows
                        x2 = second_view(cfg, x[ix], x, aug_gen)
                        logits, h1, h2 = joint_ssl_forward(model, projector, x[ix], x2, z)
                        extra = cfg.ssl.weight * nt_xent(h1, h2, cfg.ssl.temperature)
                    num, den = loss_parts(loss_fn, logits, yt[ix], lam, None if wt is None else wt[ix])
                    loss = num / den.clamp_min(torch.finfo(num.dtype).tiny)
                    if extra is not None:
                        loss = loss + extra
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    scheduler.step()
                    total += loss.detach()
                mean_loss = float(total) / len(order)
                if not math.isfinite(mean_loss):
                    raise FloatingPointError(f"training loss became {mean_loss} in epoch {epoch + 1}; lower "
                                             f"learning_rate")
                curve.append(mean_loss)
                if self.verbose:
                    print(f"[{type(self).__name__}] epoch {epoch + 1}/{cfg.train.epochs}: loss {mean_loss:.4f} "
                          f"({time.perf_counter() - t0:.1f}s)", flush=True)
        model.eval()
        self.model_ = model.to("cpu")
        self.classes_ = classes
        self.class_counts_ = counts
        self.lambda_space_ = space
        self.normalizer_ = normalizer
        self.config_ = cfg
        self.loss_curve_ = curve
        self.n_iter_ = cfg.train.epochs
        return self

    # ------------------------------------------------------------------------------------------------ the dial
    @property
    def _binary(self) -> bool:
        return len(self.classes_) == 2

    def _lam_point(self) -> dict[str, float] | None:
        """``lam`` checked against the trained lambda space; names left out take their law's mean."""
        from lossdial.checks import finite_number
        from lossdial.train.loop import reference_lambda

        space, lam = self.lambda_space_, self.lam
        if space is None:
            if lam is not None:
                raise ValueError(f"lam={lam!r} applies to a model trained with lct (loss-conditional training); this "
                                 f"one was trained at fixed loss_params: set lam=None, or refit with lct=... such as "
                                 f"'tau~L(0,3,0.33)'")
            return None
        point = reference_lambda(space)
        if lam is None:
            return point
        if isinstance(lam, str):
            from lossdial.conditioning import parse_lambda_grid

            points = parse_lambda_grid(lam)
            if len(points) != 1:
                raise ValueError(f"lam={lam!r} gives {len(points)} points; give one value per name, e.g. 'tau=2'")
            lam = points[0]
        if not isinstance(lam, Mapping):
            raise ValueError(f"lam must be a dict such as {{'tau': 2.0}}, a text such as 'tau=2', or None; got "
                             f"{lam!r}")
        unknown = sorted(str(k) for k in lam if k not in space.names)
        if unknown:
            raise ValueError(f"lam names {unknown}, but this model was trained over {list(space.names)} "
                             f"(lct={space.spec()!r})")
        point.update({k: finite_number(v, f"lam[{k!r}]") for k, v in lam.items()})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            outside = space.check_support(point)
        if outside:
            raise ValueError(f"lam is outside the trained support: {'; '.join(outside)} (lct={space.spec()!r}); "
                             f"choose a value inside it")
        return point

    def _threshold(self) -> float:
        from lossdial.checks import finite_number

        if not self._binary:
            if self.threshold is not None:
                raise ValueError(f"threshold applies to binary tasks; this one has {len(self.classes_)} classes: its "
                                 f"dial is adjustment (the post-hoc logit adjustment t; 0: the model's own "
                                 f"probabilities, 1: full logit adjustment)")
            return 0.5
        if self.threshold is None:
            return 0.5
        t = finite_number(self.threshold, "threshold")
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"threshold is a probability of classes_[1] in [0, 1], got {t}")
        return t

    def _adjustment(self) -> float:
        from lossdial.checks import finite_number

        if self._binary:
            if self.adjustment is not None:
                raise ValueError("adjustment (the post-hoc logit adjustment t) applies to multi-class tasks; a binary "
                                 "task's dial is threshold, on predict_proba[:, 1]")
            return 0.0
        return 0.0 if self.adjustment is None else finite_number(self.adjustment, "adjustment")

    def _logits(self, X, lambdas: list[dict[str, float]] | None) -> np.ndarray:
        """Logits [K, N, C] of raw ``X`` at each lambda (K = 1 and ``lambdas`` None for a baseline model)."""
        from lossdial.evaluate.scoring import score_lambdas

        x = torch.tensor(np.asarray(X, dtype=np.float32))
        return score_lambdas(self.model_, x, lambdas, self.lambda_space_, batch_size=_PREDICT_BATCH,
                             device="cpu", transform=self.normalizer_, output="logits")

    def _dialled_logits(self, X) -> np.ndarray:
        """Logits [N, C] at the dial: ``lam``, and for multi-class ``z - t log pi``."""
        from lossdial.evaluate.multiclass import adjust_logits

        check_is_fitted(self)
        X = self._validate_X(X, reset=False)
        lam = self._lam_point()
        t = self._adjustment()
        self._threshold()  # the other task's knob is refused before any work
        z = self._logits(X, None if lam is None else [lam])[0]
        return z if self._binary else adjust_logits(z, self.class_counts_, t)

    # ------------------------------------------------------------------------------------------------ outputs
    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities [N, n_classes] at ``lam`` (multi-class: ``softmax(z - t log pi)``, t = adjustment)."""
        from lossdial.evaluate.multiclass import softmax

        return softmax(self._dialled_logits(X))

    def decision_function(self, X) -> np.ndarray:
        """Binary: ``log(p1 / p0) - log(threshold / (1 - threshold))``, [N] (> 0 where ``predict`` gives
        ``classes_[1]``). Multi-class: the adjusted logits ``z - t log pi``, [N, n_classes]."""
        z = self._dialled_logits(X)
        if not self._binary:
            return z
        t = self._threshold()
        with np.errstate(divide="ignore"):
            return (z[:, 1] - z[:, 0]) - (np.log(t) - np.log1p(-t))

    def predict(self, X) -> np.ndarray:
        """Binary: ``classes_[1]`` where ``predict_proba[:, 1] >= threshold``; multi-class: the argmax of the
        adjusted probabilities (ties to the earlier class)."""
        proba = self.predict_proba(X)
        if self._binary:
            return self.classes_[(proba[:, 1] >= self._threshold()).astype(int)]
        return self.classes_[np.argmax(proba, axis=1)]

    # ---------------------------------------------------------------------------------------------------- pick
    def pick(self, X_val, y_val, at: str | None = None, maximize: str | None = None, minimize: str | None = None, *,
             lambdas=None, prevalence: float | None = None, min_tp: int | None = None, conservative: bool = False,
             confidence: float = 0.95, prior=None, adjustments=None):
        """Set the dial from a validation set with the rules of ``lossdial pick``; returns self.

        Binary: the best (``lam``, ``threshold``) under the constraint ``at`` (``"recall>=0.95"`` or
        ``"precision>=0.9"``); objective ``maximize`` (precision, recall, f1, ap, auc, balanced_accuracy, accuracy)
        or ``minimize`` (brier, ece, cost); default precision under a recall constraint, recall under a precision
        constraint, else f1. Precision-type metrics at ``prevalence`` (None: the training prevalence of
        ``classes_[1]``); ``min_tp`` (default 5), ``conservative`` and ``confidence`` as in ``lossdial pick``.

        Multi-class: the best (``lam``, ``adjustment``) under ``at`` (e.g. ``"few_shot_accuracy>=0.7"``);
        objective default balanced_accuracy; metrics at the class ``prior`` (``"train"``, ``"uniform"`` or C
        numbers), t from ``adjustments`` (``"0:2:9"``, a list; None: 0, 0.25, ..., 2).

        ``lambdas`` (LCT models): the lambda grid, e.g. ``"tau=0:3:31"`` or a list of dicts; None: 33 points per
        name over the training support. A baseline model searches its knob only. ``operating_point_`` records
        the choice and its validation metrics. Raises ``NoFeasiblePoint`` (a ``ValueError``) naming the closest
        point when nothing meets ``at``.
        """
        from lossdial.evaluate.multiclass import adjusted_probs, parse_adjustments
        from lossdial.evaluate.select import SelectionSpec, choose_point, resolve_objective
        from lossdial.evaluate.sweep import MIN_TP, MultiClassSweepResult, SweepResult

        check_is_fitted(self)
        X = self._validate_X(X_val, reset=False)
        y = column_or_1d(y_val)
        if len(y) != X.shape[0]:
            raise ValueError(f"X_val has {X.shape[0]} rows but y_val has {len(y)}")
        unseen = sorted({str(v) for v in np.unique(y) if v not in set(self.classes_.tolist())})
        if unseen:
            raise ValueError(f"y_val has labels {unseen} that fit never saw (classes_ = {self.classes_.tolist()})")
        y_enc = np.searchsorted(self.classes_, y)
        task = "binary" if self._binary else "multiclass"
        objective = resolve_objective(task, at, maximize, minimize, prefix="")
        grid = self._pick_grid(lambdas)
        logits = self._logits(X, grid)
        lams = grid if grid is not None else [{}]
        if self._binary:
            if prior is not None or adjustments is not None:
                raise ValueError("prior and adjustments apply to multi-class tasks; a binary pick takes prevalence "
                                 "and chooses the threshold")
            if not (y_enc == 1).any():
                raise ValueError(f"y_val has no samples of the positive class classes_[1] = {_label(self.classes_[1])!r}: "
                                 f"recall and precision are undefined; pick on a validation set with positives")
            prev = float(self.class_counts_[1] / self.class_counts_.sum()) if prevalence is None else prevalence
            scores = adjusted_probs(logits, self.class_counts_, 0.0)[..., 1]
            sweep = SweepResult(lambdas=lams, scores=scores, labels=y_enc, split="val", prevalence=prev,
                                threshold=self._threshold())
            spec = SelectionSpec(name="pick", constraint=at, objective=objective, conservative=conservative,
                                 confidence=confidence, prevalence=prev, min_tp=MIN_TP if min_tp is None else min_tp)
        else:
            if prevalence is not None or conservative or min_tp is not None:
                raise ValueError("prevalence, min_tp and conservative apply to binary tasks; a multi-class pick takes "
                                 "prior (the deployment class prior) and adjustments (the t grid)")
            sweep = MultiClassSweepResult(lambdas=lams, logits=logits, labels=y_enc,
                                          train_counts=self.class_counts_.tolist(),
                                          adjustments=parse_adjustments(adjustments),
                                          prior="train" if prior is None else prior, split="val")
            spec = SelectionSpec(name="pick", constraint=at, objective=objective)
        point = choose_point(sweep, spec)
        self.lam = dict(point.lam) if grid is not None else None
        if self._binary:
            self.threshold = float(point.threshold)
        else:
            self.adjustment = float(point.adjustment)
        self.operating_point_ = point.to_dict()
        return self

    def _pick_grid(self, lambdas) -> list[dict[str, float]] | None:
        """The lambda grid ``pick`` searches (None for a baseline model), every point inside the support."""
        from lossdial.conditioning import parse_lambda_grid
        from lossdial.evaluate.select import DEFAULT_SWEEP_POINTS
        from lossdial.train.loop import default_eval_grid

        space = self.lambda_space_
        if space is None:
            if lambdas is not None:
                raise ValueError("lambdas: this model was trained at fixed loss_params (lct=None), so pick searches "
                                 "its threshold / adjustment only; drop lambdas")
            return None
        if lambdas is None:
            return default_eval_grid(self.config_, space, k=DEFAULT_SWEEP_POINTS)
        grid = parse_lambda_grid(lambdas) if isinstance(lambdas, (str, Mapping)) else [dict(p) for p in lambdas]
        if not grid:
            raise ValueError("lambdas is empty; give a grid such as 'tau=0:3:31'")
        for p in grid:
            if set(p) != set(space.names):
                raise ValueError(f"lambdas: every point needs exactly the trained names {list(space.names)}, got "
                                 f"{sorted(p)}")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                outside = space.check_support(p)
            if outside:
                raise ValueError(f"lambdas: {'; '.join(outside)} (lct={space.spec()!r})")
        return grid
