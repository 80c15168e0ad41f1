"""LayerFreezer, the framework-neutral core of layer freezing (no Lightning): the convergence tests against closed
forms and their random-walk null, the layer-to-parameter map, what freezing does to gradients and optimizers, the
plain-loop recipe, exact resume and validated state."""

from __future__ import annotations

import functools
import math
from typing import Any

import pytest
import torch
from torch import nn

from lightning_dynamics import DynamicsConfig, DynamicsTracker
from lightning_dynamics.decisions.freezing import (
    LayerFreezer,
    frozen_at_from_series,
    layer_change,
    prefix_parameter_groups,
    settled_layers,
    tied_parameter_names,
    variance_ratio,
)

# ---------------------------------------------------------------------- the convergence quantity


def test_layer_change_closed_forms() -> None:
    lag = 4
    # A ramp 0..1 over 16 points, then flat: the recent change is 0, relative to an excursion of ~1.
    ramp = torch.cat([torch.linspace(0.0, 1.0, 16, dtype=torch.float64), torch.ones(16, dtype=torch.float64)])
    assert layer_change(ramp[None], lag).item() == 0.0
    # A straight line over T = 40 points: the smoothed series is j + const, j = 0..36; the horizon starts at
    # min(T - 2 lag, floor(2T / 3)) = 26, so the recent movement is 36 - 26 = 10 of an excursion of 36.
    t = torch.arange(40, dtype=torch.float64)
    assert layer_change(t[None], lag).item() == pytest.approx(10 / 36)
    # Scale-aware, not scale-dependent: multiplying a layer by 1000 changes nothing.
    assert layer_change(1000 * t[None], lag).item() == pytest.approx(10 / 36)
    # A power-law drift sqrt(t) reads about 1 - sqrt(2/3) at every length (it never "settles").
    for length in (200, 2000):
        drift = torch.arange(length, dtype=torch.float64).sqrt()[None]
        assert layer_change(drift, lag).item() == pytest.approx(1 - (2 / 3) ** 0.5, abs=0.02)
    # Constant: never moved, does not move -> 0; too short -> NaN; a NaN at the end -> NaN.
    assert layer_change(torch.ones(1, 20), lag).item() == 0.0
    assert math.isnan(layer_change(torch.ones(1, 7), lag).item())
    with_nan = t.clone()
    with_nan[-1] = math.nan
    assert math.isnan(layer_change(with_nan[None], lag).item())


def test_variance_ratio_closed_forms(generator: torch.Generator) -> None:
    n = 48
    trend = torch.arange(n, dtype=torch.float64)[None]
    assert variance_ratio(trend, n).item() == pytest.approx((n**2 - 1) / 12)
    noise = torch.randn(4000, n, generator=generator, dtype=torch.float64)
    assert variance_ratio(noise, n).mean().item() == pytest.approx(0.5, abs=0.02)  # var / (2 var)
    walk = noise.cumsum(-1)
    assert variance_ratio(walk, n).mean().item() == pytest.approx((n + 1) / 6, rel=0.1)  # ~ n / 6
    assert variance_ratio(torch.ones(1, n), n).item() == 0.0
    assert math.isnan(variance_ratio(torch.ones(1, n - 1), n).item())


def _first_settled(x: torch.Tensor, patience: int, **kwargs: float) -> torch.Tensor:
    """Sample point at which each series would first be called converged (-1: never), replayed point by point."""
    streak = torch.zeros(x.shape[0], dtype=torch.long)
    first = torch.full((x.shape[0],), -1)
    for n in range(1, x.shape[-1] + 1):
        ok = settled_layers(x[:, :n], **kwargs)  # type: ignore[arg-type]
        streak = torch.where(ok, streak + 1, 0)
        first = torch.where((first < 0) & (streak >= patience), n, first)
    return first


def test_calibrated_on_random_walks_and_sees_relaxation(generator: torch.Generator) -> None:
    """The null that never settles (random walks, 400 points) is called converged in <= 5% of series with the
    defaults (0.8% in 500 series, docs/freezing.md); an exponential relaxation in noise always is, once relaxed."""
    n, length = 200, 300
    walks = torch.randn(n, length, generator=generator, dtype=torch.float64).cumsum(-1)
    fired = (_first_settled(walks, patience=4) >= 0).double().mean().item()
    assert fired <= 0.05  # the 5% the method allows a rule on never-converging runs (0.8% measured)
    t = torch.arange(length, dtype=torch.float64)
    relax = 5 * torch.exp(-t / 40) + 0.2 * torch.randn(20, length, generator=generator, dtype=torch.float64)
    first = _first_settled(relax, patience=4)
    assert bool((first > 60).all()) and bool((first < 250).all())  # not while it still moves; well before the end


# ---------------------------------------------------------------------- layers -> parameters


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))  # a root parameter: before every monitored layer
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)  # not monitored: goes with conv1
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x * self.scale)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.head(x.mean((2, 3)))


def test_prefix_parameter_groups_registration_order() -> None:
    groups = prefix_parameter_groups(Net(), ["conv1", "conv2", "head"])
    assert groups == [
        ["scale", "conv1.weight", "conv1.bias", "bn1.weight", "bn1.bias"],
        ["conv2.weight", "conv2.bias", "bn2.weight", "bn2.bias"],
        ["head.weight", "head.bias"],
    ]
    compiled_names = prefix_parameter_groups(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)), ["0", "1"])
    assert compiled_names == [["0.weight", "0.bias"], ["1.weight", "1.bias"]]
    with pytest.raises(ValueError, match="layer_names"):
        prefix_parameter_groups(Net(), [])


class TiedLM(nn.Module):
    """A token embedding reused by the output head (GPT-2, BERT's masked-language-model head, T5)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(11, 6)
        self.fc1 = nn.Linear(6, 6)
        self.fc2 = nn.Linear(6, 6)
        self.head = nn.Linear(6, 11, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.fc2(torch.tanh(self.fc1(self.emb(ids))))))


def test_a_tied_weight_belongs_to_the_last_layer_that_uses_it() -> None:
    model, layers = TiedLM(), ["emb", "fc1", "fc2", "head"]
    assert prefix_parameter_groups(model, layers) == [
        [],
        ["fc1.weight", "fc1.bias"],
        ["fc2.weight", "fc2.bias"],
        ["head.weight"],
    ]
    assert tied_parameter_names(model) == [["emb.weight", "head.weight"]]
    said: list[str] = []
    freezer = LayerFreezer(keep_trainable=1, info=said.append).attach(model, None, layer_names=layers)
    assert "emb.weight = head.weight" in said[0]
    freezer.freeze_prefix(1)  # the embedding: nothing of its own to freeze
    assert model.head.weight.requires_grad and model.emb.weight.requires_grad
    assert freezer.blocking() == [False, True, True, True]
    freezer.freeze_prefix(3)  # up to the head, which keeps training, and its (shared) weight with it
    assert not model.fc2.weight.requires_grad and model.head.weight.requires_grad
    assert freezer.frozen_parameter_names() == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]


# ---------------------------------------------------------------------- freezing acts on the model


def _attached(model: nn.Module, **kwargs: object) -> tuple[DynamicsTracker, LayerFreezer]:
    tracker = DynamicsTracker(layers=[nn.Conv2d, nn.Linear]).attach(model)
    return tracker, LayerFreezer(**kwargs).attach(model, tracker)  # type: ignore[arg-type]


@pytest.mark.parametrize("optimizer_name", ["sgd", "adamw"])
def test_frozen_layers_get_no_gradient_and_no_update(optimizer_name: str, generator: torch.Generator) -> None:
    torch.manual_seed(0)
    model = Net()
    tracker, freezer = _attached(model, freeze_norm_stats=True)
    head = [p for n, p in model.named_parameters() if n.startswith("head")]
    rest = [p for n, p in model.named_parameters() if not n.startswith("head")]
    groups = [{"params": rest, "lr": 0.1}, {"params": head, "lr": 0.01}]  # parameter groups
    optimizer = (
        torch.optim.SGD(groups, momentum=0.9, weight_decay=0.1)
        if optimizer_name == "sgd"
        else torch.optim.AdamW(groups, weight_decay=0.1)
    )
    x, y = torch.randn(8, 1, 6, 6, generator=generator), torch.randint(0, 3, (8,), generator=generator)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=False)  # zero tensors, not None: freezing must still stop the updates
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    for _ in range(3):
        train_step()  # momentum and Adam moments are non-zero now
    assert freezer.freeze_prefix(1, epoch=0, step=3) == ["conv1"]
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if n in freezer.frozen_parameter_names()}
    assert set(frozen) == {"scale", "conv1.weight", "conv1.bias", "bn1.weight", "bn1.bias"}
    running_mean = model.bn1.running_mean.clone()
    others = {n: p.detach().clone() for n, p in model.named_parameters() if n not in frozen}
    for _ in range(3):
        train_step()
        assert all(model.get_parameter(n).grad is None for n in frozen)
    for name, before in frozen.items():
        assert torch.equal(model.get_parameter(name), before), name
    assert torch.equal(model.bn1.running_mean, running_mean) and not model.bn1.training  # eval-mode statistics
    assert model.bn2.training
    assert all(not torch.equal(model.get_parameter(n), v) for n, v in others.items())  # the rest still trains
    tracker.detach()


@pytest.mark.slow
def test_compiled_model_freezes_with_one_recompilation(generator: torch.Generator) -> None:
    """torch.compile: the freezer on the compiled module (``_orig_mod`` names) stops gradients and updates of the
    prefix, holds its BatchNorm statistics, and the change of the trainable set costs one recompilation (dynamo
    guards on ``requires_grad``); training steps after it reuse the new graph."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    compiled = torch.compile(Net(), backend="aot_eager")
    tracker, freezer = _attached(compiled, freeze_norm_stats=True)
    assert tracker.layer_names == ["conv1", "conv2", "head"]
    optimizer = torch.optim.SGD(compiled.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(8, 1, 6, 6, generator=generator), torch.randint(0, 3, (8,), generator=generator)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(compiled(x), y).backward()
        optimizer.step()

    for _ in range(3):
        train_step()
    compiles_before = counters["stats"]["unique_graphs"]
    assert freezer.freeze_prefix(1, epoch=0, step=3) == ["conv1"]
    frozen = {n: p.detach().clone() for n, p in compiled.named_parameters() if n in freezer.frozen_parameter_names()}
    assert {n.replace("_orig_mod.", "") for n in frozen} == {
        "scale",
        "conv1.weight",
        "conv1.bias",
        "bn1.weight",
        "bn1.bias",
    }
    running_mean = compiled.get_submodule("_orig_mod.bn1").running_mean.clone()
    head_before = compiled.get_parameter("_orig_mod.head.weight").detach().clone()
    train_step()
    compiles_after_freeze = counters["stats"]["unique_graphs"]
    for _ in range(4):
        train_step()
    assert counters["stats"]["unique_graphs"] == compiles_after_freeze  # no recompilation per step
    assert compiles_before == 1  # the monitor's hooks trace once
    assert compiles_after_freeze == 2  # one recompilation for the new trainable set
    for name, before in frozen.items():
        assert compiled.get_parameter(name).grad is None and torch.equal(compiled.get_parameter(name), before), name
    assert torch.equal(compiled.get_submodule("_orig_mod.bn1").running_mean, running_mean)
    assert not torch.equal(compiled.get_parameter("_orig_mod.head.weight"), head_before)  # the head still trains
    tracker.detach()
    torch._dynamo.reset()


def test_user_frozen_parameters_are_respected_and_nothing_unfreezes() -> None:
    model = Net()
    model.conv2.weight.requires_grad_(False)  # the user's choice
    model.conv1.requires_grad_(False)
    model.scale.requires_grad_(False)
    model.bn1.requires_grad_(False)
    tracker, freezer = _attached(model, keep_trainable=1)
    assert freezer.blocking() == [False, True, True]  # conv1's group is all user-frozen: it never blocks
    freezer.freeze_prefix(2)
    assert freezer.frozen_parameter_names() == ["conv2.bias", "bn2.weight", "bn2.bias"]
    assert freezer.freeze_prefix(1) == []  # never shrinks
    assert not model.conv2.bias.requires_grad and model.head.weight.requires_grad
    freezer.detach()
    assert not model.conv2.bias.requires_grad  # detaching does not unfreeze
    tracker.detach()


def test_never_freezes_the_last_layers_and_waits_for_enough_points() -> None:
    model = Net()
    tracker, freezer = _attached(model, keep_trainable=1, window=8, lag=2, patience=1)
    flat = torch.ones(3, 40, dtype=torch.float64)
    assert freezer.decide(flat[:, :7]) == 0  # fewer than max(window, 2 lag) points
    assert freezer.decide(flat) == 2  # all settled: everything but the head
    with pytest.raises(ValueError, match=r"\[L, T\]"):
        freezer.decide(torch.ones(2, 40))
    tracker.detach()


# ---------------------------------------------------------------------- plain loop: the recipe, resume, the null


FAST = dict(window=16, lag=4, patience=2)
CHEAP = DynamicsConfig(compute_phase_integration=False)  # the freezer reads the history, not the measures


def _run(
    steps: int,
    walk: bool = False,
    resume_at: int | None = None,
    every: int = 1,
    **settings: Any,
) -> tuple[LayerFreezer, DynamicsTracker, nn.Module]:
    """The plain-loop recipe of docs/freezing.md on a 3-layer MLP (SGD, cosine learning rate to 0 over ``steps``),
    or random-walk weights; optionally checkpointed at a step and resumed in fresh objects."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(256, 8, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 2))
    with torch.no_grad():  # small initial weights: every layer's summary grows well above its minibatch noise,
        for layer in (model[0], model[2]):  # so there is a movement to settle from (a noise-only layer never freezes)
            layer.weight.mul_(0.2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    tracker = DynamicsTracker(layers=[nn.Linear], config=CHEAP).attach(model)
    freezer = LayerFreezer(**settings).attach(model, tracker)
    saved: dict | None = None
    step = 0
    while step < steps:
        batch = torch.randint(0, 256, (128,), generator=g)  # minibatch noise in the summaries, as in real training
        if walk:  # weights that never settle: a random walk, no training
            with torch.no_grad():
                model(x[batch])
                for p in model.parameters():
                    p.add_(0.02 * torch.randn(p.shape, generator=g))
        else:
            for group in optimizer.param_groups:
                group["lr"] = 0.05 * (1 + math.cos(math.pi * step / steps))
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
        step += 1
        if step % every == 0:
            tracker.sample(epoch=step // 8, step=step, compute=False)  # the freezer reads the history only
            freezer.step(epoch=step // 8, step=step)
        if resume_at is not None and step == resume_at and saved is None:
            saved = {
                "model": {k: v.clone() for k, v in model.state_dict().items()},
                "optimizer": optimizer.state_dict(),
                "tracker": tracker.state_dict(),
                "freezer": freezer.state_dict(),
                "rng": g.get_state(),
            }
            # A fresh process: new objects, state loaded, the same loop continues.
            model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 2))
            model.load_state_dict(saved["model"])
            tracker.detach()
            tracker = DynamicsTracker(layers=[nn.Linear], config=CHEAP)
            tracker.load_state_dict(saved["tracker"])
            tracker.attach(model)
            freezer = LayerFreezer(**settings)
            freezer.load_state_dict(saved["freezer"])
            freezer.attach(model, tracker)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
            optimizer.load_state_dict(saved["optimizer"])
            g.set_state(saved["rng"])
    tracker.detach()
    return freezer, tracker, model


@functools.cache
def _converging() -> tuple[LayerFreezer, DynamicsTracker, nn.Module]:
    """The reference converging run (shared by the tests that only read it)."""
    return _run(160, every=2, **FAST)


def test_plain_loop_recipe_freezes_a_converging_network_and_logs_it() -> None:
    freezer, tracker, model = _converging()
    assert freezer.n_frozen >= 1, freezer.streaks
    assert freezer.events[0].layers[0] == "0" and freezer.events[0].epoch > 0
    assert not model[0].weight.requires_grad and model[4].weight.requires_grad
    series = tracker.logged["dynamics/frozen_layers"]
    assert len(series) == tracker.n_samples and series[-1] == freezer.n_frozen
    first = frozen_at_from_series(series, 3)
    assert first[0] == freezer.events[0].sample and first[2] is None


@pytest.mark.slow
def test_decisions_resume_exactly() -> None:
    straight, _, model_a = _converging()
    assert straight.events, "the reference run must freeze something for the test to mean anything"
    # The state saved before the first freeze:
    resumed, _, model_b = _run(160, resume_at=straight.events[0].step - 5, every=2, **FAST)
    assert [vars(e) for e in resumed.events] == [vars(e) for e in straight.events]
    assert resumed.streaks == straight.streaks
    for (name, a), b in zip(model_a.named_parameters(), model_b.parameters(), strict=True):
        assert a.requires_grad == b.requires_grad, name
        torch.testing.assert_close(a, b)
    # The state saved after it: the prefix is frozen again at once.
    after, _, _ = _run(160, resume_at=straight.events[0].step + 3, every=2, **FAST)
    assert [vars(e) for e in after.events] == [vars(e) for e in straight.events]


def test_nothing_freezes_when_the_weights_random_walk() -> None:
    freezer, tracker, model = _run(300, walk=True)  # the default settings
    assert tracker.n_samples == 300 and freezer.n_frozen == 0 and freezer.events == []
    assert all(p.requires_grad for p in model.parameters())


def test_state_is_validated_by_field() -> None:
    freezer, _, _ = _run(20, **FAST)
    good = freezer.state_dict()
    fresh, _, _ = _run(1, **FAST)
    for field, value in [
        ("version", 99),
        ("layer_names", ["a", "b", "c"]),
        ("n_frozen", 7),
        ("streaks", [1, -1, 0]),
        ("checked_samples", -3),
        ("settings", {"lag": 2}),
        ("events", [{"nonsense": 1}]),
    ]:
        with pytest.raises(ValueError, match=f"`{field}`"):
            fresh.load_state_dict({**good, field: value})


@pytest.mark.parametrize(
    ("name", "value"),
    [("change_tol", 0.0), ("lag", 0), ("window", 2), ("patience", 0), ("keep_trainable", 0), ("min_samples", 0)],
)
def test_constructor_is_validated(name: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"`{name}`.*{value}"):
        LayerFreezer(**{name: value})  # type: ignore[arg-type]


# ---------------------------------------------------------------------- the dashboard panel


def test_freezing_panel_draws_when_each_layer_froze() -> None:
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from lightning_dynamics.report.freezing_panel import draw_freezing

    state = {
        "prefix": "dynamics",
        "layer_names": ["conv1", "conv2", "head"],
        "epochs": [0, 0, 1, 1, 2, 2],
        "logged": {"dynamics/frozen_layers": [math.nan, 0.0, 1.0, 1.0, 2.0, 2.0]},
    }
    ax = Figure().add_subplot()
    draw_freezing(ax, state)
    frozen_bars = [p for p in ax.patches if p.get_facecolor()[:3] != matplotlib.colors.to_rgb("0.88")]
    # On the dashboard's axis (the j-th of n points in epoch e at e + j/n): conv1 from the 3rd point (epoch 1.0),
    # conv2 from the 5th (epoch 2.0); the head never.
    assert sorted((round(p.get_x(), 6), round(p.get_y() + p.get_height() / 2)) for p in frozen_bars) == [
        (1.0, 0),
        (2.0, 1),
    ]
    empty = Figure().add_subplot()
    draw_freezing(empty, {"layer_names": ["a"], "logged": {}})
    assert "no layer freezing recorded" in [t.get_text() for t in empty.texts]


# ---------------------------------------------------------------------- the benchmark's smoke setting


@pytest.mark.slow
def test_benchmark_smoke_setting(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """benchmarks/freezing.py --quick end to end on the small CNN: every method trains, knobs are chosen on the
    tune seed, the summary table has a row per method, and the frozen depth is reflected in FLOPs."""
    benchmark = pytest.importorskip("benchmarks.freezing")
    pytest.importorskip("sklearn")
    monkeypatch.setattr(
        benchmark, "KNOBS", {"full": [0.0], "freezeout": [0.5, 0.9], "autofreeze": [50.0], "dynamics": [1.0]}
    )
    monkeypatch.setattr(benchmark.QUICK, "front", True)
    results = benchmark.main(["--quick", "--cases", "cnn", "--out", str(tmp_path)])
    runs = results["cnn"]["runs"]
    assert {r["method"] for r in runs} == {"full", "freezeout", "autofreeze", "dynamics"}
    assert {r["split"] for r in runs} == {"tune", "held_out"}
    held_freezeout = {r["knob"] for r in runs if r["split"] == "held_out" and r["method"] == "freezeout"}
    assert held_freezeout == {0.5, 0.9}  # the front: every knob on the held-out seeds too
    assert (tmp_path / "front.png").stat().st_size > 10_000
    assert 0.0 <= results["cnn"]["null_freeze_rate"]["1.0"] <= 1.0
    flops = results["cnn"]["flops_per_depth"]
    assert flops == sorted(flops, reverse=True) and flops[-1] < flops[0]  # freezing more saves backward FLOPs
    for run in runs:
        assert run["flops"] == sum(flops[d] for d in run["depth_per_step"])
        assert 0.0 <= run["test_acc"] <= 100.0
    freezeout = next(r for r in runs if r["method"] == "freezeout")
    assert freezeout["final_depth"] == results["cnn"]["units"] - 1  # the cubic schedule freezes all but the last
    table = (tmp_path / "summary.md").read_text()
    assert all(f"| {m} |" in table for m in ("full", "freezeout", "autofreeze", "dynamics"))
    assert (tmp_path / "runs.jsonl").read_text().count("\n") == len(runs)
    rebuilt = benchmark.results_from_journals([tmp_path / "runs.jsonl"])["cnn"]
    assert rebuilt["chosen"] == results["cnn"]["chosen"]
    for a, b in zip(benchmark.summarise(rebuilt), benchmark.summarise(results["cnn"]), strict=True):
        assert (a["method"], a["knob"]) == (b["method"], b["knob"])
        assert a["acc_diff"][0] == b["acc_diff"][0] and a["flops_saved_pct"][0] == b["flops_saved_pct"][0]


def test_benchmark_null_freeze_rate_orders_the_levels() -> None:
    """The benchmark's dynamics levels: the default (level 1) is calibrated on random walks at a run's length
    (<= 2% at 192 points, 24 epochs of 8 points), the faster-firing levels fire on more of them."""
    benchmark = pytest.importorskip("benchmarks.freezing")
    rates = [benchmark.null_freeze_rate(192, benchmark.DYNAMICS_LEVELS[k], n=300) for k in (1.0, 2.0, 3.0)]
    assert rates[0] <= 0.02
    assert rates[0] < rates[1] < rates[2]
