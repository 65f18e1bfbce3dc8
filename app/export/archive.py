"""A zip archive written while it is sent: each member goes out in chunks, never whole in memory.

The standard library's :mod:`zipfile` writes into a sink that is not seekable (:class:`_Pipe`):
it then puts each member's sizes and CRC in a data descriptor after the member's data instead
of going back to its header, so nothing written needs to be kept. After every write the
compressed bytes the sink received are handed on (:meth:`ZipStream.member`), so the memory
an archive holds is zlib's window and one piece of the member, whatever the archive's size.

Members whose size is not known in advance are written as Zip64 (``large=True``): zipfile
must choose before the data, and a member that grew past 2 GiB without it would break the
stream half-way. Every current unzip (Info-ZIP 6, 7-Zip, libarchive, Windows, macOS, Python)
reads Zip64.
"""

from __future__ import annotations

import io
import zipfile
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, AsyncIterator

#: Compress pieces at least this large in a worker thread (zlib releases the GIL); smaller
#: ones are cheaper to do on the event loop than to hand over.
THREAD_THRESHOLD = 64 * 1024


class _Pipe(io.RawIOBase):
    """A write-only, unseekable file that keeps what was written until :meth:`drain`."""

    def __init__(self) -> None:
        super().__init__()
        self._chunks: list[bytes] = []

    def writable(self) -> bool:
        """It is written to."""
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        """Keep ``data`` until the next :meth:`drain`."""
        self._chunks.append(bytes(data))
        return len(data)

    def drain(self) -> bytes:
        """Everything written since the last drain."""
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data


class ZipStream:
    """A zip archive produced piece by piece (DEFLATE members, modified time: when it was made)."""

    def __init__(self, when: datetime | None = None) -> None:
        """Start an empty archive whose members carry ``when`` (now, UTC, by default)."""
        self._pipe = _Pipe()
        self._zip = zipfile.ZipFile(self._pipe, "w", compression=zipfile.ZIP_DEFLATED)
        self._when = (when or datetime.now(UTC)).timetuple()[:6]

    async def member(
        self, name: str, pieces: AsyncIterable[bytes | str], *, large: bool = False
    ) -> AsyncIterator[bytes]:
        """Write a member from its pieces, yielding the archive's bytes as they are produced.

        Args:
            name: The member's name in the archive.
            pieces: Its content (text is written as UTF-8).
            large: Its size is unknown and may pass 2 GiB: write it as Zip64.

        Yields:
            The archive's next bytes (local header, compressed data, data descriptor).
        """
        info = zipfile.ZipInfo(name, date_time=self._when)  # type: ignore[arg-type]
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o600 << 16  # a regular file, readable by its owner only
        with self._zip.open(info, "w", force_zip64=large) as writer:
            async for piece in pieces:
                data = piece.encode() if isinstance(piece, str) else piece
                if len(data) >= THREAD_THRESHOLD:
                    await anyio.to_thread.run_sync(writer.write, data)
                else:
                    writer.write(data)
                if out := self._pipe.drain():
                    yield out
        if out := self._pipe.drain():
            yield out

    def finish(self) -> bytes:
        """Close the archive: its central directory, the last bytes to send."""
        self._zip.close()
        return self._pipe.drain()


async def one(data: bytes | str) -> AsyncIterator[bytes | str]:
    """A member's content that is known whole (a small file) as the pieces :meth:`ZipStream.member` takes."""
    yield data
