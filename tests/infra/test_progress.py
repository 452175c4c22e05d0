"""Progress of a simulate job (vtrial.infra.progress): counts, rate, throttled log lines, bar."""

from __future__ import annotations

import logging
import re

import pytest

from vtrial.infra.progress import Progress


def clock_at(times: list[float]):  # type: ignore[no-untyped-def]
    it = iter(times)
    return lambda: next(it)


def test_lines_throttled_and_last_always_logged(caplog: pytest.LogCaptureFixture) -> None:
    """Chunks at t = 1, 3, 12, 13, 30 s of 10 patients each, every = 10 s: lines at
    t = 12 (10 s after the start) and for the last chunk, with the exact counts/rates."""
    logger = logging.getLogger("vtrial.test_progress")
    p = Progress(
        50,
        label="shard 2",
        logger=logger,
        every=10.0,
        clock=clock_at([0, 1, 3, 12, 13, 30]),
        bar=False,
    )
    with caplog.at_level(logging.INFO, logger="vtrial.test_progress"):
        for _ in range(5):
            p.update(10)
    assert p.done == 50
    assert p.lines == [
        "shard 2: 30/50 patients (60.0 %), 2 patients/s, about 8 s left",
        "shard 2: 50/50 patients (100.0 %), 2 patients/s, about 0 s left",
    ]
    assert [r.getMessage() for r in caplog.records] == p.lines


def test_empty_and_invalid_totals() -> None:
    logger = logging.getLogger("vtrial.test_progress")
    p = Progress(0, label="s", logger=logger, clock=clock_at([0, 1]), bar=False)
    p.update(0)
    assert p.lines == ["s: 0/0 patients (100.0 %), 0 patients/s, about 0 s left"]
    with pytest.raises(ValueError, match="total must be >= 0, got -1"):
        Progress(-1, label="s", logger=logger, bar=False)


def test_bar_drawn_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    """With ``bar=True`` a tqdm bar on stderr ends at total/total; log lines printed
    through the package's stderr handler inside ``shown()`` do not garble it."""
    logger = logging.getLogger("vtrial.test_progress_bar")
    p = Progress(20, label="shard 0", logger=logger, bar=True)
    with p.shown():
        p.update(5)
        p.update(15)
    err = capsys.readouterr().err
    assert re.search(r"shard 0: 100%.*20/20", err), err
    assert p._bar is None  # closed


def test_heartbeat_says_start_elapsed_time_and_end() -> None:
    import io
    import time

    from vtrial.infra.progress import Heartbeat

    stream = io.StringIO()
    logger = logging.getLogger("vtrial.test_heartbeat")
    with Heartbeat("compiling", logger=logger, every=0.05, stream=stream, announce_after=0.0) as hb:
        time.sleep(0.3)
    assert hb.lines[0] == "compiling: started"
    beats = [line for line in hb.lines if "still running" in line]
    assert len(beats) >= 2, hb.lines  # every 0.05 s for 0.3 s
    assert all(line.endswith("s elapsed") for line in beats)
    assert hb.lines[-1].startswith("compiling: done in ")
    printed = stream.getvalue().splitlines()
    assert printed == [f"vtrial: {line}" for line in hb.lines]


def test_heartbeat_without_stream_only_logs(caplog: pytest.LogCaptureFixture) -> None:
    from vtrial.infra.progress import Heartbeat

    logger = logging.getLogger("vtrial.test_heartbeat_log")
    with (
        caplog.at_level(logging.INFO, logger="vtrial.test_heartbeat_log"),
        Heartbeat("step", logger=logger, every=60.0, stream=None) as hb,
    ):
        pass
    assert [r.getMessage() for r in caplog.records] == hb.lines
    assert len(hb.lines) == 2  # started, done: no beat within 60 s


def test_heartbeat_quick_step_is_silent_on_the_terminal() -> None:
    """A step shorter than announce_after (a kernel loaded from the cache) prints
    nothing; the log still has its start and end."""
    import io

    from vtrial.infra.progress import Heartbeat

    stream = io.StringIO()
    logger = logging.getLogger("vtrial.test_heartbeat_quiet")
    with Heartbeat("loading", logger=logger, every=0.05, stream=stream, announce_after=5.0) as hb:
        pass
    assert stream.getvalue() == ""
    assert hb.lines[0] == "loading: started"
    assert hb.lines[-1].startswith("loading: done in ")


def test_heartbeat_long_step_announced_late_then_beats() -> None:
    import io
    import time

    from vtrial.infra.progress import Heartbeat

    stream = io.StringIO()
    logger = logging.getLogger("vtrial.test_heartbeat_late")
    with Heartbeat("compiling", logger=logger, every=0.1, stream=stream, announce_after=0.1):
        time.sleep(0.45)
    printed = stream.getvalue().splitlines()
    assert printed[0] == "vtrial: compiling: started"
    assert any("still running" in line for line in printed[1:-1])
    assert printed[-1].startswith("vtrial: compiling: done in ")
