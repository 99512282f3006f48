"""batchq's benchmark suite: ``python -m benchmarks`` (or ``make bench``).

Each ``bench_*.py`` module registers workloads with :mod:`benchmarks._harness`; ``__main__`` finds
them, runs them interleaved, and writes ``results/latest.md``, ``latest.png`` and ``latest.json``.
"""
