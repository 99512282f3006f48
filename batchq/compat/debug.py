"""asynq.debug under the porting rule: formatting helpers and the debug options object.

batchq reads no debug flags while it runs (see docs/debugging.md for its instruments, async
stacks and strict mode). ``options`` keeps asynq's attribute names so that code setting them
still runs; they change nothing in batchq, except where a helper here reads one. Nothing is
installed on import: ``attach_exception_hook()`` installs a hook that prints errors with
:func:`format_error` and ``detach_exception_hook()`` restores the previous one.
"""

from __future__ import annotations

import contextlib
import linecache
import logging
import sys
import traceback
from collections.abc import Iterator
from types import TracebackType
from typing import Any, TextIO

from batchq._core._loop import limits
from batchq.debug import format_async_stack

from .batching import sync as sync

__all__ = [
    "options",
    "DUMP_ALL",
    "enable_complex_assertions",
    "disable_complex_assertions",
    "enable_original_exc_handler",
    "enable_filter_traceback",
    "enable_traceback_syntax_highlight",
    "dump_error",
    "format_error",
    "AsynqStackTracebackFormatter",
    "extract_tb",
    "format_tb",
    "dump_stack",
    "dump_asynq_stack",
    "format_asynq_stack",
    "filter_traceback",
    "write",
    "attach_exception_hook",
    "detach_exception_hook",
    "sync",
    "stdout",
    "stderr",
]

# Where dump_error and write print; None means sys.stderr / sys.stdout at the time of the call.
# Module attributes, so that tests can patch them (asynq's tests patch "asynq.debug.stderr").
stdout: TextIO | None = None
stderr: TextIO | None = None


class DebugOptions:
    """asynq's debug switches, by name. batchq's scheduler reads only MAX_TASK_STACK_SIZE."""

    def __init__(self) -> None:
        for name in _DUMP_FLAGS:
            setattr(self, name, False)
        self.COLLECT_PERF_STATS = False
        self.SCHEDULER_STATE_DUMP_INTERVAL = 1
        self.DEBUG_STR_REPR_MAX_LENGTH = 240
        self.STACK_DUMP_LIMIT: int | None = 0
        self.ENABLE_COMPLEX_ASSERTIONS = True
        self.KEEP_DEPENDENCIES = False

    @property
    def MAX_TASK_STACK_SIZE(self) -> int:
        """The deepest chain of tasks waiting on each other (batchq's scheduler does read this
        one): past it, the task that would go deeper gets ``batchq.TaskDepthError``."""
        return limits.max_depth

    @MAX_TASK_STACK_SIZE.setter
    def MAX_TASK_STACK_SIZE(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            msg = f"MAX_TASK_STACK_SIZE must be a positive int, got {value!r}"
            raise ValueError(msg)
        limits.set_max_depth(value)

    def DUMP_ALL(self, value: bool | None = None) -> bool | None:
        """Read (no argument) or set every ``DUMP_*`` switch at once."""
        if value is None:
            return all(getattr(self, name) for name in _DUMP_FLAGS)
        for name in _DUMP_FLAGS:
            setattr(self, name, value)
        return None


_DUMP_FLAGS = (
    "DUMP_PRE_ERROR_STATE",
    "DUMP_EXCEPTIONS",
    "DUMP_SCHEDULE_TASK",
    "DUMP_CONTINUE_TASK",
    "DUMP_SCHEDULE_BATCH",
    "DUMP_FLUSH_BATCH",
    "DUMP_DEPENDENCIES",
    "DUMP_COMPUTED",
    "DUMP_NEW_TASKS",
    "DUMP_YIELD_RESULTS",
    "DUMP_QUEUED_RESULTS",
    "DUMP_CONTEXTS",
    "DUMP_SYNC",
    "DUMP_STACK",
    "DUMP_SCHEDULER_STATE",
    "DUMP_SYNC_CALLS",
)

options = DebugOptions()


def DUMP_ALL(value: bool | None = None) -> bool | None:
    return options.DUMP_ALL(value)


@contextlib.contextmanager
def enable_complex_assertions(enable: bool = True) -> Iterator[None]:
    """Set ``options.ENABLE_COMPLEX_ASSERTIONS`` for the block (batchq has no such checks)."""
    old = options.ENABLE_COMPLEX_ASSERTIONS
    options.ENABLE_COMPLEX_ASSERTIONS = enable
    try:
        yield
    finally:
        options.ENABLE_COMPLEX_ASSERTIONS = old


def disable_complex_assertions() -> contextlib.AbstractContextManager[None]:
    return enable_complex_assertions(False)


_settings = {"original_exc_handler": False, "filter_traceback": True, "highlight": True}


def enable_original_exc_handler(enable: bool) -> None:
    """With True, the hook from attach_exception_hook() defers to the previous hook."""
    _settings["original_exc_handler"] = bool(enable)


def enable_filter_traceback(enable: bool) -> None:
    _settings["filter_traceback"] = bool(enable)


def enable_traceback_syntax_highlight(enable: bool) -> None:
    """Colour tracebacks from format_error() (needs pygments; without it, plain text)."""
    _settings["highlight"] = bool(enable)


def _highlight(text: str) -> str:
    try:
        from pygments import highlight
        from pygments.formatters import TerminalFormatter
        from pygments.lexers import get_lexer_by_name
    except ImportError:  # pragma: no cover - pygments is optional
        return text
    highlighted: str = highlight(text, get_lexer_by_name("pytb"), TerminalFormatter())
    return highlighted


def format_error(error: BaseException | None, tb: TracebackType | None = None) -> str | None:
    """``error`` as text: with its traceback when given (or kept in ``error._traceback``)."""
    if error is None:
        return None
    tb = tb if tb is not None else getattr(error, "_traceback", None)
    if tb is not None:
        lines = traceback.format_exception(type(error), error, tb)
    else:
        lines = traceback.format_exception_only(type(error), error)
    text = "".join(lines)
    if _settings["highlight"]:
        text = _highlight(text)
    if _settings["filter_traceback"]:
        text = "".join(filter_traceback(text.splitlines(True)))
    return text


def dump_error(error: BaseException | None, tb: TracebackType | None = None) -> None:
    """Print :func:`format_error` of ``error`` to ``stderr``."""
    out = stderr or sys.stderr
    text = format_error(error, tb)
    out.write("\n" + (text if text is not None else "No error"))


def filter_traceback(tb_list: list[str]) -> list[str]:
    """The lines as they are: batchq tracebacks have none of asynq's boilerplate frames."""
    return list(tb_list)


class AsynqStackTracebackFormatter(logging.Formatter):
    """A logging formatter that formats exceptions with :func:`format_error`."""

    def formatException(self, ei: Any) -> str:
        _, error, tb = ei
        return format_error(error, tb=tb) or ""


def _hidden(frame: Any) -> bool:
    hide = frame.f_locals.get("__traceback_hide__", frame.f_globals.get("__traceback_hide__"))
    return hide is True


def extract_tb(
    tb: TracebackType | None, limit: int | None = None
) -> list[tuple[str, int, str, str | None]]:
    """``(filename, line number, function, source line)`` per frame, without the frames that
    set ``__traceback_hide__ = True``."""
    entries: list[tuple[str, int, str, str | None]] = []
    n = 0
    while tb is not None and (limit is None or n < limit):
        frame = tb.tb_frame
        if not _hidden(frame):
            filename = frame.f_code.co_filename
            line = linecache.getline(filename, tb.tb_lineno, frame.f_globals).strip()
            entries.append((filename, tb.tb_lineno, frame.f_code.co_name, line or None))
        tb = tb.tb_next
        n += 1
    return entries


def format_tb(tb: TracebackType | None) -> list[str]:
    return traceback.format_list(extract_tb(tb))


def dump_stack(skip: int = 0, limit: int | None = None) -> None:
    """Print the calling thread's stack to stdout."""
    stack = traceback.extract_stack()[: -(skip + 1)]
    if limit:
        stack = stack[-limit:]
    out = sys.stdout
    out.write("--- Stack trace: " + "-" * 53 + "\n")
    out.write("".join(traceback.format_list(stack)))
    out.write("-" * 70 + "\n")


def format_asynq_stack() -> list[str] | None:
    """The running task's async stack, a line per entry; None when no task is running."""
    text = format_async_stack()
    if text.startswith("batchq async stack: no batchq task"):
        return None
    return text.splitlines()


def dump_asynq_stack() -> None:
    lines = format_asynq_stack()
    if lines is None:
        print("dump_asynq_stack: no batchq task is running")
    else:
        print("\n".join(lines))


def write(text: str, indent: int = 0) -> None:
    """Print ``text`` to ``stdout``, every line indented by two spaces per level."""
    pad = "  " * indent
    lines = text.split("\n")
    out = [
        line if (i == 0 and not line and text.startswith("\n")) else pad + line
        for i, line in enumerate(lines)
    ]
    (stdout or sys.stdout).write("\n".join(out) + "\n")


_previous_hook: list[Any] = []


def _hook(type_: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
    if _settings["original_exc_handler"] and _previous_hook:
        _previous_hook[0](type_, error, tb)
    else:
        (stderr or sys.stderr).write(format_error(error, tb) or "")


def attach_exception_hook() -> None:
    """Print uncaught errors with :func:`format_error` (asynq did this on import)."""
    if not _previous_hook:
        _previous_hook.append(sys.excepthook)
        sys.excepthook = _hook


def detach_exception_hook() -> None:
    if _previous_hook:
        sys.excepthook = _previous_hook.pop()
