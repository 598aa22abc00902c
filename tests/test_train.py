"""``cnndsl train``, ``eval`` and ``predict`` on a tiny network: the run folder, the metrics, checkpoints, logits
vs softmax, classifier replacement, freezing, transfer, non-finite losses, schedules and user errors.

The weights a run saves are checked against an evaluation written here from plain torch (no cnndsl training
code), and the schedules against torch's own schedulers."""

from __future__ import annotations

import csv
import json
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import cnndsl
from cnndsl.cli import main
from cnndsl.train import TrainConfig, Trainer
from cnndsl.train.data import load_data
from cnndsl.train.errors import NonFiniteLoss, TrainError
from cnndsl.train.metrics import FIELDS, read_jsonl
from cnndsl.train.optim import build_optimizer, lr_factor

TINY = """network Tiny(image: [1, 8, 8]) {
    conv(6, 3, padding=same) -> relu -> maxpool(2)
    flatten
    linear(10) -> softmax
}
"""

WIDE_HEAD = """network WideHead(image: [1, 8, 8]) {
    conv(16, 3, padding=same) -> relu
    gap
    linear(1000)
}
"""

CONV_HEAD = """network ConvHead(image: [1, 8, 8]) {
    conv(100, 8)
    flatten
}
"""


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Any:
    """Tiny models train fastest on one thread, and on a busy machine far faster than on several."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _spec(tmp_path: Path, text: str = TINY, name: str = "tiny.cnn") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _quiet(**kwargs: Any) -> TrainConfig:
    kwargs.setdefault("epochs", 1)
    kwargs.setdefault("progress", False)
    return TrainConfig(**kwargs)


def _trainer(tmp_path: Path, text: str = TINY, logs: list[str] | None = None, **kwargs: Any) -> Trainer:
    network = cnndsl.load(_spec(tmp_path, text))
    kwargs.setdefault("out", str(tmp_path / "run"))
    sink = logs if logs is not None else []
    return Trainer(_quiet(**kwargs), network, log=sink.append)


def _accuracy(module: torch.nn.Module, state: dict[str, Any], x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy computed from scratch: normalize with the checkpoint's statistics, forward, argmax."""
    mean = torch.tensor(state["normalize"]["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(state["normalize"]["std"]).view(1, -1, 1, 1)
    module.load_state_dict(state["model"])
    module.eval()
    with torch.no_grad():
        logits = module((torch.from_numpy(x).float() - mean) / std)
    return float((logits.argmax(1).numpy() == y).mean())


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One CLI run of the tiny network, shared by the tests that read its run folder."""
    root = tmp_path_factory.mktemp("tiny_run")
    spec = _spec(root)
    out = root / "run"
    import contextlib
    import io

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(
            ["train", str(spec), "--epochs", "3", "--out", str(out), "--augment", "none", "--lr", "0.01"]
        )
    return {"spec": spec, "out": out, "code": code, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()}


# ---------------------------------------------------------------------------------------------- run folder ---


def test_run_folder_contents(tiny_run: dict[str, Any]) -> None:
    out: Path = tiny_run["out"]
    assert tiny_run["code"] == 0, tiny_run["stderr"]
    expected = {"config.json", "tiny.cnn", "summary.txt", "model.dot", "metrics.jsonl", "metrics.csv"}
    expected |= {"last.pt", "best.pt", "curves.png"}
    assert expected <= {p.name for p in out.iterdir()}
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert (out / "tiny.cnn").read_text() == TINY
    assert (out / "model.dot").read_text().lstrip().startswith("digraph")
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = json.loads((out / "config.json").read_text())
    assert config["epochs"] == 3 and config["lr"] == 0.01 and config["augment"] == []
    assert config["resolved"]["classes"] == [str(i) for i in range(10)]
    assert config["resolved"]["train_images"] + config["resolved"]["val_images"] == 1797
    assert "Tiny" in (out / "summary.txt").read_text()


def test_metrics_files_agree_and_match_the_final_line(tiny_run: dict[str, Any]) -> None:
    out: Path = tiny_run["out"]
    records = read_jsonl(out / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert all(tuple(r) == FIELDS for r in records)
    with open(out / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == FIELDS
    for record, row in zip(records, rows, strict=True):
        for key in FIELDS:
            assert float(row[key]) == pytest.approx(record[key], rel=1e-12)
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    best = max(records, key=lambda r: r["val_acc"])
    assert records[0]["lr"] > records[-1]["lr"] > 0  # cosine decays within the run
    last_line = tiny_run["stdout"].strip().splitlines()[-1]
    assert f"best val accuracy {100 * best['val_acc']:.2f}% (epoch {best['epoch']} of 3)" in last_line
    assert str(out) in last_line
    assert "network Tiny" in tiny_run["stdout"]  # the summary is printed first
    # One line per epoch in the log when stderr is not a terminal.
    assert sum(line.startswith("epoch ") for line in tiny_run["stdout"].splitlines()) == 3


def test_checkpoints_hold_the_recorded_accuracy(tiny_run: dict[str, Any]) -> None:
    out: Path = tiny_run["out"]
    records = read_jsonl(out / "metrics.jsonl")
    network = cnndsl.load(tiny_run["spec"])
    data = load_data("digits", (1, 8, 8))
    for name in ("last.pt", "best.pt"):
        state = torch.load(out / name, weights_only=True)
        assert state["format"] == "cnndsl-checkpoint" and state["history"] == records[: state["epoch"]]
        accuracy = _accuracy(network.to_torch(logits=True), state, data.x_val, data.y_val)
        assert accuracy == pytest.approx(records[state["epoch"] - 1]["val_acc"], abs=1e-12)
    best = torch.load(out / "best.pt", weights_only=True)
    assert records[best["epoch"] - 1]["val_acc"] == max(r["val_acc"] for r in records)


# -------------------------------------------------------------------------------------- eval and predict ---


def test_eval_reports_accuracy_and_confusion(
    tiny_run: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    out: Path = tiny_run["out"]
    best = max(read_jsonl(out / "metrics.jsonl"), key=lambda r: r["val_acc"])
    code = main(["eval", str(tiny_run["spec"]), "--weights", str(out / "best.pt"), "--format", "json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["accuracy"] == pytest.approx(best["val_acc"], abs=1e-12)
    assert report["loss"] == pytest.approx(best["val_loss"], rel=1e-6)
    matrix = np.array(report["confusion"])
    assert matrix.shape == (10, 10) and matrix.sum() == report["images"] == 359
    assert np.trace(matrix) / matrix.sum() == pytest.approx(report["accuracy"])
    assert main(["eval", str(tiny_run["spec"]), "--weights", str(out / "best.pt")]) == 0
    text = capsys.readouterr().out
    assert f"accuracy {100 * best['val_acc']:.2f}%" in text and "true\\pred" in text


def test_predict_top_k_matches_the_model(
    tiny_run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out: Path = tiny_run["out"]
    data = load_data("digits", (1, 8, 8))
    paths = []
    for i in range(4):
        path = tmp_path / f"digit{i}.png"
        Image.fromarray(np.rint(data.x_val[i, 0]).astype(np.uint8)).save(path)
        paths.append(str(path))
    with pytest.raises(SystemExit):  # argparse: images are required
        main(["predict", str(tiny_run["spec"]), "--weights", str(out / "best.pt")])
    capsys.readouterr()
    code = main(
        [
            "predict",
            str(tiny_run["spec"]),
            "--weights",
            str(out / "best.pt"),
            *paths,
            "-k",
            "3",
            "--format",
            "json",
        ]
    )
    assert code == 0
    answers = json.loads(capsys.readouterr().out)
    state = torch.load(out / "best.pt", weights_only=True)
    module = cnndsl.load(tiny_run["spec"]).to_torch()  # with its softmax: probabilities
    module.load_state_dict(state["model"])
    pixels = np.stack([np.asarray(Image.open(p), dtype=np.float32)[None] for p in paths])
    mean, std = state["normalize"]["mean"][0], state["normalize"]["std"][0]
    with torch.no_grad():
        probabilities = module(torch.from_numpy((pixels - mean) / std))
    for answer, row in zip(answers, probabilities, strict=True):
        values, indices = row.topk(3)
        assert [t["class"] for t in answer["top"]] == [str(int(i)) for i in indices]
        assert [t["probability"] for t in answer["top"]] == pytest.approx(values.tolist(), abs=1e-6)


# ------------------------------------------------------------------------------------------ model set-up ---


def test_training_uses_logits_not_a_second_softmax(tmp_path: Path) -> None:
    logs: list[str] = []
    trainer = _trainer(tmp_path, logs=logs)
    assert any("not applied twice" in line for line in logs)
    x = torch.randn(5, 1, 8, 8)
    with_softmax = cnndsl.load(tmp_path / "tiny.cnn").to_torch()
    with_softmax.load_state_dict(trainer.model.state_dict())
    logits = trainer.model(x)
    assert not torch.allclose(logits.sum(1), torch.ones(5))
    torch.testing.assert_close(torch.softmax(logits, 1), with_softmax(x))
    # The loss the loop minimises is cross-entropy on those logits.
    y = torch.arange(5)
    torch.testing.assert_close(trainer.criterion(logits, y), F.cross_entropy(logits, y, label_smoothing=0.1))


def test_same_seed_same_run_other_seed_other_run(tmp_path: Path) -> None:
    first = _trainer(tmp_path, epochs=2, out=str(tmp_path / "a")).run().history
    second = _trainer(tmp_path, epochs=2, out=str(tmp_path / "b")).run().history
    other = _trainer(tmp_path, epochs=2, seed=5, out=str(tmp_path / "c")).run().history
    keys = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")
    assert [[r[k] for k in keys] for r in first] == [[r[k] for k in keys] for r in second]
    assert first[0]["train_loss"] != other[0]["train_loss"]


def test_classifier_is_replaced_when_the_class_count_differs(tmp_path: Path) -> None:
    logs: list[str] = []
    trainer = _trainer(tmp_path, WIDE_HEAD, logs=logs, epochs=2, lr=0.02)
    assert any("replaced the classifier linear.0 (16 -> 1000) by 16 -> 10" in line for line in logs)
    assert trainer.model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    result = trainer.run()
    assert result.history[-1]["val_acc"] > 0.3  # it learns with the new head (chance: 0.1)
    with pytest.raises(TrainError, match="conv.0, conv\\) is not a linear layer"):
        _trainer(tmp_path, CONV_HEAD, out=str(tmp_path / "conv"))


def test_freeze_keeps_layers_fixed_and_out_of_the_optimizer(tmp_path: Path) -> None:
    logs: list[str] = []
    trainer = _trainer(tmp_path, logs=logs, freeze=["conv.*"])
    conv = trainer.model.get_submodule("conv_0")
    before = {k: v.clone() for k, v in conv.state_dict().items()}
    in_optimizer = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert all(id(p) not in in_optimizer and not p.requires_grad for p in conv.parameters())
    assert trainer.model_info.frozen == ["conv.0"]
    assert any("froze 1 layers (60 parameters)" in line for line in logs)
    trainer.run()
    for key, value in conv.state_dict().items():
        assert torch.equal(value, before[key])
    with pytest.raises(TrainError, match="--freeze 'cnv.0' matches no layer; did you mean 'conv.0'"):
        _trainer(tmp_path, freeze=["cnv.0"], out=str(tmp_path / "x"))
    with pytest.raises(TrainError, match="every layer is frozen"):
        _trainer(tmp_path, freeze=["*"], out=str(tmp_path / "y"))


def test_frozen_layers_show_in_the_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = _spec(tmp_path)
    out = tmp_path / "run"
    assert main(["train", str(spec), "--epochs", "1", "--out", str(out), "--freeze", "conv_0"]) == 0
    summary = (out / "summary.txt").read_text()
    assert "Frozen layers (1, 60 parameters)" in summary and "conv.0  [frozen]" in summary
    assert "(60 frozen)" in capsys.readouterr().out


def test_init_from_our_checkpoint_and_a_renamed_state_dict(tmp_path: Path) -> None:
    source = _trainer(tmp_path, out=str(tmp_path / "source"))
    source.run()
    weights = source.model.state_dict()
    ours = _trainer(tmp_path, out=str(tmp_path / "ours"), init_from=str(tmp_path / "source" / "last.pt"))
    for key, value in ours.model.state_dict().items():
        assert torch.equal(value, weights[key])
    # A torchvision-style state_dict: other names, same order.
    renamed = {f"features.{i}": v for i, v in enumerate(weights.values())}
    torch.save(renamed, tmp_path / "foreign.pth")
    logs: list[str] = []
    theirs = _trainer(
        tmp_path, out=str(tmp_path / "theirs"), init_from=str(tmp_path / "foreign.pth"), logs=logs
    )
    for key, value in theirs.model.state_dict().items():
        assert torch.equal(value, weights[key])
    assert any("matched by order" in line for line in logs)
    # A checkpoint trained on 10 classes initialises a 3-class run: features load, the head is new.
    x, y = load_data("digits", (1, 8, 8)).x_train[:90], np.arange(90) % 3
    np.savez(tmp_path / "three.npz", x=x, y=y)
    logs = []
    three = _trainer(
        tmp_path,
        out=str(tmp_path / "three"),
        data=str(tmp_path / "three.npz"),
        init_from=str(tmp_path / "source" / "last.pt"),
        logs=logs,
    )
    assert torch.equal(three.model.state_dict()["conv_0.weight"], weights["conv_0.weight"])
    assert three.model(torch.zeros(1, 1, 8, 8)).shape == (1, 3)
    assert any("by 96 -> 3" in line for line in logs)
    torch.save({"wrong": torch.zeros(3)}, tmp_path / "wrong.pth")
    with pytest.raises(TrainError, match="wrong.pth: does not fit network Tiny"):
        _trainer(tmp_path, out=str(tmp_path / "w"), init_from=str(tmp_path / "wrong.pth"))


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, epochs=3)
    criterion = trainer.criterion

    def poisoned(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = criterion(logits, target)
        return loss * math.nan if trainer.epoch >= 1 and trainer.step % 44 == 5 else loss

    trainer.criterion = poisoned  # type: ignore[assignment]
    with pytest.raises(NonFiniteLoss, match=r"NaN in epoch 2 \(by step 6\).*last.pt \(epoch 1\)"):
        trainer.run()
    saved = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert saved["epoch"] == 1 and all(torch.isfinite(v).all() for v in saved["model"].values())
    assert len(read_jsonl(tmp_path / "run" / "metrics.jsonl")) == 1
    assert (tmp_path / "run" / "curves.png").exists()


def test_progress_bar_shows_loss_accuracy_and_speed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _trainer(tmp_path, progress=True).run()
    err = capsys.readouterr().err
    assert "epoch 1/1" in err and "loss=" in err and "acc=" in err and "img_s=" in err


# ------------------------------------------------------------------------------------- optimization ---


def _lrs(scheduler: Any, optimizer: torch.optim.Optimizer, steps: int) -> list[float]:
    lrs = []
    for step in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if step + 1 < steps:  # OneCycleLR refuses to step past its last step
            scheduler.step()
    return lrs


@pytest.mark.parametrize("schedule", ["cosine", "step", "onecycle", "constant"])
def test_schedules_match_torch(schedule: str) -> None:
    epochs, per_epoch, lr = 6, 7, 0.1
    config = TrainConfig(schedule=schedule, epochs=epochs, lr=lr, step_size=2, gamma=0.5)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    total = epochs * per_epoch
    reference: Any = {
        "cosine": lambda: torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total),
        "step": lambda: torch.optim.lr_scheduler.StepLR(optimizer, step_size=2 * per_epoch, gamma=0.5),
        "onecycle": lambda: torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total),
        "constant": lambda: torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0),
    }[schedule]()
    expected = _lrs(reference, optimizer, total)
    ours = [lr * lr_factor(step, config, per_epoch) for step in range(total)]
    assert ours == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_warmup_is_linear_then_cosine() -> None:
    config = TrainConfig(schedule="cosine", epochs=4, warmup_epochs=1)
    factors = [lr_factor(step, config, 10) for step in range(40)]
    assert factors[:10] == pytest.approx([(i + 1) / 10 for i in range(10)])
    assert factors[10] == 1.0 and factors[25] == pytest.approx((1 + math.cos(math.pi * 15 / 30)) / 2)


def test_weight_decay_only_on_weights() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    params = list(model.parameters())
    for name in ("sgd", "adam", "adamw"):
        optimizer = build_optimizer(params, TrainConfig(optimizer=name, weight_decay=0.3))
        decayed, plain = optimizer.param_groups
        assert [p.shape for p in decayed["params"]] == [(2, 1, 3, 3)] and decayed["weight_decay"] == 0.3
        assert len(plain["params"]) == 3 and plain["weight_decay"] == 0.0
    sgd = build_optimizer(params, TrainConfig(optimizer="sgd", nesterov=True, momentum=0.8))
    assert sgd.param_groups[0]["nesterov"] and sgd.param_groups[0]["momentum"] == 0.8


# ------------------------------------------------------------------------------------------- user errors ---


def _cli_error(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err[-1] if err else ""


def test_user_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = str(_spec(tmp_path))
    out = str(tmp_path / "run")
    np.savez(tmp_path / "flat.npz", x=np.zeros((10, 64)), y=np.zeros(10, int))
    cases = [
        (["--data", str(tmp_path / "nothing")], "no such file or folder"),
        (["--data", str(tmp_path / "flat.npz")], "x has shape (10, 64)"),
        (["--resume"], "last.pt does not exist"),
        (["--freeze", "linear.9"], "matches no layer"),
        (["--device", "cuda:0"] if not torch.cuda.is_available() else ["--device", "tpu"], "--device"),
        (["--lr", "-1"], "--lr must be positive"),
        (["--augment", "flip,spin"], "unknown augmentation 'spin'"),
        (["--init-from", str(tmp_path / "absent.pt")], "absent.pt: no such file"),
    ]
    for extra, message in cases:
        code, line = _cli_error(["train", spec, "--epochs", "1", "--out", out, *extra], capsys)
        assert code == 2 and line.startswith("cnndsl train: error: ") and message in line, (extra, line)
        # Every error names the flag at fault.
        assert line.removeprefix("cnndsl train: error: ").startswith(extra[0]), (extra, line)
    with open(tmp_path / "evil.pt", "wb") as handle:
        pickle.dump({"model": Path("x")}, handle, protocol=2)
    code, line = _cli_error(["eval", spec, "--weights", str(tmp_path / "evil.pt")], capsys)
    assert code == 2 and "refused to load with weights_only=True: it holds a pickled pathlib" in line
    assert line.startswith("cnndsl eval: error: --weights ")
    code, line = _cli_error(["eval", spec, "--weights", spec], capsys)
    assert code == 2 and "it is not a torch.save file of tensors" in line


def test_resume_keeps_the_saved_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = str(_spec(tmp_path))
    out = str(tmp_path / "run")
    assert main(["train", spec, "--epochs", "1", "--out", out, "--lr", "0.01"]) == 0
    capsys.readouterr()
    assert main(["train", spec, "--epochs", "2", "--out", out, "--resume", "--lr", "0.5"]) == 0
    log = capsys.readouterr().out
    assert "ignoring --lr" in log and "after epoch 1 of 2" in log
    records = read_jsonl(Path(out) / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2]
    assert json.loads((Path(out) / "config.json").read_text())["lr"] == 0.01
    # A new run in the same folder starts over and says so.
    assert main(["train", spec, "--epochs", "1", "--out", out]) == 0
    assert "replacing the previous run" in capsys.readouterr().out
    assert len(read_jsonl(Path(out) / "metrics.jsonl")) == 1


# --------------------------------------------------------------------------------- precision and devices ---


@pytest.mark.parametrize(
    ("options", "said"),
    [
        ({"amp": "bf16"}, "amp bf16"),
        ({"amp": "fp16"}, "amp fp16"),
        ({"channels_last": True}, "channels_last"),
    ],
)
def test_mixed_precision_and_channels_last_train_close_to_fp32(
    tmp_path: Path, options: dict[str, Any], said: str
) -> None:
    baseline = _trainer(tmp_path, out=str(tmp_path / "fp32")).run().history[0]
    logs: list[str] = []
    trainer = _trainer(tmp_path, out=str(tmp_path / "other"), logs=logs, **options)
    assert any(said in line for line in logs)
    assert (trainer.scaler is not None) == (options.get("amp") == "fp16")
    record = trainer.run().history[0]
    assert record["train_loss"] == pytest.approx(baseline["train_loss"], rel=0.02)
    assert record["val_acc"] == pytest.approx(baseline["val_acc"], abs=0.03)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # raised inside torch.compile's own imports
def test_compiled_model_trains_like_the_eager_one(tmp_path: Path) -> None:
    eager = _trainer(tmp_path, out=str(tmp_path / "eager")).run().history[0]
    logs: list[str] = []
    trainer = _trainer(tmp_path, out=str(tmp_path / "compiled"), compile=True, logs=logs)
    assert any("compiled" in line for line in logs)
    record = trainer.run().history[0]
    assert record["train_loss"] == pytest.approx(eager["train_loss"], rel=1e-4)
    assert torch.load(tmp_path / "compiled" / "last.pt", weights_only=True)["model"].keys() == {
        "conv_0.weight", "conv_0.bias", "linear_0.weight", "linear_0.bias"
    }  # fmt: skip


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_bf16_channels_last(tmp_path: Path) -> None:
    logs: list[str] = []
    trainer = _trainer(tmp_path, device="cuda", channels_last=True, epochs=2, logs=logs)
    assert trainer.x_train.is_cuda and trainer.amp_dtype in (torch.bfloat16, None)
    result = trainer.run()
    assert result.history[-1]["val_acc"] > 0.3
    state = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=True)
    assert state["epoch"] == 2 and state["rng"][0]["device"] == "cuda"


def test_small_models_train_on_one_cpu_thread_unless_told(tmp_path: Path) -> None:
    from cnndsl.train.ddp import DistContext
    from cnndsl.train.loop import choose_threads, step_macs

    network = cnndsl.load(_spec(tmp_path))
    assert step_macs(network, 32) == 3 * 32 * (6 * 8 * 8 * 9 + 96 * 10)
    cpu, before = torch.device("cpu"), torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        note = choose_threads(TrainConfig(), network, cpu, DistContext())
        assert torch.get_num_threads() == 1 and note and "1 CPU thread" in note
        assert choose_threads(TrainConfig(threads=2), network, cpu, DistContext()) is None
        assert torch.get_num_threads() == 2
        big = cnndsl.loads("network Big(x: [3, 64, 64]) { conv(128, 3, padding=same) -> gap -> linear(10) }")
        assert choose_threads(TrainConfig(), big, cpu, DistContext()) is None and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_train_on_a_folder_with_a_corrupt_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    digits = load_data("digits", (1, 8, 8))
    for i in range(60):
        folder = tmp_path / "images" / f"class{digits.y_train[i] % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.rint(digits.x_train[i, 0]).astype(np.uint8)).resize((16, 16)).save(
            folder / f"{i}.png"
        )
    broken = tmp_path / "images" / "class1" / "broken.png"
    broken.write_bytes(b"garbage")
    args = ["train", str(_spec(tmp_path)), "--data", str(tmp_path / "images"), "--epochs", "1"]
    args += ["--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"), "--batch-size", "16"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"skipped 1 unreadable image file(s) of --data:\n  {broken}" in out
    # The warning is repeated in one block after the final line, where it cannot scroll away.
    done, _, block = out.partition("\ndone: ")
    assert "warning: skipped 1 unreadable" in done
    assert block.splitlines()[1] == "warnings (1):" and f"    {broken}" in block
    assert "resized images of" in out and "from 16x16 to 8x8" in out
    assert json.loads((tmp_path / "run" / "config.json").read_text())["resolved"]["classes"] == [
        "class0", "class1", "class2"
    ]  # fmt: skip
    # Also when the decoded folder comes from the cache that the run above filled.
    code, line = _cli_error([*args, "--out", str(tmp_path / "r2"), "--bad-files", "error"], capsys)
    assert code == 2 and f"{broken}: cannot read image" in line
