"""The too-few-layers message reads correctly for a measure and for a group of measures."""

import torch

from lightning_dynamics.functional._layers import few_layers_message


def test_the_too_few_layers_message_agrees_with_a_plural_subject() -> None:
    group = few_layers_message("the cross-layer measures", torch.tensor(1), 3)
    single = few_layers_message("metastability", torch.tensor([1, 3]), 3)
    assert group is not None and single is not None
    assert "measures compares" not in group  # a plural subject takes a plural verb
    assert group.startswith("the cross-layer measures: comparing layers needs at least 2 valid layers; 1 of 3 valid")
    assert "in 1 of 2 batch elements" in single
    assert few_layers_message("metastability", torch.tensor(2), 2) is None
