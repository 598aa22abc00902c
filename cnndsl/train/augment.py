"""The input pipeline: turn a batch of stored images into the network's input.

Three stages, in this order:

1. :class:`SampleAugment`, per image, with ``torchvision.transforms.v2`` (RandomResizedCrop, RandAugment,
   TrivialAugmentWide) on the stored pixels; in the DataLoader workers when streaming, else in the training
   process. Its randomness comes from a seed per batch (:func:`batch_seed`), so a batch's augmentation does not
   depend on which process or worker makes it, and a resumed run repeats it.
2. :class:`BatchPipeline`, on the device, batched: normalization, then ``flip``, ``crop``, ``cutout`` (hand-written
   as batched tensor arithmetic, drawing from one generator whose state the checkpoint carries), then
   ``erasing`` (v2.RandomErasing per image).
3. :class:`LabelMixer`: v2.MixUp / v2.CutMix on the normalized batch, giving soft targets.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .config import SAMPLE_AUGMENTATIONS

ERASING_DEFAULT = 0.25
"""torchvision's RandomErasing default probability (``erasing`` without ``:P``)."""


def batch_seed(seed: int, epoch: int, step: int, rank: int = 0) -> int:
    """The seed of one batch's per-image augmentation: a function of the run's seed and the batch's place only."""
    state = np.random.SeedSequence([seed, epoch, step, rank]).generate_state(2)
    return int(state[0]) << 31 ^ int(state[1])


class SampleAugment:
    """The per-image v2 augmentations of ``--augment`` (``rrc``, ``randaugment``, ``trivialaugment``) as one
    callable on a (b, C, H, W) batch of stored pixels (uint8, or float in 0..``pixel_max``), seeded per batch."""

    def __init__(self, augment: Sequence[str], size: tuple[int, int], pixel_max: float = 255.0) -> None:
        self.names = [item for item in augment if item in SAMPLE_AUGMENTATIONS and item != "erasing"]
        self.transform = None
        self.pixel_max = pixel_max
        if not self.names:
            return  # torchvision is imported only when used: it costs most of a second of start-up
        from torchvision.transforms import v2

        makers = {
            "rrc": lambda: v2.RandomResizedCrop(size, antialias=True),
            "randaugment": v2.RandAugment,
            "trivialaugment": v2.TrivialAugmentWide,
        }
        self.transform = v2.Compose([makers[name]() for name in self.names])

    def __bool__(self) -> bool:
        return self.transform is not None

    def __call__(self, batch: torch.Tensor, seed: int) -> torch.Tensor:
        if self.transform is None:
            return batch
        floating = batch.is_floating_point()
        # v2's colour operations expect uint8 or floats in [0, 1].
        images = batch / self.pixel_max if floating else batch
        # v2 draws from torch's global generator: fork it, so dropout's stream is untouched and the result
        # depends on the seed alone.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out = torch.stack([self.transform(image) for image in images])
        return out * self.pixel_max if floating else out


class LabelMixer:
    """v2.MixUp and/or v2.CutMix (one of the two per batch when both are on): soft targets, seeded per batch."""

    def __init__(self, mixup: float, cutmix: float, num_classes: int) -> None:
        self.transform: torch.nn.Module | None = None
        if mixup <= 0 and cutmix <= 0:
            return
        from torchvision.transforms import v2

        choices: list[torch.nn.Module] = []
        if mixup > 0:
            choices.append(v2.MixUp(alpha=mixup, num_classes=num_classes))
        if cutmix > 0:
            choices.append(v2.CutMix(alpha=cutmix, num_classes=num_classes))
        self.transform = (v2.RandomChoice(choices) if len(choices) > 1 else choices[0]) if choices else None

    def __bool__(self) -> bool:
        return self.transform is not None

    def __call__(self, x: torch.Tensor, y: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.transform is None:
            return x, y
        with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
            torch.manual_seed(seed)
            mixed, soft = self.transform(x, y)
        return mixed, soft


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
        self.augment = tuple(a for a in augment if a.partition(":")[0] in ("flip", "crop", "cutout"))
        self.erasing = None
        for item in augment:
            name, _, value = item.partition(":")
            if name == "erasing":
                from torchvision.transforms import v2

                self.erasing = v2.RandomErasing(p=float(value) if value else ERASING_DEFAULT, value=0.0)
        self.channels_last = channels_last
        self.generator = generator

    def __call__(self, batch: torch.Tensor, train: bool, seed: int = 0) -> torch.Tensor:
        x = (batch.float() - self.mean) * self.inv_std
        if train:
            for item in self.augment:
                name, _, value = item.partition(":")
                x = getattr(self, f"_{name}")(x, int(value)) if value else getattr(self, f"_{name}")(x)
            if self.erasing is not None:
                # Erased pixels become 0 after normalizing: the training set's mean colour.
                with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
                    torch.manual_seed(seed)
                    x = torch.stack([self.erasing(image) for image in x])
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


def stats_chunk(image_numel: int) -> int:
    """Images per chunk of :func:`channel_stats`: about 16 million values, so ImageNet-sized images never need
    gigabytes of float64."""
    return max(1, (1 << 24) // max(1, image_numel))


def channel_stats(x: torch.Tensor, chunk: int | None = None) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of an (N, C, H, W) tensor, in float64, ``chunk`` images at a time
    (default :func:`stats_chunk`)."""
    if chunk is None:
        chunk = stats_chunk(x[0].numel() if len(x) else 1)
    return stats_of_chunks((x[start : start + chunk] for start in range(0, x.shape[0], chunk)), x.shape[1])


def stats_of_chunks(chunks: Iterable[torch.Tensor], c: int) -> tuple[list[float], list[float]]:
    """:func:`channel_stats` over (n, C, H, W) chunks read one at a time (a streamed data set): the same sums in
    the same order, so the same numbers as the in-memory path."""
    total = torch.zeros(c, dtype=torch.float64)
    squares = torch.zeros(c, dtype=torch.float64)
    count = 0
    for chunk in chunks:
        part = chunk.to(torch.float64)
        total += part.sum(dim=(0, 2, 3)).cpu()
        squares += (part * part).sum(dim=(0, 2, 3)).cpu()
        count += part.numel() // c
    mean = total / max(count, 1)
    var = (squares / max(count, 1) - mean * mean).clamp_min(0)
    std = var.sqrt()
    # A constant channel (all zeros, say) would divide by zero; leave it unscaled.
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    return mean.tolist(), std.tolist()
