"""The diagnosis core (no Lightning): each rule fires on its smallest case and stays quiet on its clean twin; the
hooks on the model's root see what they should; findings resume exactly."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lightning_dynamics import DiagnosisThresholds, DynamicsDiagnoser, Finding
from lightning_dynamics.decisions.diagnosis import ACTIONS, FINDING_KINDS, EpochObservation, model_findings

LAYERS = ["fc1", "fc2", "fc3"]
ACTS = ["act1", "act2"]


def _healthy(epoch: int, **changes) -> EpochObservation:
    """A run whose loss halves every epoch, with ordinary layer statistics."""
    stats = {
        "dead_frac": [0.05, 0.1],
        "saturated_frac": [math.nan, math.nan],
        "grad_norm": [0.3, 0.5, 0.8],
        "update_ratio": [3e-3, 2e-3, 4e-3],
        "weight_norm": [5.0 + epoch * 0.1, 4.0, 2.0],
    }
    stats.update(changes.pop("stats", {}))
    base = dict(
        epoch=epoch,
        step=10 * (epoch + 1),
        n_steps=10,
        loss_mean=2.3 * 0.5**epoch,
        loss_cv=0.1,
        first_loss=2.3,
        val_loss=2.3 * 0.55**epoch,
        input_rms=0.6,
        input_std=0.4,
        layer_stats=stats,
        activation_names=ACTS,
        layer_names=LAYERS,
    )
    base.update(changes)
    return EpochObservation(**base)


def _run(observations: list[EpochObservation], **kwargs) -> list[Finding]:
    diagnoser = DynamicsDiagnoser(**kwargs)
    for observation in observations:
        diagnoser.update(observation)
    return diagnoser.findings


def test_a_healthy_run_has_no_finding() -> None:
    assert _run([_healthy(e) for e in range(8)]) == []


# (kind, the smallest case as changes per epoch, the layers it names)
CASES = {
    "nonfinite": (lambda e: {"loss_mean": math.nan} if e == 2 else {}, []),
    "data_bug": (lambda e: {"input_rms": 12.0}, []),
    "wrong_output": (lambda e: {"output_is_probability": True}, []),
    "lr_too_high": (lambda e: {"loss_mean": 2.3 * 1.6} if e == 1 else {}, []),
    "exploding_gradients": (lambda e: {"stats": {"grad_norm": [5e3, 40.0, 1.0]}} if e == 1 else {}, ["fc1"]),
    "vanishing_gradients": (lambda e: {"stats": {"grad_norm": [1e-6, 1e-4, 1.0]}}, ["fc1", "fc2"]),
    "dying_relu": (lambda e: {"stats": {"dead_frac": [0.05, 0.75]}} if e >= 1 else {}, ["act2"]),
    "saturation": (lambda e: {"stats": {"saturated_frac": [0.9, math.nan]}}, ["act1"]),
    "not_training": (lambda e: {"stats": {"update_ratio": [0.0, 2e-3, 4e-3]}}, ["fc1"]),
    "lr_too_low": (
        lambda e: {"loss_mean": 2.3 * (1 - 0.01 * e), "stats": {"update_ratio": [1e-6, 2e-6, 1e-6]}},
        [],
    ),
    "weight_decay_too_strong": (
        lambda e: {"loss_mean": 2.3 * (1 - 0.01 * e), "stats": {"weight_norm": [5.0 * 0.6**e, 4.0 * 0.6**e, 1.0]}},
        [],
    ),
    "label_noise": (lambda e: {"val_loss": 2.3 * 0.55**2 * (1.2 if e > 2 else 1.0)} if e >= 2 else {}, []),
}


def test_every_kind_has_a_case_and_an_action() -> None:
    assert set(CASES) == set(FINDING_KINDS) == set(ACTIONS)


@pytest.mark.parametrize("kind", sorted(CASES))
def test_each_rule_fires_on_its_case_alone_and_names_its_layers(kind: str) -> None:
    change, layers = CASES[kind]
    findings = _run([_healthy(e, **change(e)) for e in range(8)])
    assert [f.kind for f in findings] == [kind], [str(f) for f in findings]
    finding = findings[0]
    assert finding.layers == layers
    assert finding.action == ACTIONS[kind] and finding.evidence
    assert finding.step == 10 * (finding.epoch + 1)


def test_first_seen_epoch_is_kept_and_each_kind_is_said_once() -> None:
    diagnoser = DynamicsDiagnoser()
    said = []
    for e in range(6):
        dead = [0.05, 0.8] if e >= 2 else [0.05, 0.1]
        said += diagnoser.update(_healthy(e, stats={"dead_frac": dead}))
    assert [(f.kind, f.epoch) for f in said] == [("dying_relu", 2)]


def test_ignored_kinds_are_not_reported_and_stop_on_names_its_reason() -> None:
    observations = [_healthy(e, input_rms=12.0, output_is_probability=True) for e in range(2)]
    assert [f.kind for f in _run(observations, ignore=["data_bug"])] == ["wrong_output"]
    diagnoser = DynamicsDiagnoser(stop_on=["data_bug"])
    assert diagnoser.should_stop() == (False, None)
    diagnoser.update(observations[0])
    stop, reason = diagnoser.should_stop()
    assert stop and reason.startswith("data_bug (epoch 0, step 10): input root mean square = 12")


def test_arguments_are_validated_with_the_argument_and_the_value() -> None:
    with pytest.raises(ValueError, match=r"`stop_on` must name kinds from .*\['lr_too_hi'\]"):
        DynamicsDiagnoser(stop_on=["lr_too_hi"])
    with pytest.raises(ValueError, match="dead_frac"):
        DiagnosisThresholds(dead_frac=-0.5)
    with pytest.raises(ValueError, match="patience_epochs"):
        DiagnosisThresholds(patience_epochs=0)
    with pytest.raises(ValueError, match="thresholds"):
        DynamicsDiagnoser(thresholds={"dead_frac": 0.5})


def test_model_check_finds_frozen_parameters_and_parameters_outside_the_optimizer() -> None:
    net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2))
    assert model_findings(net, [torch.optim.SGD(net.parameters(), lr=0.1)]) is None
    evidence, names, count = model_findings(net, [torch.optim.SGD(net[2].parameters(), lr=0.1)])
    assert names == ["0.weight", "0.bias"] and count == 2 and "no optimizer" in evidence
    net[0].requires_grad_(False)
    evidence, names, _ = model_findings(net, [torch.optim.SGD(net[2].parameters(), lr=0.1)], layer_names=["0", "2"])
    assert names == ["0"] and "requires_grad=False" in evidence
    diagnoser = DynamicsDiagnoser()
    diagnoser.attach(net, [torch.optim.SGD(net[2].parameters(), lr=0.1)], layer_names=["0", "2"])
    assert [(f.kind, f.layers, f.epoch) for f in diagnoser.end_epoch(0, 5)] == [("not_training", ["0"], 0)]


def _forwards(diagnoser: DynamicsDiagnoser, net: nn.Module, batches: list[torch.Tensor], epochs: int = 1) -> list:
    found = []
    for epoch in range(epochs):
        for x in batches:
            loss = net(x).logsumexp(-1).mean()
            diagnoser.observe_loss(loss)
        found += diagnoser.end_epoch(epoch, (epoch + 1) * len(batches))
    return found


@pytest.mark.parametrize(
    ("make_batches", "kind"),
    [
        (lambda g: [torch.rand(8, 4, generator=g) * 255 for _ in range(3)], "data_bug"),  # raw pixel values
        (lambda g: [torch.full((8, 4), 0.5) for _ in range(3)], "data_bug"),  # constant inputs
        (lambda g: [torch.randn(8, 4, generator=g)] * 3, "data_bug"),  # the same batch every step
        (lambda g: [torch.randn(8, 4, generator=g) for _ in range(3)], None),  # the clean twin
    ],
)
def test_the_root_hooks_see_the_data_bugs(make_batches, kind: str | None) -> None:
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3))
    diagnoser = DynamicsDiagnoser()
    diagnoser.attach(net, [torch.optim.SGD(net.parameters(), lr=0.1)])
    found = _forwards(diagnoser, net, make_batches(g))
    assert [f.kind for f in found] == ([kind] if kind else [])


def test_a_softmax_output_is_named_and_logits_are_not() -> None:
    for head, expected in ((nn.Softmax(-1), ["wrong_output"]), (nn.LogSoftmax(-1), []), (nn.Identity(), [])):
        net = nn.Sequential(nn.Linear(4, 3), head)
        diagnoser = DynamicsDiagnoser()
        diagnoser.attach(net, [torch.optim.SGD(net.parameters(), lr=0.1)])
        g = torch.Generator().manual_seed(0)
        batches = [torch.randn(8, 4, generator=g) for _ in range(2)]
        assert [f.kind for f in _forwards(diagnoser, net, batches)] == expected


def test_a_loss_that_starts_at_zero_is_not_called_divergent() -> None:
    """A log-softmax head's logsumexp is 0 up to rounding: no ratio to it can say the loss diverged."""
    for seed in range(5):
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Linear(4, 3), nn.LogSoftmax(-1))
        diagnoser = DynamicsDiagnoser()
        diagnoser.attach(net, [torch.optim.SGD(net.parameters(), lr=0.1)])
        found = _forwards(diagnoser, net, [torch.randn(8, 4) for _ in range(3)], epochs=2)
        assert "lr_too_high" not in [f.kind for f in found], seed


def test_eval_forwards_are_not_read() -> None:
    net = nn.Sequential(nn.Linear(4, 3), nn.Softmax(-1)).eval()
    diagnoser = DynamicsDiagnoser()
    diagnoser.attach(net, [torch.optim.SGD(net.parameters(), lr=0.1)])
    assert _forwards(diagnoser, net, [torch.randn(8, 4) * 100 for _ in range(2)]) == []


def test_the_epoch_numbers_are_the_step_losses_and_reduce_like_one_process() -> None:
    losses = [2.0, 1.0, 3.0, 2.0]
    diagnoser = DynamicsDiagnoser()
    for value in losses:
        diagnoser.observe_loss(torch.tensor(value))
    packed = diagnoser.packed()
    diagnoser.end_epoch(0, 4)
    assert diagnoser.history[0]["loss"] == pytest.approx(sum(losses) / 4)
    # two processes with the same numbers: the sum of their packed vectors gives the same mean and first loss
    twin = DynamicsDiagnoser()
    for value in losses:
        twin.observe_loss(torch.tensor(value))
    twin.end_epoch(0, 4, reduce=lambda p: p + packed)
    assert twin.history == diagnoser.history


def test_findings_resume_exactly() -> None:
    observations = [_healthy(e, **CASES["weight_decay_too_strong"][0](e)) for e in range(8)]
    observations[5] = _healthy(5, output_is_probability=True, **CASES["weight_decay_too_strong"][0](5))
    whole = DynamicsDiagnoser()
    for observation in observations:
        whole.update(observation)
    first = DynamicsDiagnoser()
    for observation in observations[:3]:
        first.update(observation)
    resumed = DynamicsDiagnoser()
    resumed.load_state_dict(first.state_dict())
    for observation in observations[3:]:
        resumed.update(observation)
    assert [f.to_dict() for f in resumed.findings] == [f.to_dict() for f in whole.findings]
    assert [f.kind for f in whole.findings] == ["weight_decay_too_strong", "wrong_output"]
    assert resumed.state_dict() == whole.state_dict()


def test_a_wrong_state_is_refused_naming_the_field() -> None:
    diagnoser = DynamicsDiagnoser()
    state = diagnoser.state_dict()
    with pytest.raises(ValueError, match="version"):
        diagnoser.load_state_dict({**state, "version": 99})
    with pytest.raises(ValueError, match="`kind` must be one of"):
        bad = Finding("dying_relu", [], 1, 0, "e", "a").to_dict() | {"kind": "sad"}
        diagnoser.load_state_dict({**state, "findings": [bad]})
    with pytest.raises(ValueError, match="history"):
        diagnoser.load_state_dict({**state, "history": ["x"]})
    assert Finding.from_dict(Finding("dying_relu", ["a"], 1, 0, "e", "a", 0.7, 0.5).to_dict()).value == 0.7


def _fine_tune(frozen: tuple[str, ...], all_in_optimizer: bool, epochs: int = 2) -> list[Finding]:
    """A backbone frozen on purpose under a trained head, run with the tracker's layer statistics (the run-time
    rule reads the backbone's missing gradients); the optimizer gets the head, or every parameter."""
    from lightning_dynamics import DynamicsTracker

    torch.manual_seed(0)
    net = nn.Sequential(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU()), nn.Linear(16, 3))
    net[0].requires_grad_(False)
    optimizer = torch.optim.SGD(net.parameters() if all_in_optimizer else net[1].parameters(), lr=0.1)
    tracker = DynamicsTracker(layer_stats=True, layers="all", verbose=False, save_history=False).begin_fit(net)
    diagnoser = DynamicsDiagnoser(frozen=frozen)
    diagnoser.attach(net, [optimizer], layer_names=tracker.layer_names)
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    step = 0
    for epoch in range(epochs):
        tracker.epoch_start(epoch, step, n_batches=4)
        for batch_idx in range(4):
            loss = nn.functional.cross_entropy(net(x[16 * batch_idx : 16 * batch_idx + 16]), y[16 * batch_idx :][:16])
            optimizer.zero_grad()
            loss.backward()
            tracker.before_optimizer_step()
            optimizer.step()
            step += 1
            diagnoser.observe_loss(loss)
            tracker.batch_end(epoch, step, batch_idx)
        tracker.epoch_end(epoch, step)
        diagnoser.close_epoch(epoch, step, tracker=tracker)
    tracker.detach()
    return diagnoser.findings


@pytest.mark.parametrize("all_in_optimizer", [False, True])
def test_a_backbone_frozen_on_purpose_is_quiet_once_declared(all_in_optimizer: bool) -> None:
    undeclared = [f for f in _fine_tune((), all_in_optimizer) if f.kind == "not_training"]
    assert len(undeclared) == 1 and "frozen on purpose? pass frozen=['0']" in undeclared[0].evidence
    assert [f.kind for f in _fine_tune(("0",), all_in_optimizer)] == []


def test_declared_frozen_layers_still_find_a_trainable_parameter_missing_from_the_optimizer() -> None:
    net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 3), nn.Linear(3, 2))
    net[0].requires_grad_(False)
    optimizer = torch.optim.SGD(net[3].parameters(), lr=0.1)  # net[2] trains but no optimizer has it
    evidence, names, _ = model_findings(net, [optimizer], frozen=["0"])
    assert names == ["2.weight", "2.bias"] and "in no optimizer" in evidence
    with pytest.raises(ValueError, match=r"`frozen` names \['backbone'\], which are no module or parameter"):
        DynamicsDiagnoser(frozen=["backbone"]).attach(net, [optimizer])
    with pytest.raises(ValueError, match="`frozen` must be module or parameter names"):
        DynamicsDiagnoser(frozen=[""])
