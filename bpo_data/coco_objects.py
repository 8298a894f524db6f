"""COCO objects named in text, by the CHAIR rules (Rohrbach et al. 2018) as Object HalBench uses them.

The vocabulary is RLHF-V's refined synonym list (80 classes, canonical name first). A text is
lower-cased and tokenised, each word singularised (with ``inflect``, where CHAIR used pattern's
``singularize`` and RLHF-V a WordNet lemmatiser; a word that is itself in the vocabulary, such as
"bus" or "skis", is left alone), two-word names are merged ("hot dog", "teddy bear", "cell phone";
"baby bird" → bird and "passenger train" → train so that neither fires as a person; "bow tie" →
tie, "toilet seat" → toilet; "home plate" and "train track" are merged so that they name nothing),
"seat" is dropped when "toilet" is in the same text (the seat of a toilet is not a chair), and the
words left that are COCO names map to their class. Every occurrence is a mention, as in CHAIR.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib.resources import files
from typing import Any

# Qualifiers that would otherwise make a person out of an animal or a vehicle (CHAIR's hard-coded rules).
_ANIMALS = (
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "animal",
    "cub",
)
_VEHICLES = ("jet", "train")
_NAMING_NOTHING = ("home plate", "train track")
# Words with inner hyphens stay whole and "'s" splits off, as a Treebank tokenizer does; punctuation
# is kept as tokens so that it separates words that would otherwise merge ("hot, dog").
_TOKEN = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*|'[a-z]+|[^\sa-z0-9]")


@dataclass(frozen=True)
class Mention:
    """One COCO object named in a text: the word as normalised, and its class."""

    word: str
    cls: str


class CocoVocabulary:
    """The synonym table and the two-word rules, built from a synonym file (one class per line)."""

    def __init__(self, synonyms_text: str) -> None:
        self.to_class: dict[str, str] = {}
        for line in synonyms_text.splitlines():
            names = [name.strip() for name in line.strip().split(", ")]
            if names and names[0]:
                for name in names:
                    self.to_class[name] = names[0]
        double = {name: name for name in self.to_class if len(name.split(" ")) >= 2}
        double.update({phrase: phrase for phrase in _NAMING_NOTHING})
        for animal in _ANIMALS:
            double[f"baby {animal}"] = animal
            double[f"adult {animal}"] = animal
        for vehicle in _VEHICLES:
            double[f"passenger {vehicle}"] = vehicle
        double["bow tie"] = "tie"
        double["toilet seat"] = "toilet"
        self.double_words = double
        self._known = {word for phrase in [*self.to_class, *double] for word in phrase.split(" ")}

    def words(self, text: str) -> list[str]:
        """Lower-cased tokens, each singularised unless it is a vocabulary word already."""
        return [self._singular(token) for token in _TOKEN.findall(text.lower())]

    def merge_double_words(self, words: Sequence[str]) -> tuple[list[str], list[str]]:
        """(the words with each two-word name merged into what it stands for, those merged names)."""
        merged, doubles, index = [], [], 0
        while index < len(words):
            pair = " ".join(words[index : index + 2])
            if pair in self.double_words:
                doubles.append(self.double_words[pair])
                merged.append(self.double_words[pair])
                index += 2
            else:
                merged.append(words[index])
                index += 1
        return merged, doubles

    def mentions(self, text: str) -> list[Mention]:
        """Every COCO object mention in a free text (a caption or a model's answer)."""
        return self._to_mentions(self.merge_double_words(self.words(text))[0])

    def mentions_in_names(self, names: Iterable[Any]) -> list[Mention]:
        """COCO objects among names a judge extracted, each distinct name counted once.

        A name holding a two-word object counts as that object; otherwise the name counts only if,
        singularised, it is a COCO name as a whole. (RLHF-V's script keeps runs of nouns tagged by
        spaCy's transformer model, so "red car" becomes "car" there; the judge is told to leave
        attributes out, and without that model a name is taken as given.)
        """
        objects: list[str] = []
        for name in names:
            words = [w for w in self.words(str(name)) if w[0].isalnum()]
            doubles = self.merge_double_words(words)[1]
            for candidate in doubles or [" ".join(words)]:
                if candidate and candidate not in objects:
                    objects.append(candidate)
        return self._to_mentions(objects)

    def _to_mentions(self, words: list[str]) -> list[Mention]:
        if "toilet" in words and "seat" in words:
            words = [w for w in words if w != "seat"]
        return [Mention(w, self.to_class[w]) for w in words if w in self.to_class]

    def _singular(self, token: str) -> str:
        if token in self._known or not token[0].isalpha():
            return token
        return _singular_noun(token)


@lru_cache(maxsize=100_000)
def _singular_noun(word: str) -> str:
    return _inflect().singular_noun(word) or word


@cache
def _inflect():
    try:
        import inflect
    except ImportError as err:
        raise ImportError(
            "reading COCO objects needs the 'inflect' package: pip install 'bpo-data[eval]'"
        ) from err
    return inflect.engine()


@cache
def coco_vocabulary() -> CocoVocabulary:
    """The vocabulary of RLHF-V's synonyms_refine.txt (shipped with bpo_data, see its NOTICE)."""
    return CocoVocabulary(
        files("bpo_data").joinpath("resources", "coco_synonyms_refine.txt").read_text("utf-8")
    )
