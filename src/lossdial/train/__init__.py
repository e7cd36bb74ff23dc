"""The training loop, checkpoints, and the factories that build a run from its config."""

from lossdial.train.checkpoint import load_checkpoint, load_weights, save_checkpoint, save_weights
from lossdial.train.factory import (
    build_lambda_space,
    build_loss_fn,
    build_model_from_config,
    build_optimizer,
    build_scheduler,
    lr_factor,
    resolve_device,
)
from lossdial.train.loop import TrainResult, default_eval_grid, train
from lossdial.train.stacked import StackedConfigError, train_stacked

__all__ = ["TrainResult", "build_lambda_space", "build_loss_fn", "build_model_from_config", "build_optimizer",
           "build_scheduler", "default_eval_grid", "load_checkpoint", "load_weights", "lr_factor",
           "resolve_device", "save_checkpoint", "save_weights", "StackedConfigError", "train", "train_stacked"]
