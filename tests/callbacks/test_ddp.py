"""DDP on two CPU processes (gloo): the history is identical on both ranks and equals one process;
DynamicsEarlyStopping agrees across ranks."""

import os
import subprocess
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).with_name("ddp_script.py")


def _run(out: Path, devices: int) -> None:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_"))
    }
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(out), str(devices)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]


def test_ddp_two_processes_equal_single_process(tmp_path: Path) -> None:
    _run(tmp_path, 2)
    _run(tmp_path, 1)
    rank0 = torch.load(tmp_path / "devices2_rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "devices2_rank1.pt", weights_only=True)
    single = torch.load(tmp_path / "devices1_rank0.pt", weights_only=True)
    assert torch.equal(rank0["values"], rank1["values"])
    assert rank0["logged"] == rank1["logged"]
    # DynamicsEarlyStopping: rank 1 alone saw the drop; reduce_boolean_decision made both ranks stop.
    assert rank0["stopped_epoch"] == rank1["stopped_epoch"] == 5
    assert single["stopped_epoch"] == 0
    # One collective per sample point, whatever the number of layers: the packed sums and counts.
    assert rank0["collectives"] == rank1["collectives"] == [1] * 6
    assert single["collectives"] == [0] * 6
    assert rank0["values"].shape == (3, 6)
    torch.testing.assert_close(rank0["values"], single["values"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rank0["metastability"], single["metastability"], rtol=1e-4, atol=1e-5, equal_nan=True)
