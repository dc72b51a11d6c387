"""The engine's fast path gives exactly what evaluating the whole document gives.

The engine cuts each VM's document to the fields the rules read and reuses the decision for
VMs whose cut documents are equal (benchmarks/RESULTS.md). These tests hold it to the plain
semantics: an engine told to read the whole document, with no reuse, is the oracle.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.engine import Engine, _frozen, _keys_forked, _paths_read, _prune
from auditor.model import VM, Finding, Gap, Status, VMResult, build_unchecked, unchecked_builder
from auditor.rules.loader import load_packs

_ENGINE = Engine(load_packs())


def _oracle() -> Engine:
    engine = Engine(load_packs(), reuse=False, share_outcomes=False)
    engine._paths = None  # the whole document, a fresh decision for every VM
    return engine


_ORACLE = _oracle()
_CUT_ONLY = Engine(load_packs(), reuse=False)

_flag = st.one_of(st.booleans(), st.none(), st.sampled_from(["yes", 1, 0]))
_hardware = st.one_of(
    st.just("not a map"),
    st.fixed_dictionaries(
        {},
        optional={
            "present": _flag,
            "verified": _flag,
            "authentic": _flag,
            "bound": _flag,
            "debug": _flag,
            "migrate_ma": _flag,
            "technology": st.sampled_from(["SEV_SNP", "TDX", "NONE"]),
            "measurement_matched": _flag,
            "endorsement_verified": _flag,
            "tcb_below_minimum": _flag,
            "trust_anchor": st.sampled_from(["AMD ARK Milan", "demo"]),
            "caveat": st.sampled_from(["demo trust anchor, not AMD"]),
            "reason": st.text(max_size=5),
            "unread": st.text(max_size=5),
        },
    ),
)
_disk = st.fixed_dictionaries(
    {"id": st.text(min_size=1, max_size=6)},
    optional={
        "encrypted": _flag,
        "boot": _flag,
        "custody": st.sampled_from(["none", "provider_kms", "customer_kms", "guest"]),
        "confidential_encryption": st.fixed_dictionaries({}, optional={"kms_key": st.text()}),
        "kms_key": st.text(max_size=4),
    },
)
_docs = st.fixed_dictionaries(
    {"technology": st.sampled_from(["NONE", "SEV", "SEV_SNP", "TDX", "UNKNOWN"])},
    optional={
        "hardware": _hardware,
        "disks": st.one_of(st.lists(_disk, max_size=3), st.just("oops")),
        "tpm": st.fixed_dictionaries(
            {"present": _flag},
            optional={
                "implemented_by": st.sampled_from(["provider", "paravisor"]),
                "ek": st.fixed_dictionaries(
                    {"source": st.just("control_plane")}, optional={"certificate": _flag}
                ),
            },
        ),
        "attestation": st.fixed_dictionaries(
            {"provider_verdict": st.sampled_from(["none", "passed", "failed"])},
            optional={"token": st.fixed_dictionaries({"verified": _flag})},
        ),
        "agents": st.fixed_dictionaries(
            {},
            optional={
                "extensions": st.lists(st.fixed_dictionaries({"name": st.text(max_size=3)})),
                "run_command": _flag,
                "vm_agent": _flag,
            },
        ),
        "migration": st.fixed_dictionaries({}, optional={"live_migration": _flag}),
        "metadata_service": st.fixed_dictionaries({"enabled": _flag}),
        "platform": st.fixed_dictionaries({"snp_supported": _flag}),
        "image": st.fixed_dictionaries({"owned_by_account": _flag}),
        "tags": st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
    },
)


_GAP = Gap(
    provider="aws",
    account="acct",
    region="r1",
    call="DescribeVolumes",
    code="AccessDenied",
    message="not allowed",
)


def _vm(doc: dict[str, Any], provider: str, name: str, gaps: bool) -> VM:
    ident = {"provider": provider, "account": "acct", "region": "eu-west-1", "id": name}
    return VM(
        **ident,
        document={**ident, "name": name, **doc},
        evidence={"disks": [f"{name}-disks"], "hardware": [f"{name}-hw"], "tpm": [f"{name}-t"]},
        gaps=[_GAP] if gaps else [],
    )


@settings(max_examples=300, deadline=None)
@given(
    docs=st.lists(_docs, min_size=1, max_size=4),
    provider=st.sampled_from(["aws", "gcp", "azure"]),
    gaps=st.lists(st.booleans(), min_size=4, max_size=4),
)
def test_cut_and_reused_decisions_equal_the_whole_document(
    docs: list[dict[str, Any]], provider: str, gaps: list[bool]
) -> None:
    # Each document twice under other names (and with or without failed calls): the second
    # evaluation reuses the first's decision and must still name its own VM and evidence.
    vms = [
        _vm(doc, provider, f"vm-{i}-{k}", gaps[(i + k) % 4])
        for k in (0, 1)
        for i, doc in enumerate(docs)
    ]
    for vm in vms:
        fast = _ENGINE.evaluate(vm).model_dump()
        assert fast == _ORACLE.evaluate(vm).model_dump()
        assert fast == _CUT_ONLY.evaluate(vm).model_dump()
        assert fast["id"] == vm.id
        # built without validation, yet exactly what validation would have built
        assert VMResult.model_validate(fast).model_dump() == fast


def test_same_fields_read_other_vm_gets_its_own_identity_evidence_and_gap_reasons() -> None:
    doc = {"technology": "SEV_SNP", "hardware": {"present": True}}
    plain = _ENGINE.evaluate(_vm(doc, "aws", "a", gaps=False))
    failed = _ENGINE.evaluate(_vm(doc, "aws", "b", gaps=True))
    assert (plain.id, failed.id) == ("a", "b")
    undetermined = [f for f in failed.findings if f.status is Status.UNDETERMINED]
    assert undetermined and all("DescribeVolumes failed" in f.reason for f in undetermined)
    assert not any("DescribeVolumes" in f.reason for f in plain.findings)
    shas = {sha for f in failed.findings for sha in f.evidence}
    assert shas and all(sha.startswith("b-") for sha in shas)


def test_decisions_are_worked_out_once_per_distinct_set_of_fields_read() -> None:
    engine = Engine(load_packs())
    doc = {"technology": "SEV_SNP", "tags": {"team": "a"}}
    for name in ("a", "b", "c"):  # names, ids and unread tags differ: one decision
        engine.evaluate(_vm({**doc, "tags": {"team": name}}, "aws", name, gaps=False))
    assert engine.cases == 1
    engine.evaluate(_vm({**doc, "technology": "TDX"}, "aws", "d", gaps=False))
    engine.evaluate(_vm(doc, "gcp", "e", gaps=False))  # rules differ per provider
    assert engine.cases == 3
    fresh = Engine(load_packs(), reuse=False)
    fresh.evaluate(_vm(doc, "aws", "a", gaps=False))
    assert fresh.cases == 0


def test_vms_configured_differently_share_a_decision_only_when_their_rules_agree() -> None:
    # no reuse by fields read: every VM's rules run; the case is shared by equal outcomes only
    engine = Engine(load_packs(), reuse=False)
    doc = {"technology": "SEV_SNP", "machine_type": "n2d-standard-2"}
    first = engine.evaluate(_vm(doc, "aws", "a", gaps=False))
    other_size = engine.evaluate(
        _vm({**doc, "machine_type": "n2d-standard-4"}, "aws", "b", gaps=False)
    )
    assert engine.cases == 0 and len(engine._outcomes) == 1
    tdx = engine.evaluate(_vm({**doc, "technology": "TDX"}, "aws", "c", gaps=False))
    assert len(engine._outcomes) == 2
    for result, name in ((first, "a"), (other_size, "b"), (tdx, "c")):
        vm = _vm(
            {**doc, "machine_type": "n2d-standard-4" if name == "b" else doc["machine_type"]}
            if name != "c"
            else {**doc, "technology": "TDX"},
            "aws",
            name,
            gaps=False,
        )
        assert result.model_dump() == _ORACLE.evaluate(vm).model_dump()


def test_a_field_rules_read_is_never_shared_between_vms() -> None:
    encrypted = {"technology": "NONE", "disks": [{"id": "d", "encrypted": True, "custody": "none"}]}
    plain = {"technology": "NONE", "disks": [{"id": "d", "encrypted": False, "custody": "none"}]}
    first = _ENGINE.evaluate(_vm(encrypted, "aws", "x", gaps=False))
    second = _ENGINE.evaluate(_vm(plain, "aws", "y", gaps=False))
    assert {f.rule_id for f in first.findings} != {f.rule_id for f in second.findings}


def _tree(*conditions: str) -> Any:
    class _Rule:
        def __init__(self, when: str) -> None:
            self.when, self.detail = when, None

    class _Compiled:
        def __init__(self, when: str) -> None:
            self.rule = _Rule(when)

    return _paths_read([_Compiled(c) for c in conditions])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("condition", "tree"),
    [
        ('vm.technology == "NONE"', {"technology": None}),
        ("has(vm.hardware) && vm.hardware.verified", {"hardware": {"verified": None}}),
        ("has(vm.hardware)", {"hardware": {}}),
        ("vm.agents.extensions.size() > 0", {"agents": {"extensions": None}}),
        (
            "vm.disks.exists(d, d.boot && !d.encrypted)",
            {"disks": {"boot": None, "encrypted": None}},
        ),
        ("vm.disks.exists(d, d.size() > 0)", {"disks": None}),
        ("vm.disks.exists(d, d == null)", {"disks": None}),
        ("vm.tags.all(k, v, v != '')", {"tags": None}),
        ('vm.hardware.reason == "vm.disks.x"', {"hardware": {"reason": None}}),
    ],
)
def test_fields_read_by_a_condition(condition: str, tree: Any) -> None:
    assert _tree(condition) == tree


def test_whole_read_wins_over_a_part() -> None:
    assert _tree("vm.hardware.verified", "vm.hardware != null") == {"hardware": None}
    assert _tree("vm.hardware != null", "has(vm.hardware.x)") == {"hardware": None}


def _misspelt_finding() -> dict[str, Any]:
    """A Finding's fields with one name misspelt (`rationale_typo`)."""
    return {
        "rule_id": "r",
        "party": "hypervisor",
        "status": Status.EXCLUDED,
        "title": "t",
        "reason": "r",
        "severity": "low",
        "rationale_typo": "",
        "evidence": [],
        "remediation": None,
        "references": [],
    }


def test_unchecked_build_refuses_a_missing_or_misspelt_field() -> None:
    with pytest.raises(ValueError, match="rationale"):
        build_unchecked(Finding, _misspelt_finding())


def test_unchecked_builder_checks_the_first_literal_and_then_the_count() -> None:
    build = unchecked_builder(Finding)
    fields = _misspelt_finding()
    with pytest.raises(ValueError, match="rationale"):
        build(dict(fields))
    fields["rationale"] = fields.pop("rationale_typo")
    assert build(dict(fields)).rationale == ""
    del fields["references"]
    with pytest.raises(ValueError, match="9 fields given, 10 expected"):
        build(fields)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({"x": True}, {"x": 1}),  # CEL tells a bool from an int; Python's == does not
        ({"x": 1}, {"x": 1.0}),
        ({"x": None}, {}),  # null is not absent
        ({"x": []}, {"x": {}}),
        ({"x": ["a"]}, {"x": "a"}),
        ({"x": {"a": 1}}, {"x": [["a", 1]]}),
        ({"x": {"a": 1, "b": 2}}, {"x": {"b": 2, "a": 1}}),  # a map read whole keeps its order
    ],
)
def test_reuse_keys_differ_where_the_values_rules_see_differ(
    a: dict[str, Any], b: dict[str, Any]
) -> None:
    whole = {"x": None}
    assert _frozen(a, whole) != _frozen(b, whole)


def test_reuse_keys_are_equal_where_the_cut_documents_are() -> None:
    tree = _paths_read(Engine(load_packs()).rules)
    one = {"technology": "SEV_SNP", "tags": {"a": "1"}, "disks": [{"id": "d1", "boot": True}]}
    two = {"technology": "SEV_SNP", "tags": {"b": "2"}, "disks": [{"id": "d2", "boot": True}]}
    assert _prune(one, tree) == _prune(two, tree)
    assert _frozen(one, tree) == _frozen(two, tree)
    assert hash(_frozen(one, tree)) == hash(_frozen(two, tree))


def test_private_cloud_vms_alike_but_for_their_host_operator_get_their_own_reading() -> None:
    # no rule reads the operator, so both VMs share a decision; the GDPR reading names who
    # runs the host, and must not be the first VM's for the second
    engine = Engine(load_packs())
    doc = {"technology": "SEV", "libvirt": {"operator": "Example Hosting GmbH (DE)"}}
    first = engine.evaluate(_vm(doc, "libvirt", "a", gaps=False))
    mine = engine.evaluate(_vm({**doc, "libvirt": {}}, "libvirt", "b", gaps=False))
    assert engine.cases == 1
    assert "Example Hosting GmbH" in first.gdpr.region_jurisdiction
    assert "not configured" in mine.gdpr.region_jurisdiction
    assert mine.gdpr == _ORACLE.evaluate(_vm({**doc, "libvirt": {}}, "libvirt", "b", False)).gdpr


def test_a_vm_result_changed_by_its_caller_leaves_the_others_alone() -> None:
    from auditor.model import Party, Status

    engine = Engine(load_packs())
    doc = {"technology": "SEV_SNP"}
    first = engine.evaluate(_vm(doc, "aws", "a", gaps=False))
    second = engine.evaluate(_vm(doc, "aws", "b", gaps=False))
    assert engine.cases == 1  # one decision, two results
    before = dict(second.parties)
    first.parties[Party.HYPERVISOR] = Status.EXCLUDED
    first.overrides.append("x")
    assert second.parties == before and second.overrides == []
    assert engine.evaluate(_vm(doc, "aws", "c", gaps=False)).parties == before


# ------------------------------------------------- rules run in forked evaluation workers
@settings(max_examples=25, deadline=None)
@given(
    docs=st.lists(_docs, min_size=2, max_size=6),
    providers=st.lists(st.sampled_from(["aws", "gcp", "azure"]), min_size=6, max_size=6),
    gaps=st.lists(st.booleans(), min_size=6, max_size=6),
)
def test_rules_run_in_workers_give_what_one_by_one_gives(
    docs: list[dict[str, Any]], providers: list[str], gaps: list[bool]
) -> None:
    # Workers send back only each VM's outcome key (plan indices, kinds, details) and this
    # process rebuilds the case from it: missing fields, unusable values and odd results
    # (the documents' "oops" and "yes") must cross as they are, for every provider's plans.
    from auditor.engine import evaluate_all

    vms = [
        _vm(doc, providers[(i + k) % 6], f"vm-{i}-{k}", gaps[(i + k) % 6])
        for k in (0, 1)
        for i, doc in enumerate(docs)
    ]
    expected = [_ORACLE.evaluate(vm).model_dump() for vm in vms]
    shared = Engine(load_packs())
    assert [r.model_dump() for r in evaluate_all(shared, vms, workers=2)] == expected
    oracle = _oracle()  # each VM's decision built anew from its key, too
    assert [r.model_dump() for r in evaluate_all(oracle, vms, workers=2)] == expected


def _spied(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Lower the fleet size that may use workers, and note where workers took over."""
    from auditor import engine as engine_module

    monkeypatch.setattr(engine_module, "PARALLEL_MIN_VMS", 10)
    monkeypatch.setattr(engine_module, "_CHUNK", 20)
    monkeypatch.setattr(engine_module.os, "cpu_count", lambda: 2)
    begun: list[int] = []
    real = engine_module._evaluate_in_workers

    def spy(engine: Engine, vms: Any, begin: int, count: int) -> Any:
        begun.append(begin)
        return real(engine, vms, begin, count)

    monkeypatch.setattr(engine_module, "_evaluate_in_workers", spy)
    return begun


def test_a_fleet_of_repeated_configurations_is_evaluated_here(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # its first VMs show few new sets of fields: every VM costs only its result, which
    # workers would not save, so no worker is started
    from auditor.engine import evaluate_all

    begun = _spied(monkeypatch)
    vms = [_vm({"technology": "SEV_SNP"}, "aws", f"vm-{i}", i % 3 == 0) for i in range(30)]
    engine = Engine(load_packs())
    results = evaluate_all(engine, vms)
    assert begun == []
    assert engine.cases == 1
    assert [r.model_dump() for r in results] == [_ORACLE.evaluate(v).model_dump() for v in vms]


def _all_different(n: int, provider: str, technology: str) -> list[VM]:
    """n VMs that differ in a field the rules read (hardware.reason): no two alike."""
    hardware = {"present": True, "verified": False}
    return [
        _vm(
            {"technology": technology, "hardware": {**hardware, "reason": f"r{i}"}},
            provider,
            f"v{i}",
            False,
        )
        for i in range(n)
    ]


def test_a_fleet_configured_differently_goes_to_workers_after_its_first_vms(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from auditor.engine import evaluate_all

    begun = _spied(monkeypatch)
    vms = _all_different(30, "aws", "SEV_SNP")
    engine = Engine(load_packs())
    results = evaluate_all(engine, vms)
    assert begun == [20]  # the first 20 here, the other 10 in workers
    assert engine.cases == 30  # each worker's decisions counted too
    assert [r.model_dump() for r in results] == [_ORACLE.evaluate(v).model_dump() for v in vms]
    # without reuse every VM is new: workers from the first VM on
    begun.clear()
    evaluate_all(Engine(load_packs(), reuse=False), vms)
    assert begun == [0]


_REAL_KEYS_FORKED = _keys_forked


def _dies_on_vm_20(start: int, stop: int) -> Any:
    """A forked evaluation worker's task that kills its process on the slice with VM 20."""
    import os

    if start <= 20 < stop:
        os._exit(9)
    return _REAL_KEYS_FORKED(start, stop)


def test_an_evaluation_worker_that_dies_costs_time_not_the_scan(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # a worker killed mid-way (the kernel's OOM killer, say): the VMs it left are evaluated in
    # this process, and the results are what one by one gives
    from auditor import engine as engine_module
    from auditor.engine import evaluate_all

    monkeypatch.setattr(engine_module, "_keys_forked", _dies_on_vm_20)
    vms = _all_different(50, "gcp", "TDX")
    with caplog.at_level("WARNING", logger="auditor.engine"):
        results = evaluate_all(Engine(load_packs()), vms, workers=2)
    assert [r.model_dump() for r in results] == [_ORACLE.evaluate(v).model_dump() for v in vms]
    assert any("evaluation worker died" in r.message for r in caplog.records)


def test_a_field_that_cannot_be_hashed_is_decided_afresh_not_a_crash() -> None:
    # Not JSON (a bytearray) where the rules read: no memo key, the VM is decided on its own, in
    # this process and in workers alike, as the oracle decides it.
    from auditor.engine import evaluate_all

    odd = _vm(
        {"technology": "SEV_SNP", "hardware": {"reason": bytearray(b"r")}}, "aws", "odd", False
    )
    plain = _vm({"technology": "SEV_SNP"}, "aws", "plain", False)
    vms = [odd, plain, odd, plain]
    expected = [_ORACLE.evaluate(vm).model_dump() for vm in vms]
    engine = Engine(load_packs())
    assert [engine.evaluate(vm).model_dump() for vm in vms] == expected
    assert engine.cases == 1  # only the plain VM's fields were kept
    assert [r.model_dump() for r in evaluate_all(Engine(load_packs()), vms, workers=2)] == expected
