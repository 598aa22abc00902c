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


def sample_add(base: torch.Tensor, added: torch.Tensor) -> torch.Tensor:
    """Darknet's shortcut: ``base`` plus the overlapping channels of a strided sample of ``added``.

    Where the sizes differ, the larger tensor is read (or written) every ``ratio``-th position, as Darknet's
    ``shortcut_cpu`` does; channels beyond the smaller count are left as they are in ``base``."""
    stride = max(added.shape[3] // base.shape[3], 1)
    sample = max(base.shape[3] // added.shape[3], 1)
    channels = min(base.shape[1], added.shape[1])
    height = min(base.shape[2], added.shape[2])
    width = min(base.shape[3], added.shape[3])
    picked = added[:, :channels, ::stride, ::stride][:, :, :height, :width]
    out = base.clone()
    out[:, :channels, : height * sample : sample, : width * sample : sample] += picked
    return out
