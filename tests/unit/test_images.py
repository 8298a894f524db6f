"""Image loading: path safety, the failure reasons, conversion to RGB and the bytes export embeds."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bpo_data.images import ImageError, check_image, image_bytes_for_dataset, load_image, safe_image_path

MAX = 10_000_000


def _reason(call) -> str:
    with pytest.raises(ImageError) as info:
        call()
    assert info.value.detail
    return info.value.reason


@pytest.mark.parametrize(
    "rel",
    [
        "/etc/passwd",
        "../../etc/passwd",
        "coco/../../secret.jpg",
        "..\\..\\x.jpg",
        "C:\\images\\a.jpg",
        "",
        " ",
    ],
)
def test_unsafe_paths_are_refused(tmp_path: Path, rel: str):
    assert _reason(lambda: safe_image_path(tmp_path, rel)) == "unsafe_image_path"
    assert _reason(lambda: load_image(tmp_path, rel, MAX)) == "unsafe_image_path"


@pytest.mark.parametrize("rel", ["coco/train2017/000000000001.jpg", "a/../b.jpg", "./x.png", "a..b.jpg"])
def test_paths_inside_the_root_are_allowed(tmp_path: Path, rel: str):
    path = safe_image_path(tmp_path, rel)
    assert path.resolve().is_relative_to(tmp_path.resolve())


def test_missing_truncated_and_not_an_image(tmp_path: Path):
    assert _reason(lambda: load_image(tmp_path, "nope.jpg", MAX)) == "missing_image"

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(buffer, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    assert _reason(lambda: load_image(tmp_path, "cut.jpg", MAX)) == "unreadable_image"

    (tmp_path / "text.jpg").write_text("this is not an image", encoding="utf-8")
    assert _reason(lambda: load_image(tmp_path, "text.jpg", MAX)) == "unreadable_image"
    assert _reason(lambda: image_bytes_for_dataset(tmp_path, "text.jpg", MAX)) == "unreadable_image"


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_huge_image_is_refused_from_its_header(tmp_path: Path):
    Image.new("1", (12000, 12000), 1).save(tmp_path / "huge.png")
    assert (tmp_path / "huge.png").stat().st_size < 1_000_000
    assert _reason(lambda: load_image(tmp_path, "huge.png", MAX)) == "image_too_large"
    assert _reason(lambda: image_bytes_for_dataset(tmp_path, "huge.png", MAX)) == "image_too_large"


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims the size but that holds no pixel data: only a header check can size it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_size_is_checked_before_decoding_and_pillow_bomb_guard_maps_to_too_large(tmp_path: Path):
    (tmp_path / "claims.png").write_bytes(_png_header_only(5000, 5000))
    assert _reason(lambda: load_image(tmp_path, "claims.png", MAX)) == "image_too_large"
    assert _reason(lambda: load_image(tmp_path, "claims.png", 10**9)) == "unreadable_image"
    (tmp_path / "bomb.png").write_bytes(_png_header_only(20000, 20000))
    assert _reason(lambda: load_image(tmp_path, "bomb.png", 10**9)) == "image_too_large"


def _pixels(image: Image.Image) -> list[tuple[int, int, int]]:
    assert image.mode == "RGB"
    return [image.getpixel((x, 0)) for x in range(image.width)]


def test_alpha_is_composited_on_white(tmp_path: Path):
    rgba = Image.new("RGBA", (3, 1))
    rgba.putdata([(255, 0, 0, 0), (0, 0, 255, 255), (0, 0, 0, 128)])
    rgba.save(tmp_path / "rgba.png")
    transparent, opaque, half = _pixels(load_image(tmp_path, "rgba.png", MAX))
    assert transparent == (255, 255, 255)
    assert opaque == (0, 0, 255)
    assert all(abs(c - 127) <= 1 for c in half)

    la = Image.new("LA", (2, 1))
    la.putdata([(0, 0), (40, 255)])
    la.save(tmp_path / "la.png")
    assert _pixels(load_image(tmp_path, "la.png", MAX)) == [(255, 255, 255), (40, 40, 40)]


def test_palette_images_convert_with_and_without_transparency(tmp_path: Path):
    palette = Image.new("P", (2, 1))
    palette.putpalette([200, 10, 10, 10, 200, 10] + [0] * 762)
    palette.putdata([0, 1])
    palette.save(tmp_path / "p.png")
    assert _pixels(load_image(tmp_path, "p.png", MAX)) == [(200, 10, 10), (10, 200, 10)]
    palette.save(tmp_path / "p_transparent.png", transparency=0)
    assert _pixels(load_image(tmp_path, "p_transparent.png", MAX)) == [(255, 255, 255), (10, 200, 10)]


def test_grey_16_bit_and_cmyk_convert_to_rgb(tmp_path: Path):
    Image.new("L", (1, 1), 77).save(tmp_path / "l.png")
    assert _pixels(load_image(tmp_path, "l.png", MAX)) == [(77, 77, 77)]

    Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16)).save(tmp_path / "i16.png")
    assert Image.open(tmp_path / "i16.png").mode.startswith("I")
    assert _pixels(load_image(tmp_path, "i16.png", MAX)) == [(0, 0, 0), (128, 128, 128), (255, 255, 255)]

    cmyk = Image.new("CMYK", (2, 1))
    cmyk.putdata([(0, 0, 0, 0), (0, 255, 255, 0)])
    cmyk.save(tmp_path / "cmyk.tif")
    assert _pixels(load_image(tmp_path, "cmyk.tif", MAX)) == [(255, 255, 255), (255, 0, 0)]


def _red_left_blue_right_jpeg(path: Path, orientation: int | None) -> None:
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    image.save(path, "JPEG", quality=95, exif=exif.tobytes())


def _close(a: tuple[int, ...], b: tuple[int, ...], tol: int = 12) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


def test_exif_orientation_is_applied(tmp_path: Path):
    _red_left_blue_right_jpeg(tmp_path / "rotated.jpg", orientation=6)  # shown turned 90° clockwise
    image = load_image(tmp_path, "rotated.jpg", MAX)
    assert image.size == (20, 40)
    assert _close(image.getpixel((10, 5)), (255, 0, 0))
    assert _close(image.getpixel((10, 35)), (0, 0, 255))

    embedded = Image.open(io.BytesIO(image_bytes_for_dataset(tmp_path, "rotated.jpg", MAX)))
    assert embedded.format == "PNG" and embedded.size == (20, 40)


def test_dataset_bytes_keep_rgb_jpeg_and_png_and_reencode_the_rest(tmp_path: Path):
    _red_left_blue_right_jpeg(tmp_path / "plain.jpg", orientation=1)
    Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / "plain.png")
    for name in ("plain.jpg", "plain.png"):
        assert image_bytes_for_dataset(tmp_path, name, MAX) == (tmp_path / name).read_bytes()

    Image.new("CMYK", (16, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", "JPEG", quality=95)
    Image.new("P", (8, 8), 0).save(tmp_path / "palette.png")
    for name in ("cmyk.jpg", "palette.png"):
        data = image_bytes_for_dataset(tmp_path, name, MAX)
        assert data != (tmp_path / name).read_bytes()
        decoded = Image.open(io.BytesIO(data))
        assert decoded.format == "PNG" and decoded.mode == "RGB"
        assert np.array_equal(np.asarray(decoded), np.asarray(load_image(tmp_path, name, MAX)))
    assert _close(
        Image.open(io.BytesIO(image_bytes_for_dataset(tmp_path, "cmyk.jpg", MAX))).getpixel((4, 4)),
        (255, 0, 0),
    )

    assert _reason(lambda: image_bytes_for_dataset(tmp_path, "gone.png", MAX)) == "missing_image"


def _symlinked_layout(tmp_path: Path) -> tuple[Path, Path]:
    """The README's ShareGPT4V layout: ``root/coco -> outside/coco``, and a private file beside it."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (outside / "coco" / "train2017").mkdir(parents=True)
    (outside / "private").mkdir()
    root.mkdir()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(outside / "coco" / "train2017" / "1.jpg")
    Image.new("RGB", (8, 8), (9, 9, 9)).save(outside / "private" / "secret.jpg")
    (root / "coco").symlink_to(outside / "coco")
    (root / "secret.jpg").symlink_to(outside / "private" / "secret.jpg")
    return root, outside


def test_a_symlink_out_of_the_root_is_refused_unless_its_target_is_trusted(tmp_path: Path):
    root, outside = _symlinked_layout(tmp_path)
    inside, escape = "coco/train2017/1.jpg", "coco/../private/secret.jpg"
    for call in (load_image, image_bytes_for_dataset, check_image):
        assert _reason(lambda call=call: call(root, inside, MAX)) == "unsafe_image_path"
        assert _reason(lambda call=call: call(root, escape, MAX)) == "unsafe_image_path"
    trusted = [str(outside / "coco")]
    assert load_image(root, inside, MAX, trusted=trusted).size == (8, 8)
    assert (
        image_bytes_for_dataset(root, inside, MAX, trusted=trusted)
        == (outside / "coco/train2017/1.jpg").read_bytes()
    )
    for rel in (escape, "secret.jpg"):  # '..' through the trusted link, or another link: still outside
        with pytest.raises(ImageError, match=f"outside the image root {root}") as info:
            image_bytes_for_dataset(root, rel, MAX, trusted=trusted)
        assert info.value.reason == "unsafe_image_path"
    with pytest.raises(ImageError, match=f"--trust-image-dir {outside / 'coco'}"):
        check_image(root, inside, MAX)


def test_paths_too_long_for_a_file_system_are_refused_without_touching_it(tmp_path: Path):
    assert _reason(lambda: check_image(tmp_path, "a/" * 2500 + "x.jpg", MAX)) == "unsafe_image_path"
    assert _reason(lambda: check_image(tmp_path, "x" * 300 + ".jpg", MAX)) == "unsafe_image_path"


def test_extreme_aspect_ratios_are_refused_from_the_header(tmp_path: Path):
    Image.new("RGB", (2000, 1), (1, 2, 3)).save(tmp_path / "thin.png")
    Image.new("RGB", (40, 2), (1, 2, 3)).save(tmp_path / "wide.png")
    assert (
        _reason(lambda: check_image(tmp_path, "thin.png", MAX, max_aspect_ratio=20)) == "image_aspect_ratio"
    )
    assert _reason(lambda: image_bytes_for_dataset(tmp_path, "thin.png", MAX, max_aspect_ratio=20)) == (
        "image_aspect_ratio"
    )
    check_image(tmp_path, "wide.png", MAX, max_aspect_ratio=20)
    assert (
        _reason(lambda: load_image(tmp_path, "wide.png", MAX, max_aspect_ratio=19.9)) == "image_aspect_ratio"
    )


def test_export_bytes_come_from_a_header_check_not_a_decode(tmp_path: Path):
    import tracemalloc

    x = np.linspace(0, 255, 3000, dtype=np.uint8)
    Image.fromarray(np.stack([np.tile(x, (3000, 1))] * 3, axis=-1)).save(tmp_path / "big.jpg", quality=80)
    size = (tmp_path / "big.jpg").stat().st_size
    tracemalloc.start()
    try:
        data = image_bytes_for_dataset(tmp_path, "big.jpg", 10**8)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert data == (tmp_path / "big.jpg").read_bytes()
    assert peak < size * 3 + 2_000_000, f"{peak:,} bytes: the 27 MB of pixels were decoded"

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(buffer, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    assert _reason(lambda: image_bytes_for_dataset(tmp_path, "cut.jpg", MAX)) == "unreadable_image"
    (tmp_path / "tail.jpg").write_bytes(buffer.getvalue() + b"camera notes after the end marker")
    assert image_bytes_for_dataset(tmp_path, "tail.jpg", MAX) == (tmp_path / "tail.jpg").read_bytes()
