import warnings

import pytest
import torch
from torch import nn

from lightning_dynamics.capture import (
    FewLayersWarning,
    SkippedModulesWarning,
    is_metric_module,
    select_layers,
    spread_evenly,
)
from tests.helpers import TinyNet


def names(selection: list) -> list[str]:
    return [name for name, _ in selection]


def test_auto_picks_compute_layers_in_order() -> None:
    assert names(select_layers(TinyNet())) == ["fc1", "fc2", "head"]


@pytest.mark.filterwarnings("ignore::lightning_dynamics.capture.FewLayersWarning")
def test_auto_includes_attention_blocks() -> None:
    class Attention(nn.Module):
        def forward(self, x):
            return x

    net = nn.Sequential(nn.Linear(2, 2), Attention(), nn.MultiheadAttention(4, 2))
    assert names(select_layers(net)) == ["0", "1", "2"]  # not 2.out_proj: MultiheadAttention never calls it
    assert "2.out_proj" not in names(select_layers(net, "all"))


@pytest.mark.filterwarnings("ignore::lightning_dynamics.capture.FewLayersWarning")
def test_names_patterns_types_predicates() -> None:
    net = TinyNet()
    assert names(select_layers(net, ["fc2", "head"])) == ["fc2", "head"]
    assert names(select_layers(net, ["fc*"])) == ["fc1", "fc2"]
    assert names(select_layers(net, [nn.Tanh])) == ["act"]
    assert names(select_layers(net, lambda n, m: n.startswith("h"))) == ["head"]
    assert names(select_layers(net, "all")) == ["fc1", "act", "fc2", "head"]


def test_unknown_name_lists_close_matches() -> None:
    with pytest.raises(ValueError, match=r"'fc3' matches no module.*Close matches: \['fc2', 'fc1'\]"):
        select_layers(TinyNet(), ["fc1", "fc3"])
    with pytest.raises(ValueError, match="pattern 'conv\\*'"):
        select_layers(TinyNet(), ["conv*"])
    with pytest.raises(ValueError, match="type Conv2d"):
        select_layers(TinyNet(), [nn.Conv2d])


def test_empty_and_invalid_selections() -> None:
    with pytest.raises(ValueError, match="empty"):
        select_layers(TinyNet(), [])
    with pytest.raises(ValueError, match="selects no module"):
        select_layers(nn.Sequential(nn.ReLU()), "auto")
    with pytest.raises(ValueError, match="`max_layers`"):
        select_layers(TinyNet(), max_layers=0)


def test_max_layers_spreads_through_depth() -> None:
    net = nn.Sequential(*[nn.Linear(2, 2) for _ in range(10)])
    assert names(select_layers(net, max_layers=3)) == ["0", "4", "9"] or names(select_layers(net, max_layers=3)) == [
        "0",
        "5",
        "9",
    ]
    assert spread_evenly([1, 2], 5) == [1, 2]


def _selected_layers_that_never_run(model: nn.Module, *inputs, **kwargs) -> list[str]:
    called: set[str] = set()
    selection = select_layers(model)
    handles = [m.register_forward_hook(lambda *_, n=n: called.add(n)) for n, m in selection]
    model(*inputs, **kwargs)
    for handle in handles:
        handle.remove()
    return [n for n, _ in selection if n not in called]


def test_auto_on_a_recurrent_model_picks_layers_that_run() -> None:
    class Tagger(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(20, 8)
            self.lstm = nn.LSTM(8, 16, batch_first=True)
            self.gru = nn.GRU(16, 16, batch_first=True)
            self.head = nn.Linear(16, 5)

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            out, _ = self.lstm(self.embed(tokens))
            out, _ = self.gru(out)
            return self.head(out)

    model = Tagger()
    assert names(select_layers(model)) == ["lstm", "gru", "head"]
    assert _selected_layers_that_never_run(model, torch.randint(0, 20, (2, 7))) == []


@pytest.mark.parametrize("training", [True, False])
def test_auto_on_a_transformer_encoder_picks_layers_that_run(training: bool) -> None:
    layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
    model = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).train(training)
    selected = names(select_layers(model))
    assert "layers.0.self_attn" in selected and not any(n.endswith("out_proj") for n in selected)
    with torch.no_grad():
        assert _selected_layers_that_never_run(model, torch.randn(3, 5, 16)) == []


def test_fewer_than_three_layers_warn() -> None:
    with pytest.warns(FewLayersWarning, match="selects 2 layer"):
        select_layers(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        select_layers(TinyNet())


class _Affine(nn.Module):
    """A model with no submodules: its computation uses its own parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight


@pytest.mark.parametrize("layers", ["auto", "all", lambda n, m: True])
def test_a_model_without_submodules_is_told_so_never_to_pass_an_empty_list(layers: object) -> None:
    with pytest.raises(ValueError, match="has no submodules") as error:
        select_layers(_Affine(), layers)  # type: ignore[arg-type]
    assert "layers=[]" not in str(error.value) and "never a layer" in str(error.value)


@pytest.mark.filterwarnings("ignore::lightning_dynamics.capture.FewLayersWarning")
def test_metric_modules_are_never_layers_and_are_named() -> None:
    torchmetrics = pytest.importorskip("torchmetrics")

    class Classifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
            self.acc = torchmetrics.classification.MulticlassAccuracy(num_classes=3)
            self.metrics = torchmetrics.MetricCollection({"f1": torchmetrics.classification.MulticlassF1Score(3)})

    model = Classifier()
    with pytest.warns(SkippedModulesWarning, match=r"'acc', 'metrics.f1'.*not part of the network's forward"):
        assert names(select_layers(model, "all")) == ["net.0", "net.1", "net.2"]
    with pytest.warns(SkippedModulesWarning, match="'acc'"):
        assert names(select_layers(model, ["net.0", "net.2", "acc"])) == ["net.0", "net.2"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", SkippedModulesWarning)  # "auto" never matched them: nothing to say
        warnings.simplefilter("ignore", FewLayersWarning)
        assert names(select_layers(model)) == ["net.0", "net.2"]
    assert is_metric_module(model.acc) and is_metric_module(model.metrics) and not is_metric_module(model.net)


def test_metric_modules_are_recognised_without_torchmetrics() -> None:
    """By the names of their classes, as a stand-in package shows: torchmetrics need not be importable."""
    metric_base = type("Metric", (nn.Module,), {"__module__": "torchmetrics.metric"})
    accuracy = type("Accuracy", (metric_base,), {"__module__": "torchmetrics.classification.accuracy"})
    lookalike = type("Metric", (nn.Module,), {"__module__": "my_project.metrics"})
    assert is_metric_module(accuracy()) and not is_metric_module(lookalike())
