from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared beside the checkout; tests that need it skip with the reason when it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"real data and reference outputs not available: {SHARED} does not exist")
    return SHARED


def pytest_configure(config: pytest.Config) -> None:
    """The package's filters of upstream warnings (``unext_monai.console``, applied when it is imported) for
    the whole session: pytest sets aside what collection imported, and restores this base state around every test.

    One intra-op thread in every process of the suite (this one, pytest-xdist's workers and every subprocess a test
    starts) unless ``OMP_NUM_THREADS`` says otherwise: the suite runs two workers on CI's two cores, and a process
    with a thread per core then waits at every parallel operation for a thread the other process has descheduled
    (the real data sets' check took 54 s instead of 7 s beside one other busy process)."""
    from unext_monai.console import quiet_upstream_noise

    quiet_upstream_noise()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(autouse=True)
def _subnormals_not_flushed():
    """Training turns on flushing of subnormal numbers for its whole process (``flush_denormal``); the tests that run
    it in this process must not leave it on for the next test."""
    yield
    torch.set_flush_denormal(False)


@pytest.fixture
def dead_pid() -> int:
    """The id of a process that has ended (as a killed build's leftovers name it)."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid
