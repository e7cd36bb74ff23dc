"""Data sources, imbalanced tasks, splits, the in-memory loader and batched on-device augmentation.

See docs/DATA.md for the config blocks of each source.
"""

from lossdial.data.augment import AUGMENT_MODES, augment_batch, trivial_augment
from lossdial.data.loader import TensorLoader
from lossdial.data.sources import SOURCES, DataSourceError, Pool, load_source
from lossdial.data.splits import SplitIndices, binary_labels, longtail_counts, make_splits, multiclass_labels
from lossdial.data.task import MultiClassNotSupported, Normalizer, Split, Task, build_task

__all__ = ["AUGMENT_MODES", "SOURCES", "DataSourceError", "MultiClassNotSupported", "Pool", "Split",
           "SplitIndices", "Task", "Normalizer", "TensorLoader", "augment_batch", "binary_labels", "build_task",
           "load_source", "longtail_counts", "make_splits", "multiclass_labels", "trivial_augment"]
