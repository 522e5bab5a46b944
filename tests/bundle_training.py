"""The training bundle run in the tests' own process, small and quick, for the tests that train (not a test module)."""

from __future__ import annotations

import logging
from pathlib import Path

from monai.bundle import ConfigWorkflow

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
META = str(CONFIGS / "metadata.json")
LOGGING = str(CONFIGS / "logging.conf")
# small and quick: 64x64 pictures, UNeXt-S widths, no worker processes
SMALL = {"spatial_size": [64, 64], "num_workers": 0, "batch_size": 4, "network_def#features": [8, 16, 32, 64, 128]}


def train(bundle_root: Path, log_handler: logging.Handler | None = None, **override) -> None:
    """Run train.json in this process as ``monai.bundle run`` does; ``log_handler`` also gets the package's log."""
    wf = ConfigWorkflow(config_file=str(CONFIGS / "train.json"), meta_file=META, logging_file=LOGGING,
                        workflow_type="train", bundle_root=str(bundle_root), **{**SMALL, **override})
    package_logger = logging.getLogger("unext_monai")
    if log_handler is not None:  # logging.conf replaced the root logger's handlers, pytest's among them
        package_logger.addHandler(log_handler)
    try:
        wf.initialize()
        wf.run()
        wf.finalize()
    finally:
        if log_handler is not None:
            package_logger.removeHandler(log_handler)
