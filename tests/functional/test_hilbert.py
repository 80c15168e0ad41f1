import numpy as np
import pytest
import scipy.signal
import torch

from lightning_dynamics.functional import analytic_signal, hilbert_transform, instantaneous_phase, unit_phasors
from lightning_dynamics.functional.hilbert import fast_fft_length


# 11, 13, 997, 1994 (2 x 997), 1001 (7 x 11 x 13): a prime factor above 7 takes the convolution path.
@pytest.mark.parametrize("n", [1, 2, 7, 8, 11, 13, 63, 64, 997, 1001, 1994])
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


@pytest.mark.parametrize("n", [5, 16, 21, 100, 333, 3001])  # padded lengths 9, 32, 41, 200, 665, 6001
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-4), (torch.float64, 1e-11)])
def test_reflect_padded_phase_equals_scipy_for_every_kind_of_length(n: int, dtype: torch.dtype, tol: float) -> None:
    x = np.random.default_rng(n).standard_normal((4, n))
    width = min(n - 1, n // 2)
    ref = np.angle(scipy.signal.hilbert(np.pad(x, ((0, 0), (width, width)), mode="reflect")))[:, width:-width]
    ours = instantaneous_phase(torch.tensor(x, dtype=dtype)).double().numpy()
    assert np.abs(np.angle(np.exp(1j * (ours - ref)))).max() <= tol


@pytest.mark.parametrize("pad", ["reflect", None])
def test_unit_phasors_are_cos_and_sin_of_the_phase(pad: str | None) -> None:
    x = torch.randn(3, 5, 250, dtype=torch.float64)
    cos, sin = unit_phasors(x, pad=pad)
    phase = instantaneous_phase(x, pad=pad)
    torch.testing.assert_close(cos, torch.cos(phase))
    torch.testing.assert_close(sin, torch.sin(phase))
    torch.testing.assert_close(cos.square() + sin.square(), torch.ones_like(cos))


def test_unit_phasor_of_a_zero_signal_is_phase_zero() -> None:
    cos, sin = unit_phasors(torch.zeros(2, 30))
    assert (cos == 1).all() and (sin == 0).all()
    assert (instantaneous_phase(torch.zeros(2, 30)) == 0).all()


def test_hilbert_transform_is_the_imaginary_part_on_another_dim() -> None:
    x = torch.randn(7, 13, 2, dtype=torch.float64)
    torch.testing.assert_close(hilbert_transform(x, dim=1), analytic_signal(x, dim=1).imag)
    expected = scipy.signal.hilbert(x.numpy(), axis=1).imag
    np.testing.assert_allclose(hilbert_transform(x, dim=1).numpy(), expected, atol=1e-12)


def test_fast_fft_length_is_the_next_5_smooth_size() -> None:
    for n, expected in [(1, 1), (7, 8), (11, 12), (19997, 20000), (29995, 30000), (1025, 1080)]:
        assert fast_fft_length(n) == expected
