"""Evidence bundles: manifest, signature, chain link and offline reverify of a demo-fleet run.

Each test works on a fresh copy of a run scanned once per module, so tampering in one test
never leaks into another.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from auditor.api import load_run, scan
from auditor.model import canonical_json
from auditor.runs.bundle import (
    MANIFEST_FILE,
    SIGNATURE_FILE,
    BundleError,
    Manifest,
    create_keypair,
    manifest_sha256,
    verify_bundle,
    write_manifest,
)
from auditor.runs.reverify import reverify
from tests.conftest import DEMO_FLEET

MAA_ISSUER = "https://ccaudit-demo-maa.example"
RAW_FILE = "raw/aws/111122223333/eu-west-1/DescribeInstances.json"
GUEST_FILE = "evidence/guest/payroll-db-cvm.jwt"
#: The Azure VM whose MAA token raises it to L2 (payroll-db-cvm).
MAA_VM = "ffe6e4c3-a5d4-44db-96de-52253ebab8ca"


def _demo_scan(run_dir: Path, run_id: str) -> None:
    with pytest.MonkeyPatch.context() as mp:  # the conftest env, for a module-scoped fixture
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        mp.setenv("AWS_CONFIG_FILE", "/dev/null")
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        for var in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
            mp.delenv(var, raising=False)
        scan(
            replay=DEMO_FLEET,
            run_dir=run_dir,
            run_id=run_id,
            guest_evidence=DEMO_FLEET / "guest-evidence",
            maa_issuers=[MAA_ISSUER],
            maa_jwks=DEMO_FLEET / "maa-demo-jwks.json",
        )


@pytest.fixture(scope="module")
def scanned(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two demo-fleet runs, unsealed; tests copy them before touching anything."""
    base = tmp_path_factory.mktemp("scanned")
    runs = {}
    for run_id in ("run-1", "run-2"):
        _demo_scan(base / run_id, run_id)
        runs[run_id] = base / run_id
    return runs


@pytest.fixture
def store(tmp_path: Path) -> Path:
    folder = tmp_path / "runs"
    folder.mkdir()
    return folder


@pytest.fixture
def run(scanned: dict[str, Path], store: Path) -> Path:
    """A private copy of run-1 in an otherwise empty store."""
    target = store / "run-1"
    shutil.copytree(scanned["run-1"], target)
    return target


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "audit.key"
    path.parent.mkdir()
    create_keypair(path)
    return path


def _seal(run_dir: Path, **kw: Any) -> Path:
    return write_manifest(run_dir, load_run(run_dir), **kw)


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


def _failed(report: Any) -> dict[str, str]:
    return {c.name: c.reason for c in report.checks if c.ok is False}


# --------------------------------------------------------------------------- manifest


def test_manifest_lists_every_file_and_verifies(run: Path, key: Path) -> None:
    path = _seal(run, signing_key=key)
    data = path.read_bytes()
    assert data == canonical_json(json.loads(data)), "manifest.json is canonical JSON"
    manifest = Manifest.model_validate_json(data)
    assert manifest.format == "cc-auditor-manifest" and manifest.version == 1
    assert manifest.run_id == "run-1"
    paths = [f.path for f in manifest.files]
    assert paths == sorted(paths)
    on_disk = sorted(
        p.relative_to(run).as_posix()
        for p in run.rglob("*")
        if p.is_file() and p.name not in (MANIFEST_FILE, SIGNATURE_FILE)
    )
    assert paths == on_disk
    assert {"result.json", "raw/replay.json", RAW_FILE, GUEST_FILE} <= set(paths)
    entry = next(f for f in manifest.files if f.path == RAW_FILE)
    raw = (run / RAW_FILE).read_bytes()
    assert entry.sha256 == hashlib.sha256(raw).hexdigest() and entry.size == len(raw)
    recorded = load_run(run)
    assert manifest.tool.version == recorded.tool.version
    assert manifest.tool.dependencies == recorded.tool.dependencies
    assert [(p.name, p.sha256) for p in manifest.rule_packs] == [
        (p.name, p.sha256) for p in recorded.rule_packs
    ]
    assert any(manifest.trust_anchors.values()), "pinned trust anchors are recorded"
    assert manifest.scope["maa_issuers"] == [MAA_ISSUER]
    assert manifest.previous is None

    report = verify_bundle(run, public_key=key.with_name("audit.key.pub"))
    assert report.ok, report.as_dict()
    assert [c.name for c in report.checks] == ["manifest", "files", "signature", "chain"]
    assert report.check("signature").ok is True  # type: ignore[union-attr]
    assert report.check("chain").ok is None  # type: ignore[union-attr]


@pytest.mark.parametrize("rel", [RAW_FILE, "result.json", GUEST_FILE])
def test_one_changed_byte_names_the_file(run: Path, rel: str) -> None:
    _seal(run)
    _flip_byte(run / rel)
    report = verify_bundle(run)
    assert not report.ok
    assert [(p.path, p.kind) for p in report.problems] == [(rel, "changed")]
    assert rel in _failed(report)["files"]


def test_missing_and_unlisted_files_are_named(run: Path) -> None:
    _seal(run)
    (run / GUEST_FILE).unlink()
    (run / "raw" / "aws" / "planted.json").write_text("{}")
    report = verify_bundle(run)
    assert not report.ok
    assert {(p.path, p.kind) for p in report.problems} == {
        (GUEST_FILE, "missing"),
        ("raw/aws/planted.json", "unlisted"),
    }
    reason = _failed(report)["files"]
    assert GUEST_FILE in reason and "raw/aws/planted.json" in reason


def test_symlinks_are_refused_when_sealing_and_reported_after(run: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.json"
    outside.write_text("{}")
    link = run / "raw" / "link.json"
    link.symlink_to(outside)
    with pytest.raises(BundleError, match=r"raw/link\.json.*symlink"):
        _seal(run)
    assert not (run / MANIFEST_FILE).exists()
    link.unlink()
    _seal(run)
    link.symlink_to(outside)
    report = verify_bundle(run)
    assert [(p.path, p.kind) for p in report.problems] == [("raw/link.json", "not_regular")]


def test_manifest_cannot_point_outside_the_run(run: Path) -> None:
    _seal(run)
    doc = json.loads((run / MANIFEST_FILE).read_bytes())
    doc["files"][0]["path"] = "../../etc/passwd"
    (run / MANIFEST_FILE).write_bytes(canonical_json(doc))
    report = verify_bundle(run)
    assert not report.ok
    assert "unsafe path" in _failed(report)["manifest"]


def test_unparsable_manifest_and_unsealed_run(run: Path) -> None:
    report = verify_bundle(run)
    assert not report.ok and "manifest" in _failed(report)
    (run / MANIFEST_FILE).write_text("{not json")
    report = verify_bundle(run)
    assert not report.ok and "does not parse" in _failed(report)["manifest"]


def test_sealing_refuses_a_run_object_of_another_run(run: Path, scanned: dict[str, Path]) -> None:
    with pytest.raises(BundleError, match="run-2"):
        write_manifest(run, load_run(scanned["run-2"]))


# --------------------------------------------------------------------------- signature


def test_wrong_public_key_fails_with_reason(run: Path, key: Path, tmp_path: Path) -> None:
    _seal(run, signing_key=key)
    other = tmp_path / "other.key"
    create_keypair(other)
    report = verify_bundle(run, public_key=tmp_path / "other.key.pub")
    assert not report.ok
    reason = _failed(report)["signature"]
    assert "does not verify with the given public key" in reason


def test_tampered_manifest_fails_the_signature(run: Path, key: Path) -> None:
    _seal(run, signing_key=key)
    doc = json.loads((run / MANIFEST_FILE).read_bytes())
    doc["scope"]["maa_issuers"] = ["https://evil.example"]
    (run / MANIFEST_FILE).write_bytes(canonical_json(doc))
    report = verify_bundle(run, public_key=key.with_name("audit.key.pub"))
    assert report.check("files").ok is True  # type: ignore[union-attr]
    assert "signature" in _failed(report)
    assert not report.ok


def test_no_key_means_unchecked_not_passed(run: Path, key: Path) -> None:
    _seal(run, signing_key=key)
    report = verify_bundle(run)
    sig = report.check("signature")
    assert sig is not None and sig.ok is None and not sig.ran
    assert "present" in sig.reason and "not checked" in sig.reason
    assert report.ok  # everything that ran passed

    _seal(run)  # resealed without a key: the stale signature is removed
    assert not (run / SIGNATURE_FILE).exists()
    sig = verify_bundle(run).check("signature")
    assert sig is not None and sig.ok is None and "unsigned" in sig.reason
    report = verify_bundle(run, public_key=key.with_name("audit.key.pub"))
    assert not report.ok and "unsigned" in _failed(report)["signature"]


def test_create_keypair(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    public = create_keypair(path)
    assert public.startswith("-----BEGIN PUBLIC KEY-----")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert (tmp_path / "k.pem.pub").read_text() == public
    before = path.read_bytes()
    with pytest.raises(BundleError, match="refusing to overwrite"):
        create_keypair(path)
    assert path.read_bytes() == before


# --------------------------------------------------------------------------- chain


def test_two_runs_chain_and_a_tampered_first_breaks_the_link(
    run: Path, scanned: dict[str, Path], store: Path
) -> None:
    _seal(run)
    second = store / "run-2"
    shutil.copytree(scanned["run-2"], second)
    manifest = Manifest.model_validate_json(_seal(second).read_bytes())
    assert manifest.previous is not None
    assert manifest.previous.run_id == "run-1"
    assert manifest.previous.manifest_sha256 == manifest_sha256(run)
    link = verify_bundle(second).check("chain")
    assert link is not None and link.ok is True and "run-1" in link.reason

    doc = json.loads((run / MANIFEST_FILE).read_bytes())
    doc["files"] = doc["files"][1:]  # hide a file from the first run
    (run / MANIFEST_FILE).write_bytes(canonical_json(doc))
    report = verify_bundle(second)
    assert report.check("files").ok is True  # type: ignore[union-attr]
    assert not report.ok
    reason = _failed(report)["chain"]
    assert "broken link" in reason and "run-1" in reason and "run-2" in reason


def test_chain_checks_an_explicit_previous_and_reports_a_missing_one(
    run: Path, scanned: dict[str, Path], tmp_path: Path
) -> None:
    _seal(run)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    second = elsewhere / "run-2"
    shutil.copytree(scanned["run-2"], second)
    _seal(second, previous=run)
    link = verify_bundle(second).check("chain")
    assert link is not None and link.ok is None and "not found" in link.reason
    assert verify_bundle(second, previous=run).check("chain").ok is True  # type: ignore[union-attr]
    with pytest.raises(BundleError):
        _seal(second, previous=elsewhere)  # not a sealed run


def test_default_previous_skips_other_providers(run: Path, store: Path) -> None:
    """A sealed run over other clouds, though newer than run-1, is not this chain's parent."""
    _seal(run)
    aws_only = store / "aws-only"
    aws_only.mkdir()
    doc = json.loads((run / MANIFEST_FILE).read_bytes())
    doc.update(run_id="aws-only", files=[], created="2050-01-01T00:00:00+00:00")
    doc["scope"]["providers"] = ["aws"]
    (aws_only / MANIFEST_FILE).write_bytes(canonical_json(doc))
    third = store / "run-3"
    shutil.copytree(run, third)
    (third / MANIFEST_FILE).unlink()
    result = json.loads((third / "result.json").read_text())
    result["run_id"] = "run-3"
    result["finished_at"] = "2099-01-01T00:00:00Z"
    (third / "result.json").write_text(json.dumps(result))
    manifest = Manifest.model_validate_json(_seal(third).read_bytes())
    assert manifest.previous is not None and manifest.previous.run_id == "run-1"


# --------------------------------------------------------------------------- reverify


#: google-cloud-logging's Logger() asks the GCE metadata server which resource it runs on
#: (detect_resource), once per log name, when the GCP provider parses log entries. Blocked
#: here; the provider should construct loggers with an explicit resource.


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Block and record any connection or name lookup that is not loopback."""
    attempts: list[Any] = []
    loopback = {"127.0.0.1", "::1", "localhost", None}
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo

    def connect(self: socket.socket, address: Any) -> None:
        host = address[0] if isinstance(address, tuple) else address
        if self.family in (socket.AF_INET, socket.AF_INET6) and host not in loopback:
            attempts.append(address)
            raise OSError(f"test forbids network access to {address}")
        real_connect(self, address)

    def getaddrinfo(host: Any, *args: Any, **kw: Any) -> Any:
        if host not in loopback:
            attempts.append(host)
            raise OSError(f"test forbids resolving {host}")
        return real_getaddrinfo(host, *args, **kw)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield attempts
    assert not attempts, f"reverify reached for the network: {attempts}"


def test_reverify_makes_no_lookup_at_all(run: Path, no_network: list[Any]) -> None:
    reverify(run)
    assert no_network == []


def test_reverify_reproduces_a_demo_run(run: Path, no_network: list[Any]) -> None:
    _seal(run)
    report = reverify(run, trust_bundle_inputs=True)
    assert report.ok, [str(d) for d in report.differences]
    assert report.trust.startswith("reproduced with the owner inputs shipped in the bundle")
    assert "MAA issuer pins (from the bundle)" in report.trust
    assert any("judged at the recording time 2026-11-22" in n for n in report.notes)
    assert report.vms == len(load_run(run).vms) > 0
    assert report.inputs["maa_issuers"] == [MAA_ISSUER]
    assert report.inputs["maa_jwks"] == str(run / "evidence/collateral/maa-jwks.json")
    assert report.inputs["guest_evidence"] == str(run / "evidence/guest")
    assert verify_bundle(run).ok, "reverify writes nothing into the bundle"


def test_reverify_shows_a_tampered_level(run: Path, no_network: list[Any]) -> None:
    doc = json.loads((run / "result.json").read_text())
    vm = next(v for v in doc["vms"] if v["provider"] == "aws" and v["level"] == "L1")
    vm["level"] = "L3"
    (run / "result.json").write_text(json.dumps(doc, indent=2))
    key = f"aws/{vm['account']}/{vm['region']}/{vm['id']}"
    report = reverify(run, trust_bundle_inputs=True)
    assert not report.ok
    assert [(d.vm, d.aspect, d.recorded, d.reproduced) for d in report.differences] == [
        (key, "level", "L3", "L1")
    ]
    assert list(report.by_vm()) == [key]


def test_reverify_trusts_only_its_own_pins_unless_told(run: Path) -> None:
    """The MAA pins and keys inside the bundle are owner inputs: not trusted by default, so the
    Azure VM whose token they verified does not reproduce; given explicitly, it does."""
    report = reverify(run)
    assert not report.ok
    assert list(report.by_vm()) == [next(k for k in report.by_vm() if k.endswith(MAA_VM))]
    assert any(d.aspect == "level" for d in report.differences)
    assert report.trust == (
        "independent: this tool's own pinned roots; owner inputs used: none; the bundle's own "
        "were not trusted (give them, or --trust-bundle-inputs)"
    )
    given = reverify(run, maa_issuers=[MAA_ISSUER], maa_jwks=DEMO_FLEET / "maa-demo-jwks.json")
    assert given.ok, [str(d) for d in given.differences]
    assert "MAA issuer pins (given)" in given.trust and "MAA signing keys (given)" in given.trust


def test_reverify_of_a_directory_without_a_run(tmp_path: Path) -> None:
    with pytest.raises(BundleError):
        reverify(tmp_path)
