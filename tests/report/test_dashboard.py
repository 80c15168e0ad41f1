"""The dashboard and comparison from saved histories: quantities, drawing rules, command line and errors."""

from __future__ import annotations

import base64
import math
import re
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_dynamics import functional as F
from lightning_dynamics.capture import load_history, save_history
from lightning_dynamics.report import find_history, load_run, load_runs
from lightning_dynamics.report.cli import main
from lightning_dynamics.report.plots import plot_comparison, plot_dashboard

pytest.importorskip("matplotlib")
NAN = math.nan
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Volatility: defined from point 20; peak 0.4 at 21, then three points <= 0.25 x 0.4 at 23-25: signal at 25.
VOLATILITY = [NAN] * 20 + [0.2, 0.4, 0.3, 0.09, 0.08, 0.07, 0.06, 0.3, 0.3, 0.3]
ACCURACY = [min(95.0, 50.0 + 5.0 * t) for t in range(30)]  # reaches its best (95) at point 9


def _state(n_points: int = 30, seed: int = 0, **overrides) -> dict:
    g = torch.Generator().manual_seed(seed)
    state = {
        "format_version": 2,
        "layer_names": [f"block{i}.conv" for i in range(5)],
        "summary": "rms",
        # Five layers that settle (time constant 3 points) with a little noise: the stop replayed on them fires.
        "values": 3.0
        + torch.linspace(1.0, 2.0, 5).unsqueeze(1) * (1 - torch.exp(-torch.arange(n_points) / 3.0))
        + 1e-3 * torch.randn(5, n_points, generator=g),
        "epochs": [5 + t for t in range(n_points)],  # a resumed run: epochs do not start at 0
        "steps": [10 * (t + 1) for t in range(n_points)],
        "metrics": {
            "integration": torch.full((n_points,), 4e-11, dtype=torch.float64),
            "metastability": torch.rand(n_points, generator=g, dtype=torch.float64) * 0.3,
            "stability_index": torch.rand(n_points, generator=g, dtype=torch.float64),
            "stability_volatility": torch.tensor(VOLATILITY[:n_points], dtype=torch.float64),
        },
        "logged": {
            "val_acc": torch.tensor(ACCURACY[:n_points], dtype=torch.float64),
            "val_loss": torch.linspace(2.0, 0.1, n_points, dtype=torch.float64),
        },
        "prefix": "dynamics",
        "config": {"detrend": "diff", "pad": "reflect", "every_n_steps": None, "window": 16},
    }
    state.update(overrides)
    return state


def _write(directory: Path, name: str = "dynamics_history.pt", **overrides) -> Path:
    return save_history(_state(**overrides), directory / name)


def _axes(figure, label: str):
    """The time panel whose y label is ``label`` (not the trajectory, which also has an integration axis)."""
    return next(
        ax for ax in figure.axes if ax.get_ylabel().split("\n")[0] == label and "trajectory" not in ax.get_title()
    )


def test_quantities_markers_and_order_parameter(tmp_path: Path) -> None:
    run = load_run(_write(tmp_path / "run"))
    assert run.label == "run" and run.axis == "epoch" and run.n_points == 30
    np.testing.assert_array_equal(run.time, np.arange(5, 35))
    # The marker is the stop DynamicsEarlyStopping makes (relative change replayed on the history), not the
    # volatility rule (which would fire at index 25 on VOLATILITY).
    from lightning_dynamics.report.analysis import relative_change_signal

    values = load_history(run.history_path)["values"].double()
    expected = relative_change_signal(values, list(range(5, 35)))
    assert expected is not None and run.convergence.rule == "relative_change"
    assert run.convergence.signal_index == expected and run.signal_time == 5.0 + expected
    assert run.convergence.plateau_index == 9 and run.plateau_time == 14.0
    # R(t) of the history is the one metastability/synchrony use: its mean is synchrony.
    assert math.isnan(run.order_parameter[0])
    assert np.nanmean(run.order_parameter) == pytest.approx(float(F.synchrony(values)), abs=1e-9)
    assert np.nanstd(run.order_parameter) == pytest.approx(float(F.metastability(values)), abs=1e-9)
    np.testing.assert_allclose(run.zscored.mean(axis=1), 0.0, atol=1e-9)
    np.testing.assert_allclose(run.zscored.std(axis=1), 1.0, atol=1e-9)
    final = run.final_values()
    assert final["stability_volatility"] == 0.3 and final["val_acc"] == 95.0
    # Accuracies logged as fractions: the plateau tolerance stays 0.5 percentage points.
    fractions = _state(logged={"val_acc": torch.tensor(ACCURACY, dtype=torch.float64) / 100})
    assert (
        load_run(save_history(fractions, tmp_path / "fractions" / "dynamics_history.pt")).convergence.plateau_index == 9
    )


def test_dashboard_fixed_axes_integer_ticks_markers(tmp_path: Path) -> None:
    run = load_run(_write(tmp_path / "run"))
    figure = plot_dashboard(run)
    figure.canvas.draw()
    integration = _axes(figure, "integration I")
    assert integration.get_ylim() == (0.0, 1.0)  # 4e-11 stays at the bottom of [0, 1], not a jump
    assert _axes(figure, "metastability M").get_ylim() == (0.0, 0.5)
    assert _axes(figure, "stability index S").get_ylim() == (0.0, 1.0)
    assert _axes(figure, "order parameter R(t)").get_ylim() == (0.0, 1.0)
    ticks = integration.get_xticks()
    assert len(ticks) > 2 and all(float(t).is_integer() for t in ticks)
    markers = sorted({line.get_xdata()[0] for line in integration.lines if len(line.get_xdata()) == 2})
    assert markers == [14.0, run.signal_time]  # plateau and signal, as vertical lines on the time panels
    legend = " ".join(t.get_text() for t in figure.legends[0].get_texts())
    assert f"relative-change stop: epoch {int(run.signal_time)}" in legend and "accuracy plateau: epoch 14" in legend
    assert "running peak of V" not in legend  # the legacy rule's threshold belongs to the legacy rule only


def test_every_n_steps_history_is_drawn_point_by_point_against_fractional_epochs(tmp_path: Path) -> None:
    epochs = [t // 4 for t in range(30)]  # four sample points per epoch
    path = _write(tmp_path / "steps", epochs=epochs, config={"every_n_steps": 10, "detrend": "diff"})
    run = load_run(path)
    assert run.axis == "epoch"
    np.testing.assert_array_equal(run.time, np.arange(30) / 4)
    figure = plot_dashboard(run)
    (line,) = [ln for ln in _axes(figure, "metastability M").lines if len(ln.get_xdata()) > 2]
    np.testing.assert_array_equal(line.get_xdata(), run.time)  # every sample point, not one per epoch
    assert "one every 10 steps" in figure.get_suptitle()
    assert run.plateau_time == 2.25  # point 9, the second of epoch 2: labelled by the epoch it falls in
    assert "accuracy plateau: epoch 2" in [t.get_text() for t in figure.legends[0].get_texts()]


def test_measures_logged_once_per_epoch_are_drawn_where_finite_and_fits_continue(tmp_path: Path) -> None:
    """8 sample points per epoch, measures at each epoch's last point; a second Trainer restarts the epochs."""
    per_epoch, n_epochs = 8, 4
    epochs = [t // per_epoch for t in range(per_epoch * n_epochs)] * 2  # two fits of 4 epochs
    steps = list(range(1, per_epoch * n_epochs + 1)) * 2
    n_points = len(epochs)
    last = torch.tensor([(t % per_epoch) == per_epoch - 1 for t in range(n_points)])
    measure = torch.where(last, torch.linspace(0.1, 0.4, n_points, dtype=torch.float64), torch.nan)
    state = _state(n_points=n_points, epochs=epochs, steps=steps, format_version=3, segments=[0, n_points // 2])
    state["metrics"] = {"metastability": measure, "stability_volatility": torch.full((n_points,), torch.nan)}
    state["logged"] = {}
    run = load_run(save_history(state, tmp_path / "fits" / "dynamics_history.pt"))
    assert run.segment_starts == [0, 32] and run.axis == "epoch (2 fits, continued)"
    np.testing.assert_allclose(run.time, np.arange(n_points) / per_epoch)  # the second fit continues at epoch 4
    figure = plot_dashboard(run)
    (line,) = [ln for ln in _axes(figure, "metastability M").lines if len(ln.get_xdata()) > 2]
    np.testing.assert_allclose(line.get_xdata(), np.arange(2 * n_epochs) + 7 / 8)  # only the logged points
    np.testing.assert_allclose(line.get_ydata(), measure[last].numpy())


def test_format_1_history_takes_validation_metrics_from_csv_by_epoch(tmp_path: Path) -> None:
    import pandas as pd

    state = _state(format_version=1, epochs=list(range(30)))
    for key in ("logged", "prefix", "config"):
        state.pop(key)
    torch.save(state, tmp_path / "dynamics_history.pt")  # format 1 files are the bare state
    rows = [{"epoch": e, "step": e, "val_acc": ACCURACY[e]} for e in range(0, 30, 2)]  # every other epoch
    pd.DataFrame(rows).to_csv(tmp_path / "metrics.csv", index=False)
    run = load_run(tmp_path)
    assert run.format_version == 1 and run.accuracy_key == "val_acc" and run.loss_key is None
    assert run.logged["val_acc"][4] == ACCURACY[4] and math.isnan(run.logged["val_acc"][5])


def test_find_history_versions_and_ambiguity(tmp_path: Path) -> None:
    _write(tmp_path / "a")
    newest = _write(tmp_path / "a", name="dynamics_history-v2.pt")
    _write(tmp_path / "a", name="dynamics_history-v1.pt")
    assert find_history(tmp_path / "a") == newest
    assert find_history(tmp_path) == newest  # found below, one run
    _write(tmp_path / "b")
    with pytest.raises(ValueError, match=r"histories of 2 runs.*compare"):
        find_history(tmp_path)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d.mkdir(), "no DynamicsMonitor history"),
        (lambda d: None, "does not exist"),
        (lambda d: torch.save(_state(format_version=99), _mkdir(d) / "dynamics_history.pt"), r"format.version.*99"),
        (lambda d: torch.save(_state(epochs=list(range(9))), _mkdir(d) / "dynamics_history.pt"), "epochs"),
        (lambda d: (_mkdir(d) / "dynamics_history.pt").write_bytes(b"not a history"), "not a readable"),
    ],
    ids=["empty", "missing", "version", "inconsistent", "garbage"],
)
def test_report_errors_name_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture, make, message) -> None:
    run_dir = tmp_path / "run"
    make(run_dir)
    assert main(["report", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lightning-dynamics report: error:") and re.search(message, err), err


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_compare_overlays_labelled_runs_with_progress(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for seed, name in enumerate(("lr_0.1", "lr_0.01", "lr_0.001", "sgd")):
        _write(tmp_path / name / "version_0", seed=seed)
    runs = load_runs([tmp_path / n for n in ("lr_0.1", "lr_0.01", "lr_0.001", "sgd")], progress=True)
    assert "runs: 100%" in capsys.readouterr().err  # the tqdm bar
    assert [r.label for r in runs] == ["lr_0.1", "lr_0.01", "lr_0.001", "sgd"]
    figure = plot_comparison(runs[:2])
    assert [t.get_text() for t in figure.legends[0].get_texts()] == ["lr_0.1", "lr_0.01"]
    assert _axes(figure, "integration I").get_ylim() == (0.0, 1.0)
    out = tmp_path / "cmp" / "comparison.png"
    runs_dirs = [str(tmp_path / n / "version_0") for n in ("lr_0.1", "lr_0.01")]
    assert main(["compare", *runs_dirs, "-o", str(out), "--no-progress"]) == 0
    page = out.with_suffix(".html").read_text()
    assert out.read_bytes()[:8] == PNG_MAGIC and "lr_0.1/version_0" in page and "lr_0.01/version_0" in page


@pytest.fixture(scope="module")
def fitted_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real short fit with DynamicsMonitor and a CSV logger (TinyModule logs val_loss, no accuracy)."""
    from lightning.pytorch.loggers import CSVLogger

    from lightning_dynamics import DynamicsMonitor
    from tests.helpers import TinyModule, loaders, trainer

    root = tmp_path_factory.mktemp("fit")
    logger = CSVLogger(root, name="tiny")
    fit = trainer(root, max_epochs=22, logger=logger, callbacks=[DynamicsMonitor(verbose=False, cost_budget=None)])
    fit.fit(TinyModule(), *loaders())
    return Path(logger.log_dir)


@pytest.mark.integration
def test_report_of_a_real_fit_writes_png_and_self_contained_html(fitted_run: Path, tmp_path: Path) -> None:
    assert main(["report", str(fitted_run), "-o", str(tmp_path / "out")]) == 0
    png = (tmp_path / "out" / "dynamics_dashboard.png").read_bytes()
    page = (tmp_path / "out" / "dynamics_dashboard.html").read_text()
    assert png[:8] == PNG_MAGIC
    embedded = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert embedded is not None and base64.b64decode(embedded.group(1)) == png
    assert not re.search(r'(src|href)="(?!data:)', page)  # no external asset
    history = load_history(find_history(fitted_run))
    volatility = history["metrics"]["stability_volatility"]
    last = float(volatility[torch.isfinite(volatility)][-1])
    assert f"<td>stability_volatility</td><td>{last:.4g}</td>" in page
    assert "<td>val_loss</td>" in page
    beside = find_history(fitted_run).parent / "dynamics_dashboard.png"
    assert beside.read_bytes() == png  # the monitor drew it at fit end, as `report` draws it
    # `report` without -o rewrites that same file (and adds its page): one dashboard figure per run folder.
    assert main(["report", str(fitted_run)]) == 0
    assert sorted(p.name for p in fitted_run.glob("*.png")) == ["dynamics_dashboard.png"]
    assert (fitted_run / "dynamics_dashboard.html").is_file()


def test_module_entry_point_reaches_report(tmp_path: Path, monkeypatch) -> None:
    """``python -m lightning_dynamics`` runs ``report`` (drawing tested above); the old alias is gone."""
    from lightning_dynamics.report import cli

    calls: list[tuple[Path, Path | None]] = []
    monkeypatch.setattr(cli, "run_report", lambda run, out=None: calls.append((run, out)) or (Path("a"), Path("b")))
    monkeypatch.setattr(sys, "argv", ["lightning_dynamics", "report", "runs/x", "-o", "out.png"])
    with pytest.raises(SystemExit) as exit_info:  # what `python -m lightning_dynamics ...` runs, in-process
        runpy.run_module("lightning_dynamics", run_name="__main__", alter_sys=False)
    assert exit_info.value.code == 0
    assert calls == [(Path("runs/x"), Path("out.png"))]
    assert not hasattr(cli, "report_alias")
    with pytest.raises(SystemExit):  # a bare run directory is no command any more
        main(["runs/y"])
