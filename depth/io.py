"""Loaders and writers for real calibrations: COLMAP text models and a small JSON format.

A :class:`Calibration` holds N views: names, image paths, ``(N, 3, 3)`` intrinsics and
``(N, 4, 4)`` world-to-camera extrinsics (float64), image sizes and optional ground-truth
depth maps. The library never decodes colour images (JPEG/PNG) itself: the loaders return
the paths, and read the images only through a ``read_image(path) -> (C, H, W)`` callback
that the caller passes (the apps pass matplotlib's reader), checking each image's size
against its camera. Ground-truth depth is a ``.npy`` file (float, metres) or a 16-bit
grayscale PNG in millimetres (0 = no measurement), read by :mod:`gradcv.depth.png16`.

Two formats:

- **COLMAP text model** (``cameras.txt``, ``images.txt``; ``points3D.txt`` is ignored).
  Only the undistorted models ``SIMPLE_PINHOLE`` and ``PINHOLE`` are read: a distorted
  model (``SIMPLE_RADIAL``, ``RADIAL``, ``OPENCV``, ``FULL_OPENCV``, ``OPENCV_FISHEYE``,
  ...) raises :class:`UnsupportedCameraError` saying to undistort first (``colmap
  image_undistorter``, whose binary model ``colmap model_converter --output_type TXT``
  turns into text).
- **JSON** (``views.json``, paths relative to the JSON file's folder)::

      {"views": [
        {"image": "images/0001.png",            # required
         "K": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]],   # required, gradcv's pixel convention
         "world_to_camera": [[...4 numbers...], ..., [0, 0, 0, 1]],  # required, 4 x 4
         "width": 640, "height": 480,            # optional (written by write_json)
         "name": "0001",                         # optional, defaults to "image"
         "depth": "depth/0001.png"},             # optional, .npy (m) or 16-bit PNG (mm)
        ...]}

Convention:
    Pixel ``(x, y)``: x right, y down, integer values at pixel centres (OpenCV, gradcv).
    COLMAP puts the centre of the top-left pixel at ``(0.5, 0.5)``, so reading a COLMAP
    model subtracts 0.5 from its principal point (``cx = cx_colmap - 0.5``, same for
    ``cy``) and writing one adds it back; focal lengths are unchanged. The JSON format
    stores gradcv's convention as is. Extrinsics map world to camera coordinates
    (``x_cam = R @ x_world + t``), camera looking down +z, x right, y down, as COLMAP's
    ``images.txt`` poses (quaternion ``QW QX QY QZ``, scalar first, and ``TX TY TZ``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from gradcv.core_ops.errors import ArgumentTypeError, ArgumentValueError, ShapeError
from gradcv.depth.png16 import FileFormatError, MissingFileError, atomic_write_bytes, read_png16, write_png16

__all__ = [
    "Calibration",
    "FileFormatError",
    "MissingFileError",
    "UnsupportedCameraError",
    "matrix_to_quaternion",
    "quaternion_to_matrix",
    "read_colmap_text",
    "read_depth",
    "read_json",
    "write_colmap_text",
    "write_depth",
    "write_json",
]

ReadImage = Callable[[Path], torch.Tensor]

# COLMAP's camera models and their parameter counts (src/colmap/sensor/models.h).
_PINHOLE_MODELS = {"SIMPLE_PINHOLE": 3, "PINHOLE": 4}
_DISTORTED_MODELS = {
    "SIMPLE_RADIAL": 4, "RADIAL": 5, "OPENCV": 8, "OPENCV_FISHEYE": 8, "FULL_OPENCV": 12, "FOV": 5,
    "SIMPLE_RADIAL_FISHEYE": 4, "RADIAL_FISHEYE": 5, "THIN_PRISM_FISHEYE": 12, "RAD_TAN_THIN_PRISM_FISHEYE": 16,
}


class UnsupportedCameraError(FileFormatError):
    """A COLMAP camera uses a distorted (or unknown) model: undistort the images first."""


@dataclass
class Calibration:
    """N calibrated views, as read by :func:`read_colmap_text` or :func:`read_json`.

    Attributes:
        names: the views' names (COLMAP's ``NAME``, the JSON ``name``).
        image_paths: each view's image file (not read unless a ``read_image`` was given).
        intrinsics: ``(N, 3, 3)`` float64, gradcv's pixel convention (centres at integers).
        extrinsics: ``(N, 4, 4)`` float64, world-to-camera.
        sizes: each view's ``(height, width)`` in pixels; ``None`` where a JSON view gives
            no size and no image was read.
        depth_paths: each view's ground-truth depth file, or ``None``.
        depths: each view's ground-truth depth, ``(H, W)`` float64 metres, ``0`` where
            there is no measurement, or ``None``.
        images: each view's ``(C, H, W)`` image as ``read_image`` returned it, or ``None``
            when no ``read_image`` was given.
    """

    names: list[str]
    image_paths: list[Path]
    intrinsics: torch.Tensor
    extrinsics: torch.Tensor
    sizes: list[tuple[int, int] | None]
    depth_paths: list[Path | None] = field(default_factory=list)
    depths: list[torch.Tensor | None] = field(default_factory=list)
    images: list[torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.names)


# ----------------------------------------------------------------------------- rotations


def quaternion_to_matrix(q: Sequence[float]) -> np.ndarray:
    """The ``3 x 3`` rotation of a unit quaternion ``(w, x, y, z)`` (scalar first, as COLMAP).

    The quaternion is normalised first. Raises ``ArgumentValueError`` for a zero or
    non-finite one.

    Example:
        >>> quaternion_to_matrix([0.0, 0.0, 0.0, 1.0]).round(12).tolist()  # 180 degrees about z
        [[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]]
    """
    w, x, y, z = (float(v) for v in q)
    n = math.sqrt(w * w + x * x + y * y + z * z)
    if not (math.isfinite(n) and n > 0):
        raise ArgumentValueError("q", "a finite non-zero quaternion", tuple(q))
    w, x, y, z = w / n, x / n, y / n, z / n
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def matrix_to_quaternion(r: np.ndarray) -> np.ndarray:
    """The unit quaternion ``(w, x, y, z)`` of a rotation matrix, with ``w >= 0`` (Shepperd's method).

    Example:
        >>> matrix_to_quaternion(quaternion_to_matrix([0.5, 0.5, 0.5, 0.5])).round(12).tolist()
        [0.5, 0.5, 0.5, 0.5]
    """
    m = np.asarray(r, dtype=np.float64)
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    # The largest of 4w², 4x², 4y², 4z² gives the best-conditioned square root.
    cands = [trace, m[0, 0], m[1, 1], m[2, 2]]
    k = int(np.argmax(cands))
    if k == 0:
        s = 2.0 * math.sqrt(max(1.0 + trace, 0.0))
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    elif k == 1:
        s = 2.0 * math.sqrt(max(1.0 + m[0, 0] - m[1, 1] - m[2, 2], 0.0))
        q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif k == 2:
        s = 2.0 * math.sqrt(max(1.0 + m[1, 1] - m[0, 0] - m[2, 2], 0.0))
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
    else:
        s = 2.0 * math.sqrt(max(1.0 + m[2, 2] - m[0, 0] - m[1, 1], 0.0))
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
    qa = np.array(q)
    qa /= np.linalg.norm(qa)
    return -qa if qa[0] < 0 else qa


# ----------------------------------------------------------------------------- depth maps


def read_depth(path: str | os.PathLike[str]) -> torch.Tensor:
    """Read a ground-truth depth map: ``(H, W)`` float64 metres, ``0`` where unmeasured.

    ``.npy``: a 2-D (or ``(1, H, W)``) floating array in metres; non-finite and negative
    values become 0. ``.png``: a 16-bit grayscale PNG in millimetres (0 = no measurement).

    Raises:
        MissingFileError: no such file (a ``FileNotFoundError``).
        FileFormatError: another suffix, or a file of the wrong kind or shape.
    """
    p = Path(path)
    if not p.is_file():
        raise MissingFileError("depth", "an existing file", str(p), f"depth: no such file: {str(p)!r}")
    suffix = p.suffix.lower()
    if suffix == ".png":
        return torch.from_numpy(read_png16(p).astype(np.float64) / 1000.0)
    if suffix != ".npy":
        raise FileFormatError(str(p), ".npy or .png", suffix, f"{str(p)!r}: a depth map must be .npy (metres) or a 16-bit .png (millimetres)")
    try:
        a = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as ex:
        raise FileFormatError(str(p), "a .npy array", "unreadable", f"{str(p)!r}: cannot read .npy depth map ({ex})") from None
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2 or a.size == 0 or a.dtype.kind != "f":
        raise FileFormatError(str(p), "a floating (H, W) array", f"{a.dtype} {a.shape}",
                              f"{str(p)!r}: expected a floating (H, W) depth map in metres, got {a.dtype} array of shape {a.shape}")
    a = a.astype(np.float64)
    a[~(np.isfinite(a) & (a > 0))] = 0.0
    return torch.from_numpy(a)


def write_depth(path: str | os.PathLike[str], depth: torch.Tensor | np.ndarray) -> None:
    """Write a ``(H, W)`` depth map in metres, atomically: ``.npy`` (float32) or 16-bit ``.png`` (mm).

    For PNG, depths are rounded to whole millimetres; non-finite or non-positive values
    are written as 0 (no measurement). Depths beyond 65.535 m raise ``ArgumentValueError``.
    """
    p = Path(path)
    a = depth.detach().cpu().numpy() if isinstance(depth, torch.Tensor) else np.asarray(depth)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2 or a.size == 0:
        raise ShapeError("depth", ("H", "W"), tuple(a.shape), f"depth: expected a non-empty (H, W) map, got shape {a.shape}")
    a = a.astype(np.float64)
    valid = np.isfinite(a) & (a > 0)
    suffix = p.suffix.lower()
    if suffix == ".npy":
        import io as _io

        buf = _io.BytesIO()
        np.save(buf, np.where(valid, a, 0.0).astype(np.float32))
        atomic_write_bytes(p, buf.getvalue())
    elif suffix == ".png":
        mm = np.where(valid, np.rint(a * 1000.0), 0.0)
        if mm.max() > 65535:
            raise ArgumentValueError("depth", "depths up to 65.535 m for a 16-bit PNG", float(a[valid].max()))
        write_png16(p, mm.astype(np.uint16))
    else:
        raise ArgumentValueError("path", ".npy or .png", suffix, f"path: a depth map is written as .npy or .png, got {str(p)!r}")


# ----------------------------------------------------------------------------- COLMAP


def _bad_line(path: Path, lineno: int, why: str, actual: object = None) -> FileFormatError:
    return FileFormatError(f"{path}:{lineno}", "a well-formed line", actual, f"{str(path)!r}, line {lineno}: {why}")


def _numbers(path: Path, lineno: int, fields: Sequence[str], what: str) -> list[float]:
    try:
        vals = [float(f) for f in fields]
    except ValueError:
        raise _bad_line(path, lineno, f"{what} must be numbers, got {' '.join(fields)!r}", list(fields)) from None
    if not all(math.isfinite(v) for v in vals):
        raise _bad_line(path, lineno, f"{what} must be finite, got {' '.join(fields)!r}", list(fields))
    return vals


def _int(path: Path, lineno: int, text: str, what: str, minimum: int) -> int:
    try:
        v = int(text)
    except ValueError:
        raise _bad_line(path, lineno, f"{what} must be an integer, got {text!r}", text) from None
    if v < minimum:
        raise _bad_line(path, lineno, f"{what} must be >= {minimum}, got {v}", v)
    return v


def _read_lines(path: Path, what: str) -> list[str]:
    if not path.is_file():
        raise MissingFileError(what, "an existing file", str(path), f"{what}: no such file: {str(path)!r}")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as ex:
        raise FileFormatError(str(path), "UTF-8 text", "binary", f"{str(path)!r}: not a text file ({ex})") from None


def _read_cameras(path: Path) -> dict[int, tuple[np.ndarray, tuple[int, int]]]:
    cameras: dict[int, tuple[np.ndarray, tuple[int, int]]] = {}
    for lineno, line in enumerate(_read_lines(path, "cameras"), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        f = text.split()
        if len(f) < 4:
            raise _bad_line(path, lineno, "expected CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]", text)
        cam_id = _int(path, lineno, f[0], "CAMERA_ID", 0)
        model = f[1]
        width = _int(path, lineno, f[2], "WIDTH", 1)
        height = _int(path, lineno, f[3], "HEIGHT", 1)
        if model in _DISTORTED_MODELS or model not in _PINHOLE_MODELS:
            kind = "distorted" if model in _DISTORTED_MODELS else "unknown"
            raise UnsupportedCameraError(
                f"{path}:{lineno}", tuple(_PINHOLE_MODELS), model,
                f"{str(path)!r}, line {lineno}: camera {cam_id} uses the {kind} model {model}; only "
                f"{' and '.join(_PINHOLE_MODELS)} are supported: undistort the images first "
                "(e.g. `colmap image_undistorter`, then `colmap model_converter --output_type TXT`)",
            )
        params = _numbers(path, lineno, f[4:], f"{model} parameters")
        if len(params) != _PINHOLE_MODELS[model]:
            raise _bad_line(path, lineno, f"{model} takes {_PINHOLE_MODELS[model]} parameters, got {len(params)}", len(params))
        if model == "SIMPLE_PINHOLE":
            fx = fy = params[0]
            cx, cy = params[1], params[2]
        else:
            fx, fy, cx, cy = params
        if fx <= 0 or fy <= 0:
            raise _bad_line(path, lineno, f"focal lengths must be positive, got {fx}, {fy}", (fx, fy))
        if cam_id in cameras:
            raise _bad_line(path, lineno, f"camera {cam_id} is defined twice", cam_id)
        k = np.array([[fx, 0.0, cx - 0.5], [0.0, fy, cy - 0.5], [0.0, 0.0, 1.0]])
        cameras[cam_id] = (k, (height, width))
    if not cameras:
        raise FileFormatError(str(path), "at least one camera", 0, f"{str(path)!r}: no cameras")
    return cameras


def _read_images(path: Path, cameras: dict[int, tuple[np.ndarray, tuple[int, int]]]) -> list[tuple[int, str, np.ndarray, int]]:
    lines = _read_lines(path, "images")
    out: list[tuple[int, str, np.ndarray, int]] = []
    seen: set[int] = set()
    i = 0
    while i < len(lines):
        lineno = i + 1
        text = lines[i].strip()
        i += 1
        if not text or text.startswith("#"):
            continue
        f = text.split(None, 9)
        if len(f) < 10:
            raise _bad_line(path, lineno, "expected IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME", text)
        image_id = _int(path, lineno, f[0], "IMAGE_ID", 0)
        q = _numbers(path, lineno, f[1:5], "QW QX QY QZ")
        t = _numbers(path, lineno, f[5:8], "TX TY TZ")
        cam_id = _int(path, lineno, f[8], "CAMERA_ID", 0)
        name = f[9].strip()
        if cam_id not in cameras:
            raise _bad_line(path, lineno, f"image {image_id} refers to camera {cam_id}, which cameras.txt does not define", cam_id)
        if image_id in seen:
            raise _bad_line(path, lineno, f"image {image_id} is defined twice", image_id)
        seen.add(image_id)
        if math.sqrt(sum(v * v for v in q)) < 1e-12:
            raise _bad_line(path, lineno, "the quaternion QW QX QY QZ is zero", q)
        pose = np.eye(4)
        pose[:3, :3] = quaternion_to_matrix(q)
        pose[:3, 3] = t
        out.append((image_id, name, pose, cam_id))
        # The next line lists the image's 2-D points (X Y POINT3D_ID triples); it may be empty.
        if i < len(lines):
            pts = lines[i].split()
            if pts and (len(pts) % 3 != 0 or lines[i].lstrip().startswith("#")):
                raise _bad_line(path, i + 1, "expected the POINTS2D line (X Y POINT3D_ID triples) after an image line", lines[i].strip()[:80])
            i += 1
    if not out:
        raise FileFormatError(str(path), "at least one image", 0, f"{str(path)!r}: no images")
    out.sort(key=lambda r: r[0])
    return out


def read_colmap_text(
    folder: str | os.PathLike[str],
    *,
    image_folder: str | os.PathLike[str] | None = None,
    depth_folder: str | os.PathLike[str] | None = None,
    read_image: ReadImage | None = None,
) -> Calibration:
    """Read a COLMAP text model (``cameras.txt`` and ``images.txt`` in ``folder``).

    Args:
        folder: the model's folder.
        image_folder: where the images' ``NAME`` paths start (default ``folder``; for
            ``colmap image_undistorter``'s output ``dense/``, pass ``dense/images``).
        depth_folder: optional ground truth: the depth of image ``NAME`` is
            ``depth_folder / NAME`` with suffix ``.npy`` or ``.png`` (whichever exists).
        read_image: optional ``(path) -> (C, H, W)`` reader; when given, every image is
            read and its size checked against its camera.

    Returns:
        A :class:`Calibration`, views in ``IMAGE_ID`` order.

    Raises:
        MissingFileError: a model file, or an image when ``read_image`` is given, is missing.
        UnsupportedCameraError: a camera uses a distorted or unknown model.
        FileFormatError: a malformed line (the message names the file and line number).
        ShapeError: an image or depth map whose size differs from its camera's (names the file).

    Convention:
        COLMAP's principal point is moved by -0.5 pixel into gradcv's convention (pixel
        centres at integers); see the module docstring. Extrinsics are world-to-camera.
    """
    root = Path(folder)
    if not root.is_dir():
        raise MissingFileError("folder", "an existing folder", str(root), f"folder: no such folder: {str(root)!r}")
    cameras = _read_cameras(root / "cameras.txt")
    records = _read_images(root / "images.txt", cameras)
    base = Path(image_folder) if image_folder is not None else root
    depth_paths: list[Path | None] = []
    for _, name, _, _ in records:
        found = None
        if depth_folder is not None:
            for suffix in (".npy", ".png"):
                cand = (Path(depth_folder) / name).with_suffix(suffix)
                if cand.is_file():
                    found = cand
                    break
        depth_paths.append(found)
    return _finish(
        names=[r[1] for r in records],
        image_paths=[base / r[1] for r in records],
        intrinsics=[cameras[r[3]][0] for r in records],
        extrinsics=[r[2] for r in records],
        sizes=[cameras[r[3]][1] for r in records],
        depth_paths=depth_paths,
        read_image=read_image,
    )


def _finish(
    names: list[str],
    image_paths: list[Path],
    intrinsics: list[np.ndarray],
    extrinsics: list[np.ndarray],
    sizes: list[tuple[int, int] | None],
    depth_paths: list[Path | None],
    read_image: ReadImage | None,
) -> Calibration:
    images: list[torch.Tensor] | None = None
    if read_image is not None:
        if not callable(read_image):
            raise ArgumentTypeError("read_image", "a callable", type(read_image), f"read_image: expected a callable, got {type(read_image).__name__}")
        images = []
        for i, p in enumerate(image_paths):
            if not p.is_file():
                raise MissingFileError("image", "an existing file", str(p), f"image: no such file: {str(p)!r}")
            img = read_image(p)
            if not isinstance(img, torch.Tensor) or img.ndim < 2:
                raise ArgumentTypeError("read_image", "a (C, H, W) tensor", type(img),
                                        f"read_image: expected a (C, H, W) tensor for {str(p)!r}, got {type(img).__name__}")
            hw = (int(img.shape[-2]), int(img.shape[-1]))
            if sizes[i] is None:
                sizes[i] = hw
            elif hw != sizes[i]:
                h, w = sizes[i]  # type: ignore[misc]
                raise ShapeError(str(p), ("H", "W"), hw,
                                 f"{str(p)!r}: image is {hw[1]} x {hw[0]} pixels, its camera {w} x {h} (width x height)")
            images.append(img)
    depths: list[torch.Tensor | None] = []
    for i, p in enumerate(depth_paths):
        if p is None:
            depths.append(None)
            continue
        d = read_depth(p)
        hw = (int(d.shape[0]), int(d.shape[1]))
        if sizes[i] is not None and hw != sizes[i]:
            h, w = sizes[i]  # type: ignore[misc]
            raise ShapeError(str(p), ("H", "W"), hw,
                             f"{str(p)!r}: depth map is {hw[1]} x {hw[0]} pixels, its camera {w} x {h} (width x height)")
        depths.append(d)
    return Calibration(
        names=list(names),
        image_paths=list(image_paths),
        intrinsics=torch.from_numpy(np.stack(intrinsics).astype(np.float64)),
        extrinsics=torch.from_numpy(np.stack(extrinsics).astype(np.float64)),
        sizes=list(sizes),
        depth_paths=list(depth_paths),
        depths=depths,
        images=images,
    )


def _as_array(x: torch.Tensor | np.ndarray | Sequence, shape: tuple[int, ...], name: str) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.ndim != len(shape) or any(s != -1 and s != g for s, g in zip(shape, a.shape)):
        sym = tuple("N" if s == -1 else s for s in shape)
        raise ShapeError(name, sym, tuple(a.shape))
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ArgumentValueError(name, "finite values", "non-finite values", f"{name}: expected finite values")
    return a


def _check_views(intrinsics, extrinsics, names, sizes) -> tuple[np.ndarray, np.ndarray, list[str], list[tuple[int, int]] | None]:
    k = _as_array(intrinsics, (-1, 3, 3), "intrinsics")
    e = _as_array(extrinsics, (-1, 4, 4), "extrinsics")
    n = k.shape[0]
    if e.shape[0] != n:
        raise ShapeError("extrinsics", (n, 4, 4), tuple(e.shape), f"extrinsics: expected {n} views like intrinsics, got {e.shape[0]}")
    names = [str(s) for s in names]
    if len(names) != n:
        raise ArgumentValueError("names", f"{n} names", len(names), f"names: expected {n} names, got {len(names)}")
    rot = e[:, :3, :3]
    if not np.allclose(rot @ rot.transpose(0, 2, 1), np.eye(3), atol=1e-6) or not np.allclose(np.linalg.det(rot), 1.0, atol=1e-6):
        raise ArgumentValueError("extrinsics", "rotations in the top-left 3 x 3 blocks", "a non-rotation")
    if not np.allclose(e[:, 3], [0.0, 0.0, 0.0, 1.0], atol=1e-12):
        raise ArgumentValueError("extrinsics", "a last row 0 0 0 1", e[:, 3].tolist())
    if sizes is not None:
        sizes = [(int(h), int(w)) for h, w in sizes]
        if len(sizes) != n or any(h < 1 or w < 1 for h, w in sizes):
            raise ArgumentValueError("sizes", f"{n} positive (height, width) pairs", sizes)
    return k, e, names, sizes


def write_colmap_text(
    folder: str | os.PathLike[str],
    intrinsics: torch.Tensor | np.ndarray,
    extrinsics: torch.Tensor | np.ndarray,
    names: Sequence[str],
    sizes: Sequence[tuple[int, int]],
) -> None:
    """Write a COLMAP text model (``cameras.txt``, ``images.txt``, empty ``points3D.txt``).

    One ``PINHOLE`` camera per view (ids 1..N, images likewise), each file written
    atomically. Numbers are written with 17 significant digits, so reading back gives the
    same values to float64 rounding.

    Args:
        folder: the model's folder (created).
        intrinsics: ``(N, 3, 3)`` in gradcv's convention (skew is not representable and dropped).
        extrinsics: ``(N, 4, 4)`` world-to-camera.
        names: the N image names (paths relative to the image folder, no line breaks).
        sizes: the N ``(height, width)`` image sizes.

    Convention:
        The principal point gets +0.5 pixel (COLMAP's top-left pixel centre is (0.5, 0.5)).
    """
    k, e, names, size_list = _check_views(intrinsics, extrinsics, names, sizes)
    assert size_list is not None
    for nm in names:
        if not nm.strip() or "\n" in nm or "\r" in nm or nm != nm.strip():
            raise ArgumentValueError("names", "non-empty names without line breaks or edge spaces", nm)
    root = Path(folder)
    g = "{:.17g}".format
    cams = ["# Camera list with one line of data per camera:", "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]",
            f"# Number of cameras: {len(names)}"]
    imgs = ["# Image list with two lines of data per image:", "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
            "#   POINTS2D[] as (X, Y, POINT3D_ID)", f"# Number of images: {len(names)}, mean observations per image: 0"]
    for i, (ki, ei, nm, (h, w)) in enumerate(zip(k, e, names, size_list), start=1):
        cams.append(f"{i} PINHOLE {w} {h} {g(ki[0, 0])} {g(ki[1, 1])} {g(ki[0, 2] + 0.5)} {g(ki[1, 2] + 0.5)}")
        q = matrix_to_quaternion(ei[:3, :3])
        t = ei[:3, 3]
        imgs.append(" ".join([str(i), *(g(v) for v in q), *(g(v) for v in t), str(i), nm]))
        imgs.append("")
    atomic_write_bytes(root / "cameras.txt", ("\n".join(cams) + "\n").encode("utf-8"))
    atomic_write_bytes(root / "images.txt", ("\n".join(imgs) + "\n").encode("utf-8"))
    atomic_write_bytes(root / "points3D.txt", b"# 3D point list with one line of data per point:\n# Number of points: 0\n")


# ----------------------------------------------------------------------------- JSON


def read_json(path: str | os.PathLike[str], *, read_image: ReadImage | None = None) -> Calibration:
    """Read the JSON calibration format (see the module docstring).

    Args:
        path: the JSON file; image and depth paths are relative to its folder.
        read_image: optional ``(path) -> (C, H, W)`` reader; when given, every image is
            read and its size checked against the view's ``width`` and ``height``.

    Returns:
        A :class:`Calibration`, views in file order.

    Raises:
        MissingFileError: the file, or an image when ``read_image`` is given, is missing.
        FileFormatError: invalid JSON (file and line named) or a malformed view (file and
            view index named).
        ShapeError: an image or depth map whose size differs from its view's (names the file).

    Convention:
        ``K`` is in gradcv's pixel convention (centres at integers), ``world_to_camera``
        maps world to camera coordinates.
    """
    p = Path(path)
    if not p.is_file():
        raise MissingFileError("path", "an existing file", str(p), f"path: no such file: {str(p)!r}")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as ex:
        raise FileFormatError(f"{p}:{ex.lineno}", "JSON", ex.msg, f"{str(p)!r}, line {ex.lineno}: invalid JSON ({ex.msg})") from None
    except UnicodeDecodeError as ex:
        raise FileFormatError(str(p), "UTF-8 text", "binary", f"{str(p)!r}: not a text file ({ex})") from None
    views = doc.get("views") if isinstance(doc, dict) else None
    if not isinstance(views, list) or not views:
        raise FileFormatError(str(p), '{"views": [...]}', type(doc).__name__, f"{str(p)!r}: expected an object with a non-empty \"views\" list")
    base = p.parent
    names, images, ks, es, sizes, depths = [], [], [], [], [], []
    for i, v in enumerate(views):
        def bad(why: str, actual: object = None) -> FileFormatError:
            return FileFormatError(f"{p}:views[{i}]", "a well-formed view", actual, f"{str(p)!r}, views[{i}]: {why}")

        if not isinstance(v, dict):
            raise bad("expected an object", type(v).__name__)
        img = v.get("image")
        if not isinstance(img, str) or not img:
            raise bad('"image" must be a non-empty path string', img)
        try:
            k = np.array(v["K"], dtype=np.float64)
            e = np.array(v["world_to_camera"], dtype=np.float64)
        except KeyError as ex:
            raise bad(f"missing {ex.args[0]!r}") from None
        except (TypeError, ValueError):
            raise bad('"K" and "world_to_camera" must be nested lists of numbers') from None
        if k.shape != (3, 3) or not np.isfinite(k).all():
            raise bad(f'"K" must be a finite 3 x 3 matrix, got shape {k.shape}', k.shape)
        if e.shape != (4, 4) or not np.isfinite(e).all():
            raise bad(f'"world_to_camera" must be a finite 4 x 4 matrix, got shape {e.shape}', e.shape)
        r = e[:3, :3]
        if not np.allclose(r @ r.T, np.eye(3), atol=1e-6) or abs(np.linalg.det(r) - 1.0) > 1e-6 or not np.allclose(e[3], [0, 0, 0, 1]):
            raise bad('"world_to_camera" must be [[R, t], [0, 0, 0, 1]] with R a rotation')
        w, h = v.get("width"), v.get("height")
        if (w is None) != (h is None):
            raise bad('give both "width" and "height" or neither')
        if w is not None:
            if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in (w, h)):
                raise bad('"width" and "height" must be positive integers', (w, h))
            sizes.append((h, w))
        else:
            sizes.append(None)
        name = v.get("name", img)
        if not isinstance(name, str):
            raise bad('"name" must be a string', name)
        dp = v.get("depth")
        if dp is not None and (not isinstance(dp, str) or not dp):
            raise bad('"depth" must be a path string', dp)
        if dp is not None and not (base / dp).is_file():
            raise MissingFileError("depth", "an existing file", str(base / dp), f"depth: no such file: {str(base / dp)!r} ({str(p)!r}, views[{i}])")
        names.append(name)
        images.append(base / img)
        ks.append(k)
        es.append(e)
        depths.append(None if dp is None else base / dp)
    return _finish(names, images, ks, es, sizes, depths, read_image)


def write_json(
    path: str | os.PathLike[str],
    intrinsics: torch.Tensor | np.ndarray,
    extrinsics: torch.Tensor | np.ndarray,
    images: Sequence[str | os.PathLike[str]],
    *,
    sizes: Sequence[tuple[int, int]] | None = None,
    names: Sequence[str] | None = None,
    depths: Sequence[str | os.PathLike[str] | None] | None = None,
) -> None:
    """Write the JSON calibration format, atomically.

    Args:
        path: the JSON file (its folder is created).
        intrinsics: ``(N, 3, 3)``, gradcv's pixel convention.
        extrinsics: ``(N, 4, 4)`` world-to-camera.
        images: the N image paths; a path inside the JSON file's folder is written relative to it.
        sizes: optional N ``(height, width)`` pairs.
        names: optional N names (default: the image paths as written).
        depths: optional N depth-map paths (or ``None`` entries), made relative likewise.

    Convention:
        Values are stored as given: ``K`` with pixel centres at integers.
    """
    p = Path(path)
    rels = [_relative(x, p.parent) for x in images]
    k, e, names_l, size_list = _check_views(intrinsics, extrinsics, rels if names is None else names, sizes)
    if depths is not None and len(depths) != len(rels):
        raise ArgumentValueError("depths", f"{len(rels)} entries", len(depths))
    views = []
    for i in range(len(rels)):
        v: dict[str, object] = {"name": names_l[i], "image": rels[i], "K": k[i].tolist(), "world_to_camera": e[i].tolist()}
        if size_list is not None:
            v["height"], v["width"] = size_list[i]
        if depths is not None and depths[i] is not None:
            v["depth"] = _relative(depths[i], p.parent)  # type: ignore[arg-type]
        views.append(v)
    # json writes floats with repr(), which round-trips float64 exactly.
    atomic_write_bytes(p, (json.dumps({"views": views}, indent=1) + "\n").encode("utf-8"))


def _relative(path: str | os.PathLike[str], base: Path) -> str:
    q = Path(path)
    if q.is_absolute():
        try:
            q = q.resolve().relative_to(base.resolve())
        except ValueError:
            return str(q)
    return q.as_posix()
