"""Imported by collection processes in tests/test_forkserver.py: says which process imported it."""

import os

_path = os.environ.get("CCAUDIT_PROBE_FILE")
if _path:
    with open(_path, "a", encoding="utf-8") as _out:
        _out.write(f"{os.getpid()}\n")
