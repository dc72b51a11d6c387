"""summary.md: the run in a few lines for CI job pages and pull-request comments.

Short by design (a PR comment is capped at 65,536 characters and read in seconds): counts by
level, the GDPR reading per scope, the lowest VMs, the coverage gaps. GitHub-flavoured Markdown,
without links, images or HTML: cloud-supplied text (VM names, error messages) is escaped or put
in code spans, so a hostile VM name cannot add a link, a mention, a table cell or markup. The
wording is the HTML report's (auditor.reports.view), so the two never disagree.
"""

from __future__ import annotations

import re

from auditor.jurisdiction import legal_version
from auditor.model import PROVIDER_PARTIES, SOME_VMS, AuditRun, Status
from auditor.reports.view import (
    ANSWER_ORDER,
    DISCLAIMER,
    ReportView,
    build_view,
    scope_sentence,
)

FILE = "summary.md"
#: Beyond these, the summary says how many more there are and points to report.html.
MAX_SCOPES = 25
MAX_GAPS = 20
MAX_MESSAGE = 160

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")
_SPECIAL = re.compile(r"([\\`*_\[\]<>#!|~&@])")
_AUTOLINK = re.compile(r"(?i):(?=//)|(?<=www)\.")


def _flat(text: str) -> str:
    return _CONTROL.sub(" ", text).strip()


def md_text(text: str) -> str:
    """Plain text that Markdown renders literally: every markup character backslash-escaped.

    `@`, the `:` of `scheme://` and the dot of `www.` are escaped too, so GitHub makes no
    @mention and no autolink of it.
    """
    return _AUTOLINK.sub(lambda m: "\\" + m.group(0), _SPECIAL.sub(r"\\\1", _flat(text)))


def md_code(text: str, *, in_table: bool = False) -> str:
    """A code span holding `text` verbatim (a fence longer than any backtick run inside)."""
    body = _flat(text) or " "
    if in_table:
        body = body.replace("|", "\\|")
    longest = max((len(m) for m in re.findall(r"`+", body)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if body.startswith("`") or body.endswith("`") or longest else ""
    return f"{fence}{pad}{body}{pad}{fence}"


def _clip(text: str, length: int) -> str:
    text = _flat(text)
    return text if len(text) <= length else text[: length - 1] + "…"


def render_markdown(run: AuditRun) -> str:
    return render_view_markdown(build_view(run))


def render_view_markdown(v: ReportView) -> str:
    out: list[str] = []
    f = v.fleet
    out.append("# cc-auditor: confidential-computing evidence summary")
    out.append("")
    packs = "; ".join(
        f"{md_text(name)} {md_text(version)} (sha256 {md_code(sha[:16])})"
        for name, version, sha, _path, _n in v.method.rule_packs
    )
    out.append(
        f"Run {md_code(v.run_id)}, finished {v.finished_at}, "
        f"{md_text(v.method.tool_name)} {md_text(v.method.tool_version)}; rule packs: "
        f"{packs or 'none'}."
    )
    out.append("")
    answers = " · ".join(f"{a.value} {n}" for a, n in f.answers)
    coverage = "complete" if f.complete else f"**incomplete, {f.gaps} gaps** (listed below)"
    lowest = f.lowest.value if f.lowest else "none"
    out.append(
        f"**{f.total} VMs** in {f.scopes} scopes. Lowest assurance level: **{lowest}**. "
        f"Provider can reach plaintext: {answers}. Coverage: {coverage}."
    )
    out.append("")
    if v.method.judged_note:
        out.append(md_text(v.method.judged_note))
        out.append("")
    so = v.sign_off
    attested = " · ".join(f"{a.value} {n}" for a, n in f.attestation if n)
    out.append(f"Attestation verified by: {md_text(attested or 'nobody')}.")
    if so.demo_vms:
        out.append("")
        out.append(
            f"**Demo caveat:** {so.demo_vms} VM{'' if so.demo_vms == 1 else 's'} verified against "
            "the demo trust anchor, which is not AMD: those verdicts prove nothing about real "
            "hardware."
        )
    out.append("")
    out.append(
        f"Run fingerprint: result.json SHA-256 {md_code(so.result_sha256)} "
        f"({md_text(legal_version())})."
    )
    out.append("")
    if so.anchors:
        out.append("## Trust anchors relied on")
        out.append("")
        out.append("| Store | Subject | SHA-256 | VMs |")
        out.append("|---|---|---|--:|")
        for a in so.anchors:
            out.append(
                f"| {md_code(a.store, in_table=True)} | {md_code(a.subject, in_table=True)} | "
                f"{md_code(a.fingerprint, in_table=True)} | {a.used_by} |"
            )
        out.append("")
    if v.method.overrides:
        out.append("## Owner overrides")
        out.append("")
        out.append(
            "Built-in vetoes the owner's rule packs switched off; where one applies, the party "
            "is at most claimed excluded (the owner's word, never hardware evidence)."
        )
        out.append("")
        for o in v.method.overrides:
            out.append(
                f"- {md_code(o.rule_id)} ({md_text(o.party)}) {o.action} by pack "
                f"{md_code(o.pack)} (sha256 {md_code(o.pack_sha256[:16])}): changed "
                f"{o.vms} VM{'' if o.vms == 1 else 's'}"
            )
        out.append("")

    out.append("## VMs by assurance level")
    out.append("")
    clouds = list(f.clouds)
    out.append("| Level | Meaning | " + " | ".join(c[1] for c in clouds) + " | All |")
    out.append("|---|---|" + "--:|" * len(clouds) + "--:|")
    for level, meaning, n in f.levels:
        counts = " | ".join(str(c[2][level.rank]) for c in clouds)
        out.append(f"| {level.value} | {meaning} | {counts} | {n} |")
    out.append("")

    out.append("## Can the provider reach the plaintext? Reading per scope")
    out.append("")
    rank = {a: i for i, a in enumerate(ANSWER_ORDER)}
    scopes = sorted(v.scopes, key=lambda s: (rank[s.answer], -s.total, s.title))
    for s in scopes[:MAX_SCOPES]:
        out.append(f"- {scope_sentence(s, ident=md_code)}")
    if len(scopes) > MAX_SCOPES:
        out.append(f"- … and {len(scopes) - MAX_SCOPES} more scopes: see report.html.")
    if not scopes:
        out.append("- No scope was read.")
    out.append("")

    if f.pools:
        out.append("## Kubernetes node pools")
        out.append("")
        out.append(
            "| Platform | Cluster | Node pool | Nodes | Levels | Pool declares | Unlike the pool |"
        )
        out.append("|---|---|---|--:|---|---|--:|")
        for p in f.pools:
            levels = " · ".join(f"{lv.value} {n}" for lv, n in p.levels)
            out.append(
                f"| {p.platform} | {md_code(p.cluster, in_table=True)} | "
                f"{md_code(p.node_pool, in_table=True)} | {p.nodes} | {levels} | "
                f"{md_text(p.declared)} | {p.unlike_pool} |"
            )
        out.append("")
    if v.lowest:
        out.append(f"## Lowest VMs ({len(v.lowest)} of {f.total})")
        out.append("")
        out.append(
            "| VM | Scope | Region | Level | Provider can reach plaintext "
            "| Provider parties that can access |"
        )
        out.append("|---|---|---|---|---|---|")
        for vm in v.lowest:
            can = ", ".join(
                p.label
                for p in vm.parties
                if p.status is Status.CAN_ACCESS and p.party in PROVIDER_PARTIES
            )
            out.append(
                "| "
                + " | ".join(
                    (
                        md_code(vm.label, in_table=True),
                        md_code(f"{vm.provider}/{vm.account}", in_table=True),
                        md_code(vm.region, in_table=True),
                        vm.level.value,
                        vm.answer.value,
                        can or "none",
                    )
                )
                + " |"
            )
        out.append("")

    out.append("## Coverage gaps")
    out.append("")
    if not v.gaps:
        out.append("None: every scope was read.")
    for g in v.gaps[:MAX_GAPS]:
        if g.affects in ("scope", SOME_VMS):
            what = md_text(g.what)
        elif g.resource:
            what = f"resource {md_code(g.resource)}"
        elif g.sections:
            what = "VM facts missing: " + ", ".join(md_text(x) for x in g.sections)
        else:
            what = "some VM facts missing"
        out.append(
            f"- {md_code(g.scope_label)}: {md_code(g.call)} {md_code(g.code)} "
            f"({what}): {md_code(_clip(g.message, MAX_MESSAGE))}"
        )
    if len(v.gaps) > MAX_GAPS:
        out.append(f"- … and {len(v.gaps) - MAX_GAPS} more: see report.html.")
    out.append("")
    out.append(f"_{DISCLAIMER}_")
    out.append("")
    return "\n".join(out)


def render(run: AuditRun) -> dict[str, bytes]:
    return {FILE: render_markdown(run).encode("utf-8")}
