"""`cnndsl import model.cfg --weights model.weights --weights-out ...`: Darknet weight files.

No real .weights file can be fetched here, so each test writes one from known arrays with a writer of its own that
follows Darknet's save_weights (src/parser.c; independent of the reader under test). The oracle is PyTorch: a
direct re-implementation of Darknet's forward pass over the cfg with torch.nn.functional calls on the raw arrays,
compared with the imported spec's module after its state_dict is loaded strictly.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import cnndsl
from cnndsl.cli import main
from cnndsl.importers import ImportFailure, import_graph
from cnndsl.importers.darknet import import_darknet_model
from cnndsl.importers.darknet_weights import read_darknet_weights, spec_state_dict

ROOT = Path(__file__).resolve().parent.parent
CORPUS = next(
    (p / "shared" / "corpus" for p in (ROOT.parent, ROOT.parent.parent) if (p / "shared").is_dir()), ROOT
)

# ------------------------------------------------------------- a cfg reader, writer and forward pass ---


def _sections(text: str) -> list[tuple[str, dict[str, str]]]:
    sections: list[tuple[str, dict[str, str]]] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].replace(" ", "").strip()
        if line.startswith("["):
            sections.append((line[1:-1], {}))
        elif "=" in line:
            key, value = line.split("=", 1)
            sections[-1][1][key] = value
    return sections


def _net_shape(text: str) -> tuple[int, int, int]:
    net = _sections(text)[0][1]
    return int(net["channels"]), int(net["height"]), int(net["width"])


class Darknet:
    """A cfg's layers with random parameters, written as Darknet writes them and run as Darknet runs them."""

    def __init__(self, cfg: str, input_shape: tuple[int, int, int] | None = None, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.layers = _sections(cfg)[1:]
        self.input_shape = input_shape or _net_shape(cfg)
        self.params: list[dict[str, np.ndarray]] = []
        x = torch.zeros(1, *self.input_shape, dtype=torch.float64, device="meta")
        outs: list[torch.Tensor] = []
        for kind, options in self.layers:  # run once on the meta device to learn each layer's input shape
            shape = tuple(x.shape[1:])
            params: dict[str, np.ndarray] = {}
            n = int(options.get("filters", options.get("output", 1)))
            if kind == "convolutional":
                size, groups = int(options.get("size", 1)), int(options.get("groups", 1))
                fan_in = shape[0] // groups * size * size
                params["weights"] = rng.standard_normal((n, shape[0] // groups, size, size)) / np.sqrt(fan_in)
            elif kind == "connected":
                fan_in = int(np.prod(shape))
                params["weights"] = rng.standard_normal((n, fan_in)) / np.sqrt(fan_in)
            if params:
                params["biases"] = rng.normal(0, 0.1, n)
                if "1" in (options.get("batch_normalize"), options.get("cbn")):
                    params["scales"] = rng.uniform(0.5, 1.5, n)
                    params["rolling_mean"] = rng.normal(0, 0.1, n)
                    params["rolling_variance"] = rng.uniform(0.5, 1.5, n)
                params = {k: v.astype(np.float32) for k, v in params.items()}
            self.params.append(params)
            x = _layer(kind, options, params, x, outs, [])

    def write(self, path: Path, version: tuple[int, int, int] = (0, 2, 5), seen_bytes: int = 8) -> None:
        """src/parser.c save_weights_upto: the header, then per layer biases, [scales, mean, variance], weights."""
        transpose = version[0] > 1000 or version[1] > 1000
        chunks = [np.array(version, "<i4").tobytes(), (123_456).to_bytes(seen_bytes, "little")]
        for (kind, options), params in zip(self.layers, self.params, strict=True):
            if not params:
                continue
            order = ["biases"]
            if "scales" in params:
                order += ["scales", "rolling_mean", "rolling_variance"]
            weights = params["weights"]
            if kind == "connected" and transpose:  # load_connected_weights transposes [inputs, outputs]
                weights = weights.T
            if options.get("flipped") == "1":  # load_convolutional_weights transposes [c*size*size, n]
                weights = weights.reshape(weights.shape[0], -1).T
            chunks += [params[name].astype("<f4").tobytes() for name in order]
            chunks.append(np.ascontiguousarray(weights).astype("<f4").tobytes())
        path.write_bytes(b"".join(chunks))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The network's outputs: the inputs of its [yolo] heads, or the last layer's output."""
        outs: list[torch.Tensor] = []
        heads: list[torch.Tensor] = []
        for (kind, options), params in zip(self.layers, self.params, strict=True):
            x = _layer(kind, options, params, x, outs, heads)
        return heads or [x]


def _layer(
    kind: str,
    options: dict[str, str],
    params: dict[str, np.ndarray],
    x: torch.Tensor,
    outs: list[torch.Tensor],
    heads: list[torch.Tensor],
) -> torch.Tensor:
    """One layer of Darknet's forward pass (the forward functions of src/*_layer.c), in float64."""
    index = len(outs)

    def ref(value: str) -> torch.Tensor:
        target = int(value)
        return outs[index + target if target < 0 else target]

    t = {k: torch.tensor(v, dtype=torch.float64, device=x.device) for k, v in params.items()}
    act = options.get("activation", "linear" if kind == "shortcut" else "logistic")
    if kind == "convolutional":
        size = int(options.get("size", 1))
        padding = size // 2 if options.get("pad") == "1" else int(options.get("padding", 0))
        stride, dilation, groups = (int(options.get(k, 1)) for k in ("stride", "dilation", "groups"))
        strides = (int(options.get("stride_y", stride)), int(options.get("stride_x", stride)))
        dilation = dilation if size > 1 else 1  # parse_convolutional ignores it for 1x1
        # AlexeyAB's forward_convolutional_layer: im2col_cpu_ext pads padding * dilation.
        y = F.conv2d(x, t["weights"], None, strides, padding * dilation, dilation, groups)
        if "scales" in t:
            # normalize_cpu (with torch's epsilon: Darknet builds use 1e-5 or 1e-6), scale_bias; biases shift.
            y = (y - t["rolling_mean"][:, None, None]) / torch.sqrt(
                t["rolling_variance"][:, None, None] + 1e-5
            )
            y = y * t["scales"][:, None, None]
        y = _activate(y + t["biases"][:, None, None], act)
    elif kind == "connected":
        y = _activate(x.flatten(1) @ t["weights"].T + t["biases"], act)
    elif kind == "maxpool":
        stride = int(options.get("stride", 1))
        size = int(options.get("size", stride))
        padding = int(options.get("padding", size - 1))
        before = padding // 2
        strides = (int(options.get("stride_y", stride)), int(options.get("stride_x", stride)))
        y = F.max_pool2d(F.pad(x, (before, padding - before) * 2, value=-np.inf), size, strides)
    elif kind == "avgpool":
        y = x.mean(dim=(2, 3), keepdim=True)
    elif kind == "route":
        groups, group_id = int(options.get("groups", 1)), int(options.get("group_id", 0))
        y = torch.cat([ref(v).chunk(groups, dim=1)[group_id] for v in options["layers"].split(",")], dim=1)
    elif kind == "shortcut":
        sources = [ref(v) for v in options["from"].split(",")]
        added = _shortcut(x, sources[0]) if len(sources) == 1 else _shortcut_multilayer(x, sources)
        y = _activate(added, act)
    elif kind == "upsample":
        y = F.interpolate(x, scale_factor=int(options.get("stride", 2)), mode="nearest")
    elif kind == "softmax":
        y = F.softmax(x, dim=1)
    elif kind in ("yolo", "region"):
        heads.append(x)
        y = x
    elif kind == "dropout":
        y = x
    else:
        raise AssertionError(f"the reference does not run [{kind}]")
    outs.append(y)
    return y


def _shortcut(base: torch.Tensor, added: torch.Tensor) -> torch.Tensor:
    """src/blas.c shortcut_cpu: the overlapping channels of ``added``, sampled with a stride, onto ``base``."""
    (c1, h1, w1), (c2, h2, w2) = added.shape[1:], base.shape[1:]
    stride, sample = max(w1 // w2, 1), max(w2 // w1, 1)
    c, h, w = min(c1, c2), min(h1, h2), min(w1, w2)
    out = base.clone()
    out[:, :c, ::sample, ::sample][:, :, :h, :w] += added[:, :c, ::stride, ::stride][:, :, :h, :w]
    return out


def _shortcut_multilayer(base: torch.Tensor, added: list[torch.Tensor]) -> torch.Tensor:
    """AlexeyAB's src/blas.c shortcut_multilayer_cpu (several from= layers): out[i] = in[i], plus add[i] of each
    from-layer at every flat position i (within one image) that it has."""
    out = base.flatten(1).clone()
    for tensor in added:
        flat = tensor.flatten(1)
        n = min(out.shape[1], flat.shape[1])
        out[:, :n] += flat[:, :n]
    return out.view_as(base)


def _activate(x: torch.Tensor, name: str) -> torch.Tensor:
    return {
        "linear": lambda v: v,
        "leaky": lambda v: F.leaky_relu(v, 0.1),
        "relu": F.relu,
        "relu6": F.relu6,
        "logistic": torch.sigmoid,
        "swish": F.silu,
        "tanh": torch.tanh,
    }[name](x)


def _import(
    cfg: Path, weights: Path, input_shape: tuple[int, ...] | None = None
) -> tuple[Any, dict[str, Any]]:
    imported = import_darknet_model(cfg, input_shape=input_shape)
    result = import_graph(imported.graph)
    network = cnndsl.loads(result.spec)
    read = read_darknet_weights(weights, imported)
    return network, spec_state_dict(imported, read, network)


def _assert_module_matches(network: Any, state: dict[str, Any], model: Darknet, batch: int = 2) -> None:
    module = network.to_torch().double().eval()
    module.load_state_dict(state, strict=True)
    x = torch.randn(
        batch, *model.input_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        got = module(x)
        expected = model.forward(x)
    got = list(got) if isinstance(got, tuple | list) else [got]
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g.shape == e.shape
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------------------------------- cfgs ---

FEATURES = """[net]
width=16
height=16
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
pad=1
activation=leaky

[convolutional]
filters=8
size=3
pad=1
groups=2
activation=linear

[shortcut]
from=-2
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=16
size=1
activation=swish

[route]
layers=-1
groups=2
group_id=1

[upsample]
stride=2

[route]
layers=-1,2

[convolutional]
batch_normalize=1
filters=6
size=3
stride=2
padding=1
dilation=1

[yolo]

[route]
layers=4

[convolutional]
filters=5
size=1
groups=1
activation=linear

[yolo]
"""

CLASSIFIER = """[net]
width=16
height=16
channels=3

[convolutional]
batch_normalize=1
filters=4
size=3
stride=2
pad=1
activation=relu

[maxpool]
size=3
stride=2

[connected]
output=10
activation=leaky

[dropout]
probability=0.5

[connected]
output=7
activation=linear

[softmax]
"""

FLIPPED = """[net]
width=8
height=8
channels=2

[convolutional]
batch_normalize=1
filters=3
size=3
pad=1
flipped=1
activation=tanh

[convolutional]
filters=4
size=1
flipped=1

[avgpool]

[connected]
output=3
"""

SEMANTICS = """[net]
width=16
height=16
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
pad=1
activation=leaky

[convolutional]
filters=4
size=1
activation=linear

# 2: group 1 of 2 of each input: layer 0's channels 4..7 then layer 1's 2..3 (not channels 6..11 of the concat)
[route]
layers=0,1
groups=2
group_id=1

[yolo]

# 4: pad=1 wins over padding=0; dilation 2 pads 1 * 2; cbn=1 is a batch norm at inference
[convolutional]
cbn=1
filters=8
size=3
pad=1
padding=0
dilation=2
activation=leaky

# 5: AlexeyAB's sum over several layers: + layer 0 (same shape) + layer 1 (4 of the 8 channels)
[shortcut]
from=0,1
activation=leaky

# 6: three equal shapes
[shortcut]
from=-2,0
activation=linear

[yolo]

[convolutional]
filters=6
size=3
stride_x=2
stride_y=1
pad=1
activation=relu6

[maxpool]
size=2
stride_x=1
stride_y=2

[yolo]
"""

CASES = {
    "bn-plain-grouped-route-shortcut-upsample": (FEATURES, (0, 2, 5), 8),
    "route groups of several layers, several-layer shortcuts, dilation, stride_x/stride_y": (
        SEMANTICS,
        (0, 2, 5),
        8,
    ),
    "connected-maxpool-softmax, version 0.1 (32-bit seen)": (CLASSIFIER, (0, 1, 0), 4),
    "connected transposed, pjreddie's 32-bit seen": (CLASSIFIER, (0, 1001, 0), 4),
    "connected transposed, AlexeyAB's 64-bit seen": (CLASSIFIER, (1002, 0, 0), 8),
    "flipped convolutions, version 0.2.0": (FLIPPED, (0, 2, 0), 8),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_weights_load_strictly_and_the_module_computes_what_darknet_does(tmp_path: Path, case: str) -> None:
    text, version, seen_bytes = CASES[case]
    cfg = tmp_path / "model.cfg"
    cfg.write_text(text)
    model = Darknet(text)
    model.write(tmp_path / "model.weights", version, seen_bytes)
    network, state = _import(cfg, tmp_path / "model.weights")
    assert set(state) == set(network.to_torch().state_dict())
    _assert_module_matches(network, state, model)


def test_the_oracle_notices_a_misplaced_tensor(tmp_path: Path) -> None:
    """The comparison above can fail: the bn shift and scale swapped, or a conv's filters in another order."""
    cfg = tmp_path / "model.cfg"
    cfg.write_text(FEATURES)
    model = Darknet(FEATURES)
    model.write(tmp_path / "model.weights")
    network, state = _import(cfg, tmp_path / "model.weights")
    bn = next(k.rsplit(".", 1)[0] for k in state if k.endswith("running_var"))
    swapped = dict(state, **{f"{bn}.weight": state[f"{bn}.bias"], f"{bn}.bias": state[f"{bn}.weight"]})
    with pytest.raises(AssertionError):
        _assert_module_matches(network, swapped, model)
    conv = next(k for k in state if state[k].dim() == 4)
    reordered = dict(state, **{conv: state[conv].flip(0)})
    with pytest.raises(AssertionError):
        _assert_module_matches(network, reordered, model)


def test_the_semantics_cfg_tells_darknets_meaning_from_the_old_readings(tmp_path: Path) -> None:
    """The SEMANTICS case can fail: each construct there, read as the importer once read it (a group of the
    concat, the first from= layer only, padding= over pad=, dilation padded once), gives other numbers."""
    model = Darknet(SEMANTICS)
    x = torch.randn(1, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    outs: list[torch.Tensor] = []
    for (kind, options), params in zip(model.layers, model.params, strict=True):
        x = _layer(kind, options, params, x, outs, [])
    l0, l1 = outs[0], outs[1]
    assert not torch.equal(outs[2], torch.cat([l0, l1], dim=1).chunk(2, dim=1)[1])
    assert not torch.equal(outs[5], F.leaky_relu(outs[4] + l0, 0.1))
    t = {k: torch.tensor(v, dtype=torch.float64) for k, v in model.params[4].items()}
    assert F.conv2d(outs[3], t["weights"], None, 1, 1, 2).shape[2:] != outs[4].shape[2:]
    assert outs[8].shape[2:] == (16, 8)  # stride_y=1, stride_x=2; stride=1 would keep 16x16


def test_the_semantics_cfg_reads_as_darknets_layers(tmp_path: Path) -> None:
    cfg = tmp_path / "model.cfg"
    cfg.write_text(SEMANTICS)
    spec = import_graph(import_darknet_model(cfg).graph).spec
    network = cnndsl.loads(spec)
    ops = [layer.op for layer in network.layers]
    assert ops.count("chunk") == 2 and ops.count("sample_add") == 1
    convs = [layer.args for layer in network.layers if layer.op == "conv"]
    assert (convs[2]["padding"], convs[2]["dilation"]) == ((2, 2), (2, 2))
    assert convs[3]["stride"] == (1, 2)
    assert [layer.args["stride"] for layer in network.layers if layer.op == "maxpool"] == [(2, 1)]


def test_the_header_is_read_as_darknet_reads_it(tmp_path: Path) -> None:
    cfg = tmp_path / "model.cfg"
    cfg.write_text(FLIPPED)
    model = Darknet(FLIPPED)
    for version, width in [
        ((0, 2, 5), 8),
        ((0, 1, 0), 4),
        ((0, 0, 3), 4),
        ((0, 1001, 0), 4),
        ((2000, 0, 1), 8),
    ]:
        model.write(tmp_path / "model.weights", version, width)
        imported = import_darknet_model(cfg)
        import_graph(imported.graph)
        header = read_darknet_weights(tmp_path / "model.weights", imported).header
        assert (header.major, header.minor, header.revision, header.seen) == (*version, 123_456)
        assert header.size == 12 + width


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, shape, outputs",
    [("yolov4-tiny", (3, 32, 32), 2), ("yolov3-tiny", (3, 32, 32), 2), ("resnet18", (3, 32, 32), 1)],
)
def test_corpus_cfg_with_weights(
    tmp_path: Path, name: str, shape: tuple[int, int, int], outputs: int
) -> None:
    """Real cfgs: route groups (yolov4-tiny), two heads, residual blocks mined as `Residual * n` whose shortcuts
    change shape (resnet18): the file's order must still meet the spec's modules one to one."""
    cfg = CORPUS / "darknet" / f"{name}.cfg"
    if not cfg.exists():
        pytest.skip("../shared/corpus is not beside this checkout")
    text = cfg.read_text()
    model = Darknet(text, shape)
    model.write(tmp_path / "model.weights")
    network, state = _import(cfg, tmp_path / "model.weights", input_shape=shape)
    assert len(network.outputs) == outputs
    _assert_module_matches(network, state, model, batch=1)


# ------------------------------------------------------------------------------------------- CLI ---


def _cli(*args: str | Path) -> int:
    return main(["import", *map(str, args)])


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_cli_writes_a_state_dict_that_the_spec_loads_by_name(
    tmp_path: Path, suffix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "model.cfg"
    cfg.write_text(FEATURES)
    model = Darknet(FEATURES)
    model.write(tmp_path / "model.weights")
    out = tmp_path / f"model{suffix}"
    code = _cli(
        cfg, "--weights", tmp_path / "model.weights", "--weights-out", out, "-o", tmp_path / "model.cnn"
    )
    err = capsys.readouterr().err
    assert code == 0, err
    assert "Darknet 0.2.5, trained on 123,456 images" in err and f"wrote {out}" in err
    state = torch.load(out, weights_only=True) if suffix == ".pt" else load_file(out)
    network = cnndsl.load(tmp_path / "model.cnn")
    module = network.to_torch().double().eval()
    cnndsl.load_weights(module, state, match="name")
    _assert_module_matches(network, {k: v for k, v in module.state_dict().items()}, model)
    # `cnndsl export --weights` takes the file as it is and writes the same tensors back out.
    again = tmp_path / "again.safetensors"
    assert (
        main(["export", str(tmp_path / "model.cnn"), "--weights", str(out), "--safetensors", str(again)]) == 0
    )
    exported = load_file(again)
    assert all(torch.equal(exported[k], v) for k, v in state.items() if not k.endswith("num_batches_tracked"))


def test_cli_refuses_weights_where_they_do_not_belong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proto = tmp_path / "m.prototxt"
    proto.write_text('input: "data" input_dim: 1 input_dim: 1 input_dim: 4 input_dim: 4\n')
    assert _cli(proto, "--weights", "m.weights") == 2
    assert "Darknet .cfg sources only" in capsys.readouterr().err
    cfg = tmp_path / "m.cfg"
    cfg.write_text(FLIPPED)
    assert _cli(cfg, "--weights-out", tmp_path / "m.pt") == 2
    assert "give its .weights file with --weights" in capsys.readouterr().err
    assert _cli(cfg, "--weights", tmp_path / "missing.weights") == 2
    err = capsys.readouterr().err
    assert "cannot read" in err and "missing.weights" in err
    gappy = tmp_path / "gap.cfg"
    gappy.write_text(FLIPPED + "[reorg]\nstride=2\n")
    Darknet(FLIPPED).write(tmp_path / "gap.weights")
    out = tmp_path / "gap.pt"
    assert _cli(gappy, "--partial", "--weights", tmp_path / "gap.weights", "--weights-out", out) == 1
    assert "--weights not read: the import has gaps" in capsys.readouterr().err and not out.exists()


def test_cli_a_broken_weights_file_is_one_located_error_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "m.cfg"
    cfg.write_text(CLASSIFIER)
    model = Darknet(CLASSIFIER)
    model.write(tmp_path / "m.weights")
    data = (tmp_path / "m.weights").read_bytes()
    (tmp_path / "m.weights").write_bytes(data[:-7])
    code = _cli(
        cfg, "--weights", tmp_path / "m.weights", "--weights-out", tmp_path / "m.pt", "-o", tmp_path / "m.cnn"
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "layer 4 [connected]" in err and "m.cfg:25" in err and "Traceback" not in err
    assert not (tmp_path / "m.pt").exists() and not (tmp_path / "m.cnn").exists()


def test_nan_weights_are_kept_with_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "m.cfg"
    cfg.write_text(FLIPPED)
    model = Darknet(FLIPPED)
    model.params[0]["scales"][1] = np.nan
    model.params[0]["rolling_variance"][0] = -1.0
    model.write(tmp_path / "m.weights")
    assert _cli(cfg, "--weights", tmp_path / "m.weights", "--weights-out", tmp_path / "m.pt") == 0
    err = capsys.readouterr().err
    assert "layer 0 [convolutional]" in err and "1 of its scales are NaN or infinite" in err
    assert "negative rolling_variance" in err
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    assert torch.isnan(state["bn_0.weight"][1])


# ------------------------------------------------------------------------------- hostile files ---


def _fail(tmp_path: Path, data: bytes, cfg_text: str = CLASSIFIER) -> str:
    cfg = tmp_path / "m.cfg"
    cfg.write_text(cfg_text)
    (tmp_path / "m.weights").write_bytes(data)
    imported = import_darknet_model(cfg)
    import_graph(imported.graph)
    with pytest.raises(ImportFailure) as failure:
        read_darknet_weights(tmp_path / "m.weights", imported)
    assert len(failure.value.problems) >= 1
    return failure.value.render().replace(str(tmp_path) + "/", "")


def _whole(cfg_text: str = CLASSIFIER, version: tuple[int, int, int] = (0, 2, 0), seen: int = 8) -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "w"
        Darknet(cfg_text).write(path, version, seen)
        return path.read_bytes()


HOSTILE = {
    "empty": lambda: b"",
    "three_bytes": lambda: b"\x00\x00\x00",
    "header_cut": lambda: _whole()[:14],
    "unknown_version": lambda: np.array([0, 3, 0, 0, 0], "<i4").tobytes() + _whole()[20:],
    "negative_version": lambda: np.array([-1, 0, 0, 0], "<i4").tobytes() + _whole()[16:],
    "huge_version": lambda: np.array([2**31 - 1, 2**31 - 1, 2**31 - 1, -1, -1], "<i4").tobytes(),
    "truncated_in_a_layer": lambda: _whole()[:-7],
    "ends_between_layers": lambda: _whole()[: 20 + 4 * (4 * 4 + 4 * 27)],
    "too_long": lambda: _whole() + b"\x00" * 10,
    "32_bit_seen_for_version_0_2": lambda: _whole(seen=4),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_broken_weights_files_get_one_located_error(tmp_path: Path, name: str, golden: Any) -> None:
    golden(f"import/weights_{name}.txt", _fail(tmp_path, HOSTILE[name]()))


def test_a_cfg_declaring_enormous_layers_fails_on_a_small_file_without_allocating(tmp_path: Path) -> None:
    big = "[convolutional]\nfilters=65536\nsize=64\npad=1\n"
    cfg_text = "[net]\nwidth=64\nheight=64\nchannels=3\n[convolutional]\nfilters=65536\nsize=1\n" + big
    start = time.process_time()
    message = _fail(tmp_path, np.array([0, 2, 0, 0, 0], "<i4").tobytes() + b"\0" * 400, cfg_text)
    assert "it needs 262,144 floats" in message and "400 bytes are left" in message
    assert time.process_time() - start < 30  # a guard against reading or allocating the declared size


def test_a_seen_counter_at_its_maximum_is_just_a_number(tmp_path: Path) -> None:
    data = bytearray(_whole())
    data[12:20] = b"\xff" * 8
    cfg = tmp_path / "m.cfg"
    cfg.write_text(CLASSIFIER)
    (tmp_path / "m.weights").write_bytes(bytes(data))
    imported = import_darknet_model(cfg)
    import_graph(imported.graph)
    assert read_darknet_weights(tmp_path / "m.weights", imported).header.seen == 2**64 - 1


REFUSED = {
    "dontload": (
        FLIPPED.replace("flipped=1\nactivation=tanh", "dontload=1"),
        "dontload= (Darknet then skips",
    ),
    "dontloadscales": (FLIPPED.replace("activation=tanh", "dontloadscales=1"), "dontloadscales="),
    "flipped with groups": (
        FLIPPED.replace("filters=4\nsize=1\n", "filters=6\nsize=1\ngroups=3\n"),
        "flipped=1 with groups=",
    ),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_options_that_change_what_the_file_holds_are_refused_when_reading(tmp_path: Path, name: str) -> None:
    text, expected = REFUSED[name]
    message = _fail(tmp_path, _whole(FLIPPED), text)
    assert expected in message and "m.cfg:" in message, message


@pytest.mark.parametrize(
    "section, expected",
    [
        (
            "[convolutional]\nfilters=3\nsize=1\nshare_index=0\n",
            "share_index=0 (the weights of another layer)",
        ),
        ("[convolutional]\nfilters=3\nsize=1\nxnor=1\n", "xnor=1 ("),
        (
            "[shortcut]\nfrom=-2\nweights_type=per_channel\n",
            "weights_type=per_channel (AlexeyAB's weighted sum",
        ),
    ],
)
def test_cfg_options_with_hidden_weights_are_unsupported(tmp_path: Path, section: str, expected: str) -> None:
    cfg = tmp_path / "m.cfg"
    cfg.write_text(f"[net]\nwidth=8\nheight=8\nchannels=3\n[convolutional]\nfilters=3\nsize=1\n{section}")
    with pytest.raises(ImportFailure) as failure:
        import_darknet_model(cfg)
    assert expected in failure.value.render()
