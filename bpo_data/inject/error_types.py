"""What an LLM rewrite got wrong, read off its difference to the ground truth.

The ``error_types`` column records the *applied* errors for every generator: the rules injector
knows the edits it made; an LLM is only asked for some types, and may make others or none, so its
rewrite is compared word by word with the ground truth and each changed stretch is classified
with the vocabulary of ``bpo_data.schema.ERROR_TYPES``.
"""

from __future__ import annotations

import re
from difflib import SequenceMatcher

from bpo_data.inject.rules import COLOUR_WORDS, NUMBER_VALUE, POSITION_WORDS, vocabulary
from bpo_data.schema import ERROR_TYPES

_WORD = re.compile(r"[A-Za-z]+(?:'[a-z]+)?|\d+(?:[.,:]\d+)*")
# Other properties a rewrite changes besides colour.
_ATTRIBUTES = frozenset(
    "small large big tiny huge little tall short long wide narrow round square rectangular circular "
    "triangular oval flat wooden metal metallic plastic glass stone brick leather striped spotted "
    "plaid dark light bright pale old new young empty full open closed wet dry standing sitting "
    "lying running walking sleeping eating flying parked".split()
)
# Words that claim something is there or not: flipping them changes which objects exist.
_EXISTENCE = frozenset("yes no not none nothing without there isn't aren't".split())
_POSITIONS = POSITION_WORDS | frozenset(
    "near next beside behind under over between across around inside outside center centre middle "
    "corner far close".split()
)


def _tokens(text: str) -> tuple[list[str], set[int]]:
    """The words, and the indices of those that start a sentence (where a capital says nothing)."""
    words, starts = [], set()
    last, end = "", 0  # the last non-space character before the current word
    for match in _WORD.finditer(text):
        last = text[end : match.start()].strip()[-1:] or (last if words else "")
        if not words or last in (".", "!", "?", ":"):
            starts.add(len(words))
        words.append(match.group())
        last, end = match.group()[-1], match.end()
    return words, starts


def _is_object(word: str, nxt: str) -> bool:
    vocab = vocabulary()
    return word in vocab.words or (
        word in vocab.phrases and any(rest[0] == nxt for rest, _ in vocab.phrases[word])
    )


def _named(words: list[str], starts: set[int], i: int) -> bool:
    """A capitalised word that names something ("OPEN", "Sunrise Bakery"), not a sentence's first word."""
    if not words[i][:1].isupper():
        return False
    return i not in starts or (i + 1 < len(words) and words[i + 1][:1].isupper())


def _kind(words: list[str], lowered: list[str], starts: set[int], i: int) -> str | None:
    """The error type a change of word ``i`` belongs to, or None when the word says nothing typed."""
    low, nxt = lowered[i], lowered[i + 1] if i + 1 < len(lowered) else ""
    after_next = lowered[i + 2] if i + 2 < len(lowered) else ""
    if _named(words, starts, i):
        return "text_number"
    if low in COLOUR_WORDS or low in _ATTRIBUTES:
        return "attribute"
    if low in NUMBER_VALUE or (low.isdigit() and _is_object(nxt, after_next)):
        return "count"
    if low[:1].isdigit():
        return "text_number"
    if low in _POSITIONS:
        return "position"
    if _is_object(low, nxt) or low in _EXISTENCE:
        return "object"
    return None


def applied_error_types(original: str, rewrite: str) -> list[str]:
    """The error types a rewrite applied to ``original``, in vocabulary order; ``other`` when unclassified."""
    (old, old_starts), (new, new_starts) = _tokens(original), _tokens(rewrite)
    old_low, new_low = [w.lower() for w in old], [w.lower() for w in new]
    types: set[str] = set()
    for tag, i1, i2, j1, j2 in SequenceMatcher(None, old_low, new_low, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        kinds = {_kind(old, old_low, old_starts, i) for i in range(i1, i2)}
        kinds |= {_kind(new, new_low, new_starts, j) for j in range(j1, j2)}
        types |= kinds - {None} or {"other"}
    return [t for t in ERROR_TYPES if t in types]
