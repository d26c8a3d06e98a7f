"""Coloured point clouds as PLY files (binary little-endian), the format MeshLab, Open3D,
CloudCompare and Blender open: ``x y z`` float32 and ``red green blue`` uchar per vertex."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from gradcv.experiments._cli import atomic_write_bytes

#: One vertex of the files :func:`write_ply` writes.
VERTEX = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])


def ply_bytes(points: np.ndarray, colours: np.ndarray, comment: str = "") -> bytes:
    """The PLY file of ``points`` ``(M, 3)`` (any float) coloured by ``colours`` ``(M, 3)``
    (uint8, or floats in [0, 1]).

    Example:
        >>> data = ply_bytes(np.zeros((2, 3)), np.ones((2, 3)))
        >>> data.split(b"end_header\\n")[0].splitlines()[2]
        b'element vertex 2'
        >>> len(data.split(b"end_header\\n")[1])
        30
    """
    points = np.asarray(points)
    colours = np.asarray(colours)
    if points.ndim != 2 or points.shape[1] != 3 or colours.shape != points.shape:
        raise ValueError(f"points and colours: expected two (M, 3) arrays, got {points.shape} and {colours.shape}")
    if colours.dtype != np.uint8:
        colours = np.rint(np.clip(colours.astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)
    vertices = np.empty(len(points), dtype=VERTEX)
    for i, name in enumerate("xyz"):
        vertices[name] = points[:, i]
    for i, name in enumerate(("red", "green", "blue")):
        vertices[name] = colours[:, i]
    lines = ["ply", "format binary_little_endian 1.0"]
    lines += [f"comment {c}" for c in comment.splitlines() if c]
    lines += [f"element vertex {len(points)}"]
    lines += [f"property float {n}" for n in "xyz"] + [f"property uchar {n}" for n in ("red", "green", "blue")]
    lines += ["end_header"]
    return ("\n".join(lines) + "\n").encode("ascii") + vertices.tobytes()


def write_ply(path: str | os.PathLike[str], points: np.ndarray, colours: np.ndarray, comment: str = "") -> None:
    """Write :func:`ply_bytes` to ``path`` atomically."""
    atomic_write_bytes(path, ply_bytes(points, colours, comment))


def read_ply(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a file written by :func:`write_ply`: its vertices as a :data:`VERTEX` array.

    Checks the header (format, one vertex element with exactly these properties) and that
    the body holds exactly the vertices it announces; raises ``ValueError`` otherwise.
    """
    data = Path(path).read_bytes()
    head, sep, body = data.partition(b"end_header\n")
    if not sep or not head.startswith(b"ply\n"):
        raise ValueError(f"{str(path)!r}: not a PLY file")
    lines = [line for line in head.decode("ascii").splitlines()[1:] if not line.startswith("comment")]
    if not lines or lines[0] != "format binary_little_endian 1.0":
        raise ValueError(f"{str(path)!r}: expected binary little-endian PLY, got {lines[:1]}")
    element = lines[1].split()
    if element[:2] != ["element", "vertex"] or len(element) != 3:
        raise ValueError(f"{str(path)!r}: expected one vertex element, got {lines[1]!r}")
    expected = [f"property float {n}" for n in "xyz"] + [f"property uchar {n}" for n in ("red", "green", "blue")]
    if lines[2:] != expected:
        raise ValueError(f"{str(path)!r}: unexpected properties {lines[2:]}")
    count = int(element[2])
    if len(body) != count * VERTEX.itemsize:
        raise ValueError(f"{str(path)!r}: {count} vertices announced, {len(body)} bytes of data")
    return np.frombuffer(body, dtype=VERTEX)
