"""Data sources, imbalanced binary tasks, splits and the in-memory loader."""

from lossdial.data.loader import TensorLoader, augment_batch
from lossdial.data.sources import SOURCES, Pool, load_source
from lossdial.data.splits import SplitIndices, binary_labels, make_splits
from lossdial.data.task import Split, Task, apply_normalization, build_task

__all__ = ["SOURCES", "Pool", "Split", "SplitIndices", "Task", "TensorLoader", "apply_normalization",
           "augment_batch", "binary_labels", "build_task", "load_source", "make_splits"]
