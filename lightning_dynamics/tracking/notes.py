"""What the tracker says once per run: layers in trouble, measures left undefined, series too short (no Lightning
import).

A monitor that repeats itself at every sample point is noise in a training log, so each note is said once per
subject (a layer and its kind of trouble, a reason, a measure) until :meth:`TrackerNotes.forget` (a fresh history).
The :class:`~lightning_dynamics.tracking.tracker.DynamicsTracker` decides what happened; these notes only word it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from lightning_dynamics.functional.reliability import NEVER_RELIABLE
from lightning_dynamics.measures.config import DynamicsConfig
from lightning_dynamics.measures.registry import MEASURES


class TrackerNotes:
    """The once-said warnings and information of one tracker.

    Args:
        prefix: the tracker's prefix (``DynamicsTracker[<prefix>]`` opens every note).
        warn: where warnings go (the Lightning adapter passes its rank-zero function).
        info: where information goes.

    Example:
        >>> said = []
        >>> notes = TrackerNotes("dynamics", warn=said.append, info=said.append)
        >>> notes.layers(["fc1", "fc2"], missing=[0, 0], never_called=[1, 0], disabled=[0, 0], excluded=[0, 0])
        >>> notes.layers(["fc1", "fc2"], missing=[0, 0], never_called=[1, 0], disabled=[0, 0], excluded=[0, 0])
        >>> len(said), said[0][:48]
        (1, "DynamicsTracker[dynamics]: layers 'fc1' were not")
    """

    def __init__(self, prefix: str, warn: Callable[[str], None], info: Callable[[str], None]) -> None:
        self.prefix, self.warn, self.info = prefix, warn, info
        self.said: set[tuple[str, str]] = set()

    def forget(self) -> None:
        """Say everything again from now on (a fresh history)."""
        self.said = set()

    def _first(self, subject: str, detail: str) -> bool:
        """Whether this is the first time ``(subject, detail)`` comes up; it is remembered."""
        if (subject, detail) in self.said:
            return False
        self.said.add((subject, detail))
        return True

    def no_batch_ends(self, points_per_epoch: int) -> None:
        """Several points per epoch were asked for, but no batch end was reported in the epoch."""
        if self._first("batches", ""):
            self.warn(
                f"DynamicsTracker[{self.prefix}]: points_per_epoch={points_per_epoch}, but no batch "
                "end was reported in this epoch, so it has one sample point. Call batch_end after each batch "
                "(Fabric: on_train_batch_end with batch_idx and n_batches) for sub-epoch points. Said once."
            )

    def reason(self, reason: str | None, n_points: int, config: DynamicsConfig) -> None:
        """Say once why measures that should be defined by now are NaN (e.g. fewer than 2 valid layers)."""
        defined = config.defined_from()
        if reason is None or n_points < max(defined["metastability"], defined["integration"]):
            return  # too few points yet: announced once, not a problem
        if self._first("reason", reason):
            self.warn(f"DynamicsTracker[{self.prefix}]: some measures are undefined and not logged: {reason}.")

    def short_series(
        self, values: Mapping[str, float], n_points: int, config: DynamicsConfig, measure_names: Sequence[str]
    ) -> None:
        """Say once per measure when it is computed on fewer points than its estimator needs to be reliable."""
        window = n_points if config.history_window is None else min(n_points, config.history_window)
        short = []
        for name in measure_names:
            reliable_from = MEASURES[name].reliable_from
            if (
                reliable_from is not None
                and not math.isnan(values.get(name, math.nan))
                and window < reliable_from
                and self._first("short", name)
            ):
                short.append(
                    f"{name} (not reliable at any length measured, up to 1000)"
                    if reliable_from >= NEVER_RELIABLE
                    else f"{name} (reliable from {reliable_from})"
                )
        if short:
            self.info(
                f"DynamicsTracker[{self.prefix}]: computed on {window} sample points, fewer than their estimators "
                f"need: {', '.join(short)}. Hold them beside their noise floor. Said once per measure."
            )

    def floors_thinned(self, floor_seconds: float, epoch_seconds: float, budget: float) -> None:
        """Say once that the cost budget spaces the noise floors out, with what they cost against an epoch."""
        if self._first("budget", "floors"):
            self.info(
                f"DynamicsTracker[{self.prefix}]: noise floors take {1e3 * floor_seconds:.0f} ms against "
                f"{1e3 * epoch_seconds:.0f} ms of training an epoch: computed only while the monitor's own work "
                f"stays within cost_budget={budget:g} of training time, and at the last point (cost_budget=None: "
                "every epoch). Said once."
            )

    def layers(
        self,
        layer_names: Sequence[str],
        missing: Sequence[float],
        never_called: Sequence[float],
        disabled: Sequence[float],
        excluded: Sequence[float],
    ) -> None:
        """Name each layer once per kind of trouble; one warning per kind and sample point lists them all.

        Args:
            layer_names: the ``L`` watched layers.
            missing, never_called, disabled, excluded: ``[L]`` flags (non-zero: the layer had that trouble), the
                first that applies names the kind.
        """
        kinds = {
            "never_called": "were not called (or produced no floating-point tensor) in a sample interval; "
            "those points are missing",
            "disabled": "were disabled after their capture failed on some process (see its warning); their points "
            "are missing on every process from then on",
            "nonfinite": f"produced NaN/Inf activations in a sample interval; those points are missing "
            f"({self.prefix}/nonfinite)",
            "excluded": f"are excluded from the measures (zero variance, or too many missing points; counted in "
            f"{self.prefix}/n_excluded)",
        }
        new: dict[str, list[str]] = {kind: [] for kind in kinds}
        for index, name in enumerate(layer_names):
            if disabled[index]:
                kind = "disabled"
            elif never_called[index]:
                kind = "never_called"
            elif missing[index]:
                kind = "nonfinite"
            elif excluded[index]:
                kind = "excluded"
            else:
                continue
            if self._first(name, kind):
                new[kind].append(name)
        for kind, names in new.items():
            if names:
                shown = ", ".join(repr(n) for n in names[:20]) + (
                    f" and {len(names) - 20} more" if len(names) > 20 else ""
                )
                self.warn(f"DynamicsTracker[{self.prefix}]: layers {shown} {kinds[kind]}. Said once per layer.")
