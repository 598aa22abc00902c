"""Pure-torch functions and module classes that function-style ops and layers torch.nn lacks lower to.

The standalone exporter copies their source into the generated file, so they may use only ``torch`` (and one
another) and must stay self-contained. Module classes keep torch's parameter names and shapes (a ``LayerNorm2d`` is
an ``nn.LayerNorm``, a ``ChannelLinear`` an ``nn.Linear``), so weights copy over from torchvision by order.
"""

from __future__ import annotations

import torch


def per_channel(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Let an (N, C) tensor meet an (N, C, H, W) one: it becomes (N, C, 1, 1), one value per channel."""
    if a.dim() == 4 and b.dim() == 2:
        b = b[:, :, None, None]
    elif a.dim() == 2 and b.dim() == 4:
        a = a[:, :, None, None]
    return a, b


def add(*inputs: torch.Tensor) -> torch.Tensor:
    """Elementwise sum; an (N, C) or (N, C, 1, 1) tensor is added to every position of an (N, C, H, W) one."""
    total = inputs[0]
    for tensor in inputs[1:]:
        total, tensor = per_channel(total, tensor)
        total = total + tensor
    return total


def concat(*inputs: torch.Tensor) -> torch.Tensor:
    """Join along the channel (or feature) dimension."""
    return torch.cat(inputs, dim=1)


def broadcast_mul(*inputs: torch.Tensor) -> torch.Tensor:
    """Elementwise product; an (N, C) or (N, C, 1, 1) tensor scales the channels of an (N, C, H, W) one."""
    product = inputs[0]
    for tensor in inputs[1:]:
        product, tensor = per_channel(product, tensor)
        product = product * tensor
    return product


def global_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C): the mean over height and width."""
    return x.mean(dim=(2, 3))


def global_max_pool(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C): the largest value over height and width."""
    return x.amax(dim=(2, 3))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's shuffle, as torchvision writes it: (g, n) channel blocks transposed to (n, g)."""
    batch, channels, height, width = x.size()
    x = x.view(batch, groups, channels // groups, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(batch, channels, height, width)


def channel_chunk(x: torch.Tensor, chunks: int, index: int) -> torch.Tensor:
    """Part ``index`` of ``x.chunk(chunks, dim=1)``."""
    return x.chunk(chunks, dim=1)[index]


def channel_slice(x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Channels (or features) ``start:stop``."""
    return x[:, start:stop]


def resize(
    x: torch.Tensor,
    *like: torch.Tensor,
    size: tuple[int, int] | None = None,
    scale: float | None = None,
    mode: str = "nearest",
    align_corners: bool | None = None,
) -> torch.Tensor:
    """``torch.nn.functional.interpolate`` to ``size``, by ``scale``, or to the height and width of ``like``."""
    if like:
        size = (like[0].shape[-2], like[0].shape[-1])
    return torch.nn.functional.interpolate(
        x, size=size, scale_factor=scale, mode=mode, align_corners=align_corners
    )


class LayerNorm2d(torch.nn.LayerNorm):
    """Layer norm over the channels at each position of (N, C, H, W): torchvision's ConvNeXt ``LayerNorm2d``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = torch.nn.functional.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ChannelLinear(torch.nn.Linear):
    """``nn.Linear`` applied to the channels at each position of (N, C, H, W) (ConvNeXt's Permute, Linear,
    Permute)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.linear(x.permute(0, 2, 3, 1), self.weight, self.bias)
        return x.permute(0, 3, 1, 2)


class ChannelScale(torch.nn.Module):
    """A learned scale per channel: ``weight`` of shape (C, 1, 1), every element ``init`` at first."""

    def __init__(self, channels: int, init: float) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.full((channels, 1, 1), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * x


class StochasticDepth(torch.nn.Module):
    """torchvision.ops.StochasticDepth: while training, zero the input per sample (``row``) or for the whole batch
    (``batch``) with probability ``p`` and scale survivors by 1/(1 − p); the identity at inference."""

    def __init__(self, p: float, mode: str) -> None:
        super().__init__()
        self.p = p
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        survival = 1.0 - self.p
        size = [x.shape[0]] + [1] * (x.ndim - 1) if self.mode == "row" else [1] * x.ndim
        noise = torch.empty(size, dtype=x.dtype, device=x.device).bernoulli_(survival)
        if survival > 0.0:
            noise.div_(survival)
        return x * noise

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode}"


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
