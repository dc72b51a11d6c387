"""The garbage collector during a scan: how a scan keeps it from rescanning the SDKs.

A scan process holds the cloud SDKs' import-time objects (botocore's service models, the
Compute Engine proto descriptors, azure-mgmt's model classes: hundreds of thousands of them),
and the SDKs' parsers allocate a container for every element of every response. With the
collector's default settings (a collection every 700 allocations, a full one whenever enough
survive) a 10k-VM scan spent about a sixth of its CPU walking objects that were never garbage
(benchmarks/RESULTS.md, issue 19). So for the length of a scan:

* what exists when it starts is moved out of the collector's reach (`gc.freeze`), and the
  SDKs too once they are imported (`reading_here`, when this process reads scopes itself; a
  collection worker imports them first), and moved back when it ends (`gc.unfreeze`):
  nothing is leaked, and objects freed by reference counting (almost all) are freed as before;
* collections run every 50,000 allocations instead of 700, which delays only cyclic garbage
  (the peak RSS of a 10k-VM scan did not grow: RESULTS.md).

Scans in several threads of one process share the setting: the first to start applies it, the
last to end restores what was there before. A process that froze objects itself keeps them so.
"""

from __future__ import annotations

import gc
import importlib
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

#: The collector's thresholds while a scan runs (CPython's default is (700, 10, 10)).
SCAN_THRESHOLDS = (50_000, 20, 100)

_lock = threading.Lock()
_scans = 0
_saved: tuple[int, int, int] | None = None
_froze = False


def sdk_modules(providers: Iterable[object]) -> list[str]:
    """The SDK modules the providers name in `sdk_modules` (the ones they import on first
    use), each once, in order."""
    return list(dict.fromkeys(n for p in providers for n in getattr(p, "sdk_modules", ())))


def import_modules(names: Iterable[str]) -> None:
    """Import each module; one that is missing or fails to import is left for the provider to
    report (as the gap it reports today) when it needs it."""
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:  # a broken SDK is the provider's to report
            continue


def import_sdks(providers: Iterable[object]) -> None:
    """Import every SDK module the providers name (`sdk_modules`)."""
    import_modules(sdk_modules(providers))


def reading_here(providers: Iterable[object]) -> None:
    """Within a scan that reads scopes in this process after all (threads, not workers):
    import the providers' SDKs now and take them out of the collector's passes too.

    `run_audit` imports none up front: with collection workers the scan's own process never
    calls the SDKs' clients (planning imports what it uses), and Google Cloud's alone is
    about a CPU-second and 120 MiB there.
    """
    import_sdks(providers)
    with _lock:
        if _scans and _froze:
            gc.freeze()  # again: what planning and these imports added


@contextmanager
def scan_heap(providers: Iterable[object] = ()) -> Iterator[None]:
    """Within: the providers' SDKs imported, what exists frozen, collections less often."""
    global _scans, _saved, _froze
    import_sdks(providers)
    with _lock:
        if _scans == 0:
            _saved = gc.get_threshold()
            _froze = gc.get_freeze_count() == 0  # a caller's own freeze is left as it is
            if _froze:
                gc.freeze()
            gc.set_threshold(*SCAN_THRESHOLDS)
        _scans += 1
    try:
        yield
    finally:
        with _lock:
            _scans -= 1
            if _scans == 0:
                assert _saved is not None
                gc.set_threshold(*_saved)
                if _froze:
                    gc.unfreeze()
                _saved, _froze = None, False
