#!/usr/bin/env python3
"""Fuzz the cnndsl front end (parser, elaborator, shape checker) for a long run, and write what it finds.

The invariant every case must keep (docs/fuzzing.md):

* ``cnndsl.loads`` (or ``cnndsl.load`` for raw bytes) returns a checked network, or raises ``cnndsl.SpecError``
  whose diagnostics are all located: a known file, ``line >= 1`` and ``column >= 1`` inside that file's text, and a
  message that is not an "internal error"; rendering them (text and JSON) works;
* never another exception (``RecursionError`` included), never more than 2 s of CPU or 1 GiB for an input under
  100 kB;
* ``cnndsl check`` exits 0 for a network and 1 for a spec error (a sample goes through ``cnndsl.cli.main``
  in-process, a few through a subprocess).

Cases come from five generators: mutations of real specs (``specs/`` plus inline ones covering the whole
language), random token soup from the grammar's vocabulary, random well-formed programs, a catalogue of hostile
inputs (deep nesting, explosive repetition, long lines, huge numbers, odd bytes...) and byte-level corruption.

Usage::

    python bench/fuzz_long.py --cases 100000 --seed 1 --out bench/fuzz_findings
    python bench/fuzz_long.py --atheris -- -runs=100000     # coverage-guided, when atheris is installed

The tests import this file (tests/test_fuzz.py runs a CI-sized sample with the same generators and checker).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import cnndsl  # noqa: E402
from cnndsl import SpecError  # noqa: E402
from cnndsl.diagnostics import Diagnostic  # noqa: E402

TIME_LIMIT_S = 2.0
"""CPU seconds one case may take (the invariant's bound)."""

MEMORY_LIMIT = 1 << 30
"""Bytes one case may allocate (the invariant's bound)."""

MAX_INPUT = 100_000
"""Inputs are kept under this many bytes: the invariant is stated for inputs under 100 kB."""

HANG_S = 30.0
"""Wall-clock seconds after which a case is abandoned and reported as a hang."""

# ------------------------------------------------------------------------------------------- seeds ---

INLINE_SPECS: dict[str, str] = {
    "lenet": """\
# LeNet-5
network LeNet5(image: [1, 32, 32]) {
    conv(6, 5) -> tanh -> avgpool(2)      : [6, 14, 14]
    conv(16, 5) -> tanh -> avgpool(2)     : [16, 5, 5]
    flatten
    linear(120) -> tanh
    linear(84) -> tanh
    linear(10) -> softmax
}
""",
    "resnet": """\
defaults conv(padding=same, bias=false)

block Basic(c, stride=1) {
    add(
        conv(c, 3, stride=stride) -> bn -> relu
        -> conv(c, 3) -> bn
      | shortcut
    )
    relu
}

block Stage(c, n, stride=2) {
    Basic(c, stride=stride)
    Basic(c) * (n - 1)
}

network ResNetToy(image: [3, 32, 32]) {
    conv(16, 3) -> bn -> relu              : [16, 32, 32]
    Stage(16, 2, stride=1)
    Stage(32, 2)                           : [32, 16, 16]
    Stage(64, 2)                           : [64, 8, ?]
    gap -> linear(10)
}
""",
    "inception": """\
block Inception(c1, r3, c3, r5, c5, pp) {
    concat(
        conv(c1, 1) -> relu
      | conv(r3, 1) -> relu -> conv(c3, 3, padding=1) -> relu
      | conv(r5, 1) -> relu -> conv(c5, 5, padding=2) -> relu
      | maxpool(3, stride=1, padding=1) -> conv(pp, 1) -> relu
    )
}

network InceptionToy(image: [3, 32, 32]) {
    conv(32, 3, stride=2, padding=1) -> relu -> lrn(size=5, alpha=0.0001, beta=0.75, k=2)
    Inception(8, 8, 16, 4, 8, 8)           : [40, 16, 16]
    maxpool(3, stride=2, ceil=true)
    Inception(16, 8, 16, 4, 8, 8) -> dropout(0.4)
    adaptive_avgpool([2, 2]) -> flatten -> linear(10, bias=true)
}
""",
    "mobilenet": """\
block dwconv(k, stride=1, m=1) {
    conv(in.c * m, k, stride=stride, groups=in.c, padding=same)
}

block InvRes(c, t, stride=1) {
    conv(in.c * t, 1) -> bn(eps=0.001, momentum=0.01) -> relu6
    dwconv(3, stride=stride) -> bn -> relu6
    conv(c, 1) -> bn
}

block MV2Stage(t, c, n, s) {
    InvRes(c, t, stride=s)
    add(InvRes(c, t) | identity) * (n - 1)
}

network MobileToy(image: [3, 64, 64]) {
    defaults conv(bias=false)
    conv(16, 3, stride=2, padding=1) -> bn -> relu6
    MV2Stage(1, 16, 1, 1)
    MV2Stage(6, 24, 2, 2)
    MV2Stage(6, 32, 3, 2)
    conv(64, 1) -> bn -> silu
    gap -> dropout(p=0.2) -> linear(10)
}
""",
    "fpn": """\
network FPNToy(image: [3, 64, 64]) {
    c3 = conv(32, 3, stride=2, padding=same) -> relu       : [32, 32, 32]
    c4 = conv(64, 3, stride=2, padding=same) -> relu       : [64, 16, 16]
    c5 = conv(128, 3, stride=2, padding=same) -> relu      : [128, 8, 8]
    p5 = c5 -> conv(32, 1)
    p4 = add(c4 -> conv(32, 1) | p5 -> upsample(2))
    p3 = add(c3 -> conv(32, 1) | p4 -> upsample(scale=2, mode=bilinear))
    return p3, p4, p5
}
""",
    "se": """\
block SE(r=4) {
    mul(identity | gap -> linear(in.c // r) -> relu -> linear(in.c) -> sigmoid)
}

network SENet(image: [3, 32, 32], extra: [10]) {
    x = conv(16, [3, 5], stride=[1, 2], padding=[1, 2], dilation=1) -> bn -> leaky_relu(0.1)
    SE(r=2) -> gelu
    y = x -> SE -> maxpool([2, 2], stride=2, padding=0, dilation=1)
    z = extra -> linear(8) -> tanh
    y -> gap -> linear(8) -> softmax
}
""",
    "arith": """\
block Scaled(c, k=3, f=1.5) {
    conv(c * 2 + 1 - 1, k, padding=(k - 1) // 2) -> bn
    conv(c / 2, k % 2 + 1, stride=-(-2)) -> relu
    dropout(f / 10)
}

network Arith(image: [8, 16, 16]) {
    Scaled(in.c)
    Scaled(c=4, k=5, f=0.5) : [2, ?, ?]
    avgpool(2, stride=1, padding=1, ceil=false, count_pad=false)
    flatten -> linear(in.c * 2) -> relu6
}
""",
    "errors": """\
network Broken(image: [3, 32, 32]) {
    conv(16, 3, strid=2) -> relu
    linear(10)
    add(conv(8, 1) | conv(16, 1))
    concat(relu | maxpool(2))
    foo -> bar(1)
    shortcut
    x = relu : [3, 32, 31]
    return x, y
}
""",
    "language_v2": """\
def make_divisible(v, d, low=d) = bump(max(low, int(v + d / 2) // d * d), v, d)
def bump(n, v, d) = n + d if n < 0.9 * v else n
block Down(c) {
    skip = conv(c, 3, padding=1) -> relu
    return skip -> maxpool(2), skip
}
block Up(c, skip) {
    conv_transpose(c, 2, stride=2)
    concat(skip | identity)
}
block Scaled(c, p, use_bn=true) {
    param gamma: [c, 1, 1] = 1e-6
    let mid = make_divisible(c * 1.5, 8)
    conv(mid, 1) -> (bn if use_bn and p >= 0 else identity) -> relu -> conv(c, 1)
    if p > 0.05 { stochastic_depth(p) } else if not use_bn { relu }
    mul(identity | gamma)
}
network V2(image: [3, 32, 32]) {
    x, s = Down(16)
    Scaled(16, p=0.1 * i / 2) * 3 as i
    add(shortcut | conv(32, 3, padding=1) -> bn)
    Up(16, skip=s)
    conv(round(2.5) + min(1, 2), 1)
}
""",
}


def load_seeds(root: Path = ROOT) -> dict[str, str]:
    """Inline specs plus every ``.cnn`` under ``specs/`` (library files included), by name."""
    seeds = dict(INLINE_SPECS)
    for path in sorted((root / "specs").rglob("*.cnn")):
        seeds[str(path.relative_to(root / "specs"))] = path.read_text(encoding="utf-8")
    return seeds


# ------------------------------------------------------------------------------------------ tokens ---

_TOKEN = re.compile(
    r"""(?P<nl>\r?\n)|(?P<ws>[ \t\f\r]+)|(?P<comment>\#[^\n]*)|(?P<string>"[^"\n]*"?)"""
    r"""|(?P<number>(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"""
    r"""|(?P<op>->|//|==|!=|<=|>=|[-+*/%()\[\]{}|,=:.?<>])|(?P<other>.)""",
    re.S,
)


def tokenize(text: str) -> list[str]:
    """Split text into tokens, whitespace and comments included: ``"".join(tokenize(t)) == t``."""
    return [m.group() for m in _TOKEN.finditer(text)]


def _significant(token: str) -> bool:
    return bool(token.strip()) and not token.startswith("#")


KEYWORDS = [
    "network",
    "block",
    "import",
    "defaults",
    "return",
    "shortcut",
    "in",
    "true",
    "false",
    "if",
    "else",
    "and",
    "or",
    "not",
    "as",
    "def",
    "let",
    "param",
    "min",
    "max",
    "round",
    "int",
]
PUNCTUATION = [
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    "=",
    ":",
    "|",
    "->",
    ".",
    "?",
    "+",
    "-",
    "*",
    "/",
    "//",
    "%",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
]
SYMBOLS = ["same", "valid", "nearest", "bilinear"]
ATTRS = ["in.c", "in.h", "in.w", "x.c", "in.q"]


def _vocabulary() -> tuple[list[str], list[str]]:
    """(every token a spec may contain, op and parameter names) from the grammar and the op registry."""
    from cnndsl import ops

    names = sorted({*ops.REGISTRY, *(p.name for op in ops.REGISTRY.values() for p in op.params)})
    words = [
        *KEYWORDS,
        *PUNCTUATION,
        *SYMBOLS,
        *names,
        *ATTRS,
        "x",
        "y",
        "B",
        "Net",
        "0",
        "1",
        "3",
        "64",
        "0.5",
        "1e-5",
        '"lib/resnet.cnn"',
        '"x"',
        "\n",
        "#c\n",
    ]
    return words, names


VOCAB, NAMES = _vocabulary()

HOSTILE_NUMBERS = [
    "0",
    "-1",
    "-0",
    "00",
    "007",
    "1.",
    ".5",
    "0.5",
    "1e308",
    "1e309",
    "1e-400",
    "1e5",
    "2147483648",
    "4294967297",
    "9007199254740992",
    "9007199254740993",
    "99999999999999999999",
    "9" * 5000,
    "1" + "0" * 20000,
    '"3"',
    "true",
    "nan",
    "inf",
    "[1, 2]",
    "[]",
    "?",
    "in.c",
    "(-3)",
    "3 // 0",
    "3 % 0",
    "1 / 3",
]

HOSTILE_NAMES = [
    "x",
    "in",
    "shortcut",
    "identity",
    "conv",
    "add",
    "true",
    "same",
    "network",
    "block",
    "class",
    "def",
    "None",
    "self",
    "torch",
    "__import__",
    "_",
    "A" * 300,
    "B",
]

# --------------------------------------------------------------------------------------- mutations ---


def _pick_significant(rng: random.Random, tokens: list[str]) -> int | None:
    indices = [i for i, t in enumerate(tokens) if _significant(t)]
    return rng.choice(indices) if indices else None


def _m_delete(rng: random.Random, tokens: list[str]) -> None:
    i = _pick_significant(rng, tokens)
    if i is not None:
        del tokens[i : i + rng.choice([1, 1, 1, 2, 3])]


def _m_duplicate(rng: random.Random, tokens: list[str]) -> None:
    i = _pick_significant(rng, tokens)
    if i is not None:
        tokens.insert(i, tokens[i] * rng.choice([1, 1, 2]))


def _m_swap(rng: random.Random, tokens: list[str]) -> None:
    i, j = _pick_significant(rng, tokens), _pick_significant(rng, tokens)
    if i is not None and j is not None:
        tokens[i], tokens[j] = tokens[j], tokens[i]


def _m_insert(rng: random.Random, tokens: list[str]) -> None:
    tokens.insert(
        rng.randrange(len(tokens) + 1), rng.choice([" ", ""]) + rng.choice(VOCAB) + rng.choice([" ", ""])
    )


def _m_number(rng: random.Random, tokens: list[str]) -> None:
    numbers = [i for i, t in enumerate(tokens) if t[:1].isdigit() or (t[:1] == "." and t[1:2].isdigit())]
    if numbers:
        tokens[rng.choice(numbers)] = rng.choice(HOSTILE_NUMBERS)


def _m_name(rng: random.Random, tokens: list[str]) -> None:
    names = [i for i, t in enumerate(tokens) if t[:1].isalpha() or t[:1] == "_"]
    if names:
        tokens[rng.choice(names)] = rng.choice([*HOSTILE_NAMES, *NAMES, *SYMBOLS])


def _m_string(rng: random.Random, tokens: list[str]) -> None:
    i = _pick_significant(rng, tokens)
    if i is not None:
        tokens[i] = rng.choice(['"x"', '""', '"same"', '"\\"', "'a'", '"' + "s" * 200 + '"', '"unterminated'])


def _m_lines(rng: random.Random, tokens: list[str]) -> None:
    lines = "".join(tokens).split("\n")
    if len(lines) < 2:
        return
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    action = rng.choice(["delete", "duplicate", "swap", "join"])
    if action == "delete":
        del lines[i]
    elif action == "duplicate":
        lines.insert(i, lines[j])
    elif action == "swap":
        lines[i], lines[j] = lines[j], lines[i]
    elif i + 1 < len(lines):
        lines[i : i + 2] = [lines[i] + rng.choice([" ", " -> ", " | ", ", "]) + lines[i + 1]]
    tokens[:] = tokenize("\n".join(lines))


def _m_repeat(rng: random.Random, tokens: list[str]) -> None:
    spots = [i for i, t in enumerate(tokens) if t in (")", "relu", "bn", "identity") or t[:1].isupper()]
    if spots:
        count = rng.choice(
            ["0", "1", "2", "3", "-1", "1000", "100000", "10 ** 6", "(2 * 500)", "n", "in.c", "1.5"]
        )
        tokens.insert(rng.choice(spots) + 1, f" * {count}")


def _m_nest(rng: random.Random, tokens: list[str]) -> None:
    i = _pick_significant(rng, tokens)
    if i is None:
        return
    depth = rng.choice([1, 2, 5, 50, 99, 100, 101, 150])
    opener, closer = rng.choice(
        [("(", ")"), ("[", "]"), ("add(", " | identity)"), ("-", ""), ("1 + ", ""), ("(", "")]
    )
    tokens[i] = opener * depth + tokens[i] + closer * depth


def _m_brackets(rng: random.Random, tokens: list[str]) -> None:
    brackets = [i for i, t in enumerate(tokens) if t in "()[]{}" and t]
    if brackets:
        i = rng.choice(brackets)
        tokens[i] = rng.choice(["", "(", ")", "[", "]", "{", "}", tokens[i] * 2])


def _m_splice(rng: random.Random, tokens: list[str]) -> None:
    other = tokenize(rng.choice(list(INLINE_SPECS.values())))
    a = rng.randrange(len(other))
    b = min(len(other), a + rng.randrange(1, 40))
    tokens[rng.randrange(len(tokens) + 1) : 0] = other[a:b]


def _m_chars(rng: random.Random, tokens: list[str]) -> None:
    text = "".join(tokens)
    position = rng.randrange(len(text) + 1)
    odd = rng.choice(
        ["\x00", "\x0b", "\x0c", "\r", "\t", "\u2028", "\ufeff", "\u200b", "\x1b[31m", "é", "\\\n", "€"]
    )
    tokens[:] = tokenize(text[:position] + odd + text[position:])


def _m_long(rng: random.Random, tokens: list[str]) -> None:
    i = _pick_significant(rng, tokens)
    if i is not None:
        size = len("".join(tokens))
        repeat = max(
            1, min((MAX_INPUT - size) // max(1, len(tokens[i]) + 4), rng.choice([10, 100, 1000, 20000]))
        )
        tokens[i] = rng.choice([" -> ", " | ", ", ", " "]).join([tokens[i]] * repeat)


MUTATORS: dict[str, Callable[[random.Random, list[str]], None]] = {
    "delete": _m_delete,
    "duplicate": _m_duplicate,
    "swap": _m_swap,
    "insert": _m_insert,
    "number": _m_number,
    "name": _m_name,
    "string": _m_string,
    "lines": _m_lines,
    "repeat": _m_repeat,
    "nest": _m_nest,
    "brackets": _m_brackets,
    "splice": _m_splice,
    "chars": _m_chars,
    "long": _m_long,
}


def mutate(rng: random.Random, text: str, rounds: int | None = None) -> str:
    """Apply 1 to 4 random token-level mutations (kept under :data:`MAX_INPUT` bytes)."""
    tokens = tokenize(text)
    for _ in range(rounds if rounds is not None else rng.choice([1, 1, 1, 2, 2, 3, 4])):
        MUTATORS[rng.choice(list(MUTATORS))](rng, tokens)
    return _cap("".join(tokens))


def _cap(text: str) -> str:
    while len(text.encode("utf-8", "surrogatepass")) >= MAX_INPUT:
        text = text[: len(text) * 3 // 4]
    return text


# ------------------------------------------------------------------------------------------- soups ---


def token_soup(rng: random.Random) -> str:
    """A random sequence of tokens from the grammar's vocabulary, sometimes framed as a network body."""
    count = rng.choice([1, 3, 10, 30, 100, 300])
    body = "".join(rng.choice(VOCAB) + rng.choice([" ", " ", "", "\n"]) for _ in range(count))
    if rng.random() < 0.5:
        return f"network N(x: [3, 16, 16]) {{\n{body}\n}}\n"
    return body


# -------------------------------------------------------------------------------------- structured ---


@dataclass
class _Context:
    params: list[str] = field(default_factory=list)
    blocks: dict[str, list[str]] = field(default_factory=dict)
    tensors: list[str] = field(default_factory=list)
    in_block: bool = False


def _value(rng: random.Random, ctx: _Context, kind: str = "int") -> str:
    if rng.random() < 0.003:
        return rng.choice(HOSTILE_NUMBERS)
    if ctx.params and rng.random() < 0.25:
        base = rng.choice(ctx.params)
        return rng.choice([base, f"{base} * 2", f"({base} + 1) // 2", f"{base} - 1"])
    if kind == "int" and rng.random() < 0.1:
        return rng.choice(["in.c", "in.c // 2", "in.c * 2", "in.h", "in.w // 2"])
    if kind == "pair" and rng.random() < 0.2:
        return f"[{rng.randint(1, 3)}, {rng.randint(1, 3)}]"
    if kind == "padding":
        return rng.choice(["same", "valid", "0", "1", "[1, 0]", "2"])
    if kind == "float":
        return rng.choice(["0.1", "0.5", "1e-5", "0", "0.99"])
    if kind == "bool":
        return rng.choice(["true", "false"])
    if kind == "choice":
        return rng.choice(["nearest", "bilinear"])
    return str(rng.choice([1, 1, 2, 2, 3, 4, 8, 16, 32]))


def _op_call(rng: random.Random, ctx: _Context) -> str:
    from cnndsl import ops

    # Ops that flatten come rarely, so most chains stay [C, H, W] and reach deeper checks.
    flat = ("gap", "flatten", "linear")
    names = [n for n, op in ops.REGISTRY.items() if not op.variadic and (n not in flat or rng.random() < 0.1)]
    name = rng.choice(names)
    op = ops.REGISTRY[name]
    parts: list[str] = []
    keywords = False
    for position, param in enumerate(op.params):
        if param.required or rng.random() < 0.3:
            value = _value(rng, ctx, param.kind)
            keywords = keywords or not param.required or rng.random() < 0.2 or position > len(parts)
            parts.append(f"{param.name}={value}" if keywords else value)
    if rng.random() < 0.02:
        parts.append(f"{rng.choice(['strid', 'kernal', 'p', 'x'])}=1")
    if not parts and rng.random() < 0.5:
        return name
    return f"{name}({', '.join(parts)})"


_KEEP_SHAPE = [
    "bn",
    "relu",
    "identity",
    "sigmoid",
    "dropout(0.1)",
    "conv(in.c, 3, padding=same)",
    "conv(in.c, 1)",
]
_CONCAT_BRANCHES = ["conv(8, 1)", "conv(4, 3, padding=1)", "maxpool(3, stride=1, padding=1)", "relu", "bn"]


def _layer(rng: random.Random, ctx: _Context, depth: int) -> str:
    roll = rng.random()
    if roll < 0.55 or depth > 2:
        item = _op_call(rng, ctx)
    elif roll < 0.7 and ctx.blocks:
        name = rng.choice(list(ctx.blocks))
        args = [_value(rng, ctx) for _ in ctx.blocks[name] if rng.random() < 0.8]
        item = f"{name}({', '.join(args)})" if args or rng.random() < 0.5 else name
    elif roll < 0.9:
        merge = rng.choice(["add", "add", "concat", "mul"])
        if rng.random() < 0.7:  # branches that agree in shape, so the merge itself is checked, not refused
            pool = _CONCAT_BRANCHES if merge == "concat" else _KEEP_SHAPE
            branches = [
                " -> ".join(rng.choice(pool) for _ in range(rng.choice([1, 2, 3])))
                for _ in range(rng.choice([2, 2, 3]))
            ]
        else:
            branches = [_chain(rng, ctx, depth + 1) for _ in range(rng.choice([2, 2, 3]))]
        if merge == "add" and rng.random() < 0.5:
            branches[-1] = "shortcut"
        elif rng.random() < 0.2:
            branches[-1] = "identity"
        item = f"{merge}({' | '.join(branches)})"
    else:
        item = f"({_chain(rng, ctx, depth + 1)})"
    if rng.random() < 0.12:
        item = f"{item} * {rng.choice(['0', '1', '2', '3', 'n' if 'n' in ctx.params else '2'])}"
    return item


def _chain(rng: random.Random, ctx: _Context, depth: int) -> str:
    items = [_layer(rng, ctx, depth) for _ in range(rng.choice([1, 1, 2, 3]))]
    if ctx.tensors and rng.random() < 0.2:
        items.insert(0, rng.choice(ctx.tensors))
    elif ctx.in_block and rng.random() < 0.05:
        items.insert(0, "in")
    return " -> ".join(items)


def _body(rng: random.Random, ctx: _Context, network: bool) -> list[str]:
    lines: list[str] = []
    for _ in range(rng.choice([1, 2, 3, 4, 6])):
        roll = rng.random()
        if roll < 0.05:
            lines.append(
                f"defaults conv(bias={_value(rng, ctx, 'bool')}, padding={_value(rng, ctx, 'padding')})"
            )
            continue
        chain = _chain(rng, ctx, 0)
        if rng.random() < 0.15:
            dims = [
                rng.choice(["?", "?", str(rng.choice([1, 3, 8, 16, 32]))])
                for _ in range(rng.choice([1, 3, 3]))
            ]
            chain += f" : [{', '.join(dims)}]"
        if roll < 0.3:
            name = f"t{len(ctx.tensors)}"
            lines.append(f"{name} = {chain}")
            ctx.tensors.append(name)
        else:
            lines.append(chain)
    if network and ctx.tensors and rng.random() < 0.3:
        lines.append("return " + ", ".join(rng.sample(ctx.tensors, rng.randint(1, len(ctx.tensors)))))
    return lines


def structured(rng: random.Random) -> str:
    """A random program that mostly parses: blocks with parameters, defaults, merges, repetition, named tensors."""
    out: list[str] = []
    ctx = _Context()
    if rng.random() < 0.1:
        out.append('import "lib/resnet.cnn"')
        ctx.blocks.update({"Basic": ["c", "stride"], "BasicStage": ["c", "n", "stride"]})
    if rng.random() < 0.15:
        out.append(f"defaults conv(padding={_value(rng, ctx, 'padding')})")
    for index in range(rng.choice([0, 0, 1, 2, 3])):
        params = rng.sample(["c", "k", "n", "s", "t"], rng.randint(0, 3))
        inner = _Context(params=params, blocks=dict(ctx.blocks), in_block=True)
        if rng.random() < 0.05:  # recursion, direct or through a later block
            inner.blocks[f"B{index}"] = params
        header = ", ".join(p if rng.random() < 0.7 else f"{p}={_value(rng, ctx)}" for p in params)
        out.append(f"block B{index}({header}) {{")
        out += ["    " + line for line in _body(rng, inner, network=False)]
        out.append("}")
        ctx.blocks[f"B{index}"] = params
    inputs = ["image: [3, 32, 32]"] if rng.random() < 0.8 else [rng.choice(["image: [3, 8, 8]", "v: [10]"])]
    if rng.random() < 0.1:
        inputs.append("extra: [16]")
        ctx.tensors.append("extra")
    ctx.tensors.append(inputs[0].split(":")[0])
    out.append(f"network Net({', '.join(inputs)}) {{")
    out += ["    " + line for line in _body(rng, ctx, network=True)]
    if rng.random() < 0.5:
        out.insert(len(out) - (out[-1].startswith("    return")), "    gap -> linear(10)")
    out.append("}")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------- hostile ---

H = "network N(x: [3, 32, 32]) {\n"


def _blocks_chain(levels: int, leaf: str, fan: int = 1, name: str = "B") -> str:
    calls = lambda i: "\n".join([f"    {name}{i - 1}"] * fan)  # noqa: E731
    text = f"block {name}0() {{ {leaf} }}\n"
    text += "".join(f"block {name}{i}() {{\n{calls(i)}\n}}\n" for i in range(1, levels + 1))
    return text + H + f"    {name}{levels}\n}}\n"


def _hostile_catalogue() -> dict[str, Callable[[random.Random], str]]:
    r = lambda a, b: lambda rng: rng.choice([a, b, rng.randint(a, b)])  # noqa: E731
    depth = r(90, 110)
    big = r(1000, 40000)
    return {
        "empty": lambda rng: rng.choice(
            ["", " ", "\n", "\n" * 5000, "# only a comment", "\ufeff", "\r\n" * 3]
        ),
        "deep_parens": lambda rng: H + "conv(" + "(" * depth(rng) + "4" + ")" * depth(rng) + ", 3)\n}",
        "deep_parens_huge": lambda rng: H + "conv(" + "(" * big(rng) + "4)\n}",
        "deep_lists": lambda rng: H + "conv(4, " + "[" * depth(rng) + "3" + "]" * depth(rng) + ")\n}",
        "deep_merges": lambda rng: H + "add(relu | " * depth(rng) + "relu" + ")" * depth(rng) + "\n}",
        "deep_groups": lambda rng: H + "(" * depth(rng) + "relu" + ")" * depth(rng) + " * 2\n}",
        "deep_calls_in_values": lambda rng: (
            H + "conv(" + "conv(" * depth(rng) + "1" + ")" * depth(rng) + ", 3)\n}"
        ),
        "deep_minus": lambda rng: (
            H + "conv(" + "-" * rng.choice([50, 99, 100, 101, 5000, 90000]) + "4, 3)\n}"
        ),
        "long_arith": lambda rng: (
            H + "conv(1" + rng.choice(["+1", "*1", "-0", "//1", "%7"]) * big(rng) + ", 3)\n}"
        ),
        "nested_arith": lambda rng: (
            H
            + "conv("
            + "(1 + " * rng.choice([30, 50, 60])
            + "1"
            + " + 1)" * rng.choice([30, 50, 60])
            + ", 3)\n}"
        ),
        "deep_blocks": lambda rng: _blocks_chain(rng.choice([10, 63, 64, 65, 200, 2000]), "relu"),
        "deep_blocks_branches": lambda rng: _blocks_chain(60, "add(" * 90 + "relu" + " | relu)" * 90),
        "self_recursion": lambda rng: "block A(n) { relu -> A(n - 1) }\n" + H + "A(3)\n}",
        "mutual_recursion": lambda rng: "block A() { B }\nblock B() { relu -> A * 2 }\n" + H + "A\n}",
        "explosive_repetition": lambda rng: (
            H
            + "(" * 5
            + "relu"
            + "".join(f" * {rng.choice([10, 100, 1000, 10**6])})" for _ in range(5))
            + "\n}"
        ),
        "repetition_exponent": lambda rng: (
            H + f"relu * {rng.choice(['10 ** 9', '2 * 10 * 10 * 10', '9007199254740992', '99999999999'])}\n}}"
        ),
        "billion_laughs": lambda rng: _blocks_chain(
            rng.choice([6, 9, 20]), rng.choice(["relu", "", "identity"]), fan=10
        ),
        "laughs_fan2": lambda rng: _blocks_chain(rng.choice([16, 20, 40]), "relu", fan=2),
        "zero_node_repetition": lambda rng: (
            H
            + rng.choice(["identity", "(relu * 0)", "E", "(identity -> identity)"])
            + f" * {rng.choice([10**6, 10**12, 2**53])}\n}}"
        ),
        "growing_repetition": lambda rng: (
            "block G() { conv(in.c + 1, 1) -> relu * in.c }\n" + H + "G * 2000\n}"
        ),
        "long_line": lambda rng: H + "relu" + " -> relu" * rng.choice([1000, 12000]) + "\n}",
        "long_comment": lambda rng: "#" + "x" * 99000 + "\n" + H + "relu\n}",
        "long_name": lambda rng: H + "A" * 99000 + "\n}",
        "long_number": lambda rng: H + "conv(" + "9" * 99000 + ", 3)\n}",
        "long_float": lambda rng: H + "conv(4, 3, padding=" + "9" * 50000 + ".5)\n}",
        "long_string": lambda rng: H + 'conv("' + "s" * 99000 + '", 3)\n}',
        "many_statements": lambda rng: H + rng.choice(["relu\n", "bn\n", "foo\n", "conv(\n"]) * 19000 + "}",
        "many_blocks": lambda rng: "".join(f"block B{i}() {{ }}\n" for i in range(5000)) + H + "Bx1\nBy2\n}",
        "many_duplicate_blocks": lambda rng: "block A() { }\n" * 7000 + H + "}",
        "many_args": lambda rng: H + "conv(" + ", ".join(["1"] * 40000) + ")\n}",
        "many_kwargs": lambda rng: H + "conv(4, 3, " + ", ".join(f"k{i}=1" for i in range(11000)) + ")\n}",
        "many_block_params": lambda rng: (
            "block B("
            + ", ".join(f"p{i}" for i in range(5000))
            + ") { relu }\n"
            + H
            + "B("
            + ", ".join(f"p{i}=1" for i in range(5000))
            + ") * 3\n}"
        ),
        "many_branches": lambda rng: (
            H + rng.choice(["add", "concat", "mul"]) + "(" + " | ".join(["relu"] * 14000) + ")\n}"
        ),
        "many_inputs": lambda rng: (
            "network N(" + ", ".join(f"i{i}: [3, 8, 8]" for i in range(5000)) + ") { relu }"
        ),
        "many_outputs": lambda rng: (
            H
            + "".join(f"t{i} = relu\n" for i in range(4000))
            + "return "
            + ", ".join(f"t{i}" for i in range(4000))
            + "\n}"
        ),
        "huge_list_argument": lambda rng: (
            "block B(p) { relu }\n" + H + "B([" + ",".join(["0"] * 30000) + "]) * 300\n}"
        ),
        "long_block_names": lambda rng: (
            f"block {'A' * 45000}() {{ relu * 20000 }}\n" + H + "A" * 45000 + "\n}"
        ),
        "deep_long_block_names": lambda rng: _blocks_chain(60, "relu * 3000", name="B" * 700),
        "huge_shapes": lambda rng: rng.choice(
            [
                "network N(x: [9007199254740992, 9007199254740992, 9007199254740992]) { flatten -> linear(2) }",
                H + "upsample(9007199254740992) * 3000\n}",
                H + "upsample(1000) * 30 -> flatten\n}",
                "network N(x: [0, 0, 0]) { relu }",
                "network N(x: [-3, 8, 8]) { relu }",
                "network N(x: [3.5]) { relu }",
                "network N(x: [1, 1, 1, 1]) { relu }",
                "network N(x: 3) { relu }",
            ]
        ),
        "odd_bytes_text": lambda rng: (
            H
            + rng.choice(
                ["\x00", "\x0b", "\x1b[2J", "\u2028", "\ufeff", "\u202e", "\udcff", "\ud800", "\x7f", "\r"]
            )
            + "relu\n}"
        ),
        "names": lambda rng: rng.choice(
            [
                H + "in = relu\n}",
                H + "true = relu\n}",
                H + "shortcut = relu\n}",
                H + "x = relu\n}",
                H + "relu -> x\n}",
                H + "x.c\n}",
                H + "in.q\n}",
                H + "conv(x, 3)\n}",
                "block conv() { relu }\n" + H + "conv\n}",
                "block x() { relu }\n" + H + "x\n}",
                "block B(c, c) { relu }\n" + H + "B(1, 2)\n}",
                "network N(x: [3, 8, 8], x: [3, 8, 8]) { relu }",
                "network N(relu: [3, 8, 8]) { relu }",
                H + "return\n}",
                H + "return x, x, x\n}",
                H + "return relu\nrelu\n}",
                "block R() { relu\n return in, in }\n" + H + "R\n}",
            ]
        ),
        "imports": lambda rng: rng.choice(
            [
                'import "."\n' + H + "relu\n}",
                'import "/etc/passwd"\n' + H + "relu\n}",
                'import "../../../etc/passwd"\n' + H + "relu\n}",
                'import "nope.cnn"\n' + H + "relu\n}",
                'import ""\n' + H + "relu\n}",
                'import "lib/resnet.cnn"\nimport "lib/resnet.cnn"\n' + H + "Basic(3)\n}",
                'import "\x1b[31m.cnn"\n' + H + "relu\n}",
                'import "lib"\n' + H + "relu\n}",
            ]
        ),
        "syntax_edges": lambda rng: rng.choice(
            [
                "network",
                "network N",
                "network N(",
                "network N(x: [3, 8, 8]) {",
                "network N(x: [3, 8, 8]) { relu",
                "network N(x: [3, 8, 8]) { relu }}",
                "}",
                ")))",
                '"unterminated',
                "network N(x: [3, 8, 8]) { conv(4, 3 }",
                "network N(x: [3, 8, 8]) { conv(4, 3]) }",
                "network N(x: [3, 8, 8]) { -> relu }",
                "network N(x: [3, 8, 8]) { relu -> }",
                "network N(x: [3, 8, 8]) { relu | relu }",
                "network N(x: [3, 8, 8]) { add() }",
                "network N(x: [3, 8, 8]) { add(relu) }",
                "network N(x: [3, 8, 8]) { add(shortcut | shortcut) }",
                "network N(x: [3, 8, 8]) { concat(shortcut | relu) }",
                "network N(x: [3, 8, 8]) {\\\n relu }",
                "network N(x: [3, 8, 8]) { relu \\",
                "network N(x: [3, 8, 8]) { 0x10 }",
                "network N(x: [3, 8, 8]) { conv(1_000, 3) }",
                "network N(x: [3, 8, 8]) { conv(4, 3) : }",
                "defaults conv(bias=false)\ndefaults relu(x=1)\ndefaults add(a=1)\ndefaults B(c=1)",
            ]
        ),
    }


HOSTILE = _hostile_catalogue()


def hostile(rng: random.Random) -> tuple[str, str]:
    """(catalogue entry, text) for one hostile input."""
    name = rng.choice(list(HOSTILE))
    return name, _cap(HOSTILE[name](rng))


# ------------------------------------------------------------------------------------------ bytes ---

ODD_BYTES = [
    b"\xff",
    b"\xfe\xff",
    b"\xc3",
    b"\xc0\xaf",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\x80",
    b"\x00",
    b"\xef\xbb\xbf",
    b"\xe2\x80\xa8",
    "é".encode("latin-1"),
]


def corrupt_bytes(rng: random.Random, text: str) -> bytes:
    """The UTF-8 of ``text`` with invalid or odd bytes inserted, flipped or re-encoded."""
    data = bytearray(text.encode("utf-8", "surrogatepass"))
    action = rng.choice(["insert", "insert", "flip", "truncate", "utf16", "latin1"])
    if action == "utf16":
        return text.encode("utf-16", "surrogatepass")
    if action == "latin1":
        return text.replace("relu", "relué").encode("latin-1", "replace")
    for _ in range(rng.choice([1, 1, 2, 5])):
        position = rng.randrange(len(data) + 1)
        if action == "insert":
            # Sometimes after multi-byte characters, so a column counted in bytes would show.
            data[position:position] = "é€".encode() * rng.choice([0, 0, 3]) + rng.choice(ODD_BYTES)
        elif action == "flip" and data:
            data[min(position, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif action == "truncate":
            data[position:position] = "€".encode()[: rng.choice([1, 2])]
    return bytes(data)


# ------------------------------------------------------------------------------------------- cases ---


@dataclass
class Case:
    generator: str
    data: str | bytes
    detail: str = ""


def generate_case(rng: random.Random, seeds: dict[str, str], weights: dict[str, float] | None = None) -> Case:
    """One case from a generator chosen by ``weights`` (default: mostly mutations and random programs)."""
    weights = weights or {"mutate": 0.5, "structured": 0.27, "soup": 0.12, "hostile": 0.03, "bytes": 0.08}
    generator = rng.choices(list(weights), list(weights.values()))[0]
    if generator == "mutate":
        name = rng.choice(list(seeds))
        return Case("mutate", mutate(rng, seeds[name]), name)
    if generator == "structured":
        text = structured(rng)
        return Case("structured", mutate(rng, text) if rng.random() < 0.3 else text)
    if generator == "soup":
        return Case("soup", token_soup(rng))
    if generator == "hostile":
        name, text = hostile(rng)
        return Case("hostile", text, name)
    name = rng.choice(list(seeds))
    return Case(
        "bytes", corrupt_bytes(rng, seeds[name] if rng.random() < 0.7 else mutate(rng, seeds[name])), name
    )


# ----------------------------------------------------------------------------------------- checking ---


class Hang(BaseException):
    """Raised by the alarm when a case runs past :data:`HANG_S` (a BaseException: no handler may eat it)."""


@dataclass
class Outcome:
    kind: str
    """``ok`` or ``error`` (the invariant holds), or a finding: ``crash``, ``internal``, ``unlocated``,
    ``bad-network``, ``slow``, ``memory``, ``hang``, ``cli``."""
    detail: str = ""
    cpu_s: float = 0.0
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def finding(self) -> bool:
        return self.kind not in ("ok", "error")


def _lines(data: str | bytes) -> list[str]:
    text = data if isinstance(data, str) else data.decode("utf-8", "replace")
    return [line.removesuffix("\r") for line in text.lstrip("\ufeff").split("\n")]


def diagnostic_problem(
    diagnostic: Diagnostic, error: SpecError, main_file: str, main_lines: list[str]
) -> str | None:
    """Why a diagnostic is not properly located, or None when it is."""
    span = diagnostic.span
    if not diagnostic.message or diagnostic.message.startswith("internal error"):
        return f"not a real error: {diagnostic.message!r}"
    if not isinstance(span.line, int) or not isinstance(span.column, int) or span.line < 1 or span.column < 1:
        return f"bad position {span.line}:{span.column}"
    if span.file == main_file:
        lines = main_lines
    elif error.sources.line(span.file, 1) is not None:
        lines = []
        while (line := error.sources.line(span.file, len(lines) + 1)) is not None:
            lines.append(line)
    else:
        return f"unknown file {span.file!r}"
    if span.line > len(lines) + 1:
        return f"line {span.line} past the end of {span.file} ({len(lines)} lines)"
    width = len(lines[span.line - 1]) if span.line <= len(lines) else 0
    if span.column > width + 2:
        return f"column {span.column} past the end of line {span.line} ({width} characters)"
    if (span.end_line, span.end_column) < (span.line, span.column):
        return f"span ends before it starts ({span})"
    if error.sources.line(span.file, 1) is not None and span.line <= len(lines):
        quoted = error.sources.line(span.file, span.line)
        if quoted != lines[span.line - 1]:
            return f"quotes the wrong line {span.line}: {quoted!r}"
    return None


def network_problem(network: cnndsl.Network) -> str | None:
    """Why a returned network is not well formed, or None."""
    if not network.nodes or not network.outputs:
        return "no nodes or no outputs"
    for index, node in enumerate(network.nodes):
        if node.id != index:
            return f"node {index} has id {node.id}"
        if any(not 0 <= source < index for source in node.inputs):
            return f"node {node.path} reads {node.inputs}: not topological"
        if len(node.shape) not in (1, 3) or any(not isinstance(d, int) or d < 1 for d in node.shape):
            return f"node {node.path} has shape {node.shape}"
        if node.span.line < 1 or node.span.column < 1:
            return f"node {node.path} has span {node.span}"
    return None


def check_text(data: str | bytes, workdir: Path, filename: str = "fuzz.cnn") -> Outcome:
    """Run one case through ``loads`` (text) or ``load`` (bytes, written to ``workdir``) and judge it."""
    path = workdir / filename
    if isinstance(data, bytes):
        path.write_bytes(data)
    start = time.process_time()
    try:
        network = cnndsl.load(path) if isinstance(data, bytes) else cnndsl.loads(data, filename)
    except SpecError as error:
        cpu = time.process_time() - start
        main_file = str(path) if isinstance(data, bytes) else filename
        lines = _lines(data)
        if not error.diagnostics:
            return Outcome("unlocated", "SpecError without diagnostics", cpu)
        for diagnostic in error.diagnostics:
            problem = diagnostic_problem(diagnostic, error, main_file, lines)
            if problem:
                kind = "internal" if problem.startswith("not a real error") else "unlocated"
                return Outcome(kind, f"{diagnostic.span}: {problem}", cpu, error.diagnostics)
        try:
            error.render()
            json.loads(error.to_json())
        except Exception as failure:  # noqa: BLE001 - any failure to render is a finding
            return Outcome("crash", f"rendering: {type(failure).__name__}: {failure}", cpu)
        return Outcome("error", error.diagnostics[0].message[:120], cpu, error.diagnostics)
    except Hang:
        return Outcome("hang", f"over {HANG_S:.0f} s", time.process_time() - start)
    except BaseException as failure:  # noqa: BLE001 - the invariant: nothing else may escape
        if isinstance(failure, KeyboardInterrupt):
            raise
        trace = "".join(traceback.format_exception(failure)[-4:])
        return Outcome(
            "crash", f"{type(failure).__name__}: {failure}\n{trace}"[:2000], time.process_time() - start
        )
    cpu = time.process_time() - start
    problem = network_problem(network)
    if problem:
        return Outcome("bad-network", problem, cpu)
    return Outcome("ok", f"{len(network.nodes)} nodes", cpu)


def check_cli(
    data: str | bytes, workdir: Path, expected: Outcome, subprocess_run: bool = False
) -> str | None:
    """Run ``cnndsl check`` on the case; a description of the disagreement with ``expected``, or None."""
    path = workdir / "cli_case.cnn"
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass"))
    # A file of blocks only is a library: `check` accepts it (exit 0) where loads() says "no network defined".
    library = len(expected.diagnostics) == 1 and expected.diagnostics[0].message.startswith(
        "no network defined"
    )
    want = 0 if expected.kind == "ok" or library else 1
    if subprocess_run:
        done = subprocess.run(
            [sys.executable, "-m", "cnndsl", "check", str(path)],
            cwd=workdir,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        code, err = done.returncode, done.stderr
    else:
        from cnndsl.cli import main

        out, errors = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(errors):
                code = main(["check", str(path)])
        except BaseException as failure:  # noqa: BLE001 - a crash in the CLI is a finding, not the end of the run
            if isinstance(failure, KeyboardInterrupt | Hang):
                raise
            return f"cnndsl check raised {type(failure).__name__}: {str(failure)[:300]}"
        err = errors.getvalue()
    if "Traceback" in err:
        return f"traceback from cnndsl check: {err[-500:]}"
    if code != want:
        return f"cnndsl check exited {code}, expected {want} ({expected.kind}: {expected.detail[:100]})"
    if code == 1 and not re.match(r"^.+:\d+:\d+: error: ", err):
        return f"cnndsl check printed no located error: {err[:200]!r}"
    return None


def measure_memory(data: str | bytes, workdir: Path) -> int:
    """Peak bytes allocated while checking the case (tracemalloc; slow, so only for slow cases)."""
    import tracemalloc

    tracemalloc.start()
    try:
        check_text(data, workdir)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# ------------------------------------------------------------------------------------------- runner ---


@dataclass
class Report:
    cases: int = 0
    seconds: float = 0.0
    by_generator: Counter[str] = field(default_factory=Counter)
    by_outcome: Counter[str] = field(default_factory=Counter)
    cli_checked: int = 0
    subprocess_checked: int = 0
    slowest: list[tuple[float, str, str]] = field(default_factory=list)
    peak_memory: tuple[int, str] = (0, "")
    findings: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"cases: {self.cases:,} in {self.seconds:,.0f} s ({self.cases / max(self.seconds, 1e-9):,.0f}/s)",
            "generators: " + ", ".join(f"{k} {v:,}" for k, v in self.by_generator.most_common()),
            "outcomes: " + ", ".join(f"{k} {v:,}" for k, v in self.by_outcome.most_common()),
            f"cli: {self.cli_checked:,} in-process, {self.subprocess_checked:,} subprocess",
            "slowest (CPU s): "
            + ", ".join(f"{s:.2f} {g}/{d}" for s, g, d in sorted(self.slowest, reverse=True)[:5]),
            f"largest traced peak: {self.peak_memory[0] / 2**20:.0f} MiB ({self.peak_memory[1]})",
            f"findings: {len(self.findings)}",
        ]
        for finding in self.findings[:20]:
            lines.append(
                f"  - {finding['kind']} [{finding['generator']}/{finding['detail']}]: {finding['message'][:200]}"
            )
        return "\n".join(lines)


def _alarm(signum: int, frame: Any) -> None:
    raise Hang()


def _signature(outcome: Outcome) -> str:
    # One finding per kind and message shape (numbers and names stripped), so a bug is written once.
    return (
        outcome.kind
        + ":"
        + re.sub(r"'[^']*'|\d+", "_", outcome.detail.splitlines()[0] if outcome.detail else "")[:120]
    )


def run(
    cases: int,
    seed: int,
    out: Path | None = None,
    cli_every: int = 50,
    subprocess_every: int = 5000,
    progress_every: int = 0,
    weights: dict[str, float] | None = None,
    trace_over_s: float | None = 0.2,
    time_limit_s: float = TIME_LIMIT_S,
) -> Report:
    """Run ``cases`` cases from ``seed``; write findings (inputs and a JSON index) under ``out``.

    Cases slower than ``trace_over_s`` CPU seconds are run again under tracemalloc (a few of each kind) to
    check the memory bound; ``None`` skips that (tests/test_hostile.py measures the worst cases itself).
    A case over ``time_limit_s`` CPU seconds twice is a ``slow`` finding."""
    rng = random.Random(seed)
    seeds = load_seeds()
    report = Report()
    out = out.resolve() if out is not None else None  # the run changes directory
    seen: set[str] = set()
    traced: Counter[str] = Counter()
    started = time.perf_counter()
    previous = signal.signal(signal.SIGALRM, _alarm)
    with tempfile.TemporaryDirectory(prefix="cnndsl-fuzz-") as temp:
        workdir = Path(temp)
        _prepare_workdir(workdir)
        cwd = Path.cwd()
        os.chdir(workdir)
        try:
            for index in range(cases):
                case = generate_case(rng, seeds, weights)
                signal.setitimer(signal.ITIMER_REAL, HANG_S)
                try:
                    outcome = check_text(case.data, workdir)
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                if not outcome.finding and outcome.cpu_s > time_limit_s:
                    again = check_text(case.data, workdir)  # a busy machine: confirm before reporting
                    if again.cpu_s > time_limit_s:
                        outcome = Outcome("slow", f"{again.cpu_s:.2f} s CPU", again.cpu_s)
                key = f"{case.generator}/{case.detail}"
                slow = trace_over_s is not None and outcome.cpu_s > trace_over_s
                if not outcome.finding and slow and traced[key] < 3:
                    # Tracing is slow: a few of each kind of slow case (memory takes time to fill).
                    traced[key] += 1
                    peak = measure_memory(case.data, workdir)
                    if peak > report.peak_memory[0]:
                        report.peak_memory = (peak, key)
                    if peak > MEMORY_LIMIT:
                        outcome = Outcome("memory", f"peak {peak / 2**20:.0f} MiB", outcome.cpu_s)
                if not outcome.finding and cli_every and index % cli_every == 0:
                    problem = check_cli(case.data, workdir, outcome)
                    report.cli_checked += 1
                    if problem is None and subprocess_every and index % subprocess_every == 0:
                        problem = check_cli(case.data, workdir, outcome, subprocess_run=True)
                        report.subprocess_checked += 1
                    if problem:
                        outcome = Outcome("cli", problem, outcome.cpu_s)
                report.cases += 1
                report.by_generator[case.generator] += 1
                report.by_outcome[outcome.kind] += 1
                report.slowest = sorted([*report.slowest, (outcome.cpu_s, case.generator, case.detail)])[-5:]
                if outcome.finding:
                    signature = _signature(outcome)
                    if signature not in seen:
                        seen.add(signature)
                        finding = {
                            "kind": outcome.kind,
                            "generator": case.generator,
                            "detail": case.detail,
                            "case": index,
                            "message": outcome.detail,
                            "cpu_s": round(outcome.cpu_s, 3),
                        }
                        report.findings.append(finding)
                        if out is not None:
                            out.mkdir(parents=True, exist_ok=True)
                            name = f"{len(report.findings):03d}-{outcome.kind}.cnn"
                            data = (
                                case.data
                                if isinstance(case.data, bytes)
                                else case.data.encode("utf-8", "surrogatepass")
                            )
                            (out / name).write_bytes(data)
                            finding["file"] = name
                if progress_every and (index + 1) % progress_every == 0:
                    report.seconds = time.perf_counter() - started
                    print(
                        f"[{index + 1:,}/{cases:,}] {report.seconds:,.0f} s, {len(report.findings)} findings, "
                        + ", ".join(f"{k} {v:,}" for k, v in report.by_outcome.most_common()),
                        flush=True,
                    )
                    if out is not None:
                        _write_report(out, report, seed)
        finally:
            os.chdir(cwd)
            signal.signal(signal.SIGALRM, previous)
    report.seconds = time.perf_counter() - started
    if out is not None:
        _write_report(out, report, seed)
    return report


def _write_report(out: Path, report: Report, seed: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    index = {
        "seed": seed,
        "cases": report.cases,
        "seconds": round(report.seconds, 1),
        "generators": dict(report.by_generator),
        "outcomes": dict(report.by_outcome),
        "cli_in_process": report.cli_checked,
        "cli_subprocess": report.subprocess_checked,
        "slowest": [list(s) for s in sorted(report.slowest, reverse=True)],
        "largest_traced_peak_mib": round(report.peak_memory[0] / 2**20, 1),
        "findings": report.findings,
    }
    (out / "report.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    (out / "report.txt").write_text(report.summary() + "\n", encoding="utf-8")


# ------------------------------------------------------------------------------------------ atheris ---


def run_atheris(argv: list[str], out: Path) -> None:
    """Coverage-guided fuzzing with atheris (libFuzzer): bytes in, the same invariant checked.

    Findings are written under ``out/atheris`` and the run goes on (libFuzzer would stop at the first); the
    report (executions, seconds, findings) is rewritten every 1,000 executions: libFuzzer ends the process
    without running Python's exit handlers."""
    import atheris

    # cnndsl (and lark) are imported already: instrument every loaded function for coverage feedback.
    atheris.instrument_all()
    folder = out.resolve() / "atheris"
    workdir = Path(tempfile.mkdtemp(prefix="cnndsl-atheris-"))
    _prepare_workdir(workdir)
    os.chdir(workdir)
    folder.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {"executions": 0, "started": time.perf_counter(), "findings": [], "seen": set()}

    def one_input(data: bytes) -> None:
        if len(data) >= MAX_INPUT:
            return
        state["executions"] += 1
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            outcome = check_text(data, workdir)
        else:
            outcome = check_text(text, workdir)
        if outcome.cpu_s > TIME_LIMIT_S and not outcome.finding:
            outcome = Outcome("slow", f"{outcome.cpu_s:.2f} s CPU", outcome.cpu_s)
        if outcome.finding and _signature(outcome) not in state["seen"]:
            state["seen"].add(_signature(outcome))
            name = f"{len(state['findings']) + 1:03d}-{outcome.kind}.cnn"
            (folder / name).write_bytes(data)
            state["findings"].append({"kind": outcome.kind, "message": outcome.detail, "file": name})
            print(f"finding {name}: {outcome.detail[:200]}", flush=True)
            report()
        if state["executions"] % 1000 == 0:
            report()

    def report() -> None:
        seconds = time.perf_counter() - state["started"]
        summary = {
            "executions": state["executions"],
            "seconds": round(seconds, 1),
            "findings": state["findings"],
        }
        (folder / "report.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")

    corpus = workdir / "corpus"
    corpus.mkdir()
    for name, text in load_seeds().items():
        (corpus / name.replace("/", "_")).write_text(text, encoding="utf-8")
    atheris.Setup([sys.argv[0], *argv, str(corpus)], one_input)
    atheris.Fuzz()


def _prepare_workdir(workdir: Path) -> None:
    """Copy the spec library into ``workdir``: imports in fuzzed text resolve against the working directory."""
    specs = ROOT / "specs"
    for source in specs.rglob("*.cnn"):
        target = workdir / source.relative_to(specs)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=100_000, help="how many cases (default 100,000)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "fuzz_findings", help="findings folder")
    parser.add_argument("--cli-every", type=int, default=50, help="run every Nth case through `cnndsl check`")
    parser.add_argument(
        "--subprocess-every", type=int, default=5000, help="every Nth also through a subprocess"
    )
    parser.add_argument("--progress-every", type=int, default=1000, help="print progress every N cases")
    parser.add_argument(
        "--memory-cap-gib", type=float, default=3.0, help="address-space cap for this process"
    )
    parser.add_argument("--atheris", action="store_true", help="coverage-guided run with atheris instead")
    args, rest = parser.parse_known_args(argv)
    if args.memory_cap_gib:
        # A safety net on a shared machine: a memory bomb the checker misses fails here, not the box.
        cap = int(args.memory_cap_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    sys.setrecursionlimit(1000)  # the interpreter default, whatever the caller set
    if args.atheris:
        run_atheris([a for a in rest if a != "--"], args.out)
        return 0
    report = run(args.cases, args.seed, args.out, args.cli_every, args.subprocess_every, args.progress_every)
    print(report.summary())
    return 1 if report.findings else 0


if __name__ == "__main__":
    sys.exit(main())
