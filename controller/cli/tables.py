"""Plain-text tables in kubectl's style: upper-case headers, columns padded with spaces."""

from __future__ import annotations

from collections.abc import Sequence

# kubectl separates columns by three spaces; we do the same so our output reads alike.
GAP = "   "


def render(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns as wide as their widest cell."""
    widths = [
        max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)
    ]
    lines = [
        GAP.join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in (headers, *rows)
    ]
    return "\n".join(lines)
