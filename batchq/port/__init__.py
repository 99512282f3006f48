"""``python -m batchq.port PATH...``: move an asynq codebase to batchq by rewriting its imports.

The rule is mechanical (docs/porting.md): the package ``asynq`` becomes ``batchq.compat``, which
mirrors asynq's modules and names with batchq's own objects.

- ``import asynq`` becomes ``import batchq.compat as asynq``; ``import asynq.tools`` too (the
  submodules are attributes of ``batchq.compat``); ``import asynq.tools as t`` becomes
  ``import batchq.compat.tools as t``.
- ``from asynq import X`` becomes ``from batchq.compat import X``;
  ``from asynq.sub import Y`` becomes ``from batchq.compat.sub import Y``.
- asynq's ``mock_`` module is ``batchq.compat.mock``.
- A string that is a dotted path into asynq (``"asynq.debug.stderr"``, as passed to
  ``mock.patch``) names the same place under ``batchq.compat``.

Only import statements and such strings change; formatting and comments stay as they are, so a
second run changes nothing. What the rule cannot port is reported with file and line: an
import of a module or name that ``batchq.compat`` does not have, and a call that imports asynq
by name (``importlib.import_module("asynq")``).
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import io
import os
import sys
import tokenize
from collections.abc import Iterator, Sequence

__all__ = ["Problem", "PortResult", "port_source", "port_path", "main"]

TARGET = "batchq.compat"
# asynq's submodules and their batchq.compat counterparts.
SUBMODULES = {
    "decorators": "decorators",
    "futures": "futures",
    "batching": "batching",
    "async_task": "async_task",
    "scheduler": "scheduler",
    "contexts": "contexts",
    "scoped_value": "scoped_value",
    "generator": "generator",
    "utils": "utils",
    "tools": "tools",
    "mock": "mock",
    "mock_": "mock",
    "debug": "debug",
    "profiler": "profiler",
    "asynq_to_async": "asynq_to_async",
}


@dataclasses.dataclass(frozen=True)
class Problem:
    """A construct the rule cannot port; ``line`` is 1-based."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


@dataclasses.dataclass(frozen=True)
class PortResult:
    """The ported text of one source, how many places changed, and what could not be ported."""

    path: str
    original: str
    text: str
    changes: int
    problems: tuple[Problem, ...]

    @property
    def changed(self) -> bool:
        return self.text != self.original

    def diff(self) -> str:
        return "".join(
            difflib.unified_diff(
                self.original.splitlines(True),
                self.text.splitlines(True),
                f"{self.path} (asynq)",
                f"{self.path} (batchq)",
            )
        )


def _map_module(name: str) -> str | None:
    """``asynq[.sub[...]]`` under the rule, or None if batchq.compat has no such module."""
    if name == "asynq":
        return TARGET
    parts = name.split(".")
    sub = SUBMODULES.get(parts[1])
    if sub is None or len(parts) > 2:
        return None
    return f"{TARGET}.{sub}"


def _is_asynq(name: str | None) -> bool:
    return name is not None and (name == "asynq" or name.startswith("asynq."))


def _compat_names(module: str) -> frozenset[str] | None:
    """The names ``module`` (a batchq.compat module) has, or None if it cannot be imported."""
    import importlib

    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None
    return frozenset(vars(mod))


class _Edits:
    """Replacements located by (line, column) in characters, applied back to front."""

    def __init__(self, source: str) -> None:
        self.lines = source.splitlines(True)
        self.items: list[tuple[tuple[int, int], tuple[int, int], str]] = []

    def add(self, start: tuple[int, int], end: tuple[int, int], text: str) -> None:
        self.items.append((start, end, text))

    def apply(self) -> str:
        offsets = [0]
        for line in self.lines:
            offsets.append(offsets[-1] + len(line))
        text = "".join(self.lines)
        for start, end, new in sorted(self.items, reverse=True):
            a = offsets[start[0] - 1] + start[1]
            b = offsets[end[0] - 1] + end[1]
            text = text[:a] + new + text[b:]
        return text


def _tokens(source: str) -> list[tokenize.TokenInfo]:
    return list(tokenize.generate_tokens(io.StringIO(source).readline))


def _char_col(lines: list[str], lineno: int, byte_col: int) -> int:
    """ast columns count UTF-8 bytes; tokenize's count characters."""
    return len(lines[lineno - 1].encode("utf-8")[:byte_col].decode("utf-8", "replace"))


def _statement_tokens(
    tokens: list[tokenize.TokenInfo], start: tuple[int, int], end: tuple[int, int]
) -> Iterator[tokenize.TokenInfo]:
    for tok in tokens:
        if tok.start >= start and tok.end <= end:
            yield tok


def _dotted_span(
    toks: list[tokenize.TokenInfo], i: int
) -> tuple[int, tuple[int, int], tuple[int, int]]:
    """From the NAME at ``toks[i]``, the end index and span of a dotted name ``a . b . c``."""
    j = i
    while (
        j + 2 < len(toks)
        and toks[j + 1].type == tokenize.OP
        and toks[j + 1].string == "."
        and toks[j + 2].type == tokenize.NAME
    ):
        j += 2
    return j, toks[i].start, toks[j].end


def port_source(source: str, path: str = "<string>") -> PortResult:
    """Port one module's source text under the rule; nothing is written."""
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        problem = Problem(path, e.lineno or 0, f"not parsed, left as is: {e.msg}")
        return PortResult(path, source, source, 0, (problem,))
    tokens = _tokens(source)
    edits = _Edits(source)
    lines = edits.lines
    problems: list[Problem] = []

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            _port_import(node, tokens, lines, edits, problems, path)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and _is_asynq(node.module):
            _port_import_from(node, tokens, lines, edits, problems, path)
        elif isinstance(node, ast.Call) and _imports_by_name(node):
            problems.append(
                Problem(
                    path,
                    node.lineno,
                    f'{ast.unparse(node.func)}("asynq") imports asynq by name: port by hand',
                )
            )

    for tok in tokens:
        if tok.type != tokenize.STRING:
            continue
        try:
            value = ast.literal_eval(tok.string)
        except (ValueError, SyntaxError):
            continue  # f-strings and the like
        if not isinstance(value, str):
            continue
        if (
            _is_asynq(value)
            and value != "asynq"
            and all(p.isidentifier() for p in value.split("."))
        ):
            new = _port_dotted_string(value)
            if new is None:
                problems.append(
                    Problem(path, tok.start[0], f"{value!r} has no counterpart in {TARGET}")
                )
            else:
                edits.add(tok.start, tok.end, tok.string.replace(value, new, 1))

    text = edits.apply()
    problems.sort(key=lambda p: p.line)
    return PortResult(path, source, text, len(edits.items), tuple(problems))


def _imports_by_name(call: ast.Call) -> bool:
    """``__import__("asynq")``, ``importlib.import_module("asynq")``, ``find_spec("asynq")``,
    ``pytest.importorskip("asynq")`` and the like: a call that names the module in a string.

    Only the first argument of a function whose name says it imports or finds a module counts:
    the string "asynq" is also the name of the ``.asynq`` attribute (``getattr(f, "asynq")``).
    """
    if not call.args:
        return False
    first = call.args[0]
    if not (isinstance(first, ast.Constant) and first.value == "asynq"):
        return False
    func = call.func
    name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
    return any(word in name.lower() for word in ("import", "install", "find_spec"))


def _port_dotted_string(value: str) -> str | None:
    parts = value.split(".")
    if len(parts) >= 2 and parts[1] in SUBMODULES:
        return ".".join([TARGET, SUBMODULES[parts[1]], *parts[2:]])
    names = _compat_names(TARGET)
    if names is not None and parts[1] in names:
        return ".".join([TARGET, *parts[1:]])
    return None


def _port_import(
    node: ast.Import,
    tokens: list[tokenize.TokenInfo],
    lines: list[str],
    edits: _Edits,
    problems: list[Problem],
    path: str,
) -> None:
    for alias in node.names:
        if not _is_asynq(alias.name):
            continue
        new = _map_module(alias.name)
        if new is None:
            problems.append(
                Problem(path, node.lineno, f"import {alias.name}: no counterpart in {TARGET}")
            )
            continue
        start = (alias.lineno, _char_col(lines, alias.lineno, alias.col_offset))
        end_line = alias.end_lineno or alias.lineno
        end = (end_line, _char_col(lines, end_line, alias.end_col_offset or 0))
        if alias.asname is None:
            # ``import asynq.tools`` binds ``asynq``: the compat package has tools as attribute.
            edits.add(start, end, f"{TARGET} as asynq")
        else:
            _, span_start, span_end = _dotted_span(_tokens_between(tokens, start, end), 0)
            edits.add(span_start, span_end, new)


def _tokens_between(
    tokens: list[tokenize.TokenInfo], start: tuple[int, int], end: tuple[int, int]
) -> list[tokenize.TokenInfo]:
    return [
        t
        for t in _statement_tokens(tokens, start, end)
        if t.type not in (tokenize.NL, tokenize.COMMENT)
    ]


def _port_import_from(
    node: ast.ImportFrom,
    tokens: list[tokenize.TokenInfo],
    lines: list[str],
    edits: _Edits,
    problems: list[Problem],
    path: str,
) -> None:
    module = node.module or ""
    new = _map_module(module)
    if new is None:
        problems.append(Problem(path, node.lineno, f"from {module}: no counterpart in {TARGET}"))
        return
    start = (node.lineno, _char_col(lines, node.lineno, node.col_offset))
    end_line = node.end_lineno or node.lineno
    end = (end_line, _char_col(lines, end_line, node.end_col_offset or 0))
    toks = _tokens_between(tokens, start, end)
    # toks[0] is ``from``; the module's dotted name follows.
    _, span_start, span_end = _dotted_span(toks, 1)
    edits.add(span_start, span_end, new)
    available = _compat_names(new)
    for alias in node.names:
        if alias.name == "*":
            continue
        if module == "asynq" and alias.name == "mock_":
            a_start = (alias.lineno, _char_col(lines, alias.lineno, alias.col_offset))
            a_end = (alias.lineno, a_start[1] + len("mock_"))
            edits.add(a_start, a_end, "mock" if alias.asname else "mock as mock_")
        elif available is not None and alias.name not in available:
            problems.append(
                Problem(
                    path,
                    alias.lineno,
                    f"from {module} import {alias.name}: {new} has no {alias.name} "
                    "(see docs/porting.md)",
                )
            )


def _python_files(paths: Sequence[str]) -> Iterator[str]:
    for root in paths:
        if os.path.isdir(root):
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = sorted(
                    d for d in dirnames if not d.startswith(".") and d != "__pycache__"
                )
                for name in sorted(filenames):
                    if name.endswith(".py"):
                        yield os.path.join(dirpath, name)
        elif os.path.isfile(root):
            yield root
        else:
            msg = f"{root!r} is neither a file nor a directory"
            raise FileNotFoundError(msg)


def _read(path: str) -> tuple[str, str]:
    with open(path, "rb") as f:
        encoding, _ = tokenize.detect_encoding(f.readline)
    with open(path, encoding=encoding, newline="") as f:
        return f.read(), encoding


def port_path(path: str, write: bool = False) -> PortResult:
    """Port one file; with ``write``, save the result in place when it changed."""
    source, encoding = _read(path)
    result = port_source(source, path)
    if write and result.changed:
        with open(path, "w", encoding=encoding, newline="") as f:
            f.write(result.text)
    return result


USAGE = """\
usage: python -m batchq.port [--diff | --check] PATH...

Rewrites asynq imports to batchq.compat in the given files and directories (recursively), in
place. --diff prints the changes without writing; --check writes nothing and exits 1 while any
file still imports asynq or holds something the rule cannot port.
"""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    diff = "--diff" in args
    check = "--check" in args
    paths = [a for a in args if a not in ("--diff", "--check")]
    unknown = [a for a in paths if a.startswith("-")]
    if unknown or not paths or (diff and check) or "-h" in args or "--help" in args:
        if unknown:
            print(f"unknown option {unknown[0]!r}", file=sys.stderr)
        print(USAGE, file=sys.stderr, end="")
        return 0 if ("-h" in args or "--help" in args) else 2
    try:
        files = list(_python_files(paths))
    except FileNotFoundError as e:
        print(f"batchq.port: {e}", file=sys.stderr)
        return 2
    changed = 0
    problems: list[Problem] = []
    for path in files:
        result = port_path(path, write=not (diff or check))
        problems.extend(result.problems)
        if result.changed:
            changed += 1
            if diff:
                sys.stdout.write(result.diff())
            elif check:
                print(f"{path}: still imports asynq")
    for problem in problems:
        print(f"{problem}", file=sys.stderr)
    verb = "would rewrite" if (diff or check) else "rewrote"
    print(
        f"batchq.port: {verb} {changed} of {len(files)} files; "
        f"{len(problems)} constructs to port by hand",
        file=sys.stderr,
    )
    if check and (changed or problems):
        return 1
    return 0
