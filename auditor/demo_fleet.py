"""The embedded demo fleet and how it is scanned: one definition for `ccaudit demo`, the Python
API (`auditor.demo()`), the notebook and the tests.

The demo is a replay of three clouds plus guest evidence signed by a *demo trust anchor* (a
self-made AMD-style chain, not AMD), its nonces, reference measurements, key-broker key and an
MAA-style token signed by a demo key for a made-up issuer. Every verdict resting on the demo
anchor says so.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

#: The demo fleet's MAA token is signed by a demo key for this made-up issuer, never Microsoft's.
MAA_ISSUER = "https://ccaudit-demo-maa.example"


def fleet_dir() -> Path:
    """The embedded demo replay: inside the wheel, or examples/ in a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_demo" / "demo-fleet", here.parent / "examples" / "demo-fleet"):
        if (candidate / "aws").is_dir():
            return candidate
    raise FileNotFoundError("the embedded demo fleet is missing from this installation")


def scan_options(state_dir: Path, fleet: Path | None = None) -> dict[str, Any]:
    """`auditor.api.scan` arguments for the demo, its issued nonces copied into `state_dir`
    (the scan records their use there; the package is never written to)."""
    fleet = fleet or fleet_dir()
    state_dir.mkdir(parents=True, exist_ok=True)
    nonces = fleet / "audit-state" / "nonces.json"
    if nonces.is_file():
        shutil.copy(nonces, state_dir / "nonces.json")
    guest = fleet / "guest-evidence"
    references = fleet / "reference-measurements.yaml"
    return {
        "replay": fleet,
        "guest_evidence": guest if guest.is_dir() else None,
        "maa_issuers": [MAA_ISSUER],
        "maa_jwks": fleet / "maa-demo-jwks.json" if guest.is_dir() else None,
        "rules": [references] if references.is_file() else [],
        "nonce_state": state_dir,
        "demo_trust_anchor": fleet / "demo-trust-anchor",
        "key_broker_keys": sorted((fleet / "demo-key-broker").glob("*.pem")),
        "offline": True,
    }
