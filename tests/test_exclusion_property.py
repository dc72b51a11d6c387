"""The class, not the instances: no combination without verified hardware evidence gives EXCLUDED.

Two properties (hypothesis):
- the engine, over random rule packs (built past the loader's lint, as a hostile pack author
  would wish), random disables of built-in rules and random VM documents, even documents that
  claim `hardware.verified: true`, never yields EXCLUDED, L3, L4 or a "no" reading without the
  verify stage's proof;
- the verify stage and the engine, over random, partly valid sets of real signed evidence files
  for one VM (fresh, stale, rogue-signed, tampered, version 1, bound elsewhere, reused, junk) in
  any order, raise exactly what the first verified file shows and nothing else.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import cel
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditor.api import scan
from auditor.document import referenced_sections
from auditor.engine import Engine
from auditor.guest.nonces import NonceStore
from auditor.model import VM, Answer, Evidence, Level, Party, RulePackRef, Source, Status
from auditor.rules.loader import CompiledRule, PackFile, Rule, RulePack, load_packs
from auditor.verify.options import build_evidence_options
from auditor.verify.stage import GUEST_KIND, VerifyOptions, verify_vms
from tests.conftest import DEMO_FLEET
from tests.hostile import FULL_CLAIMS, HR_DB, JUDGED_AT, REFERENCE, Lab

BUILTIN = load_packs()
BUILTIN_IDS = sorted(c.rule.id for p in BUILTIN for c in p.rules)

# ------------------------------------------------------------------ engine: random packs

CONDITIONS = [
    "true",
    'vm.technology in ["SEV_SNP", "TDX"]',
    "vm.hardware.verified == true",
    "has(vm.hardware) && vm.hardware.verified == true",
    "vm.hardware.verified == true && vm.guest.key_release.verified == true",
    "vm.disks.all(d, has(d.guest_encrypted) && d.guest_encrypted == true)",
    'vm.attestation.provider_verdict == "passed"',
    "vm.tpm.present == false",
    "!has(vm.hardware)",
    "vm.hardware.authentic == true || true",
]


@st.composite
def hostile_packs(draw: st.DrawFn) -> RulePack:
    rules = []
    for i in range(draw(st.integers(0, 6))):
        when = draw(st.sampled_from(CONDITIONS))
        replace = draw(st.booleans())
        rule = Rule(
            id=draw(st.sampled_from(BUILTIN_IDS)) if replace else f"hostile.r{i}",
            title="hostile rule",
            party=draw(st.sampled_from(list(Party))),
            effect=draw(
                st.sampled_from([Status.EXCLUDED, Status.CLAIMED_EXCLUDED, Status.CAN_ACCESS])
            ),
            when=when,
            rationale="a hostile pack",
        )
        rules.append(
            CompiledRule(
                rule=rule,
                program=cel.compile(when),
                sections=tuple(referenced_sections(when)),
                pack="hostile",
            )
        )
    unique = {c.rule.id: c for c in rules}
    disable = draw(st.lists(st.sampled_from(BUILTIN_IDS), max_size=8, unique=True))
    disable = [d for d in disable if d not in unique]
    ref = RulePackRef(
        name="hostile", version="1", sha256="0" * 64, path="/tmp/hostile.yaml", rules=len(unique)
    )
    spec = PackFile(pack="hostile", disable=disable)
    return RulePack(ref=ref, spec=spec, rules=tuple(unique.values()))


hardware_docs = st.fixed_dictionaries(
    {},
    optional={
        "present": st.booleans(),
        "authentic": st.booleans(),
        "bound": st.booleans(),
        "fresh": st.booleans(),
        "verified": st.booleans(),
        "debug": st.booleans(),
        "migrate_ma": st.booleans(),
        "measurement_matched": st.booleans(),
        "endorsement_verified": st.booleans(),
        "tcb_current": st.booleans(),
        "tcb_below_minimum": st.booleans(),
    },
)
documents = st.fixed_dictionaries(
    {
        "technology": st.sampled_from(["NONE", "SEV", "SEV_ES", "SEV_SNP", "TDX", "UNKNOWN"]),
        "disks": st.lists(
            st.fixed_dictionaries(
                {
                    "id": st.just("vol-1"),
                    "boot": st.booleans(),
                    "encrypted": st.booleans(),
                    "custody": st.sampled_from(["none", "provider_kms", "guest"]),
                },
                optional={"guest_encrypted": st.booleans()},
            ),
            max_size=3,
        ),
    },
    optional={
        "hardware": hardware_docs,
        "guest": st.fixed_dictionaries(
            {},
            optional={
                "disk_encryption": st.fixed_dictionaries({"root_encrypted": st.booleans()}),
                "key_release": st.fixed_dictionaries({"verified": st.booleans()}),
            },
        ),
        "attestation": st.fixed_dictionaries(
            {"provider_verdict": st.sampled_from(["none", "passed", "failed"])}
        ),
        "tpm": st.fixed_dictionaries({"present": st.booleans()}),
        "metadata_service": st.fixed_dictionaries({"enabled": st.booleans()}),
        "agents": st.fixed_dictionaries(
            {"extensions": st.just([]), "run_command": st.booleans(), "vm_agent": st.booleans()}
        ),
    },
)


@settings(max_examples=300, deadline=None)
@given(pack=hostile_packs(), doc=documents, claimed_proof=st.sampled_from([None, "ee" * 32]))
def test_no_pack_and_no_document_excludes_without_the_proof(
    pack: RulePack, doc: dict[str, Any], claimed_proof: str | None
) -> None:
    """`claimed_proof`: a proof hash with no document backing it (a tampered run could set
    the field); only the verify stage's record_proof makes both agree."""
    engine = Engine([*BUILTIN, pack])
    vm = VM(
        provider="aws",
        account="111122223333",
        region="eu-west-1",
        id="i-1",
        document=copy.deepcopy(doc),
        hardware_evidence=claimed_proof,
    )
    if claimed_proof and isinstance(vm.document.get("hardware"), dict):
        vm.document["hardware"].pop("evidence_sha256", None)
    result = engine.evaluate(vm)
    assert Status.EXCLUDED not in result.parties.values()
    assert result.level.rank <= 2
    assert result.gdpr.provider_can_access is not Answer.NO


# ------------------------------------------------------------------ stage: random evidence sets


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    return Lab(tmp_path_factory.mktemp("lab"))


@pytest.fixture(scope="module")
def hr_db() -> VM:
    """eu-hr-db as the AWS provider collects it from the demo replay (no guest evidence)."""
    with pytest.MonkeyPatch.context() as mp:  # the conftest env, for a module-scoped fixture
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        mp.setenv("AWS_CONFIG_FILE", "/dev/null")
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        for var in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
            mp.delenv(var, raising=False)
        run = scan("aws", replay=DEMO_FLEET, regions=["eu-west-1"])
    result = next(v for v in run.vms if v.id == HR_DB)
    return VM(**{name: getattr(result, name) for name in VM.model_fields})


@pytest.fixture(scope="module")
def pool(lab: Lab) -> dict[str, bytes]:
    """One VM's candidate files: what each would earn alone is in EARNS."""
    full = lab.evidence(claims=FULL_CLAIMS, receipt=True)
    tampered = lab.evidence()
    tampered["disk_encryption"] = FULL_CLAIMS["disk_encryption"]
    docs: dict[str, Any] = {
        "full": full,
        "full-again": dict(full, collected_at="2026-11-21T11:00:00Z"),  # same nonce
        "plain": lab.evidence(),
        "v1": lab.evidence(claims=FULL_CLAIMS, receipt=True, version=1),
        "stale": lab.evidence(nonce="ab" * 32, claims=FULL_CLAIMS, receipt=True),
        "rogue": lab.evidence(claims=FULL_CLAIMS, receipt=True, chain=lab.rogue),
        "tampered": tampered,
        "elsewhere": lab.evidence(claims=FULL_CLAIMS, receipt=True, bound_to="i-0ther"),
        "debug": lab.evidence(claims=FULL_CLAIMS, receipt=True, debug=True),
    }
    out = {name: json.dumps(doc).encode() for name, doc in docs.items()}
    out["junk"] = b'{"format": "ccaudit-guest-evidence/2", "nonce": 5}'
    return out


#: The level each file earns when it is the first verified one (None: it never verifies).
EARNS: dict[str, Level | None] = {
    "full": Level.L4,
    "full-again": Level.L4,
    "plain": Level.L3,
    "v1": Level.L3,  # its report verifies; its claims are not covered
    "debug": Level.L0,  # verified, and shows the host can debug it
    "stale": None,
    "rogue": None,
    "tampered": None,
    "elsewhere": None,
    "junk": None,
}


def _expected(order: list[str]) -> str | None:
    """The file the stage must use: the first that verifies, a reuse of a used nonce not."""
    used_full = False
    for name in order:
        if name in ("full", "full-again"):
            if used_full:
                continue
            used_full = True
        if EARNS[name] is not None:
            return name
    return None


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(order=st.lists(st.sampled_from(sorted(EARNS)), min_size=1, max_size=5, unique=True))
def test_only_the_first_verified_file_counts(
    order: list[str], lab: Lab, hr_db: VM, pool: dict[str, bytes]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        state = lab.fresh_state(Path(tmp) / "state")
        options = VerifyOptions(
            evidence=build_evidence_options(
                reference_measurements=[("reference", REFERENCE.hex())],
                key_broker_keys=[lab.broker_pem],
                demo_trust_anchor=lab.anchor,
                cache_dir=Path(tmp) / "cache",
            ),
            nonce_store=NonceStore(state / "nonces.json"),
        )
        vm = hr_db.model_copy(deep=True)
        evidence: dict[str, Evidence] = {}
        shas = []
        for name in order:
            ev = Evidence.from_bytes(
                pool[name], kind=GUEST_KIND, source=Source.GUEST, ref=f"../evidence/guest/{name}"
            )
            evidence[ev.sha256] = ev
            shas.append(ev.sha256)
        vm.evidence["hardware"] = shas
        verify_vms([vm], evidence, JUDGED_AT, options)
        result = Engine(BUILTIN).evaluate(vm)
        shutil.rmtree(state, ignore_errors=True)
    chosen = _expected(order)
    statuses = set(result.parties.values())
    if chosen is None:
        assert vm.hardware_evidence is None
        assert Status.EXCLUDED not in statuses
        assert result.level.rank <= 1
        assert "disk_encryption" not in vm.document.get("guest", {})
        return
    assert vm.hardware_evidence == evidence[shas[order.index(chosen)]].sha256
    assert result.level is EARNS[chosen], (order, result.level_reason)
    key_excluded = result.parties[Party.KEY_CUSTODIAN] is Status.EXCLUDED
    assert key_excluded is (chosen in ("full", "full-again", "debug"))
    if chosen == "debug":
        assert result.parties[Party.HYPERVISOR] is Status.CAN_ACCESS
    else:
        assert result.parties[Party.HYPERVISOR] is Status.EXCLUDED
