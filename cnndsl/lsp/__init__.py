"""The cnndsl language server: diagnostics, hover with shapes and costs, inlay hints, navigation, completion.

:mod:`cnndsl.lsp.index` answers editor questions from one analysis of a document; :mod:`cnndsl.lsp.server`
speaks the Language Server Protocol (pygls) on stdio. ``cnndsl lsp`` starts it.
"""

from __future__ import annotations

from .index import DocumentIndex

__all__ = ["DocumentIndex"]
