"""Benchmark of ``lightning_dynamics.functional`` against a plain numpy/scipy reference loop.

What it measures: for every history size ``L`` layers x ``T`` sample points (L in 16, 64, 256; T in 64,
1024, 4096; a float32 random walk ``torch.randn(L, T).cumsum(-1)`` with a fixed seed), the wall time of

- each measure on its default settings: ``instantaneous_phase`` of the ``detrend``-ed series,
  ``metastability``, ``synchrony``, ``integration`` (DFA exponent included), ``phase_integration``,
  ``stability_index(x, window=16)`` (the full sliding-window series) and ``rolling_volatility`` of it;
- "default set": what ``DynamicsMonitor`` computes per sample point, ``dynamics_measures(x)`` plus the
  stability index of the last window only plus ``rolling_volatility`` of a length-T series;
- "default set + full stab.": ``dynamics_measures(x)`` plus the full stability series and its volatility.

Each is compared with a straightforward reference written here: a Python loop over layers in
numpy/scipy in float64 (``np.diff`` + z-score, ``scipy.signal.hilbert`` with reflect padding, Kuramoto R,
DFA with ``np.polyfit`` on the segments of each scale on the scales of ``dfa_scales``, PLV matrix and
``scipy.sparse.csgraph.connected_components`` over 100 thresholds, the stability index as a Python loop
over windows). The reference DFA fits all segments of one scale in one ``np.polyfit`` call, which is
faster than the per-segment loop of ``nolds.dfa`` and gives the same exponent, so the speed ratios are
conservative. The "check" column compares the torch result with the reference (abs tolerances: 1e-3 for
metastability, synchrony, integration and its alpha, the stability index and its volatility; 1e-2 for
phase integration and for the wrapped phase difference).

Times are medians over ``--repeats`` runs after one warm-up; on CUDA the device is synchronised before
and after each run. Reference cells estimated above ``--reference-cap`` seconds (the sliding-window
stability loop at large L and T) are timed on a subset of windows and extrapolated linearly; they are
marked "~".

Run::

    .venv/bin/python benchmarks/functional.py            # full grid, a few minutes on CPU
    .venv/bin/python benchmarks/functional.py --quick    # smoke run, a few seconds
    .venv/bin/python benchmarks/functional.py --device cuda
    .venv/bin/python benchmarks/functional.py --layers 256 --lengths 4096   # the goal cell only
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy
import torch
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import hilbert
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

import lightning_dynamics.functional as ldf
from lightning_dynamics import DynamicsConfig
from lightning_dynamics.measures.context import MeasureContext
from lightning_dynamics.measures.registry import compute_measures

LAYERS = (16, 64, 256)
LENGTHS = (64, 1024, 4096)
QUICK_LAYERS = (16, 64)
QUICK_LENGTHS = (64, 256)
SEED = 0
WINDOW = 16
VOLATILITY_WINDOW = 5
N_THRESHOLDS = 100
H_OPT, SIGMA = 0.70, 0.15
MAX_METASTABILITY = 0.5
GOAL_CELL = (256, 4096)
GOAL_MS = 200.0
GOAL_SPEEDUP = 5.0
PROBE_WINDOWS = 4
DEFAULT_SET = "default set"
DEFAULT_SET_FULL = "default set + full stab."

TOL_SCALAR = 1e-3
TOL_PHASE_INTEGRATION = 1e-2
TOL_PHASE = 1e-2


# --------------------------------------------------------------------------------------------------------
# Reference: a Python loop over layers in numpy / scipy, float64.
# --------------------------------------------------------------------------------------------------------


def ref_detrend(layer: np.ndarray) -> np.ndarray:
    """First differences, z-scored (population std)."""
    d = np.diff(layer)
    return (d - d.mean()) / d.std()


def ref_phase(d: np.ndarray) -> np.ndarray:
    """Hilbert phase with reflect padding by ``min(n - 1, n // 2)``, trimmed after the transform."""
    n = len(d)
    width = min(n - 1, n // 2)
    z = hilbert(np.pad(d, width, mode="reflect"))[width : width + n]
    return np.angle(z)


def ref_detrended_layers(x: np.ndarray) -> list[np.ndarray]:
    return [ref_detrend(layer) for layer in x]


def ref_phases(detrended: Sequence[np.ndarray]) -> np.ndarray:
    return np.stack([ref_phase(d) for d in detrended])


def ref_order_parameter(phases: np.ndarray) -> np.ndarray:
    return np.abs(np.exp(1j * phases).mean(axis=0))


def ref_dfa(d: np.ndarray, scales: Sequence[int]) -> float:
    """DFA1 exponent: linear fit per non-overlapping segment (all segments of a scale in one polyfit)."""
    profile = np.cumsum(d - d.mean())
    fluctuations = []
    for s in scales:
        segments = profile[: (len(profile) // s) * s].reshape(-1, s).T  # [s, n_segments]
        t = np.arange(s, dtype=np.float64)
        coefficients = np.polyfit(t, segments, 1)
        residual = segments - np.vander(t, 2) @ coefficients
        fluctuations.append(np.sqrt(np.mean(residual**2)))
    return float(np.polyfit(np.log(scales), np.log(fluctuations), 1)[0])


def ref_integration_alpha(detrended: Sequence[np.ndarray]) -> float:
    scales = ldf.dfa_scales(len(detrended[0]))
    return float(np.mean([ref_dfa(d, scales) for d in detrended]))


def ref_integration_from_alpha(alpha: float) -> float:
    return float(np.exp(-((alpha - H_OPT) ** 2) / (2 * SIGMA**2)))


def ref_phase_integration(phases: np.ndarray) -> float:
    """Mean over 100 thresholds of the largest connected component of {PLV > theta}, divided by L."""
    z = np.exp(1j * phases)
    plv = np.abs(z @ z.conj().T) / phases.shape[-1]
    fractions = []
    for k in range(N_THRESHOLDS):
        _, labels = connected_components(csr_matrix(plv > (k + 0.5) / N_THRESHOLDS), directed=False)
        fractions.append(np.bincount(labels).max() / len(plv))
    return float(np.mean(fractions))


def ref_metastability(x: np.ndarray) -> float:
    return float(ref_order_parameter(ref_phases(ref_detrended_layers(x))).std())


def ref_synchrony(x: np.ndarray) -> float:
    return float(ref_order_parameter(ref_phases(ref_detrended_layers(x))).mean())


def ref_integration(x: np.ndarray) -> float:
    return ref_integration_from_alpha(ref_integration_alpha(ref_detrended_layers(x)))


def ref_stability_value(segment: np.ndarray) -> float:
    detrended = ref_detrended_layers(segment)
    integration = ref_integration_from_alpha(ref_integration_alpha(detrended))
    meta = ref_order_parameter(ref_phases(detrended)).std()
    return 0.5 * integration + 0.5 * min(1.0, meta / MAX_METASTABILITY)


def ref_stability(x: np.ndarray, n_windows: int | None = None) -> np.ndarray:
    """Sliding-window stability index; NaN before the first window and after the first ``n_windows``."""
    n = x.shape[-1]
    out = np.full(n, np.nan)
    last = n if n_windows is None else min(n, WINDOW - 1 + n_windows)
    for t in range(WINDOW - 1, last):
        out[t] = ref_stability_value(x[:, t - WINDOW + 1 : t + 1])
    return out


def ref_volatility(s: np.ndarray) -> np.ndarray:
    out = np.full(len(s), np.nan)
    out[VOLATILITY_WINDOW - 1 :] = sliding_window_view(s, VOLATILITY_WINDOW).std(axis=-1)
    return out


def ref_core(x: np.ndarray) -> dict[str, float]:
    """What ``dynamics_measures`` computes, with detrending and phases shared."""
    detrended = ref_detrended_layers(x)
    phases = ref_phases(detrended)
    r = ref_order_parameter(phases)
    alpha = ref_integration_alpha(detrended)
    return {
        "metastability": float(r.std()),
        "synchrony": float(r.mean()),
        "integration_alpha": alpha,
        "integration": ref_integration_from_alpha(alpha),
        "phase_integration": ref_phase_integration(phases),
    }


def ref_default_set(x: np.ndarray, s: np.ndarray) -> dict[str, Any]:
    out: dict[str, Any] = ref_core(x)
    out["stability_last"] = ref_stability_value(x[:, -WINDOW:])
    out["volatility"] = ref_volatility(s)
    return out


# --------------------------------------------------------------------------------------------------------
# Torch side.
# --------------------------------------------------------------------------------------------------------


def torch_default_set(x: torch.Tensor, s: torch.Tensor) -> dict[str, Any]:
    # Exactly what the tracker computes at a sample point (the registry's default measures; noise floors apart).
    config = DynamicsConfig(window=WINDOW, volatility_window=VOLATILITY_WINDOW)
    out = compute_measures(MeasureContext(x, config), config.measure_names())
    keys = ("metastability", "synchrony", "integration_alpha", "integration", "phase_integration")
    return {
        **{key: out[key] for key in keys},
        "stability_last": out["stability_index"],
        "volatility": ldf.rolling_volatility(s, window=VOLATILITY_WINDOW),
    }


def torch_default_set_full(x: torch.Tensor) -> tuple[Any, torch.Tensor, torch.Tensor]:
    measures = ldf.dynamics_measures(x)
    s = ldf.stability_index(x, window=WINDOW)
    return measures, s, ldf.rolling_volatility(s, window=VOLATILITY_WINDOW)


# --------------------------------------------------------------------------------------------------------
# Timing.
# --------------------------------------------------------------------------------------------------------


@dataclass
class Timing:
    ms: float
    estimated: bool = False


@dataclass
class Row:
    measure: str
    layers: int
    length: int
    torch: Timing
    reference: Timing
    check: str


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], Any], repeats: int, device: torch.device, warmup: bool = True) -> tuple[float, Any]:
    """Median wall time in ms of ``fn()`` over ``repeats`` runs, and the output of the last run."""
    if warmup:
        fn()
    times, out = [], None
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        out = fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times), out


def measure_windowed(fn: Callable[[int], Any], n_windows: int, repeats: int, cap_s: float) -> tuple[Timing, Any]:
    """Time ``fn(n)``, the first ``n`` of ``n_windows`` windows; extrapolate if all would exceed ``cap_s``.

    A probe over a few windows doubles as the warm-up and estimates the cost per window; if the full
    loop would exceed ``cap_s`` seconds, only as many windows as fit in a tenth of it are timed.
    """
    cpu = torch.device("cpu")
    probe = min(n_windows, PROBE_WINDOWS)
    probe_ms, _ = measure(lambda: fn(probe), 1, cpu, warmup=False)
    per_window_s = probe_ms / 1e3 / probe
    n = n_windows
    if per_window_s * n_windows > cap_s:
        n = max(probe, min(n_windows, int(0.1 * cap_s / per_window_s)))
    ms, out = measure(lambda: fn(n), repeats, cpu, warmup=False)
    return Timing(ms * n_windows / n, estimated=n < n_windows), out


# --------------------------------------------------------------------------------------------------------
# Checks.
# --------------------------------------------------------------------------------------------------------


def to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64)


def close(actual: Any, expected: Any, tol: float) -> bool:
    """Equal within ``tol`` where the expected value is finite; NaN where it is NaN."""
    a, e = np.broadcast_arrays(to_numpy(actual), to_numpy(expected))
    finite = np.isfinite(e)
    return bool(np.all(np.abs(a[finite] - e[finite]) <= tol) and np.all(np.isnan(a[~finite])))


def close_where_computed(actual: Any, expected: np.ndarray, tol: float) -> bool:
    """As :func:`close`, but only the leading NaNs and the finite entries of a (partial) reference count."""
    a = to_numpy(actual)
    finite = np.isfinite(expected)
    return bool(np.all(np.isnan(a[: WINDOW - 1])) and np.all(np.abs(a[finite] - expected[finite]) <= tol))


def phases_close(actual: Any, expected: np.ndarray, tol: float) -> bool:
    difference = np.angle(np.exp(1j * (to_numpy(actual) - expected)))
    return bool(np.abs(difference).max() <= tol)


def default_set_close(actual: dict[str, Any], expected: dict[str, Any]) -> bool:
    tolerances = {
        "metastability": TOL_SCALAR,
        "synchrony": TOL_SCALAR,
        "integration_alpha": TOL_SCALAR,
        "integration": TOL_SCALAR,
        "phase_integration": TOL_PHASE_INTEGRATION,
        "stability_last": TOL_SCALAR,
        "volatility": TOL_SCALAR,
    }
    return all(close(actual[key], expected[key], tol) for key, tol in tolerances.items())


def verdict(ok: bool) -> str:
    return "ok" if ok else "FAIL"


# --------------------------------------------------------------------------------------------------------
# One (L, T) cell.
# --------------------------------------------------------------------------------------------------------


@dataclass
class Case:
    """A measure: the torch call, the reference call and how to compare their outputs."""

    name: str
    torch_fn: Callable[[], Any]
    reference_fn: Callable[[], Any]
    compare: Callable[[Any, Any], bool]


def history(layers: int, length: int, device: torch.device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(SEED)
    return torch.randn(layers, length, generator=generator, dtype=torch.float32).cumsum(-1).to(device)


def simple_cases(x: torch.Tensor, xn: np.ndarray) -> list[Case]:
    return [
        Case(
            "instantaneous_phase",
            lambda: ldf.instantaneous_phase(ldf.detrend(x).series),
            lambda: ref_phases(ref_detrended_layers(xn)),
            lambda a, e: phases_close(a, e, TOL_PHASE),
        ),
        Case(
            "metastability",
            lambda: ldf.metastability(x),
            lambda: ref_metastability(xn),
            lambda a, e: close(a, e, TOL_SCALAR),
        ),
        Case(
            "synchrony",
            lambda: ldf.synchrony(x),
            lambda: ref_synchrony(xn),
            lambda a, e: close(a, e, TOL_SCALAR),
        ),
        Case(
            "integration",
            lambda: ldf.integration(x),
            lambda: ref_integration(xn),
            lambda a, e: close(a, e, TOL_SCALAR),
        ),
        Case(
            "phase_integration",
            lambda: ldf.phase_integration(x),
            lambda: ref_phase_integration(ref_phases(ref_detrended_layers(xn))),
            lambda a, e: close(a, e, TOL_PHASE_INTEGRATION),
        ),
    ]


def bench_cell(layers: int, length: int, device: torch.device, repeats: int, cap_s: float) -> list[Row]:
    x = history(layers, length, device)
    xn = x.detach().cpu().double().numpy()
    s = ldf.stability_index(x, window=WINDOW)  # input of the volatility rows
    sn = to_numpy(s)
    n_windows = length - WINDOW + 1
    rows = []

    def add(name: str, torch_ms: float, reference: Timing, check: str) -> None:
        rows.append(Row(name, layers, length, Timing(torch_ms), reference, check))

    for case in simple_cases(x, xn):
        torch_ms, actual = measure(case.torch_fn, repeats, device)
        ref_ms, expected = measure(case.reference_fn, repeats, torch.device("cpu"))
        add(case.name, torch_ms, Timing(ref_ms), verdict(case.compare(actual, expected)))

    torch_ms, actual = measure(lambda: ldf.stability_index(x, window=WINDOW), repeats, device)
    stability_ref, expected = measure_windowed(lambda n: ref_stability(xn, n), n_windows, repeats, cap_s)
    add(
        "stability_index",
        torch_ms,
        stability_ref,
        verdict(close_where_computed(actual, expected, TOL_SCALAR)),
    )

    torch_ms, actual = measure(lambda: ldf.rolling_volatility(s, window=VOLATILITY_WINDOW), repeats, device)
    ref_ms, expected = measure(lambda: ref_volatility(sn), repeats, torch.device("cpu"))
    add("rolling_volatility", torch_ms, Timing(ref_ms), verdict(close(actual, expected, TOL_SCALAR)))

    torch_ms, actual = measure(lambda: torch_default_set(x, s), repeats, device)
    ref_ms, expected = measure(lambda: ref_default_set(xn, sn), repeats, torch.device("cpu"))
    add(DEFAULT_SET, torch_ms, Timing(ref_ms), verdict(default_set_close(actual, expected)))

    # Reference of the last row: the shared core and the volatility, plus the stability loop timed above.
    torch_ms, _ = measure(lambda: torch_default_set_full(x), repeats, device)
    core_ms, _ = measure(lambda: (ref_core(xn), ref_volatility(sn)), repeats, torch.device("cpu"))
    full_ref = Timing(core_ms + stability_ref.ms, stability_ref.estimated)
    add(DEFAULT_SET_FULL, torch_ms, full_ref, "-")
    return rows


# --------------------------------------------------------------------------------------------------------
# Report.
# --------------------------------------------------------------------------------------------------------


def format_ms(timing: Timing) -> str:
    return f"{'~' if timing.estimated else ''}{timing.ms:.2f}"


def format_ratio(row: Row) -> str:
    return f"{'~' if row.reference.estimated else ''}{row.reference.ms / row.torch.ms:.1f}x"


def load_average() -> str:
    """The 1-minute load average, or "n/a" where the platform has none (timings suffer from other load)."""
    return f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "n/a"


def print_header(args: argparse.Namespace) -> None:
    print(
        f"lightning_dynamics.functional benchmark | torch {torch.__version__}, numpy {np.__version__}, "
        f"scipy {scipy.__version__} | device {args.device}, torch threads {torch.get_num_threads()}, "
        f"CPUs {os.cpu_count()} | {platform.processor() or platform.machine()} | repeats {args.repeats} "
        f"(median) | input float32 random walk, seed {SEED} | load average {load_average()}"
    )


def print_table(rows: Sequence[Row], device: str) -> None:
    torch_label = f"torch ms ({device})"
    header = f"{'measure':<26} {'L':>4} {'T':>5} {torch_label:>16} {'reference ms':>13} {'ratio':>9}  check"
    print(header)
    print("-" * len(header))
    previous = None
    for row in rows:
        if previous is not None and (row.layers, row.length) != previous:
            print()
        previous = (row.layers, row.length)
        print(
            f"{row.measure:<26} {row.layers:>4} {row.length:>5} {format_ms(row.torch):>16} "
            f"{format_ms(row.reference):>13} {format_ratio(row):>9}  {row.check}"
        )


def print_footnotes(rows: Sequence[Row], cap_s: float) -> None:
    print()
    print(f"load average at the end: {load_average()} (other CPU load inflates the torch times most).")
    print("ratio = reference ms / torch ms. Reference: Python loop over layers in numpy/scipy (float64).")
    if any(row.reference.estimated for row in rows):
        print(
            f"~ : reference estimated above {cap_s:g} s; the sliding-window stability loop was timed on a "
            "subset of windows and extrapolated linearly to all windows (check compares the computed windows "
            "only)."
        )
    print(
        f"'{DEFAULT_SET}' = dynamics_measures(x) + stability_index(x[..., -{WINDOW}:], window={WINDOW}) + "
        "rolling_volatility of a length-T series (what the monitor computes per sample point)."
    )
    print(
        f"'{DEFAULT_SET_FULL}' = dynamics_measures(x) + stability_index(x, window={WINDOW}) + its "
        "rolling_volatility; its reference time is the shared core + volatility plus the stability_index row."
    )
    print(
        f"check: torch vs reference, abs tol {TOL_SCALAR:g} (M, sync, integration, alpha, stability, "
        f"volatility), {TOL_PHASE_INTEGRATION:g} (phase integration, wrapped phase)."
    )


def print_goal(rows: Sequence[Row]) -> None:
    layers, length = GOAL_CELL
    goal = [r for r in rows if r.measure == DEFAULT_SET and (r.layers, r.length) == GOAL_CELL]
    if not goal:
        print(f"GOAL not evaluated: the '{DEFAULT_SET}' cell L={layers}, T={length} was not run.")
        return
    row = goal[0]
    speedup = row.reference.ms / row.torch.ms
    met = row.torch.ms <= GOAL_MS and speedup >= GOAL_SPEEDUP and row.check == "ok"
    print(
        f"GOAL {'MET' if met else 'NOT MET'}: '{DEFAULT_SET}' at L={layers}, T={length} takes "
        f"{row.torch.ms:.1f} ms (target <= {GOAL_MS:g} ms) and is {speedup:.1f}x faster than the reference "
        f"loop (target >= {GOAL_SPEEDUP:g}x), check {row.check}."
    )


# --------------------------------------------------------------------------------------------------------
# Entry point.
# --------------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run (L in 16, 64; T in 64, 256)")
    parser.add_argument("--device", default="cpu", help="torch device: cpu (default) or cuda")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per cell; the median is reported")
    parser.add_argument("--layers", type=int, nargs="+", help=f"L values (default {LAYERS})")
    parser.add_argument("--lengths", type=int, nargs="+", help=f"T values (default {LENGTHS})")
    parser.add_argument(
        "--reference-cap",
        type=float,
        default=None,
        help="seconds above which a reference loop is extrapolated from a subset (30; 1 with --quick)",
    )
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda requested but CUDA is not available")
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.reference_cap is None:
        args.reference_cap = 1.0 if args.quick else 30.0
    if any(n < WINDOW for n in args.lengths or ()):
        parser.error(f"--lengths must be >= the stability window {WINDOW}")
    args.layers = tuple(args.layers or (QUICK_LAYERS if args.quick else LAYERS))
    args.lengths = tuple(args.lengths or (QUICK_LENGTHS if args.quick else LENGTHS))
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    print_header(args)
    rows: list[Row] = []
    for layers in args.layers:
        for length in args.lengths:
            rows.extend(bench_cell(layers, length, device, args.repeats, args.reference_cap))
    print_table(rows, args.device)
    print_footnotes(rows, args.reference_cap)
    print_goal(rows)


if __name__ == "__main__":
    main()
