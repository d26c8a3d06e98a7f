"""ONNX export (the dynamo-based exporter, ``torch.onnx.export(..., dynamo=True)``) of the
set in ``_exports.py``: each model passes ``onnx.checker``, runs in onnxruntime on the CPU
and matches eager to 1e-4, on the traced input and on a fresh one of the same shape
(the warpers: xfail for now, see ``_exports.NOT_PORTABLE``; ScaleSpaceDetector is left to
test_export.py, see ``_exports.NOT_IN_ONNX_TESTS``).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from tests.production._exports import EXPORTS, params
from tests.production._modules import flatten

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.fixture(scope="module", autouse=True)
def _quiet_exporter():
    # The exporter logs a warning per torchvision op it cannot register (torchvision is not
    # a dependency); nothing about these models.
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


# PyTorch's exporter calls its own deprecated pytree API (torch 2.13).
@pytest.mark.filterwarnings(r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated:FutureWarning")
@pytest.mark.parametrize("name", params(onnx=True))
def test_onnx_matches_eager(name):
    make, inputs = EXPORTS[name]
    module = make("cpu").eval()
    program = torch.onnx.export(module, inputs("cpu", 0), dynamo=True, verbose=False)
    model = program.model_proto
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    for seed in (0, 5):
        args = inputs("cpu", seed)
        assert len(names) == len(args), names
        results = session.run(None, {n: a.numpy() for n, a in zip(names, args)})
        with torch.no_grad():
            expected = [t.numpy() for t in flatten(module(*args))]
        assert len(results) == len(expected)
        for result, want in zip(results, expected):
            assert result.shape == want.shape and result.dtype == want.dtype
            np.testing.assert_allclose(result, want, atol=1e-4, rtol=1e-4)
