"""RelativeChangeRule without Lightning: quiet on never-converging histories, fires on converging ones, resumes."""

import math

import numpy as np
import pytest
import torch

from lightning_dynamics.decisions.stopping import DynamicsStoppingReason, RelativeChangeRule, VolatilityDropRule


def replay(rule: RelativeChangeRule, x: torch.Tensor, epochs: list[int]) -> int | None:
    """Check at every epoch end, as DynamicsEarlyStopping does; the epoch of the first stop, or None."""
    last = {epoch: index for index, epoch in enumerate(epochs)}
    for epoch, index in sorted(last.items()):
        if rule.update(x[:, : index + 1], epochs[: index + 1])[0]:
            return epoch
    return None


def never_converging(kind: str, points: int, generator: torch.Generator, layers: int = 22) -> torch.Tensor:
    z = torch.randn(layers, points, generator=generator, dtype=torch.float64)
    if kind == "white":
        return z
    common = torch.randn(1, points, generator=generator, dtype=torch.float64)
    return (0.7 * common + 0.7 * z).cumsum(-1)  # random walks, correlated across layers (one network)


@pytest.mark.parametrize(
    ("kind", "n_epochs", "per_epoch"),
    [("white", 40, 1), ("walk", 40, 1), ("white", 200, 1), ("walk", 200, 1), ("walk", 40, 8), ("white", 30, 8)],
)
def test_at_most_5_percent_false_positives_on_never_converging_histories(
    kind: str, n_epochs: int, per_epoch: int
) -> None:
    generator = torch.Generator().manual_seed(2026)
    epochs = [i // per_epoch for i in range(n_epochs * per_epoch)]
    draws = 100 if len(epochs) <= 40 else 40  # longer histories cost more checks; <= 5% is then <= 2 of 40
    fired = sum(
        replay(RelativeChangeRule(), never_converging(kind, len(epochs), generator), epochs) is not None
        for _ in range(draws)
    )
    assert fired <= 0.05 * draws


@pytest.mark.slow
def test_the_legacy_volatility_rule_is_not_quiet_on_noise() -> None:
    """Why the default changed: the same walks make the volatility rule fire (docs/early_stopping.md)."""
    from lightning_dynamics.decisions.stopping import convergence_signal
    from lightning_dynamics.functional import rolling_volatility, stability_index

    generator = torch.Generator().manual_seed(2026)
    fired = 0
    for _ in range(20):
        x = never_converging("walk", 200, generator)
        fired += convergence_signal(rolling_volatility(stability_index(x)).tolist()) is not None
    assert fired >= 10


def settling(n_epochs: int, per_epoch: int = 1, tau: float = 4.0, noise: float = 1e-3, seed: int = 0) -> torch.Tensor:
    """22 layers whose summaries approach their limits exponentially (time constant ``tau`` epochs) plus noise."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n_epochs * per_epoch, dtype=torch.float64) / per_epoch
    levels = 1 + torch.rand(22, 1, generator=g, dtype=torch.float64)
    return levels * (1 - torch.exp(-t / tau)) + noise * torch.randn(22, len(t), generator=g, dtype=torch.float64)


def first_below(x: torch.Tensor, ratio: float = 0.25, window: int = 8) -> int:
    """The first epoch whose median relative change is <= ratio, by the formula written out (one point per epoch)."""
    changes = (x[:, 1:] - x[:, :-1]).abs().numpy()
    for epoch in range(2 * window, x.shape[1]):
        n = epoch  # changes up to this epoch
        ratios = changes[:, n - window : n].mean(1) / changes[:, : n // 2].mean(1)
        if float(np.median(ratios)) <= ratio:
            return epoch
    raise AssertionError("never below")


def test_fires_on_a_converging_history_at_the_expected_epoch() -> None:
    x = settling(60, tau=6.0, noise=0.0)
    expected = first_below(x) + 2  # patience 3: that check and the next two (the p-value is 1/200 here)
    rule = RelativeChangeRule()
    assert replay(rule, x, list(range(60))) == expected
    assert rule.update(x[:, : expected + 1], list(range(expected + 1)))[1] is DynamicsStoppingReason.RELATIVE_CHANGE
    probe = RelativeChangeRule(patience=1)
    assert not probe.update(x[:, : expected - 2], list(range(expected - 2)))[0] and probe.statistic > 0.25
    assert probe.update(x[:, : expected - 1], list(range(expected - 1)))[0] and probe.p_value <= 0.01
    # With noise and 8 points per epoch it still fires, within a few epochs of the noiseless stop.
    noisy = settling(60, per_epoch=8, tau=6.0, noise=2e-3)
    stop = replay(RelativeChangeRule(), noisy, [i // 8 for i in range(480)])
    assert stop is not None and expected - 2 <= stop <= expected + 5


def test_min_epochs_threshold_and_non_finite() -> None:
    x = settling(60, noise=0.0)
    # Checks before min_epochs do not count towards patience: 30, 31, 32.
    assert replay(RelativeChangeRule(min_epochs=30), x, list(range(60))) == 32
    # It stops at the first epoch below the threshold, by the formula, with or without the drift guard: the guard
    # passes this one-signed, shrinking drift there (p = 0.006 at epoch 16). The last round's guard (reversion or
    # shrinkage alone, 199 permutations) needed one more epoch: its p was 0.04 at epoch 16, above drift_alpha 0.02.
    assert replay(RelativeChangeRule(stopping_threshold=0.3, drift_guard=False), x, list(range(60))) == first_below(
        x, 0.3
    )
    last_round = RelativeChangeRule(
        stopping_threshold=0.3, steady_drift=False, drift_margin=0.0, drift_permutations=199
    )
    assert replay(last_round, x, list(range(60))) == first_below(x, 0.3) + 1
    rule = RelativeChangeRule(stopping_threshold=0.3)
    at_once = first_below(x, 0.3)
    assert replay(rule, x, list(range(60))) == at_once
    stop, reason, message = rule.update(x[:, : at_once + 1], list(range(at_once + 1)))
    assert stop and reason is DynamicsStoppingReason.STOPPING_THRESHOLD and "stopping_threshold 0.3" in message
    broken = x[:, :12].clone()
    broken[3, -1] = math.inf
    stop, reason, message = RelativeChangeRule().update(broken, list(range(12)))
    assert stop and reason is DynamicsStoppingReason.NON_FINITE_METRIC and "[3]" in message
    assert not RelativeChangeRule(check_finite=False).update(broken, list(range(12)))[0]


def test_epoch_means_and_window() -> None:
    x = torch.tensor([[1.0, 3.0, 5.0, 6.0, 8.0]])
    torch.testing.assert_close(RelativeChangeRule.epoch_means(x, [0, 0, 1, 1, 3]), torch.tensor([[2.0, 5.5, 8.0]]))
    rule = RelativeChangeRule(window_epochs=5)
    rule.update(torch.randn(3, 10 * 4), [i // 4 for i in range(40)])  # 10 epochs: fewer than 2 * 5 + 1
    assert math.isnan(rule.statistic) and rule.window == 5 and RelativeChangeRule().window_epochs == 8
    rule.update(torch.randn(3, 11 * 4), [i // 4 for i in range(44)])
    assert math.isfinite(rule.statistic)


def test_resume_gives_the_same_decisions() -> None:
    x = settling(40, noise=1e-3, seed=1)
    epochs = list(range(40))
    straight = RelativeChangeRule()
    stop = replay(straight, x, epochs)
    assert stop is not None
    first = RelativeChangeRule()
    for e in range(stop - 1):  # two checks before the stop
        assert not first.update(x[:, : e + 1], epochs[: e + 1])[0]
    state = first.state_dict()
    assert state["wait_count"] == 1
    second = RelativeChangeRule()
    second.load_state_dict(dict(state))
    assert second.update(x[:, :stop], epochs[:stop])[0] is False  # epoch stop - 1: the second passing check
    assert second.update(x[:, : stop + 1], epochs[: stop + 1])[0] is True
    assert RelativeChangeRule().update(x[:, : stop + 1], epochs[: stop + 1])[0] is False  # fresh: no patience


@pytest.mark.parametrize(
    ("state", "match"),
    [
        ({"wait_count": -1, "statistic": 0.1, "p_value": 0.1, "window": 5}, "`wait_count`"),
        ({"wait_count": 1.5, "statistic": 0.1, "p_value": 0.1, "window": 5}, "`wait_count`"),
        ({"wait_count": 1, "statistic": "x", "p_value": 0.1, "window": 5}, "`statistic`"),
        ({"wait_count": 1, "statistic": 0.1, "p_value": math.inf, "window": 5}, "`p_value`"),
        ({"wait_count": 1, "statistic": 0.1, "p_value": 0.1, "window": None}, "`window`"),
        ({"wait_count": 1, "statistic": 0.1}, "lacks"),
        ([1, 2], "must be a dict"),
    ],
)
def test_load_state_dict_checks_every_field(state: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RelativeChangeRule().load_state_dict(state)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ratio": "x"}, r"`ratio` must be a finite number, got 'x'"),
        ({"ratio": None}, "`ratio`"),
        ({"ratio": 1.5}, r"`ratio` must be a number in \(0, 1\), got 1.5"),
        ({"alpha": 0.0}, "`alpha`"),
        ({"alpha": 0.001}, "smallest p-value"),
        ({"patience": True}, "`patience` must be an integer >= 1, got True"),
        ({"patience": math.nan}, "`patience`"),
        ({"patience": math.inf}, "`patience`"),
        ({"min_epochs": None}, "`min_epochs` must be an integer >= 0, got None"),
        ({"stopping_threshold": math.inf}, "`stopping_threshold` must be a finite number, got inf"),
        ({"stopping_threshold": "x"}, "`stopping_threshold`"),
        ({"stopping_threshold": -1.0}, "`stopping_threshold` must be a finite number >= 0 or None"),
        ({"check_finite": math.nan}, "`check_finite` must be True or False, got nan"),
        ({"window_epochs": 1}, "`window_epochs`"),
        ({"n_permutations": 0}, "`n_permutations`"),
    ],
)
def test_invalid_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RelativeChangeRule(**kwargs)


def test_volatility_rule_validates_and_restores() -> None:
    with pytest.raises(ValueError, match="`patience`"):
        VolatilityDropRule(patience=True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`stopping_threshold`"):
        VolatilityDropRule(stopping_threshold=math.inf)
    with pytest.raises(ValueError, match="`peak`"):
        VolatilityDropRule().load_state_dict({"peak": math.nan, "wait_count": 0})
    rule = VolatilityDropRule()
    rule.load_state_dict({"peak": 0.4, "wait_count": 2})
    assert rule.state_dict() == {"peak": 0.4, "wait_count": 2}


def test_update_checks_its_input() -> None:
    with pytest.raises(ValueError, match=r"`x` must be a tensor shaped \[L, T\]"):
        RelativeChangeRule().update(torch.zeros(5), [0] * 5)
    with pytest.raises(ValueError, match="one epoch per sample point"):
        RelativeChangeRule().update(torch.zeros(2, 5), [0, 1])
