"""Synthetic multi-view scenes with exact ground truth, ray-cast in torch.

A scene is a set of textured primitives: an inward-facing room (a box seen from inside),
boxes, slanted rectangles and spheres. :func:`render_views` ray-casts it into pinhole views
(vectorised over the pixels, in chunks of rays) and returns the image, the exact camera-frame
``z`` depth, the validity of each pixel and the depth edges; :func:`render_scene` builds a
seeded scene and camera path from a :class:`SceneConfig` and adds, for the reference view,
the visibility of each of its pixels in every view.

Textures are solid (3-D) multi-octave value noise evaluated at the hit point, so they are
the same surface seen from every view. Each octave fades out where its wavelength falls
below about two pixel footprints on the surface (``footprint = z / f / cos(incidence)``):
the texture is pre-filtered like a mip-map and distant or grazing surfaces do not alias.
Octaves span 2 m down to 8 mm, so the texture is broadband (gradients at every pyramid
level). Shading depends on the surface normal only, never on the view, so a point has the
same colour in every view up to the footprint's small effect on the filtering.

Convention:
    Pixel centres at integer coordinates (OpenCV), ``cx = (W - 1) / 2``; camera frames
    x right, y down, z forward; extrinsics are world-to-camera ``[[R, t], [0, 1]]``, as
    :func:`gradcv.core_ops.geometry.depth_warp` expects (``src_T_ref = E_src @ E_ref^-1``).
    The world frame is the reference camera's at the start of the path (y down: the floor
    is at positive y).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from gradcv.core_ops.errors import ArgumentTypeError, ArgumentValueError

__all__ = ["RenderedScene", "Scene", "SceneConfig", "make_cameras", "make_scene", "render_scene", "render_views"]

SCENE_KINDS = ("room_boxes", "plane")

_CHUNK = 1 << 16  # rays cast at once: bounds the (rays x primitives) temporaries
_OCTAVES = 9
_WAVELENGTH0 = 2.0  # metres, coarsest octave
_AMPLITUDE_DECAY = 0.75
_FADE_START = 2.0  # footprints per wavelength where an octave is gone; full at twice that
_LIGHT = (0.3, -0.8, -0.5)  # from above (y down), constant: shading is view-independent


@dataclass(frozen=True)
class SceneConfig:
    """What :func:`render_scene` renders: a frozen, comparable, validated configuration.

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
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ArgumentTypeError(name, int, type(value), f"{name}: expected an int, got {type(value).__name__}")
            low = 0 if name.startswith("num_") and name != "num_views" else 1
            if value < low:
                raise ArgumentValueError(name, f">= {low}", value, f"{name}: expected an int >= {low}, got {value}")
        for name in ("fov_deg", "baseline", "rotation_deg", "noise_sigma", "gain_jitter", "bias_jitter",
                     "plane_depth", "edge_threshold", "visibility_tolerance"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ArgumentTypeError(name, float, type(value), f"{name}: expected a number, got {type(value).__name__}")
            if not math.isfinite(value):
                raise ArgumentValueError(name, "finite", value, f"{name}: expected a finite number, got {value}")
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


@dataclass
class RenderedScene:
    """Views of a scene with their exact ground truth.

    Attributes:
        images: ``(N, 3, H, W)`` in ``[0, 1]``.
        depths: ``(N, 1, H, W)`` camera-frame ``z`` (0 where nothing is hit).
        intrinsics: ``(N, 3, 3)`` camera matrices.
        extrinsics: ``(N, 4, 4)`` world-to-camera transforms.
        valid: ``(N, 1, H, W)`` bool, the centre ray hits a surface.
        visibility: ``(N, 1, H, W)`` bool: ``visibility[i]`` marks the reference pixels
            whose surface point projects inside view ``i`` and is not occluded there
            (``visibility[reference] == valid[reference]``).
        edges: ``(N, 1, H, W)`` bool depth discontinuities (both sides of a jump).
        boundaries: ``(N, 1, H, W)`` bool pixels on a boundary between primitives: depth
            edges and also creases (a room's corners, a box's edges), where a pixel mixes
            two differently shaded surfaces although the depth is continuous.
        reference: index of the reference view.
    """

    images: torch.Tensor
    depths: torch.Tensor
    intrinsics: torch.Tensor
    extrinsics: torch.Tensor
    valid: torch.Tensor
    visibility: torch.Tensor
    edges: torch.Tensor
    boundaries: torch.Tensor
    reference: int = 0


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
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ArgumentTypeError("seed", int, type(seed), f"seed: expected an int, got {type(seed).__name__}")
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


def _cast(scene: Scene, origin: torch.Tensor, dirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest hit ``t`` (inf for none) and primitive index of rays ``origin + t dirs``.

    ``origin (3,)``, ``dirs (R, 3)``, not necessarily unit length.
    """
    o, u, v = scene.quad_origin, scene.quad_u, scene.quad_v
    n = torch.linalg.cross(u, v)
    rel = o - origin  # (Q, 3)
    denom = dirs @ n.T  # (R, Q)
    safe = torch.where(denom.abs() > 1e-12, denom, torch.ones_like(denom))
    t = (rel * n).sum(-1) / safe
    # a = (origin + t d - o) . u / |u|^2
    a = (t * (dirs @ u.T) - (rel * u).sum(-1)) / (u * u).sum(-1)
    b = (t * (dirs @ v.T) - (rel * v).sum(-1)) / (v * v).sum(-1)
    hit = (denom.abs() > 1e-12) & (t > 1e-6) & (a >= 0) & (a <= 1) & (b >= 0) & (b <= 1)
    t_quad = torch.where(hit, t, torch.full_like(t, math.inf))
    if scene.sphere_radius.numel():
        oc = origin - scene.sphere_centre  # (S, 3)
        qa = (dirs * dirs).sum(-1, keepdim=True)
        qb = dirs @ oc.T
        qc = (oc * oc).sum(-1) - scene.sphere_radius**2
        disc = qb * qb - qa * qc
        root = disc.clamp_min(0).sqrt()
        t1, t2 = (-qb - root) / qa, (-qb + root) / qa
        ts = torch.where(t1 > 1e-6, t1, t2)
        ts = torch.where((disc >= 0) & (ts > 1e-6), ts, torch.full_like(ts, math.inf))
        t_quad = torch.cat((t_quad, ts), -1)
    return t_quad.min(-1)


def _hash(ix: torch.Tensor, iy: torch.Tensor, iz: torch.Tensor, seed: int) -> torch.Tensor:
    """Values in ``[-1, 1]`` hashed from integer lattice points (int64 arithmetic, 32-bit mixing)."""
    mask = 0xFFFFFFFF
    h = ((ix * 73856093) ^ (iy * 19349663) ^ (iz * 83492791) ^ (seed * 2654435761)) & mask
    for _ in range(2):
        h = ((h ^ (h >> 16)) * 0x45D9F3B) & mask
    h = h ^ (h >> 16)
    return (h & 0xFFFFFF).to(torch.float32) * (2.0 / 0xFFFFFF) - 1.0


_CORNERS = torch.tensor([[dx, dy, dz] for dx in (0, 1) for dy in (0, 1) for dz in (0, 1)])


def _value_noise(p: torch.Tensor, seed: int) -> torch.Tensor:
    """Smooth (quintic-faded, C2) value noise of period-1 lattice at points ``p (M, 3)``: ``(M,)``."""
    base = p.floor()
    f = p - base
    w = f * f * f * (f * (f * 6 - 15) + 10)
    corner = base.long()[:, None, :] + _CORNERS  # (M, 8, 3)
    values = _hash(corner[..., 0], corner[..., 1], corner[..., 2], seed)  # (M, 8)
    weights = torch.where(_CORNERS.bool(), w[:, None, :], 1 - w[:, None, :]).prod(-1)
    return (values * weights).sum(-1)


def _smoothstep(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(0, 1)
    return x * x * (3 - 2 * x)


def _shade(scene: Scene, points: torch.Tensor, prim: torch.Tensor, normals: torch.Tensor,
           footprint: torch.Tensor) -> torch.Tensor:
    """Pre-filtered colour ``(M, 3)`` of surface points."""
    p = points + scene.offset[prim]
    luminance = torch.zeros_like(footprint)
    total = 0.0
    for k in range(_OCTAVES):
        wavelength = _WAVELENGTH0 * 0.5**k
        amplitude = _AMPLITUDE_DECAY**k
        total += amplitude
        # Fade the octave out between 4 and 2 footprints per wavelength: its mean (0) is the
        # correctly filtered value once it is finer than the pixel's Nyquist limit.
        fade = _smoothstep(wavelength / footprint / _FADE_START - 1)
        if bool((fade > 0).any()):
            luminance = luminance + fade * amplitude * _value_noise(p / wavelength, scene.seed + 7919 * k)
    luminance = luminance * (2.5 / total)
    chroma_wavelength = 1.0
    chroma = torch.stack([_value_noise(p / chroma_wavelength, scene.seed + 104729 * (c + 1)) for c in range(3)], -1)
    chroma = chroma * _smoothstep(chroma_wavelength / footprint / _FADE_START - 1)[:, None]
    albedo = (scene.colour[prim] * (1 + 0.8 * luminance[:, None]) + 0.12 * chroma).clamp(0, 1)
    light = torch.tensor(_LIGHT)
    light = light / light.norm()
    return albedo * (0.55 + 0.45 * (normals @ light).abs())[:, None]


def _normals(scene: Scene, points: torch.Tensor, prim: torch.Tensor) -> torch.Tensor:
    q = scene.quad_origin.shape[0]
    n_quad = torch.linalg.cross(scene.quad_u, scene.quad_v)
    n_quad = n_quad / n_quad.norm(dim=-1, keepdim=True)
    is_quad = prim < q
    n = n_quad[prim.clamp(max=q - 1)]
    if scene.sphere_radius.numel():
        s = (prim - q).clamp(min=0, max=scene.sphere_radius.shape[0] - 1)
        n_sphere = (points - scene.sphere_centre[s]) / scene.sphere_radius[s, None]
        n = torch.where(is_quad[:, None], n, n_sphere)
    return n


def _pixel_rays(K: torch.Tensor, E: torch.Tensor, height: int, width: int, ss: int, centre: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera centre ``(3,)`` and world ray directions ``(H*W*s*s, 3)`` whose camera ``z`` is 1.

    Rays of one pixel are contiguous (``ss * ss`` of them); ``centre`` casts one per pixel.
    """
    steps = torch.tensor([0.0]) if centre else (torch.arange(ss, dtype=torch.float32) + 0.5) / ss - 0.5
    ys = (torch.arange(height, dtype=torch.float32)[:, None] + steps).reshape(height, 1, -1, 1)
    xs = (torch.arange(width, dtype=torch.float32)[:, None] + steps).reshape(1, width, 1, -1)
    ys, xs = torch.broadcast_tensors(ys, xs)
    pix = torch.stack((xs, ys, torch.ones_like(xs)), -1).reshape(-1, 3)
    R, t = E[:3, :3], E[:3, 3]
    cam = pix @ torch.linalg.inv(K).T
    return -R.T @ t, cam @ R  # (R^T cam^T)^T


def _render_view(scene: Scene, K: torch.Tensor, E: torch.Tensor, height: int, width: int,
                 ss: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Image ``(3, H, W)``, z-depth ``(1, H, W)`` (0 where no hit) and surface boundaries
    ``(1, H, W)`` (the pixel's rays or its 4-neighbours' centre rays meet several primitives)."""
    f = float(K[0, 0])
    centre, dirs_c = _pixel_rays(K, E, height, width, 1, centre=True)
    depth, prim_c = (torch.cat(x) for x in zip(*[_cast(scene, centre, d) for d in dirs_c.split(_CHUNK)]))
    prim_c = torch.where(torch.isfinite(depth), prim_c, torch.full_like(prim_c, -1))
    _, dirs = _pixel_rays(K, E, height, width, ss, centre=False)
    colours, prims = [], []
    for d in dirs.split(_CHUNK):
        t, prim = _cast(scene, centre, d)
        prims.append(torch.where(torch.isfinite(t), prim, torch.full_like(prim, -1)))
        hit = torch.isfinite(t)
        colour = torch.zeros(d.shape[0], 3)
        if bool(hit.any()):
            dh, th, ph = d[hit], t[hit], prim[hit]
            points = centre + th[:, None] * dh
            normals = _normals(scene, points, ph)
            cos_inc = ((normals * dh).sum(-1).abs() / dh.norm(dim=-1)).clamp_min(0.05)
            # t is the camera z: z / f metres per pixel, stretched by 1 / cos along the slope
            # and not across it; the geometric mean of the two axes (as anisotropic-less mip
            # selection) keeps the filtering close between views at grazing incidence.
            footprint = th / f / cos_inc.sqrt()
            colour[hit] = _shade(scene, points, ph, normals, footprint)
        colours.append(colour)
    image = torch.cat(colours).view(height, width, ss * ss, 3).mean(2).permute(2, 0, 1)
    depth = torch.where(torch.isfinite(depth), depth, torch.zeros_like(depth)).view(1, height, width)
    prim_c = prim_c.view(height, width)
    mixed = (torch.cat(prims).view(height, width, ss * ss) != prim_c[..., None]).any(-1)
    dx = prim_c[:, 1:] != prim_c[:, :-1]
    dy = prim_c[1:] != prim_c[:-1]
    mixed[:, 1:] |= dx
    mixed[:, :-1] |= dx
    mixed[1:] |= dy
    mixed[:-1] |= dy
    return image, depth, mixed[None]


def _edges(depth: torch.Tensor, threshold: float) -> torch.Tensor:
    """Depth discontinuities of ``(N, 1, H, W)`` depths: second differences of inverse depth
    (zero on any plane, as ``1 / z`` is affine in the pixel coordinates there) above
    ``threshold`` times the inverse depth, and the valid pixels next to invalid ones."""
    valid = depth > 0
    w = torch.where(valid, 1 / depth.clamp_min(1e-12), torch.zeros_like(depth))
    edges = torch.zeros_like(valid)
    for dim in (-1, -2):
        n = w.shape[dim]
        if n < 3:
            continue
        lo, mid, hi = w.narrow(dim, 0, n - 2), w.narrow(dim, 1, n - 2), w.narrow(dim, 2, n - 2)
        jump = (hi - 2 * mid + lo).abs() > threshold * mid
        pad = [0, 0, 0, 0]
        pad[0 if dim == -1 else 2] = 1
        pad[1 if dim == -1 else 3] = 1
        edges |= torch.nn.functional.pad(jump, pad)
        vlo, vhi = valid.narrow(dim, 0, n - 1), valid.narrow(dim, 1, n - 1)
        border = vlo != vhi
        pad_lo, pad_hi = [0, 0, 0, 0], [0, 0, 0, 0]
        pad_lo[0 if dim == -1 else 2] = 1
        pad_hi[1 if dim == -1 else 3] = 1
        edges |= torch.nn.functional.pad(border, pad_lo) | torch.nn.functional.pad(border, pad_hi)
    return edges & valid


def render_views(scene: Scene, intrinsics: torch.Tensor, extrinsics: torch.Tensor, height: int, width: int,
                 *, supersampling: int = 2, edge_threshold: float = 0.05) -> RenderedScene:
    """Ray-cast ``scene`` into the cameras ``intrinsics (N, 3, 3)``, ``extrinsics (N, 4, 4)``.

    No noise, gain or visibility (``visibility`` is ``valid`` of view 0 for every view):
    :func:`render_scene` adds those.

    Convention:
        See the module docstring: world-to-camera extrinsics, pixel centres at integers.
    """
    images, depths, boundaries = zip(*[
        _render_view(scene, K.float(), E.float(), height, width, supersampling)
        for K, E in zip(intrinsics, extrinsics)
    ])
    depth = torch.stack(depths)
    valid = depth > 0
    return RenderedScene(
        images=torch.stack(images), depths=depth, intrinsics=intrinsics.float(), extrinsics=extrinsics.float(),
        valid=valid, visibility=valid[:1].expand_as(valid).clone(), edges=_edges(depth, edge_threshold),
        boundaries=torch.stack(boundaries) & valid,
    )


def _visibility(scene: Scene, rendered: RenderedScene, reference: int, tolerance: float) -> torch.Tensor:
    """Whether each reference pixel's surface point is seen by each view: it projects inside
    the view's image, in front of the camera, and the ray from that camera reaches it first."""
    n, _, h, w = rendered.depths.shape
    K0, E0 = rendered.intrinsics[reference], rendered.extrinsics[reference]
    centre0, dirs0 = _pixel_rays(K0, E0, h, w, 1, centre=True)
    depth0 = rendered.depths[reference].reshape(-1)
    valid0 = depth0 > 0
    points = centre0 + depth0[:, None] * dirs0  # world points of the reference pixels
    out = []
    for i in range(n):
        if i == reference:
            out.append(valid0)
            continue
        K, E = rendered.intrinsics[i], rendered.extrinsics[i]
        cam = points @ E[:3, :3].T + E[:3, 3]
        z = cam[:, 2]
        pix = cam @ K.T
        x, y = pix[:, 0] / z.clamp_min(1e-9), pix[:, 1] / z.clamp_min(1e-9)
        inside = (z > 1e-6) & (x >= -0.5) & (x <= w - 0.5) & (y >= -0.5) & (y <= h - 0.5)
        centre = -E[:3, :3].T @ E[:3, 3]
        seen = torch.cat([_cast(scene, centre, d)[0] for d in (points - centre).split(_CHUNK)])
        out.append(valid0 & inside & (seen >= 1 - tolerance))  # t = 1 at the point itself
    return torch.stack(out).view(n, 1, h, w)


def render_scene(config: SceneConfig = SceneConfig(), seed: int = 0) -> RenderedScene:
    """Render the seeded scene of ``config`` along its camera path, with exact ground truth.

    Example:
        >>> out = render_scene(SceneConfig(height=12, width=16, num_views=2, supersampling=1), seed=0)
        >>> out.images.shape, out.depths.shape, out.visibility.shape
        (torch.Size([2, 3, 12, 16]), torch.Size([2, 1, 12, 16]), torch.Size([2, 1, 12, 16]))
    """
    if not isinstance(config, SceneConfig):
        raise ArgumentTypeError("config", SceneConfig, type(config), f"config: expected a SceneConfig, got {type(config).__name__}")
    scene = make_scene(seed, config.kind, num_boxes=config.num_boxes, num_spheres=config.num_spheres,
                       num_slanted=config.num_slanted, plane_depth=config.plane_depth)
    K, E = make_cameras(config)
    out = render_views(scene, K, E, config.height, config.width, supersampling=config.supersampling,
                       edge_threshold=config.edge_threshold)
    out.visibility = _visibility(scene, out, 0, config.visibility_tolerance)
    g = torch.Generator().manual_seed(seed + 1)
    n = config.num_views
    gain = 1 + config.gain_jitter * (2 * torch.rand(n, 1, 1, 1, generator=g) - 1)
    bias = config.bias_jitter * (2 * torch.rand(n, 1, 1, 1, generator=g) - 1)
    noise = config.noise_sigma * torch.randn(out.images.shape, generator=g)
    out.images = (gain * out.images + bias + noise).clamp(0, 1)
    return out
