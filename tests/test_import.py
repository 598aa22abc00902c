"""`cnndsl import` for Darknet .cfg and Caffe .prototxt.

Oracles: the published (or independently computed, plain-torch) figures of real files in ../shared/corpus, and
direct re-implementations of Darknet's and Caffe's own layer loops (maxpool, shortcut, ceil pooling) in numpy,
compared with what the imported spec compiles to in torch.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import cnndsl
from cnndsl.analysis import summarize
from cnndsl.importers import ImportFailure, import_file

ROOT = Path(__file__).resolve().parent.parent
# CI and sessions lay shared/ beside the checkout; a git worktree one level deeper finds it too.
CORPUS = next(
    (p / "shared" / "corpus" for p in (ROOT.parent, ROOT.parent.parent) if (p / "shared").is_dir()), ROOT
)
MANIFEST = json.loads((CORPUS / "manifest.json").read_text()) if (CORPUS / "manifest.json").exists() else []
needs_corpus = pytest.mark.skipif(not MANIFEST, reason="../shared/corpus is not beside this checkout")


def _import_text(tmp_path: Path, name: str, text: str, **kwargs: object) -> str:
    path = tmp_path / name
    path.write_text(text)
    return import_file(path, **kwargs).spec  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ corpus ---


@needs_corpus
@pytest.mark.parametrize("entry", MANIFEST, ids=[m["name"] for m in MANIFEST])
def test_corpus_file_imports_with_its_published_figures(entry: dict) -> None:
    result = import_file(CORPUS / entry["file"], input_shape=tuple(entry["input"]))
    network = cnndsl.loads(result.spec)
    totals = summarize(network).totals
    expected_input = tuple(entry["input"])
    if (
        "[crop]" in result.spec
    ):  # vgg-16.cfg crops 256 to 224 first: folded into the input, as the corpus allows
        expected_input = (expected_input[0], *network.inputs[0].shape[1:])
        assert network.inputs[0].shape[1:] == (224, 224)
    assert network.inputs[0].shape == expected_input
    assert totals.trainable_params == entry["params"]
    assert totals.macs == entry["macs"]
    assert len(network.outputs) == entry["outputs"]
    if entry.get("darknet_bflops") is not None:
        # Darknet's "BFLOPs" are 2 x conv+connected MACs / 1e9, published with two decimals (yolov4-tiny: one).
        tolerance = 0.05 if entry["name"].startswith("darknet-yolov4") else 0.005 + 1e-9
        assert math.isclose(2 * totals.macs / 1e9, entry["darknet_bflops"], abs_tol=tolerance)


def _code_lines(spec: str) -> int:
    return sum(1 for line in spec.splitlines() if line.strip() and not line.lstrip().startswith("#"))


@needs_corpus
@pytest.mark.parametrize("file", ["darknet/resnet50.cfg", "caffe/resnet50_v1.prototxt"])
def test_an_imported_resnet50_reads_as_blocks(file: str) -> None:
    spec = import_file(CORPUS / file).spec
    assert _code_lines(spec) < 40, spec
    assert "block Residual" in spec and "* " in spec  # the residual unit, repeated within each stage


@needs_corpus
def test_googlenet_inception_modules_become_one_block_called_nine_times() -> None:
    spec = import_file(CORPUS / "caffe/bvlc_googlenet.prototxt").spec
    [block] = [line for line in spec.splitlines() if line.startswith("block Branches(")]
    assert block.count(",") == 5  # the six widths of an inception module
    assert sum(line.strip().startswith("Branches(") for line in spec.splitlines()) == 9


@needs_corpus
def test_yolov3_has_its_three_heads_as_outputs_and_every_line_names_its_source() -> None:
    spec = import_file(CORPUS / "darknet/yolov3.cfg", input_shape=(3, 416, 416)).spec
    network = cnndsl.loads(spec)
    assert [t.shape for t in network.outputs] == [(255, 13, 13), (255, 26, 26), (255, 52, 52)]
    body = spec[spec.index("network ") :].splitlines()[1:-2]
    assert all("# " in line and "line" in line for line in body), body


@needs_corpus
@pytest.mark.parametrize(
    "file, shape",
    [
        ("caffe/lenet.prototxt", (1, 28, 28)),
        ("caffe/cifar10_quick.prototxt", (3, 32, 32)),
        ("darknet/yolov3-tiny.cfg", (3, 96, 96)),
        ("caffe/squeezenet_v1.1.prototxt", (3, 67, 67)),
    ],
)
def test_imported_specs_compile_and_torch_agrees_on_every_shape(
    file: str, shape: tuple[int, int, int]
) -> None:
    torch = pytest.importorskip("torch")
    network = cnndsl.loads(import_file(CORPUS / file, input_shape=shape).spec)
    model = network.to_torch().eval()
    with torch.no_grad():
        outputs = model(torch.randn(2, *shape))
    outputs = outputs if isinstance(outputs, tuple | list) else (outputs,)
    assert [tuple(o.shape[1:]) for o in outputs] == [t.shape for t in network.outputs]


# ------------------------------------------------------------------------ semantics vs Darknet/Caffe ---


def _darknet_maxpool(x: np.ndarray, size: int, stride: int, padding: int) -> np.ndarray:
    """src/maxpool_layer.c forward_maxpool_layer, for one sample."""
    channels, height, width = x.shape
    out_h = (height + padding - size) // stride + 1
    out_w = (width + padding - size) // stride + 1
    offset = -(padding // 2)
    out = np.full((channels, out_h, out_w), -np.inf)
    for i in range(out_h):
        for j in range(out_w):
            for n in range(size):
                for m in range(size):
                    h, w = offset + i * stride + n, offset + j * stride + m
                    if 0 <= h < height and 0 <= w < width:
                        out[:, i, j] = np.maximum(out[:, i, j], x[:, h, w])
    return out


@pytest.mark.parametrize(
    "size, stride, padding, hw",
    [
        (2, 1, None, 13),
        (2, 2, None, 13),
        (2, 2, None, 12),
        (3, 2, None, 9),
        (3, 1, 2, 7),
        (5, 1, None, 6),
        (3, 2, 1, 8),
    ],
)
def test_darknet_maxpool_matches_darknets_loop(
    tmp_path: Path, size: int, stride: int, padding: int | None, hw: int
) -> None:
    torch = pytest.importorskip("torch")
    pad_line = f"padding={padding}\n" if padding is not None else ""
    cfg = f"[net]\nwidth={hw}\nheight={hw}\nchannels=3\n\n[maxpool]\nsize={size}\nstride={stride}\n{pad_line}"
    network = cnndsl.loads(_import_text(tmp_path, "pool.cfg", cfg))
    x = np.random.default_rng(size * 10 + stride).standard_normal((3, hw, hw))
    expected = _darknet_maxpool(x, size, stride, size - 1 if padding is None else padding)
    got = network.to_torch().eval()(torch.tensor(x[None]))[0].numpy()
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def _darknet_shortcut(base: np.ndarray, added: np.ndarray) -> np.ndarray:
    """src/blas.c shortcut_cpu with s1 = s2 = 1, for one sample: ``added`` is the `from` layer."""
    c1, h1, w1 = added.shape
    c2, h2, w2 = base.shape
    stride, sample = max(w1 // w2, 1), max(w2 // w1, 1)
    out = base.copy().reshape(-1)
    flat = added.reshape(-1)
    for k in range(min(c1, c2)):
        for j in range(min(h1, h2)):
            for i in range(min(w1, w2)):
                out[i * sample + w2 * (j * sample + h2 * k)] += flat[i * stride + w1 * (j * stride + h1 * k)]
    return out.reshape(base.shape)


@pytest.mark.parametrize(
    "base, added",
    [((6, 4, 4), (4, 8, 8)), ((4, 8, 8), (6, 4, 4)), ((8, 4, 4), (8, 4, 4)), ((3, 6, 6), (5, 6, 6))],
)
def test_sample_add_is_darknets_shortcut(base: tuple[int, ...], added: tuple[int, ...]) -> None:
    torch = pytest.importorskip("torch")
    from cnndsl.runtime import sample_add

    rng = np.random.default_rng(len(base) + base[0])
    a, b = rng.standard_normal(base), rng.standard_normal(added)
    got = sample_add(torch.tensor(a[None]), torch.tensor(b[None]))[0].numpy()
    np.testing.assert_allclose(got, _darknet_shortcut(a, b), rtol=0, atol=1e-12)
    assert cnndsl.ops.REGISTRY["sample_add"].shape([base, added], {}) == base


def _caffe_pool(x: np.ndarray, kernel: int, stride: int, pad: int, method: str) -> np.ndarray:
    """src/caffe/layers/pooling_layer.cpp (Reshape and Forward_cpu), for one sample."""
    channels, height, width = x.shape
    pooled_h = int(math.ceil((height + 2 * pad - kernel) / stride)) + 1
    pooled_w = int(math.ceil((width + 2 * pad - kernel) / stride)) + 1
    if pad:
        pooled_h -= (pooled_h - 1) * stride >= height + pad
        pooled_w -= (pooled_w - 1) * stride >= width + pad
    out = np.zeros((channels, pooled_h, pooled_w))
    for i in range(pooled_h):
        for j in range(pooled_w):
            hs, ws = i * stride - pad, j * stride - pad
            he, we = min(hs + kernel, height + pad), min(ws + kernel, width + pad)
            size = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, height), min(we, width)
            window = x[:, hs:he, ws:we]
            out[:, i, j] = window.max(axis=(1, 2)) if method == "MAX" else window.sum(axis=(1, 2)) / size
    return out


@pytest.mark.parametrize(
    "kernel, stride, pad, method, hw",
    [
        (3, 2, 0, "MAX", 14),
        (3, 2, 0, "AVE", 13),
        (3, 2, 1, "MAX", 14),
        (3, 2, 1, "AVE", 14),
        (2, 2, 0, "MAX", 7),
        (5, 3, 2, "AVE", 11),
    ],
)
def test_caffe_ceil_pooling_matches_caffes_loop(
    tmp_path: Path, kernel: int, stride: int, pad: int, method: str, hw: int
) -> None:
    torch = pytest.importorskip("torch")
    text = (
        f'name: "P" input: "data" input_dim: 1 input_dim: 2 input_dim: {hw} input_dim: {hw}\n'
        'layer { name: "p" type: "Pooling" bottom: "data" top: "p"\n'
        f"  pooling_param {{ pool: {method} kernel_size: {kernel} stride: {stride} pad: {pad} }} }}\n"
    )
    network = cnndsl.loads(_import_text(tmp_path, "pool.prototxt", text))
    x = np.random.default_rng(kernel + hw).standard_normal((2, hw, hw))
    expected = _caffe_pool(x, kernel, stride, pad, method)
    got = network.to_torch().eval()(torch.tensor(x[None]))[0].numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_caffe_batchnorm_scale_pairs_become_one_bn_and_inplace_layers_continue_the_line(
    tmp_path: Path,
) -> None:
    text = """name: "T"
input: "data"
input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 bias_term: false } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" batch_norm_param { eps: 0.001 } }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "fc" type: "InnerProduct" bottom: "conv1" top: "fc" inner_product_param { num_output: 5 } }
"""
    spec = _import_text(tmp_path, "t.prototxt", text)
    network = cnndsl.loads(spec)
    assert [n.op for n in network.layers] == ["conv", "bn", "relu", "flatten", "linear"]
    assert network.layers[1].args["eps"] == 0.001
    assert "conv1, bn1, scale1, relu1" in spec


def test_legacy_v1_layers_and_angle_brackets(tmp_path: Path) -> None:
    text = """input: "data" input_dim: 1 input_dim: 1 input_dim: 10 input_dim: 10
layers < name: "c" type: CONVOLUTION bottom: "data" top: "c" convolution_param { num_output: 2 kernel_size: 3 } >
layers { name: "r" type: RELU bottom: "c" top: "c" }
"""
    network = cnndsl.loads(_import_text(tmp_path, "v1.prototxt", text))
    assert [n.op for n in network.layers] == ["conv", "relu"]
    assert network.outputs[0].shape == (2, 8, 8)


def test_darknet_stride_x_and_stride_y(tmp_path: Path) -> None:
    """parse_convolutional: stride_x/stride_y below 1 mean `stride`; parse_maxpool takes them as given."""
    conv = "[net]\nwidth=16\nheight=16\nchannels=3\n[convolutional]\nfilters=4\nsize=3\npad=1\nstride=2\n"
    spec = _import_text(tmp_path, "s.cfg", conv + "stride_x=0\nstride_y=1\n")
    assert cnndsl.loads(spec).outputs[0].shape == (4, 16, 8)
    bad = conv + "stride_x=x\n[maxpool]\nsize=2\nstride_y=0\n"
    with pytest.raises(ImportFailure) as failure:
        _import_text(tmp_path, "bad.cfg", bad)
    assert failure.value.render().splitlines()[:2] == [
        f"{tmp_path / 'bad.cfg'}:10 (layer 0 [convolutional]): error: stride_x=x is not an integer",
        f"{tmp_path / 'bad.cfg'}:13 (layer 1 [maxpool]): error: stride_y=0 is outside 1..65536",
    ]


def test_a_darknet_crop_says_what_the_input_must_already_be(tmp_path: Path) -> None:
    """forward_crop_layer at inference: the centre crop, and x -> 2x - 1 unless noadjust=1 (src/crop_layer.c)."""
    cfg = "[net]\nwidth=12\nheight=12\nchannels=3\n[crop]\ncrop_height=8\ncrop_width=8\n{}[avgpool]\n"
    spec = _import_text(tmp_path, "crop.cfg", cfg.format(""))
    assert "-> 8x8 is folded into the input" in spec and "maps each value x to 2x - 1" in spec
    assert cnndsl.loads(spec).inputs[0].shape == (3, 8, 8)
    assert "2x - 1" not in _import_text(tmp_path, "crop.cfg", cfg.format("noadjust=1\n"))


# ----------------------------------------------------------------------- errors, hostile input, CLI ---

BROKEN = {
    "unsupported.cfg": "[net]\nwidth=32\nheight=32\nchannels=3\n[reorg]\nstride=2\n[convolutional]\nfilters=8\n"
    "size=3\nactivation=mish\n[local]\n",
    "bad_reference.cfg": "[net]\nwidth=32\nheight=32\n[convolutional]\nfilters=4\nsize=1\n[route]\nlayers=-3\n"
    "[shortcut]\nfrom=5\n",
    # Options Darknet reads that change what a layer computes and that cnndsl cannot write (docs/import.md).
    "refused_options.cfg": "[net]\nwidth=16\nheight=16\nchannels=3\n"
    "[convolutional]\nfilters=8\nsize=3\npad=1\nantialiasing=1\ncoordconv=1\nsway=1\nbinary=0\n"
    "[convolutional]\nfilters=8\nsize=4\npad=1\ndilation=2\n"
    "[maxpool]\nsize=2\nstride=2\nmaxpool_depth=1\nantialiasing=1\nmaxpool_zero_nonmax=1\n"
    "[route]\nlayers=0,1\ngroups=3\ngroup_id=0\n"
    "[upsample]\nstride=-2\n"
    "[upsample]\nscale=0.5\n"
    "[shortcut]\nfrom=2,0\nalpha=0.5\nbeta=1.0\nweights_normalization=none\n"
    "[softmax]\ntemperature=2\ntree=data/9k.tree\nspatial=1\nnoloss=1\n",
    "bad_numbers.cfg": "[net]\nwidth=32\nheight=32\n[convolutional]\nfilters=99999999999\nsize=x\n",
    "malformed.cfg": "[net\nwidth=32\nthis line has no equals\n",
    "unsupported.prototxt": 'input: "data" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8\n'
    'layer { name: "up" type: "Deconv3D" bottom: "data" top: "up" }\n'
    'layer { name: "e" type: "Eltwise" bottom: "data" bottom: "data" top: "e" eltwise_param { operation: MAX } }\n'
    'layer { name: "x" type: "ReLU" bottom: "nothing" top: "x" }\n',
    "truncated.prototxt": 'input: "data" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8\n'
    'layer { name: "c" type: "Convolution" bottom: "data" top: "c"\n  convolution_param { num_output: 4\n',
    "garbage.prototxt": "\x00\x01 this is @@ not a prototxt {{{\n",
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_files_get_every_problem_located(tmp_path: Path, name: str, golden) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / name
    path.write_text(BROKEN[name])
    with pytest.raises(ImportFailure) as failure:
        import_file(path)
    golden(f"import/{name}.txt", failure.value.render().replace(str(tmp_path) + "/", ""))


def test_hostile_inputs_fail_fast_and_cleanly(tmp_path: Path) -> None:
    cases = {
        "deep.prototxt": "a { " * 100_000 + "}" * 100_000,
        "huge_net.cfg": "[net]\nwidth=100000000\nheight=100000000\n[convolutional]\nfilters=16\nsize=3\n",
        "cycle.cfg": "[net]\nwidth=8\nheight=8\n[route]\nlayers=0\n",
        "empty.cfg": "",
        "many.cfg": "[net]\nwidth=8\nheight=8\n" + "[dropout]\n" * 5000,
        "self.prototxt": 'input: "data" input_dim: 1 input_dim: 1 input_dim: 4 input_dim: 4\n'
        'layer { name: "a" type: "ReLU" bottom: "a" top: "a" }\n',
    }
    for name, text in cases.items():
        path = tmp_path / name
        path.write_text(text)
        start = time.process_time()
        try:
            import_file(path)
        except ImportFailure as failure:
            assert failure.problems and all(p.message for p in failure.problems), name
        else:
            assert name == "many.cfg", f"{name} imported without complaint"
        assert time.process_time() - start < 30, name  # a guard against hangs, not a speed target


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cnndsl", "import", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def test_cli_exit_codes_and_output(tmp_path: Path) -> None:
    good = tmp_path / "tiny.cfg"
    good.write_text(
        "[net]\nwidth=16\nheight=16\nchannels=3\n[convolutional]\nfilters=4\nsize=3\npad=1\n"
        "batch_normalize=1\nactivation=leaky\n[maxpool]\nsize=2\nstride=2\n"
    )
    done = _cli(str(good), "-o", "tiny.cnn", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    network = cnndsl.load(tmp_path / "tiny.cnn")
    assert network.outputs[0].shape == (4, 8, 8)
    printed = _cli(str(good), "--input", "3x32x32", cwd=tmp_path)
    assert printed.returncode == 0 and "image: [3, 32, 32]" in printed.stdout
    bad = tmp_path / "bad.cfg"
    bad.write_text(BROKEN["unsupported.cfg"])
    failed = _cli(str(bad), "-o", "out.cnn", cwd=tmp_path)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert "bad.cfg:5" in failed.stderr and "[reorg]" in failed.stderr and "mish" in failed.stderr
    assert not (tmp_path / "out.cnn").exists()
    partial = _cli(str(bad), "--partial", cwd=tmp_path)
    assert (
        partial.returncode == 1
        and "NOT IMPORTED" in partial.stdout
        and "warning: not imported" in partial.stderr
    )
    unknown = _cli("model.h5", cwd=tmp_path)
    assert unknown.returncode == 2 and "unknown model format" in unknown.stderr
    missing = _cli("missing.cfg", cwd=tmp_path)
    assert missing.returncode == 2 and "cannot read" in missing.stderr
