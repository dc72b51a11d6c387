"""A scan's results and evidence on disk as its scopes finish, and read back when asked.

A VM's result and evidence are about 20 KiB as Python objects (benchmarks/RESULTS.md): a scan
that held them all until `result.json` was written needed 3 GiB at 100k VMs. With a run
directory, `run_audit` writes each finished scope's results and evidence to two spool files
under the run directory, as the very bytes `result.json` holds, assembles `result.json` from
them and deletes them. The run it returns reads its VMs and evidence back from `result.json`
when asked (`StoredVMs`, `StoredEvidence`), so memory holds only where each one is.

Evidence is deduplicated by SHA-256 as in memory (`recording.keep_evidence`): the spool
remembers where each kept item was read, so a copy read later from a place that sorts first
still replaces it, and which VM verified it last in the run's order, so the verification kept
is the one the whole-run verify stage would have left (a later VM's), whatever order the
scopes finished in.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, overload

from pydantic_core import to_json

from auditor.model import AuditRun, Evidence, VMResult, nested_json

#: The spool files' folder in the run directory, present only while a scan writes it.
SPOOL_DIR = ".spool"

#: A VM's place in the run's order: (provider, account, region, id).
VmOrder = tuple[str, str, str, str]


class _Chunks:
    """An append-only file of byte chunks, and reading them back by (offset, length)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._out: BinaryIO = path.open("wb")
        self._at = 0
        self._lock = threading.Lock()

    def append(self, data: bytes) -> tuple[int, int]:
        with self._lock:
            at = self._at
            self._out.write(data)
            self._at += len(data)
            return at, len(data)

    def read(self, offset: int, length: int) -> bytes:
        with self._lock:
            self._out.flush()
        return read_span(self.path, offset, length)

    def finish(self) -> None:
        with self._lock:
            self._out.close()


def read_span(path: Path, offset: int, length: int) -> bytes:
    return next(_read_spans(path, ((offset, length),)))


def _read_spans(path: Path, spans: Iterable[tuple[int, int]]) -> Iterator[bytes]:
    """Each (offset, length) of `path` in turn, from one open file."""
    with path.open("rb") as f:
        for offset, length in spans:
            f.seek(offset)
            data = f.read(length)
            if len(data) != length:
                raise OSError(f"{path}: cut short ({len(data)} of {length} bytes at {offset})")
            yield data


@dataclass(slots=True)
class _Slot:
    offset: int
    length: int
    #: recording.where_key of the copy kept (the first by where it was read)
    where: str
    #: the VM (in the run's order) whose verification the item carries; None: none verified it
    verifier: VmOrder | None


class EvidenceSpool:
    """Evidence items of finished scopes, each as `result.json` writes it."""

    def __init__(self, path: Path) -> None:
        self._file = _Chunks(path)
        self._slots: dict[str, _Slot] = {}

    def __contains__(self, sha: object) -> bool:
        return sha in self._slots

    def __len__(self) -> int:
        return len(self._slots)

    def where(self, sha: str) -> str | None:
        slot = self._slots.get(sha)
        return slot.where if slot is not None else None

    def verifier(self, sha: str) -> VmOrder | None:
        slot = self._slots.get(sha)
        return slot.verifier if slot is not None else None

    def load(self, sha: str) -> Evidence:
        slot = self._slots[sha]
        return Evidence.model_validate_json(self._file.read(slot.offset, slot.length))

    def put(self, evidence: Evidence, where: str, verifier: VmOrder | None) -> None:
        offset, length = self._file.append(nested_json(evidence))
        self._slots[evidence.sha256] = _Slot(offset, length, where, verifier)

    def stored(self) -> StoredEvidence:
        """Every item, in key order, read from the spool file (written first)."""
        self._file.finish()
        keys = sorted(self._slots)
        slots, self._slots = self._slots, {}  # done: the index is the StoredEvidence's now
        return StoredEvidence(
            self._file.path, keys, [(slots[k].offset, slots[k].length) for k in keys]
        )


class ResultSpool:
    """VM results of finished scopes, each as `result.json` writes it, and their order."""

    def __init__(self, path: Path) -> None:
        self._file = _Chunks(path)
        # (the VM's order, its scope's order, its place in its scope): the order a whole-run
        # sort gives (scopes by key, then VMs by key, a stable sort)
        self._index: list[tuple[VmOrder, tuple[str, str, str], int, int, int]] = []

    def __len__(self) -> int:
        return len(self._index)

    def add(self, scope: tuple[str, str, str], results: Sequence[VMResult]) -> None:
        """One scope's results, in its order (sorted by VM key)."""
        entries = []
        for n, vm in enumerate(results):
            offset, length = self._file.append(nested_json(vm))
            entries.append((vm_order(vm), scope, n, offset, length))
        self._index.extend(entries)  # at once: an interruption leaves a scope whole or absent

    def stored(self) -> StoredVMs:
        self._file.finish()
        index, self._index = self._index, []
        index.sort(key=lambda e: (e[0], e[1], e[2]))
        return StoredVMs(self._file.path, [(e[3], e[4]) for e in index], in_run_order=True)


def vm_order(vm: Any) -> VmOrder:
    """The key VMs are sorted by in a run (collect.collect)."""
    return (vm.provider, vm.account, vm.region, vm.id)


class StoredVMs(Sequence[VMResult]):
    """A run's VMs, each read from the file that holds it when asked (a new object each time).

    Equal to a list of the same VMs; pickled or deep-copied as that list. `in_run_order`: the
    VMs are known to be sorted by `vm_order` (as a scan writes them), so a report that lists
    them in that order reads them as they come instead of sorting them all in memory.
    """

    def __init__(
        self, path: Path, spans: list[tuple[int, int]], in_run_order: bool = False
    ) -> None:
        self.path = path
        self._spans = spans
        self.in_run_order = in_run_order

    def __len__(self) -> int:
        return len(self._spans)

    @overload
    def __getitem__(self, index: int) -> VMResult: ...

    @overload
    def __getitem__(self, index: slice) -> list[VMResult]: ...

    def __getitem__(self, index: int | slice) -> VMResult | list[VMResult]:
        if isinstance(index, slice):  # from one open file
            spans = self._spans[index]
            return [VMResult.model_validate_json(c) for c in _read_spans(self.path, spans)]
        offset, length = self._spans[index]
        return VMResult.model_validate_json(read_span(self.path, offset, length))

    def __iter__(self) -> Iterator[VMResult]:
        for chunk in self.chunks():
            yield VMResult.model_validate_json(chunk)

    def chunks(self) -> Iterator[bytes]:
        """Each VM as result.json holds it (nested two levels), in order, from one open file."""
        return _read_spans(self.path, self._spans)

    def chunk(self, index: int) -> bytes:
        """One VM as result.json holds it."""
        return read_span(self.path, *self._spans[index])

    def spans(self) -> list[tuple[int, int]]:
        return list(self._spans)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return len(other) == len(self) and list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        return (list, (list(self),))

    def __repr__(self) -> str:
        return f"StoredVMs({len(self)} VMs in {self.path})"


class StoredEvidence(Mapping[str, Evidence]):
    """A run's evidence by SHA-256, in key order, each item read when asked."""

    def __init__(self, path: Path, keys: list[str], spans: list[tuple[int, int]]) -> None:
        self.path = path
        self._keys = keys
        self._spans = dict(zip(keys, spans, strict=True))

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._spans

    def __getitem__(self, key: str) -> Evidence:
        offset, length = self._spans[key]
        return Evidence.model_validate_json(read_span(self.path, offset, length))

    def chunk(self, key: str) -> bytes:
        """One item as result.json holds it."""
        return read_span(self.path, *self._spans[key])

    def chunks(self) -> Iterator[tuple[str, bytes]]:
        """(key, the item as result.json holds it), in key order, from one open file."""
        spans = (self._spans[key] for key in self._keys)
        return zip(self._keys, _read_spans(self.path, spans), strict=True)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return len(other) == len(self) and dict(self.items()) == dict(other.items())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        return (dict, (dict(self.items()),))

    def __repr__(self) -> str:
        return f"StoredEvidence({len(self)} items in {self.path})"


# ------------------------------------------------------------------ reading a stored run
_VM_ENTRY = b"    {\n"
_NESTED_LINE = b"      "  # every line inside an entry is indented deeper than the entry
_ENTRY_ENDS = (b"    }\n", b"    },\n")


def read_stored(path: Path) -> AuditRun | None:
    """A stored result.json as a run whose VMs and evidence are read when asked, or None when
    the file is not exactly as `model.result_chunks` writes it (then read it whole).

    One pass over the file, an entry at a time: each VM and evidence item is validated and
    must serialise back to its very bytes, so what the run gives (its digest, its JSON) is
    what reading the whole file gives; anything else (another layout, a field that does not
    validate, a key given twice) returns None, and the whole-file read reports it as before.
    """
    from pydantic import ValidationError

    shell = bytearray()
    vm_spans: list[tuple[int, int]] = []
    in_order = True  # whether the VMs come in the run's order (vm_order)
    last_key: VmOrder | None = None
    keys: list[str] = []
    ev_spans: list[tuple[int, int]] = []
    section = ""  # "", "vms" or "evidence"
    opened: set[bytes] = set()
    more = True  # after an entry: whether "}," said another follows (a section opens with one)
    entry = bytearray()
    start = -1
    key = ""
    at = 0
    try:
        with path.open("rb") as f:
            for line in f:
                if section == "":
                    more = True
                    name = line[3:6]
                    if line.startswith((b'  "vms": ', b'  "evidence": ')):
                        if name in opened:  # given twice: the whole-file reader keeps the last
                            return None
                        opened.add(name)
                    if line in (b'  "vms": [\n', b'  "evidence": {\n'):
                        section = "vms" if name == b"vms" else "evidence"
                    else:
                        shell += line
                elif start < 0:  # between entries: one opens, or the section closes
                    closes = line in (b"  ]\n", b"  ],\n", b"  }\n", b"  },\n")
                    if closes == more:  # "}," must be followed by an entry, "}" must close
                        return None
                    if section == "vms" and line == _VM_ENTRY:
                        start = at + 4
                        entry = bytearray(b"{\n")
                    elif (
                        section == "evidence"
                        and line.startswith(b'    "')
                        and line.endswith(b'": {\n')
                    ):
                        key = json.loads(line[4:-4])
                        if not isinstance(key, str) or to_json(key) != line[4:-4]:
                            return None  # a key written otherwise (escapes) than ours
                        start = at + len(line) - 2
                        entry = bytearray(b"{\n")
                    elif line in (b"  ]\n", b"  ],\n") and section == "vms":
                        shell += b'  "vms": []' + line[3:]
                        section, more = "", True
                    elif line in (b"  }\n", b"  },\n") and section == "evidence":
                        shell += b'  "evidence": {}' + line[3:]
                        section, more = "", True
                    else:
                        return None
                elif line.startswith(_NESTED_LINE):
                    entry += line
                elif line in _ENTRY_ENDS:
                    more = line == b"    },\n"
                    entry += b"    }"
                    span = (start, len(entry))
                    if section == "vms":
                        vm = VMResult.model_validate_json(entry)
                        if nested_json(vm) != entry:
                            return None
                        vm_spans.append(span)
                        order = vm_order(vm)
                        in_order = in_order and (last_key is None or last_key <= order)
                        last_key = order
                    else:
                        if nested_json(Evidence.model_validate_json(entry)) != entry:
                            return None
                        keys.append(key)
                        ev_spans.append(span)
                    start = -1
                else:
                    return None
                at += len(line)
        if section or len(set(keys)) != len(keys):
            return None
        run = AuditRun.model_validate_json(bytes(shell))
    except (ValidationError, ValueError, UnicodeDecodeError):
        return None
    canonical = run.model_copy(update={"vms": [], "evidence": {}}).model_dump_json(indent=2)
    if run.vms or run.evidence or (canonical + "\n").encode("utf-8") != shell:
        return None  # the file is byte for byte what writing this run gives, or it is read whole
    return run.model_copy(
        update={
            "vms": StoredVMs(path, vm_spans, in_run_order=in_order),
            "evidence": StoredEvidence(path, keys, ev_spans),
        }
    )
