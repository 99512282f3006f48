"""Where results go: a run never changes a tracked file; the reference results say their run."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from benchmarks import __main__ as cli
from benchmarks._harness import REGISTRY, BenchEnv, Outcome, Workload, ratio_target, run_workload
from benchmarks._plot import (
    HEADLINE,
    figures_from_markdown,
    figures_from_results,
    ratio_text,
    write_plots,
)
from benchmarks._report import RunInfo, render_markdown

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "benchmarks" / "reference"


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=30
    ).stdout


def _in_git_checkout() -> bool:
    return shutil.which("git") is not None and (ROOT / ".git").exists()


def _tiny_workload() -> Workload:
    def build(env: BenchEnv) -> dict[str, object]:
        return {
            "slow": lambda: Outcome(answer=sum(range(2000))),
            "fast": lambda: Outcome(answer=sum(range(1000)) + sum(range(1000, 2000))),
        }

    return Workload(
        name="tiny-demo",
        description="two ways to add up 2,000 numbers",
        systems=("slow", "fast"),
        baseline="slow",
        build=build,  # type: ignore[arg-type]
        budget_s=0.05,
        min_reps=3,
        max_reps=3,
        targets=(ratio_target("fast", "slow", at_most=100.0),),
    )


@pytest.mark.skipif(not _in_git_checkout(), reason="needs a git checkout of batchq")
def test_a_run_leaves_git_status_unchanged_and_says_where_it_wrote(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(REGISTRY.workloads, "tiny-demo", _tiny_workload())
    monkeypatch.chdir(ROOT)
    before = _git("status", "--porcelain", "--untracked-files=all")
    assert cli.main(["--only", "tiny-demo", "--quick"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "batchq benchmarks: 1 workload, quick" in captured.err  # not "1 workloads"
    m = re.search(r"wrote (.*) to (benchmarks/results/[^ ]+)/ \(not tracked by git\)", out)
    assert m is not None, out
    run_dir = ROOT / m.group(2)
    try:
        assert m.group(1) == "results.md, results.json, headline.png, detail.png"
        assert sorted(p.name for p in run_dir.iterdir()) == [
            "detail.png",
            "headline.png",
            "results.json",
            "results.md",
        ]
        assert "## tiny-demo" in (run_dir / "results.md").read_text()
        assert _git("status", "--porcelain", "--untracked-files=all") == before
        assert _git("check-ignore", str(run_dir / "results.md")).strip() != ""
    finally:
        shutil.rmtree(run_dir)


def test_each_run_gets_a_new_directory(tmp_path: Path) -> None:
    first = cli.run_directory("2026-11-30 07:05 UTC", "quick (only depth)", tmp_path)
    assert first == tmp_path / "20261130-0705-quick"
    first.mkdir()
    assert cli.run_directory("2026-11-30 07:05 UTC", "quick", tmp_path).name == (
        "20261130-0705-quick-2"
    )


def test_ratios_are_printed_with_three_significant_digits() -> None:
    # 1.47 beside a 1.5 target must not read "1.5x".
    assert [ratio_text(r) for r in (1.47, 1.5, 1.0, 0.0267, 18.3, 102.4, 2270.0)] == [
        "1.47x",
        "1.50x",
        "1.00x",
        "0.0267x",
        "18.3x",
        "102x",
        "2,270x",
    ]


def _info() -> RunInfo:
    return RunInfo(
        date="2026-11-30 07:00 UTC",
        commit="abc1234",
        dirty=False,
        platform="Linux",
        cpus=2,
        cpu="Test CPU",
        python="CPython 3.11.7",
        versions={},
        mode="quick",
        memcached="off",
        load_start=None,
    )


def test_figures_read_back_from_a_results_table_match_the_run(tmp_path: Path) -> None:
    result = run_workload(_tiny_workload(), BenchEnv())
    direct = figures_from_results([result])
    facts, read = figures_from_markdown(
        render_markdown(_info(), [result], []), {"tiny-demo": result.workload}
    )
    assert facts["Date"] == "2026-11-30 07:00 UTC"
    assert facts["Commit"] == "abc1234"
    (d,), (r,) = direct, read
    assert (r.name, r.baseline, r.measure, r.unit) == ("tiny-demo", "slow", "time", "run")
    assert r.targets == d.targets != ()
    for a, b in zip(d.systems, r.systems, strict=True):
        assert a.system == b.system
        # The table keeps three significant digits.
        assert b.ratio == pytest.approx(a.ratio, rel=5e-3)
        assert b.low == pytest.approx(a.low, rel=1e-2)
        assert b.high == pytest.approx(a.high, rel=1e-2)
    assert [p.name for p in write_plots("caption", read, tmp_path)] == [
        "headline.png",
        "detail.png",
    ]


def test_reference_results_name_their_run_and_the_readme_quotes_them() -> None:
    table = (REFERENCE / "results.md").read_text()
    facts, figures = figures_from_markdown(table)
    about = (REFERENCE / "README.md").read_text()
    # The note says which run the numbers are from: its date and commit.
    assert facts["Date"] in about
    assert facts["Commit"].split(" ")[0] in about
    for name in ("headline.png", "detail.png"):
        assert (REFERENCE / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    readme = (ROOT / "README.md").read_text()
    assert "benchmarks/reference/headline.png" in readme
    # Every headline workload of the reference run is in the figure's list.
    assert {f.name for f in figures} >= set(HEADLINE) - {"memcache-page-local"}
    # The README's memcached-page ratio is the table's.
    page = next(f for f in figures if f.name == "memcache-page-memcached")
    assert f"{ratio_text(page.system('batchq').ratio).removesuffix('x')}\u00d7" in readme


def test_replot_refuses_a_missing_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--replot", str(tmp_path / "nope.md")]) == 2
    assert "no such file" in capsys.readouterr().err
