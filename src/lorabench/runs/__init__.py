"""runs: run-folder layout and names (layout), atomic files, records and locks (files), what a run cost
(resources)."""
from lorabench.runs.files import LOCK_FILE, RUN_FILE, find_runs, folder_lock, read_run, write_atomic, write_json
from lorabench.runs.layout import default_run_dir, partial_dir, run_dir_for, safe_name
from lorabench.runs.resources import PeakMemory, machine, versions

__all__ = ["LOCK_FILE", "PeakMemory", "RUN_FILE", "default_run_dir", "find_runs", "folder_lock", "machine",
           "partial_dir", "read_run", "run_dir_for", "safe_name", "versions", "write_atomic", "write_json"]
