"""Open source images safely: paths stay inside their root, sizes are checked before decoding.

Paths come from data files, so a record could point anywhere (``../../etc/passwd``, ``/root/x``).
The check is lexical — absolute paths and ``..`` that climb out of the root are refused — so it
needs no file to exist and costs nothing per record. Symlinks *inside* the root are trusted: the
user placed them there (a common way to assemble ``coco/``, ``sam/``… from several disks).

Every image is handed on as fully loaded RGB: palette, alpha, CMYK, greyscale and 16-bit files
are converted rather than rejected (alpha is composited on white, as a viewer would show it),
and the EXIF orientation is applied so the model sees the picture the right way up.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps

_EMBED_AS_IS = {"JPEG", "PNG"}
_DRIVE = re.compile(r"[A-Za-z]:")
_SEPARATORS = re.compile(r"[/\\]")


class ImageError(Exception):
    """An image that cannot be used; ``reason`` is the reject code, ``detail`` the sentence to read."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def check_image_path(root: str | Path, rel: str) -> None:
    """Raise ImageError("unsafe_image_path") unless ``rel`` is a relative path that stays inside ``root``.

    Pure string work (no pathlib, no file system) because readers call it for every record.
    Backslashes count as separators too, so a Windows-style ``..\\..\\x`` is refused as well.
    """
    if not isinstance(rel, str) or not rel.strip() or "\x00" in rel:
        raise ImageError("unsafe_image_path", f"image path {rel!r} is empty or not a plain relative path")
    if rel.startswith(("/", "\\")) or _DRIVE.match(rel):
        raise ImageError(
            "unsafe_image_path",
            f"image path {rel!r} is absolute; image paths must be relative to the image root ({root})",
        )
    depth = 0
    for part in _SEPARATORS.split(rel):
        depth += -1 if part == ".." else (0 if part in ("", ".") else 1)
        if depth < 0:
            raise ImageError(
                "unsafe_image_path",
                f"image path {rel!r} climbs out of the image root ({root}) with '..'; "
                "fix the record's 'image' field",
            )


def safe_image_path(root: str | Path, rel: str) -> Path:
    """``root/rel``, refusing any ``rel`` that is absolute or climbs out of ``root``."""
    check_image_path(root, rel)
    return Path(root) / rel


@dataclass
class _Decoded:
    rgb: Image.Image
    path: Path
    original_is_rgb: bool  # an upright, opaque RGB JPEG/PNG: its own bytes show what the model saw


def _to_rgb(image: Image.Image) -> Image.Image:
    """A new RGB image: transparency over white, 16-bit grey scaled to 8 bits, anything else converted."""
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if image.mode.startswith("I"):
        grey = np.asarray(image).astype(np.int64)
        return Image.fromarray(np.clip(grey >> 8, 0, 255).astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


def _existing(root: str | Path, rel: str) -> Path:
    path = safe_image_path(root, rel)
    if not path.is_file():
        raise ImageError(
            "missing_image",
            f"{path}: image not found; check that --image-root ({root}) is the folder the "
            f"data's image paths are relative to and that '{rel}' was downloaded",
        )
    return path


@contextmanager
def _opened(path: Path, max_pixels: int) -> Iterator[Image.Image]:
    """The image with only its header read, its size checked; read errors become ImageError."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(
                    "image_too_large",
                    f"{path}: {width}x{height} = {width * height:,} pixels exceeds images.max_pixels "
                    f"({max_pixels:,}); raise the limit in the recipe if the image is wanted",
                )
            yield image
    except Image.DecompressionBombError as err:
        raise ImageError(
            "image_too_large",
            f"{path}: refused by Pillow's decompression-bomb guard ({err}); the file is too large to decode",
        ) from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageError(
            "unreadable_image",
            f"{path}: not a readable image ({type(err).__name__}: {err}); re-download or remove the file",
        ) from err


def check_image(root: str | Path, rel: str, max_pixels: int) -> None:
    """Check an image from its header alone (exists, safe path, known format, size within the limit).

    For units whose negative never looks at the image: a full decode would cost far more than
    making the negative, and the export embeds the file's bytes anyway.
    """
    with _opened(_existing(root, rel), max_pixels):
        pass


def _decode(root: str | Path, rel: str, max_pixels: int) -> _Decoded:
    path = _existing(root, rel)
    with _opened(path, max_pixels) as image:
        try:
            image.load()
        except (OSError, SyntaxError, ValueError, EOFError) as err:
            raise ImageError(
                "unreadable_image",
                f"{path}: not a readable image ({type(err).__name__}: {err}); re-download or remove the file",
            ) from err
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
        upright = ImageOps.exif_transpose(image)
        return _Decoded(
            rgb=_to_rgb(upright),
            path=path,
            original_is_rgb=image.format in _EMBED_AS_IS
            and image.mode == "RGB"
            and "transparency" not in image.info
            and orientation == 1,
        )


def load_image(root: str | Path, rel: str, max_pixels: int) -> Image.Image:
    """The image at ``root/rel`` as a fully loaded, upright RGB image, or an ImageError saying why not."""
    return _decode(root, rel, max_pixels).rgb


def image_bytes_for_dataset(root: str | Path, rel: str, max_pixels: int) -> bytes:
    """The bytes export embeds: the original file when it is already an upright RGB JPEG/PNG, else a PNG.

    Keeping original bytes avoids a lossy JPEG re-encode and keeps the dataset small; anything a
    reader would decode differently from what the model saw (alpha, palette, CMYK, rotation) is
    re-encoded from the converted image instead.
    """
    decoded = _decode(root, rel, max_pixels)
    if decoded.original_is_rgb:
        return decoded.path.read_bytes()
    buffer = io.BytesIO()
    decoded.rgb.save(buffer, format="PNG")
    return buffer.getvalue()
