"""``torchrun --nproc_per_node 2`` (gloo on the CPU) trains like one process on the same global batch: each
process takes half of every batch, DDP averages the gradients, and only rank 0 writes the run folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from train_hooks import hooked_env

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


# --------------------------------------------------------------------------------------------- streaming ---

STREAM_SPEC = """network Stream(image: [3, 16, 16]) {
    conv(6, 3, padding=same) -> relu -> maxpool(4)
    flatten
    linear(3)
}
"""


def _image_folder(root: Path, per_class: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in range(3):
        folder = root / f"c{label}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 120, (16, 16, 3), dtype=np.uint8)
            pixels[..., label] += 120
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


@pytest.mark.slow
def test_torchrun_streams_its_shards_builds_the_cache_once_and_resumes_after_sigkill(tmp_path: Path) -> None:
    """Two processes stream a folder 54 times the budget; rank 0 alone decodes it into the rows cache, the others wait.
    Killed with SIGKILL during an epoch and resumed, the run's metrics and weights equal those of an uninterrupted
    in-memory DDP run with the same seed (no augmentation, no dropout)."""
    spec = tmp_path / "stream.cnn"
    spec.write_text(STREAM_SPEC)
    data = _image_folder(tmp_path / "images", 24)
    builds = tmp_path / "builds.txt"
    env = hooked_env(tmp_path / "hooks", CNNDSL_TEST_BUILDS=str(builds))
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]

    def command(out: Path, *extra: str) -> list[str]:
        return [
            *launcher, "-m", "cnndsl", "train", str(spec), "--data", str(data), "--out", str(out),
            "--epochs", "6", "--batch-size", "8", "--augment", "none", "--seed", "3",
            "--cache-dir", str(tmp_path / "cache"), *extra,
        ]  # fmt: skip

    memory = subprocess.run(command(tmp_path / "memory"), env=env, capture_output=True, text=True)
    assert memory.returncode == 0, memory.stderr
    assert "holding the data in memory" in memory.stdout

    stream = [*command(tmp_path / "stream"), "--memory-budget", "1K", "--workers", "1"]
    # Rank 0 kills itself and its loader workers in epoch 3 (torchrun gives each rank a process group of its own);
    # torchrun then ends rank 1. Its own session, so that the kill could never reach outside the job.
    killed = subprocess.run(
        stream,
        env={**env, "CNNDSL_TEST_KILL_EPOCH": "3"},
        capture_output=True,
        text=True,
        start_new_session=True,
        timeout=300,
    )
    assert killed.returncode != 0 and "Signal 9 (SIGKILL) received" in killed.stderr, killed.stderr
    assert "streaming the data from a uint8 cache file" in killed.stdout and "DDP x2 (gloo)" in killed.stdout
    assert "decoded" in killed.stdout and killed.stdout.count("into the cache") == 1
    assert torch.load(tmp_path / "stream" / "last.pt", weights_only=True)["epoch"] == 2
    metrics_file = tmp_path / "stream" / "metrics.jsonl"

    resumed = subprocess.run([*stream, "--resume"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {tmp_path / 'stream' / 'last.pt'} after epoch 2" in resumed.stdout
    assert "read " in resumed.stdout and "from the cache" in resumed.stdout
    # The in-memory run decoded into its .npz cache, the streamed one into its rows cache: rank 0 each time.
    assert builds.read_text().split() == ["0:_write_cache", "0:_build_rows"]
    cache_files = sorted(p.suffix for p in (tmp_path / "cache").iterdir())
    assert cache_files == [".json", ".npz", ".u8"], cache_files  # no temporary file of a second writer

    expected, actual = read_jsonl(tmp_path / "memory" / "metrics.jsonl"), read_jsonl(metrics_file)
    assert len(actual) == len(expected) == 6
    for a, b in zip(expected, actual, strict=True):
        for key in ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr"):
            assert b[key] == a[key], (key, a, b)
    final_memory = torch.load(tmp_path / "memory" / "last.pt", weights_only=True)
    final_stream = torch.load(tmp_path / "stream" / "last.pt", weights_only=True)
    assert len(final_stream["rng"]) == 2
    for key, value in final_memory["model"].items():
        assert torch.equal(final_stream["model"][key], value), key
