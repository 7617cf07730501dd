"""Library chatter (load reports, weight-loading bars, warnings of transformers/datasets/peft/optuna) kept off
the caller's screen for the length of a `with quiet():` block and restored after it: library code changes no
process-wide state of its caller.

Under the CLI (`lorabench.console.capture`) third-party output is already filed into the log and shown only with
-v, so `quiet()` then only switches transformers' and datasets' progress bars off (they would fill the log with
redraws) and leaves log levels and warning filters alone: what the libraries say is kept, not dropped.
"""
from __future__ import annotations

import contextlib
import logging
import warnings

from lorabench import console

_LOGGERS = ("transformers", "datasets", "peft", "optuna", "accelerate", "bitsandbytes")


def _silence() -> None:
    for name in _LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    import datasets
    from transformers.utils import logging as tlog
    tlog.disable_progress_bar()
    datasets.disable_progress_bars()
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


@contextlib.contextmanager
def quiet():
    """Silence load reports and weight-loading bars (lorabench's own progress stays) inside the block.

    Restored on exit, also on error: warning filters (`warnings.catch_warnings`), the level of the
    libraries' loggers and of the root logger, transformers' and datasets' progress-bar switches.
    """
    capturing = console.capturing()
    levels = {name: logging.getLogger(name).level for name in _LOGGERS + ("",)}
    if not capturing:
        for name in _LOGGERS:  # before the imports below, which may log
            logging.getLogger(name).setLevel(logging.ERROR)
    import datasets
    from transformers.utils import logging as tlog
    bars = tlog.is_progress_bar_enabled()
    ds_bars = datasets.is_progress_bar_enabled()
    with warnings.catch_warnings():
        try:
            if capturing:
                tlog.disable_progress_bar()
                datasets.disable_progress_bars()
            else:
                _silence()
            yield
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)
            (tlog.enable_progress_bar if bars else tlog.disable_progress_bar)()
            (datasets.enable_progress_bars if ds_bars else datasets.disable_progress_bars)()


def quiet_libraries() -> None:
    """The same silence for the rest of the process (not restored): for scripts and tests that want it."""
    _silence()
