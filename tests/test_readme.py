"""The README's marked Python snippets run, so the examples users copy keep working.

A snippet is marked by an HTML comment (invisible on GitHub) on the line before its fence::

    <!-- readme-test -->            a script, run in process; top-level ``await`` allowed
    <!-- readme-test: pytest -->    a pytest test module, run by pytest in a fresh directory
    <!-- readme-test: same-as examples/x.py -->
                                    identical to that file (whose own tests run it)

Unmarked blocks are illustrations and are not run. A marker not followed by a ```python block,
or of an unknown kind, fails the suite rather than being skipped.
"""

from __future__ import annotations

import ast
import os
import re
import sys
import types
from pathlib import Path
from typing import NamedTuple

import anyio
import pytest

from orchestrator import tools

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"
MARKER = re.compile(r"^<!--\s*readme-test(?::\s*(?P<kind>[\w-]+)(?:\s+(?P<arg>\S+))?)?\s*-->\s*$")
KINDS = ("script", "pytest", "same-as")


class Snippet(NamedTuple):
    line: int  # of the fence, 1-based
    kind: str
    arg: str | None
    code: str


def extract(text: str) -> list[Snippet]:
    """Every marked snippet of a Markdown text; ValueError for a marker that marks nothing."""
    lines = text.splitlines()
    found: list[Snippet] = []
    for i, line in enumerate(lines):
        match = MARKER.match(line.strip())
        if match is None:
            continue
        kind = match["kind"] or "script"
        if kind not in KINDS or (kind == "same-as") != bool(match["arg"]):
            raise ValueError(f"README line {i + 1}: unknown readme-test marker {line.strip()!r}")
        fence = i + 1
        if fence >= len(lines) or lines[fence].strip() != "```python":
            raise ValueError(
                f"README line {i + 1}: the marker is not followed by a ```python block"
            )
        end = next((j for j in range(fence + 1, len(lines)) if lines[j].strip() == "```"), None)
        if end is None:
            raise ValueError(f"README line {fence + 1}: the ```python block is never closed")
        code = "\n".join(lines[fence + 1 : end]) + "\n"
        found.append(Snippet(fence + 1, kind, match["arg"], code))
    return found


SNIPPETS = extract(README.read_text(encoding="utf-8"))


def test_the_readme_has_runnable_snippets() -> None:
    assert any(s.kind == "pytest" for s in SNIPPETS), "'Testing your tools' is marked and run"


def test_markers_that_mark_nothing_fail() -> None:
    with pytest.raises(ValueError, match="not followed by"):
        extract("<!-- readme-test -->\ntext\n```python\nx = 1\n```\n")
    with pytest.raises(ValueError, match="unknown readme-test marker"):
        extract("<!-- readme-test: doctest -->\n```python\nx = 1\n```\n")
    with pytest.raises(ValueError, match="never closed"):
        extract("<!-- readme-test -->\n```python\nx = 1\n")
    assert extract("<!-- readme-test -->\n```python\nx = 1\n```\n") == [
        Snippet(2, "script", None, "x = 1\n")
    ]


@pytest.mark.anyio
@pytest.mark.parametrize("snippet", SNIPPETS, ids=[f"README.md:{s.line}" for s in SNIPPETS])
async def test_snippet(snippet: Snippet, tmp_path: Path) -> None:
    if snippet.kind == "script":
        await run_script(snippet)
    elif snippet.kind == "pytest":
        await run_pytest(snippet, tmp_path)
    else:
        assert snippet.arg is not None
        assert snippet.code == (ROOT / snippet.arg).read_text(encoding="utf-8")


async def run_script(snippet: Snippet) -> None:
    name = f"readme_snippet_{snippet.line}"
    code = compile(
        snippet.code, f"README.md:{snippet.line}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    )
    module = types.ModuleType(name)
    sys.modules[name] = module  # dataclasses and pickling look their module up
    # A snippet's @tool functions go to a registry of its own, not to this process's default one
    # (where other tests' scripted runs would call them).
    default = tools.default_registry
    tools.default_registry = tools.ToolRegistry()  # type: ignore[misc]
    try:
        pending = eval(code, module.__dict__)  # a coroutine when the snippet awaits
        if pending is not None:
            await pending
    finally:
        tools.default_registry = default  # type: ignore[misc]
        sys.modules.pop(name, None)


async def run_pytest(snippet: Snippet, tmp_path: Path) -> None:
    (tmp_path / f"test_readme_{snippet.line}.py").write_text(snippet.code, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    command = [sys.executable, "-m", "pytest", "-q", "-W", "error", "-p", "no:cacheprovider", "."]
    with anyio.fail_after(120):
        done = await anyio.run_process(command, cwd=tmp_path, env=env, check=False)
    out = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 0, out
    assert re.search(r"\b[1-9]\d* passed\b", out)
