"""Small text measures and cleaners shared by the source readers and the steps that compare answers."""

from __future__ import annotations

import re
from difflib import SequenceMatcher

IMAGE_MARKER = "<image>"

_PUNCT = re.compile(r"[^\w\s]|_")
_SPACES = re.compile(r"\s+")
_MARKER = re.compile(r"(\r?\n)?[ \t]*" + re.escape(IMAGE_MARKER) + r"[ \t]*(\r?\n)?")
# Characters that show nothing: spaces, and the format characters (zero-width space and joiners,
# direction marks, the BOM, the soft hyphen) a text can consist of and still look empty.
_INVISIBLE = re.compile(
    r"[\s\u00ad\u034f\u061c\u115f\u1160\u180e\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff]*"
)
_SURROGATE = re.compile("[\ud800-\udfff]")


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


def remove_image_marker(text: str) -> str:
    """The text without LLaVA's ``<image>`` placeholder, wherever a source put it.

    The marker's place keeps a separator so words never glue ("What<image>color" → "What color"):
    a line break where the marker ended a line, a space between words, nothing at either end.
    """
    if IMAGE_MARKER not in text:
        return text.strip()

    def separator(match: re.Match) -> str:
        return "\n" if match.group(1) or match.group(2) else " "

    return _MARKER.sub(separator, text).strip()


def is_blank(text: str) -> bool:
    """True when the text shows nothing: only spaces and zero-width or other invisible characters."""
    return _INVISIBLE.fullmatch(text) is not None


def has_lone_surrogate(text: str) -> bool:
    """A ``\\ud800``-style JSON escape with no partner: not a character, so it cannot be written as UTF-8."""
    return not text.isascii() and _SURROGATE.search(text) is not None  # isascii: a fast path for most text
