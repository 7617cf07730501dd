"""Library chatter (load reports, progress bars, warnings of transformers/datasets/peft).
"""
from __future__ import annotations


def quiet_libraries() -> None:
    """Silence load reports and weight-loading bars; keep training progress bars."""
    import logging
    import warnings

    import transformers
    transformers.logging.set_verbosity_error()
    try:
        from transformers.utils import logging as tlog
        tlog.disable_progress_bar()
    except Exception:
        pass
    import datasets
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    logging.getLogger("peft").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
