"""Hooks for training subprocesses, installed as a ``sitecustomize`` module: Python imports it at start-up in
every process whose ``PYTHONPATH`` holds its folder (torchrun's launcher, each rank, a plain ``cnndsl train``).

- ``CNNDSL_TEST_BUILDS=FILE``: each decode of an image folder into a cache appends ``RANK:function`` to FILE.
- ``CNNDSL_TEST_KILL_EPOCH=K``: the main process sends SIGKILL to its process group (itself and its DataLoader
  workers) after two training batches of epoch K, as the out-of-memory killer would: a kill that lands inside a
  streamed epoch every time, not when a polling test happens to look.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SITECUSTOMIZE = """
import os
import signal

from cnndsl.train import data, loop


def _recording(name):
    real = getattr(data, name)

    def recorded(*args, **kwargs):
        with open(os.environ["CNNDSL_TEST_BUILDS"], "a") as log:
            log.write(f"{os.environ.get('RANK', '-')}:{name}\\n")
        return real(*args, **kwargs)

    setattr(data, name, recorded)


if os.environ.get("CNNDSL_TEST_BUILDS"):
    _recording("_build_rows")  # the streamed path's rows cache
    _recording("_write_cache")  # the in-memory path's .npz cache


class _Killer:
    def __init__(self, source):
        self.source = source

    def batches(self, plan, augment=None):
        for index, batch in enumerate(self.source.batches(plan, augment)):
            if index == 2:
                os.killpg(0, signal.SIGKILL)
            yield batch


_train_epoch = loop.Trainer.train_epoch


def _train_epoch_then_die(self, epoch):
    if str(epoch) == os.environ.get("CNNDSL_TEST_KILL_EPOCH") and self.ctx.is_main:
        self.train_source = _Killer(self.train_source)
    return _train_epoch(self, epoch)


loop.Trainer.train_epoch = _train_epoch_then_die
"""


def hooked_env(folder: Path, **variables: str) -> dict[str, str]:
    """The environment of a training subprocess with the hooks installed (written into ``folder``), one CPU
    thread, and ``variables`` set. Start the process with ``start_new_session=True``: the kill hook signals its
    whole process group."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(folder), str(ROOT)]),
        "OMP_NUM_THREADS": "1",
        **variables,
    }
