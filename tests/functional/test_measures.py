import warnings

import pytest
import torch

from lightning_dynamics.functional import (
    defined_from,
    dynamics_measures,
    integration,
    integration_alpha,
    metastability,
    phase_integration,
    synchrony,
)


def test_combined_equals_standalone_functions() -> None:
    x = torch.randn(3, 7, 90, dtype=torch.float64).cumsum(-1)
    x[0, 2] = 4.0
    out = dynamics_measures(x)
    torch.testing.assert_close(out.integration, integration(x))
    torch.testing.assert_close(out.integration_alpha, integration_alpha(x))
    torch.testing.assert_close(out.metastability, metastability(x))
    torch.testing.assert_close(out.synchrony, synchrony(x))
    torch.testing.assert_close(out.phase_integration, phase_integration(x))
    assert out.n_excluded.tolist() == [1, 0, 0]
    assert out.reason is None


def test_short_history_reports_reason_without_warning_spam() -> None:
    x = torch.randn(5, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = dynamics_measures(x)
    assert out.integration.isnan() and out.metastability.isfinite()
    assert out.reason is not None and "T >= 13" in out.reason
    very_short = dynamics_measures(torch.randn(5, 3))
    assert very_short.metastability.isnan() and "T >= 5" in (very_short.reason or "")


def test_defined_from_are_the_thresholds() -> None:
    need = defined_from("diff")
    before = dynamics_measures(torch.randn(4, need["integration"] - 1).cumsum(-1))
    at = dynamics_measures(torch.randn(4, need["integration"]).cumsum(-1))
    assert before.integration.isnan() and at.integration.isfinite()


# 40 layers in blocks of 7 rows and Gram blocks of 7 (partial last blocks, an excluded layer inside one) test the
# blocking in the unit tier in about a second; 300 layers in one-row blocks also cross the default blocks (4 MiB of
# rows, Gram blocks of 256), at minutes on a loaded 2-core machine.
@pytest.mark.parametrize(("n_layers", "rows_per_block"), [(40, 7), pytest.param(300, 1, marks=pytest.mark.slow)])
def test_cpu_blocking_does_not_change_results(monkeypatch, n_layers: int, rows_per_block: int) -> None:
    # Accelerators take one block and the full Gram product; CPU takes row blocks and the triangular one.
    import importlib

    checks = importlib.import_module("lightning_dynamics.functional._checks")
    integration_module = importlib.import_module("lightning_dynamics.functional.phase_locking")

    x = torch.randn(2, n_layers, 257, dtype=torch.float64).cumsum(-1)
    x[1, 7] = 1.0  # an excluded layer inside a block
    blocked = dynamics_measures(x)
    monkeypatch.setattr(checks, "CPU_BLOCK_BYTES", rows_per_block * x.shape[-1] * x.element_size())
    monkeypatch.setattr(integration_module, "_GRAM_BLOCK", 7)
    tiny = dynamics_measures(x)
    monkeypatch.setattr(checks, "CPU_BLOCK_BYTES", 2**40)  # one block, as off the CPU
    monkeypatch.setattr(integration_module, "_GRAM_BLOCK", 10**6)
    whole = dynamics_measures(x)
    for other in (tiny, whole):
        for key in ("integration_alpha", "metastability", "synchrony", "phase_integration", "n_excluded", "valid"):
            torch.testing.assert_close(getattr(other, key), getattr(blocked, key), rtol=1e-12, atol=1e-12)
