"""FiLM conditioning of a feature vector on the loss hyperparameters lambda.

Feature-wise linear modulation (Perez et al. 2018), as used by loss-conditional training: two small MLPs
map the encoded lambda ``z`` to a per-feature scale ``sigma(z)`` and shift ``mu(z)``.

Two forms are offered (see ``../shared/METHODS.md`` section 2):

- ``mode="reference"`` -- the LCT paper's code: ``h' = sigma * h + mu``, PyTorch default init, so at the
  start ``sigma`` is small, random and lambda-dependent.
- ``mode="identity"`` (default) -- the common identity start: ``h' = h * (1 + sigma) + mu`` with the last
  linear layer of both MLPs zero-initialised, so at initialisation ``h' == h`` exactly for every ``z``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["FILM_MODES", "FiLM"]

#: Valid values of ``FiLM(mode=...)``.
FILM_MODES: tuple[str, ...] = ("identity", "reference")


def _mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=False), nn.Linear(hidden, out_dim))


class FiLM(nn.Module):
    """Feature-wise linear modulation ``h -> scale(z) * h + mu(z)``.

    Args:
        lambda_dim: size ``d`` of the encoded lambda vector ``z``.
        feature_dim: size ``F`` of the modulated feature vector ``h``.
        hidden: hidden width of the two MLPs (128 in the reference).
        mode: ``"identity"`` (``h * (1 + sigma) + mu``, zero-initialised last layers) or
            ``"reference"`` (``sigma * h + mu``, PyTorch default init).

    ``forward(h, z)`` takes ``h`` of shape ``[B, F]`` and ``z`` of shape ``[B, d]``, ``[1, d]`` or ``[d]``
    (the latter two broadcast over the batch) and returns ``[B, F]``. ``z`` is moved to the device and
    dtype of the FiLM parameters.

    Example:
        >>> film = FiLM(lambda_dim=2, feature_dim=4)
        >>> h = torch.randn(3, 4)
        >>> torch.equal(film(h, torch.tensor([0.5, -1.0])), h)   # identity start
        True
    """

    def __init__(self, lambda_dim: int, feature_dim: int, hidden: int = 128, mode: str = "identity") -> None:
        super().__init__()
        if mode not in FILM_MODES:
            raise ValueError(f"unknown FiLM mode {mode!r}; valid modes: {', '.join(FILM_MODES)}")
        for name, value in (("lambda_dim", lambda_dim), ("feature_dim", feature_dim), ("hidden", hidden)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"FiLM {name} must be a positive integer, got {value!r}")
        self.lambda_dim = lambda_dim
        self.feature_dim = feature_dim
        self.hidden = hidden
        self.mode = mode
        self.sigma_net = _mlp(lambda_dim, hidden, feature_dim)
        self.mu_net = _mlp(lambda_dim, hidden, feature_dim)
        if mode == "identity":
            for net in (self.sigma_net, self.mu_net):
                nn.init.zeros_(net[-1].weight)
                nn.init.zeros_(net[-1].bias)

    def extra_repr(self) -> str:
        return f"lambda_dim={self.lambda_dim}, feature_dim={self.feature_dim}, hidden={self.hidden}, mode={self.mode!r}"

    # ------------------------------------------------------------------ helpers
    def _prepare_z(self, z: Tensor) -> Tensor:
        """Return ``z`` as a 2-D ``[n, d]`` tensor on the parameters' device and dtype."""
        if not isinstance(z, Tensor):
            z = torch.as_tensor(z)
        if z.dim() == 1:
            z = z.unsqueeze(0)
        if z.dim() != 2 or z.shape[-1] != self.lambda_dim:
            raise ValueError(
                f"FiLM expects z of shape [B, {self.lambda_dim}], [1, {self.lambda_dim}] or [{self.lambda_dim}] "
                f"(lambda_dim={self.lambda_dim}), got shape {list(z.shape)}"
            )
        w = self.sigma_net[0].weight
        return z.to(device=w.device, dtype=w.dtype)

    def sigma_mu(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Raw MLP outputs ``(sigma(z), mu(z))``, each of shape ``[n, F]`` (``n`` = rows of ``z``; 1 for ``[d]``).

        ``sigma`` is the quantity named in the formula of the current mode: the output is
        ``sigma * h + mu`` for ``"reference"`` and ``h * (1 + sigma) + mu`` for ``"identity"``. Use
        :meth:`scale_shift` for the effective affine map in either mode.

        Example:
            >>> film = FiLM(1, 3, mode="identity")
            >>> sigma, mu = film.sigma_mu(torch.tensor([0.2]))
            >>> sigma.shape, bool((sigma == 0).all())
            (torch.Size([1, 3]), True)
        """
        z = self._prepare_z(z)
        return self.sigma_net(z), self.mu_net(z)

    def scale_shift(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Effective ``(scale, shift)`` with ``forward(h, z) == scale * h + shift`` (mode-independent).

        This is what is needed to fold FiLM into an adjacent linear layer at a fixed lambda.

        Example:
            >>> film = FiLM(1, 3, mode="identity")
            >>> scale, shift = film.scale_shift(torch.tensor([0.2]))
            >>> scale.tolist(), shift.tolist()
            ([[1.0, 1.0, 1.0]], [[0.0, 0.0, 0.0]])
        """
        sigma, mu = self.sigma_mu(z)
        if self.mode == "identity":
            return 1 + sigma, mu
        return sigma, mu

    # ------------------------------------------------------------------ forward
    def forward(self, h: Tensor, z: Tensor) -> Tensor:
        if h.dim() != 2 or h.shape[1] != self.feature_dim:
            raise ValueError(f"FiLM expects h of shape [B, {self.feature_dim}], got shape {list(h.shape)}")
        sigma, mu = self.sigma_mu(z)
        if sigma.shape[0] not in (1, h.shape[0]):
            raise ValueError(
                f"z has batch size {sigma.shape[0]} but h has batch size {h.shape[0]}; pass z as [B, d], [1, d] or [d]"
            )
        if self.mode == "identity":
            out = h * (1 + sigma) + mu
        else:
            out = sigma * h + mu
        return out
