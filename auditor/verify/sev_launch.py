"""A SEV or SEV-ES launch measurement, checked with the guest owner's launch session key.

Before a SEV guest runs, the owner asks the host for LAUNCH_MEASURE (libvirt:
`virDomainGetLaunchSecurityInfo` while the domain is paused). The secure processor answers
MEASURE || MNONCE, where (AMD SEV API, LAUNCH_MEASURE)

    MEASURE = HMAC-SHA-256(0x04 || API_MAJOR || API_MINOR || BUILD || POLICY || LD || MNONCE; TIK)

LD is the launch digest of what was loaded (OVMF, kernel hashes, and for SEV-ES the VMSAs:
`ccaudit measure sev`), POLICY the 32-bit guest policy (little-endian) and TIK the transport
integrity key from the launch session the owner built. Only the owner holds the TIK, so only
the owner can check it: a host that knows no TIK cannot forge a MEASURE for other firmware. A
scan records the measurement; `ccaudit verify sev-launch` checks it. Plain SEV has no integrity
protection after launch, so even a checked launch never takes the hypervisor out.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from auditor.verify.checks import Check

MEASURE_BYTES = 32
MNONCE_BYTES = 16
TIK_BYTES = 16
DIGEST_BYTES = 32
_CONTEXT = b"\x04"


class SevLaunchError(ValueError):
    """The launch information is not what the secure processor returns (missing, wrong size)."""


@dataclass(frozen=True)
class SevLaunch:
    """What `virDomainGetLaunchSecurityInfo` returned for a SEV or SEV-ES guest."""

    measure: bytes
    mnonce: bytes
    api_major: int
    api_minor: int
    build_id: int
    policy: int

    def describe(self) -> str:
        return (
            f"SEV firmware {self.api_major}.{self.api_minor} build {self.build_id}, "
            f"policy 0x{self.policy:04x}, measurement {self.measure.hex()[:16]}..."
        )


def _byte(info: dict[str, Any], key: str) -> int:
    value = info.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0xFF:
        raise SevLaunchError(f"{key} must be an integer 0-255, not {value!r}")
    return value


def parse_launch_info(info: dict[str, Any]) -> SevLaunch:
    """The typed parameters libvirt returns (`sev-measurement` base64, `sev-api-major`, ...)."""
    raw = info.get("sev-measurement")
    if not isinstance(raw, str) or not raw:
        raise SevLaunchError("no sev-measurement (the domain was not paused in its launch window)")
    try:
        blob = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as err:
        raise SevLaunchError(f"sev-measurement is not base64: {err}") from err
    if len(blob) != MEASURE_BYTES + MNONCE_BYTES:
        raise SevLaunchError(
            f"sev-measurement is {len(blob)} bytes; MEASURE || MNONCE is "
            f"{MEASURE_BYTES + MNONCE_BYTES}"
        )
    policy = info.get("sev-policy")
    if not isinstance(policy, int) or isinstance(policy, bool) or not 0 <= policy < 1 << 32:
        raise SevLaunchError(f"sev-policy must be a 32-bit integer, not {policy!r}")
    return SevLaunch(
        measure=blob[:MEASURE_BYTES],
        mnonce=blob[MEASURE_BYTES:],
        api_major=_byte(info, "sev-api-major"),
        api_minor=_byte(info, "sev-api-minor"),
        build_id=_byte(info, "sev-build-id"),
        policy=policy,
    )


def expected_measure(launch: SevLaunch, digest: bytes, tik: bytes) -> bytes:
    """MEASURE the secure processor computes for launch digest `digest` under `tik`."""
    if len(digest) != DIGEST_BYTES:
        raise SevLaunchError(f"the launch digest is {len(digest)} bytes, {DIGEST_BYTES} expected")
    if len(tik) != TIK_BYTES:
        raise SevLaunchError(f"the TIK is {len(tik)} bytes, {TIK_BYTES} expected")
    message = (
        _CONTEXT
        + bytes((launch.api_major, launch.api_minor, launch.build_id))
        + launch.policy.to_bytes(4, "little")
        + digest
        + launch.mnonce
    )
    return hmac.new(tik, message, hashlib.sha256).digest()


SEV_NODBG, SEV_NOSEND, SEV_ES = 0x1, 0x8, 0x4


@dataclass(frozen=True)
class SevLaunchCheck:
    """Every check, by name: `measure` (authentic: HMAC under the TIK over the expected digest),
    then what the policy lets the host do (`policy_debug`, `policy_send`) and, when the owner
    gave one, `policy_expected`."""

    launch: SevLaunch
    checks: tuple[Check, ...]

    @property
    def authentic(self) -> bool:
        return all(c.ok for c in self.checks if c.name == "measure")

    @property
    def passes(self) -> bool:
        return all(c.ok for c in self.checks)

    def facts(self) -> dict[str, Any]:
        return {
            "measurement": self.launch.measure.hex(),
            "mnonce": self.launch.mnonce.hex(),
            "firmware": f"{self.launch.api_major}.{self.launch.api_minor}",
            "build_id": self.launch.build_id,
            "policy": f"0x{self.launch.policy:04x}",
            "sev_es": bool(self.launch.policy & SEV_ES),
        }


def check_launch(
    info: dict[str, Any], digest: bytes, tik: bytes, expected_policy: int | None = None
) -> SevLaunchCheck:
    """Does the measurement prove this firmware was launched, under the session's TIK, with a
    policy that keeps the host from debugging or sending the guest?"""
    launch = parse_launch_info(info)
    matches = hmac.compare_digest(expected_measure(launch, digest, tik), launch.measure)
    checks = [
        Check(
            "measure",
            matches,
            f"HMAC-SHA-256 under the TIK over launch digest {digest.hex()[:16]}... equals the "
            "measurement"
            if matches
            else "the measurement is not HMAC(TIK) over the expected launch digest: other "
            "firmware was loaded, the policy or firmware version differs, or the TIK is not "
            "this launch session's",
        ),
        Check(
            "policy_debug",
            bool(launch.policy & SEV_NODBG),
            "NODBG set" if launch.policy & SEV_NODBG else "NODBG clear: the host may debug",
        ),
        Check(
            "policy_send",
            bool(launch.policy & SEV_NOSEND),
            "NOSEND set"
            if launch.policy & SEV_NOSEND
            else "NOSEND clear: the host may send the guest to another platform",
        ),
    ]
    if expected_policy is not None:
        same = expected_policy == launch.policy
        checks.append(
            Check(
                "policy_expected",
                same,
                f"policy 0x{launch.policy:04x}"
                + ("" if same else f", expected 0x{expected_policy:04x}"),
            )
        )
    return SevLaunchCheck(launch, tuple(checks))


def make_launch_info(
    digest: bytes, tik: bytes, mnonce: bytes, policy: int, api: tuple[int, int, int]
) -> dict[str, Any]:
    """What a secure processor would return for this launch: the demo and tests build it."""
    shell = SevLaunch(b"", mnonce, api[0], api[1], api[2], policy)
    measure = expected_measure(shell, digest, tik)
    return {
        "sev-measurement": base64.b64encode(measure + mnonce).decode("ascii"),
        "sev-api-major": api[0],
        "sev-api-minor": api[1],
        "sev-build-id": api[2],
        "sev-policy": policy,
    }
