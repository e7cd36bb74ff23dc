"""Loss-conditional training: distributions over loss hyperparameters (lambda), the lambda space
(sampling, FiLM-input encoding, support checks, JSON round trip) and the one parser for lambda
written by users.

>>> import torch
>>> from lossdial.conditioning import LambdaSpace, parse_lct, parse_lambda_grid
>>> space = LambdaSpace(parse_lct("tau~L(0,3,0.33) gamma~U(0,0.3)"))
>>> lam = space.sample(128, torch.Generator().manual_seed(0))   # one draw per batch
>>> space.encode(lam, batch_size=128).shape
torch.Size([128, 2])
>>> len(parse_lambda_grid("tau=0:3:31 gamma=0,0.15,0.3"))
93
"""

from .distributions import Distribution, Fixed, Grid, LinearDist, LogUniform, Uniform
from .parse import grid_points_from_space, parse_distribution, parse_lambda_grid, parse_lct
from .space import LambdaSpace

__all__ = [
    "Distribution",
    "Fixed",
    "Uniform",
    "LogUniform",
    "LinearDist",
    "Grid",
    "LambdaSpace",
    "parse_distribution",
    "parse_lct",
    "parse_lambda_grid",
    "grid_points_from_space",
]
