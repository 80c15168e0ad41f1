"""Integration across layers: DFA-based (Ugail & Howard) and phase-locking based (Deco et al.).

References: Ugail, H. & Howard, N. (2025), arXiv:2512.10972 (H_eff: a Gaussian of the DFA exponent
around the critical regime); La Quang, Ugail, Howard et al. (2026), arXiv:2604.09716; Deco, G. et al.
(2017), "The dynamics of resting fluctuations in the brain: metastability and its dynamical cortical
core", Sci. Rep. 7:3095 (integration as the mean size of the largest connected component of the
thresholded phase-locking graph). Formulas: METHOD.md section 5.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_dynamics.functional._checks import as_float_series, warn_insufficient
from lightning_dynamics.functional.detrend import detrend as detrend_series
from lightning_dynamics.functional.detrend import detrended_length
from lightning_dynamics.functional.dfa import MIN_SCALES, dfa, dfa_scales, min_dfa_length
from lightning_dynamics.functional.kuramoto import MIN_PHASE_POINTS, layer_phasors

H_OPT = 0.70
SIGMA = 0.15
N_THRESHOLDS = 100


def masked_layer_mean(values: Tensor, valid: Tensor) -> Tensor:
    """Mean of ``values [..., L]`` over layers where ``valid`` and the value is finite; NaN if none."""
    usable = valid & torch.isfinite(values)
    weight = usable.to(values.dtype)
    total = torch.where(usable, values, torch.zeros_like(values)).sum(dim=-1)
    return total / weight.sum(dim=-1)


def _layer_alphas(x: Tensor, detrend: str | None, scales: Sequence[int] | None, order: int) -> tuple[Tensor, Tensor]:
    d = detrend_series(x, detrend)
    if scales is None and len(dfa_scales(d.series.shape[-1])) < MIN_SCALES:
        warn_insufficient(
            f"integration needs at least {min_dfa_length()} points after detrend={detrend!r} for DFA; "
            f"the series has T={x.shape[-1]}. Returning NaN."
        )
        return torch.full(d.valid.shape, float("nan"), dtype=d.series.dtype, device=d.series.device), d.valid
    return dfa(d.series, scales=scales, order=order), d.valid


def integration_alpha(
    x: Tensor, detrend: str | None = "diff", scales: Sequence[int] | None = None, order: int = 1
) -> Tensor:
    r"""Mean DFA exponent over layers of the detrended series.

    .. math:: \bar\alpha = \frac{1}{L'}\sum_{l \text{ valid}} \alpha_l(d_l)

    Layers excluded by :func:`detrend` (zero variance, non-finite values) do not enter the mean; if none is
    left the result is NaN.

    Args:
        x: ``[..., L, T]`` layer series.
        detrend: preprocessing (see :func:`detrend`).
        scales, order: passed to :func:`dfa`.

    Returns:
        ``[...]``.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> walk = torch.randn(8, 2048, generator=g, dtype=torch.float64).cumsum(-1)  # diff: white noise
        >>> 0.4 < float(integration_alpha(walk)) < 0.6
        True
    """
    x = as_float_series(x, min_dim=2)
    alphas, valid = _layer_alphas(x, detrend, scales, order)
    return masked_layer_mean(alphas, valid)


def integration_from_alpha(alpha: Tensor, h_opt: float = H_OPT, sigma: float = SIGMA) -> Tensor:
    r""":math:`\exp(-(\alpha - h_{opt})^2 / (2\sigma^2))`, the H_eff map of Ugail & Howard (2025).

    Example:
        >>> import torch
        >>> integration_from_alpha(torch.tensor([0.70, 0.85, 1.5]))
        tensor([1.0000e+00, 6.0653e-01, 6.6584e-07])
    """
    if sigma <= 0:
        raise ValueError(f"`sigma` must be > 0, got {sigma!r}.")
    return torch.exp(-((alpha - h_opt) ** 2) / (2.0 * sigma**2))


def integration(
    x: Tensor,
    detrend: str | None = "diff",
    scales: Sequence[int] | None = None,
    order: int = 1,
    h_opt: float = H_OPT,
    sigma: float = SIGMA,
) -> Tensor:
    r"""Integration score in ``[0, 1]``: closeness of the mean DFA exponent to the critical ``h_opt``.

    .. math:: I = \exp\!\Big(-\frac{(\bar\alpha - h_{opt})^2}{2\sigma^2}\Big),\quad h_{opt}=0.70,\ \sigma=0.15

    after Ugail & Howard (2025, arXiv:2512.10972), with :math:`\bar\alpha` from :func:`integration_alpha`.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> walk = torch.randn(8, 2048, generator=g, dtype=torch.float64).cumsum(-1)
        >>> 0.0 <= float(integration(walk)) <= 1.0
        True
    """
    return integration_from_alpha(integration_alpha(x, detrend, scales, order), h_opt, sigma)


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
    return plv_from_phasors(torch.cos(phases), torch.sin(phases))


def plv_from_phasors(cos: Tensor, sin: Tensor) -> Tensor:
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


def maximum_spanning_forest(weights: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
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


def largest_component_fractions(u: Tensor, v: Tensor, w: Tensor, valid: Tensor, thresholds: Tensor) -> Tensor:
    """Largest connected component over valid nodes, divided by their count, for each threshold.

    Components of a forest restricted to edges with weight ``> theta``, by label propagation along the
    forest's edges with pointer jumping, all thresholds at once on the device.

    Args:
        u, v, w: ``[..., E]`` forest edges and weights (from :func:`maximum_spanning_forest`).
        valid: ``[..., L]`` boolean.
        thresholds: ``[K]``.

    Returns:
        ``[..., K]``; NaN where no node is valid.
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
    return largest / valid.sum(dim=-1, keepdim=True).to(torch.float64)


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
    Excluded layers (see :func:`detrend`) are dropped and ``L`` counts the valid layers only.

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
    if detrended_length(x.shape[-1], detrend) < MIN_PHASE_POINTS:
        warn_insufficient(
            f"phase_integration needs at least {MIN_PHASE_POINTS} points after detrend={detrend!r}; "
            f"the series has T={x.shape[-1]}. Returning NaN."
        )
        return torch.full(x.shape[:-2], float("nan"), dtype=x.dtype, device=x.device)
    return phase_integration_from_phasors(*layer_phasors(x, detrend, pad), n_thresholds=n_thresholds)


def phase_integration_from_phasors(cos: Tensor, sin: Tensor, valid: Tensor, n_thresholds: int = N_THRESHOLDS) -> Tensor:
    """:func:`phase_integration` on unit phasors already computed (``[..., L, T]``, mask ``[..., L]``)."""
    plv = plv_from_phasors(cos, sin)
    thresholds = (torch.arange(n_thresholds, dtype=plv.dtype, device=plv.device) + 0.5) / n_thresholds
    u, v, w = maximum_spanning_forest(plv, valid)
    return largest_component_fractions(u, v, w, valid, thresholds).mean(dim=-1).to(plv.dtype)
