"""Fault injection for tests/workflow/test_faults.py.

A module of its own (not a test file) because Dask worker processes import it to run
:func:`chunk_blocking_once` in place of :func:`vtrial.run.stages._simulate_chunk`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pandas as pd

from vtrial.run.chunk import simulate_chunk
from vtrial.study.config import Study

#: environment variable naming the folder shared by the test and the workers
FAULT_DIR = "VTRIAL_TEST_FAULT_DIR"
#: longest a blocked task waits to be killed before it goes on (the test then fails)
BLOCK_SECONDS = 600.0


def chunk_blocking_once(study: Study, rows: pd.DataFrame) -> tuple[Any, ...]:
    """Simulate a chunk like the pipeline's task, blocking the first attempt at one chunk.

    Every call appends ``<pid> <first patient_id>`` to ``calls.log``. The first call
    whose chunk starts at the patient id in the file ``target`` writes its process id
    to ``blocked.pid`` (created atomically, exactly once) and then waits, so that the
    test can SIGKILL the worker process while it is simulating; any later attempt at
    that chunk runs normally.
    """
    folder = Path(os.environ[FAULT_DIR])
    first = int(rows["patient_id"].iloc[0])
    with open(folder / "calls.log", "a") as fh:
        fh.write(f"{os.getpid()} {first}\n")
    if first == int((folder / "target").read_text()):
        tmp = folder / f"blocked.pid.{os.getpid()}"
        tmp.write_text(str(os.getpid()))
        try:
            os.link(tmp, folder / "blocked.pid")  # fails if an earlier attempt blocked
        except FileExistsError:
            pass
        else:
            deadline = time.monotonic() + BLOCK_SECONDS
            while time.monotonic() < deadline:  # SIGKILLed in here
                time.sleep(0.05)
        finally:
            tmp.unlink()
    return simulate_chunk(study, rows, threads=1)
