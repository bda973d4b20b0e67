"""Newline-delimited framing of a CLI's stdout (pure): bytes in, whole lines out.

Both CLIs speak one JSON object per line; each backend's parser wraps this buffer and
turns the lines into its own records.
"""

from __future__ import annotations


class LineBuffer:
    """Feed any split of bytes with :meth:`receive_data`; take whole lines with :meth:`next_line`."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        # the buffer holds no newline before this offset: long lines stay O(n)
        self._scanned = 0

    def receive_data(self, data: bytes) -> None:
        """Feed stdout bytes. A final line without its newline is never returned."""
        self._buffer += data

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete line waiting for its newline."""
        return len(self._buffer)

    def next_line(self) -> bytes | None:
        """The next non-empty line, stripped, or None until more data comes."""
        while True:
            idx = self._buffer.find(b"\n", self._scanned)
            if idx < 0:
                self._scanned = len(self._buffer)
                return None
            raw = bytes(self._buffer[:idx]).strip()
            del self._buffer[: idx + 1]
            self._scanned = 0
            if raw:
                return raw
