"""The ``rules`` injector: hallucination-like rewrites of the ground truth without any model.

A fast, deterministic baseline for error injection (and what the CPU benchmark runs): it edits
the details an MLLM typically gets wrong — which object (swapped for one that shares its scene,
or added where the source's answers usually name it: ``bpo_data.inject.cooccurrence``), its
colour, how many, where, and what the text or numbers say. A seeded RNG per unit picks the
edits, so a rerun writes the same rejected answer on any machine.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

from bpo_data.coco_objects import coco_synonyms
from bpo_data.hashing import stable_u64
from bpo_data.inject.cooccurrence import CoOccurrence, Partners
from bpo_data.recipe import ValidationSpec
from bpo_data.schema import ERROR_TYPES as VOCABULARY
from bpo_data.schema import Unit

# The edits this injector makes, in the order of the dataset's one vocabulary.
ERROR_TYPES = tuple(t for t in VOCABULARY if t != "other")
# Adding an object is a kind of edit of its own, as likely as a swap, recorded as an ``object`` error.
ADDED_OBJECT = "object added"
KINDS = (*ERROR_TYPES, ADDED_OBJECT)  # every kind of edit, in the order they are tried
_ERROR_TYPE_OF = {kind: kind for kind in ERROR_TYPES} | {ADDED_OBJECT: "object"}


def _names(listing: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in listing.split(","))


# Scenes whose objects are commonly seen together: a swapped object stays plausible (a fork
# becomes a spoon or a cup, never a giraffe). Names are the COCO classes of the synonym file.
SCENES: dict[str, tuple[str, ...]] = {
    "kitchen_dining": _names(
        "bottle, wine glass, cup, fork, knife, spoon, bowl, banana, apple, sandwich, orange, broccoli, "
        "carrot, hot dog, pizza, donut, cake, dining table, chair, microwave, oven, toaster, sink, "
        "refrigerator, vase, potted plant, clock"
    ),
    "street_traffic": _names(
        "bicycle, car, motorcycle, bus, truck, traffic light, fire hydrant, stop sign, parking meter, "
        "bench, umbrella, backpack, handbag, dog"
    ),
    "living_room": _names(
        "couch, chair, tv, remote, potted plant, book, clock, vase, dining table, laptop, cat, dog, "
        "teddy bear, cup, bed"
    ),
    "bedroom_bathroom": _names(
        "bed, teddy bear, book, clock, toilet, sink, toothbrush, hair drier, scissors, vase, "
        "potted plant, cat"
    ),
    "office": _names(
        "laptop, mouse, keyboard, tv, cell phone, book, cup, scissors, chair, dining table, clock, bottle, "
        "backpack, tie"
    ),
    "farm": _names("horse, sheep, cow, dog, bird, truck"),
    "wildlife": _names("elephant, zebra, giraffe, bear, bird"),
    "pets": _names("cat, dog, bird, teddy bear"),
    "sports_field": _names(
        "sports ball, baseball bat, baseball glove, frisbee, kite, tennis racket, skateboard, bench, "
        "bottle, backpack"
    ),
    "snow": _names("skis, snowboard, backpack"),
    "beach_water": _names("surfboard, boat, kite, umbrella, bird, frisbee"),
    "travel": _names("airplane, train, bus, suitcase, backpack, handbag, truck, car, bench, tie"),
}

# How a swapped-in class is written: COCO's class names are not always what a caption says.
_DISPLAY = {
    "dining table": "table",
    "sports ball": "ball",
    "tv": "television",
    "hair drier": "hair dryer",
    "skis": "ski",
    "remote": "remote control",
}
# Synonyms mostly used for something else in captions ("a bow in her hair", "a remote area",
# "a bull market"), typos in the list, and "orange", which is recognised with its context.
_AMBIGUOUS = frozenset(
    "bow sub ram container pitcher notebook liner vessel phon lenovo televison knive remote seat monitor "
    "pickup cab jet bull orange".split()
)
_IRREGULAR_PLURALS = {
    "mouse": "mice",
    "knife": "knives",
    "pocketknife": "pocketknives",
    "goose": "geese",
    "ox": "oxen",
    "calf": "calves",
    "buffalo": "buffaloes",
    "ski": "skis",
    **{same: same for same in ("sheep", "bison", "cattle", "broccoli", "luggage", "scissors")},
}
_LISTED_PLURALS = {"oxen": "ox", "skis": "ski"}  # plurals the synonym file lists as names
_VOWEL_SOUND_EXCEPTIONS = ("uni", "use", "usu", "eu", "one", "ur")
# How an added object is written after the one it usually comes with: the next item of a list it is
# in (a word of _LIST_ITEM_STARTS after its comma), else "a dog with a ball".
_BESIDE = ("with", "next to", "beside")
_LIST_ITEM_STARTS = frozenset("a an the some two three four five six seven eight nine ten".split())
_ADDED = {"scissors": "a pair of scissors", "broccoli": "some broccoli"}

_COLOURS = tuple(
    "red orange yellow green blue purple pink brown black white gray silver beige golden".split()
)
_SAME_COLOUR = {"grey": "gray", "gold": "golden"}
_BEFORE_A_COLOUR = frozenset("is are was were and or bright dark light".split())
_NOT_AFTER_A_COLOUR = frozenset(
    "and or with on in at of is are was were to from by for near next slices slice juice peel tree "
    "trees".split()
)

_NUMBER_WORDS = tuple("zero one two three four five six seven eight nine ten".split())
_NUMBER_VALUE = {word: value for value, word in enumerate(_NUMBER_WORDS)}
_PLURAL_DETERMINERS = frozenset("many several few these those multiple some".split())
# Verbs next to a count that goes from one to many: "there is one dog" → "there are two dogs".
_AGREEMENT = {"is": "are", "was": "were", "has": "have"}
_FRACTION_TAILS = ("th", "ths", "third", "thirds", "half", "halves", "quarter", "quarters")

_FLIPS = {
    "above": "below",
    "below": "above",
    "beneath": "above",
    "upper": "lower",
    "lower": "upper",
    "foreground": "background",
    "background": "foreground",
    "leftmost": "rightmost",
    "rightmost": "leftmost",
    "behind": "in front of",
    "underneath": "on top of",
    "inside": "outside",
    "outside": "inside",
}
# left/right/top/bottom are only positions in context ("the left", "left side"; not "he left").
_SIDE_FLIPS = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}
_BEFORE_SIDE = frozenset("the his her its their my your our far upper lower top bottom".split())
_AFTER_SIDE = frozenset("side hand corner edge half part wing lane arm leg foot eye ear shoulder of".split())
_AFTER_TOP = frozenset("of left right corner half shelf row".split())

COLOUR_WORDS = frozenset(_COLOURS) | frozenset(_SAME_COLOUR)
NUMBER_VALUE = _NUMBER_VALUE
# Words that place things: what a position edit changes.
POSITION_WORDS = frozenset(_SIDE_FLIPS) | frozenset(_FLIPS) | {"front"}
_DETAIL_WORDS = (
    COLOUR_WORDS | frozenset(_NUMBER_VALUE) | frozenset(_SIDE_FLIPS) | frozenset(_FLIPS) | {"front"}
)
_TOKEN = re.compile(r"([A-Za-z0-9]+)")

Edit = tuple[int, int, str]  # replace words first..last (and the gaps between them) with the text


class _Form(NamedTuple):
    """One way of writing a COCO object: which class, its singular lemma, and whether it is plural."""

    cls: str
    lemma: str
    plural: bool


@dataclass(frozen=True)
class _Vocabulary:
    words: dict[str, _Form]
    phrases: dict[str, tuple[tuple[tuple[str, ...], _Form], ...]]
    plurals: dict[str, str]
    neighbours: dict[str, tuple[str, ...]]
    keys: frozenset[str]  # every word that can start an object mention
    scan_words: frozenset[str]  # every word a rule looks at


class _Mention(NamedTuple):
    """An object named by the words first..last of an answer."""

    first: int
    last: int
    form: _Form


def _plural(noun: str) -> str:
    head, _, last = noun.rpartition(" ")
    if last in _IRREGULAR_PLURALS:
        plural = _IRREGULAR_PLURALS[last]
    elif last.endswith(("s", "x", "z", "ch", "sh")):
        plural = last + "es"
    elif last.endswith("y") and last[-2:-1] not in "aeiou":
        plural = last[:-1] + "ies"
    else:
        plural = last + "s"
    return f"{head} {plural}" if head else plural


def _display(cls: str, plural: bool) -> str:
    noun = _DISPLAY.get(cls, cls)
    return _plural(noun) if plural else noun


@lru_cache(maxsize=1)
def vocabulary() -> _Vocabulary:
    """COCO objects as answers write them (plurals, two-word names), with the classes seen near each."""
    # people are not objects to swap for a cup
    classes = {cls: [n.lower() for n in names] for cls, names in coco_synonyms().items() if cls != "person"}
    words: dict[str, _Form] = {}
    phrases: dict[str, list[tuple[tuple[str, ...], _Form]]] = {}
    plurals: dict[str, str] = {}
    for cls, names in classes.items():
        for name in names:
            lemma = _LISTED_PLURALS.get(name, name)
            plurals[lemma] = _plural(lemma)
            if name in _AMBIGUOUS:
                continue
            for written, is_plural in ((lemma, False), (plurals[lemma], lemma != plurals[lemma])):
                parts = tuple(written.split())
                form = _Form(cls, lemma, is_plural)
                if len(parts) == 1:
                    words.setdefault(written, form)
                else:
                    phrases.setdefault(parts[0], []).append((parts[1:], form))
    neighbours: dict[str, tuple[str, ...]] = {}
    for cls in classes:
        near = {other for scene in SCENES.values() if cls in scene for other in scene if other != cls}
        neighbours[cls] = tuple(sorted(near))
    keys = frozenset(words) | frozenset(phrases) | {"orange", "oranges"}
    return _Vocabulary(
        words=words,
        phrases={
            first: tuple(sorted(options, key=lambda o: -len(o[0]))) for first, options in phrases.items()
        },
        plurals=plurals,
        neighbours=neighbours,
        keys=keys,
        scan_words=keys | _DETAIL_WORDS,
    )


def _match_case(source: str, word: str) -> str:
    """Write ``word`` in the casing of the text it replaces (STOP → GO, Left → Right, TV → laptop)."""
    if source.isupper() and len(source) > 2:
        return word.upper()
    if " " in source and source.istitle():  # "Teddy Bear" → "Wine Glass"
        return word.title()
    if source[:1].isupper() and not (len(source) == 2 and source.isupper()):
        return word[:1].upper() + word[1:]
    return word


def _article_for(word: str) -> str:
    lowered = word.lower()
    if lowered.startswith(_VOWEL_SOUND_EXCEPTIONS):
        return "a"
    return "an" if lowered[:1] in "aeiou" or lowered.startswith("hour") else "a"


class _Scan:
    """One pass over an answer's words: where its objects, colours, counts, positions and digits are.

    The text is split into words and the gaps between them, so an edit is just "replace words
    first..last with this" and the gaps (spacing, punctuation) stay exactly as they were. Each
    candidate is stored as (edit builder, its arguments) and only the chosen ones are built; the
    builder is the plain function, as a bound method would tie the scan in a reference cycle.
    """

    def __init__(
        self,
        text: str,
        vocabulary: _Vocabulary,
        partners: Partners | None = None,
        usual: frozenset[str] | None = None,
        details: bool = True,
    ):
        self.vocabulary = vocabulary
        self.partners = partners or {}
        self.usual = usual  # the classes the source's answers name; None: any class
        self.named: dict[str, list[_Mention]] = {}
        self.parts = _TOKEN.split(text)  # gap, word, gap, word, ..., gap
        tokens = self.parts[1::2]
        # Lowering the words joined by a separator keeps them aligned with the parts.
        self.words = "\x00".join(tokens).lower().split("\x00") if tokens else []
        self.candidates: dict[str, list[tuple]] = {}
        # Words any rule looks at; a token below "a" starts with a digit (24, 10am, 24th).
        hits = [i for i, word in enumerate(self.words) if word in vocabulary.scan_words or word < "a"]
        mentions = self._find_objects(hits)
        if details:  # colours, counts, positions, numbers: not needed to know which objects are named
            self._find_details(hits, mentions)

    def edits(self, candidate: tuple, rng: random.Random) -> list[Edit]:
        builder, *args = candidate
        return builder(self, rng, *args)

    def _word(self, index: int) -> str:
        return self.words[index] if 0 <= index < len(self.words) else ""

    def _source(self, first: int, last: int) -> str:
        return "".join(self.parts[2 * first + 1 : 2 * last + 2])

    def _gap_after(self, index: int) -> str:
        return self.parts[2 * index + 2]

    def _add(self, category: str, *candidate) -> None:
        self.candidates.setdefault(category, []).append(candidate)

    def _find_objects(self, hits: list[int]) -> dict[int, _Mention]:
        """Object mentions by the index of each of their words; one candidate per class named."""
        words, phrases, singles = self.words, self.vocabulary.phrases, self.vocabulary.words
        keys, plurals = self.vocabulary.keys, self.vocabulary.plurals
        found: dict[int, _Mention] = {}
        by_class: dict[str, list[_Mention]] = {}
        after_last = 0
        for index in hits:
            word = words[index]
            if index < after_last or word not in keys:
                continue  # not an object, or inside a two-word name already found ("dog" of "hot dog")
            mention = None
            for rest, form in phrases.get(word, ()):
                last = index + len(rest)
                if tuple(words[index + 1 : last + 1]) == rest and all(
                    self._gap_after(i) in (" ", "-") for i in range(index, last)
                ):
                    mention = _Mention(index, last, form)
                    for inside in range(index + 1, last + 1):
                        found[inside] = mention
                    break
            if mention is None:
                if word in singles:
                    form = singles[word]
                    if not form.plural and plurals[form.lemma] == form.lemma:
                        form = self._number_of(index, form)
                    mention = _Mention(index, index, form)
                elif word == "oranges" or word == "orange" and not self._orange_is_colour(index):
                    mention = _Mention(index, index, _Form("orange", "orange", word == "oranges"))
                else:
                    continue
            found[index] = mention
            by_class.setdefault(mention.form.cls, []).append(mention)
            after_last = mention.last + 1
        self.named = by_class
        if by_class:
            self.candidates["object"] = [
                (_Scan._swap_object, mentions, by_class) for mentions in by_class.values()
            ]
            for cls, mentions in by_class.items():
                absent = tuple(p for p in self.partners.get(cls, ()) if p[0] not in by_class)
                if absent:
                    self._add(ADDED_OBJECT, _Scan._add_partner, mentions[0], absent)
        return found

    def _number_of(self, index: int, form: _Form) -> _Form:
        """Singular or plural for nouns written the same both ways, from the word before ("three sheep")."""
        before = self._word(index - 1)
        counted = _NUMBER_VALUE.get(before, 1) > 1 or before.isdigit() and before != "1"
        return form._replace(plural=True) if counted or before in _PLURAL_DETERMINERS else form

    def _orange_is_colour(self, index: int) -> bool:
        after = self._word(index + 1)
        before = self._word(index - 1)
        return before in _BEFORE_A_COLOUR or (after.isalpha() and after not in _NOT_AFTER_A_COLOUR)

    def _find_details(self, hits: list[int], mentions: dict[int, _Mention]) -> None:
        words = self.words
        for index in hits:
            word = words[index]
            if index in mentions or word not in _DETAIL_WORDS and word >= "a":
                continue
            if word in COLOUR_WORDS:
                self._add("attribute", _Scan._recolour, index)
            elif word in _NUMBER_VALUE:
                self._count_word(index, mentions.get(index + 1))
            elif word.isdigit():
                self._digits(index, mentions.get(index + 1))
            elif word < "a":  # "24th", "10am"
                self._add("text_number", _Scan._change_digit, index)
            elif word in _SIDE_FLIPS:
                self._side(index)
            elif word in _FLIPS:
                self._add("position", _Scan._replace, index, index, _FLIPS[word])
            elif self._word(index - 1) == "in" and self._word(index + 1) == "of":  # "in front of"
                self._add("position", _Scan._replace, index - 1, index + 1, "behind")

    def _count_word(self, index: int, noun: _Mention | None) -> None:
        value = _NUMBER_VALUE[self.words[index]]
        if self._gap_after(index) == "-" and self._word(index + 1).endswith(_FRACTION_TAILS):
            return  # "two-thirds"
        if value == 0 or value == 1 and not (noun and not noun.form.plural and noun.first == index + 1):
            return  # "one of them", "no one": only a counted singular object is a count
        self._add("count", _Scan._recount, index, value, noun, 10)

    def _digits(self, index: int, noun: _Mention | None) -> None:
        digits = self.words[index]
        value = int(digits)
        counted = noun is not None and noun.first == index + 1 and noun.form.plural == (value != 1)
        if counted and 1 <= value <= 20 and digits[0] != "0":
            self._add("count", _Scan._recount, index, value, noun, max(10, value + 3))
        else:
            self._add("text_number", _Scan._change_digit, index)

    def _side(self, index: int) -> None:
        word = self.words[index]
        before, after = self._word(index - 1), self._word(index + 1)
        if word == "top" and before == "on" and after == "of":
            self._add("position", _Scan._replace, index - 1, index + 1, "underneath")
            return
        if word in ("top", "bottom"):
            applies = before == "the" and after in _AFTER_TOP
        else:
            applies = before in _BEFORE_SIDE or after in _AFTER_SIDE
        if applies:
            self._add("position", _Scan._replace, index, index, _SIDE_FLIPS[word])

    # Edit builders: called only for the candidates the RNG picks.

    def _with_article(self, first: int, last: int, replacement: str) -> Edit:
        """Extend an edit over a preceding 'a'/'an' when the new word needs the other one."""
        before = self._word(first - 1)
        if before in ("a", "an") and self._gap_after(first - 1).isspace():
            article = _article_for(replacement)
            if article != before:
                written = _match_case(self._source(first - 1, first - 1), article)
                return first - 1, last, written + self._gap_after(first - 1) + replacement
        return first, last, replacement

    def _replace(self, rng: random.Random, first: int, last: int, replacement: str) -> list[Edit]:
        return [(first, last, _match_case(self._source(first, last), replacement))]

    def _swap_object(
        self, rng: random.Random, mentions: list[_Mention], present: dict[str, list[_Mention]]
    ) -> list[Edit]:
        # A class already in the answer would not be a new object, and one the source never names
        # would not be a plausible one; every class has neighbours.
        neighbours = self.vocabulary.neighbours[mentions[0].form.cls]
        fresh = [c for c in neighbours if c not in present]
        plausible = [c for c in fresh if self.usual is None or c in self.usual]
        new = rng.choice(plausible or fresh or neighbours)
        return [
            self._with_article(
                m.first, m.last, _match_case(self._source(m.first, m.last), _display(new, m.form.plural))
            )
            for m in mentions
        ]

    def _add_partner(
        self, rng: random.Random, mention: _Mention, absent: tuple[tuple[str, float], ...]
    ) -> list[Edit]:
        """Name, after an object, one the source's answers usually name with it and this one does not:
        as the next item of a list the object is in ("a dog, a ball and a bus"), else beside it."""
        (partner,) = rng.choices([p for p, _ in absent], weights=[share for _, share in absent])
        noun = _display(partner, plural=False)
        added = _ADDED.get(noun, f"{_article_for(noun)} {noun}")
        last = mention.last
        gap, after = self._gap_after(last), self._word(last + 1)
        in_list = gap == ", " and after in _LIST_ITEM_STARTS or gap == " " and after == "and"
        joined = f", {added}" if in_list else f" {rng.choice(_BESIDE)} {added}"
        return [(last, last, self._source(last, last) + joined)]

    def _recolour(self, rng: random.Random, index: int) -> list[Edit]:
        current = _SAME_COLOUR.get(self.words[index], self.words[index])
        colour = rng.choice([c for c in _COLOURS if c != current])
        return [self._with_article(index, index, _match_case(self._source(index, index), colour))]

    def _recount(
        self, rng: random.Random, index: int, value: int, noun: _Mention | None, highest: int
    ) -> list[Edit]:
        new = rng.choice([v for v in (value - 1, value + 1, value + 2, value - 2) if 2 <= v <= highest])
        source = self._source(index, index)
        word = _match_case(source, _NUMBER_WORDS[new] if source.isalpha() else str(new))
        if value != 1 or noun is None:
            return [(index, index, word)]
        # "There is one dog" → "There are two dogs"
        plural = _match_case(self._source(noun.first, noun.last), self.vocabulary.plurals[noun.form.lemma])
        first, last, text = index, noun.last, word + self._gap_after(index) + plural
        before, after = self._word(index - 1), self._word(noun.last + 1)
        if before in _AGREEMENT and self._gap_after(index - 1).isspace():
            verb = _match_case(self._source(index - 1, index - 1), _AGREEMENT[before])
            first, text = index - 1, verb + self._gap_after(index - 1) + text
        if after in _AGREEMENT and self._gap_after(noun.last).isspace():
            verb = _match_case(self._source(last + 1, last + 1), _AGREEMENT[after])
            last, text = last + 1, text + self._gap_after(noun.last) + verb
        return [(first, last, text)]

    def _change_digit(self, rng: random.Random, index: int) -> list[Edit]:
        token = self._source(index, index)
        # Long numbers (years, prices) keep their leading digits, as a misread usually does.
        position = rng.choice([i for i, char in enumerate(token) if char.isdigit()][-2:])
        leading = (position == 0 or not token[position - 1].isdigit()) and token[
            position + 1 : position + 2
        ].isdigit()
        new = rng.choice([d for d in "0123456789"[1 if leading else 0 :] if d != token[position]])
        return [(index, index, token[:position] + new + token[position + 1 :])]


def classes_named(text: str) -> set[str]:
    """The COCO classes an answer names (people left out, as every rule leaves them out)."""
    return set(_Scan(text, vocabulary(), details=False).named)


class RulesInjector:
    """Deterministic rewrites: the same (unit key, seed) always gives the same rejected answer.

    ``cooccurrence`` (by source name) is what each source's answers name together; a unit of a
    source without one gets no added objects and swaps among all COCO classes.
    """

    def __init__(
        self,
        seed: int,
        max_edits: int = 2,
        validation: ValidationSpec | None = None,
        cooccurrence: dict[str, CoOccurrence] | None = None,
    ):
        if not 1 <= max_edits <= 3:
            raise ValueError(f"max_edits must be 1, 2 or 3 (got {max_edits})")
        self.seed = seed
        self.max_edits = max_edits
        self.validation = validation or ValidationSpec()
        self._vocabulary = vocabulary()
        # a source naming no class often enough has no usual classes: it swaps among all of them
        self._habits: dict[str, tuple[Partners, frozenset[str] | None]] = {
            source: (table.partners(), table.usual() or None)
            for source, table in (cooccurrence or {}).items()
        }

    def rewrite(self, unit: Unit, attempts: int = 4) -> tuple[str, list[str]] | None:
        """(rewritten answer, error types applied), or None when no rule gives a valid rewrite."""
        text = unit.answer
        scan = _Scan(text, self._vocabulary, *self._habits.get(unit.source, (None, None)))
        if not scan.candidates:
            return None
        rng = random.Random(stable_u64(unit.key, self.seed, "rules"))
        categories = [c for c in KINDS if c in scan.candidates]
        low, high = self.validation.min_length_ratio, self.validation.max_length_ratio
        for _ in range(attempts):
            rewritten, applied = self._apply(scan, categories, rng)
            # Every edit changes a word into a different one, so only the length can fail validation.
            if low <= len(rewritten) / len(text) <= high:
                types = {_ERROR_TYPE_OF[kind] for kind in applied}
                return rewritten, [t for t in ERROR_TYPES if t in types]
        return None

    def _apply(self, scan: _Scan, categories: list[str], rng: random.Random) -> tuple[str, set[str]]:
        order = categories[:]
        rng.shuffle(order)
        taken: list[Edit] = []
        applied: set[str] = set()
        for step in range(rng.randint(1, self.max_edits)):
            category = order[step % len(order)]
            edits = scan.edits(rng.choice(scan.candidates[category]), rng)
            if any(
                first <= last2 and first2 <= last for first, last, _ in edits for first2, last2, _ in taken
            ):
                continue
            taken.extend(edits)
            applied.add(category)
        parts = scan.parts[:]
        for first, last, replacement in taken:
            parts[2 * first + 1] = replacement
            parts[2 * first + 2 : 2 * last + 2] = [""] * (2 * (last - first))
        return "".join(parts), applied
