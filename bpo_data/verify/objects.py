"""Which COCO objects a rejected answer adds to the chosen one, and which it drops.

Objects are read with the project's Object HalBench reader (``bpo_data.coco_objects``, the official
CHAIR rules), so ``objects_added`` is exactly what Object HalBench would count as a new mention.
That reader tokenises with nltk, which costs milliseconds per caption; verification reads every
answer, and the chosen answer of a unit is read once per negative type while an injected rewrite
repeats all but one of its sentences. So a text is read piece by piece (split after ``.``, ``!``,
``?``) with a cache per piece, and the pieces' words are joined before the reader's last rule
("seat" goes when "toilet" is anywhere in the text). The result is the reader's own: a two-word
name never spans a split point (its first word would end in a period, which no name does), and a
split the reader's sentence tokenizer would not make only moves a period off a non-object word.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from bpo_data.coco_objects import coco_vocabulary

_PIECES = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class ObjectDiff:
    """COCO classes the rejected answer names and the chosen does not (added), and the reverse."""

    added: list[str]
    removed: list[str]


@lru_cache(maxsize=1 << 16)
def _piece_words(piece: str) -> tuple[str, ...]:
    vocabulary = coco_vocabulary()
    return tuple(vocabulary.merge_double_words(vocabulary.words(piece))[0])


def objects(text: str) -> set[str]:
    """The COCO classes a free text names, as ``coco_vocabulary().objects(text)`` reads them."""
    words = [word for piece in _PIECES.split(text.strip()) if piece for word in _piece_words(piece)]
    return {mention.cls for mention in coco_vocabulary().object_mentions(words)}


def object_diff(chosen: str, rejected: str) -> ObjectDiff:
    """Objects added and removed by the rejected answer, each list sorted (so records compare stably)."""
    kept, made = objects(chosen), objects(rejected)
    return ObjectDiff(added=sorted(made - kept), removed=sorted(kept - made))
