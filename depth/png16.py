"""A minimal reader and writer of 16-bit grayscale PNG files (depth maps in millimetres).

Only what depth maps need, with the standard library's ``zlib`` and ``struct``: bit depth
16, colour type 0 (grayscale), no interlacing. The reader undoes all five PNG row
filters (None, Sub, Up, Average, Paeth), so it reads what libpng, OpenCV and Pillow write;
the writer uses filter 0 on every row. Ancillary chunks (text, gamma, ...) are skipped;
every chunk's CRC is checked.
"""

from __future__ import annotations

import os
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np

from gradcv.core_ops.errors import ArgumentTypeError, ArgumentValueError, DTypeError, GradcvError, ShapeError

__all__ = ["FileFormatError", "MissingFileError", "read_png16", "write_png16"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class FileFormatError(GradcvError, ValueError):
    """A file (calibration, depth map) is malformed or of an unsupported kind.

    ``name`` is the file's path (with ``:line`` where a line is at fault), ``expected``
    what the reader wanted, ``actual`` what it found; the message names the file.
    """

    kind = "file format"


class MissingFileError(GradcvError, FileNotFoundError):
    """A file that a calibration needs does not exist (also a ``FileNotFoundError``)."""

    kind = "file"

    def __init__(self, name: str, expected: object, actual: object, message: str | None = None) -> None:
        super().__init__(name, expected, actual, message)
        self.filename = str(actual)


def _missing(path: Path, what: str) -> MissingFileError:
    return MissingFileError(what, "an existing file", str(path), f"{what}: no such file: {str(path)!r}")


def read_png16(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a 16-bit grayscale PNG into a ``(H, W)`` ``uint16`` array.

    Args:
        path: the file.

    Returns:
        The pixel values as stored (PNG keeps them big-endian; the array is native).

    Raises:
        MissingFileError: no such file (a ``FileNotFoundError``).
        FileFormatError: not a PNG, a bad CRC, truncated data, or a PNG that is not
            16-bit grayscale without interlacing (the message says which).
    """
    p = Path(path)
    if not p.is_file():
        raise _missing(p, "png")
    data = p.read_bytes()

    def fail(expected: str, actual: object, why: str) -> FileFormatError:
        return FileFormatError(str(p), expected, actual, f"{str(p)!r}: {why}")

    if data[:8] != _SIGNATURE:
        raise fail("a PNG signature", data[:8], "not a PNG file (bad signature)")
    pos = 8
    header: tuple[int, ...] | None = None
    idat = []
    while True:
        if pos + 8 > len(data):
            raise fail("an IEND chunk", "end of file", "truncated PNG (no IEND chunk)")
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if len(body) != length or pos + 12 + length > len(data):
            raise fail("a complete chunk", "end of file", f"truncated PNG chunk {ctype!r}")
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        if zlib.crc32(ctype + body) & 0xFFFFFFFF != crc:
            raise fail("a valid CRC", ctype, f"bad CRC in PNG chunk {ctype!r}")
        pos += 12 + length
        if ctype == b"IHDR":
            if length != 13:
                raise fail("a 13-byte IHDR", length, "malformed IHDR chunk")
            header = struct.unpack(">IIBBBBB", body)
        elif ctype == b"IDAT":
            idat.append(body)
        elif ctype == b"IEND":
            break
        elif ctype[0] & 0x20 == 0:  # a critical chunk we do not know (PLTE...)
            raise fail("IHDR, IDAT, IEND", ctype, f"unsupported critical PNG chunk {ctype!r}")
    if header is None:
        raise fail("an IHDR chunk", None, "PNG without IHDR chunk")
    width, height, depth, colour, compression, filt, interlace = header
    if (depth, colour) != (16, 0):
        raise fail("bit depth 16, colour type 0", (depth, colour),
                   f"expected a 16-bit grayscale PNG (bit depth 16, colour type 0), got bit depth {depth}, colour type {colour}")
    if compression != 0 or filt != 0 or interlace != 0:
        raise fail("no interlacing", (compression, filt, interlace),
                   f"unsupported PNG (compression {compression}, filter method {filt}, interlace {interlace}); "
                   "only non-interlaced files are read")
    if width == 0 or height == 0:
        raise fail("a non-empty image", (height, width), "empty PNG image")
    try:
        raw = zlib.decompress(b"".join(idat))
    except zlib.error as ex:
        raise fail("zlib data", "corrupt data", f"corrupt PNG image data ({ex})") from None
    stride = 2 * width
    if len(raw) != height * (stride + 1):
        raise fail(f"{height * (stride + 1)} bytes of image data", len(raw), "PNG image data of the wrong size")
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(height, stride + 1)
    out = np.empty((height, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.uint8)
    for y in range(height):
        ftype = int(rows[y, 0])
        line = rows[y, 1:]
        if ftype == 0:
            cur = line.copy()
        elif ftype == 1:  # Sub: a running sum along each of the two byte lanes, modulo 256
            cur = (np.cumsum(line.reshape(width, 2), axis=0, dtype=np.int64) & 0xFF).astype(np.uint8).reshape(stride)
        elif ftype == 2:  # Up
            cur = line + prev
        elif ftype in (3, 4):
            cur = _unfilter_sequential(ftype, line, prev)
        else:
            raise fail("a row filter 0-4", ftype, f"bad PNG row filter {ftype} in row {y}")
        out[y] = cur
        prev = cur
    return out.view(">u2").astype(np.uint16)


def _unfilter_sequential(ftype: int, line: np.ndarray, prev: np.ndarray) -> np.ndarray:
    # Average and Paeth depend on the byte just decoded to the left: a plain loop (bpp = 2).
    cur = bytearray(line.tobytes())
    up = prev.tobytes()
    n = len(cur)
    if ftype == 3:
        for i in range(n):
            left = cur[i - 2] if i >= 2 else 0
            cur[i] = (cur[i] + ((left + up[i]) >> 1)) & 0xFF
    else:
        for i in range(n):
            if i >= 2:
                a, c = cur[i - 2], up[i - 2]
            else:
                a = c = 0
            b = up[i]
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            pred = a if (pa <= pb and pa <= pc) else (b if pb <= pc else c)
            cur[i] = (cur[i] + pred) & 0xFF
    return np.frombuffer(bytes(cur), dtype=np.uint8)


def _chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body) & 0xFFFFFFFF)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates the file readable by its owner only; give it the permissions a
        # plain open() would have.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _umask() -> int:
    # The umask can only be read by setting it; do it once, on first use.
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0o022)
        os.umask(_UMASK)
    return _UMASK


_UMASK: int | None = None


def write_png16(path: str | os.PathLike[str], image: np.ndarray) -> None:
    """Write a ``(H, W)`` ``uint16`` array as a 16-bit grayscale PNG, atomically.

    Args:
        path: the file (its folder is created).
        image: the values, ``uint16``.

    Raises:
        ArgumentTypeError: ``image`` is not a numpy array.
        DTypeError: ``image`` is not ``uint16``.
        ShapeError: ``image`` is not ``(H, W)`` with ``H, W >= 1``.
    """
    if not isinstance(image, np.ndarray):
        raise ArgumentTypeError("image", np.ndarray, type(image), f"image: expected a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint16:
        raise DTypeError("image", np.uint16, image.dtype, f"image: expected a uint16 array, got {image.dtype}")
    if image.ndim != 2 or image.size == 0:
        raise ShapeError("image", ("H", "W"), tuple(image.shape), f"image: expected a non-empty (H, W) array, got shape {image.shape}")
    height, width = image.shape
    if height >= 2**31 or width >= 2**31:
        raise ArgumentValueError("image", "fewer than 2**31 rows and columns", image.shape)
    rows = np.zeros((height, 2 * width + 1), dtype=np.uint8)  # filter byte 0 on every row
    rows[:, 1:] = image.astype(">u2").view(np.uint8).reshape(height, 2 * width)
    data = (
        _SIGNATURE
        + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0))
        + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
        + _chunk(b"IEND", b"")
    )
    atomic_write_bytes(Path(path), data)
