import math

import pandas as pd
import pytest

from lightning_dynamics.decisions.stopping import convergence_signal
from lightning_dynamics.report.analysis import (
    accuracy_plateau_epoch,
    convergence_points,
    convergence_report,
    val_loss_stop_epoch,
)

NAN = math.nan


def test_plateau_is_first_epoch_within_eps_of_best() -> None:
    assert accuracy_plateau_epoch([10, 50, 96.6, 96.0, 97.0]) == 2
    assert accuracy_plateau_epoch([10, 50, 96.6, 96.0, 97.0], eps=0.1) == 4
    assert accuracy_plateau_epoch([NAN, 90.0, 90.0], epochs=[5, 6, 7]) == 6
    with pytest.raises(ValueError, match="no finite"):
        accuracy_plateau_epoch([NAN])


def test_val_loss_replay_matches_lightning_rule() -> None:
    assert val_loss_stop_epoch([3, 2, 1, 1, 1, 1, 1, 1], patience=5) == 7
    assert val_loss_stop_epoch([3, 2, 1], patience=5) is None


def test_convergence_signal_patience_and_min_epochs() -> None:
    series = [NAN, 0.4, 0.3, 0.05, 0.05, 0.05, 0.05]
    assert convergence_signal(series, patience=3) == 5
    assert convergence_signal(series, patience=3, min_epochs=4) == 6  # checks before min_epochs do not count
    assert convergence_signal(series, patience=3, min_epochs=6) is None
    assert convergence_signal([0.4, 0.3, 0.2], patience=1) is None


def _csv_like() -> pd.DataFrame:
    rows = []
    vol = [NAN, NAN, 0.4, 0.3, 0.08, 0.07, 0.06, 0.05, 0.05]
    acc = [20, 50, 70, 85, 90, 94, 95.8, 96.0, 95.9]
    for epoch in range(9):
        rows.append({"epoch": epoch, "step": epoch * 10, "val_acc": acc[epoch], "dynamics/stability_volatility": NAN})
        rows.append({"epoch": epoch, "step": epoch * 10, "val_acc": NAN, "dynamics/stability_volatility": vol[epoch]})
    return pd.DataFrame(rows)


def test_report_from_a_csv_logger_frame(tmp_path) -> None:
    frame = _csv_like()
    report = convergence_report(frame)
    assert report.signal_epoch == 6 and report.plateau_epoch == 6 and report.lead == 0
    assert report.best_accuracy == 96.0 and report.accuracy_at_signal == 95.8 and report.n_points == 9
    frame.to_csv(tmp_path / "metrics.csv", index=False)
    assert convergence_report(tmp_path) == report
    with pytest.raises(KeyError, match="val_loss"):
        convergence_report(frame, accuracy_key="val_loss")


def test_convergence_points_by_sample_point_with_sub_epoch_sampling() -> None:
    """4 points per epoch, volatility logged at each epoch's last point: the rule sees one check per epoch."""
    time = [t / 4 for t in range(24)]
    per_epoch_volatility = [NAN, 0.4, 0.3, 0.05, 0.05, 0.05]
    volatility = [per_epoch_volatility[t // 4] if t % 4 == 3 else NAN for t in range(24)]
    accuracy = [min(90.0, 10.0 * t) for t in range(24)]  # 90 from point 9 (epoch 2.25)
    report = convergence_points(time, volatility, accuracy, patience=3)
    assert report.signal_index == 23 and report.signal_epoch == 5.75  # the third low check, epoch 5's last point
    assert report.plateau_index == 9 and report.plateau_epoch == 2.25 and report.lead == 2.25 - 5.75
    assert report.accuracy_at_signal == 90.0 and report.best_accuracy == 90.0 and report.n_points == 24
    # min_epochs counts epochs: checks before epoch 4 do not count, so the third low check comes later (none here).
    assert convergence_points(time, volatility, None, patience=3, min_epochs=4).signal_index is None
    assert convergence_points(time, volatility, None, patience=2, min_epochs=4).signal_index == 23
    fractions = convergence_points(time, None, [a / 100 for a in accuracy])
    assert fractions.plateau_index == 9 and fractions.signal_index is None  # fractions read as percent


def test_a_csv_run_and_its_history_give_one_convergence_report(tmp_path) -> None:
    """Same plateau from either input; the signal differs by design: a history replays the rule DynamicsEarlyStopping
    stops with (relative change; quiet on this random walk), a CSV without a history only has the logged volatility
    and gets the legacy rule, labelled as such."""
    import torch

    from lightning_dynamics.capture import save_history
    from lightning_dynamics.report import load_run

    frame = _csv_like()
    frame.to_csv(tmp_path / "metrics.csv", index=False)
    per_epoch = frame.groupby("epoch").last()
    n_points = len(per_epoch)
    state = {
        "format_version": 2,
        "layer_names": ["a", "b"],
        "summary": "rms",
        "values": torch.randn(2, n_points, generator=torch.Generator().manual_seed(0)).cumsum(-1),
        "epochs": list(range(n_points)),
        "steps": [10 * e for e in range(n_points)],
        "metrics": {"stability_volatility": torch.tensor(per_epoch["dynamics/stability_volatility"].tolist())},
        "logged": {"val_acc": torch.tensor(per_epoch["val_acc"].tolist(), dtype=torch.float64)},
    }
    from_history = load_run(save_history(state, tmp_path / "dynamics_history.pt")).convergence
    from_csv = convergence_report(tmp_path)
    assert from_csv.plateau_epoch == from_history.plateau_epoch == 6
    assert from_csv.rule == "volatility" and from_csv.signal_epoch == 6
    assert from_history.rule == "relative_change" and from_history.signal_epoch is None


def test_the_signal_replays_the_rule_that_stops() -> None:
    """With a history, the marker is DynamicsEarlyStopping's default rule (relative change), not the volatility rule."""
    import torch

    from lightning_dynamics.decisions.stopping import RelativeChangeRule
    from lightning_dynamics.report.analysis import convergence_points

    t = torch.arange(40, dtype=torch.float64)
    x = torch.stack([s * (1 - torch.exp(-t / 4)) for s in (1.0, 2.0, 3.0)]).repeat_interleave(2, dim=1)
    epochs = [i // 2 for i in range(80)]
    time = [i / 2 for i in range(80)]
    flat_volatility = [0.0] * 80  # the legacy rule would fire at once on it
    report = convergence_points(time, flat_volatility, None, history=(x, epochs))
    rule = RelativeChangeRule()
    stop = next(e for e in range(40) if rule.update(x[:, : 2 * e + 2], epochs[: 2 * e + 2])[0])
    assert report.rule == "relative_change" and report.signal_index == 2 * stop + 1
    legacy = convergence_points(time, flat_volatility, None)
    assert legacy.rule == "volatility" and legacy.signal_index == 2


def test_no_plateau_for_a_run_that_never_rose() -> None:
    """A run stuck at chance has a flat accuracy, not a plateau reached: nothing is marked."""
    time = list(range(20))
    stuck = [10.1, 9.8, 10.0, 10.3, 9.9] * 4  # a dead run predicting about one class in ten
    report = convergence_points(time, None, stuck)
    assert report.plateau_index is None and report.plateau_epoch is None and report.best_accuracy == 10.3
    learned = [10.0, 40.0, 80.0] + [95.0] * 17
    assert convergence_points(time, None, learned).plateau_epoch == 3
