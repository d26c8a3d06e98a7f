"""Every operator ``nn.Module`` of ``core_ops`` under ``torch.compile(fullgraph=True)``.

``fullgraph=True`` turns any graph break into an error, which is the point: a module that
traces into one graph can be compiled, exported and served. Most modules are traced with
the ``aot_eager`` backend (Dynamo and AOTAutograd, forward and backward graphs, no code
generation: a fraction of a second each on two cores); a handful also go through Inductor,
which generates and compiles C++ (seconds each). Compiled outputs and input gradients must
equal eager ones. The modules come from the subpackages' ``__all__``
(``tests/production/_modules.py``); the data-dependent ones are listed there with the
reason, and must still break (else they belong in the covered set).
"""

from __future__ import annotations

import pytest
import torch

from gradcv.core_ops import geometry
from tests.helpers import ignore_compile_warnings
from tests.production._modules import CASES, FORWARD_ONLY, SKIPPED, discover, figure2, flatten, image


def test_every_module_is_covered():
    found = set(discover())
    assert len(found) > 50, sorted(found)  # the discovery itself works
    missing = found - set(CASES) - set(SKIPPED)
    assert not missing, f"add a case (or a SKIPPED reason) to tests/production/_modules.py for {sorted(missing)}"
    assert not set(CASES) & set(SKIPPED)
    assert set(CASES) | set(SKIPPED) <= found, sorted(set(CASES) | set(SKIPPED) - found)


def _forward_backward(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Outputs, and the gradients of a weighted sum of the floating outputs with respect to
    the floating inputs (zeros for an input they do not depend on)."""
    args = tuple(a.detach().clone().requires_grad_(a.is_floating_point()) for a in args)
    outs = flatten(module(*args))
    weighted = [o for o in outs if o.requires_grad]
    grads: list[torch.Tensor] = []
    leaves = [a for a in args if a.requires_grad]
    if weighted:
        loss = sum((o * torch.linspace(0.5, 1.5, o.numel(), dtype=o.dtype, device=o.device).view(o.shape)).sum() for o in weighted)
        grads = [g if g is not None else torch.zeros_like(a) for g, a in zip(torch.autograd.grad(loss, leaves, allow_unused=True), leaves)]
    return [o.detach() for o in outs], grads


def _assert_same(compiled: list[torch.Tensor], eager: list[torch.Tensor], what: str) -> None:
    """Equal to float32 rounding: 1e-5 relative, and 1e-5 absolute on the tensor's scale (a
    detector's gradients reach tens; summation order differs between eager and a graph)."""
    assert len(compiled) == len(eager), what
    for i, (c, e) in enumerate(zip(compiled, eager)):
        assert c.shape == e.shape and c.dtype == e.dtype, f"{what} {i}: {c.shape} {c.dtype} vs {e.shape} {e.dtype}"
        scale = max(1.0, float(e.abs().max())) if e.is_floating_point() and e.numel() else 1.0
        torch.testing.assert_close(c, e, atol=1e-5 * scale, rtol=1e-5, equal_nan=True, msg=lambda m: f"{what} {i}: {m}")


@ignore_compile_warnings
@pytest.mark.parametrize("name", sorted(CASES))
def test_fullgraph_matches_eager(name, device):
    make, inputs = CASES[name]
    module = make(device)
    args = inputs(device)
    torch._dynamo.reset()
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    outs, grads = _forward_backward(module, args)
    c_outs, c_grads = _forward_backward(compiled, args)
    _assert_same(c_outs, outs, f"{name} output")
    if name not in FORWARD_ONLY:
        _assert_same(c_grads, grads, f"{name} gradient")


# The data-dependent modules.
BREAKING = {
    "RANSAC": (
        lambda d: geometry.RANSAC(max_iter=2, batch_size=8, seed=0),
        lambda d: (image(d, 1, 8, 2, 1)[..., 0] * 30, image(d, 1, 8, 2, 1, seed=1)[..., 0] * 30),
    ),
}


@ignore_compile_warnings
@pytest.mark.parametrize("name", sorted(BREAKING))
def test_skipped_still_break(name, device):
    """A skipped module that starts compiling belongs in CASES: this says so."""
    assert name in SKIPPED
    make, inputs = BREAKING[name]
    torch._dynamo.reset()
    with torch.no_grad(), pytest.raises(Exception, match="data-dependent|Opaque|Unsupported"):
        torch.compile(make(device), fullgraph=True, backend="eager")(*inputs(device))


# Inductor (C++ code generation) on the Figure 2 pipeline and one module per family.
INDUCTOR = ["figure2", "GaussianBlur2d", "HomographyWarper", "SSIMLoss", "SIFTDescriptor", "RgbToHsv"]


@pytest.mark.slow
@ignore_compile_warnings
@pytest.mark.parametrize("name", INDUCTOR)
def test_inductor_matches_eager(name, device):
    if name == "figure2":
        module, args = figure2().to(device), (CASES["RgbToGrayscale"][1](device)[0],)
    else:
        make, inputs = CASES[name]
        module, args = make(device), inputs(device)
    torch._dynamo.reset()
    compiled = torch.compile(module, fullgraph=True, dynamic=False)
    with torch.no_grad():
        _assert_same(flatten(compiled(*args)), flatten(module(*args)), f"{name} output")
