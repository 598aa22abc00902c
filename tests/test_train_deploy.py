"""A run folder is a deployable unit: its spec matches its weights, and ``eval``, ``predict``, ``export`` and
``compile`` take the folder in place of a spec, using its spec, weights, data and normalization.

onnxruntime is the oracle for the exported model: on the raw pixels of every image it must pick the class
``cnndsl predict`` picks."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import cnndsl
from cnndsl.cli import main
from cnndsl.train.data import decode_image

# Ends in linear(10): trained on 3 classes, the classifier is replaced and the run folder's spec must say 3.
SPEC = """network Small(image: [3, 12, 12]) {
    conv(8, 3, padding=same) -> relu -> maxpool(2)
    flatten
    linear(10) -> softmax
}
"""
COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200)]


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Any:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _run(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


def _image_folder(root: Path, per_class: int = 12, size: int = 14) -> list[Path]:
    """Three classes of noisy colour patches, at a size other than the spec's (so they are resized)."""
    rng = np.random.default_rng(0)
    paths = []
    for label, colour in enumerate(COLOURS):
        folder = root / f"class{label}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(np.array(colour) + rng.normal(0, 50, (size, size, 3)), 0, 255).astype(np.uint8)
            path = folder / f"{i}.png"
            Image.fromarray(pixels).save(path)
            paths.append(path)
    return paths


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("deploy")
    spec = root / "small.cnn"
    spec.write_text(SPEC)
    images = _image_folder(root / "images")
    run = root / "run"
    code, out, err = _run(
        ["train", str(spec), "--data", str(root / "images"), "--epochs", "3", "--batch-size", "8",
         "--out", str(run), "--cache-dir", str(root / "cache"), "--augment", "none", "--lr", "0.01"]
    )  # fmt: skip
    assert code == 0, err
    return {"root": root, "spec": spec, "run": run, "images": images, "log": out}


def test_the_run_folder_spec_matches_its_weights(trained: dict[str, Any]) -> None:
    run: Path = trained["run"]
    assert "replaced the classifier linear.0 (288 -> 10) by 288 -> 3" in trained["log"]
    assert "wrote linear(3) into the run folder's copy small.cnn:4" in trained["log"]
    text = (run / "small.cnn").read_text()
    assert text == SPEC.replace("linear(10)", "linear(3)")
    # The original spec is untouched; the folder's spec builds a module that loads best.pt by name, strictly.
    assert "linear(10)" in trained["spec"].read_text()
    module = cnndsl.load(run / "small.cnn").to_torch(logits=True)
    state = torch.load(run / "best.pt", weights_only=True)
    module.load_state_dict(state["model"], strict=True)
    assert state["spec_text"] == text


def test_eval_a_run_folder_uses_its_data_and_weights(trained: dict[str, Any]) -> None:
    run = trained["run"]
    code, out, err = _run(["eval", str(run), "--format", "json"])
    assert code == 0, err
    report = json.loads(out)
    assert report["data"] == str(trained["root"] / "images")  # recorded by training, not the digits default
    assert report["weights"] == str(run / "best.pt")
    assert report["classes"] == ["class0", "class1", "class2"]
    best = torch.load(run / "best.pt", weights_only=True)
    assert report["accuracy"] == pytest.approx(best["best"]["val_acc"], abs=1e-9)
    # A spec plus a checkpoint is the same thing spelled out.
    code, out2, err = _run(
        ["eval", str(run / "small.cnn"), "--weights", str(run / "best.pt"), "--format", "json"]
    )
    assert code == 0, err
    assert json.loads(out2)["accuracy"] == report["accuracy"]


def test_onnx_with_baked_normalization_agrees_with_predict_on_raw_pixels(
    trained: dict[str, Any], tmp_path: Path
) -> None:
    """The issue's "done when": export RUN --onnx, then onnxruntime on the raw images gives predict's top-1."""
    ort = pytest.importorskip("onnxruntime")
    run, images = trained["run"], trained["images"]
    onnx_path = tmp_path / "model.onnx"
    code, _, err = _run(["export", str(run), "--onnx", str(onnx_path), "--bake-normalization"])
    assert code == 0, err
    code, out, err = _run(["predict", str(run), *map(str, images), "--format", "json", "-k", "1"])
    assert code == 0, err
    predicted = [entry["top"][0]["class"] for entry in json.loads(out)]
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    raw = np.stack([decode_image(path, (3, 12, 12))[0] for path in images]).astype(np.float32)  # 0..255
    (scores,) = session.run(None, {name: raw})
    classes = ["class0", "class1", "class2"]
    assert [classes[i] for i in scores.argmax(axis=1)] == predicted
    assert len(set(predicted)) > 1, "a model that predicts one class everywhere would make this test too easy"


def test_onnx_without_baking_expects_normalized_input(trained: dict[str, Any], tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    run = trained["run"]
    onnx_path = tmp_path / "plain.onnx"
    assert _run(["export", str(run), "--onnx", str(onnx_path), "--logits"])[0] == 0
    state = torch.load(run / "best.pt", weights_only=True)
    mean = np.array(state["normalize"]["mean"], np.float32).reshape(1, 3, 1, 1)
    std = np.array(state["normalize"]["std"], np.float32).reshape(1, 3, 1, 1)
    raw = np.stack([decode_image(p, (3, 12, 12))[0] for p in trained["images"]]).astype(np.float32)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {session.get_inputs()[0].name: (raw - mean) / std})
    module = cnndsl.load(run / "small.cnn").to_torch(logits=True)
    module.load_state_dict(state["model"])
    module.eval()
    with torch.no_grad():
        expected = module(torch.from_numpy((raw - mean) / std)).numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


def test_safetensors_round_trip(trained: dict[str, Any], tmp_path: Path) -> None:
    from safetensors.torch import load_file

    run = trained["run"]
    path = tmp_path / "small.safetensors"
    code, _, err = _run(["export", str(run), "--safetensors", str(path)])
    assert code == 0, err
    best = torch.load(run / "best.pt", weights_only=True)
    tensors = load_file(str(path))
    assert tensors.keys() == best["model"].keys()
    assert all(torch.equal(tensors[k], best["model"][k]) for k in tensors)
    # The metadata carries the classes and normalization: eval and predict need nothing else.
    by_pt = json.loads(_run(["eval", str(run), "--format", "json"])[1])
    code, out, err = _run(["eval", str(run / "small.cnn"), "--weights", str(path), "--format", "json"])
    assert code == 0, err
    assert json.loads(out)["accuracy"] == by_pt["accuracy"] and json.loads(out)["classes"] == by_pt["classes"]
    image = str(trained["images"][0])
    assert _run(["predict", str(run / "small.cnn"), "--weights", str(path), image])[1] == _run(
        ["predict", str(run), image]
    )[1].replace(str(run / "best.pt"), str(path))
    # --init-from takes it too.
    code, _, err = _run(
        ["train", str(run / "small.cnn"), "--data", str(trained["root"] / "images"), "--epochs", "1",
         "--init-from", str(path), "--out", str(tmp_path / "again"), "--cache-dir", str(trained["root"] / "cache")]
    )  # fmt: skip
    assert code == 0, err


def test_compile_a_run_folder_writes_its_classifier(trained: dict[str, Any]) -> None:
    code, out, err = _run(["compile", str(trained["run"])])
    assert code == 0, err
    assert "nn.Linear(in_features=288, out_features=3)" in out and "out_features=10" not in out
    assert "CLASSES = ['class0', 'class1', 'class2']" in out and "def load(weights_path" in out
    assert "weights not copied (--weights-out FILE" in err


# Run in a fresh interpreter where cnndsl, safetensors and Pillow cannot be imported: only torch (and the standard
# library) is there, as on a machine the model is deployed to.
DEPLOYED = """
import json, sys
for name in ("cnndsl", "safetensors", "PIL"):
    sys.modules[name] = None
sys.path.insert(0, sys.argv[1])
import torch
import model

pixels = torch.load(sys.argv[2], weights_only=True)
results = {}
for weights in sys.argv[3:]:
    deployed = model.load(weights)
    with torch.no_grad():
        scores = deployed(pixels)
    results[weights] = {
        "scores": scores.tolist(),
        "top1": [model.CLASSES[i] for i in scores.argmax(dim=1).tolist()],
        "state": {k: v.tolist() for k, v in deployed.state_dict().items()},
    }
print(json.dumps(results))
"""


def test_compiled_run_is_a_deployable_file_with_predicts_top1(
    trained: dict[str, Any], tmp_path: Path
) -> None:
    """compile RUN -o model.py writes model.py and model.safetensors; in an interpreter with only torch,
    ``model.load("model.safetensors")(raw_pixels)`` gives predict's top-1 and probabilities on every image."""
    import subprocess
    import sys

    from cnndsl.export import with_normalization

    run, images = trained["run"], trained["images"]
    target = tmp_path / "deploy" / "model.py"
    code, _, err = _run(["compile", str(run), "-o", str(target)])
    assert code == 0, err
    weights = target.with_suffix(".safetensors")
    assert (
        "with its 3 classes and normalization" in err
        and f"{weights}: the weights of {run / 'best.pt'}" in err
    )
    raw = torch.from_numpy(np.stack([decode_image(p, (3, 12, 12))[0] for p in images]).astype(np.float32))
    torch.save(raw, tmp_path / "pixels.pt")
    done = subprocess.run(
        [sys.executable, "-c", DEPLOYED, str(target.parent), str(tmp_path / "pixels.pt"), str(weights),
         str(run / "best.pt")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    from_safetensors, from_checkpoint = results[str(weights)], results[str(run / "best.pt")]
    assert from_safetensors == from_checkpoint  # load() reads the run's best.pt as well

    code, out, err = _run(["predict", str(run), *map(str, images), "--format", "json", "-k", "1"])
    assert code == 0, err
    predicted = json.loads(out)
    assert from_safetensors["top1"] == [entry["top"][0]["class"] for entry in predicted]
    assert len(set(from_safetensors["top1"])) > 1, "one class everywhere would make this too easy"
    for scores, entry in zip(from_safetensors["scores"], predicted, strict=True):
        assert max(scores) == pytest.approx(entry["top"][0]["probability"], abs=1e-6)  # softmax kept
    # Its Normalized is cnndsl.export.with_normalization: the same buffers, the same outputs.
    best = torch.load(run / "best.pt", weights_only=True)
    module = cnndsl.load(run / "small.cnn").to_torch()
    module.load_state_dict(best["model"])
    reference = with_normalization(module, best["normalize"]["mean"], best["normalize"]["std"]).eval()
    state = reference.state_dict()
    assert from_safetensors["state"].keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(torch.tensor(from_safetensors["state"][key]), value), key
    with torch.no_grad():
        expected = reference(raw)
    torch.testing.assert_close(torch.tensor(from_safetensors["scores"]), expected, rtol=0, atol=1e-6)


def test_compile_with_weights_errors_name_the_flag(trained: dict[str, Any], tmp_path: Path) -> None:
    code, _, err = _run(["compile", str(trained["spec"]), "--weights-out", str(tmp_path / "w.safetensors")])
    assert code == 2 and "--weights-out needs trained weights" in err
    # The original spec still says linear(10): the run's 3-class weights do not fit the module it compiles to.
    code, _, err = _run(["compile", str(trained["spec"]), "--weights", str(trained["run"] / "best.pt")])
    assert code == 1 and "--weights " in err and "compile the run folder" in err, err
    assert "linear_0.weight is [3, 288], but the spec's module has [10, 288]" in err
    code, _, err = _run(["compile", str(trained["run"]), "--weights", str(tmp_path / "absent.pt")])
    assert code == 2 and "--weights " in err and "absent.pt: no such file" in err
    same = str(tmp_path / "m.safetensors")
    code, _, err = _run(["compile", str(trained["run"]), "-o", same])
    assert code == 2 and "--weights-out" in err and "the same file as -o" in err
    assert not (tmp_path / "w.safetensors").exists() and not (tmp_path / "m.safetensors").exists()


def test_bad_run_folders_and_weights_name_the_argument(tmp_path: Path, trained: dict[str, Any]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = _run(["eval", str(empty)])
    assert code == 2 and "SPEC " in err and "not a run folder (no config.json)" in err
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text('{"spec": "x.cnn"}')
    code, _, err = _run(["predict", str(tmp_path / "half"), "x.png"])
    assert code == 2 and "holds no .cnn spec" in err
    code, _, err = _run(["eval", str(trained["spec"])])
    assert code == 2 and "--weights FILE is needed" in err
    code, _, err = _run(["export", str(trained["run"])])
    assert code == 2 and "--onnx FILE or --safetensors FILE" in err
    code, _, err = _run(
        ["export", str(trained["spec"]), "--onnx", str(tmp_path / "m.onnx"), "--bake-normalization"]
    )
    assert code == 2 and "--bake-normalization needs trained weights" in err
    code, _, err = _run(["predict", str(trained["run"]), str(tmp_path / "absent.png")])
    assert code == 2 and "IMAGE " in err and "absent.png: no such file" in err


def test_weight_mismatch_hints_name_this_commands_flag(tmp_path: Path, trained: dict[str, Any]) -> None:
    """eval has no match option: its error must not suggest match='order'; export's names --match order."""
    state = torch.load(trained["run"] / "best.pt", weights_only=True)["model"]
    renamed = {f"other.{i}": v for i, v in enumerate(state.values())}
    torch.save(renamed, tmp_path / "renamed.pt")
    code, _, err = _run(
        ["export", str(trained["run"] / "small.cnn"), "--weights", str(tmp_path / "renamed.pt"), "--onnx",
         str(tmp_path / "m.onnx")]
    )  # fmt: skip
    assert code == 1 and "--match order pairs tensors by position" in err and "match='order'" not in err
    assert _run(
        ["export", str(trained["run"] / "small.cnn"), "--weights", str(tmp_path / "renamed.pt"), "--match",
         "order", "--onnx", str(tmp_path / "m.onnx")]
    )[0] == 0  # fmt: skip
    ours = torch.load(trained["run"] / "best.pt", weights_only=True)
    ours["model"] = renamed
    torch.save(ours, tmp_path / "bad_ckpt.pt")
    code, _, err = _run(["eval", str(trained["run"]), "--weights", str(tmp_path / "bad_ckpt.pt")])
    assert code == 2 and err.count("--weights") == 1 and "match='order'" not in err, err
