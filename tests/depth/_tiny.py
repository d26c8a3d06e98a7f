"""The small rendered scenes the depth option tests share (64 x 48, 3 views, baseline 1 m)."""

from __future__ import annotations

import functools

from gradcv.depth.render import RenderedScene, render_scene
from gradcv.depth.scene import SceneConfig

#: 64 x 48, 3 views, a 1 m baseline (large disparities), one ray per pixel: quick to render.
CONFIG = SceneConfig(height=48, width=64, num_views=3, baseline=1.0, supersampling=1)
#: Small and quick solver settings: a short run with a coarse sweep.
QUICK = dict(iterations=4, planes=16, range_planes=8)


@functools.lru_cache(maxsize=None)
def tiny_scene(seed: int = 0) -> RenderedScene:
    """The room-and-boxes scene of ``CONFIG`` (rendered once per seed for the whole session)."""
    return render_scene(CONFIG, seed=seed)


@functools.lru_cache(maxsize=None)
def tiny_plane() -> RenderedScene:
    """A fronto-parallel textured plane at z = 4 m filling the reference view."""
    return render_scene(SceneConfig(height=48, width=64, num_views=3, baseline=1.0, supersampling=1, kind="plane"), seed=0)


def true_range(out: RenderedScene) -> tuple[float, float]:
    """The min and max ground-truth depth of the reference's valid pixels."""
    d = out.depths[0][out.valid[0]]
    return float(d.min()), float(d.max())


def _move(x, device):
    """Tensors in ``x`` (nested in tuples, lists, dicts and dataclasses) moved to ``device``."""
    import dataclasses

    import torch

    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, tuple) and hasattr(x, "_fields"):  # a NamedTuple such as PlaneSweepResult
        return type(x)(*(_move(v, device) for v in x))
    if isinstance(x, (tuple, list)):
        return type(x)(_move(v, device) for v in x)
    if isinstance(x, dict):
        return {k: _move(v, device) for k, v in x.items()}
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return dataclasses.replace(x, **{f.name: _move(getattr(x, f.name), device) for f in dataclasses.fields(x) if f.init})
    return x


def on(device: str, fn, *args, **kwargs):
    """``fn`` run on ``device``: its tensor arguments moved there, its tensor results (also
    inside tuples, lists, dicts and dataclasses such as the solver's result) back on the CPU
    for the checks. On the CPU this is ``fn(*args, **kwargs)`` itself."""
    if device == "cpu":
        return fn(*args, **kwargs)
    return _move(fn(*_move(args, device), **_move(kwargs, device)), "cpu")
