"""Data sources, imbalanced binary tasks, splits and the in-memory loader."""

from lossdial.data.loader import TensorLoader, augment_batch
from lossdial.data.sources import SOURCES, Pool, load_source
from lossdial.data.splits import SplitIndices, binary_labels, make_splits
from lossdial.data.task import Normalizer, Split, Task, build_task

__all__ = ["SOURCES", "Pool", "Split", "SplitIndices", "Task", "Normalizer", "TensorLoader",
           "augment_batch", "binary_labels", "build_task", "load_source", "make_splits"]
