"""TwinTrajectory without Lightning: closed forms of linear maps (SGD, momentum), float32 with growing weights, the
duty cycle, the real run left untouched, divergence, resume, validation of arguments and of the saved state."""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from lightning_dynamics.decisions.lyapunov import PooledSlope, TwinTrajectory


def spectral_radius_log(a: tuple[float, ...], lr: float, momentum: float) -> float:
    """max_i log of the spectral radius of [[1 + m - lr a_i, -m], [1, 0]] (m = 0: ln|1 - lr a_i|)."""
    best = -math.inf
    for ai in a:
        roots = np.roots([1.0, -(1.0 + momentum - lr * ai), momentum]) if momentum else [1.0 - lr * ai]
        best = max(best, math.log(float(np.abs(roots).max())))
    return best


def quadratic_run(
    a: tuple[float, ...],
    lr: float,
    momentum: float,
    steps: int,
    dtype: torch.dtype = torch.float32,
    **twin_args: Any,
) -> tuple[TwinTrajectory, int]:
    """Loss 0.5 * sum_i a_i w_i^2 from w = 1, SGD; returns the twin and how often its closure ran."""
    coefficients = torch.tensor(a, dtype=dtype)
    w = nn.Parameter(torch.ones(len(a), dtype=dtype))
    optimizer = torch.optim.SGD([w], lr=lr, momentum=momentum)
    twin = TwinTrajectory(**twin_args).attach(nn.Module(), optimizer)
    calls = 0

    def loss() -> torch.Tensor:
        return 0.5 * (coefficients * w.square()).sum()

    def shadow_loss() -> torch.Tensor:
        nonlocal calls
        calls += 1
        return loss()

    for _ in range(steps):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
        twin.step(shadow_loss)
    return twin, calls


# -- closed forms ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "lr", "steps"),
    [
        ((1.0,), 0.1, 30),  # ln 0.9, contracting
        ((0.5, 1.0, 2.0, 30.0), 0.1, 30),  # ln 2: the a = 30 direction overshoots and grows (the old code: -0.062)
        ((0.5, 1.0, 2.0, 30.0), 0.1, 100),  # weights reach 1e30 in float32
        ((1.0,), 2.5, 100),  # ln 1.5 (the old code drifted upwards from 0.438)
        ((0.5, 1.0, 2.0), 1.25, 50),  # ln 1.5 from a = 2, beside a contracting (0.375) and a flipping (-0.25) one
    ],
)
def test_sgd_on_a_quadratic_gives_the_largest_log_multiplier(a: tuple[float, ...], lr: float, steps: int) -> None:
    twin, _ = quadratic_run(a, lr, 0.0, steps)
    expected = spectral_radius_log(a, lr, 0.0)
    assert twin.exponent == pytest.approx(expected, rel=0.05), (twin.exponent, expected)
    assert twin.restarts == 1 and all(math.isfinite(g) for g in twin.log_growth)


@pytest.mark.parametrize(
    ("a", "lr", "momentum", "steps"),
    [
        ((1.0,), 0.1, 0.9, 30),  # complex pair: ln sqrt(0.9); the old code gave -0.061
        ((1.0, 1.0, 1.0), 0.1, 0.9, 100),
        ((0.5, 1.0, 2.0), 0.25, 0.9, 30),
        ((1.0,), 1.0, 0.5, 30),  # 1 - lr a = 0: the weights' separation vanishes every step, the momentum's does not
        ((2.0,), 1.2, 0.5, 60),  # growing with momentum: roots of z^2 + 0.9 z + 0.5
    ],
)
def test_momentum_gives_the_log_spectral_radius(a: tuple[float, ...], lr: float, momentum: float, steps: int) -> None:
    twin, _ = quadratic_run(a, lr, momentum, steps)
    expected = spectral_radius_log(a, lr, momentum)
    assert twin.exponent == pytest.approx(expected, rel=0.05), (twin.exponent, expected)
    assert "momentum_buffer" in twin.kappa  # the optimizer state is part of the measured separation


def test_renormalising_every_k_steps_in_float64() -> None:
    twin, _ = quadratic_run((0.5, 1.0, 2.0, 30.0), 0.1, 0.0, 60, dtype=torch.float64, renorm_every=4)
    assert twin.steps == 60 and len(twin.log_growth) == 15
    assert twin.exponent == pytest.approx(math.log(2.0), rel=0.02)


def test_separation_is_d0_relative_to_the_current_scale() -> None:
    # After 30 steps the weights are ~1e9 in float32, where a separation fixed at the start (1e-3) is below one ulp.
    twin, _ = quadratic_run((0.5, 1.0, 2.0, 30.0), 0.1, 0.0, 30)
    assert twin.optimizer is not None
    (w,) = twin._params()
    assert float(w.detach().abs().max()) > 1e8
    relative = float((twin.shadow_params[0] - w.detach()).norm() / w.detach().norm())
    assert relative == pytest.approx(twin.d0, rel=1e-3)


def test_slope_estimate_beats_the_plain_mean_with_a_rotating_separation() -> None:
    # Momentum with complex eigenvalues: G(t) = lambda t + c + a bounded oscillation; the plain mean G(t)/t keeps
    # c / t, the slope does not.
    twin, _ = quadratic_run((1.0,), 0.1, 0.9, 30)
    expected = math.log(math.sqrt(0.9))
    assert abs(twin.exponent - expected) < abs(twin.mean_exponent - expected)


# -- the duty cycle -----------------------------------------------------------------------------------------


def test_duty_cycle_runs_the_twin_on_its_windows_only() -> None:
    twin, calls = quadratic_run((1.0,), 2.5, 0.0, 100, duty_on=5, duty_period=20)
    assert calls == 25 and twin.steps == 25 and twin.real_steps == 100
    assert twin.exponent == pytest.approx(math.log(1.5), rel=1e-3)
    assert len(twin.log_growth) == 25
    twin, calls = quadratic_run((0.5, 1.0, 2.0, 30.0), 0.1, 0.0, 100, duty_on=10, duty_period=20)
    assert calls == 50
    assert twin.exponent == pytest.approx(math.log(2.0), rel=0.05)


def test_a_window_starts_along_the_separation_the_last_one_ended_with() -> None:
    twin, _ = quadratic_run((0.5, 1.0, 2.0), 0.1, 0.5, 10, dtype=torch.float64, duty_on=10, duty_period=20)
    assert not twin.running and twin.direction is not None
    stored = torch.cat([twin.direction["params"][0], twin.direction["state"][0]["momentum_buffer"]])
    twin.start_window()
    assert twin.optimizer is not None
    (w,) = twin._params()
    buffer = twin.optimizer.state[w]["momentum_buffer"]
    now = torch.cat([twin.shadow_params[0] - w, twin.shadow_state[0]["momentum_buffer"] - buffer])
    assert float(torch.nn.functional.cosine_similarity(now, stored, dim=0)) == pytest.approx(1.0, abs=1e-9)
    assert twin.restarts == 1  # no new random direction


def test_warmup_leaves_the_first_steps_of_each_window_out_of_the_slope() -> None:
    a = (0.5, 1.0, 2.0, 30.0)
    plain, _ = quadratic_run(a, 0.1, 0.0, 40)
    warm, _ = quadratic_run(a, 0.1, 0.0, 40, warmup=10)
    assert warm.log_growth == plain.log_growth  # the same run; only the fit differs
    cumulative = np.concatenate([[0.0], np.cumsum(plain.log_growth)])
    steps = np.arange(41)
    assert warm.exponent == pytest.approx(np.polyfit(steps[10:], cumulative[10:], 1)[0], rel=1e-9)
    assert abs(warm.exponent - math.log(2.0)) < abs(plain.exponent - math.log(2.0))
    # In every duty window: windows of 8 steps from steps 0 and 16, the first 3 of each left out.
    duty, _ = quadratic_run(a, 0.1, 0.0, 24, dtype=torch.float64, duty_on=8, duty_period=16, warmup=3)
    first = np.concatenate([[0.0], np.cumsum(duty.log_growth[:8])])[3:]
    second = np.concatenate([[0.0], np.cumsum(duty.log_growth[8:])])[3:]
    fit = PooledSlope()
    for window in (first, second):
        for t, g in zip(range(3, 9), window, strict=True):
            fit.add(float(t), float(g))
        fit.close()
    assert duty.exponent == pytest.approx(fit.slope, rel=1e-12)


# -- the real run, divergence, optimizers -------------------------------------------------------------------


def _mlp_run(optimizer_name: str, twin: bool, steps: int = 12) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.BatchNorm1d(8), nn.Linear(8, 3))
    if optimizer_name == "adamw":
        optimizer: torch.optim.Optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    shadow = TwinTrajectory(renorm_every=2).attach(model, optimizer) if twin else None
    x, y = torch.randn(steps, 16, 6), torch.randint(0, 3, (steps, 16))
    for i in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x[i]), y[i]).backward()
        optimizer.step()
        if shadow is not None:
            shadow.step(lambda i=i: nn.functional.cross_entropy(model(x[i]), y[i]))  # type: ignore[misc]
            assert math.isfinite(shadow.exponent) or i == 0
    return model, optimizer


@pytest.mark.parametrize("optimizer_name", ["sgd", "adamw"])
def test_the_real_run_is_left_untouched(optimizer_name: str) -> None:
    plain, plain_opt = _mlp_run(optimizer_name, twin=False)
    watched, watched_opt = _mlp_run(optimizer_name, twin=True)
    for p, q in zip(plain.state_dict().values(), watched.state_dict().values(), strict=True):
        assert torch.equal(p, q)  # weights and BatchNorm buffers
    for p, q in zip(plain.parameters(), watched.parameters(), strict=True):
        for key, value in plain_opt.state[p].items():
            assert torch.equal(value, watched_opt.state[q][key])


def test_adam_moments_are_part_of_the_state_and_the_second_stays_non_negative() -> None:
    torch.manual_seed(0)
    a = torch.linspace(0.1, 10.0, 20)
    w = nn.Parameter(torch.randn(20))
    optimizer = torch.optim.AdamW([w], lr=0.01)
    twin = TwinTrajectory(d0=0.5).attach(nn.Module(), optimizer)  # a large d0 puts the renormalisation to work
    for _ in range(40):
        optimizer.zero_grad()
        (0.5 * (a * w.square()).sum()).backward()
        optimizer.step()
        twin.step(lambda: 0.5 * (a * w.square()).sum())
        assert bool((twin.shadow_state[0]["exp_avg_sq"] >= 0).all())
    assert set(twin.kappa) == {"exp_avg", "exp_avg_sq"}
    assert math.isfinite(twin.exponent)


def test_a_diverged_shadow_restarts_and_its_interval_is_left_out() -> None:
    w = nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([w], lr=0.1)
    twin = TwinTrajectory().attach(nn.Module(), optimizer)
    calls = 0

    def shadow_loss() -> torch.Tensor:
        nonlocal calls
        calls += 1
        scale = math.nan if calls == 5 else 1.0
        return 0.5 * scale * w.square().sum()

    for _ in range(10):
        optimizer.zero_grad()
        (0.5 * w.square().sum()).backward()
        optimizer.step()
        twin.step(shadow_loss)
    assert math.isnan(twin.log_growth[4]) and twin.restarts == 2
    assert twin.steps == 9
    assert twin.exponent == pytest.approx(math.log(0.9), rel=1e-3)


# -- resume ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("stop", "duty"), [(13, (None, None)), (13, (6, 10)), (17, (6, 10))])
def test_resume_equals_uninterrupted(stop: int, duty: tuple[int | None, int | None]) -> None:
    a = torch.tensor([0.5, 1.0, 2.0])

    def make() -> tuple[nn.Parameter, torch.optim.Optimizer]:
        w = nn.Parameter(torch.ones(3, dtype=torch.float64))
        return w, torch.optim.SGD([w], lr=0.3, momentum=0.5)

    def train(w: nn.Parameter, optimizer: torch.optim.Optimizer, twin: TwinTrajectory, steps: int) -> None:
        for _ in range(steps):
            optimizer.zero_grad()
            (0.5 * (a * w.square()).sum()).backward()
            optimizer.step()
            twin.step(lambda: 0.5 * (a * w.square()).sum())

    args = dict(renorm_every=2, duty_on=duty[0], duty_period=duty[1])
    w, optimizer = make()
    full = TwinTrajectory(**args).attach(nn.Module(), optimizer)  # type: ignore[arg-type]
    train(w, optimizer, full, 30)

    w, optimizer = make()
    first = TwinTrajectory(**args).attach(nn.Module(), optimizer)  # type: ignore[arg-type]
    train(w, optimizer, first, stop)
    saved = copy.deepcopy((first.state_dict(), w.detach().clone(), optimizer.state_dict()))
    w2, optimizer2 = make()
    with torch.no_grad():
        w2.copy_(saved[1])
    optimizer2.load_state_dict(saved[2])
    second = TwinTrajectory(**args)  # type: ignore[arg-type]
    second.load_state_dict(saved[0])
    second.attach(nn.Module(), optimizer2)
    train(w2, optimizer2, second, 30 - stop)
    assert second.log_growth == pytest.approx(full.log_growth, rel=1e-12, abs=1e-15)
    assert second.exponent == pytest.approx(full.exponent, rel=1e-12)
    assert (second.steps, second.pending, second.real_steps) == (full.steps, full.pending, full.real_steps)


# -- validation -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"seed": 1.5}, r"`seed` must be an integer >= 0, got 1.5"),
        ({"seed": -1}, r"`seed` must be an integer >= 0, got -1"),
        ({"seed": math.nan}, r"`seed` must be an integer >= 0, got nan"),
        ({"seed": True}, r"`seed` must be an integer >= 0, got True"),
        ({"seed": 2**64}, r"`seed` must be an integer in \[0, 2\*\*63 - 1\]"),
        ({"d0": 0.0}, r"`d0` must be a finite number > 0, got 0.0"),
        ({"d0": 1.0}, r"`d0` must be a relative distance in \(0, 1\), got 1.0"),
        ({"d0": math.inf}, r"`d0` must be a finite number > 0, got inf"),
        ({"d0": "1e-4"}, r"`d0` must be a finite number > 0, got '1e-4'"),
        ({"renorm_every": 0}, r"`renorm_every` must be an integer >= 1, got 0"),
        ({"renorm_every": 2.0}, r"`renorm_every` must be an integer >= 1, got 2.0"),
        ({"sync_gradients": "yes"}, r"`sync_gradients` must be True or False, got 'yes'"),
        ({"duty_on": 2}, r"`duty_on` and `duty_period` must be given together"),
        ({"duty_on": 0, "duty_period": 4}, r"`duty_on` must be an integer >= 1, got 0"),
        ({"duty_on": 5, "duty_period": 4}, r"`duty_on` must be <= `duty_period`"),
        ({"duty_on": 1, "duty_period": 2.5}, r"`duty_period` must be an integer >= 1, got 2.5"),
        ({"warmup": -1}, r"`warmup` must be an integer >= 0, got -1"),
        ({"warmup": 1.5}, r"`warmup` must be an integer >= 0, got 1.5"),
        ({"warmup": 4, "duty_on": 4, "duty_period": 8}, r"`warmup` must be < `duty_on`"),
    ],
)
def test_arguments_are_validated(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TwinTrajectory(**kwargs)


def _saved_state(steps: int = 7, **twin_args: Any) -> dict[str, Any]:
    twin, _ = quadratic_run((0.5, 1.0, 2.0), 0.1, 0.9, steps, renorm_every=3, **twin_args)
    return twin.state_dict()


def _corrupt(state: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    state = copy.deepcopy(state)
    *parents, last = path.split(".")
    target = state
    for name in parents:
        target = target[name]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value
    return state


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("running", KeyError, "running"),
        ("running", 1, "running"),
        ("seed", 3, "seed"),
        ("d0", 1e-4, "d0"),
        ("renorm_every", 1, "renorm_every"),
        ("duty_period", 4, "duty_period"),
        ("warmup", 2, "warmup"),
        ("pending", 3, "pending"),
        ("pending", -1, "pending"),
        ("steps", 100, "steps"),
        ("real_steps", "7", "real_steps"),
        ("sum_log_growth", math.inf, "sum_log_growth"),
        ("window_log_growth", None, "window_log_growth"),
        ("separation0", math.nan, "separation0"),
        ("separation0", -1.0, "separation0"),
        ("log_growth", "x", "log_growth"),
        ("log_growth", [0.1, "x"], "log_growth"),
        ("kappa", {"momentum_buffer": -1.0}, "kappa"),
        ("kappa", [1.0], "kappa"),
        ("shadow_params", [torch.ones(3, dtype=torch.long)], "shadow_params"),
        ("shadow_params", [], "shadow_params"),
        ("shadow_params", [torch.full((3,), math.nan)], "shadow_params"),
        ("shadow_state", [{}, {}], "shadow_state"),
        ("shadow_state", "x", "shadow_state"),
        ("direction", {"params": []}, "direction"),
        ("fit", KeyError, "fit"),
        ("fit.n", -1, "fit.n"),
        ("fit.sxx", -2.0, "fit.sxx"),
        ("fit_since_mark.sxy", "x", "fit_since_mark.sxy"),
    ],
)
def test_corrupt_state_is_refused_at_load_naming_the_field(path: str, value: Any, field: str) -> None:
    state = _corrupt(_saved_state(), path, value)
    twin = TwinTrajectory(renorm_every=3)
    before = copy.deepcopy(twin.state_dict())
    with pytest.raises(ValueError, match=rf"`{field}`"):
        twin.load_state_dict(state)
    after = twin.state_dict()
    assert after.keys() == before.keys() and after["steps"] == before["steps"] == 0  # nothing applied


def test_state_between_windows_and_wrong_shapes() -> None:
    state = _saved_state(steps=9, duty_on=3, duty_period=5)  # after 9 steps: between windows, holding a direction
    assert state["running"] is False and state["direction"] is not None
    twin = TwinTrajectory(renorm_every=3, duty_on=3, duty_period=5)
    twin.load_state_dict(state)
    for path, value, field in [
        ("direction.params", [torch.ones(3, dtype=torch.long)], "direction.params"),
        ("direction.state", [{}, {}], "direction.state"),
        ("direction.buffers", ["x"], "direction.buffers"),
        ("shadow_params", [torch.ones(3)], "shadow_params"),
        ("separation0", 1.0, "separation0"),
        ("pending", 1, "pending"),
    ]:
        with pytest.raises(ValueError, match=rf"`{field}`"):
            TwinTrajectory(renorm_every=3, duty_on=3, duty_period=5).load_state_dict(_corrupt(state, path, value))
    w = nn.Parameter(torch.ones(4))
    with pytest.raises(ValueError, match="shapes"):
        twin.attach(nn.Module(), torch.optim.SGD([w], lr=0.1))


# -- the pooled slope -----------------------------------------------------------------------------------------


def test_pooled_slope_matches_least_squares_with_one_intercept_per_segment() -> None:
    rng = np.random.default_rng(0)
    fit = PooledSlope()
    rows, ys = [], []
    for segment, length in enumerate((7, 1, 12, 5)):
        xs = np.cumsum(rng.integers(1, 4, size=length)).astype(float)
        for x in xs:
            y = 0.3 * x + 5.0 * segment + rng.normal()
            fit.add(float(x), float(y))
            dummies = [1.0 if s == segment else 0.0 for s in range(4)]
            rows.append([x, *dummies])
            ys.append(y)
        fit.close()
    coefficients = np.linalg.lstsq(np.array(rows), np.array(ys), rcond=None)[0]
    assert fit.slope == pytest.approx(coefficients[0], rel=1e-10)
    restored = PooledSlope()
    restored.load_state_dict(fit.state_dict(), "fit")
    assert restored.slope == fit.slope
    assert math.isnan(PooledSlope().slope)


# -- dense spectra and the dtype's resolution ---------------------------------------------------------------

DENSE = tuple(torch.logspace(-1, 0, 20).tolist())  # 20 modes, multipliers 0.99 .. 0.9 under lr 0.1: gap 1.3e-3


def test_a_dense_spectrum_is_underestimated_until_about_one_over_the_gap_steps() -> None:
    # With close multipliers a random start turns towards the leading mode only as the second one dies out
    # relative to it (about 1 / gap = 770 steps here): meanwhile the estimate is a weighted mean of all the modes'
    # exponents, below the truth (a lower bound), and a warm-up of half the steps brings it closer
    # (benchmarks/lyapunov.md, "Dense spectra").
    expected = spectral_radius_log(DENSE, 0.1, 0.0)
    early, _ = quadratic_run(DENSE, 0.1, 0.0, 300)
    warmed, _ = quadratic_run(DENSE, 0.1, 0.0, 300, warmup=150)
    assert early.exponent < expected and warmed.exponent < expected + 1e-6 * abs(expected)
    assert abs(warmed.exponent - expected) < abs(early.exponent - expected)
    assert (expected - early.exponent) / abs(expected) > 0.05  # not yet within 5% after 300 steps


@pytest.mark.slow
def test_a_dense_spectrum_is_within_10_percent_after_about_one_point_three_over_the_gap_steps() -> None:
    expected = spectral_radius_log(DENSE, 0.1, 0.0)
    for seed in range(3):
        twin, _ = quadratic_run(DENSE, 0.1, 0.0, 1000, seed=seed, warmup=500)
        assert twin.exponent == pytest.approx(expected, rel=0.10), (seed, twin.exponent, expected)


def test_d0_below_the_resolution_of_the_parameters_dtype_is_refused() -> None:
    w = nn.Parameter(torch.ones(3, dtype=torch.bfloat16))
    optimizer = torch.optim.SGD([w], lr=0.1)
    with pytest.raises(ValueError, match=r"`d0` must be >= 0.0078.*bfloat16.*got 0.001"):
        TwinTrajectory(d0=1e-3).attach(nn.Module(), optimizer)
    TwinTrajectory(d0=1e-2).attach(nn.Module(), optimizer)  # above bfloat16's resolution


@pytest.mark.parametrize(("d0", "warns"), [(1e-3, True), (1e-2, False)])
def test_d0_below_the_autocast_dtype_resolution_warns_once(d0: float, warns: bool) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(16, 4)

    def loss() -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
        return out.float().square().mean()

    twin = TwinTrajectory(d0=d0).attach(model, optimizer)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            optimizer.zero_grad()
            loss().backward()
            optimizer.step()
            twin.step(loss)
    messages = [str(w.message) for w in caught if "resolution of torch.bfloat16" in str(w.message)]
    assert len(messages) == (1 if warns else 0), messages
