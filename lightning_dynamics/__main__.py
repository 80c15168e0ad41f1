"""``python -m lightning_dynamics report RUN_DIR`` / ``compare RUN_DIR... -o OUT``: see :mod:`.report.cli`."""

from lightning_dynamics.report.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
