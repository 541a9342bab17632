"""Words for numbers in what the toolkit prints: `1 step`, `2 steps`, never `1 steps`."""

from __future__ import annotations


def count(n: int, word: str, plural: str | None = None) -> str:
    """`count(1, "step")` -> '1 step'; `count(3, "batch", "batches")` -> '3 batches'."""
    return f"{n} {word if n == 1 else plural or word + 's'}"
