"""The shared context of one computation of the measures: what they all read, computed lazily and once.

A sample point's measures (and a batch of null histories' measures, for the noise floor) share the expensive passes:
detrending, Hilbert phases and DFA are computed once per history by
:func:`~lightning_dynamics.functional.dynamics_measures`. No Lightning import.
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from lightning_dynamics.functional import DynamicsMeasures, dynamics_measures, stability_index

if TYPE_CHECKING:
    from lightning_dynamics.measures.config import DynamicsConfig


class MeasureContext:
    """The shared context of one computation of the measures, built lazily and once: a history ``x: [..., L, T]``.

    Every :class:`~lightning_dynamics.measures.registry.Measure` computes from it, so the expensive passes
    (detrending, Hilbert phases, DFA) run once per history and are shared between measures.

    Args:
        x: the history (or a batch of null histories), on its device.
        config: the measures' settings; ``history_window`` is applied here.
    """

    def __init__(self, x: Tensor, config: DynamicsConfig) -> None:
        self.config = config
        self.full = x
        self.x = x if config.history_window is None else x[..., -config.history_window :]
        self.n_points = x.shape[-1]

    @cached_property
    def cross_layer(self) -> DynamicsMeasures:
        """Integration, alpha, metastability, synchrony and phase integration in one pass (shared phases)."""
        cfg = self.config
        return dynamics_measures(
            self.x,
            detrend=cfg.detrend,
            pad=cfg.pad,
            h_opt=cfg.h_opt,
            sigma=cfg.sigma,
            include_phase_integration=cfg.compute_phase_integration,
        )

    @cached_property
    def stability(self) -> Tensor:
        """The stability index of the last ``window`` points (docs/method.md section 6)."""
        cfg = self.config
        return stability_index(
            self.full[..., -cfg.window :],
            window=cfg.window,
            weights=cfg.weights,
            detrend=cfg.detrend,
            pad=cfg.pad,
            h_opt=cfg.h_opt,
            sigma=cfg.sigma,
        )[..., -1]

    def nan(self) -> Tensor:
        return torch.full(self.x.shape[:-2], math.nan, dtype=self.x.dtype, device=self.x.device)
