"""The time-shuffle noise floor holds its 5% level on correlated layers; settled layers read as settled.

The rates here are small versions of ``benchmarks/null_calibration.py`` (the full tables are in
``benchmarks/null_calibration.md``); each bound allows for its binomial error.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from lightning_dynamics.functional import InsufficientDataWarning
from lightning_dynamics.measures import DynamicsConfig, MeasureContext
from lightning_dynamics.measures.readings import level_bands, reading
from lightning_dynamics.measures.registry import compute_measures, null_bands

CONFIG = DynamicsConfig(compute_phase_integration=False)
LAYERS = 8


def _correlated(draws: int, length: int, rho: float, seed: int) -> torch.Tensor:
    """``[draws, 8, length]`` white series correlated at ``rho`` across layers."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(draws, LAYERS, length, generator=g, dtype=torch.float64)
    common = torch.randn(draws, 1, length, generator=g, dtype=torch.float64)
    return math.sqrt(rho) * common + math.sqrt(1 - rho) * noise


@pytest.mark.parametrize("name", ["integration_alpha", "relative_change", "stability_index"])
def test_memoryless_but_correlated_layers_fall_outside_the_shuffle_band_5_percent_of_the_time(name: str) -> None:
    # Layers correlated at 0.9 whose changes have no memory: the null holds. Permuting each layer on its own gave
    # 25-55% outside at this length (benchmarks/null_calibration.md); one shared permutation keeps the correlation.
    draws = 200
    x = _correlated(draws, 64, 0.9, seed=1).cumsum(-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsufficientDataWarning)
        value = compute_measures(MeasureContext(x, CONFIG), (name,))[name]
        band = null_bands(x, CONFIG, (name,), 39, torch.Generator().manual_seed(2))
    outside = int((~((band[name + "_null_lo"] <= value) & (value <= band[name + "_null_hi"]))).sum())
    # Binomial(200, 0.05): mean 10, sd 3.1; at most 22 is +3.9 sd (the per-layer shuffle gave 50-110 here).
    assert outside <= 22, outside


def test_the_shared_shuffle_keeps_power_against_persistent_changes() -> None:
    # Layers whose changes drift (each increment a random walk: alpha ~ 1.5) stay far above the shuffle band.
    x = _correlated(20, 96, 0.9, seed=3).cumsum(-1).cumsum(-1)
    value = compute_measures(MeasureContext(x, CONFIG), ("integration_alpha",))["integration_alpha"]
    band = null_bands(x, CONFIG, ("integration_alpha",), 39, torch.Generator().manual_seed(4))
    assert bool((value > band["integration_alpha_null_hi"]).all())


def _alpha_reading(x: torch.Tensor, seed: int):
    """The reading of ``integration_alpha`` at the last point of the history ``x: [L, T]``, with its bands."""
    length = x.shape[-1]
    value = compute_measures(MeasureContext(x, CONFIG), ("integration_alpha",))["integration_alpha"]
    band = null_bands(x, CONFIG, ("integration_alpha",), 39, torch.Generator().manual_seed(seed))
    metrics = {}
    for key, last in (("integration_alpha", value), *band.items()):
        series = torch.full((length,), math.nan, dtype=torch.float64)
        series[-1] = last
        metrics[key] = series
    return reading(metrics, "integration_alpha", CONFIG.to_dict(), reliable={}, values=x)


def test_a_layer_settled_around_a_level_reads_as_settled_not_as_anti_persistent_dynamics() -> None:
    # Summaries jittering around fixed levels: alpha falls below its shuffle band (over-differenced noise), and the
    # reading says "settled", in plain words, in the sentence and the panel's mark.
    levels = _correlated(12, 96, 0.7, seed=5) + torch.linspace(1, 8, LAYERS, dtype=torch.float64)[:, None]
    results = [_alpha_reading(x, seed) for seed, x in enumerate(levels)]
    below = [r for r in results if r.value < r.null_lo]
    assert len(below) >= 10  # below the shuffle band nearly always
    settled = sum(bool(r.settled) for r in below)
    assert settled >= len(below) - 1, (settled, len(below))  # the settled-level band holds them (nominal 97.5%)
    example = next(r for r in below if r.settled)
    assert "settled around a level" in example.sentence() and example.status() == "settled around a level"
    # Anti-persistent dynamics (increments: fGn with H = 0.3, the path still wanders) are not called settled.
    from benchmarks.noise_floors import fgn

    g = torch.Generator().manual_seed(6)
    anti = (fgn(160, 0.3, 12 * LAYERS, g).reshape(12, LAYERS, 160) + fgn(160, 0.3, 12, g)[:, None]).cumsum(-1)
    readings = [_alpha_reading(x, 100 + seed) for seed, x in enumerate(anti)]
    flagged = [r for r in readings if r.value < r.null_lo]
    assert len(flagged) >= 6  # below the shuffle band
    assert sum(bool(r.settled) for r in flagged) <= 1
    assert any(r.settled is False and "anti-persistent" in r.sentence() for r in flagged)


def test_no_settled_verdict_without_the_history_or_above_the_band() -> None:
    x = _correlated(1, 96, 0.7, seed=7)[0]
    bare = _alpha_reading(x, 8)
    assert bare.value < bare.null_lo and bare.settled is True
    metrics = {"integration_alpha": [math.nan, bare.value], "integration_alpha_null_lo": [math.nan, bare.null_lo]}
    metrics["integration_alpha_null_hi"] = [math.nan, bare.null_hi]
    without = reading(metrics, "integration_alpha", reliable={})
    assert without.settled is None and math.isnan(without.level_hi) and without.status() == "outside noise floor"
    walks = _correlated(1, 96, 0.7, seed=9)[0].cumsum(-1).cumsum(-1)  # alpha above its band: no level band
    above = _alpha_reading(walks, 10)
    assert above.value > above.null_hi and above.settled is None and math.isnan(above.level_lo)


def test_level_bands_read_the_points_each_measure_reads() -> None:
    x = _correlated(2, 80, 0.5, seed=11)
    out = level_bands(x, CONFIG, ("integration_alpha", "stability_index"), 19, torch.Generator().manual_seed(0))
    for lo, hi in out.values():
        assert lo.shape == (2,) and bool((lo <= hi).all())
    # The stability index reads the last `window` points: the earlier points do not move its band.
    changed = x.clone()
    changed[..., : 80 - CONFIG.window] = 1e3
    bands = [level_bands(h, CONFIG, ("stability_index",), 19, torch.Generator().manual_seed(0)) for h in (x, changed)]
    torch.testing.assert_close(bands[0]["stability_index"], bands[1]["stability_index"])


def test_the_committed_calibration_holds_5_percent_with_the_shared_shuffle_only() -> None:
    # The figures of docs/method.md section 8c and benchmarks/null_calibration.md come from this file.
    import json
    from pathlib import Path

    result = json.loads((Path(__file__).parent.parent / "benchmarks/results/null_calibration.json").read_text())
    cells = result["table"]["memoryless"]
    for rho, by_length in cells.items():
        for length, measures in by_length.items():
            for name, kinds in measures.items():
                shared, per_layer = kinds["shared"]["outside"], kinds["per_layer"]["outside"]
                assert abs(shared["rate"] - 0.05) <= 3 * math.sqrt(0.05 * 0.95 / shared["n"]), (rho, length, name)
                if rho == "0.9" and name != "stability_index":
                    assert per_layer["rate"] > 0.2, (rho, length, name)


@pytest.mark.slow
def test_the_calibration_benchmark_runs_in_its_quick_mode(tmp_path) -> None:
    from benchmarks.null_calibration import main

    result = main(["--quick", "--draws", "20", "--out", str(tmp_path)])
    assert (tmp_path / "null_calibration_quick.md").exists()
    assert set(result["table"]) == {"memoryless", "persistent", "converging", "level", "anti_persistent"}
