"""Small text measures shared by the steps that compare answers."""

from __future__ import annotations

import re
from difflib import SequenceMatcher

_PUNCT = re.compile(r"[^\w\s]|_")
_SPACES = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Lower case, punctuation as spaces, single spaces: two answers that differ only so are the same."""
    return _SPACES.sub(" ", _PUNCT.sub(" ", text.lower())).strip()


def words(text: str) -> int:
    return len(text.split())


def overlap(a: str, b: str) -> float:
    """Similarity of two answers' word sequences in [0, 1] (1 = the same words in the same order)."""
    left, right = normalise(a).split(), normalise(b).split()
    if not left and not right:
        return 1.0
    return SequenceMatcher(None, left, right, autojunk=False).ratio()
