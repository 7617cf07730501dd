"""Run records (`run.json`) and atomic file writes: nothing is ever left half-written.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from lorabench.errors import LorabenchError

RUN_FILE = "run.json"
LOCK_FILE = ".lock"


def write_atomic(path: str | Path, text: str | bytes) -> Path:
    """Write to a temp file in the same folder, then rename over `path`. A symlink is followed (its target is
    replaced, the link kept); a target that exists and is not a regular file (/dev/null, /dev/stdout, a FIFO) is
    written in place: renaming over it would replace the device with a plain file."""
    import stat
    path = Path(path)
    if path.is_symlink():
        path = path.resolve()
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        with open(path, "wb") as f:
            f.write(text.encode("utf-8") if isinstance(text, str) else text)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a run folder is read by others (shared runs/)
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8") if isinstance(text, str) else text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it; set straight back
    os.umask(mask)
    return mask


def _default(o: Any) -> Any:
    if hasattr(o, "tolist"):  # numpy arrays and scalars, torch tensors
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_json(path: str | Path, obj: Any) -> Path:
    return write_atomic(path, json.dumps(obj, indent=2, default=_default, ensure_ascii=False) + "\n")


def read_run(run_dir: str | Path) -> dict | None:
    p = Path(run_dir) / RUN_FILE
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def not_a_run(run_dir: str | Path) -> str:
    """The one-line reason `run_dir` is not a run folder, pointing to what to give instead: a missing folder, a
    comparison folder (its run folders, or its ensemble/ when it has one), or a folder without a readable run.json."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        return f"{run_dir} does not exist (not a lorabench run folder)"
    if (run_dir / "results.json").is_file() or (run_dir / "compare.yaml").is_file():
        hint = f" or its ensemble, {run_dir / 'ensemble'}" if (run_dir / "ensemble" / "ensemble.json").is_file() else ""
        return f"{run_dir} is a comparison folder, not a lorabench run folder: give one of its run folders{hint}"
    return f"{run_dir} is not a lorabench run folder (no readable run.json)"


def find_runs(root: str | Path) -> list[tuple[Path, dict]]:
    """Every run folder below `root` (sorted by path), with its record."""
    out = []
    for p in sorted(Path(root).rglob(RUN_FILE)):
        if any(part.startswith(".") for part in p.relative_to(root).parts[:-1]):
            continue  # temp folders of runs in progress
        rec = read_run(p.parent)
        if rec is not None:
            out.append((p.parent, rec))
    return out


@contextlib.contextmanager
def folder_lock(root: Path, what: str = "compare"):
    """An exclusive lock on `root` (flock on `root/.lock`, created with `root`) for the `with` block; the OS drops it when the
    process ends, also on kill -9. Raises `LorabenchError` at once if another process holds it."""
    import fcntl
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise LorabenchError(f"{root} is in use by another lorabench {what} (pid {holder}); wait for it to "
                                 "finish or choose another --output-dir") from e
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)
