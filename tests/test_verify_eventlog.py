"""TCG crypto-agile event logs: real GCE/Ubuntu logs, the TDX CCEL, replay and malformed input."""

from __future__ import annotations

import contextlib
import hashlib
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.verify.errors import EvidenceFormatError
from auditor.verify.eventlog import (
    EFI_GLOBAL_VARIABLE,
    EV_EFI_VARIABLE_DRIVER_CONFIG,
    EV_NO_ACTION,
    ccel_rtmrs,
    parse_ccel_table,
    parse_event_log,
    replay,
    secure_boot_state,
)

VECTORS = Path(__file__).parent / "data" / "vectors"
TPM_LOGS = VECTORS / "go-tpm-tools"
TDX = VECTORS / "go-tdx-guest"
REAL_LOGS = ["ubuntu-2404-amd-sevsnp.bin", "cos-101-amd-sev.bin", "eventlogwithsp800155.bin"]


def _spec_id_header(algs: list[tuple[int, int]]) -> bytes:
    spec = b"Spec ID Event03\x00" + struct.pack("<IBBBBI", 0, 0, 2, 0, 2, len(algs))
    spec += b"".join(struct.pack("<HH", alg, size) for alg, size in algs) + b"\x00"
    return struct.pack("<II", 0, EV_NO_ACTION) + bytes(20) + struct.pack("<I", len(spec)) + spec


def _event2(index: int, event_type: int, digests: list[tuple[int, bytes]], data: bytes) -> bytes:
    out = struct.pack("<III", index, event_type, len(digests))
    out += b"".join(struct.pack("<H", alg) + d for alg, d in digests)
    return out + struct.pack("<I", len(data)) + data


def _efi_variable(guid_le: bytes, name: str, value: bytes) -> bytes:
    encoded = name.encode("utf-16-le")
    return guid_le + struct.pack("<QQ", len(name), len(value)) + encoded + value


SHA256 = 0x000B


def _synthetic_log(locality: int | None = None) -> tuple[bytes, list[bytes]]:
    digests = [hashlib.sha256(bytes([i])).digest() for i in range(3)]
    log = _spec_id_header([(SHA256, 32)])
    if locality is not None:
        log += _event2(0, EV_NO_ACTION, [(SHA256, bytes(32))], b"StartupLocality\x00" + bytes([3]))
    log += _event2(0, 0x8, [(SHA256, digests[0])], b"crtm")
    log += _event2(0, 0x4, [(SHA256, digests[1])], b"\x00" * 4)
    log += _event2(7, 0x4, [(SHA256, digests[2])], b"\x00" * 4)
    return log, digests


@pytest.mark.parametrize("name", REAL_LOGS)
def test_real_logs_parse_with_declared_banks(name: str) -> None:
    log = parse_event_log((TPM_LOGS / name).read_bytes())
    assert log.algorithms == {"sha1": 20, "sha256": 32, "sha384": 48}
    assert log.spec_version == "2.0.0"
    assert len(log.events) > 0
    assert any(e.type_name == "EV_SEPARATOR" for e in log.events)
    for event in log.events:
        for alg, digest in event.digests.items():
            assert len(digest) == log.algorithms[alg]
    # Eight separators, one per PCR 0..7, end the pre-OS phase in every real firmware log.
    separators = sorted(e.index for e in log.events if e.type_name == "EV_SEPARATOR")
    assert separators[:8] == list(range(8))


@pytest.mark.parametrize("name", REAL_LOGS)
def test_replay_of_real_log_gives_every_touched_pcr(name: str) -> None:
    log = parse_event_log((TPM_LOGS / name).read_bytes())
    pcrs = replay(log, "sha256")
    assert set(range(8)) <= set(pcrs)
    assert all(len(v) == 32 and v != bytes(32) for v in pcrs.values())
    assert replay(log, "sha1", indexes=[4])[4] != replay(log, "sha1", indexes=[5])[5]


def test_secure_boot_state_reads_the_secureboot_variable() -> None:
    on = secure_boot_state(parse_event_log((TPM_LOGS / "cos-101-amd-sev.bin").read_bytes()))
    off = secure_boot_state(parse_event_log((TPM_LOGS / "ubuntu-2404-amd-sevsnp.bin").read_bytes()))
    assert on["secure_boot"] is True
    assert off["secure_boot"] is False
    assert on["source"] == "event_log"
    assert on["db_entries"] >= 1
    assert off["dbx_entries"] > on["dbx_entries"]


def test_secure_boot_state_unknown_when_not_logged() -> None:
    raw, _ = _synthetic_log()
    state = secure_boot_state(parse_event_log(raw))
    assert state["secure_boot"] is None


def test_secure_boot_state_from_synthetic_variable() -> None:
    var = _efi_variable(EFI_GLOBAL_VARIABLE.bytes_le, "SecureBoot", b"\x01")
    raw = _spec_id_header([(SHA256, 32)]) + _event2(
        7, EV_EFI_VARIABLE_DRIVER_CONFIG, [(SHA256, hashlib.sha256(var).digest())], var
    )
    assert secure_boot_state(parse_event_log(raw))["secure_boot"] is True
    other_guid = _efi_variable(bytes(16), "SecureBoot", b"\x01")
    raw = _spec_id_header([(SHA256, 32)]) + _event2(
        7, EV_EFI_VARIABLE_DRIVER_CONFIG, [(SHA256, bytes(32))], other_guid
    )
    assert secure_boot_state(parse_event_log(raw))["secure_boot"] is None


def test_replay_extends_from_zero() -> None:
    raw, digests = _synthetic_log()
    log = parse_event_log(raw)
    pcr0 = hashlib.sha256(hashlib.sha256(bytes(32) + digests[0]).digest() + digests[1]).digest()
    pcr7 = hashlib.sha256(bytes(32) + digests[2]).digest()
    assert replay(log, "sha256") == {0: pcr0, 7: pcr7}
    assert replay(log, "sha256", indexes=[7, 9]) == {7: pcr7, 9: bytes(32)}


def test_startup_locality_sets_pcr0_initial_value_and_is_not_extended() -> None:
    raw, digests = _synthetic_log(locality=3)
    log = parse_event_log(raw)
    assert log.startup_locality == 3
    start = bytes(31) + b"\x03"
    pcr0 = hashlib.sha256(hashlib.sha256(start + digests[0]).digest() + digests[1]).digest()
    assert replay(log, "sha256")[0] == pcr0
    assert replay(log, "sha256", indexes=[0])[0] == pcr0


def test_replay_of_missing_bank_is_a_format_error() -> None:
    raw, _ = _synthetic_log()
    with pytest.raises(EvidenceFormatError, match="no sha384 bank"):
        replay(parse_event_log(raw), "sha384")


def test_trailing_padding_is_tolerated_but_garbage_is_not() -> None:
    raw, _ = _synthetic_log()
    assert len(parse_event_log(raw + b"\xff" * 4096).events) == 3
    assert len(parse_event_log(raw + b"\x00" * 64).events) == 3
    with pytest.raises(EvidenceFormatError, match="truncated"):
        parse_event_log(raw + b"\x01\x00\x00\x00\x04")


def test_truncated_event_names_the_event() -> None:
    raw, _ = _synthetic_log()
    with pytest.raises(EvidenceFormatError, match="event 3"):
        parse_event_log(raw[:-10])


def test_sha1_only_log_is_rejected_with_reason() -> None:
    legacy = struct.pack("<II", 0, 0x8) + bytes(20) + struct.pack("<I", 4) + b"abcd"
    with pytest.raises(EvidenceFormatError, match="EV_NO_ACTION"):
        parse_event_log(legacy)
    not_spec = struct.pack("<II", 0, EV_NO_ACTION) + bytes(20) + struct.pack("<I", 16) + bytes(16)
    with pytest.raises(EvidenceFormatError, match="Spec ID Event03"):
        parse_event_log(not_spec)


def test_undeclared_algorithm_is_rejected() -> None:
    raw = _spec_id_header([(SHA256, 32)]) + _event2(0, 4, [(0x000C, bytes(48))], b"")
    with pytest.raises(EvidenceFormatError, match="not declared"):
        parse_event_log(raw)


def test_max_events_bound() -> None:
    raw, _ = _synthetic_log()
    with pytest.raises(EvidenceFormatError, match="more than 2 events"):
        parse_event_log(raw, max_events=2)


def test_ccel_log_parses_and_replays_four_rtmrs() -> None:
    data = (TDX / "ccel_data.dat").read_bytes()
    log = parse_event_log(data)
    assert log.algorithms == {"sha384": 48}
    assert len(log.events) == 43
    assert {e.index for e in log.events} <= {1, 2, 3, 4}
    rtmrs = ccel_rtmrs(data)
    assert sorted(rtmrs) == [0, 1, 2, 3]
    expected0 = replay(log, "sha384", indexes=[1])[1]
    assert rtmrs[0] == expected0
    assert rtmrs[3] == bytes(48)  # RTMR3 is the workload's; GCE firmware leaves it untouched


def test_ccel_table_parses() -> None:
    table = parse_ccel_table((TDX / "ccel_table.dat").read_bytes())
    assert table["cc_type"] == 2  # TDX
    assert table["cc_subtype"] == 0
    assert table["laml"] == len((TDX / "ccel_data.dat").read_bytes())
    assert table["lasa"] == 0xBEDBF000


def test_ccel_table_errors() -> None:
    table = (TDX / "ccel_table.dat").read_bytes()
    with pytest.raises(EvidenceFormatError, match="56"):
        parse_ccel_table(table[:40])
    with pytest.raises(EvidenceFormatError, match="signature"):
        parse_ccel_table(b"FACP" + table[4:])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_parse_event_log_raises_only_format_errors(data: bytes) -> None:
    with contextlib.suppress(EvidenceFormatError):
        parse_event_log(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.integers(min_value=0, max_value=400))
def test_parse_event_log_on_mutated_prefix(tail: bytes, cut: int) -> None:
    raw, _ = _synthetic_log(locality=0)
    data = raw[:cut] + tail
    with contextlib.suppress(EvidenceFormatError):
        log = parse_event_log(data)
        replay(log, "sha256")
        secure_boot_state(log)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=120))
def test_parse_ccel_table_raises_only_format_errors(data: bytes) -> None:
    with contextlib.suppress(EvidenceFormatError):
        parse_ccel_table(b"CCEL" + data)
    with contextlib.suppress(EvidenceFormatError):
        parse_ccel_table(data)
