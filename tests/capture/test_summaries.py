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


# ---------------------------------------------------------------- float64 and strided outputs

SUMMARIES = ("rms", "mean", "abs_mean", "std")
REFERENCES = {
    "rms": lambda a: a.square().mean().sqrt(),
    "mean": lambda a: a.mean(),
    "abs_mean": lambda a: a.abs().mean(),
    "std": lambda a: a.std(correction=0),
}


def _float64_outputs() -> list[torch.Tensor]:
    """Float64 outputs whose digits beyond float32 matter: contiguous, channels-last, transposed, sliced."""
    g = torch.Generator().manual_seed(3)
    conv = 1.0 + 1e-9 * torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64)  # float32 rounds these to 1.0
    return [
        conv,
        conv.to(memory_format=torch.channels_last),
        torch.randn(6, 7, generator=g, dtype=torch.float64).t() + 0.25,
        (torch.randn(8, 9, generator=g, dtype=torch.float64) - 1e-3)[:, ::2],
    ]


@pytest.mark.parametrize("summary", SUMMARIES)
def test_float64_and_strided_outputs_are_summarised_to_float64_accuracy(summary: str) -> None:
    outputs = _float64_outputs()
    assert not outputs[1].is_contiguous() and not outputs[2].is_contiguous() and not outputs[3].is_contiguous()
    acc = SummaryAccumulator(1, summary, torch.device("cpu"))
    for out in outputs:
        acc.add(0, out)
    reference = REFERENCES[summary](torch.cat([o.reshape(-1) for o in outputs]))
    # std's first interval has no shift yet: float64 cancellation of E[(a-K)^2] - E[a-K]^2 costs ~(mean/std)^2 ulp.
    tolerance = 1e-9 if summary == "std" else 1e-13
    torch.testing.assert_close(
        summarize(acc.packed(), summary, dtype=torch.float64)[0], reference, rtol=tolerance, atol=0
    )
    value = acc.summarize(acc.packed())  # what the history stores: float64 sums rounded once to float32
    assert value.dtype == torch.float32
    torch.testing.assert_close(value[0], reference.float(), rtol=2**-23, atol=0)


@pytest.mark.parametrize("summary", SUMMARIES)
def test_a_float64_channels_last_model_keeps_every_layer(summary: str) -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    model = model.double().to(memory_format=torch.channels_last)
    layers = select_layers(model, "all", None)
    acc = SummaryAccumulator(len(layers), summary, torch.device("cpu"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", LayerCaptureWarning)  # today: abs_mean/rms disable the layers
        with ActivationCapture(layers, acc) as capture, capture.capturing():
            model(torch.randn(2, 3, 8, 8, dtype=torch.float64).to(memory_format=torch.channels_last))
    assert not capture.disabled and all(count > 0 for count in acc.counts)
    assert acc.summarize(acc.packed()).isfinite().all()


# ---------------------------------------------------------------- mean/abs_mean never overflow


@pytest.mark.parametrize("summary", ["mean", "abs_mean"])
@pytest.mark.parametrize(("scale", "dtype"), [(1e36, torch.float32), (3e38, torch.float32), (1e37, torch.float64)])
def test_mean_and_abs_mean_at_extreme_magnitudes_are_missing_once_then_exact(
    summary: str, scale: float, dtype: torch.dtype
) -> None:
    a = (torch.rand(4096, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * scale).to(dtype)
    assert a.isfinite().all()
    acc = SummaryAccumulator(2, summary, torch.device("cpu"))
    acc.add(0, a)
    acc.add(1, torch.ones(8))
    first = acc.summarize(acc.packed())
    assert first[1] == 1 and (first[0].isnan() or first[0] > 0)  # overflowed: missing, never inf
    for _ in range(2):
        acc.reset()
        acc.add(0, a)
        acc.add(0, a[:100].reshape(10, 10).t())  # a strided output takes the scaled path too
        acc.add(1, torch.ones(8))
        value = acc.summarize(acc.packed())
        reference = REFERENCES[summary](torch.cat([a, a[:100]]).double())
        assert value[0].isfinite()
        torch.testing.assert_close(value[0].double(), reference, rtol=1e-6, atol=0.0)
    assert acc.scaled == [True, False]


def test_a_mean_whose_float32_sum_overflows_with_both_signs_is_missing_once_then_exact() -> None:
    a = torch.cat([torch.full((2048,), 3e38), torch.full((2048,), -3e38), torch.full((4,), 1e36)])
    acc = SummaryAccumulator(1, "mean", torch.device("cpu"))
    acc.add(0, a)
    assert acc.summarize(acc.packed())[0].isnan()  # inf - inf in float32: missing, not a wrong number
    acc.reset()
    acc.add(0, a)
    torch.testing.assert_close(acc.summarize(acc.packed())[0].double(), a.double().mean(), rtol=1e-5, atol=0.0)


def test_float64_activations_beyond_float32_range_are_summed_without_overflow() -> None:
    a = torch.rand(4096, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 1e300
    for summary in ("mean", "abs_mean"):
        acc = SummaryAccumulator(1, summary, torch.device("cpu"))
        for _ in range(2):  # the first interval flags the layer (|mean| > 2^50); then it is summed scaled
            acc.reset()
            acc.add(0, a)
            acc.summarize(acc.packed())
        assert acc.scaled == [True]
        torch.testing.assert_close(
            summarize(acc.packed(), summary, dtype=torch.float64)[0], a.mean(), rtol=1e-13, atol=0
        )


# ---------------------------------------------------------------- checkpoint state is validated


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda s: s.update(scaled=[False, False, True]), "scaled"),
        (lambda s: s.update(scaled=[0, 1]), "scaled"),
        (lambda s: s.update(scaled="no"), "scaled"),
        (lambda s: s.update(shift=torch.zeros(2, 1)), "shift"),
        (lambda s: s.update(shift=torch.zeros(3)), "shift"),
        (lambda s: s.update(shift=torch.tensor([0.0, float("nan")])), "shift"),
        (lambda s: s.update(shift=[0.0, 0.0]), "shift"),
        (lambda s: s.pop("sums"), "sums"),
        (lambda s: s.pop("counts"), "counts"),
        (lambda s: s.update(sums=torch.zeros(3, 3)), "sums"),
        (lambda s: s.update(sums=torch.zeros(2, 3, dtype=torch.int64)), "sums"),
        (lambda s: s.update(sums=[[0.0] * 3] * 2), "sums"),
        (lambda s: s.update(counts=["3", 4]), "counts"),
        (lambda s: s.update(counts=[True, 4]), "counts"),
        (lambda s: s.update(counts=[3, -1]), "counts"),
        (lambda s: s.update(counts=[3]), "counts"),
        (lambda s: s.update(counts=5), "counts"),
    ],
)
def test_every_field_of_an_accumulator_state_is_checked_by_name(change, field: str) -> None:
    acc = SummaryAccumulator(2, "std", torch.device("cpu"))
    acc.add(0, torch.tensor([1.0, 2.0, 4.0]))
    state = acc.state_dict()
    change(state)
    restored = SummaryAccumulator(2, "std", torch.device("cpu"))
    with pytest.raises(ValueError, match=rf"`{field}`|\['{field}'\]"):
        restored.load_state_dict(state)
    assert restored.counts == [0, 0] and (restored.sums == 0).all()  # nothing half-restored


@pytest.mark.parametrize("state", [None, [1, 2], "sums"])
def test_an_accumulator_state_that_is_not_a_dict_is_a_value_error(state) -> None:
    with pytest.raises(ValueError, match="not a dict"):
        SummaryAccumulator(2, "rms", torch.device("cpu")).load_state_dict(state)


def test_an_accumulator_state_round_trips_and_old_states_without_shift_or_flags_load() -> None:
    acc = SummaryAccumulator(2, "rms", torch.device("cpu"))
    acc.add(0, torch.full((16,), 1e30))
    acc.summarize(acc.packed())
    acc.reset()
    acc.add(1, torch.ones(4))
    restored = SummaryAccumulator(2, "rms", torch.device("cpu"))
    restored.load_state_dict(acc.state_dict())
    assert restored.scaled == [True, False] and restored.counts == [0, 4]
    old = {"sums": acc.sums.clone(), "counts": [0, 4]}
    SummaryAccumulator(2, "rms", torch.device("cpu")).load_state_dict(old)
    assert acc.nbytes == (2 + 2 + 8 * 2 * 2 + 2) * 8  # float64 sums, counts, 8 closed intervals x [2, 2], shift


def test_compiled_hooks_trace_once_not_once_per_step() -> None:
    """The hooks' running sums and counts are device tensors: torch.compile traces them once. (With host-integer
    counts, dynamo guarded on their value and recompiled at every step until its limit, then ran eagerly.)"""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    acc = SummaryAccumulator(2, "rms", torch.device("cpu"))
    compiled = torch.compile(net, backend="aot_eager")
    with ActivationCapture([("0", net[0]), ("2", net[2])], acc) as capture, capture.capturing():
        for _ in range(10):
            compiled(torch.randn(5, 3)).sum().backward()
    assert counters["stats"]["unique_graphs"] == 1
    assert acc.counts == [10 * 20, 10 * 10]
    torch._dynamo.reset()


def test_compiled_hooks_add_to_the_open_interval_after_each_close() -> None:
    """The tracker closes an interval between steps: the compiled hooks must write into the new open interval (a
    hook writing into a view that moved along a buffer was traced with the view's first offset and kept writing
    there), and still be traced once."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    inputs = [torch.randn(5, 3, generator=torch.Generator().manual_seed(k)) for k in range(6)]
    results = []
    for model in (net, torch.compile(net, backend="aot_eager")):
        acc = SummaryAccumulator(2, "rms", torch.device("cpu"))
        with ActivationCapture([("0", net[0]), ("2", net[2])], acc) as capture, capture.capturing():
            for x in inputs:
                model(x)
                acc.close()
        results.append(acc.take(acc.pending()))
    assert counters["stats"]["unique_graphs"] == 1
    assert not results[1].isnan().any()
    torch.testing.assert_close(results[1], results[0])
    torch._dynamo.reset()


@pytest.mark.parametrize("summary", ["rms", "mean", "abs_mean", "std"])
def test_closed_intervals_summarised_at_once_equal_one_at_a_time(summary: str) -> None:
    """20 intervals closed without a summary (the storage grows past its 8 columns), then summarised in one batch:
    the same values as summarising each interval when it closes, and the same state for the next one."""
    g = torch.Generator().manual_seed(3)
    batches = [[1e3 + k + torch.randn(6, 5, generator=g), torch.randn(11, generator=g) * (k + 1)] for k in range(20)]
    one, many = (SummaryAccumulator(2, summary, torch.device("cpu")) for _ in range(2))
    expected = []
    for first, second in batches:
        for acc in (one, many):
            acc.add(0, first)
            acc.add(1, second)
        expected.append(one.summarize(one.packed()))
        one.reset()
        many.close()
    assert many.closed == 20 and many.pending().shape == (20, 2, 3 if summary == "std" else 2)
    values = many.take(many.pending())
    torch.testing.assert_close(values, torch.stack(expected), rtol=1e-6, atol=0.0)
    assert many.closed == 0 and many.counts == [0, 0]
    if summary == "std":  # the shift moved to the last interval's mean, as one at a time
        torch.testing.assert_close(many.shift, one.shift, rtol=1e-12, atol=0.0)


def test_the_open_interval_survives_a_summary_of_the_closed_ones() -> None:
    acc = SummaryAccumulator(1, "mean", torch.device("cpu"))
    acc.add(0, torch.tensor([1.0, 3.0]))
    acc.close()
    acc.add(0, torch.tensor([10.0]))  # the open interval, not summarised yet
    assert acc.take(acc.pending()).tolist() == [[2.0]]
    assert acc.counts == [1] and acc.summarize(acc.packed()).tolist() == [10.0]


def test_a_layer_disabled_among_pending_intervals_is_missing_from_that_interval_on() -> None:
    acc = SummaryAccumulator(2, "rms", torch.device("cpu"))
    for k in range(4):
        if k == 2:
            acc.disable(1)  # as a failing hook does, in the third interval
        acc.add(0, torch.ones(3))
        if k < 2:
            acc.add(1, torch.full((3,), 2.0))
        acc.close()
    values = acc.take(acc.pending())
    assert values[:, 0].tolist() == [1.0] * 4
    assert values[:2, 1].tolist() == [2.0, 2.0] and values[2:, 1].isnan().all()
    acc.add(0, torch.ones(3))
    acc.close()
    assert acc.pending()[0, 1, -1].isnan()  # still disabled in the next batch


def test_a_state_with_unsummarised_intervals_is_refused() -> None:
    acc = SummaryAccumulator(1, "rms", torch.device("cpu"))
    acc.add(0, torch.ones(2))
    acc.close()
    with pytest.raises(RuntimeError, match="not summarised"):
        acc.state_dict()
