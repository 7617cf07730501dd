"""Library chatter (load reports, weight-loading bars, warnings of transformers/datasets/peft/optuna),
silenced for the length of a `with quiet():` block and restored after it: library code changes no
process-wide state of its caller."""
from __future__ import annotations

import contextlib
import logging
import warnings

_LOGGERS = ("transformers", "datasets", "peft", "optuna", "accelerate", "bitsandbytes")


def _silence() -> None:
    for name in _LOGGERS:  # first: importing transformers imports bitsandbytes, which logs on import
        logging.getLogger(name).setLevel(logging.ERROR)
    import datasets
    from transformers.utils import logging as tlog
    tlog.disable_progress_bar()
    datasets.disable_progress_bars()
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


@contextlib.contextmanager
def quiet():
    """Silence load reports and weight-loading bars (training progress bars stay) inside the block.

    Restored on exit, also on error: warning filters (`warnings.catch_warnings`), the level of the
    libraries' loggers and of the root logger, transformers' and datasets' progress-bar switches.
    """
    levels = {name: logging.getLogger(name).level for name in _LOGGERS + ("",)}
    for name in _LOGGERS:  # before the imports below: importing transformers imports bitsandbytes, which logs
        logging.getLogger(name).setLevel(logging.ERROR)
    import datasets
    from transformers.utils import logging as tlog
    bars = tlog.is_progress_bar_enabled()
    ds_bars = datasets.is_progress_bar_enabled()
    with warnings.catch_warnings():
        try:
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
