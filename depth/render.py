"""Synthetic multi-view scenes with exact ground truth, ray-cast in torch.

:func:`render_views` ray-casts a :class:`~gradcv.depth.scene.Scene` (textured room, boxes,
slanted rectangles, spheres) into pinhole views, vectorised over the pixels in chunks of
rays, and returns the images, the exact camera-frame ``z`` depth, the validity of each pixel,
the depth edges and the surface boundaries; :func:`render_scene` builds a seeded scene and
camera path from a :class:`~gradcv.depth.scene.SceneConfig`, adds, for the reference view,
the visibility of each of its pixels in every view (an exact occlusion test: a ray cast from
the other camera to the point), then the image noise, gain and bias.

Textures are solid (3-D) multi-octave value noise evaluated at the hit point, so a surface
point has the same texture in every view. Each octave (and the coarse colour noise) fades
out where its wavelength falls below two to four pixel footprints on the surface, its mean
being the correctly filtered value there: the texture is pre-filtered like a mip-map and
distant or grazing surfaces do not alias. The footprint is ``z / f`` stretched by
``1 / sqrt(cos(incidence))``, the geometric mean of the footprint's axes on the surface, a
compromise between aliasing and blur as in isotropic mip selection. Octaves span 2 m down to
8 mm, so the texture is broadband (gradients at every pyramid level). Shading depends on
the surface normal only, never on the view.

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
import torch.nn.functional as F

from gradcv.core_ops._checks import check_floating, check_shape
from gradcv.core_ops.errors import ArgumentTypeError, ArgumentValueError
from gradcv.depth.scene import Scene, SceneConfig, make_cameras, make_scene

__all__ = ["RenderedScene", "Scene", "SceneConfig", "make_cameras", "make_scene", "render_scene", "render_views"]

_CHUNK = 1 << 16  # rays cast at once: bounds the (rays x primitives) temporaries
_OCTAVES = 9
_WAVELENGTH0 = 2.0  # metres, coarsest octave
_AMPLITUDE_DECAY = 0.75
_FADE_START = 2.0  # footprints per wavelength where an octave is gone; full at twice that
_MIP_BIAS = 1.0  # one level coarser than texel = footprint: two footprints a texel, as the noise fades
_LIGHT = (0.3, -0.8, -0.5)  # from above (y down), constant: shading is view-independent


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


def _mix(h: torch.Tensor) -> torch.Tensor:
    """Values in ``[-1, 1]`` from 32-bit lattice keys (int64 arithmetic, in place)."""
    mask = 0xFFFFFFFF
    for _ in range(2):
        h ^= h >> 16
        h *= 0x45D9F3B
        h &= mask
    h ^= h >> 16
    h &= 0xFFFFFF
    return h.to(torch.float32).mul_(2.0 / 0xFFFFFF).sub_(1.0)


def _value_noise(p: torch.Tensor, seed: int) -> torch.Tensor:
    """Smooth (quintic-faded, C2) value noise of period-1 lattice at points ``p (M, 3)``: ``(M,)``.

    The 8 corners of each lattice cell are the outer combination of 2 keys a axis, so the
    per-corner work is only the key's xor and its mixing.
    """
    base = p.floor()
    f = p - base
    w = f * f * f * (f * (f * 6 - 15) + 10)
    cell = base.long()
    step = torch.arange(2)
    kx = ((cell[:, 0:1] + step) * 73856093 ^ (seed * 2654435761)) & 0xFFFFFFFF  # (M, 2)
    ky = ((cell[:, 1:2] + step) * 19349663) & 0xFFFFFFFF
    kz = ((cell[:, 2:3] + step) * 83492791) & 0xFFFFFFFF
    values = _mix(kx[:, :, None, None] ^ ky[:, None, :, None] ^ kz[:, None, None, :])  # (M, 2, 2, 2)
    wx, wy, wz = (torch.stack((1 - w[:, i], w[:, i]), -1) for i in range(3))
    values = (values * wz[:, None, None, :]).sum(-1)
    values = (values * wy[:, None, :]).sum(-1)
    return (values * wx).sum(-1)


def _smoothstep(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(0, 1)
    return x * x * (3 - 2 * x)


def _mip_levels(texture: torch.Tensor) -> list[torch.Tensor]:
    """Mip pyramid ``[(1, 3, h, w), ...]`` of a photograph, 2 x 2 box means down to one texel side."""
    levels = [texture[None].float()]
    while min(levels[-1].shape[-2:]) >= 2:
        levels.append(F.avg_pool2d(levels[-1], 2))
    return levels


def _sample_mips(mips: list[torch.Tensor], uv: torch.Tensor, texels: torch.Tensor) -> torch.Tensor:
    """Trilinear mip sampling: ``uv (M, 2)`` in ``[0, 1)`` (x, y), ``texels (M,)`` level-0 texels
    a pixel covers; the level is ``log2(texels)``, bilinear within the two levels around it."""
    level = (texels.clamp_min(1e-6).log2() + _MIP_BIAS).clamp(0, len(mips) - 1)
    low = level.floor()
    frac = level - low
    grid = (uv * 2 - 1)[None, :, None, :]
    out = torch.zeros(uv.shape[0], 3)
    for k, image in enumerate(mips):
        weight = torch.where(low == k, 1 - frac, torch.zeros_like(frac)) + torch.where(low + 1 == k, frac, torch.zeros_like(frac))
        used = weight > 0
        if bool(used.any()):
            sample = F.grid_sample(image, grid[:, used], mode="bilinear", padding_mode="border", align_corners=False)
            out[used] += weight[used, None] * sample[0, :, :, 0].T
    return out


def _shade(scene: Scene, points: torch.Tensor, prim: torch.Tensor, normals: torch.Tensor,
           footprint: torch.Tensor, mips: list[torch.Tensor] | None, texture_size: float) -> torch.Tensor:
    """Pre-filtered colour ``(M, 3)`` of surface points: procedural everywhere, or the
    photograph ``mips`` tiled every ``texture_size`` metres on the rectangles."""
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
    quads = scene.quad_origin.shape[0]
    on_quad = prim < quads
    if mips is not None and bool(on_quad.any()):
        q = prim[on_quad]
        u, v = scene.quad_u[q], scene.quad_v[q]
        rel = points[on_quad] - scene.quad_origin[q]
        # Metres along the rectangle's edges, shifted per primitive so that tiles differ.
        s_m = (rel * u).sum(-1) / u.norm(dim=-1) + scene.offset[q, 0]
        t_m = (rel * v).sum(-1) / v.norm(dim=-1) + scene.offset[q, 1]
        h0, w0 = mips[0].shape[-2:]
        uv = torch.stack((s_m / texture_size, t_m / (texture_size * h0 / w0)), -1).remainder(1.0)
        albedo[on_quad] = _sample_mips(mips, uv, footprint[on_quad] / texture_size * w0)
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
                 ss: int, mips: list[torch.Tensor] | None, texture_size: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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
            colour[hit] = _shade(scene, points, ph, normals, footprint, mips, texture_size)
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
                 *, supersampling: int = 2, edge_threshold: float = 0.05, texture: torch.Tensor | None = None,
                 texture_size: float = 2.0) -> RenderedScene:
    """Ray-cast ``scene`` into the cameras ``intrinsics (N, 3, 3)``, ``extrinsics (N, 4, 4)``.

    No noise, gain or visibility (``visibility`` is ``valid`` of view 0 for every view):
    :func:`render_scene` adds those. ``texture``, a ``(3, h, w)`` floating photograph in
    ``[0, 1]``, replaces the procedural texture of the rectangles (room, boxes, slanted
    planes), tiled every ``texture_size`` metres and sampled from its mip pyramid at the
    pixel's footprint (trilinear); spheres keep the procedural texture.

    Convention:
        See the module docstring: world-to-camera extrinsics, pixel centres at integers.

    Example:
        >>> K, E = make_cameras(SceneConfig(height=6, width=8, num_views=1))
        >>> out = render_views(make_scene(0, "plane", plane_depth=2.0), K, E, 6, 8, supersampling=1)
        >>> out.depths.unique()
        tensor([2.])
    """
    mips = None
    if texture is not None:
        check_shape(texture, [3, "H", "W"], "texture")
        check_floating(texture, "texture")
        mips = _mip_levels(texture.detach().cpu())
    if not texture_size > 0:
        raise ArgumentValueError("texture_size", "> 0", texture_size, f"texture_size: expected a value > 0, got {texture_size}")
    images, depths, boundaries = zip(*[
        _render_view(scene, K.float(), E.float(), height, width, supersampling, mips, texture_size)
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


def render_scene(config: SceneConfig = SceneConfig(), seed: int = 0, *, texture: torch.Tensor | None = None,
                 texture_size: float = 2.0) -> RenderedScene:
    """Render the seeded scene of ``config`` along its camera path, with exact ground truth.

    ``texture`` and ``texture_size``: an optional photograph for the rectangles, as in
    :func:`render_views`.

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
                       edge_threshold=config.edge_threshold, texture=texture, texture_size=texture_size)
    out.visibility = _visibility(scene, out, 0, config.visibility_tolerance)
    g = torch.Generator().manual_seed(seed + 1)
    n = config.num_views
    gain = 1 + config.gain_jitter * (2 * torch.rand(n, 1, 1, 1, generator=g) - 1)
    bias = config.bias_jitter * (2 * torch.rand(n, 1, 1, 1, generator=g) - 1)
    noise = config.noise_sigma * torch.randn(out.images.shape, generator=g)
    out.images = (gain * out.images + bias + noise).clamp(0, 1)
    return out
