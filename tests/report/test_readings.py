"""Noise floors and short series beside each measure; names drawn literally, whatever characters they hold."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_dynamics.capture import save_history
from lightning_dynamics.measures.readings import reading, readings
from lightning_dynamics.report import load_run, load_runs, noise_floor_summary
from lightning_dynamics.report.cli import main
from lightning_dynamics.report.plots import plot_comparison, plot_dashboard
from tests.report.test_dashboard import _axes, _state

pytest.importorskip("matplotlib")
NAN = math.nan
N = 30


def _band(lo: float, hi: float, every: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """A null band defined at every ``every``-th point (where the measure is logged), NaN elsewhere."""
    logged = torch.arange(N) % every == every - 1
    return (
        torch.where(logged, torch.tensor(lo, dtype=torch.float64), torch.nan),
        torch.where(logged, torch.tensor(hi, dtype=torch.float64), torch.nan),
    )


def _banded_state() -> dict:
    """Integration ends at 0.5 inside its band [0.3, 0.7]; metastability ends at 0.3 above its band [0.05, 0.15]."""
    state = _state(n_points=N)
    lo_i, hi_i = _band(0.3, 0.7)
    lo_m, hi_m = _band(0.05, 0.15)
    state["metrics"] = {
        "integration": torch.full((N,), 0.5, dtype=torch.float64),
        "integration_null_lo": lo_i,
        "integration_null_hi": hi_i,
        "metastability": torch.full((N,), 0.3, dtype=torch.float64),
        "metastability_null_lo": lo_m,
        "metastability_null_hi": hi_m,
        "stability_index": torch.full((N,), 0.6, dtype=torch.float64),  # no null in this history
    }
    return state


def test_reading_at_the_last_point_with_a_band_and_its_edges() -> None:
    values = [NAN, 0.2, 0.31, NAN]
    metrics = {"m": values, "m_null_lo": [NAN, 0.1, 0.3, NAN], "m_null_hi": [NAN, 0.2, 0.3, NAN]}
    r = reading(metrics, "m", reliable={})
    assert (r.index, r.value, r.null_lo, r.null_hi) == (2, 0.31, 0.3, 0.3)
    assert r.inside_noise_floor is False  # 0.31 > 0.3: outside, by a hair
    metrics["m"] = [NAN, 0.2, 0.3, NAN]
    assert reading(metrics, "m", reliable={}).inside_noise_floor is True  # the band's edges are inside
    assert reading({"m": [0.5]}, "m", reliable={}).inside_noise_floor is None  # no null: no verdict
    never = reading({"m": [NAN, NAN]}, "m", reliable={"m": 3})
    assert never.index is None and never.inside_noise_floor is None and not never.short_series


def test_points_read_and_short_series_against_the_reliable_minimum() -> None:
    metrics = {"integration": [NAN] * 9 + [0.5], "stability_index": [0.1] * 10}
    config = {"window": 16}
    flagged = readings(metrics, config, reliable={"integration": 10, "stability_index": 64})
    assert flagged["integration"].points == 10 and not flagged["integration"].short_series  # 10 >= 10
    assert flagged["stability_index"].points == 16 and flagged["stability_index"].short_series  # window 16 < 64
    assert readings(metrics, {"history_window": 4}, reliable={"integration": 5})["integration"].short_series


def test_dashboard_draws_the_band_and_marks_inside_and_outside(tmp_path: Path, capsys, monkeypatch) -> None:
    from lightning_dynamics.measures import readings as readings_module

    monkeypatch.setattr(readings_module, "reliable_from", dict)  # no short-series flags in this test
    path = save_history(_banded_state(), tmp_path / "run" / "dynamics_history.pt")
    run = load_run(path)
    assert run.inside_noise_floor() == ["integration"]
    assert run.readings["metastability"].inside_noise_floor is False
    assert run.readings["stability_index"].inside_noise_floor is None
    assert "integration_null_lo" not in run.readings  # bands are not measures
    figure = plot_dashboard(run)
    integration, metastability = _axes(figure, "integration I"), _axes(figure, "metastability M")
    (band,) = integration.collections
    vertices = band.get_paths()[0].vertices
    assert vertices[:, 1].min() == pytest.approx(0.3) and vertices[:, 1].max() == pytest.approx(0.7)
    assert "inside noise floor" in [t.get_text() for t in integration.texts]
    assert "outside noise floor" in [t.get_text() for t in metastability.texts]
    assert not [t for t in _axes(figure, "stability index S").texts if "noise floor" in t.get_text()]
    # The report's printed table and HTML page say the same.
    assert main(["report", str(tmp_path / "run")]) == 0
    table = capsys.readouterr().out
    rows = {line.split()[0]: line for line in table.splitlines() if line.strip()}  # one row per measure
    assert "0.5~" in rows["integration"] and "0.3 " in rows["metastability"] and "0.3~" not in rows["metastability"]
    assert "~ inside its noise floor" in table
    page = (tmp_path / "run" / "dynamics_dashboard.html").read_text()
    assert "<td>0.5 (inside noise floor [0.3, 0.7])</td>" in page
    assert "<td>0.3 (outside noise floor [0.05, 0.15])</td>" in page
    assert "<td>inside noise floor</td><td>integration</td>" in page
    assert "order_parameter" not in page  # the last single R(t) is no reading
    assert "integration_null_lo" not in page


def test_short_series_is_flagged_in_the_dashboard(tmp_path: Path, monkeypatch) -> None:
    from lightning_dynamics.measures import readings as readings_module

    monkeypatch.setattr(readings_module, "reliable_from", lambda: {"integration": 64})
    run = load_run(save_history(_banded_state(), tmp_path / "run" / "dynamics_history.pt"))
    assert run.short_series() == ["integration"] and run.readings["integration"].points == N
    texts = [t.get_text() for t in _axes(plot_dashboard(run), "integration I").texts]
    assert f"short series: {N} < 64 points" in texts
    # The stretch computed on fewer than 20 points is shaded: from the first point to point 19 (20 points read).
    monkeypatch.setattr(readings_module, "reliable_from", lambda: {"integration": 20})
    run = load_run(tmp_path / "run")
    (span,) = [p for p in _axes(plot_dashboard(run), "integration I").patches]
    assert (span.get_x(), span.get_x() + span.get_width()) == (run.time[0], run.time[19])
    monkeypatch.setattr(readings_module, "reliable_from", lambda: {"integration": N})
    assert load_run(tmp_path / "run").short_series() == []


def test_noise_floor_summary_one_sentence_per_measure_with_a_null(monkeypatch) -> None:
    from lightning_dynamics.measures import readings as readings_module

    monkeypatch.setattr(readings_module, "_never_reliable", lambda: 10**9)  # the reliability table's mark
    state = _banded_state()
    summary = noise_floor_summary(state, reliable={"metastability": 64})
    assert summary == (
        "integration 0.5 is inside its noise floor [0.3, 0.7]. "
        "metastability 0.3 is outside its noise floor [0.05, 0.15] (short series: 30 < 64 points)."
    )
    assert noise_floor_summary({"metrics": {"integration": [0.5]}}) == ""  # no null anywhere: nothing to say
    never = noise_floor_summary(state, reliable={"integration": 10**9})
    assert never.startswith("integration 0.5 is inside its noise floor [0.3, 0.7] (short series: 30 points; reliable")


def test_dollar_signs_in_layer_names_and_run_directories_are_drawn_literally(tmp_path: Path) -> None:
    layers = ["$\\foo{$", "a$b", "$x$", "plain", "$"]
    run_dir = tmp_path / "lr_$\\eta{$" / "version_0"
    save_history(_state(layer_names=layers), run_dir / "dynamics_history.pt")
    other = tmp_path / "$\\alpha$"
    save_history(_state(seed=1, logged={"val_$acc": torch.ones(N)}), other / "dynamics_history.pt")
    assert main(["report", str(run_dir)]) == 0
    assert main(["compare", str(run_dir), str(other), "-o", str(tmp_path / "cmp.png"), "--no-progress"]) == 0
    figure = plot_dashboard(load_run(run_dir))
    figure.canvas.draw()
    ticks = [t.get_text() for t in figure.axes[0].get_yticklabels()]
    assert ticks == layers  # as written, not parsed
    assert "lr_$\\eta{$/version_0" in figure.get_suptitle()
    comparison = plot_comparison(load_runs([run_dir, other]))
    comparison.canvas.draw()
    assert [t.get_text() for t in comparison.legends[0].get_texts()] == ["version_0", "$\\alpha$"]
    assert np.isfinite(load_run(other).time).all()


def test_the_freezing_panel_is_drawn_where_its_module_exists(tmp_path: Path, monkeypatch) -> None:
    import sys
    import types

    run = load_run(save_history(_banded_state(), tmp_path / "run" / "dynamics_history.pt"))
    without = plot_dashboard(run)
    assert "frozen layers" not in [ax.get_ylabel() for ax in without.axes if ax.get_visible()]
    calls = []
    module = types.ModuleType("lightning_dynamics.report.freezing_panel")

    def draw_freezing(ax, history_state) -> None:
        calls.append(history_state)
        ax.set_ylabel("frozen layers")

    module.draw_freezing = draw_freezing  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "lightning_dynamics.report.freezing_panel", module)
    figure = plot_dashboard(run)
    assert len(calls) == 1 and calls[0]["layer_names"] == run.layer_names  # the history as read
    assert "frozen layers" in [ax.get_ylabel() for ax in figure.axes if ax.get_visible()]

    def broken(ax, history_state) -> None:
        raise KeyError("segments")

    module.draw_freezing = broken  # type: ignore[attr-defined]
    texts = [t.get_text() for ax in plot_dashboard(run).axes for t in ax.texts]
    assert any(t.startswith("layer freezing: could not draw (KeyError") for t in texts)


def test_a_measure_added_to_the_registry_gets_its_panel_band_and_bounds(tmp_path: Path, monkeypatch) -> None:
    """The dashboard reads the registry: a new measure needs no change in the report."""
    from lightning_dynamics.measures.registry import MEASURES, Measure
    from lightning_dynamics.report.plots import dashboard_measures

    monkeypatch.setitem(
        MEASURES, "my_measure", Measure("my_measure", "default", "a test measure", lambda c: 1, (0.0, 3.0))
    )
    state = _banded_state()
    lo, hi = _band(1.0, 2.0)
    state["metrics"].update(
        my_measure=torch.full((N,), 2.5, dtype=torch.float64), my_measure_null_lo=lo, my_measure_null_hi=hi
    )
    run = load_run(save_history(state, tmp_path / "run" / "dynamics_history.pt"))
    assert "my_measure" in dashboard_measures(run) and run.readings["my_measure"].inside_noise_floor is False
    panel = _axes(plot_dashboard(run), "my_measure")
    assert panel.get_ylim() == (0.0, 3.0) and len(panel.collections) == 1  # the registry's bounds, the band
    assert "outside noise floor" in [t.get_text() for t in panel.texts]


def test_a_settled_run_reads_settled_around_a_level_in_the_dashboard(tmp_path: Path, monkeypatch) -> None:
    # Layers jittering around fixed levels: alpha below its (shuffle) noise floor is what they give; the panel and
    # the info line say "settled around a level", not "anti-persistent".
    from lightning_dynamics.measures import DynamicsConfig, MeasureContext
    from lightning_dynamics.measures import readings as readings_module
    from lightning_dynamics.measures.registry import compute_measures, null_bands

    monkeypatch.setattr(readings_module, "reliable_from", dict)
    n = 96
    g = torch.Generator().manual_seed(3)
    values = 3.0 + torch.arange(5.0)[:, None] + 0.1 * torch.randn(5, n, generator=g, dtype=torch.float64)
    config = DynamicsConfig()
    alpha = compute_measures(MeasureContext(values, config), ("integration_alpha",))["integration_alpha"]
    band = null_bands(values, config, ("integration_alpha",), 39, torch.Generator().manual_seed(0))
    metrics = {}
    for key, last in (("integration_alpha", alpha), *band.items()):
        metrics[key] = torch.full((n,), NAN, dtype=torch.float64)
        metrics[key][-1] = last
    state = _state(n_points=n, values=values.float(), metrics=metrics, logged={}, config=config.to_dict())
    assert float(alpha) < float(band["integration_alpha_null_lo"])
    run = load_run(save_history(state, tmp_path / "run" / "dynamics_history.pt"))
    assert run.readings["integration_alpha"].settled is True
    assert "settled around a level" in [t.get_text() for t in _axes(plot_dashboard(run), "mean DFA exponent α").texts]
    assert "look settled around a level" in noise_floor_summary(state)


def test_fit_summary_and_the_report_say_what_the_relative_change_means(tmp_path: Path, capsys) -> None:
    """The reading that tells a dead run, a slow start and a run moving without learning apart is said in words."""
    from lightning_dynamics.measures.readings import fit_summary, relative_change_reading

    assert [relative_change_reading(v)[0] for v in (1e-6, 0.012, 0.2, 0.9, 7.35)] == [
        "stopped",
        "settled",
        "settled",
        "moving",
        "rising",
    ]
    state = _banded_state()
    state["metrics"]["relative_change"] = torch.full((N,), 7.35)
    state["logged"] = {"dynamics/stopped_epoch": torch.tensor([NAN] * (N - 1) + [29.0], dtype=torch.float64)}
    line = fit_summary({**state, "epochs": list(range(N))}, reliable={})
    assert line.startswith("relative_change 7.35 at epoch 29: the layers move more than in the first half")
    assert "1 of 2 descriptive measures outside their noise floor (metastability)." in line
    save_history(state, tmp_path / "run" / "dynamics_history.pt")
    assert main(["report", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    names = [line.split()[0] for line in out.splitlines()[1:4]]
    assert names[0] == "relative_change" and "stability_index" in out  # full names, the key to act on first
    assert "relative_change 7.35: the layers move more than in the first half" in out
    page = (tmp_path / "run" / "dynamics_dashboard.html").read_text()
    assert "a slow start (the first half hardly moved)" in page
    assert "<td>stopped by DynamicsEarlyStopping</td><td>epoch 29</td>" in page
    assert "<td>layers frozen at the end</td><td>none</td>" in page


def test_compare_warns_when_runs_are_not_comparable(tmp_path: Path, capsys) -> None:
    """Runs with 5 and 3 layers overlaid: the table and the figure say that their values do not compare."""
    from tests.report.test_dashboard import _write

    for name in ("five", "more", "again"):
        _write(tmp_path / name / "version_0")
    three = _state(layer_names=["a", "b", "c"])
    three["values"] = three["values"][:3]
    save_history(three, tmp_path / "three" / "version_0" / "dynamics_history.pt")
    runs = load_runs([tmp_path / "five", tmp_path / "three"], progress=False)
    assert "they differ in layers" in plot_comparison(runs)._suptitle.get_text()
    dirs = [str(tmp_path / name) for name in ("five", "three", "more", "again")]
    assert main(["compare", *dirs, "-o", str(tmp_path / "c.png")]) == 0
    out = capsys.readouterr()
    assert "warning: the runs differ in layers (five 5, three 3, more 5, again 5)" in out.out
    assert "runs:" not in out.err  # 4 runs, but stderr is not a terminal: no progress bar
