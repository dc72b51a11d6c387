"""Engine semantics: veto wins, missing input is UNDETERMINED, packs override, bad packs fail."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.engine import Engine
from auditor.model import VM, Answer, Level, Party, Status, Technology
from auditor.rules.loader import RulePackError, load_pack, load_packs
from auditor.verify.proof import record_proof


def _pack(tmp_path: Path, body: str, name: str = "pack.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def _vm(doc: dict[str, Any], provider: str = "aws", proven: bool = False) -> VM:
    """A VM with `doc`; `proven`: as if the verify stage had recorded verified hardware."""
    base = {"provider": provider, "account": "111122223333", "region": "eu-west-1", "id": "i-1"}
    vm = VM(
        provider=provider,
        account="111122223333",
        region="eu-west-1",
        id="i-1",
        technology=Technology(doc.get("technology", "UNKNOWN")),
        document={**base, **doc},
        evidence={"disks": ["aa" * 32], "technology": ["bb" * 32]},
    )
    if proven:
        hardware = {
            "authentic": True,
            "bound": True,
            "fresh": True,
            "verified": True,
            "debug": False,
        }
        record_proof(vm, "cc" * 32, {**hardware, **(doc.get("hardware") or {})})
    return vm


TWO_RULES = """
pack: test
rules:
  - id: hv.claim
    title: SNP claimed
    party: hypervisor
    effect: CLAIMED_EXCLUDED
    when: vm.technology == "SEV_SNP"
    rationale: claimed by the API
  - id: hv.debug
    title: debug on
    party: hypervisor
    effect: CAN_ACCESS
    when: has(vm.hardware) && vm.hardware.debug == true
    rationale: debug lets the host read memory
  - id: keys.plain
    title: plaintext disk
    party: key_custodian
    effect: CAN_ACCESS
    when: vm.disks.exists(d, d.encrypted == false)
    rationale: plaintext at rest
  - id: keys.guest
    title: guest encrypts
    party: key_custodian
    effect: EXCLUDED
    when: vm.hardware.verified == true && vm.guest.luks == true
    rationale: owner key
"""


def test_exclusion_matches(tmp_path: Path) -> None:
    engine = Engine([load_pack(_pack(tmp_path, TWO_RULES))])
    result = engine.evaluate(_vm({"technology": "SEV_SNP"}))
    hv = result.party_status[Party.HYPERVISOR]
    assert hv.status is Status.CLAIMED_EXCLUDED
    assert hv.rules == ["hv.claim"]
    assert hv.evidence == ["bb" * 32]  # the evidence behind vm.technology


def test_veto_wins_over_exclusion(tmp_path: Path) -> None:
    engine = Engine([load_pack(_pack(tmp_path, TWO_RULES))])
    result = engine.evaluate(_vm({"technology": "SEV_SNP", "hardware": {"debug": True}}))
    assert result.parties[Party.HYPERVISOR] is Status.CAN_ACCESS
    assert result.party_status[Party.HYPERVISOR].rules == ["hv.debug"]
    assert result.level is Level.L0


def test_veto_wins_over_excluded(tmp_path: Path) -> None:
    engine = Engine([load_pack(_pack(tmp_path, TWO_RULES))])
    doc = {"disks": [{"encrypted": False}], "guest": {"luks": True}}
    assert engine.evaluate(_vm(doc, proven=True)).parties[Party.KEY_CUSTODIAN] is (
        Status.CAN_ACCESS
    )


def test_missing_input_is_undetermined_not_a_pass(tmp_path: Path) -> None:
    engine = Engine([load_pack(_pack(tmp_path, TWO_RULES))])
    result = engine.evaluate(_vm({"technology": "SEV_SNP"}, proven=True))  # no disks, no guest
    keys = result.party_status[Party.KEY_CUSTODIAN]
    assert keys.status is Status.UNDETERMINED
    assert "Could not evaluate" in keys.reason and "disks" in keys.reason
    undetermined = {f.rule_id for f in result.findings if f.status is Status.UNDETERMINED}
    assert undetermined == {"keys.plain", "keys.guest"}


def test_missing_technology_makes_hypervisor_undetermined(tmp_path: Path) -> None:
    engine = Engine([load_pack(_pack(tmp_path, TWO_RULES))])
    result = engine.evaluate(_vm({}))
    assert result.parties[Party.HYPERVISOR] is Status.UNDETERMINED
    assert result.level is Level.L0
    assert "could be higher" in result.level_reason


def test_undetermined_weaker_exclusion_does_not_block(tmp_path: Path) -> None:
    body = """
    pack: t
    rules:
      - {id: a.strong, title: strong, party: vtpm, effect: EXCLUDED,
         when: vm.hardware.verified == true && vm.tpm.x, rationale: r r}
      - {id: a.weak, title: weak, party: vtpm, effect: CLAIMED_EXCLUDED, when: vm.tpm.y,
         rationale: r r}
    """
    engine = Engine([load_pack(_pack(tmp_path, body))])
    proven = engine.evaluate(_vm({"tpm": {"x": True}}, proven=True))
    assert proven.parties[Party.VTPM] is Status.EXCLUDED
    # the stronger one missing blocks even when the weaker matched
    assert engine.evaluate(_vm({"tpm": {"y": True}}, proven=True)).parties[Party.VTPM] is (
        Status.UNDETERMINED
    )
    # without verified hardware the EXCLUDED rule is not even run: the weaker one decides
    assert engine.evaluate(_vm({"tpm": {"y": True}})).parties[Party.VTPM] is (
        Status.CLAIMED_EXCLUDED
    )


def test_gap_cause_is_named_in_undetermined_reason(tmp_path: Path) -> None:
    from auditor.model import Gap

    engine = Engine([load_pack(_pack(tmp_path, TWO_RULES))])
    vm = _vm({"technology": "NONE"})
    vm.gaps.append(
        Gap(
            provider="aws",
            account="111122223333",
            region="eu-west-1",
            call="ec2:DescribeVolumes",
            code="UnauthorizedOperation",
            message="denied",
            sections=["disks"],
        )
    )
    reason = engine.evaluate(vm).party_status[Party.KEY_CUSTODIAN].reason
    assert "ec2:DescribeVolumes failed in 111122223333/eu-west-1: UnauthorizedOperation" in reason


def test_non_boolean_condition_is_undetermined(tmp_path: Path) -> None:
    body = """
    pack: t
    rules:
      - {id: odd, title: odd rule, party: vtpm, effect: CLAIMED_EXCLUDED, when: vm.id,
         rationale: r r}
    """
    engine = Engine([load_pack(_pack(tmp_path, body))])
    result = engine.evaluate(_vm({}))
    assert result.parties[Party.VTPM] is Status.UNDETERMINED
    assert "not true/false" in result.party_status[Party.VTPM].reason


def test_provider_filter(tmp_path: Path) -> None:
    body = """
    pack: t
    rules:
      - {id: gcp.only, title: gcp only, party: vtpm, effect: CLAIMED_EXCLUDED,
         providers: [gcp], when: vm.gcp.missing, rationale: r r}
    """
    engine = Engine([load_pack(_pack(tmp_path, body))])
    result = engine.evaluate(_vm({}))
    assert result.parties[Party.VTPM] is Status.CAN_ACCESS  # not applicable, not undetermined
    assert result.findings == []


def test_user_pack_overrides_and_disables(tmp_path: Path) -> None:
    base = _pack(tmp_path, TWO_RULES)
    override = _pack(
        tmp_path,
        """
        pack: mine
        disable: [keys.guest]
        rules:
          - id: hv.claim
            title: SNP claimed, but we do not accept claims
            party: hypervisor
            effect: CAN_ACCESS
            when: vm.technology == "SEV_SNP"
            rationale: our policy accepts only verified evidence
        """,
        "mine.yaml",
    )
    engine = Engine([load_pack(base), load_pack(override)])
    ids = [c.rule.id for c in engine.rules]
    assert "keys.guest" not in ids and ids.count("hv.claim") == 1
    result = engine.evaluate(_vm({"technology": "SEV_SNP", "disks": [{"encrypted": True}]}))
    assert result.parties[Party.HYPERVISOR] is Status.CAN_ACCESS
    assert result.party_status[Party.HYPERVISOR].reason.startswith("SNP claimed, but")
    assert result.parties[Party.KEY_CUSTODIAN] is Status.CAN_ACCESS  # default, no rule left


def test_user_pack_over_builtin(tmp_path: Path) -> None:
    override = _pack(
        tmp_path,
        """
        pack: strict
        rules:
          - id: hypervisor.snp-or-tdx-claimed
            title: Claims are not accepted here
            party: hypervisor
            effect: CAN_ACCESS
            when: vm.technology in ["SEV_SNP", "TDX"]
            rationale: strict policy
        """,
    )
    engine = Engine(load_packs([override]))
    result = engine.evaluate(_vm({"technology": "SEV_SNP"}))
    assert result.parties[Party.HYPERVISOR] is Status.CAN_ACCESS
    assert result.level is Level.L0


@pytest.mark.parametrize(
    ("body", "rule_id", "fragment"),
    [
        ("pack: t\nrules:\n  - id: a\n    title: [unclosed\n", None, "YAML syntax error at line"),
        (
            "pack: t\nrules:\n  - {id: r.one, title: t t, party: landlord, effect: CAN_ACCESS,"
            " when: 'true', rationale: r r}\n",
            "r.one",
            "party",
        ),
        (
            "pack: t\nrules:\n  - {id: r.cel, title: t t, party: vtpm, effect: CAN_ACCESS,"
            " when: 'vm.tpm.present && ', rationale: r r}\n",
            "r.cel",
            "CEL error at line 1, column",
        ),
        (
            "pack: t\nrules:\n  - {id: r.typo, title: t t, party: vtpm, effect: CAN_ACCESS,"
            " when: 'vm.dsks.size() > 0', rationale: r r}\n",
            "r.typo",
            "unknown field vm.dsks",
        ),
        (
            "pack: t\nrules:\n  - {id: r.und, title: t t, party: vtpm, effect: UNDETERMINED,"
            " when: 'true', rationale: r r}\n",
            "r.und",
            "effect",
        ),
        (
            "pack: t\nrules:\n  - {id: r.d, title: t t, party: vtpm, effect: CAN_ACCESS,"
            " when: 'true', rationale: r r}\n  - {id: r.d, title: t t, party: vtpm,"
            " effect: CAN_ACCESS, when: 'true', rationale: r r}\n",
            "r.d",
            "duplicate",
        ),
        ("pack: t\nrules:\n  - {id: r.m, party: vtpm}\n", "r.m", "title"),
        ("- just\n- a list\n", None, "mapping"),
        ("pack: t\nsurprise: 1\n", None, "surprise"),
    ],
)
def test_bad_packs_fail_with_file_rule_and_position(
    tmp_path: Path, body: str, rule_id: str | None, fragment: str
) -> None:
    path = _pack(tmp_path, body)
    with pytest.raises(RulePackError) as info:
        load_pack(path)
    message = str(info.value)
    assert str(path) in message
    assert fragment in message
    if rule_id:
        assert f"rule '{rule_id}'" in message


def test_disabling_unknown_rule_fails(tmp_path: Path) -> None:
    path = _pack(tmp_path, "pack: t\ndisable: [no.such.rule]\n")
    with pytest.raises(RulePackError, match=r"no\.such\.rule"):
        Engine(load_packs([path]))


def test_oversized_and_missing_pack(tmp_path: Path) -> None:
    with pytest.raises(RulePackError, match="cannot read"):
        load_pack(tmp_path / "absent.yaml")
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (3 * 1024 * 1024))
    with pytest.raises(RulePackError, match="larger than"):
        load_pack(big)


# ------------------------------------------------------------------ built-in pack


def test_builtin_rules_are_documented() -> None:
    engine = Engine(load_packs())
    assert len(engine.rules) >= 10
    for compiled in engine.rules:
        rule = compiled.rule
        assert rule.rationale, rule.id
        assert rule.references.gdpr or rule.references.edpb, rule.id
        if rule.is_veto and rule.severity.value not in ("info", "low"):
            assert rule.remediation, f"{rule.id} sets CAN_ACCESS without a remediation"


def test_builtin_never_excludes_without_hardware_evidence() -> None:
    """EXCLUDED needs owner-verified hardware evidence: every such rule requires it."""
    from auditor.rules.loader import requires_verified_hardware

    excluded = [c for c in Engine(load_packs()).rules if c.rule.effect is Status.EXCLUDED]
    assert len(excluded) >= 5
    for compiled in excluded:
        assert requires_verified_hardware(compiled.rule.when), compiled.rule.id


_control_plane_docs = st.fixed_dictionaries(
    {
        "technology": st.sampled_from(["NONE", "SEV", "SEV_ES", "SEV_SNP", "TDX"]),
        "tpm": st.fixed_dictionaries(
            {"present": st.booleans()},
            optional={
                "ek": st.fixed_dictionaries(
                    {"source": st.just("control_plane"), "certificate": st.booleans()}
                )
            },
        ),
        "disks": st.lists(
            st.fixed_dictionaries(
                {
                    "encrypted": st.booleans(),
                    "custody": st.sampled_from(["none", "provider_kms", "provider_key"]),
                }
            ),
            max_size=3,
        ),
        "metadata_service": st.fixed_dictionaries({"enabled": st.booleans()}),
        "platform": st.fixed_dictionaries({"snp_supported": st.booleans()}),
        "image": st.fixed_dictionaries({"owned_by_account": st.booleans()}),
    }
)


@settings(max_examples=150, deadline=None)
@given(doc=_control_plane_docs, provider=st.sampled_from(["aws", "gcp", "azure"]))
def test_api_flags_alone_never_give_excluded(doc: dict[str, Any], provider: str) -> None:
    result = Engine(load_packs()).evaluate(_vm(doc, provider))
    assert Status.EXCLUDED not in result.parties.values()
    assert result.level.rank <= 1
    assert result.gdpr.provider_can_access is not Answer.NO


def test_snp_claim_is_l1_and_non_snp_is_l0() -> None:
    engine = Engine(load_packs())
    snp = engine.evaluate(_vm({"technology": "SEV_SNP", "tpm": {"present": False}}))
    assert snp.level is Level.L1
    assert snp.parties[Party.HYPERVISOR] is Status.CLAIMED_EXCLUDED
    plain = engine.evaluate(_vm({"technology": "NONE", "platform": {"snp_supported": True}}))
    assert plain.level is Level.L0
    assert plain.parties[Party.HYPERVISOR] is Status.CAN_ACCESS
    assert set(plain.party_status[Party.HYPERVISOR].rules) == {
        "hypervisor.no-memory-encryption",
        "hypervisor.snp-capable-but-off",
    }


def test_sev_is_never_scored_like_snp() -> None:
    engine = Engine(load_packs())
    sev = engine.evaluate(_vm({"technology": "SEV"}, "gcp"))
    ids = {f.rule_id for f in sev.findings}
    assert "hypervisor.sev-without-integrity" in ids
    assert "hypervisor.snp-or-tdx-claimed" not in ids


@pytest.mark.parametrize(
    ("provider", "region", "status"),
    [
        ("aws", "eu-west-1", "EEA"),
        ("aws", "us-east-2", "third country"),
        ("gcp", "europe-west4", "EEA"),
        ("gcp", "us-central1", "third country"),
        ("azure", "westeurope", "EEA"),
        ("azure", "uksouth", "adequacy decision"),
        ("azure", "brazilsouth", "unknown"),
    ],
)
def test_region_jurisdiction(provider: str, region: str, status: str) -> None:
    from auditor.jurisdiction import place_of

    assert place_of(provider, region).status == status
