"""The SEV-SNP verifier's caches: they save work per report and never change a verdict.

Certificates, certificate tables, leaf data (info, public key, digest), chain outcomes and TCB
binding outcomes are cached; the report's own signature is verified every time. These tests try
to make a cache leak between inputs, hand out shared mutable state, or skip a check.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization

from auditor.verify import amd, snp
from auditor.verify.amd import (
    build_cert_table,
    load_certificate,
    load_certificates,
    parse_cert_table,
)
from auditor.verify.demo_anchor import DemoChain, demo_chip_id, make_demo_chain, sign_demo_report
from auditor.verify.errors import EvidenceFormatError
from auditor.verify.snp import (
    FIELDS,
    SIGNATURE_COMPONENT,
    SIGNATURE_OFFSET,
    SIGNED_SIZE,
    SnpOptions,
    SnpReport,
    parse_report,
    verify_snp,
)

DER = serialization.Encoding.DER


@pytest.fixture(scope="module")
def chain() -> DemoChain:
    return make_demo_chain("Milan")


@pytest.fixture(scope="module")
def other_chip(chain: DemoChain) -> DemoChain:
    return chain.with_vcek(demo_chip_id("Milan", "another cached chip"), chain.tcb)


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    """Each test starts cold, so a hit is one the test made itself."""
    for cache in (snp._LEAF_CACHE, snp._LEAF_BY_ID, snp._CHAIN_CACHE, snp._CHAIN_BY_ID):
        cache.clear()
    amd._load_cached.cache_clear()
    amd._cert_table_cached.cache_clear()
    yield


def _report(chain: DemoChain, n: int = 0) -> bytes:
    return sign_demo_report(chain, report_data=n.to_bytes(64, "big"), measurement=bytes(48))


def _check(result: snp.SnpResult, name: str) -> snp.Check:
    return next(c for c in result.checks if c.name == name)


def _flip(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1 :]


# --- certificate tables and certificates ---------------------------------------------------------


def test_cert_table_cache_does_not_leak_between_auxblobs(
    chain: DemoChain, other_chip: DemoChain
) -> None:
    first, second = chain.auxblob(), other_chip.auxblob()
    assert parse_cert_table(first)["vcek"] == chain.vcek.public_bytes(DER)
    assert parse_cert_table(second)["vcek"] == other_chip.vcek.public_bytes(DER)
    assert parse_cert_table(first)["vcek"] == chain.vcek.public_bytes(DER)
    options = SnpOptions(trust=chain.trust())
    assert verify_snp(_report(chain), auxblob=first, options=options).ok
    # the same report with the other chip's table: its VCEK did not sign it
    crossed = verify_snp(_report(chain), auxblob=second, options=options)
    assert crossed.check("signature") is False
    assert crossed.check("chip_id") is False
    assert verify_snp(_report(other_chip), auxblob=second, options=options).ok


def test_cert_table_results_are_fresh_dicts(chain: DemoChain) -> None:
    blob = chain.auxblob()
    table = parse_cert_table(blob)
    table["vcek"] = b"tampered"
    table["injected"] = b"x"
    again = parse_cert_table(blob)
    assert again["vcek"] == chain.vcek.public_bytes(DER)
    assert "injected" not in again
    assert parse_cert_table(bytearray(blob)) == again


def test_cert_table_errors_are_raised_every_time() -> None:
    bad = build_cert_table({"vcek": b"V" * 8})[:-4]  # entry points past the end
    for _ in range(2):
        with pytest.raises(EvidenceFormatError, match="outside"):
            parse_cert_table(bad)


def test_certificate_cache_is_keyed_on_the_bytes(chain: DemoChain, other_chip: DemoChain) -> None:
    der = chain.vcek.public_bytes(DER)
    assert load_certificate(der) is load_certificate(bytes(bytearray(der)))
    assert load_certificate(der) == chain.vcek
    other = load_certificate(other_chip.vcek.public_bytes(DER))
    assert other == other_chip.vcek and other != chain.vcek
    pem = chain.chain_pem()
    first = load_certificates(pem)
    first.append(chain.vcek)  # a caller's list is its own
    assert load_certificates(pem) == [chain.ask, chain.ark]


def test_certificate_errors_name_each_caller() -> None:
    for what in ("VCEK from auxblob", "ASK from auxblob"):
        with pytest.raises(EvidenceFormatError, match=what):
            load_certificate(b"\x30\x03\x02\x01\x00", what)


def test_large_inputs_are_loaded_without_the_cache(chain: DemoChain) -> None:
    pem = chain.chain_pem() + b"\n" * amd.CACHED_CERT_INPUT_BYTES
    assert load_certificates(pem) == [chain.ask, chain.ark]
    assert amd._load_cached.cache_info().currsize == 0


# --- signatures are verified on every report ------------------------------------------------------


def test_wrong_signature_from_a_cached_chip_is_rejected(chain: DemoChain) -> None:
    options = SnpOptions(trust=chain.trust())
    blob = chain.auxblob()
    good = _report(chain)
    for _ in range(2):  # warm every cache
        assert verify_snp(good, auxblob=blob, options=options).ok
    altered = [
        _flip(good, FIELDS["report_data"][0]),  # signed bytes changed
        _flip(good, SIGNED_SIZE - 1),
        _flip(good, SIGNATURE_OFFSET),  # R changed
        _flip(good, SIGNATURE_OFFSET + SIGNATURE_COMPONENT),  # S changed
        _report(chain, 1)[:SIGNATURE_OFFSET] + good[SIGNATURE_OFFSET:],  # another report's sig
    ]
    for report in altered:
        result = verify_snp(report, auxblob=blob, options=options)
        assert result.check("signature") is False, result.reason
        assert "does not verify" in _check(result, "signature").reason
        assert not result.ok and not result.authentic
    zero_r = good[:SIGNATURE_OFFSET] + bytes(SIGNATURE_COMPONENT) + good[SIGNATURE_OFFSET + 72 :]
    result = verify_snp(zero_r, auxblob=blob, options=options)
    assert "empty" in _check(result, "signature").reason
    assert verify_snp(good, auxblob=blob, options=options).ok


def test_signature_is_verified_for_every_report(
    chain: DemoChain, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[bytes] = []
    original = snp._signature_check

    def counting(report: SnpReport, key: object, label: str) -> snp.Check:
        calls.append(report.raw)
        return original(report, key, label)  # type: ignore[arg-type]

    monkeypatch.setattr(snp, "_signature_check", counting)
    options = SnpOptions(trust=chain.trust())
    blob = chain.auxblob()
    report = _report(chain)
    for _ in range(3):
        assert verify_snp(report, auxblob=blob, options=options).ok
    assert calls == [report] * 3


# --- cached outcomes are handed out as copies ---------------------------------------------------


def test_cached_checks_and_facts_are_not_shared(chain: DemoChain) -> None:
    options = SnpOptions(trust=chain.trust())
    blob = chain.auxblob()
    first = verify_snp(_report(chain), auxblob=blob, options=options)
    assert first.ok
    expected = {c.name: (c.ok, c.reason) for c in first.checks}
    for check in first.checks:
        check.ok, check.reason = False, "mutated by a caller"
    first.facts["policy"]["debug"] = True
    first.facts["platform_info"]["smt_enabled"] = False
    first.facts["reported_tcb"]["snp"] = 0
    second = verify_snp(_report(chain), auxblob=blob, options=options)
    assert second.ok
    assert {c.name: (c.ok, c.reason) for c in second.checks} == expected
    assert second.facts["policy"]["debug"] is False
    assert second.facts["platform_info"]["smt_enabled"] is True
    assert second.facts["reported_tcb"]["snp"] == chain.tcb.snp
    assert not {id(c) for c in first.checks} & {id(c) for c in second.checks}


def test_chain_cache_follows_the_trust_store(chain: DemoChain) -> None:
    blob = chain.auxblob()
    report = _report(chain)
    assert verify_snp(report, auxblob=blob, options=SnpOptions(trust=chain.trust())).ok
    pinned = verify_snp(report, auxblob=blob, options=SnpOptions())
    assert pinned.check("chain") is False
    assert pinned.check("signature") is True
    other = make_demo_chain("Milan")  # same names, other keys
    assert (
        verify_snp(report, auxblob=blob, options=SnpOptions(trust=other.trust())).check("chain")
        is False
    )


def test_equal_certificates_from_elsewhere_give_the_same_verdict(chain: DemoChain) -> None:
    options = SnpOptions(trust=chain.trust())
    report = _report(chain)
    via_table = verify_snp(report, auxblob=chain.auxblob(), options=options)
    for cert in (chain.vcek, chain.vcek.public_bytes(serialization.Encoding.PEM)):
        direct = verify_snp(report, cert, chain.chain_pem(), options=options)
        assert [(c.name, c.ok, c.reason) for c in direct.checks] == [
            (c.name, c.ok, c.reason) for c in via_table.checks
        ]


def test_tcb_binding_cache_is_per_reported_tcb(chain: DemoChain) -> None:
    options = SnpOptions(trust=chain.trust())
    blob = chain.auxblob()
    assert verify_snp(_report(chain), auxblob=blob, options=options).check("tcb_binding")
    newer = dataclasses.replace(chain.tcb, snp=chain.tcb.snp + 1)
    report = sign_demo_report(
        chain, report_data=bytes(64), measurement=bytes(48), reported_tcb=newer
    )
    result = verify_snp(report, auxblob=blob, options=options)
    assert result.check("tcb_binding") is False
    assert "another TCB" in _check(result, "tcb_binding").reason
    assert verify_snp(_report(chain), auxblob=blob, options=options).check("tcb_binding")


# --- parsing --------------------------------------------------------------------------------


def test_parse_report_reads_every_field_at_its_offset() -> None:
    raw = bytearray(os.urandom(0x4A0))
    raw[0:4] = (5).to_bytes(4, "little")  # version 5 has every field
    raw[0x34:0x38] = (1).to_bytes(4, "little")
    raw[0x48:0x4C] = (0).to_bytes(4, "little")
    raw[0x188:0x18B] = bytes([0x19, 0x01, 0x01])  # Milan
    report = parse_report(bytes(raw))
    for name, (offset, size) in FIELDS.items():
        chunk = bytes(raw[offset : offset + size])
        value = getattr(report, "signing_key" if name == "signer_info" else name)
        if name in ("current_fw", "committed_fw"):
            assert value == (chunk[2], chunk[1], chunk[0]), name
        elif name == "cpuid":
            assert value == tuple(chunk), name
        elif name.endswith("_tcb"):
            assert value.raw == int.from_bytes(chunk, "little"), name
        elif name == "signer_info":
            assert report.signer_info == int.from_bytes(chunk, "little")
        elif isinstance(value, bytes):
            assert value == chunk, name
        else:
            assert value == int.from_bytes(chunk, "little"), name
    sig = raw[SIGNATURE_OFFSET : SIGNATURE_OFFSET + 2 * SIGNATURE_COMPONENT]
    assert report.signature_r == int.from_bytes(sig[:SIGNATURE_COMPONENT], "little")
    assert report.signature_s == int.from_bytes(sig[SIGNATURE_COMPONENT:], "little")


def test_v2_report_takes_the_certificate_product_like_a_full_reparse(chain: DemoChain) -> None:
    # product unknown, and a Milan chip whose 8-byte CHIP_ID makes the heuristic guess Turin
    turin_like = make_demo_chain("Milan", chip_id=demo_chip_id("Turin", "short chip id"))
    for demo, guessed in ((chain, None), (turin_like, "Turin")):
        report = sign_demo_report(demo, report_data=bytes(64), measurement=bytes(48), version=2)
        assert parse_report(report).product == guessed
        expected = dataclasses.replace(
            parse_report(report, product_hint="Milan"), product_source="certificate"
        )
        options = SnpOptions(trust=demo.trust())
        result = verify_snp(report, demo.vcek, options=options)
        assert result.ok, result.reason
        assert result.report == expected
        # a caller's SnpReport takes the other path and gives the same report
        given = verify_snp(parse_report(report), demo.vcek, options=options)
        assert given.report == expected
        assert [(c.name, c.ok, c.reason) for c in given.checks] == [
            (c.name, c.ok, c.reason) for c in result.checks
        ]
