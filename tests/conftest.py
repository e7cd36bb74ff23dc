import os

# One thread per test process, and for every process a test starts (CLI runs, torchrun ranks, compare
# workers): the models here are tiny, and on a shared or busy CPU two OpenMP threads per process spin
# against each other (a 124-step demo run: 2.2 s with one thread, 39 s with two, on 2 busy cores). One
# thread everywhere also keeps in-process and subprocess runs bit-identical (test_sigkilled_...).
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


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


def assert_same_run_weights(run_a, run_b, checkpoint_parts=()):
    """Two run directories hold bit-identical evaluation weights (model.safetensors) and, for each name in
    ``checkpoint_parts``, the same tensors under that key of checkpoint.pt (e.g. the Joint-SSL projector)."""
    from pathlib import Path

    from safetensors.torch import load_file

    a, b = load_file(str(Path(run_a) / "model.safetensors")), load_file(str(Path(run_b) / "model.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ca = torch.load(Path(run_a) / "checkpoint.pt", weights_only=True)
    cb = torch.load(Path(run_b) / "checkpoint.pt", weights_only=True)
    for part in checkpoint_parts:
        for k in ca[part]:
            assert torch.equal(ca[part][k], cb[part][k]), (part, k)
