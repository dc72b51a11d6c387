"""Verifiers: pure functions over evidence bytes and pinned trust anchors (DESIGN.md §3).

One module per technology, each split like google/go-sev-guest (parse, verify, validate):
- `snp` + `amd` (SEV-SNP reports, VCEK/VLEK chains to pinned ARKs, TCB minimums in
  `tcb_minimums.yaml`), `measurement` (expected launch digests via sev-snp-measure);
- `tdx` + `intel` (TDX quotes, PCK chains to the pinned Intel root, TCB Info / QE Identity);
- `eventlog` (TCG crypto-agile event logs, CCEL replay), `tpm` + `gotpm` (TPM2 quotes,
  go-tpm-tools attestations), `gce_identity` (GCE vTPM EK certificates), `azure_hcl`;
- `gce_endorsement` (signed GCE firmware endorsements), `maa` (Azure Attestation tokens),
  `key_release` (owner key-broker receipts);
- `x509chain`, `anchors`, `checks`, `errors`, `blobs`: shared pieces.
`evidence` verifies one guest evidence file as a whole (binding, freshness), `options` turns
user input into what verifiers trust, and `stage` applies all of it to a collection.
"""
