"""Placeholder: the train subcommands are built by their own issue."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    del subparsers
