"""The on-device input pipeline: turn a batch of stored images into the network's input.

The whole data set lives in one tensor on the training device; a batch is an index into it. Everything here is
batched tensor arithmetic on that device (no per-sample Python), with randomness from one generator whose state
the checkpoint carries.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


class BatchPipeline:
    """uint8/float batch -> normalized float32 batch, augmented when training.

    Normalization uses per-channel ``mean`` and ``std`` of the training set, so padding and cutout fill with the
    mean (zero after normalizing)."""

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        augment: Sequence[str] = (),
        *,
        device: torch.device,
        channels_last: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        self.mean = torch.tensor(list(mean), dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.inv_std = 1.0 / torch.tensor(list(std), dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.augment = tuple(augment)
        self.channels_last = channels_last
        self.generator = generator

    def __call__(self, batch: torch.Tensor, train: bool) -> torch.Tensor:
        x = (batch.float() - self.mean) * self.inv_std
        if train:
            for item in self.augment:
                name, _, value = item.partition(":")
                x = getattr(self, f"_{name}")(x, int(value)) if value else getattr(self, f"_{name}")(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _rand(self, *shape: int, device: torch.device) -> torch.Tensor:
        return torch.rand(shape, generator=self.generator, device=device)

    def _flip(self, x: torch.Tensor) -> torch.Tensor:
        """Horizontal flip of a random half of the batch."""
        mask = self._rand(x.shape[0], device=x.device) < 0.5
        return torch.where(mask[:, None, None, None], x.flip(3), x)

    def _crop(self, x: torch.Tensor, pad: int | None = None) -> torch.Tensor:
        """Random crop of the image padded on each side (zero after normalizing: the mean): by ``pad`` pixels,
        or by 1/16 of its size (2 pixels at 32x32), a shift small enough for centred subjects such as digits."""
        n, _, h, w = x.shape
        ph, pw = (pad, pad) if pad is not None else (max(1, h // 16), max(1, w // 16))
        padded = F.pad(x, (pw, pw, ph, ph))
        dy = (self._rand(n, device=x.device) * (2 * ph + 1)).long()
        dx = (self._rand(n, device=x.device) * (2 * pw + 1)).long()
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (N, H, 1)
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (N, 1, W)
        batch = torch.arange(n, device=x.device)[:, None, None]
        # Advanced indices around the channel slice put their broadcast shape first: (N, H, W, C).
        return padded[batch, :, rows, cols].permute(0, 3, 1, 2).contiguous()

    def _cutout(self, x: torch.Tensor) -> torch.Tensor:
        """Blank a random square of half the image's side per sample (DeVries & Taylor, 2017)."""
        n, _, h, w = x.shape
        size_h, size_w = max(1, h // 2), max(1, w // 2)
        cy = (self._rand(n, device=x.device) * h).long()[:, None, None]
        cx = (self._rand(n, device=x.device) * w).long()[:, None, None]
        ys = torch.arange(h, device=x.device)[None, :, None]
        xs = torch.arange(w, device=x.device)[None, None, :]
        inside = ((ys - cy).abs() * 2 < size_h) & ((xs - cx).abs() * 2 < size_w)  # (N, H, W)
        return x.masked_fill(inside[:, None], 0.0)


def channel_stats(x: torch.Tensor, chunk: int | None = None) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of an (N, C, H, W) tensor, in float64, ``chunk`` images at a time
    (default: about 16 million values, so ImageNet-sized images never need gigabytes of float64)."""
    c = x.shape[1]
    if chunk is None:
        chunk = max(1, (1 << 24) // max(1, x[0].numel()))
    total = torch.zeros(c, dtype=torch.float64)
    squares = torch.zeros(c, dtype=torch.float64)
    count = 0
    for start in range(0, x.shape[0], chunk):
        part = x[start : start + chunk].to(torch.float64)
        total += part.sum(dim=(0, 2, 3)).cpu()
        squares += (part * part).sum(dim=(0, 2, 3)).cpu()
        count += part.numel() // c
    mean = total / max(count, 1)
    var = (squares / max(count, 1) - mean * mean).clamp_min(0)
    std = var.sqrt()
    # A constant channel (all zeros, say) would divide by zero; leave it unscaled.
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    return mean.tolist(), std.tolist()
