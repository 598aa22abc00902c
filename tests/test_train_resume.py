"""A training process killed with SIGKILL mid-run resumes from ``last.pt`` and ends exactly where an uninterrupted
run with the same seed ends: same metrics, same weights (model, optimizer, schedule and every random stream —
augmentation and dropout included — are restored)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cnndsl.train.metrics import read_jsonl

ROOT = Path(__file__).resolve().parent.parent

SPEC = """network Drop(image: [1, 16, 16]) {
    conv(16, 3, padding=same) -> relu -> maxpool(2)
    conv(32, 3, padding=same) -> relu -> maxpool(2)
    flatten
    dropout(0.3)
    linear(10)
}
"""
EPOCHS = 8
EXACT = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr")


def _command(spec: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "cnndsl", "train", str(spec), "--out", str(out), "--epochs", str(EPOCHS),
        "--threads", "1", "--augment", "crop,flip,cutout", "--seed", "3", *extra,
    ]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _records(out: Path) -> list[dict[str, object]]:
    path = out / "metrics.jsonl"
    return read_jsonl(path) if path.exists() else []


@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    spec = tmp_path / "drop.cnn"
    spec.write_text(SPEC)
    whole, broken = tmp_path / "whole", tmp_path / "broken"

    victim = subprocess.Popen(
        _command(spec, broken), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while len(_records(broken)) < 2 and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    alive = victim.poll() is None
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert alive, f"the run ended before it could be killed: {victim.stderr.read() if victim.stderr else ''}"
    assert victim.returncode == -signal.SIGKILL
    done = torch.load(broken / "last.pt", weights_only=True)["epoch"]
    assert 2 <= done < EPOCHS, "the kill must land mid-run"

    subprocess.run(_command(spec, whole), env=_env(), check=True, capture_output=True)
    resumed = subprocess.run(_command(spec, broken, "--resume"), env=_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"after epoch {done} of {EPOCHS}" in resumed.stdout

    expected, actual = _records(whole), _records(broken)
    assert [[r[k] for k in EXACT] for r in actual] == [[r[k] for k in EXACT] for r in expected]
    final_whole = torch.load(whole / "last.pt", weights_only=True)
    final_broken = torch.load(broken / "last.pt", weights_only=True)
    for key, value in final_whole["model"].items():
        assert torch.equal(final_broken["model"][key], value), key
    assert final_broken["best"] == final_whole["best"]
    assert not list(broken.glob(".*.tmp"))
