"""Data larger than the memory budget is streamed from a uint8 cache through DataLoader workers: the same batches
and metrics as the in-memory path, bad files handled the same way, a dead worker ends the run with an error (no
hang), peak memory does not grow with the data set, and a run killed with SIGKILL resumes exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from train_hooks import hooked_env

import cnndsl
from cnndsl.train import TrainConfig, Trainer
from cnndsl.train.data import DataSet, StreamedSet, load_folder
from cnndsl.train.errors import DataError, TrainError
from cnndsl.train.metrics import read_jsonl

ROOT = Path(__file__).resolve().parent.parent

SPEC = """network Stream(image: [3, 16, 16]) {
    conv(6, 3, padding=same) -> relu -> maxpool(4)
    flatten
    dropout(0.2)
    linear(3)
}
"""
EXACT = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr")


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Any:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _folder(root: Path, per_class: int, size: int = 16, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for label in range(3):
        folder = root / f"c{label}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 120, (size, size, 3), dtype=np.uint8)
            pixels[..., label] += 120
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def _train(tmp_path: Path, name: str, data: Path, logs: list[str] | None = None, **kwargs: Any) -> Trainer:
    kwargs.setdefault("epochs", 2)
    kwargs.setdefault("batch_size", 8)
    kwargs.setdefault("augment", [])
    config = TrainConfig(
        data=str(data), out=str(tmp_path / name), cache_dir=str(tmp_path / "cache"), progress=False, **kwargs
    )
    sink = logs if logs is not None else []
    return Trainer(config, cnndsl.loads(SPEC), log=sink.append)


def test_streamed_and_in_memory_runs_agree(tmp_path: Path) -> None:
    data = _folder(tmp_path / "images", 20)
    memory_logs: list[str] = []
    stream_logs: list[str] = []
    # One after the other: dropout draws from torch's global generator, which each trainer seeds when set up.
    in_memory = _train(tmp_path, "memory", data, memory_logs)
    first = in_memory.run()
    streamed = _train(tmp_path, "stream", data, stream_logs, memory_budget=1024, workers=1)
    second = streamed.run()
    assert not in_memory.data.streamed and isinstance(streamed.data, StreamedSet)
    assert any(line.startswith("holding the data in memory: 45.0 KiB decoded") for line in memory_logs)
    assert any(
        line.startswith("streaming the data from a uint8 cache file")
        and "exceed --memory-budget 1.0 KiB" in line
        for line in stream_logs
    )
    assert streamed.mean == in_memory.mean and streamed.std == in_memory.std
    assert [[r[k] for k in EXACT] for r in second.history] == [[r[k] for k in EXACT] for r in first.history]
    for key, value in in_memory.model.state_dict().items():
        assert torch.equal(streamed.model.state_dict()[key], value), key
    config = json.loads((tmp_path / "stream" / "config.json").read_text())
    assert config["resolved"]["data_path"] == "streamed" and config["memory_budget"] == 1024


def test_streaming_with_v2_augmentation_in_workers_matches_in_memory(tmp_path: Path) -> None:
    """The per-image augmentation is seeded per batch, so workers and the training process make the same batch."""
    data = _folder(tmp_path / "images", 8)
    options: dict[str, Any] = {"augment": ["trivialaugment", "rrc", "flip"], "epochs": 1}
    a = _train(tmp_path, "memory", data, **options).run()
    b = _train(tmp_path, "stream", data, memory_budget=1, workers=2, **options).run()
    assert [[r[k] for k in EXACT] for r in a.history] == [[r[k] for k in EXACT] for r in b.history]


def test_bad_images_while_streaming_are_skipped_and_listed_or_fatal(tmp_path: Path) -> None:
    data = _folder(tmp_path / "images", 4)
    broken = data / "c1" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    truncated = data / "c2" / "cut.jpg"
    Image.new("RGB", (32, 32), (10, 200, 30)).save(truncated, quality=95)
    truncated.write_bytes(truncated.read_bytes()[:150])
    streamed = load_folder(data, (3, 16, 16), 0.25, cache_dir=tmp_path / "c1", memory_budget=1)
    assert isinstance(streamed, StreamedSet)
    assert len(streamed.y_train) + len(streamed.y_val) == 12
    report = "\n".join(streamed.warnings)
    assert (
        "skipped 2 unreadable image file(s)" in report and str(broken) in report and str(truncated) in report
    )
    in_memory = load_folder(data, (3, 16, 16), 0.25, cache_dir=tmp_path / "c2")
    assert isinstance(in_memory, DataSet)
    assert in_memory.warnings == streamed.warnings
    assert np.array_equal(in_memory.y_train, streamed.y_train)
    assert np.array_equal(in_memory.x_train, streamed.train.read(np.arange(len(streamed.y_train))))
    for cache in ("c1", "c3"):  # a fresh build, and the cache a skipping run left behind
        with pytest.raises(DataError, match=r"broken.png: cannot read image.*--bad-files skip"):
            load_folder(
                data, (3, 16, 16), 0.25, cache_dir=tmp_path / cache, memory_budget=1, bad_files="error"
            )


def test_a_worker_that_dies_ends_the_run_with_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cnndsl.train import source

    real = source._RowsBatches.__getitem__

    def dying(self: Any, item: Any) -> Any:
        if torch.utils.data.get_worker_info() is not None:
            os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's out-of-memory killer would
        return real(self, item)

    monkeypatch.setattr(source._RowsBatches, "__getitem__", dying)
    data = _folder(tmp_path / "images", 4)
    trainer = _train(tmp_path, "run", data, memory_budget=1, workers=1, epochs=1)
    started = time.monotonic()
    with pytest.raises(TrainError, match=r"--workers 1: a data-loading worker process failed .* --resume"):
        trainer.run()
    assert time.monotonic() - started < 120


@pytest.mark.slow  # the 2 s timeout, then DataLoader waits 5 s for the stuck worker before terminating it
def test_a_worker_that_hangs_ends_the_run_with_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker stuck (on a dead network file system, say) produces nothing: after LOADER_TIMEOUT_S the run ends
    with the same clear error instead of waiting for ever."""
    from cnndsl.train import source

    real = source._RowsBatches.__getitem__

    def stuck(self: Any, item: Any) -> Any:
        if torch.utils.data.get_worker_info() is not None:
            time.sleep(3600)
        return real(self, item)

    monkeypatch.setattr(source._RowsBatches, "__getitem__", stuck)
    monkeypatch.setattr(source, "LOADER_TIMEOUT_S", 2)
    data = _folder(tmp_path / "images", 4)
    trainer = _train(tmp_path, "run", data, memory_budget=1, workers=1, epochs=1)
    started = time.monotonic()
    with pytest.raises(TrainError, match=r"--workers 1: a data-loading worker process failed .*timed out"):
        trainer.run()
    assert time.monotonic() - started < 60


# ------------------------------------------------------------------------------------------- whole runs ---

RSS_SCRIPT = """
import json, resource, sys
import cnndsl
from cnndsl.train import TrainConfig, Trainer
spec, data, out, budget, cache = sys.argv[1:6]
config = TrainConfig(data=data, out=out, epochs=1, batch_size=32, augment=[], progress=False,
                     memory_budget=int(budget), workers=1, threads=1, cache_dir=cache)
result = Trainer(config, cnndsl.load(spec), log=lambda line: None).run()
# VmHWM, not RUSAGE_SELF: Linux carries ru_maxrss over exec, so a child of a large pytest process would report
# its parent's peak.
with open("/proc/self/status") as status:
    peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(json.dumps({
    "self_kib": peak,
    "children_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    "streamed": result.history and config.memory_budget < 10**9,
}))
"""
BIG_SPEC = """network Big(image: [3, 64, 64]) {
    conv(4, 3, stride=4) -> relu
    gap
    linear(3)
}
"""


def _peak(tmp_path: Path, images: Path, budget: int, name: str) -> dict[str, int]:
    spec = tmp_path / "big.cnn"
    spec.write_text(BIG_SPEC)
    done = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, str(spec), str(images), str(tmp_path / name), str(budget),
         str(tmp_path / "cache")],
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from Linux's /proc")
def test_peak_memory_does_not_grow_with_a_streamed_data_set(tmp_path: Path) -> None:
    """4 MiB budget; 1x and 4x that much decoded data (64x64x3 bytes per image). The in-memory run of the 4x
    folder shows that the measurement sees data-sized growth."""
    budget = 4 * 1024**2
    per_image = 3 * 64 * 64
    per_class_1x = budget // per_image // 3
    one = _folder(tmp_path / "x1", per_class_1x, size=64)
    four = _folder(tmp_path / "x4", 4 * per_class_1x, size=64, seed=1)
    small = _peak(tmp_path, one, budget // 2, "s1")  # streamed: the data is twice the budget
    large = _peak(tmp_path, four, budget // 2, "s4")  # streamed: eight times the budget
    held = _peak(tmp_path, four, 10**12, "m4")  # the same data in memory
    grown_kib = 3 * per_class_1x * 3 * per_image // 1024  # the 4x folder has this much more decoded data
    assert large["self_kib"] - small["self_kib"] < grown_kib / 4, (small, large)
    assert large["children_kib"] - small["children_kib"] < grown_kib / 4, (small, large)
    assert held["self_kib"] - large["self_kib"] > grown_kib * 0.75, (held, large)


def _command(spec: Path, data: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "cnndsl", "train", str(spec), "--data", str(data), "--out", str(out),
        "--epochs", "6", "--threads", "1", "--augment", "crop,trivialaugment", "--seed", "3",
        "--memory-budget", "1K", "--workers", "1", "--batch-size", "4", "--cache-dir", str(cache), *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_sigkill_during_a_streamed_epoch_then_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    """The process kills itself and its loader workers with SIGKILL after two batches of epoch 3 (the hook of
    tests/train_hooks.py), while the workers stream; --resume then ends where an uninterrupted run ends."""
    spec = tmp_path / "stream.cnn"
    spec.write_text(SPEC)
    data = _folder(tmp_path / "images", 24)
    env = hooked_env(tmp_path / "hooks")
    whole, broken, cache = tmp_path / "whole", tmp_path / "broken", tmp_path / "cache"
    subprocess.run(_command(spec, data, whole, cache), env=env, check=True, capture_output=True)
    killed = subprocess.run(
        _command(spec, data, broken, cache),
        env={**env, "CNNDSL_TEST_KILL_EPOCH": "3"},
        capture_output=True,
        text=True,
        start_new_session=True,  # the hook kills its process group: nothing outside this run
        timeout=600,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert "epoch 2/6" in killed.stdout and "epoch 3/6" not in killed.stdout
    assert torch.load(broken / "last.pt", weights_only=True)["epoch"] == 2
    resumed = subprocess.run(
        _command(spec, data, broken, cache, "--resume"), env=env, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "after epoch 2 of 6" in resumed.stdout
    expected, actual = read_jsonl(whole / "metrics.jsonl"), read_jsonl(broken / "metrics.jsonl")
    assert [[r[k] for k in EXACT] for r in actual] == [[r[k] for k in EXACT] for r in expected]
    final_whole = torch.load(whole / "last.pt", weights_only=True)["model"]
    final_broken = torch.load(broken / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(final_broken[k], v) for k, v in final_whole.items())
