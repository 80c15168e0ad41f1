"""The tracker's once-said notes (lightning_dynamics.tracking.notes): each subject is said once until forgotten."""

from __future__ import annotations

import math

from lightning_dynamics import DynamicsConfig
from lightning_dynamics.tracking.notes import TrackerNotes


def _notes() -> tuple[TrackerNotes, list[str], list[str]]:
    warned: list[str] = []
    informed: list[str] = []
    return TrackerNotes("dyn", warn=warned.append, info=informed.append), warned, informed


def test_layers_are_named_once_per_kind_of_trouble_and_the_first_kind_that_applies() -> None:
    notes, warned, _ = _notes()
    names = ["a", "b", "c"]
    # a: disabled wins over never called; b: never called wins over non-finite; c: excluded
    notes.layers(names, missing=[1, 1, 0], never_called=[1, 1, 0], disabled=[1, 0, 0], excluded=[0, 0, 1])
    assert len(warned) == 3
    assert "layers 'a' were disabled" in warned[1] and "layers 'b' were not called" in warned[0]
    assert "layers 'c' are excluded" in warned[2] and "dyn/n_excluded" in warned[2]
    notes.layers(names, missing=[1, 1, 0], never_called=[1, 1, 0], disabled=[1, 0, 0], excluded=[0, 0, 1])
    assert len(warned) == 3  # said once per layer and kind
    notes.layers(names, missing=[0, 0, 1], never_called=[0, 0, 0], disabled=[0, 0, 0], excluded=[0, 0, 0])
    assert len(warned) == 4 and "layers 'c' produced NaN/Inf activations" in warned[3]
    notes.forget()
    notes.layers(names, missing=[0, 0, 1], never_called=[0, 0, 0], disabled=[0, 0, 0], excluded=[0, 0, 0])
    assert len(warned) == 5  # a fresh history says it again


def test_many_layers_are_listed_up_to_twenty() -> None:
    notes, warned, _ = _notes()
    names = [f"l{i}" for i in range(25)]
    notes.layers(names, missing=[0] * 25, never_called=[1] * 25, disabled=[0] * 25, excluded=[0] * 25)
    assert "'l19' and 5 more were not called" in warned[0] and "'l20'" not in warned[0]


def test_a_reason_is_said_once_and_only_once_the_measures_should_be_defined() -> None:
    notes, warned, _ = _notes()
    config = DynamicsConfig()
    needed = max(config.defined_from()["metastability"], config.defined_from()["integration"])
    notes.reason("fewer than 2 valid layers", needed - 1, config)
    notes.reason(None, needed, config)
    assert warned == []
    notes.reason("fewer than 2 valid layers", needed, config)
    notes.reason("fewer than 2 valid layers", needed + 5, config)
    assert warned == ["DynamicsTracker[dyn]: some measures are undefined and not logged: fewer than 2 valid layers."]


def test_short_series_are_said_once_per_measure_for_defined_values_only() -> None:
    notes, _, informed = _notes()
    config = DynamicsConfig(null_surrogates=None)
    notes.short_series({"metastability": 0.1, "integration": math.nan}, 20, config, ("metastability", "integration"))
    assert len(informed) == 1 and "computed on 20 sample points" in informed[0]
    assert "metastability (reliable from" in informed[0] and "integration" not in informed[0].split(":")[2]
    notes.short_series({"metastability": 0.1, "integration": 0.5}, 21, config, ("metastability", "integration"))
    assert len(informed) == 2 and "integration (not reliable at any length measured" in informed[1]
    assert "metastability" not in informed[1].split(":")[2]
    notes.short_series({"metastability": 0.1, "integration": 0.5}, 22, config, ("metastability", "integration"))
    assert len(informed) == 2


def test_missing_batch_ends_are_said_once() -> None:
    notes, warned, _ = _notes()
    notes.no_batch_ends(4)
    notes.no_batch_ends(4)
    assert len(warned) == 1 and "points_per_epoch=4, but no batch end was reported" in warned[0]
