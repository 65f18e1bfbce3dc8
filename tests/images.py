"""Tiny image headers for tests: valid magic bytes and dimensions, no real pixel data needed."""

from __future__ import annotations

import struct
import zlib


def png(width: int = 2, height: int = 3) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height``."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    idat = zlib.compress(b"\x00" * 16)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk
        + struct.pack(">I", len(idat))
        + b"IDAT"
        + idat
        + struct.pack(">I", zlib.crc32(b"IDAT" + idat))
        + b"\x00\x00\x00\x00IEND\xaeB`\x82"
    )


def gif(width: int = 2, height: int = 3) -> bytes:
    """A GIF whose logical screen is ``width`` x ``height``."""
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00" + b"\x3b"


def jpeg(width: int = 2, height: int = 3, sof: int = 0xC0) -> bytes:
    """A JPEG with an APP0 segment, a fill byte, then a SOF segment for ``width`` x ``height``."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof_segment = (
        b"\xff\xff" + bytes([sof]) + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    )
    return b"\xff\xd8" + app0 + sof_segment + b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00" + b"\xff\xd9"


def _riff(chunk: bytes, payload: bytes) -> bytes:
    body = b"WEBP" + chunk + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


def webp_lossy(width: int = 2, height: int = 3) -> bytes:
    """A VP8 (lossy) WebP header."""
    return _riff(b"VP8 ", b"\x00\x00\x00\x9d\x01\x2a" + struct.pack("<HH", width, height) + b"\x00" * 8)


def webp_lossless(width: int = 2, height: int = 3) -> bytes:
    """A VP8L (lossless) WebP header."""
    bits = (width - 1) | ((height - 1) << 14)
    return _riff(b"VP8L", b"\x2f" + struct.pack("<I", bits) + b"\x00" * 8)


def webp_extended(width: int = 2, height: int = 3) -> bytes:
    """A VP8X (extended) WebP header."""
    return _riff(
        b"VP8X", b"\x00\x00\x00\x00" + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    )
