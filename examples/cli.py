"""LightningCLI over the digits classifier, with DynamicsMonitor and DynamicsEarlyStopping configured in YAML.

Run (needs an installed ``lightning-dynamics[examples]`` and ``jsonargparse[signatures]``; the task lives beside
this file, in ``digits.py``)::

    .venv/bin/python examples/cli.py fit --config examples/cli_config.yaml
    .venv/bin/python examples/cli.py fit --config examples/cli_config.yaml --trainer.max_epochs=20
    .venv/bin/python examples/cli.py fit --model.model=SmallMLP --trainer.callbacks+=DynamicsMonitor

The callbacks can be named by their short class name (``DynamicsMonitor``, ``DynamicsEarlyStopping``) once
``lightning_dynamics.callbacks`` is imported: jsonargparse resolves a short name among the imported subclasses of
``lightning.pytorch.Callback``. Every ``__init__`` argument of the callbacks is typed, so a wrong value
(``summary: maximum``) is rejected before training starts.
"""

from __future__ import annotations

from digits import DigitsDataModule, ImageClassifier, SmallCNN, SmallMLP  # noqa: F401  (short model names)
from lightning.pytorch.cli import LightningCLI

import lightning_dynamics.callbacks  # noqa: F401  (imported so that the short callback names resolve)


def main(args: list[str] | None = None) -> LightningCLI:
    """Build the CLI from ``args`` (the command line when ``None``) and run the chosen subcommand."""
    return LightningCLI(ImageClassifier, DigitsDataModule, args=args, save_config_kwargs={"overwrite": True})


if __name__ == "__main__":
    main()
