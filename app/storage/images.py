"""Avatar image checks: the type from the magic bytes, the dimensions from the header.

Nothing here decodes pixels. The type is judged from the first bytes (never the file name
or the client's content type) and the width and height are read from the format's header,
so that an image claiming a huge canvas (a "pixel flood" / decompression bomb) is refused
before anything downstream (Cloudinary, a browser) tries to decode it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from litestar.status_codes import HTTP_415_UNSUPPORTED_MEDIA_TYPE, HTTP_422_UNPROCESSABLE_ENTITY

from app.errors import AppError

#: Extension and content type of each supported format.
FORMATS: dict[str, tuple[str, str]] = {
    "png": ("png", "image/png"),
    "jpeg": ("jpg", "image/jpeg"),
    "webp": ("webp", "image/webp"),
    "gif": ("gif", "image/gif"),
}

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers carry the dimensions; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers that stand alone, without a length field.
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


class ImageError(AppError, ValueError):
    """The upload cannot be used as an avatar."""


class UnsupportedImageError(ImageError):
    """Not a PNG, JPEG, WebP or GIF image, or its header cannot be read: ``415``."""

    status_code = HTTP_415_UNSUPPORTED_MEDIA_TYPE


class ImageTooLargeError(ImageError):
    """The image's canvas has more pixels than allowed: ``422``."""

    status_code = HTTP_422_UNPROCESSABLE_ENTITY


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What the header says about an image."""

    #: ``png``, ``jpeg``, ``webp`` or ``gif``.
    kind: str
    width: int
    height: int

    @property
    def extension(self) -> str:
        """File extension for the format (without the dot)."""
        return FORMATS[self.kind][0]

    @property
    def content_type(self) -> str:
        """The format's media type."""
        return FORMATS[self.kind][1]


def inspect_image(data: bytes, max_pixels: int) -> ImageInfo:
    """Identify an image by its bytes and check its canvas size.

    Args:
        data: The whole upload.
        max_pixels: Largest accepted ``width * height``.

    Returns:
        The format and dimensions.

    Raises:
        UnsupportedImageError: Not one of the supported formats, or a header that cannot be read.
        ImageTooLargeError: ``width * height`` exceeds ``max_pixels``.
    """
    kind = sniff(data)
    if kind is None:
        raise UnsupportedImageError("Not a PNG, JPEG, WebP or GIF image")
    try:
        width, height = _READERS[kind](data)
    except (struct.error, IndexError, ValueError):
        raise UnsupportedImageError(f"Unreadable {kind.upper()} header") from None
    if width <= 0 or height <= 0:
        raise UnsupportedImageError(f"Invalid {kind.upper()} dimensions {width}x{height}")
    if width * height > max_pixels:
        raise ImageTooLargeError(f"Image is {width}x{height} pixels; at most {max_pixels} pixels are allowed")
    return ImageInfo(kind=kind, width=width, height=height)


def sniff(data: bytes) -> str | None:
    """The format named by the magic bytes, or ``None``.

    Args:
        data: The beginning of a file (at least 12 bytes to recognise WebP).

    Returns:
        ``png``, ``jpeg``, ``webp``, ``gif`` or ``None``.
    """
    if data.startswith(_PNG_MAGIC):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def _png_size(data: bytes) -> tuple[int, int]:
    # The IHDR chunk must come first: length (4), type (4), then width and height.
    if data[12:16] != b"IHDR":
        raise ValueError("no IHDR")
    return struct.unpack(">II", data[16:24])


def _gif_size(data: bytes) -> tuple[int, int]:
    # The logical screen descriptor follows the 6-byte signature.
    return struct.unpack("<HH", data[6:10])


def _webp_size(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8 ":
        # Lossy: 3-byte frame tag, start code 9d 01 2a, then 14-bit width and height.
        if data[23:26] != b"\x9d\x01\x2a":
            raise ValueError("bad VP8 start code")
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":
        # Lossless: signature 0x2f, then width-1 and height-1 in 14 bits each.
        if data[20] != 0x2F:
            raise ValueError("bad VP8L signature")
        (bits,) = struct.unpack("<I", data[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        # Extended: 4 bytes of flags, then canvas width-1 and height-1 in 24 bits each.
        if len(data) < 30:
            raise ValueError("truncated VP8X")
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    raise ValueError("unknown WebP chunk")


def _jpeg_size(data: bytes) -> tuple[int, int]:
    # Walk the marker segments after SOI until a start-of-frame one.
    pos = 2
    while True:
        if data[pos] != 0xFF:
            raise ValueError("expected a marker")
        while data[pos] == 0xFF:  # fill bytes may pad a marker
            pos += 1
        marker = data[pos]
        pos += 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker in (0xD9, 0xDA):  # end of image, or scan data before any frame header
            raise ValueError("no frame header")
        (length,) = struct.unpack(">H", data[pos : pos + 2])
        if length < 2:
            raise ValueError("bad segment length")
        if marker in _JPEG_SOF:
            height, width = struct.unpack(">HH", data[pos + 3 : pos + 7])
            return width, height
        pos += length


_READERS = {"png": _png_size, "gif": _gif_size, "webp": _webp_size, "jpeg": _jpeg_size}
