"""Checkpoints that a killed run resumes from: what makes one complete, and finding the last one.
"""
from __future__ import annotations

import shutil
from pathlib import Path

RESUME_FILE = "lorabench_resume.json"  # written last into each complete checkpoint


def last_complete_checkpoint(checkpoints: Path) -> Path | None:
    """The newest `checkpoint-<step>` folder under `checkpoints` that holds RESUME_FILE; None if none.
    Incomplete ones (a kill during their write) are removed: they are never resumed from."""
    if not checkpoints.is_dir():
        return None
    found = sorted((p for p in checkpoints.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                   key=lambda p: int(p.name.split("-")[-1]), reverse=True)
    for p in found:
        if (p / RESUME_FILE).is_file():
            return p
        shutil.rmtree(p, ignore_errors=True)
    return None
