"""Which provider agents run in the guest, and did cloud-init consume the metadata service?

Provider agents (SSM Agent, Google's guest agent, the Azure VM agent and its extensions, the
QEMU guest agent, Hyper-V's key-value exchange daemon) run provider-sent commands or data as
root; cloud-init runs user data and keys the metadata service serves. Either is a path for the
provider into the guest that memory encryption does not close. The collector reports what it
finds running (from /proc, nothing executed) and whether cloud-init ran this boot; the report
binds the claim (auditor/guest/format.py), and only a measured, owner-built image makes it worth
something: the rules require a verified launch measurement too. Standard library only.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

MAX_PROCESSES = 65536
#: Process names (comm, or the basename of argv[0] / argv[1] for interpreters) of agents that
#: take instructions or data from the provider.
PROVIDER_AGENTS: dict[str, str] = {
    "amazon-ssm-agent": "AWS Systems Manager agent",
    "ssm-agent-worker": "AWS Systems Manager agent",
    "ssm-session-worker": "AWS Systems Manager session",
    "amazon-cloudwatch-agent": "Amazon CloudWatch agent",
    "google_guest_agent": "Google guest agent",
    "google_guest_agent_manager": "Google guest agent",
    "google-guest-agent": "Google guest agent",
    "google_osconfig_agent": "Google OS Config agent",
    "waagent": "Azure Linux VM agent (WALinuxAgent)",
    "WALinuxAgent": "Azure Linux VM agent (WALinuxAgent)",
    "azuremonitoragent": "Azure Monitor agent",
    "mdsd": "Azure Monitor agent",
    "omsagent": "Log Analytics agent",
    "qemu-ga": "QEMU guest agent",
    "hv_kvp_daemon": "Hyper-V key-value exchange daemon",
}
_INTERPRETERS = ("python", "python3", "perl", "sh", "bash")
CLOUD_INIT_RESULT = ("run/cloud-init/result.json", "var/lib/cloud/data/result.json")


def _read(path: Path, limit: int = 64 * 1024) -> bytes:
    with path.open("rb") as fh:
        return fh.read(limit)


def _names(proc: Path) -> set[str]:
    """The names a process goes by: comm, argv[0] and, for an interpreter, argv[1]."""
    names: set[str] = set()
    with contextlib.suppress(OSError):
        names.add(_read(proc / "comm").decode("utf-8", "replace").strip())
    try:
        argv = [a for a in _read(proc / "cmdline").split(b"\0") if a]
    except OSError:
        argv = []
    if argv:
        first = os.path.basename(argv[0].decode("utf-8", "replace"))
        names.add(first)
        if first.rstrip("0123456789.") in _INTERPRETERS and len(argv) > 1:
            for arg in argv[1:3]:
                text = arg.decode("utf-8", "replace")
                if not text.startswith("-"):
                    names.add(os.path.basename(text))
                    break
    return names


def provider_agents(root: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """The provider agents running now (sorted names), and the problems met reading /proc."""
    proc = root / "proc"
    found: set[str] = set()
    problems: list[tuple[str, str]] = []
    try:
        entries = [p for p in proc.iterdir() if p.name.isdigit()][:MAX_PROCESSES]
    except OSError as err:
        return [], [("provider agents", f"cannot list {proc}: {err.strerror or err}")]
    for entry in entries:
        for name in _names(entry):
            if name in PROVIDER_AGENTS:
                found.add(name)
    return sorted(found), problems


def cloud_init(root: Path) -> dict[str, Any]:
    """Did cloud-init run this boot (it reads the metadata service and runs its user data)?"""
    for rel in CLOUD_INIT_RESULT:
        path = root / rel
        try:
            data = json.loads(_read(path))
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as err:
            return {"ran": True, "source": f"/{rel}", "note": f"unreadable: {err}"}
        result = data.get("v1") if isinstance(data, dict) else None
        source = result.get("datasource") if isinstance(result, dict) else None
        return {"ran": True, "source": f"/{rel}", "datasource": str(source or "")[:200]}
    return {"ran": False}


def agents_section(root: Path) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The `agents` claim: provider agents running, and whether cloud-init ran."""
    running, problems = provider_agents(root)
    section: dict[str, Any] = {
        "provider_agents": running,
        "cloud_init": cloud_init(root),
    }
    return section, problems
