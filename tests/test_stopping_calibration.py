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


def test_new_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="`schedule` must be one of"):
        RelativeChangeRule(schedule="later")
    with pytest.raises(ValueError, match="`sub_epoch` must be True or False"):
        RelativeChangeRule(sub_epoch=math.nan)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`drift_alpha` must be at least 0.01 \(the smallest p-value 199"):
        RelativeChangeRule(drift_alpha=0.007)
    with pytest.raises(ValueError, match="`drift_alpha`"):
        RelativeChangeRule(drift_alpha=1.0)
    with pytest.raises(ValueError, match="`lr_outlook` must be a LearningRateOutlook"):
        RelativeChangeRule().update(torch.zeros(2, 3), [0, 1, 2], lr_outlook=True)  # type: ignore[arg-type]
