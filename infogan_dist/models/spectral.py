"""Spectral normalization of a discriminator (model.spectral_norm; Miyato et al. 2018).

torch.nn.utils.parametrizations.spectral_norm on every conv and linear layer: the weight
becomes `parametrizations.weight.original` (the parameter Adam moves) divided by its
largest singular value, estimated by one power iteration per forward in training mode
(none in eval mode). The iteration's vectors (`parametrizations.weight.0._u`, `_v`; each
iteration starts from v) are buffers: they are in the state dict (checkpoints, so a
resumed run continues the same estimate; with v lost, a resumed run differs from the
uninterrupted one), the rank fingerprint compares them, and since they depend only on
the weights, which DDP keeps identical, every rank computes the same ones without a
collective.
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

NORMED = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


def apply_spectral_norm(module: nn.Module) -> nn.Module:
    """Every conv and linear layer of `module`, in place. Returns it."""
    for layer in [m for m in module.modules() if isinstance(m, NORMED)]:
        spectral_norm(layer)
    return module
