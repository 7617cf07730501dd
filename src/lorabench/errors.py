"""User-facing errors: the CLI prints them as one line and exits 2."""


class LorabenchError(Exception):
    """A user mistake or an unmet precondition, with a message that names the problem."""


class ConfigError(LorabenchError):
    """An invalid config file, key or value."""


class DataError(LorabenchError):
    """A missing file or column, empty data, unusable labels."""


class ModelError(LorabenchError):
    """An unknown model name, an unreachable hub id, an unloadable checkpoint."""


class LorabenchWarning(Warning):
    """A problem that does not stop a run but may mislead its numbers (duplicates across splits, a class
    absent from val, ...). Not a UserWarning, so filters that silence libraries leave it visible."""


class DataWarning(LorabenchWarning):
    """A data check's finding (`data.data_checks`): also printed in the data summary and the report."""
