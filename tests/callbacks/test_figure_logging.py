"""The history file and the dashboard reach each logger through its sink, read back from what the logger wrote."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from lightning_dynamics.callbacks.sinks import (
    DEFAULT_KEY,
    SINKS,
    dashboard_png_path,
    hand_to_loggers,
    log_figure,
    sink_of,
)
from lightning_dynamics.capture import save_history

pytest.importorskip("matplotlib")
PIL = pytest.importorskip("PIL.Image")

# The loggers are tested with a small figure (PNG encoding of the full dashboard costs ~1 s each); the full
# dashboard goes through the CSV path, as the monitor would draw it.
WIDTH, HEIGHT = 320, 200
DASHBOARD_SIZE = (13 * 110, 14 * 110)  # the dashboard's figure size (inches) x the dpi of its PNG


def _history(path: Path, n_points: int = 30) -> Path:
    g = torch.Generator().manual_seed(0)
    nan = torch.full((n_points,), float("nan"), dtype=torch.float64)
    state = {
        "format_version": 2,
        "layer_names": ["fc1", "fc2", "head"],
        "summary": "rms",
        "values": torch.randn(3, n_points, generator=g).cumsum(-1),
        "epochs": list(range(n_points)),
        "steps": [4 * (e + 1) for e in range(n_points)],
        "metrics": {"integration": torch.rand(n_points, dtype=torch.float64, generator=g), "metastability": nan},
        "logged": {"val_acc": torch.linspace(40, 90, n_points, dtype=torch.float64)},
        "prefix": "dynamics",
        "config": {"detrend": "diff", "pad": "reflect", "every_n_steps": None},
    }
    return save_history(state, path / "dynamics_history.pt")


@pytest.fixture(scope="module")
def history_and_figure(tmp_path_factory: pytest.TempPathFactory):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(WIDTH / 80, HEIGHT / 80), dpi=80)
    figure.subplots().plot([0, 1, 4, 9])
    return _history(tmp_path_factory.mktemp("run")), figure


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return PIL.open(io.BytesIO(data)).size


def test_tensorboard_event_file_holds_the_figure(tmp_path: Path, history_and_figure) -> None:
    pytest.importorskip("tensorboard")
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    history, figure = history_and_figure
    logger = TensorBoardLogger(tmp_path, name="tb")
    assert log_figure([logger], figure, history, step=7) == {"TensorBoardLogger": "figure"}
    events = EventAccumulator(logger.log_dir, size_guidance={"images": 0})
    events.Reload()
    assert events.Tags()["images"] == [DEFAULT_KEY]
    (image,) = events.Images(DEFAULT_KEY)
    assert image.step == 7
    assert (image.width, image.height) == (WIDTH, HEIGHT)
    assert _png_size(image.encoded_image_string) == (WIDTH, HEIGHT)
    assert not dashboard_png_path(history).exists()  # an image logger: no file beside the history


def test_tensorboard_draws_each_measure_inside_its_noise_floor(tmp_path: Path) -> None:
    """One margin chart per measure with a null (custom scalars), not two more separate edge charts to read."""
    pytest.importorskip("tensorboard")
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.custom_scalar import layout_pb2

    logger = TensorBoardLogger(tmp_path, name="tb")
    assert hand_to_loggers([logger], _history(tmp_path), dashboard=False) == {"TensorBoardLogger": "bands"}
    events = EventAccumulator(logger.log_dir, size_guidance={"tensors": 0})
    events.Reload()
    (event,) = events.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout()
    layout.ParseFromString(event.tensor_proto.string_val[0])
    charts = {chart.title: chart for category in layout.category for chart in category.chart}
    margin = charts["relative_change"].margin.series[0]
    assert (margin.value, margin.lower, margin.upper) == (
        "dynamics/relative_change",
        "dynamics/relative_change_null_lo",
        "dynamics/relative_change_null_hi",
    )
    assert "nonfinite" not in charts  # a count has no noise floor


def test_offline_wandb_run_holds_the_image(tmp_path: Path, history_and_figure, monkeypatch) -> None:
    pytest.importorskip("wandb")
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    history, figure = history_and_figure
    logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="lightning-dynamics-test")
    try:
        assert log_figure([logger], figure, history, key="dynamics/dashboard") == {"WandbLogger": "figure"}
    finally:
        wandb.finish()
    images = list(tmp_path.glob("wandb/offline-run-*/files/media/images/dynamics/dashboard_*.png"))
    assert len(images) == 1, sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.png"))
    assert _png_size(images[0].read_bytes()) == (WIDTH, HEIGHT)
    summary = next(tmp_path.glob("wandb/offline-run-*/files/wandb-summary.json"), None)
    if summary is not None:  # written at finish by the wandb versions that keep a local summary offline
        assert DEFAULT_KEY in summary.read_text()


def test_mlflow_store_holds_figure_and_history(tmp_path: Path, history_and_figure, monkeypatch) -> None:
    pytest.importorskip("mlflow")
    from lightning.pytorch.loggers import MLFlowLogger
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    history, figure = history_and_figure
    uri = f"file:{tmp_path / 'mlruns'}"
    logger = MLFlowLogger(experiment_name="dynamics", tracking_uri=uri)
    assert log_figure([logger], figure, history) == {"MLFlowLogger": "figure"}  # the figure sink: no file
    client = MlflowClient(tracking_uri=uri)
    assert {a.path for a in client.list_artifacts(logger.run_id)} == {"dynamics"}
    # What the monitor calls: the history file, then the dashboard drawn from it.
    assert hand_to_loggers([logger], history) == {"MLFlowLogger": "history+figure"}
    top = {a.path for a in client.list_artifacts(logger.run_id)}
    assert top == {"dynamics", "dynamics_history.pt"}
    assert [a.path for a in client.list_artifacts(logger.run_id, "dynamics")] == ["dynamics/dashboard.png"]
    local = Path(client.download_artifacts(logger.run_id, "dynamics/dashboard.png", str(tmp_path / "down")))
    assert _png_size(local.read_bytes()) == DASHBOARD_SIZE  # the dashboard replaced the small figure
    copied = Path(client.download_artifacts(logger.run_id, "dynamics_history.pt", str(tmp_path / "down")))
    assert copied.read_bytes() == history.read_bytes()


def test_csv_logger_gets_the_dashboard_png_beside_the_history_and_failures_warn(
    tmp_path: Path, history_and_figure
) -> None:
    from lightning.pytorch.loggers import CSVLogger

    history = _history(tmp_path)
    target = dashboard_png_path(history)
    assert hand_to_loggers([], history, history=False) == {} and not target.exists()  # no logger: nothing drawn
    # What the monitor calls at fit end: draws the saved history, a CSV logger gets the PNG beside it.
    assert hand_to_loggers([CSVLogger(tmp_path)], history, history=False) == {"CSVLogger": f"png:{target}"}
    assert _png_size(target.read_bytes()) == DASHBOARD_SIZE

    class TensorBoardLogger:  # same name as the real one, but its experiment cannot take a figure
        experiment = None

    messages: list[str] = []
    result = log_figure([TensorBoardLogger()], history_and_figure[1], None, warn=messages.append)
    assert result["TensorBoardLogger"].startswith("failed:") and "TensorBoardLogger" in messages[0]


def test_one_table_of_sinks_by_logger_class_name() -> None:
    """Each logger class maps to what it does with the history file and the figure; others keep files on disk."""
    assert {kind: (s.history is not None, s.figure is not None) for kind, s in SINKS.items()} == {
        "MLFlowLogger": (True, True),
        "WandbLogger": (True, True),
        "TensorBoardLogger": (False, True),
    }
    assert [kind for kind, s in SINKS.items() if s.bands is not None] == ["TensorBoardLogger"]

    class CSVLogger:
        pass

    class MLFlowLogger:  # matched by name: the standalone pytorch_lightning loggers work too
        pass

    assert sink_of(CSVLogger()).history is None and sink_of(CSVLogger()).figure is None
    assert sink_of(MLFlowLogger()) is SINKS["MLFlowLogger"]


def test_hand_to_loggers_without_a_logger_or_a_dashboard_writes_nothing(tmp_path: Path) -> None:
    history = _history(tmp_path)

    class CSVLogger:
        pass

    assert hand_to_loggers([], history) == {}
    assert hand_to_loggers([CSVLogger()], history, dashboard=False) == {}
    assert not dashboard_png_path(history).exists()
