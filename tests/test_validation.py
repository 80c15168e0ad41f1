"""The state schemas of lightning_dynamics.validation: every kind accepts what it says and names what it refuses."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
import torch

from lightning_dynamics.validation import (
    ANY_DICT,
    Bool,
    Choice,
    Constrained,
    Default,
    DictOf,
    Equals,
    Int,
    ListOf,
    OrNone,
    Real,
    Series,
    StateSchema,
    Str,
    TensorOf,
    check_finite_real,
    check_int,
    check_state,
    check_value,
    field_error,
    shown,
)

# kind, values it accepts, (value it refuses, the message's end after "`f` ")
CASES: list[tuple[Any, list[Any], list[tuple[Any, str]]]] = [
    (Int(0), [0, 7], [(-1, "must be an integer >= 0, got -1"), (True, "got True"), (1.0, "got 1.0")]),
    (Int(-1, 3), [-1, 3], [(4, "must be an integer in [-1, 3], got 4")]),
    (Real(), [0.5, -2, 3], [(math.nan, "must be a finite number, got nan"), ("1", "got '1'"), (False, "got False")]),
    (Real(positive=True), [1e-9], [(0.0, "must be a finite number > 0, got 0.0")]),
    (Real(minimum=0.0), [0.0], [(-0.1, r"must be a finite number in [0.0, inf], got -0.1")]),
    (Real(nan=True), [math.nan, 1.0], [(math.inf, "must be a finite number or NaN, got inf")]),
    (Real(neg_inf=True), [-math.inf], [(math.inf, "or -inf, got inf"), (math.nan, "got nan")]),
    (Real(nan=True, neg_inf=True, pos_inf=True), [math.inf, math.nan], [(None, "must be a number, got None")]),
    (Bool(), [True, False], [(0, "must be True or False, got 0"), (None, "got None")]),
    (Str(), ["", "a"], [(b"a", "must be a string, got b'a'")]),
    (Choice(("rms", "std")), ["rms"], [("median", "must be one of ['rms', 'std'], got 'median'")]),
    (Choice((0, 1)), [0, 1], [(True, "got True"), (torch.tensor(0), "got a torch.int64 tensor of shape ()")]),
    (Equals(3, "the setting"), [3], [(4, "must be 3 (the setting), got 4"), (True, "got True")]),
    (Equals(["a", "b"]), [["a", "b"]], [([torch.ones(2)], "must be ['a', 'b'], got [tensor")]),
    (TensorOf(shape=(2,), floating=True), [torch.zeros(2)], [(torch.zeros(3), "of shape (2,), got a torch.float32")]),
    (TensorOf(ndim=2, floating=True), [torch.zeros(1, 0)], [(torch.zeros(2, dtype=torch.long), "with 2 dimensions")]),
    (TensorOf(finite=True), [torch.ones(2)], [(torch.tensor([1.0, math.inf]), "must be a finite tensor, got")]),
    (OrNone(Int(1)), [None, 1], [(0, "must be an integer >= 1 or None, got 0")]),
    (ListOf(Int(0)), [[], (1, 2)], [("12", "must be a list of non-negative integers, got '12'")]),
    (ListOf(Bool(), length=2, each="layer"), [[True, False]], [([True], "must be 2 booleans (one entry per layer)")]),
    (ListOf(Int(0), length=3), [[0, 1, 2]], [([0, -1, 2], "must be 3 non-negative integers, found -1 at index 1")]),
    (ListOf(OrNone(TensorOf())), [[None, torch.ones(1)]], [(["x"], "must be a list of tensors or None, found 'x'")]),
    (DictOf(Real(positive=True)), [{}, {"a": 1.0}], [({"a": -1.0}, "found -1.0 at key 'a'"), ({3: 1.0}, "found 3")]),
    (Series(3), [[0.0, math.nan, 1], torch.zeros(3)], [([0.0, "x", 1.0], "must hold numbers, found 'x'")]),
    (Series(2, each="layer"), [(1, 2)], [([1.0], "has 1 values for 2 layers"), (torch.zeros(2, 1), "1-d real")]),
    (
        Constrained(ListOf(Int(0)), lambda s: list(s) == sorted(s), "sorted integers"),
        [[0, 2, 5]],
        [([2, 1], "must be sorted integers, got [2, 1]"), (["a"], "got ['a']")],
    ),
    (ANY_DICT, [{}, {"x": object()}], [([1], "must be a dict; got list, not a dict")]),
]


@pytest.mark.parametrize(("kind", "good", "bad"), CASES, ids=[type(case[0]).__name__ for case in CASES])
def test_every_kind_accepts_what_it_says_and_names_what_it_refuses(kind: Any, good: list, bad: list) -> None:
    for value in good:
        assert check_value("f", value, kind) is value
        assert check_state({"f": value}, {"f": kind}, "state") == {"f": value}
    for value, message in bad:
        with pytest.raises(ValueError, match=re.escape(message)) as error:
            check_value("f", value, kind, where="the state")
        assert str(error.value).startswith("the state: `f` ")


def test_a_nested_schema_names_each_field_by_its_path() -> None:
    schema = StateSchema(
        {
            "version": Equals(1),
            "fit": StateSchema({"n": Int(0), "sxx": Real(minimum=0.0)}),
            "direction": OrNone(StateSchema({"params": ListOf(TensorOf(floating=True)), "state": ListOf(ANY_DICT)})),
            "metrics": DictOf(Series(2)),
            "events": ListOf(StateSchema({"epoch": Int(-1)})),
        }
    )
    good = {
        "version": 1,
        "fit": {"n": 2, "sxx": 0.5},
        "direction": {"params": [torch.ones(2)], "state": [{}]},
        "metrics": {"loss": [0.1, 0.2]},
        "events": [{"epoch": 3}],
    }
    assert check_state(good, schema, "twin") == good
    assert check_state({**good, "direction": None}, schema, "twin")["direction"] is None
    for change, message in [
        ({"fit": {"n": -1, "sxx": 0.5}}, "twin: `fit.n` must be an integer >= 0, got -1."),
        ({"fit": {"n": 1}}, "twin lacks `fit.sxx`; expected keys n, sxx, got keys ['n']."),
        ({"fit": 3}, "twin: `fit` must be a dict with keys n, sxx; got int, not a dict."),
        ({"direction": {"params": [torch.ones(2, dtype=torch.long)], "state": []}}, "`direction.params` must be a"),
        ({"direction": {"params": [], "state": [[]]}}, "twin: `direction.state[0]` must be a dict; got list"),
        ({"metrics": {"loss": [0.1]}}, "twin: `metrics['loss']` has 1 values for 2 sample points."),
        ({"events": [{"epoch": -2}]}, "twin: `events[0].epoch` must be an integer >= -1, got -2."),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            check_state({**good, **change}, schema, "twin")


def test_missing_absent_default_and_unexpected_fields() -> None:
    schema = StateSchema({"peak": Real(neg_inf=True), "wait_count": Int(0), "extra": Default(Bool(), False)})
    assert check_state({"peak": -math.inf, "wait_count": 0}, schema, "rule") == {
        "peak": -math.inf,
        "wait_count": 0,
        "extra": False,
    }
    with pytest.raises(ValueError, match=r"rule lacks `peak`, `wait_count`; expected keys peak, wait_count, extra"):
        check_state({"statistic": 0.1}, schema, "rule")
    with pytest.raises(ValueError, match="rule: `extra` must be True or False, got None"):
        check_state({"peak": 0.0, "wait_count": 0, "extra": None}, schema, "rule")  # a Default is checked if present
    check_state({"peak": 0.0, "wait_count": 0, "other": 1}, schema, "rule")  # an open schema ignores other keys
    closed = StateSchema({"peak": Real(neg_inf=True), "wait_count": Int(0)}, closed=True)
    with pytest.raises(ValueError, match=r"rule has unexpected keys \['other'\]; expected keys peak, wait_count"):
        check_state({"peak": 0.0, "wait_count": 0, "other": 1}, closed, "rule")
    with pytest.raises(ValueError, match="rule must be a dict with keys peak, wait_count; got list, not a dict"):
        check_state([1, 2], closed, "rule")


def test_fields_are_checked_in_their_declared_order() -> None:
    schema = {"a": Int(0), "b": Int(0)}
    with pytest.raises(ValueError, match="`a`"):
        check_state({"b": -1, "a": -1}, schema, "state")
    with pytest.raises(ValueError, match="`b`"):
        check_state({"b": -1, "a": 0}, schema, "state")


def test_argument_checks_share_the_kinds_messages() -> None:
    with pytest.raises(ValueError, match=re.escape("`lag` must be an integer >= 1 or None, got 0.")):
        check_int("lag", 0, 1, allow_none=True)
    assert check_int("lag", None, 1, allow_none=True) is None and check_int("lag", 2, 1) == 2
    with pytest.raises(ValueError, match=re.escape("`h` must be a finite number > 0 in [-inf, 2.0], got 3.0.")):
        check_finite_real("h", 3.0, positive=True, maximum=2.0)
    assert check_finite_real("h", 1, positive=True) == 1.0 and isinstance(check_finite_real("h", 1), float)


def test_field_error_and_shown() -> None:
    assert str(field_error("the state", "n", "must be 1, got 2")) == "the state: `n` must be 1, got 2."
    assert str(field_error("", "n", "must be 1, got 2")) == "`n` must be 1, got 2."
    assert str(field_error("the state", "", "lacks `n`")) == "the state lacks `n`."
    assert shown(torch.zeros(2, 3, dtype=torch.float64)) == "a torch.float64 tensor of shape (2, 3)"
    long = shown("x" * 200)
    assert len(long) == 80 and long.endswith("...")
