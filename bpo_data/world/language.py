"""Text about a scene, written from its scene graph by templates.

Three styles, one per source the world imitates: detailed captions (ShareGPT4V), questions about
the sign's text (LLaVAR) and multi-turn conversations about colours, counts, positions and
existence (LLaVA-Instruct). Every choice of wording goes through the caller's ``random.Random``,
so a scene's text is fixed by the world's seed, and the many templates (opening, sentence shape,
verb, synonym, object order, relations, closing) keep a model from learning one sentence per
scene. Text only ever names objects that are in the scene — except the answers to existence and
counting questions about absent ones ("No, there is no ball."), which are QA, not descriptions.

Object names are COCO words that ``bpo_data.coco_objects`` reads back as the scene's classes
(a test checks every name). Colours avoid "orange", which that reader counts as the fruit.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from bpo_data.world.params import WORLD, WorldParams
from bpo_data.world.scenes import Scene, SceneObject, cell_centre

# The 8 detailed-description instructions of Object HalBench as RLHF-V evaluates it (Yu et al.,
# "RLHF-V", CVPR 2024, arXiv:2312.00849, appendix table "The list of instructions for Object
# HalBench"; RLAIF-V's eval/eval_gpt_obj_halbench.py scores answers to them). Kept verbatim.
OBJHAL_PROMPTS: tuple[str, ...] = (
    "Provide a thorough description of the given image.",
    "What is this photo about? Please answer in great detail.",
    "Provide a thorough description of the given picture.",
    "Explain the narrative or story that the image seems to convey, detailing each part that contributes "
    "to it.",
    "Please provide a detailed description of the image. Describe the visual elements, colors, shapes, "
    "textures, and any objects or people present along with the overall mood or atmosphere portrayed in "
    "the image.",
    "Please provide a detailed description of the image, including its visual elements, such as colors, "
    "shapes, textures, objects, and people.",
    "Provide an intricate description of the image, capturing its visual elements, including colors, shapes, "
    "textures, objects, and any people present.",
    "Compose a detailed account of the image, encompassing its visual characteristics, like colors, shapes, "
    "textures, objects, and any human subjects, by paying careful attention to the specifics.",
)

# Training instructions for detailed descriptions, in our own words (none is an Object HalBench one).
DESCRIBE_PROMPTS: tuple[str, ...] = (
    "Describe this image in detail.",
    "Give a detailed description of the picture.",
    "What do you see in this image? Describe it thoroughly.",
    "Describe the scene in the picture.",
    "Write a detailed caption for this image.",
    "Explain what is shown in the image in detail.",
    "What is happening in this picture? Please describe it.",
    "Tell me about this image in detail.",
    "Describe everything you can see in the picture.",
    "Provide a detailed description of this image.",
    "Describe the objects in this image and their colors.",
    "What objects are in the picture? Describe them in detail.",
)
# The instruction the world's own evaluation asks for descriptions.
EVAL_DESCRIBE_PROMPT = DESCRIBE_PROMPTS[0]

BRIEF_PROMPTS: tuple[str, ...] = (
    "Give a short caption for this image.",
    "Briefly describe the image.",
    "Summarize the picture in one sentence.",
    "What is in this picture?",
)

COUNT_WORDS = ("no", "one", "two", "three", "four", "five")

_KINDS = ("no kind", "one kind", "two kinds", "three kinds", "four kinds", "five kinds", "six kinds")
_PLACE_PREP = {"park": "in", "street": "on", "room": "in", "lake": "on"}
_POSITION_PHRASES = {
    "left": (
        "on the left",
        "on the left side",
        "at the left of the picture",
        "on the left side of the image",
    ),
    "right": (
        "on the right",
        "on the right side",
        "at the right of the picture",
        "on the right side of the image",
    ),
    "top": ("at the top", "near the top", "at the top of the picture", "in the upper part of the image"),
    "bottom": (
        "at the bottom",
        "near the bottom",
        "at the bottom of the picture",
        "in the lower part of the image",
    ),
    "centre": (
        "in the centre",
        "in the middle",
        "in the centre of the picture",
        "in the middle of the image",
    ),
}
# Words an answer may use for each position (what the QA scorer accepts).
POSITION_WORDS = {
    "left": ("left",),
    "right": ("right",),
    "top": ("top", "upper"),
    "bottom": ("bottom", "lower"),
    "centre": ("centre", "center", "middle"),
}
_PLURAL_VERBS = {
    "stands": "stand",
    "waits": "wait",
    "plays": "play",
    "runs": "run",
    "sits": "sit",
    "rests": "rest",
    "flies": "fly",
    "perches": "perch",
    "drives": "drive",
    "leans": "lean",
    "floats": "float",
    "sails": "sail",
    "drifts": "drift",
    "shines": "shine",
    "lies": "lie",
    "rolls": "roll",
    "hangs": "hang",
    "grows": "grow",
}
_SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
# How a pair's two objects relate when both are in the scene (text a real caption would add).
_PAIR_SENTENCES = {
    ("dog", "sports ball"): ("The {a} is playing with the {b}.", "The {a} seems to chase the {b}."),
    ("bus", "person"): ("The {b} seems to wait for the {a}.", "The {b} is about to get on the {a}."),
    ("cup", "dining table"): (
        "The {a} belongs on the {b}.",
        "The {a} and the {b} make a small dining corner.",
    ),
    ("boat", "bird"): ("The {b} flies over the water near the {a}.", "The {b} keeps the {a} company."),
    ("car", "traffic light"): (
        "The {a} waits for the {b} to turn green.",
        "The {b} controls the road for the {a}.",
    ),
}


@dataclass(frozen=True)
class QAItem:
    """An evaluation question with the one word its answer must contain (``expected``)."""

    type: str  # colour | count | position | sign | existence
    question: str
    answer: str
    expected: str
    cls: str | None = None


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _join(items: Sequence[str]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


class _Writer:
    """Words for one scene: each object keeps one name throughout a text (dog stays dog)."""

    def __init__(self, scene: Scene, rng: random.Random, params: WorldParams):
        self.scene, self.rng, self.params = scene, rng, params
        self.names: dict[str, int] = {}
        for obj in scene.objects:
            words = params.cls(obj.cls).words
            self.names[obj.cls] = 0 if rng.random() < 0.7 else rng.randrange(len(words))

    def noun(self, obj: SceneObject, plural: bool | None = None) -> str:
        spec = self.params.cls(obj.cls)
        index = self.names.get(obj.cls, 0)
        many = obj.count > 1 if plural is None else plural
        return spec.plurals[index] if many else spec.words[index]

    def np(self, obj: SceneObject, colour: bool = True, size: bool | None = None) -> str:
        """'a small brown dog', 'two white cups'."""
        words = []
        if size is None:
            size = obj.count == 1 and self.rng.random() < 0.5
        if size:
            words.append(self.rng.choice(_SIZE_WORDS[obj.size]))
        if colour:
            words.append(obj.colour)
        words.append(self.noun(obj))
        head = "a" if obj.count == 1 else COUNT_WORDS[obj.count]
        return " ".join([head, *words])

    def be(self, obj: SceneObject) -> str:
        return "is" if obj.count == 1 else "are"

    def verb(self, obj: SceneObject) -> str:
        verb = self.rng.choice(self.params.cls(obj.cls).verbs)
        if obj.count == 1:
            return verb
        return "are " + verb[3:] if verb.startswith("is ") else _PLURAL_VERBS[verb]

    def where(self, obj: SceneObject) -> str:
        return self.rng.choice(_POSITION_PHRASES[obj.position])

    def place(self) -> str:
        phrase = self.rng.choice(self.params.settings[self.scene.setting]["phrases"])
        return f"{_PLACE_PREP[self.scene.setting]} {phrase}"

    def the(self, obj: SceneObject) -> str:
        return "the " + self.noun(obj)

    def object_sentence(self, obj: SceneObject) -> str:
        np, where, be = self.np(obj), self.where(obj), self.be(obj)
        templates = (
            f"{_cap(where)}, there {be} {np}.",
            f"{_cap(np)} {self.verb(obj)} {where}.",
            f"{_cap(where)} {be} {np}.",
            f"There {be} {np} {where}.",
            f"{_cap(np)} can be seen {where}.",
            f"{_cap(where)}, you can see {np}.",
            f"{_cap(where)}, {np} {self.verb(obj)}.",
        )
        return self.rng.choice(templates)

    def relation(self, obj: SceneObject, other: SceneObject) -> str | None:
        """'The ball is below the dog.' from the two cells, when one is beside, above or below the other."""
        (x, y), (ox, oy) = cell_centre(obj.position, self.params), cell_centre(other.position, self.params)
        if y == oy:
            side = "to the left of" if x < ox else "to the right of"
        elif x == ox:
            side = "above" if y < oy else "below"
        else:
            return None
        return f"{_cap(self.the(obj))} {self.be(obj)} {side} {self.the(other)}."

    def sign_sentence(self) -> str:
        sign = self.scene.sign
        assert sign is not None
        corner = f"the {sign.corner} corner"
        if sign.is_number:
            templates = (
                f"A {sign.board} sign in {corner} shows the number {sign.text}.",
                f"In {corner}, a {sign.board} sign displays the number {sign.text}.",
                f"The number {sign.text} is written on a {sign.board} sign in {corner}.",
            )
        else:
            templates = (
                f'A {sign.board} sign in {corner} reads "{sign.text}".',
                f'In {corner} there is a {sign.board} sign with the word "{sign.text}".',
                f'A sign saying "{sign.text}" stands in {corner}.',
                f'The word "{sign.text}" is written on a {sign.board} sign in {corner}.',
            )
        return self.rng.choice(templates)


def describe(scene: Scene, rng: random.Random, params: WorldParams = WORLD) -> str:
    """A detailed caption, ShareGPT4V-like: setting, the objects one by one, relations, sign, closing."""
    w = _Writer(scene, rng, params)
    objects = list(scene.objects)
    if rng.random() < 0.5:
        rng.shuffle(objects)
    kinds = len(objects) + (scene.sign is not None)
    sentences = [
        rng.choice(
            (
                f"The image shows a simple scene {w.place()}.",
                f"This is a simple picture of a scene {w.place()}.",
                f"The picture depicts a scene {w.place()}.",
                f"In this image we see a scene {w.place()}.",
                f"This drawing shows a view {w.place()}.",
            )
        )
    ]
    if rng.random() < 0.5:
        listing = _join([w.np(o, colour=False, size=False) for o in objects])
        be = "is" if len(objects) == 1 and objects[0].count == 1 else "are"
        sentences.append(rng.choice((f"It contains {listing}.", f"In it there {be} {listing}.")))
    for i, obj in enumerate(objects):
        sentences.append(w.object_sentence(obj))
        if i > 0 and rng.random() < 0.3:
            relation = w.relation(obj, objects[i - 1])
            if relation:
                sentences.append(relation)
    for first, partner in params.pairs.items():
        a, b = scene.object(first), scene.object(partner)
        if a and b and a.count == 1 and b.count == 1 and rng.random() < 0.5:
            sentences.append(rng.choice(_PAIR_SENTENCES[(first, partner)]).format(a=w.noun(a), b=w.noun(b)))
    if scene.sign is not None:
        sentences.append(w.sign_sentence())
    if rng.random() < 0.6:
        sentences.append(
            rng.choice(
                (
                    "The background is plain and there is nothing else in the picture.",
                    "Nothing else is visible in the scene.",
                    "Overall, it is a simple and tidy scene.",
                    f"Altogether the picture shows {_KINDS[kinds]} of things.",
                    "The rest of the picture is empty.",
                )
            )
        )
    return " ".join(sentences)


def brief(scene: Scene, rng: random.Random, params: WorldParams = WORLD) -> str:
    """A one-sentence caption: 'A brown dog and a red ball in a grassy park.'"""
    w = _Writer(scene, rng, params)
    listing = _join([w.np(o, size=False) for o in scene.objects])
    text = f"{_cap(listing)} {w.place()}."
    if scene.sign is not None and rng.random() < 0.5:
        text = text[:-1] + f', with a sign that says "{scene.sign.text}".'
    return text


def _colour_qa(w: _Writer, obj: SceneObject) -> tuple[str, str]:
    noun, be = w.noun(obj), w.be(obj)
    question = w.rng.choice(
        (
            f"What colour {be} the {noun}?",
            f"What color {be} the {noun}?",
            f"What is the colour of the {noun}?",
        )
    )
    answer = w.rng.choice(
        (
            f"The {noun} {be} {obj.colour}.",
            f"{_cap(obj.colour)}.",
            f"The {noun} {w.where(obj)} {be} {obj.colour}.",
        )
    )
    return question, answer


def _count_qa(w: _Writer, obj: SceneObject) -> tuple[str, str]:
    plural = w.noun(obj, plural=True)
    question = w.rng.choice(
        (
            f"How many {plural} are there?",
            f"How many {plural} can you see?",
            f"How many {plural} are in the picture?",
        )
    )
    number = COUNT_WORDS[obj.count]
    answer = w.rng.choice(
        (
            f"There {w.be(obj)} {number} {w.noun(obj)}.",
            f"I can see {number} {w.noun(obj)}.",
            f"{_cap(number)}.",
        )
    )
    return question, answer


def _position_qa(w: _Writer, obj: SceneObject) -> tuple[str, str]:
    noun, be = w.noun(obj), w.be(obj)
    question = w.rng.choice(
        (
            f"Where {be} the {noun}?",
            f"Where {be} the {noun} in the picture?",
            f"In which part of the image {be} the {noun}?",
        )
    )
    where = w.where(obj)
    answer = w.rng.choice((f"The {noun} {be} {where}.", f"{_cap(where)}."))
    return question, answer


def _existence_qa(w: _Writer, cls: str) -> tuple[str, str]:
    obj = w.scene.object(cls)
    spec = w.params.cls(cls)
    word = spec.words[w.names.get(cls, 0)]
    question = w.rng.choice(
        (
            f"Is there a {word} in the image?",
            f"Can you see a {word} in the picture?",
            f"Does the picture contain a {word}?",
        )
    )
    if obj is None:
        answer = w.rng.choice((f"No, there is no {word} in the image.", f"No, I cannot see a {word}."))
    else:
        answer = w.rng.choice(
            (
                f"Yes, there {w.be(obj)} {w.np(obj)} {w.where(obj)}.",
                f"Yes, {w.np(obj)} {w.be(obj)} {w.where(obj)}.",
            )
        )
    return question, answer


def _size_qa(w: _Writer, obj: SceneObject) -> tuple[str, str]:
    noun = w.noun(obj)
    question = w.rng.choice((f"Is the {noun} large or small?", f"Is the {noun} big or small?"))
    return question, w.rng.choice((f"The {noun} is {obj.size}.", f"It is {obj.size}."))


def _what_at_qa(w: _Writer, position: str) -> tuple[str, str]:
    where = w.rng.choice(_POSITION_PHRASES[position][:2])
    obj = next((o for o in w.scene.objects if o.position == position), None)
    question = f"What is {where}?"
    if obj is None:
        return question, f"There is nothing {where}."
    return question, w.rng.choice((f"{_cap(where)} there {w.be(obj)} {w.np(obj)}.", f"{_cap(w.np(obj))}."))


def _sign_qa(w: _Writer, kind: str) -> tuple[str, str]:
    sign = w.scene.sign
    assert sign is not None
    if kind == "text" and sign.is_number:
        return w.rng.choice(
            (
                ("What number is on the sign?", f"The sign shows the number {sign.text}."),
                ("What does the sign say?", f"The sign shows the number {sign.text}."),
                ("Which number is written on the sign?", f"The number {sign.text} is written on the sign."),
            )
        )
    if kind == "text":
        return w.rng.choice(
            (
                ("What does the sign say?", f'The sign says "{sign.text}".'),
                ("What is written on the sign?", f'The word "{sign.text}" is written on the sign.'),
                ("What word can you read on the sign?", f'I can read the word "{sign.text}".'),
            )
        )
    if kind == "board":
        return "What colour is the sign?", f"The sign is {sign.board} with black letters."
    return "Where is the sign?", f"The sign is in the {sign.corner} corner."


def _absent_class(w: _Writer) -> str:
    """An absent class to ask about: the missing partner of a present first object when there is one."""
    present = w.scene.classes
    missing_partners = [p for f, p in w.params.pairs.items() if f in present and p not in present]
    if missing_partners and w.rng.random() < 0.5:
        return w.rng.choice(missing_partners)
    return w.rng.choice([c for c in w.params.class_names if c not in present])


def conversation(scene: Scene, rng: random.Random, params: WorldParams = WORLD) -> list[tuple[str, str]]:
    """3-6 question/answer turns, LLaVA-Instruct-like: colour, count, position, existence, size…"""
    w = _Writer(scene, rng, params)
    pool: list[tuple[str, str]] = []
    for obj in scene.objects:
        maker = rng.choice((_colour_qa, _colour_qa, _count_qa, _position_qa, _position_qa))
        pool.append(maker(w, obj))
        if obj.count == 1 and rng.random() < 0.2:
            pool.append(_size_qa(w, obj))
        if obj.count > 1 and rng.random() < 0.5:
            pool.append(_count_qa(w, obj))
    obj = rng.choice(scene.objects)
    pool.append(_existence_qa(w, obj.cls))
    pool.append(_existence_qa(w, _absent_class(w)))
    if rng.random() < 0.3:
        pool.append(_what_at_qa(w, rng.choice(params.positions)))
    if scene.sign is not None and rng.random() < 0.3:
        pool.append(_sign_qa(w, "text"))
    rng.shuffle(pool)
    return pool[: rng.randint(3, 6)]


def text_qa(scene: Scene, rng: random.Random, params: WorldParams = WORLD) -> list[tuple[str, str]]:
    """LLaVAR-like questions about the sign (its text first), then one about the scene."""
    w = _Writer(scene, rng, params)
    turns = [_sign_qa(w, "text")]
    extra = [_sign_qa(w, "board"), _sign_qa(w, "corner")]
    rng.shuffle(extra)
    turns += extra[: rng.randint(0, 2)]
    if rng.random() < 0.5:
        turns.append(_colour_qa(w, rng.choice(scene.objects)))
    return turns


def eval_questions(scene: Scene, rng: random.Random, params: WorldParams = WORLD) -> list[QAItem]:
    """One question per type that applies, asked with the class's usual name; ``expected`` scores it."""
    w = _Writer(scene, rng, params)
    w.names = {cls: 0 for cls in w.names}
    items = []
    obj = rng.choice(scene.objects)
    q, a = _colour_qa(w, obj)
    items.append(QAItem("colour", q, a, obj.colour, obj.cls))
    countable = [o for o in scene.objects if params.cls(o.cls).countable]
    obj = rng.choice(countable or list(scene.objects))
    q, a = _count_qa(w, obj)
    items.append(QAItem("count", q, a, COUNT_WORDS[obj.count], obj.cls))
    obj = rng.choice(scene.objects)
    q, a = _position_qa(w, obj)
    items.append(QAItem("position", q, a, obj.position, obj.cls))
    if scene.sign is not None:
        q, a = _sign_qa(w, "text")
        items.append(QAItem("sign", q, a, scene.sign.text))
    missing_partners = sorted(
        p for f, p in params.pairs.items() if f in scene.classes and p not in scene.classes
    )
    if scene.violations and missing_partners:
        cls = rng.choice(missing_partners)
    elif rng.random() < 0.5:
        cls = rng.choice(sorted(scene.classes))
    else:
        cls = _absent_class(w)
    q, a = _existence_qa(w, cls)
    items.append(QAItem("existence", q, a, "yes" if scene.object(cls) else "no", cls))
    return items
