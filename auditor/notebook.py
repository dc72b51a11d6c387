"""The notebook face of a run: pandas tables and rich HTML, over the unchanged `AuditRun`.

Security engineers investigate in Jupyter, where the natural unit is a DataFrame: `run.vms`,
`run.parties`, `run.findings`, `run.evidence`. The `AuditRun` model cannot give those names:
its `vms` and `evidence` fields are the typed contract every stage and report relies on. So the
public `auditor.scan` and `auditor.load_run` return a thin `Run` around the model instead
(and `auditor.diff` accepts it):

* `run.vms`, `run.parties`, `run.findings`, `run.evidence`: DataFrames (the first three are the
  CSV/Parquet tables of `auditor.reports.tables`, with the same columns and types);
* `run.model`: the `AuditRun` itself; any other attribute (`run_id`, `scope`, `coverage`,
  `level_counts()`...) is read through to it;
* `run.vm(name_or_id)`: one VM (`RunVM`), with its own `parties`, `findings` and `evidence`
  tables, `raw(sha256)` for an evidence item's bytes or JSON, and `model`, the `VMResult`;
* `_repr_html_` on both: a compact summary in the HTML report's look (its CSS, scoped to the
  output cell; no script, no external URL).

`auditor.api` keeps the `AuditRun`-returning functions for code that wants the model.
"""

from __future__ import annotations

import base64
import functools
import inspect
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec

import jinja2

from auditor import api
from auditor.config import Config, load_config
from auditor.model import AuditRun, Evidence, Party, VMResult
from auditor.reports.html import asset
from auditor.reports.tables import frames
from auditor.reports.view import (
    PARTY_LABEL,
    PARTY_SHORT,
    STATUS_CODE,
    VMView,
    build_view,
)
from auditor.runs.drift import RunDiff
from auditor.runs.store import RunStore

if TYPE_CHECKING:
    import pandas  # type: ignore[import-untyped,unused-ignore]

__all__ = ["EVIDENCE_COLUMNS", "Run", "RunVM", "diff", "load_run", "scan"]

P = ParamSpec("P")
#: VMs listed in a run's HTML summary before "and N more".
HTML_VMS = 25
#: Columns of `Run.evidence` (`RunVM.evidence` adds `section` after `sha256`).
EVIDENCE_COLUMNS = (
    "sha256",
    "kind",
    "source",
    "provider",
    "account",
    "region",
    "resource",
    "call",
    "ref",
    "collected_at",
    "encoding",
    "verifier",
    "verified",
    "verification_reason",
    "vms",
)
_SCOPE = "ccaudit-nb"


@functools.cache
def scoped_css() -> str:
    """The HTML report's stylesheet, every rule confined to `.ccaudit-nb` (print rules dropped)."""
    css = re.sub(r"/\*.*?\*/", "", asset("report.css"), flags=re.S)
    css = re.sub(r"@media[^{]*\{(?:[^{}]*\{[^{}]*\})*[^{}]*\}", "", css)
    out: list[str] = []
    for selectors, body in re.findall(r"([^{}]+)\{([^{}]*)\}", css):
        scoped = []
        for sel in selectors.split(","):
            sel = sel.strip()
            if not sel:
                continue
            if sel in (":root", "html", "body", "*"):
                scoped.append(f".{_SCOPE}" if sel != "*" else f".{_SCOPE} *")
            else:
                scoped.append(f".{_SCOPE} {sel}")
        if scoped:
            out.append(f"{', '.join(scoped)} {{{body.strip()}}}")
    out.append(f".{_SCOPE} {{max-width: none; padding: 0; font-size: 13px}}")
    return "\n".join(out)


_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
_ENV.filters["short"] = lambda s: s[:12]

_RUN_HTML = _ENV.from_string(
    """<div class="ccaudit-nb"><style>{{ css }}</style>
<h4>cc-auditor run <code>{{ v.run_id }}</code> <small>{{ v.started_at }} · {{ v.fleet.total }} VMs
in {{ v.fleet.scopes }} scopes · coverage {{ 'complete' if v.fleet.complete else
v.fleet.gaps ~ ' gaps' }}</small></h4>
<table class="fleet"><tr><th>cloud</th>{% for lv, _, _ in v.fleet.levels %}<th class="n">
<span class="lv {{ lv.value }}">{{ lv.value }}</span></th>{% endfor %}<th class="n">VMs</th></tr>
{% for _, cloud, counts, total in v.fleet.clouds %}<tr><td>{{ cloud }}</td>{% for n in counts %}
<td class="n">{{ n }}</td>{% endfor %}<td class="n">{{ total }}</td></tr>{% endfor %}</table>
<details><summary>GDPR reading per scope ({{ v.scopes|length }})</summary>
{% for s in v.scopes %}<p class="reading {{ s.answer.value }}">{{ s.sentence }}</p>{% endfor %}
</details>
<table><tr><th>VM</th><th>cloud</th><th>account</th><th>region</th><th>technology</th>
<th>level</th><th>provider can reach plaintext</th>{% for p in parties %}<th title="{{
labels[p] }}">{{ shorts[p] }}</th>{% endfor %}</tr>
{% for vm in vms %}<tr><td>{{ vm.label }}</td><td>{{ vm.cloud }}</td><td>{{ vm.account }}</td>
<td>{{ vm.region }}</td><td>{{ vm.technology }}</td><td><span class="lv {{ vm.level.value }}">{{
vm.level.value }}</span></td><td><span class="ans {{ vm.answer.value }}">{{ vm.answer.value
}}</span></td>{% for p in vm.parties %}<td><span class="st {{ p.status.value }}" title="{{
p.status_label }}: {{ p.reason }}">{{ codes[p.status] }}</span></td>{% endfor %}</tr>
{% endfor %}</table>
{% if more %}<p class="mute">…and {{ more }} more VMs: <code>run.vms</code> has them all.</p>
{% endif %}<p class="mute">{{ v.disclaimer }}</p></div>"""
)

_VM_HTML = _ENV.from_string(
    """<div class="ccaudit-nb"><style>{{ css }}</style><article class="vm">
<h4><span class="lv {{ vm.level.value }}">{{ vm.level.value }}</span> {{ vm.label }}
<small>{{ vm.cloud }} {{ vm.account }} · {{ vm.region }}{% if vm.zone %} / {{ vm.zone }}{% endif
%} · {{ vm.instance_type or '?' }} · {{ vm.technology }}</small> <span class="ans {{
vm.answer.value }}">provider can reach plaintext: {{ vm.answer.value }}</span></h4>
<p>{{ vm.level_reason }}</p>
<p>{{ vm.gdpr_summary }} <small>{{ vm.jurisdiction }}; attestation verified by: {{
vm.attestation.value }}.</small></p>
<table class="pt"><tr><th>Party</th><th>Status</th><th>Reason</th><th>Rules</th></tr>
{% for p in vm.parties %}<tr><td>{{ p.label }}</td><td><span class="st {{ p.status.value }}">{{
p.status_label }}</span></td><td>{{ p.reason }}</td><td>{{ p.rules|join(' ') }}</td></tr>
{% endfor %}</table>
{% if vm.evidence %}<table class="ev"><tr><th>Evidence (facts it backs)</th><th>Who says so</th>
<th>Call</th><th>SHA-256</th><th>Verification</th></tr>
{% for e in vm.evidence %}{% set it = e.item %}<tr><td>{{ it.kind }}{% if e.sections %} <small>({{
e.sections|join(', ') }})</small>{% endif %}</td><td>{{ it.source_label }}</td><td>{{ it.call
}}</td><td><code title="{{ it.sha256 }}">{{ it.short }}</code></td><td>{% if it.verified is none
%}read as given{% elif it.verified %}<span class="ok">verified</span> ({{ it.verifier }}): {{
it.verification_reason }}{% else %}<span class="fail">failed</span> ({{ it.verifier }}): {{
it.verification_reason }}{% endif %}</td></tr>
{% endfor %}</table>{% endif %}
{% if vm.gaps %}<p>Not seen: {% for g in vm.gaps %}{{ g.call }} {{ g.code }} ({{ g.what }}){{
'; ' if not loop.last else '' }}{% endfor %}</p>{% endif %}</article></div>"""
)


def _evidence_row(e: Evidence, vms: list[str]) -> list[Any]:
    v = e.verification
    return [
        e.sha256,
        e.kind,
        e.source.value,
        e.provider,
        e.account,
        e.region,
        e.resource,
        e.call,
        e.ref,
        e.collected_at,
        e.encoding,
        v.verifier if v else None,
        v.ok if v else None,
        v.reason if v else None,
        vms,
    ]


def _evidence_frame(rows: list[list[Any]], columns: tuple[str, ...]) -> pandas.DataFrame:
    import pandas as pd  # type: ignore[import-untyped,unused-ignore]

    df: pandas.DataFrame = pd.DataFrame(rows, columns=list(columns))
    for col in columns:
        if col in ("collected_at", "verified", "vms"):
            continue
        df[col] = df[col].astype("string")
    df["collected_at"] = pd.to_datetime(df["collected_at"], utc=True)
    df["verified"] = df["verified"].astype("boolean")
    return df


def _raw(e: Evidence) -> Any:
    """An evidence item as received: bytes for binary evidence, the JSON value otherwise."""
    value = e.raw  # parsed once (JSON evidence is held packed)
    if e.encoding == "base64" and isinstance(value, str):
        return base64.b64decode(value)
    return value


class RunVM:
    """One VM of a run, for a notebook: tables of its parties, findings and evidence."""

    def __init__(self, run: AuditRun, vm: VMResult) -> None:
        self._run = run
        self.model = vm

    def __repr__(self) -> str:
        return f"<RunVM {self.model.key} {self.model.level.value}>"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.model, name)

    @property
    def parties(self) -> pandas.DataFrame:
        from auditor.reports.tables import frame, vm_party_rows

        return frame("parties", vm_party_rows(self.model))

    @property
    def findings(self) -> pandas.DataFrame:
        from auditor.reports.tables import frame, vm_finding_rows

        return frame("findings", vm_finding_rows(self.model))

    @property
    def evidence(self) -> pandas.DataFrame:
        """The VM's evidence items, one row per (item, document section it backs)."""
        rows: list[list[Any]] = []
        for section, hashes in sorted(self.model.evidence.items()):
            for sha in hashes:
                item = self._run.evidence.get(sha)
                if item is None:
                    row = [sha, *([None] * (len(EVIDENCE_COLUMNS) - 2)), [self.model.key]]
                else:
                    row = _evidence_row(item, [self.model.key])
                rows.append([row[0], section, *row[1:]])
        columns = ("sha256", "section", *EVIDENCE_COLUMNS[1:])
        return _evidence_frame(rows, columns)

    def raw(self, sha256: str) -> Any:
        """An evidence item of this VM as received (bytes or JSON), by its SHA-256 or a prefix."""
        mine = {h for hashes in self.model.evidence.values() for h in hashes}
        matches = [h for h in mine if h.startswith(sha256)]
        if len(matches) != 1 or matches[0] not in self._run.evidence:
            raise KeyError(f"{sha256!r} names {len(matches)} evidence items of {self.model.key}")
        return _raw(self._run.evidence[matches[0]])

    def _view(self) -> VMView:
        single = self._run.model_copy(update={"vms": [self.model]})
        return build_view(single).vms[0]

    def _repr_html_(self) -> str:
        return _VM_HTML.render(css=scoped_css(), vm=self._view())


class Run:
    """A run for a notebook: DataFrames over the `AuditRun` in `model` (see the module doc)."""

    def __init__(self, model: AuditRun, path: Path | None = None) -> None:
        self.model = model
        self.path = path

    def __repr__(self) -> str:
        where = f" at {_shown(self.path)}" if self.path else ""
        return f"<Run {self.model.run_id}: {len(self.model.vms)} VMs{where}>"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.model, name)

    @functools.cached_property
    def _frames(self) -> dict[str, pandas.DataFrame]:
        return frames(self.model)

    @property
    def vms(self) -> pandas.DataFrame:
        """One row per VM (columns: auditor.reports.tables.COLUMNS["vms"])."""
        return self._frames["vms"].copy()

    @property
    def parties(self) -> pandas.DataFrame:
        """One row per VM and party: status, reason, rules, evidence."""
        return self._frames["parties"].copy()

    @property
    def findings(self) -> pandas.DataFrame:
        """One row per finding: rule, party, status, severity, remediation, references."""
        return self._frames["findings"].copy()

    @functools.cached_property
    def _evidence(self) -> pandas.DataFrame:
        users: dict[str, list[str]] = {}
        for vm in self.model.vms:
            for sha in dict.fromkeys(h for hashes in vm.evidence.values() for h in hashes):
                users.setdefault(sha, []).append(vm.key)
        rows = [_evidence_row(e, users.get(sha, [])) for sha, e in self.model.evidence.items()]
        return _evidence_frame(rows, EVIDENCE_COLUMNS)

    @property
    def evidence(self) -> pandas.DataFrame:
        """One row per evidence item: who says so, how collected, verification, VMs using it."""
        return self._evidence.copy()

    def vm(self, ref: str) -> RunVM:
        """One VM by name, id or key (provider/account/region/id)."""
        found = [vm for vm in self.model.vms if ref in (vm.key, vm.id, vm.name)]
        if len(found) != 1:
            raise KeyError(f"{ref!r} names {len(found)} VMs of run {self.model.run_id}")
        return RunVM(self.model, found[0])

    def raw(self, sha256: str) -> Any:
        """An evidence item as received (bytes or JSON), by its SHA-256 or a unique prefix."""
        matches = [h for h in self.model.evidence if h.startswith(sha256)]
        if len(matches) != 1:
            raise KeyError(f"{sha256!r} names {len(matches)} evidence items")
        return _raw(self.model.evidence[matches[0]])

    def diff(self, baseline: Run | AuditRun | str | Path) -> RunDiff:
        """What changed from `baseline` to this run."""
        return diff(baseline, self)

    def _repr_html_(self) -> str:
        view = build_view(self.model)
        return _RUN_HTML.render(
            css=scoped_css(),
            v=view,
            vms=view.vms[:HTML_VMS],
            more=max(0, len(view.vms) - HTML_VMS),
            parties=list(Party),
            labels=PARTY_LABEL,
            shorts=PARTY_SHORT,
            codes=STATUS_CODE,
        )


def _saved_at(model: AuditRun, kwargs: dict[str, Any]) -> Path | None:
    """Where `api.scan` kept the run: `run_dir`, else the store's (given, or the config's)."""
    if kwargs.get("run_dir") is not None:
        return Path(str(kwargs["run_dir"]))
    store = kwargs.get("store")
    config = kwargs.get("config")
    if store is None and config is not None:
        cfg = config if isinstance(config, Config) else load_config(config)
        store = cfg.path(cfg.store)
    if store is None:
        return None
    return (store if isinstance(store, RunStore) else RunStore(str(store))).run_dir(model.run_id)


def _returning_run(fn: Callable[P, AuditRun]) -> Callable[P, Run]:
    """`fn` with its result wrapped in `Run` (keeping its signature for help() and IDEs)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Run:
        model = fn(*args, **kwargs)
        return Run(model, _saved_at(model, kwargs))

    sig = inspect.signature(fn)
    wrapper.__signature__ = sig.replace(return_annotation="Run")  # type: ignore[attr-defined]
    wrapper.__doc__ = (fn.__doc__ or "") + "\n\nReturns an `auditor.notebook.Run` (DataFrames)."
    return wrapper


def _default_store(kwargs: dict[str, Any]) -> None:
    """Keep the run in the default run store, as `ccaudit scan` does, unless told where."""
    if kwargs.get("run_dir") is not None or kwargs.get("store") is not None:
        return
    config = kwargs.get("config")
    if config is not None:
        cfg = config if isinstance(config, Config) else load_config(config)
        if cfg.store is not None:
            return
    kwargs["store"] = RunStore()


_scan = _returning_run(api.scan)


@functools.wraps(_scan)
def scan(*args: Any, save: bool = True, **kwargs: Any) -> Run:
    """`auditor.api.scan` (same options as `ccaudit scan`), returning a `Run`.

    `save` (default True): keep the run in the run store ($CCAUDIT_HOME or
    ~/.local/share/ccaudit, or `store=` / the config's store) like `ccaudit scan`, so
    `auditor.load_run("latest")` and `ccaudit history` find it; False keeps it in memory only.
    """
    if save:
        _default_store(kwargs)
    return _scan(*args, **kwargs)


def demo(save: bool = True, **kwargs: Any) -> Run:
    """The embedded demo fleet, scanned as `ccaudit demo` scans it (guest evidence, the demo
    trust anchor, its nonces and key broker), returning a `Run`; options as for `scan`."""
    from auditor.demo_fleet import scan_options

    with tempfile.TemporaryDirectory(prefix="ccaudit-demo-state-") as state:
        return scan(save=save, **{**scan_options(Path(state)), **kwargs})


def load_run(path_or_id: str | Path, store: str | Path | RunStore | None = None) -> Run:
    """A stored run as a `Run`: a run directory, a run id in the store, or `latest`."""
    where = (store if isinstance(store, RunStore) else RunStore(store)).resolve(path_or_id)
    return Run(api.load_run(where, store), where if where.is_dir() else where.parent)


def diff(
    a: Run | AuditRun | str | Path,
    b: Run | AuditRun | str | Path,
    store: str | Path | RunStore | None = None,
) -> RunDiff:
    """What changed from baseline `a` to run `b` (runs, run directories or run ids)."""
    return api.diff(
        a.model if isinstance(a, Run) else a, b.model if isinstance(b, Run) else b, store
    )


def _shown(path: Path) -> str:
    """A path as its reader writes it: under the home directory as `~/...` (a notebook's saved
    output then names no one's home)."""
    try:
        return "~/" + path.relative_to(Path.home()).as_posix()
    except (ValueError, RuntimeError):  # elsewhere, or no home directory to speak of
        return str(path)
