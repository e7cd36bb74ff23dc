"""lossdial: train one classifier over a distribution of imbalance-loss hyperparameters (loss-conditional
training with FiLM), then choose the precision/recall operating point after training.

Subpackages: ``losses``, ``conditioning``, ``models``, ``data``, ``train``, ``evaluate``.
"""

__version__ = "0.1.0"
