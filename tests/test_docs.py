"""Every ```python block of README.md and docs/*.md runs as written and prints what it shows.

The conventions a page follows (this docstring is the guide for whoever writes the docs):

- A page's blocks run in order in one namespace (a fresh module per page), so a setup block early
  on the page defines what later blocks use. Each page runs in its own temporary directory,
  which is also on ``sys.path``.
- Output a block shows is written as ``# prints: <one line of output>`` comments, inline after
  the ``print(...)`` or on the lines that follow; one marker per output line, in order. The
  block's whole stdout must equal the marked lines; ``...`` in a marker matches any text. A
  block that prints without showing it fails.
- A block that ends by raising shows it as ``# raises: ErrorType: message`` (``...`` matches any
  text); an exception without a marker fails the page.
- A block whose first line is ``# file: some/path.py`` is a file of the example project: it is
  written to that path in the page's directory instead of being run, so later blocks can import
  it. When a page has written ``tests/test_*.py`` files, they are run with pytest at the end and
  must all pass.
- Blocks fenced as ```sh (or anything but ```python) are not run.
"""

from __future__ import annotations

import contextlib
import gc
import io
import re
import subprocess
import sys
import textwrap
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from batchq.testing import MemcachedServer, find_memcached

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)\s*$")
_PRINTS = re.compile(r"#\s*prints:[ ]?(?P<text>.*)$")
_RAISES = re.compile(r"#\s*raises:[ ]?(?P<text>.*)$")
_FILE = re.compile(r"^#\s*file:\s*(?P<path>\S+)\s*$")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the block's first code line in the page
    lang: str
    code: str

    @property
    def where(self) -> str:
        page = self.page.relative_to(ROOT) if self.page.is_relative_to(ROOT) else self.page
        return f"{page}:{self.line}"

    @property
    def file_path(self) -> str | None:
        first = self.code.split("\n", 1)[0]
        m = _FILE.match(first)
        return m.group("path") if m else None

    @property
    def expected_output(self) -> list[str]:
        return [m.group("text").rstrip() for m in map(_PRINTS.search, self.lines) if m]

    @property
    def expected_error(self) -> str | None:
        found = [m.group("text").strip() for m in map(_RAISES.search, self.lines) if m]
        if len(found) > 1:
            msg = f"{self.where}: {len(found)} '# raises:' markers; a block can raise only once"
            raise AssertionError(msg)
        return found[0] if found else None

    @property
    def lines(self) -> list[str]:
        return self.code.splitlines()


def blocks_of(page: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page, dedented (blocks may sit in list items)."""
    blocks: list[Block] = []
    lines = page.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        start = i + 1
        end = start
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        if end == len(lines):
            msg = f"{page}:{i + 1}: code fence is never closed"
            raise AssertionError(msg)
        code = textwrap.dedent("\n".join(lines[start:end]))
        blocks.append(Block(page, start + 1, m.group("lang"), code))
        i = end + 1
    return blocks


def python_blocks(page: Path) -> list[Block]:
    return [b for b in blocks_of(page) if b.lang == "python"]


def _matches(expected: str, actual: str) -> bool:
    """``expected`` with ``...`` as a wildcard, against the whole of ``actual``."""
    pattern = ".*".join(re.escape(part) for part in expected.split("..."))
    return re.fullmatch(pattern, actual, re.DOTALL) is not None


def check_output(block: Block, stdout: str) -> None:
    expected = block.expected_output
    actual = stdout.splitlines()
    if len(expected) == len(actual) and all(
        _matches(e, a.rstrip()) for e, a in zip(expected, actual, strict=True)
    ):
        return
    shown = "\n".join(f"  # prints: {e}" for e in expected) or "  (nothing)"
    got = "\n".join(f"  {a}" for a in actual) or "  (nothing)"
    msg = f"{block.where}: the block shows\n{shown}\nbut printed\n{got}"
    raise AssertionError(msg)


def check_error(block: Block, error: BaseException | None) -> None:
    expected = block.expected_error
    if error is None:
        if expected is not None:
            msg = f"{block.where}: the block shows '# raises: {expected}' but raised nothing"
            raise AssertionError(msg)
        return
    if expected is None:
        msg = f"{block.where}: the block raised {type(error).__name__}: {error}"
        raise AssertionError(msg) from error
    actual = f"{type(error).__name__}: {error}"
    if not _matches(expected, actual):
        msg = f"{block.where}: the block shows\n  # raises: {expected}\nbut raised\n  {actual}"
        raise AssertionError(msg) from error


@contextlib.contextmanager
def _page_module(page: Path, workdir: Path) -> Iterator[types.ModuleType]:
    """A fresh module to run the page in; modules the page imports from workdir are dropped."""
    name = "docs_" + re.sub(r"\W", "_", page.stem)
    module = types.ModuleType(name)
    module.__file__ = str(page)
    before = set(sys.modules)
    sys.modules[name] = module
    sys.path.insert(0, str(workdir))
    try:
        yield module
    finally:
        # Whatever the page left open (a socket, a thread pool) warns here, in this page's test.
        module.__dict__.clear()
        gc.collect()
        sys.path.remove(str(workdir))
        for mod in set(sys.modules) - before:
            file = getattr(sys.modules[mod], "__file__", None) or ""
            if mod == name or file.startswith(str(workdir)):
                del sys.modules[mod]


def run_page(page: Path, workdir: Path) -> list[Path]:
    """Run every python block of ``page``; return the test files the page wrote."""
    test_files: list[Path] = []
    with _page_module(page, workdir) as module:
        for block in python_blocks(page):
            target = block.file_path
            if target is not None:
                path = workdir / target
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(block.code + "\n")
                if path.parent.name == "tests" and path.name.startswith("test_"):
                    test_files.append(path)
                continue
            # Leading blank lines make tracebacks point at the page's own line numbers.
            code = compile("\n" * (block.line - 1) + block.code, str(page), "exec")
            out = io.StringIO()
            error: BaseException | None = None
            with contextlib.redirect_stdout(out):
                try:
                    exec(code, module.__dict__)
                except Exception as e:
                    error = e
            check_error(block, error)
            check_output(block, out.getvalue())
    return test_files


def run_page_tests(page: Path, workdir: Path, test_files: list[Path]) -> None:
    """Run the test files a page wrote, in a pytest of their own, and require every test to pass."""
    # As in a user's project: strict markers (the plugin registers `memcached`), warnings fail.
    args = ["-q", "-p", "no:cacheprovider", "-W", "error", "--strict-markers", "tests"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    expected = sum(
        len(re.findall(r"^def (test_\w+)", f.read_text(), re.MULTILINE)) for f in test_files
    )
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert done.returncode == 0, f"{page.name}'s tests failed:\n{done.stdout}\n{done.stderr}"
    assert summary.startswith(f"{expected} passed"), (
        f"{page.name}: expected {expected} tests to pass, pytest said {summary!r}\n{done.stdout}"
    )


# Pages whose examples talk to a real memcached: the test starts one and tells the page its
# address through MEMCACHED_ADDRESS (the page reads it, defaulting to 127.0.0.1:11211).
NEEDS_MEMCACHED = {"memcache.md"}
# Pages whose test files use the pytest plugin's memcached fixtures: without memcached, the page's
# blocks still run and only its test files are skipped.
TESTS_NEED_MEMCACHED = {"testing.md"}


@pytest.fixture(scope="module")
def memcached_address() -> Iterator[str]:
    if find_memcached() is None:
        pytest.skip("memcached is not installed (scripts/ensure-memcached.sh)")
    server = MemcachedServer().start()
    try:
        host, port = server.address
        yield f"{host}:{port}"
    finally:
        server.stop()


def _page_param(page: Path) -> object:
    needs = NEEDS_MEMCACHED | TESTS_NEED_MEMCACHED
    marks = [pytest.mark.memcached] if page.name in needs else []
    return pytest.param(page, id=page.name, marks=marks)


@pytest.mark.parametrize("page", [_page_param(p) for p in PAGES])
def test_page_runs(
    page: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    if page.name in NEEDS_MEMCACHED:
        monkeypatch.setenv("MEMCACHED_ADDRESS", request.getfixturevalue("memcached_address"))
    monkeypatch.chdir(tmp_path)
    test_files = run_page(page, tmp_path)
    if test_files and page.name in TESTS_NEED_MEMCACHED and find_memcached() is None:
        pytest.skip(f"{page.name}'s blocks ran; its test files need memcached, not installed")
    if test_files:
        run_page_tests(page, tmp_path, test_files)


def test_every_page_is_collected() -> None:
    # A page added under docs/ is picked up without listing it here.
    names = {p.name for p in PAGES}
    assert {"README.md", "tutorial.md", "api.md", "memcache.md", "testing.md"} <= names
    assert sum(len(python_blocks(p)) for p in PAGES) >= 19


# -- the checker checks: each convention can fail ---------------------------------------------


def _page(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "page.md"
    path.write_text(textwrap.dedent(text))
    return path


def test_blocks_are_found_in_list_items_and_sh_is_not_python(tmp_path: Path) -> None:
    page = _page(
        tmp_path,
        """\
        # t
        - item:

          ```python
          x = 1
          ```

        ```sh
        make test
        ```
        """,
    )
    blocks = blocks_of(page)
    assert [(b.lang, b.code, b.line) for b in blocks] == [
        ("python", "x = 1", 5),
        ("sh", "make test", 9),
    ]


def test_shown_output_must_match(tmp_path: Path) -> None:
    good = _page(
        tmp_path, "```python\nprint(1 + 1)  # prints: 2\nprint('a b c')\n# prints: a ... c\n```\n"
    )
    run_page(good, tmp_path)
    bad = _page(tmp_path, "```python\nprint(3)  # prints: 2\n```\n")
    with pytest.raises(AssertionError, match="shows"):
        run_page(bad, tmp_path)


def test_unshown_output_fails(tmp_path: Path) -> None:
    page = _page(tmp_path, "```python\nprint('surprise')\n```\n")
    with pytest.raises(AssertionError, match="surprise"):
        run_page(page, tmp_path)


def test_errors_must_be_shown(tmp_path: Path) -> None:
    shown = _page(tmp_path, "```python\n{}['k']\n# raises: KeyError: 'k'\n```\n")
    run_page(shown, tmp_path)
    unshown = _page(tmp_path, "```python\nundefined_name\n```\n")
    with pytest.raises(AssertionError, match="NameError"):
        run_page(unshown, tmp_path)
    missing = _page(tmp_path, "```python\nx = 1\n# raises: KeyError: 'k'\n```\n")
    with pytest.raises(AssertionError, match="raised nothing"):
        run_page(missing, tmp_path)


def test_blocks_of_a_page_share_a_namespace_and_file_blocks_are_importable(
    tmp_path: Path,
) -> None:
    page = _page(
        tmp_path,
        """\
        ```python
        # file: shop/prices.py
        PRICE = 3
        ```
        ```python
        from shop.prices import PRICE
        total = PRICE * 2
        ```
        ```python
        print(total)  # prints: 6
        ```
        """,
    )
    assert run_page(page, tmp_path) == []
    assert "shop.prices" not in sys.modules
