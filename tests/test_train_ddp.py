"""``torchrun --nproc_per_node 2`` (gloo on the CPU) trains like one process on the same global batch: each
process takes half of every batch, DDP averages the gradients, and only rank 0 writes the run folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cnndsl.train.metrics import read_jsonl

ROOT = Path(__file__).resolve().parent.parent

SPEC = """network Small(image: [1, 8, 8]) {
    conv(8, 3, padding=same) -> relu -> maxpool(2)
    flatten
    linear(32) -> relu
    linear(10) -> softmax
}
"""


def _args(spec: Path, out: Path) -> list[str]:
    # No augmentation and no dropout: their random draws depend on how the batch is split.
    return ["train", str(spec), "--out", str(out), "--epochs", "2", "--batch-size", "64", "--augment", "none"]


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(tmp_path: Path) -> None:
    spec = tmp_path / "small.cnn"
    spec.write_text(SPEC)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    single = subprocess.run(
        [sys.executable, "-m", "cnndsl", *_args(spec, tmp_path / "one")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert single.returncode == 0, single.stderr
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    ddp = subprocess.run(
        [*launcher, "-m", "cnndsl", *_args(spec, tmp_path / "two")], env=env, capture_output=True, text=True
    )
    assert ddp.returncode == 0, ddp.stderr
    assert "DDP x2 (gloo)" in ddp.stdout
    assert ddp.stdout.count("done: best val accuracy") == 1  # rank 0 alone prints
    assert ddp.stdout.count("network Small") == 1

    one, two = read_jsonl(tmp_path / "one" / "metrics.jsonl"), read_jsonl(tmp_path / "two" / "metrics.jsonl")
    assert len(one) == len(two) == 2
    for a, b in zip(one, two, strict=True):
        for key in ("train_loss", "val_loss", "lr"):
            assert b[key] == pytest.approx(a[key], rel=1e-5), key
        for key in ("train_acc", "val_acc"):  # counts of images: equal unless a logit tie flips
            assert b[key] == pytest.approx(a[key], abs=2 / 1438), key
    w1 = torch.load(tmp_path / "one" / "last.pt", weights_only=True)
    w2 = torch.load(tmp_path / "two" / "last.pt", weights_only=True)
    assert len(w2["rng"]) == 2  # every process's random state is kept for --resume
    for key, value in w1["model"].items():
        torch.testing.assert_close(w2["model"][key], value, rtol=1e-4, atol=1e-5)
