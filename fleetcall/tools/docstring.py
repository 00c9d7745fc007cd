"""Google-style docstrings: the summary paragraph and the per-argument descriptions.

The summary becomes the tool's description in the planner prompt; the ``Args:`` entries become
the ``description`` of each property in the tool's JSON schema.
"""

from __future__ import annotations

import inspect
import re

_ARGS_SECTIONS = {"args", "arguments", "parameters", "params", "keyword args", "keyword arguments"}
_SECTION = re.compile(r"^([A-Za-z][A-Za-z ]*):\s*$")
_ENTRY = re.compile(r"^\s*\**(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


def summary(doc: str | None) -> str:
    """The first paragraph, lines joined with spaces (up to a blank line or a section header)."""
    if not doc:
        return ""
    lines: list[str] = []
    for line in inspect.cleandoc(doc).splitlines():
        if not line.strip() or _SECTION.match(line):
            if lines or _SECTION.match(line):
                break
            continue
        lines.append(line.strip())
    return " ".join(lines)


def arg_descriptions(doc: str | None) -> dict[str, str]:
    """Argument name -> description, from ``Args:`` (or ``Arguments:``/``Parameters:``) sections.

    >>> arg_descriptions('''Search.
    ...
    ...     Args:
    ...         query (str): what to look for,
    ...             in plain words.
    ...         k: how many results.
    ...     ''')
    {'query': 'what to look for, in plain words.', 'k': 'how many results.'}
    """
    if not doc:
        return {}
    out: dict[str, str] = {}
    in_args = False
    entry_indent: int | None = None
    current: str | None = None
    for line in inspect.cleandoc(doc).splitlines():
        indent = len(line) - len(line.lstrip())
        header = _SECTION.match(line)
        if header and indent == 0:
            in_args = header.group(1).strip().lower() in _ARGS_SECTIONS
            entry_indent, current = None, None
            continue
        if not in_args or not line.strip():
            continue
        if indent == 0:   # text back at the margin ends the section
            in_args, current = False, None
            continue
        entry = _ENTRY.match(line)
        if entry and (entry_indent is None or indent <= entry_indent):
            entry_indent = indent
            current = entry.group(1)
            out[current] = entry.group(2).strip()
        elif current is not None:
            out[current] = f"{out[current]} {line.strip()}".strip()
    return out
