"""Every cross-layer measure of a history in one pass, sharing detrending and phases.

This is what :class:`~lightning_dynamics.DynamicsMonitor` calls at each sample point; each field equals
the standalone function of the same name (tests check it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from lightning_dynamics.functional._checks import as_float_series, row_blocks
from lightning_dynamics.functional._layers import (
    MIN_PHASE_POINTS,
    few_layers_message,
    masked_layer_mean,
    order_parameter_from_phasors,
)
from lightning_dynamics.functional.detrend import EXCLUSION_REASONS, Exclusion, detrended_length
from lightning_dynamics.functional.detrend import detrend as detrend_series
from lightning_dynamics.functional.dfa import MIN_SCALES, dfa, dfa_scales, min_dfa_length
from lightning_dynamics.functional.hilbert import unit_phasors
from lightning_dynamics.functional.integration import H_OPT, SIGMA, integration_from_alpha
from lightning_dynamics.functional.phase_locking import N_THRESHOLDS, _phase_integration_from_phasors


class DynamicsMeasures(NamedTuple):
    """Cross-layer measures of one history ``[..., L, T]``; each tensor has the batch shape ``[...]``.

    Attributes:
        integration, integration_alpha, metastability, synchrony, phase_integration: as the functions of
            the same names (NaN where undefined; see ``reason``).
        n_excluded: layers left out (constant, non-finite or too many missing points, see :func:`detrend`).
        valid: ``[..., L]`` boolean, the layers that entered the measures.
        reason: ``None``, or why some measures are NaN (too few points; fewer than two valid layers for the
            cross-layer measures, or no valid layer for integration).
        exclusion: ``[..., L]`` int8, why each layer is excluded: an :class:`Exclusion` code (0 = kept).
        n_missing: ``[..., L]`` missing (non-finite) input points of each layer; bridged by interpolation in
            kept layers (see :func:`detrend`).
        exclusion_summary: ``None``, or the exclusions in words (e.g. ``"1 constant, 2 too many missing
            points"``), for logs and warnings.
    """

    integration: Tensor
    integration_alpha: Tensor
    metastability: Tensor
    synchrony: Tensor
    phase_integration: Tensor
    n_excluded: Tensor
    valid: Tensor
    reason: str | None
    exclusion: Tensor
    n_missing: Tensor
    exclusion_summary: str | None


def defined_from(detrend: str | None = "diff") -> dict[str, int]:
    """The history points before each cross-layer measure is first defined with ``detrend`` (NaN before).

    Counts points of the history ``x: [..., L, T]``; ``detrend="diff"`` leaves the estimators ``T - 1`` points, and
    their own shortest series are ``MIN_PHASE_POINTS`` (Hilbert phases) and :func:`min_dfa_length` (DFA, docs/method.md
    section 4).

    Example:
        >>> defined_from("diff")
        {'metastability': 5, 'synchrony': 5, 'phase_integration': 5, 'integration': 13}
    """
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

    Detrending and the Hilbert phases are computed once and shared. Runs on the device of ``x``; host
    synchronisations: the convergence test of the phase-integration component labelling, and one read of the
    per-layer exclusion codes to state the reasons. The cross-layer measures (metastability, synchrony,
    phase integration) need at least two valid layers and integration one (docs/method.md sections 3 and 5):
    with fewer they are NaN and ``reason`` says why; they are never 0 or 1 by default.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> out = dynamics_measures(torch.randn(12, 64, generator=g).cumsum(-1))
        >>> int(out.n_excluded), out.reason, out.exclusion_summary, bool(0 <= out.metastability <= 0.5)
        (0, None, None, True)
    """
    x = as_float_series(x, min_dim=2)
    batch, n_layers, n_points = x.shape[:-2], x.shape[-2], x.shape[-1]
    n = detrended_length(n_points, detrend)
    with_phases = n >= MIN_PHASE_POINTS
    with_dfa = scales is not None or len(dfa_scales(n)) >= MIN_SCALES
    rows = x.reshape(math.prod(batch) * n_layers, n_points)
    layers = _per_layer_stage(rows, detrend, pad, scales, order, with_phases, with_dfa)
    valid = layers.valid.reshape(*batch, n_layers)
    exclusion = layers.exclusion.reshape(*batch, n_layers)
    nan = torch.full(batch, float("nan"), dtype=x.dtype, device=x.device)
    reasons = []
    # One read of the exclusion codes; the checks below need more only when some layer is excluded.
    counts = torch.bincount(exclusion.reshape(-1).to(torch.int64), minlength=len(EXCLUSION_REASONS)).tolist()
    summary = ", ".join(f"{c} {EXCLUSION_REASONS[code]}" for code, c in enumerate(counts) if code and c) or None
    n_valid = valid.sum(dim=-1)
    all_kept = n_layers > 0 and counts[0] == valid.numel()
    few = None if all_kept and n_layers >= 2 else few_layers_message("the cross-layer measures", n_valid, n_layers)

    if with_phases:
        cos, sin = (part.reshape(*batch, n_layers, n) for part in (layers.cos, layers.sin))
        r = order_parameter_from_phasors(cos, sin, valid)
        meta, sync = r.std(dim=-1, correction=0), r.mean(dim=-1)
        phase_int = _phase_integration_from_phasors(cos, sin, valid, n_thresholds) if include_phase_integration else nan
    else:
        meta = sync = phase_int = nan
        reasons.append(f"phase measures need T >= {defined_from(detrend)['metastability']}, got T={n_points}")
    if with_phases and few is not None:
        reasons.append(few)

    if with_dfa:
        alpha = masked_layer_mean(layers.alpha.reshape(*batch, n_layers), valid)
        if not all_kept and not bool((n_valid > 0).all()):
            reasons.append(f"integration needs at least one valid layer; none of L={n_layers} is valid")
    else:
        alpha = nan
        reasons.append(f"integration (DFA) needs T >= {defined_from(detrend)['integration']}, got T={n_points}")
    return DynamicsMeasures(
        integration=integration_from_alpha(alpha, h_opt, sigma),
        integration_alpha=alpha,
        metastability=meta,
        synchrony=sync,
        phase_integration=phase_int,
        n_excluded=(~valid).sum(dim=-1),
        valid=valid,
        reason="; ".join(reasons) or None,
        exclusion=exclusion,
        n_missing=layers.n_missing.reshape(*batch, n_layers),
        exclusion_summary=summary,
    )


class _LayerStage(NamedTuple):
    valid: Tensor
    exclusion: Tensor
    n_missing: Tensor
    cos: Tensor
    sin: Tensor
    alpha: Tensor


def _per_layer_stage(
    rows: Tensor,
    detrend: str | None,
    pad: str | None,
    scales: Sequence[int] | None,
    order: int,
    with_phases: bool,
    with_dfa: bool,
) -> _LayerStage:
    """Detrending, unit phasors and DFA exponents of each row of ``rows: [R, T]``: everything that is per layer.

    Runs over blocks of rows (:func:`row_blocks`) so that on CPU one block goes through all three steps while
    it is in cache; the cross-layer measures then read the assembled phasors.
    """
    n = detrended_length(rows.shape[-1], detrend)
    valid = torch.empty(rows.shape[0], dtype=torch.bool, device=rows.device)
    exclusion = torch.empty(rows.shape[0], dtype=torch.int8, device=rows.device)
    n_missing = torch.empty(rows.shape[0], dtype=torch.int64, device=rows.device)
    cos = torch.empty(rows.shape[0], n if with_phases else 0, dtype=rows.dtype, device=rows.device)
    sin = torch.empty_like(cos)
    alpha = torch.empty(rows.shape[0] if with_dfa else 0, dtype=rows.dtype, device=rows.device)
    if rows.shape[-1] == 0:  # no sample point at all: every layer is all missing
        valid.fill_(False)
        exclusion.fill_(int(Exclusion.TOO_MANY_MISSING))
        n_missing.fill_(0)
        return _LayerStage(valid, exclusion, n_missing, cos, sin, alpha)
    start = 0
    for block in row_blocks(rows):
        stop = start + block.shape[0]
        d = detrend_series(block, detrend)
        valid[start:stop] = d.valid
        exclusion[start:stop] = d.exclusion
        n_missing[start:stop] = d.n_missing
        if with_phases:
            block_cos, block_sin = unit_phasors(d.series, pad=pad)
            cos[start:stop], sin[start:stop] = block_cos, block_sin
        if with_dfa:
            alpha[start:stop] = dfa(d.series, scales=scales, order=order)
        start = stop
    return _LayerStage(valid, exclusion, n_missing, cos, sin, alpha)
