import warnings

import pytest
import torch
from torch import nn

from lightning_dynamics.capture import (
    ActivationCapture,
    LayerCaptureWarning,
    SummaryAccumulator,
    select_layers,
    summarize,
)


def _outputs(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 5, generator=g) * 3 + 1, torch.randn(7, generator=g)]


@pytest.mark.parametrize(
    ("summary", "reference"),
    [
        ("rms", lambda a: a.square().mean().sqrt()),
        ("mean", lambda a: a.mean()),
        ("abs_mean", lambda a: a.abs().mean()),
        ("std", lambda a: a.std(correction=0)),
    ],
)
def test_summaries_equal_direct_computation_over_concatenated_outputs(summary: str, reference) -> None:
    acc = SummaryAccumulator(1, summary, torch.device("cpu"))
    outs = _outputs()
    for out in outs:
        acc.add(0, out)
    value = summarize(acc.packed(), summary)
    expected = reference(torch.cat([o.flatten() for o in outs]).double()).float()
    torch.testing.assert_close(value, expected.view(1), rtol=1e-5, atol=1e-6)
    assert value.dtype == torch.float32


def test_low_precision_activations_accumulate_in_float32_or_better() -> None:
    acc = SummaryAccumulator(1, "rms", torch.device("cpu"))
    a = torch.full((1000,), 3.0, dtype=torch.bfloat16)
    for _ in range(1000):
        acc.add(0, a)
    torch.testing.assert_close(summarize(acc.packed(), "rms"), torch.tensor([3.0]))


def test_layer_never_called_is_nan_and_reset_clears() -> None:
    acc = SummaryAccumulator(2, "mean", torch.device("cpu"))
    acc.add(0, torch.ones(3))
    value = summarize(acc.packed(), "mean")
    assert value[0] == 1 and value[1].isnan()
    acc.reset()
    assert acc.counts == [0, 0] and (acc.sums == 0).all()


def test_capture_counts_every_call_and_container_outputs() -> None:
    class Reused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.block(self.block(x))  # the same module twice in one forward

    class Pair(nn.Module):
        def forward(self, x: torch.Tensor):
            return {"a": x, "b": (x * 2, torch.arange(3))}  # the integer tensor is ignored

    net = Reused()
    acc = SummaryAccumulator(2, "mean", torch.device("cpu"))
    pair = Pair()
    with ActivationCapture([("block", net.block), ("pair", pair)], acc) as capture:
        x = torch.randn(2, 3)
        _ = net(x)  # not enabled: nothing counted
        with capture.capturing():
            y1 = net.block(x)
            y2 = net.block(y1)
            pair(x)
    assert acc.counts == [12, 12]
    expected = torch.cat([y1.flatten(), y2.flatten()]).mean()
    torch.testing.assert_close(summarize(acc.packed(), "mean")[0], expected.detach(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(summarize(acc.packed(), "mean")[1], (x.mean() * 1.5), rtol=1e-6, atol=1e-6)
    assert len(net.block._forward_hooks) == 0 and len(pair._forward_hooks) == 0


def test_hook_builds_no_autograd_graph() -> None:
    lin = nn.Linear(3, 3)
    acc = SummaryAccumulator(1, "rms", torch.device("cpu"))
    with ActivationCapture([("lin", lin)], acc) as capture, capture.capturing():
        lin(torch.randn(2, 3)).sum().backward()
    assert not acc.sums.requires_grad


def _std_interval(acc: SummaryAccumulator, outputs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    acc.reset()
    for out in outputs:
        acc.add(0, out)
    value = acc.summarize(acc.packed())
    expected = torch.cat([o.flatten() for o in outputs]).double().std(correction=0)
    return value[0], expected.float()


@pytest.mark.parametrize("ratio", [1e2, 1e4, 1e6])
def test_std_is_exact_where_the_mean_dwarfs_the_spread(ratio: float) -> None:
    g = torch.Generator().manual_seed(0)

    def outputs() -> list[torch.Tensor]:  # several outputs per interval, each with its own small offset
        return [
            ratio + k * 0.3 + torch.randn(*shape, generator=g) for k, shape in enumerate([(64, 33), (500,), (7, 9, 11)])
        ]

    acc = SummaryAccumulator(1, "std", torch.device("cpu"))
    first, expected = _std_interval(acc, outputs())
    if ratio <= 1e4:  # the first interval has no shift yet: exact while float64 keeps (mean/std)^2 apart
        torch.testing.assert_close(first, expected, rtol=1e-6, atol=0.0)
    for _ in range(2):  # later intervals are summed around the previous global mean
        value, expected = _std_interval(acc, outputs())
        torch.testing.assert_close(value, expected, rtol=1e-6, atol=0.0)


def test_std_shift_round_trips_through_state_dict() -> None:
    acc = SummaryAccumulator(2, "std", torch.device("cpu"))
    acc.add(0, torch.tensor([1e6, 1e6 + 2]))
    acc.summarize(acc.packed())
    restored = SummaryAccumulator(2, "std", torch.device("cpu"))
    restored.load_state_dict(acc.state_dict())
    assert restored.shift.tolist() == [1e6 + 1, 0.0]


@pytest.mark.parametrize("scale", [1e20, 1e30, 1e-23, 1e-30])
def test_rms_at_extreme_magnitudes_is_missing_once_then_exact(scale: float) -> None:
    a = torch.randn(4096, generator=torch.Generator().manual_seed(0)) * scale
    expected = a.double().square().mean().sqrt().float()
    acc = SummaryAccumulator(2, "rms", torch.device("cpu"))
    acc.add(0, a)
    acc.add(1, torch.ones(8))
    first = acc.summarize(acc.packed())
    assert first[0].isnan() and first[1] == 1  # never a wrong number: a missing point
    for _ in range(2):
        acc.reset()
        acc.add(0, a)
        acc.add(0, a[:100].reshape(10, 10).t())  # a strided output takes the scaled path too
        acc.add(1, torch.ones(8))
        value = acc.summarize(acc.packed())
        reference = torch.cat([a, a[:100]]).double().square().mean().sqrt().float()
        torch.testing.assert_close(value[0], reference, rtol=1e-5, atol=0.0)
    assert acc.scaled == [True, False] and abs(float(expected) / scale - 1) < 0.1


def test_nested_outputs_of_a_padded_transformer_in_eval_are_summarised() -> None:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
    model = nn.TransformerEncoder(layer, 2, enable_nested_tensor=True).eval()
    x = torch.randn(3, 5, 16)
    mask = torch.zeros(3, 5, dtype=torch.bool)
    mask[0, 3:] = mask[2, 1:] = True  # padded tokens: the encoder runs on nested tensors
    selection = [("layers.0", model.layers[0]), *select_layers(model)]
    acc = SummaryAccumulator(len(selection), "rms", torch.device("cpu"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch: nested tensors are a prototype
        warnings.simplefilter("error", LayerCaptureWarning)
        with ActivationCapture(selection, acc) as capture, capture.capturing(), torch.no_grad():
            out = model(x, src_key_padding_mask=mask)
    assert all(count > 0 for count in acc.counts)
    real = out[~mask]  # the encoder pads its output again; layer 1's output on real tokens is the result
    assert acc.counts[0] == real.numel()
    assert summarize(acc.packed(), "rms").isfinite().all()


def test_a_failing_hook_warns_once_disables_the_layer_and_training_goes_on() -> None:
    class Sparse(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.to_sparse()

    net = nn.Sequential(nn.Linear(3, 3), Sparse())
    acc = SummaryAccumulator(2, "rms", torch.device("cpu"))
    with ActivationCapture([("0", net[0]), ("1", net[1])], acc) as capture, capture.capturing():
        with pytest.warns(LayerCaptureWarning, match=r"layer '1' \(Sparse\).*sparse"):
            net(torch.randn(2, 3))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # warned once: not again
            net(torch.randn(2, 3)).to_dense().sum().backward()
    assert list(capture.disabled) == [1] and acc.counts == [12, 0]
    assert summarize(acc.packed(), "rms")[1].isnan()  # its points are missing


def test_an_error_in_the_reduction_does_not_stop_the_forward(monkeypatch) -> None:
    net = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    acc = SummaryAccumulator(2, "mean", torch.device("cpu"))
    original = acc.add

    def flaky(index: int, activation: torch.Tensor) -> None:
        original(index, activation)
        if index == 0:
            raise RuntimeError("reduction failed")

    monkeypatch.setattr(acc, "add", flaky)
    with ActivationCapture(list(net.named_children()), acc) as capture, capture.capturing():
        with pytest.warns(LayerCaptureWarning, match="RuntimeError: reduction failed"):
            net(torch.randn(4, 3))
    assert acc.counts == [0, 12] and capture.disabled == {0: "RuntimeError: reduction failed"}


def test_a_layer_disabled_on_one_rank_is_missing_on_every_rank() -> None:
    """Under DDP the packed sums are all-reduced (SUM): a layer disabled on one rank must not be summarised from
    the other ranks' data alone (a value from part of the batch), but be missing everywhere, as in one process."""

    class SometimesSparse(nn.Module):
        def __init__(self, sparse: bool) -> None:
            super().__init__()
            self.sparse = sparse

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.to_sparse() if self.sparse else x * 2

    packed = []
    for rank_sparse in (True, False):  # rank 0's outputs cannot be summarised, rank 1's can
        net = nn.Sequential(nn.Linear(3, 3), SometimesSparse(rank_sparse))
        acc = SummaryAccumulator(2, "mean", torch.device("cpu"))
        with ActivationCapture([("0", net[0]), ("1", net[1])], acc) as capture, capture.capturing():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", LayerCaptureWarning)
                net(torch.randn(2, 3))
        packed.append(acc.packed())
    assert packed[0][1, -1].isnan() and packed[1][1, -1] == 6  # the disabled layer's count is NaN
    reduced = packed[0] + packed[1]  # what all_reduce(SUM) gives every rank
    values = acc.summarize(reduced)
    assert values[0].isfinite() and values[1].isnan()


def test_a_disabled_layer_stays_missing_after_the_interval_resets() -> None:
    net = nn.Sequential(nn.Linear(3, 3), nn.Identity())
    acc = SummaryAccumulator(2, "rms", torch.device("cpu"))
    acc.disable(1)
    acc.reset()
    with ActivationCapture([("0", net[0]), ("1", net[1])], acc) as capture, capture.capturing():
        net(torch.randn(2, 3))
    assert acc.packed()[:, -1].isnan().tolist() == [False, True]
