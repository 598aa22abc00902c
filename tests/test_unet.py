"""specs/unet.cnn against a hand-written torch U-Net (Ronneberger et al. 2015, padded convs, transposed-conv
upsampling): same parameters and buffers in the same order, same counts, same outputs."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from conftest import SPECS
from torch import nn

import cnndsl
from cnndsl.analysis import analyse_layers

REFERENCE = json.loads((Path(__file__).parent / "data" / "zoo_reference.json").read_text())


def _double(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.Conv2d(c_out, c_out, 3, padding=1), nn.ReLU()
    )


class HandUNet(nn.Module):
    """The U-Net of the paper's Fig. 1 with padding 1 on every 3x3 conv, written out by hand."""

    def __init__(self, channels: int = 1, classes: int = 2) -> None:
        super().__init__()
        self.enc1 = _double(channels, 64)
        self.enc2 = _double(64, 128)
        self.enc3 = _double(128, 256)
        self.enc4 = _double(256, 512)
        self.bottom = _double(512, 1024)
        self.up4, self.dec4 = nn.ConvTranspose2d(1024, 512, 2, stride=2), _double(1024, 512)
        self.up3, self.dec3 = nn.ConvTranspose2d(512, 256, 2, stride=2), _double(512, 256)
        self.up2, self.dec2 = nn.ConvTranspose2d(256, 128, 2, stride=2), _double(256, 128)
        self.up1, self.dec1 = nn.ConvTranspose2d(128, 64, 2, stride=2), _double(128, 64)
        self.out = nn.Conv2d(64, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1 = self.enc1(x)
        s2 = self.enc2(F.max_pool2d(s1, 2))
        s3 = self.enc3(F.max_pool2d(s2, 2))
        s4 = self.enc4(F.max_pool2d(s3, 2))
        x = self.bottom(F.max_pool2d(s4, 2))
        x = self.dec4(torch.cat([s4, self.up4(x)], dim=1))
        x = self.dec3(torch.cat([s3, self.up3(x)], dim=1))
        x = self.dec2(torch.cat([s2, self.up2(x)], dim=1))
        x = self.dec1(torch.cat([s1, self.up1(x)], dim=1))
        return self.out(x)


def _macs(model: nn.Module, shape: tuple[int, ...]) -> int:
    """Conv2d: output elements x weights per output; ConvTranspose2d: input elements x weights per input."""
    total = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.ConvTranspose2d):
            total += inputs[0].numel() * module.weight[0].numel()
        elif isinstance(module, nn.Conv2d):
            total += output.numel() * module.weight[0].numel()

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model(torch.empty((1, *shape), device="meta"))
    for handle in handles:
        handle.remove()
    return total


def test_unet_counts_equal_the_hand_written_model() -> None:
    net = cnndsl.load(SPECS / "unet.cnn")
    with torch.device("meta"):
        hand = HandUNet()
    layers = analyse_layers(net)
    shape = net.inputs[0].shape
    theirs = {
        "input": list(shape),
        "params": sum(p.numel() for p in hand.parameters()),
        "macs": _macs(hand, shape),
    }
    assert {
        "input": list(shape),
        "params": sum(layer.params for layer in layers),
        "macs": sum(layer.macs for layer in layers),
    } == theirs
    row = REFERENCE["unet"]
    assert {key: row[key] for key in theirs} == theirs
    assert net.outputs[0].shape == (2, *shape[1:])


def test_unet_outputs_equal_the_hand_written_model() -> None:
    """Weights handed over by registration order (strict shapes); float64 at 32x32 (four halvings leave 2x2)."""
    torch.manual_seed(0)
    hand = HandUNet().double().eval()
    ours = cnndsl.load(SPECS / "unet.cnn", input_shapes={None: (1, 32, 32)}).to_torch().double().eval()
    theirs = list(hand.state_dict().values())
    keys = list(ours.state_dict().keys())
    assert [tuple(t.shape) for t in ours.state_dict().values()] == [tuple(t.shape) for t in theirs]
    ours.load_state_dict(dict(zip(keys, theirs, strict=True)))
    x = torch.randn(2, 1, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        expected, actual = hand(x), ours(x)
    assert actual.shape == expected.shape == (2, 2, 32, 32)
    assert float((actual - expected).abs().max()) <= 1e-10 * max(1.0, float(expected.abs().max()))
