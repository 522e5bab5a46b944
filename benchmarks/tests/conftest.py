"""The benchmark tooling's own tests (run apart from the product suite: ``python -m pytest benchmarks/tests``)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[3] / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"real data not available: {SHARED} does not exist")
    return SHARED
