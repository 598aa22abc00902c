"""The recipe features, each shown by its effect: gradient accumulation equals a larger batch, EMA weights differ
from the raw ones and are what ``best_ema.pt`` holds, early stopping stops, TensorBoard gets the metrics, the v2
augmentations and MixUp/CutMix change the batch reproducibly, ``--recipe`` presets yield to explicit flags, and
the flags are generated from the config's fields."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import cnndsl
from cnndsl.cli import build_parser, main
from cnndsl.train import TrainConfig, Trainer
from cnndsl.train.augment import BatchPipeline, LabelMixer, SampleAugment
from cnndsl.train.config import RECIPES, cli_fields, flag_name
from cnndsl.train.data import DataSet
from cnndsl.train.metrics import read_jsonl

# No batch norm or dropout: a batch of k*b images and k batches of b give the same gradient.
PLAIN = """network Plain(image: [1, 8, 8]) {
    conv(4, 3, padding=same) -> relu -> maxpool(2)
    flatten
    linear(5)
}
"""

WITH_BN = """network Norm(image: [1, 8, 8]) {
    conv(4, 3, padding=same) -> bn -> relu -> maxpool(2)
    flatten
    linear(5)
}
"""


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Any:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _data(n: int = 96, val: int = 32) -> DataSet:
    """Five learnable classes of 8x8 images: a bright square whose place is the class."""
    rng = np.random.default_rng(0)

    def make(count: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 5, count)
        x = rng.integers(0, 60, (count, 1, 8, 8)).astype(np.uint8)
        for i, label in enumerate(y):
            x[i, 0, label : label + 3, 2:5] = 250
        return x, y.astype(np.int64)

    x, y = make(n)
    xv, yv = make(val)
    return DataSet("squares", x, y, xv, yv, [f"c{i}" for i in range(5)])


def _trainer(tmp_path: Path, spec: str = PLAIN, logs: list[str] | None = None, **kwargs: Any) -> Trainer:
    kwargs.setdefault("epochs", 1)
    kwargs.setdefault("augment", [])
    kwargs.setdefault("progress", False)
    kwargs.setdefault("out", str(tmp_path / "run"))
    sink = logs if logs is not None else []
    return Trainer(TrainConfig(**kwargs), cnndsl.loads(spec), data=_data(), log=sink.append)


def test_accumulating_k_batches_equals_one_batch_k_times_larger(tmp_path: Path) -> None:
    common: dict[str, Any] = {"optimizer": "sgd", "lr": 0.1, "schedule": "cosine", "label_smoothing": 0.1}
    small = _trainer(tmp_path, batch_size=8, accumulate=4, out=str(tmp_path / "a"), **common)
    large = _trainer(tmp_path, batch_size=32, out=str(tmp_path / "b"), **common)
    assert small.steps_per_epoch == large.steps_per_epoch == 3
    loss_small, acc_small, *_ = small.train_epoch(1)
    loss_large, acc_large, *_ = large.train_epoch(1)
    assert loss_small == pytest.approx(loss_large, abs=1e-6) and acc_small == acc_large
    before = _trainer(tmp_path, batch_size=32, out=str(tmp_path / "c"), **common).model.state_dict()
    for key, value in large.model.state_dict().items():
        torch.testing.assert_close(small.model.state_dict()[key], value, rtol=0, atol=1e-5)
        assert not torch.allclose(before[key], value), f"{key} did not train: the comparison proves nothing"
    assert small.step == large.step == 3


def test_ema_weights_differ_from_raw_and_are_saved_as_best_ema(tmp_path: Path) -> None:
    logs: list[str] = []
    trainer = _trainer(tmp_path, WITH_BN, logs, epochs=3, batch_size=16, ema=0.9, lr=0.01)
    # The averaged and the raw weights as each epoch ends, just before its checkpoints are written.
    averages: dict[int, dict[str, torch.Tensor]] = {}
    raws: dict[int, dict[str, torch.Tensor]] = {}
    save = trainer._save

    def snapshot_then_save(improved: bool, ema_improved: bool = False) -> None:
        averages[trainer.epoch] = {k: v.clone() for k, v in trainer.ema_state_dict().items()}
        raws[trainer.epoch] = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        save(improved, ema_improved)

    trainer._save = snapshot_then_save  # type: ignore[method-assign]
    result = trainer.run()
    last = torch.load(trainer.out / "last.pt", weights_only=True)
    saved = torch.load(trainer.out / "best_ema.pt", weights_only=True)
    # torch's AveragedModel keeps the average under "module."; best_ema.pt holds it under the model's own keys.
    averaged = {k.removeprefix("module."): v for k, v in last["ema"].items() if k.startswith("module.")}
    assert saved["model"].keys() == last["model"].keys() == averaged.keys()
    assert all(torch.equal(averaged[k], averages[3][k]) for k in averaged)
    # best_ema.pt holds the average of the epoch with the best EMA accuracy, best.pt the raw weights of its own.
    records = read_jsonl(trainer.out / "metrics.jsonl")
    best_ema = max(range(3), key=lambda i: (records[i]["val_acc_ema"], -i)) + 1
    assert trainer.best_ema["epoch"] == saved["best_ema"]["epoch"] == best_ema
    assert all(torch.equal(saved["model"][k], averages[best_ema][k]) for k in averages[best_ema])
    best = torch.load(trainer.out / "best.pt", weights_only=True)
    assert result.best_epoch is not None
    assert all(torch.equal(best["model"][k], raws[result.best_epoch][k]) for k in raws[result.best_epoch])
    differs = [k for k in averaged if not torch.equal(averaged[k], last["model"][k])]
    assert any("weight" in k for k in differs) and any("running_mean" in k for k in differs)
    assert all(r["val_acc_ema"] is not None for r in records)
    assert "(EMA " in logs[-1]


def _spec_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "spec.cnn"
    path.write_text(text)
    return str(path)


def test_ema_update_is_the_ema_formula(tmp_path: Path) -> None:
    """torch's AveragedModel starts from the weights after the first step (w1), then EMA = d * EMA + (1 - d) * w."""
    trainer = _trainer(tmp_path, batch_size=32, ema=0.75, lr=0.1, optimizer="sgd")
    trainer.steps_per_epoch = 1
    trainer.train_epoch(1)
    w1 = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    assert all(torch.equal(trainer.ema_state_dict()[k], w1[k]) for k in w1)
    trainer.train_epoch(2)
    w2 = trainer.model.state_dict()
    ema = trainer.ema_state_dict()
    for key in w1:
        torch.testing.assert_close(ema[key], 0.75 * w1[key] + 0.25 * w2[key])
        assert not torch.equal(ema[key], w2[key])


def test_early_stopping_stops(tmp_path: Path) -> None:
    logs: list[str] = []
    # An lr far below float32 resolution: the weights never change, so val_loss never improves after epoch 1.
    trainer = _trainer(
        tmp_path, logs=logs, epochs=10, lr=1e-30, early_stop=2, monitor="val_loss", weight_decay=0.0
    )
    result = trainer.run()
    assert result.epochs_done == 3 and len(read_jsonl(trainer.out / "metrics.jsonl")) == 3
    assert result.best_epoch == 1
    assert result.stopped_early and "val_loss has not improved for 2 epochs" in result.stopped_early
    assert any("stopped early after epoch 3" in line for line in logs)
    # The same run without --early-stop goes on.
    assert (
        _trainer(tmp_path, epochs=4, lr=1e-30, monitor="val_loss", out=str(tmp_path / "all"))
        .run()
        .epochs_done
        == 4
    )


def test_tensorboard_event_files_hold_the_metrics(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer = _trainer(tmp_path, epochs=2, tensorboard=True)
    result = trainer.run()
    events = list((trainer.out / "tensorboard").glob("events.out.tfevents.*"))
    assert events
    accumulator = EventAccumulator(str(trainer.out / "tensorboard"))
    accumulator.Reload()
    scalars = accumulator.Scalars("train_loss")
    assert [s.step for s in scalars] == [1, 2]
    assert [s.value for s in scalars] == pytest.approx([r["train_loss"] for r in result.history], rel=1e-6)
    assert "val_acc" in accumulator.Tags()["scalars"]


def test_v2_sample_augmentations_are_seeded_per_batch() -> None:
    batch = torch.from_numpy(_data().x_train[:8]).repeat(1, 3, 1, 1)  # (8, 3, 8, 8) uint8
    for name in ("rrc", "randaugment", "trivialaugment"):
        augment = SampleAugment([name], (8, 8))
        first, again, other = augment(batch, 1), augment(batch, 1), augment(batch, 2)
        assert first.shape == batch.shape and first.dtype == torch.uint8
        assert torch.equal(first, again), name
        assert not torch.equal(first, other) and not torch.equal(first, batch), name
    # Float data in 0..pixel_max is augmented in that scale.
    floats = batch.float() / 255.0
    out = SampleAugment(["trivialaugment"], (8, 8), pixel_max=1.0)(floats, 3)
    assert out.dtype == torch.float32 and float(out.min()) >= 0.0 and float(out.max()) <= 1.0 + 1e-6
    # The global generator (dropout's) is untouched.
    state = torch.get_rng_state()
    SampleAugment(["randaugment"], (8, 8))(batch, 5)
    assert torch.equal(state, torch.get_rng_state())


def test_random_erasing_fills_with_the_mean() -> None:
    x = torch.full((16, 1, 8, 8), 200, dtype=torch.uint8)
    pipeline = BatchPipeline([100.0], [50.0], ["erasing:1.0"], device=torch.device("cpu"))
    out = pipeline(x, True, seed=0)
    assert (out == 0).any(dim=(1, 2, 3)).all()  # every image has an erased (mean-coloured) patch
    assert ((out == 0) | (out == 2.0)).all()
    assert torch.equal(pipeline(x, False, seed=0), torch.full((16, 1, 8, 8), 2.0))


def test_mixup_and_cutmix_give_soft_targets() -> None:
    x = torch.randn(8, 1, 8, 8)
    y = torch.arange(8) % 4
    for mixer in (LabelMixer(0.4, 0.0, 4), LabelMixer(0.0, 1.0, 4), LabelMixer(0.2, 1.0, 4)):
        mixed_any = False
        for seed in range(5):  # CutMix on 8x8 images can draw an empty box: look at a few batches
            mixed, soft = mixer(x, y, seed=seed)
            assert soft.shape == (8, 4) and torch.allclose(soft.sum(1), torch.ones(8))
            assert torch.equal(mixer(x, y, seed=seed)[0], mixed)
            mixed_any |= bool((soft.max(1).values < 1).any()) and not torch.equal(mixed, x)
        assert mixed_any
    assert not LabelMixer(0.0, 0.0, 4)


def test_a_run_with_every_augmentation_trains(tmp_path: Path) -> None:
    logs: list[str] = []
    trainer = _trainer(
        tmp_path, PLAIN, logs, epochs=1, augment=["rrc", "trivialaugment", "flip", "crop", "erasing:0.5"], mixup=0.2,
        cutmix=1.0,
    )  # fmt: skip
    result = trainer.run()
    assert result.history[0]["train_loss"] > 0 and "mixup 0.2 / cutmix 1" in "\n".join(logs)


# ------------------------------------------------------------------------------------- flags and recipes ---


def _config(argv: list[str]) -> TrainConfig:
    from cnndsl.cli.train import _config_from_args

    return _config_from_args(build_parser().parse_args(["train", "x.cnn", *argv]))


def test_every_config_field_with_help_is_a_flag_with_that_help() -> None:
    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]  # type: ignore[union-attr,index]
    options = {o: a for a in train._actions for o in a.option_strings}
    fields = cli_fields()
    assert len(fields) > 30
    for item in fields:
        action = options[flag_name(item.name)]
        assert action.dest == item.name and item.metadata["help"].split("(")[0] in action.help
    # Defaults come from the dataclass alone.
    config = _config([])
    defaults = TrainConfig()
    for item in fields:
        if item.name != "out":
            assert getattr(config, item.name) == getattr(defaults, item.name), item.name


def test_recipe_presets_yield_to_explicit_flags() -> None:
    config = _config(["--recipe", "torchvision", "--lr", "0.1", "--epochs", "10"])
    recipe = RECIPES["torchvision"].values
    assert config.lr == 0.1 and config.epochs == 10  # given flags win
    assert config.mixup == recipe["mixup"] == 0.2 and config.cutmix == 1.0 and config.ema == 0.99998
    assert config.augment == ["rrc", "flip", "trivialaugment", "erasing:0.1"] and config.warmup_epochs == 5
    config.validate()
    cifar = _config(["--recipe", "cifar"])
    assert (cifar.optimizer, cifar.lr, cifar.augment) == ("sgd", 0.1, ["crop:4", "flip"])
    assert dataclasses.replace(cifar, recipe=None) != TrainConfig(out=cifar.out, spec="x.cnn")


def test_bad_recipe_values_name_their_flag(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    spec = _spec_file(tmp_path, PLAIN)
    cases = [
        (["--recipe", "imagenet"], "--recipe"),
        (["--accumulate", "0"], "--accumulate"),
        (["--ema", "1.5"], "--ema must be a decay"),
        (["--memory-budget", "lots"], "--memory-budget"),
        (["--augment", "erasing:2"], "--augment: bad augmentation 'erasing:2'"),
        (["--mixup", "-1"], "--mixup must not be negative"),
        (["--monitor", "speed"], "--monitor"),
    ]
    for extra, message in cases:
        try:
            code = main(["train", spec, "--epochs", "1", "--out", str(tmp_path / "run"), *extra])
        except SystemExit as stop:  # argparse's own errors (choices, types) exit from the parser
            code = int(stop.code or 0)
        assert code == 2 and message in capsys.readouterr().err, extra


def test_resume_reads_the_checkpoint_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cnndsl.train.checkpoint as checkpoint

    spec = _spec_file(tmp_path, PLAIN)
    out = str(tmp_path / "run")
    assert main(["train", spec, "--epochs", "1", "--out", out, "--no-progress"]) == 0
    reads: list[str] = []
    real = checkpoint.load_checkpoint

    def counting(path: Any, *args: Any, **kwargs: Any) -> Any:
        reads.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "load_checkpoint", counting)
    assert main(["train", spec, "--epochs", "2", "--out", out, "--resume", "--no-progress"]) == 0
    assert reads == [str(Path(out) / "last.pt")]
