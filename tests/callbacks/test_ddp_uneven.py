"""DDP with uneven batches per process: the monitor fails loudly and clearly, it never hangs.

Without the rendezvous, the epoch-end all-reduce of the per-layer sums met the gradient all-reduce of the other
process's extra batch and both processes blocked until the process group's timeout (30 minutes by default),
then failed with "Application timeout caused pair closure". Each run here is a real two-process gloo job.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("ddp_uneven_script.py")
NO_HANG_S = 240  # far below the 30-minute process-group timeout the processes would otherwise wait for


def _run(mode: str, root: Path) -> tuple[int, str, float]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_"))
    }
    start = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), mode, str(root)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # the launcher's child process is killed with it if it hangs
    )
    try:
        output, _ = process.communicate(timeout=NO_HANG_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"{mode}: the two processes hung for {NO_HANG_S} s")
    return process.returncode, output, time.monotonic() - start


def test_uneven_sized_loaders_fail_at_epoch_start_on_every_process(tmp_path: Path) -> None:
    code, output, _ = _run("sized", tmp_path)
    assert code != 0
    assert "DistributedMismatchError" in output
    message = "out of step at the start of epoch 0: rank 0: epoch=0, num_training_batches=5, step=0; rank 1: epoch=0"
    assert output.count(message) >= 2, output[-6000:]  # both processes raise the same error
    assert "num_training_batches=4" in output and "DistributedSampler" in output


@pytest.mark.parametrize("mode", ["iterable", "fabric"])
def test_uneven_iterables_fail_after_the_timeout_naming_the_missing_process(tmp_path: Path, mode: str) -> None:
    code, output, _ = _run(mode, tmp_path)
    assert code != 0
    # Rank 1 ran out of data after 4 batches, rank 0 is inside its 5th batch's gradient all-reduce.
    expected = "rank 1 reached sample point 0 (epoch=0, step=4" if mode == "fabric" else "rank 1 reached sample point 0"
    assert expected in output, output[-6000:]
    assert "waited 3 s for rank(s) [0]" in output
    assert "rank 0 last reached" in output or "rank 0 has reported nothing" in output
