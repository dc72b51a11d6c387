"""Where the AGPL-era vectors live: ../shared beside the checkout, never copied into it.

`CCAUDIT_SHARED_VECTORS` points elsewhere; without the folder (a user's clone) tests that need
those vectors skip with the reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_VECTORS = Path(
    os.environ.get(
        "CCAUDIT_SHARED_VECTORS",
        Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "vectors",
    )
)


def shared_vectors(*names: str) -> list[Path]:
    """The named files under SHARED_VECTORS, or skip the test (AGPL-era: read, never copied)."""
    paths = [SHARED_VECTORS / n for n in names]
    if not all(p.is_file() for p in paths):
        pytest.skip(f"shared vectors not available (read from ../shared only): {', '.join(names)}")
    return paths
