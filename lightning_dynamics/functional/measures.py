"""Every cross-layer measure of a history in one pass, sharing detrending and phases.

This is what :class:`~lightning_dynamics.DynamicsMonitor` calls at each sample point; each field equals
the standalone function of the same name (tests check it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from lightning_dynamics.functional._checks import as_float_series
from lightning_dynamics.functional.detrend import detrend as detrend_series
from lightning_dynamics.functional.detrend import detrended_length
from lightning_dynamics.functional.dfa import MIN_SCALES, dfa, dfa_scales, min_dfa_length
from lightning_dynamics.functional.hilbert import instantaneous_phase
from lightning_dynamics.functional.integration import (
    H_OPT,
    N_THRESHOLDS,
    SIGMA,
    integration_from_alpha,
    masked_layer_mean,
    phase_integration_from_phases,
)
from lightning_dynamics.functional.kuramoto import MIN_PHASE_POINTS, kuramoto_order_parameter


class DynamicsMeasures(NamedTuple):
    """Cross-layer measures of one history ``[..., L, T]``; each tensor has the batch shape ``[...]``.

    Attributes:
        integration, integration_alpha, metastability, synchrony, phase_integration: as the functions of
            the same names (NaN where undefined; see ``reason``).
        n_excluded: layers left out (zero variance or too many non-finite points, see :func:`detrend`).
        valid: ``[..., L]`` boolean, the layers that entered the measures.
        reason: ``None``, or why some measures are NaN for every batch element (too few points).
    """

    integration: Tensor
    integration_alpha: Tensor
    metastability: Tensor
    synchrony: Tensor
    phase_integration: Tensor
    n_excluded: Tensor
    valid: Tensor
    reason: str | None


def min_points(detrend: str | None = "diff") -> dict[str, int]:
    """Fewest sample points each measure needs with ``detrend`` (before it, it is NaN)."""
    extra = 1 if detrend == "diff" else 0
    return {
        "metastability": MIN_PHASE_POINTS + extra,
        "synchrony": MIN_PHASE_POINTS + extra,
        "phase_integration": MIN_PHASE_POINTS + extra,
        "integration": min_dfa_length() + extra,
    }


def dynamics_measures(
    x: Tensor,
    detrend: str | None = "diff",
    pad: str | None = "reflect",
    scales: Sequence[int] | None = None,
    order: int = 1,
    h_opt: float = H_OPT,
    sigma: float = SIGMA,
    n_thresholds: int = N_THRESHOLDS,
    include_phase_integration: bool = True,
) -> DynamicsMeasures:
    """Compute integration, its alpha, metastability, synchrony and phase integration of ``x: [..., L, T]``.

    Detrending and the Hilbert phases are computed once and shared. Runs on the device of ``x`` with no
    host synchronisation except the convergence test of the phase-integration component labelling.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> out = dynamics_measures(torch.randn(12, 64, generator=g).cumsum(-1))
        >>> sorted(k for k in out._fields)[:3], int(out.n_excluded), out.reason
        (['integration', 'integration_alpha', 'metastability'], 0, None)
    """
    x = as_float_series(x, min_dim=2)
    d = detrend_series(x, detrend)
    batch = d.valid.shape[:-1]
    nan = torch.full(batch, float("nan"), dtype=d.series.dtype, device=d.series.device)
    n_excluded = (~d.valid).sum(dim=-1)
    n = detrended_length(x.shape[-1], detrend)
    reasons = []

    if n >= MIN_PHASE_POINTS:
        phases = instantaneous_phase(d.series, pad=pad)
        r = kuramoto_order_parameter(phases, d.valid)
        meta, sync = r.std(dim=-1, correction=0), r.mean(dim=-1)
        phase_int = phase_integration_from_phases(phases, d.valid, n_thresholds) if include_phase_integration else nan
    else:
        meta = sync = phase_int = nan
        reasons.append(f"phase measures need T >= {min_points(detrend)['metastability']}, got T={x.shape[-1]}")

    if scales is not None or len(dfa_scales(n)) >= MIN_SCALES:
        alpha = masked_layer_mean(dfa(d.series, scales=scales, order=order), d.valid)
    else:
        alpha = nan
        reasons.append(f"integration (DFA) needs T >= {min_points(detrend)['integration']}, got T={x.shape[-1]}")
    return DynamicsMeasures(
        integration=integration_from_alpha(alpha, h_opt, sigma),
        integration_alpha=alpha,
        metastability=meta,
        synchrony=sync,
        phase_integration=phase_int,
        n_excluded=n_excluded,
        valid=d.valid,
        reason="; ".join(reasons) or None,
    )
