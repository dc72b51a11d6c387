"""Loaded only for the date-shift runs (PYTHONPATH=tools/faketime, see tools/faketime/README.md).

libfaketime 0.9.10 with FAKETIME_DONT_FAKE_MONOTONIC=1 breaks the absolute-deadline
clock_nanosleep that Python 3.11's time.sleep uses (EINVAL; wolfcw/libfaketime#426), which
would fail every SDK retry and subprocess wait for a reason unrelated to dates. Sleep with a
relative select() timeout on the real monotonic clock instead.
"""

import select as _select
import time as _time


def _sleep(secs: float) -> None:
    if secs < 0:
        raise ValueError("sleep length must be non-negative")
    end = _time.monotonic() + secs
    while True:
        left = end - _time.monotonic()
        if left <= 0:
            return
        _select.select([], [], [], left)


_time.sleep = _sleep
