"""`ccaudit verify snp|tdx|evidence` and `ccaudit measure snp`: the investigator's contract.

JSON keys, exit codes (0 authentic, bound and the policy holds, and fresh for evidence; 1 any
of those fails or is unknown; 2 unusable input with one line and no traceback) and encoding
detection (raw, hex, base64), on the real vectors. Every time is passed in (`--at`): nothing
here depends on today's date.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from auditor.cli import app

runner = CliRunner()
DATA = Path(__file__).parent / "data" / "vectors"
FLEET = Path(__file__).resolve().parent.parent / "examples" / "demo-fleet"
#: When the demo fleet is judged (its replay.json): the demo nonces are fresh then.
DEMO_AT = "2026-11-22T00:00:00+00:00"
SNP = DATA / "go-sev-guest" / "attestation.bin"
VCEK = DATA / "go-sev-guest" / "vcek.testcer"


def _json(args: list[str]) -> tuple[int, dict[str, object]]:
    result = runner.invoke(app, [*args, "--format", "json"])
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, json.loads(result.stdout)


def test_snp_json_contract_on_the_go_sev_guest_report() -> None:
    code, doc = _json(["verify", "snp", str(SNP), "--cert", str(VCEK), "--at", "none"])
    # genuine, but DEBUG=1 and an old TCB: a gate on the exit code must not pass it
    assert code == 1
    assert doc["valid"] is True and doc["authentic"] is True
    assert doc["policy_ok"] is False and doc["passes"] is False
    assert doc["verdict"] == (
        "authentic: yes, bindings: yes, policy: no (policy_debug, tcb_minimum)"
    )
    checks = {c["name"]: c for c in doc["checks"]}  # type: ignore[attr-defined]
    assert checks["signature"]["ok"] and checks["chain"]["ok"]
    assert checks["policy_debug"]["ok"] is False
    assert "AMD-SB" in checks["tcb_minimum"]["reason"]
    assert doc["version"] == 2
    policy = doc["policy"]
    assert isinstance(policy, dict)
    assert policy["debug"] is True and policy["smt"] is True and policy["migrate_ma"] is False
    for key in ("reported_tcb", "committed_tcb"):
        tcb = doc[key]
        assert isinstance(tcb, dict)
        assert {"bootloader", "tee", "snp", "microcode"} <= set(tcb)
    assert doc["reported_tcb"] == {"bootloader": 2, "tee": 0, "snp": 5, "microcode": 68}
    assert len(str(doc["measurement"])) == 96
    assert len(str(doc["chip_id"])) == 128
    assert len(str(doc["report_data"])) == 128


@pytest.mark.parametrize("encoding", ["hex", "base64"])
def test_snp_report_encodings_are_detected(tmp_path: Path, encoding: str) -> None:
    raw = SNP.read_bytes()
    text = raw.hex() if encoding == "hex" else base64.b64encode(raw).decode()
    path = tmp_path / f"report.{encoding}"
    path.write_text(text + "\n")
    code, doc = _json(["verify", "snp", str(path), "--cert", str(VCEK), "--at", "none"])
    assert doc["valid"] is True and doc["authentic"] is True
    assert code == 1 and "policy: no" in str(doc["verdict"])  # the same DEBUG=1 report


def test_virtee_hex_report_with_chain() -> None:
    code, doc = _json(
        [
            "verify",
            "snp",
            str(DATA / "virtee-sev" / "report_milan.hex"),
            "--cert",
            str(DATA / "virtee-sev" / "vcek_milan.der"),
            "--chain",
            str(DATA / "virtee-sev" / "cert_chain_milan"),
            "--at",
            "none",
        ]
    )
    assert doc["valid"] is True
    assert code == 1 and doc["verdict"] == "authentic: yes, bindings: yes, policy: no (tcb_minimum)"


def test_flipped_byte_does_not_verify(tmp_path: Path) -> None:
    raw = bytearray(SNP.read_bytes())
    raw[0x90] ^= 0x01  # MEASUREMENT
    path = tmp_path / "flipped.bin"
    path.write_bytes(bytes(raw))
    code, doc = _json(["verify", "snp", str(path), "--cert", str(VCEK), "--at", "none"])
    assert code == 1 and doc["valid"] is False
    assert any(c["name"] == "signature" and not c["ok"] for c in doc["checks"])  # type: ignore[attr-defined]


def test_wrong_report_data_does_not_verify() -> None:
    code, doc = _json(
        ["verify", "snp", str(SNP), "--cert", str(VCEK), "--at", "none", "--report-data", "11" * 64]
    )
    assert code == 1 and doc["valid"] is False


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"\x02\x00\x00\x00" + bytes(100), "truncated"),
        (b"\x09" + bytes(0x4A0 - 1), "version"),
    ],
)
def test_unusable_input_exits_2_with_one_line(tmp_path: Path, content: bytes, needle: str) -> None:
    path = tmp_path / "bad.bin"
    path.write_bytes(content)
    result = runner.invoke(app, ["verify", "snp", str(path)])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:")
    assert needle in lines[0].lower()
    assert "Traceback" not in result.output


def test_missing_file_exits_2() -> None:
    result = runner.invoke(app, ["verify", "snp", "/nonexistent/report.bin"])
    assert result.exit_code == 2
    assert "cannot read" in result.stderr


def test_tdx_quote_with_ccel_and_nonce() -> None:
    tdx = DATA / "go-tdx-guest"
    nonce = (tdx / "nonce.dat").read_bytes().hex()
    args = ["verify", "tdx", str(tdx / "cos-113-tdx-quote.dat"), "--report-data", nonce]
    args += ["--ccel", str(tdx / "ccel_data.dat"), "--at", "none"]
    code, doc = _json(args)
    assert doc["valid"] is True
    names = {c["name"]: c for c in doc["checks"]}  # type: ignore[attr-defined]
    assert names["rtmr_replay"]["ok"] and names["quote_signature"]["ok"]
    assert names["td_debug"]["ok"] and names["td_migratable"]["ok"]
    # without collateral the TCB status is unknown, and unknown never passes a gate
    assert code == 1 and names["tcb_status"]["ok"] is False
    assert "no verified collateral" in names["tcb_status"]["reason"]


def test_tdx_collateral_reports_tcb_status() -> None:
    tdx = DATA / "go-tdx-guest"
    code, doc = _json(
        [
            "verify",
            "tdx",
            str(tdx / "tdx_prod_quote_SPR_E4.dat"),
            "--collateral",
            str(tdx),
            "--at",
            "2023-07-01T00:00:00",
        ]
    )
    assert doc["valid"] is True  # genuine; its TCB status is a policy finding
    assert code == 1 and "policy: no (tcb_status)" in str(doc["verdict"])
    checks = {c["name"]: c for c in doc["checks"]}  # type: ignore[attr-defined]
    assert checks["tcb_status"]["ok"] is False
    assert "no matching TCB level" in checks["tcb_status"]["reason"]


def test_evidence_file_bound_with_the_demo_anchor(tmp_path: Path) -> None:
    evidence = FLEET / "guest-evidence" / "eu-hr-db.json"
    state = FLEET / "audit-state"
    at = ["--at", DEMO_AT]
    code, doc = _json(["verify", "evidence", str(evidence), "--state", str(state), *at])
    assert code == 1  # the demo chain is not AMD: refused unless asked for
    assert "does not verify" in str(doc["summary"])
    code, doc = _json(
        [
            "verify",
            "evidence",
            str(evidence),
            "--state",
            str(state),
            "--demo-trust-anchor",
            str(FLEET / "demo-trust-anchor"),
            *at,
        ]
    )
    assert code == 0, doc
    assert doc["passes"] is True and doc["fresh"] is True
    assert "demo trust anchor, not AMD" in str(doc["summary"])


def test_evidence_with_a_real_but_unbound_report() -> None:
    evidence = FLEET / "guest-evidence" / "us-payments-api-dr.json"
    code, doc = _json(["verify", "evidence", str(evidence), "--at", DEMO_AT])
    assert code == 1
    assert "genuine AMD-signed report, not bound to this VM" in str(doc["summary"])


def test_evidence_file_that_is_not_one_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text('{"format": "something-else"}')
    result = runner.invoke(app, ["verify", "evidence", str(path)])
    assert result.exit_code == 2
    assert "format" in result.stderr


def test_measure_snp_reproduces_sev_snp_measure_vector(tmp_path: Path) -> None:
    vectors = DATA / "sev-snp-measure"
    lines = (vectors / "expected_measurements.txt").read_text().splitlines()
    ec2 = lines[lines.index(next(x for x in lines if x.startswith("# AWS EC2"))) + 1].strip()
    (tmp_path / "kernel").write_bytes(b"")
    (tmp_path / "initrd").write_bytes(b"")
    result = runner.invoke(
        app,
        [
            "measure",
            "snp",
            "--ovmf",
            str(vectors / "ovmf_AmdSev_suffix.bin"),
            "--vcpus",
            "1",
            "--vmm-type",
            "ec2",
            "--guest-features",
            "0x21",
            "--name",
            "aws",
            "--kernel",
            str(tmp_path / "kernel"),
            "--initrd",
            str(tmp_path / "initrd"),
        ],
    )
    assert result.exit_code == 0, result.output
    name, digest = result.stdout.strip().split("=")
    assert name == "aws"
    assert digest == ec2


def test_measure_snp_missing_ovmf_exits_2() -> None:
    result = runner.invoke(app, ["measure", "snp", "--ovmf", "/nonexistent.fd"])
    assert result.exit_code == 2
    assert "no such file" in result.stderr


# -- verify hcl ---------------------------------------------------------------------------------

#: The Constellation vector's VCEK is valid from 2023-08-30.
HCL_AT = "2024-01-01T00:00:00+00:00"


def _constellation() -> tuple[Path, Path, Path, Path]:
    from tests.shared_vectors import shared_vectors

    report, runtime, vcek, chain = shared_vectors(
        "constellation/azure_attestation.bin",
        "constellation/azure_runtimedata.bin",
        "constellation/azure_vcek.pem",
        "constellation/azure_certchain.pem",
    )
    return report, runtime, vcek, chain


def test_hcl_real_azure_vector_is_authentic_and_bound_but_below_the_tcb_minimum(
    tmp_path: Path,
) -> None:
    report, runtime, vcek, chain = _constellation()
    base = ["--cert", str(vcek), "--chain", str(chain), "--at", HCL_AT]
    code, doc = _json(["verify", "hcl", str(report), "--runtime-data", str(runtime), *base])
    assert code == 1 and doc["authentic"] is True and doc["valid"] is True
    assert doc["verdict"] == "authentic: yes, bindings: yes, policy: no (tcb_minimum)"
    hcl = doc["hcl"]
    assert isinstance(hcl, dict) and hcl["vm_unique_id"] == "B6C98C3B-4EC7-4DA6-BD2F-7D98D20D7B75"
    # The same parts framed as the vTPM NV index holds them give the same answer.
    from auditor.verify.demo_tpm import hcl_report

    framed = tmp_path / "hcl.bin"
    framed.write_bytes(hcl_report(report.read_bytes()[:0x4A0], runtime.read_bytes()))
    code2, doc2 = _json(["verify", "hcl", str(framed), *base])
    assert (code2, doc2["verdict"], doc2["hcl"]) == (code, doc["verdict"], hcl)
    # Runtime claims changed after the report was made: the binding fails, by name.
    changed = tmp_path / "runtime.json"
    changed.write_bytes(runtime.read_bytes().replace(b'"secure-boot":false', b'"secure-boot":true'))
    code3, doc3 = _json(["verify", "hcl", str(report), "--runtime-data", str(changed), *base])
    assert code3 == 1 and doc3["valid"] is False
    assert str(doc3["verdict"]).startswith("authentic: yes, bindings: no (report_data)")


def test_hcl_with_a_tdx_report_points_to_verify_tdx_and_garbage_is_unusable(
    tmp_path: Path,
) -> None:
    from auditor.verify.demo_tpm import hcl_report

    runtime = b'{"keys":[],"vm-configuration":{"vmUniqueId":"X"}}'
    tdx = tmp_path / "tdx-hcl.bin"
    tdx.write_bytes(hcl_report(bytes(1024), runtime, "tdx"))
    vcek = tmp_path / "vcek.pem"
    vcek.write_bytes(VCEK.read_bytes())
    result = runner.invoke(app, ["verify", "hcl", str(tdx), "--cert", str(vcek)])
    assert result.exit_code == 2
    assert "holds a TDX report" in result.output and "ccaudit verify tdx QUOTE --report-data" in (
        result.output
    )
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"HCLA" + bytes(100))
    result = runner.invoke(app, ["verify", "hcl", str(junk), "--cert", str(vcek)])
    assert result.exit_code == 2 and "Traceback" not in result.output
