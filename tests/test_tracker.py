"""The framework-neutral core, no Lightning: the sampling loop, the registry, noise floors, files, state."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from lightning_dynamics import DynamicsConfig, DynamicsTracker
from lightning_dynamics.capture import load_history
from lightning_dynamics.functional import dynamics_measures, rolling_volatility, stability_index
from lightning_dynamics.measures.context import MeasureContext
from lightning_dynamics.measures.registry import MEASURES, compute_measures, measure_names, null_bands
from lightning_dynamics.tracking.schedule import SampleSchedule


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))


def _run(
    tracker: DynamicsTracker,
    epochs: int,
    n_batches: int = 10,
    history_dir: Path | None = None,
    model: nn.Module | None = None,
    lr: float = 0.05,
    start_epoch: int = 0,
) -> list:
    """A plain loop driving the tracker as the adapters do; returns the log points."""
    model = model or _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(1)
    data = [
        (torch.randn(8, 6, generator=generator), torch.randint(0, 3, (8,), generator=generator))
        for _ in range(n_batches)
    ]
    tracker.begin_fit(model, history_dir=history_dir)
    points, step = [], start_epoch * n_batches
    for epoch in range(start_epoch, start_epoch + epochs):
        tracker.epoch_start(epoch, step, n_batches)
        for batch_idx, (x, y) in enumerate(data):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            step += 1
            point = tracker.batch_end(epoch, step, batch_idx, n_batches)
            if point is not None:
                points.append(point)
        point = tracker.epoch_end(epoch, step)
        if point is not None:
            points.append(point)
    tracker.end_fit()
    return points


@pytest.mark.parametrize(("points", "n_batches", "expected"), [(4, 10, [2, 4, 7]), (8, 4, [0, 1, 2]), (1, 10, [])])
def test_schedule_spreads_points_evenly_and_ends_at_the_epoch_end(points: int, n_batches: int, expected: list) -> None:
    schedule = SampleSchedule(points_per_epoch=points)
    assert [b for b in range(n_batches) if schedule.closes_at_batch(b, n_batches, b + 1)] == expected
    assert schedule.closes_at_epoch_end() and not schedule.computes_at_batch()
    assert not SampleSchedule(points_per_epoch=8).closes_at_batch(0, float("inf"), 1)  # unknown length: epoch end only


def test_schedule_by_step_never_samples_a_step_twice() -> None:
    schedule = SampleSchedule(every_n_steps=2)
    # Gradient accumulation: several batches end at the same optimizer step.
    closes = [schedule.closes_at_batch(b, 10, step) for b, step in enumerate([1, 1, 2, 2, 3, 3, 4, 4])]
    assert closes == [False, False, True, False, False, False, True, False]
    assert not schedule.closes_at_epoch_end() and schedule.computes_at_batch()


def test_default_sub_epoch_points_define_every_key_within_8_epochs(tmp_path: Path) -> None:
    tracker = DynamicsTracker(verbose=False)
    points = _run(tracker, epochs=8, n_batches=40, history_dir=tmp_path)
    per_epoch = DynamicsConfig().points_per_epoch
    assert tracker.n_samples == 8 * per_epoch and len(points) == 8  # measures once an epoch
    assert tracker.history is not None and tracker.history.epochs[: per_epoch + 1] == [0] * per_epoch + [1]
    last = points[-1].values
    saved = load_history(tmp_path / "dynamics_history.pt")
    for name in measure_names("default"):
        assert f"dynamics/{name}" in last and math.isfinite(last[f"dynamics/{name}"]), name
        for key in MEASURES[name].null_keys:  # the budget may skip epochs' floors; the last point's are filled
            assert math.isfinite(saved["metrics"][key][-1].item()), key
    # Measures only at the epoch ends; NaN at the sub-epoch points.
    assert tracker.computed == [i % per_epoch == per_epoch - 1 for i in range(8 * per_epoch)]
    assert all(math.isnan(v) for v, c in zip(tracker.metrics["metastability"], tracker.computed, strict=True) if not c)
    assert saved["values"].shape == (3, 8 * per_epoch) and set(saved["metrics"]) == set(tracker.keys)


def test_values_equal_the_registry_and_the_functional_api_on_the_history() -> None:
    tracker = DynamicsTracker(verbose=False, config=DynamicsConfig(points_per_epoch=4, null_surrogates=None))
    points = _run(tracker, epochs=12, n_batches=8)
    assert tracker.history is not None
    x = tracker.history.values
    expected = dynamics_measures(x)
    last = points[-1].values
    for key in ("integration", "integration_alpha", "metastability", "synchrony", "phase_integration"):
        assert last[f"dynamics/{key}"] == pytest.approx(float(getattr(expected, key)), rel=1e-5), key
    assert last["dynamics/stability_index"] == pytest.approx(float(stability_index(x)[-1]), rel=1e-5)
    # The volatility is over the last k computed points (epoch ends), as rolling_volatility of that series.
    s = torch.tensor([v for v, c in zip(tracker.metrics["stability_index"], tracker.computed, strict=True) if c])
    assert last["dynamics/stability_volatility"] == pytest.approx(float(rolling_volatility(s.double())[-1]), rel=1e-6)
    assert not any(key.endswith("_null_lo") for key in last)  # noise floors off


def test_a_key_is_logged_from_its_definition_on_never_before() -> None:
    tracker = DynamicsTracker(verbose=False, config=DynamicsConfig(points_per_epoch=1, null_surrogates=None))
    points = _run(tracker, epochs=34, n_batches=3)
    first = {key: next(i for i, p in enumerate(points) if key in p.values) for key in points[-1].values}
    needed = tracker.defined_from()
    for name, n in needed.items():
        assert first[f"dynamics/{name}"] == n - 1, name  # the epoch with n points
    assert all(set(p.values) <= set(q.values) for p, q in itertools.pairwise(points))  # once defined, always logged


def test_null_band_covers_independent_noise_and_excludes_coupled_layers() -> None:
    """The noise floor is calibrated: independent layers sit inside it about 95% of the time; locked ones do not."""
    config = DynamicsConfig()
    names = ("metastability", "synchrony", "integration_alpha")
    inside = dict.fromkeys(names, 0)
    draws = 40
    for seed in range(draws):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(8, 96, generator=g, dtype=torch.float64).cumsum(-1)  # independent random walks
        values = compute_measures(MeasureContext(x, config), names)
        bands = null_bands(x, config, names, 39, torch.Generator().manual_seed(100 + seed))
        for name in names:
            inside[name] += int(bands[name + "_null_lo"] <= values[name] <= bands[name + "_null_hi"])
    for name in names:
        assert inside[name] >= 0.8 * draws, (name, inside[name])  # nominal 95%; 80% allows for 40 draws
    g = torch.Generator().manual_seed(0)
    common = torch.randn(96, generator=g, dtype=torch.float64).cumsum(0)
    coupled = common + 0.05 * torch.randn(8, 96, generator=g, dtype=torch.float64).cumsum(-1)
    value = compute_measures(MeasureContext(coupled, config), ("synchrony",))["synchrony"]
    band = null_bands(coupled, config, ("synchrony",), 39, torch.Generator().manual_seed(0))
    assert value > band["synchrony_null_hi"]
    # Layers whose differences are random walks (alpha ~ 1.5) sit far above the shuffle null (alpha ~ 0.5).
    walks = torch.randn(8, 96, generator=g, dtype=torch.float64).cumsum(-1).cumsum(-1)
    alpha = compute_measures(MeasureContext(walks, config), ("integration_alpha",))["integration_alpha"]
    alpha_band = null_bands(walks, config, ("integration_alpha",), 39, torch.Generator().manual_seed(0))
    assert alpha_band["integration_alpha_null_hi"] < 0.75 and alpha > 1.2


def test_by_step_noise_floors_are_computed_once_per_epoch_at_its_end() -> None:
    tracker = DynamicsTracker(verbose=False, config=DynamicsConfig(every_n_steps=1, cost_budget=None))
    points = _run(tracker, epochs=4, n_batches=6)
    assert tracker.n_samples == 24
    on_step = [p for p in points if p.on_step]
    on_epoch = [p for p in points if not p.on_step]
    assert len(on_step) == 24 and not any("dynamics/metastability_null_lo" in p.values for p in on_step)
    assert len(on_epoch) == 4  # the first epoch has 6 points: metastability (5 points) is defined at its end
    assert all("dynamics/metastability_null_lo" in p.values for p in on_epoch)
    lo = tracker.metrics["metastability_null_lo"]
    assert [i for i, v in enumerate(lo) if not math.isnan(v)] == [5, 11, 17, 23]


def test_nonfinite_counts_every_interval_since_the_last_computation() -> None:
    model = _model()
    tracker = DynamicsTracker(layers=["0", "2", "4"], verbose=False, config=DynamicsConfig(points_per_epoch=4))
    tracker.begin_fit(model)
    tracker.epoch_start(0, 0, 4)
    for batch_idx in range(4):
        x = torch.randn(4, 6)
        if batch_idx == 1:
            x[0, 0] = float("nan")
        model(x)
        tracker.batch_end(0, batch_idx + 1, batch_idx, 4)  # no host sync here: the flags wait on the device
    with pytest.warns(UserWarning, match="produced NaN/Inf activations"):
        point = tracker.epoch_end(0, 4)
    assert point is not None and point.values["dynamics/nonfinite"] == 3.0  # every layer, in interval 1 of 4
    assert tracker.history is not None and int(tracker.history.values.isnan().sum()) == 3
    tracker.end_fit()


def test_a_sample_point_without_measures_costs_two_copies_and_no_host_read() -> None:
    """Closing a point between two computations copies the open sums to a pending column: no host read (on a GPU, a
    host read at every step would stall it). The points are summarised in one batch when the measures
    run, and a read of the history in between sees every point."""
    model = _model()
    tracker = DynamicsTracker(layers=["0", "2", "4"], verbose=False, config=DynamicsConfig(points_per_epoch=4))
    tracker.begin_fit(model)
    tracker.epoch_start(0, 0, 4)
    for batch_idx in range(3):
        loss = model(torch.randn(4, 6)).square().mean()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            assert tracker.batch_end(0, batch_idx + 1, batch_idx, 4, logged={"loss": loss}) is None
        ops = [e.name for e in prof.events() if e.name.startswith("aten::")]
        views = {"aten::select", "aten::slice", "aten::as_strided", "aten::detach", "aten::reshape", "aten::view"}
        kernels = sorted(op for op in ops if op not in views)
        # The open sums copied to a pending column and zeroed; no host read (item, tolist), nothing else.
        assert kernels == ["aten::copy_", "aten::copy_", "aten::zero_", "aten::zero_"], kernels
        assert tracker._logged["loss"][-1] != tracker._logged["loss"][-1]  # NaN until read with the batch
    assert tracker.n_samples == 3 and tracker.accumulator is not None and tracker.accumulator.closed == 3
    assert tracker.history is not None and tracker.history.length == 3 and tracker.accumulator.closed == 0
    assert tracker.logged["loss"][-1] == pytest.approx(float(loss))  # read with the others, at once
    model(torch.randn(4, 6))
    assert tracker.epoch_end(0, 4) is not None
    assert tracker.history.epochs == [0] * 4 and tracker.history.steps == [1, 2, 3, 4]
    assert not tracker.history.values.isnan().any()
    tracker.end_fit()


def test_a_fit_without_sample_points_writes_no_file(tmp_path: Path) -> None:
    tracker = DynamicsTracker(verbose=False)
    tracker.begin_fit(_model(), history_dir=tmp_path)
    assert tracker.end_fit() is None
    assert list(tmp_path.iterdir()) == []  # neither a file nor a claim marker is left


def test_a_failing_save_warns_once_with_the_cause_and_retries_quietly(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    tracker = DynamicsTracker(verbose=False, save_every_n_samples=1, config=DynamicsConfig(points_per_epoch=2))
    tracker.begin_fit(_model())
    tracker.history_path = blocker / "dynamics_history.pt"  # a directory that is a file: every save fails
    with pytest.warns(UserWarning) as record:
        tracker.epoch_start(0, 0, 4)
        for batch_idx in range(4):
            tracker.capture_enabled = True
            tracker.batch_end(0, batch_idx + 1, batch_idx, 4)
        tracker.epoch_end(0, 4)
        tracker.epoch_start(1, 4, 4)
        tracker.epoch_end(1, 4)
    messages = [str(w.message) for w in record if "save" in str(w.message) or "history" in str(w.message)]
    assert len([m for m in messages if "directory" in m or "not a directory" in m or "file" in m]) == 1, messages
    assert any("retried quietly" in m for m in messages)
    tracker.end_fit()


def test_state_round_trip_resumes_identically(tmp_path: Path) -> None:
    config = DynamicsConfig(points_per_epoch=4, null_surrogates=19, cost_budget=None)  # floors whatever the timing
    full = DynamicsTracker(verbose=False, config=config)
    _run(full, epochs=10, n_batches=8)
    first = DynamicsTracker(verbose=False, config=config)
    model = _model()
    _run(first, epochs=5, n_batches=8, model=model)
    resumed = DynamicsTracker(verbose=False, config=config)
    resumed.load_state_dict(first.state_dict())
    resumed.attach(model)
    assert resumed.n_samples == 20 and resumed.computed == first.computed and resumed.defined == first.defined
    _run(resumed, epochs=5, n_batches=8, model=model, start_epoch=5)
    assert resumed.history is not None and full.history is not None
    torch.testing.assert_close(resumed.history.values, full.history.values)
    assert resumed.history.epochs == full.history.epochs and resumed.computed == full.computed
    for key in full.keys:
        torch.testing.assert_close(torch.tensor(resumed.metrics[key]), torch.tensor(full.metrics[key]), equal_nan=True)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("accumulator", None, "`accumulator` must be a dict"),
        ("history", [], "`history` must be a dict"),
        ("logged", [1, 2], "`logged` must be a dict"),
        ("metrics", {"metastability": ["a"] * 4}, "must hold numbers"),
        ("metrics", {"not_a_measure": [0.0] * 4}, "unknown measures"),
        ("defined", 5, "`defined` must be a list"),
        ("computed", [1, 0, 1, 0], "`computed` must be 4 booleans"),
        ("schedule", {"points_per_epoch": 3}, "points_per_epoch=3"),
        ("schedule", {"last_sample_step": "x"}, "`last_sample_step`"),
        ("config", {"window": 24}, "window: checkpoint 24"),
        ("version", 1, "state version 1"),
    ],
)
def test_every_state_field_is_checked_at_restore(field: str, value: object, message: str) -> None:
    config = DynamicsConfig(points_per_epoch=2, null_surrogates=None)
    source = DynamicsTracker(verbose=False, config=config)
    _run(source, epochs=2, n_batches=4)
    state = source.state_dict()
    state[field] = value
    target = DynamicsTracker(verbose=False, config=config).attach(_model())
    before = target.state_dict()
    with pytest.raises(ValueError, match=message):
        target.load_state_dict(state)
    after = target.state_dict()
    assert after["history"]["epochs"] == before["history"]["epochs"] and after["metrics"] == before["metrics"]


def test_registry_is_the_one_list_of_measures() -> None:
    config = DynamicsConfig(complexity_every_n_samples=2)
    assert set(config.defined_from()) == set(MEASURES)
    assert set(DynamicsConfig().defined_from()) == set(measure_names("default"))
    for name, measure in MEASURES.items():
        assert measure.name == name and measure.doc and measure.group in ("default", "complexity")
        assert (measure.null is None) == (measure.null_keys == ())
    x = torch.randn(6, 48, dtype=torch.float64).cumsum(-1)
    values = compute_measures(MeasureContext(x, config), tuple(n for n, m in MEASURES.items() if m.compute))
    assert all(v.shape == () for v in values.values())
    batch = compute_measures(MeasureContext(x.expand(3, 6, 48), config), ("metastability", "integration"))
    assert all(v.shape == (3,) for v in batch.values())  # every compute is batched (noise floors rely on it)


def test_null_band_is_a_5_percent_rank_test_when_the_null_holds() -> None:
    """Layers with i.i.d. increments are exchangeable with their time-shuffled surrogates: with 39 surrogates the
    value falls outside the band with probability 2/40 = 5% exactly (a two-sided rank test)."""
    config = DynamicsConfig()
    outside, draws = 0, 400
    for seed in range(draws):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(6, 64, generator=g, dtype=torch.float64).cumsum(-1)
        value = compute_measures(MeasureContext(x, config), ("relative_change",))["relative_change"]
        band = null_bands(x, config, ("relative_change",), 39, torch.Generator().manual_seed(10_000 + seed))
        outside += int(not band["relative_change_null_lo"] <= value <= band["relative_change_null_hi"])
    # Binomial(400, 0.05): mean 20, sd 4.4; [8, 34] is +-3 sd. The old interpolated-quantile band gave about 10%.
    assert 8 <= outside <= 34, outside


def test_record_writes_a_value_against_a_taken_point_and_reaches_the_history_file(tmp_path: Path) -> None:
    tracker = DynamicsTracker(config=DynamicsConfig(points_per_epoch=2, null_surrogates=None), save_history=False)
    with pytest.raises(ValueError, match="0 taken"):
        tracker.record("dynamics/frozen_layers", 1.0)
    _run(tracker, epochs=2, n_batches=4)
    n = tracker.n_samples
    tracker.record("dynamics/frozen_layers", 0.0, point=1)
    tracker.record("dynamics/frozen_layers", 2.0)  # the last point
    series = tracker.logged["dynamics/frozen_layers"]
    assert len(series) == n and series[1] == 0.0 and series[-1] == 2.0
    assert all(math.isnan(v) for i, v in enumerate(series) if i not in (1, n - 1))
    path = tracker.save(tmp_path / "h.pt")
    assert path is not None
    assert load_history(path)["logged"]["dynamics/frozen_layers"][-1] == 2.0
    for key, value, point, message in [
        ("", 1.0, -1, "non-empty string"),
        ("k", "1", -1, "real number"),
        ("k", True, -1, "real number"),
        ("k", 1.0, n, "not a sample point"),
        ("k", 1.0, -n - 1, "not a sample point"),
    ]:
        with pytest.raises(ValueError, match=message):
            tracker.record(key, value, point)  # type: ignore[arg-type]


def test_short_series_note_says_never_reliable_in_words() -> None:
    messages: list[str] = []
    tracker = DynamicsTracker(config=DynamicsConfig(null_surrogates=None), save_history=False, info=messages.append)
    _run(tracker, epochs=3)
    notes = " ".join(m for m in messages if "fewer than their estimators" in m)
    assert "integration (not reliable at any length measured, up to 1000)" in notes
    assert "metastability (reliable from 200)" in notes
    assert str(10**9) not in notes


def test_relative_change_appears_when_promised_under_a_short_history_window() -> None:
    """history_window 16..32 was accepted while relative_change needs 2 * window + 1 = 33 points: it stayed NaN for
    the whole run although defined_from and the fit-start line promised it at 33. It reads its 33 points now."""
    from lightning_dynamics.functional import median_relative_change

    config = DynamicsConfig(history_window=16, null_surrogates=9, compute_phase_integration=False)
    model = _model()
    tracker = DynamicsTracker(layers=[nn.Linear], config=config, save_history=False, verbose=False).attach(model)
    needed = tracker.defined_from()["relative_change"]
    assert needed == 2 * config.window + 1 == 33
    generator = torch.Generator().manual_seed(0)
    for point in range(needed + 4):
        model(torch.randn(8, 6, generator=generator) / (1 + point))  # a run that settles
        tracker.sample(epoch=point, step=point, compute=point >= needed - 2)
    series = tracker.metrics["relative_change"]
    assert math.isnan(series[needed - 2]) and all(math.isfinite(v) for v in series[needed - 1 :])
    assert tracker.history is not None
    expected = median_relative_change(tracker.history.values[:, -needed:], config.window)
    assert series[-1] == pytest.approx(float(expected), rel=1e-6)
    # Its noise floor is computed on as many points: defined too.
    assert math.isfinite(tracker.metrics["relative_change_null_lo"][-1])
    assert math.isfinite(tracker.metrics["relative_change_null_hi"][-1])
    # And so is its settled-level band, read from as many points as the measure reads.
    from lightning_dynamics.measures.readings import level_bands

    lo, hi = level_bands(tracker.history.values, config, ("relative_change",), 19, torch.Generator().manual_seed(0))[
        "relative_change"
    ]
    assert math.isfinite(float(lo)) and math.isfinite(float(hi))


def test_cost_budget_spaces_the_noise_floors_and_the_last_point_gets_its_band(monkeypatch, tmp_path: Path) -> None:
    """Floors that cost 0.25 s against 1 s epochs, within 1/16 of training time: the first band of each measure at once
    (epoch 0: metastability, synchrony, phase integration; epoch 1: alpha, integration, the stability index; epoch 4:
    the relative change, defined from 33 points), then whenever their total stays within budget (at 16 and 20 s of
    training), and always at the last point. (Binary-exact times, so the comparisons at the edges are exact.)"""
    from lightning_dynamics.tracking import tracker as tracker_module

    class Clock:
        now = 0.0

        def __call__(self) -> float:
            return self.now

    clock = Clock()
    monkeypatch.setattr(tracker_module, "_clock", clock)
    null_values = DynamicsTracker._null_values

    def slow(self: DynamicsTracker) -> dict[str, float]:
        clock.now += 0.25
        return null_values(self)

    monkeypatch.setattr(DynamicsTracker, "_null_values", slow)
    monkeypatch.setattr(tracker_module, "_DASHBOARD_SECONDS", [2.0])

    def fit(directory: Path, info: Callable[[str], None]) -> DynamicsTracker:
        tracker = DynamicsTracker(config=DynamicsConfig(points_per_epoch=8, cost_budget=0.0625), info=info)
        model = _model()
        tracker.begin_fit(model, history_dir=directory)
        step = 0
        for epoch in range(21):
            tracker.epoch_start(epoch, step, 8)
            clock.now += 1.0  # one second of training
            for batch_idx in range(8):
                model(torch.randn(4, 6))
                step += 1
                tracker.batch_end(epoch, step, batch_idx, 8)
            tracker.epoch_end(epoch, step)
        return tracker

    def epochs_with_floors(tracker: DynamicsTracker) -> list[int]:
        lo = tracker.metrics["metastability_null_lo"]
        return [tracker.history.epochs[i] for i, v in enumerate(lo) if not math.isnan(v)]

    messages: list[str] = []
    tracker = fit(tmp_path, messages.append)
    assert epochs_with_floors(tracker) == [0, 1, 4, 15, 19]
    assert tracker.train_seconds == 21.0 and tracker.floor_seconds == 1.25
    assert sum("cost_budget=0.0625" in m for m in messages) == 1  # said once
    assert not tracker.dashboard_due(tmp_path)  # 2 s of figure against 21 s of training: over 1/16
    assert "lightning-dynamics report" in messages[-1]
    path = tracker.end_fit()
    assert path is not None and not math.isnan(load_history(path)["metrics"]["metastability_null_lo"][-1].item())
    # The budget counts the measures too: at 1/8 s a computation they alone exceed 1/16 of training, so the floors
    # come only where a measure gets its first band, and at the last point.
    compute_measures = tracker_module.compute_measures

    def slow_measures(*args: object, **kwargs: object) -> dict:
        clock.now += 0.125
        return compute_measures(*args, **kwargs)

    monkeypatch.setattr(tracker_module, "compute_measures", slow_measures)
    costly = fit(tmp_path / "costly", lambda message: None)
    assert epochs_with_floors(costly) == [0, 1, 4]
    assert costly.end_fit() is not None and epochs_with_floors(costly) == [0, 1, 4, 20]
    unbudgeted = DynamicsTracker(config=DynamicsConfig(points_per_epoch=8, cost_budget=None), verbose=False)
    assert unbudgeted.dashboard_due()
    with pytest.raises(ValueError, match=r"`cost_budget` must be a finite number > 0 in \[-inf, 1.0\] or None"):
        DynamicsConfig(cost_budget=0)
