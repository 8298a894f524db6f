"""Whether an answer truly contradicts a miniature-world picture, judged from its scene graph.

This is the ground truth that verification is measured against (issue 14, item 3), so it reads the
world's answers claim by claim instead of scoring them. An answer **contradicts** its picture when
one of its sentences states something the scene graph says is false:

- ``object``: it names a COCO object the scene does not have (read with the Object HalBench reader,
  so objects outside the world's 16 classes count too), or says one the scene has is absent
  ("No, there is no ball");
- ``colour`` / ``size``: an object's colour or size word is not the scene's (a colour word before
  the noun, "a red ball", or after it in a sentence about that object alone, "The ball is red");
- ``count``: a number before the noun ("two cups"), "a cup" for a group, or a plural for one object,
  is not the scene's count; "two kinds of things" is not the number of groups (the sign included);
- ``position``: a sentence about one object places it in another cell ("on the left"), or a
  relation between two objects ("The ball is below the dog") is false of their cells;
- ``sign``: a sign is mentioned where there is none, or its text, board colour or corner is wrong;
- ``setting``: the place is named wrongly (park, street, room, lake).

Short answers take their object (and a position asked about) from the question: "What colour is the
dog?" "Black." claims the dog is black. What an answer leaves out is not a contradiction, nor is a
sentence that names nothing checkable. The same reader applied to the world's own (chosen) answers
finds no contradiction (a test checks every answer of the embedded sample), which is what makes
it a fair judge of the rejected ones.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from bpo_data.verify.objects import objects
from bpo_data.world.params import WORLD, WorldParams
from bpo_data.world.scenes import Scene, SceneObject, cell_centre

NEGATIONS = frozenset({"no", "not", "cannot", "nothing", "without", "neither", "nor", "never", "isn"})
COUNT_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8}
SIZE_WORDS = {"small": "small", "little": "small", "large": "large", "big": "large"}
# Colour words an answer may use, the world's own and the rules injector's (any of them is a claim).
EXTRA_COLOURS = {
    "gray": "grey",
    "orange": "orange",
    "silver": "silver",
    "beige": "beige",
    "golden": "golden",
    "gold": "golden",
}
POSITION_WORDS = {
    "left": "left",
    "right": "right",
    "top": "top",
    "upper": "top",
    "bottom": "bottom",
    "lower": "bottom",
    "centre": "centre",
    "center": "centre",
    "middle": "centre",
}
RELATIONS = {"above": "above", "below": "below", "under": "below", "beneath": "below"}
SETTING_WORDS = ("park", "street", "room", "lake")
LETTERS = "black"  # signs are lettered in near-black (scenes.py draws text in (20, 20, 20))
_EXISTENCE = (["is", "there"], ["can", "you"], ["does", "the"])  # how existence questions start
_TOKEN = re.compile(r"[a-z0-9]+|\"")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|,\s*(?=with (?:a|the) (?:\w+ )?sign\b)")


@dataclass(frozen=True)
class Contradiction:
    """One false claim: its kind (see the module docstring) and what was said against what is true."""

    kind: str
    detail: str


@dataclass(frozen=True)
class _Mention:
    start: int  # first token of the noun
    end: int  # one past its last token
    cls: str
    plural: bool


class _Lexicon:
    """The world's nouns (one or two words) by their token sequences, and its colour words."""

    def __init__(self, params: WorldParams):
        self.nouns: dict[tuple[str, ...], tuple[str, bool]] = {}
        for spec in params.classes:
            for word in spec.words:
                self.nouns[tuple(word.split())] = (spec.name, False)
            for word in spec.plurals:
                self.nouns[tuple(word.split())] = (spec.name, True)
        self.colours = {c: c for c in params.colours} | EXTRA_COLOURS

    def mentions(self, tokens: list[str]) -> list[_Mention]:
        found, i = [], 0
        while i < len(tokens):
            for width in (2, 1):
                hit = self.nouns.get(tuple(tokens[i : i + width]))
                if hit and len(tokens[i : i + width]) == width:
                    found.append(_Mention(i, i + width, hit[0], hit[1]))
                    i += width
                    break
            else:
                i += 1
        return found


_LEXICONS: dict[int, _Lexicon] = {}


def _lexicon(params: WorldParams) -> _Lexicon:
    """One lexicon per parameter set (``WorldParams`` holds dicts, so it cannot key a cache itself)."""
    if id(params) not in _LEXICONS:
        _LEXICONS[id(params)] = _Lexicon(params)
    return _LEXICONS[id(params)]


def contradictions(
    answer: str, scene: Scene, question: str = "", params: WorldParams = WORLD
) -> list[Contradiction]:
    """Every false claim of ``answer`` about ``scene`` (empty: it contradicts nothing)."""
    lexicon = _lexicon(params)
    q_tokens = _TOKEN.findall(question.lower())
    q_mentions = lexicon.mentions(q_tokens)
    q_position = _positions(q_tokens)
    found: list[Contradiction] = []
    for sentence in _SENTENCE.split(answer.strip()):
        found += _sentence(sentence, scene, params, lexicon, q_tokens, q_mentions, q_position)
    return list(dict.fromkeys(found))


def _positions(tokens: list[str]) -> list[str]:
    """Cell positions named in a sentence, corners ("top left corner") left out: they place the sign."""
    places = []
    for i, token in enumerate(tokens):
        place = POSITION_WORDS.get(token)
        if place is None:
            continue
        near = tokens[max(0, i - 1) : i + 3]
        if "corner" in near or (
            place in ("top", "bottom") and i + 1 < len(tokens) and tokens[i + 1] in ("left", "right")
        ):
            continue
        if place in ("left", "right") and i > 0 and tokens[i - 1] in ("top", "bottom"):
            continue
        places.append(place)
    return places


def _sentence(
    sentence: str,
    scene: Scene,
    params: WorldParams,
    lexicon: _Lexicon,
    q_tokens: list[str],
    q_mentions: list[_Mention],
    q_position: list[str],
) -> Iterable[Contradiction]:
    tokens = _TOKEN.findall(sentence.lower())
    if not tokens:
        return
    negated = any(t in NEGATIONS for t in tokens)
    mentions = lexicon.mentions(tokens)
    # Objects outside the world's words (the rules injector may write any COCO class).
    for cls in sorted(objects(sentence)):
        if cls not in scene.classes and not negated:
            yield Contradiction("object", f"names a {cls}, which the picture does not have")
    yield from _setting(tokens, scene, lexicon, params)
    yield from _kinds(tokens, scene)
    tokens = _without_setting_phrase(tokens)
    if _is_sign_sentence(tokens, mentions):
        yield from _sign(sentence, tokens, scene, lexicon)
        return
    if not mentions and q_mentions and tokens[0] in ("yes", "no") and q_tokens[:2] in _EXISTENCE:
        yield from _existence(q_mentions[0].cls, scene, present=tokens[0] == "yes")
        return
    if not mentions and q_mentions and not negated:
        # A short answer about the question's object: "Black.", "It is large.", "Two."
        subject = scene.object(q_mentions[0].cls)
        if subject is not None:
            yield from _attributes(tokens, list(range(len(tokens))), subject, lexicon)
            yield from _count_words(tokens, range(len(tokens)), subject)
            yield from _position(_positions(tokens), subject)
        return
    if negated:
        for mention in mentions:
            if scene.object(mention.cls) is not None and tokens[0] != "yes":
                yield Contradiction("object", f"says there is no {mention.cls}, but there is one")
        if not mentions and "nothing" in tokens:
            for place in _positions(tokens):
                there = [o.cls for o in scene.objects if o.position == place]
                if there:
                    yield Contradiction("position", f"says nothing is {place}, but a {there[0]} is")
        return
    relation = _relation(tokens, mentions)
    for mention in mentions:
        obj = scene.object(mention.cls)
        if obj is None:
            continue  # already counted as an absent object
        yield from _np(tokens, mention, obj, lexicon)
    if relation is not None:
        yield from _check_relation(*relation, scene, params)
        return
    if len(mentions) == 1:
        obj = scene.object(mentions[0].cls)
        if obj is None:
            return
        yield from _attributes(tokens, range(mentions[0].end, len(tokens)), obj, lexicon)
        places = _positions(tokens) or (q_position if q_tokens[:2] == ["what", "is"] else [])
        yield from _position(places, obj)


def _existence(cls: str, scene: Scene, present: bool) -> Iterable[Contradiction]:
    if present and scene.object(cls) is None:
        yield Contradiction("object", f"says there is a {cls}, but there is none")
    if not present and scene.object(cls) is not None:
        yield Contradiction("object", f"says there is no {cls}, but there is one")


def _np(tokens: list[str], mention: _Mention, obj: SceneObject, lexicon: _Lexicon) -> Iterable[Contradiction]:
    """Claims of the words before a noun: 'two small white cups', 'a brown dog'."""
    i = mention.start - 1
    modifiers = []
    while i >= 0 and (
        tokens[i] in lexicon.colours
        or tokens[i] in SIZE_WORDS
        or tokens[i] in COUNT_WORDS
        or tokens[i] in ("a", "an")
    ):
        modifiers.append(i)
        i -= 1
    yield from _attributes(tokens, modifiers, obj, lexicon)
    yield from _count_words(tokens, modifiers, obj)
    article = any(tokens[j] in ("a", "an") for j in modifiers)
    if article and obj.count > 1:
        yield Contradiction("count", f"says one {obj.cls}, but there are {obj.count}")
    if mention.plural and obj.count == 1 and not any(tokens[j] in COUNT_WORDS for j in modifiers):
        yield Contradiction("count", f"speaks of several {obj.cls}s, but there is one")


def _attributes(
    tokens: list[str], indices: Iterable[int], obj: SceneObject, lexicon: _Lexicon
) -> Iterable[Contradiction]:
    for i in indices:
        word = tokens[i]
        colour = lexicon.colours.get(word)
        if colour is not None and colour != obj.colour and not _names_letters(tokens, i):
            yield Contradiction("colour", f"says the {obj.cls} is {word}, but it is {obj.colour}")
        size = SIZE_WORDS.get(word)
        if size is not None and size != obj.size:
            yield Contradiction("size", f"says the {obj.cls} is {word}, but it is {obj.size}")


def _count_words(tokens: list[str], indices: Iterable[int], obj: SceneObject) -> Iterable[Contradiction]:
    for i in indices:
        count = COUNT_WORDS.get(tokens[i])
        if count is not None and count != obj.count and tokens[i + 1 : i + 2] != ["kinds"]:
            yield Contradiction("count", f"says {tokens[i]} {obj.cls}, but there are {obj.count}")


def _names_letters(tokens: list[str], i: int) -> bool:
    return tokens[i + 1 : i + 2] == ["letters"]


def _position(places: list[str], obj: SceneObject) -> Iterable[Contradiction]:
    for place in places:
        if place != obj.position:
            yield Contradiction("position", f"places the {obj.cls} {place}, but it is {obj.position}")


def _relation(tokens: list[str], mentions: list[_Mention]) -> tuple[str, str, str] | None:
    """(subject class, relation, object class) of 'X is above Y' / 'X is to the left of Y'."""
    if len(mentions) != 2:
        return None
    between = tokens[mentions[0].end : mentions[1].start]
    for i, token in enumerate(between):
        if token in RELATIONS:
            return mentions[0].cls, RELATIONS[token], mentions[1].cls
        if token in ("left", "right") and between[i + 1 : i + 2] == ["of"]:
            return mentions[0].cls, token, mentions[1].cls
    return None


def _check_relation(subject: str, relation: str, other: str, scene: Scene, params: WorldParams):
    a, b = scene.object(subject), scene.object(other)
    if a is None or b is None:
        return
    (ax, ay), (bx, by) = cell_centre(a.position, params), cell_centre(b.position, params)
    holds = {"above": ay < by, "below": ay > by, "left": ax < bx, "right": ax > bx}[relation]
    if not holds:
        yield Contradiction("position", f"says the {subject} is {relation} the {other}, which it is not")


def _setting_span(tokens: list[str], k: int) -> tuple[int, int]:
    """Tokens of the place phrase around setting word ``k``: "a grey street", "a room with a beige wall"."""
    start = k - 2 if k >= 2 and tokens[k - 2] in ("a", "an", "the") else k - 1
    end = k + 5 if tokens[k + 1 : k + 2] == ["with"] else k + 1
    return max(0, start), min(end, len(tokens))


def _setting(
    tokens: list[str], scene: Scene, lexicon: _Lexicon, params: WorldParams
) -> Iterable[Contradiction]:
    """The place named, and the colours of its phrase (the background: green grass, a beige wall…)."""
    background = {
        lexicon.colours[word]
        for phrase in params.settings[scene.setting]["phrases"]
        for word in phrase.split()
        if word in lexicon.colours
    }
    for k, word in enumerate(tokens):
        if word not in SETTING_WORDS:
            continue
        if word != scene.setting:
            yield Contradiction("setting", f"places the scene in a {word}, but it is a {scene.setting}")
            continue
        start, end = _setting_span(tokens, k)
        for colour in (lexicon.colours[t] for t in tokens[start:end] if t in lexicon.colours):
            if colour not in background:
                yield Contradiction("setting", f"says the {word} is {colour}, but it is not")


def _without_setting_phrase(tokens: list[str]) -> list[str]:
    """Blank out "on a grey street", "in a room with a beige wall": their colours describe the place."""
    out = list(tokens)
    for k, token in enumerate(tokens):
        if token in SETTING_WORDS:
            start, end = _setting_span(tokens, k)
            out[start:end] = ["_"] * (end - start)
    return out


def _kinds(tokens: list[str], scene: Scene) -> Iterable[Contradiction]:
    if "kinds" in tokens or "kind" in tokens:
        at = tokens.index("kinds" if "kinds" in tokens else "kind")
        said = COUNT_WORDS.get(tokens[at - 1]) if at else None
        kinds = len(scene.objects) + (scene.sign is not None)
        if said is not None and said != kinds:
            yield Contradiction("count", f"says {said} kinds of things, but there are {kinds}")


def _is_sign_sentence(tokens: list[str], mentions: list[_Mention]) -> bool:
    """A sentence about the board in a corner (the noun 'sign' not in 'stop sign', or a quoted word)."""
    stop_signs = {m.start + 1 for m in mentions if m.cls == "stop sign"}
    return '"' in tokens or any(t in ("sign", "signs") and i not in stop_signs for i, t in enumerate(tokens))


def _sign(sentence: str, tokens: list[str], scene: Scene, lexicon: _Lexicon) -> Iterable[Contradiction]:
    sign = scene.sign
    if sign is None:
        yield Contradiction("sign", "mentions a sign, but the picture has none")
        return
    said = re.findall(r'"([^"]+)"', sentence) + re.findall(r"\bnumber (\w+)", sentence)
    for text in said:
        if text.upper() != sign.text.upper():
            yield Contradiction("sign", f'says the sign reads "{text}", but it reads "{sign.text}"')
    for i, token in enumerate(tokens):
        colour = lexicon.colours.get(token)
        if colour is None:
            continue
        if _names_letters(tokens, i):
            if colour != LETTERS:
                yield Contradiction("sign", f"says the letters are {token}, but they are {LETTERS}")
        elif colour != sign.board:
            yield Contradiction("sign", f"says the sign is {token}, but it is {sign.board}")
    if "corner" in tokens:
        at = tokens.index("corner")
        corner = " ".join(t for t in tokens[max(0, at - 2) : at] if t in ("top", "bottom", "left", "right"))
        if corner and corner != sign.corner:
            yield Contradiction("sign", f"puts the sign in the {corner} corner, but it is {sign.corner}")
