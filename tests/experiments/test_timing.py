"""The benchmark timers: per-call times, the time budget, bandwidth, thread counts."""

from __future__ import annotations

import time

import pytest
import torch

from gradcv.experiments._cli import UsageError
from gradcv.experiments._timing import measure_copy_bandwidth, median_ms, parse_device, set_threads, time_calls_ms


def test_time_calls_counts_and_measures():
    calls = []
    times = time_calls_ms(lambda: calls.append(time.sleep(0.002)), repetitions=5, warmup=2)
    assert len(times) == 5 and len(calls) == 7  # warm-up calls are made but not timed
    assert all(t >= 2.0 for t in times)  # sleep(2 ms) never returns early
    assert median_ms(lambda: None, repetitions=3) < 1.0


def test_time_budget_stops_early_but_keeps_a_minimum():
    times = time_calls_ms(lambda: time.sleep(0.01), repetitions=1000, warmup=100, max_seconds=0.05)
    assert 3 <= len(times) < 20


def test_time_calls_rejects_no_repetitions():
    with pytest.raises(ValueError, match="repetitions"):
        time_calls_ms(lambda: None, repetitions=0)


def test_copy_bandwidth_is_plausible():
    bandwidth = measure_copy_bandwidth(nbytes=8 * 2**20, repetitions=3)
    assert 1e8 < bandwidth < 1e13  # between 0.1 GB/s and 10 TB/s


def test_set_threads():
    before = torch.get_num_threads()
    try:
        set_threads(1)
        assert torch.get_num_threads() == 1
        with pytest.raises(ValueError):
            set_threads(0)
    finally:
        torch.set_num_threads(before)


def test_parse_device():
    assert parse_device("cpu") == torch.device("cpu")
    with pytest.raises(UsageError, match=r"^device: 'tpu' is not a torch device") as info:
        parse_device("tpu")
    assert "\n" not in str(info.value)  # one line
    with pytest.raises(UsageError, match="expected cpu or cuda, got 'meta'"):
        parse_device("meta")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_parse_device_without_cuda_is_a_usage_error():
    for name in ("cuda", "cuda:1"):
        with pytest.raises(UsageError, match=rf"^device: {name} is not available here \(use device=cpu\)$"):
            parse_device(name)
