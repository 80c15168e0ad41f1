"""RelativeChangeRule on runs that start with a learning transient, and its reading of the learning-rate schedule."""

import math

import pytest
import torch

from benchmarks.early_stopping_calibration import EPOCHS, PER_EPOCH, RULES, replay, synthetic_run
from lightning_dynamics.decisions.stopping import (
    DynamicsStoppingReason,
    LearningRateOutlook,
    RelativeChangeRule,
    learning_rate_outlook,
    student_t_two_sided,
)

EPOCH_OF = [i // PER_EPOCH for i in range(EPOCHS * PER_EPOCH)]


def _fired(kind: str, rule: dict, draws: int, **kwargs: float) -> int:
    generator = torch.Generator().manual_seed(7)
    return sum(replay(synthetic_run(kind, generator, **kwargs), EPOCH_OF, **rule) is not None for _ in range(draws))


@pytest.mark.parametrize(
    ("kind", "kwargs"),
    [("walk", {}), ("osc", {"period": 8, "amplitude": 0.5}), ("osc", {"period": 2, "amplitude": 0.1})],
)
def test_quiet_after_a_transient_where_the_earlier_rule_fired(kind: str, kwargs: dict) -> None:
    """A transient, then a small random walk or an oscillation inside the epoch: the earlier rule (epoch means, no
    guard) fires on every draw; the rule now on none of them."""
    assert _fired(kind, RULES["before"], 4, **kwargs) == 4
    assert _fired(kind, RULES["now"], 4, **kwargs) == 0


def test_still_fires_on_a_transient_that_settles() -> None:
    assert _fired("settle", RULES["now"], 4) == 4


def test_fires_on_a_transient_then_batch_noise_and_a_slow_bounded_drift() -> None:
    """Converging, with the summaries still creeping (0.3 of the level over ~30 epochs, as a weight norm at constant
    learning rate)."""
    assert _fired("drift", RULES["now"], 4) == 4


def _transient_then_linear_drift(epochs: int) -> torch.Tensor:
    """12 layers: a transient, batch noise (1% of the level per point) and a drift of 1% of the level per epoch that
    does not slow down within the run (about a tenth of the transient's early movement per epoch)."""
    g = torch.Generator().manual_seed(3)
    t = torch.arange(epochs * PER_EPOCH, dtype=torch.float64) / PER_EPOCH
    level = 1 + torch.rand(12, 1, generator=g, dtype=torch.float64)
    noise = 0.01 * level * torch.randn(12, len(t), generator=g, dtype=torch.float64)
    return level * (1 - torch.exp(-t / 3)) + 0.01 * level * t + noise


def test_the_guard_passes_a_steady_drift_and_not_a_walk() -> None:
    """The steady-drift clause (t test of the recent epoch-mean changes) passes a drift that neither reverts nor
    shrinks, which the last round's guard (reversion or shrinkage only) held; a random walk after the same
    transient passes neither it nor the equivalence bound."""
    x, epochs = _transient_then_linear_drift(32), EPOCH_OF[: 32 * PER_EPOCH]
    steady = RelativeChangeRule(patience=1, drift_margin=0.0)  # the equivalence bound off: the t test decides
    assert steady.update(x, epochs)[0] and steady.drift_p_value < 0.001
    held = RelativeChangeRule(patience=1, drift_margin=0.0, steady_drift=False)
    assert not held.update(x, epochs)[0] and held.statistic <= 0.25 and held.drift_p_value > 0.1
    walk = synthetic_run("walk", torch.Generator().manual_seed(3))[:, : 24 * PER_EPOCH]
    rule = RelativeChangeRule(patience=1)
    assert not rule.update(walk, epochs[: 24 * PER_EPOCH])[0]
    assert rule.statistic <= 0.25 and rule.p_value <= 0.01  # the ratio and its test alone would pass it
    assert rule.drift_bound > rule.drift_margin and rule.drift_p_value > rule.drift_alpha


def test_student_t_against_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    t = torch.tensor([0.0, 0.3, -1.0, 2.365, 4.0, 9.0, float("nan")], dtype=torch.float64)
    for df in (1, 2, 3, 6, 7, 8, 15, 30):
        expected = torch.tensor(2 * stats.t.sf(t.abs().numpy(), df), dtype=torch.float64)
        torch.testing.assert_close(student_t_two_sided(t, df), expected, equal_nan=True, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="`df` must be an integer >= 1"):
        student_t_two_sided(t, 0)


def test_sub_epoch_spread_is_movement_and_batch_noise_is_not() -> None:
    t = torch.arange(32 * 20, dtype=torch.float64)
    epochs = [i // 32 for i in range(len(t))]
    oscillation = torch.stack([0.5 * torch.sin(2 * math.pi * t / p) for p in (2.5, 4, 8, 16)])
    means, spread = RelativeChangeRule.epoch_movement(oscillation, epochs)
    assert means.abs().max() < 0.05  # the epoch means cancel it ...
    assert (spread - 0.5 / math.sqrt(2)).abs().max() < 0.05  # ... the structured spread does not
    noise = torch.randn(4, len(t), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    # White noise of sd 1: a small positive bias (0.13 here, against 0.8 for the mean absolute deviation).
    assert 0.0 < RelativeChangeRule.epoch_movement(noise, epochs)[1].mean() < 0.2
    short = RelativeChangeRule.epoch_movement(torch.tensor([[1.0, 3.0, 5.0, 6.0, 8.0]]), [0, 0, 1, 1, 3])
    torch.testing.assert_close(short[1], torch.zeros(1, 3))  # fewer than 4 points in an epoch: no spread


def _optimizer(lr: float = 0.1) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.zeros(3, requires_grad=True)], lr=lr, momentum=0.9)


def test_outlook_of_milestones_cosine_and_plateau() -> None:
    opt = _optimizer()
    steps = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[5, 12], gamma=0.1)
    assert learning_rate_outlook(steps, steps_left=20).steps_until == 5
    assert not learning_rate_outlook(steps, steps_left=4).lowers  # the milestone lies beyond the budget
    for _ in range(12):
        opt.step()
        steps.step()
    after = learning_rate_outlook(steps, steps_left=20)
    assert not after.lowers and after.steps_until is None and "MultiStepLR" in after.detail
    # The real scheduler and optimizer are untouched by the look-ahead.
    assert steps.last_epoch == 12 and opt.param_groups[0]["lr"] == pytest.approx(1e-3)

    opt = _optimizer()
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10, eta_min=0.01)
    assert learning_rate_outlook(cosine, steps_left=10).lowers
    for _ in range(10):
        opt.step()
        cosine.step()
    assert not learning_rate_outlook(cosine, steps_left=0).lowers  # at its floor, at the end of the budget

    opt = _optimizer()
    sequential = torch.optim.lr_scheduler.SequentialLR(
        opt,
        [torch.optim.lr_scheduler.ConstantLR(opt, 1.0, total_iters=3), torch.optim.lr_scheduler.StepLR(opt, 4)],
        milestones=[3],
    )
    assert learning_rate_outlook(sequential, steps_left=30).lowers

    opt = _optimizer()
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.1, min_lr=1e-3)
    able = learning_rate_outlook(plateau)
    assert able.lowers and able.steps_until is None and "ReduceLROnPlateau" in able.detail
    opt.param_groups[0]["lr"] = 1e-3
    assert not learning_rate_outlook(plateau).lowers


def test_outlook_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="`scheduler` must be a torch learning-rate scheduler"):
        learning_rate_outlook(object())
    opt = _optimizer()
    sched = torch.optim.lr_scheduler.StepLR(opt, 3)
    with pytest.raises(ValueError, match=r"`tolerance` must be a number in \[0, 1\), got 1.0"):
        learning_rate_outlook(sched, tolerance=1.0)
    with pytest.raises(ValueError, match="`steps_left`"):
        learning_rate_outlook(sched, steps_left=-1)


def _settled() -> tuple[torch.Tensor, list[int]]:
    t = torch.arange(60, dtype=torch.float64)
    return torch.stack([s * (1 - torch.exp(-t / 6)) for s in (1.0, 2.0, 3.0)]), list(range(60))


@pytest.mark.parametrize("schedule", ["wait", "warn", "ignore"])
def test_schedule_policy(schedule: str) -> None:
    x, epochs = _settled()
    lowering = LearningRateOutlook(True, 4, "MultiStepLR lowers the learning rate in 4 scheduler step(s)")
    rule = RelativeChangeRule(patience=1, schedule=schedule)
    stop, reason, message = rule.update(x[:, :30], epochs[:30], lr_outlook=lowering)
    if schedule == "wait":
        assert not stop and reason is DynamicsStoppingReason.NOT_STOPPED and rule.held_by_schedule == 1
        assert "not stopping: MultiStepLR lowers" in message
        # Once the schedule has nothing left to lower, the same check stops.
        assert rule.update(x[:, :31], epochs[:31], lr_outlook=LearningRateOutlook(False, None, "-"))[0]
    else:
        assert stop and reason is DynamicsStoppingReason.RELATIVE_CHANGE
        assert ("schedule='warn'" in message) == (schedule == "warn")


def test_a_cyclic_schedule_holds_the_stop_until_its_last_trough() -> None:
    """At a trough of CyclicLR nothing lower lies ahead, but the next cycle does: the outlook says it raises the
    learning rate and the rule waits; with no cycle left in the budget it stops."""
    opt = _optimizer(0.05)
    sched = torch.optim.lr_scheduler.CyclicLR(opt, base_lr=0.005, max_lr=0.05, step_size_up=10, cycle_momentum=False)
    at_trough = learning_rate_outlook(sched, steps_left=40)
    assert not at_trough.lowers and at_trough.raises and at_trough.changes and at_trough.steps_until == 1
    assert "raises it" in at_trough.detail
    assert not learning_rate_outlook(sched, steps_left=0).changes  # the budget ends at this trough
    for _ in range(5):
        opt.step()
        sched.step()
    rising = learning_rate_outlook(sched, steps_left=40)
    assert rising.lowers and not rising.raises  # on its way up: the next trough lies ahead
    x, epochs = _settled()
    rule = RelativeChangeRule(patience=1)
    stop, _, message = rule.update(x[:, :30], epochs[:30], lr_outlook=at_trough)
    assert not stop and rule.held_by_schedule == 1 and "raises it" in message
    assert rule.update(x[:, :31], epochs[:31], lr_outlook=learning_rate_outlook(sched, steps_left=0))[0]


def test_new_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="`schedule` must be one of"):
        RelativeChangeRule(schedule="later")
    with pytest.raises(ValueError, match="`sub_epoch` must be True or False"):
        RelativeChangeRule(sub_epoch=math.nan)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`drift_alpha` must be at least 0.003 \(the smallest p-value 999 .*times 3"):
        RelativeChangeRule(drift_alpha=0.002)
    with pytest.raises(ValueError, match=r"`drift_alpha` must be at least 0.01 \(the smallest p-value 199 .*times 2"):
        RelativeChangeRule(drift_alpha=0.007, drift_permutations=199, steady_drift=False)
    with pytest.raises(ValueError, match=r"`drift_margin` must be a number in \[0, 1\)"):
        RelativeChangeRule(drift_margin=1.0)
    with pytest.raises(ValueError, match="`drift_permutations`"):
        RelativeChangeRule(drift_permutations=0)
    with pytest.raises(ValueError, match="`steady_drift` must be True or False"):
        RelativeChangeRule(steady_drift=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`drift_alpha`"):
        RelativeChangeRule(drift_alpha=1.0)
    with pytest.raises(ValueError, match="`lr_outlook` must be a LearningRateOutlook"):
        RelativeChangeRule().update(torch.zeros(2, 3), [0, 1, 2], lr_outlook=True)  # type: ignore[arg-type]
