"""A long run on the framework-neutral tracker: 2000 sample points, memory flat beyond the history buffer.

Was a 500-epoch Lightning fit computing the measures over the whole history at every point (531 s on a loaded
machine). The tracker alone with a bounded ``history_window`` keeps each point's work constant, and computing
the measures at every 8th point (every point is still recorded) keeps a run short: 200 points in the unit
tier, 2000 marked slow.
"""

import gc
import itertools
import warnings

import pytest
import torch
from torch import nn

from lightning_dynamics import DynamicsConfig, DynamicsTracker
from lightning_dynamics.functional._checks import clear_shape_caches


def _tensor_census() -> tuple[int, int]:
    clear_shape_caches()
    gc.collect()
    with warnings.catch_warnings():  # isinstance() touches deprecated torch.distributed aliases
        warnings.simplefilter("ignore", FutureWarning)
        tensors = [o for o in gc.get_objects() if isinstance(o, torch.Tensor)]
    return len(tensors), sum(t.numel() * t.element_size() for t in tensors)


@pytest.mark.parametrize("n_points", [200, pytest.param(2000, marks=pytest.mark.slow)])
def test_2000_sample_points_keep_memory_flat(n_points: int) -> None:
    generator = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))
    # Bounded work per point: the whole-history measures over the last 16 points, no noise-floor surrogates.
    config = DynamicsConfig(history_window=16, compute_phase_integration=False, null_surrogates=None)
    tracker = DynamicsTracker(config=config, save_history=False, verbose=False).attach(model)
    census: list[tuple[int, int, int]] = []
    for point in range(1, n_points + 1):
        with torch.no_grad():
            model(torch.randn(32, 8, generator=generator))  # training mode: recorded
        tracker.sample(epoch=point // 4, step=point, compute=point % 8 == 0)  # measures at every 8th point
        if point % (n_points // 5) == 0:  # at points where the measures were computed
            count, size = _tensor_census()
            census.append((point, count, size - tracker.history.nbytes))
    assert tracker.n_samples == n_points and tracker.history.values.shape == (3, n_points)
    assert all(len(series) == n_points for series in tracker.metrics.values())
    assert torch.tensor(tracker.metrics["metastability"][7::8][-12:]).isfinite().all()  # computed at every 8th
    # No tensor accumulates, beyond the history buffer not one byte more. The census counts every tensor of the
    # process, so garbage of earlier tests may be freed in between (a drop); a leak can only show as a rise.
    counts, sizes = [c for _, c, _ in census], [b for _, _, b in census]
    assert all(later <= earlier for earlier, later in itertools.pairwise(counts)), census
    assert all(later <= earlier for earlier, later in itertools.pairwise(sizes)), census
