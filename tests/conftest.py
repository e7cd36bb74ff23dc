import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def tiny_overrides():
    """Overrides that make the demo config train in about a second (for loop/CLI tests)."""
    return ["train.epochs=2", "train.eval_every=1", "schedule.warmup_epochs=0",
            "model.backbone_kwargs.width=8", "train.batch_size=128"]


class KillAt:
    """A training callback that simulates a kill: raises KeyboardInterrupt after `step` optimizer steps."""

    def __init__(self, step):
        self.step = step

    def on_start(self, total, start):
        pass

    def on_step(self, step):
        if step == self.step:
            raise KeyboardInterrupt

    def on_epoch_end(self, epoch, record):
        pass


@pytest.fixture
def kill_at():
    """``kill_at(step)``: a callback that interrupts training mid-run (see :class:`KillAt`)."""
    return KillAt
