"""Finding the blocks a person would have written in an imported layer list.

The spec writer first turns each source layer into a statement: a call of a block (a chain of ops that several
layers share, such as conv -> bn -> relu) or a plain chain, applied to a merge of named tensors. This module then
looks for runs of statements that recur with the same structure (the same calls, the same internal wiring, one
input) and differ only in argument values, makes each such run a parametric block whose differing values become
parameters (or expressions of one another, such as ``c * 4``), and writes back-to-back identical calls as ``X * n``.
It repeats on its own output, so stages made of repeated blocks become blocks too. Plain data and text; no torch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..ops import REQUIRED, Shape

MAX_WINDOW = 16
_SHORT = {"channels": "c", "kernel": "k", "features": "f"}
MAX_PARAMS = 6
"""A block with more parameters than this reads worse than the lines it replaces."""
MAX_REJECTED = 16
"""How many runs with too many parameters the search passes over before it stops (it is quadratic per try)."""


def format_value(value: Any) -> str:
    """A Python value as .cnn source: ``true``, ``[1, 2]``, ``0.001``, a bare symbol for a string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        if len(value) == 2 and value[0] == value[1]:
            return format_value(value[0])
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, float):
        text = repr(value)
        return text[:-2] if text.endswith(".0") and "e" not in text else text
    if isinstance(value, str):
        return value
    return str(value)


@dataclass
class BlockDef:
    """A block the writer defines: its signature and its body's text."""

    name: str
    params: list[tuple[str, Any]]
    """(parameter, default or REQUIRED), required ones first."""
    body: list[str] = field(default_factory=list)
    mined: bool = False
    """Made from a recurring run of statements (rather than from one chain of ops)."""
    is_op: bool = False
    """A registry op called directly: ``name`` is the op, ``params`` the arguments given; nothing to define."""

    def definition(self) -> str:
        signature = ", ".join(n if d is REQUIRED else f"{n}={format_value(d)}" for n, d in self.params)
        return f"block {self.name}({signature}) {{\n" + "\n".join(f"    {line}" for line in self.body) + "\n}"

    def call(self, texts: Sequence[str], values: Sequence[Any] | None) -> str:
        """The call with the given argument texts; keyword arguments equal to their default are left out."""
        positional: list[str] = []
        keywords: list[str] = []
        for index, ((name, default), text) in enumerate(zip(self.params, texts, strict=True)):
            if default is REQUIRED:
                positional.append(text)
            elif values is None or values[index] != default:
                keywords.append(f"{name}={text}")
        inner = ", ".join(positional + keywords)
        return f"{self.name}({inner})" if inner else self.name


@dataclass
class Stmt:
    """One statement of a body: ``merge(inputs...) -> call * repeat``, or ``call`` continuing from its input."""

    block: BlockDef | None
    chain: str
    """The plain chain's text when ``block`` is None (may be empty: a merge alone)."""
    values: tuple[Any, ...]
    """The call's arguments, one per block parameter; the last is the repeat count when ``repeat_slot``."""
    merge: str | None
    inputs: tuple[int, ...]
    """Statement indices in the same body; -1 is the body's input."""
    shape: Shape
    label: str
    lines: tuple[int | None, int | None]
    name_hint: str | None = None
    repeat: int = 1
    scopes: dict[str, int] = field(default_factory=dict)
    """How many source layers of each source scope (torch module path) this statement holds."""
    size: int = 1
    """How many source layers this statement holds."""

    def skeleton(self) -> tuple[Any, ...]:
        if self.block is not None and self.block.is_op:
            return (("op", self.block.name, tuple(n for n, _ in self.block.params)), self.merge)
        return (self.block.name if self.block else ("chain", self.chain), self.merge)

    def slot_values(self) -> tuple[Any, ...]:
        return (*self.values, self.repeat)

    def slot_names(self) -> tuple[str, ...]:
        names = tuple(n for n, _ in self.block.params) if self.block else ()
        return (*names, "n")

    def call_text(self, texts: Sequence[str] | None = None) -> str:
        """The call with literal values, or with the given texts (one per slot, the repeat count last)."""
        literal = texts is None
        slot_texts = [format_value(v) for v in self.slot_values()] if texts is None else list(texts)
        if self.block is not None:
            text = self.block.call(
                slot_texts[:-1], self.values if literal else _literal_values(self, slot_texts)
            )
        else:
            text = self.chain
        repeat = slot_texts[-1]
        if repeat != "1" and text:
            text = f"{text} * {repeat}"
        return text


def _literal_values(stmt: Stmt, texts: Sequence[str]) -> list[Any]:
    # A default is left out only where the text is that very literal; a parameter name is always written.
    return [v if format_value(v) == t else object() for v, t in zip(stmt.values, texts, strict=False)]


Namer = Callable[[list[str]], "str | None"]
"""Names a block from the source scope each occurrence is exactly (a module class), or None: a generic name."""


def whole_scope(run: Sequence[Stmt], totals: dict[str, int]) -> str | None:
    """The innermost source scope (module path) that this run holds all of and nothing besides, if any."""
    size = sum(s.size for s in run)
    held = _sum_scopes(run)
    whole = [path for path, count in held.items() if count == size and totals.get(path) == size]
    return max(whole, key=len) if whole else None


def mine_blocks(
    stmts: list[Stmt],
    outputs: list[int],
    taken: set[str],
    namer: Namer | None = None,
    totals: dict[str, int] | None = None,
) -> tuple[list[Stmt], list[int], list[BlockDef]]:
    """Replace recurring runs of statements with calls of new blocks.

    Returns the new statements, the output statements (in the given order, renumbered) and the blocks made."""
    defined: list[BlockDef] = []
    stmts, outputs = collapse_repeats(stmts, outputs)
    rejected: set[tuple[Any, ...]] = set()
    """Runs whose block would read worse than its lines (too many parameters): the next best is tried instead,
    so one such run (EfficientNet's stem followed by a layer) does not end the search."""
    for _ in range(64 + MAX_REJECTED):
        found = _best_run(stmts, outputs, totals or {}, rejected)
        if found is None:
            break
        length, starts, key = found
        block = _make_block(stmts, length, starts, taken, namer, totals or {})
        if block is None:
            if len(rejected) >= MAX_REJECTED:
                break
            rejected.add(key)
            continue
        defined.append(block[0])
        stmts, outputs = _replace(stmts, outputs, length, starts, block)
        stmts, outputs = collapse_repeats(stmts, outputs)
    return stmts, outputs, defined


def _consumers(stmts: list[Stmt]) -> dict[int, list[int]]:
    users: dict[int, list[int]] = {}
    for index, stmt in enumerate(stmts):
        for source in stmt.inputs:
            users.setdefault(source, []).append(index)
    return users


def _window_key(
    stmts: list[Stmt], users: dict[int, list[int]], outputs: list[int], start: int, length: int
) -> tuple[Any, ...] | None:
    entry = start - 1
    end = start + length
    parts = []
    for index in range(start, end):
        stmt = stmts[index]
        if any(not (i == entry or start <= i < index) for i in stmt.inputs):
            return None
        if index < end - 1 and (index in outputs or any(not start <= c < end for c in users.get(index, []))):
            return None
        relative = tuple(-1 if i == entry else i - start for i in stmt.inputs)
        parts.append((stmt.skeleton(), relative))
    # A run must compute something: merges alone or one call repeated are not worth a block.
    return tuple(parts)


def _best_run(
    stmts: list[Stmt], outputs: list[int], totals: dict[str, int], rejected: set[tuple[Any, ...]]
) -> tuple[int, list[int], tuple[Any, ...]] | None:
    users = _consumers(stmts)
    best: tuple[tuple[int, bool, int], int, list[int], tuple[Any, ...]] | None = None
    for length in range(2, min(MAX_WINDOW, len(stmts)) + 1):
        groups: dict[tuple[Any, ...], list[int]] = {}
        for start in range(0, len(stmts) - length + 1):
            key = _window_key(stmts, users, outputs, start, length)
            if key is not None:
                groups.setdefault(key, []).append(start)
        for key, starts in groups.items():
            # Where the source has modules, the occurrences that are exactly one module each are a candidate of
            # their own: a window that also matches across a module boundary once (EfficientNet's stem and first
            # layer look like its later layers) must not hide the layers that are modules.
            aligned_starts = [s for s in starts if totals and whole_scope(stmts[s : s + length], totals)]
            for candidates, aligned in ((aligned_starts, True), (starts, False)):
                if (key, aligned) in rejected:
                    continue
                chosen: list[int] = []
                for start in candidates:
                    if not chosen or start >= chosen[-1] + length:
                        chosen.append(start)
                if len(chosen) < 2:
                    continue
                # Bottom-up, as a person writes blocks: the run that recurs most often first (the residual unit
                # before the stage made of them); of runs that recur equally often, one that is exactly a unit
                # of the source (a module), then the longer.
                gain = len(chosen) * length - (len(chosen) + length + 2)
                if gain <= 0:
                    continue
                whole = aligned or (bool(totals) and len(aligned_starts) == len(starts))
                score = (len(chosen), whole, length)
                if best is None or score > best[0]:
                    best = (score, length, chosen, (key, aligned))
    return None if best is None else (best[1], best[2], best[3])


def _make_block(
    stmts: list[Stmt],
    length: int,
    starts: list[int],
    taken: set[str],
    namer: Namer | None = None,
    totals: dict[str, int] | None = None,
) -> tuple[BlockDef, list[list[str]], list[tuple[Any, ...]]] | None:
    """The block for a recurring run: parameters for the slots that vary, expressions where slots agree."""
    occurrences = [stmts[s : s + length] for s in starts]
    slots: list[tuple[int, int]] = [
        (j, m) for j, stmt in enumerate(occurrences[0]) for m in range(len(stmt.slot_values()))
    ]

    def column(slot: tuple[int, int]) -> list[Any]:
        return [occ[slot[0]].slot_values()[slot[1]] for occ in occurrences]

    params: list[tuple[str, Any, tuple[int, int]]] = []
    texts: dict[tuple[int, int], str] = {}
    for slot in slots:
        values = column(slot)
        if all(v == values[0] for v in values):
            texts[slot] = format_value(values[0])
            continue
        text = _relation(values, [(name, column(origin)) for name, _, origin in params])
        if text is not None:
            texts[slot] = text
            continue
        base = occurrences[0][slot[0]].slot_names()[slot[1]]
        base = _SHORT.get(base, base)
        name, suffix = base, 2
        while name in {p[0] for p in params}:
            name = f"{base}{suffix}"
            suffix += 1
        common, count = Counter(map(_hashable, values)).most_common(1)[0]
        default = REQUIRED if count * 2 <= len(values) or base in ("c", "k", "f") else common
        params.append((name, default, slot))
        texts[slot] = name
    if len(params) > MAX_PARAMS:
        return None
    params.sort(key=lambda p: p[1] is not REQUIRED)
    merges = {s.merge for s in occurrences[0]}
    if any(s.repeat > 1 or (s.block is not None and s.block.mined) for s in occurrences[0]) and not merges - {
        None
    }:
        base = "Stage"
    elif merges & {"add", "sample_add"}:
        base = "Residual"
    elif "concat" in merges:
        base = (
            "Dense"
            if any(-1 in s.inputs and s.merge == "concat" for s in relative_run(occurrences[0], starts[0]))
            else "Branches"
        )
    else:
        base = "Layers"
    scopes = [whole_scope(run, totals or {}) for run in occurrences]
    if namer is not None and all(scopes):
        base = namer([s for s in scopes if s]) or base
    name, suffix = base, 2
    while name in taken:
        name = f"{base}{suffix}"
        suffix += 1
    taken.add(name)
    block = BlockDef(name, [(p[0], p[1]) for p in params], mined=True)
    block.body = _body(relative_run(occurrences[0], starts[0]), texts)
    arguments = [tuple(column(p[2])[k] for p in params) for k in range(len(occurrences))]
    return block, [[t for _, t in sorted(texts.items())]], arguments


def relative_run(run: list[Stmt], start: int) -> list[Stmt]:
    """The run's statements with inputs counted from its start (-1: the run's input)."""
    return [replace(s, inputs=tuple(-1 if i == start - 1 else i - start for i in s.inputs)) for s in run]


def _span_label(first: Stmt, last: Stmt) -> str:
    head = first.label.split(" .. ")[0]
    tail = last.label.split(" .. ")[-1]
    return head if first is last else f"{head} .. {tail}"


def _relation(values: list[Any], earlier: list[tuple[str, list[Any]]]) -> str | None:
    """An expression of an earlier parameter that gives ``values`` in every occurrence, if a simple one does."""
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return None
    for name, others in earlier:
        if not all(isinstance(o, int) and not isinstance(o, bool) and o > 0 for o in others):
            continue
        if values == others:
            return name
        for factor in (2, 4, 8):
            if values == [o * factor for o in others]:
                return f"{name} * {factor}"
            if all(o % factor == 0 for o in others) and values == [o // factor for o in others]:
                return f"{name} / {factor}"
    return None


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _body(run: list[Stmt], texts: dict[tuple[int, int], str]) -> list[str]:
    users = _consumers(run)
    names: dict[int, str] = {-1: "in"}
    for index in range(len(run)):
        follow = users.get(index, [])
        if any(c != index + 1 or run[c].merge is not None or len(run[c].inputs) > 1 for c in follow):
            names[index] = f"t{len(names)}"
    lines = []
    for index, stmt in enumerate(run):
        slot_texts = [texts[(index, m)] for m in range(len(stmt.slot_values()))]
        lines.append(statement_text(stmt, index, names, slot_texts))
    return lines


def statement_text(stmt: Stmt, index: int, names: dict[int, str], texts: Sequence[str] | None = None) -> str:
    """``name = merge(a | b) -> Call(...) * n``: the statement as it is written in its body."""
    call = stmt.call_text(texts)
    if stmt.merge is not None:
        source = f"{stmt.merge}(" + " | ".join(names[i] for i in stmt.inputs) + ")"
        code = f"{source} -> {call}" if call else source
    elif stmt.inputs[0] == index - 1:
        code = call
    else:
        code = f"{names[stmt.inputs[0]]} -> {call}"
    return f"{names[index]} = {code}" if index in names else code


def _replace(
    stmts: list[Stmt],
    outputs: list[int],
    length: int,
    starts: list[int],
    made: tuple[BlockDef, list[list[str]], list[tuple[Any, ...]]],
) -> tuple[list[Stmt], list[int]]:
    block, _, arguments = made
    new: list[Stmt] = []
    mapping: dict[int, int] = {-1: -1}
    position = 0
    occurrence = 0
    while position < len(stmts):
        if occurrence < len(starts) and position == starts[occurrence]:
            run = stmts[position : position + length]
            entry = mapping[position - 1] if position > 0 else -1
            last = run[-1]
            call = Stmt(
                block,
                "",
                arguments[occurrence],
                None,
                (entry,),
                last.shape,
                _span_label(run[0], last),
                (run[0].lines[0], last.lines[1]),
                last.name_hint,
                scopes=_sum_scopes(run),
                size=sum(s.size for s in run),
            )
            for offset in range(length):
                mapping[position + offset] = len(new)
            new.append(call)
            position += length
            occurrence += 1
            continue
        stmt = stmts[position]
        mapping[position] = len(new)
        new.append(replace(stmt, inputs=tuple(mapping[i] for i in stmt.inputs)))
        position += 1
    return new, [mapping[o] for o in outputs]


def collapse_repeats(stmts: list[Stmt], outputs: list[int]) -> tuple[list[Stmt], list[int]]:
    """Write back-to-back identical block calls that only feed each other as one ``Call * n``."""
    users = _consumers(stmts)
    new: list[Stmt] = []
    mapping: dict[int, int] = {-1: -1}
    for index, stmt in enumerate(stmts):
        if new and index > 0 and _continues(stmts, users, outputs, index):
            last = new[-1]
            new[-1] = replace(
                last,
                repeat=last.repeat + stmt.repeat,
                shape=stmt.shape,
                label=_span_label(last, stmt),
                lines=(last.lines[0], stmt.lines[1]),
                name_hint=stmt.name_hint,
                scopes=_sum_scopes([last, stmt]),
                size=last.size + stmt.size,
            )
            mapping[index] = len(new) - 1
            continue
        mapping[index] = len(new)
        new.append(replace(stmt, inputs=tuple(mapping[i] for i in stmt.inputs)))
    return new, [mapping[o] for o in outputs]


def _sum_scopes(stmts: Sequence[Stmt]) -> dict[str, int]:
    total: dict[str, int] = {}
    for stmt in stmts:
        for path, count in stmt.scopes.items():
            total[path] = total.get(path, 0) + count
    return total


def _continues(stmts: list[Stmt], users: dict[int, list[int]], outputs: list[int], index: int) -> bool:
    stmt, before = stmts[index], stmts[index - 1]
    return (
        stmt.block is not None
        and stmt.merge is None
        and before.merge is None
        and stmt.block is before.block
        and stmt.values == before.values
        and stmt.inputs == (index - 1,)
        and before.inputs == ((index - 2),)
        and users.get(index - 1, []) == [index]
        and index - 1 not in outputs
    )
