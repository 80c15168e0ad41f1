import pytest
from torch import nn

from lightning_dynamics.capture import select_layers, spread_evenly
from tests.helpers import TinyNet


def names(selection: list) -> list[str]:
    return [name for name, _ in selection]


def test_auto_picks_compute_layers_in_order() -> None:
    assert names(select_layers(TinyNet())) == ["fc1", "fc2", "head"]


def test_auto_includes_attention_blocks() -> None:
    class Attention(nn.Module):
        def forward(self, x):
            return x

    net = nn.Sequential(nn.Linear(2, 2), Attention(), nn.MultiheadAttention(4, 2))
    assert names(select_layers(net)) == ["0", "1", "2", "2.out_proj"]


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
