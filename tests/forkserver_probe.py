"""Imported by collection processes in tests/test_forkserver.py: says which process imported it
(CCAUDIT_PROBE_FILE), and can make a fork server die while it imports (CCAUDIT_PROBE_BREAK)."""

import os
import sys

_path = os.environ.get("CCAUDIT_PROBE_FILE")
if _path:
    with open(_path, "a", encoding="utf-8") as _out:
        _out.write(f"{os.getpid()}\n")
if os.environ.get("CCAUDIT_PROBE_BREAK") and sys.argv[0].endswith("forkserver.py"):
    os._exit(3)
