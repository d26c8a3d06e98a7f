"""Scenes and camera paths for the synthetic renderer (:mod:`gradcv.depth.render`).

A scene is a set of primitives in world coordinates: an inward-facing room (a box seen from
inside), boxes, slanted rectangles and spheres, each with a base colour and a texture
offset; :func:`make_scene` draws one from a seed. :func:`make_cameras` places the views of a
:class:`SceneConfig` along a short path.

Convention:
    Pixel centres at integer coordinates (OpenCV), ``cx = (W - 1) / 2``; camera frames
    x right, y down, z forward; extrinsics are world-to-camera ``[[R, t], [0, 1]]``. The
    world frame is the reference camera's (y down: the floor is at positive y).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from gradcv.core_ops._checks import check_int, check_real
from gradcv.core_ops.errors import ArgumentValueError

__all__ = ["SCENE_KINDS", "Scene", "SceneConfig", "make_cameras", "make_scene"]

SCENE_KINDS = ("room_boxes", "plane")


@dataclass(frozen=True)
class SceneConfig:
    """What :func:`gradcv.depth.render.render_scene` renders: a frozen, comparable, validated configuration.

    Args:
        height, width: image size in pixels.
        num_views: views along the camera path; view 0 is the reference.
        fov_deg: horizontal field of view in degrees (square pixels).
        baseline: distance in metres between consecutive camera positions. Views sit at
            path offsets ``0, +1, -1, +2, ...`` times the baseline along the reference x axis
            (the reference in the middle).
        rotation_deg: yaw in degrees per path offset, turning each camera toward the middle.
        supersampling: rays per pixel side for the image (``s x s`` averaged); depth comes
            from the centre ray. ``1`` casts one ray per pixel.
        noise_sigma: standard deviation of the Gaussian image noise (on ``[0, 1]`` values).
        gain_jitter, bias_jitter: each view's image is ``gain * image + bias`` with gain
            uniform in ``1 +- gain_jitter`` and bias in ``+- bias_jitter`` (then clipped).
        kind: ``'room_boxes'`` (room, boxes, spheres, slanted planes) or ``'plane'`` (one
            fronto-parallel textured plane at ``z = plane_depth``).
        num_boxes, num_spheres, num_slanted: primitives of ``'room_boxes'``.
        plane_depth: the plane's ``z`` for ``'plane'``.
        edge_threshold: a pixel is a depth edge where the second difference of inverse depth
            to its neighbours exceeds this fraction of its inverse depth.
        visibility_tolerance: relative slack on the occlusion test of the visibility masks.
    """

    height: int = 240
    width: int = 320
    num_views: int = 3
    fov_deg: float = 60.0
    baseline: float = 0.15
    rotation_deg: float = 1.0
    supersampling: int = 2
    noise_sigma: float = 0.0
    gain_jitter: float = 0.0
    bias_jitter: float = 0.0
    kind: str = "room_boxes"
    num_boxes: int = 3
    num_spheres: int = 2
    num_slanted: int = 1
    plane_depth: float = 4.0
    edge_threshold: float = 0.05
    visibility_tolerance: float = 1e-3

    def __post_init__(self) -> None:
        for name in ("height", "width", "num_views", "supersampling", "num_boxes", "num_spheres", "num_slanted"):
            check_int(getattr(self, name), name, 0 if name.startswith("num_") and name != "num_views" else 1)
        for name in ("fov_deg", "baseline", "rotation_deg", "noise_sigma", "gain_jitter", "bias_jitter",
                     "plane_depth", "edge_threshold", "visibility_tolerance"):
            check_real(getattr(self, name), name)
        if not 0.0 < self.fov_deg < 170.0:
            raise ArgumentValueError("fov_deg", "in (0, 170)", self.fov_deg, f"fov_deg: expected a value in (0, 170), got {self.fov_deg}")
        for name in ("noise_sigma", "gain_jitter", "bias_jitter", "edge_threshold", "visibility_tolerance"):
            if getattr(self, name) < 0:
                raise ArgumentValueError(name, ">= 0", getattr(self, name), f"{name}: expected a value >= 0, got {getattr(self, name)}")
        if self.gain_jitter >= 1.0:
            raise ArgumentValueError("gain_jitter", "< 1", self.gain_jitter, f"gain_jitter: expected a value < 1, got {self.gain_jitter}")
        if self.plane_depth <= 0:
            raise ArgumentValueError("plane_depth", "> 0", self.plane_depth, f"plane_depth: expected a value > 0, got {self.plane_depth}")
        if self.kind not in SCENE_KINDS:
            raise ArgumentValueError("kind", SCENE_KINDS, self.kind, f"kind: expected one of {SCENE_KINDS}, got {self.kind!r}")


@dataclass
class Scene:
    """Primitives in world coordinates (float32).

    ``quad_origin, quad_u, quad_v (Q, 3)``: two-sided parallelograms ``o + a u + b v``,
    ``a, b`` in ``[0, 1]``. ``sphere_centre (S, 3)``, ``sphere_radius (S,)``. ``colour
    (Q + S, 3)`` base albedo and ``offset (Q + S, 3)`` texture shift of each primitive
    (quads first), ``seed`` the texture's hash seed.
    """

    quad_origin: torch.Tensor
    quad_u: torch.Tensor
    quad_v: torch.Tensor
    sphere_centre: torch.Tensor
    sphere_radius: torch.Tensor
    colour: torch.Tensor
    offset: torch.Tensor
    seed: int


def _box_quads(centre: torch.Tensor, size: torch.Tensor, yaw: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The six faces of a box rotated by ``yaw`` about the y axis."""
    c, s = math.cos(yaw), math.sin(yaw)
    ex = torch.tensor([c, 0.0, -s]) * size[0]
    ey = torch.tensor([0.0, 1.0, 0.0]) * size[1]
    ez = torch.tensor([s, 0.0, c]) * size[2]
    lo = centre - (ex + ey + ez) / 2
    hi = centre + (ex + ey + ez) / 2
    origins = torch.stack((lo, lo, lo, hi, hi, hi))
    us = torch.stack((ex, ey, ez, -ex, -ey, -ez))
    vs = torch.stack((ey, ez, ex, -ey, -ez, -ex))
    return origins, us, vs


def make_scene(seed: int = 0, kind: str = "room_boxes", *, num_boxes: int = 3, num_spheres: int = 2,
               num_slanted: int = 1, plane_depth: float = 4.0) -> Scene:
    """A seeded scene (see :class:`SceneConfig` for the kinds); the same seed gives the same scene.

    Example:
        >>> scene = make_scene(0)
        >>> scene.quad_origin.shape, scene.sphere_radius.shape
        (torch.Size([25, 3]), torch.Size([2]))
    """
    check_int(seed, "seed")
    if kind not in SCENE_KINDS:
        raise ArgumentValueError("kind", SCENE_KINDS, kind, f"kind: expected one of {SCENE_KINDS}, got {kind!r}")
    g = torch.Generator().manual_seed(seed)

    def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(shape or (1,), generator=g)

    origins: list[torch.Tensor] = []
    us: list[torch.Tensor] = []
    vs: list[torch.Tensor] = []
    centres = torch.zeros(0, 3)
    radii = torch.zeros(0)
    if kind == "plane":
        side = 20.0 * plane_depth
        origins.append(torch.tensor([[-side / 2, -side / 2, plane_depth]]))
        us.append(torch.tensor([[side, 0.0, 0.0]]))
        vs.append(torch.tensor([[0.0, side, 0.0]]))
    else:
        floor_y = 1.5
        room_lo, room_hi = torch.tensor([-3.5, -2.0, -2.0]), torch.tensor([3.5, floor_y, 8.0])
        o, u, v = _box_quads((room_lo + room_hi) / 2, room_hi - room_lo, 0.0)
        origins.append(o), us.append(u), vs.append(v)
        for _ in range(num_boxes):
            size = uniform(0.5, 1.3, 3)
            centre = torch.cat((uniform(-2.3, 2.3), floor_y - size[1:2] / 2, uniform(3.0, 6.5)))
            o, u, v = _box_quads(centre, size, float(uniform(0.0, math.pi / 2)))
            origins.append(o), us.append(u), vs.append(v)
        for _ in range(num_slanted):
            tilt, yaw = float(uniform(0.5, 1.0)), float(uniform(-0.8, 0.8))
            ex = torch.tensor([math.cos(yaw), 0.0, -math.sin(yaw)]) * 1.6
            ez = torch.tensor([math.sin(yaw), 0.0, math.cos(yaw)])
            ey = (torch.tensor([0.0, 1.0, 0.0]) * math.cos(tilt) + ez * math.sin(tilt)) * 1.2
            centre = torch.cat((uniform(-2.0, 2.0), uniform(-1.0, 0.3), uniform(3.5, 6.0)))
            origins.append((centre - (ex + ey) / 2)[None]), us.append(ex[None]), vs.append(ey[None])
        radii = uniform(0.3, 0.6, num_spheres) if num_spheres else torch.zeros(0)
        centres = torch.stack(
            (uniform(-2.0, 2.0, num_spheres), uniform(-0.8, 0.6, num_spheres), uniform(3.0, 6.0, num_spheres)), -1
        ) if num_spheres else torch.zeros(0, 3)
    quad_origin = torch.cat(origins)
    count = quad_origin.shape[0] + radii.shape[0]
    return Scene(
        quad_origin=quad_origin, quad_u=torch.cat(us), quad_v=torch.cat(vs),
        sphere_centre=centres.reshape(-1, 3), sphere_radius=radii.reshape(-1),
        colour=uniform(0.3, 0.8, count, 3), offset=uniform(0.0, 1000.0, count, 3),
        seed=int(torch.randint(0, 1 << 20, (1,), generator=g)),
    )


def _yaw(angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def make_cameras(config: SceneConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Intrinsics ``(N, 3, 3)`` and world-to-camera extrinsics ``(N, 4, 4)`` of the path.

    Example:
        >>> K, E = make_cameras(SceneConfig(height=48, width=64))
        >>> K[0, 0, 2].item(), K.shape, E.shape
        (31.5, torch.Size([3, 3, 3]), torch.Size([3, 4, 4]))
    """
    h, w = config.height, config.width
    f = (w / 2) / math.tan(math.radians(config.fov_deg) / 2)
    K = torch.tensor([[f, 0.0, (w - 1) / 2], [0.0, f, (h - 1) / 2], [0.0, 0.0, 1.0]])
    extrinsics = []
    for i in range(config.num_views):
        k = (i + 1) // 2 * (1 if i % 2 else -1)  # 0, +1, -1, +2, -2, ...
        R_cw = _yaw(-math.radians(config.rotation_deg) * k)  # camera-to-world: turn toward the middle
        centre = torch.tensor([k * config.baseline, 0.1 * k * config.baseline, 0.0])
        E = torch.eye(4)
        E[:3, :3] = R_cw.T
        E[:3, 3] = -R_cw.T @ centre
        extrinsics.append(E)
    return K.expand(config.num_views, 3, 3).clone(), torch.stack(extrinsics)
