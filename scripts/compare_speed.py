"""Time f.asynq(x), f(x) and rounds on this tree and on an older commit, interleaved, in one run.

    .venv/bin/python scripts/compare_speed.py 5972741

The old tree is exported with ``git archive`` and imported under the name ``batchq_old`` (its
modules import each other relatively), so both run in one process on the same interpreter;
each measurement alternates old and new 25 times and keeps the best of each.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import tarfile
import tempfile
import timeit
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def load_old(commit: str) -> Any:
    tmp = Path(tempfile.mkdtemp(prefix="batchq_old_"))
    archive = subprocess.run(
        ["git", "archive", commit, "batchq"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tmp, filter="data")
    (tmp / "batchq").rename(tmp / "batchq_old")
    # Subpackages (memcache, testing) import the core absolutely: point them at the old copy.
    for path in (tmp / "batchq_old").rglob("*.py"):
        text = path.read_text()
        new = re.sub(r"\b(from|import) batchq\b", r"\1 batchq_old", text)
        if new != text:
            path.write_text(new)
    sys.path.insert(0, str(tmp))
    import batchq_old

    return batchq_old


def workloads(mod: Any) -> dict[str, tuple[Any, int]]:
    asynq = mod.asynq

    @asynq()
    def leaf(x):
        yield None
        return x

    @asynq()
    def plain(x):
        return x

    class Model:
        @asynq()
        def method(self, x):
            yield None
            return x

    @asynq()
    def fan(n):
        return (yield [leaf.asynq(i) for i in range(n)])

    @asynq()
    def chain(d):
        if d == 0:
            return 0
        return (yield chain.asynq(d - 1)) + 1

    store: dict[int, Any] = {}

    @asynq(pure=True)
    def pget(key):
        return store.get(key)
        yield

    @asynq(pure=True)
    def pset(key, value):
        store[key] = value
        return
        yield

    @asynq(pure=True)
    def get_and_set(a, b):
        value = yield pget(a)
        yield pset(b, value)

    @asynq(pure=True)
    def gs_root(n):
        yield pset(0, 0)
        yield [get_and_set(i, i + 1) for i in range(n)]

    loader = mod.Loader(lambda keys: keys)

    @asynq()
    def load_chain(d):
        value = yield loader.load.asynq(d)
        if d == 0:
            return value
        return value + (yield load_chain.asynq(d - 1))

    @asynq()
    def load_child(key):
        return (yield loader.load.asynq(key))

    @asynq()
    def load_fan(n):
        return (yield [load_child.asynq(i) for i in range(n)])

    obj = Model()
    return {
        "f.asynq(x)": (lambda: leaf.asynq(1), 20000),
        "obj.m.asynq(x)": (lambda: obj.method.asynq(1), 20000),
        "f(x)": (lambda: leaf(1), 3000),
        "plain f(x)": (lambda: plain(1), 20000),
        "fan-out 100 (1 round)": (lambda: fan(100), 100),
        "task chain depth 100 (1 round)": (lambda: chain(100), 50),
        "get_and_set x300 (pure)": (lambda: gs_root(300).value(), 20),
        "loader chain 100 (100 rounds)": (lambda: load_chain(100), 50),
        "loader fan-out 1000 (1 round)": (lambda: load_fan(1000), 10),
    }


def main() -> None:
    commit = sys.argv[1] if len(sys.argv) > 1 else "HEAD"
    sys.path.insert(0, str(ROOT))
    import batchq

    old, new = workloads(load_old(commit)), workloads(batchq)
    best = {name: [float("inf"), float("inf")] for name in old}
    for _ in range(25):
        for name in old:
            for i, side in enumerate((old, new)):
                fn, n = side[name]
                best[name][i] = min(best[name][i], timeit.timeit(fn, number=n) / n)
    for name, (t_old, t_new) in best.items():
        print(
            f"{name:30s} {commit[:7]} {t_old * 1e9:8.0f} ns  now {t_new * 1e9:8.0f} ns  "
            f"ratio {t_new / t_old:.3f}"
        )


if __name__ == "__main__":
    main()
