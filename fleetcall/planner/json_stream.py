"""Find the elements of a JSON plan's task list while its text streams in. Pure, linear, never raises.

A JSON plan is ``{"tasks": [...]}`` (or ``{"plan": [...]}``, or a bare list), maybe after a
```json fence or a sentence. :class:`TaskListScanner` reads the text chunk by chunk and returns
the text of each element of that list as soon as the element is complete, so its task can start
while the model still writes the next one. It tracks only what it needs: open brackets, whether
it is inside a string (and after a backslash there), and the keys of the top-level object. Each
character is looked at once (regular expressions jump to the next character that matters), so
the work is linear in the text whatever the chunking; no element is parsed here (the caller
parses each complete element once).

What it does not check (a complete element is parsed on its own, so its errors are found then):
the JSON between elements. A bracket that closes the wrong opener stops the scan (``error``).

>>> s = TaskListScanner()
>>> [e.text for e in s.feed('{"tasks": [{"id": 1}, {"id"')], s.feed(': 2}]}')[0].text, s.list_closed
(['{"id": 1}'], '{"id": 2}', True)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

LIST_KEYS = frozenset({"tasks", "plan"})   # top-level keys whose list is the plan's task list
_MAX_KEY_CHARS = 32                         # longer keys are not LIST_KEYS: not captured

_START = re.compile(r"[{\[]")                # the JSON value starts at the first of these
_STRUCT = re.compile(r'[{}\[\]",:]')         # outside strings: the characters that matter
_IN_STRING = re.compile(r'["\\]')            # inside a string: its end or an escape
_ELEMENT = re.compile(r"[^\s,]")             # between elements: where the next one (or ']') is
_CLOSER = {"{": "}", "[": "]"}


@dataclass(frozen=True, slots=True)
class Element:
    """One complete element of the task list."""

    position: int   # 1-based position in the list
    text: str       # its JSON text, exactly as written


@dataclass(slots=True)
class TaskListScanner:
    """Incremental scanner; see the module docstring. :meth:`feed` returns completed elements."""

    started: bool = False          # True once the JSON value's first bracket was seen
    done: bool = False             # True once the list (or the whole value) closed, or an error
    list_closed: bool = False      # True iff the task list was found and closed
    error: str | None = None       # why the scan stopped early (a mismatched bracket)
    elements: int = 0              # elements returned so far
    _stack: list[str] = field(default_factory=list)   # open brackets, outermost first
    _list_depth: int | None = None   # len(_stack) while directly inside the task list
    _in_string: bool = False
    _escaped: bool = False           # inside a string, right after a backslash
    _expect_key: bool = False        # in the top-level object, the next string is a key
    _key: list[str] | None = None    # the top-level key being read, if any (None: not capturing)
    _last_key: str | None = None     # the latest complete top-level key
    _element: list[str] | None = None  # pieces of the element being read (None: between elements)
    _element_from: int = 0           # where the element's text starts in the current chunk
    _scalar: bool = False            # the element being read is not an object or list

    @property
    def found_list(self) -> bool:
        return self._list_depth is not None

    def feed(self, chunk: str) -> list[Element]:
        """Consume ``chunk``; return the elements it completed, in order."""
        out: list[Element] = []
        if self.done or not chunk:
            return out
        if self._element is not None:
            self._element_from = 0
        i, n = 0, len(chunk)
        while i < n and not self.done:
            i = self._step(chunk, i, out)
        if self._element is not None and not self.done:
            self._element.append(chunk[self._element_from:])
        return out

    def _step(self, chunk: str, i: int, out: list[Element]) -> int:
        """Advance from ``chunk[i]`` past the next thing that matters; returns the new offset."""
        if self._in_string:
            return self._string(chunk, i)
        if not self.started:
            m = _START.search(chunk, i)
            if m is None:
                return len(chunk)
            self.started = True
            i = m.start()
        if self._list_depth == len(self._stack) and self._element is None:
            m = _ELEMENT.search(chunk, i)
            if m is None:
                return len(chunk)
            i = m.start()
            if chunk[i] != "]":
                self._element, self._element_from = [], i
                self._scalar = chunk[i] not in "{["
        m = _STRUCT.search(chunk, i)
        if m is None:
            return len(chunk)
        j = m.start()
        c = chunk[j]
        if c == '"':
            self._in_string = True
            if self._expect_key and len(self._stack) == 1:
                self._key = []
        elif c in "{[":
            self._open(c)
        elif c in "}]":
            self._close(c, chunk, j, out)
        else:
            top_object = len(self._stack) == 1 and self._stack[0] == "{"
            if c == "," and self._scalar_ends_here():
                self._end_element(chunk, j, out)
            if top_object:
                self._expect_key = c == ","
        return j + 1

    def _string(self, chunk: str, i: int) -> int:
        if self._escaped:
            self._escaped = False
            self._capture(chunk[i])
            return i + 1
        m = _IN_STRING.search(chunk, i)
        end = len(chunk) if m is None else m.start()
        self._capture(chunk[i:end])
        if m is None:
            return end
        if chunk[end] == "\\":
            self._escaped = True
            self._capture("\\")
            return end + 1
        self._in_string = False
        if self._key is not None:
            self._last_key, self._key = "".join(self._key), None
        return end + 1

    def _capture(self, text: str) -> None:
        if self._key is not None:
            if sum(map(len, self._key)) + len(text) > _MAX_KEY_CHARS:
                self._key = None
                self._last_key = None
            else:
                self._key.append(text)

    def _open(self, c: str) -> None:
        at_top = not self._stack
        in_object = len(self._stack) == 1 and self._stack[0] == "{" and not self._expect_key
        self._stack.append(c)
        if self._list_depth is None and c == "[" and (at_top or (in_object and self._last_key in LIST_KEYS)):
            self._list_depth = len(self._stack)
        if c == "{" and at_top:
            self._expect_key = True

    def _close(self, c: str, chunk: str, j: int, out: list[Element]) -> None:
        if not self._stack or _CLOSER[self._stack[-1]] != c:
            self.error = f"unexpected {c!r}" + (f" (open: {self._stack[-1]!r})" if self._stack else "")
            self.done = True
            return
        if self._scalar_ends_here():
            self._end_element(chunk, j, out)
        self._stack.pop()
        if self._element is not None and len(self._stack) == self._list_depth:
            self._end_element(chunk, j + 1, out)
        if self._list_depth is not None and len(self._stack) < self._list_depth:
            self.list_closed = self.done = True
        elif not self._stack:
            self.done = True

    def _scalar_ends_here(self) -> bool:
        return self._element is not None and self._scalar and len(self._stack) == self._list_depth

    def _end_element(self, chunk: str, end: int, out: list[Element]) -> None:
        assert self._element is not None
        self._element.append(chunk[self._element_from:end])
        text = "".join(self._element).strip()
        self._element = None
        self.elements += 1
        out.append(Element(self.elements, text))
