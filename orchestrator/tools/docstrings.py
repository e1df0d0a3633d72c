"""Docstring parsing for tool descriptions: Google, NumPy and Sphinx (reST field list) styles.

Only what a tool definition needs is extracted: the summary, the free text after it, and the
description of each parameter. Sections other than the parameter sections (Returns, Raises,
Examples...) are recognised so that they do not leak into the description, and are dropped.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from typing import Final

__all__ = ["Docstring", "parse"]

_PARAM_SECTIONS: Final = frozenset(
    {
        "args",
        "arguments",
        "parameters",
        "params",
        "keyword args",
        "keyword arguments",
        "kwargs",
        "other parameters",
    }
)
_OTHER_SECTIONS: Final = frozenset(
    {
        "attributes",
        "example",
        "examples",
        "note",
        "notes",
        "raises",
        "references",
        "return",
        "returns",
        "see also",
        "todo",
        "warning",
        "warnings",
        "warns",
        "yield",
        "yields",
    }
)
_SECTIONS: Final = _PARAM_SECTIONS | _OTHER_SECTIONS

_GOOGLE_HEADER: Final = re.compile(r"^([A-Za-z][A-Za-z ]*):\s*$")
_NUMPY_RULE: Final = re.compile(r"^\s*-{3,}\s*$")
_SPHINX_FIELD: Final = re.compile(r"^:(\w+)((?:\s+[^:]+?)?)\s*:\s*(.*)$")
_SPHINX_PARAM_KINDS: Final = frozenset({"param", "parameter", "arg", "argument", "key", "keyword"})
# "name (int, optional): text" or "name: text"
_GOOGLE_ENTRY: Final = re.compile(r"^\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
# "name : int" or "name" or "a, b : int"
_NUMPY_ENTRY: Final = re.compile(r"^\*{0,2}(\w+(?:\s*,\s*\*{0,2}\w+)*)\s*(?::.*)?$")


@dataclass(frozen=True)
class Docstring:
    """What a docstring says about a function."""

    #: First paragraph, lines joined.
    summary: str = ""
    #: The paragraphs between the summary and the first section.
    body: str = ""
    #: Parameter name → its description (lines joined).
    params: dict[str, str] = field(default_factory=dict)

    @property
    def description(self) -> str:
        """Summary and body, as one text."""
        return f"{self.summary}\n\n{self.body}" if self.body else self.summary


def parse(doc: str | None) -> Docstring:
    """Parse a docstring; styles may be mixed, unknown shapes end up in ``body``."""
    if not doc or not doc.strip():
        return Docstring()
    lines = inspect.cleandoc(doc).splitlines()
    free: list[str] = []
    params: dict[str, str] = {}
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        field_match = _SPHINX_FIELD.match(stripped) if stripped.startswith(":") else None
        if field_match is not None:
            i = _sphinx_field(lines, i, field_match, params)
            continue
        numpy_name = _numpy_header(lines, i)
        if numpy_name is not None:
            i = _section(lines, i + 2, numpy_name, params, numpy=True)
            continue
        match = _GOOGLE_HEADER.match(stripped) if line == stripped else None
        if match and match.group(1).lower() in _SECTIONS:
            i = _section(lines, i + 1, match.group(1).lower(), params, numpy=False)
            continue
        free.append(line)
        i += 1
    summary, body = _split_summary(free)
    return Docstring(summary=summary, body=body, params=params)


def _numpy_header(lines: list[str], i: int) -> str | None:
    if i + 1 >= len(lines) or not _NUMPY_RULE.match(lines[i + 1]):
        return None
    name = lines[i].strip().lower()
    return name if name in _SECTIONS else None


def _section(
    lines: list[str], start: int, name: str, params: dict[str, str], *, numpy: bool
) -> int:
    """Read the indented (Google) or rule-delimited (NumPy) section at ``start``; return the end."""
    end = start
    while end < len(lines):
        line = lines[end]
        if not numpy and line.strip() and not line[:1].isspace():
            break  # Google sections are indented; the first unindented line ends one
        if numpy and (_numpy_header(lines, end) is not None or _SPHINX_FIELD.match(line.strip())):
            break
        end += 1
    if name in _PARAM_SECTIONS:
        _entries(lines[start:end], params, numpy=numpy)
    return end


def _entries(block: list[str], params: dict[str, str], *, numpy: bool) -> None:
    indents = [len(ln) - len(ln.lstrip()) for ln in block if ln.strip()]
    if not indents:
        return
    base = min(indents)
    names: list[str] = []
    text: list[str] = []

    def flush() -> None:
        for n in names:
            params[n] = _join(text)

    for line in block:
        if line.strip() and len(line) - len(line.lstrip()) == base:
            flush()
            entry = line.strip()
            if numpy:
                match = _NUMPY_ENTRY.match(entry)
                names = [n.strip().lstrip("*") for n in match.group(1).split(",")] if match else []
                text = []
            else:
                match = _GOOGLE_ENTRY.match(entry)
                names = [match.group(1)] if match else []
                text = [match.group(2)] if match else []
        else:
            text.append(line)
    flush()


def _sphinx_field(lines: list[str], i: int, match: re.Match[str], params: dict[str, str]) -> int:
    """Read one ``:field arg: text`` entry with its continuation lines; return the end."""
    kind, arg, first = match.group(1), match.group(2).split(), match.group(3)
    text = [first]
    i += 1
    while i < len(lines) and lines[i].strip() and not lines[i].strip().startswith(":"):
        text.append(lines[i])
        i += 1
    if kind in _SPHINX_PARAM_KINDS and arg:
        params[arg[-1].lstrip("*")] = _join(text)
    return i


def _join(lines: list[str]) -> str:
    return " ".join(s for s in (ln.strip() for ln in lines) if s)


def _split_summary(lines: list[str]) -> tuple[str, str]:
    paragraphs: list[list[str]] = [[]]
    for line in lines:
        if line.strip():
            paragraphs[-1].append(line.strip())
        elif paragraphs[-1]:
            paragraphs.append([])
    paragraphs = [p for p in paragraphs if p]
    if not paragraphs:
        return "", ""
    # the summary is one sentence-like line; the body keeps its line breaks (lists, examples)
    return " ".join(paragraphs[0]), "\n\n".join("\n".join(p) for p in paragraphs[1:])
