"""The SEV-SNP report or TDX quote, requested through the kernel's configfs-tsm interface.

Protocol (Linux Documentation/ABI/testing/configfs-tsm): `mkdir` an entry under
`<configfs>/tsm/report/`, write the 64-byte REPORT_DATA to `inblob`, read `outblob` (the report
or quote, produced on read), `auxblob` (SNP: the VCEK/VLEK certificate table, when the host
supplies one) and `provider` (`sev_guest`, `tdx_guest`). Every write to the entry increments
`generation`; reading it before the write and after the reads tells whether someone else wrote
to the entry in between, in which case the blobs may answer their REPORT_DATA, not ours. Then the
entry is removed.

The kernel side is reached only through the small methods of `ConfigfsTsm`, so tests substitute
a fake kernel that fills the entry from real vectors. Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

MAX_BLOB_BYTES = 1024 * 1024
DEFAULT_ATTEMPTS = 3
KNOWN_PROVIDERS = ("sev_guest", "tdx_guest")


class TsmError(Exception):
    """No usable report from configfs-tsm; the text says which step failed and why."""


@dataclass(frozen=True)
class TeeReport:
    """What one consistent configfs-tsm request returned."""

    provider: str
    generation: int
    outblob: bytes
    auxblob: bytes | None


class ConfigfsTsm:
    """configfs-tsm report entries under `<configfs>/tsm/report`."""

    def __init__(self, configfs: Path) -> None:
        self.report_dir = Path(configfs) / "tsm" / "report"

    # -- the kernel interface (overridden by test fakes) -------------------------------------

    def create_entry(self) -> Path:
        entry = self.report_dir / f"ccaudit-{secrets.token_hex(8)}"
        os.mkdir(entry, 0o700)
        return entry

    def write_attribute(self, entry: Path, name: str, data: bytes) -> None:
        # No O_CREAT: configfs attributes exist once the entry does; never invent a file.
        fd = os.open(entry / name, os.O_WRONLY)
        try:
            written = os.write(fd, data)
        finally:
            os.close(fd)
        if written != len(data):
            raise TsmError(f"short write to {entry / name}: {written} of {len(data)} bytes")

    def read_attribute(self, entry: Path, name: str) -> bytes:
        with (entry / name).open("rb") as fh:
            data = fh.read(MAX_BLOB_BYTES + 1)
        if len(data) > MAX_BLOB_BYTES:
            raise TsmError(f"{entry / name} is larger than {MAX_BLOB_BYTES} bytes")
        return data

    def remove_entry(self, entry: Path) -> None:
        os.rmdir(entry)

    # -- the protocol --------------------------------------------------------------------------

    def request(self, report_data: bytes, attempts: int = DEFAULT_ATTEMPTS) -> TeeReport:
        """One report whose generation shows exactly our write; retried on a concurrent writer."""
        if len(report_data) != 64:
            raise ValueError("REPORT_DATA must be 64 bytes")
        if not self.report_dir.is_dir():
            raise TsmError(
                f"{self.report_dir} does not exist (kernel without CONFIG_TSM_REPORTS, "
                "configfs not mounted, or not a confidential guest)"
            )
        try:
            entry = self.create_entry()
        except OSError as err:
            where = self.report_dir
            raise TsmError(f"cannot create a report entry in {where}: {_why(err)}") from err
        try:
            return self._request_in(entry, report_data, attempts)
        finally:
            with contextlib.suppress(OSError):
                self.remove_entry(entry)

    def _request_in(self, entry: Path, report_data: bytes, attempts: int) -> TeeReport:
        provider = self._read_text(entry, "provider")
        seen: list[str] = []
        for _ in range(max(1, attempts)):
            before = self._generation(entry)
            try:
                self.write_attribute(entry, "inblob", report_data)
            except OSError as err:
                raise TsmError(f"cannot write {entry / 'inblob'}: {_why(err)}") from err
            outblob = self._read_blob(entry, "outblob")
            auxblob = self._read_optional(entry, "auxblob")
            after = self._generation(entry)
            if after == before + 1:
                if not outblob:
                    raise TsmError(f"{entry / 'outblob'} is empty")
                return TeeReport(provider, after, outblob, auxblob or None)
            seen.append(f"{before}->{after}")
        raise TsmError(
            f"generation of {entry} changed by more than our one write ({', '.join(seen)}): "
            f"a concurrent writer; gave up after {len(seen)} attempts"
        )

    def _read_blob(self, entry: Path, name: str) -> bytes:
        try:
            return self.read_attribute(entry, name)
        except OSError as err:
            raise TsmError(f"cannot read {entry / name}: {_why(err)}") from err

    def _read_optional(self, entry: Path, name: str) -> bytes | None:
        try:
            return self.read_attribute(entry, name)
        except OSError:  # absent or unsupported by this provider (TDX has no auxblob)
            return None

    def _read_text(self, entry: Path, name: str) -> str:
        raw = self._read_blob(entry, name)
        return raw.decode("ascii", "replace").strip()

    def _generation(self, entry: Path) -> int:
        text = self._read_text(entry, "generation")
        try:
            return int(text)
        except ValueError:
            raise TsmError(f"{entry / 'generation'} is not a number: {text[:32]!r}") from None


def _why(err: OSError) -> str:
    return err.strerror or err.__class__.__name__
