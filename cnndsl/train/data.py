"""Data sources for training: scikit-learn's digits, an image folder, or an ``.npz`` file.

Every source becomes a :class:`DataSet` of NCHW arrays already adapted to the spec's input shape (channels and
size), split into train and validation sets deterministically. Arrays stay in NumPy here; the training loop moves
them to the device once. Pixel values keep their source scale (0..255 for images and digits); the loop normalizes
with per-channel statistics of the training set.

An image folder whose decoded images would exceed the memory budget becomes a :class:`StreamedSet` instead: the
images are decoded once into a cache file of raw uint8 rows (:class:`RowsFile`), and training reads batches of
rows from it in DataLoader workers, so memory does not grow with the data set.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import default_memory_budget, format_size
from .errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")
SPLIT_SEED = 0
"""The train/validation split does not depend on ``--seed``: every run of a data set validates on the same images."""
_MAX_LISTED = 10


@dataclass
class DataSet:
    """Images and labels adapted to one input shape."""

    name: str
    x_train: np.ndarray
    """(N, C, H, W), uint8 or float32, in the source's pixel scale."""
    y_train: np.ndarray
    """(N,) int64 class indices."""
    x_val: np.ndarray
    y_val: np.ndarray
    classes: list[str]
    pixel_max: float = 255.0
    """The value of a white pixel in this data (255 for images, 1.0 for npz data in [0, 1]); ``predict`` scales
    image files to it."""
    notes: list[str] = field(default_factory=list)
    """What was done to the data (resizing, channel changes): the training log prints these."""
    warnings: list[str] = field(default_factory=list)
    """What the user should know (skipped files): printed, and repeated at the end of the run."""
    streamed = False

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def describe(self) -> str:
        c, h, w = self.x_train.shape[1:]
        return (
            f"{self.name}: {len(self.y_train):,} train / {len(self.y_val):,} val images of {c}x{h}x{w}, "
            f"{self.num_classes} classes"
        )


# ------------------------------------------------------------------------------------------ adaptation ---


def _target(shape: Sequence[int]) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise DataError(
            f"the spec's input has shape {list(shape)}; training on images needs an input of shape [C, H, W]"
        )
    c, h, w = (int(d) for d in shape)
    return c, h, w


def _size_text(sizes: set[tuple[int, int]]) -> str:
    if len(sizes) == 1:
        (h, w), *_ = sizes
        return f"{h}x{w}"
    hs = [h for h, _ in sizes]
    ws = [w for _, w in sizes]
    return f"sizes {min(hs)}..{max(hs)} x {min(ws)}..{max(ws)}"


def adapt_array(x: np.ndarray, shape: Sequence[int], what: str = "images") -> tuple[np.ndarray, list[str]]:
    """Adapt NCHW images to ``shape`` = (C, H, W): channels first, then size (bilinear, antialiased when
    shrinking). Returns the new array and notes saying what changed. uint8 stays uint8 (rounded)."""
    c, h, w = _target(shape)
    notes: list[str] = []
    n, c0, h0, w0 = x.shape
    if c0 != c:
        x, note = _adapt_channels(x, c, what)
        notes.append(note)
    if (h0, w0) != (h, w):
        import torch
        import torch.nn.functional as F

        dtype = x.dtype
        tensor = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        shrink = h < h0 or w < w0
        # Resize in chunks: a large data set need not exist twice in float32 at the full size.
        out = np.empty((n, x.shape[1], h, w), dtype=np.float32)
        for start in range(0, n, 4096):
            part = tensor[start : start + 4096]
            out[start : start + 4096] = F.interpolate(
                part, size=(h, w), mode="bilinear", align_corners=False, antialias=shrink
            ).numpy()
        x = np.clip(np.rint(out), 0, 255).astype(np.uint8) if dtype == np.uint8 else out
        notes.append(f"resized {what} from {h0}x{w0} to {h}x{w} (bilinear) to fit the spec's input")
    return x, notes


def _adapt_channels(x: np.ndarray, c: int, what: str) -> tuple[np.ndarray, str]:
    c0 = x.shape[1]
    if c0 == 1:
        return np.repeat(x, c, axis=1), f"repeated the single channel of the {what} {c} times"
    if c0 in (3, 4) and c == 1:
        # ITU-R 601 luma, as Pillow's convert("L") computes it.
        weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)[:, None, None]
        gray = (x[:, :3].astype(np.float32) * weights).sum(axis=1, keepdims=True)
        if x.dtype == np.uint8:
            gray = np.clip(np.rint(gray), 0, 255).astype(np.uint8)
        return gray, f"converted the {what} from {c0} channels to grayscale"
    if c0 == 4 and c == 3:
        return x[:, :3], f"dropped the alpha channel of the {what}"
    raise DataError(f"the {what} have {c0} channels but the spec's input has {c}; no conversion between them")


# -------------------------------------------------------------------------------------------- splitting ---


def split_indices(y: np.ndarray, fraction: float, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, deterministic split: each class gives ``round(fraction * count)`` images to validation (at
    least one when it has two or more and ``fraction > 0``). Returns sorted (train, val) index arrays."""
    rng = np.random.default_rng(seed)
    train: list[np.ndarray] = []
    val: list[np.ndarray] = []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        members = members[rng.permutation(len(members))]
        count = int(round(fraction * len(members)))
        if fraction > 0 and len(members) >= 2:
            count = min(max(count, 1), len(members) - 1)
        val.append(members[:count])
        train.append(members[count:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def _split(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    classes: list[str],
    fraction: float,
    notes: list[str],
    pixel_max: float,
) -> DataSet:
    train, val = split_indices(y, fraction)
    if fraction > 0:
        notes.append(
            f"split {len(y):,} images into train/val ({1 - fraction:.0%}/{fraction:.0%}, stratified, fixed)"
        )
    return DataSet(name, x[train], y[train], x[val], y[val], classes, pixel_max, notes)


# ---------------------------------------------------------------------------------------------- digits ---


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as ((1797, 1, 8, 8) float32 in 0..16, (1797,) int64).

    Reads the CSV that scikit-learn ships directly: importing ``sklearn.datasets`` costs most of a second."""
    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if path is not None and path.is_file():
        table = np.loadtxt(path, delimiter=",", dtype=np.float32)
        images, labels = table[:, :-1], table[:, -1]
    else:  # a future scikit-learn may move the file; the public loader always works
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise DataError("--data digits needs scikit-learn (pip install scikit-learn)") from None
        bunch = load_digits()
        images, labels = bunch.data.astype(np.float32), bunch.target
    return images.reshape(-1, 1, 8, 8), labels.astype(np.int64)


def load_digits(shape: Sequence[int], val_split: float) -> DataSet:
    """The 1,797 8x8 handwritten digits, scaled from 0..16 to 0..255 and adapted to ``shape``."""
    x, y = digits_arrays()
    x = x * (255.0 / 16.0)
    x, notes = adapt_array(x, shape, "digits")
    return _split("digits", x, y, [str(i) for i in range(10)], val_split, notes, 255.0)


# ------------------------------------------------------------------------------------------ image folder ---


def decode_image(path: str | os.PathLike[str], shape: Sequence[int]) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode one image file with Pillow into a (C, H, W) uint8 array of ``shape``; also return its original
    (height, width). Raises ``OSError`` or ``ValueError`` (from Pillow) when the file is not a readable image."""
    from PIL import Image

    c, h, w = _target(shape)
    if c not in (1, 3):
        raise DataError(f"image files give 1 (grayscale) or 3 (RGB) channels; the spec's input has {c}")
    with Image.open(path) as opened:
        opened.load()  # decode now: a truncated file fails here, not later
        size = (opened.height, opened.width)
        image = opened.convert("L" if c == 1 else "RGB")
        if (image.height, image.width) != (h, w):
            image = image.resize((w, h), Image.Resampling.BILINEAR)
        array = np.asarray(image, dtype=np.uint8)
    array = array[None] if c == 1 else array.transpose(2, 0, 1)
    return np.ascontiguousarray(array), size


def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _list_images(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    classes = _class_folders(root)
    files: list[tuple[Path, int]] = []
    for label, folder in enumerate(classes):
        for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
            dirnames.sort()
            for filename in sorted(filenames):
                if filename.lower().endswith(IMAGE_EXTENSIONS) and not filename.startswith("."):
                    files.append((Path(dirpath) / filename, label))
    return [p.name for p in classes], files


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cnndsl"


def _cache_key(root: Path, shape: Sequence[int], files: list[tuple[Path, int]]) -> str:
    digest = hashlib.sha256(f"v1 {root.resolve()} {tuple(shape)}".encode())
    for path, label in files:
        stat = path.stat()
        digest.update(f"\n{path.relative_to(root)} {label} {stat.st_size} {stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:20]


def _decode_files(
    files: list[tuple[Path, int]], shape: Sequence[int], bad_files: str
) -> tuple[np.ndarray, np.ndarray, list[str], set[tuple[int, int]]]:
    c, h, w = _target(shape)
    x = np.empty((len(files), c, h, w), dtype=np.uint8)
    keep = np.ones(len(files), dtype=bool)
    bad: list[str] = []
    sizes: set[tuple[int, int]] = set()
    for i, (path, _) in enumerate(files):
        try:
            x[i], size = decode_image(path, shape)
            sizes.add(size)
        except (OSError, ValueError, SyntaxError) as error:  # Pillow raises all three for broken files
            if bad_files == "error":
                raise DataError(
                    f"{path}: cannot read image: {error} (--bad-files skip skips such files)"
                ) from None
            keep[i] = False
            bad.append(f"{path}: {error}")
    y = np.array([label for _, label in files], dtype=np.int64)
    return x[keep], y[keep], bad, sizes


def load_folder(
    root: str | os.PathLike[str],
    shape: Sequence[int],
    val_split: float,
    *,
    bad_files: str = "skip",
    cache_dir: str | os.PathLike[str] | None = None,
    memory_budget: int | None = None,
) -> DataSet | StreamedSet:
    """An image folder as torchvision's ImageFolder reads it: ``root/<class>/<image>``, classes in sorted order.
    When ``root`` holds ``train/`` and ``val/`` folders of that layout, they are the split.

    Images are decoded once with Pillow (converted to L or RGB and resized to the spec's input) and cached as a
    ``.npz`` under ``cache_dir`` (default ``~/.cache/cnndsl``), keyed by the files' names, sizes and times.
    When the decoded images would exceed ``memory_budget`` bytes (default :func:`default_memory_budget`), they
    are streamed instead (:class:`StreamedSet`)."""
    base = Path(root)
    if not base.is_dir():
        raise DataError(f"--data {root}: no such folder")
    split_folders = (base / "train").is_dir() and (base / "val").is_dir()
    parts = {"train": base / "train", "val": base / "val"} if split_folders else {"all": base}
    listed: dict[str, tuple[list[str], list[tuple[Path, int]]]] = {}
    for part, folder in parts.items():
        classes, files = _list_images(folder)
        if not classes:
            raise DataError(f"{folder}: no class subfolders (expected {folder}/<class>/<image files>)")
        if not files:
            raise DataError(f"{folder}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in its class folders")
        listed[part] = (classes, files)
    classes = listed["train" if split_folders else "all"][0]
    if split_folders and listed["val"][0] != classes:
        raise DataError(f"{base}: train/ and val/ must have the same class folders")

    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    c, h, w = _target(shape)
    count = sum(len(files) for _, files in listed.values())
    decoded = count * c * h * w
    budget = memory_budget if memory_budget is not None else default_memory_budget()
    size_text = f"{format_size(decoded)} decoded ({count:,} images of {c}x{h}x{w} bytes)"
    if decoded > budget:
        return _stream_folder(
            base,
            parts,
            listed,
            classes,
            shape,
            val_split,
            bad_files,
            cache,
            (
                f"streaming the data from a uint8 cache file through DataLoader workers: {size_text} exceed "
                f"--memory-budget {format_size(budget)}"
            ),
        )
    notes: list[str] = [
        f"holding the data in memory: {size_text}, within --memory-budget {format_size(budget)}"
    ]
    warned: list[str] = []
    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for part, (_, files) in listed.items():
        key = _cache_key(parts[part], shape, files)
        cached = cache / f"folder-{key}.npz"
        if cached.is_file():
            with np.load(cached, allow_pickle=False) as stored:
                arrays[part] = (stored["x"], stored["y"])
                bad = [str(b) for b in stored["bad"]]
                sizes_note = str(stored["sizes"])
            notes.append(f"read {parts[part]} from the cache {cached}")
            if bad and bad_files == "error":  # the cache was filled by a run that skipped these files
                raise DataError(
                    f"{bad[0].replace(': ', ': cannot read image: ', 1)} (--bad-files skip skips such files)"
                )
        else:
            x, y, bad, sizes = _decode_files(files, shape, bad_files)
            sizes_note = _size_text(sizes) if sizes else ""
            arrays[part] = (x, y)
            _write_cache(cached, x, y, bad, sizes_note)
        if bad:
            listed_bad = "\n  ".join(bad[:_MAX_LISTED])
            more = f"\n  ... and {len(bad) - _MAX_LISTED} more" if len(bad) > _MAX_LISTED else ""
            warned.append(f"skipped {len(bad)} unreadable image file(s) of --data:\n  {listed_bad}{more}")
        if len(arrays[part][1]) == 0:
            raise DataError(f"{parts[part]}: none of the image files could be read")
        _, h, w = _target(shape)
        if sizes_note and sizes_note != f"{h}x{w}":
            notes.append(f"resized images of {parts[part]} from {sizes_note} to {h}x{w} (bilinear)")
    if split_folders:
        (xt, yt), (xv, yv) = arrays["train"], arrays["val"]
        return DataSet(str(base), xt, yt, xv, yv, classes, 255.0, notes, warned)
    x, y = arrays["all"]
    data = _split(str(base), x, y, classes, val_split, notes, 255.0)
    data.warnings = warned
    return data


def _write_cache(path: Path, x: np.ndarray, y: np.ndarray, bad: list[str], sizes: str) -> None:
    # Best effort: an unwritable cache folder only costs decoding again next time. Written atomically so that
    # concurrent ranks or an interrupted run never leave a half-written cache behind.
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as handle:
            np.savez(handle, x=x, y=y, bad=np.array(bad, dtype=str), sizes=np.array(sizes))
            temp = handle.name
        os.replace(temp, path)
    except OSError:
        pass


# ------------------------------------------------------------------------------------------------- npz ---


def _layout(x: np.ndarray, channels: int, path: str) -> np.ndarray:
    """NCHW, NHWC or NHW -> NCHW, or a clear error."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim != 4:
        raise DataError(
            f"{path}: x has shape {tuple(x.shape)}; expected images as N x C x H x W, N x H x W x C or N x H x W"
        )

    def plausible(c: int) -> bool:
        return c == channels or c in (1, 3, 4)

    first, last = plausible(x.shape[1]), plausible(x.shape[3])
    if first and last:
        # Both readings work: prefer the one giving the spec's channel count, NCHW on a tie.
        return x if x.shape[1] == channels or x.shape[3] != channels else x.transpose(0, 3, 1, 2)
    if first:
        return x
    if last:
        return x.transpose(0, 3, 1, 2)
    raise DataError(
        f"{path}: x has shape {tuple(x.shape)}: neither axis 1 (NCHW) nor axis 3 (NHWC) is a channel axis "
        f"(1, 3, 4 or the spec's {channels} channels)"
    )


def _npz_pair(
    stored: np.lib.npyio.NpzFile, xk: str, yk: str, channels: int, path: str
) -> tuple[np.ndarray, np.ndarray]:
    x, y = stored[xk], stored[yk]
    if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.number)):
        raise DataError(f"{path}: {xk} must hold numbers, not {x.dtype}")
    x = _layout(x, channels, path)
    if y.ndim != 1:
        raise DataError(
            f"{path}: {yk} has shape {tuple(y.shape)}; expected one class index per image, shape (N,)"
        )
    if len(y) != len(x):
        raise DataError(f"{path}: {xk} has {len(x)} images but {yk} has {len(y)} labels")
    integral = np.issubdtype(y.dtype, np.floating) and bool(np.all(np.mod(y, 1) == 0))
    if not np.issubdtype(y.dtype, np.integer) and not integral:
        raise DataError(f"{path}: {yk} must hold integer class indices, not {y.dtype}")
    y = y.astype(np.int64)
    if len(y) and y.min() < 0:
        raise DataError(f"{path}: {yk} has a negative class index ({y.min()})")
    if x.dtype != np.uint8:
        x = x.astype(np.float32)
        if not np.all(np.isfinite(x)):
            raise DataError(f"{path}: {xk} contains NaN or infinite values")
    return x, y


def load_npz(path: str | os.PathLike[str], shape: Sequence[int], val_split: float) -> DataSet:
    """An ``.npz`` with ``x`` (NCHW, NHWC or NHW) and ``y`` (class indices); optional ``x_val``/``y_val`` (the
    validation set, else a stratified split of ``x``) and ``classes`` (names)."""
    name = str(path)
    c, _, _ = _target(shape)
    try:
        stored = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"--data {name}: no such file") from None
    except (OSError, ValueError) as error:
        raise DataError(f"{name}: not a readable .npz file ({error})") from None
    with stored:
        if not hasattr(stored, "files"):
            raise DataError(f"{name}: expected an .npz archive with arrays x and y, found a single array")
        keys = set(stored.files)
        missing = [k for k in ("x", "y") if k not in keys]
        if missing:
            raise DataError(
                f"{name}: missing array {missing[0]!r} (found: {', '.join(sorted(keys)) or 'none'})"
            )
        x, y = _npz_pair(stored, "x", "y", c, name)
        has_val = "x_val" in keys and "y_val" in keys
        if has_val:
            xv, yv = _npz_pair(stored, "x_val", "y_val", c, name)
            if xv.shape[1:] != x.shape[1:]:
                raise DataError(
                    f"{name}: x_val images are {xv.shape[1:]} but x images are {x.shape[1:]} (C, H, W)"
                )
        count = int(max(y.max(initial=-1), yv.max(initial=-1) if has_val else -1)) + 1
        classes = [str(i) for i in range(count)]
        if "classes" in keys:
            names = [str(s) for s in stored["classes"]]
            if len(names) < count:
                raise DataError(f"{name}: labels go up to {count - 1} but 'classes' names only {len(names)}")
            classes = names
    pixel_max = 255.0 if x.dtype == np.uint8 or float(x.max(initial=0)) > 1.0 else 1.0
    x, notes = adapt_array(x, shape)
    if has_val:
        xv, more = adapt_array(xv, shape, "validation images")
        return DataSet(name, x, y, xv, yv, classes, pixel_max, notes + more)
    return _split(name, x, y, classes, val_split, notes, pixel_max)


# ------------------------------------------------------------------------------------------------ entry ---


def load_data(
    source: str,
    shape: Sequence[int],
    *,
    val_split: float = 0.2,
    bad_files: str = "skip",
    cache_dir: str | os.PathLike[str] | None = None,
    memory_budget: int | None = None,
) -> DataSet | StreamedSet:
    """``digits``, a folder, or an ``.npz`` file, adapted to the input ``shape`` (C, H, W). An image folder
    larger than ``memory_budget`` once decoded is streamed (:class:`StreamedSet`); the others are read whole.

    Every :class:`DataError` names ``--data``: the command line prints it as one line, and the user must know
    which argument was at fault."""
    try:
        return _load_data(source, shape, val_split, bad_files, cache_dir, memory_budget)
    except DataError as error:
        if str(error).startswith("--data"):
            raise
        raise DataError(f"--data {error}") from None


def _load_data(
    source: str,
    shape: Sequence[int],
    val_split: float,
    bad_files: str,
    cache_dir: str | os.PathLike[str] | None,
    memory_budget: int | None,
) -> DataSet | StreamedSet:
    if source == "digits":
        return load_digits(shape, val_split)
    if source.lower().endswith(".npz"):
        return load_npz(source, shape, val_split)
    if os.path.isdir(source):
        return load_folder(
            source, shape, val_split, bad_files=bad_files, cache_dir=cache_dir, memory_budget=memory_budget
        )
    if os.path.exists(source):
        raise DataError(f"--data {source}: expected 'digits', an image folder or an .npz file")
    raise DataError(f"--data {source}: no such file or folder (or use --data digits)")


def load_image_files(paths: Sequence[str], shape: Sequence[int], pixel_max: float = 255.0) -> np.ndarray:
    """Image files for ``predict``: (N, C, H, W) float32 in the training data's pixel scale."""
    images = []
    for path in paths:
        try:
            array, _ = decode_image(path, shape)
        except FileNotFoundError:
            raise DataError(f"{path}: no such file") from None
        except (OSError, ValueError, SyntaxError) as error:
            raise DataError(f"{path}: cannot read image: {error}") from None
        images.append(array.astype(np.float32) * (pixel_max / 255.0))
    return np.stack(images)


# -------------------------------------------------------------------------------------------- streaming ---

_STREAM_CHUNK = 256
"""Images decoded per write while building a rows cache: bounds the memory of the build."""


@dataclass
class RowsFile:
    """Images stored as raw uint8 rows of C*H*W bytes in one file; a data set is a selection of its rows."""

    path: Path
    shape: tuple[int, int, int]
    rows: np.ndarray
    """(n,) int64: the file's row of each image of this set, in order."""
    labels: np.ndarray
    """(n,) int64 class indices."""

    def __len__(self) -> int:
        return len(self.rows)

    def read(self, positions: np.ndarray) -> np.ndarray:
        """The images at ``positions`` (indices into this set) as a (b, C, H, W) uint8 array: one ``pread`` per
        image, in file order (the page cache, not this process, holds what was read)."""
        size = int(np.prod(self.shape))
        rows = self.rows[positions]
        order = np.argsort(rows, kind="stable")
        out = np.empty((len(rows), size), dtype=np.uint8)
        descriptor = os.open(self.path, os.O_RDONLY)
        try:
            for slot in order:
                data = os.pread(descriptor, size, int(rows[slot]) * size)
                if len(data) != size:
                    raise DataError(f"{self.path}: the cache file is truncated (delete it to decode again)")
                out[slot] = np.frombuffer(data, dtype=np.uint8)
        finally:
            os.close(descriptor)
        return out.reshape(len(rows), *self.shape)

    def chunks(self, chunk: int) -> Iterable[np.ndarray]:
        """The whole set in order, ``chunk`` images at a time."""
        for start in range(0, len(self.rows), chunk):
            yield self.read(np.arange(start, min(start + chunk, len(self.rows))))


@dataclass
class StreamedSet:
    """An image folder too large to hold: its decoded images stay in a cache file and are read per batch."""

    name: str
    train: RowsFile
    val: RowsFile
    classes: list[str]
    pixel_max: float = 255.0
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    streamed = True

    @property
    def y_train(self) -> np.ndarray:
        return self.train.labels

    @property
    def y_val(self) -> np.ndarray:
        return self.val.labels

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def describe(self) -> str:
        c, h, w = self.train.shape
        return (
            f"{self.name}: {len(self.y_train):,} train / {len(self.y_val):,} val images of {c}x{h}x{w}, "
            f"{self.num_classes} classes (streamed)"
        )


def _build_rows(
    files: list[tuple[Path, int]], shape: Sequence[int], bad_files: str, path: Path
) -> tuple[np.ndarray, list[str], str]:
    """Decode ``files`` into the rows file ``path`` (written whole, then renamed into place), a chunk of images
    at a time. Returns the labels of the images kept, the unreadable files and the original sizes."""
    import json

    c, h, w = _target(shape)
    labels: list[int] = []
    bad: list[str] = []
    sizes: set[tuple[int, int]] = set()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".u8", delete=False) as handle:
        temp = Path(handle.name)
        try:
            for start in range(0, len(files), _STREAM_CHUNK):
                part = files[start : start + _STREAM_CHUNK]
                x, y, part_bad, part_sizes = _decode_files(part, shape, bad_files)
                handle.write(np.ascontiguousarray(x).tobytes())
                labels.extend(int(v) for v in y)
                bad.extend(part_bad)
                sizes |= part_sizes
        except BaseException:
            handle.close()
            temp.unlink(missing_ok=True)
            raise
    sizes_note = _size_text(sizes) if sizes else ""
    meta = {"shape": [c, h, w], "labels": labels, "bad": bad, "sizes": sizes_note}
    meta_temp = temp.with_suffix(".json")
    meta_temp.write_text(json.dumps(meta))
    os.replace(temp, path)
    os.replace(meta_temp, path.with_suffix(".json"))  # written last: its presence marks a complete cache
    return np.array(labels, dtype=np.int64), bad, sizes_note


def _open_rows(
    folder: Path, files: list[tuple[Path, int]], shape: Sequence[int], bad_files: str, cache: Path
) -> tuple[RowsFile, list[str], list[str]]:
    """The rows cache of ``folder`` (built once; keyed like the .npz cache), with notes and the skipped files."""
    import json

    path = cache / f"rows-{_cache_key(folder, shape, files)}.u8"
    meta_path = path.with_suffix(".json")
    notes: list[str] = []
    if meta_path.is_file() and path.is_file():
        meta = json.loads(meta_path.read_text())
        labels, bad, sizes = np.array(meta["labels"], dtype=np.int64), list(meta["bad"]), str(meta["sizes"])
        notes.append(f"read {folder} from the cache {path}")
        if bad and bad_files == "error":  # the cache was built by a run that skipped these files
            raise DataError(
                f"{bad[0].replace(': ', ': cannot read image: ', 1)} (--bad-files skip skips such files)"
            )
    else:
        labels, bad, sizes = _build_rows(files, shape, bad_files, path)
        notes.append(f"decoded {folder} once into the cache {path}")
    if len(labels) == 0:
        raise DataError(f"{folder}: none of the image files could be read")
    _, h, w = _target(shape)
    if sizes and sizes != f"{h}x{w}":
        notes.append(f"resized images of {folder} from {sizes} to {h}x{w} (bilinear)")
    c = _target(shape)[0]
    rows = RowsFile(path, (c, h, w), np.arange(len(labels), dtype=np.int64), labels)
    return rows, notes, bad


def _stream_folder(
    base: Path,
    parts: dict[str, Path],
    listed: dict[str, tuple[list[str], list[tuple[Path, int]]]],
    classes: list[str],
    shape: Sequence[int],
    val_split: float,
    bad_files: str,
    cache: Path,
    why: str,
) -> StreamedSet:
    notes = [why]
    warned: list[str] = []
    opened: dict[str, RowsFile] = {}
    for part, (_, files) in listed.items():
        rows, more, bad = _open_rows(parts[part], files, shape, bad_files, cache)
        opened[part] = rows
        notes.extend(more)
        if bad:
            listed_bad = "\n  ".join(bad[:_MAX_LISTED])
            extra = f"\n  ... and {len(bad) - _MAX_LISTED} more" if len(bad) > _MAX_LISTED else ""
            warned.append(f"skipped {len(bad)} unreadable image file(s) of --data:\n  {listed_bad}{extra}")
    if "all" not in opened:
        return StreamedSet(str(base), opened["train"], opened["val"], classes, 255.0, notes, warned)
    whole = opened["all"]
    train, val = split_indices(whole.labels, val_split)
    if val_split > 0:
        notes.append(
            f"split {len(whole.labels):,} images into train/val ({1 - val_split:.0%}/{val_split:.0%}, stratified, "
            "fixed)"
        )

    def subset(index: np.ndarray) -> RowsFile:
        return RowsFile(whole.path, whole.shape, whole.rows[index], whole.labels[index])

    return StreamedSet(str(base), subset(train), subset(val), classes, 255.0, notes, warned)
