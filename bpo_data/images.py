"""Open source images safely: no file outside the image root, sizes checked before any decoding.

Paths come from data files, so a record could point anywhere (``../../etc/passwd``, ``/root/x``,
``coco/../private/x.jpg`` through a symbolic link). Two checks, both per record:

- the path text: absolute paths, drive letters, NUL, names longer than the OS allows and ``..``
  that climbs out of the root are refused without touching the file system (readers call it for
  every record);
- the resolved file (``realpath``): it must lie under the resolved image root. A symbolic link
  inside the root that leads elsewhere (``coco -> /data/coco``, the usual way to assemble
  ShareGPT4V's sub-folders from several disks) is refused unless its target lies under a folder
  the user named as trusted (``--trust-image-dir /data/coco``, ``run.trust_image_dirs``).

Only the header is read to check an image (format, size, aspect ratio, mode, EXIF orientation);
pixels are decoded only where they are needed: for the weakened model, and for the export when
the bytes must change. Decoded images are fully loaded RGB: palette, alpha, CMYK, greyscale and
16-bit files are converted rather than rejected (alpha is composited on white, as a viewer would
show it), and the EXIF orientation is applied so the model sees the picture the right way up.
"""

from __future__ import annotations

import functools
import io
import os
import re
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from PIL import ExifTags, Image, ImageOps

_EMBED_AS_IS = {"JPEG", "PNG"}
_DRIVE = re.compile(r"[A-Za-z]:")
_SEPARATORS = re.compile(r"[/\\]")
_NAME_MAX = 255  # bytes in one path component (ext4, xfs, NFS)
_PATH_MAX = 4096
# The last bytes of a complete file: a cut file fails this and gets a full decode, which refuses it.
_ENDINGS = {"JPEG": b"\xff\xd9", "PNG": b"IEND\xaeB`\x82"}


class ImageError(Exception):
    """An image that cannot be used; ``reason`` is the reject code, ``detail`` the sentence to read."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def check_image_path(root: str | Path, rel: str) -> None:
    """Raise ImageError("unsafe_image_path") unless ``rel`` is a relative path that stays inside ``root``.

    Pure string work (no file system) because readers call it for every record. Backslashes count
    as separators too, so a Windows-style ``..\\..\\x`` is refused as well.
    """
    if not isinstance(rel, str) or not rel.strip() or "\x00" in rel:
        raise ImageError("unsafe_image_path", f"image path {rel!r} is empty or not a plain relative path")
    if rel.startswith(("/", "\\")) or _DRIVE.match(rel):
        raise ImageError(
            "unsafe_image_path",
            f"image path {rel!r} is absolute; image paths must be relative to the image root ({root})",
        )
    parts = _SEPARATORS.split(rel)
    if len(rel.encode("utf-8", "surrogatepass")) > _PATH_MAX or any(
        len(part.encode("utf-8", "surrogatepass")) > _NAME_MAX for part in parts
    ):
        raise ImageError(
            "unsafe_image_path",
            f"image path {rel[:80]!r}… ({len(rel):,} characters) is longer than a file system allows "
            f"({_NAME_MAX} bytes a name, {_PATH_MAX} a path); fix the record's 'image' field",
        )
    depth = 0
    for part in parts:
        depth += -1 if part == ".." else (0 if part in ("", ".") else 1)
        if depth < 0:
            raise ImageError(
                "unsafe_image_path",
                f"image path {rel!r} climbs out of the image root ({root}) with '..'; "
                "fix the record's 'image' field",
            )


def safe_image_path(root: str | Path, rel: str) -> Path:
    """``root/rel``, refusing any ``rel`` that is absolute or climbs out of ``root`` (text only)."""
    check_image_path(root, rel)
    return Path(root) / rel


@functools.lru_cache(maxsize=4096)
def _real(path: str) -> str:
    """``realpath`` of a folder; cached because thousands of images share a few folders."""
    return os.path.realpath(path)


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _link_on_the_way(root: str, rel: str) -> tuple[str, str] | None:
    """The first symbolic link along ``root/rel`` and where it leads, for the message that refuses it."""
    current = root
    for part in _SEPARATORS.split(rel):
        if part in ("", "."):
            continue
        current = os.path.join(current, part)
        if os.path.islink(current):
            return os.path.relpath(current, root), os.path.realpath(current)
    return None


def resolve_image(root: str | Path, rel: str, trusted: Sequence[str | Path] = ()) -> Path:
    """The real file ``root/rel`` names, after both checks (module docstring); it must exist.

    ``trusted`` are folders outside the root that symbolic links inside it may lead to.
    """
    check_image_path(root, rel)
    root = str(root)
    joined = os.path.join(root, rel)
    try:
        head, name = os.path.split(joined)
        real = os.path.join(_real(head), name)
        if os.path.islink(real):
            real = os.path.realpath(real)
        allowed = [_real(root), *(_real(str(folder)) for folder in trusted)]
        if not any(_under(real, folder) for folder in allowed):
            link = _link_on_the_way(root, rel)
            through = f" through the link {link[0]} -> {link[1]}" if link else ""
            advice = (
                f"if the files under {link[1]} are yours to publish, pass --trust-image-dir {link[1]} "
                "(run.trust_image_dirs)"
                if link
                else "fix the record's 'image' field"
            )
            raise ImageError(
                "unsafe_image_path",
                f"{joined} resolves to {real}, outside the image root {allowed[0]}{through}; {advice}",
            )
        info = os.stat(real)
    except FileNotFoundError:
        raise ImageError(
            "missing_image",
            f"{joined}: image not found; check that --image-root ({root}) is the folder the "
            f"data's image paths are relative to and that '{rel}' was downloaded",
        ) from None
    except (OSError, ValueError) as err:
        raise ImageError(
            "unreadable_image", f"{joined}: cannot be opened ({type(err).__name__}: {err}); check the file"
        ) from err
    if not stat.S_ISREG(info.st_mode):
        raise ImageError("missing_image", f"{joined} is not a file; check the record's 'image' field")
    return Path(real)


@contextmanager
def _opened(
    source: Path | io.BytesIO, shown: Path, max_pixels: int, max_aspect_ratio: float | None
) -> Iterator[Image.Image]:
    """The image with only its header read, its size and shape checked; read errors become ImageError."""
    try:
        with Image.open(source) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(
                    "image_too_large",
                    f"{shown}: {width}x{height} = {width * height:,} pixels exceeds images.max_pixels "
                    f"({max_pixels:,}); raise the limit in the recipe if the image is wanted",
                )
            ratio = max(width, height) / max(min(width, height), 1)
            if max_aspect_ratio is not None and ratio > max_aspect_ratio:
                raise ImageError(
                    "image_aspect_ratio",
                    f"{shown}: {width}x{height} is {ratio:,.0f}:1, beyond images.max_aspect_ratio "
                    f"({max_aspect_ratio:g}); LLaVA's processor scales the short side up first, so such an "
                    "image would take gigabytes — raise the limit in the recipe if it is wanted",
                )
            yield image
    except Image.DecompressionBombError as err:
        raise ImageError(
            "image_too_large",
            f"{shown}: refused by Pillow's decompression-bomb guard ({err}); the file is too large to decode",
        ) from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageError(
            "unreadable_image",
            f"{shown}: not a readable image ({type(err).__name__}: {err}); re-download or remove the file",
        ) from err


def check_image(
    root: str | Path,
    rel: str,
    max_pixels: int,
    *,
    max_aspect_ratio: float | None = None,
    trusted: Sequence[str | Path] = (),
) -> None:
    """Check an image from its header alone (safe path, exists, known format, size and shape).

    For units whose negative never looks at the image: a full decode would cost far more than
    making the negative, and the export embeds the file's bytes anyway.
    """
    path = resolve_image(root, rel, trusted)
    with _opened(path, path, max_pixels, max_aspect_ratio):
        pass


def _to_rgb(image: Image.Image) -> Image.Image:
    """A new RGB image: transparency over white, 16-bit grey scaled to 8 bits, anything else converted."""
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if image.mode.startswith("I"):
        import numpy as np  # only 16-bit images need it; importing it costs a start-up

        grey = np.asarray(image).astype(np.int64)
        return Image.fromarray(np.clip(grey >> 8, 0, 255).astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


def _upright_rgb(image: Image.Image, shown: Path) -> Image.Image:
    """Decode the opened image's pixels: upright and RGB."""
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageError(
            "unreadable_image",
            f"{shown}: not a readable image ({type(err).__name__}: {err}); re-download or remove the file",
        ) from err
    return _to_rgb(ImageOps.exif_transpose(image))


def load_image(
    root: str | Path,
    rel: str,
    max_pixels: int,
    *,
    max_aspect_ratio: float | None = None,
    trusted: Sequence[str | Path] = (),
) -> Image.Image:
    """The image at ``root/rel`` as a fully loaded, upright RGB image, or an ImageError saying why not."""
    path = resolve_image(root, rel, trusted)
    with _opened(path, path, max_pixels, max_aspect_ratio) as image:
        return _upright_rgb(image, path)


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation from the header; PNG's own ``getexif`` would decode the pixels to look further."""
    exif = Image.Image.getexif(image)
    return exif.get(ExifTags.Base.Orientation, 1)


def _shows_as_is(image: Image.Image) -> bool:
    """Whether a reader decoding the file sees what the model saw: an upright, opaque RGB JPEG or PNG."""
    return (
        image.format in _EMBED_AS_IS
        and image.mode == "RGB"
        and "transparency" not in image.info
        and _orientation(image) == 1
    )


def image_bytes_for_dataset(
    root: str | Path,
    rel: str,
    max_pixels: int,
    *,
    max_aspect_ratio: float | None = None,
    trusted: Sequence[str | Path] = (),
) -> bytes:
    """The bytes export embeds: the original file when it is an upright, opaque RGB JPEG/PNG, else a PNG.

    The original bytes are kept after a header check (and a look at the file's last bytes, which a
    cut file lacks): no lossy re-encode, a small dataset, and no decode. Anything a reader would
    decode differently from what the model saw (alpha, palette, CMYK, rotation) is decoded once,
    converted and re-encoded as PNG.
    """
    path = resolve_image(root, rel, trusted)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ImageError(
            "unreadable_image", f"{path}: cannot be read ({err.strerror}); check the file"
        ) from err
    with _opened(io.BytesIO(data), path, max_pixels, max_aspect_ratio) as image:
        if _shows_as_is(image) and data.rstrip(b"\0").endswith(_ENDINGS[image.format]):
            return data
        rgb = _upright_rgb(image, path)
        if _shows_as_is(image):
            return data  # complete after all (bytes after the end marker): still the original
    buffer = io.BytesIO()
    rgb.save(buffer, format="PNG")
    return buffer.getvalue()
