"""Which COCO objects a rejected answer adds to the chosen one, and which it drops; which claims it adds.

Objects are read with the project's Object HalBench reader (``bpo_data.coco_objects``, the official
CHAIR rules), so ``objects_added`` is exactly what Object HalBench would count as a new mention.
That reader tokenises with nltk, which costs milliseconds per caption; verification reads every
answer, and the chosen answer of a unit is read once per negative type while an injected rewrite
repeats all but one of its sentences. So a text is read piece by piece (split after ``.``, ``!``,
``?``) with a cache per piece, and the pieces' words are joined before the reader's last rule
("seat" goes when "toilet" is anywhere in the text). The result is the reader's own: a two-word
name never spans a split point (its first word would end in a period, which no name does), and a
split the reader's sentence tokenizer would not make only moves a period off a non-object word.

``claims_added`` widens the object diff to what a hallucination can get wrong besides the object:
the claims a text makes are its COCO objects, colours, counts, places in the picture, sizes and
sign text (all-capital words and numbers), each normalised ("middle" and "center" are the centre,
"big" is large, "two" is 2), read only from sentences that deny nothing ("there is no cup" claims
no cup: a denial swapped for another denial states nothing new, and CLIP cannot read it either).
A rejected answer that states no claim beyond the chosen answer and the question ("The person is
brown." for "What colour is the person?" / "Brown.") rewords the truth: its pair teaches style, not
grounding. Measured in the miniature world (BENCHMARKS.md), ``min_claims_added: 1`` keeps
weakened negatives at 99 % precision and injected ones at 99.7 %.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from bpo_data.coco_objects import coco_vocabulary

_PIECES = re.compile(r"(?<=[.!?])\s+")
SENTENCES = re.compile(r"(?<=[.!?])\s+|\n+")
NEGATION = re.compile(r"\b(no|not|cannot|can't|nothing|none|without|never|neither|nor)\b", re.IGNORECASE)
_WORDS = re.compile(r"[A-Za-z0-9']+")
_ALTERNATIVES = re.compile(r"\bor\b", re.IGNORECASE)
_COLOURS = frozenset(
    ("red", "blue", "green", "yellow", "white", "black", "brown", "grey", "purple", "pink", "orange")
    + ("beige", "silver", "gold", "golden", "tan")
)
_ATTRIBUTES = {
    **{word: f"count:{n}" for n, word in enumerate(("zero", "one", "two", "three", "four", "five"), start=0)},
    **{word: f"count:{n}" for n, word in enumerate(("six", "seven", "eight", "nine", "ten"), start=6)},
    "single": "count:1", "couple": "count:2", "pair": "count:2",
    "left": "place:left", "right": "place:right",
    "top": "place:top", "upper": "place:top", "above": "place:top",
    "bottom": "place:bottom", "lower": "place:bottom", "below": "place:bottom",
    "centre": "place:centre", "center": "place:centre", "middle": "place:centre",
    "big": "size:large", "large": "size:large", "huge": "size:large",
    "small": "size:small", "little": "size:small", "tiny": "size:small",
    "gray": "colour:grey",
    **{colour: f"colour:{colour}" for colour in _COLOURS},
}  # fmt: skip


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


@lru_cache(maxsize=1 << 16)
def _sentence_claims(sentence: str) -> frozenset[str]:
    found = {f"object:{name}" for name in objects(sentence)}
    for word in _WORDS.findall(sentence):
        attribute = _ATTRIBUTES.get(word.lower())
        if attribute is not None:
            found.add(attribute)
        elif word.isdigit():
            found.add(f"count:{int(word)}" if len(word) <= 2 else f"text:{word}")
        elif len(word) >= 2 and word.isupper():
            found.add(f"text:{word}")
    return frozenset(found)


def claims(text: str) -> set[str]:
    """What a text states about the picture, as ``kind:value`` (see the module docstring)."""
    return {
        claim
        for sentence in SENTENCES.split(text.strip())
        if sentence.strip() and not NEGATION.search(sentence)
        for claim in _sentence_claims(sentence)
    }


def claims_added(chosen: str, rejected: str, question: str = "") -> list[str]:
    """Claims the rejected answer makes that neither the chosen answer nor the question makes, sorted.

    The question's claims are what it asks about ("What is on the left?" places the answer); one
    that offers alternatives ("Is the bus big or small?") claims only its objects, not the options.
    """
    asked = claims(question)
    if _ALTERNATIVES.search(question):
        asked = {claim for claim in asked if claim.startswith("object:")}
    return sorted(claims(rejected) - claims(chosen) - asked)
