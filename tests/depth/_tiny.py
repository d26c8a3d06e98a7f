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
