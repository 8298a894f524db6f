"""Scene graphs of the miniature world: how they are sampled and how they are drawn.

A scene is a few object groups (a COCO class, a colour, a size, one of five positions, a count)
in a setting, and sometimes a sign with a word or a number in a corner. The scene graph is the
ground truth of its picture: every caption, answer and score is computed from it.

Sampling is seeded per scene (``random.Random`` of a string seed, which is not salted per
process), so the same (seed, split, index) gives the same scene on any machine and a bigger
world only adds scenes. Three kinds are sampled:

- ``prior``: the training distribution. Adding the first object of a pair (dog, bus, …) adds
  its partner (ball, person, …) with probability ``partner_rate``, or bans it from the scene;
  colours follow each class's typical colour.
- ``violating``: held-out scenes that break the prior: the first object of a pair without its
  partner, and every class that has a typical colour painted in another one.

Drawing is plain PIL on a ``image_size``-pixel canvas split into a 3x3 grid: the five positions
are the centre cell and its four neighbours, signs sit in the corner cells. No antialiasing and
Pillow's built-in bitmap font keep the pixels identical across Pillow versions.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

from PIL import Image, ImageDraw, ImageFont

from bpo_data.world.params import WORLD, WorldParams

Kind = Literal["prior", "violating"]
RGB = tuple[int, int, int]
Box = tuple[float, float, float, float]

OUTLINE: RGB = (60, 60, 60)
SKIN: RGB = (235, 190, 150)
LEAF: RGB = (40, 125, 45)
GLASS: RGB = (170, 215, 240)
WHEEL: RGB = (30, 30, 30)
POLE: RGB = (110, 110, 110)
TROUSERS: RGB = (45, 45, 80)
BEAK: RGB = (240, 165, 40)


@dataclass(frozen=True)
class SceneObject:
    """One object group: ``count`` objects of class ``cls`` sharing colour, size and position."""

    cls: str
    colour: str
    size: str
    position: str
    count: int = 1


@dataclass(frozen=True)
class Sign:
    """A board in a corner with a short word or a number on it."""

    text: str
    board: str
    corner: str

    @property
    def is_number(self) -> bool:
        return self.text.isdigit()


@dataclass(frozen=True)
class Scene:
    """The ground truth of one picture. ``violations``: how it breaks the prior, e.g.
    ``partner_absent:dog->sports ball`` or ``atypical_colour:bus``."""

    id: str
    split: str
    setting: str
    objects: tuple[SceneObject, ...]
    sign: Sign | None = None
    violations: tuple[str, ...] = field(default=())

    @property
    def classes(self) -> frozenset[str]:
        return frozenset(o.cls for o in self.objects)

    def object(self, cls: str) -> SceneObject | None:
        return next((o for o in self.objects if o.cls == cls), None)

    def signature(self) -> str:
        """What the scene shows, without its id: two scenes with equal signatures look alike."""
        objects = sorted((o.cls, o.colour, o.size, o.position, o.count) for o in self.objects)
        sign = (self.sign.text, self.sign.board, self.sign.corner) if self.sign else None
        return repr((self.setting, objects, sign))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Scene:
        return cls(
            id=data["id"],
            split=data["split"],
            setting=data["setting"],
            objects=tuple(SceneObject(**o) for o in data["objects"]),
            sign=Sign(**data["sign"]) if data.get("sign") else None,
            violations=tuple(data.get("violations", ())),
        )


def scene_rng(seed: int, split: str, index: int) -> random.Random:
    return random.Random(f"bpo-world/{seed}/{split}/{index}")


def _weighted(rng: random.Random, weights: dict[int, float]) -> int:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _pick_classes(rng: random.Random, params: WorldParams, kind: Kind, pair_index: int) -> list[str]:
    """The scene's classes in the order they were drawn (the first decides the setting).

    Adding a pair's first object settles its partner at once: in with ``partner_rate``, else out
    (removed if drawn before, and banned). So P(partner | first) is exactly the parameter.
    """
    groups = _weighted(rng, params.group_weights)
    chosen: list[str] = []
    banned: set[str] = set()
    if kind == "violating":
        first = list(params.pairs)[pair_index % len(params.pairs)]
        chosen.append(first)
        banned.add(params.pairs[first])
    while len(chosen) < groups:
        room_for_pair = len(chosen) + 2 <= len(params.positions)
        pool = [
            c
            for c in params.class_names
            if c not in chosen and c not in banned and (room_for_pair or c not in params.pairs)
        ]
        cls = rng.choice(pool)
        chosen.append(cls)
        if cls in params.pairs:
            partner = params.pairs[cls]
            if rng.random() < params.partner_rate:
                if partner not in chosen:
                    chosen.append(partner)
            else:
                if partner in chosen:
                    chosen.remove(partner)
                banned.add(partner)
    return chosen


def _colour(rng: random.Random, params: WorldParams, cls: str, kind: Kind) -> str:
    spec = params.cls(cls)
    if spec.typical is None:
        return rng.choice(spec.colours)
    others = [c for c in spec.colours if c != spec.typical]
    if kind == "violating":
        return rng.choice(others)
    return spec.typical if rng.random() < spec.typical_rate else rng.choice(others)


def sample_scene(
    seed: int, split: str, index: int, scene_id: str, kind: Kind = "prior", params: WorldParams = WORLD
) -> Scene:
    """Scene ``index`` of ``split``; ``violating`` scenes cycle through the pairs by index."""
    rng = scene_rng(seed, split, index)
    classes = _pick_classes(rng, params, kind, index)
    positions = rng.sample(list(params.positions), len(classes))
    objects = []
    for cls, position in zip(classes, positions):
        count = _weighted(rng, params.count_weights) if params.cls(cls).countable else 1
        size = "small" if count > 1 or rng.random() < params.small_rate else "large"
        objects.append(SceneObject(cls, _colour(rng, params, cls, kind), size, position, count))
    sign = None
    if rng.random() < params.sign_rate:
        pool = params.sign_numbers if rng.random() < 0.4 else params.sign_words
        sign = Sign(rng.choice(pool), rng.choice(params.sign_boards), rng.choice(params.corners))
    violations: list[str] = []
    if kind == "violating":
        first = classes[0]
        violations.append(f"partner_absent:{first}->{params.pairs[first]}")
        violations += [
            f"atypical_colour:{o.cls}" for o in objects if params.cls(o.cls).typical not in (None, o.colour)
        ]
    return Scene(
        id=scene_id,
        split=split,
        setting=params.cls(classes[0]).setting,
        objects=tuple(objects),
        sign=sign,
        violations=tuple(violations),
    )


# ---------------------------------------------------------------------------------------------
# Drawing. Each shape fills a box given as (x0, y0, x1, y1) in pixels; ``_at`` maps unit
# coordinates inside the box to pixels so shapes scale with the object's size.


def _at(box: Box, u: float, v: float) -> tuple[int, int]:
    x0, y0, x1, y1 = box
    return round(x0 + u * (x1 - x0)), round(y0 + v * (y1 - y0))


def _rect(box: Box, u0: float, v0: float, u1: float, v1: float) -> tuple[int, int, int, int]:
    return (*_at(box, u0, v0), *_at(box, u1, v1))


def _darker(colour: RGB) -> RGB:
    return tuple(max(0, round(c * 0.6)) for c in colour)  # type: ignore[return-value]


def _person(d: ImageDraw.ImageDraw, b: Box, c: RGB) -> None:
    d.rectangle(_rect(b, 0.3, 0.68, 0.46, 1.0), fill=TROUSERS)
    d.rectangle(_rect(b, 0.54, 0.68, 0.7, 1.0), fill=TROUSERS)
    d.rectangle(_rect(b, 0.25, 0.3, 0.75, 0.7), fill=c, outline=OUTLINE)
    d.ellipse(_rect(b, 0.33, 0.0, 0.67, 0.3), fill=SKIN, outline=OUTLINE)


def _dog(d: ImageDraw.ImageDraw, b: Box, c: RGB) -> None:
    for u in (0.18, 0.32, 0.52, 0.64):
        d.rectangle(_rect(b, u, 0.6, u + 0.09, 0.95), fill=c, outline=OUTLINE)
    d.line((*_at(b, 0.12, 0.45), *_at(b, 0.0, 0.2)), fill=c, width=2)
    d.ellipse(_rect(b, 0.08, 0.35, 0.76, 0.7), fill=c, outline=OUTLINE)
    d.ellipse(_rect(b, 0.6, 0.12, 0.95, 0.48), fill=c, outline=OUTLINE)
    d.ellipse(_rect(b, 0.62, 0.14, 0.74, 0.38), fill=_darker(c))


def _cat(d: ImageDraw.ImageDraw, b: Box, c: RGB) -> None:
    d.line((*_at(b, 0.7, 0.92), *_at(b, 0.95, 0.55)), fill=c, width=2)
    d.ellipse(_rect(b, 0.22, 0.42, 0.78, 1.0), fill=c, outline=OUTLINE)
    d.polygon([_at(b, 0.3, 0.25), _at(b, 0.33, 0.0), _at(b, 0.48, 0.16)], fill=c, outline=OUTLINE)
    d.polygon([_at(b, 0.7, 0.25), _at(b, 0.67, 0.0), _at(b, 0.52, 0.16)], fill=c, outline=OUTLINE)
    d.ellipse(_rect(b, 0.28, 0.1, 0.72, 0.5), fill=c, outline=OUTLINE)


def _bird(d: ImageDraw.ImageDraw, b: Box, c: RGB) -> None:
    d.polygon([_at(b, 0.2, 0.5), _at(b, 0.0, 0.38), _at(b, 0.0, 0.68)], fill=c, outline=OUTLINE)
    d.ellipse(_rect(b, 0.12, 0.38, 0.75, 0.72), fill=c, outline=OUTLINE)
    d.ellipse(_rect(b, 0.58, 0.22, 0.88, 0.52), fill=c, outline=OUTLINE)
    d.polygon([_at(b, 0.86, 0.32), _at(b, 1.0, 0.4), _at(b, 0.86, 0.46)], fill=BEAK)
    d.polygon([_at(b, 0.28, 0.5), _at(b, 0.56, 0.5), _at(b, 0.34, 0.08)], fill=_darker(c), outline=OUTLINE)


def _car(d: ImageDraw.ImageDraw, b: Box, c: RGB) -> None:
    d.polygon([_at(b, 0.2, 0.46), _at(b, 0.32, 0.18), _at(b, 0.7, 0.18), _at(b, 0.82, 0.46)], fill=c)
    d.rectangle(_rect(b, 0.36, 0.24, 0.66, 0.44), fill=GLASS)
    d.rectangle(_rect(b, 0.0, 0.44, 1.0, 0.8), fill=c, outline=OUTLINE)
    for u in (0.25, 0.75):
        d.ellipse(_rect(b, u - 0.13, 0.66, u + 0.13, 0.96), fill=WHEEL)


def _bus(d: ImageDraw.ImageDraw, b: Box, c: RGB) -> None:
    d.rectangle(_rect(b, 0.0, 0.12, 1.0, 0.84), fill=c, outline=OUTLINE)
    for u in (0.06, 0.3, 0.54, 0.78):
        d.rectangle(_rect(b, u, 0.22, u + 0.16, 0.44), fill=GLASS)
    for u in (0.2, 0.8):
        d.ellipse(_rect(b, u - 0.12, 0.72, u + 0.12, 0.98), fill=WHEEL)


def _bicycle(d: ImageDraw.ImageDraw, b: Box, c: RGB) -> None:
    width = 2 if b[2] - b[0] > 20 else 1
    for u in (0.24, 0.76):
        d.ellipse(_rect(b, u - 0.22, 0.5, u + 0.22, 0.94), outline=WHEEL, width=width)
    hub, pedal, seat, bar = _at(b, 0.24, 0.72), _at(b, 0.5, 0.72), _at(b, 0.42, 0.35), _at(b, 0.7, 0.32)
    d.line((*hub, *pedal, *seat, *hub), fill=c, width=width)
    d.line((*pedal, *bar, *_at(b, 0.76, 0.72)), fill=c, width=width)
    d.line((*seat, *bar), fill=c, width=width)
    d.line((*_at(b, 0.34, 0.3), *_at(b, 0.5, 0.3)), fill=WHEEL, width=width)
    d.line((*bar, *_at(b, 0.78, 0.22)), fill=WHEEL, width=width)


def _boat(d: ImageDraw.ImageDraw, b: Box, c: RGB) -> None:
    sail = (215, 215, 215) if c[0] > 240 else (250, 250, 250)
    d.line((*_at(b, 0.5, 0.05), *_at(b, 0.5, 0.62)), fill=WHEEL, width=1)
    d.polygon([_at(b, 0.54, 0.08), _at(b, 0.54, 0.56), _at(b, 0.88, 0.56)], fill=sail, outline=OUTLINE)
    d.polygon(
        [_at(b, 0.0, 0.6), _at(b, 1.0, 0.6), _at(b, 0.8, 0.92), _at(b, 0.2, 0.92)], fill=c, outline=OUTLINE
    )


def _traffic_light(d: ImageDraw.ImageDraw, b: Box, c: RGB) -> None:
    d.rectangle(_rect(b, 0.45, 0.6, 0.55, 1.0), fill=POLE)
    d.rectangle(_rect(b, 0.28, 0.0, 0.72, 0.66), fill=c, outline=OUTLINE)
    for v, lamp in ((0.04, (225, 30, 30)), (0.24, (245, 200, 30)), (0.44, (40, 190, 60))):
        d.ellipse(_rect(b, 0.38, v, 0.62, v + 0.18), fill=lamp)


def _stop_sign(d: ImageDraw.ImageDraw, b: Box, c: RGB) -> None:
    d.rectangle(_rect(b, 0.45, 0.5, 0.55, 1.0), fill=POLE)
    x, y = _at(b, 0.5, 0.36)
    radius = round(0.34 * (b[2] - b[0]))
    d.regular_polygon((x, y, radius), n_sides=8, rotation=22.5, fill=c, outline=OUTLINE)
    d.rectangle(_rect(b, 0.3, 0.31, 0.7, 0.41), fill=(250, 250, 250))


def _sports_ball(d: ImageDraw.ImageDraw, b: Box, c: RGB) -> None:
    seam = (40, 40, 40) if sum(c) > 450 else (250, 250, 250)
    d.ellipse(_rect(b, 0.18, 0.18, 0.82, 0.82), fill=c, outline=OUTLINE)
    d.arc(_rect(b, 0.3, 0.18, 0.7, 0.82), start=300, end=60, fill=seam)
    d.arc(_rect(b, 0.3, 0.18, 0.7, 0.82), start=120, end=240, fill=seam)


def _cup(d: ImageDraw.ImageDraw, b: Box, c: RGB) -> None:
    d.ellipse(_rect(b, 0.52, 0.38, 0.88, 0.74), outline=c, width=2)
    d.polygon(
        [_at(b, 0.15, 0.28), _at(b, 0.7, 0.28), _at(b, 0.63, 0.92), _at(b, 0.22, 0.92)],
        fill=c,
        outline=OUTLINE,
    )
    d.rectangle(_rect(b, 0.2, 0.28, 0.65, 0.36), fill=(90, 55, 30))


def _chair(d: ImageDraw.ImageDraw, b: Box, c: RGB) -> None:
    d.rectangle(_rect(b, 0.22, 0.02, 0.34, 0.6), fill=c, outline=OUTLINE)
    d.rectangle(_rect(b, 0.22, 0.5, 0.82, 0.62), fill=c, outline=OUTLINE)
    d.rectangle(_rect(b, 0.22, 0.6, 0.32, 1.0), fill=c, outline=OUTLINE)
    d.rectangle(_rect(b, 0.72, 0.6, 0.82, 1.0), fill=c, outline=OUTLINE)


def _dining_table(d: ImageDraw.ImageDraw, b: Box, c: RGB) -> None:
    d.rectangle(_rect(b, 0.06, 0.45, 0.18, 1.0), fill=c, outline=OUTLINE)
    d.rectangle(_rect(b, 0.82, 0.45, 0.94, 1.0), fill=c, outline=OUTLINE)
    d.rectangle(_rect(b, 0.0, 0.32, 1.0, 0.48), fill=c, outline=OUTLINE)


def _clock(d: ImageDraw.ImageDraw, b: Box, c: RGB) -> None:
    d.ellipse(_rect(b, 0.08, 0.08, 0.92, 0.92), fill=c)
    d.ellipse(_rect(b, 0.2, 0.2, 0.8, 0.8), fill=(250, 250, 250))
    d.line((*_at(b, 0.5, 0.5), *_at(b, 0.5, 0.26)), fill=WHEEL, width=1)
    d.line((*_at(b, 0.5, 0.5), *_at(b, 0.7, 0.5)), fill=WHEEL, width=1)


def _potted_plant(d: ImageDraw.ImageDraw, b: Box, c: RGB) -> None:
    for leaf in ((0.08, 0.18, 0.5, 0.62), (0.5, 0.18, 0.92, 0.62), (0.3, 0.0, 0.7, 0.5)):
        d.ellipse(_rect(b, *leaf), fill=LEAF, outline=OUTLINE)
    d.polygon(
        [_at(b, 0.25, 0.58), _at(b, 0.75, 0.58), _at(b, 0.67, 1.0), _at(b, 0.33, 1.0)],
        fill=c,
        outline=OUTLINE,
    )


SHAPES: dict[str, Callable[[ImageDraw.ImageDraw, Box, RGB], None]] = {
    "person": _person,
    "dog": _dog,
    "cat": _cat,
    "bird": _bird,
    "car": _car,
    "bus": _bus,
    "bicycle": _bicycle,
    "boat": _boat,
    "traffic light": _traffic_light,
    "stop sign": _stop_sign,
    "sports ball": _sports_ball,
    "cup": _cup,
    "chair": _chair,
    "dining table": _dining_table,
    "clock": _clock,
    "potted plant": _potted_plant,
}

# Cell of each position and corner in the 3x3 grid, as (column, row).
_CELLS = {
    "left": (0, 1),
    "right": (2, 1),
    "top": (1, 0),
    "bottom": (1, 2),
    "centre": (1, 1),
    "top left": (0, 0),
    "top right": (2, 0),
    "bottom left": (0, 2),
    "bottom right": (2, 2),
}
# Where the members of a group sit in their cell (offsets in cell widths) and how big each is.
_GROUP_LAYOUT: dict[int, tuple[float, Sequence[tuple[float, float]]]] = {
    1: (0.0, [(0.0, 0.0)]),
    2: (0.46, [(-0.25, 0.0), (0.25, 0.0)]),
    3: (0.4, [(-0.28, 0.2), (0.28, 0.2), (0.0, -0.24)]),
}
_SIZE_FRACTION = {"large": 0.9, "small": 0.56}


def cell_centre(place: str, params: WorldParams = WORLD) -> tuple[float, float]:
    cell = params.image_size / 3
    column, row = _CELLS[place]
    return (column + 0.5) * cell, (row + 0.5) * cell


def _jitter(colour: RGB, rng: random.Random) -> RGB:
    return tuple(min(255, max(0, c + rng.randint(-8, 8))) for c in colour)  # type: ignore[return-value]


def _draw_sign(image: Image.Image, sign: Sign, params: WorldParams) -> None:
    font = ImageFont.load_default_imagefont()
    _, _, width, height = font.getbbox(sign.text)
    x, y = cell_centre(sign.corner, params)
    left, top = round(x - width / 2), round(y - height / 2)
    draw = ImageDraw.Draw(image)
    draw.rectangle(
        (left - 2, top - 2, left + width + 1, top + height + 1),
        fill=params.colours[sign.board],
        outline=OUTLINE,
    )
    draw.line(
        (round(x), top + height + 2, round(x), min(params.image_size - 1, top + height + 8)),
        fill=POLE,
        width=2,
    )
    draw.text((left, top), sign.text, font=font, fill=(20, 20, 20))


def draw_scene(scene: Scene, params: WorldParams = WORLD) -> Image.Image:
    """The RGB picture of ``scene``; the same scene always gives the same pixels."""
    rng = random.Random(f"bpo-world-draw/{scene.id}/{scene.signature()}")
    size = params.image_size
    image = Image.new("RGB", (size, size), tuple(params.settings[scene.setting]["rgb"]))
    draw = ImageDraw.Draw(image)
    cell = size / 3
    for obj in scene.objects:
        cx, cy = cell_centre(obj.position, params)
        cx, cy = cx + rng.randint(-2, 2), cy + rng.randint(-2, 2)
        if obj.count == 1:
            side, offsets = cell * _SIZE_FRACTION[obj.size], _GROUP_LAYOUT[1][1]
        else:
            fraction, offsets = _GROUP_LAYOUT[obj.count]
            side = cell * fraction
        for du, dv in offsets:
            x, y = cx + du * cell, cy + dv * cell
            box = (x - side / 2, y - side / 2, x + side / 2, y + side / 2)
            SHAPES[obj.cls](draw, box, _jitter(params.colours[obj.colour], rng))
    if scene.sign is not None:
        _draw_sign(image, scene.sign, params)
    return image
