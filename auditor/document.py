"""The VM document: the one normalised shape every rule reads as `vm`, for every cloud.

Providers fill it; rules read it; nothing else. A fact the evidence does not give is *absent*,
never defaulted, so a rule that needs it yields UNDETERMINED instead of silently not matching.
The sections below are the vocabulary of rule packs; a pack that names another section fails
to load (typos are caught before a scan, not after).
"""

from __future__ import annotations

import re

#: Top-level sections of the document, with what they hold. Shown by `ccaudit rules fields`.
SECTIONS: dict[str, str] = {
    "provider": "cloud: aws | gcp | azure",
    "account": "AWS account id, GCP project, Azure subscription",
    "region": "region of the VM",
    "zone": "availability zone, where the cloud has one",
    "id": "the cloud's id of the VM",
    "name": "display name (AWS: tag Name)",
    "instance_type": "instance type / machine type / VM size",
    "state": "lifecycle state as the cloud reports it",
    "tags": "map of tags or labels",
    "technology": "NONE | SEV | SEV_ES | SEV_SNP | TDX | UNKNOWN, as the control plane states it",
    "cc": "confidential-computing claim: {technology, claimed_by, raw_flag, policy: {raw, debug, "
    "migration, ...} (libvirt: the guest policy in the domain XML)}",
    "platform": "what the instance type supports: {snp_supported, tdx_supported, "
    "tpm_supported, boot_modes, hypervisor}",
    "boot": "{mode (legacy-bios | uefi | uefi-preferred), current_mode, secure_boot}",
    "tpm": "{present, version, implemented_by, ek: {present, source, certificate, "
    "chain_verified, identity_match, verified, reason}, event_log: {present, parsed, events, "
    "secure_boot}}",
    "image": "{id, name, owner_id, owner_alias, owned_by_account, boot_mode, tpm_support}",
    "disks": "list of {id, device, boot, encrypted, custody, kms_key, lun (Azure data disks), "
    "guest_encrypted and guest_device (from the verified guest evidence: a dm-crypt device in "
    "the guest covers this disk)}",
    "metadata_service": "{enabled, tokens_required, hop_limit}",
    "console": "{serial_port_enabled}: provider-mediated consoles into the guest",
    "agents": "provider code in the guest: {vm_agent, extension_operations_allowed, "
    "extensions: [{name, publisher, type}], run_command}",
    "migration": "{live_migration, provider_controlled}: who can move the VM between hosts",
    "hardware": "hardware report from guest evidence, verified by this tool: {present, "
    "technology, authentic (vendor-signed, chain to pinned roots), bound (REPORT_DATA = this "
    "audit's nonce, VM identity and the guest's claims), fresh, verified (all three), "
    "claims_bound, evidence_sha256, trust_anchor, demo_anchor, signer, product, debug, "
    "migrate_ma (SNP MIGRATE_MA / TDX MIGRATABLE), smt, vmpl, measurement, measurement_matched "
    "(only when references are given), measurement_reference, endorsement_verified, "
    "reported_tcb, committed_tcb, tcb_current (absent when unknown), tcb_below_minimum, "
    "tcb_bulletins, tcb_summary, caveat, reason, path (azure-hcl: through the paravisor's "
    "vTPM), vtpm: {present, quote_verified, ak_certified, ak_source, bound_to_report, "
    "inside_tee, implemented_by (paravisor | host), event_log_replayed, replay_problem, boot: "
    "{secure_boot, applications, kernel_cmdline, reference_matched, reference, mismatch}}}",
    "guest": "the guest's claims, only from the one evidence file whose report verified and "
    "covers them: {evidence_file, claims_used, disk_encryption: {root_encrypted, "
    "all_disks_covered, devices}, key_release: {present, verified, broker, jurisdiction, "
    "reason}, kernel_cmdline, collection_errors}",
    "attestation": "what the provider's attestation service or logs say: {provider_verdict: "
    "none | passed | failed, source, launch: {integrity_passed, debug_enabled, ...}, boot}",
    "kubernetes": "the cluster and node pool this VM is a node of, as the cloud records it: "
    "{platform (gke | aks | eks), source, cluster, node_pool, cluster_location, "
    "cluster_resource_group, instance_template, declared_technology (what the node pool "
    "declares, where the cloud records it)}",
    "gaps": "list of {call, code, message}: evidence the scan could not collect for this VM",
    "aws": "AWS-specific raw facts",
    "gcp": "GCP-specific raw facts",
    "azure": "Azure-specific raw facts",
    "libvirt": "libvirt host and domain facts: {host, uri, operator, location, libvirt_version, "
    "hypervisor_version, virt_type, firmware: {mode, loader, stateless, secure_boot, kernel, "
    "cmdline}, host_paths (consoles, virtiofs, shared memory), memballoon, kernel_hashes, "
    "launch_session, cpu_model, cpu_vendor, arch}",
}

_SECTION_REF = re.compile(r"\bvm\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)")
_STRING_LITERAL = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")


def referenced_sections(expression: str) -> list[str]:
    """Top-level sections a CEL expression reads (`vm.disks.exists(...)` -> ["disks"])."""
    code = _STRING_LITERAL.sub('""', expression)
    seen: list[str] = []
    for name in _SECTION_REF.findall(code):
        if name not in seen:
            seen.append(name)
    return seen
