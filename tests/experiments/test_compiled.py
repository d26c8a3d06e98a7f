"""The benchmarks' compiled column (experiments/_compiled.py) and its rows (_rows.py):
compiling a small function, a failure as one line, and the rows' skip note and
compiled/eager ratios (in process, with fake compiled rows where compiling is not the point)."""

from __future__ import annotations

import json

import pytest
import torch

from gradcv.experiments._compiled import COMPILED, RATIO, CompileFailed, compile_call, compile_fn, one_line
from gradcv.experiments._rows import Row, compiled_ratios, compiled_row, ratio_lines, time_rows, write_results


def test_compile_call_compiles_once_before_the_timed_calls():
    from torch._dynamo.utils import counters

    counters.clear()  # Dynamo's counters are process-wide: earlier tests' graphs count there too
    x = torch.arange(4.0)
    call, seconds = compile_call(lambda t: t * 2, lambda f: f(x))
    assert seconds > 0 and counters["stats"]["unique_graphs"] == 1  # Dynamo was reset, then compiled one graph
    assert torch.equal(call(), x * 2) and torch.equal(call(), x * 2)
    assert counters["stats"]["unique_graphs"] == 1  # the timed calls reuse it


def test_rows_compiled_together_keep_each_others_graphs():
    """Two rows of one function compiled before either is timed (bench_ssim's forward and
    backward): the second, compiled without a reset, leaves the first's graph in place."""
    from torch._dynamo.utils import counters

    def double(t: torch.Tensor) -> torch.Tensor:
        return t * 2

    x, xg = torch.arange(4.0), torch.arange(4.0).requires_grad_(True)
    counters.clear()
    first, _ = compile_call(double, lambda f: f(x))
    second, _ = compile_call(double, lambda f: f(xg).sum().backward(), reset=False)
    compiled = counters["stats"]["unique_graphs"]
    assert compiled == 2
    first(), second(), first()
    assert counters["stats"]["unique_graphs"] == compiled  # neither call compiled again
    assert torch.equal(xg.grad, torch.full((4,), 4.0))  # the compiling call and the timed one


def test_a_graph_break_is_a_one_line_compile_failure():
    def breaks(t: torch.Tensor) -> torch.Tensor:
        torch._dynamo.graph_break()  # what fullgraph=True refuses (a host-side test would do the same)
        return t * 2

    with pytest.raises(CompileFailed) as info:
        compile_fn(breaks, lambda f: f(torch.tensor([1.0, -1.0])))
    assert "\n" not in str(info.value) and str(info.value).split(":")[0].isidentifier()
    assert one_line(RuntimeError("first\nsecond")) == "RuntimeError: first" and one_line(KeyError()) == "KeyError"


def test_rows_skip_a_failed_compile_and_report_compiled_over_eager(tmp_path, keep_threads):
    def fail():
        raise CompileFailed("RuntimeError: no C++ compiler")

    rows = [
        Row("task", "gradcv", "forward", lambda: None, 3),
        Row("task", COMPILED, "forward", None, 3, prepare=lambda: ((lambda: None), 0.5)),
        Row("task", COMPILED, "backward", None, 3, prepare=fail),
        Row("task", COMPILED, "other", None, 3, prepare=lambda: pytest.fail("rows after a failure are skipped")),
    ]
    # The failing row comes after a good one at the first thread count: only later rows are skipped.
    notes: list[str] = []
    results = time_rows(rows[:3], [1], warmup=0, notes=notes)
    assert set(results) == {(1, "task", "gradcv", "forward"), (1, "task", COMPILED, "forward")}
    assert notes == [f"{COMPILED} rows skipped: RuntimeError: no C++ compiler"]
    results = time_rows([rows[0], rows[2], rows[3]], [1, 2], warmup=0, notes=notes)
    assert set(results) == {(1, "task", "gradcv", "forward"), (2, "task", "gradcv", "forward")}

    results = time_rows(rows[:2], [1], warmup=0)
    (ratio,) = compiled_ratios(results)
    assert ratio["compile_seconds"] == 0.5 and ratio[RATIO] == pytest.approx(ratio["compiled_ms"] / ratio["eager_ms"])
    assert any(f"{RATIO} = " in line and "compiled in 0.5 s" in line for line in ratio_lines(results))
    write_results(tmp_path, "x.csv", results, {})
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics[RATIO] == [ratio]
    assert [r.get("compile_seconds") for r in metrics["median_ms"]] == [None, 0.5]


def test_compiled_row_compiles_when_timed(keep_threads):
    x = torch.ones(3)
    row = compiled_row("task", "forward", lambda t: t + 1, lambda f: f(x), 2)
    assert row.library == COMPILED and row.fn is None
    results = time_rows([row], [1], warmup=0)
    assert results[(1, "task", COMPILED, "forward")].compile_seconds > 0
