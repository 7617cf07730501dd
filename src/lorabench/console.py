"""What a lorabench command shows: lorabench's own lines on the terminal; whatever the libraries print, log or
warn kept off it (in the run folder's `run.log`, and on the terminal with `-v/--verbose`).

`say()` writes one of lorabench's lines. `capture()` (the CLI, around one command) routes everything else:
`sys.stdout` / `sys.stderr` are swapped for streams that file what third-party code writes (prints, progress
bars, the handlers of any logger, created before the command or during it), the root logger gets a handler, and
warnings other than lorabench's own are filed the same way. No list of library names is kept: whatever logger or
stream a library version uses, its text ends up here. `log_to(path)` adds a log file for the length of a block
(a run's `run.log`, a comparison's `compare.log`); in the library without `capture()` (the Python API) it holds
lorabench's lines and the records that reach the root logger. Everything `capture()` changes is restored on exit.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import io
import logging
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from lorabench.errors import LorabenchWarning

_LOCK = threading.RLock()


class _State:
    def __init__(self) -> None:
        self.active = False            # inside capture()
        self.verbose = False
        self.out: TextIO | None = None  # the command's own stdout / stderr (the terminal, or what the caller gave)
        self.err: TextIO | None = None
        self.sinks: list[_Sink] = []


_S = _State()


class _Sink:
    """An open log file. Third-party text is written a line at a time, a progress bar's carriage-return redraws
    reduced to the last one (the bar's final state)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.path, "a", encoding="utf-8")
        self.pending = {"stdout": "", "stderr": ""}

    def own(self, text: str) -> None:
        self.file.write(text)
        self.file.flush()

    def third_party(self, text: str, stream: str) -> None:
        buf = self.pending.get(stream, "") + text
        *lines, rest = buf.split("\n")
        self.pending[stream] = rest
        for line in lines:
            line = line.rsplit("\r", 1)[-1] if "\r" in line.rstrip("\r") else line.rstrip("\r")
            if line.strip():
                self.file.write(line + "\n")
        self.file.flush()

    def close(self) -> None:
        for stream in list(self.pending):
            if self.pending[stream].strip():
                self.third_party("\n", stream)
        self.file.close()


def _terminal(err: bool) -> TextIO:
    if _S.active:
        return _S.err if err else _S.out  # type: ignore[return-value]
    return sys.stderr if err else sys.stdout


def stdout() -> TextIO:
    """The stream for a command's own output data (predict's JSON lines on `--output -`): the real stdout also
    while third-party output is captured."""
    return _terminal(False)


def stderr() -> TextIO:
    """The stream lorabench's own progress bars draw on (the real stderr also while output is captured)."""
    return _terminal(True)


def verbose() -> bool:
    """Whether the command runs with -v/--verbose (third-party output shown on the terminal too)."""
    return _S.active and _S.verbose


def capturing() -> bool:
    """Whether a `capture()` block is active (the CLI runs every command in one)."""
    return _S.active


def say(message: str = "", *, err: bool = False) -> None:
    """One of lorabench's own lines: to stdout (stderr with `err`), drawn above any open progress bar, and into
    every open log file."""
    stream = _terminal(err)
    with _LOCK:
        _write_above_bars(stream, message)
        for sink in _S.sinks:
            sink.own(message + "\n")


def note(message: str) -> None:
    """A line for the log files only (e.g. the Trainer's logged numbers): not on the terminal, even with -v."""
    with _LOCK:
        for sink in _S.sinks:
            sink.own(message + "\n")


def _write_above_bars(stream: TextIO, message: str) -> None:
    """Write a line above lorabench's open progress bars: each is cleared first and drawn again after (tqdm.write
    would leave them: under `capture()` it cannot tell the terminal's stdout and stderr apart from the stand-ins)."""
    from tqdm import tqdm
    with tqdm.get_lock():
        bars = [b for b in list(getattr(tqdm, "_instances", ())) if not b.disable]
        for bar in bars:
            bar.clear(nolock=True)
        stream.write(message + "\n")
        with contextlib.suppress(Exception):
            stream.flush()
        for bar in bars:
            bar.refresh(nolock=True)


def _third_party(text: str, stream: str) -> None:
    """Text a library wrote: into the log files; on the terminal only with -v."""
    if not text:
        return
    with _LOCK:
        for sink in _S.sinks:
            sink.third_party(text, stream)
        if _S.verbose and _S.err is not None:
            with contextlib.suppress(Exception):
                _S.err.write(text)
                _S.err.flush()


class _LibraryStream(io.TextIOBase):
    """Stands in for sys.stdout / sys.stderr during `capture()`: what libraries write is filed by `_third_party`.
    Outside a capture (a handler still bound to it afterwards) it passes text on to the stream it replaced."""

    def __init__(self, name: str, original: TextIO):
        super().__init__()
        self.name, self.original = name, original

    def write(self, s: str) -> int:
        if _S.active:
            _third_party(s, self.name)
        else:
            self.original.write(s)
        return len(s)

    def flush(self) -> None:
        if not _S.active:
            with contextlib.suppress(Exception):
                self.original.flush()

    def isatty(self) -> bool:  # libraries then draw no live progress bars
        return False

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.original.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.original, "encoding", None) or "utf-8"


class _LibraryLogs(logging.Handler):
    """The root logger's handler during `capture()`: every record that propagates there is filed."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            _third_party(self.format(record) + "\n", "stderr")
        except Exception:  # pragma: no cover - logging must never fail a command
            self.handleError(record)


def _show_warning(message: Any, category: type, filename: str, lineno: int, file: Any = None,
                  line: str | None = None) -> None:
    if issubclass(category, LorabenchWarning):
        say(f"lorabench: warning: {message}", err=True)
    else:
        _third_party(warnings.formatwarning(message, category, filename, lineno, line), "stderr")


def _redirect_stream_handlers(replacements: dict[int, TextIO]) -> list[tuple[logging.StreamHandler, Any]]:
    """Point every existing StreamHandler (not a FileHandler) that writes to one of the streams in `replacements`
    (by id) at its stand-in; returns what to restore."""
    changed = []
    loggers = [logging.getLogger()] + [lg for lg in list(logging.Logger.manager.loggerDict.values())
                                       if isinstance(lg, logging.Logger)]
    for lg in loggers:
        for h in list(lg.handlers):
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler) \
                    and not isinstance(getattr(type(h), "stream", None), property) \
                    and id(getattr(h, "stream", None)) in replacements:  # (a property, e.g. logging.lastResort's,
                changed.append((h, h.stream))                         # reads sys.stderr when it writes)
                h.setStream(replacements[id(h.stream)])
    return changed


@contextlib.contextmanager
def capture(verbose: bool = False) -> Iterator[None]:
    """Run one command with third-party output off the terminal (see the module's docstring). Restores on exit:
    sys.stdout / sys.stderr, the stream of every handler it redirected, the root logger's handlers, the warning
    filters and `warnings.showwarning`. Nested calls run inside the outer one."""
    if _S.active:
        yield
        return
    out, err = sys.stdout, sys.stderr
    lib_out, lib_err = _LibraryStream("stdout", out), _LibraryStream("stderr", err)
    replacements = {id(out): lib_out, id(err): lib_err}
    for original, stand_in in ((sys.__stdout__, lib_out), (sys.__stderr__, lib_err)):
        if original is not None:
            replacements.setdefault(id(original), stand_in)
    handler = _LibraryLogs()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    with warnings.catch_warnings():
        _S.active, _S.verbose, _S.out, _S.err = True, verbose, out, err
        redirected = _redirect_stream_handlers(replacements)
        sys.stdout, sys.stderr = lib_out, lib_err
        root.addHandler(handler)
        warnings.showwarning = _show_warning
        try:
            yield
        finally:
            root.removeHandler(handler)
            for h, stream in redirected:
                with contextlib.suppress(Exception):
                    h.setStream(stream)
            sys.stdout, sys.stderr = out, err
            _S.active, _S.verbose, _S.out, _S.err = False, False, None, None


@contextlib.contextmanager
def log_to(path: str | Path, title: str) -> Iterator[Path]:
    """Keep a log file at `path` (appended to, so a resumed run continues its own) for the length of the block:
    a header line with `title` and the time, lorabench's lines, and the third-party output captured meanwhile.
    Without `capture()` (the Python API) a handler on the root logger files the records that reach it, and is
    removed on exit. Yields the path."""
    sink = _Sink(Path(path))
    sink.own(f"--- {title}, {dt.datetime.now().isoformat(timespec='seconds')}\n")
    root = logging.getLogger()
    handler = None
    if not _S.active:
        handler = _SinkLogs(sink)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    with _LOCK:
        _S.sinks.append(sink)
    try:
        yield sink.path
    finally:
        with _LOCK:
            if sink in _S.sinks:
                _S.sinks.remove(sink)
            if handler is not None:
                root.removeHandler(handler)
            with contextlib.suppress(Exception):
                sink.close()


class _SinkLogs(logging.Handler):
    def __init__(self, sink: _Sink):
        super().__init__()
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            with _LOCK:
                self.sink.third_party(self.format(record) + "\n", "stderr")
        except Exception:  # pragma: no cover
            self.handleError(record)


def progress_bar(total: int, *, initial: int = 0, desc: str | None = None, unit: str = "step"):
    """A tqdm bar of lorabench's own on the terminal's stderr, drawn only when that is a terminal (tqdm's
    `disable=None`); closes when the caller closes it. Lines from `say()` appear above it."""
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=stderr(), disable=None, leave=False,
                dynamic_ncols=True)
