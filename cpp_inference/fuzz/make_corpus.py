"""Writes the seed corpus of fuzz_inputs (valid and hostile PNG headers, .npy
files and file names) into a folder: python make_corpus.py OUT_DIR"""

import io
import struct
import sys
import zlib
from pathlib import Path

import numpy as np


def png(width: int, height: int, depth: int = 8, color: int = 0) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    raw = b"".join(b"\0" + bytes(min(width, 64) * {0: 1, 2: 3, 6: 4}.get(color, 1)) for _ in range(min(height, 64)))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def npy_header(shape: str, version: int = 1, descr: str = "<f4", data: bytes = b"") -> bytes:
    header = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape)
    header += " " * (63 - (len(header) + 10) % 64) + "\n"
    size = struct.pack("<H", len(header)) if version == 1 else struct.pack("<I", len(header))
    return b"\x93NUMPY" + bytes([version, 0]) + size + header.encode() + data


def corpus() -> dict[str, bytes]:
    f4 = np.float32
    return {
        "gray_48x32.png": png(48, 32),
        "rgb_48x32.png": png(48, 32, color=2),
        "gray16_48x32.png": png(48, 32, depth=16),
        "palette.png": png(48, 32, color=3),
        "huge.png": png(0xFFFFFFFF, 0xFFFFFFFF),
        "empty.png": png(0, 0),
        "patch.npy": npy(np.zeros((32, 48, 1), f4)),
        "batch.npy": npy(np.zeros((2, 32, 48, 1), f4)),
        "rgb_batch.npy": npy(np.zeros((1, 32, 48, 3), f4)),
        "whole.npy": npy(np.zeros((70, 100, 1), f4)),
        "v2.npy": npy_header("(32, 48, 1)", version=2, data=bytes(32 * 48 * 4)),
        "f8.npy": npy(np.zeros((32, 48, 1), np.float64)),
        "overflow_whole.npy": npy_header("(4611686018427387904, 4, 1)"),
        "overflow_product.npy": npy_header("(2147483648, 2147483648, 1)"),
        "overflow_batch.npy": npy_header("(1152921504606846976, 32, 48, 1)"),
        "long_digits.npy": npy_header("(" + "9" * 40 + ", 48, 1)"),
        "zero_batch.npy": npy_header("(0, 32, 48, 1)"),
        "truncated.npy": npy(np.zeros((32, 48, 1), f4))[:-7],
        "header_past_end.npy": b"\x93NUMPY\x02\x00\xff\xff\xff\xff{'descr'",
        "name_R3.png": b"strip_0001_R3.png",
        "name_R_huge.png": b"strip_R99999999999999999999.png",
    }


if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name, data in corpus().items():
        (out / name).write_bytes(data)
    print(f"{len(corpus())} seeds -> {out}")
