import numpy as np
import pytest
import scipy.signal
import torch

from lightning_dynamics.functional import analytic_signal, instantaneous_phase


@pytest.mark.parametrize("n", [1, 2, 7, 8, 63, 64, 1001])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_analytic_signal_equals_scipy(n: int, dtype: torch.dtype, tol: float, device: str) -> None:
    rng = np.random.default_rng(n)
    x = rng.standard_normal((3, n))
    ours = analytic_signal(torch.tensor(x, dtype=dtype, device=device)).cpu().numpy()
    ref = scipy.signal.hilbert(x.astype(np.float64), axis=-1)
    scale = max(1.0, np.abs(ref).max())
    assert np.abs(ours - ref).max() <= tol * scale


def test_analytic_signal_other_dim_matches_scipy() -> None:
    x = np.random.default_rng(0).standard_normal((5, 9, 4))
    ours = analytic_signal(torch.tensor(x), dim=1).numpy()
    np.testing.assert_allclose(ours, scipy.signal.hilbert(x, axis=1), atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_are_cast_up(dtype: torch.dtype) -> None:
    x = torch.randn(4, 33).to(dtype)
    z = analytic_signal(x)
    assert z.dtype == torch.complex64
    ref = scipy.signal.hilbert(x.float().numpy(), axis=-1)
    np.testing.assert_allclose(z.numpy(), ref, atol=1e-5)


def test_phase_without_pad_equals_scipy_angle() -> None:
    x = np.random.default_rng(1).standard_normal((4, 50))
    ours = instantaneous_phase(torch.tensor(x), pad=None).numpy()
    np.testing.assert_allclose(ours, np.angle(scipy.signal.hilbert(x)), atol=1e-10)


def test_reflect_pad_reduces_edge_error_on_a_chirp() -> None:
    t = np.linspace(0, 1, 200)
    x = np.cos(2 * np.pi * (3 * t + 4 * t**2))  # true phase 2 pi (3t + 4t^2)
    truth = np.angle(np.exp(1j * 2 * np.pi * (3 * t + 4 * t**2)))

    def edge_error(pad: str | None) -> float:
        phase = instantaneous_phase(torch.tensor(x), pad=pad).numpy()
        err = np.abs(np.angle(np.exp(1j * (phase - truth))))
        return float(np.r_[err[:10], err[-10:]].mean())

    assert edge_error("reflect") < edge_error(None)


def test_reflect_pad_matches_numpy_pad_then_trim() -> None:
    x = np.random.default_rng(2).standard_normal((3, 21))
    width = min(20, 21 // 2)
    ref = np.angle(scipy.signal.hilbert(np.pad(x, ((0, 0), (width, width)), mode="reflect")))[:, width:-width]
    np.testing.assert_allclose(instantaneous_phase(torch.tensor(x)).numpy(), ref, atol=1e-10)


def test_invalid_inputs_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="real-valued"):
        analytic_signal(torch.randn(4, dtype=torch.complex64))
    with pytest.raises(ValueError, match="non-empty"):
        analytic_signal(torch.randn(3, 0))
    with pytest.raises(ValueError, match="`pad`"):
        instantaneous_phase(torch.randn(8), pad="zeros")
