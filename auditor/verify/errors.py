"""Typed errors every verifier raises for input it cannot use.

`EvidenceFormatError` means "this is not evidence I can read" (truncated, unknown version, wrong
encoding): the CLI exits 2 with its one-line message, the scan records it as a gap naming the VM
and the file. A *verification failure* (wrong signature, broken chain) is not an exception: it is
a failed check in the verifier's result.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm


class EvidenceFormatError(ValueError):
    """The input is not evidence of the expected kind: truncated, unknown version or encoding."""


#: What `cryptography` raises for a malformed certificate, at load or when a lazily decoded part
#: (names, extensions) is first read. Not all are ValueErrors: a duplicated extension raises
#: `x509.DuplicateExtension`, which a plain `except ValueError` lets through.
CERT_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)


def decoded(cert: x509.Certificate, what: str) -> x509.Certificate:
    """`cert` with every lazily decoded part read now (names, extensions, key), so a malformed
    certificate fails here with an EvidenceFormatError naming `what`, not mid-verification."""
    try:
        cert.subject.rfc4514_string()
        cert.issuer.rfc4514_string()
        for ext in cert.extensions:
            _ = ext.value
        cert.public_key()
        _ = cert.not_valid_after_utc
    except CERT_ERRORS as err:
        raise EvidenceFormatError(f"{what}: not a usable certificate ({err})") from err
    return cert
