"""The ``lightning-dynamics`` command: ``report`` draws one run's dashboard, ``compare`` overlays runs.

Both read the history that ``DynamicsMonitor`` saves (``<log_dir>/<prefix>_history.pt``), so they work whatever
logger the run used, and write a PNG and a self-contained HTML page::

    lightning-dynamics report runs/demo/version_0            # -> runs/demo/version_0/dynamics_dashboard.{png,html}
    lightning-dynamics report runs/demo/version_0 -o out/    # -> out/dynamics_dashboard.{png,html}
    lightning-dynamics compare runs/a runs/b -o cmp.png      # -> cmp.png, cmp.html
    python -m lightning_dynamics report RUN_DIR

``report`` names its files after the history (``<prefix>_history-v1.pt`` -> ``<prefix>_dashboard-v1.png``), as
the monitor does at fit end, so a run folder holds one dashboard figure. The printed table marks a measure whose
latest value is inside its noise floor with ``~`` and one computed on a short series with ``!``; below it, the findings
of a ``DynamicsDiagnosis`` that ran with the monitor (kind, layers, first seen, evidence, action), one line each.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from lightning_dynamics.measures.readings import relative_change_reading
from lightning_dynamics.measures.registry import MEASURES, measure_names
from lightning_dynamics.report.dashboard_data import (
    HistoryError,
    RunDashboard,
    comparability_notes,
    dashboard_stem,
    epoch_of,
    load_run,
    load_runs,
)
from lightning_dynamics.report.diagnosis_panel import findings_lines

_SUFFIXES = (".png", ".html")


def output_paths(out: Path | None, default_dir: Path, stem: str) -> tuple[Path, Path]:
    """``(png, html)`` paths: ``OUT.png``/``OUT.html`` if ``out`` ends in one of them, else ``out/stem.*``."""
    if out is not None and out.suffix.lower() in _SUFFIXES:
        base = out.with_suffix("")
    else:
        base = (out if out is not None else default_dir) / stem
    base.parent.mkdir(parents=True, exist_ok=True)
    return base.with_suffix(".png"), base.with_suffix(".html")


def table_keys() -> tuple[str, ...]:
    """Rows of the printed table: the relative change first (the reading to act on), then the registry's other
    default measures that have plot bounds or a noise floor (no counts)."""
    names = [n for n in measure_names("default") if MEASURES[n].bounds is not None or MEASURES[n].null is not None]
    return tuple(sorted(names, key=lambda name: name != "relative_change"))


def _flags(run: RunDashboard, key: str) -> str:
    reading = run.readings.get(key)
    if reading is None:
        return ""
    return ("~" if reading.inside_noise_floor else "") + ("!" if reading.short_series else "")


def summary_table(runs: list[RunDashboard]) -> str:
    """The text table that ``report`` and ``compare`` print: one row per measure, one column per run.

    Full measure names, the relative change first and what it says in words below the table; then the sample
    points, signal and plateau epochs, and each run's diagnosis findings (where a diagnosis ran). ``~`` after a
    value: it sits inside its noise floor (the 95% band of the
    measure on surrogates of the run's history); ``!``: computed on fewer points than the estimator's reliable
    minimum.
    """
    keys = table_keys()
    name_width = max(len(key) for key in (*keys, "plateau (epoch)"))
    width = max(10, *(len(run.label) for run in runs)) if runs else 10
    finals = [run.final_values() for run in runs]

    def row(name: str, cells: list[str]) -> str:
        return f"{name:<{name_width}}  " + "  ".join(f"{cell:>{width}}" for cell in cells)

    lines = [row("measure", [run.label for run in runs])]
    flagged = False
    for key in keys:
        cells = []
        for run, final in zip(runs, finals, strict=True):
            flags = _flags(run, key)
            flagged = flagged or bool(flags)
            cells.append(f"{final.get(key, math.nan):.4g}{flags:<2}")
        lines.append(row(key, cells))
    lines.append(row("points", [str(run.n_points) for run in runs]))
    lines.append(row("signal (epoch)", ["-" if r.signal_time is None else epoch_of(r.signal_time) for r in runs]))
    lines.append(row("plateau (epoch)", ["-" if r.plateau_time is None else epoch_of(r.plateau_time) for r in runs]))
    if flagged:
        lines.append("~ inside its noise floor (95% band of the measure on surrogates); ! short series")
    for run, final in zip(runs, finals, strict=True):
        value = final.get("relative_change", math.nan)
        if math.isfinite(value):
            lead = "relative_change" if len(runs) == 1 else f"{run.label}: relative_change"
            lines.append(f"{lead} {value:.3g}: {relative_change_reading(value)[1]}.")
    lines.extend(findings_lines(runs))
    lines.extend(comparability_notes(runs))
    return "\n".join(lines)


def run_report(run_dir: Path, out: Path | None = None) -> tuple[Path, Path]:
    """Write the dashboard of the run in ``run_dir`` (PNG and HTML); return their paths.

    Default: beside the history, named after it (``<prefix>_dashboard[-vN].png``), the file the monitor writes at
    fit end; ``out``: a directory, or a ``.png``/``.html`` path.
    """
    from lightning_dynamics.report.html import dashboard_html, write_html
    from lightning_dynamics.report.plots import figure_png, plot_dashboard

    run = load_run(run_dir)
    png_path, html_path = output_paths(out, run.history_path.parent, dashboard_stem(run.history_path))
    png = figure_png(plot_dashboard(run))
    png_path.write_bytes(png)
    write_html(dashboard_html([run], png, f"lightning-dynamics: {run.label}"), html_path)
    print(summary_table([run]))
    return png_path, html_path


def run_compare(run_dirs: list[Path], out: Path, progress: bool | None = None) -> tuple[Path, Path]:
    """Write the overlay of the runs in ``run_dirs`` (PNG and HTML); return their paths."""
    from lightning_dynamics.report.html import dashboard_html, write_html
    from lightning_dynamics.report.plots import figure_png, plot_comparison

    runs = load_runs(run_dirs, progress=progress)
    png_path, html_path = output_paths(out, Path.cwd(), "comparison")
    png = figure_png(plot_comparison(runs))
    png_path.write_bytes(png)
    write_html(dashboard_html(runs, png, f"lightning-dynamics: {len(runs)} runs"), html_path)
    print(summary_table(runs))
    return png_path, html_path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightning-dynamics", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{report,compare}")
    report = commands.add_parser("report", help="one run's dashboard (PNG + HTML)")
    report.add_argument("run_dir", type=Path, help="a log directory holding <prefix>_history.pt, or the file itself")
    report.add_argument(
        "-o", "--out", type=Path, default=None, help="output directory, or a .png/.html path (default: RUN_DIR)"
    )
    compare = commands.add_parser("compare", help="overlay several runs (PNG + HTML)")
    compare.add_argument("run_dirs", type=Path, nargs="+", help="log directories or history files, one per run")
    compare.add_argument("-o", "--out", type=Path, required=True, help="output directory, or a .png/.html path")
    compare.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``lightning-dynamics``; returns the exit status (2 for a missing or unreadable run)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        if args.command == "report":
            png, html = run_report(args.run_dir, args.out)
        else:
            png, html = run_compare(args.run_dirs, args.out, progress=False if args.no_progress else None)
    except (FileNotFoundError, HistoryError, ValueError) as error:
        print(f"lightning-dynamics {args.command}: error: {error}", file=sys.stderr)
        return 2
    print(f"figure: {png}\npage:   {html}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
