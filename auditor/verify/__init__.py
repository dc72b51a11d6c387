"""Verifiers: pure functions over evidence bytes and pinned trust anchors (DESIGN.md §3).

One module per technology: `x509chain` (chains to pinned roots), `gce_identity` (GCE vTPM EK
certificates); SNP reports, TDX quotes and MAA tokens follow. `stage` applies them to a
collection and records each result, with its reasons, on the evidence it checked.
"""
