"""Secrets never leave the credential sources: not in output, logs, reports, raw/ or bundles.

Sentinel strings are planted in every credential source the SDKs read (AWS environment,
shared credentials file, config file and session tokens; a Google service-account key file
and the access token a loopback token endpoint hands out; Azure's client secret in the
environment). Real scans then use them against fakecloud, and every byte the tool produced
is searched for every sentinel.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from typer.testing import CliRunner

from auditor import reports
from auditor.cli import app
from auditor.fakecloud import FakeCloud
from auditor.run import load_run
from tests.conftest import DEMO_FLEET

AWS_SECRET = "SENTINELawsSecretKey0001qwerty"
AWS_TOKEN = "SENTINELawsSessionToken0002asdfgh"
AWS_CFG_SECRET = "SENTINELawsConfigSecret0003zxcv"
AWS_CFG_TOKEN = "SENTINELawsConfigToken0004poiu"
AWS_ENV_SECRET = "SENTINELawsEnvSecret0005lkjh"
AWS_ENV_TOKEN = "SENTINELawsEnvToken0006mnbv"
GCP_KEY_ID = "SENTINELgcpPrivateKeyId0007"
GCP_TOKEN = "SENTINELgcpAccessToken0008ya29"
GCP_CLIENT_SECRET = "SENTINELgcpClientSecret0009"
AZURE_SECRET = "SENTINELazureClientSecret0010"

AWS_ACCOUNT_A = "111122223333"  # fakecloud maps an access key equal to an account id to it
AWS_ACCOUNT_B = "444455556666"
GCP_PROJECT = "eu-claims-prod"
AZURE_SUB = "ab4bd4af-8843-4e36-bac0-04fdd527ff09"


class _TokenHandler(BaseHTTPRequestHandler):
    """A loopback OAuth token endpoint: any assertion gets the sentinel access token."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps(
            {"access_token": GCP_TOKEN, "expires_in": 3600, "token_type": "Bearer"}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def token_endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TokenHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/token"
    server.shutdown()
    server.server_close()


@pytest.fixture
def planted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, token_endpoint: str) -> list[str]:
    """Every credential source holds sentinels; returns the strings that must never appear."""
    creds = tmp_path / "aws-credentials"
    creds.write_text(
        f"[sentinel]\naws_access_key_id = {AWS_ACCOUNT_A}\n"
        f"aws_secret_access_key = {AWS_SECRET}\naws_session_token = {AWS_TOKEN}\n"
    )
    config = tmp_path / "aws-config"
    config.write_text(
        f"[profile cfgprofile]\naws_access_key_id = {AWS_ACCOUNT_B}\n"
        f"aws_secret_access_key = {AWS_CFG_SECRET}\naws_session_token = {AWS_CFG_TOKEN}\n"
        "region = eu-west-1\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AWS_ACCOUNT_A)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_ENV_SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", AWS_ENV_TOKEN)

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    service_account = {
        "type": "service_account",
        "project_id": GCP_PROJECT,
        "private_key_id": GCP_KEY_ID,
        "private_key": pem,
        "client_email": "ccaudit-sentinel@eu-claims-prod.iam.gserviceaccount.com",
        "client_id": "100000000000000000001",
        "token_uri": token_endpoint,
        "client_secret": GCP_CLIENT_SECRET,
    }
    adc = tmp_path / "adc.json"
    adc.write_text(json.dumps(service_account))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(adc))
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", GCP_PROJECT)
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")  # never the real metadata server

    monkeypatch.setenv("AZURE_TENANT_ID", "00000000-0000-0000-0000-0000000000aa")
    monkeypatch.setenv("AZURE_CLIENT_ID", "00000000-0000-0000-0000-0000000000bb")
    monkeypatch.setenv("AZURE_CLIENT_SECRET", AZURE_SECRET)
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", "http://127.0.0.1:9")

    # the key's base64 body lines: a leaked key would show at least one of them whole
    key_lines = [line for line in pem.splitlines() if line and not line.startswith("-----")]
    return [
        AWS_SECRET,
        AWS_TOKEN,
        AWS_CFG_SECRET,
        AWS_CFG_TOKEN,
        AWS_ENV_SECRET,
        AWS_ENV_TOKEN,
        GCP_KEY_ID,
        GCP_TOKEN,
        GCP_CLIENT_SECRET,
        AZURE_SECRET,
        *key_lines,
    ]


def _leaks(data: bytes, sentinels: list[str], where: str) -> list[str]:
    return [f"{where}: {s[:24]}" for s in sentinels if s.encode() in data]


def _readable(path: Path) -> bytes:
    """The bytes to search: Parquet columns are compressed, so search their decoded values."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return json.dumps(pq.read_table(path).to_pylist(), default=str).encode()
    return path.read_bytes()


def _dir_leaks(root: Path, sentinels: list[str]) -> list[str]:
    found: list[str] = []
    for path in sorted(root.rglob("*")):
        if path.is_file():
            found += _leaks(_readable(path), sentinels, str(path.relative_to(root)))
    return found


def test_no_sentinel_in_any_output(
    planted: list[str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import auditor.workers

    in_workers: list[int] = []
    real = auditor.workers.collect_in_workers

    def spy(*args: Any, **kwargs: Any) -> Any:
        outcome = real(*args, **kwargs)
        in_workers.append(outcome.finished)
        return outcome

    monkeypatch.setattr(auditor.workers, "collect_in_workers", spy)
    caplog.set_level(logging.DEBUG, logger="auditor")
    caplog.set_level(logging.INFO)
    runner = CliRunner()
    keys = tmp_path / "signing.pem"
    assert runner.invoke(app, ["keys", "create", str(keys)]).exit_code == 0
    leaks: list[str] = []
    with FakeCloud(DEMO_FLEET) as cloud:
        runs = {
            "profiles": [
                "--provider",
                "aws",
                "--profile",
                "sentinel",
                "--profile",
                "cfgprofile",
                "--provider",
                "gcp",
                "--project",
                GCP_PROJECT,
                "--provider",
                "azure",
                "--subscription",
                AZURE_SUB,
                # read in two worker processes: the resolved credentials travel to them
                "--processes",
                "2",
            ],
            "environment": ["--provider", "aws", "--regions", "eu-west-1,us-east-2"],
        }
        for name, args in runs.items():
            run_dir = tmp_path / name
            # every format but PDF, whose text streams are compressed: it is rendered from the
            # same HTML report, which is searched
            formats = [f for f in reports.names() if f != "pdf"]
            if name != "profiles":
                formats = ["json", "html", "markdown"]
            result = runner.invoke(
                app,
                [
                    "scan",
                    *args,
                    "--endpoint-url",
                    cloud.endpoint,
                    "--run-dir",
                    str(run_dir),
                    "--format",
                    ",".join(formats),
                    "--signing-key",
                    str(keys),
                ],
            )
            assert result.exit_code in (0, 3), result.output
            leaks += _leaks(result.output.encode(), planted, f"{name}: CLI output")
            leaks += _dir_leaks(run_dir, planted)
            run = load_run(run_dir)
            assert run.vms, f"{name}: the planted credentials were used and the scan saw VMs"
            # every report format was written into the run directory (searched above)
            assert (run_dir / "report.html").is_file() and (run_dir / "manifest.sig").is_file()
        sent = {r.cloud for r in cloud.request_log if r.status == 200}
    assert {"aws", "gcp"} <= sent  # AWS and GCP calls really carried the planted credentials
    assert in_workers and in_workers[0] > 1  # the profiles run was read by worker processes
    leaks += _leaks(caplog.text.encode(), planted, "logs")
    assert not leaks, leaks


def test_azure_credential_failure_names_no_secret(
    planted: list[str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The Azure secret cannot reach a token endpoint here: the failure is a gap, secret-free."""
    caplog.set_level(logging.INFO)
    with FakeCloud(DEMO_FLEET) as cloud:
        result = CliRunner().invoke(
            app,
            [
                "scan",
                "--provider",
                "azure",
                "--subscription",
                AZURE_SUB,
                "--endpoint-url",
                cloud.endpoint,
                "--run-dir",
                str(tmp_path / "az"),
                "--format",
                "json",
            ],
        )
    assert result.exit_code == 3, result.output
    run = load_run(tmp_path / "az")
    assert run.coverage.gaps and not run.vms
    leaks = _leaks(result.output.encode(), planted, "CLI output")
    leaks += _dir_leaks(tmp_path / "az", planted)
    leaks += _leaks(caplog.text.encode(), planted, "logs")
    assert not leaks, leaks


def test_the_search_would_find_a_leak(tmp_path: Path) -> None:
    """The search is not vacuous: a sentinel in a text file or a Parquet column is found."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.txt").write_text(f"x {AWS_SECRET} y")
    pq.write_table(pa.table({"c": [GCP_TOKEN]}), tmp_path / "b.parquet", compression="snappy")
    found = _dir_leaks(tmp_path, [AWS_SECRET, GCP_TOKEN, AZURE_SECRET])
    assert sorted(found) == sorted([f"a.txt: {AWS_SECRET[:24]}", f"b.parquet: {GCP_TOKEN[:24]}"])
