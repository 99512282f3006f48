"""docs/api.md lists every public name once, with the parameters the code really has.

The page's format: one ``## `module``` section per public module; in it, tables whose first
column holds code spans, each ``name``, ``name(params)``, ``Class.member`` or
``Class.member(params)``. Parameters are written as in a ``def`` without annotations; a default
of ``...`` stands for one that is not a literal (a factory, a function).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

API = Path(__file__).resolve().parent.parent / "docs" / "api.md"
MODULES = [
    "batchq",
    "batchq.memcache",
    "batchq.tools",
    "batchq.debug",
    "batchq.testing",
    "batchq.mock",
]

_SECTION = re.compile(r"^## `(?P<module>[\w.]+)`\s*$")
_ENTRY = re.compile(r"^(?P<name>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)?)(?:\((?P<params>.*)\))?$")


@dataclass(frozen=True)
class Entry:
    module: str
    name: str  # "name" or "Class.member"
    params: str | None  # None: listed without parameters
    line: int

    @property
    def where(self) -> str:
        return f"docs/api.md:{self.line}: {self.name}"


def _code_spans(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def parse_api(text: str) -> dict[str, list[Entry]]:
    """The entries of each module section: the code spans in the first column of its tables."""
    entries: dict[str, list[Entry]] = {}
    module: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        section = _SECTION.match(line)
        if section is not None:
            module = section.group("module")
            entries.setdefault(module, [])
            continue
        if module is None or not line.startswith("|") or set(line) <= set("|-: "):
            continue
        first = line.split(" | ")[0].lstrip("| ")
        if first == "name":  # the header row
            continue
        spans = _code_spans(first)
        if not spans:
            msg = f"docs/api.md:{number}: a table row must start with `name` code spans: {line!r}"
            raise AssertionError(msg)
        for span in spans:
            m = _ENTRY.match(span)
            if m is None:
                msg = f"docs/api.md:{number}: {span!r} is not `name`, `name(params)` or `A.b`"
                raise AssertionError(msg)
            entries[module].append(Entry(module, m.group("name"), m.group("params"), number))
    return entries


ENTRIES = parse_api(API.read_text())


def _documented_parameters(entry: Entry) -> list[tuple[str, Any, ast.expr | None]]:
    assert entry.params is not None
    try:
        tree = ast.parse(f"def _({entry.params}): pass")
    except SyntaxError as e:
        msg = f"{entry.where}: parameters {entry.params!r} do not parse as a def's: {e}"
        raise AssertionError(msg) from e
    fn = tree.body[0]
    assert isinstance(fn, ast.FunctionDef)
    a = fn.args
    kind = inspect.Parameter
    out: list[tuple[str, Any, ast.expr | None]] = []
    positional = [(p, kind.POSITIONAL_ONLY) for p in a.posonlyargs]
    positional += [(p, kind.POSITIONAL_OR_KEYWORD) for p in a.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(a.defaults))
    defaults += list(a.defaults)
    for (p, k), d in zip(positional, defaults, strict=True):
        out.append((p.arg, k, d))
    if a.vararg is not None:
        out.append((a.vararg.arg, kind.VAR_POSITIONAL, None))
    for p, d in zip(a.kwonlyargs, a.kw_defaults, strict=True):
        out.append((p.arg, kind.KEYWORD_ONLY, d))
    if a.kwarg is not None:
        out.append((a.kwarg.arg, kind.VAR_KEYWORD, None))
    return out


def _is_literal(value: object) -> bool:
    try:
        return ast.literal_eval(repr(value)) == value
    except (ValueError, SyntaxError):
        return False


def check_signature(entry: Entry, obj: object, namespace: ModuleType, *, bound: bool) -> None:
    """The documented parameters of ``entry`` are ``obj``'s: names, kinds and defaults."""
    real = list(inspect.signature(obj).parameters.values())
    if bound:
        real = real[1:]  # a method looked up on its class: `self` is not written
    documented = _documented_parameters(entry)
    plain = [p.replace(annotation=p.empty) for p in real]
    real_text = str(inspect.Signature(plain))
    mismatch = f"{entry.where}: documented ({entry.params}), but the code has {real_text}"
    assert [(n, k) for n, k, _ in documented] == [(p.name, p.kind) for p in real], mismatch
    for (name, _, doc_default), p in zip(documented, real, strict=True):
        if doc_default is None:
            assert p.default is p.empty, f"{mismatch} ({name} has a default)"
            continue
        assert p.default is not p.empty, f"{mismatch} ({name} has no default)"
        if isinstance(doc_default, ast.Constant) and doc_default.value is Ellipsis:
            assert not _is_literal(p.default), (
                f"{mismatch}: write {name}={p.default!r}; '...' is for defaults that are not "
                "literals"
            )
            continue
        try:
            value = ast.literal_eval(doc_default)
        except ValueError:  # a name such as DEFAULT_MAX_VALUE_SIZE or AsyncTask
            # Names resolve in the entry's module, then in batchq (AsyncTask in batchq.memcache).
            scope = {**vars(importlib.import_module("batchq")), **vars(namespace)}
            value = eval(compile(ast.Expression(doc_default), entry.where, "eval"), scope)
        assert value == p.default or value is p.default, (
            f"{mismatch} ({name}'s default is {p.default!r})"
        )


def _needs_parameters(obj: object) -> bool:
    """Functions and classes are documented with their parameters; values and errors are not."""
    if isinstance(obj, type):
        if issubclass(obj, BaseException) or getattr(obj, "_is_protocol", False):
            return False
    elif not callable(obj) or not hasattr(obj, "__name__"):
        return False
    try:
        inspect.signature(obj)
    except (ValueError, TypeError):
        return False
    return True


def test_every_public_module_has_a_section() -> None:
    assert list(ENTRIES) == MODULES


@pytest.mark.parametrize("modname", MODULES)
def test_section_lists_exactly_the_public_names(modname: str) -> None:
    mod = importlib.import_module(modname)
    top = [e.name for e in ENTRIES[modname] if "." not in e.name]
    twice = sorted({n for n in top if top.count(n) > 1})
    assert twice == [], f"listed more than once in the {modname} section: {twice}"
    missing = sorted(set(mod.__all__) - set(top))
    extra = sorted(set(top) - set(mod.__all__))
    assert (missing, extra) == ([], []), (
        f"{modname}: in __all__ but not in docs/api.md: {missing}; "
        f"in docs/api.md but not in __all__: {extra}"
    )


@pytest.mark.parametrize("modname", MODULES)
def test_signatures_match_the_code(modname: str) -> None:
    mod = importlib.import_module(modname)
    checked = 0
    for entry in ENTRIES[modname]:
        owner_name, _, member = entry.name.partition(".")
        obj: object = getattr(mod, owner_name)
        bound = False
        if member:
            static = inspect.getattr_static(obj, member, None)
            assert static is not None, f"{entry.where}: {owner_name} has no attribute {member!r}"
            obj = getattr(obj, member)
            bound = inspect.isfunction(static)
        if entry.params is None:
            if not member:
                assert not _needs_parameters(obj), (
                    f"{entry.where}: write its parameters, "
                    f"e.g. `{entry.name}{inspect.signature(obj)}` without annotations"
                )
            elif callable(obj):
                msg = f"{entry.where}: a method is written with its parameters, e.g. `A.b()`"
                raise AssertionError(msg)
            continue
        check_signature(entry, obj, mod, bound=bound)
        checked += 1
    assert checked > 0


# -- the checker checks ---------------------------------------------------------------------------


def _one(text: str) -> Entry:
    entries = parse_api(f"## `batchq`\n\n| name | what |\n|---|---|\n| {text} | x |\n")
    (entry,) = entries["batchq"]
    return entry


def test_a_renamed_parameter_fails() -> None:
    import batchq

    check_signature(
        _one("`async_override(target, property_name, value)`"),
        batchq.async_override,
        batchq,
        bound=False,
    )
    with pytest.raises(AssertionError, match=r"the code has \(target, property_name, value\)"):
        check_signature(
            _one("`async_override(obj, attr, value)`"), batchq.async_override, batchq, bound=False
        )


def test_a_changed_default_fails() -> None:
    import batchq

    with pytest.raises(AssertionError, match="default is None"):
        check_signature(
            _one("`Loader(fetch, *, max_batch_size=10, name=None)`"),
            batchq.Loader,
            batchq,
            bound=False,
        )
    with pytest.raises(AssertionError, match=r"'\.\.\.' is for defaults that are not literals"):
        check_signature(
            _one("`Loader(fetch, *, max_batch_size=..., name=None)`"),
            batchq.Loader,
            batchq,
            bound=False,
        )
    with pytest.raises(AssertionError, match="max_batch_size has a default"):
        check_signature(
            _one("`Loader(fetch, *, max_batch_size, name=None)`"),
            batchq.Loader,
            batchq,
            bound=False,
        )


def test_a_keyword_only_parameter_written_as_positional_fails() -> None:
    import batchq

    with pytest.raises(AssertionError, match="documented"):
        check_signature(
            _one("`Loader(fetch, max_batch_size=None, name=None)`"),
            batchq.Loader,
            batchq,
            bound=False,
        )
