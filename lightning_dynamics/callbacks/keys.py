"""Who produces a logged key: the one owner of key names for the callbacks that consume a monitor's values.

A consumer (early stopping, checkpointing) names a measure and a prefix, or a full ``<prefix>/<measure>`` key;
:func:`find_producer` returns the :class:`DynamicsMonitor` that logs it, or raises (``strict``) / warns when no
monitor does (a typo, another prefix, or no monitor at all).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from lightning.pytorch.utilities import rank_zero_warn

from lightning_dynamics.callbacks.monitor import DynamicsMonitor
from lightning_dynamics.validation import check_prefix

# The default rule's name (its `monitor`). The stopper computes its own statistic from the monitor's history (on
# per-epoch means, over `window_epochs` epochs) and logs it, with its p-value, under the monitor's prefix as
# STOPPING_STATISTIC and STOPPING_P_VALUE; the monitor's own `relative_change` is the same quantity on the raw
# sample points over `window` points, for the dashboard.
RELATIVE_CHANGE = "relative_change"
STOPPING_STATISTIC = "stopping_relative_change"
STOPPING_P_VALUE = "stopping_p_value"


def full_key(monitor: str, prefix: str) -> str:
    """``monitor`` if it already holds a prefix (``"dynamics/stability_index"``), else ``<prefix>/<monitor>``.

    Example:
        >>> full_key("stability_volatility", "dynamics"), full_key("probe/metastability", "dynamics")
        ('dynamics/stability_volatility', 'probe/metastability')
    """
    if not isinstance(monitor, str) or not monitor:
        raise ValueError(f"`monitor` must be a measure name or a '<prefix>/<measure>' key, got {monitor!r}.")
    check_prefix("prefix", prefix)  # the one prefix rule of the package
    return monitor if "/" in monitor else f"{prefix}/{monitor}"


def find_producer(callbacks: Iterable[Any], key: str, consumer: str, strict: bool) -> DynamicsMonitor | None:
    """The :class:`DynamicsMonitor` among ``callbacks`` that logs ``key``.

    Raises:
        ValueError: with ``strict``, when no monitor logs ``key``; the message lists the keys that exist and the
            closest match. Without ``strict`` it warns instead and returns ``None`` (the key may come from
            elsewhere, e.g. the LightningModule).
    """
    monitors = [c for c in callbacks if isinstance(c, DynamicsMonitor)]
    for monitor in monitors:
        if key in monitor.keys:
            return monitor
    available = [k for m in monitors for k in m.keys]
    close = difflib.get_close_matches(key, available, n=1)
    message = (
        f"{consumer} monitors {key!r}, but "
        + (
            f"no DynamicsMonitor logs it (their keys: {available})"
            if monitors
            else "there is no DynamicsMonitor among the Trainer's callbacks"
        )
        + (f"; did you mean {close[0]!r}?" if close else ".")
    )
    if strict:
        raise ValueError(message + " Pass strict=False if another callback or the module logs this key.")
    rank_zero_warn(message + " Waiting for it to be logged by something else (strict=False).")
    return None


def find_producer_by_prefix(
    callbacks: Iterable[Any], prefix: str, consumer: str, strict: bool
) -> DynamicsMonitor | None:
    """The :class:`DynamicsMonitor` among ``callbacks`` whose ``prefix`` is ``prefix`` (its history is the input).

    Raises:
        ValueError: with ``strict``, when no monitor has that prefix; the message lists the keys that exist. Without
            ``strict`` it warns instead and returns ``None`` (nothing is checked until a monitor exists).
    """
    monitors = [c for c in callbacks if isinstance(c, DynamicsMonitor)]
    for monitor in monitors:
        if monitor.prefix == prefix:
            return monitor
    message = f"{consumer} reads the history of the DynamicsMonitor with prefix {prefix!r}, but " + (
        f"no DynamicsMonitor has that prefix (their keys: {[k for m in monitors for k in m.keys]})."
        if monitors
        else "there is no DynamicsMonitor among the Trainer's callbacks."
    )
    if strict:
        raise ValueError(message + " Add one, or pass the prefix of the one you have.")
    rank_zero_warn(message + " Nothing is checked (strict=False).")
    return None
