"""Per-layer statistics (dead and saturated units, gradient norms, update-to-weight ratios) against references
computed from the full activations, gradients and weights."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lightning_dynamics import DynamicsConfig, DynamicsTracker
from lightning_dynamics.capture.layer_stats import LayerStatistics, select_activation_layers
from lightning_dynamics.capture.summaries import UnitStatsAccumulator

CPU = torch.device("cpu")
FAST = DynamicsConfig(null_surrogates=None, compute_phase_integration=False)


def _dead_reference(outputs: list[torch.Tensor], unit_dim: int) -> float:
    """Fraction of units whose every value in every output is zero."""
    moved = torch.cat([o.movedim(unit_dim, -1).reshape(-1, o.shape[unit_dim]) for o in outputs])
    return float((moved == 0).all(dim=0).double().mean())


def _saturated_reference(outputs: list[torch.Tensor], unit_dim: int, lo: float, hi: float, tol: float) -> float:
    moved = torch.cat([o.movedim(unit_dim, -1).reshape(-1, o.shape[unit_dim]) for o in outputs])
    near = (moved <= lo + tol * (hi - lo)) | (moved >= hi - tol * (hi - lo))
    return float(near.double().mean())  # every unit sees as many values: the mean of their shares


@pytest.mark.parametrize(("shape", "unit_dim"), [((6, 5, 4, 3), 1), ((6, 7, 9), -1), ((10, 12), -1), ((4, 3, 2), 1)])
def test_dead_fraction_matches_the_full_activations(shape: tuple[int, ...], unit_dim: int) -> None:
    g = torch.Generator().manual_seed(0)
    units = shape[unit_dim]
    dead = torch.rand(units, generator=g) < 0.4
    view = [1] * len(shape)
    view[unit_dim] = units
    outputs = []
    for _ in range(3):
        a = torch.relu(torch.randn(shape, generator=g))
        a = a.masked_fill(dead.view(view), 0.0)
        outputs.append(a)
    # a unit that is zero in two outputs but not in the third is alive
    outputs[2] = outputs[2] + 0.0
    acc = UnitStatsAccumulator(["dead"], [None], CPU)
    for a in outputs:
        acc.add(0, a, unit_dim)
    got = float(acc.fractions(acc.packed())[0])
    assert got == pytest.approx(_dead_reference(outputs, unit_dim), abs=1e-12)
    assert got == pytest.approx(float(dead.double().mean()), abs=1e-12)


@pytest.mark.parametrize(("lo", "hi", "squash"), [(-1.0, 1.0, torch.tanh), (0.0, 1.0, torch.sigmoid)])
def test_saturated_fraction_matches_the_full_activations(lo: float, hi: float, squash) -> None:
    g = torch.Generator().manual_seed(1)
    sign = torch.where(torch.rand(16, generator=g) < 0.5, 1.0, -1.0)
    offset = torch.where(torch.rand(16, generator=g) < 0.5, 12.0, 0.0) * sign  # about half the units in the bounds
    outputs = [squash(torch.randn(32, 16, generator=g) + offset) for _ in range(4)]
    acc = UnitStatsAccumulator(["saturated"], [(lo, hi)], CPU)
    for a in outputs:
        acc.add(0, a, -1)
    got = float(acc.fractions(acc.packed())[0])
    assert got == pytest.approx(_saturated_reference(outputs, -1, lo, hi, 0.01), abs=1e-12)
    assert 0.2 < got < 0.8  # the test data does have both kinds of unit


def test_counts_reduce_across_processes_as_one_process() -> None:
    """Two ranks' packed counts, summed (an all-reduce), give the fractions of one process that saw everything."""
    g = torch.Generator().manual_seed(2)
    outputs = [torch.relu(torch.randn(8, 6, generator=g) - 1.5) for _ in range(4)]
    ranks = [UnitStatsAccumulator(["dead"], [None], CPU) for _ in range(2)]
    whole = UnitStatsAccumulator(["dead"], [None], CPU)
    for i, a in enumerate(outputs):
        ranks[i % 2].add(0, a, -1)
        whole.add(0, a, -1)
    summed = ranks[0].packed() + ranks[1].packed()
    assert torch.equal(ranks[0].fractions(summed), whole.fractions(whole.packed()))


def test_a_layer_whose_width_changes_is_left_out_and_an_empty_one_is_nan() -> None:
    acc = UnitStatsAccumulator(["dead", "dead"], [None, None], CPU)
    acc.add(0, torch.ones(2, 3), -1)
    acc.add(0, torch.ones(2, 4), -1)
    assert torch.isnan(acc.fractions(acc.packed())).all()


def test_activation_layers_and_their_unit_dims() -> None:
    net = nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 5), nn.ReLU6(), nn.Linear(5, 5), nn.Sigmoid()
    )
    chosen = select_activation_layers(net)
    assert [(n, k, b, d) for n, _, k, b, d in chosen] == [
        ("1", "dead", None, 1),
        ("4", "dead", None, -1),
        ("6", "saturated", (0.0, 1.0), -1),
    ]


def _layer_reference(modules: list[nn.Module], tensors: list[list[torch.Tensor]]) -> list[float]:
    return [math.sqrt(sum(float(t.double().pow(2).sum()) for t in ts)) if ts else math.nan for ts in tensors]


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_gradient_norm_and_update_ratio_match_the_parameters(optimizer: str) -> None:
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3))
    layers = [(n, m) for n, m in net.named_children() if isinstance(m, nn.Linear)]
    stats = LayerStatistics()
    stats.attach(net, layers, CPU, gate=lambda: True)
    opt = (
        torch.optim.SGD(net.parameters(), lr=0.3, momentum=0.9)
        if optimizer == "sgd"
        else torch.optim.AdamW(net.parameters(), lr=0.01, weight_decay=0.1)
    )
    for _ in range(2):  # a second step so that momentum / Adam moments are not at their start
        opt.zero_grad()
        nn.functional.cross_entropy(net(torch.randn(16, 6)), torch.randint(0, 3, (16,))).backward()
        grads = [[p.grad.clone() for p in m.parameters()] for _, m in layers]
        before = [[p.detach().clone() for p in m.parameters()] for _, m in layers]
        stats.before_optimizer_step()
        opt.step()
        stats.after_optimizer_step()
        stats.close(stats.packed())  # a point: the next step's gradients are read again
    after = [[p.detach() for p in m.parameters()] for _, m in layers]
    last = stats.last()
    expected_grad = _layer_reference([], grads)
    expected_weight = _layer_reference([], before)
    moved = _layer_reference(
        [], [[a - b for a, b in zip(x, y, strict=True)] for x, y in zip(after, before, strict=True)]
    )
    assert last["grad_norm"] == pytest.approx(expected_grad, rel=1e-5)
    assert last["weight_norm"] == pytest.approx(expected_weight, rel=1e-5)
    assert last["update_ratio"] == pytest.approx([m / w for m, w in zip(moved, expected_weight, strict=True)], rel=1e-4)


def test_gradients_are_read_once_per_sample_interval() -> None:
    torch.manual_seed(4)
    net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    stats = LayerStatistics()
    stats.attach(net, list(net.named_children()), CPU, gate=lambda: True)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    first = None
    for step in range(3):
        opt.zero_grad()
        net(torch.randn(5, 4)).pow(2).sum().backward()
        if step == 0:
            first = [
                float(torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in m.parameters()]))) for m in net
            ]
        stats.before_optimizer_step()
        opt.step()
        stats.after_optimizer_step()
    stats.close(stats.packed())
    assert stats.last()["grad_norm"] == pytest.approx(first, rel=1e-5)


def test_a_layer_without_gradient_reads_nan_and_its_weights_do_not_move() -> None:
    net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    net[0].requires_grad_(False)
    stats = LayerStatistics()
    stats.attach(net, list(net.named_children()), CPU, gate=lambda: True)
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    net(torch.randn(5, 4)).pow(2).sum().backward()
    stats.before_optimizer_step()
    opt.step()
    stats.after_optimizer_step()
    stats.close(stats.packed())
    last = stats.last()
    assert math.isnan(last["grad_norm"][0]) and last["update_ratio"][0] == 0.0
    assert last["grad_norm"][1] > 0 and last["update_ratio"][1] > 0


class _Recorder:
    """Full outputs of the activation modules of training forwards, per sample interval (the reference)."""

    def __init__(self, modules: list[nn.Module]) -> None:
        self.current: list[list[torch.Tensor]] = [[] for _ in modules]
        self.intervals: list[list[list[torch.Tensor]]] = []
        for i, module in enumerate(modules):
            module.register_forward_hook(lambda m, a, out, i=i: self.current[i].append(out.detach().clone()))

    def close(self) -> None:
        self.intervals.append(self.current)
        self.current = [[] for _ in self.current]


def test_tracker_series_match_the_full_activations_of_each_interval() -> None:
    torch.manual_seed(5)
    net = nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 16, 10), nn.Tanh(), nn.Linear(10, 3)
    )
    with torch.no_grad():
        net[0].bias[:3] = -50.0  # three dead channels
        net[3].bias[:4] = 30.0  # four saturated features
    recorder = _Recorder([net[1], net[4]])
    tracker = DynamicsTracker(layer_stats=True, verbose=False, save_history=False, config=FAST).begin_fit(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    step = 0
    for epoch in range(2):
        tracker.epoch_start(epoch, step, n_batches=6)
        for batch in range(6):
            loss = nn.functional.cross_entropy(net(torch.randn(8, 1, 4, 4)), torch.randint(0, 3, (8,)))
            opt.zero_grad()
            loss.backward()
            tracker.before_optimizer_step()
            opt.step()
            step += 1
            before = tracker.n_samples
            tracker.batch_end(epoch, step, batch)
            if tracker.n_samples > before:
                recorder.close()
        tracker.epoch_end(epoch, step)
        recorder.close()
    net.eval()
    with torch.no_grad():
        net(torch.randn(2, 1, 4, 4))  # eval forwards are not recorded by either
    series = tracker.history_state()["layer_stats"]
    assert series["dead_frac"]["layers"] == ["1", "4"]
    dead = series["dead_frac"]["values"][0].tolist()
    saturated = series["saturated_frac"]["values"][1].tolist()
    assert len(dead) == len(recorder.intervals) == tracker.n_samples == 12
    assert dead == pytest.approx([_dead_reference(iv[0], 1) for iv in recorder.intervals], abs=1e-6)
    assert saturated == pytest.approx(
        [_saturated_reference(iv[1], -1, -1.0, 1.0, 0.01) for iv in recorder.intervals], abs=1e-6
    )
    assert min(dead) >= 0.5 and min(saturated) >= 0.4
    assert all(math.isnan(v) for v in series["dead_frac"]["values"][1].tolist())  # tanh: no dead units


def test_tracker_state_resumes_the_series_exactly() -> None:
    torch.manual_seed(6)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    tracker = DynamicsTracker(
        layer_stats=True, verbose=False, save_history=False, layers=["0", "2"], config=FAST
    ).begin_fit(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for step in range(1, 4):
        net(torch.randn(4, 4)).sum().backward()
        tracker.before_optimizer_step()
        opt.step()
        tracker.batch_end(0, step)
        tracker.sample(0, step, compute=False)
    net(torch.randn(4, 4))  # an open interval: its counts go into the state too
    state = tracker.state_dict()
    resumed = DynamicsTracker(layer_stats=True, verbose=False, save_history=False, layers=["0", "2"], config=FAST)
    resumed.load_state_dict(state)
    resumed.attach(net)
    assert resumed.statistics.series() == tracker.statistics.series()
    assert torch.equal(resumed.statistics.packed(), tracker.statistics.packed())
    bad = dict(state, layer_stats=dict(state["layer_stats"], layer_names=["x"]))
    with pytest.raises(ValueError, match="layer_stats"):
        DynamicsTracker(layer_stats=True, verbose=False, save_history=False, layers=["0", "2"], config=FAST).attach(
            net
        ).load_state_dict(bad)
