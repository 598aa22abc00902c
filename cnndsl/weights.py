"""Loading a state_dict into a compiled module, also one whose keys are named differently.

``match="order"`` pairs our parameters and buffers with theirs in registration order (the order of
``module.state_dict()`` and of the mapping given), which is how a torchvision checkpoint loads into the module
compiled from a spec that writes its layers in torchvision's order. ``match="name"`` requires identical keys.

Both check every pair before copying anything: a mismatch raises :class:`WeightsMismatch` naming the first bad pair
(our key, spec path and shape; their key and shape), and the module is left untouched. Never a partial load.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

_COUNTER = "num_batches_tracked"


class WeightsMismatch(ValueError):
    """The state_dict does not fit the module; the message names the first offending tensor.

    ``reason`` is the message without a hint; ``order_might_fit`` says that pairing by position
    (``match="order"``) might load what pairing by name did not, so a command line can name its own flag."""

    def __init__(self, reason: str, *, order_might_fit: bool = False) -> None:
        self.reason = reason
        self.order_might_fit = order_might_fit
        super().__init__(
            reason + ("; match='order' pairs tensors by position instead" if order_might_fit else "")
        )


def _shape(tensor: Any) -> str:
    return "[" + ", ".join(str(d) for d in tensor.shape) + "]"


def _spec_path(module: torch.nn.Module, key: str) -> str:
    """`` (layer Stage.1/Basic.0/conv.1)`` for a module built by cnndsl, else empty."""
    meta = getattr(module, "meta", None)
    paths = meta.get("cnndsl_paths") if isinstance(meta, dict) else None
    if not isinstance(paths, dict):
        return ""
    owner = key.rpartition(".")[0]
    return f" (layer {paths[owner]})" if owner in paths else ""


def _theirs(state_dict: Mapping[str, Any]) -> list[tuple[str, torch.Tensor]]:
    import torch

    if not isinstance(state_dict, Mapping):
        raise WeightsMismatch(
            f"expected a state_dict (a mapping of names to tensors), got {type(state_dict).__name__}"
        )
    entries = list(state_dict.items())
    for key, value in entries:
        if not isinstance(value, torch.Tensor):
            hint = ""
            if isinstance(value, Mapping):
                hint = f"; is this a checkpoint? try checkpoint[{key!r}]"
            raise WeightsMismatch(f"entry {key!r} is a {type(value).__name__}, not a tensor{hint}")
    return entries


def load_weights(
    module: torch.nn.Module, state_dict: Mapping[str, Any], match: str = "order"
) -> dict[str, str]:
    """Copy ``state_dict`` into ``module``'s parameters and buffers; return {our key: their key}.

    ``match="order"``: the i-th tensor of ``state_dict`` goes to the i-th entry of ``module.state_dict()``.
    When the counts differ only because one side lacks batchnorm ``num_batches_tracked`` counters (older
    checkpoints), the counters are left out of the pairing and ours keep their values.
    ``match="name"``: keys must be identical sets.

    Raises :class:`WeightsMismatch` (a ``ValueError``) before copying anything when a count, key or shape
    differs, naming the first mismatch.
    """
    import torch

    if match not in ("order", "name"):
        raise ValueError(f"match must be 'order' or 'name', got {match!r}")
    theirs = _theirs(state_dict)
    ours = list(module.state_dict(keep_vars=True).items())
    pairs: list[tuple[str, torch.Tensor, str, torch.Tensor]] = []
    if match == "name":
        mine = dict(ours)
        given = dict(theirs)
        missing = [k for k in mine if k not in given]
        unexpected = [k for k in given if k not in mine]
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f"{len(missing)} missing (first: {missing[0]}{_spec_path(module, missing[0])})")
            if unexpected:
                parts.append(f"{len(unexpected)} unexpected (first: {unexpected[0]})")
            hint = ""
            if unexpected and all(k.startswith("module.") for k in given):
                hint = "; the keys start with 'module.' (saved from DataParallel?): strip it"
            raise WeightsMismatch(
                f"state_dict keys differ from the module's: {', '.join(parts)}{hint}",
                order_might_fit=bool(unexpected) and not hint,
            )
        pairs = [(key, tensor, key, given[key]) for key, tensor in ours]
    else:
        if len(ours) != len(theirs):
            trimmed_ours = [e for e in ours if not e[0].endswith(_COUNTER)]
            trimmed_theirs = [e for e in theirs if not e[0].endswith(_COUNTER)]
            if len(trimmed_ours) == len(trimmed_theirs):
                ours, theirs = trimmed_ours, trimmed_theirs
            else:
                # Point at the first place where the kinds of tensors stop lining up, to help find the layer.
                raise WeightsMismatch(
                    f"the module has {len(ours)} parameters and buffers, the state_dict {len(theirs)} "
                    f"({len(trimmed_ours)} and {len(trimmed_theirs)} without {_COUNTER}); "
                    "they cannot be paired by order" + _first_difference(module, ours, theirs)
                )
        pairs = [(ok, ot, tk, tt) for (ok, ot), (tk, tt) in zip(ours, theirs, strict=True)]
    for index, (our_key, our_tensor, their_key, their_tensor) in enumerate(pairs):
        if our_tensor.shape != their_tensor.shape:
            raise WeightsMismatch(
                f"tensor {index + 1} of {len(pairs)}: ours {our_key}{_spec_path(module, our_key)} is "
                f"{_shape(our_tensor)}, theirs {their_key} is {_shape(their_tensor)}; nothing was loaded"
            )
        if our_tensor.is_floating_point() != their_tensor.is_floating_point():
            raise WeightsMismatch(
                f"tensor {index + 1} of {len(pairs)}: ours {our_key}{_spec_path(module, our_key)} is "
                f"{our_tensor.dtype}, theirs {their_key} is {their_tensor.dtype}; nothing was loaded"
            )
    with torch.no_grad():
        for _, our_tensor, _, their_tensor in pairs:
            our_tensor.copy_(their_tensor)
    return {our_key: their_key for our_key, _, their_key, _ in pairs}


def _first_difference(
    module: torch.nn.Module, ours: list[tuple[str, Any]], theirs: list[tuple[str, Any]]
) -> str:
    for index, ((our_key, our_tensor), (their_key, their_tensor)) in enumerate(
        zip(ours, theirs, strict=False)
    ):
        if our_tensor.shape != their_tensor.shape:
            return (
                f"; the first shape difference is at tensor {index + 1}: ours {our_key}{_spec_path(module, our_key)} "
                f"{_shape(our_tensor)}, theirs {their_key} {_shape(their_tensor)}"
            )
    shorter, name = (ours, "module") if len(ours) < len(theirs) else (theirs, "state_dict")
    extra = (theirs if name == "module" else ours)[len(shorter)]
    return f"; the {name} ends first, the other continues with {extra[0]} {_shape(extra[1])}"


def read_state_dict(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and the string metadata of a ``.safetensors`` file (never runs code). Raises ``OSError``
    or ``ValueError`` for a missing or malformed file."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(os.fspath(path), framework="pt", device="cpu") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - not a dict
    except SafetensorError as error:
        raise ValueError(f"not a readable .safetensors file ({error})") from None
    return tensors, metadata


def save_state_dict(
    state_dict: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> bytes:
    """``state_dict`` as the bytes of a ``.safetensors`` file with string ``metadata`` (tensors made contiguous
    and copied to the CPU; tensors sharing memory are copied apart, which safetensors requires)."""
    from safetensors.torch import save

    tensors = {key: value.detach().cpu().contiguous().clone() for key, value in state_dict.items()}
    return bytes(save(tensors, metadata=dict(metadata or {})))
