"""The framework-neutral packages import no Lightning: a plain-PyTorch user never pays for its import time or its
version constraints."""

import subprocess
import sys

CHECK = """
import sys
for module in ("lightning_dynamics.functional", "lightning_dynamics.capture"):
    __import__(module)
    leaked = sorted(name for name in sys.modules if name.split(".")[0] in ("lightning", "pytorch_lightning"))
    print(module, ",".join(leaked))
"""


def test_functional_and_capture_do_not_import_lightning() -> None:
    # One fresh interpreter: the test process has imported Lightning already.
    result = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120, check=True)
    lines = [line.strip() for line in result.stdout.strip().splitlines()]
    assert lines == ["lightning_dynamics.functional", "lightning_dynamics.capture"], lines
