"""The notebook API (`auditor.scan` -> `Run`: DataFrames, rich HTML) and the example notebook."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

import auditor
from auditor.model import AuditRun, Evidence, canonical_json
from auditor.notebook import EVIDENCE_COLUMNS, Run, RunVM
from auditor.reports.tables import COLUMNS
from tests.conftest import DEMO_FLEET, REPO

NOTEBOOK = REPO / "examples" / "investigate.ipynb"
MAA_ISSUER = "https://ccaudit-demo-maa.example"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return auditor.scan(
        replay=DEMO_FLEET,
        guest_evidence=DEMO_FLEET / "guest-evidence",
        maa_issuers=[MAA_ISSUER],
        maa_jwks=DEMO_FLEET / "maa-demo-jwks.json",
        store=tmp_path_factory.mktemp("store"),
    )


def test_public_functions_return_the_notebook_run(run: Run) -> None:
    assert isinstance(run, Run) and isinstance(run.model, AuditRun)
    # anything else reads through to the model
    assert run.run_id == run.model.run_id
    assert run.level_counts() == run.model.level_counts()
    assert run.path is not None and (run.path / "result.json").is_file()


def test_tables_are_dataframes_with_the_report_columns(run: Run) -> None:
    for name in ("vms", "parties", "findings"):
        df = getattr(run, name)
        assert list(df.columns) == [c.name for c in COLUMNS[name]]
    assert len(run.vms) == len(run.model.vms)
    assert len(run.parties) == sum(len(vm.parties) for vm in run.model.vms)
    assert len(run.findings) == sum(len(vm.findings) for vm in run.model.vms)
    assert str(run.vms["level"].dtype) == "category"
    # copies: a notebook user editing a table does not change the next one they read
    vms = run.vms
    vms.loc[:, "name"] = "changed"
    assert (run.vms["name"] != "changed").any()


def test_evidence_table_says_who_vouches_and_what_verified(run: Run) -> None:
    ev = run.evidence
    assert list(ev.columns) == list(EVIDENCE_COLUMNS)
    assert set(ev["sha256"]) == set(run.model.evidence)
    token = ev[ev["kind"] == "maa_token"]
    assert len(token) == 1 and bool(token["verified"].iloc[0]) is True
    (users,) = token["vms"]
    (vm,) = [v for v in run.model.vms if v.key in users]
    assert vm.name == "payroll-db-cvm"
    unverified = ev[ev["kind"] == "api_resource"]
    assert unverified["verified"].isna().all()  # read as given, never "passed"


def test_vm_drill_down(run: Run) -> None:
    vm = run.vm("payroll-db-cvm")
    assert isinstance(vm, RunVM) and vm.model.name == "payroll-db-cvm"
    assert vm.level == vm.model.level
    assert run.vm(vm.model.id).model is vm.model and run.vm(vm.model.key).model is vm.model
    assert list(vm.parties["party"].astype(str)) == [p.value for p in vm.model.parties]
    assert set(vm.evidence["section"]) == set(vm.model.evidence)
    assert len(vm.findings) == len(vm.model.findings)
    with pytest.raises(KeyError, match="names 0 VMs"):
        run.vm("no-such-vm")


def _digest(e: Evidence, raw: object) -> str:
    data = raw if isinstance(raw, bytes) else canonical_json(raw)
    return hashlib.sha256(data).hexdigest()


def test_raw_evidence_is_exactly_what_was_hashed(run: Run) -> None:
    for sha, e in list(run.model.evidence.items())[:25]:
        assert _digest(e, run.raw(sha)) == sha
    binary = [e for e in run.model.evidence.values() if e.encoding == "base64"]
    for e in binary:
        assert run.raw(e.sha256[:16]) == base64.b64decode(e.raw)
    vm = run.vm("payroll-db-cvm")
    (token_sha,) = [s for s in vm.evidence["sha256"] if run.model.evidence[s].kind == "maa_token"]
    assert vm.raw(token_sha) == run.raw(token_sha)
    other = next(s for s in run.model.evidence if s not in set(vm.evidence["sha256"]))
    with pytest.raises(KeyError):
        vm.raw(other)


_FETCHING = re.compile(r"""(?i)(\bsrc\s*=|\bhref\s*=|url\(|@import|<script|<link|<iframe)""")


def test_html_reprs_are_self_contained_and_styled_like_the_report(run: Run) -> None:
    page = run._repr_html_()
    assert page.startswith('<div class="ccaudit-nb"><style>')
    assert not _FETCHING.search(page)
    assert run.run_id in page
    for vm in run.model.vms[:5]:
        assert f'<span class="lv {vm.level.value}">' in page
    # every report rule is scoped to the output cell: nothing restyles the notebook page
    style = page.split("<style>", 1)[1].split("</style>", 1)[0]
    for rule in re.findall(r"([^{}]+)\{", style):
        assert all(s.strip().startswith(".ccaudit-nb") for s in rule.split(","))
    vm_page = run.vm("payroll-db-cvm")._repr_html_()
    assert not _FETCHING.search(vm_page)
    assert "payroll-db-cvm" in vm_page and "maa_token" in vm_page
    assert '<span class="ok">verified</span>' in vm_page


def test_html_escapes_cloud_supplied_text(run: Run) -> None:
    model = run.model.model_copy(deep=True)
    model.vms[0].name = '<img src=x onerror="alert(1)">'
    page = Run(model)._repr_html_()
    assert "<img" not in page and "&lt;img src=x" in page


def test_load_run_by_id_and_latest_and_diff(run: Run) -> None:
    assert run.path is not None
    store = run.path.parent.parent
    again = auditor.load_run(run.run_id, store=store)
    assert isinstance(again, Run) and again.run_id == run.run_id and again.path == run.path
    assert auditor.load_run("latest", store=store).run_id == run.run_id
    d = auditor.diff(run, again)
    assert isinstance(d, auditor.RunDiff) and not d.changed
    assert "No change" in d._repr_markdown_()


def test_diff_stays_a_function_after_the_drift_module_loads() -> None:
    import auditor.runs.drift  # a submodule import must not shadow the function auditor.diff

    assert callable(auditor.diff) and auditor.diff.__module__ == "auditor.notebook"


# -- the example notebook ---------------------------------------------------------------------


def _code_cells(nb: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def test_committed_notebook_is_executed_and_error_free() -> None:
    """A reader on GitHub sees the outputs: every code cell ran, in order, without an error."""
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    code = _code_cells(nb)
    assert len(code) >= 5
    assert [c["execution_count"] for c in code] == list(range(1, len(code) + 1))
    for cell in code:
        assert cell["outputs"], "".join(cell["source"])[:60]
        assert not [o for o in cell["outputs"] if o["output_type"] == "error"]
    text = "".join("".join(o.get("text", "")) for c in code for o in c["outputs"])
    assert "ok   snp.signature" in text  # the hardware evidence is in, and verified
    assert any("image/png" in o.get("data", {}) for c in code for o in c["outputs"])


def test_notebook_uses_only_the_public_api() -> None:
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    source = "\n".join("".join(c["source"]) for c in _code_cells(nb))
    imports = re.findall(r"^\s*(?:from|import)\s+([\w.]+)", source, re.M)
    assert "auditor" in imports
    assert not [m for m in imports if m.startswith("auditor.")], imports
    used = set(re.findall(r"\bauditor\.(\w+)", source))
    assert used and used <= set(auditor.__all__), used - set(auditor.__all__)
    assert "auditor.demo()" in source  # the demo with its guest evidence, as `ccaudit demo`


def test_notebook_extra_installs_what_the_notebook_imports() -> None:
    import tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    names = {re.split(r"[<>=\[ ]", d, maxsplit=1)[0] for d in extras["notebook"]}
    assert {"cc-auditor", "jupyterlab", "ipykernel", "matplotlib"} <= names
    assert "cc-auditor[all]" in extras["notebook"]  # pandas and the cloud SDKs come with it


def test_parties_table_names_the_vm(run: Run) -> None:
    parties = run.parties
    names = dict(zip(run.vms["id"], run.vms["name"], strict=True))
    assert "name" in parties.columns
    assert (parties["name"] == parties["id"].map(names)).all()


def test_notebook_executes_top_to_bottom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    # a kernel spec for this interpreter, so the notebook runs in the venv under test
    spec = tmp_path / "jupyter" / "kernels" / "ccaudit-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "cc-auditor tests",
                "language": "python",
            }
        ),
        encoding="utf-8",
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("CCAUDIT_HOME", str(tmp_path / "store"))  # the kernel saves the run here
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend draws PNGs
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=300,
        kernel_name="ccaudit-test",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any('class="ccaudit-nb"' in h for h in html)  # the run's and the VM's rich repr
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the levels-per-cloud plot
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert re.search(r"\d+ of 27 VMs keep the provider in the trust set", text)
    assert "ok   snp.signature" in text and "SHA-256 matches the run's record: True" in text
    assert re.search(r"25 of 27 VMs keep the provider in the trust set", text)
    assert (tmp_path / "store" / "runs").is_dir()  # demo() saved, load_run("latest") read it


def test_a_run_in_the_home_store_is_shown_from_home(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run.path is not None
    monkeypatch.setenv("HOME", str(run.path.parent.parent))
    assert repr(run).endswith(f" at ~/runs/{run.run_id}>")
    monkeypatch.setenv("HOME", str(tmp_path))  # a run kept elsewhere keeps its whole path
    assert repr(run).endswith(f" at {run.path}>")
