"""``lightning-dynamics-report LOG_DIR``: print the per-epoch dynamics of a run and save its figure."""

from __future__ import annotations

import argparse
from pathlib import Path

from lightning_dynamics.report.logs import epoch_metrics, read_metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("log_dir", type=Path, help="a CSVLogger directory holding metrics.csv")
    parser.add_argument("--out", type=Path, default=None, help="figure path (default: LOG_DIR/dynamics.png)")
    args = parser.parse_args(argv)
    per_epoch = epoch_metrics(read_metrics(args.log_dir))
    keys = [c for c in per_epoch.columns if c.startswith("dynamics/") or c in ("val_acc", "val_loss")]
    print(per_epoch[keys].to_string(float_format=lambda v: f"{v:.4f}"))
    from lightning_dynamics.report.plots import plot_dynamics

    out = args.out or Path(args.log_dir) / "dynamics.png"
    plot_dynamics(per_epoch, path=out)
    print(f"figure: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
