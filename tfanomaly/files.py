"""Files written by every layer: atomic text and PNG writes with the usual
file mode, and the labelled image grids the sample and inspection PNGs are
made of. Imports neither TensorFlow nor any other tfanomaly module."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file through a temporary file and a rename (mode 0666 minus the umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_TEMPORARY = re.compile(r"^\..+\.(tmp\.png|[a-z0-9_]{8})$")  # write_png's and atomic_write_text's (mkstemp) names


def clean_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that a killed writer (``atomic_write_text``,
    ``write_png``) left in ``folder``; returns them. The outputs themselves
    are never touched: each is either the old complete file or the new one."""
    gone = []
    for p in Path(folder).glob(".*"):
        if p.is_file() and _TEMPORARY.match(p.name):
            p.unlink(missing_ok=True)
            gone.append(p)
    return gone


def write_png(path: str | os.PathLike, rgb) -> None:
    """Write an RGB uint8 array [H, W, 3] as PNG, through a temporary file and a rename."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    os.replace(tmp, path)


def tile_grid(columns: dict, max_rows: int = 8) -> np.ndarray:
    """uint8 grid: one column per named array [B, H, W, C] in [0, 1], one row per sample."""
    import cv2
    import numpy as np

    cols = []
    for name, arr in columns.items():
        a = np.clip(np.asarray(arr, np.float32)[:max_rows], 0, 1)
        if a.shape[-1] not in (1, 3):
            a = a[..., :3]
        if a.shape[-1] == 1:
            a = np.repeat(a, 3, -1)
        col = np.concatenate(list(a), axis=0)
        head = np.zeros((14, col.shape[1], 3), np.uint8)
        cv2.putText(head, name[: max(1, col.shape[1] // 7)], (1, 11), cv2.FONT_HERSHEY_PLAIN, 0.8, (255, 255, 255), 1)
        cols.append(np.concatenate([head.astype(np.float32) / 255.0, col], 0))
        cols.append(np.full((cols[-1].shape[0], 2, 3), 0.5, np.float32))
    return (np.concatenate(cols[:-1], axis=1) * 255).round().astype(np.uint8)
