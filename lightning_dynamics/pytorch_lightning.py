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

This module gives each callback of :mod:`lightning_dynamics.callbacks` a ``pytorch_lightning`` version with the
same name and arguments, re-using every method of the original (no code is copied):

.. code-block:: python

    import pytorch_lightning as pl
    from lightning_dynamics.pytorch_lightning import DynamicsEarlyStopping, DynamicsMonitor

    trainer = pl.Trainer(callbacks=[DynamicsMonitor(), DynamicsEarlyStopping()])

An instance is of a private "twin" class that subclasses both the ``lightning.pytorch`` original (so everything
in lightning_dynamics that looks for a ``DynamicsMonitor`` finds it) and the public class, itself a subclass of
the ``pytorch_lightning`` counterpart (``Callback``, ``EarlyStopping``, ``ModelCheckpoint``). The twin's method
resolution order puts the original and its ``lightning.pytorch`` bases first, so it behaves exactly as the
original: the two packages are the same source under two names, and the ``pytorch_lightning`` base only
supplies the type. The ``__init__`` chain stops before the ``pytorch_lightning`` base, whose state the
``lightning.pytorch`` base has already set under the same attribute names. ``state_key`` is unchanged, so
checkpoints move between the two packages. The twins live in a private module, so a ``lightning.pytorch``
LightningCLI still resolves ``--trainer.callbacks+=DynamicsMonitor`` to the original after this module is
imported, and ``pytorch_lightning``'s LightningCLI resolves it to the public class here.

The model, the datamodule and the loggers must come from one package: a ``pytorch_lightning.Trainer``
refuses a ``lightning.pytorch.LightningModule``.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

try:
    import pytorch_lightning as _pytorch_lightning
except ModuleNotFoundError as error:  # pragma: no cover - exercised only without the package
    raise ModuleNotFoundError(
        "lightning_dynamics.pytorch_lightning needs the standalone `pytorch_lightning` package "
        "(pip install pytorch-lightning); with the `lightning` package use `lightning_dynamics` directly."
    ) from error
import lightning.pytorch as _lightning_pytorch

from lightning_dynamics import callbacks as _callbacks

_NEW, _OLD = "lightning.pytorch", "pytorch_lightning"


class _EndOfInitChain:
    """Ends the cooperative ``__init__`` chain before the ``pytorch_lightning`` base.

    ``lightning.pytorch``'s ``EarlyStopping.__init__`` and ``ModelCheckpoint.__init__`` call
    ``super().__init__()``; in a twin the next class would be the ``pytorch_lightning`` one, which needs
    arguments (``monitor``) and would reset state the ``lightning.pytorch`` base has already set.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass


class _MakesTwins(type):
    """Metaclass of the public ``pytorch_lightning`` classes: calling one builds an instance of its twin."""

    _twin: type

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        twin = cls.__dict__.get("_twin")
        if twin is None:  # the twin itself, or a user subclass of the public class
            return super().__call__(*args, **kwargs)
        return twin(*args, **kwargs)


# The twins live in a private module of their own: jsonargparse (LightningCLI) does not offer classes whose
# import path has a private part as short names, so `--trainer.callbacks+=DynamicsMonitor` stays unambiguous
# in a lightning.pytorch CLI even after this module is imported. The module is registered here, so pickling
# (DDP spawn, deepcopy) finds the twins in any process that imports lightning_dynamics.pytorch_lightning.
_TWIN_MODULE = types.ModuleType(f"{__name__}._twins", "Twins of the lightning_dynamics callbacks (private).")
sys.modules[_TWIN_MODULE.__name__] = _TWIN_MODULE
_PUBLIC: dict[type, type] = {}


def _counterpart(cls: type) -> type:
    """The ``pytorch_lightning`` class of the closest ``lightning.pytorch`` class among ``cls``'s bases."""
    for base in cls.__mro__:
        module = base.__module__
        if module == _NEW or module.startswith(_NEW + "."):
            twin_module = importlib.import_module(_OLD + module[len(_NEW) :])
            return getattr(twin_module, base.__qualname__)
    raise TypeError(f"no lightning.pytorch base among the bases of {cls.__qualname__}.")  # unreachable for callbacks


def on_pytorch_lightning(cls: type) -> Any:
    """Make the ``pytorch_lightning`` version of a ``lightning.pytorch`` callback class.

    Two classes are made (once per ``cls``, then cached). The public one, returned, subclasses the
    ``pytorch_lightning`` counterpart of ``cls``'s closest ``lightning.pytorch`` base (``Callback``,
    ``EarlyStopping``, ``ModelCheckpoint``, ...), has ``cls``'s name and ``__init__`` signature (so
    ``pytorch_lightning``'s LightningCLI offers it by its short name), and calling it builds an instance of the
    private twin. The twin subclasses ``cls`` and the public class, with ``cls``'s methods first, so it behaves
    exactly as ``cls`` and is an instance of both. Use this for your own subclasses of the callbacks.

    Args:
        cls: a subclass of ``lightning.pytorch.Callback``.

    Returns:
        The public class.

    Raises:
        TypeError: ``cls`` is not a ``lightning.pytorch`` callback class.

    Example:
        >>> import pytorch_lightning
        >>> from lightning_dynamics.callbacks import DynamicsEarlyStopping
        >>> PLDynamicsEarlyStopping = on_pytorch_lightning(DynamicsEarlyStopping)
        >>> stopping = PLDynamicsEarlyStopping(ratio=0.5)
        >>> isinstance(stopping, pytorch_lightning.Callback), isinstance(stopping, DynamicsEarlyStopping)
        (True, True)
        >>> stopping.ratio, stopping.state_key == DynamicsEarlyStopping(ratio=0.5).state_key
        (0.5, True)
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
    public = _PUBLIC.get(cls)
    if public is None:
        doc = f"``{cls.__name__}`` for ``pytorch_lightning``: see ``{cls.__module__}.{cls.__qualname__}``."
        base = _counterpart(cls)
        public = _MakesTwins(
            cls.__name__,
            (base,),
            {"__module__": __name__, "__qualname__": cls.__qualname__, "__doc__": doc, "__init__": cls.__init__},
        )
        twin = _MakesTwins(
            cls.__name__,
            (cls, _EndOfInitChain, public),
            {"__module__": _TWIN_MODULE.__name__, "__qualname__": cls.__qualname__, "__doc__": cls.__doc__},
        )
        public._twin = twin
        setattr(_TWIN_MODULE, cls.__qualname__, twin)
        _PUBLIC[cls] = public
    return public


DynamicsMonitor = on_pytorch_lightning(_callbacks.DynamicsMonitor)
DynamicsEarlyStopping = on_pytorch_lightning(_callbacks.DynamicsEarlyStopping)


def __getattr__(name: str) -> Any:
    """The other callbacks of :mod:`lightning_dynamics.callbacks`, made on first use."""
    original = getattr(_callbacks, name, None) if name in getattr(_callbacks, "__all__", ()) else None
    if isinstance(original, type) and issubclass(original, _lightning_pytorch.Callback):
        return on_pytorch_lightning(original)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DynamicsEarlyStopping", "DynamicsMonitor", "on_pytorch_lightning"]
