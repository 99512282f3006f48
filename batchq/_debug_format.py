"""Human-readable names for tasks: used in error messages, notes and async stacks."""

from __future__ import annotations

from types import TracebackType
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
    parts = [_short(a) for a in task.args]
    if task.kwargs:
        parts.extend(f"{k}={_short(v)}" for k, v in task.kwargs.items())
    return f"{fn_name(fn)}({', '.join(parts)})"


_NOTE_PREFIX = "batchq async call chain"
_CO_GENERATOR = 0x20


def async_chain(tb: TracebackType | None) -> list[str]:
    """The generator frames of a traceback, as calls with their arguments, outermost first."""
    out: list[str] = []
    while tb is not None:
        frame = tb.tb_frame
        code = frame.f_code
        if code.co_flags & _CO_GENERATOR and not frame.f_globals.get("__name__", "").startswith(
            "batchq."
        ):
            nargs = code.co_argcount + code.co_kwonlyargcount
            names = code.co_varnames[:nargs]
            local = frame.f_locals
            args = ", ".join(f"{n}={_short(local[n])}" for n in names if n in local)
            out.append(
                f"{code.co_qualname if hasattr(code, 'co_qualname') else code.co_name}({args})"
            )
        tb = tb.tb_next
    return out


def note_async_chain(error: BaseException) -> None:
    """Attach, once, the chain of async calls the error passed through (Python 3.11+)."""
    add_note = getattr(error, "add_note", None)
    if add_note is None:
        return
    notes = getattr(error, "__notes__", ())
    if any(isinstance(n, str) and n.startswith(_NOTE_PREFIX) for n in notes):
        return
    chain = async_chain(error.__traceback__)
    if len(chain) < 2:
        return
    lines = "\n".join(f"  {'  ' * i}{c}" for i, c in enumerate(chain))
    add_note(f"{_NOTE_PREFIX} (outermost first):\n{lines}")
