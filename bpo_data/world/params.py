"""The miniature world's fixed parameters, as plain data.

Everything a comparison may cite lives here: which COCO classes exist, which colours each can
have and which one is typical, which object usually comes with which partner and how often, how
big the pictures are. ``make_world`` writes ``WorldParams.to_json()`` into every world folder
(``world.json``) and training copies it next to the model's weights, so a result can always name
the world it was measured in. Change a value here and every world made afterwards says so.

The language prior the world teaches comes only from these statistics: a dog is followed by a
ball in 85 % of the training scenes that have a dog, most buses are yellow. Nothing else in the
generator, the text or the training favours the partner.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

WORLD_VERSION = "1"

# RGB of each colour word. No "orange": the caption reader would count it as the COCO fruit.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (210, 35, 35),
    "blue": (35, 75, 205),
    "green": (35, 150, 55),
    "yellow": (245, 205, 25),
    "white": (250, 250, 250),
    "black": (25, 25, 25),
    "brown": (125, 75, 35),
    "grey": (135, 135, 135),
    "purple": (135, 50, 170),
    "pink": (245, 140, 185),
}


# Scenes in each held-out split of a world by default (not a parameter of the world: a scene's graph does
# not depend on how many are made, so a world with more held-out scenes holds a smaller one's as its
# first). On 200 the 95 % interval of a fine-tune's drop in prior-violating CHAIRi was 30 points wide.
HELD_OUT_SCENES = 1000


@dataclass(frozen=True)
class ObjectClass:
    """One COCO class of the world: how text names it, which colours it comes in, where it lives.

    ``words``/``plurals``: the names captions use (the first is the usual one); every one reads
    back as ``name`` with ``bpo_data.coco_objects``. ``typical``: the colour it has with
    probability ``typical_rate`` (else one of the other ``colours``, uniformly).
    """

    name: str
    words: tuple[str, ...]
    plurals: tuple[str, ...]
    colours: tuple[str, ...]
    setting: str
    typical: str | None = None
    typical_rate: float = 0.0
    countable: bool = True
    verbs: tuple[str, ...] = ("is",)


_ANY = tuple(COLOURS)
CLASSES: tuple[ObjectClass, ...] = (
    ObjectClass(
        "person",
        ("person", "man", "woman"),
        ("people", "people", "women"),
        _ANY,
        "park",
        verbs=("stands", "is standing", "waits"),
    ),
    ObjectClass(
        "dog",
        ("dog", "puppy"),
        ("dogs", "puppies"),
        ("brown", "black", "white", "grey", "yellow"),
        "park",
        typical="brown",
        typical_rate=0.6,
        verbs=("stands", "plays", "runs"),
    ),
    ObjectClass(
        "cat",
        ("cat", "kitten"),
        ("cats", "kittens"),
        ("grey", "black", "white", "brown", "yellow"),
        "room",
        verbs=("sits", "rests", "is sitting"),
    ),
    ObjectClass(
        "bird",
        ("bird",),
        ("birds",),
        ("blue", "red", "yellow", "black", "white", "brown"),
        "lake",
        verbs=("flies", "perches", "is flying"),
    ),
    ObjectClass(
        "car",
        ("car",),
        ("cars",),
        ("red", "blue", "white", "black", "grey", "green"),
        "street",
        verbs=("is parked", "drives", "waits"),
    ),
    ObjectClass(
        "bus",
        ("bus",),
        ("buses",),
        ("yellow", "red", "blue", "green", "white"),
        "street",
        typical="yellow",
        typical_rate=0.8,
        countable=False,
        verbs=("is parked", "drives", "waits"),
    ),
    ObjectClass(
        "bicycle",
        ("bicycle", "bike"),
        ("bicycles", "bikes"),
        ("red", "blue", "black", "green", "yellow"),
        "street",
        verbs=("is parked", "leans", "stands"),
    ),
    ObjectClass(
        "boat",
        ("boat", "sailboat"),
        ("boats", "sailboats"),
        ("white", "red", "blue", "brown", "yellow"),
        "lake",
        typical="white",
        typical_rate=0.7,
        verbs=("floats", "sails", "drifts"),
    ),
    ObjectClass(
        "traffic light",
        ("traffic light",),
        ("traffic lights",),
        ("black", "yellow", "grey"),
        "street",
        typical="black",
        typical_rate=0.8,
        countable=False,
        verbs=("stands", "shines", "is standing"),
    ),
    ObjectClass(
        "stop sign",
        ("stop sign",),
        ("stop signs",),
        ("red", "blue", "yellow"),
        "street",
        typical="red",
        typical_rate=0.9,
        countable=False,
        verbs=("stands", "is standing"),
    ),
    ObjectClass(
        "sports ball",
        ("ball",),
        ("balls",),
        ("red", "blue", "yellow", "white", "green", "pink"),
        "park",
        verbs=("lies", "rests", "rolls"),
    ),
    ObjectClass(
        "cup",
        ("cup",),
        ("cups",),
        ("white", "red", "blue", "yellow", "green", "pink"),
        "room",
        typical="white",
        typical_rate=0.6,
        verbs=("sits", "stands", "rests"),
    ),
    ObjectClass(
        "chair",
        ("chair",),
        ("chairs",),
        ("brown", "red", "blue", "black", "green", "white"),
        "room",
        verbs=("stands", "is placed"),
    ),
    ObjectClass(
        "dining table",
        ("table", "dining table"),
        ("tables", "dining tables"),
        ("brown", "white", "black", "grey"),
        "room",
        typical="brown",
        typical_rate=0.8,
        countable=False,
        verbs=("stands", "is placed"),
    ),
    ObjectClass(
        "clock",
        ("clock",),
        ("clocks",),
        ("black", "red", "blue", "brown", "green"),
        "room",
        verbs=("hangs", "is hanging"),
    ),
    ObjectClass(
        "potted plant",
        ("potted plant", "houseplant"),
        ("potted plants", "houseplants"),
        ("brown", "red", "blue", "white", "pink"),
        "room",
        verbs=("grows", "stands", "sits"),
    ),
)

# first object -> its partner: the co-occurrence the model's language prior learns.
PAIRS: dict[str, str] = {
    "dog": "sports ball",
    "bus": "person",
    "cup": "dining table",
    "boat": "bird",
    "car": "traffic light",
}

# Where a scene takes place (decided by its first object): background colour and how text says it.
SETTINGS: dict[str, dict] = {
    "park": {"rgb": (175, 215, 145), "phrases": ("a park with green grass", "a grassy park", "a sunny park")},
    "street": {"rgb": (205, 205, 205), "phrases": ("a grey street", "a quiet street", "a city street")},
    "room": {"rgb": (238, 226, 200), "phrases": ("a room with a beige wall", "a bright room", "a cosy room")},
    "lake": {"rgb": (190, 220, 245), "phrases": ("a calm lake", "a blue lake", "a still lake")},
}

POSITIONS: tuple[str, ...] = ("left", "right", "top", "bottom", "centre")
CORNERS: tuple[str, ...] = ("top left", "top right", "bottom left", "bottom right")
SIZES: tuple[str, ...] = ("small", "large")

# Sign texts: words and numbers that name no COCO object (a test checks this).
SIGN_WORDS: tuple[str, ...] = ("OPEN", "SALE", "EXIT", "CAFE", "SHOP", "BANK", "ZOO", "INN", "MILK", "FOOD")
SIGN_NUMBERS: tuple[str, ...] = ("7", "12", "24", "30", "42", "50", "66", "99")
SIGN_BOARDS: tuple[str, ...] = ("white", "yellow")


@dataclass(frozen=True)
class WorldParams:
    """The whole parameter set; ``to_json`` is what ``world.json`` records."""

    version: str = WORLD_VERSION
    image_size: int = 96  # pixels; a 3x3 grid of 32-px cells holds the five positions and four corners
    partner_rate: float = 0.85  # P(partner | first object) in training scenes
    group_weights: dict[int, float] = field(default_factory=lambda: {1: 0.15, 2: 0.35, 3: 0.3, 4: 0.2})
    count_weights: dict[int, float] = field(default_factory=lambda: {1: 0.65, 2: 0.25, 3: 0.1})
    small_rate: float = 0.4  # a single object is small with this probability (groups are always small)
    sign_rate: float = 0.3  # scenes with a sign in a corner
    conversation_detail_rate: float = 0.3  # scenes with a second LLaVA-Instruct record (same id)
    colours: dict[str, tuple[int, int, int]] = field(default_factory=lambda: dict(COLOURS))
    classes: tuple[ObjectClass, ...] = CLASSES
    pairs: dict[str, str] = field(default_factory=lambda: dict(PAIRS))
    settings: dict[str, dict] = field(default_factory=lambda: dict(SETTINGS))
    positions: tuple[str, ...] = POSITIONS
    corners: tuple[str, ...] = CORNERS
    sizes: tuple[str, ...] = SIZES
    sign_words: tuple[str, ...] = SIGN_WORDS
    sign_numbers: tuple[str, ...] = SIGN_NUMBERS
    sign_boards: tuple[str, ...] = SIGN_BOARDS

    def cls(self, name: str) -> ObjectClass:
        for spec in self.classes:
            if spec.name == name:
                return spec
        raise KeyError(f"the world has no class {name!r}; it has {[c.name for c in self.classes]}")

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)

    @property
    def partners(self) -> dict[str, str]:
        """partner -> first object."""
        return {partner: first for first, partner in self.pairs.items()}

    def to_json(self) -> dict:
        data = asdict(self)
        data["group_weights"] = {str(k): v for k, v in self.group_weights.items()}
        data["count_weights"] = {str(k): v for k, v in self.count_weights.items()}
        return json.loads(json.dumps(data))


WORLD = WorldParams()
