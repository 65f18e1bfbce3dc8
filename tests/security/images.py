"""Tiny image files made by hand (no imaging library needed)."""

from __future__ import annotations

import struct
import zlib


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int = 1, height: int = 1, *, pixels: bool = True) -> bytes:
    """An RGBA PNG of ``width`` x ``height``; without ``pixels`` only the header (a bomb's claim)."""
    header = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))
    body = b""
    if pixels:
        raw = b"".join(b"\x00" + b"\x00\x00\x00\xff" * width for _ in range(height))
        body = _chunk(b"IDAT", zlib.compress(raw))
    else:
        body = _chunk(b"IDAT", zlib.compress(b"\x00" * 64))
    return b"\x89PNG\r\n\x1a\n" + header + body + _chunk(b"IEND", b"")


def gif(width: int = 1, height: int = 1) -> bytes:
    """A one-colour GIF89a claiming ``width`` x ``height``."""
    return (
        b"GIF89a"
        + struct.pack("<HH", width, height)
        + b"\x80\x00\x00\x00\x00\x00\xff\xff\xff"
        + b",\x00\x00\x00\x00"
        + struct.pack("<HH", width, height)
        + b"\x00\x02\x02D\x01\x00;"
    )
