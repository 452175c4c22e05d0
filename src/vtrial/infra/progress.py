"""Progress of a simulate job: patients done / total and rate, in the log and the terminal.

A :class:`Progress` is told how many patients each finished chunk held. It logs a line
(``simulate shard 0: 1200/2400 patients (50.0 %), 812 patients/s, about 1.5 s left``)
at most every ``every`` seconds and always for the last chunk, so a long shard shows
in its job log what it is doing while a short one logs once; and, when stderr is a
terminal, it draws a tqdm bar there (log lines are printed above the bar, not
through it).

>>> import logging
>>> clock = iter([0.0, 2.0, 4.0, 4.0]).__next__
>>> p = Progress(100, label="shard 0", logger=logging.getLogger("doc"), every=10.0,
...              clock=clock, bar=False)
>>> p.update(40)      # 40 patients at t = 2 s: not logged (every 10 s)
>>> p.update(60)      # the last chunk at t = 4 s: always logged
>>> p.done, p.lines[-1]
(100, 'shard 0: 100/100 patients (100.0 %), 25 patients/s, about 0 s left')
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["Heartbeat", "Progress"]


class Progress:
    """Count finished patients; log and draw the progress of one simulate job.

    Parameters
    ----------
    total : int
        Patients (rows) the job simulates.
    label : str
        What is simulated, e.g. ``"shard 3"``; starts every log line.
    logger : logging.Logger
        Where the lines go (INFO level).
    every : float
        Minimum seconds between two log lines (the last one is always logged).
    clock : callable
        Seconds as a float (``time.monotonic``; a test passes its own).
    bar : bool or None
        Draw a tqdm bar on stderr: ``None`` (default) when stderr is a terminal.
    unit : str
        What is counted, singular (``patient``; the twins stage counts ``subject``).

    Attributes
    ----------
    done : int
        Patients finished so far.
    lines : list of str
        The lines logged so far (the last one is the final count).
    """

    def __init__(
        self,
        total: int,
        *,
        label: str,
        logger: logging.Logger,
        every: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        bar: bool | None = None,
        unit: str = "patient",
    ) -> None:
        if total < 0:
            raise ValueError(f"Progress: total must be >= 0, got {total}")
        self.total = int(total)
        self.label = label
        self.unit = unit
        self.done = 0
        self.lines: list[str] = []
        self._log = logger
        self._every = float(every)
        self._clock = clock
        self._t0 = clock()
        self._last_line = self._t0
        self._bar: Any = None
        if bar is None:
            bar = sys.stderr.isatty()
        if bar:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=label, unit=unit, file=sys.stderr, leave=True)

    def update(self, n: int) -> None:
        """Record ``n`` more finished patients (a chunk)."""
        self.done += int(n)
        now = self._clock()
        if self._bar is not None:
            self._bar.update(int(n))
        if self.done >= self.total or now - self._last_line >= self._every:
            self._last_line = now
            line = self._line(now - self._t0)
            self.lines.append(line)
            self._log.info("%s", line)

    def _line(self, elapsed: float) -> str:
        rate = self.done / elapsed if elapsed > 0 else float("nan")
        if self.done >= self.total:
            left = 0.0
        else:
            left = (self.total - self.done) / rate if rate > 0 else float("nan")
        pct = 100.0 * self.done / self.total if self.total else 100.0
        return (
            f"{self.label}: {self.done}/{self.total} {self.unit}s ({pct:.1f} %), "
            f"{rate:.0f} {self.unit}s/s, about {left:.0f} s left"
        )

    def close(self) -> None:
        """Close the terminal bar (if any)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    @contextlib.contextmanager
    def shown(self) -> Iterator[Progress]:
        """Context in which log lines printed to stderr go above the bar; closes it."""
        try:
            if self._bar is None:
                yield self
            else:
                from tqdm.contrib.logging import logging_redirect_tqdm

                # the package logger holds the stderr handler (vtrial.run.stages.setup_logging)
                package = logging.getLogger(self._log.name.split(".")[0])
                with logging_redirect_tqdm(loggers=[package]):
                    yield self
        finally:
            self.close()


class Heartbeat:
    """Say that a long step runs, with its elapsed time, until it ends.

    Used around a kernel's first call, which compiles it (tens of seconds, silent in
    numba): a line when the step starts, one every ``every`` seconds while it runs,
    and one when it ends. Lines go to ``logger`` at INFO level and, when stderr is a
    terminal or the logger has nowhere to write (a notebook without logging set
    up), to stderr as well: there only once the step has run ``announce_after``
    seconds, so a quick step (a kernel loaded from the cache) prints nothing.

    Parameters
    ----------
    what : str
        What runs, e.g. ``"kernel of model pk_2cmt+friberg: compiling"``.
    logger : logging.Logger
    every : float
        Seconds between two lines while the step runs.
    stream : file-like, optional
        Where the terminal lines go (default: stderr, when it is a terminal or the
        logger has no handler; ``None`` there means log only).
    announce_after : float
        Seconds after which the terminal hears of the step (the log always does).

    Attributes
    ----------
    lines : list of str
        The lines said so far.

    Examples
    --------
    >>> import logging
    >>> with Heartbeat("step", logger=logging.getLogger("doc"), every=60.0) as hb:
    ...     pass
    >>> hb.lines[0], hb.lines[-1].startswith("step: done in")
    ('step: started', True)
    """

    def __init__(
        self,
        what: str,
        *,
        logger: logging.Logger,
        every: float = 10.0,
        stream: Any = "auto",
        announce_after: float = 2.0,
    ) -> None:
        import threading

        self.what = what
        self.lines: list[str] = []
        self._log = logger
        self._every = float(every)
        if stream == "auto":
            quiet_logger = not logger.hasHandlers()
            stream = sys.stderr if (sys.stderr.isatty() or quiet_logger) else None
        self._stream = stream
        self._announce_after = float(announce_after)
        self._announced = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="vtrial-heartbeat")
        self._t0 = 0.0

    def _say(self, line: str, *, log: bool = True) -> None:
        if log:
            self.lines.append(line)
            self._log.info("%s", line)
        if self._stream is not None and self._announced:
            print(f"vtrial: {line}", file=self._stream, flush=True)

    def _beat(self) -> None:
        if self._stop.wait(self._announce_after):
            return  # done before the terminal needed to hear of it
        self._announced = True
        self._say(self.lines[0], log=False)  # the start line, late, on the terminal
        waited = self._announce_after
        while not self._stop.wait(max(0.0, self._every - waited)):
            waited = 0.0
            self._say(f"{self.what}: still running, {time.monotonic() - self._t0:.0f} s elapsed")

    def __enter__(self) -> Heartbeat:
        self._t0 = time.monotonic()
        self._say(f"{self.what}: started")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._say(f"{self.what}: done in {time.monotonic() - self._t0:.1f} s")
