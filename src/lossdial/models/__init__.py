"""Backbones, FiLM conditioning and the lambda-conditioned classifier.

Example:
    >>> from lossdial.models import build_model
    >>> model = build_model("resnet32", num_classes=2, lambda_dim=3, film="reference")
    >>> model.conditioned, model.feature_dim
    (True, 64)
"""

from .cifar_resnet import BasicBlock, CifarResNet
from .classifier import HEADS, PLACEMENTS, ConditionedClassifier, CosineLinear, FixedAffine
from .film import FILM_MODES, FiLM
from .mlp import MLPBackbone
from .registry import BACKBONES, build_backbone, build_model, count_parameters
from .small_cnn import SmallCNN
from .torchvision_backbones import TORCHVISION_BACKBONES, load_state_dict_file, torchvision_backbone

__all__ = [
    "BACKBONES",
    "FILM_MODES",
    "HEADS",
    "PLACEMENTS",
    "TORCHVISION_BACKBONES",
    "BasicBlock",
    "CifarResNet",
    "ConditionedClassifier",
    "CosineLinear",
    "FiLM",
    "FixedAffine",
    "MLPBackbone",
    "SmallCNN",
    "build_backbone",
    "build_model",
    "count_parameters",
    "load_state_dict_file",
    "torchvision_backbone",
]
