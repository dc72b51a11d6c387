"""Typed errors every verifier raises for input it cannot use.

`EvidenceFormatError` means "this is not evidence I can read" (truncated, unknown version, wrong
encoding): the CLI exits 2 with its one-line message, the scan records it as a gap naming the VM
and the file. A *verification failure* (wrong signature, broken chain) is not an exception: it is
a failed check in the verifier's result.
"""

from __future__ import annotations


class EvidenceFormatError(ValueError):
    """The input is not evidence of the expected kind: truncated, unknown version or encoding."""
