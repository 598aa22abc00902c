"""The standalone source generator: for every spec the generated file, loaded from a temporary path, has the
fx module's state_dict keys and, with the same weights, its outputs; it imports only torch; names from a spec
(or a hand-built Network) can never inject code."""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import io
import subprocess
import sys
import tokenize
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch
from conftest import smallest_input, spec_files
from test_analysis import OP_EXAMPLES

import cnndsl
from cnndsl.cli import main
from cnndsl.codegen import comment, generate, literal
from cnndsl.network import Network, Tensor

SPECS = spec_files()

STAGE = """
defaults conv(padding=same, bias=false)

# One residual stage, and a squeeze-and-excitation gate, to show every construct of the generated code.
block Basic(c, stride=1) {
    add(
        conv(c, 3, stride=stride) -> bn -> relu
        -> conv(c, 3) -> bn
      | shortcut
    )
    relu
}

network Stage(x: [16, 32, 32]) {
    Basic(32, stride=2)
    Basic(32)
    y = concat(conv(8, 1) | maxpool(3, stride=1, padding=1) -> conv(8, 1))
    mul(y | gap -> linear(16) -> sigmoid)
    gap -> dropout(0.2) -> linear(10) -> softmax
}
"""


def import_file(path: Path, name: str) -> ModuleType:
    loader = importlib.util.spec_from_file_location(name, path)
    assert loader is not None and loader.loader is not None
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    return module


def standalone(network: Network, tmp_path: Path, logits: bool = False) -> type[torch.nn.Module]:
    path = tmp_path / f"{network.name.lower()}_model.py"
    path.write_text(generate(network, logits=logits), encoding="utf-8")
    module = import_file(path, f"generated_{abs(hash(path))}")
    classes = [v for v in vars(module).values() if isinstance(v, type) and issubclass(v, torch.nn.Module)]
    # The model class; the others are runtime layers copied in (LayerNorm2d, ChannelLinear, ...).
    classes = [
        c for c in classes if c.__module__ == module.__name__ and not hasattr(cnndsl.runtime, c.__name__)
    ]
    assert len(classes) == 1, classes
    return classes[0]


def spec_network(path: Path) -> Network:
    """The spec at the smallest square input it checks at (conftest.smallest_input): for every spec in specs/ the
    generated source differs from the declared size's only in shape comments and the ``__main__`` demo's input
    size (checked 2026-11-30), the modules not at all, and a 32x32 forward pass still runs every layer (the
    stride-32 stages at 1x1)."""
    try:
        return cnndsl.load(path, input_shapes=smallest_input(path))
    except cnndsl.SpecError as error:
        if "no network defined" in str(error):
            pytest.skip(f"{path.name} is a library of blocks")
        raise


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_standalone_matches_fx_module(path: Path, tmp_path: Path) -> None:
    network = spec_network(path)
    fx = network.to_torch().eval()
    cls = standalone(network, tmp_path)
    assert cls.__name__ == type(fx).__name__
    with torch.device("meta"):
        model = cls()
    assert list(model.state_dict()) == list(fx.state_dict())
    # The fx module's tensors themselves (strict keys and shapes, no copy: regnet_y_128gf's are 2.6 GB).
    model.load_state_dict(fx.state_dict(), assign=True)
    model.eval()
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randn(1, *t.shape, generator=generator) for t in network.inputs]
    with torch.no_grad():
        expected, actual = fx(*inputs), model(*inputs)
    expected_t = expected if isinstance(expected, tuple) else (expected,)
    actual_t = actual if isinstance(actual, tuple) else (actual,)
    assert len(actual_t) == len(expected_t) == len(network.outputs)
    for a, e in zip(actual_t, expected_t, strict=True):
        torch.testing.assert_close(a, e, rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(OP_EXAMPLES))
def test_every_op_standalone_matches_fx_module(name: str, tmp_path: Path) -> None:
    """Each op's example network (the one test_analysis counts against torch) through the standalone file: the same
    state_dict keys and, in float64 with random weights, identical outputs."""
    network = cnndsl.loads(f"network Op_{name}(x: [3, 17, 19]) {{\n    {OP_EXAMPLES[name]}\n}}\n")
    fx = network.to_torch().double().eval()
    with torch.no_grad():
        for tensor in fx.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand_like(tensor) + 0.5)
    model = standalone(network, tmp_path)().double().eval()
    assert list(model.state_dict()) == list(fx.state_dict())
    model.load_state_dict(fx.state_dict())
    x = torch.randn(2, 3, 17, 19, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(model(x), fx(x))


def test_generated_source_golden(golden: Callable[[str, str], None]) -> None:
    network = cnndsl.loads(STAGE, "stage.cnn")
    golden("codegen/stage.py.txt", generate(network, source="stage.cnn"))


def test_logits_variant(tmp_path: Path) -> None:
    network = cnndsl.loads(STAGE)
    fx = network.to_torch(logits=True).eval()
    cls = standalone(network, tmp_path, logits=True)
    model = cls().eval()
    model.load_state_dict(fx.state_dict())
    x = torch.randn(2, 16, 32, 32)
    with torch.no_grad():
        out = model(x)
        torch.testing.assert_close(out, fx(x), rtol=0, atol=0)
    assert not torch.allclose(out.sum(dim=1), torch.ones(2))
    assert not any(isinstance(m, torch.nn.Softmax) for m in model.modules())


def test_imports_only_torch(tmp_path: Path) -> None:
    source = generate(cnndsl.loads(STAGE))
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
    assert imported == {"__future__", "torch"}
    path = tmp_path / "model.py"
    path.write_text(source, encoding="utf-8")
    # Run as a script with cnndsl made unimportable: the file must stand alone.
    runner = (
        "import runpy, sys; sys.modules['cnndsl'] = None; runpy.run_path(sys.argv[1], run_name='__main__')"
    )
    result = subprocess.run(
        [sys.executable, "-c", runner, str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Stage [(2, 10)]"


def test_deployment_adds_classes_normalization_and_load_importing_only_torch_and_json(tmp_path: Path) -> None:
    """With a Deployment the file also reads a .safetensors file itself; the standard library's json is the only
    import besides torch."""
    from safetensors.torch import save_file

    from cnndsl.codegen import Deployment
    from cnndsl.export import with_normalization

    network = cnndsl.loads(STAGE)
    mean, std = [float(v) for v in range(16)], [float(v + 1) for v in range(16)]
    deploy = Deployment([f"c{i}" for i in range(10)], mean, std, pixel_max=1.0, weights="stage.safetensors")
    source = generate(network, deploy=deploy)
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
    assert imported == {"__future__", "json", "torch"}
    path = tmp_path / "stage_deployed.py"
    path.write_text(source, encoding="utf-8")
    fx = network.to_torch().eval()
    with torch.no_grad():
        for p in fx.parameters():
            p.normal_()
    state = {k: v.contiguous() for k, v in fx.state_dict().items()}
    save_file(state, str(tmp_path / "stage.safetensors"))
    module = import_file(path, "stage_deployed")
    assert deploy.classes == module.CLASSES and module.PIXEL_SCALE == 1.0 / 255.0
    loaded = module.load(str(tmp_path / "stage.safetensors"))
    reference = with_normalization(fx, mean, std, 1.0 / 255.0).eval()
    assert list(loaded.state_dict()) == list(reference.state_dict())
    for key, value in reference.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    pixels = torch.randint(0, 256, (2, 16, 32, 32)).float()
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels), reference(pixels), rtol=0, atol=0)
        torch.testing.assert_close(loaded.model(module.preprocess(pixels)), reference(pixels))
    for dtype in (torch.bfloat16, torch.int64, torch.bool, torch.float64):  # read_weights' every other dtype
        tensors = {"a": torch.arange(6).reshape(2, 3).to(dtype), "empty": torch.zeros(0, 4, dtype=dtype)}
        save_file(tensors, str(tmp_path / "t.safetensors"))
        read = module.read_weights(str(tmp_path / "t.safetensors"))
        assert all(torch.equal(read[k], v) and read[k].dtype == dtype for k, v in tensors.items())


def test_deployment_names_cannot_collide_with_the_class() -> None:
    from cnndsl.codegen import Deployment

    network = dataclasses.replace(cnndsl.loads(STAGE), name="load")
    source = generate(network, deploy=Deployment(["a"], [0.0] * 16, [1.0] * 16))
    assert "class loadModel(nn.Module):" in source and "    model = loadModel()" in source
    with pytest.raises(ValueError, match="positive std"):
        generate(network, deploy=Deployment(["a"], [0.0] * 16, [0.0] * 16))


# ---------------------------------------------------------------------------------------- escaping ---

HOSTILE_TEXT = [
    "x\nimport os; os.system('echo pwned')",
    "coding: latin-1",
    "a\rb",
    "\u2028raise SystemExit",
    "class",
    "self",
    "torch",
    "'''\"\"\"",
    "\\",
    "1abc",
    "",
    "training",
    "forward",
    "x",
    "add",
]


def hostile_network(text: str) -> Network:
    """A valid network whose every name (network, inputs, paths) has been replaced by hostile text."""
    base = cnndsl.loads(STAGE)
    nodes = list(base.nodes)
    for index, node in enumerate(nodes):
        if node.op == "input":
            nodes[index] = dataclasses.replace(node, path=text)
        else:
            prefix = text if index % 3 else f"{text}/{text}.{index}"
            nodes[index] = dataclasses.replace(node, path=f"{prefix}/{node.path}")
    inputs = [Tensor(text, t.node, t.shape) for t in base.inputs]
    outputs = [Tensor(text, t.node, t.shape) for t in base.outputs]
    return dataclasses.replace(base, name=text, nodes=nodes, inputs=inputs, outputs=outputs)


@pytest.mark.parametrize("text", HOSTILE_TEXT, ids=range(len(HOSTILE_TEXT)))
def test_hostile_names_cannot_inject_code(text: str, tmp_path: Path) -> None:
    network = hostile_network(text)
    source = generate(network, source=text)
    tree = ast.parse(source)
    # Only the expected top-level statements: no injected import, call or class.
    kinds = [type(node).__name__ for node in tree.body]
    assert kinds.count("ClassDef") == 1 and kinds.count("If") == 1
    assert kinds.count("Import") == 1 and kinds.count("ImportFrom") == 2
    # Spec text may survive only inside comments and as parts of sanitised identifiers, never as other tokens.
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    code = [t.string for t in tokens if t.type not in (tokenize.COMMENT, tokenize.NAME)]
    assert not any("pwned" in token or "SystemExit" in token or "latin" in token for token in code)
    assert all(t.string.isidentifier() and t.string.isascii() for t in tokens if t.type == tokenize.NAME)
    for line in source.splitlines()[:2]:
        assert "coding" not in line.replace("cnndsl", "")
    assert source.encode("utf-8")
    fx = network.to_torch().eval()
    path = tmp_path / "hostile.py"
    path.write_text(source, encoding="utf-8")
    module = import_file(path, f"hostile_{HOSTILE_TEXT.index(text)}")
    classes = [v for v in vars(module).values() if isinstance(v, type) and v.__module__ == module.__name__]
    model = classes[0]().eval()
    assert list(model.state_dict()) == list(fx.state_dict())
    model.load_state_dict(fx.state_dict())
    x = torch.randn(1, 16, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), fx(x), rtol=0, atol=0)


@pytest.mark.parametrize("text", HOSTILE_TEXT[:4], ids=range(4))
def test_hostile_class_names_and_weights_names_stay_data(text: str, tmp_path: Path) -> None:
    """Class names come from folder names: they reach the file only as one string literal each."""
    from cnndsl.codegen import Deployment

    classes = [text, f"{text}'", f'"""{text}']
    source = generate(cnndsl.loads(STAGE), deploy=Deployment(classes, [0.5] * 16, [2.0] * 16, weights=text))
    tree = ast.parse(source)
    kinds = [type(node).__name__ for node in tree.body]
    assert kinds.count("ClassDef") == 2 and kinds.count("Import") == 2 and kinds.count("If") == 1
    assigned = {
        node.targets[0].id: node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
    }
    assert ast.literal_eval(assigned["CLASSES"]) == classes
    path = tmp_path / "hostile_deploy.py"
    path.write_text(source, encoding="utf-8")
    assert classes == import_file(path, f"hostile_deploy_{HOSTILE_TEXT.index(text)}").CLASSES


def test_comment_and_literal() -> None:
    assert comment("a\nb\rc\u2028d\x00") == "a?b?c?d?"
    assert literal((1, 2)) == "(1, 2)" and literal((3,)) == "(3,)" and literal("it's") == '"it\'s"'
    assert literal(float("inf")) == 'float("inf")' and literal(True) == "True" and literal(0.1) == "0.1"
    assert ast.literal_eval(literal("x\n'\"\\")) == "x\n'\"\\"
    with pytest.raises(TypeError):
        literal(object())


# --------------------------------------------------------------------------------------------- CLI ---


def test_cli_compile_writes_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "stage.cnn"
    spec.write_text(STAGE, encoding="utf-8")
    out = tmp_path / "out" / "model.py"
    assert main(["compile", str(spec), "-o", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == generate(cnndsl.load(spec), source=str(spec))
    assert "class Stage" in capsys.readouterr().err
    assert main(["compile", str(spec), "--logits"]) == 0
    assert capsys.readouterr().out == generate(cnndsl.load(spec), logits=True, source=str(spec))


def test_cli_compile_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.cnn"
    bad.write_text("network N(x: [3, 8, 8]) {\n    conv(4, 9)\n}\n", encoding="utf-8")
    assert main(["compile", str(bad), "-o", str(tmp_path / "m.py")]) == 1
    assert "bad.cnn:2:" in capsys.readouterr().err
    assert not (tmp_path / "m.py").exists()
    assert main(["compile", str(tmp_path / "missing.cnn")]) == 2
    assert "cannot read" in capsys.readouterr().err
    spec = tmp_path / "stage.cnn"
    spec.write_text(STAGE, encoding="utf-8")
    blocker = tmp_path / "file"
    blocker.write_text("", encoding="utf-8")
    assert main(["compile", str(spec), "-o", str(blocker / "m.py")]) == 2
    assert "cannot write" in capsys.readouterr().err
