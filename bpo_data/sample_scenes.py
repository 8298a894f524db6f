"""The embedded sample's pictures, drawn with PIL so their content is known exactly.

The sample's ground-truth answers describe these scenes, using COCO object words (cat, couch,
bus, person, dog, cup, chair, car, stop sign…) so that error injection has real objects to
swap. Drawing is deterministic (no antialiasing; the one random element uses a fixed seed; text
uses Pillow's built-in bitmap font, scaled up) and the shipped files under ``bpo_data/sample/``
are checked against it by a test. Regenerate them with ``python -m bpo_data.sample_scenes``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from bpo_data.sources.sample import SAMPLE_DIR

SIZE = (256, 192)
SEED = 0
JPEG_QUALITY = 90

RGB = tuple[int, int, int]
SKY: RGB = (135, 200, 235)
GRASS: RGB = (70, 160, 60)
ROAD: RGB = (110, 110, 110)
WALL: RGB = (235, 222, 195)
BLACK: RGB = (20, 20, 20)
WHITE: RGB = (250, 250, 250)
RED: RGB = (215, 30, 30)
BLUE: RGB = (30, 70, 200)
YELLOW: RGB = (245, 200, 30)
ORANGE: RGB = (230, 135, 40)
GREY: RGB = (130, 130, 130)
BROWN: RGB = (130, 80, 40)
GREEN: RGB = (40, 130, 60)
SKIN: RGB = (235, 190, 150)


def _canvas(
    top: RGB, bottom: RGB | None = None, horizon: int = 120
) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("RGB", SIZE, top)
    draw = ImageDraw.Draw(image)
    if bottom is not None:
        draw.rectangle((0, horizon, SIZE[0], SIZE[1]), fill=bottom)
    return image, draw


def _text(image: Image.Image, xy: tuple[int, int], text: str, scale: int, fill: RGB) -> None:
    """Blocky text: Pillow's built-in bitmap font (identical across Pillow versions), scaled by ``scale``."""
    font = ImageFont.load_default_imagefont()
    _, _, width, height = font.getbbox(text)
    mask = Image.new("1", (width, height), 0)
    ImageDraw.Draw(mask).text((0, 0), text, font=font, fill=1)
    mask = mask.resize((width * scale, height * scale), Image.Resampling.NEAREST)
    image.paste(fill, (xy[0], xy[1], xy[0] + mask.width, xy[1] + mask.height), mask)


def _cat(draw: ImageDraw.ImageDraw, x: int, y: int, fur: RGB) -> None:
    """A sitting cat whose feet rest at (x, y)."""
    draw.ellipse((x - 22, y - 50, x + 22, y), fill=fur)
    draw.ellipse((x - 16, y - 78, x + 16, y - 46), fill=fur)
    draw.polygon([(x - 16, y - 66), (x - 12, y - 88), (x - 2, y - 76)], fill=fur)
    draw.polygon([(x + 16, y - 66), (x + 12, y - 88), (x + 2, y - 76)], fill=fur)
    draw.ellipse((x - 9, y - 67, x - 4, y - 62), fill=GREEN)
    draw.ellipse((x + 4, y - 67, x + 9, y - 62), fill=GREEN)
    draw.polygon([(x - 3, y - 57), (x + 3, y - 57), (x, y - 54)], fill=(230, 120, 140))
    draw.line((x + 20, y - 6, x + 36, y - 24), fill=fur, width=6)


def _person(draw: ImageDraw.ImageDraw, x: int, y: int, shirt: RGB) -> None:
    """A standing person whose feet are at (x, y), about 80 px tall."""
    draw.rectangle((x - 9, y - 34, x - 2, y), fill=(40, 40, 70))
    draw.rectangle((x + 2, y - 34, x + 9, y), fill=(40, 40, 70))
    draw.rectangle((x - 12, y - 66, x + 12, y - 32), fill=shirt)
    draw.ellipse((x - 9, y - 84, x + 9, y - 66), fill=SKIN)


def _car(draw: ImageDraw.ImageDraw, x: int, y: int, paint: RGB) -> None:
    """A car seen from the side, wheels touching y, from x to x + 100."""
    draw.rectangle((x, y - 34, x + 100, y - 10), fill=paint)
    draw.polygon([(x + 20, y - 34), (x + 32, y - 54), (x + 70, y - 54), (x + 84, y - 34)], fill=paint)
    draw.polygon([(x + 30, y - 36), (x + 38, y - 50), (x + 50, y - 50), (x + 50, y - 36)], fill=SKY)
    draw.polygon([(x + 54, y - 36), (x + 54, y - 50), (x + 67, y - 50), (x + 76, y - 36)], fill=SKY)
    for cx in (x + 22, x + 78):
        draw.ellipse((cx - 12, y - 24, cx + 12, y), fill=BLACK)


def two_cats() -> Image.Image:
    image, draw = _canvas(WALL, BROWN, horizon=150)
    draw.rectangle((28, 60, 228, 120), fill=GREEN)
    draw.rectangle((28, 116, 228, 150), fill=(30, 105, 50))
    draw.rectangle((14, 90, 40, 150), fill=(30, 105, 50))
    draw.rectangle((216, 90, 242, 150), fill=(30, 105, 50))
    _cat(draw, 90, 130, ORANGE)
    _cat(draw, 165, 130, GREY)
    return image


def bus_42() -> Image.Image:
    image, draw = _canvas(SKY, ROAD, horizon=140)
    draw.rounded_rectangle((16, 50, 196, 150), radius=12, fill=YELLOW)
    for left in range(28, 150, 32):
        draw.rectangle((left, 62, left + 24, 90), fill=(60, 110, 170))
    draw.rectangle((152, 60, 188, 96), fill=WHITE)
    _text(image, (156, 66), "42", 3, BLACK)
    for cx in (50, 160):
        draw.ellipse((cx - 16, 134, cx + 16, 166), fill=BLACK)
    _person(draw, 226, 160, RED)
    return image


def dog_ball() -> Image.Image:
    image, draw = _canvas(SKY, GRASS, horizon=110)
    draw.ellipse((206, 14, 242, 50), fill=YELLOW)
    draw.ellipse((40, 100, 140, 145), fill=BROWN)
    for left in (50, 70, 108, 124):
        draw.rectangle((left, 135, left + 9, 168), fill=BROWN)
    draw.ellipse((120, 72, 166, 112), fill=BROWN)
    draw.ellipse((150, 92, 174, 108), fill=(90, 55, 30))
    draw.ellipse((124, 76, 138, 102), fill=(90, 55, 30))
    draw.ellipse((142, 82, 148, 88), fill=BLACK)
    draw.line((42, 112, 22, 92), fill=BROWN, width=7)
    draw.ellipse((190, 140, 220, 170), fill=RED)
    return image


def kitchen_table() -> Image.Image:
    image, draw = _canvas(WALL, (200, 170, 120), horizon=150)
    draw.rectangle((20, 100, 170, 112), fill=BROWN)
    draw.rectangle((30, 112, 40, 175), fill=BROWN)
    draw.rectangle((150, 112, 160, 175), fill=BROWN)
    draw.rectangle((50, 76, 74, 100), fill=WHITE)
    draw.arc((66, 80, 84, 96), start=270, end=90, fill=WHITE, width=4)
    draw.rectangle((120, 56, 136, 100), fill=GREEN)
    draw.rectangle((124, 44, 132, 56), fill=GREEN)
    draw.rectangle((190, 60, 200, 176), fill=RED)
    draw.rectangle((190, 118, 240, 128), fill=RED)
    draw.rectangle((230, 128, 240, 176), fill=RED)
    return image


def abstract_shapes() -> Image.Image:
    image, draw = _canvas((245, 235, 210))
    draw.ellipse((24, 46, 114, 136), fill=RED)
    draw.rectangle((146, 46, 236, 136), fill=BLUE)
    draw.rectangle((20, 156, 240, 164), fill=BLACK)
    return image


def open_sign() -> Image.Image:
    image, draw = _canvas((200, 200, 200), ROAD, horizon=176)
    draw.rectangle((58, 14, 198, 56), fill=WHITE, outline=BLACK, width=2)
    _text(image, (71, 19), "OPEN 24", 3, RED)
    draw.rectangle((104, 88, 152, 176), fill=BROWN)
    draw.ellipse((140, 128, 146, 134), fill=YELLOW)
    draw.rectangle((20, 90, 84, 140), fill=(170, 215, 240))
    draw.rectangle((172, 90, 236, 140), fill=(170, 215, 240))
    return image


def clock_tower() -> Image.Image:
    image, draw = _canvas(SKY, GRASS, horizon=170)
    draw.rectangle((98, 60, 158, 176), fill=GREY)
    draw.polygon([(92, 60), (128, 10), (164, 60)], fill=(60, 60, 80))
    draw.ellipse((108, 70, 148, 110), fill=WHITE, outline=BLACK, width=2)
    draw.line((128, 90, 128, 74), fill=BLACK, width=2)
    draw.line((128, 90, 142, 90), fill=BLACK, width=3)
    draw.rectangle((120, 146, 136, 176), fill=(60, 60, 80))
    return image


def book_cover() -> Image.Image:
    image, draw = _canvas(WALL)
    draw.rectangle((68, 8, 188, 184), fill=(25, 40, 110))
    _text(image, (86, 18), "BIG CAT", 2, YELLOW)
    _cat(draw, 128, 150, ORANGE)
    _text(image, (94, 160), "ANN LEE", 2, WHITE)
    return image


def sale_poster() -> Image.Image:
    image, draw = _canvas(YELLOW)
    draw.rectangle((6, 6, 250, 186), outline=RED, width=6)
    _text(image, (62, 30), "SALE", 6, RED)
    _text(image, (60, 120), "50% OFF", 3, BLACK)
    return image


def street_sign() -> Image.Image:
    image, draw = _canvas(SKY, (180, 180, 180), horizon=170)
    draw.rectangle((124, 60, 132, 176), fill=GREY)
    draw.rectangle((48, 24, 208, 64), fill=GREEN, outline=WHITE, width=2)
    _text(image, (65, 28), "MAIN ST", 3, WHITE)
    return image


def stop_car() -> Image.Image:
    image, draw = _canvas(SKY, ROAD, horizon=140)
    draw.rectangle((58, 90, 64, 170), fill=GREY)
    draw.regular_polygon((61, 62, 40), n_sides=8, rotation=22.5, fill=RED)
    _text(image, (36, 55), "STOP", 2, WHITE)
    _car(draw, 130, 172, BLUE)
    return image


def laptop_hello() -> Image.Image:
    image, draw = _canvas(WALL, BROWN, horizon=140)
    draw.rectangle((50, 36, 170, 120), fill=(50, 50, 50))
    draw.rectangle((58, 44, 162, 112), fill=WHITE)
    _text(image, (66, 62), "HELLO", 3, BLACK)
    draw.polygon([(40, 140), (180, 140), (170, 120), (50, 120)], fill=(80, 80, 80))
    draw.rectangle((204, 110, 228, 140), fill=RED)
    draw.arc((220, 114, 238, 132), start=270, end=90, fill=RED, width=4)
    return image


def person_umbrella() -> Image.Image:
    image, draw = _canvas((150, 150, 160), GREEN, horizon=160)
    rain = random.Random(SEED)
    for _ in range(60):
        x, y = rain.randrange(0, SIZE[0]), rain.randrange(0, 150)
        draw.line((x, y, x - 3, y + 9), fill=(90, 110, 200), width=1)
    _person(draw, 128, 176, BLUE)
    draw.line((128, 52, 128, 110), fill=BLACK, width=2)
    draw.pieslice((78, 28, 178, 84), start=180, end=360, fill=RED)
    return image


def traffic_light() -> Image.Image:
    image, draw = _canvas(SKY, ROAD, horizon=140)
    draw.rectangle((60, 80, 66, 176), fill=GREY)
    draw.rectangle((46, 10, 80, 84), fill=BLACK)
    draw.ellipse((53, 16, 73, 36), fill=RED)
    draw.ellipse((53, 38, 73, 58), fill=(90, 70, 0))
    draw.ellipse((53, 60, 73, 80), fill=(0, 70, 20))
    _car(draw, 120, 172, WHITE)
    return image


SCENES: dict[str, Callable[[], Image.Image]] = {
    fn.__name__: fn
    for fn in (
        two_cats,
        bus_42,
        dog_ball,
        kitchen_table,
        abstract_shapes,
        open_sign,
        clock_tower,
        book_cover,
        sale_poster,
        street_sign,
        stop_car,
        laptop_hello,
        person_umbrella,
        traffic_light,
    )
}

# Every shipped image (relative to bpo_data/sample/) and the scene it shows. The abstract
# painting is a palette PNG so the sample also exercises conversion to RGB.
SAMPLE_IMAGES: dict[str, str] = {
    "images/sharegptv/coco/train2017/000000000001.jpg": "two_cats",
    "images/sharegptv/coco/train2017/000000000002.jpg": "bus_42",
    "images/sharegptv/sam/images/sa_1.jpg": "dog_ball",
    "images/sharegptv/llava/llava_pretrain/images/00000/000000001.jpg": "kitchen_table",
    "images/sharegptv/wikiart/images/abstract-red-circle-blue-square.png": "abstract_shapes",
    "images/sharegptv/share_textvqa/images/open-sign.jpg": "open_sign",
    "images/sharegptv/web-landmark/images/clock-tower.jpg": "clock_tower",
    "images/llavar/000001.jpg": "book_cover",
    "images/llavar/000002.jpg": "sale_poster",
    "images/llavar/000003.jpg": "street_sign",
    "images/llavar/000004.jpg": "stop_car",
    "images/llavar/000005.jpg": "laptop_hello",
    "images/llavar/000006.jpg": "open_sign",
    "images/llava_instruct/000000000011.jpg": "bus_42",
    "images/llava_instruct/000000000012.jpg": "two_cats",
    "images/llava_instruct/000000000013.jpg": "person_umbrella",
    "images/llava_instruct/000000000014.jpg": "traffic_light",
    "images/llava_instruct/000000000015.jpg": "kitchen_table",
    "images/llava_instruct/000000000016.jpg": "dog_ball",
}


def draw_scene(name: str) -> Image.Image:
    """The RGB picture of scene ``name`` (one of ``SCENES``)."""
    if name not in SCENES:
        raise KeyError(f"unknown sample scene {name!r}; choose from {sorted(SCENES)}")
    return SCENES[name]()


def write_sample_images(out_dir: Path = SAMPLE_DIR) -> list[Path]:
    """Draw every sample image into ``out_dir`` (JPEG or palette PNG by extension)."""
    written = []
    for rel, scene in SAMPLE_IMAGES.items():
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        image = draw_scene(scene)
        if path.suffix == ".png":
            image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
        else:
            image.save(path, quality=JPEG_QUALITY)
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in write_sample_images():
        print(written_path)
