"""DynamicsConfig: one validated configuration, the same defaults as the functional API."""

from __future__ import annotations

import inspect
import math

import pytest

from lightning_dynamics import DynamicsConfig, DynamicsTracker
from lightning_dynamics import functional as F
from lightning_dynamics.validation import check_layers, layers_key


@pytest.mark.parametrize(
    ("kwargs", "argument", "value"),
    [
        ({"weights": (math.nan, 0.5)}, "weights", "nan"),
        ({"weights": (math.inf, 0.0)}, "weights", "inf"),
        ({"weights": (0.7, 0.2)}, "weights", "(0.7, 0.2)"),
        ({"weights": (1.0,)}, "weights", "(1.0,)"),
        ({"weights": (-0.5, 1.5)}, "weights", "-0.5"),
        ({"sigma": math.nan}, "sigma", "nan"),
        ({"sigma": math.inf}, "sigma", "inf"),
        ({"sigma": 0.0}, "sigma", "0.0"),
        ({"h_opt": "0.7"}, "h_opt", "'0.7'"),
        ({"h_opt": math.nan}, "h_opt", "nan"),
        ({"window": None}, "window", "None"),
        ({"window": 15}, "window", "15"),
        ({"window": 16.0}, "window", "16.0"),
        ({"volatility_window": True}, "volatility_window", "True"),
        ({"summary": "max"}, "summary", "'max'"),
        ({"detrend": "quadratic"}, "detrend", "'quadratic'"),
        ({"pad": "zeros"}, "pad", "'zeros'"),
        ({"history_window": 8}, "history_window", "8"),
        ({"compute_phase_integration": "yes"}, "compute_phase_integration", "'yes'"),
    ],
)
def test_invalid_settings_name_argument_value_and_what_is_allowed(kwargs: dict, argument: str, value: str) -> None:
    with pytest.raises(ValueError) as error:
        DynamicsConfig(**kwargs)
    message = str(error.value)
    assert f"`{argument}`" in message and value in message and "must be" in message


@pytest.mark.parametrize("layers", [123, 1.5, [], [123], "", None, {"fc": 1}])
def test_invalid_layer_selections(layers: object) -> None:
    with pytest.raises(ValueError, match="`layers`"):
        check_layers(layers)
    with pytest.raises(ValueError, match="`layers`"):
        DynamicsTracker(layers=layers)  # type: ignore[arg-type]


def test_monitor_validates_through_the_same_config() -> None:
    from lightning_dynamics import DynamicsMonitor

    for kwargs, argument in (
        ({"weights": (0.7, 0.2)}, "weights"),
        ({"h_opt": "0.7"}, "h_opt"),
        ({"layers": 123}, "layers"),
    ):
        with pytest.raises(ValueError, match=f"`{argument}`"):
            DynamicsMonitor(**kwargs)  # type: ignore[arg-type]
    assert DynamicsMonitor(window=24).config == DynamicsConfig(window=24)


@pytest.mark.parametrize("value", [0, -1.0, math.inf, math.nan, "60"])
def test_ddp_timeout_is_positive_seconds(value: object) -> None:
    from lightning_dynamics import DynamicsFabricMonitor, DynamicsMonitor

    for adapter in (DynamicsMonitor, DynamicsFabricMonitor):
        with pytest.raises(ValueError, match="`ddp_timeout` must be a finite number > 0"):
            adapter(ddp_timeout=value)  # type: ignore[arg-type]
    assert DynamicsMonitor(ddp_timeout=60).ddp_timeout == 60.0 and DynamicsMonitor().ddp_timeout is None


def test_config_is_frozen_and_hashable() -> None:
    config = DynamicsConfig()
    with pytest.raises(AttributeError):
        config.window = 20  # type: ignore[misc]
    assert hash(config) == hash(DynamicsConfig())


def test_defaults_are_the_functional_defaults() -> None:
    config = DynamicsConfig()
    stability = inspect.signature(F.stability_index).parameters
    assert config.window == stability["window"].default
    assert config.weights == tuple(stability["weights"].default)
    assert config.detrend == stability["detrend"].default and config.pad == stability["pad"].default
    assert config.h_opt == stability["h_opt"].default and config.sigma == stability["sigma"].default
    assert config.volatility_window == inspect.signature(F.rolling_volatility).parameters["window"].default
    measures = inspect.signature(F.dynamics_measures).parameters
    assert (config.h_opt, config.sigma) == (measures["h_opt"].default, measures["sigma"].default)


@pytest.mark.parametrize("adapter", ["DynamicsMonitor", "DynamicsFabricMonitor"])
def test_adapters_keep_typed_init_defaults_equal_to_the_config(adapter: str) -> None:
    import lightning_dynamics
    from lightning_dynamics.tracking.options import tracker_from_options

    cls = getattr(lightning_dynamics, adapter)
    parameters = inspect.signature(tracker_from_options).parameters  # the adapters take these as **options
    defaults = DynamicsConfig().to_dict()
    for name, value in defaults.items():  # every field is a typed argument with the config's default
        default = parameters[name].default
        assert (list(default) if isinstance(default, tuple) else default) == value, name
        assert parameters[name].annotation is not inspect.Parameter.empty
    assert cls(window=24, weights=[0.25, 0.75]).tracker.config == DynamicsConfig(window=24, weights=(0.25, 0.75))


NON_DEFAULTS = {
    "summary": "std",
    "detrend": "mean",
    "pad": None,
    "window": 20,
    "volatility_window": 3,
    "weights": (0.25, 0.75),
    "h_opt": 0.6,
    "sigma": 0.2,
    "history_window": 300,
    "compute_phase_integration": False,
    "every_n_steps": 7,
    "points_per_epoch": 3,
    "null_surrogates": 19,
    "complexity_every_n_samples": 4,
    "cost_budget": 0.2,
}


@pytest.mark.parametrize("adapter", ["DynamicsMonitor", "DynamicsFabricMonitor"])
def test_adapters_pass_every_config_field_to_the_config(adapter: str) -> None:
    import lightning_dynamics

    assert set(NON_DEFAULTS) == set(DynamicsConfig().to_dict())  # a new field needs a value here
    cls = getattr(lightning_dynamics, adapter)
    config = cls(**NON_DEFAULTS).tracker.config
    assert config == DynamicsConfig(**NON_DEFAULTS)
    assert all(getattr(config, k) != getattr(DynamicsConfig(), k) for k in NON_DEFAULTS)


def test_layers_key_has_no_memory_address() -> None:
    def keep(name: str, module: object) -> bool:
        return True

    assert "0x" not in layers_key(keep) and layers_key(keep).endswith("keep")
    assert layers_key(lambda n, m: True) == layers_key(lambda n, m: False)  # same place in the code
