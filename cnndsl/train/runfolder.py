"""A run folder as a deployable unit: its spec, its weights, its data source and normalization.

``cnndsl train`` writes a folder whose spec always matches its weights: when training replaced the classifier
(the data has another class count than the spec's last ``linear``), the copy of the spec in the folder is
rewritten to say so (:func:`rewrite_classifier`). ``eval``, ``predict``, ``export`` and ``compile`` accept such a
folder where they accept a spec (:func:`open_run`).

Nothing here imports torch: the CLI resolves a folder before it decides whether it needs torch.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..network import Network, Node
from .errors import TrainError

WEIGHT_FILES = ("best.pt", "last.pt")
"""The checkpoint a folder deploys, in order of preference."""

_LINEAR_CALL = re.compile(r"linear\s*\(\s*(?:features\s*=\s*)?(\d+)")


@dataclass
class RunFolder:
    """What a run folder holds, resolved to paths."""

    root: Path
    spec: Path
    """The folder's copy of the spec (rewritten when the classifier was replaced)."""
    weights: Path
    """``best.pt``, else ``last.pt``."""
    config: dict[str, Any] = field(default_factory=dict)
    """``config.json`` (the training settings, plus ``resolved``)."""

    @property
    def network_name(self) -> str | None:
        name = self.config.get("network") or self.config.get("resolved", {}).get("network")
        return str(name) if name else None

    @property
    def data(self) -> str | None:
        """The data source the run trained on, as recorded."""
        value = self.config.get("data")
        return str(value) if value else None


def is_run_folder(path: str | Path) -> bool:
    """A folder holding ``config.json`` (``cnndsl train`` writes it first)."""
    return Path(path).is_dir() and (Path(path) / "config.json").is_file()


def open_run(path: str | Path, what: str = "SPEC") -> RunFolder:
    """Resolve a run folder, or raise :class:`TrainError` naming ``what`` (the positional argument) and the file
    that is missing."""
    root = Path(path)
    config_path = root / "config.json"
    if not config_path.is_file():
        raise TrainError(f"{what} {root}: a folder but not a run folder (no config.json); give a .cnn spec")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise TrainError(f"{what} {root}: config.json is unreadable ({error})") from None
    if not isinstance(config, dict):
        raise TrainError(f"{what} {root}: config.json is not a JSON object")
    spec = _spec_in(root, config)
    if spec is None:
        raise TrainError(f"{what} {root}: the run folder holds no .cnn spec")
    weights = next((root / name for name in WEIGHT_FILES if (root / name).is_file()), None)
    if weights is None:
        raise TrainError(
            f"{what} {root}: the run folder holds no best.pt or last.pt (did the run finish an epoch?)"
        )
    return RunFolder(root, spec, weights, config)


def _spec_in(root: Path, config: dict[str, Any]) -> Path | None:
    named = config.get("spec")
    if isinstance(named, str) and named and (root / Path(named).name).is_file():
        return root / Path(named).name
    found = sorted(root.glob("*.cnn"))
    return found[0] if found else None


def span_text(text: str, node: Node) -> tuple[int, int]:
    """Character offsets (start, end) of ``node``'s span in ``text``, the file it was read from."""
    lines = text.splitlines(keepends=True)
    span = node.span
    start = sum(len(line) for line in lines[: span.line - 1]) + span.column - 1
    end = sum(len(line) for line in lines[: span.end_line - 1]) + span.end_column - 1
    return start, max(start, end)


def rewrite_classifier(text: str, node: Node, count: int) -> str | None:
    """``text`` (the spec file that declares ``node``, a ``linear`` layer) with that layer's output count set to
    ``count``; None when the count is not written there as a literal (a block parameter, say)."""
    start, _ = span_text(text, node)
    found = _LINEAR_CALL.match(text, start)
    if found is None or int(found.group(1)) != node.args.get("features"):
        return None
    return text[: found.start(1)] + str(count) + text[found.end(1) :]


def spec_file_names(network: Network) -> dict[Path, str]:
    """Each file the spec was read from (resolved) -> its name in the run folder: the main file under its own
    name, imports by their path relative to it (or their bare name when they live elsewhere)."""
    names: dict[Path, str] = {}
    if not network.files:
        return names
    main = Path(network.files[0]).resolve()
    for index, name in enumerate(network.files):
        path = Path(name).resolve()
        if index == 0:
            names[path] = path.name
            continue
        try:
            names[path] = str(path.relative_to(main.parent))
        except ValueError:
            names[path] = path.name
    return names


def copy_spec_files(network: Network) -> dict[str, str]:
    """The spec and its imports as {name in the run folder: text}."""
    files: dict[str, str] = {}
    for path, relative in spec_file_names(network).items():
        try:
            files[relative] = path.read_text(encoding="utf-8")
        except OSError:
            continue  # an in-memory spec (loads) has no file to copy
    return files


def classifier_spec_files(
    network: Network, files: dict[str, str], node: Node, count: int
) -> tuple[dict[str, str], str]:
    """The run folder's spec files with the classifier ``node`` given ``count`` outputs, and a log line saying
    so; raises :class:`TrainError` when the spec cannot be rewritten (the run's spec would not match its
    weights). Without spec files (a spec loaded from a string) there is nothing to rewrite."""
    if not files:
        return files, ""
    name = spec_file_names(network).get(Path(node.span.file).resolve())
    new = rewrite_classifier(files[name], node, count) if name in files and name else None
    if new is None or name is None:
        raise TrainError(
            f"the classifier {node.path} ({node.span}) must become linear({count}) to fit the data's classes, "
            f"but its count is not a number written in the spec; write linear({count}) there"
        )
    return {**files, name: new}, (
        f"wrote linear({count}) into the run folder's copy {name}:{node.span.line} (the spec says "
        f"linear({node.args.get('features')})), so the run's spec matches its weights"
    )
