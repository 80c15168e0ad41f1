"""The history buffer and its file: claims under concurrency, save errors, segments, state validation."""

import errno
import multiprocessing
import pickle
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

import lightning_dynamics.capture.history_file as history_file_module
from lightning_dynamics.capture import (
    HistorySaveError,
    SummaryHistory,
    claim_path,
    continuous_time,
    load_history,
    release_claim,
    save_history,
)
from lightning_dynamics.capture.history import validate_history_state
from lightning_dynamics.capture.history_file import claim_marker, versioned_path

NAME = "dynamics_history.pt"


def _history(epochs: list[int], steps: list[int] | None = None, fits: list[int] | None = None) -> SummaryHistory:
    """A 2-layer history of the given points; ``fits``: indices where start_segment() is called."""
    history = SummaryHistory(["a", "b"], "rms", capacity=2)
    for i, epoch in enumerate(epochs):
        if fits and i in fits:
            history.start_segment()
        history.append(torch.tensor([float(i), 2.0 * i]), epoch=epoch, step=(steps or epochs)[i])
    return history


def _state(**overrides: Any) -> dict[str, Any]:
    state = _history([0, 1, 2]).state_dict()
    state["metrics"] = {"metastability": torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)}
    state["logged"] = {"val_acc": [0.5, 0.6, float("nan")]}
    state.update(overrides)
    return state


# ---------------------------------------------------------------- claims: every run gets its own name


def _claim_and_save(directory: str, run: int, barrier: Any, queue: Any) -> None:
    barrier.wait()  # every process leaves here together: the claims race
    path = claim_path(directory, NAME)
    state = _history(list(range(run + 1))).state_dict()
    save_history(state, path)
    queue.put((run, str(path)))


def test_processes_started_together_each_claim_their_own_file(tmp_path: Path) -> None:
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    n_runs = 6
    barrier, queue = context.Barrier(n_runs), context.Queue()
    workers = [
        context.Process(target=_claim_and_save, args=(str(tmp_path), run, barrier, queue)) for run in range(n_runs)
    ]
    for worker in workers:
        worker.start()
    results = dict(queue.get(timeout=60) for _ in range(n_runs))
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert len(set(results.values())) == n_runs  # no two runs share a name
    for run, path in results.items():  # and no history was overwritten: each file holds its own run
        assert load_history(path)["epochs"] == list(range(run + 1))
    expected = {NAME} | {f"dynamics_history-v{v}.pt" for v in range(1, n_runs)}
    assert {p.name for p in tmp_path.iterdir()} == expected  # no marker or temporary file left behind


def test_threads_started_together_each_claim_their_own_file(tmp_path: Path) -> None:
    n_runs = 16
    barrier = threading.Barrier(n_runs)
    results: dict[int, Path] = {}

    def run(index: int) -> None:
        barrier.wait()
        path = claim_path(tmp_path, NAME)
        results[index] = save_history(_history(list(range(index + 1))).state_dict(), path)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n_runs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results.values())) == n_runs
    assert all(load_history(path)["epochs"] == list(range(i + 1)) for i, path in results.items())
    assert not list(tmp_path.glob(".*"))  # markers released, temporary files renamed


def test_a_claim_holds_the_name_until_saved_and_release_gives_it_back(tmp_path: Path) -> None:
    first = claim_path(tmp_path, NAME)
    assert first.name == NAME and claim_marker(first).is_file() and not first.exists()
    assert versioned_path(tmp_path / NAME).name == "dynamics_history-v1.pt"  # claimed counts as taken
    second = claim_path(tmp_path, NAME)
    assert second.name == "dynamics_history-v1.pt"
    save_history(_state(), first)
    assert first.is_file() and not claim_marker(first).exists()  # the file itself holds the name now
    release_claim(second)  # never written: the name is free again
    assert claim_path(tmp_path, NAME) == second
    assert claim_path(tmp_path, NAME, taken={tmp_path / "dynamics_history-v2.pt"}).name == "dynamics_history-v3.pt"


# ---------------------------------------------------------------- save errors say what happened


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (errno.ENOSPC, "the disk is full"),
        (errno.EACCES, "permission denied"),
        (errno.EROFS, "read-only"),
        (errno.EDQUOT, "quota"),
        (errno.EIO, "input/output error"),
    ],
)
def test_a_failed_write_names_the_cause_in_words_and_the_path(
    tmp_path: Path, monkeypatch, code: int, words: str
) -> None:
    path = save_history(_state(), tmp_path / NAME)
    before = path.read_bytes()

    def fail(fd: int, data: memoryview) -> None:
        raise OSError(code, "simulated")

    monkeypatch.setattr(history_file_module, "_write_all", fail)
    with pytest.raises(HistorySaveError) as caught:
        save_history(_state(epochs=[0, 1, 1]), path)
    error = caught.value
    assert isinstance(error, OSError) and error.errno == code and error.filename == str(path)
    assert words in str(error) and str(path) in str(error) and "iostream" not in str(error)
    assert path.read_bytes() == before  # the previous file is intact
    assert [p.name for p in tmp_path.iterdir()] == [NAME]  # no temporary file left behind
    revived = pickle.loads(pickle.dumps(error))  # crosses process boundaries (e.g. a spawned DDP worker)
    assert isinstance(revived, HistorySaveError) and str(revived) == str(error)


def test_a_real_os_error_is_a_history_save_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_directory"
    blocker.write_text("a file where the run directory should be")
    with pytest.raises(HistorySaveError, match=r"could not save the dynamics history to .*not_a_directory"):
        save_history(_state(), blocker / "run" / NAME)
    with pytest.raises(HistorySaveError, match=r"not_a_directory"):
        claim_path(blocker / "run", NAME)


# ---------------------------------------------------------------- a second fit: segments


def test_a_second_fit_is_a_segment_and_every_writer_is_readable(tmp_path: Path) -> None:
    history = _history([0, 1, 2, 0, 1, 2], steps=[4, 8, 12, 4, 8, 12], fits=[3])
    assert history.segments == [0, 3]
    state = history.state_dict()
    restored = SummaryHistory(["a", "b"], "rms")
    restored.load_state_dict(state)  # today: "`epochs` must be non-decreasing"
    assert restored.epochs == [0, 1, 2, 0, 1, 2] and restored.segments == [0, 3]
    loaded = load_history(save_history(state, tmp_path / NAME))
    assert loaded["format_version"] == 3 and loaded["segments"] == [0, 3]
    torch.testing.assert_close(loaded["values"], history.values)
    assert continuous_time(loaded["epochs"], loaded["steps"], loaded["segments"]) == (
        [0, 1, 2, 3, 4, 5],
        [4, 8, 12, 16, 20, 24],
    )


def test_a_fit_that_restarts_without_saying_so_starts_a_segment() -> None:
    history = _history([0, 1, 1, 0, 1], steps=[3, 6, 7, 3, 6])  # no start_segment(): the epoch went back
    assert history.segments == [0, 3]
    history.start_segment()
    history.start_segment()  # idempotent: no empty segment
    assert history.segments == [0, 3, 5]
    history.append(torch.zeros(2), epoch=5, step=30)  # a fit of the same Trainer continues: no extra segment
    assert history.segments == [0, 3, 5] and continuous_time(history.epochs, history.steps, history.segments)[0] == [
        0,
        1,
        1,
        2,
        3,
        5,
    ]


def test_format_2_files_of_two_fits_are_read_with_inferred_segments(tmp_path: Path) -> None:
    state = _history([0, 1, 2, 0, 1, 2]).state_dict()
    state["format_version"] = 2
    del state["segments"]
    loaded = load_history(save_history(state, tmp_path / NAME))  # written by the previous release: refused today
    assert loaded["segments"] == [0, 3]


@pytest.mark.parametrize(
    ("segments", "epochs"),
    [
        ([0, 3], [0, 1, 0, 0, 1, 2]),  # goes back inside a segment
        ([1], [0, 1, 2, 0, 1, 2]),  # does not start at 0
        ([0, 3, 3], [0, 1, 2, 0, 1, 2]),  # not increasing
        ([0, 6], [0, 1, 2, 0, 1, 2]),  # beyond the points
        ("0", [0, 1, 2, 0, 1, 2]),
        ([0, True], [0, 1, 2, 0, 1, 2]),
    ],
)
def test_inconsistent_segments_are_refused(segments: Any, epochs: list[int]) -> None:
    state = _history(epochs).state_dict()
    state["segments"] = segments
    with pytest.raises(ValueError, match=r"epochs|segments"):
        SummaryHistory(["a", "b"], "rms").load_state_dict(state)


def test_a_history_that_runs_ahead_of_the_trainer_is_refused() -> None:
    history = _history([0, 1, 2, 0, 1, 2], steps=[4, 8, 12, 4, 8, 12], fits=[3])
    history.check_not_ahead(epoch=2, step=12)  # the last fit (segment) is what the trainer resumes
    history.check_not_ahead(epoch=3)
    with pytest.raises(ValueError, match=r"runs ahead of the trainer.*epoch 2, step 12.*epoch 1"):
        history.check_not_ahead(epoch=1, step=20)
    with pytest.raises(ValueError, match=r"step 12.*step 11"):
        history.check_not_ahead(epoch=2, step=11)
    history.start_segment()
    history.check_not_ahead(epoch=0, step=0)  # a new fit has no points yet: nothing to be ahead of
    SummaryHistory(["a"], "rms").check_not_ahead(epoch=0, step=0)


# ---------------------------------------------------------------- every field is validated, by name


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda s: s.pop("values"), "values"),
        (lambda s: s.pop("segments"), "segments"),
        (lambda s: s.update(layer_names="ab"), "layer_names"),
        (lambda s: s.update(summary=5), "summary"),
        (lambda s: s.update(summary="median"), "summary"),
        (lambda s: s.update(values=[[1.0, 2.0, 3.0]] * 2), "values"),
        (lambda s: s.update(values=torch.ones(2, 3, dtype=torch.int64)), "values"),
        (lambda s: s.update(epochs=[0, "1", 2]), "epochs"),
        (lambda s: s.update(epochs=[0, True, 2]), "epochs"),
        (lambda s: s.update(steps=(0, 1)), "steps"),
        (lambda s: s.update(steps=[0, -1, 2]), "steps"),
        (lambda s: s.update(format_version=True), "format version"),
        (lambda s: s.update(metrics={"metastability": ["0.1", "0.2", "0.3"]}), r"metrics\['metastability'\]"),
        (lambda s: s.update(metrics={"metastability": [0.1, None, 0.3]}), r"metrics\['metastability'\]"),
        (lambda s: s.update(metrics={"metastability": torch.zeros(3, 1)}), r"metrics\['metastability'\]"),
        (lambda s: s.update(logged=[0.5, 0.6, 0.7]), "logged"),
        (lambda s: s.update(logged={3: [0.5, 0.6, 0.7]}), "logged"),
        (lambda s: s.update(logged={"val_acc": 0.5}), r"logged\['val_acc'\]"),
        (lambda s: s.update(logged={"val_acc": [0.5]}), r"logged\['val_acc'\]"),
    ],
)
def test_every_field_of_a_history_state_is_checked_by_name(change, field: str) -> None:
    state = _state()
    change(state)
    with pytest.raises(ValueError, match=field):
        validate_history_state(state)
    with pytest.raises(ValueError, match=field):
        SummaryHistory(["a", "b"], "rms").load_state_dict(state)


@pytest.mark.parametrize("state", [None, [], "history", 3])
def test_a_history_state_that_is_not_a_dict_is_a_value_error(state: Any) -> None:
    with pytest.raises(ValueError, match="not a dict"):
        SummaryHistory(["a", "b"], "rms").load_state_dict(state)


def test_nbytes_is_the_buffer_capacity() -> None:
    history = SummaryHistory(["a", "b", "c"], "rms", capacity=4)
    assert history.nbytes == 3 * 4 * 4
    for point in range(5):
        history.append(torch.ones(3), epoch=point, step=point)
    assert history.nbytes == 3 * 8 * 4  # doubled once
