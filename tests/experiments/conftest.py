"""Fixtures shared by the benchmark tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def keep_threads():
    """The benchmarks' timing loops set the thread counts of the whole process (PyTorch's and
    OpenCV's): put them back afterwards."""
    import cv2

    before = torch.get_num_threads(), cv2.getNumThreads()
    yield
    torch.set_num_threads(before[0])
    cv2.setNumThreads(before[1])
