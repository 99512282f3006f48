"""Human-readable names for tasks: used in error messages, notes and async stacks."""

from __future__ import annotations

from collections.abc import Mapping
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._task import AsyncTask

_MAX_ARG = 60


def _short(value: object) -> str:
    try:
        text = repr(value)
    except Exception as e:  # never let a broken __repr__ hide the real error
        text = f"<{type(value).__name__}: repr failed with {type(e).__name__}>"
    return text if len(text) <= _MAX_ARG else text[: _MAX_ARG - 3] + "..."


def fn_name(fn: Any) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if name is None:
        return _short(fn)
    module = getattr(fn, "__module__", None)
    return f"{module}.{name}" if module and module != "builtins" else str(name)


def format_call(task: AsyncTask[Any]) -> str:
    fn = task.fn
    if fn is None:
        gen = task._gen
        code = getattr(gen, "gi_code", None)
        return f"{code.co_name}(...)" if code is not None else "<task>"
    return f"{fn_name(fn)}({format_args(task.args, task.kwargs)})"


def format_args(args: tuple[Any, ...], kwargs: Mapping[str, Any] | None) -> str:
    """``1, 'a', key=2``, each value's repr shortened."""
    parts = [_short(a) for a in args]
    if kwargs:
        parts.extend(f"{k}={_short(v)}" for k, v in kwargs.items())
    return ", ".join(parts)


_NOTE_PREFIX = "batchq async call chain"
_CO_VARARGS = 0x04
_CO_VARKEYWORDS = 0x08
_CO_GENERATOR = 0x20
# A longer chain shows its two ends: a 100,000-deep recursion must not print 100,000 lines.
_MAX_CHAIN = 24
_CHAIN_END = 10


def async_chain(tb: TracebackType | None) -> list[str]:
    """The generator frames of a traceback, as calls with their arguments, outermost first.

    batchq's own generators are left out: the chain shows the user's async functions only.
    """
    out: list[str] = []
    while tb is not None:
        frame = tb.tb_frame
        code = frame.f_code
        module = frame.f_globals.get("__name__", "")
        if code.co_flags & _CO_GENERATOR and not module.startswith("batchq."):
            # Named as call_str() and format_async_stack() name calls: module.qualname(args).
            name = getattr(code, "co_qualname", code.co_name)
            prefix = f"{module}." if module and module != "builtins" else ""
            out.append(f"{prefix}{name}({_frame_args(frame)})")
        tb = tb.tb_next
    return out


def _frame_args(frame: FrameType) -> str:
    code = frame.f_code
    nargs = code.co_argcount + code.co_kwonlyargcount
    names = list(code.co_varnames[:nargs])
    local = frame.f_locals
    parts = [f"{n}={_short(local[n])}" for n in names if n in local]
    extra = nargs
    if code.co_flags & _CO_VARARGS:
        star = code.co_varnames[extra]
        extra += 1
        parts.extend(_short(a) for a in local.get(star, ()))
    if code.co_flags & _CO_VARKEYWORDS:
        parts.extend(f"{k}={_short(v)}" for k, v in local.get(code.co_varnames[extra], {}).items())
    return ", ".join(parts)


def note_async_chain(error: BaseException) -> None:
    """Attach the chain of async calls the error passed through (Python 3.11+; a no-op on 3.10).

    Called each time the error leaves a run; a later, longer chain (an outer run of a nested
    synchronous call) replaces the note instead of adding a second one.
    """
    add_note = getattr(error, "add_note", None)
    if add_note is None:
        return
    chain = async_chain(error.__traceback__)
    if len(chain) < 2:
        return
    notes = getattr(error, "__notes__", None)
    old = None
    if isinstance(notes, list):
        for i, n in enumerate(notes):
            if isinstance(n, str) and n.startswith(_NOTE_PREFIX):
                old = i
                break
    if old is not None and notes is not None and notes[old].count("\n") >= _shown(len(chain)):
        return  # already noted, as long or longer
    if len(chain) > _MAX_CHAIN:
        hidden = len(chain) - 2 * _CHAIN_END
        chain = [
            *chain[:_CHAIN_END],
            f"... {hidden} more async calls ...",
            *chain[-_CHAIN_END:],
        ]
    lines = "\n".join(f"  {'  ' * min(i, _MAX_CHAIN)}{c}" for i, c in enumerate(chain))
    note = f"{_NOTE_PREFIX} (outermost first):\n{lines}"
    if old is not None and notes is not None:
        notes[old] = note
    else:
        add_note(note)


def _shown(n: int) -> int:
    """How many lines a chain of ``n`` calls takes in the note."""
    return n if n <= _MAX_CHAIN else 2 * _CHAIN_END + 1
