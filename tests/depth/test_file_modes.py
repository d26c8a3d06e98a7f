"""The depth writers' files get the permissions a plain ``open()`` would give them (``0o666``
less the umask), not ``mkstemp``'s owner-only ``0o600``, and leave no temporary file behind."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from gradcv.depth import png16
from gradcv.depth.io import write_colmap_text, write_depth, write_json
from gradcv.depth.png16 import write_png16


def _write_all(folder: Path) -> list[Path]:
    folder.mkdir()
    depth = np.full((4, 6), 2.5)
    write_depth(folder / "depth.npy", depth)
    write_depth(folder / "depth.png", torch.from_numpy(depth))
    write_png16(folder / "raw.png", np.arange(24, dtype=np.uint16).reshape(4, 6))
    K = torch.tensor([[[50.0, 0.0, 2.5], [0.0, 50.0, 1.5], [0.0, 0.0, 1.0]]]).repeat(2, 1, 1).double()
    E = torch.eye(4, dtype=torch.float64).repeat(2, 1, 1)
    E[1, 0, 3] = -0.3
    write_json(folder / "cameras.json", K, E, ["a.png", "b.png"], sizes=[(4, 6), (4, 6)])
    write_colmap_text(folder / "colmap", K, E, ["a.png", "b.png"], [(4, 6), (4, 6)])
    return [folder / n for n in ("depth.npy", "depth.png", "raw.png", "cameras.json",
                                 "colmap/cameras.txt", "colmap/images.txt", "colmap/points3D.txt")]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask() -> Iterator[Callable[[int], None]]:
    """Set the process umask for one test (and forget the writer's cached copy), restoring both."""
    saved = os.umask(0o022)
    os.umask(saved)
    cached = png16._UMASK

    def set_umask(value: int) -> None:
        os.umask(value)
        png16._UMASK = None

    try:
        yield set_umask
    finally:
        os.umask(saved)
        png16._UMASK = cached


def test_files_get_plain_open_permissions(tmp_path: Path) -> None:
    current = os.umask(0o022)
    os.umask(current)
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert _mode(plain) == 0o666 & ~current  # what the writers must match
    for path in _write_all(tmp_path / "out"):
        assert _mode(path) == 0o666 & ~current, path.name
    assert not [p for p in (tmp_path / "out").rglob("*.tmp")]


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077, 0o002])
def test_files_follow_the_umask(tmp_path: Path, umask: Callable[[int], None], mask: int) -> None:
    umask(mask)
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    for path in _write_all(tmp_path / "out"):
        assert _mode(path) == _mode(plain) == 0o666 & ~mask, path.name


def test_overwrite_keeps_the_umask_mode_not_the_old_file_mode(tmp_path: Path) -> None:
    target = tmp_path / "depth.npy"
    write_depth(target, np.ones((3, 3)))
    os.chmod(target, 0o600)
    write_depth(target, np.ones((3, 3)))
    current = os.umask(0o022)
    os.umask(current)
    assert _mode(target) == 0o666 & ~current
