"""ZOGY proper image subtraction on NumPy (CPU) or CuPy (GPU), plus a plain baseline.

Implements Zackay, Ofek & Gal-Yam 2016 (ApJ 830, 27; "ZOGY"), the subtraction that ZTF
runs in production, written once against the array module of the inputs
(:func:`astrid.backend.get_xp`): NumPy arrays run on the CPU with ``scipy.fft`` worker
threads, CuPy arrays on the GPU with cuFFT. Move arrays with
:func:`astrid.backend.to_device` to choose the device.

Conventions
-----------
* ``science`` is the new image N, ``reference`` the reference R; the difference is
  science minus reference, so a source that brightened is positive in D, S and S_corr.
* Images are background-subtracted, in electrons (gain 1). PSF stamps are 2-D, centred
  on pixel ``shape // 2`` and sum to one. Flux scales (zero points) F_n, F_r convert
  true flux to image counts.
* The variance of each image is ``|image| + sigma**2``-style Poisson plus background
  (ZOGY eqs. 26-29, signed image so that its transform is free) unless variance images
  are given.

Only NumPy and SciPy are needed to import this module and run :func:`zogy`;
photutils, astropy and reproject are imported inside the estimation helpers of
:mod:`astrid.psf`, used by :func:`difference_images`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.fft

from astrid.backend import fft_module, get_xp, to_numpy

__all__ = [
    "BaselineResult",
    "ZogyResult",
    "difference_dataset",
    "difference_images",
    "difference_sample",
    "gaussian_match_subtract",
    "read_pair",
    "zogy",
    "zogy_tiled",
]

_DTYPES = {"float32": (np.float32, np.complex64), "float64": (np.float64, np.complex128)}
_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


# --------------------------------------------------------------------------- results
@dataclass
class ZogyResult:
    """Products of :func:`zogy` (arrays on the device of the inputs).

    Attributes
    ----------
    difference : array
        Proper difference image D (white, unit-variance noise where background-limited).
    psf_difference : array
        PSF of D, P_D, as a centred odd stamp summing to one.
    score : array
        Matched-filter score S = F_D D correlated with P_D (ZOGY eq. 12).
    score_corr : array
        S divided by its standard deviation including source and astrometric noise
        (eq. 25); N(0, 1) on empty sky.
    score_std : array
        Standard deviation of S, ``sqrt(V(S_N) + V(S_R) + V_ast)``.
    mask : array of bool
        True where the output is unreliable: bad input pixels grown by the kernel
        footprint (their D, S and S_corr are set to ``fill_value``) and, with
        ``mask_edges``, a frame as wide as the footprint where the periodic FFT wraps.
    flux_scale_difference : float
        F_D, the flux scale of D (eq. 15).
    flux_normalisation : float or array
        F_S, S of a unit-flux point source (eq. 42); an image for :func:`zogy_tiled`.
    info : dict
        Provenance: estimated inputs and settings.
    """

    difference: Any
    psf_difference: Any
    score: Any
    score_corr: Any
    score_std: Any
    mask: Any
    flux_scale_difference: float
    flux_normalisation: Any
    info: dict = field(default_factory=dict)

    @property
    def flux(self) -> Any:
        """PSF-photometry flux image S / F_S (true flux of a point source at its peak)."""
        return self.score / self.flux_normalisation

    @property
    def flux_error(self) -> Any:
        """One-sigma error of :attr:`flux`, ``sqrt(V(S)) / F_S``."""
        return self.score_std / self.flux_normalisation


@dataclass
class BaselineResult:
    """Products of :func:`gaussian_match_subtract`.

    Attributes
    ----------
    difference : array
        Science minus reference after matching the sharper image to the broader one.
    score : array
        Difference correlated with the broader Gaussian PSF and divided by its propagated
        background noise (no source or astrometric noise term).
    noise : float
        Propagated background standard deviation of one pixel of ``difference``.
    kernel_fwhm : float
        FWHM of the Gaussian matching kernel in pixels (0 when the PSFs are equal).
    convolved : str
        Which image was convolved: ``"science"``, ``"reference"`` or ``"none"``.
    """

    difference: Any
    score: Any
    noise: float
    kernel_fwhm: float
    convolved: str


# --------------------------------------------------------------------------- validation
def _dtypes(dtype: Any) -> tuple[type, type]:
    key = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if key not in _DTYPES:
        msg = f"dtype must be 'float32' or 'float64', got {dtype!r}"
        raise ValueError(msg)
    return _DTYPES[key]


def _positive(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        msg = f"{name} must be a positive number, got {value!r}"
        raise ValueError(msg) from None
    if not (math.isfinite(v) and v > 0):
        msg = f"{name} must be a positive finite number (noise and flux scales), got {value!r}"
        raise ValueError(msg)
    return v


def _astrometric(value: Any) -> tuple[float, float]:
    pair = np.broadcast_to(np.asarray(value, dtype=float), (2,))
    if not np.all(np.isfinite(pair)) or np.any(pair < 0):
        msg = f"sigma_astrometric must be one or two non-negative numbers, got {value!r}"
        raise ValueError(msg)
    return float(pair[0]), float(pair[1])


def _image(xp: Any, array: Any, name: str, rdt: type) -> Any:
    a = xp.asarray(array, dtype=rdt)
    if a.ndim != 2:
        msg = f"{name} must be a 2-D image, got shape {a.shape}"
        raise ValueError(msg)
    return a


def _check_content(xp: Any, image: Any, name: str) -> None:
    """Raise for all-NaN or constant images; cheap when the first row already varies.

    Non-finite pixels are found later from the transform's DC term (the image sum).
    """
    lo, hi = float(image[0].min()), float(image[0].max())
    if math.isfinite(lo) and math.isfinite(hi) and lo != hi:
        return
    finite = xp.isfinite(image)
    if not bool(finite.any()):
        msg = f"{name} has no finite pixels (all NaN or inf)"
        raise ValueError(msg)
    vals = image[finite]
    if float(vals.min()) == float(vals.max()):
        msg = f"{name} is constant (every finite pixel is {float(vals.min())}); nothing to subtract"
        raise ValueError(msg)


def _check_psf(psf: Any, name: str, shape: tuple[int, int], tolerance: float) -> np.ndarray:
    """Validate a PSF stamp; return it in float64, odd-sized, normalised to sum 1."""
    p = np.asarray(to_numpy(psf), dtype=np.float64)
    if p.ndim != 2 or min(p.shape) < 1:
        msg = f"{name} must be a 2-D stamp, got shape {p.shape}"
        raise ValueError(msg)
    if p.shape[0] > shape[0] or p.shape[1] > shape[1]:
        msg = f"{name} stamp {p.shape} is larger than the image {tuple(shape)}"
        raise ValueError(msg)
    if not np.all(np.isfinite(p)):
        msg = f"{name} has non-finite values"
        raise ValueError(msg)
    total = float(p.sum())
    if not abs(total - 1.0) <= tolerance:
        msg = f"{name} must sum to one (within {tolerance:g}), sums to {total:.6g}"
        raise ValueError(msg)
    # Even sizes: centre is shape // 2; one zero row/column at the end keeps it there.
    p = np.pad(p, ((0, 1 - p.shape[0] % 2), (0, 1 - p.shape[1] % 2)))
    return p / total


def _variance(xp: Any, var: Any, name: str, shape: tuple, rdt: type) -> Any:
    if var is None:
        return None
    v = _image(xp, var, name, rdt)
    if v.shape != shape:
        msg = f"{name} shape {v.shape} differs from the image shape {shape}"
        raise ValueError(msg)
    if float(xp.nanmin(v)) < 0 or not float(xp.nanmax(v)) > 0:
        msg = f"{name} must be non-negative and not all zero"
        raise ValueError(msg)
    return v


# --------------------------------------------------------------------------- small-grid kernels
def _centred_pad(stamp: np.ndarray, size: tuple) -> np.ndarray:
    """Zero-pad the first two axes of ``stamp`` symmetrically to ``size``."""
    pads = [((t - n) // 2, t - n - (t - n) // 2) for n, t in zip(stamp.shape, size, strict=True)]
    return np.pad(stamp, pads)


def _centred_crop(a: np.ndarray, half: tuple[int, int]) -> np.ndarray:
    """Centred (2 * half + 1)-sided crop of the first two axes."""
    cy, cx = a.shape[0] // 2, a.shape[1] // 2
    return a[cy - half[0]:cy + half[0] + 1, cx - half[1]:cx + half[1] + 1]


def _support_half(a: np.ndarray, threshold: float) -> tuple[int, int]:
    """Half-sizes of the centred box holding every pixel of ``a`` above ``threshold``."""
    rows = np.flatnonzero(np.any(a > threshold, axis=1)) - a.shape[0] // 2
    cols = np.flatnonzero(np.any(a > threshold, axis=0)) - a.shape[1] // 2
    return int(np.abs(rows).max(initial=0)), int(np.abs(cols).max(initial=0))


@dataclass
class _Kernels:
    """PSF-only products, computed once per PSF pair on a small grid in float64."""

    stamps: np.ndarray  # (4, my, mx): F_r P_r, F_n P_n, k_n**2, k_r**2, centred
    symmetric: bool  # all stamps mirror-symmetric in both axes: real transforms
    psf_difference: np.ndarray
    footprint: np.ndarray  # bool, centred: pixels a bad input pixel reaches
    radius: int
    flux_scale_difference: float
    den0: float


def _zogy_kernels(psf_n: np.ndarray, psf_r: np.ndarray, *, sn: float, sr: float, fn: float,
                  fr: float, shape: tuple[int, int], footprint_threshold: float) -> _Kernels:
    """k_n, k_r (eqs. 28-29), P_D (eq. 14) and the mask footprint from the PSFs alone.

    They are computed on a grid of a few PSF widths (the kernels are compact), or on the
    image grid when that is smaller, and enter the full-size computation as stamps.
    """
    m = (max(psf_n.shape[0], psf_r.shape[0]), max(psf_n.shape[1], psf_r.shape[1]))
    psfs = np.stack([fr * _centred_pad(psf_r, m), fn * _centred_pad(psf_n, m)])
    g = tuple(min(n, scipy.fft.next_fast_len(max(64, 2 * k + 16), real=True))
              for n, k in zip(shape, m, strict=True))
    grid = np.zeros((2, *g))
    grid[:, :m[0], :m[1]] = psfs  # centre moved to pixel (0, 0) by the roll
    a, b = scipy.fft.rfft2(np.roll(grid, (-(m[0] // 2), -(m[1] // 2)), axis=(1, 2)))
    a2, b2 = a.real**2 + a.imag**2, b.real**2 + b.imag**2
    den0 = sn**2 * fr**2 + sr**2 * fn**2
    den = np.maximum(sn**2 * a2 + sr**2 * b2, den0 * np.finfo(np.float64).eps ** 2)
    q = 1.0 / np.sqrt(den)
    f_d = fr * fn / math.sqrt(den0)
    # k_n, k_r (eqs. 28-29), P_D (eq. 14) and D's kernels on N and R, centred.
    kn, kr, p_d, an, ar = np.fft.fftshift(scipy.fft.irfft2(
        np.stack([np.conj(b) * a2 / den, np.conj(a) * b2 / den, a * b * q / f_d, a * q, b * q]),
        s=g), axes=(1, 2))

    # Variance kernels k**2: keep the box where they matter (1e-10 of the peak).
    k2 = np.stack([kn**2, kr**2])
    hk = _support_half(k2.sum(axis=0), 1e-10 * float(k2.sum(axis=0).max()))
    hk = (min(hk[0], (g[0] - 1) // 2), min(hk[1], (g[1] - 1) // 2))
    size = (max(m[0], 2 * hk[0] + 1), max(m[1], 2 * hk[1] + 1))
    stamps = np.zeros((4, *size))
    stamps[:2] = _centred_pad(psfs.transpose(1, 2, 0), (*size, 2)).transpose(2, 0, 1)
    stamps[2:] = _centred_pad(_centred_crop(k2.transpose(1, 2, 0), hk), (*size, 2)).transpose(
        2, 0, 1)

    scale = np.abs(stamps).max(axis=(1, 2))
    sym = bool(np.all(np.abs(stamps - stamps[:, ::-1]).max(axis=(1, 2)) <= 1e-9 * scale)
               and np.all(np.abs(stamps - stamps[:, :, ::-1]).max(axis=(1, 2)) <= 1e-9 * scale))
    if sym:  # exact symmetry makes the transforms exactly real
        stamps = (stamps + stamps[:, ::-1] + stamps[:, :, ::-1] + stamps[:, ::-1, ::-1]) / 4

    reach_of = np.abs(np.stack([kn, kr, an, ar]))
    reach = np.any(reach_of > footprint_threshold * reach_of.max(axis=(1, 2), keepdims=True), axis=0)
    half = _support_half(reach.astype(float), 0.5)
    half = (min(half[0], (g[0] - 1) // 2), min(half[1], (g[1] - 1) // 2))  # fits a small image's grid
    footprint = _centred_crop(reach, half)
    p_d = _centred_crop(p_d, (min(size[0] // 2, (g[0] - 1) // 2), min(size[1] // 2, (g[1] - 1) // 2)))
    return _Kernels(stamps=stamps, symmetric=sym, psf_difference=p_d / p_d.sum(),
                    footprint=footprint, radius=max(half), flux_scale_difference=f_d,
                    den0=den0)


# --------------------------------------------------------------------------- full-grid helpers
def _threads(xp: Any, workers: int | None, size: int) -> int:
    """Threads for the element-wise block phases (1 on the GPU and for small images)."""
    if xp is not np or size < (1 << 21):
        return 1
    if workers is None or workers < 0:
        return os.cpu_count() or 1
    return max(1, int(workers))


def _fft_kw(xp: Any, workers: int | None) -> dict:
    # scipy.fft takes worker threads; cuFFT does not need (or accept) them.
    return {"workers": -1 if workers is None else workers} if xp is np else {}


def _map_rows(xp: Any, n_rows: int, row_bytes: int, func: Callable, threads: int) -> list:
    """Apply ``func(r0, r1)`` to row blocks: cache-sized blocks over threads on the CPU."""
    if xp is not np:
        return [func(0, n_rows)]
    step = max(8, min(n_rows, (1 << 19) // max(row_bytes, 1)))  # ~0.5 MB per array
    starts = range(0, n_rows, step)
    if threads == 1 or len(starts) == 1:
        return [func(r, min(r + step, n_rows)) for r in starts]
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda r: func(r, min(r + step, n_rows)), starts))


class _Spectra:
    """Full-grid half-spectra of centred stamps, by row block: ``left[rows] @ right[k]``.

    A stamp's DFT on the image grid is a small matrix product (no FFT of a padded
    stamp); mirror-symmetric stamps have real transforms and use cosines only.
    """

    def __init__(self, xp: Any, stamps: np.ndarray, shape: tuple[int, int], symmetric: bool,
                 rdt: type, cdt: type):
        ny, nx = shape
        hy, hx = stamps.shape[1] // 2, stamps.shape[2] // 2
        # Phases built on the device: cycles per pixel times pixel offsets.
        fy = xp.fft.fftfreq(ny).astype(rdt)[:, None]
        fx = xp.fft.rfftfreq(nx).astype(rdt)[None, :]
        if symmetric:  # fold: sum_j s_j cos(2 pi f j) over j >= 0, weight 2 for j > 0
            folded = stamps[:, hy:, hx:].copy()
            folded[:, 1:, :] *= 2.0
            folded[:, :, 1:] *= 2.0
            self.left = xp.cos((2 * np.pi) * fy * xp.arange(hy + 1, dtype=rdt)[None, :])
            ex = xp.cos((2 * np.pi) * xp.arange(hx + 1, dtype=rdt)[:, None] * fx)
            self.right = xp.asarray(folded, dtype=rdt) @ ex
        else:
            oy = xp.arange(-hy, hy + 1, dtype=rdt)[None, :]
            ox = xp.arange(-hx, hx + 1, dtype=rdt)[:, None]
            self.left = xp.exp((-2j * np.pi) * (fy * oy)).astype(cdt)
            ex = xp.exp((-2j * np.pi) * (ox * fx)).astype(cdt)
            self.right = xp.asarray(stamps, dtype=cdt) @ ex

    def rows(self, r0: int, r1: int) -> Any:
        """Spectra of all stamps on rows ``r0:r1``, shape (n_stamps, r1 - r0, nx // 2 + 1)."""
        return self.left[r0:r1] @ self.right


def _abs2(xp: Any, z: Any) -> Any:
    if xp.iscomplexobj(z):
        return z.real * z.real + z.imag * z.imag
    return z * z


def _irfft2(xp: Any, spec: Any, shape: tuple[int, int], kw: dict) -> Any:
    """Inverse real 2-D FFT that may destroy ``spec``."""
    fft = fft_module(xp)
    if xp is np:  # two passes beat pocketfft's irfft2 (which copies) by about a quarter
        spec = fft.ifft(spec, axis=0, overwrite_x=True, **kw)
        return fft.irfft(spec, n=shape[1], axis=1, overwrite_x=True, **kw)
    return fft.irfft2(spec, s=shape, overwrite_x=True, **kw)


def _stamp_convolve(xp: Any, image: Any, stamp: np.ndarray, workers: int | None) -> Any:
    """Periodic convolution of ``image`` with a small centred ``stamp`` via FFT."""
    fft = fft_module(xp)
    kw = _fft_kw(xp, workers)
    cdt = np.complex64 if image.dtype == np.float32 else np.complex128
    spec = _Spectra(xp, stamp[None].astype(float), image.shape, False, image.dtype, cdt)
    f = fft.rfft2(image, **kw)
    f *= spec.rows(0, image.shape[0])[0]
    return _irfft2(xp, f, image.shape, kw)


# --------------------------------------------------------------------------- ZOGY core
def _run_zogy(xp: Any, n_img: Any, r_img: Any, bad: Any, var_n: Any, var_r: Any,
              make_kernels: Callable[[], _Kernels], *, sn: float, sr: float,
              sig_ast: tuple[float, float], fill_value: float, rdt: type, cdt: type,
              workers: int | None) -> ZogyResult:
    """ZOGY on validated, equally shaped images (bad pixels already flagged in ``bad``).

    ``make_kernels`` runs on the CPU while the device computes the first transforms.
    """
    fft = fft_module(xp)
    kw = _fft_kw(xp, workers)
    threads = _threads(xp, workers, n_img.size)
    shape = n_img.shape
    ny, nx = shape
    kern = coef = None
    n_hat = r_hat = None
    while n_hat is None:
        n_in, r_in, vn_in, vr_in = n_img, r_img, var_n, var_r
        if bad is not None:  # zero (the background level) before any FFT: no ringing
            n_in, r_in = xp.where(bad, 0, n_img), xp.where(bad, 0, r_img)
            if var_n is not None:
                vn_in, vr_in = xp.where(bad, 0, var_n), xp.where(bad, 0, var_r)
        n_hat = fft.rfft2(n_in, **kw)
        r_hat = fft.rfft2(r_in, **kw)
        if kern is None:  # PSF-only work, overlapping the device's FFTs
            kern = make_kernels()
            # Stamp spectra are made block by block (small matrix products that stay in
            # cache) rather than as four full-size arrays.
            coef = _Spectra(xp, kern.stamps, shape, kern.symmetric, rdt, cdt)
        if not math.isfinite(float(n_hat[0, 0].real + r_hat[0, 0].real)):
            # The DC term is the image sum: a NaN or inf somewhere. Flag, zero, redo.
            nonfinite = ~xp.isfinite(n_img) | ~xp.isfinite(r_img)
            bad = nonfinite if bad is None else bad | nonfinite
            n_hat = None
    if var_n is not None:
        vn_hat, vr_hat = fft.rfft2(vn_in, **kw), fft.rfft2(vr_in, **kw)
    n_in = r_in = vn_in = vr_in = None
    w = nx // 2 + 1
    colw = np.full(w, 2.0)  # Hermitian weights of the half spectrum for sums over k
    colw[0] = 1.0
    if nx % 2 == 0:
        colw[-1] = 1.0
    colw = xp.asarray(colw, dtype=rdt)
    sn2, sr2 = sn * sn, sr * sr
    floor = kern.den0 * float(np.finfo(rdt).eps) ** 2
    row_bytes = w * np.dtype(cdt).itemsize

    def coefficients(r0: int, r1: int) -> tuple:
        """F_r P_r_hat, F_n P_n_hat, their |.|**2 and the denominator of eq. 13."""
        a, b, k2n, k2r = coef.rows(r0, r1)
        a2, b2 = _abs2(xp, a), _abs2(xp, b)
        den = a2 * sn2
        den += b2 * sr2
        xp.maximum(den, floor, out=den)
        return a, b, k2n, k2r, a2, b2, den

    var_ast = None
    if sig_ast[0] > 0 or sig_ast[1] > 0:  # eqs. 30-33, while N_hat and R_hat are intact
        var_ast = xp.zeros(shape, dtype=rdt)
        fy = np.fft.fftfreq(ny)
        fx = np.fft.rfftfreq(nx)
        if ny % 2 == 0:
            fy[ny // 2] = 0.0  # no derivative at the Nyquist frequency
        if nx % 2 == 0:
            fx[-1] = 0.0
        ramps = [(sig_ast[0], xp.asarray(2j * np.pi * fy[:, None], dtype=cdt)),
                 (sig_ast[1], xp.asarray(2j * np.pi * fx[None, :], dtype=cdt))]
        part = xp.empty_like(n_hat)
        for which, img_hat in ((0, n_hat), (1, r_hat)):
            def score_part(r0: int, r1: int, which: int = which, img_hat: Any = img_hat) -> None:
                a, b, _, _, a2, b2, den = coefficients(r0, r1)
                k = xp.conj(b) * (a2 / den) if which == 0 else xp.conj(a) * (b2 / den)
                xp.multiply(k, img_hat[r0:r1], out=part[r0:r1])  # S_N or S_R (eq. 31)

            _map_rows(xp, ny, row_bytes, score_part, threads)
            for sigma, ramp in ramps:
                if sigma > 0:
                    grad = _irfft2(xp, part * ramp, shape, kw)
                    grad *= grad
                    grad *= sigma * sigma
                    var_ast += grad
        del part

    v_hat = xp.empty_like(n_hat)

    def fourier_block(r0: int, r1: int) -> Any:
        a, b, k2n, k2r = coef.rows(r0, r1)
        q = _abs2(xp, a)
        q *= sn2
        b2 = _abs2(xp, b)
        b2 *= sr2
        q += b2  # denominator of eq. 13
        xp.maximum(q, floor, out=q)
        xp.sqrt(q, out=q)
        xp.reciprocal(q, out=q)
        t = a * b  # S_hat = conj(F_r P_r F_n P_n) q D_hat = F_D D_hat conj(P_D_hat)
        if not kern.symmetric:
            xp.conj(t, out=t)
        t *= q
        fs = (_abs2(xp, t) @ colw).sum()  # this block's share of N_pix * F_S (eq. 42)
        nb, rb, vb = n_hat[r0:r1], r_hat[r0:r1], v_hat[r0:r1]
        srcn, srcr = (nb, rb) if var_n is None else (vn_hat[r0:r1], vr_hat[r0:r1])
        xp.multiply(k2n, srcn, out=vb)  # V(S_N) + V(S_R) = V_n * k_n**2 + V_r * k_r**2
        vb += xp.multiply(k2r, srcr)
        a *= q
        b *= q
        xp.multiply(a, nb, out=nb)  # D_hat = q (F_r P_r N_hat - F_n P_n R_hat), eq. 13
        nb -= xp.multiply(b, rb, out=rb)
        xp.multiply(t, nb, out=rb)
        return fs

    # F_S stays an array scalar until the end: no device synchronisation mid-pipeline.
    f_s = sum(_map_rows(xp, ny, row_bytes, fourier_block, threads)) / (ny * nx)
    coef = None
    if var_n is None:  # V_n = N + sigma_n**2: the background part adds F_S everywhere
        v_hat[0, 0] += f_s * (ny * nx)
    if var_n is not None:
        del vn_hat, vr_hat
    d_img = _irfft2(xp, n_hat, shape, kw)
    n_hat = None  # free each spectrum as soon as it is transformed (peak memory)
    s_img = _irfft2(xp, r_hat, shape, kw)
    r_hat = None
    std = _irfft2(xp, v_hat, shape, kw)
    v_hat = None
    scorr = xp.empty_like(s_img)
    tiny = f_s * np.finfo(rdt).eps

    def finish(r0: int, r1: int) -> None:
        v = std[r0:r1]
        if var_n is None:  # the signed source term averages out; guard against holes
            xp.maximum(v, 0.5 * f_s, out=v)
        else:
            xp.maximum(v, tiny, out=v)
        if var_ast is not None:
            v += var_ast[r0:r1]
        xp.sqrt(v, out=v)
        xp.divide(s_img[r0:r1], v, out=scorr[r0:r1])

    _map_rows(xp, ny, nx * np.dtype(rdt).itemsize, finish, threads)
    var_ast = None

    out_mask = xp.zeros(shape, dtype=bool)
    if bad is not None:
        reach = _stamp_convolve(xp, bad.astype(rdt), kern.footprint.astype(float), workers) > 0.5
        out_mask |= reach
        for arr in (d_img, s_img, scorr):
            arr[reach] = fill_value
    return ZogyResult(difference=d_img, psf_difference=xp.asarray(kern.psf_difference, dtype=rdt),
                      score=s_img, score_corr=scorr, score_std=std, mask=out_mask,
                      flux_scale_difference=kern.flux_scale_difference,
                      flux_normalisation=float(f_s), info={"footprint_radius": kern.radius})


def _prepare(science: Any, reference: Any, *, variance_science: Any, variance_reference: Any,
             mask: Any, saturation: Any, dtype: Any) -> tuple:
    """Validate and convert the images; return (xp, N, R, bad or None, V_n, V_r, dtypes)."""
    xp = get_xp(science, reference)
    rdt, cdt = _dtypes(dtype)
    n_img = _image(xp, science, "science", rdt)
    r_img = _image(xp, reference, "reference", rdt)
    if n_img.shape != r_img.shape:
        msg = f"science shape {n_img.shape} differs from reference shape {r_img.shape}"
        raise ValueError(msg)
    if min(n_img.shape) < 3:
        msg = f"images must be at least 3x3 pixels, got {n_img.shape}"
        raise ValueError(msg)
    shape = n_img.shape
    if (variance_science is None) != (variance_reference is None):
        msg = "give both variance_science and variance_reference, or neither"
        raise ValueError(msg)
    var_n = _variance(xp, variance_science, "variance_science", shape, rdt)
    var_r = _variance(xp, variance_reference, "variance_reference", shape, rdt)
    bad = None
    if mask is not None:
        bad = xp.asarray(mask, dtype=bool)
        if bad.shape != shape:
            msg = f"mask shape {bad.shape} differs from the image shape {shape}"
            raise ValueError(msg)
    _check_content(xp, n_img, "science")
    _check_content(xp, r_img, "reference")
    extra = []
    for v in (var_n, var_r):
        if v is not None and not math.isfinite(float(v.sum())):
            extra.append(~xp.isfinite(v))
    if saturation is not None:
        sat = np.broadcast_to(np.asarray(saturation, dtype=float), (2,))
        extra += [n_img >= float(sat[0]), r_img >= float(sat[1])]
    for e in extra:
        bad = e if bad is None else bad | e
    if bad is not None and not bool(bad.any()):
        bad = None
    return xp, n_img, r_img, bad, var_n, var_r, rdt, cdt


def _edge_frame(mask: Any, width: int) -> None:
    if width > 0:
        mask[:width] = True
        mask[-width:] = True
        mask[:, :width] = True
        mask[:, -width:] = True


def zogy(science: Any, reference: Any, psf_science: Any, psf_reference: Any, *,
         sigma_science: float, sigma_reference: float, flux_scale_science: float = 1.0,
         flux_scale_reference: float = 1.0, sigma_astrometric: Any = (0.0, 0.0),
         variance_science: Any = None, variance_reference: Any = None, mask: Any = None,
         saturation: Any = None, mask_edges: bool = True, fill_value: float = 0.0,
         psf_tolerance: float = 1e-2, footprint_threshold: float = 1e-4,
         dtype: Any = "float64", workers: int | None = None) -> ZogyResult:
    """Proper image subtraction of ``reference`` from ``science`` (ZOGY).

    Computes the proper difference D (ZOGY eq. 13), its PSF P_D (eq. 14), flux scale F_D
    (eq. 15), the matched-filter score S (eq. 12), the corrected score S_corr = S /
    sqrt(V(S)) with source noise (eqs. 25-29) and astrometric noise (eqs. 30-33), and
    the PSF-photometry flux image S / F_S with its error (eqs. 41-42). Runs on the
    device of the inputs (NumPy or CuPy) with five full-size FFTs (seven with variance
    images, four more with astrometric noise); PSF spectra come from small stamps.

    Parameters
    ----------
    science, reference : array (2-D, same shape)
        Background-subtracted images in electrons, registered to the same grid.
    psf_science, psf_reference : array (2-D)
        PSF stamps centred on pixel ``shape // 2``, summing to one (within
        ``psf_tolerance``, then renormalised), no larger than the images.
    sigma_science, sigma_reference : float
        Background noise standard deviation of each image (electrons), > 0.
    flux_scale_science, flux_scale_reference : float, optional
        Flux zero points F_n, F_r (image counts per unit true flux), > 0.
    sigma_astrometric : float or (float, float), optional
        Registration noise (sigma_y, sigma_x) in pixels along rows and columns.
    variance_science, variance_reference : array, optional
        Total per-pixel variance images (background plus sources); by default
        ``image + sigma**2`` (Poisson, gain 1).
    mask : array of bool, optional
        True for bad pixels in either image.
    saturation : float or (float, float), optional
        Pixels at or above this level (science, reference) are treated as bad.
    mask_edges : bool, optional
        Also flag a frame as wide as the kernel footprint in the output mask.
    fill_value : float, optional
        Value of D, S and S_corr where bad pixels reach.
    psf_tolerance : float, optional
        Allowed ``|sum(psf) - 1|``.
    footprint_threshold : float, optional
        A bad pixel reaches where any kernel exceeds this fraction of its peak.
    dtype : {"float64", "float32"}, optional
        Working precision.
    workers : int, optional
        CPU threads for FFTs and blocks (default: all cores); ignored on the GPU.

    Returns
    -------
    ZogyResult
        D, P_D, S, S_corr, the standard deviation of S, the output mask, F_D and F_S;
        ``result.flux`` and ``result.flux_error`` give PSF photometry at any pixel.

    Raises
    ------
    ValueError
        On shape mismatch, all-NaN or constant images, non-positive noise or flux
        scales, PSFs that do not sum to one or are larger than the images, bad dtype.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> psf = np.zeros((3, 3)); psf[1, 1] = 1.0
    >>> ref, sci = rng.normal(0.0, 10.0, (2, 16, 16))
    >>> sci[8, 8] += 300.0
    >>> out = zogy(sci, ref, psf, psf, sigma_science=10.0, sigma_reference=10.0)
    >>> bool(out.score_corr[8, 8] > 10), out.psf_difference.shape
    (True, (3, 3))
    """
    sn, sr = _positive("sigma_science", sigma_science), _positive("sigma_reference", sigma_reference)
    fn = _positive("flux_scale_science", flux_scale_science)
    fr = _positive("flux_scale_reference", flux_scale_reference)
    sig_ast = _astrometric(sigma_astrometric)
    xp, n_img, r_img, bad, var_n, var_r, rdt, cdt = _prepare(
        science, reference, variance_science=variance_science,
        variance_reference=variance_reference, mask=mask, saturation=saturation, dtype=dtype)
    shape = n_img.shape
    p_n = _check_psf(psf_science, "psf_science", shape, psf_tolerance)
    p_r = _check_psf(psf_reference, "psf_reference", shape, psf_tolerance)

    def make_kernels() -> _Kernels:
        return _zogy_kernels(p_n, p_r, sn=sn, sr=sr, fn=fn, fr=fr, shape=shape,
                             footprint_threshold=footprint_threshold)

    result = _run_zogy(xp, n_img, r_img, bad, var_n, var_r, make_kernels, sn=sn, sr=sr,
                       sig_ast=sig_ast, fill_value=fill_value, rdt=rdt, cdt=cdt, workers=workers)
    if mask_edges:
        _edge_frame(result.mask, result.info["footprint_radius"])
    result.info.update(sigma_science=sn, sigma_reference=sr, flux_scale_science=fn,
                       flux_scale_reference=fr, sigma_astrometric=sig_ast,
                       dtype=np.dtype(rdt).name)
    return result


# --------------------------------------------------------------------------- tiles
def _tile_edges(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """Evenly spaced tiles of ``tile`` pixels overlapping by at least ``overlap``."""
    if tile >= length:
        return [(0, length)]
    count = math.ceil((length - overlap) / (tile - overlap))
    starts = np.round(np.linspace(0, length - tile, count)).astype(int)
    return [(int(s), int(s) + tile) for s in starts]


def _tile_weights(edges: list[tuple[int, int]], length: int, margin: int) -> list[np.ndarray]:
    """1-D partition-of-unity weights with cos**2 ramps between neighbouring tiles.

    Each ramp sits in the middle of an overlap and keeps ``margin`` pixels away from
    both tiles' inner edges, where the periodic FFT of a tile wraps around.
    """
    ramps = []
    for (_, b0), (a1, _) in zip(edges[:-1], edges[1:], strict=True):
        lo, hi = a1 + margin, b0 - margin
        ramps.append([0.5 * (lo + hi), 0.5 * (hi - lo)])
    for i, r in enumerate(ramps):  # neighbouring ramps must not overlap
        if i > 0:
            r[1] = min(r[1], 0.5 * (r[0] - ramps[i - 1][0]))
        if i < len(ramps) - 1:
            r[1] = min(r[1], 0.5 * (ramps[i + 1][0] - r[0]))
    x = np.arange(length) + 0.5
    weights = []
    for i, (a, b) in enumerate(edges):
        w = np.ones(length)
        if i > 0:
            c, h = ramps[i - 1]
            w *= np.sin(0.5 * np.pi * np.clip((x - c + h) / (2 * h), 0, 1)) ** 2
        if i < len(edges) - 1:
            c, h = ramps[i]
            w *= np.cos(0.5 * np.pi * np.clip((x - c + h) / (2 * h), 0, 1)) ** 2
        weights.append(w[a:b])
    return weights


def _tile_value(value: Any, tile: tuple[slice, slice], image: Any, estimate: Callable) -> Any:
    if callable(value):
        return value(tile)
    if isinstance(value, str):
        return estimate(to_numpy(image[tile]), value)
    return value


def zogy_tiled(science: Any, reference: Any, psf_science: Any, psf_reference: Any, *,
               sigma_science: Any, sigma_reference: Any, tile_size: int = 512,
               overlap: int | None = None, flux_scale_science: float = 1.0,
               flux_scale_reference: float = 1.0, sigma_astrometric: Any = (0.0, 0.0),
               variance_science: Any = None, variance_reference: Any = None, mask: Any = None,
               saturation: Any = None, mask_edges: bool = True, fill_value: float = 0.0,
               psf_tolerance: float = 1e-2, footprint_threshold: float = 1e-4,
               dtype: Any = "float64", workers: int | None = None) -> ZogyResult:
    """ZOGY with a spatially varying PSF: overlapping tiles, each with its own PSF.

    Each tile is subtracted with :func:`zogy` machinery; the tiles are blended with
    cos**2 weights that sum to one, ramping inside the overlaps beyond a margin (the
    kernel reach) where periodic wrap-around would show, so there are no seams. With a
    uniform PSF the result equals :func:`zogy` away from the image edges.

    Parameters
    ----------
    science, reference : array (2-D, same shape)
        Background-subtracted, registered images (electrons).
    psf_science, psf_reference : array, callable or str
        One stamp for all tiles; or ``f(tile)`` with ``tile`` a ``(slice, slice)``
        returning the stamp for that tile; or a method name of
        :func:`astrid.psf.estimate_psf` (``"epsf"``, ``"moffat"``) to measure it per tile.
    sigma_science, sigma_reference : float or callable
        Background noise, or ``f(tile)`` returning it.
    tile_size : int, optional
        Tile side in pixels (tiles at the far edges are shifted inwards to fit).
    overlap : int, optional
        Overlap of neighbouring tiles; default three times the larger PSF stamp side.
    flux_scale_science, flux_scale_reference, sigma_astrometric, variance_science, \
variance_reference, mask, saturation, mask_edges, fill_value, psf_tolerance, \
footprint_threshold, dtype, workers
        As for :func:`zogy`.

    Returns
    -------
    ZogyResult
        Blended products; ``flux_normalisation`` is an image and ``psf_difference`` is
        that of the tile holding the image centre.

    Raises
    ------
    ValueError
        As :func:`zogy`, and for a tile or overlap too small for the PSF footprint.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> psf = np.zeros((3, 3)); psf[1, 1] = 1.0
    >>> ref, sci = rng.normal(0, 1, (2, 16, 16))
    >>> out = zogy_tiled(sci, ref, psf, psf, sigma_science=1.0, sigma_reference=1.0,
    ...                  tile_size=12, overlap=8)
    >>> out.score_corr.shape
    (16, 16)
    """
    fn = _positive("flux_scale_science", flux_scale_science)
    fr = _positive("flux_scale_reference", flux_scale_reference)
    sig_ast = _astrometric(sigma_astrometric)
    xp, n_img, r_img, bad, var_n, var_r, rdt, cdt = _prepare(
        science, reference, variance_science=variance_science,
        variance_reference=variance_reference, mask=mask, saturation=saturation, dtype=dtype)
    shape = n_img.shape

    def estimate(tile_image: np.ndarray, method: str) -> np.ndarray:
        from astrid.psf import estimate_psf  # noqa: PLC0415 - optional photutils path

        return estimate_psf(tile_image, method=method)

    sizes = [np.shape(p) for p in (psf_science, psf_reference) if not callable(p)
             and not isinstance(p, str)]
    side = max([max(s) for s in sizes], default=25)
    overlap = 3 * side if overlap is None else int(overlap)
    tile_size = int(tile_size)
    if overlap < 3 or (tile_size <= overlap and tile_size < max(shape)):
        msg = f"tile_size ({tile_size}) must exceed overlap ({overlap}), which must be >= 3"
        raise ValueError(msg)
    margin = (overlap - 1) // 3  # kept clear of wrap-around; the ramp takes the rest
    edges = [_tile_edges(n, tile_size, overlap) for n in shape]
    weights = [_tile_weights(e, n, margin) for e, n in zip(edges, shape, strict=True)]
    acc = {k: xp.zeros(shape, dtype=rdt) for k in
           ("difference", "score", "score_corr", "score_std", "flux_normalisation")}
    out_mask = xp.zeros(shape, dtype=bool)
    centre, info, f_d = None, {"tiles": []}, None
    for (y0, y1), wy in zip(edges[0], weights[0], strict=True):
        for (x0, x1), wx in zip(edges[1], weights[1], strict=True):
            tile = (slice(y0, y1), slice(x0, x1))
            sn = _positive("sigma_science", _tile_value(sigma_science, tile, n_img, estimate))
            sr = _positive("sigma_reference",
                           _tile_value(sigma_reference, tile, r_img, estimate))
            tshape = (y1 - y0, x1 - x0)
            p_n = _check_psf(_tile_value(psf_science, tile, n_img, estimate), "psf_science",
                             tshape, psf_tolerance)
            p_r = _check_psf(_tile_value(psf_reference, tile, r_img, estimate),
                             "psf_reference", tshape, psf_tolerance)
            kern = _zogy_kernels(p_n, p_r, sn=sn, sr=sr, fn=fn, fr=fr, shape=tshape,
                                 footprint_threshold=footprint_threshold)
            if kern.radius > margin and len(edges[0]) + len(edges[1]) > 2:
                msg = (f"overlap ({overlap}) is too small for the kernel reach "
                       f"({kern.radius} px); use at least {3 * kern.radius + 1}")
                raise ValueError(msg)
            w = xp.asarray(np.outer(wy, wx), dtype=rdt)
            tb = None if bad is None else bad[tile]
            if tb is not None and bool(tb.all()):
                out_mask[tile] |= w > 0
                continue
            res = _run_zogy(xp, n_img[tile], r_img[tile], tb,
                            None if var_n is None else var_n[tile],
                            None if var_r is None else var_r[tile], lambda k=kern: k,
                            sn=sn, sr=sr,
                            sig_ast=sig_ast, fill_value=fill_value, rdt=rdt, cdt=cdt,
                            workers=workers)
            for key in ("difference", "score", "score_corr", "score_std"):
                acc[key][tile] += w * getattr(res, key)
            acc["flux_normalisation"][tile] += w * res.flux_normalisation
            out_mask[tile] |= res.mask & (w > 0)
            info["tiles"].append({"tile": (y0, y1, x0, x1), "sigma_science": sn,
                                  "sigma_reference": sr, "flux_normalisation":
                                  res.flux_normalisation})
            if y0 <= shape[0] // 2 < y1 and x0 <= shape[1] // 2 < x1 and centre is None:
                centre, f_d = res.psf_difference, res.flux_scale_difference
    if mask_edges:
        _edge_frame(out_mask, kern.radius)
    return ZogyResult(difference=acc["difference"], psf_difference=centre, score=acc["score"],
                      score_corr=acc["score_corr"], score_std=acc["score_std"], mask=out_mask,
                      flux_scale_difference=f_d, flux_normalisation=acc["flux_normalisation"],
                      info=info)


# --------------------------------------------------------------------------- baseline
def gaussian_match_subtract(science: Any, reference: Any, *, fwhm_science: float,
                            fwhm_reference: float, sigma_science: float,
                            sigma_reference: float, flux_scale_science: float = 1.0,
                            flux_scale_reference: float = 1.0, dtype: Any = "float64",
                            workers: int | None = None) -> BaselineResult:
    """Baseline subtraction: Gaussian PSF matching of the sharper image, then difference.

    The sharper image is convolved with a Gaussian of FWHM ``sqrt(fwhm_broad**2 -
    fwhm_sharp**2)``, the reference is scaled by ``F_n / F_r``, and the difference
    (science minus reference) is correlated with the broader Gaussian PSF and divided by
    its propagated background noise. There is no source or astrometric noise term, which
    is what ZOGY's S_corr adds.

    Parameters
    ----------
    science, reference : array (2-D, same shape)
        Background-subtracted, registered images (electrons).
    fwhm_science, fwhm_reference : float
        Gaussian PSF FWHM of each image in pixels, > 0.
    sigma_science, sigma_reference : float
        Background noise of each image, > 0.
    flux_scale_science, flux_scale_reference : float, optional
        Flux zero points, > 0.
    dtype : {"float64", "float32"}, optional
        Working precision.
    workers : int, optional
        CPU FFT threads.

    Returns
    -------
    BaselineResult
        Difference, normalised score, per-pixel noise and the kernel used.

    Raises
    ------
    ValueError
        On shape mismatch, all-NaN or constant images, non-positive FWHM, noise or scales.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(2)
    >>> ref, sci = rng.normal(0, 1, (2, 16, 16))
    >>> out = gaussian_match_subtract(sci, ref, fwhm_science=2.0, fwhm_reference=1.5,
    ...                               sigma_science=1.0, sigma_reference=1.0)
    >>> out.convolved, out.score.shape
    ('reference', (16, 16))
    """
    fw_n, fw_r = _positive("fwhm_science", fwhm_science), _positive("fwhm_reference", fwhm_reference)
    sn, sr = _positive("sigma_science", sigma_science), _positive("sigma_reference", sigma_reference)
    fn = _positive("flux_scale_science", flux_scale_science)
    fr = _positive("flux_scale_reference", flux_scale_reference)
    xp, n_img, r_img, bad, _, _, rdt, cdt = _prepare(
        science, reference, variance_science=None, variance_reference=None, mask=None,
        saturation=None, dtype=dtype)
    if bad is not None:
        n_img, r_img = xp.where(bad, 0, n_img), xp.where(bad, 0, r_img)
    fft = fft_module(xp)
    kw = _fft_kw(xp, workers)
    ny, nx = n_img.shape
    f2 = (np.fft.fftfreq(ny)[:, None] ** 2 + np.fft.rfftfreq(nx)[None, :] ** 2)
    s_n, s_r = fw_n / _FWHM_PER_SIGMA, fw_r / _FWHM_PER_SIGMA
    s_k = math.sqrt(abs(s_n**2 - s_r**2))
    kern = np.exp(-2 * np.pi**2 * s_k**2 * f2)
    k_n, k_r = (kern, 1.0) if s_n < s_r else (1.0, kern)
    convolved = "none" if s_k == 0 else ("science" if s_n < s_r else "reference")
    scale = fn / fr
    psf_b = np.exp(-2 * np.pi**2 * max(s_n, s_r) ** 2 * f2)
    colw = np.full(nx // 2 + 1, 2.0)
    colw[0] = 1.0
    if nx % 2 == 0:
        colw[-1] = 1.0
    var_d_hat = sn**2 * np.abs(k_n) ** 2 + (scale * sr) ** 2 * np.abs(k_r) ** 2
    var_d_hat = np.broadcast_to(var_d_hat, f2.shape)
    noise = math.sqrt(float((var_d_hat * colw).sum()) / (ny * nx))
    noise_s = math.sqrt(float((var_d_hat * psf_b**2 * colw).sum()) / (ny * nx))
    d_hat = fft.rfft2(n_img, **kw) * xp.asarray(k_n, dtype=cdt)
    d_hat -= fft.rfft2(r_img, **kw) * xp.asarray(scale * np.asarray(k_r), dtype=cdt)
    diff = fft.irfft2(d_hat, s=(ny, nx), **kw)
    d_hat *= xp.asarray(psf_b / noise_s, dtype=cdt)
    score = fft.irfft2(d_hat, s=(ny, nx), overwrite_x=True, **kw)
    fw_k = s_k * _FWHM_PER_SIGMA
    return BaselineResult(difference=diff, score=score, noise=noise, kernel_fwhm=fw_k,
                          convolved=convolved)


# --------------------------------------------------------------------------- convenience
def difference_images(science: Any, reference: Any, *, psf_science: Any = None,
                      psf_reference: Any = None, sigma_science: float | None = None,
                      sigma_reference: float | None = None, flux_scale: float | None = None,
                      subtract_background: bool = True, registration: str = "none",
                      wcs_science: Any = None, wcs_reference: Any = None,
                      psf_method: str = "epsf", fwhm: float = 3.0,
                      tile_size: int | None = None, **zogy_options: Any) -> ZogyResult:
    """Measure whatever is missing from the images, then run :func:`zogy`.

    Steps: register the reference onto the science grid (``registration``), subtract
    backgrounds (photutils ``Background2D``) and take their noise, measure PSFs
    (:func:`astrid.psf.estimate_psf`) and the flux-scale ratio from matched stars, and
    subtract. What was measured is recorded in ``result.info``.

    Parameters
    ----------
    science, reference : array (2-D)
        Images in electrons (with background unless ``subtract_background=False``).
    psf_science, psf_reference : array, optional
        PSF stamps; measured with ``psf_method`` when not given.
    sigma_science, sigma_reference : float, optional
        Background noise; measured with the background when not given.
    flux_scale : float, optional
        Science-to-reference flux ratio F_n / F_r; measured from matched stars if None.
    subtract_background : bool, optional
        Estimate and subtract a smooth background from both images.
    registration : {"none", "shift", "wcs"}, optional
        ``"shift"`` measures and applies a sub-pixel shift (same grid); ``"wcs"``
        reprojects the reference with ``reproject`` using both WCS.
    wcs_science, wcs_reference : astropy.wcs.WCS or header, optional
        Needed for ``registration="wcs"``.
    psf_method : {"epsf", "moffat"}, optional
        PSF estimator.
    fwhm : float, optional
        Rough FWHM (pixels) for star finding.
    tile_size : int, optional
        Use :func:`zogy_tiled` with a PSF measured per tile when PSFs are not given.
    **zogy_options
        Passed on to :func:`zogy` (e.g. ``sigma_astrometric``, ``mask``, ``dtype``).

    Returns
    -------
    ZogyResult
        As :func:`zogy`, with the measured inputs in ``info``.

    Raises
    ------
    ValueError
        For an unknown ``registration``, missing WCS for ``"wcs"``, too few stars, and
        everything :func:`zogy` rejects.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(3)
    >>> psf = np.zeros((3, 3)); psf[1, 1] = 1.0
    >>> ref, sci = rng.normal(0, 1, (2, 16, 16))
    >>> out = difference_images(sci, ref, psf_science=psf, psf_reference=psf,
    ...                         sigma_science=1.0, sigma_reference=1.0, flux_scale=1.0,
    ...                         subtract_background=False)
    >>> out.difference.shape
    (16, 16)
    """
    from astrid import psf as est  # noqa: PLC0415 - photutils/astropy only on this path

    if registration not in {"none", "shift", "wcs"}:
        msg = f"registration must be 'none', 'shift' or 'wcs', got {registration!r}"
        raise ValueError(msg)
    sci = np.array(to_numpy(science), dtype=np.float64)
    ref = np.array(to_numpy(reference), dtype=np.float64)
    info: dict = {"registration": registration}
    if registration == "wcs":
        ref = est.register_wcs(ref, wcs_reference, wcs_science, shape_out=sci.shape)
    if sci.shape != ref.shape:
        msg = f"science shape {sci.shape} differs from reference shape {ref.shape}"
        raise ValueError(msg)
    if registration == "shift":
        shift = est.estimate_shift(sci, ref)
        ref = est.shift_image(ref, shift)
        info["shift"] = shift
    for name, img, sigma in (("science", sci, sigma_science), ("reference", ref, sigma_reference)):
        if subtract_background or sigma is None:
            bkg = est.estimate_background(img)
            if subtract_background:
                img -= bkg.background
            info[f"sigma_{name}"] = bkg.sigma if sigma is None else float(sigma)
        else:
            info[f"sigma_{name}"] = float(sigma)
    psfs = {}
    for name, img, given in (("science", sci, psf_science), ("reference", ref, psf_reference)):
        if given is not None:
            psfs[name] = given
        elif tile_size is not None:
            psfs[name] = psf_method
        else:
            psfs[name] = est.estimate_psf(img, method=psf_method, fwhm=fwhm,
                                          sigma=info[f"sigma_{name}"])
        info[f"psf_{name}_estimated"] = given is None
    if flux_scale is None:
        flux_scale = est.estimate_flux_scale(sci, ref, fwhm=fwhm)
    info["flux_scale"] = float(flux_scale)
    common = {"sigma_science": info["sigma_science"], "sigma_reference": info["sigma_reference"],
              "flux_scale_science": float(flux_scale), "flux_scale_reference": 1.0}
    if tile_size is None:
        result = zogy(sci, ref, psfs["science"], psfs["reference"], **common, **zogy_options)
    else:
        result = zogy_tiled(sci, ref, psfs["science"], psfs["reference"], tile_size=tile_size,
                            **common, **zogy_options)
    result.info.update(info)
    return result


# --- phase 2 on a dataset -------------------------------------------------------------------


def _product_path(sample: dict[str, Any], key: str) -> str:
    return (Path(sample["science"]).parent / f"{sample['id']}_{key}.fits").as_posix()


def read_pair(manifest: Any, sample: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, Any, Any, np.ndarray]:
    """Read a sample's science and reference images, their headers and the bad-pixel mask.

    Bad pixels are non-finite in either image or, where the header has ``SATURATE``,
    at 98 % of saturation or more in either image.

    Parameters
    ----------
    manifest : Manifest
        The dataset.
    sample : dict
        One entry of ``manifest`` with ``science`` and ``reference``.

    Returns
    -------
    science, reference : numpy.ndarray
        The images in float64 (ADU, with sky).
    header_science, header_reference : astropy.io.fits.Header
        Their headers.
    bad : numpy.ndarray of bool
        True where either image is unusable.

    Raises
    ------
    ManifestError
        When the sample lacks either image.
    ValueError
        When the two images differ in shape.
    """
    from astrid.manifest import read_fits

    science, h_sci = read_fits(manifest.file(sample, "science"), dtype=np.float64)
    reference, h_ref = read_fits(manifest.file(sample, "reference"), dtype=np.float64)
    if science.shape != reference.shape:
        msg = (f"sample {sample.get('id')!r}: science shape {science.shape} differs from "
               f"reference shape {reference.shape}")
        raise ValueError(msg)
    bad = ~np.isfinite(science) | ~np.isfinite(reference)
    for image, header in ((science, h_sci), (reference, h_ref)):
        if "SATURATE" in header:
            bad |= image >= 0.98 * float(header["SATURATE"])
    return science, reference, h_sci, h_ref, bad


def difference_sample(manifest: Any, sample: dict[str, Any], *, psf_source: str = "truth",
                      fwhm: float | None = None, sigma_astrometric: float = 0.1,
                      dtype: Any = "float32", device: str | None = "cpu",
                      overwrite: bool = False, workers: int | None = None) -> ZogyResult:
    """Run ZOGY on one manifest sample and write its products next to its files.

    The images are background-subtracted (photutils), their noise measured, the
    flux scales taken from the header zero points (``ZP``, magnitude of 1 ADU) so
    that D, S and the flux image are in science-image ADU, and the source-noise
    variances are ``max(image, 0) / GAIN + sigma²``. Saturated (``SATURATE``) and
    non-finite pixels are masked.

    Parameters
    ----------
    manifest : Manifest
        The dataset (products are added to ``sample`` and hashed in it; the caller saves).
    sample : dict
        One entry of ``manifest`` with ``science``, ``reference`` and, for
        ``psf_source="truth"``, ``psf_science`` and ``psf_reference``.
    psf_source : {"truth", "epsf", "moffat"}
        Use the dataset's PSF stamps, or estimate them from the images.
    fwhm : float, optional
        First guess of the FWHM in pixels for PSF estimation (default: header ``FWHMPIX``).
    sigma_astrometric : float
        Registration noise per axis in pixels (the astrometric term of S_corr).
    dtype : {"float32", "float64"}
        Working precision.
    device : {"cpu", "gpu", "auto"} or None
        Where ZOGY runs (see :func:`astrid.backend.resolve_device`).
    overwrite : bool
        Replace products the sample already has.
    workers : int, optional
        CPU threads for ZOGY's FFTs (default: all cores); ignored on the GPU.

    Returns
    -------
    ZogyResult
        On the CPU (NumPy arrays).

    Raises
    ------
    FileExistsError
        When the sample already has products and ``overwrite`` is false.
    ValueError
        For an unknown ``psf_source``.
    """
    from astrid.backend import to_device, to_numpy
    from astrid.manifest import write_fits
    from astrid.psf import estimate_background, estimate_psf

    if psf_source not in {"truth", "epsf", "moffat"}:
        msg = f"psf_source must be 'truth', 'epsf' or 'moffat', got {psf_source!r}"
        raise ValueError(msg)
    if "difference" in sample and not overwrite:
        msg = f"sample {sample['id']!r} already has a difference image; pass overwrite=True"
        raise FileExistsError(msg)
    science, reference, h_sci, h_ref, bad = read_pair(manifest, sample)
    bkg_sci = estimate_background(science, mask=bad)
    bkg_ref = estimate_background(reference, mask=bad)
    science = science - bkg_sci.background
    reference = reference - bkg_ref.background
    if psf_source == "truth":
        psf_sci = manifest.read(sample, "psf_science", dtype=np.float64)
        psf_ref = manifest.read(sample, "psf_reference", dtype=np.float64)
    else:
        psf_sci = estimate_psf(science, method=psf_source, fwhm=fwhm or float(h_sci.get("FWHMPIX", 3.0)))
        psf_ref = estimate_psf(reference, method=psf_source, fwhm=fwhm or float(h_ref.get("FWHMPIX", 3.0)))
    flux_scale_reference = 10.0 ** (0.4 * (float(h_ref["ZP"]) - float(h_sci["ZP"])))
    var_sci = np.maximum(science, 0) / float(h_sci.get("GAIN", 1.0)) + bkg_sci.sigma**2
    var_ref = np.maximum(reference, 0) / float(h_ref.get("GAIN", 1.0)) + bkg_ref.sigma**2
    arrays = [to_device(a, device) for a in (science, reference, var_sci, var_ref, bad)]
    result = zogy(arrays[0], arrays[1], psf_sci, psf_ref, sigma_science=bkg_sci.sigma,
                  sigma_reference=bkg_ref.sigma, flux_scale_reference=flux_scale_reference,
                  sigma_astrometric=(sigma_astrometric, sigma_astrometric),
                  variance_science=arrays[2], variance_reference=arrays[3], mask=arrays[4],
                  dtype=dtype, workers=workers)
    result = ZogyResult(**{k: to_numpy(v) if k in {"difference", "psf_difference", "score",
                                                     "score_corr", "score_std", "mask"} else v
                           for k, v in result.__dict__.items()})
    header = {
        "PSFSRC": (psf_source, "PSF source"),
        "SIGSCI": (bkg_sci.sigma, "science background noise (ADU)"),
        "SIGREF": (bkg_ref.sigma, "reference background noise (ADU)"),
        "FSCI": (1.0, "science flux scale"),
        "FREF": (flux_scale_reference, "reference flux scale"),
        "SIGAST": (sigma_astrometric, "astrometric noise per axis (px)"),
        "FD": (float(result.flux_scale_difference), "flux scale of D"),
        "FS": (float(np.median(result.flux_normalisation)), "S of a unit-flux point source"),
        "ZP": (float(h_sci["ZP"]), "science zero point (mag of 1 ADU)"),
    }
    products = {
        "difference": result.difference.astype(np.float32),
        "score": result.score_corr.astype(np.float32),
        "psf_difference": result.psf_difference.astype(np.float32),
        "diff_mask": result.mask.astype(np.uint8),
    }
    for key, data in products.items():
        rel = _product_path(sample, key)
        write_fits(manifest.root / rel, data, header, overwrite=overwrite)
        manifest.add_product(sample, key, rel)
    return result


_PRODUCTS = ("difference", "score", "psf_difference", "diff_mask")


def _difference_task(sample: dict[str, Any], *, root: str, options: dict[str, Any],
                     threads: int | None) -> tuple[dict[str, Any], dict[str, str]]:
    """Difference one sample (a task of :func:`difference_dataset`); return its entry and hashes.

    Products are written atomically next to the sample's files (replacing any left by
    an attempt that died); the caller records the returned hashes in its manifest.
    """
    from astrid.cluster import worker_threads
    from astrid.manifest import Manifest

    entry = dict(sample)
    single = Manifest(root=Path(root), name="task", samples=[entry])
    difference_sample(single, entry, **options, overwrite=True,
                      workers=threads if threads is not None else worker_threads())
    return entry, single.files


def _has_intact_products(manifest: Any, sample: dict[str, Any]) -> bool:
    """Whether every product of ``sample`` is on disk with its recorded sha256."""
    from astrid.manifest import sha256_file

    for key in _PRODUCTS:
        rel = sample.get(key)
        if rel is None or rel not in manifest.files:
            return False
        path = manifest.root / rel
        if not path.is_file() or sha256_file(path) != manifest.files[rel]:
            return False
    return True


def difference_dataset(manifest: Any, *, psf_source: str = "truth", sigma_astrometric: float = 0.1,
                       dtype: Any = "float32", device: str | None = "cpu", overwrite: bool = False,
                       resume: bool = False, scheduler: Any = None, threads: int | None = None,
                       progress: bool = False) -> Any:
    """Run :func:`difference_sample` on every sample and save the manifest.

    Adds ``difference``, ``score`` (S_corr), ``psf_difference`` and ``diff_mask``
    to each entry and records the settings and the seconds per image under
    ``manifest.info["differencing"]``. Samples run as tasks, in this process or on
    a Dask cluster (the same bytes either way); each writes its products
    atomically and this process records their hashes, saving the manifest every
    few seconds and when the run ends or fails.

    Parameters
    ----------
    manifest : Manifest or path
        The dataset; written back atomically.
    psf_source, sigma_astrometric, dtype, device, overwrite
        As for :func:`difference_sample`.
    resume : bool
        Skip samples whose products are on disk with their recorded sha256 (made
        with the same settings) and difference the rest.
    scheduler : str, distributed.Client or None
        ``"serial"``, ``"local"``, a scheduler address or a client
        (:func:`astrid.cluster.resolve_scheduler`); None means
        ``$ASTRID_DASK_SCHEDULER``, else serial.
    threads : int, optional
        CPU threads per image for ZOGY's FFTs (default: all cores when serial,
        the worker's threads on a cluster).
    progress : bool
        Show a progress bar (and the Dask dashboard link).

    Returns
    -------
    Manifest

    Raises
    ------
    FileExistsError
        When a sample already has products and neither ``overwrite`` nor ``resume``
        is given.
    ValueError
        For an unknown ``psf_source``, an empty manifest, or ``resume`` on products
        made with other settings.
    """
    import time

    from astrid.cluster import map_items
    from astrid.manifest import Manifest

    manifest = manifest if isinstance(manifest, Manifest) else Manifest.load(manifest)
    if not manifest.samples:
        msg = f"manifest {manifest.path} has no samples"
        raise ValueError(msg)
    if psf_source not in {"truth", "epsf", "moffat"}:
        msg = f"psf_source must be 'truth', 'epsf' or 'moffat', got {psf_source!r}"
        raise ValueError(msg)
    settings = {"method": "zogy", "psf_source": psf_source, "sigma_astrometric": sigma_astrometric,
                "dtype": str(dtype), "device": str(device)}
    previous = manifest.info.get("differencing")
    if resume and not overwrite and previous not in (None, settings):
        msg = (f"cannot resume: {manifest.path} was differenced with {previous}, not {settings}; "
               "pass overwrite=True to redo it")
        raise ValueError(msg)
    todo = []
    for sample in manifest.samples:
        if "difference" in sample and not overwrite:
            if not resume:
                msg = (f"sample {sample['id']!r} already has a difference image; pass overwrite=True "
                       "(or resume=True to skip finished samples)")
                raise FileExistsError(msg)
            if _has_intact_products(manifest, sample):
                continue
        todo.append(sample)
    manifest.info["differencing"] = settings

    def record(index: int, result: tuple[dict[str, Any], dict[str, str]]) -> None:
        todo[index].update(result[0])
        manifest.files.update(result[1])

    options = {"psf_source": psf_source, "sigma_astrometric": sigma_astrometric, "dtype": dtype,
               "device": device}
    start = time.perf_counter()
    map_items(_difference_task, todo, scheduler=scheduler, progress=progress, desc="zogy",
              shared={"root": str(manifest.root), "options": options, "threads": threads},
              on_result=record, checkpoint=manifest.save)
    if todo:
        manifest.info["differencing_seconds_per_image"] = (time.perf_counter() - start) / len(todo)
    manifest.save()
    return manifest
