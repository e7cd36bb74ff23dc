"""Validated run configuration: YAML + dotted overrides -> :class:`Config`.

Every section forbids unknown keys, so a typo fails on load with the key's dotted path::

    >>> cfg = load_config("configs/demo_digits.yaml", overrides=["optim.lr=0.05"])
    >>> cfg.optim.lr
    0.05
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

import yaml
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the dotted key and the fix."""


class _PathError(ValueError):
    """Raised by validators: `path` (dotted, relative to the validated section) and a message that needs no
    copy of the input (the error report prints ``section.path: message``)."""

    def __init__(self, path: str, message: str):
        super().__init__(message)
        self.path = path


SEED_MAX = 2 ** 63 - 1

#: ``train.augment`` values (:mod:`lossdial.data.augment` implements them): crop/flip alone, or a strong
#: augmentation policy alone, after crop + flip, or after crop only (for images that must not be mirrored).
AUGMENT_POLICIES = ("trivial", "autoaugment", "randaugment")
AUGMENT_MODES = ("none", "flip", "crop", "crop_flip", *AUGMENT_POLICIES,
                 *(f"crop_flip_{p}" for p in AUGMENT_POLICIES), *(f"crop_{p}" for p in AUGMENT_POLICIES))


def _seed_in_range(v: int) -> int:
    # Every random stream is derived from the full seed (numpy SeedSequence); torch.Generator takes 64 bits
    # and negative seeds have no stream of their own, so the range is [0, 2**63 - 1].
    if not 0 <= v <= SEED_MAX:
        raise _PathError("", f"a seed is an integer in [0, 2**63 - 1] = [0, {SEED_MAX}], got {v}")
    return v


#: A seed: an integer in [0, 2**63 - 1] (config ``seed`` and ``data.seed``).
Seed = Annotated[int, AfterValidator(_seed_in_range)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# Which DataConfig fields each source reads (anything else set to a non-default value is an error).
SOURCE_FIELDS: dict[str, set[str]] = {
    "digits": set(),
    "breast_cancer": set(),
    "image_folder": {"path", "test_path", "image_size", "channels", "skip_bad_images", "cache", "cache_dir",
                     "in_memory"},
    "cifar10": {"path"},
    "cifar100": {"path", "coarse_labels"},
    "cifar10_jpeg": {"archive", "verify_sha256", "cache", "cache_dir"},
    "npz": {"path"},
    "csv": {"path", "test_path", "target", "features", "categorical", "id_column"},
    "parquet": {"path", "test_path", "target", "features", "categorical", "id_column"},
}
_SOURCE_ONLY_FIELDS = set().union(*SOURCE_FIELDS.values())
_BINARY_FIELDS = {"positive_classes", "negative_classes"}
_MULTICLASS_FIELDS = {"classes", "profile", "step_fraction"}


class DataConfig(_Section):
    """Where the data come from and how the imbalanced task is built (see docs/DATA.md).

    Source fields are read only by the sources that use them (:data:`SOURCE_FIELDS`); setting one that the
    chosen source ignores is an error, so nothing is silently dropped.
    """

    source: Literal["digits", "breast_cancer", "image_folder", "cifar10", "cifar100", "cifar10_jpeg", "npz",
                    "csv", "parquet"] = "digits"
    # --- source fields
    path: str | None = Field(None, description="image_folder root, CIFAR pickle folder, .npz file, CSV/Parquet file.")
    test_path: str | None = Field(
        None, description="image_folder / csv / parquet: a second folder or table used as the source's own test split.")
    archive: str | None = Field(
        None, description="cifar10_jpeg: the archive (or its folder); searched next in $LOSSDIAL_CIFAR10_JPEG and "
                          "../shared/data/.")
    verify_sha256: bool = Field(True, description="cifar10_jpeg: check the archive against its known sha256.")
    cache: bool = Field(True, description="image_folder / cifar10_jpeg: keep the decoded uint8 array on disk.")
    cache_dir: str | None = Field(
        None, description="Cache folder (default $LOSSDIAL_CACHE, else ~/.cache/lossdial).")
    image_size: int | tuple[int, int] | None = Field(
        None, description="image_folder: resize to this (int = square, or [height, width]); null: sizes must match.")
    channels: Literal[1, 3] = Field(3, description="image_folder: 3 = RGB, 1 = grayscale.")
    skip_bad_images: bool = Field(False, description="image_folder: skip unreadable images with a warning.")
    in_memory: bool = Field(
        True, description="image_folder: decode every image once into a uint8 array (cached); false keeps the file "
                          "list and decodes per batch in DataLoader workers (large photo folders; needs "
                          "train.loader auto or stream).")
    coarse_labels: bool = Field(False, description="cifar100: the 20 coarse labels instead of the 100 fine ones.")
    target: str | None = Field(None, description="csv / parquet: the label column.")
    features: list[str] | None = Field(None, description="csv / parquet: input columns (default: all but target/id).")
    categorical: list[str] | None = Field(
        None, description="csv / parquet: columns to one-hot encode even if numeric (non-numeric ones always are).")
    id_column: str | None = Field(None, description="csv / parquet: a row id column (not a feature; used by predict).")
    # --- the task
    task: Literal["binary", "multiclass"] = Field(
        "binary", description="binary: positive vs negative classes; multiclass: a long-tailed C-class task.")
    positive_class: str | None = Field(
        "8", description="Name of the positive (minority) class; mapped to label 1. Shorthand for positive_classes.")
    positive_classes: list[str] | None = Field(
        None, description="Names of the classes that form the positive (tail) label 1, e.g. [automobile, truck].")
    negative_classes: list[str] | None = Field(
        None, description="Names of the negative classes; default: every other class.")
    classes: list[str] | None = Field(
        None, description="multiclass: the classes, head first (label c = position c); default: all, source order.")
    profile: Literal["exp", "step"] = Field(
        "exp", description="multiclass long-tail profile: exp n_c = n_max * beta^(-c/(C-1)); step: the last "
                           "step_fraction of the classes get n_max / beta.")
    step_fraction: float = Field(0.5, gt=0, lt=1, description="multiclass step profile: fraction of tail classes.")
    beta: float | None = Field(
        50.0, description="Imbalance ratio of the training split (binary n_neg / n_pos; multiclass n_max / n_min); "
                          "null keeps it natural.")
    val_from: Literal["train", "test"] = Field(
        "train", description="Carve validation from the training pool (default) or from the source's own test split.")
    val_fraction: float | None = Field(
        None, gt=0, lt=1,
        description="Validation share per class of the pool it is carved from; default 0.1 when the source has "
                    "its own test split, 0.5 with val_from: test, else 0.2.")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="Test holdout share (sources without a test split).")
    min_holdout_positives: int = Field(
        30, ge=1, description="At least this many positives (every class, for multiclass) in each holdout.")
    seed: Seed = Field(0, description="Seed of the split and subsampling stream (kept apart from the training seed).")
    retrain_fraction: float = Field(
        0.0, ge=0, lt=1,
        description="Share of each class of the (imbalanced) training split held out from training, for "
                    "`lossdial retrain RUN --split train` (last-layer retraining on data the backbone never saw; "
                    "saved as splits.npz's retrain). 0: none.")

    @field_validator("beta")
    @classmethod
    def _beta_ge_one(cls, v: float | None) -> float | None:
        if v is not None and v < 1:
            raise ValueError("beta is n_neg / n_pos of the training split and must be >= 1 (or null)")
        return v

    @field_validator("image_size")
    @classmethod
    def _size_positive(cls, v):
        vals = [v] if isinstance(v, int) else list(v or [])
        if any(int(x) < 1 for x in vals):
            raise ValueError("image_size must be positive (an int, or [height, width])")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "DataConfig":
        if self.val_fraction is not None and self.val_from == "train" \
                and self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("val_fraction + test_fraction must leave at least 10% of the data for training")
        used = SOURCE_FIELDS[self.source]
        fields = type(self).model_fields
        stray = sorted(f for f in _SOURCE_ONLY_FIELDS - used if getattr(self, f) != fields[f].default)
        if stray:
            uses = ", ".join(sorted(used)) or "no source fields"
            raise ValueError(f"{', '.join(stray)} not used by source {self.source!r} (it uses: {uses}); remove "
                             f"{'it' if len(stray) == 1 else 'them'} or pick another data.source")
        if self.task == "binary":
            stray = sorted(f for f in _MULTICLASS_FIELDS if getattr(self, f) != fields[f].default)
            if stray:
                raise ValueError(f"{', '.join(stray)}: apply only to task: multiclass")
            if self.positive_classes is not None:
                if not self.positive_classes:
                    raise ValueError("positive_classes is empty; name at least one class")
                if "positive_class" in self.model_fields_set and self.positive_class is not None \
                        and [self.positive_class] != list(self.positive_classes):
                    raise ValueError("give positive_class or positive_classes, not both")
                self.__dict__["positive_class"] = None  # the shorthand's default must not linger
            elif self.positive_class is None:
                raise ValueError("a binary task needs positive_class (or positive_classes)")
            pos = set(self.positives)
            both = sorted(pos & set(self.negative_classes or []))
            if both:
                raise ValueError(f"classes {both} are both positive and negative")
        else:
            stray = sorted(f for f in _BINARY_FIELDS if getattr(self, f) is not None)
            if stray:
                raise ValueError(f"{', '.join(stray)}: apply only to task: binary (use classes for multiclass)")
            if self.classes is not None:
                names = [str(c) for c in self.classes]
                if len(names) < 2:
                    raise _PathError("classes", f"{names} names {len(names)} class{'' if len(names) == 1 else 'es'}; "
                                                f"a multi-class task needs at least two (null: every class of the "
                                                f"source)")
                twice = sorted({c for c in names if names.count(c) > 1})
                if twice:
                    raise _PathError("classes", f"names {twice} more than once; list each class once")
            self.__dict__["positive_class"] = None
        return self

    @property
    def positives(self) -> list[str]:
        """The positive class names (binary tasks)."""
        if self.positive_classes is not None:
            return [str(c) for c in self.positive_classes]
        return [str(self.positive_class)] if self.positive_class is not None else []


#: The cosine head's scale when the config leaves it open and the loss does not fix it (see ModelConfig).
DEFAULT_COSINE_SCALE = 16.0


class ModelConfig(_Section):
    backbone: str = "small_cnn"
    backbone_kwargs: dict[str, Any] = Field(default_factory=dict)
    film: Literal["identity", "reference"] = Field(
        "identity", description="FiLM form for LCT runs (ignored by baseline runs, which use a plain head)."
    )
    film_hidden: int = Field(128, ge=1)
    placement: Literal["features", "logits"] = "features"
    head: Literal["linear", "cosine"] | None = Field(
        None, description="Last layer: linear, or cosine (unit-norm features and weight rows, logits = s * cosine: "
                          "the normalised classifier LDAM's s = 30 is meant for, Cao et al. 2019). null resolves "
                          "at load: cosine for loss.family: ldam, else linear (--print-config shows the result).")
    head_scale: float | None = Field(
        None, gt=0, description="Cosine head: s in logits = s * cosine. With loss.family: ldam leave it null: the "
                                "head uses the loss's scale (loss.params.scale, default 30). Otherwise null resolves "
                                "at load to 16 (softmax over s * cosines can reach a loss of log(1 + (C-1) "
                                "exp(-s C/(C-1))), about 1e-14 for 2 classes at s = 16: every confidence stays "
                                "reachable; Wang et al., NormFace, 2017).")


class SmoothingConfig(_Section):
    """Class-conditional label smoothing on top of a cross-entropy-type family (see docs/SIMPLIFYING.md)."""

    a_max: float = Field(..., description="Smoothing of the rarest class, in [0, 1).")
    a_min: float = Field(0.0, description="Smoothing of the most frequent class, in [0, a_max].")

    @model_validator(mode="after")
    def _ordered(self) -> "SmoothingConfig":
        from lossdial.losses.base import SMOOTHING_RANGES, _within, describe_range

        if not _within(float(self.a_max), SMOOTHING_RANGES["a_max"]):  # the losses' own range: one rule
            raise _PathError("a_max", f"must be in {describe_range(SMOOTHING_RANGES['a_max'])} (a_max = 1 would "
                                      f"replace the rarest class's label by the uniform distribution), got {self.a_max}")
        if not 0 <= self.a_min <= self.a_max:
            raise _PathError("a_min", f"must be in [0, a_max] = [0, {self.a_max}] (rarer classes get more "
                                      f"smoothing), got {self.a_min}")
        return self


#: Loss families that take ``loss.smoothing`` (cross-entropy on adjusted logits, and focal).
SMOOTHABLE_FAMILIES = ("vs", "focal", "ldam", "logit_adjust", "weighted_ce")


class LossConfig(_Section):
    family: Literal["vs", "focal", "ldam", "logit_adjust", "weighted_ce", "smoothing"] = "vs"
    params: dict[str, Any] = Field(
        default_factory=lambda: {"omega": 0.5, "gamma": 0.2, "tau": 1.0},
        description="Fixed hyperparameters of the loss family; LCT-conditioned names override these.",
    )
    smoothing: SmoothingConfig | None = Field(
        None, description="Class-conditional label smoothing {a_max, a_min}: the one-hot target of the family's "
                          "cross-entropy becomes (1 - a_y) onehot(y) + a_y / K, a_c interpolated in log-count from "
                          "a_max (rarest class) to a_min (most frequent); null: off. LCT may condition on a_max "
                          "(and a_min).")

    @model_validator(mode="after")
    def _smoothable(self) -> "LossConfig":
        if self.smoothing is not None and self.family not in SMOOTHABLE_FAMILIES:
            raise _PathError("smoothing", f"loss.family {self.family!r} already is class-conditional smoothing (its "
                                          f"loss.params a_max / a_min); remove loss.smoothing, or use it with one of "
                                          f"{', '.join(SMOOTHABLE_FAMILIES)}")
        return self


class LCTConfig(_Section):
    enabled: bool = False
    # `lambda` is a Python keyword, so the attribute is `lambdas` with YAML key `lambda`.
    lambdas: dict[str, Any] = Field(
        default_factory=dict,
        alias="lambda",
        description='Distribution per conditioned hyperparameter, e.g. {tau: "L(0,3,0.33)"}.',
    )
    per_sample: bool = Field(False, description="Draw one lambda per sample instead of one per batch.")
    normalize: bool = Field(True, description="Feed lambda to FiLM mapped to [-1, 1] over its support.")

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    @field_validator("lambdas")
    @classmethod
    def _laws_parse(cls, v: dict[str, Any]) -> dict[str, Any]:
        parse_laws(v)
        return v

    @model_validator(mode="after")
    def _needs_lambda(self) -> "LCTConfig":
        if self.enabled and not self.lambdas:
            raise ValueError('lct.enabled is true but lct.lambda is empty; e.g. lambda: {tau: "L(0,3,0.33)"}')
        return self


def _changed(section: BaseModel, skip: tuple[str, ...] = ("rho", "weight", "mode", "adaptive")) -> set[str]:
    """The keys of ``section`` (other than ``skip``) whose value is not the default."""
    fields = type(section).model_fields
    return {k for k, f in fields.items() if k not in skip and getattr(section, k) != f.default}


class SAMConfig(_Section):
    """Sharpness-aware minimisation (``optim.sam``; see :mod:`lossdial.optim.sam` and docs/SIMPLIFYING.md)."""

    rho: float | None = Field(
        None, description="Radius of the ascent step; > 0 turns SAM on (two forward/backward passes per step); "
                          "null: plain steps.")
    mode: Literal["sam", "asymmetric", "groups"] = Field(
        "sam", description="sam: Foret et al.; asymmetric: SAM-A (ascent from the class-weighted loss, weights "
                           "(n_max / n_c)^k; descent from the plain loss at w + e); groups: minority and majority "
                           "terms perturbed with their own radii rho_min, rho_maj (rho_maj = 0: ImbSAM).")
    adaptive: bool = Field(False, description="ASAM (Kwon et al. 2021): e = rho T^2 g / ||T g||, T = |w| + eta.")
    eta: float = Field(0.01, gt=0, description="ASAM's eta (only with adaptive: true).")
    k: float = Field(1.0, ge=0, description="mode asymmetric: exponent of the ascent weights (n_max / n_c)^k.")
    rho_min: float | None = Field(None, ge=0, description="mode groups: the minority group's radius (null: rho).")
    rho_maj: float = Field(0.0, ge=0, description="mode groups: the majority group's radius (0: unperturbed, "
                                                  "ImbSAM).")
    minority_below: float | None = Field(
        None, gt=0, description="mode groups: classes with a training count below this form the minority group; "
                                "null: below the geometric mean sqrt(n_max * n_min) of the largest and smallest "
                                "counts.")

    @model_validator(mode="after")
    def _consistent(self) -> "SAMConfig":
        if self.rho is not None and not self.rho > 0:
            raise _PathError("rho", f"must be > 0 to turn SAM on (null: plain steps), got {self.rho}")
        changed = _changed(self)  # by value: a saved config.yaml writes every key
        own = {"asymmetric": {"k"}, "groups": {"rho_min", "rho_maj", "minority_below"}}
        for mode, keys in own.items():
            stray = sorted(keys & changed) if self.mode != mode else []
            if stray:
                raise _PathError(stray[0], f"applies only to optim.sam.mode: {mode} (mode is {self.mode}); remove it "
                                           f"or set optim.sam.mode: {mode}")
        if "eta" in changed and not self.adaptive:
            raise _PathError("eta", "applies only to optim.sam.adaptive: true (ASAM); remove it or set adaptive")
        if self.rho is None and changed:
            raise _PathError("rho", f"optim.sam sets {', '.join(sorted(changed))} but rho is null, so SAM is off; "
                                    f"set optim.sam.rho (e.g. 0.05) to turn it on")
        if self.mode == "groups" and self.rho_min == 0 and self.rho_maj == 0:
            raise _PathError("rho_min", "and rho_maj are both 0: no group is perturbed (plain steps at extra cost); "
                                        "give the minority group a radius > 0 (ImbSAM: rho_min > 0, rho_maj 0)")
        return self

    @property
    def enabled(self) -> bool:
        return self.rho is not None


class OptimConfig(_Section):
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.1, gt=0)
    lr_scaling: Literal["none", "linear"] = Field(
        "none", description="linear: the learning rate used is lr * train.batch_size / reference_batch_size (Goyal "
                            "et al. 2017), so batch sizes can be compared at one lr setting; none: lr as given.")
    reference_batch_size: int = Field(
        128, ge=1, description="lr_scaling linear: the batch size at which lr is the rate used.")
    sam: SAMConfig = Field(default_factory=SAMConfig, description="Sharpness-aware minimisation; off unless rho is "
                                                                  "set.")
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(2e-4, ge=0)
    decay_norm_and_bias: bool = Field(
        False, description="Apply weight_decay to every parameter, 1-D ones included (biases, BatchNorm weights, "
                           "FiLM biases): the reference code of LCT, LDAM-DRW and VS (plain SGD weight_decay). "
                           "false: only weight matrices and convolution kernels decay (lossdial's default).")
    betas: tuple[float, float] = (0.9, 0.999)
    fused: bool | None = Field(
        None, description="Fused optimizer step (one kernel for all parameters); null: on CUDA only, else foreach.")

    @field_validator("sam", mode="before")
    @classmethod
    def _sam_null(cls, v):
        return {} if v is None else v  # optim.sam: null is plain steps

    @model_validator(mode="after")
    def _reference_only_when_scaling(self) -> "OptimConfig":
        if self.reference_batch_size != type(self).model_fields["reference_batch_size"].default \
                and self.lr_scaling == "none":
            raise _PathError("reference_batch_size", "applies only to optim.lr_scaling: linear; remove it or set "
                                                     "lr_scaling: linear")
        return self


class ScheduleConfig(_Section):
    kind: Literal["step", "cosine", "constant"] = "step"
    warmup_epochs: float = Field(5.0, ge=0)
    milestones: list[float] = Field(
        default_factory=lambda: [0.8, 0.9],
        description="Step schedule: fractions of training at which lr is multiplied by `factor`.",
    )
    factor: float = Field(0.1, gt=0, le=1)
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="Cosine floor as a fraction of lr.")

    @field_validator("milestones")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        if any(not (0 < m < 1) for m in v) or sorted(v) != v:
            raise ValueError("milestones are increasing fractions of training in (0, 1), e.g. [0.8, 0.9]")
        return v


class TrainConfig(_Section):
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(128, ge=1)
    grad_clip: float | None = Field(0.5, gt=0, description="Max global gradient norm; null disables.")
    ema_decay: float | None = Field(0.99, gt=0, lt=1, description="EMA of weights used for evaluation; null disables.")
    augment: Literal[AUGMENT_MODES] = Field(
        "none", description="Batch augmentation: crop (zero padding crop_padding), flip, and a strong policy: "
                            "trivial (TrivialAugment-Wide), autoaugment (AutoAugment, CIFAR-10 policy) or randaugment "
                            "(RandAugment, 2 operations at magnitude 9 of 31); crop_flip_POLICY applies crop, flip "
                            "and the policy in that order, crop_POLICY crop and the policy (no mirroring).")
    random_erasing: float = Field(
        0.0, ge=0, le=1, description="Random Erasing probability (Zhong et al. 2020; torchvision's law: area 2-33%, "
                                     "aspect ratio 0.3-3.3, fill 0 on the raw image), applied after train.augment; "
                                     "0: off. Composes with every train.augment value.")
    crop_padding: int = Field(4, ge=0)
    loader: Literal["auto", "device", "stream", "pil"] = Field(
        "auto", description="device: the training split lives on the training device and is augmented there in "
                            "whole batches (fast; CIFAR-scale data); stream: DataLoader workers decode and augment "
                            "each image with torchvision transforms v2 (large image folders); pil: stream with PIL "
                            "images through the transforms (the reference implementations' path, for speed "
                            "comparisons); auto: stream for data.in_memory: false, else device.")
    num_workers: int = Field(2, ge=0, description="train.loader stream: DataLoader worker processes (0: none).")
    pin_memory: bool | None = Field(
        None, description="train.loader stream: collate batches in pinned memory (null: when training on CUDA).")
    eval_every: int = Field(10, ge=0, description="Validate every N epochs (0: only at the end).")
    checkpoint_every: int = Field(0, ge=0, description="Also checkpoint every N steps within an epoch (0: never).")
    checkpoint_epochs: int = Field(
        1, ge=1, description="Write the resume checkpoint every N epochs (and after the last); a killed run resumes "
                             "from the latest one.")
    channels_last: bool = Field(False, description="Images and convolution weights in channels-last memory layout.")
    cudnn_benchmark: bool = Field(
        False, description="CUDA: let cuDNN time its convolution algorithms for this run's fixed shapes (faster "
                           "steps; the chosen kernels, and so the last bits of the weights, may vary run to run).")
    compile: Literal["off", "default", "reduce-overhead", "max-autotune"] = Field(
        "off", description="EXPERIMENTAL: torch.compile the training forward with this mode (reduce-overhead uses "
                           "CUDA graphs). Not yet measured on a GPU; off by default.")
    device: str = Field("auto", description='"auto", "cpu", "cuda", "cuda:1", "mps", ...')
    amp: bool = Field(True, description="bf16 autocast on CUDA (no effect on CPU).")
    drop_last: bool = False
    sync_batchnorm: bool = Field(
        True, description="Multi-GPU (torchrun) on CUDA: BatchNorm -> SyncBatchNorm. No effect otherwise.")


class SSLConfig(_Section):
    """Joint-SSL: an NT-Xent loss on two augmented views, trained with the supervised loss (docs/SIMPLIFYING.md)."""

    weight: float | None = Field(
        None, description="mu in L = L_sup + mu * NT-Xent; > 0 turns Joint-SSL on; null: off.")
    temperature: float = Field(0.5, gt=0, description="NT-Xent temperature (the authors' SSL code: 0.5).")
    projector_hidden: int = Field(2048, ge=1, description="Projector MLP: feature -> hidden -> out.")
    projector_dim: int = Field(128, ge=1, description="Projector output size.")
    supervised: Literal["first", "both"] = Field(
        "first", description="The supervised loss on the first view (default) or on both views.")
    views: Literal["augment", "corruption"] | None = Field(
        None, description="How the two views are made: augment (two draws of train.augment; images) or corruption "
                          "(SCARF: the row itself and a copy with a fraction ssl.corruption of its features replaced "
                          "by the same features of random training rows; tables). null: resolved at load from "
                          "data.source (images: augment, tables: corruption; npz: must be set).")
    corruption: float = Field(
        0.6, description="ssl.views: corruption: the fraction c in (0, 1) of each row's features replaced "
                         "(round(c * d) of d features, at least 1; SCARF's default 0.6).")

    @model_validator(mode="after")
    def _positive(self) -> "SSLConfig":
        if self.weight is not None and not self.weight > 0:
            raise _PathError("weight", f"must be > 0 to turn Joint-SSL on (null: off), got {self.weight}")
        if not 0 < self.corruption < 1:
            raise _PathError("corruption", f"must be a fraction in (0, 1) of each row's features (SCARF: 0.6), got "
                                           f"{self.corruption}")
        if self.views == "augment" and self.corruption != type(self).model_fields["corruption"].default:
            raise _PathError("corruption", "applies to ssl.views: corruption (tables), but ssl.views is augment; "
                                           "remove ssl.corruption or set ssl.views: corruption")
        changed = _changed(self)
        if self.weight is None and changed:
            raise _PathError("weight", f"ssl sets {', '.join(sorted(changed))} but weight is null, so Joint-SSL is "
                                       f"off; set ssl.weight (e.g. 1.0) to turn it on")
        return self

    @property
    def enabled(self) -> bool:
        return self.weight is not None


#: data.source values whose samples are images / table rows (``ssl.views`` resolves from them; npz can be either).
IMAGE_SOURCES = ("digits", "image_folder", "cifar10", "cifar100", "cifar10_jpeg")
TABLE_SOURCES = ("breast_cancer", "csv", "parquet")


#: Task types whose training split has class counts (SAM's asymmetric and groups modes need them).
TASKS_WITH_CLASS_COUNTS = ("binary", "multiclass")


class EvaluateConfig(_Section):
    lambda_grid: str | dict[str, Any] | None = Field(
        None,
        alias="lambda",
        description='Lambda values scored by `evaluate`, e.g. "tau=0:3:7"; default 7 points over the support.',
    )
    threshold: float = Field(0.5, gt=0, lt=1, description="Default decision threshold on the positive score.")
    batch_size: int = Field(1024, ge=1)
    shot_thresholds: tuple[int, int] = Field(
        (100, 20), description="Multi-class shot groups by training count (Liu et al. 2019): many-shot = more than "
                               "the first, few-shot = fewer than the second, medium-shot = the rest; recorded in every "
                               "output.")

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    @field_validator("shot_thresholds")
    @classmethod
    def _shots_ordered(cls, v):
        many, few = v
        if not 1 <= few <= many:
            raise ValueError(f"must be [many, few] with 1 <= few <= many (e.g. [100, 20]), got {list(v)}")
        return v

    @field_validator("lambda_grid")
    @classmethod
    def _grid_parses(cls, v):
        if v is not None:
            parse_grid(v)
        return v


class Config(_Section):
    name: str = "run"
    seed: Seed = Field(0, description="Drives initialisation, shuffling, lambda draws and augmentation (separate "
                                      "streams); an integer in [0, 2**63 - 1].")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    lct: LCTConfig = Field(default_factory=LCTConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    ssl: SSLConfig = Field(default_factory=SSLConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)

    @field_validator("ssl", mode="before")
    @classmethod
    def _ssl_null(cls, v):
        return {} if v is None else v

    @model_validator(mode="after")
    def _simplifying(self) -> "Config":
        """Cross-section checks of SAM and Joint-SSL (docs/SIMPLIFYING.md)."""
        sam = self.optim.sam
        if sam.enabled and sam.mode != "sam" and self.data.task not in TASKS_WITH_CLASS_COUNTS:
            raise _PathError("optim.sam.mode", f"{sam.mode} needs the training class counts, which a "
                                               f"{self.data.task} task does not have; use optim.sam.mode: sam")
        if self.ssl.enabled:
            self._resolve_ssl_views()
            if self.ssl.views == "augment" and self.train.augment == "none":
                raise _PathError("train.augment", "is none, but Joint-SSL (ssl.weight) contrasts two augmented "
                                                  "views of each batch, which would be identical; set "
                                                  "train.augment (e.g. crop_flip) or remove ssl.weight")
            if self.ssl.views == "corruption" and self.train.augment != "none":
                raise _PathError("train.augment", f"is {self.train.augment}, but ssl.views: corruption makes the "
                                                  f"views of table rows, which train.augment (images) does not "
                                                  f"apply to; set train.augment: none")
            if self.train.compile != "off":
                raise _PathError("train.compile", "Joint-SSL runs the backbone and the head as separate calls, "
                                                  "which train.compile does not cover; set train.compile: off")
        return self

    def _resolve_ssl_views(self) -> None:
        """``ssl.views`` null -> augment for image sources, corruption for table sources (written into the config,
        so --print-config and config.yaml show it); an explicit choice must fit the source."""
        src, views = self.data.source, self.ssl.views
        if views is None:
            if src not in IMAGE_SOURCES + TABLE_SOURCES:
                raise _PathError("ssl.views", f"data.source {src} may hold images or a table, so the Joint-SSL views "
                                              f"must be named: set ssl.views: augment (images, two draws of "
                                              f"train.augment) or corruption (table rows, SCARF)")
            self.ssl.views = "augment" if src in IMAGE_SOURCES else "corruption"
        elif views == "corruption" and src in IMAGE_SOURCES:
            raise _PathError("ssl.views", f"corruption makes views of table rows (SCARF), but data.source {src} "
                                          f"holds images; use ssl.views: augment with train.augment")
        elif views == "augment" and src in TABLE_SOURCES:
            raise _PathError("ssl.views", f"augment draws image augmentations, but data.source {src} is a table; "
                                          f"use ssl.views: corruption (SCARF feature corruption)")

    @model_validator(mode="after")
    def _loss_and_lambda(self) -> "Config":
        check_loss_settings(self)
        cls = _loss_class(self.loss.family)
        reduction = self.loss.params.get("reduction")
        if reduction is not None and reduction not in cls.config_reductions:
            raise _PathError("loss.params.reduction", f"must be one of {list(cls.config_reductions)} for "
                                                      f"{self.loss.family!r}, got {reduction!r}")
        return self

    @model_validator(mode="after")
    def _resolve_recipe(self) -> "Config":
        """Write the recipe choices whose default depends on other keys into the config (--print-config and the
        saved config.yaml show them): model.head, model.head_scale, focal's reduction, multi-class VS weights."""
        params = self.loss.params
        multiclass_vs = self.loss.family == "vs" and self.data.task == "multiclass"
        if multiclass_vs and "params" not in self.loss.model_fields_set:
            params = self.loss.params = {k: v for k, v in params.items() if k != "omega"}  # default: binary
        if self.loss.family == "focal" and "reduction" not in params:
            self.loss.params = {**params, "reduction": "mean"}
        if multiclass_vs and "class_weights" not in params:
            self.loss.params = {**params, "class_weights": "none"}
        m, ldam = self.model, self.loss.family == "ldam"
        if m.head is None:
            m.head = "cosine" if ldam else "linear"
        if m.head == "linear" and m.head_scale is not None:
            raise ValueError("model.head_scale applies only to model.head: cosine; remove it (or set model.head: "
                             "cosine)")
        if m.head == "cosine":
            if ldam and m.head_scale is not None:
                raise ValueError("with loss.family: ldam the cosine head uses the loss's scale: set "
                                 "loss.params.scale and leave model.head_scale null")
            if not ldam and m.head_scale is None:
                m.head_scale = DEFAULT_COSINE_SCALE
            if m.placement == "logits" and self.lct.enabled:
                raise ValueError("model.head: cosine takes FiLM on the features (model.placement: features): FiLM "
                                 "on its logits would rescale the cosines the head normalises")
        return self

    @model_validator(mode="after")
    def _loss_builds(self) -> "Config":
        """Build the loss once on stand-in class counts so bad loss.params values fail here, at load."""
        from lossdial.losses import build_loss

        if self.data.task == "binary":
            counts = [2, 1]
        else:
            # the class count: data.classes, else the length of a per-class list (class_weights, focal's alpha;
            # checked against the data's classes when the run is built), else a 3-class stand-in
            lists = [len(v) for v in self.loss.params.values() if isinstance(v, list)]
            k = len(self.data.classes) if self.data.classes else lists[0] if lists else 3
            counts = list(range(k + 1, 1, -1))
        try:
            build_loss(self.loss.family, counts, **loss_kwargs(self))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"loss.params ({self.loss.family}, {self.data.task} task): {exc}") from None
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _loss_param_names(cls: type) -> list[str]:
    """The constructor arguments a config may set in loss.params (``reduction`` only where the family offers a
    documented choice; ``logit_scale`` never: it follows model.head)."""
    import inspect

    sig = inspect.signature(cls.__init__)
    skip = {"self", "class_counts", "positive_index", "logit_scale"}
    if not getattr(cls, "config_reductions", ()):
        skip.add("reduction")
    return [
        n
        for n, p in sig.parameters.items()
        if n not in skip and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]


def parse_laws(lambdas: Mapping[str, Any]) -> dict[str, Any]:
    """``lct.lambda`` as ``{name: Distribution}``; an invalid entry raises :class:`_PathError` at its name."""
    from lossdial.conditioning import parse_distribution

    out = {}
    for name, value in lambdas.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise _PathError(str(name), "not a valid hyperparameter name (letters, digits and _)")
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise _PathError(name, f"must be a distribution such as \"L(0,3,0.33)\" or a number, got {value!r}")
        try:
            out[name] = parse_distribution(value)
        except ValueError as exc:
            raise _PathError(name, str(exc)) from None
    return out


def parse_grid(grid: str | Mapping[str, Any]) -> list[dict[str, float]]:
    """``evaluate.lambda`` as a list of points; a malformed grid raises :class:`_PathError`."""
    from lossdial.conditioning import parse_lambda_grid

    try:
        return parse_lambda_grid(grid)
    except ValueError as exc:
        raise _PathError("", str(exc)) from None


def _names(names) -> str:
    return ", ".join(sorted(names)) or "none"


def check_loss_settings(cfg: "Config") -> None:
    """What the loss family allows, checked once at load: ``loss.params`` (names, ranges, and the family's
    own constructor checks), ``lct.lambda`` (conditionable names; every law's support inside the family's
    ``hparam_ranges``; ``hparam_order`` for every draw) and ``evaluate.lambda`` (the conditioned names,
    values inside the ranges). Raises :class:`_PathError` with the dotted path from the config's root."""
    from lossdial.losses import LOSSES
    from lossdial.losses.base import check_hparam_values, describe_range, hparam_range

    family = cfg.loss.family
    cls = LOSSES[family]
    who = f"the {family} loss ({cls.__name__})"
    params = dict(cfg.loss.params)
    known = _loss_param_names(cls)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise _PathError(f"loss.params.{unknown[0]}",
                         f"{who} does not take {unknown[0]!r}; its parameters: {', '.join(known)}")
    for name, value in params.items():
        if name in cls.hparam_ranges or name in cls.hparam_names:
            if value is None or isinstance(value, (list, tuple)):
                continue  # the family's default, or per-class values (checked by the family below)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _PathError(f"loss.params.{name}", f"must be a number, got {value!r}")
            if check_hparam_values(cls, name, [value]) is not None:
                raise _PathError(f"loss.params.{name}", f"{value!r} is not allowed: {who} takes {name} in "
                                                        f"{describe_range(hparam_range(cls, name))}")
    laws = parse_laws(cfg.lct.lambdas) if cfg.lct.enabled else {}
    if cfg.loss.smoothing is not None:  # loss.smoothing adds a_max / a_min to the family's hyperparameters
        _check_laws(cfg, _SmoothedView(cls), who, {**params, **cfg.loss.smoothing.model_dump()}, laws)
    else:
        _check_laws(cfg, cls, who, params, laws)
    if cfg.data.task == "binary":
        # the family's own checks (e.g. drw_beta, weighting) on a 2-class stand-in; a conditioned name takes
        # a value of its law (its fixed value is never used)
        try:
            drawn = {n: d.support[0] for n, d in laws.items() if n not in params_of_smoothing(cfg)}
            cls([2, 1], **{**params, **drawn})
        except (TypeError, ValueError) as exc:
            raise _PathError("loss.params", str(exc)) from None


class _SmoothedView:
    """A loss class as ``loss.smoothing`` extends it (for the checks of :func:`_check_laws`): its hyperparameter
    names, ranges and order plus smoothing's a_max / a_min (the rule of ``ImbalanceLoss.enable_smoothing``)."""

    def __init__(self, cls: type):
        from lossdial.losses.base import SMOOTHING_NAMES, SMOOTHING_ORDER, SMOOTHING_RANGES

        self.cls = cls
        self.__name__ = cls.__name__
        self.hparam_names = tuple(cls.hparam_names) + SMOOTHING_NAMES
        self.hparam_ranges = {**cls.hparam_ranges, **SMOOTHING_RANGES}
        self.hparam_order = tuple(cls.hparam_order) + SMOOTHING_ORDER


def params_of_smoothing(cfg: "Config") -> tuple[str, ...]:
    """The hyperparameter names ``loss.smoothing`` adds (none when it is off)."""
    from lossdial.losses.base import SMOOTHING_NAMES

    return SMOOTHING_NAMES if cfg.loss.smoothing is not None else ()


def _check_laws(cfg: "Config", cls: type, who: str, params: dict[str, Any], laws: dict[str, Any]) -> None:
    from lossdial.conditioning import Fixed
    from lossdial.losses.base import check_hparam_values, describe_range, hparam_range

    if not laws:
        return
    valid = set(cls.hparam_names)
    for name in laws:
        if name not in valid:
            raise _PathError(f"lct.lambda.{name}",
                             f"{name!r} is not a hyperparameter {who} can be conditioned on; conditionable "
                             f"names: {_names(valid)}")
    # interval of values each name takes: the law's support, else the fixed value (loss.params or default)
    span: dict[str, tuple[float, float]] = {}
    for name, d in laws.items():
        bad = check_hparam_values(cls, name, d.support)  # every range is an interval: the ends suffice
        if bad is not None:
            what = f"{bad:g} is not allowed" if isinstance(d, Fixed) else f"{d.spec()} reaches {bad:g}"
            raise _PathError(f"lct.lambda.{name}", f"{what}, but {who} takes {name} in "
                                                   f"{describe_range(hparam_range(cls, name))}")
        span[name] = d.support
    defaults = _loss_param_defaults(getattr(cls, "cls", cls))
    for a, b in cls.hparam_order:
        lo_hi = []
        for n in (a, b):
            if n in span:
                lo_hi.append(span[n])
            else:
                v = params.get(n, defaults.get(n))
                lo_hi.append((float(v), float(v)))
        if lo_hi[0][1] > lo_hi[1][0]:
            where = a if a in laws else b
            raise _PathError(f"lct.lambda.{where}",
                             f"{who} needs {a} <= {b} for every draw, but {a} reaches {lo_hi[0][1]:g} and {b} "
                             f"goes down to {lo_hi[1][0]:g}; keep {a}'s upper end at or below {b}'s lower end")
    if cfg.evaluate.lambda_grid is not None:
        points = parse_grid(cfg.evaluate.lambda_grid)
        names = set(points[0]) if points else set()
        extra, missing = sorted(names - set(laws)), sorted(set(laws) - names)
        if extra or missing:
            parts = ([f"{', '.join(extra)} {'is' if len(extra) == 1 else 'are'} not conditioned by lct.lambda"]
                     if extra else []) + ([f"no values for {', '.join(missing)}"] if missing else [])
            raise _PathError("evaluate.lambda", f"{'; '.join(parts)}: the grid needs values for exactly the "
                                                f"conditioned names ({_names(laws)})")
        for name in laws:
            bad = check_hparam_values(cls, name, [p[name] for p in points])
            if bad is not None:
                raise _PathError("evaluate.lambda", f"{name}={bad:g} is not allowed: {who} takes {name} in "
                                                    f"{describe_range(hparam_range(cls, name))}")


def _loss_param_defaults(cls: type) -> dict[str, Any]:
    import inspect

    return {n: p.default for n, p in inspect.signature(cls.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}


def set_lct_law(raw: dict[str, Any], law: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the raw config dict trained with LCT over ``law`` (``{name: spec}``): ``lct.enabled`` and
    ``lct.lambda`` are set, and an ``evaluate.lambda`` grid over other names than the law's is dropped, so
    the final evaluation uses the default grid over the new law (used by ``train --lct`` and ``compare``)."""
    out = copy.deepcopy(raw)
    lct = out.setdefault("lct", {}) or {}
    out["lct"] = lct
    lct["enabled"] = True
    lct.pop("lambdas", None)
    lct["lambda"] = dict(law)
    ev = out.get("evaluate") or {}
    grid = ev.get("lambda", ev.get("lambda_grid"))
    if grid is not None:
        try:
            names = set(parse_grid(grid)[0])
        except (_PathError, IndexError):
            names = None  # left for validation to report
        if names is not None and names != set(law):
            ev.pop("lambda", None)
            ev.pop("lambda_grid", None)
    return out


def cosine_head_scale(cfg: Config) -> float | None:
    """The scale s of the cosine head (logits = s * cosine), or None for a linear head.

    LDAM's cosine head takes the loss's scale (``loss.params.scale``, else LDAMLoss's default 30); any other
    family takes ``model.head_scale`` (resolved at load).
    """
    if cfg.model.head != "cosine":
        return None
    if cfg.loss.family == "ldam":
        import inspect

        from lossdial.losses import LDAMLoss

        return float(cfg.loss.params.get("scale", inspect.signature(LDAMLoss).parameters["scale"].default))
    return float(cfg.model.head_scale)


def loss_kwargs(cfg: Config) -> dict[str, Any]:
    """Keyword arguments of ``build_loss(cfg.loss.family, counts, **...)``: loss.params, plus the head's scale for
    LDAM on a cosine head (the loss takes its margin off the cosines, see LDAMLoss)."""
    kw = dict(cfg.loss.params)
    if cfg.loss.smoothing is not None:
        kw["smoothing"] = cfg.loss.smoothing.model_dump()
    if cfg.loss.family == "ldam" and cfg.model.head == "cosine":
        kw["logit_scale"] = cosine_head_scale(cfg)
    return kw


def fixed_lambda(cfg: Config) -> dict[str, Any]:
    """The hyperparameters a baseline run was trained at: the entries of loss.params the family could condition
    on (its ``hparam_names``); settings such as class_weights or reduction are not part of a lambda."""
    from lossdial.losses import LOSSES

    names = LOSSES[cfg.loss.family].hparam_names
    return {k: v for k, v in cfg.loss.params.items() if k in names}


def pin_legacy_defaults(raw: dict[str, Any]) -> dict[str, Any]:
    """A saved run's config.yaml as it was trained: keys whose default changed are pinned to the old value.

    Run directories written before ``model.head`` existed trained a linear head (even for LDAM), and focal
    runs written before ``reduction`` was configurable used the weighted mean. ``raw`` is not modified.
    """
    raw = copy.deepcopy(raw)
    model = raw.get("model")
    if isinstance(model, dict) and "head" not in model:
        model["head"] = "linear"
    loss = raw.get("loss")
    if isinstance(loss, dict) and loss.get("family") == "focal" and isinstance(loss.get("params"), dict) \
            and "reduction" not in loss["params"]:
        loss["params"]["reduction"] = "weighted_mean"
    return raw


def _loss_class(family: str) -> type:
    from lossdial.losses import LOSSES

    return LOSSES[family]


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid config ({source}):"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        cause = (e.get("ctx") or {}).get("error")
        if isinstance(cause, _PathError):  # the validator gave the path and a message without the input
            path = ".".join(p for p in (loc, cause.path) if p) or "<root>"
            lines.append(f"  {path}: {cause}")
            continue
        loc = loc or "<root>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; `lossdial train --print-config` shows every valid key)"
        elif "input" in e and e["type"] not in ("missing",):
            msg = f"{msg} (got {e['input']!r})"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``"optim.lr=0.05"`` into (["optim", "lr"], 0.05); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.path=value, e.g. optim.lr=0.05")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key path")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({exc})") from exc
    return key.split("."), value


_OPEN, _CLOSE = "([{", ")]}"


def split_overrides(text: str) -> list[str]:
    """Split ``"a.b=1,c=[1, 2],d={x: \"L(0,3,0.33)\"}"`` into overrides at the commas that are outside
    brackets, parentheses, braces and quotes; each piece is one :func:`parse_override` text.

    A quote opens a quoted YAML scalar only where one can start (at the start of a value: after ``=``, ``,``,
    ``:``, an opening bracket, or spaces after one of those), so an apostrophe inside a plain value
    (``data.path=/o'brien``) is an ordinary character. Unbalanced brackets or quotes and empty pieces are
    errors (ConfigError).
    """
    pieces, buf, stack = [], [], []
    quote = None
    prev = "="  # the last non-space character outside quotes
    i = 0
    while i < len(text):
        ch = text[i]
        if quote is not None:
            buf.append(ch)
            if (ch == "\\" and quote == '"' or ch == quote == "'" and text[i + 1:i + 2] == "'") and i + 1 < len(text):
                buf.append(text[i + 1])  # an escaped character: \" in double quotes, '' in single quotes
                i += 1
            elif ch == quote:
                quote = None
                prev = ch
            i += 1
            continue
        if ch in "'\"" and prev in "=,:" + _OPEN:
            quote = ch
        elif ch in _OPEN:
            stack.append(ch)
        elif ch in _CLOSE:
            if not stack or _OPEN.index(stack[-1]) != _CLOSE.index(ch):
                raise ConfigError(f"{text!r}: {ch!r} at position {i + 1} closes nothing; check the brackets")
            stack.pop()
        elif ch == "," and not stack:
            pieces.append("".join(buf))
            buf, prev = [], ","
            i += 1
            continue
        buf.append(ch)
        if not ch.isspace():
            prev = ch
        i += 1
    if quote is not None:
        raise ConfigError(f"{text!r}: the quote {quote} is never closed")
    if stack:
        raise ConfigError(f"{text!r}: {''.join(stack)!r} is never closed; check the brackets")
    pieces.append("".join(buf))
    pieces = [p.strip() for p in pieces]
    if any(not p for p in pieces):
        raise ConfigError(f"{text!r} has an empty override (two commas in a row, or one at an end)")
    return pieces


def apply_overrides(raw: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    out = copy.deepcopy(raw)
    for ov in overrides or []:
        path, value = parse_override(ov)
        node = out
        for part in path[:-1]:
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {ov!r}: {part!r} is not a section")
            node = nxt
        node[path[-1]] = value
    return out


def config_from_dict(raw: dict[str, Any], overrides: list[str] | None = None, source: str = "<dict>", *,
                     lct: Mapping[str, Any] | None = None) -> Config:
    """Validate ``raw`` after the dotted ``overrides``; ``lct`` (``{name: spec}``) then sets the LCT law
    (:func:`set_lct_law`)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"invalid config ({source}): the top level must be a mapping of sections")
    merged = apply_overrides(raw, overrides)
    if lct is not None:
        merged = set_lct_law(merged, lct)
    try:
        return Config.model_validate(merged)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a mapping key written twice (plain YAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(f"key {key!r} is written twice (lines {seen[key]} and {line}); keep one")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> Any:
    """A YAML config file's content; a repeated key is an error (ConfigError), not a silent override."""
    path = Path(path)
    try:
        return yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except ConfigError as exc:
        raise ConfigError(f"config file {str(path)!r}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from exc


def load_config(path: str | Path, overrides: list[str] | None = None, *,
                lct: Mapping[str, Any] | None = None) -> Config:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    raw = read_yaml(path) or {}
    return config_from_dict(raw, overrides, source=str(path), lct=lct)


def packaged_config_path(name: str) -> Path:
    """Path of a config shipped inside the package (e.g. ``"demo_digits"``)."""
    p = Path(__file__).parent / "configs" / f"{name}.yaml"
    if not p.is_file():
        raise ConfigError(f"no packaged config named {name!r}")
    return p
