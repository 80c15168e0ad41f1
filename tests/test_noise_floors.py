"""benchmarks/noise_floors.py: its generators have their closed forms, its criterion picks the right length, its
quick mode reproduces the committed tables loosely, and RELIABLE_FROM / NULL_FLOORS are the committed
tables' exactly."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from lightning_dynamics.functional.reliability import (
    NEVER_RELIABLE,
    NULL_FLOORS,
    RELIABLE_FROM,
    SEPARABLE_FROM,
)

noise_floors = pytest.importorskip("benchmarks.noise_floors")
COMMITTED = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "noise_floors.json"


@pytest.fixture(scope="module")
def committed() -> dict:
    return json.loads(COMMITTED.read_text())


@pytest.mark.parametrize("hurst", [0.3, 0.5, 0.8])
def test_fgn_has_the_exact_autocorrelation(hurst: float) -> None:
    x = noise_floors.fgn(64, hurst, 4000, torch.Generator().manual_seed(3))
    assert abs(float(x.var()) - 1) < 0.03
    for lag in (1, 2, 5):
        empirical = float((x[:, lag:] * x[:, :-lag]).mean())
        expected = 0.5 * ((lag + 1) ** (2 * hurst) - 2 * lag ** (2 * hurst) + (lag - 1) ** (2 * hurst))
        assert abs(empirical - expected) < 0.02, (lag, empirical, expected)


def test_random_cascade_permutes_the_deterministic_one() -> None:
    # Kantelhardt et al. (2002): x_k = a^{n(k)} (1-a)^{10 - n(k)}, n(k) the number of ones in k's binary form.
    a, levels = noise_floors.CASCADE_A, 10
    ones = torch.tensor([bin(k).count("1") for k in range(2**levels)], dtype=torch.float64)
    deterministic = a**ones * (1 - a) ** (levels - ones) * 2**levels
    random = noise_floors.binomial_cascade(2**levels, 3, torch.Generator().manual_seed(0))
    for row in random:
        torch.testing.assert_close(row.sort().values, deterministic.sort().values)
        assert not torch.equal(row, deterministic)


def test_closed_form_truths() -> None:
    assert noise_floors.higuchi_truth(0.5) == pytest.approx(2.0, abs=1e-12)
    assert noise_floors.higuchi_truth(0.8) < 2.0 < noise_floors.higuchi_truth(0.3)
    # h(q) of the cascade: h(-3) - h(3) sets the width's scale; a = 0.5 is a monofractal (width 0).
    assert noise_floors.cascade_width_truth(0.5) == pytest.approx(0.0, abs=1e-12)
    assert 1.0 < noise_floors.cascade_width_truth(0.75) < 2.0


def _result(lengths: list[int], cells: dict[str, list[tuple[float, float]]], truths: dict[str, float]) -> dict:
    table = {
        f: {str(n): {"mean": m, "sd": s, "n": 100, "n_undefined": 0} for n, (m, s) in zip(lengths, v, strict=True)}
        for f, v in cells.items()
    }
    return {"lengths": lengths, "panels": {"m": list(cells)}, "truths": {"m": truths}, "tables": {"m": table}}


def test_criterion_takes_the_first_length_from_which_on_every_signal_qualifies() -> None:
    # Truths 0 and 1: half gap 0.5; |bias| + 2 sd must be <= 0.5.
    lengths = [10, 20, 40, 80]
    good = _result(
        lengths, {"a": [(0.3, 0.2), (0.1, 0.2), (0.0, 0.1), (0.0, 0.05)], "b": [(1, 0.1)] * 4}, {"a": 0.0, "b": 1.0}
    )
    assert noise_floors.reliable_min_points(good) == {"m": 20}
    # Qualifies at 10, fails at 20 (a bias), qualifies again: the minimum is the later one.
    dip = _result(
        lengths, {"a": [(0.0, 0.1), (0.2, 0.2), (0.0, 0.1), (0.0, 0.1)], "b": [(1, 0.1)] * 4}, {"a": 0.0, "b": 1.0}
    )
    assert noise_floors.reliable_min_points(dip) == {"m": 40}
    never = _result(lengths, {"a": [(0.0, 0.3)] * 4, "b": [(1, 0.1)] * 4}, {"a": 0.0, "b": 1.0})
    assert noise_floors.reliable_min_points(never) == {"m": None}


def test_reliable_min_points_are_the_committed_tables(committed: dict) -> None:
    derived = noise_floors.reliable_min_points(committed)
    separable = noise_floors.reliable_min_points(committed, same_length=True)
    assert committed["reliable_min_points"] == derived
    assert committed["separable_min_points"] == separable
    for key in noise_floors.RELIABILITY_KEYS:
        assert RELIABLE_FROM[key] == (derived[key] or NEVER_RELIABLE), key
        assert SEPARABLE_FROM[key] == (separable[key] or NEVER_RELIABLE), key
    assert set(RELIABLE_FROM) == set(SEPARABLE_FROM) == set(noise_floors.RELIABILITY_KEYS)


def test_null_floors_are_the_committed_tables(committed: dict) -> None:
    floors = noise_floors.null_floors(committed)
    assert {k: floors[k] for k in NULL_FLOORS} == NULL_FLOORS
    assert set(NULL_FLOORS) >= {"integration_alpha", "integration", "metastability", "synchrony"}


def test_quick_run_reproduces_the_committed_tables_loosely(tmp_path: Path, committed: dict) -> None:
    quick = noise_floors.main(["--quick", "--out", str(tmp_path)])
    assert (tmp_path / "noise_floors_quick.json").exists() and (tmp_path / "noise_floors_quick_tables.md").exists()
    assert set(quick["tables"]) == set(committed["tables"])
    for measure, by_family in quick["tables"].items():
        for family, cells in by_family.items():
            for n, cell in cells.items():
                ref = committed["tables"][measure][family][n]
                if cell["n"] < 2 or ref["n"] < 2 or cell["n_undefined"] or ref["n_undefined"]:
                    assert (cell["n"] == 0) == (ref["n"] == 0), (measure, family, n)
                    continue
                # Means agree within 5 standard errors of the quick run (plus a small floor for near-constant cells).
                # The larger sd of the two: a heavy-tailed cell (a rare outlier among near-zero values) widens it.
                tolerance = 5 * max(ref["sd"], cell["sd"]) / math.sqrt(cell["n"]) + 0.02 * abs(ref["mean"]) + 1e-3
                assert abs(cell["mean"] - ref["mean"]) <= tolerance, (measure, family, n, cell, ref)
    # Loosely the same minimum lengths: where the committed tables say reliable by T = 200, the quick ones agree
    # at 200 with a criterion loosened by half; where they say unreliable at 24, the quick ones fail at 24 even a
    # criterion tightened by a quarter.
    for measure in noise_floors.RELIABILITY_KEYS:
        panel, minimum = committed["panels"][measure], committed["reliable_min_points"][measure]
        table = quick["tables"][measure]
        checks = [(200, True)] if minimum is not None and minimum <= 200 else []
        if minimum is None or minimum > 24:
            checks.append((24, False))
        for n, reliable in checks:
            if measure == "katz_fd":
                truths = {f: table[f][str(n)]["mean"] for f in panel}
            else:
                truths = {f: quick["truths"][measure][f] for f in panel}
            gaps = noise_floors._gaps(truths)
            factor = 1.5 if reliable else 0.75
            passed = all(noise_floors.reliable(table[f][str(n)], truths[f], gaps[f] * factor) for f in panel)
            assert passed == reliable, (measure, n)


def test_reliability_helpers() -> None:
    from lightning_dynamics.functional.reliability import (
        DEFAULT_MEASURES,
        is_reliable,
        null_floor,
        recommend_points_per_epoch,
        reliable_from,
    )

    n = RELIABLE_FROM["metastability"]
    assert is_reliable("metastability", n) and not is_reliable("metastability", n - 1)
    assert recommend_points_per_epoch(4, ["metastability", "synchrony"]) == math.ceil(max(n, 64) / 4)
    assert recommend_points_per_epoch(1) == max(RELIABLE_FROM[m] for m in DEFAULT_MEASURES)
    with pytest.raises(ValueError, match="not reliable at any length"):
        recommend_points_per_epoch(3, ["integration"])
    with pytest.raises(ValueError, match="within_epochs"):
        recommend_points_per_epoch(0)
    with pytest.raises(ValueError, match="measure"):
        reliable_from("loss")
    # The null band at a length between two tabulated ones is the shorter one's (the wider, conservative).
    assert null_floor("synchrony", 100) == NULL_FLOORS["synchrony"][96]
    assert all(math.isnan(v) for v in null_floor("mfdfa_width", 24))  # undefined below 25 points
