"""batchq's benchmark suite: ``python -m benchmarks`` (or ``make bench``).

Each ``bench_*.py`` module registers workloads with :mod:`benchmarks._harness`; ``__main__`` finds
them, runs them interleaved, and writes ``results.md``, ``results.json``, ``headline.png`` and
``detail.png`` to a new directory under ``results/`` (ignored by git).
"""
