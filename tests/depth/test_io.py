"""depth.io and depth.png16: COLMAP text and JSON calibrations, 16-bit PNG depth maps.

References: scipy's Rotation for quaternions (scalar last there, scalar first in COLMAP),
OpenCV and Pillow for PNG files, Pillow for reading the test's colour images.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from scipy.spatial.transform import Rotation

from gradcv.core_ops.errors import GradcvError, ShapeError
from gradcv.depth.io import (
    Calibration,
    FileFormatError,
    MissingFileError,
    UnsupportedCameraError,
    matrix_to_quaternion,
    quaternion_to_matrix,
    read_colmap_text,
    read_depth,
    read_json,
    write_colmap_text,
    write_depth,
    write_json,
)
from gradcv.depth.png16 import read_png16, write_png16


def _pillow_reader(path: Path) -> torch.Tensor:
    a = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(a).permute(2, 0, 1).contiguous()


def _scene(tmp_path: Path, n: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    sizes = [(48, 64), (60, 80), (48, 64)][:n]
    ks, es, names = [], [], []
    for i, (h, w) in enumerate(sizes):
        f = rng.uniform(40, 90)
        ks.append([[f, 0, w / 2 - 0.5 + rng.uniform(-3, 3)], [0, f * rng.uniform(0.95, 1.05), h / 2 - 0.5 + rng.uniform(-3, 3)], [0, 0, 1]])
        e = np.eye(4)
        e[:3, :3] = Rotation.random(random_state=seed + i).as_matrix()
        e[:3, 3] = rng.normal(size=3)
        es.append(e)
        name = f"images/view_{i:02d}.png"
        names.append(name)
        img = (rng.uniform(0, 255, (h, w, 3))).astype(np.uint8)
        (tmp_path / "images").mkdir(exist_ok=True)
        Image.fromarray(img).save(tmp_path / name)
    return torch.tensor(np.array(ks)), torch.tensor(np.array(es)), names, sizes


def _check_same(cal: Calibration, k, e, names, sizes) -> None:
    assert cal.intrinsics.dtype == torch.float64 and cal.intrinsics.shape == (len(names), 3, 3)
    assert cal.extrinsics.dtype == torch.float64 and cal.extrinsics.shape == (len(names), 4, 4)
    torch.testing.assert_close(cal.intrinsics, k, rtol=0, atol=1e-9)
    torch.testing.assert_close(cal.extrinsics, e, rtol=0, atol=1e-9)
    assert cal.names == names
    assert cal.sizes == sizes
    assert len(cal) == len(names)


def test_colmap_round_trip_with_images(tmp_path: Path) -> None:
    k, e, names, sizes = _scene(tmp_path)
    write_colmap_text(tmp_path / "sparse", k, e, names, sizes)
    assert {p.name for p in (tmp_path / "sparse").iterdir()} == {"cameras.txt", "images.txt", "points3D.txt"}
    cal = read_colmap_text(tmp_path / "sparse", image_folder=tmp_path, read_image=_pillow_reader)
    _check_same(cal, k, e, names, sizes)
    assert cal.image_paths == [tmp_path / n for n in names]
    assert cal.images is not None and [tuple(im.shape) for im in cal.images] == [(3, h, w) for h, w in sizes]
    assert cal.depths == [None] * 3
    # Without a reader nothing is opened, and the images need not exist.
    cal2 = read_colmap_text(tmp_path / "sparse", image_folder=tmp_path / "elsewhere")
    assert cal2.images is None
    _check_same(cal2, k, e, names, sizes)


def test_json_round_trip_with_images_and_depths(tmp_path: Path) -> None:
    k, e, names, sizes = _scene(tmp_path)
    rng = np.random.default_rng(1)
    d0 = rng.uniform(0.5, 20.0, sizes[0])
    d0[:3, :5] = 0.0
    write_depth(tmp_path / "depth" / "d0.png", torch.from_numpy(d0))
    d2 = rng.uniform(0.5, 20.0, sizes[2]).astype(np.float32)
    write_depth(tmp_path / "depth" / "d2.npy", d2)
    write_json(tmp_path / "views.json", k, e, [tmp_path / n for n in names], sizes=sizes,
               depths=[tmp_path / "depth" / "d0.png", None, "depth/d2.npy"])
    cal = read_json(tmp_path / "views.json", read_image=_pillow_reader)
    _check_same(cal, k, e, names, sizes)  # absolute paths inside the folder are written relative
    assert cal.image_paths == [tmp_path / n for n in names]
    assert cal.depths[1] is None and cal.depth_paths[1] is None
    assert cal.depths[0].dtype == torch.float64 and cal.depths[0].shape == sizes[0]
    np.testing.assert_allclose(cal.depths[0].numpy(), np.rint(d0 * 1000) / 1000, rtol=0, atol=1e-12)
    assert (cal.depths[0][:3, :5] == 0).all()
    np.testing.assert_array_equal(cal.depths[2].numpy(), d2.astype(np.float64))
    # Sizes are optional: taken from the images when a reader is given, else None.
    write_json(tmp_path / "bare.json", k, e, names, names=["a", "b", "c"])
    bare = read_json(tmp_path / "bare.json")
    assert bare.sizes == [None] * 3 and bare.names == ["a", "b", "c"]
    assert read_json(tmp_path / "bare.json", read_image=_pillow_reader).sizes == sizes


def test_colmap_pixel_convention_and_models(tmp_path: Path) -> None:
    (tmp_path / "cameras.txt").write_text(
        "# Camera list\n#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n"
        "1 PINHOLE 640 480 500 510 320 240\n"
        "\n"
        "7 SIMPLE_PINHOLE 100 50 80.5 50 25\n"
    )
    (tmp_path / "images.txt").write_text(
        "# Image list with two lines of data per image:\n"
        "5 0 0 0 1 1 2 3 7 b c.jpg\n"
        "\n"
        "2 1 0 0 0 0 0 0 1 sub/a.jpg\n"
        "10.5 20.25 -1 11 12 3\n"
    )
    cal = read_colmap_text(tmp_path)
    assert cal.names == ["sub/a.jpg", "b c.jpg"]  # IMAGE_ID order; names may hold spaces
    np.testing.assert_array_equal(cal.intrinsics[0].numpy(), [[500, 0, 319.5], [0, 510, 239.5], [0, 0, 1]])
    np.testing.assert_array_equal(cal.intrinsics[1].numpy(), [[80.5, 0, 49.5], [0, 80.5, 24.5], [0, 0, 1]])
    assert cal.sizes == [(480, 640), (50, 100)]
    np.testing.assert_allclose(cal.extrinsics[1].numpy(), [[-1, 0, 0, 1], [0, -1, 0, 2], [0, 0, 1, 3], [0, 0, 0, 1]], atol=1e-15)
    # Written back, the principal point gets its half pixel again.
    write_colmap_text(tmp_path / "out", cal.intrinsics, cal.extrinsics, cal.names, cal.sizes)
    lines = [ln for ln in (tmp_path / "out" / "cameras.txt").read_text().splitlines() if not ln.startswith("#")]
    assert lines[0].split() == ["1", "PINHOLE", "640", "480", "500", "510", "320", "240"]


def test_quaternions_against_scipy() -> None:
    rots = Rotation.random(50, random_state=3)
    mats = rots.as_matrix()
    quats = rots.as_quat()  # scipy: (x, y, z, w)
    for m, (x, y, z, w) in zip(mats, quats):
        np.testing.assert_allclose(quaternion_to_matrix([w, x, y, z]), m, atol=1e-12)
        np.testing.assert_allclose(quaternion_to_matrix([-2 * w, -2 * x, -2 * y, -2 * z]), m, atol=1e-12)
        q = matrix_to_quaternion(m)
        assert q[0] >= 0
        np.testing.assert_allclose(q, np.sign(w) * np.array([w, x, y, z]), atol=1e-12)
    # Half turns, where the trace is -1 and w = 0.
    for axis in np.eye(3).tolist() + [[1 / np.sqrt(2), 1 / np.sqrt(2), 0.0]]:
        m = Rotation.from_rotvec(np.pi * np.array(axis)).as_matrix()
        np.testing.assert_allclose(quaternion_to_matrix(matrix_to_quaternion(m)), m, atol=1e-12)


@pytest.mark.parametrize("model,params", [
    ("SIMPLE_RADIAL", "50 32 24 0.01"), ("RADIAL", "50 32 24 0.01 0"), ("OPENCV", "50 50 32 24 0 0 0 0"),
    ("FULL_OPENCV", "50 50 32 24 0 0 0 0 0 0 0 0"), ("OPENCV_FISHEYE", "50 50 32 24 0 0 0 0"), ("MY_MODEL", "1 2 3"),
])
def test_distorted_model_error(tmp_path: Path, model: str, params: str) -> None:
    (tmp_path / "cameras.txt").write_text(f"# header\n1 PINHOLE 64 48 50 50 32 24\n2 {model} 64 48 {params}\n")
    (tmp_path / "images.txt").write_text("1 1 0 0 0 0 0 0 1 a.png\n\n")
    with pytest.raises(UnsupportedCameraError, match="image_undistorter") as info:
        read_colmap_text(tmp_path)
    assert "line 3" in str(info.value) and "cameras.txt" in str(info.value) and model in str(info.value)
    assert isinstance(info.value, (GradcvError, ValueError)) and "undistort" in str(info.value)


_GOOD_CAMS = "# c\n1 PINHOLE 64 48 50 50 32 24\n"
_GOOD_IMGS = "# i\n1 1 0 0 0 0 0 0 1 a.png\n\n"


@pytest.mark.parametrize("file,content,line", [
    ("cameras.txt", "# c\n1 PINHOLE 64 48 50 50 32\n", 2),
    ("cameras.txt", "# c\n\n1 PINHOLE 64 x 50 50 32 24\n", 3),
    ("cameras.txt", "1 PINHOLE 64 48 50 50 32 24\n1 PINHOLE 64 48 50 50 32 24\n", 2),
    ("cameras.txt", "1 PINHOLE 64 48 -50 50 32 24\n", 1),
    ("cameras.txt", "1 PINHOLE 64\n", 1),
    ("images.txt", "# i\n1 1 0 0 0 0 0 0 1\n\n", 2),
    ("images.txt", "# i\n1 1 0 0 0 0 0 nan 1 a.png\n\n", 2),
    ("images.txt", "# i\n1 1 0 0 0 0 0 0 9 a.png\n\n", 2),
    ("images.txt", "# i\n1 0 0 0 0 0 0 0 1 a.png\n\n", 2),
    ("images.txt", "# i\n1 1 0 0 0 0 0 0 1 a.png\n1 2\n", 3),
    ("images.txt", "# i\n1 1 0 0 0 0 0 0 1 a.png\n1 2 3\n1 1 0 0 0 0 0 0 1 b.png\n\n", 4),
])
def test_malformed_lines_name_file_and_line(tmp_path: Path, file: str, content: str, line: int) -> None:
    (tmp_path / "cameras.txt").write_text(_GOOD_CAMS)
    (tmp_path / "images.txt").write_text(_GOOD_IMGS)
    read_colmap_text(tmp_path)  # the good files read
    (tmp_path / file).write_text(content)
    with pytest.raises(FileFormatError) as info:
        read_colmap_text(tmp_path)
    assert f"{file}', line {line}:" in str(info.value)
    assert isinstance(info.value, ValueError) and info.value.name == f"{tmp_path / file}:{line}"


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match="no such folder"):
        read_colmap_text(tmp_path / "nope")
    (tmp_path / "cameras.txt").write_text(_GOOD_CAMS)
    with pytest.raises(FileNotFoundError, match="images.txt") as info:
        read_colmap_text(tmp_path)
    assert isinstance(info.value, GradcvError) and info.value.filename == str(tmp_path / "images.txt")
    (tmp_path / "images.txt").write_text(_GOOD_IMGS)
    with pytest.raises(MissingFileError, match="a.png"):
        read_colmap_text(tmp_path, read_image=_pillow_reader)
    with pytest.raises(MissingFileError, match="views.json"):
        read_json(tmp_path / "views.json")
    with pytest.raises(MissingFileError):
        read_depth(tmp_path / "d.png")


def test_image_size_mismatch(tmp_path: Path) -> None:
    k, e, names, sizes = _scene(tmp_path)
    wrong = [sizes[0], (48, 64), sizes[2]]  # view 1 is 80 x 60
    write_colmap_text(tmp_path, k, e, names, wrong)
    with pytest.raises(ShapeError, match="view_01.png") as info:
        read_colmap_text(tmp_path, read_image=_pillow_reader)
    assert "80 x 60" in str(info.value) and "64 x 48" in str(info.value)
    write_json(tmp_path / "v.json", k, e, names, sizes=wrong)
    with pytest.raises(ShapeError, match="view_01.png"):
        read_json(tmp_path / "v.json", read_image=_pillow_reader)
    # A depth map of the wrong size, likewise.
    write_depth(tmp_path / "d.npy", np.ones((5, 5)))
    write_json(tmp_path / "v.json", k, e, names, sizes=sizes, depths=["d.npy", None, None])
    with pytest.raises(ShapeError, match="d.npy"):
        read_json(tmp_path / "v.json")


def test_malformed_json(tmp_path: Path) -> None:
    p = tmp_path / "v.json"
    p.write_text('{"views": [\n {"image": "a.png",\n  "K": [[1, 0, 0], [0, 1, 0], [0, 0, 1]],,\n}]}\n')
    with pytest.raises(FileFormatError, match=r"line 3: invalid JSON"):
        read_json(p)
    p.write_text('{"views": [{"image": "a.png", "world_to_camera": [[1,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,0,1]]}]}')
    with pytest.raises(FileFormatError, match=r"views\[0\]: missing 'K'"):
        read_json(p)
    p.write_text('{"views": [{"image": "a.png", "K": [[1,0,0],[0,1,0],[0,0,1]], "world_to_camera": [[2,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,0,1]]}]}')
    with pytest.raises(FileFormatError, match="rotation"):
        read_json(p)
    p.write_text('{"cameras": []}')
    with pytest.raises(FileFormatError, match="views"):
        read_json(p)


def test_colmap_depth_folder(tmp_path: Path) -> None:
    k, e, names, sizes = _scene(tmp_path, n=2)
    write_colmap_text(tmp_path / "sparse", k, e, names, sizes)
    d = np.full(sizes[1], 2.5)
    write_depth(tmp_path / "gt" / "images" / "view_01.png", d)
    cal = read_colmap_text(tmp_path / "sparse", image_folder=tmp_path, depth_folder=tmp_path / "gt")
    assert cal.depths[0] is None
    np.testing.assert_array_equal(cal.depths[1].numpy(), d)


# ----------------------------------------------------------------------------- 16-bit PNG


def _png_with_filters(img: np.ndarray) -> bytes:
    """A reference encoder that uses filter (row % 5) on each row, to exercise every filter."""
    h, w = img.shape
    raw = img.astype(">u2").view(np.uint8).reshape(h, 2 * w).astype(np.int64)
    out = bytearray()
    prev = np.zeros(2 * w, dtype=np.int64)
    for y in range(h):
        cur = raw[y]
        left = np.concatenate([[0, 0], cur[:-2]])
        upleft = np.concatenate([[0, 0], prev[:-2]])
        f = y % 5
        if f == 0:
            pred = np.zeros_like(cur)
        elif f == 1:
            pred = left
        elif f == 2:
            pred = prev
        elif f == 3:
            pred = (left + prev) // 2
        else:
            p = left + prev - upleft
            pa, pb, pc = np.abs(p - left), np.abs(p - prev), np.abs(p - upleft)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, upleft))
        out.append(f)
        out += ((cur - pred) & 0xFF).astype(np.uint8).tobytes()
        prev = cur

    def chunk(t: bytes, b: bytes) -> bytes:
        return struct.pack(">I", len(b)) + t + b + struct.pack(">I", zlib.crc32(t + b) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 0, 0, 0, 0))
            + chunk(b"tEXt", b"Comment\x00test") + chunk(b"IDAT", zlib.compress(bytes(out))) + chunk(b"IEND", b""))


def test_png16_against_opencv_and_pillow(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:48, :64]
    smooth = (20000 + 97 * xx - 53 * yy + rng.integers(0, 40, (48, 64))).astype(np.uint16)
    noise = rng.integers(0, 65536, (37, 29)).astype(np.uint16)
    for i, img in enumerate([smooth, noise]):
        ours = tmp_path / f"ours{i}.png"
        write_png16(ours, img)
        back = cv2.imread(str(ours), cv2.IMREAD_UNCHANGED)
        assert back.dtype == np.uint16
        np.testing.assert_array_equal(back, img)
        np.testing.assert_array_equal(np.asarray(Image.open(ours)), img)
        theirs = tmp_path / f"cv{i}.png"
        assert cv2.imwrite(str(theirs), img)
        np.testing.assert_array_equal(read_png16(theirs), img)
        # every row filter, checked by OpenCV too
        filt = tmp_path / f"filters{i}.png"
        filt.write_bytes(_png_with_filters(img))
        np.testing.assert_array_equal(cv2.imread(str(filt), cv2.IMREAD_UNCHANGED), img)
        np.testing.assert_array_equal(read_png16(filt), img)
    pil = tmp_path / "pil.png"
    Image.fromarray(smooth).save(pil)
    np.testing.assert_array_equal(read_png16(pil), smooth)


def test_png16_rejects_other_files(tmp_path: Path) -> None:
    p = tmp_path / "rgb.png"
    cv2.imwrite(str(p), np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(FileFormatError, match="16-bit grayscale"):
        read_png16(p)
    q = tmp_path / "x.png"
    q.write_bytes(b"not a png at all")
    with pytest.raises(FileFormatError, match="signature"):
        read_png16(q)
    write_png16(q, np.ones((3, 3), np.uint16))
    data = bytearray(q.read_bytes())
    data[-20] ^= 0xFF  # inside IDAT: its CRC fails
    q.write_bytes(bytes(data))
    with pytest.raises(FileFormatError, match="CRC"):
        read_png16(q)
    with pytest.raises(GradcvError):
        write_png16(q, np.ones((3, 3), np.float32))
    txt = tmp_path / "d.txt"
    txt.write_text("1")
    with pytest.raises(FileFormatError, match=r"must be \.npy \(metres\) or a 16-bit \.png"):
        read_depth(txt)


def test_library_side_imports_no_image_library() -> None:
    import subprocess
    import sys

    code = ("import sys, gradcv.depth.io, gradcv.depth.png16, gradcv.depth.metrics; "
            "print(sorted(m for m in ('PIL', 'cv2', 'matplotlib', 'scipy', 'skimage') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"
