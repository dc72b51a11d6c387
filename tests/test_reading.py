"""The reading a compliance officer signs: levels and the GDPR answer agree, plain SEV never
outranks SEV-SNP or TDX, and every demo VM reads exactly as the demo fleet's README says."""

from __future__ import annotations

import copy
import shutil
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.api import scan
from auditor.engine import Engine
from auditor.model import VM, Answer, AuditRun, Level, Party
from auditor.rules.loader import load_packs
from auditor.verify.proof import record_proof
from tests.conftest import DEMO_FLEET

ENGINE = Engine(load_packs())

documents = st.fixed_dictionaries(
    {
        "technology": st.just("SEV_SNP"),
        "tpm": st.fixed_dictionaries({"present": st.booleans()}),
        "disks": st.lists(
            st.fixed_dictionaries(
                {
                    "encrypted": st.booleans(),
                    "custody": st.sampled_from(["none", "provider_kms", "provider_key"]),
                    "boot": st.booleans(),
                },
                optional={"guest_encrypted": st.booleans()},
            ),
            max_size=2,
        ),
        "metadata_service": st.fixed_dictionaries({"enabled": st.booleans()}),
        "attestation": st.fixed_dictionaries(
            {"provider_verdict": st.sampled_from(["none", "passed", "failed"])},
            optional={
                "launch": st.fixed_dictionaries({"debug_enabled": st.booleans()}),
                "boot": st.fixed_dictionaries({"early_passed": st.booleans()}),
            },
        ),
        "image": st.fixed_dictionaries({"owned_by_account": st.booleans()}),
    },
    optional={
        "migration": st.fixed_dictionaries({"live_migration": st.booleans()}),
        "console": st.fixed_dictionaries({"serial_port_enabled": st.booleans()}),
        "guest": st.fixed_dictionaries(
            {
                "claims_used": st.just(True),
                "agents": st.fixed_dictionaries(
                    {
                        "provider_agents": st.sampled_from([[], ["amazon-ssm-agent"]]),
                        "cloud_init": st.booleans(),
                    }
                ),
                "nothing_sealed_to_vtpm": st.booleans(),
                "disk_encryption": st.fixed_dictionaries(
                    {"root_encrypted": st.booleans(), "all_disks_covered": st.booleans()}
                ),
                "key_release": st.fixed_dictionaries({"verified": st.booleans()}),
            }
        ),
    },
)
hardware = st.fixed_dictionaries(
    {
        "present": st.just(True),
        "authentic": st.just(True),
        "bound": st.just(True),
        "fresh": st.just(True),
        "verified": st.just(True),
        "claims_bound": st.just(True),
        "debug": st.booleans(),
        "migrate_ma": st.booleans(),
        "measurement_matched": st.booleans(),
        "tcb_current": st.booleans(),
        "tcb_below_minimum": st.booleans(),
    }
)


def _vm(doc: dict[str, Any], technology: str, hw: dict[str, Any] | None) -> VM:
    doc = copy.deepcopy(doc)
    doc["technology"] = technology
    vm = VM(provider="aws", account="1", region="eu-west-1", id="i-1", document=doc)
    if hw is not None:
        record_proof(vm, "ab" * 32, {**hw, "technology": technology})
    return vm


@settings(max_examples=300, deadline=None)
@given(doc=documents, hw=st.none() | hardware)
def test_sev_and_sev_es_never_rank_above_snp_or_tdx_with_the_same_evidence(
    doc: dict[str, Any], hw: dict[str, Any] | None
) -> None:
    """Same document, same evidence, only the technology differs: without memory integrity
    the hypervisor can still reach plaintext, so SEV and SEV-ES stay at L0."""
    strong = min(ENGINE.evaluate(_vm(doc, t, hw)).level.rank for t in ("SEV_SNP", "TDX"))
    for weak in ("SEV", "SEV_ES"):
        result = ENGINE.evaluate(_vm(doc, weak, None))
        assert result.level.rank <= strong
        assert result.level is Level.L0
        assert result.gdpr.provider_can_access is Answer.YES


@settings(max_examples=300, deadline=None)
@given(doc=documents, hw=st.none() | hardware, tech=st.sampled_from(["SEV_SNP", "TDX"]))
def test_l4_if_and_only_if_the_reading_is_no(
    doc: dict[str, Any], hw: dict[str, Any] | None, tech: str
) -> None:
    result = ENGINE.evaluate(_vm(doc, tech, hw))
    assert (result.level is Level.L4) is (result.gdpr.provider_can_access is Answer.NO)
    if result.gdpr.provider_can_access is Answer.NO:
        assert result.gdpr.blocking_parties == []


# ------------------------------------------------------------------ the demo, VM by VM


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> AuditRun:
    """The demo fleet as `ccaudit demo` scans it (its nonce state copied, never written)."""
    from auditor.cli import DEMO_MAA_ISSUER

    state = tmp_path_factory.mktemp("demo") / "state"
    shutil.copytree(DEMO_FLEET / "audit-state", state)
    with pytest.MonkeyPatch.context() as mp:  # the conftest env, for a module-scoped fixture
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        mp.setenv("AWS_CONFIG_FILE", "/dev/null")
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        for var in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
            mp.delenv(var, raising=False)
        return scan(
            replay=DEMO_FLEET,
            guest_evidence=DEMO_FLEET / "guest-evidence",
            rules=[DEMO_FLEET / "reference-measurements.yaml"],
            demo_trust_anchor=DEMO_FLEET / "demo-trust-anchor",
            key_broker_keys=[DEMO_FLEET / "demo-key-broker" / "broker.pem"],
            maa_issuers=[DEMO_MAA_ISSUER],
            maa_jwks=DEMO_FLEET / "maa-demo-jwks.json",
            nonce_state=state,
        )


def test_every_demo_vm_reads_as_documented(demo: AuditRun) -> None:
    by_name = {vm.name: vm for vm in demo.vms}
    readings = {
        name: (vm.level.value, vm.gdpr.provider_can_access.value) for name, vm in by_name.items()
    }
    assert readings == {
        "eu-hr-db": ("L4", "no"),
        "eu-payments-api": ("L3", "yes"),
        "eu-payments-batch": ("L0", "yes"),
        "eu-hr-reports-legacy": ("L0", "yes"),
        "us-payments-api-dr": ("L1", "yes"),
        "us-ops-bastion": ("L0", "yes"),
        "an-feature-store": ("L1", "yes"),
        "an-airflow-worker": ("L0", "yes"),
        "claims-db-snp": ("L3", "yes"),
        "claims-api-sev": ("L0", "yes"),
        "claims-etl-tdx": ("L1", "yes"),
        "claims-batch-plain": ("L0", "yes"),
        "sandbox-notebook-sev": ("L0", "yes"),
        "sandbox-future-cvm": ("L0", "yes"),
        "payroll-db-cvm": ("L2", "yes"),
        "payroll-batch-tdx": ("L1", "yes"),
        "payroll-web-tl": ("L0", "yes"),
        "payroll-jump-std": ("L0", "yes"),
        "research-nb-cvm": ("L3", "yes"),
        "research-gpu-cvm": ("L0", "yes"),
        "aks-cvmpool-31416926-vmss_0": ("L1", "yes"),
        "aks-cvmpool-31416926-vmss_1": ("L1", "yes"),
        "aks-nodepool1-27182818-vmss_0": ("L0", "yes"),
        "ledger-db-snp": ("L4", "no"),
        "archive-sev-es": ("L0", "yes"),
        "bi-sev-debug": ("L0", "yes"),
        "ci-runner": ("L0", "yes"),
    }
    assert by_name["eu-hr-db"].gdpr.blocking_parties == []
    assert by_name["eu-payments-api"].gdpr.blocking_parties == [Party.GUEST_AGENTS]
    # the "no", and why a reader can follow it
    hr = by_name["eu-hr-db"]
    assert all(hr.parties[p].value == "EXCLUDED" for p in (Party.VTPM, Party.GUEST_AGENTS))
    assert hr.party_status[Party.VTPM].rules == ["vtpm.nothing-sealed"]
    assert hr.party_status[Party.GUEST_AGENTS].rules == ["agents.none-in-measured-guest"]
    assert hr.gdpr.summary.startswith("No: owner-verified hardware evidence shuts every")
    # the single named reason of the L4 candidate that misses "no"
    api = by_name["eu-payments-api"]
    assert api.level_reason.endswith(
        "L4 needs guest_agents EXCLUDED; it is CAN_ACCESS. [demo trust anchor, not AMD]"
    )
    assert "provider agents and host-provided input in the guest" in api.gdpr.summary


def test_legal_wording_is_conditional_and_names_its_data(demo: AuditRun) -> None:
    by_name = {vm.name: vm for vm in demo.vms}
    eea_yes = by_name["eu-payments-api"].gdpr.summary
    assert "Use Case 6 may apply" in eea_yes and "If this processing involves a transfer" in eea_yes
    assert "so Use Case 6 applies" not in eea_yes
    assert "eu-west-1 is in the EEA (Ireland)" in eea_yes
    us = by_name["us-ops-bastion"].gdpr.summary
    assert "Commission Implementing Decision (EU) 2023/1795" in us
    assert "only for organisations certified on the DPF List" in us
    undetermined = [vm for vm in demo.vms if vm.gdpr.provider_can_access is Answer.UNDETERMINED]
    for vm in undetermined:
        assert "Use Case 6 may apply" not in vm.gdpr.summary
