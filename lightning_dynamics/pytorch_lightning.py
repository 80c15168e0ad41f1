"""The Lightning callbacks for users of the standalone ``pytorch_lightning`` package.

``lightning`` ships PyTorch Lightning as ``lightning.pytorch``; the older distribution ``pytorch-lightning``
ships the same code as ``pytorch_lightning``. The two define *different* classes: a callback built on
``lightning.pytorch.Callback`` is not an instance of ``pytorch_lightning.Callback``. A
``pytorch_lightning.Trainer`` still calls its hooks (they are looked up by name), but it does not recognise
:class:`~lightning_dynamics.DynamicsEarlyStopping` as an ``EarlyStopping`` (so it neither runs it after the
other callbacks as a monitoring callback nor lists it in ``trainer.early_stopping_callbacks``), the same holds
for checkpoint callbacks, and ``pytorch_lightning.cli.LightningCLI`` rejects such callbacks in
``--trainer.callbacks`` (they are not subclasses of the type it expects). See Lightning-AI/pytorch-lightning
issues 17485, 19252 and 20797.

This module gives each callback of :mod:`lightning_dynamics.callbacks` a twin that also subclasses the
matching ``pytorch_lightning`` class, re-using every method of the original:

.. code-block:: python

    import pytorch_lightning as pl
    from lightning_dynamics.pytorch_lightning import DynamicsEarlyStopping, DynamicsMonitor

    trainer = pl.Trainer(callbacks=[DynamicsMonitor(), DynamicsEarlyStopping()])

A twin is an instance of both the ``lightning.pytorch`` original (so everything in lightning_dynamics that
looks for a ``DynamicsMonitor`` finds it) and the ``pytorch_lightning`` base class. Its method resolution
order puts the original and its ``lightning.pytorch`` bases first, so the behaviour is exactly the
original's: the two packages are the same source under two names, and the ``pytorch_lightning`` base only
supplies the type. The ``__init__`` chain stops before the ``pytorch_lightning`` base, whose state the
``lightning.pytorch`` base has already set up under the same attribute names. ``state_key`` is unchanged, so
checkpoints move between the two packages.

The model, the datamodule and the loggers must come from one package: a ``pytorch_lightning.Trainer``
refuses a ``lightning.pytorch.LightningModule``. Do not import this module in a ``lightning.pytorch``
LightningCLI that names callbacks by their short name: the twins are subclasses of the originals, so
``DynamicsMonitor`` would become ambiguous there.
"""

from __future__ import annotations

import importlib
from typing import Any, TypeVar

try:
    import pytorch_lightning as _pytorch_lightning
except ModuleNotFoundError as error:  # pragma: no cover - exercised only without the package
    raise ModuleNotFoundError(
        "lightning_dynamics.pytorch_lightning needs the standalone `pytorch_lightning` package "
        "(pip install pytorch-lightning); with the `lightning` package use `lightning_dynamics` directly."
    ) from error
import lightning.pytorch as _lightning_pytorch

from lightning_dynamics import callbacks as _callbacks

_C = TypeVar("_C", bound=type)

_NEW, _OLD = "lightning.pytorch", "pytorch_lightning"


class _EndOfInitChain:
    """Ends the cooperative ``__init__`` chain before the ``pytorch_lightning`` base.

    ``lightning.pytorch``'s ``EarlyStopping.__init__`` and ``ModelCheckpoint.__init__`` call
    ``super().__init__()``; in a twin the next class would be the ``pytorch_lightning`` one, which needs
    arguments (``monitor``) and would reset state the ``lightning.pytorch`` base has already set.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass


def _counterpart(cls: type) -> type:
    """The ``pytorch_lightning`` class of the closest ``lightning.pytorch`` class among ``cls``'s bases."""
    for base in cls.__mro__:
        module = base.__module__
        if module == _NEW or module.startswith(_NEW + "."):
            twin_module = importlib.import_module(_OLD + module[len(_NEW) :])
            return getattr(twin_module, base.__qualname__)
    raise TypeError(f"no lightning.pytorch base among the bases of {cls.__qualname__}.")  # unreachable for callbacks


def on_pytorch_lightning(cls: _C) -> _C:
    """Make the twin of a ``lightning.pytorch`` callback class that a ``pytorch_lightning.Trainer`` accepts.

    The twin subclasses ``cls`` and the ``pytorch_lightning`` counterpart of its closest ``lightning.pytorch``
    base (``Callback``, ``EarlyStopping``, ``ModelCheckpoint``, ...), with the same name. Use it for your own
    subclasses of the lightning_dynamics callbacks.

    Args:
        cls: a subclass of ``lightning.pytorch.Callback``.

    Returns:
        The twin class (created once per ``cls`` and cached).

    Raises:
        TypeError: ``cls`` is not a ``lightning.pytorch`` callback.

    Example:
        >>> import pytorch_lightning
        >>> from lightning_dynamics.callbacks import DynamicsEarlyStopping
        >>> Twin = on_pytorch_lightning(DynamicsEarlyStopping)
        >>> issubclass(Twin, pytorch_lightning.callbacks.EarlyStopping), issubclass(Twin, DynamicsEarlyStopping)
        (True, True)
        >>> on_pytorch_lightning(int)
        Traceback (most recent call last):
        ...
        TypeError: `cls` must be a subclass of lightning.pytorch.Callback, got builtins.int.
    """
    if not isinstance(cls, type):
        raise TypeError(f"`cls` must be a class, got {cls!r}.")
    if issubclass(cls, _pytorch_lightning.Callback):
        return cls  # already a pytorch_lightning callback
    if not issubclass(cls, _lightning_pytorch.Callback):
        raise TypeError(
            f"`cls` must be a subclass of lightning.pytorch.Callback, got {cls.__module__}.{cls.__qualname__}."
        )
    cached = _TWINS.get(cls)
    if cached is None:
        namespace = {
            "__module__": __name__,
            "__qualname__": cls.__qualname__,
            "__doc__": f"{cls.__name__} for ``pytorch_lightning``: see :class:`{cls.__module__}.{cls.__qualname__}`."
            f"\n\n{cls.__doc__ or ''}",
        }
        cached = type(cls.__name__, (cls, _EndOfInitChain, _counterpart(cls)), namespace)
        _TWINS[cls] = cached
    return cached  # type: ignore[return-value]


_TWINS: dict[type, type] = {}

DynamicsMonitor = on_pytorch_lightning(_callbacks.DynamicsMonitor)
DynamicsEarlyStopping = on_pytorch_lightning(_callbacks.DynamicsEarlyStopping)


def __getattr__(name: str) -> Any:
    """Twins of the other callbacks of :mod:`lightning_dynamics.callbacks`, made on first use."""
    original = getattr(_callbacks, name, None) if name in getattr(_callbacks, "__all__", ()) else None
    if isinstance(original, type) and issubclass(original, _lightning_pytorch.Callback):
        return on_pytorch_lightning(original)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DynamicsEarlyStopping", "DynamicsMonitor", "on_pytorch_lightning"]
