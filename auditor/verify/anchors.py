"""Trust anchors shipped with cc-auditor, pinned by SHA-256 fingerprint.

A verifier never trusts a root because a file says so: every packaged root and intermediate is
checked against the fingerprints below when loaded, so a swapped file is an error, not a pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

ANCHOR_DIR = Path(__file__).parent / "anchors"


@dataclass(frozen=True)
class TrustStore:
    """Roots a chain must end in, and intermediates it may pass through."""

    name: str
    roots: tuple[x509.Certificate, ...]
    intermediates: tuple[x509.Certificate, ...] = ()

    def fingerprints(self) -> dict[str, str]:
        return {c.subject.rfc4514_string(): fingerprint(c) for c in self.roots + self.intermediates}


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


class AnchorError(Exception):
    """A packaged trust anchor is missing or does not match its pinned fingerprint."""


#: GCE vTPM EK/AK CAs (google/go-tpm-tools server/ca-certs).
GCP_VTPM_PINS: dict[str, tuple[str, bool]] = {
    "ek_ak_ca_root.pem": (
        "594759594b9b61524f6c8ef668f7177f7b9066bc0674f2f49fe9e052be78beb2",
        True,
    ),
    "ek_ak_ca_intermediate_v3.pem": (
        "c84de8116dfaf5a908f21e810487791f5437e206d00ad8025050cca6bd2ff627",
        False,
    ),
    "tpm_ek_root_1.pem": (
        "9bd5285f8fb18502a7947e621ffd470266f49fcd3b73e19a190f690ad32a7caf",
        True,
    ),
    "tpm_ek_intermediate_2.pem": (
        "5d8dbcf8c8053dd8ffad711b6219355032b7122c34cac0f90ccb49def69ec504",
        False,
    ),
    "tpm_ek_intermediate_3.pem": (
        "7132b6ea71101f6c51bb58f98c3798c19b65be510eca0344318900510b593178",
        False,
    ),
}


def load_pinned(folder: str, pins: dict[str, tuple[str, bool]], name: str) -> TrustStore:
    roots: list[x509.Certificate] = []
    inter: list[x509.Certificate] = []
    for filename, (expected, is_root) in pins.items():
        path = ANCHOR_DIR / folder / filename
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
        except (OSError, ValueError) as err:
            raise AnchorError(f"trust anchor {path} unusable: {err}") from err
        got = fingerprint(cert)
        if got != expected:
            raise AnchorError(f"trust anchor {path} has fingerprint {got}, pinned {expected}")
        (roots if is_root else inter).append(cert)
    return TrustStore(name=name, roots=tuple(roots), intermediates=tuple(inter))


@lru_cache(maxsize=1)
def gcp_vtpm_store() -> TrustStore:
    """Google's vTPM EK/AK CA roots: the only anchors a GCE EK certificate may chain to."""
    return load_pinned("gcp", GCP_VTPM_PINS, "Google Compute Engine vTPM EK/AK CA")


#: Azure vTPM EK/AK CAs (public Microsoft PKI certificates, see anchors/azure/NOTICE).
AZURE_VTPM_PINS: dict[str, tuple[str, bool]] = {
    "azure_virtual_tpm_root_ca_2023.pem": (
        "e6c596b17f8ffefba5c300f714cfb1260c6028704ecf7becc4ab5018efb00e95",
        True,
    ),
    "microsoft_rsa_devices_root_ca_2021.pem": (
        "8c2bb9144d4970c94fb8105cc5d860a58e2e675eb360fdd8c14b30833aaaec1d",
        True,
    ),
    "global_virtual_tpm_ca_03.pem": (
        "fd7c92dabce4dcec9feaa30f8b087ada0598413189182152b881f5564064a29c",
        False,
    ),
}


@lru_cache(maxsize=1)
def azure_vtpm_store() -> TrustStore:
    """Microsoft's vTPM roots: the anchors an Azure vTPM EK or AK certificate may chain to."""
    return load_pinned("azure", AZURE_VTPM_PINS, "Microsoft Azure vTPM CA")
