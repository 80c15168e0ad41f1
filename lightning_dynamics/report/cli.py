"""The ``lightning-dynamics`` command: ``report`` draws one run's dashboard, ``compare`` overlays runs.

Both read the history that ``DynamicsMonitor`` saves (``<log_dir>/<prefix>_history.pt``), so they work whatever
logger the run used, and write a PNG and a self-contained HTML page::

    lightning-dynamics report runs/demo/version_0            # -> runs/demo/version_0/dashboard.{png,html}
    lightning-dynamics report runs/demo/version_0 -o out/    # -> out/dashboard.{png,html}
    lightning-dynamics compare runs/a runs/b -o cmp.png      # -> cmp.png, cmp.html
    python -m lightning_dynamics report RUN_DIR

``lightning-dynamics-report RUN_DIR`` (the older entry point) is an alias of ``lightning-dynamics report``.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from lightning_dynamics.report.dashboard_data import HistoryError, RunDashboard, load_run, load_runs

_SUFFIXES = (".png", ".html")


def output_paths(out: Path | None, default_dir: Path, stem: str) -> tuple[Path, Path]:
    """``(png, html)`` paths: ``OUT.png``/``OUT.html`` if ``out`` ends in one of them, else ``out/stem.*``."""
    if out is not None and out.suffix.lower() in _SUFFIXES:
        base = out.with_suffix("")
    else:
        base = (out if out is not None else default_dir) / stem
    base.parent.mkdir(parents=True, exist_ok=True)
    return base.with_suffix(".png"), base.with_suffix(".html")


def _summary_table(runs: list[RunDashboard]) -> str:
    keys = ("integration", "metastability", "stability_index", "stability_volatility")
    width = max(12, *(len(run.label) for run in runs))
    lines = [f"{'run':<{width}} {'points':>6} " + " ".join(f"{k[:14]:>14}" for k in keys) + "  signal  plateau"]
    for run in runs:
        final = run.final_values()
        cells = " ".join(f"{final.get(k, math.nan):>14.4g}" for k in keys)
        signal = "-" if run.signal_time is None else f"{run.signal_time:g}"
        plateau = "-" if run.plateau_time is None else f"{run.plateau_time:g}"
        lines.append(f"{run.label:<{width}} {run.n_points:>6} {cells}  {signal:>6}  {plateau:>7}")
    return "\n".join(lines)


def run_report(run_dir: Path, out: Path | None = None) -> tuple[Path, Path]:
    """Write the dashboard of the run in ``run_dir`` (PNG and HTML); return their paths."""
    from lightning_dynamics.report.html import dashboard_html, write_html
    from lightning_dynamics.report.plots import figure_png, plot_dashboard

    run = load_run(run_dir)
    default_dir = run_dir if run_dir.is_dir() else run_dir.parent
    png_path, html_path = output_paths(out, default_dir, "dashboard")
    png = figure_png(plot_dashboard(run))
    png_path.write_bytes(png)
    write_html(dashboard_html([run], png, f"lightning-dynamics: {run.label}"), html_path)
    print(_summary_table([run]))
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
    print(_summary_table(runs))
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
    """Entry point of ``lightning-dynamics``; returns the exit status (2 for a missing or unreadable run).

    A first argument that is no command (``lightning-dynamics RUN_DIR``, as the older ``lightning-dynamics-report``
    was called) means ``report``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in ("report", "compare") and not argv[0].startswith("-"):
        argv = ["report", *argv]
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


def report_alias(argv: list[str] | None = None) -> int:
    """``lightning-dynamics-report RUN_DIR [-o OUT]``: the older entry point, now ``lightning-dynamics report``."""
    return main(["report", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
