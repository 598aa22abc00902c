"""cnndsl: describe, check, analyse, draw, compile and train convolutional networks from a text spec.

>>> import cnndsl
>>> net = cnndsl.loads("network Tiny(x: [3, 8, 8]) { conv(4, 3) -> relu -> gap -> linear(2) }")
>>> net.outputs[0].shape
(2,)
"""

from __future__ import annotations

from typing import Any

from .diagnostics import Diagnostic, Span, SpecError
from .frontend import load, loads
from .network import Network, Node, Tensor

__version__ = "0.1.0"

__all__ = [
    "Diagnostic",
    "Network",
    "Node",
    "Span",
    "SpecError",
    "Tensor",
    "__version__",
    "load",
    "load_weights",
    "loads",
]


def __getattr__(name: str) -> Any:
    # Torch-dependent API is imported on first use, so `import cnndsl` stays fast and torch-free.
    if name == "load_weights":
        from .weights import load_weights

        return load_weights
    raise AttributeError(f"module 'cnndsl' has no attribute {name!r}")
