"""Camera models: the pinhole camera (``PinholeCamera``, ``project_points``,
``unproject_points``) and the orthographic projection.

Convention (``DESIGN.md``):
    Pixel coordinates ``(x, y)``: x to the right, y down, integer values at pixel
    *centres* (as OpenCV and Kornia 0.9), so a centred principal point of a ``W x H``
    image is ``((W - 1) / 2, (H - 1) / 2)``. Camera frame: x right, y down, z forward
    (along the optical axis). The camera matrix is
    ``K = [[fx, skew, cx], [0, fy, cy], [0, 0, 1]]`` and a camera-frame point ``X``
    projects to ``(K X)[:2] / (K X)[2]``. Extrinsics are *world-to-camera* rigid
    transforms ``[[R, t], [0, 0, 0, 1]]``: ``X_cam = R X_world + t`` (OpenCV, COLMAP,
    Kornia). Depth is the camera-frame ``z``.

Where this differs from Kornia 0.9 (names, argument order and shapes are Kornia's):
    * :meth:`PinholeCamera.scale` keeps the pixel-centre convention: resizing an image by
      ``s`` maps ``x`` to ``s (x + 0.5) - 0.5``, so ``cx' = s (cx + 0.5) - 0.5``; Kornia
      multiplies ``cx`` by ``s`` (off by ``(s - 1) / 2`` px, Kornia issue #4263).
    * :func:`project_points` and :func:`unproject_points` honour the skew ``K[0, 1]``,
      as :meth:`PinholeCamera.project` (in Kornia as here) and the depth warp do; Kornia
      and ``cv2.projectPoints`` drop it. With zero skew the results are the same.
    * :meth:`PinholeCamera.unproject` inverts the extrinsics as a rigid transform
      (``R^T``), exactly, instead of by a general 4 x 4 inverse.
"""

from __future__ import annotations

from typing import Union

import torch

from gradcv.core_ops._checks import check_floating, check_shape, check_tensor
from gradcv.core_ops.errors import ArgumentTypeError, DeviceError, DTypeError, ShapeError
from gradcv.core_ops.geometry.conversions import convert_points_from_homogeneous

__all__ = [
    "PinholeCamera",
    "dx_project_points_orthographic",
    "project_points",
    "project_points_orthographic",
    "unproject_points",
    "unproject_points_orthographic",
]


# ---------------------------------------------------------------------- helpers
def _check_float_shape(x: object, dims: list[str | int], name: str) -> torch.Tensor:
    check_shape(x, dims, name)
    assert isinstance(x, torch.Tensor)
    check_floating(x, name)
    return x


def _inverse3x3(m: torch.Tensor) -> torch.Tensor:
    """Inverse of ``(*, 3, 3)`` matrices by cofactors (row ``i`` of the cofactor matrix
    is ``r[i+1] x r[i+2]``): closed form, differentiable, traceable by torch.compile.
    For camera matrices, which are never singular; a singular input gives inf/NaN."""
    cof = torch.linalg.cross(m.roll(-1, dims=-2), m.roll(-2, dims=-2), dim=-1)
    det = (m[..., 0, :] * cof[..., 0, :]).sum(-1)
    return cof.transpose(-1, -2) / det[..., None, None]


def _align(matrix: torch.Tensor, points: torch.Tensor, mname: str, pname: str) -> torch.Tensor:
    """Reshape ``(*M, r, c)`` matrices so that ``*M`` lines up with the *leading* dimensions
    of ``(*P, n)`` points (sizes equal or 1, broadcast), as Kornia's ``transform_points``:
    ``(B, 3, 3)`` serves ``(B, 3)``, ``(B, N, 3)`` or ``(B, M, N, 3)`` points."""
    mbatch, pbatch = matrix.shape[:-2], points.shape[:-1]
    if len(mbatch) > len(pbatch):
        if any(d != 1 for d in mbatch[: len(mbatch) - len(pbatch)]):
            raise ShapeError(
                mname, (*pbatch, "r", "c"), tuple(matrix.shape),
                f"{mname}, {pname}: a batch of matrices needs a batch of points, "
                f"got {tuple(matrix.shape)} and {tuple(points.shape)}",
            )
        matrix = matrix.reshape(*mbatch[len(mbatch) - len(pbatch):], *matrix.shape[-2:])
        mbatch = matrix.shape[:-2]
    if any(m != p and 1 not in (m, p) for m, p in zip(mbatch, pbatch)):
        raise ShapeError(
            mname, (*pbatch, "r", "c"), tuple(matrix.shape),
            f"{mname}, {pname}: the matrix batch must broadcast with the leading point batch dimensions, "
            f"got {tuple(matrix.shape)} and {tuple(points.shape)}",
        )
    return matrix.reshape(*mbatch, *([1] * (len(pbatch) - len(mbatch))), *matrix.shape[-2:])


def _check_same(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.dtype != b.dtype:
        raise DTypeError(name_b, a.dtype, b.dtype, f"{name_a}, {name_b}: expected the same dtype, got {a.dtype} and {b.dtype}")
    if a.device != b.device:
        raise DeviceError(
            name_b, a.device, b.device, f"{name_a}, {name_b}: expected the same device, got {a.device} and {b.device}"
        )


# ---------------------------------------------------------------- pinhole maths
def project_points(point_3d: torch.Tensor, camera_matrix: torch.Tensor) -> torch.Tensor:
    """Project camera-frame 3-D points to pixels: ``(K X)[:2] / (K X)[2]``.

    Args:
        point_3d: ``(*, 3)`` points in the camera frame.
        camera_matrix: ``(*K, 3, 3)`` camera matrices, same dtype; ``*K`` lines up with
            the leading dimensions of the point batch and broadcasts with them
            (``(B, 3, 3)`` with ``(B, 3)`` or ``(B, N, 3)`` points; ``(3, 3)`` with any).

    Returns:
        ``(*, 2)`` pixel coordinates ``(x, y)``. A point with ``|z| <= 1e-8`` is not
        divided (``K`` is applied to ``(x, y, 1)``), as Kornia, so values and gradients
        stay finite; points behind the camera (``z < 0``) are projected too (through the
        centre), flag them yourself if needed.

    Convention:
        Camera frame x right, y down, z forward; pixel centres at integers;
        ``x = fx X/Z + skew Y/Z + cx``, ``y = fy Y/Z + cy``. Equals ``cv2.projectPoints``
        with zero rotation, translation and distortion when ``skew = 0`` (Kornia and
        OpenCV ignore the skew; here it is applied).

    Example:
        >>> K = torch.tensor([[100.0, 0.0, 3.5], [0.0, 100.0, 2.5], [0.0, 0.0, 1.0]])
        >>> project_points(torch.tensor([[0.1, -0.2, 2.0]]), K)
        tensor([[ 8.5000, -7.5000]])
    """
    point_3d = _check_float_shape(point_3d, ["*", 3], "point_3d")
    camera_matrix = _check_float_shape(camera_matrix, ["*", 3, 3], "camera_matrix")
    _check_same(point_3d, camera_matrix, "point_3d", "camera_matrix")
    K = _align(camera_matrix, point_3d, "camera_matrix", "point_3d")
    xy = convert_points_from_homogeneous(point_3d)
    x, y = xy[..., 0], xy[..., 1]
    u = K[..., 0, 0] * x + K[..., 0, 1] * y + K[..., 0, 2]
    v = K[..., 1, 1] * y + K[..., 1, 2]
    return torch.stack((u, v), -1)


def unproject_points(
    point_2d: torch.Tensor, depth: torch.Tensor, camera_matrix: torch.Tensor, normalize: bool = False
) -> torch.Tensor:
    """Lift pixels to camera-frame 3-D points at a given depth: ``depth * K^-1 (x, y, 1)``.

    Args:
        point_2d: ``(*, 2)`` pixel coordinates ``(x, y)``.
        depth: ``(*, 1)`` depth of each point (camera-frame ``z``), broadcasting with
            ``point_2d``.
        camera_matrix: ``(*K, 3, 3)``, lined up with the leading dimensions of the
            points as in :func:`project_points`.
        normalize: read ``depth`` as the Euclidean distance from the camera centre (the
            ray length) instead of ``z``.

    Returns:
        ``(*, 3)`` camera-frame points; the inverse of :func:`project_points` for
        ``z = depth``.

    Convention:
        As :func:`project_points` (pixel centres at integers, skew applied).

    Example:
        >>> K = torch.tensor([[100.0, 0.0, 3.5], [0.0, 100.0, 2.5], [0.0, 0.0, 1.0]])
        >>> unproject_points(torch.tensor([[8.5, -7.5]]), torch.tensor([[2.0]]), K)
        tensor([[ 0.1000, -0.2000,  2.0000]])
    """
    point_2d = _check_float_shape(point_2d, ["*", 2], "point_2d")
    check_tensor(depth, "depth")
    if depth.ndim == 0 or depth.shape[-1] != 1:
        raise ShapeError("depth", ("*", 1), tuple(depth.shape))
    check_floating(depth, "depth")
    camera_matrix = _check_float_shape(camera_matrix, ["*", 3, 3], "camera_matrix")
    _check_same(point_2d, camera_matrix, "point_2d", "camera_matrix")
    _check_same(point_2d, depth, "point_2d", "depth")
    K = _align(camera_matrix, point_2d, "camera_matrix", "point_2d")
    fx, skew, cx = K[..., 0, 0], K[..., 0, 1], K[..., 0, 2]
    fy, cy = K[..., 1, 1], K[..., 1, 2]
    y = (point_2d[..., 1] - cy) / fy
    x = (point_2d[..., 0] - cx - skew * y) / fx
    xyz = torch.stack((x, y, torch.ones_like(x)), -1)
    if normalize:
        # |xyz| >= 1 (its z is 1), so the norm needs no guard and is smooth.
        xyz = xyz / torch.linalg.vector_norm(xyz, dim=-1, keepdim=True)
    return xyz * depth


# ----------------------------------------------------------------- orthographic
def project_points_orthographic(points_in_camera: torch.Tensor) -> torch.Tensor:
    """Orthographic projection onto the canonical image plane: ``(x, y, z) -> (x, y)``.

    Args:
        points_in_camera: ``(*, 3)`` camera-frame points.

    Returns:
        ``(*, 2)``.

    Convention:
        Camera frame as in :func:`project_points`; the result is in the camera's metric
        units (no intrinsics), as Kornia's.

    Example:
        >>> project_points_orthographic(torch.tensor([1.0, 2.0, 3.0]))
        tensor([1., 2.])
    """
    check_shape(points_in_camera, ["*", 3], "points_in_camera")
    return points_in_camera[..., :2]


def unproject_points_orthographic(points_in_camera: torch.Tensor, extension: torch.Tensor) -> torch.Tensor:
    """Lift orthographic image points to 3-D: ``(u, v), w -> (u, v, w)``.

    Args:
        points_in_camera: ``(*, 2)`` points on the canonical plane.
        extension: the ``z`` of each point, ``(*, 1)`` or ``(*)`` (Kornia takes both).

    Returns:
        ``(*, 3)``.

    Convention:
        As :func:`project_points_orthographic`.

    Example:
        >>> unproject_points_orthographic(torch.tensor([1.0, 2.0]), torch.tensor([3.0]))
        tensor([1., 2., 3.])
    """
    check_shape(points_in_camera, ["*", 2], "points_in_camera")
    check_tensor(extension, "extension")
    if extension.ndim != points_in_camera.ndim:
        extension = extension[..., None]
    if extension.shape[:-1] != points_in_camera.shape[:-1] or extension.shape[-1] != 1:
        raise ShapeError(
            "extension", (*points_in_camera.shape[:-1], 1), tuple(extension.shape),
            f"extension: expected shape {tuple(points_in_camera.shape[:-1])} or "
            f"{(*points_in_camera.shape[:-1], 1)}, got {tuple(extension.shape)}",
        )
    return torch.cat([points_in_camera, extension], dim=-1)


def dx_project_points_orthographic(points_in_camera: torch.Tensor) -> torch.Tensor:
    """The derivative of the orthographic ``u`` with respect to ``x``: ones ``(*, 1)``.

    Convention:
        As :func:`project_points_orthographic`.

    Example:
        >>> dx_project_points_orthographic(torch.tensor([1.0, 2.0, 3.0]))
        tensor([1.])
    """
    check_shape(points_in_camera, ["*", 3], "points_in_camera")
    return torch.ones_like(points_in_camera[..., :1])


# --------------------------------------------------------------- PinholeCamera
def _embed(camera_matrix: torch.Tensor) -> torch.Tensor:
    """``(*, 3, 3) -> (*, 4, 4)`` ``[[K, 0], [0, 1]]``, without in-place writes (differentiable)."""
    top = torch.cat((camera_matrix, torch.zeros_like(camera_matrix[..., :1])), -1)
    bottom = torch.zeros_like(top[..., :1, :])
    bottom = torch.cat((bottom[..., :3], torch.ones_like(bottom[..., 3:])), -1)
    return torch.cat((top, bottom), -2)


class PinholeCamera:
    """A batch of pinhole cameras: intrinsics, world-to-camera extrinsics and image sizes.

    Args:
        intrinsics: ``(B, 4, 4)``, floating; its top-left ``3 x 3`` block is the camera
            matrix ``K`` (the rest is not read).
        extrinsics: ``(B, 4, 4)`` rigid world-to-camera transforms ``[[R, t], [0, 1]]``,
            same dtype and device.
        height: ``(B,)`` image heights (any real dtype).
        width: ``(B,)`` image widths.

    The camera keeps copies of the tensors (as Kornia's), so :meth:`scale_` and the
    ``tx``/``ty``/``tz`` setters change only the camera. Gradients flow from the copies
    to the tensors given.

    Convention:
        See the module docstring: pixel centres at integers, camera frame x right / y down
        / z forward, ``X_cam = R X_world + t``. :meth:`scale` follows the pixel-centre
        convention (``cx' = s (cx + 0.5) - 0.5``), unlike Kornia's ``cx' = s cx``.

    Example:
        >>> cam = PinholeCamera.from_parameters(
        ...     fx=torch.tensor([100.0]), fy=torch.tensor([100.0]), cx=torch.tensor([31.5]),
        ...     cy=torch.tensor([23.5]), height=48, width=64, tx=torch.zeros(1), ty=torch.zeros(1),
        ...     tz=torch.zeros(1), batch_size=1, device="cpu", dtype=torch.float32)
        >>> cam.project(torch.tensor([[0.0, 0.0, 5.0]]))
        tensor([[31.5000, 23.5000]])
        >>> small = cam.scale(torch.tensor([0.5]))  # a 2x smaller image: pixel 31.5 -> 15.5
        >>> small.cx, small.width
        (tensor([15.5000]), tensor([32.]))
    """

    def __init__(
        self, intrinsics: torch.Tensor, extrinsics: torch.Tensor, height: torch.Tensor, width: torch.Tensor
    ) -> None:
        _check_float_shape(intrinsics, ["B", 4, 4], "intrinsics")
        _check_float_shape(extrinsics, ["B", 4, 4], "extrinsics")
        check_shape(height, ["B"], "height")
        check_shape(width, ["B"], "width")
        _check_same(intrinsics, extrinsics, "intrinsics", "extrinsics")
        batch = intrinsics.shape[0]
        for name, value in (("extrinsics", extrinsics), ("height", height), ("width", width)):
            if value.shape[0] != batch:
                raise ShapeError(
                    name, (batch, *value.shape[1:]), tuple(value.shape),
                    f"{name}: expected batch size {batch} (that of intrinsics), got {value.shape[0]}",
                )
            if value.device != intrinsics.device:
                raise DeviceError(
                    name, intrinsics.device, value.device, f"{name}: expected a tensor on {intrinsics.device}, got {value.device}"
                )
        self.height: torch.Tensor = height.clone()
        self.width: torch.Tensor = width.clone()
        self._intrinsics: torch.Tensor = intrinsics.clone()
        self._extrinsics: torch.Tensor = extrinsics.clone()

    # -------------------------------------------------------------- storage
    def device(self) -> torch.device:
        """The device of the camera's tensors."""
        return self._intrinsics.device

    @property
    def intrinsics(self) -> torch.Tensor:
        """``(B, 4, 4)`` intrinsics."""
        return self._intrinsics

    @property
    def extrinsics(self) -> torch.Tensor:
        """``(B, 4, 4)`` world-to-camera extrinsics."""
        return self._extrinsics

    @property
    def batch_size(self) -> int:
        """The number of cameras ``B``."""
        return self._intrinsics.shape[0]

    @property
    def fx(self) -> torch.Tensor:
        """``(B,)`` focal length along x, in pixels."""
        return self._intrinsics[..., 0, 0]

    @property
    def fy(self) -> torch.Tensor:
        """``(B,)`` focal length along y, in pixels."""
        return self._intrinsics[..., 1, 1]

    @property
    def cx(self) -> torch.Tensor:
        """``(B,)`` principal point x, in pixels (pixel centres at integers)."""
        return self._intrinsics[..., 0, 2]

    @property
    def cy(self) -> torch.Tensor:
        """``(B,)`` principal point y, in pixels."""
        return self._intrinsics[..., 1, 2]

    @property
    def tx(self) -> torch.Tensor:
        """``(B,)`` x of the translation ``t`` (world origin in the camera frame)."""
        return self._extrinsics[..., 0, 3]

    @tx.setter
    def tx(self, value: Union[torch.Tensor, float]) -> None:
        self._extrinsics[..., 0, 3] = value

    @property
    def ty(self) -> torch.Tensor:
        """``(B,)`` y of the translation ``t``."""
        return self._extrinsics[..., 1, 3]

    @ty.setter
    def ty(self, value: Union[torch.Tensor, float]) -> None:
        self._extrinsics[..., 1, 3] = value

    @property
    def tz(self) -> torch.Tensor:
        """``(B,)`` z of the translation ``t``."""
        return self._extrinsics[..., 2, 3]

    @tz.setter
    def tz(self, value: Union[torch.Tensor, float]) -> None:
        self._extrinsics[..., 2, 3] = value

    @property
    def rt_matrix(self) -> torch.Tensor:
        """``(B, 3, 4)`` ``[R | t]``."""
        return self._extrinsics[..., :3, :4]

    @property
    def camera_matrix(self) -> torch.Tensor:
        """``(B, 3, 3)`` camera matrix ``K``."""
        return self._intrinsics[..., :3, :3]

    @property
    def rotation_matrix(self) -> torch.Tensor:
        """``(B, 3, 3)`` rotation ``R`` of the extrinsics."""
        return self._extrinsics[..., :3, :3]

    @property
    def translation_vector(self) -> torch.Tensor:
        """``(B, 3, 1)`` translation ``t`` of the extrinsics."""
        return self._extrinsics[..., :3, 3:]

    def clone(self) -> PinholeCamera:
        """An independent copy (autograd history kept)."""
        return PinholeCamera(self._intrinsics, self._extrinsics, self.height, self.width)

    def intrinsics_inverse(self) -> torch.Tensor:
        """``(B, 4, 4)`` ``[[K^-1, 0], [0, 1]]`` (only the ``3 x 3`` block of the intrinsics is inverted).

        Convention:
            ``K^-1`` takes homogeneous pixels (centres at integers) to camera-frame rays with ``z = 1``.

        Example:
            >>> K = torch.diag(torch.tensor([2.0, 4.0, 1.0, 1.0]))[None]
            >>> PinholeCamera(K, torch.eye(4)[None], torch.ones(1), torch.ones(1)).intrinsics_inverse()[0].diagonal()
            tensor([0.5000, 0.2500, 1.0000, 1.0000])
        """
        return _embed(_inverse3x3(self.camera_matrix))

    # -------------------------------------------------------------- scaling
    def _scaled(self, scale_factor: Union[torch.Tensor, float]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if isinstance(scale_factor, torch.Tensor):
            check_floating(scale_factor, "scale_factor")
            if scale_factor.ndim > 1 or scale_factor.numel() not in (1, self.batch_size):
                raise ShapeError(
                    "scale_factor", f"({self.batch_size},), (1,) or ()", tuple(scale_factor.shape),
                    f"scale_factor: expected shape ({self.batch_size},), (1,) or (), got {tuple(scale_factor.shape)}",
                )
            s = scale_factor.reshape(-1).to(self._intrinsics.dtype)
        elif isinstance(scale_factor, (int, float)) and not isinstance(scale_factor, bool):
            s = torch.tensor([float(scale_factor)], device=self._intrinsics.device, dtype=self._intrinsics.dtype)
        else:
            raise ArgumentTypeError(
                "scale_factor", "a float or a floating tensor", type(scale_factor),
                f"scale_factor: expected a float or a floating tensor, got {type(scale_factor).__name__}",
            )
        # Resizing by s maps pixel x to s (x + 0.5) - 0.5 (pixel centres at integers,
        # image edges at -0.5 and W - 0.5): K' = S K with S = [[s, 0, o], [0, s, o], [0, 0, 1]],
        # o = (s - 1) / 2, so fx' = s fx and cx' = s (cx + 0.5) - 0.5.
        K = self._intrinsics
        s4 = s[:, None]
        offset = (s4 - 1.0) / 2.0
        rows = (K[..., 0, :] * s4 + K[..., 2, :] * offset, K[..., 1, :] * s4 + K[..., 2, :] * offset)
        intrinsics = torch.cat((torch.stack(rows, -2), K[..., 2:, :]), -2)
        return intrinsics, self.height * s.to(device=self.height.device), self.width * s.to(device=self.width.device)

    def scale(self, scale_factor: Union[torch.Tensor, float]) -> PinholeCamera:
        """The camera of the image resized by ``scale_factor`` (a new camera).

        Args:
            scale_factor: ``(B,)``, ``(1,)`` floating tensor or a float: new size / old size.

        Returns:
            A camera with ``fx' = s fx``, ``fy' = s fy``, ``cx' = s (cx + 0.5) - 0.5``,
            ``cy' = s (cy + 0.5) - 0.5`` (the skew scales with ``s``), ``height' = s height``
            and ``width' = s width``; same extrinsics.

        Convention:
            Pixel centres at integers and an image spanning ``[-0.5, W - 0.5]``: a resize
            by ``s`` (``grid_sample``/``interpolate`` with ``align_corners=False``, or
            averaging ``1/s x 1/s`` blocks) maps ``x`` to ``s (x + 0.5) - 0.5``. Kornia's
            ``scale`` uses ``cx' = s cx``, off by ``(s - 1) / 2`` pixels.

        Example:
            >>> K = torch.eye(4)[None]
            >>> K[0, 0, 2], K[0, 1, 2] = 3.5, 1.5  # centre of an 8 x 4 image
            >>> cam = PinholeCamera(K, torch.eye(4)[None], torch.tensor([4.0]), torch.tensor([8.0]))
            >>> cam.scale(0.5).camera_matrix[0]  # centre of the 4 x 2 image
            tensor([[0.5000, 0.0000, 1.5000],
                    [0.0000, 0.5000, 0.5000],
                    [0.0000, 0.0000, 1.0000]])
        """
        intrinsics, height, width = self._scaled(scale_factor)
        return PinholeCamera(intrinsics, self._extrinsics, height, width)

    def scale_(self, scale_factor: Union[torch.Tensor, float]) -> PinholeCamera:
        """:meth:`scale` in place: updates this camera and returns it."""
        self._intrinsics, self.height, self.width = self._scaled(scale_factor)
        return self

    # ----------------------------------------------------------- projection
    def project(self, point_3d: torch.Tensor) -> torch.Tensor:
        """Project world points to pixels: ``K (R X + t)``, divided by its ``z``.

        Args:
            point_3d: ``(B, *, 3)`` world points (at least 2-D; the leading dimension is
                the camera batch, or 1).

        Returns:
            ``(B, *, 2)`` pixel coordinates; points with ``|z| <= 1e-8`` in the camera
            frame are not divided (see :func:`project_points`).

        Convention:
            World-to-camera extrinsics; pixel centres at integers.

        Example:
            >>> cam = PinholeCamera(torch.eye(4)[None], torch.eye(4)[None], torch.ones(1), torch.ones(1))
            >>> cam.project(torch.tensor([[2.0, 4.0, 2.0]]))
            tensor([[1., 2.]])
        """
        point_3d = _check_float_shape(point_3d, ["*", 3], "point_3d")
        if point_3d.ndim < 2:
            raise ShapeError("point_3d", ("B", "*", 3), tuple(point_3d.shape))
        _check_same(point_3d, self._extrinsics, "point_3d", "extrinsics")
        E = _align(self._extrinsics, point_3d, "extrinsics", "point_3d")
        # Elementwise rather than matmul: E is lined up with the points' leading dimensions.
        cam = (E[..., :3, :3] * point_3d.unsqueeze(-2)).sum(-1) + E[..., :3, 3]
        return project_points(cam, _align(self.camera_matrix, point_3d, "intrinsics", "point_3d"))

    def unproject(self, point_2d: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        """Lift pixels at camera-frame depths to world points: ``R^T (z K^-1 (x, y, 1) - t)``.

        Args:
            point_2d: ``(B, *, 2)`` pixel coordinates (at least 2-D).
            depth: ``(B, *, 1)`` camera-frame depth ``z`` of each point.

        Returns:
            ``(B, *, 3)`` world points.

        Convention:
            As :meth:`project`, whose inverse this is; the extrinsics are inverted as a
            rigid transform.

        Example:
            >>> cam = PinholeCamera(torch.eye(4)[None], torch.eye(4)[None], torch.ones(1), torch.ones(1))
            >>> cam.unproject(torch.tensor([[1.0, 2.0]]), torch.tensor([[2.0]]))
            tensor([[2., 4., 2.]])
        """
        point_2d = _check_float_shape(point_2d, ["*", 2], "point_2d")
        if point_2d.ndim < 2:
            raise ShapeError("point_2d", ("B", "*", 2), tuple(point_2d.shape))
        cam = unproject_points(point_2d, depth, _align(self.camera_matrix, point_2d, "intrinsics", "point_2d"))
        E = _align(self._extrinsics, point_2d, "extrinsics", "point_2d")
        return ((cam - E[..., :3, 3]).unsqueeze(-1) * E[..., :3, :3]).sum(-2)

    @classmethod
    def from_parameters(
        cls,
        fx: torch.Tensor,
        fy: torch.Tensor,
        cx: torch.Tensor,
        cy: torch.Tensor,
        height: int,
        width: int,
        tx: torch.Tensor,
        ty: torch.Tensor,
        tz: torch.Tensor,
        batch_size: int,
        device: Union[str, torch.device, None],
        dtype: torch.dtype,
    ) -> PinholeCamera:
        """A camera batch from focal lengths, principal point, size and translation (no rotation), as Kornia's.

        ``height`` and ``width`` are stored as ``(B,)`` tensors of ``dtype``; every parameter
        broadcasts over ``batch_size``.
        """
        zeros = torch.zeros(batch_size, device=device, dtype=dtype)
        ones = torch.ones(batch_size, device=device, dtype=dtype)

        def col(v: torch.Tensor | float) -> torch.Tensor:
            return zeros + torch.as_tensor(v, device=device, dtype=dtype)

        last = (zeros, zeros, zeros, ones)
        K = torch.stack(
            (col(fx), zeros, col(cx), zeros, zeros, col(fy), col(cy), zeros, zeros, zeros, ones, zeros, *last), -1
        ).view(batch_size, 4, 4)
        E = torch.stack(
            (ones, zeros, zeros, col(tx), zeros, ones, zeros, col(ty), zeros, zeros, ones, col(tz), *last), -1
        ).view(batch_size, 4, 4)
        h = torch.full((batch_size,), height, device=device, dtype=dtype)
        w = torch.full((batch_size,), width, device=device, dtype=dtype)
        return cls(K, E, h, w)
