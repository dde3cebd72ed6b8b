"""Files written by every layer: atomic text and PNG writes with the usual
file mode, and the labelled image grids the sample and inspection PNGs are
made of. Imports neither TensorFlow nor any other tfanomaly module."""

from __future__ import annotations

import contextlib
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


_STAGED = re.compile(r"^\.(?P<name>.+)\.(?P<kind>staging|old)-(?P<tag>\d+)$")


def _staged_leftovers(target: Path) -> list[tuple[str, str, Path]]:
    out = []
    for p in target.parent.glob(f".{target.name}.*-*"):
        m = _STAGED.match(p.name)
        if m and m["name"] == target.name and p.is_dir():
            out.append((m["kind"], m["tag"], p))
    return out


def _alive(tag: str) -> bool:
    """Whether the process that staged under ``tag`` (its pid) still runs: its
    folders are its own, not leftovers. This process's pid counts as gone (a
    reused pid of an earlier, killed process)."""
    pid = int(tag)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process (or a pid no process can have)
        return False
    except PermissionError:  # another user's process
        return True
    return True


def recover_staged(target: str | os.PathLike) -> None:
    """Finish or undo what a killed :func:`staged_dir` left beside ``target``.

    The swap renames ``target`` to ``.NAME.old-TAG`` only after the new folder
    ``.NAME.staging-TAG`` is complete, then renames that to ``target``. So a
    missing ``target`` with an ``old`` beside it means the staging folder of the
    same tag is complete: it is renamed in (or, if it is gone, the old folder
    is put back). Every other leftover (a half-written staging folder, an old
    folder already replaced) is deleted. The folders of a process that still
    runs (an evaluation of the same folder in parallel) are left to it."""
    import shutil

    target = Path(target)
    left = [(kind, tag, p) for kind, tag, p in _staged_leftovers(target) if not _alive(tag)]
    if not target.exists():
        for kind, tag, p in left:
            if kind == "old":
                stage = target.parent / f".{target.name}.staging-{tag}"
                os.rename(stage if stage.is_dir() else p, target)
                break
    for _, _, p in left:
        shutil.rmtree(p, ignore_errors=True)  # ignores the one just renamed in (no longer there)


@contextlib.contextmanager
def staged_dir(target: str | os.PathLike):
    """Yield an empty folder beside ``target``; when the block ends without an
    error, it replaces ``target`` as one unit (two renames, then the old copy is
    deleted). Readers, and a process killed at any moment, see the old complete
    folder or the new one (:func:`recover_staged`, run first, settles a kill
    between the renames). On an error the old folder stays as it was."""
    import shutil

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_staged(target)
    tag = str(os.getpid())
    stage = target.parent / f".{target.name}.staging-{tag}"
    old = target.parent / f".{target.name}.old-{tag}"
    stage.mkdir()
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    if target.exists():
        os.rename(target, old)
    os.rename(stage, target)
    shutil.rmtree(old, ignore_errors=True)


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
