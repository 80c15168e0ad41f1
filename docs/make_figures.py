"""Make the guide's figures with ``lightning_dynamics.functional`` and write them as PNGs under ``docs/img/``.

Run: ``.venv/bin/python docs/make_figures.py [--out docs/img]`` (a few seconds on a CPU; synthetic data, fixed
seeds, so the figures are the same on every run). Needs matplotlib (the ``docs`` or ``examples`` extra).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from lightning_dynamics import functional as F

HERE = Path(__file__).resolve().parent


def kuramoto_figure(path: Path, n_layers: int = 12, n_points: int = 400) -> None:
    """Phase-locked vs independent layers: their phases and R(t), with the finite-size floor."""
    g = torch.Generator().manual_seed(0)
    t = torch.arange(n_points, dtype=torch.float64)
    # Locked: one slow rhythm shared by all layers (small per-layer lag and noise); random: independent noise.
    lag = 0.3 * torch.rand(n_layers, 1, generator=g, dtype=torch.float64)
    locked = torch.sin(2 * math.pi * t / 40 + lag) + 0.2 * torch.randn(n_layers, n_points, generator=g, dtype=t.dtype)
    random = torch.randn(n_layers, n_points, generator=g, dtype=torch.float64)
    fig, axes = plt.subplots(2, 2, figsize=(10, 5.5))
    floor = math.sqrt(math.pi) / (2 * math.sqrt(n_layers))
    for column, (name, x) in enumerate((("phase-locked layers", locked), ("independent layers", random))):
        phases = F.instantaneous_phase(F.detrend(x, "mean").series)  # the phases the measures use (pad="reflect")
        r = F.kuramoto_order_parameter(phases)
        m, s = float(F.metastability(x, detrend="mean")), float(F.synchrony(x, detrend="mean"))
        axes[0, column].plot(t[:120], phases[:, :120].T, lw=0.8)
        axes[0, column].set(title=f"{name}: phases phi_l(t), first 120 points", ylabel="phase (rad)")
        axes[1, column].plot(t, r, color="k", lw=1)
        axes[1, column].axhline(
            floor, color="tab:red", ls="--", lw=1, label=f"floor sqrt(pi)/(2 sqrt(L)) = {floor:.3f}"
        )
        axes[1, column].set(ylim=(0, 1.02), xlabel="sample point t", ylabel="R(t)")
        axes[1, column].set_title(f"R(t): synchrony {s:.2f}, metastability {m:.3f}", fontsize=10)
        axes[1, column].legend(loc="center right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def dfa_figure(path: Path, n_points: int = 4096) -> None:
    """DFA fluctuation functions of white noise (alpha ~ 0.5) and a random walk (alpha ~ 1.5)."""
    g = torch.Generator().manual_seed(1)
    white = torch.randn(n_points, generator=g, dtype=torch.float64)
    walk = white.cumsum(0)
    scales = F.dfa_scales(n_points)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, x, color in (("white noise", white, "tab:blue"), ("random walk", walk, "tab:orange")):
        fluct = F.fluctuation_function(x, scales)
        alpha = float(F.dfa(x))
        ax.loglog(scales, fluct, "o-", color=color, label=f"{name}: alpha = {alpha:.2f}")
    ax.set(xlabel="scale s (points)", ylabel="F(s)", title="DFA: F(s) ~ s^alpha")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def stability_figure(path: Path, n_layers: int = 8, n_points: int = 120) -> None:
    """The stability index S(t) and its volatility V(t) on a synthetic history whose regime changes."""
    g = torch.Generator().manual_seed(2)
    t = torch.arange(n_points, dtype=torch.float64)
    # Training-like curves: a decaying trend per layer; layer noise that is coupled early and independent late.
    trend = torch.exp(-t / 30) * torch.linspace(1, 2, n_layers, dtype=t.dtype)[:, None]
    shared = torch.randn(1, n_points, generator=g, dtype=t.dtype).cumsum(-1) * 0.02
    own = torch.randn(n_layers, n_points, generator=g, dtype=t.dtype) * 0.02
    coupling = torch.sigmoid((60 - t) / 6)
    x = trend + coupling * shared + own
    s = F.stability_index(x, window=16)
    v = F.rolling_volatility(s, window=5)
    fig, axes = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    axes[0].plot(t, x.T, lw=0.8)
    axes[0].set(ylabel="x_l(t)", title="a synthetic history: 8 layers, coupled noise fading out at t ~ 60")
    axes[1].plot(t, s, color="k")
    axes[1].set(ylabel="S(t)", ylim=(0, 1), title="stability index (window 16): NaN before the first full window")
    axes[2].plot(t, v, color="tab:purple")
    axes[2].set(ylabel="V(t)", xlabel="sample point t", title="volatility: std of the last 5 values of S")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=HERE / "img")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    kuramoto_figure(args.out / "kuramoto.png")
    dfa_figure(args.out / "dfa.png")
    stability_figure(args.out / "stability.png")
    print(f"wrote kuramoto.png, dfa.png, stability.png to {args.out}")


if __name__ == "__main__":
    main()
