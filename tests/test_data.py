"""Data sources for training: digits, image folders (with broken files), .npz files (with wrong shapes), the
deterministic split, channel/size adaptation and the on-device augmentation. scikit-learn, Pillow and torch are
the oracles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cnndsl.train.augment import BatchPipeline, channel_stats
from cnndsl.train.data import (
    adapt_array,
    decode_image,
    digits_arrays,
    load_data,
    load_folder,
    load_image_files,
    load_npz,
    split_indices,
)
from cnndsl.train.errors import DataError

# ------------------------------------------------------------------------------------------------ digits ---


def test_digits_equal_scikit_learn() -> None:
    from sklearn.datasets import load_digits

    x, y = digits_arrays()
    bunch = load_digits()
    assert x.shape == (1797, 1, 8, 8)
    np.testing.assert_array_equal(x.reshape(1797, 64), bunch.data.astype(np.float32))
    np.testing.assert_array_equal(y, bunch.target)


def test_digits_adapted_to_lenet_input_and_split_deterministically() -> None:
    first = load_data("digits", (1, 32, 32), val_split=0.2)
    again = load_data("digits", (1, 32, 32), val_split=0.2)
    assert first.x_train.shape[1:] == (1, 32, 32)
    assert len(first.y_train) + len(first.y_val) == 1797
    assert first.classes == [str(i) for i in range(10)]
    np.testing.assert_array_equal(first.y_val, again.y_val)
    np.testing.assert_array_equal(first.x_val, again.x_val)
    assert any("8x8 to 32x32" in note for note in first.notes)
    # Pixel scale 0..16 became 0..255, and the resize is torch's bilinear on the scaled images.
    x, _ = digits_arrays()
    expected = F.interpolate(torch.from_numpy(x * (255 / 16)), size=(32, 32), mode="bilinear").numpy()
    train, val = split_indices(digits_arrays()[1], 0.2)
    np.testing.assert_allclose(first.x_val, expected[val], rtol=1e-6)
    np.testing.assert_allclose(first.x_train, expected[train], rtol=1e-6)


def test_split_is_stratified_disjoint_and_complete() -> None:
    y = np.repeat(np.arange(4), [10, 20, 3, 1])
    train, val = split_indices(y, 0.2)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(y)))
    assert [int((y[val] == c).sum()) for c in range(4)] == [2, 4, 1, 0]  # a lone image stays in training
    assert split_indices(y, 0.0)[1].size == 0


def test_channels_adapted_both_ways() -> None:
    gray = np.arange(2 * 1 * 4 * 4, dtype=np.uint8).reshape(2, 1, 4, 4)
    rgb, notes = adapt_array(gray, (3, 4, 4))
    assert rgb.shape == (2, 3, 4, 4) and all((rgb[:, i] == gray[:, 0]).all() for i in range(3))
    assert "3 times" in notes[0]
    colour = np.random.default_rng(0).integers(0, 256, (2, 3, 5, 5), dtype=np.uint8)
    back, _ = adapt_array(colour, (1, 5, 5))
    # Pillow's convert("L") is the oracle for the luma weights.
    pil = np.stack([np.asarray(Image.fromarray(c.transpose(1, 2, 0)).convert("L")) for c in colour])
    assert np.abs(back[:, 0].astype(int) - pil.astype(int)).max() <= 1
    with pytest.raises(DataError, match="2 channels"):
        adapt_array(np.zeros((1, 2, 4, 4), np.float32), (3, 4, 4))


# ------------------------------------------------------------------------------------------ image folder ---


def _png(path: Path, value: int, size: tuple[int, int] = (10, 12), mode: str = "L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    colour: int | tuple[int, int, int] = value if mode == "L" else (value, 255 - value, value // 2)
    Image.new(mode, size, colour).save(path)


def _folder(root: Path) -> None:
    for label, name in enumerate(["cat", "dog", "eel"]):
        for i in range(5):
            _png(root / name / f"{i}.png", 40 * label + i)


def test_folder_decodes_resizes_splits_and_caches(tmp_path: Path) -> None:
    _folder(tmp_path / "data")
    (tmp_path / "data" / "dog" / "notes.txt").write_text("not an image, not an image extension")
    data = load_folder(tmp_path / "data", (1, 8, 8), 0.2, cache_dir=tmp_path / "cache")
    assert data.classes == ["cat", "dog", "eel"]
    assert data.x_train.dtype == np.uint8 and data.x_train.shape[1:] == (1, 8, 8)
    assert len(data.y_train) == 12 and len(data.y_val) == 3 and sorted(data.y_val.tolist()) == [0, 1, 2]
    assert any("12x10 to 8x8" in note for note in data.notes)
    # Pillow decodes and resizes: a flat image stays flat at its value.
    for x, y in zip(data.x_train, data.y_train, strict=True):
        assert x.min() == x.max() and 40 * y <= x.min() <= 40 * y + 4
    assert len(list((tmp_path / "cache").glob("folder-*.npz"))) == 1
    cached = load_folder(tmp_path / "data", (1, 8, 8), 0.2, cache_dir=tmp_path / "cache")
    assert any("cache" in note for note in cached.notes)
    np.testing.assert_array_equal(cached.x_train, data.x_train)
    # Touching a file changes the key: the folder is decoded again.
    _png(tmp_path / "data" / "cat" / "0.png", 99)
    fresh = load_folder(tmp_path / "data", (1, 8, 8), 0.2, cache_dir=tmp_path / "cache")
    assert not any("cache" in note for note in fresh.notes)
    assert 99 in np.unique(np.concatenate([fresh.x_train, fresh.x_val]))


def test_folder_with_corrupt_image_skips_or_fails(tmp_path: Path) -> None:
    _folder(tmp_path / "data")
    bad = tmp_path / "data" / "dog" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    truncated = tmp_path / "data" / "eel" / "cut.jpg"
    Image.new("RGB", (64, 64), (10, 200, 30)).save(truncated, quality=95)
    truncated.write_bytes(truncated.read_bytes()[:200])
    data = load_folder(tmp_path / "data", (3, 8, 8), 0.2, cache_dir=tmp_path / "c1")
    assert len(data.y_train) + len(data.y_val) == 15
    report = "\n".join(data.warnings)
    assert "skipped 2 unreadable" in report and str(bad) in report and str(truncated) in report
    with pytest.raises(DataError, match="broken.png: cannot read image"):
        load_folder(tmp_path / "data", (3, 8, 8), 0.2, bad_files="error", cache_dir=tmp_path / "c2")


def test_folder_with_train_and_val_subfolders(tmp_path: Path) -> None:
    for part, count in (("train", 4), ("val", 2)):
        for name in ("a", "b"):
            for i in range(count):
                _png(tmp_path / part / name / f"{i}.png", 7, mode="RGB")
    data = load_folder(tmp_path, (3, 6, 6), 0.5, cache_dir=tmp_path / "cache")
    assert (len(data.y_train), len(data.y_val)) == (8, 4)
    assert data.x_train.shape[1:] == (3, 6, 6)
    np.testing.assert_array_equal(data.x_train[0, :, 0, 0], [7, 248, 3])


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such"):
        load_data(str(tmp_path / "missing"), (1, 8, 8))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class subfolders"):
        load_data(str(tmp_path / "empty"), (1, 8, 8))
    (tmp_path / "noimages" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="no image files"):
        load_data(str(tmp_path / "noimages"), (1, 8, 8))
    _folder(tmp_path / "ok")
    with pytest.raises(DataError, match="1 \\(grayscale\\) or 3 \\(RGB\\)"):
        load_folder(tmp_path / "ok", (4, 8, 8), 0.2, cache_dir=tmp_path / "c")


def test_image_files_for_predict(tmp_path: Path) -> None:
    _png(tmp_path / "a.png", 200, mode="RGB")
    images = load_image_files([str(tmp_path / "a.png")], (1, 4, 4), pixel_max=1.0)
    gray = np.asarray(Image.open(tmp_path / "a.png").convert("L"))[0, 0]
    np.testing.assert_allclose(images, np.full((1, 1, 4, 4), gray / 255.0, np.float32))
    array, size = decode_image(tmp_path / "a.png", (3, 4, 4))
    assert array.shape == (3, 4, 4) and size == (12, 10)
    (tmp_path / "bad.png").write_text("nope")
    with pytest.raises(DataError, match="bad.png: cannot read image"):
        load_image_files([str(tmp_path / "bad.png")], (1, 4, 4))


# ------------------------------------------------------------------------------------------------- npz ---


def _images(n: int = 20, c: int = 1, h: int = 6, w: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (n, c, h, w), dtype=np.uint8), np.arange(n) % 4


@pytest.mark.parametrize("layout", ["nchw", "nhwc", "nhw"])
def test_npz_layouts_agree(tmp_path: Path, layout: str) -> None:
    x, y = _images(c=1)
    stored = {"nchw": x, "nhwc": x.transpose(0, 2, 3, 1), "nhw": x[:, 0]}[layout]
    np.savez(tmp_path / "d.npz", x=stored, y=y)
    data = load_npz(tmp_path / "d.npz", (1, 6, 6), 0.25)
    train, val = split_indices(y, 0.25)
    np.testing.assert_array_equal(data.x_train, x[train])
    np.testing.assert_array_equal(data.y_val, y[val])
    assert data.classes == ["0", "1", "2", "3"] and data.pixel_max == 255.0 and not data.notes[:-1]


def test_npz_nhwc_colour_resized_with_names_and_own_val(tmp_path: Path) -> None:
    x, y = _images(c=3, h=8, w=8)
    xv, yv = _images(n=6, c=3, h=8, w=8)
    np.savez(
        tmp_path / "d.npz",
        x=x.transpose(0, 2, 3, 1).astype(np.float32) / 255,
        y=y.astype(np.float64),
        x_val=xv.transpose(0, 2, 3, 1).astype(np.float32) / 255,
        y_val=yv,
        classes=np.array(["a", "b", "c", "d", "e"]),
    )
    data = load_npz(tmp_path / "d.npz", (3, 4, 4), 0.5)
    assert len(data.y_train) == 20 and len(data.y_val) == 6  # x_val given: no split
    assert data.classes == ["a", "b", "c", "d", "e"] and data.pixel_max == 1.0
    expected = F.interpolate(torch.from_numpy(x / 255).float(), size=(4, 4), mode="bilinear", antialias=True)
    np.testing.assert_allclose(data.x_train, expected.numpy(), atol=1e-6)
    assert any("8x8 to 4x4" in note for note in data.notes)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((10, 5)), "y": np.zeros(10, int)}, r"x has shape \(10, 5\); expected images"),
        ({"x": np.zeros((10, 7, 6, 5)), "y": np.zeros(10, int)}, "neither axis 1 \\(NCHW\\) nor axis 3"),
        ({"x": np.zeros((10, 1, 6, 6)), "y": np.zeros(9, int)}, "x has 10 images but y has 9 labels"),
        ({"x": np.zeros((10, 1, 6, 6)), "y": np.zeros((10, 2), int)}, "y has shape \\(10, 2\\)"),
        ({"x": np.zeros((10, 1, 6, 6)), "y": np.full(10, 0.5)}, "integer class indices"),
        ({"x": np.zeros((10, 1, 6, 6)), "y": np.full(10, -1)}, "negative class index"),
        ({"x": np.full((10, 1, 6, 6), np.nan), "y": np.zeros(10, int)}, "NaN or infinite"),
        (
            {"images": np.zeros((10, 1, 6, 6)), "y": np.zeros(10, int)},
            "missing array 'x' \\(found: images, y\\)",
        ),
        (
            {"x": np.zeros((4, 1, 6, 6)), "y": np.arange(4), "classes": np.array(["a"])},
            "'classes' names only 1",
        ),
    ],
)
def test_npz_wrong_content_is_a_clear_error(
    tmp_path: Path, arrays: dict[str, np.ndarray], message: str
) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)  # type: ignore[arg-type]
    with pytest.raises(DataError, match=message):
        load_data(str(tmp_path / "bad.npz"), (1, 6, 6))


def test_npz_unreadable(tmp_path: Path) -> None:
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_data(str(tmp_path / "junk.npz"), (1, 6, 6))
    with pytest.raises(DataError, match="no such file"):
        load_data(str(tmp_path / "none.npz"), (1, 6, 6))
    (tmp_path / "plain.txt").write_text("x")
    with pytest.raises(DataError, match="expected 'digits', an image folder or an .npz"):
        load_data(str(tmp_path / "plain.txt"), (1, 6, 6))
    with pytest.raises(DataError, match="needs an input of shape \\[C, H, W\\]"):
        load_data("digits", (64,))


# -------------------------------------------------------------------------------------- augmentation ---


def _pipeline(augment: list[str], seed: int = 0) -> BatchPipeline:
    generator = torch.Generator().manual_seed(seed)
    return BatchPipeline([10.0], [2.0], augment, device=torch.device("cpu"), generator=generator)


def test_normalization_and_channel_stats() -> None:
    x = torch.rand(50, 3, 4, 4, dtype=torch.float64) * 255
    mean, std = channel_stats(x.float(), chunk=7)
    np.testing.assert_allclose(mean, x.mean(dim=(0, 2, 3)).numpy(), rtol=1e-5)
    np.testing.assert_allclose(
        std, x.permute(1, 0, 2, 3).reshape(3, -1).std(dim=1, unbiased=False), rtol=1e-4
    )
    batch = torch.full((2, 1, 3, 3), 14, dtype=torch.uint8)
    assert torch.equal(_pipeline([])(batch, True), torch.full((2, 1, 3, 3), 2.0))
    assert channel_stats(torch.zeros(4, 1, 2, 2))[1] == [1.0]  # a constant channel is not divided by zero


def test_flip_flips_a_random_subset() -> None:
    x = torch.arange(64 * 5, dtype=torch.float32).reshape(64, 1, 1, 5) + 10
    out = _pipeline(["flip"])(x, True)
    plain = (x - 10) / 2
    flipped = [bool(torch.equal(o, p.flip(2))) for o, p in zip(out, plain, strict=True)]
    kept = [bool(torch.equal(o, p)) for o, p in zip(out, plain, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 10 < sum(flipped) < 54
    assert torch.equal(_pipeline(["flip"])(x, False), plain)  # evaluation is never augmented
    assert torch.equal(out, _pipeline(["flip"])(x, True))  # same generator state, same batch


def test_crop_shifts_within_the_padding() -> None:
    x = torch.rand(32, 2, 9, 9) * 255
    pipeline = BatchPipeline([0.0, 0.0], [1.0, 1.0], ["crop:2"], device=torch.device("cpu"))
    out = pipeline(x, True)
    padded = F.pad(x, (2, 2, 2, 2))
    shifts = set()
    for i in range(32):
        match = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if torch.equal(out[i], padded[i, :, dy : dy + 9, dx : dx + 9])
        ]
        assert match, f"sample {i} is not a window of its padded image"
        shifts.add(match[0])
    assert len(shifts) > 5


def test_cutout_blanks_one_square() -> None:
    x = torch.full((16, 1, 8, 8), 20.0)
    out = _pipeline(["cutout"])(x, True)
    for image in out:
        zero = (image[0] == 0).nonzero()
        assert 0 < len(zero) <= 16
        rows, cols = zero[:, 0], zero[:, 1]
        assert len(zero) == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert set(image.unique().tolist()) <= {0.0, 5.0}
