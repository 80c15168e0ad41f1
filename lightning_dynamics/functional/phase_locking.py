"""The phase-locking graph across layers: PLV and phase integration (Deco et al.; docs/method.md section 5).

Reference: Deco, G. et al. (2017), "The dynamics of resting fluctuations in the brain: metastability and
its dynamical cortical core", Sci. Rep. 7:3095 (integration as the mean size of the largest connected
component of the thresholded phase-locking graph). The DFA-based integration score lives in
:mod:`lightning_dynamics.functional.integration`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_dynamics.functional._checks import as_float_series, warn_insufficient
from lightning_dynamics.functional._layers import (
    MIN_CROSS_LAYERS,
    MIN_PHASE_POINTS,
    few_layers_message,
    layer_phasors,
    refuse_grad,
)
from lightning_dynamics.functional.detrend import detrended_length

N_THRESHOLDS = 100


def phase_locking_value(phases: Tensor) -> Tensor:
    r"""Pairwise phase-locking value :math:`PLV_{jk} = |\langle e^{i(\varphi_j - \varphi_k)}\rangle_t|`.

    Args:
        phases: ``[..., L, T]``.

    Returns:
        ``[..., L, L]`` in ``[0, 1]``, ones on the diagonal.

    Example:
        >>> import torch
        >>> t = torch.linspace(0, 20, 200)
        >>> plv = phase_locking_value(torch.stack([t, t + 1.0, torch.rand(200) * 6.28]))
        >>> round(float(plv[0, 1]), 4), bool(plv[0, 2] < 0.3)  # constant lag: locked; random: not
        (1.0, True)
    """
    phases = as_float_series(phases, name="phases", min_dim=2)
    if phases.shape[-1] == 0:
        warn_insufficient(f"phase_locking_value needs at least 1 time point, got shape {tuple(phases.shape)}. NaN.")
    return _plv_from_phasors(torch.cos(phases), torch.sin(phases))


def _plv_from_phasors(cos: Tensor, sin: Tensor) -> Tensor:
    r""":func:`phase_locking_value` from :math:`(\cos\varphi, \sin\varphi)` ``[..., L, T]`` (see :func:`unit_phasors`).

    :math:`\sum_t e^{i(\varphi_j - \varphi_k)}` in real arithmetic: the real part is the Gram matrix of
    :math:`[\cos, \sin]` and the imaginary part :math:`S C^T - (S C^T)^T`, two real matrix products (3/4 of
    the work of the complex product, and no complex tensor).
    """
    real = _symmetric_gram(torch.cat([cos, sin], dim=-1))
    cross = sin @ cos.mT
    imag = cross - cross.mT
    return (torch.hypot(real, imag) / cos.shape[-1]).clamp(max=1.0)


# Row blocks of the triangular Gram product on CPU: large enough for efficient GEMMs, small enough to skip
# most of the lower triangle (about 30% faster than the full product at L=1000).
_GRAM_BLOCK = 256


def _symmetric_gram(a: Tensor) -> Tensor:
    """``a @ a.mT`` computing only the row blocks' upper parts and mirroring them (exact: same dot products)."""
    n = a.shape[-2]
    if a.device.type != "cpu" or n <= _GRAM_BLOCK:
        return a @ a.mT
    out = a.new_empty(*a.shape[:-2], n, n)
    for start in range(0, n, _GRAM_BLOCK):
        stop = start + _GRAM_BLOCK
        block = a[..., start:stop, :] @ a[..., start:, :].mT
        out[..., start:stop, start:] = block
        out[..., start:, start:stop] = block.mT
    return out


def _maximum_spanning_forest(weights: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Prim's maximum spanning tree of each dense weighted graph, batched over leading dimensions.

    For every threshold ``theta``, the connected components of ``{weights > theta}`` equal those of the
    forest's edges with weight ``> theta`` (the bottleneck property of maximum spanning trees), so one
    forest answers all thresholds at once.

    Args:
        weights: ``[..., L, L]`` symmetric.
        valid: ``[..., L]`` boolean; edges touching an invalid node get weight ``-inf``.

    Returns:
        ``(u, v, w)``, each ``[..., L - 1]``: the forest's edges and weights (``-inf`` joins parts that no
        finite edge connects).
    """
    n = weights.shape[-1]
    batch = weights.shape[:-2]
    pair_valid = valid.unsqueeze(-1) & valid.unsqueeze(-2)
    eye = torch.eye(n, dtype=torch.bool, device=weights.device)
    w = weights.masked_fill(~pair_valid | eye, float("-inf"))
    in_tree = torch.zeros(*batch, n, dtype=torch.bool, device=weights.device)
    in_tree[..., 0] = True
    best = w[..., 0, :].clone()  # heaviest edge from each node into the tree
    parent = torch.zeros(*batch, n, dtype=torch.long, device=weights.device)
    lowest_finite = torch.tensor(torch.finfo(w.dtype).min, dtype=w.dtype, device=w.device)
    us, vs, ws = [], [], []
    for _ in range(n - 1):
        candidate = best.masked_fill(in_tree, float("-inf"))
        # Outside nodes with no finite edge rank just above tree nodes, so argmax never re-picks the tree.
        score = torch.where(torch.isneginf(candidate) & ~in_tree, lowest_finite, candidate)
        j = score.argmax(dim=-1, keepdim=True)
        us.append(parent.gather(-1, j))
        vs.append(j)
        ws.append(candidate.gather(-1, j))
        in_tree.scatter_(-1, j, True)
        row = w.gather(-2, j.unsqueeze(-1).expand(*batch, 1, n)).squeeze(-2)
        better = row > best
        best = torch.where(better, row, best)
        parent = torch.where(better, j.expand_as(parent), parent)
    if n == 1:
        empty = torch.zeros(*batch, 0, dtype=torch.long, device=weights.device)
        return empty, empty, torch.zeros(*batch, 0, dtype=weights.dtype, device=weights.device)
    return torch.cat(us, dim=-1), torch.cat(vs, dim=-1), torch.cat(ws, dim=-1)


def _largest_component_fractions(u: Tensor, v: Tensor, w: Tensor, valid: Tensor, thresholds: Tensor) -> Tensor:
    """Largest connected component over valid nodes, divided by their count, for each threshold.

    Components of a forest restricted to edges with weight ``> theta``, by label propagation along the
    forest's edges with pointer jumping, all thresholds at once on the device.

    Args:
        u, v, w: ``[..., E]`` forest edges and weights (from :func:`_maximum_spanning_forest`).
        valid: ``[..., L]`` boolean.
        thresholds: ``[K]``.

    Returns:
        ``[..., K]``; NaN where fewer than two nodes are valid (one node is its own component: no graph).
    """
    n = valid.shape[-1]
    k = thresholds.shape[0]
    batch = valid.shape[:-1]
    labels = torch.arange(n, device=valid.device).expand(*batch, k, n).contiguous()
    active = w.unsqueeze(-2) > thresholds.view(-1, 1)  # [..., K, E]
    uu = u.unsqueeze(-2).expand(*batch, k, u.shape[-1])
    vv = v.unsqueeze(-2).expand(*batch, k, v.shape[-1])
    for _ in range(n + 1):
        lowest = torch.minimum(labels.gather(-1, uu), labels.gather(-1, vv))
        lowest = torch.where(active, lowest, torch.full_like(lowest, n))
        new = labels.scatter_reduce(-1, uu, lowest, "amin").scatter_reduce(-1, vv, lowest, "amin")
        new = new.gather(-1, new)  # pointer jumping: follow labels to their own labels
        if torch.equal(new, labels):
            break
        labels = new
    sizes = torch.zeros(*batch, k, n, dtype=torch.int64, device=valid.device)
    sizes.scatter_add_(-1, labels, valid.unsqueeze(-2).expand(*batch, k, n).to(torch.int64))
    largest = sizes.amax(dim=-1).to(torch.float64)
    n_valid = valid.sum(dim=-1, keepdim=True).to(torch.float64)
    return torch.where(n_valid >= MIN_CROSS_LAYERS, largest / n_valid, torch.full_like(largest, float("nan")))


def phase_integration(
    x: Tensor,
    detrend: str | None = "diff",
    pad: str | None = "reflect",
    n_thresholds: int = N_THRESHOLDS,
) -> Tensor:
    r"""Phase integration: mean size of the largest connected component of the thresholded PLV graph.

    .. math:: \Phi = \frac{1}{|\Theta|}\sum_{\theta \in \Theta} \frac{|C_{max}(\{PLV_{jk} > \theta\})|}{L},
              \quad \Theta = \{(k + 1/2)/n\}_{k=0}^{n-1}

    after Deco et al. (2017, Sci. Rep. 7:3095), on the Hilbert phases of the detrended layer series. In
    ``[1/L, 1]``: 1 when every layer is phase-locked to another through a chain, ``1/L`` when no pair is.
    Excluded layers (see :func:`detrend`) are dropped and ``L`` counts the valid layers only; with fewer
    than two valid layers there is no graph and the result is NaN with an :class:`InsufficientDataWarning`.
    Not differentiable (graph components): an input that requires gradients is refused with a ValueError.

    Args:
        x: ``[..., L, T]`` layer series.
        detrend: preprocessing (see :func:`detrend`).
        pad: edge handling of the Hilbert transform.
        n_thresholds: size of the threshold grid in ``(0, 1)``.

    Returns:
        ``[...]``.

    Example:
        >>> import torch
        >>> t = torch.arange(256, dtype=torch.float64)
        >>> locked = torch.stack([torch.sin(0.2 * t + k) for k in range(4)])
        >>> float(phase_integration(locked, detrend=None))
        1.0
    """
    if n_thresholds < 1:
        raise ValueError(f"`n_thresholds` must be >= 1, got {n_thresholds!r}.")
    x = as_float_series(x, min_dim=2)
    refuse_grad(x, "phase_integration")
    if detrended_length(x.shape[-1], detrend) < MIN_PHASE_POINTS:
        warn_insufficient(
            f"phase_integration needs at least {MIN_PHASE_POINTS} points after detrend={detrend!r}; "
            f"the series has T={x.shape[-1]}. Returning NaN."
        )
        return torch.full(x.shape[:-2], float("nan"), dtype=x.dtype, device=x.device)
    cos, sin, valid = layer_phasors(x, detrend, pad)
    message = few_layers_message("phase_integration", valid.sum(dim=-1), valid.shape[-1])
    if message is not None:
        warn_insufficient(f"{message}. Returning NaN there.")
    return _phase_integration_from_phasors(cos, sin, valid, n_thresholds=n_thresholds)


def _phase_integration_from_phasors(
    cos: Tensor, sin: Tensor, valid: Tensor, n_thresholds: int = N_THRESHOLDS
) -> Tensor:
    """:func:`phase_integration` on unit phasors already computed (``[..., L, T]``, mask ``[..., L]``)."""
    if cos.shape[-2] < MIN_CROSS_LAYERS:
        return torch.full(cos.shape[:-2], float("nan"), dtype=cos.dtype, device=cos.device)
    plv = _plv_from_phasors(cos, sin)
    thresholds = (torch.arange(n_thresholds, dtype=plv.dtype, device=plv.device) + 0.5) / n_thresholds
    u, v, w = _maximum_spanning_forest(plv, valid)
    return _largest_component_fractions(u, v, w, valid, thresholds).mean(dim=-1).to(plv.dtype)
