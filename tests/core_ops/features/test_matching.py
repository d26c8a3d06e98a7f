"""Tests for core_ops.features.matching: parity with Kornia's matchers on random descriptors
(float32 and float64, N < M and N > M, with a given distance matrix), the batched path
(each item equals the unbatched result on its valid rows; padding, even NaN, never matched),
edge cases (fewer than two descriptors, empty inputs), gradients and typed errors.

Tolerances: distances are computed directly for the selected pairs (Kornia uses
``torch.cdist``), so float32 values agree to 1e-5; the matched pairs must be identical
(random Gaussian descriptors have no near-ties at these sizes).
"""

from __future__ import annotations

import kornia.feature as KF
import pytest
import torch
from torch.autograd import gradcheck

from gradcv.core_ops.errors import ArgumentTypeError, ArgumentValueError, DTypeError, ShapeError
from gradcv.core_ops.features.matching import (
    DescriptorMatcher,
    match_fginn,
    match_mnn,
    match_nn,
    match_smnn,
    match_smnn_batched,
    match_snn,
)
from tests.helpers import ignore_compile_warnings, noncontiguous

MATCHERS = {"nn": match_nn, "mnn": match_mnn, "snn": match_snn, "smnn": match_smnn}


def _descs(n: int, m: int, d: int = 16, dtype: torch.dtype = torch.float32, seed: int = 0, b: int | None = None):
    g = torch.Generator().manual_seed(seed)
    lead = () if b is None else (b,)
    a = torch.randn(*lead, n, d, generator=g, dtype=dtype)
    # desc2 = a noisy copy of part of desc1 plus distractors, so that every test finds matches
    k = min(n, m)
    c = torch.cat([a[..., :k, :] + 0.3 * torch.randn(*lead, k, d, generator=g, dtype=dtype),
                   torch.randn(*lead, m - k, d, generator=g, dtype=dtype)], -2)
    perm = torch.randperm(m, generator=g)
    return a, c[..., perm, :]


def _on(device: str, fn, *args, **kwargs):
    """``fn`` on ``device``: tensor arguments moved there, the tensor result(s) back on the CPU."""
    moved = [a.to(device) if isinstance(a, torch.Tensor) else a for a in args]
    out = fn(*moved, **{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()})
    return tuple(o.cpu() for o in out) if isinstance(out, tuple) else out.cpu()


def _sorted(dists: torch.Tensor, idxs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.argsort(idxs[:, 0] * (idxs[:, 1].max() + 1 if len(idxs) else 1) + idxs[:, 1])
    return dists[order], idxs[order]


def _assert_same(ours, ref, atol):
    d, i = _sorted(*ours)
    kd, ki = _sorted(*ref)
    assert torch.equal(i, ki), (i.tolist(), ki.tolist())
    assert d.dtype == kd.dtype and d.shape == kd.shape
    torch.testing.assert_close(d, kd, atol=atol, rtol=0)


# ====================================================================== Kornia parity
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n,m", [(120, 90), (90, 120), (60, 60)])
def test_matchers_match_kornia(dtype, n, m, device):
    a, b = _descs(n, m, dtype=dtype, seed=n + m)
    atol = 1e-5 if dtype == torch.float32 else 1e-10
    for name, fn in MATCHERS.items():
        ours = _on(device, fn, a, b)
        _assert_same(ours, getattr(KF, f"match_{name}")(a, b), atol)
        assert ours[1].dtype == torch.int64 and len(ours[1]) > 0, name
    for th in (0.6, 0.9):
        _assert_same(_on(device, match_snn, a, b, th), KF.match_snn(a, b, th), atol)
        _assert_same(_on(device, match_smnn, a, b, th), KF.match_smnn(a, b, th), atol)
    # a given distance matrix is read as it is (here: squared distances, th**2)
    dm = torch.cdist(a, b) ** 2
    _assert_same(_on(device, match_snn, a, b, 0.64, dm), KF.match_snn(a, b, 0.64, dm), atol)
    _assert_same(_on(device, match_mnn, a, b, dm), KF.match_mnn(a, b, dm), atol)
    _assert_same(_on(device, match_nn, a, b, dm), KF.match_nn(a, b, dm), atol)
    _assert_same(_on(device, match_smnn, a, b, 0.9, dm), KF.match_smnn(a, b, 0.9, dm), atol)


def test_blocked_selection_equals_one_block(monkeypatch, device):
    """The distance matrix is made in blocks of rows: many small blocks give the same matches."""
    import gradcv.core_ops.features.matching as matching

    a, b = (t.to(device) for t in _descs(70, 50, seed=14, b=2))
    mask1 = (torch.rand(2, 70, generator=torch.Generator().manual_seed(15)) > 0.1).to(device)
    lafs1, lafs2 = torch.rand(2, 70, 2, 3, device=device) * 30, torch.rand(2, 50, 2, 3, device=device) * 30
    calls = [lambda: fn(a, b, mask1=mask1) for fn in MATCHERS.values()]
    calls.append(lambda: match_fginn(a, b, lafs1, lafs2, mutual=True, mask1=mask1))
    whole = [c() for c in calls]
    monkeypatch.setattr(matching, "_BLOCK_BYTES", 4 * 2 * 50 * 7)  # 7 rows per block
    for c, ref in zip(calls, whole):
        for x, y in zip(c(), ref):
            assert torch.equal(x, y)


def test_mutual_ties_give_one_match_per_descriptor(device):
    """Duplicated desc1 rows tie for a desc2 row: one of them is its mutual partner, never both
    (which one is implementation-defined in Kornia: torch.min's tie order; ours is the first)."""
    a = torch.tensor([[0.0, 0.0], [0.0, 0.0], [5.0, 5.0], [5.0, 5.0]])
    b = torch.tensor([[0.0, 0.1], [5.0, 5.2], [9.0, 0.0]])
    for fn, kfn in ((match_mnn, KF.match_mnn), (lambda x, y: match_smnn(x, y, 1.0), lambda x, y: KF.match_smnn(x, y, 1.0))):
        for x, y in ((a, b), (b, a)):
            i, ki = _on(device, fn, x, y)[1], kfn(x, y)[1]
            assert len(i) == len(ki)
            assert len(set(i[:, 0].tolist())) == len(i) and len(set(i[:, 1].tolist())) == len(i)
            # the same pairs up to the choice among identical rows
            assert torch.equal(x[i[:, 0]], x[ki[:, 0]]) and torch.equal(y[i[:, 1]], y[ki[:, 1]])
    assert _on(device, match_mnn, a, b)[1].tolist() == [[0, 0], [2, 1]]
    dists, idxs, mask = _on(device, match_mnn, a[None], b[None])
    assert mask.tolist() == [[True, False, True, False]]


def test_noncontiguous_descriptors(device):
    a, b = (t.to(device) for t in _descs(40, 30, seed=20))
    for name, fn in MATCHERS.items():
        ref = fn(a, b)
        for x, y in zip(fn(noncontiguous(a), noncontiguous(b)), ref):
            torch.testing.assert_close(x, y, atol=1e-6, rtol=0)
        for x, y in zip(fn(a.t().contiguous().t(), b), ref):
            torch.testing.assert_close(x, y, atol=1e-6, rtol=0)


def test_unbatched_results_are_sorted_by_desc1_index(device):
    a, b = (t.to(device) for t in _descs(80, 50, seed=3))
    for fn in MATCHERS.values():
        idxs = fn(a, b)[1]
        assert torch.all(idxs[1:, 0] > idxs[:-1, 0])


@pytest.mark.parametrize("mutual", [False, True])
def test_fginn_matches_kornia(mutual, device):
    a, b = _descs(70, 60, seed=4)
    g = torch.Generator().manual_seed(5)
    lafs1 = torch.rand(1, 70, 2, 3, generator=g) * 50
    lafs2 = torch.rand(1, 60, 2, 3, generator=g) * 50
    for spatial_th in (5.0, 20.0):
        ours = _on(device, match_fginn, a, b, lafs1, lafs2, 0.8, spatial_th, mutual)
        _assert_same(ours, KF.match_fginn(a, b, lafs1, lafs2, 0.8, spatial_th, mutual), 1e-5)


def test_descriptor_matcher_matches_kornia(device):
    a, b = _descs(50, 40, seed=6)
    for mode in ("nn", "MNN", "snn", "smnn"):
        for th in (0.8, 0.95):
            _assert_same(_on(device, DescriptorMatcher(mode, th), a, b), KF.DescriptorMatcher(mode, th)(a, b), 1e-5)


# ====================================================================== edge cases
@pytest.mark.parametrize("n,m", [(0, 5), (5, 0), (0, 0), (1, 5), (5, 1), (1, 1), (2, 2)])
def test_small_and_empty_inputs_match_kornia(n, m, device):
    a, b = _descs(n, m, d=4, seed=7)
    for name, fn in MATCHERS.items():
        d, i = _on(device, fn, a, b)
        kd, ki = getattr(KF, f"match_{name}")(a, b)
        assert d.shape == kd.shape and i.shape == ki.shape and i.dtype == torch.int64, (name, n, m)
        assert torch.equal(_sorted(d, i)[1], _sorted(kd, ki)[1])
    lafs1, lafs2 = torch.zeros(1, n, 2, 3), torch.zeros(1, m, 2, 3)
    d, i = _on(device, match_fginn, a, b, lafs1, lafs2)
    assert d.shape == (0, 1) or m >= 2


def test_zero_second_distance_is_no_ratio_match(device):
    """Duplicated desc2 rows: the ratio is 1 (two equal nearest) or undefined (0 / 0)."""
    a = torch.tensor([[0.0, 0.0], [5.0, 5.0]])
    b = torch.tensor([[0.0, 0.0], [0.0, 0.0], [5.0, 5.1]])
    for th in (0.8, 1.0):
        _assert_same(_on(device, match_snn, a, b, th), KF.match_snn(a, b, th), 1e-6)
    assert _on(device, match_snn, a, b, 1.0)[1].tolist() == [[1, 2]]


# ====================================================================== batched
@pytest.mark.parametrize("name", list(MATCHERS) + ["fginn"])
def test_batched_equals_unbatched_on_valid_rows(name, device):
    B, n, m = 3, 40, 35
    a, b = _descs(n, m, b=B, seed=8)
    g = torch.Generator().manual_seed(9)
    mask1 = torch.rand(B, n, generator=g) > 0.2
    mask2 = torch.rand(B, m, generator=g) > 0.2
    mask1[2, 2:] = False  # item 2: only two valid desc1 rows
    # padding holds garbage, even NaN: it must not matter
    a = torch.where(mask1[..., None], a, torch.full_like(a, float("nan")))
    b = torch.where(mask2[..., None], b, torch.full_like(b, 1e-3))
    lafs1 = torch.rand(B, n, 2, 3, generator=g) * 40
    lafs2 = torch.rand(B, m, 2, 3, generator=g) * 40
    a, b, mask1, mask2, lafs1, lafs2 = (t.to(device) for t in (a, b, mask1, mask2, lafs1, lafs2))

    def run(x, y, l1, l2, **kw):
        if name == "fginn":
            return match_fginn(x, y, l1, l2, **kw)
        return MATCHERS[name](x, y, **kw)

    dists, idxs, mask = run(a, b, lafs1, lafs2, mask1=mask1, mask2=mask2)
    assert dists.shape == (B, n, 1) and idxs.shape == (B, n, 2) and mask.shape == (B, n) and mask.dtype == torch.bool
    assert torch.isfinite(dists).all()
    assert torch.equal(idxs[..., 0].cpu(), torch.arange(n).expand(B, n))
    assert not (mask & ~mask1).any()
    assert torch.all(dists[~mask] == 0) and torch.all(idxs[..., 1][~mask] == 0)
    total = 0
    for k in range(B):
        r1, r2 = mask1[k].nonzero()[:, 0], mask2[k].nonzero()[:, 0]
        d, i = run(a[k, r1], b[k, r2], lafs1[k : k + 1, r1], lafs2[k : k + 1, r2])
        # unbatched indices are into the valid subsets: map them back
        i = torch.stack([r1[i[:, 0]], r2[i[:, 1]]], -1) if len(i) else i
        sel = mask[k]
        assert torch.equal(idxs[k][sel], i), (name, k)
        torch.testing.assert_close(dists[k][sel], d, atol=1e-5, rtol=0)
        total += len(i)
    assert total > 0
    # without masks: every item equals the unbatched call
    a2, b2 = (t.to(device) for t in _descs(n, m, b=2, seed=10))
    l1, l2 = lafs1[:2], lafs2[:2]
    dists, idxs, mask = run(a2, b2, l1, l2)
    for k in range(2):
        d, i = run(a2[k], b2[k], l1[k : k + 1], l2[k : k + 1])
        assert torch.equal(idxs[k][mask[k]], i)
        torch.testing.assert_close(dists[k][mask[k]], d, atol=1e-5, rtol=0)


def test_match_smnn_batched_matches_kornia(device):
    a, b = _descs(30, 25, b=3, seed=16)
    g = torch.Generator().manual_seed(17)
    mask1, mask2 = torch.rand(3, 30, generator=g) > 0.2, torch.rand(3, 25, generator=g) > 0.2
    for kw in ({}, {"mask1": mask1, "mask2": mask2}):
        d, i = _on(device, match_smnn_batched, a, b, 0.9, **kw)
        kd, ki = KF.match_smnn_batched(a, b, 0.9, **kw)
        assert torch.equal(i, ki) and len(i) > 0
        torch.testing.assert_close(d, kd, atol=1e-5, rtol=0)


def test_batched_edge_cases_and_module(device):
    a, b = (t.to(device) for t in _descs(6, 5, d=4, b=2, seed=11))
    out = match_snn(a, b[:, :1])  # fewer than two desc2 rows
    assert out[0].shape == (2, 6, 1) and not out[2].any()
    out = match_nn(a[:, :0], b)
    assert out[0].shape == (2, 0, 1) and out[1].shape == (2, 0, 2) and out[2].shape == (2, 0)
    out = match_mnn(a[:0], b[:0])
    assert out[2].shape == (0, 6)
    mask2 = torch.zeros(2, 5, dtype=torch.bool, device=device)
    mask2[:, 0] = True  # one valid desc2 row: no ratio test possible, nn still matches it
    assert not match_snn(a, b, mask2=mask2)[2].any()
    nn_out = match_nn(a, b, mask2=mask2)
    assert nn_out[2].all() and torch.all(nn_out[1][..., 1] == 0)
    d1, i1, m1 = DescriptorMatcher("smnn", 0.9)(a, b, mask2=torch.ones(2, 5, dtype=torch.bool, device=device))
    d2, i2, m2 = match_smnn(a, b, 0.9)
    assert torch.equal(i1, i2) and torch.equal(m1, m2)


# ====================================================================== gradients
def test_gradcheck_and_safe_gradients(device):
    a, b = (t.to(device) for t in _descs(6, 7, d=5, dtype=torch.float64, seed=12))
    a.requires_grad_(True)
    b.requires_grad_(True)
    for fn in (match_nn, match_mnn, lambda x, y: match_snn(x, y, 0.99), lambda x, y: match_smnn(x, y, 0.99)):
        assert gradcheck(lambda x, y: fn(x, y)[0], (a, b), fast_mode=False)
    assert gradcheck(lambda x, y: match_snn(x, y, 0.99, mask1=torch.tensor([[True] * 5 + [False]], device=device))[0],
                     (a[None], b[None]), fast_mode=False)
    # identical descriptors: zero distance, finite (zero) gradient
    x = torch.randn(4, 8, device=device, requires_grad=True)
    y = x.detach().clone().requires_grad_(True)
    d, _ = match_nn(x, y)
    assert torch.all(d == 0)
    d.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()
    # NaN padding leaves no NaN in the gradient
    a3, b3 = (t.to(device) for t in _descs(5, 6, d=4, b=1, seed=13))
    a3[0, 4] = float("nan")
    a3.requires_grad_(True)
    mask1 = torch.tensor([[True, True, True, True, False]], device=device)

    match_snn(a3, b3, 0.99, mask1=mask1)[0].sum().backward()
    assert torch.isfinite(a3.grad).all()
    # float16 descriptors are matched in float32 and return float16 distances
    h = match_nn(a.detach().half(), b.detach().half())[0]
    assert h.dtype == torch.float16


# ====================================================================== bad input
def test_bad_input_raises_typed_errors():
    a, b = _descs(5, 6, d=4)
    cases = [
        (lambda: match_nn(a, b[:, :3]), ShapeError, "desc2"),
        (lambda: match_nn(a[0], b), ShapeError, "desc1"),
        (lambda: match_snn(a, b.double()), DTypeError, "desc2"),
        (lambda: match_snn(a.long(), b.long()), DTypeError, "desc1"),
        (lambda: match_snn(a, b, -0.1), ArgumentValueError, "th"),
        (lambda: match_snn(a, b, "0.8"), ArgumentTypeError, "th"),
        (lambda: match_nn(a, b, torch.zeros(5, 5)), ShapeError, "dm"),
        (lambda: match_nn(a, b, mask1=torch.ones(5, dtype=torch.bool)), ArgumentValueError, "mask1"),
        (lambda: match_nn(a[None], b[None], mask1=torch.ones(1, 4, dtype=torch.bool)), ShapeError, "mask1"),
        (lambda: match_nn(a[None], b[None], mask2=torch.ones(1, 6)), DTypeError, "mask2"),
        (lambda: match_nn(a[None], torch.cat([b[None]] * 2)), ShapeError, "desc2"),
        (lambda: match_fginn(a, b, torch.zeros(1, 5, 2, 3), torch.zeros(1, 5, 2, 3)), ShapeError, "lafs2"),
        (lambda: DescriptorMatcher("xnn"), ArgumentValueError, "match_mode"),
        (lambda: DescriptorMatcher(3), ArgumentTypeError, "match_mode"),
        (lambda: match_nn(a.numpy(), b), ArgumentTypeError, "desc1"),
    ]
    for call, err, name in cases:
        with pytest.raises(err) as e:
            call()
        assert e.value.name == name, (name, e.value)


@ignore_compile_warnings
@pytest.mark.parametrize("name", ["mnn", "snn", "smnn"])
def test_batched_matchers_compile_without_graph_breaks(name):
    """The batched path has fixed-size outputs and no host sync: one graph (aot_eager, no codegen)."""
    a, b = _descs(30, 25, b=2, seed=18)
    mask1 = torch.rand(2, 30, generator=torch.Generator().manual_seed(19)) > 0.2
    fn = MATCHERS[name]
    compiled = torch.compile(lambda x, y, m: fn(x, y, mask1=m), fullgraph=True, backend="aot_eager")
    for got, ref in zip(compiled(a, b, mask1), fn(a, b, mask1=mask1)):
        torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)
