"""COCO objects named in text, read the way Object HalBench's official scorer reads them.

The official scorer is class ``CHAIR`` of RLHF-V's / RLAIF-V's ``eval/eval_gpt_obj_halbench.py`` (the
CHAIR metric of Rohrbach et al. 2018 with RLHF-V's refined synonym list: 80 classes, canonical name
first). It reads objects in two ways, and so does this module:

**A free text** (``mentions``; the official ``caption_to_words``, used for the ground-truth captions
and for responses when no judge extracts objects): the text is lower-cased, tokenised by
``nltk.word_tokenize`` and every token lemmatised as a noun by nltk's ``WordNetLemmatizer``
(RLHF-V pins nltk 3.8.1); two-word names are then merged left to right ("hot dog", "teddy bear";
"baby bird" → bird and "passenger train" → train so that neither fires as a person; "bow tie" →
tie, "toilet seat" → toilet, "wine glas" → wine glass; "home plate" and "train track" merge into
names of nothing), "seat" is dropped when "toilet" is in the same text, and every remaining token
that is a vocabulary name is a mention. WordNet decides what a plural reads as: "dogs" is dog, but
"men" stays "men" (itself a WordNet noun) and so names no person, "vases" becomes "vas" (the
shortest WordNet lemma wins), and words WordNet does not know ("hairdryers", "smartphones") are left
as they are, so their plurals are never counted. This module gives the same tokens without
downloading nltk data:

- *tokens*: ``nltk.word_tokenize`` splits sentences with the trained English Punkt model, then runs
  the Treebank-style word tokenizer on each sentence. That tokenizer splits a period off only at
  the end of its input, so the sentence split decides one thing alone: whether a word ending in a
  period (followed by a space or closing punctuation) keeps its period. The trained model keeps it
  on abbreviations (its list: "mr", "dr", "u.s", "ok"…), initials and numbers, none of which is
  or holds a vocabulary word, and splits it off everywhere else, as Punkt with no trained
  parameters does (lower-cased text gives its orthographic rules nothing to act on). So nltk's
  untrained ``PunktSentenceTokenizer`` with ``NLTKWordTokenizer`` yields the same vocabulary tokens
  in the same order, and the same neighbours for the two-word merges.
- *lemmas*: ``WordNetLemmatizer.lemmatize(word)`` of nltk 3.8.1 is the shortest of ``_morphy``'s
  forms (the exception list of ``noun.exc``, else the word and its suffix rewrites that are WordNet
  nouns, rewriting again while none is), or the word itself. It needs nothing of WordNet but its
  noun lemmas and ``noun.exc``, which ship with this package (``resources/``, WordNet 3.0, see
  NOTICE.md) and are checked against WordNet by the test suite. (nltk from 3.9 on no longer
  rewrites a second time: "dogss" stays "dogss" there; this module follows 3.8.1.)

**Object names a judge extracted** (``mentions_in_names``; the official ``get_pred_objs_match``):
each name is read as "a {name}" by spaCy's ``en_core_web_trf``; if the lemmas hold a two-word name
(the same merge table), those are the name's objects, else every run of nouns (Penn tags NN, NNS,
NNP, NNPS) joined by spaces, lemma by lemma, so "two men" → "man", "parked car" → "car", "a man's
hat" → "man" and "hat", "plate with food" → "plate" and "food". The objects of a response are
deduplicated, "seat" goes when "toilet" is there, and those that are vocabulary names are its
mentions. spaCy's transformer model is a separate download that cannot be installed from PyPI, so
here the tags come from TextBlob's Pattern tagger (a lexicon and Brill rules, pure Python, on PyPI)
and the lemmas from spaCy's English rules applied to WordNet's tables (a singular noun stays as it
is; a plural noun takes its ``noun.exc`` entry, else the first suffix rewrite that is a WordNet
noun, else the first rewrite: "men" → man, "vases" → vase, "hairdryers" → hairdryer; a proper noun
keeps its spelling). Where the two taggers disagree the objects can differ; two known places: the
Pattern tagger reads a name's last word as an adjective where it has no context ("remote",
"orange"), so a last word tagged JJ is read as a noun here, and it tags some plurals after a noun as
verbs ("teddy bears": VBZ), so a VBZ word is lemmatised as a plural noun for the two-word merge.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

# The official scorer's hard-coded two-word rules.
_ANIMALS = (
    "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "animal", "cub",
)  # fmt: skip
_VEHICLES = ("jet", "train")
_NAMING_NOTHING = ("home plate", "train track")
_SPECIAL = {"bow tie": "tie", "toilet seat": "toilet", "wine glas": "wine glass"}
# WordNet's noun suffix rewrites in nltk's order (nltk.corpus.reader.wordnet MORPHOLOGICAL_SUBSTITUTIONS),
# which are also spaCy's English noun lemma rules.
_NOUN_SUFFIXES = (
    ("s", ""),
    ("ses", "s"),
    ("ves", "f"),
    ("xes", "x"),
    ("zes", "z"),
    ("ches", "ch"),
    ("shes", "sh"),
    ("men", "man"),
    ("ies", "y"),
)
_NOUN_TAGS = ("NN", "NNS", "NNP", "NNPS")
_DASHES = r"[\u2012-\u2015]"  # nltk 3.9+'s dash rule
NOUN_LEMMAS_FILE = "wordnet_noun_lemmas.txt.gz"
NOUN_EXCEPTIONS_FILE = "wordnet_noun.exc"


@dataclass(frozen=True)
class Mention:
    """One COCO object named in a text: the word as read (lemma or merged name), and its class."""

    word: str
    cls: str


class WordNetNouns:
    """WordNet 3.0's noun lemmas and noun exceptions, and the two lemmatisers built on them."""

    def __init__(self, lemmas: Iterable[str], exceptions_text: str) -> None:
        self.lemmas = frozenset(lemmas)
        self.exceptions: dict[str, list[str]] = {}
        for line in exceptions_text.splitlines():
            if line.strip():
                inflected, *bases = line.split()
                self.exceptions[inflected] = bases
        self._lemma_cache: dict[str, str] = {}

    def lemmatize(self, word: str) -> str:
        """nltk 3.8.1's ``WordNetLemmatizer().lemmatize(word)`` (as a noun): the shortest known form."""
        if word not in self._lemma_cache:
            known = self._morphy(word)
            self._lemma_cache[word] = min(known, key=len) if known else word
        return self._lemma_cache[word]

    def plural_lemma(self, word: str) -> str:
        """spaCy's English rule lemma of ``word`` read as a plural noun, on WordNet's tables."""
        found: list[str] = []
        unknown: list[str] = []
        for form in _rewrites(word):
            (found if form in self.lemmas or not form.isalpha() else unknown).append(form)
        found = list(dict.fromkeys(found))
        for base in self.exceptions.get(word, []):
            if base not in found:
                found.insert(0, base)
        return (found or unknown or [word])[0]

    def _morphy(self, word: str) -> list[str]:
        """The forms nltk 3.8.1's ``_morphy`` returns: the exception entry, else the word and its
        rewrites that are nouns, else the rewrites of the rewrites, and so on until some are."""
        if word in self.exceptions:
            return self._known([word, *self.exceptions[word]])
        forms = _rewrites(word)
        known = self._known([word, *forms])
        while forms and not known:
            forms = [rewritten for form in forms for rewritten in _rewrites(form)]
            known = self._known(forms)
        return known

    def _known(self, forms: list[str]) -> list[str]:
        return list(dict.fromkeys(form for form in forms if form in self.lemmas))


def _rewrites(word: str) -> list[str]:
    """The non-empty results of each noun suffix rule that applies to ``word``, in rule order."""
    forms = (word[: len(word) - len(old)] + new for old, new in _NOUN_SUFFIXES if word.endswith(old))
    return [form for form in forms if form]


@cache
def wordnet_nouns() -> WordNetNouns:
    """The WordNet 3.0 tables shipped in ``bpo_data/resources`` (see its NOTICE.md)."""
    resources = files("bpo_data").joinpath("resources")
    lemmas = gzip.decompress(resources.joinpath(NOUN_LEMMAS_FILE).read_bytes()).decode("utf-8")
    return WordNetNouns(lemmas.split(), resources.joinpath(NOUN_EXCEPTIONS_FILE).read_text("utf-8"))


def tokens(text: str) -> list[str]:
    """``nltk.word_tokenize(text)`` as far as COCO names go (see the module docstring for why)."""
    sentences, words = _tokenizers()
    return [token for sentence in sentences.tokenize(text) for token in words.tokenize(sentence)]


@cache
def _tokenizers():
    try:
        from nltk.tokenize import NLTKWordTokenizer, PunktSentenceTokenizer
    except ImportError as err:
        raise ImportError("reading COCO objects needs nltk: pip install 'bpo-data[eval]'") from err

    class Nltk381WordTokenizer(NLTKWordTokenizer):
        """nltk's word tokenizer with the three rules it had in 3.8.1 (RLHF-V's pin) where 3.9+ differ:
        a leading quote splits off one-letter words only ("'dog" stays one token), no whitespace
        is normalised before the "'s" split (so "man's" at a line end stays whole), and dashes
        U+2012..U+2015 are not split off."""

        STARTING_QUOTES = [
            *NLTKWordTokenizer.STARTING_QUOTES[:4],
            (re.compile(r"(?i)(\')(?!re|ve|ll|m|t|s|d|n)(\w)\b", re.U), r"\1 \2"),
        ]
        ENDING_QUOTES = [rule for rule in NLTKWordTokenizer.ENDING_QUOTES if rule[0].pattern != r"\s+"]
        PUNCTUATION = [rule for rule in NLTKWordTokenizer.PUNCTUATION if rule[0].pattern != _DASHES]

    return PunktSentenceTokenizer(), Nltk381WordTokenizer()


@cache
def _pattern_tagger():
    try:
        from textblob.en import parser
    except ImportError as err:
        raise ImportError(
            "reading judge-extracted object names needs TextBlob's tagger: pip install 'bpo-data[eval]'"
        ) from err
    return parser


class CocoVocabulary:
    """The synonym table and the two-word rules, built from a synonym file (one class per line)."""

    def __init__(self, synonyms_text: str, nouns: WordNetNouns | None = None) -> None:
        self.nouns = nouns or wordnet_nouns()
        self.to_class = {name: cls for cls, names in synonym_table(synonyms_text).items() for name in names}
        double = {name: name for name in self.to_class if len(name.split(" ")) >= 2}
        double.update({phrase: phrase for phrase in _NAMING_NOTHING})
        for animal in _ANIMALS:
            double[f"baby {animal}"] = animal
            double[f"adult {animal}"] = animal
        for vehicle in _VEHICLES:
            double[f"passenger {vehicle}"] = vehicle
        double.update(_SPECIAL)
        self.double_words = double

    def words(self, text: str) -> list[str]:
        """The official ``caption_to_words`` tokens before merging: lower-cased, tokenised, lemmatised."""
        return [self.nouns.lemmatize(token) for token in tokens(text.lower())]

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
        """Every COCO object mention in a free text (a caption or a model's answer), in order."""
        return self._to_mentions(self.merge_double_words(self.words(text))[0])

    def objects(self, text: str) -> set[str]:
        """The COCO classes a free text names."""
        return {mention.cls for mention in self.mentions(text)}

    def name_objects(self, name: Any) -> list[str]:
        """The objects one judge-extracted name stands for: its two-word names, else its noun runs."""
        words = tokens(f"a {name}")
        tags = [tag for _, tag in _pattern_tagger().find_tags(words)]
        if tags and tags[-1] == "JJ" and words[-1].isalpha():
            tags[-1] = "NN"
        lemmas = [self._tagged_lemma(word, tag) for word, tag in zip(words, tags)]
        doubles = self.merge_double_words(lemmas)[1]
        if doubles:
            return doubles
        runs, run = [], []
        for lemma, tag in zip(lemmas, tags):
            if tag in _NOUN_TAGS:
                run.append(lemma)
            elif run:
                runs.append(" ".join(run))
                run = []
        if run:
            runs.append(" ".join(run))
        return runs

    def names_to_objects(self, names: Iterable[Any]) -> list[str]:
        """The distinct objects of a response's extracted names, in first-seen order."""
        return list(dict.fromkeys(obj for name in names for obj in self.name_objects(name)))

    def mentions_in_names(self, names: Iterable[Any]) -> list[Mention]:
        """COCO mentions among the names a judge extracted from one response (each object once)."""
        return self.object_mentions(self.names_to_objects(names))

    def object_mentions(self, objects: Sequence[str]) -> list[Mention]:
        """The official ``caption_objects_to_coco_objects``: "seat" goes when "toilet" is there, and
        each object that is a vocabulary name is a mention."""
        return self._to_mentions(list(objects))

    def _tagged_lemma(self, word: str, tag: str) -> str:
        if tag in ("NNP", "NNPS"):
            return word
        if tag in ("NNS", "VBZ"):
            return self.nouns.plural_lemma(word.lower())
        return word.lower()

    def _to_mentions(self, words: list[str]) -> list[Mention]:
        if "toilet" in words and "seat" in words:
            words = [w for w in words if w != "seat"]
        return [Mention(w, self.to_class[w]) for w in words if w in self.to_class]


def synonym_table(synonyms_text: str) -> dict[str, list[str]]:
    """Class → its names, canonical name first: one class per line, names separated by ", "."""
    table: dict[str, list[str]] = {}
    for line in synonyms_text.splitlines():
        names = [name.strip() for name in line.strip().split(", ")]
        if names and names[0]:
            table[names[0]] = names
    return table


@cache
def coco_synonyms() -> dict[str, list[str]]:
    """RLHF-V's synonyms_refine.txt (shipped with bpo_data, see its NOTICE): 80 classes and their names."""
    return synonym_table(
        files("bpo_data").joinpath("resources", "coco_synonyms_refine.txt").read_text("utf-8")
    )


@cache
def coco_vocabulary() -> CocoVocabulary:
    """The official reader over ``coco_synonyms``."""
    return CocoVocabulary(
        files("bpo_data").joinpath("resources", "coco_synonyms_refine.txt").read_text("utf-8")
    )
