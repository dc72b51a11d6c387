"""Certificate chains to pinned roots, with a reason for every step.

Written for vTPM EK certificates and AMD/Intel chains alike: signature of each link by the next,
validity at the given time, and an end in a pinned root. Key usage policies belong to the
caller, which knows what the leaf is for.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from auditor.verify.anchors import TrustStore, fingerprint

MAX_DEPTH = 6


@dataclass
class ChainResult:
    ok: bool
    reason: str
    path: list[str] = field(default_factory=list)  # subjects, leaf first
    root_fingerprint: str | None = None


def _valid_at(cert: x509.Certificate, at: datetime) -> bool:
    return cert.not_valid_before_utc <= at <= cert.not_valid_after_utc


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def verify_chain(
    leaf: x509.Certificate,
    store: TrustStore,
    at: datetime,
    extra_intermediates: tuple[x509.Certificate, ...] = (),
) -> ChainResult:
    """Walk issuer links from `leaf` to a pinned root of `store`, checking each signature."""
    # Google's own vTPM CA names (tpm_ek_v1_cloud_host-signer-...) exceed X.520's 64-character
    # upper bound and cryptography warns on every parse; the names are compared, not judged.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Attribute's length", category=UserWarning)
        return _walk(leaf, store, at, extra_intermediates)


def _walk(
    leaf: x509.Certificate,
    store: TrustStore,
    at: datetime,
    extra_intermediates: tuple[x509.Certificate, ...],
) -> ChainResult:
    pool = store.intermediates + extra_intermediates
    path = [leaf.subject.rfc4514_string()]
    current = leaf
    for _ in range(MAX_DEPTH):
        if not _valid_at(current, at):
            return ChainResult(
                False,
                f"certificate '{current.subject.rfc4514_string()}' is not valid at "
                f"{at.isoformat()} (valid {current.not_valid_before_utc.date()} to "
                f"{current.not_valid_after_utc.date()})",
                path,
            )
        for root in store.roots:
            if current.issuer == root.subject and _issued_by(current, root):
                if not _valid_at(root, at):
                    return ChainResult(False, "the pinned root has expired", path)
                if fingerprint(current) != fingerprint(root):
                    path.append(root.subject.rfc4514_string())
                return ChainResult(
                    True,
                    f"chains to pinned root '{root.subject.rfc4514_string()}'",
                    path,
                    fingerprint(root),
                )
        parents = [c for c in pool if c.subject == current.issuer and _issued_by(current, c)]
        if not parents:
            named = [c for c in store.roots + pool if c.subject == current.issuer]
            why = (
                "its signature does not verify with the pinned issuer"
                if named
                else "its issuer is not a pinned root or known intermediate"
            )
            return ChainResult(
                False,
                f"'{current.subject.rfc4514_string()}' (issuer "
                f"'{current.issuer.rfc4514_string()}'): {why} of {store.name}",
                path,
            )
        current = parents[0]
        path.append(current.subject.rfc4514_string())
    return ChainResult(False, f"chain longer than {MAX_DEPTH} certificates", path)
