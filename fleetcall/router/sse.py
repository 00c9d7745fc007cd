"""Server-sent events, pure parsing: text chunks to lines (:class:`LineSplitter`), lines to
events (:class:`SSEDecoder`).

The endpoint client reads a streamed answer a chunk at a time (one bounded read per chunk the
server sends, not one per line) and splits it here, synchronously.
"""

from __future__ import annotations

__all__ = ["LineSplitter", "SSEDecoder"]

# What ``str.splitlines`` ends a line at (httpx's ``aiter_lines`` splits the same way).
_NEWLINES = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


class LineSplitter:
    """Text chunks in, complete lines out, as ``str.splitlines`` cuts the whole text (a ``\\r``
    at the end of a chunk waits for the next, which may start with its ``\\n``). This is
    httpx's ``LineDecoder``, so reading chunks and splitting them here gives the lines that
    ``Response.aiter_lines`` gives.

        >>> s = LineSplitter()
        >>> s.decode("data: a\\r"), s.decode("\\ndata: b\\n\\nda"), s.flush()
        ([], ['data: a', 'data: b', ''], ['da'])
    """

    __slots__ = ("_buffer", "_trailing_cr")

    def __init__(self) -> None:
        self._buffer: list[str] = []   # the start of a line not ended yet
        self._trailing_cr = False      # True iff the last chunk ended with "\r" (held back)

    def decode(self, text: str) -> list[str]:
        """The lines ``text`` completes (without their line ends)."""
        if self._trailing_cr:
            text = "\r" + text
            self._trailing_cr = False
        if text.endswith("\r"):
            self._trailing_cr = True
            text = text[:-1]
        if not text:
            return []
        trailing_newline = text[-1] in _NEWLINES
        lines = text.splitlines()
        if len(lines) == 1 and not trailing_newline:
            self._buffer.append(lines[0])
            return []
        if self._buffer:
            lines[0] = "".join(self._buffer) + lines[0]
            self._buffer = []
        if not trailing_newline:
            self._buffer = [lines.pop()]
        return lines

    def flush(self) -> list[str]:
        """The unfinished last line, at the end of the stream (if there is one)."""
        if not self._buffer and not self._trailing_cr:
            return []
        lines = ["".join(self._buffer)]
        self._buffer = []
        self._trailing_cr = False
        return lines


class SSEDecoder:
    """Server-sent events, line by line: returns the ``data`` of each completed event.

    ``data:`` lines of one event are joined with newlines; a blank line ends the event; lines
    starting with ``:`` (keep-alive comments) and other fields (``event``, ``id``, ``retry``) are
    skipped. Call :meth:`flush` at the end of the stream for an event without a final blank line.
    """

    __slots__ = ("_data",)

    def __init__(self) -> None:
        self._data: list[str] = []  # data lines of the event being read

    def feed(self, line: str) -> list[str]:
        line = line.rstrip("\r\n")
        if not line:
            return self.flush()
        if line.startswith(":"):
            return []
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value.removeprefix(" "))
        return []

    def flush(self) -> list[str]:
        if not self._data:
            return []
        event = "\n".join(self._data)
        self._data = []
        return [event]
