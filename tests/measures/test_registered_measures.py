"""Every registered measure through the shared :class:`~tests.measures.tester.MeasureTester`: one subclass each.

A new measure's test is a subclass here (and, where it differs, what it owes in the harness's terms); the last test
fails until it has one.
"""

from __future__ import annotations

import torch

from lightning_dynamics.functional.reliability import RELIABLE_FROM
from lightning_dynamics.measures import MEASURES
from tests.measures.tester import MeasureTester


class TestMetastability(MeasureTester):
    name = "metastability"


class TestSynchrony(MeasureTester):
    name = "synchrony"


class TestPhaseIntegration(MeasureTester):
    name = "phase_integration"


class TestExcludedLayers(MeasureTester):
    name = "n_excluded"
    defined_before_declared = True  # logged with the phase measures it explains

    def all_nan_value(self) -> torch.Tensor:
        return torch.tensor(float(self.n_layers), dtype=torch.float64)  # a count: every layer left out


class TestIntegrationAlpha(MeasureTester):
    name = "integration_alpha"


class TestIntegration(MeasureTester):
    name = "integration"


class TestStabilityIndex(MeasureTester):
    name = "stability_index"


class TestRelativeChange(MeasureTester):
    name = "relative_change"


class TestHiguchiFD(MeasureTester):
    name = "higuchi_fd"
    defined_before_declared = True  # from 21 points; logged with its group from 25


class TestKatzFD(MeasureTester):
    name = "katz_fd"
    defined_before_declared = True  # from 4 points; logged with its group from 25


class TestMFDFAWidth(MeasureTester):
    name = "mfdfa_width"


def test_every_measure_that_computes_has_a_tester() -> None:
    tested = {cls.name for cls in MeasureTester.__subclasses__()}
    assert tested == {name for name, m in MEASURES.items() if m.compute is not None}


def test_each_measure_declares_its_label_and_the_measured_reliable_length() -> None:
    for name, measure in MEASURES.items():
        assert measure.label and "_" not in measure.label, name  # a label for people, not the key
        assert measure.reliable_from == RELIABLE_FROM.get(name), name
    assert len({m.label for m in MEASURES.values()}) == len(MEASURES)
