"""Named checks with reasons: how every verifier reports, so reports can show each step."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Check:
    name: str
    ok: bool
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "reason": self.reason}


@dataclass
class CheckedResult:
    """A verifier's outcome: `ok` only when there were checks and every one passed."""

    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def check(self, name: str) -> bool | None:
        for c in self.checks:
            if c.name == name:
                return c.ok
        return None

    @property
    def reason(self) -> str:
        failed = [c.reason for c in self.checks if not c.ok]
        return "; ".join(failed) if failed else "all checks passed"
