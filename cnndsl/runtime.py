"""Pure-torch functions that merges and other function-style ops lower to.

The standalone exporter copies these functions' source into the generated file, so they may use only ``torch``
and must stay self-contained.
"""

from __future__ import annotations

import torch


def add(*inputs: torch.Tensor) -> torch.Tensor:
    """Elementwise sum of two or more tensors of one shape."""
    total = inputs[0]
    for tensor in inputs[1:]:
        total = total + tensor
    return total


def concat(*inputs: torch.Tensor) -> torch.Tensor:
    """Join along the channel (or feature) dimension."""
    return torch.cat(inputs, dim=1)


def broadcast_mul(*inputs: torch.Tensor) -> torch.Tensor:
    """Elementwise product; an (N, C) tensor scales the channels of an (N, C, H, W) one."""
    product = inputs[0]
    for tensor in inputs[1:]:
        if product.dim() == 4 and tensor.dim() == 2:
            tensor = tensor[:, :, None, None]
        elif product.dim() == 2 and tensor.dim() == 4:
            product = product[:, :, None, None]
        product = product * tensor
    return product


def global_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C): the mean over height and width."""
    return x.mean(dim=(2, 3))
