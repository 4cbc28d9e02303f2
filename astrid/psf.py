"""Inputs of image subtraction measured from the images themselves.

Background and its noise (photutils ``Background2D``), the PSF (photutils ePSF from
isolated stars, or a Moffat fit with astropy.modeling), the flux-scale ratio of two
images from matched stars (robust fit), the sub-pixel shift between two images on the
same grid (FFT cross-correlation refined by an upsampled DFT), and registration
through the WCS with ``reproject``. :func:`astrid.differencing.difference_images`
chains them in front of ZOGY.

photutils, astropy and reproject are imported inside the functions that need them, so
that :mod:`astrid.differencing` imports with NumPy and SciPy alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.fft

from astrid.backend import fft_module, get_xp, to_numpy

__all__ = [
    "Background",
    "estimate_background",
    "estimate_flux_scale",
    "estimate_psf",
    "estimate_shift",
    "register_wcs",
    "shift_image",
]


@dataclass
class Background:
    """Result of :func:`estimate_background`.

    Attributes
    ----------
    background : numpy.ndarray
        Smooth background image, same shape as the input.
    rms : numpy.ndarray
        Background noise image (robust standard deviation).
    sigma : float
        Median of ``rms``: one noise level for the whole image.
    """

    background: np.ndarray
    rms: np.ndarray
    sigma: float


def _as_image(image: Any, name: str = "image") -> np.ndarray:
    img = np.asarray(to_numpy(image), dtype=np.float64)
    if img.ndim != 2:
        msg = f"{name} must be a 2-D image, got shape {img.shape}"
        raise ValueError(msg)
    finite = np.isfinite(img)
    if not finite.any():
        msg = f"{name} has no finite pixels (all NaN or inf)"
        raise ValueError(msg)
    if np.ptp(img[finite]) == 0:
        msg = f"{name} is constant; no background, stars or shift can be measured"
        raise ValueError(msg)
    return img


def _bad(img: np.ndarray, mask: Any, name: str = "mask") -> np.ndarray:
    bad = ~np.isfinite(img)
    if mask is not None:
        mask = np.asarray(to_numpy(mask), dtype=bool)
        if mask.shape != img.shape:
            msg = f"{name} shape {mask.shape} differs from the image shape {img.shape}"
            raise ValueError(msg)
        bad |= mask
    return bad


def estimate_background(image: Any, *, box_size: int = 64, filter_size: int = 3,
                        sigma_clip: float = 3.0, mask_sources: bool = True,
                        mask: Any = None) -> Background:
    """Smooth background and noise of an image with photutils ``Background2D``.

    Sigma-clipped medians in boxes, median-filtered and interpolated; the noise is the
    MAD-based standard deviation per box (unbiased for Gaussian noise after clipping).
    With ``mask_sources``, a second pass ignores sources (photutils
    ``detect_sources`` above twice the first-pass noise, grown by 11 pixels) so that
    star wings do not inflate the noise.

    Parameters
    ----------
    image : array (2-D)
        Image in electrons; NaN pixels are ignored.
    box_size : int, optional
        Box side in pixels (capped at the image size).
    filter_size : int, optional
        Median filter size in boxes (1 when the image holds fewer than 3 boxes).
    sigma_clip : float, optional
        Clipping threshold in standard deviations.
    mask_sources : bool, optional
        Mask detected sources and measure again.
    mask : array of bool, optional
        True for pixels to ignore.

    Returns
    -------
    Background
        Background image, noise image and the median noise ``sigma``.

    Raises
    ------
    ValueError
        For non-2-D, all-NaN or constant images, or a mask of another shape.

    Examples
    --------
    >>> import numpy as np
    >>> img = 100.0 + np.random.default_rng(0).normal(0.0, 5.0, (16, 16))
    >>> bkg = estimate_background(img, box_size=8)
    >>> bool(abs(bkg.sigma - 5.0) < 1.5), bkg.background.shape
    (True, (16, 16))
    """
    from astropy.stats import SigmaClip  # noqa: PLC0415 - optional dependency
    from photutils.background import (  # noqa: PLC0415
        Background2D,
        MADStdBackgroundRMS,
        MedianBackground,
    )

    img = _as_image(image)
    bad = _bad(img, mask)
    box = (min(int(box_size), img.shape[0]), min(int(box_size), img.shape[1]))
    n_boxes = min(img.shape[0] // box[0], img.shape[1] // box[1])
    size = filter_size if n_boxes >= filter_size else 1
    def measure(ignore: np.ndarray) -> Any:
        return Background2D(np.where(ignore, 0.0, img), box, mask=ignore, filter_size=size,
                            sigma_clip=SigmaClip(sigma=sigma_clip),
                            bkg_estimator=MedianBackground(),
                            bkg_rms_estimator=MADStdBackgroundRMS(), exclude_percentile=80.0)

    bkg = measure(bad)
    if mask_sources:
        import warnings  # noqa: PLC0415

        from photutils.segmentation import detect_sources  # noqa: PLC0415

        resid = np.where(bad, 0.0, img - bkg.background)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "no sources found" is a fine answer here
            seg = detect_sources(resid, 2.0 * np.asarray(bkg.background_rms), 5, mask=bad)
        if seg is not None:
            sources = np.asarray(seg.make_source_mask(size=11), dtype=bool)
            if (~(bad | sources)).sum() > 0.1 * img.size:
                bkg = measure(bad | sources)
    rms = np.asarray(bkg.background_rms, dtype=np.float64)
    return Background(background=np.asarray(bkg.background, dtype=np.float64), rms=rms,
                      sigma=float(np.median(rms)))


def _find_stars(img: np.ndarray, bad: np.ndarray, *, fwhm: float, sigma: float,
                threshold: float, size: int, saturation: float | None) -> np.ndarray:
    """Isolated, unsaturated, unmasked stars as rows (x, y, flux), brightest first."""
    import warnings  # noqa: PLC0415

    from photutils.detection import DAOStarFinder  # noqa: PLC0415 - optional dependency
    from scipy.spatial import cKDTree  # noqa: PLC0415

    finder = DAOStarFinder(threshold=threshold * sigma, fwhm=fwhm, exclude_border=True,
                           min_separation=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no sources found": reported by our caller
        found = finder(np.where(bad, 0.0, img), mask=bad)
    if found is None or len(found) == 0:
        return np.empty((0, 3))
    new_names = "x_centroid" in found.colnames  # photutils >= 3 renamed the columns
    xcol, ycol = ("x_centroid", "y_centroid") if new_names else ("xcentroid", "ycentroid")
    xyf = np.column_stack([np.asarray(found[xcol], dtype=float),
                           np.asarray(found[ycol], dtype=float),
                           np.asarray(found["flux"], dtype=float)])
    xyf = xyf[np.all(np.isfinite(xyf), axis=1)]
    half = size // 2
    ny, nx = img.shape
    keep = ((xyf[:, 0] >= half + 1) & (xyf[:, 0] < nx - half - 1)
            & (xyf[:, 1] >= half + 1) & (xyf[:, 1] < ny - half - 1))
    if len(xyf) > 1:
        dist, _ = cKDTree(xyf[:, :2]).query(xyf[:, :2], k=2)
        keep &= dist[:, 1] > 0.75 * size
    ok = []
    for x, y, _ in xyf[keep]:
        ix, iy = round(x), round(y)
        cut = (slice(iy - half, iy + half + 1), slice(ix - half, ix + half + 1))
        sat = saturation is not None and img[cut].max() >= saturation
        ok.append(not bad[cut].any() and not sat)
    stars = xyf[keep][np.asarray(ok, dtype=bool)] if ok else np.empty((0, 3))
    return stars[np.argsort(-stars[:, 2])]


def _odd_size(size: int | None, fwhm: float) -> int:
    size = 2 * math.ceil(4.0 * fwhm) + 1 if size is None else int(size)
    return size + 1 - size % 2


def estimate_psf(image: Any, *, method: str = "epsf", fwhm: float = 3.0,
                 size: int | None = None, sigma: float | None = None, threshold: float = 10.0,
                 n_stars: int = 40, saturation: float | None = None,
                 mask: Any = None) -> np.ndarray:
    """Measure the PSF of a background-subtracted image from its isolated stars.

    Parameters
    ----------
    image : array (2-D)
        Background-subtracted image (electrons).
    method : {"epsf", "moffat"}, optional
        ``"epsf"``: photutils ``EPSFBuilder`` (empirical, pixel-sampled) on the
        brightest isolated stars; ``"moffat"``: a Moffat2D fitted to each star with
        astropy.modeling, the median shape rendered centred.
    fwhm : float, optional
        Rough FWHM in pixels for star finding (and the default stamp size).
    size : int, optional
        Odd stamp side; default ``2 * ceil(4 * fwhm) + 1``.
    sigma : float, optional
        Background noise; measured by sigma clipping when not given.
    threshold : float, optional
        Detection threshold in units of ``sigma``.
    n_stars : int, optional
        Use at most this many of the brightest isolated stars.
    saturation : float, optional
        Reject stars whose stamp reaches this level.
    mask : array of bool, optional
        True for pixels to ignore; stars touching them are rejected.

    Returns
    -------
    numpy.ndarray
        Odd-sized stamp centred on ``size // 2``, summing to one.

    Raises
    ------
    ValueError
        For an unknown ``method``, bad images, or too few isolated stars.

    Examples
    --------
    >>> import numpy as np
    >>> yy, xx = np.mgrid[:64, :64]
    >>> img = sum(1e4 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.3**2))
    ...           for x, y in [(16.2, 15.7), (47.6, 16.1), (15.9, 47.3), (48.1, 48.4)])
    >>> img = img + np.random.default_rng(0).normal(0.0, 1.0, img.shape)
    >>> psf = estimate_psf(img, method="moffat", fwhm=3.0, size=11)
    >>> psf.shape, round(float(psf.sum()), 6)
    ((11, 11), 1.0)
    """
    if method not in {"epsf", "moffat"}:
        msg = f"method must be 'epsf' or 'moffat', got {method!r}"
        raise ValueError(msg)
    from astropy.stats import sigma_clipped_stats  # noqa: PLC0415 - optional dependency

    img = _as_image(image)
    bad = _bad(img, mask)
    size = _odd_size(size, fwhm)
    if size > min(img.shape):
        msg = f"PSF size {size} is larger than the image {img.shape}"
        raise ValueError(msg)
    _, median, std = sigma_clipped_stats(img, mask=bad)
    sigma = float(std) if sigma is None else float(sigma)
    if not (math.isfinite(sigma) and sigma > 0):
        msg = f"sigma must be positive, got {sigma}"
        raise ValueError(msg)
    img = img - median
    stars = _find_stars(img, bad, fwhm=fwhm, sigma=sigma, threshold=threshold, size=size,
                        saturation=saturation)[:n_stars]
    need = 3 if method == "epsf" else 1
    if len(stars) < need:
        msg = (f"estimate_psf found {len(stars)} isolated unsaturated stars above "
               f"{threshold} sigma; need at least {need}")
        raise ValueError(msg)
    psf = _epsf(img, stars, size) if method == "epsf" else _moffat(img, stars, size, fwhm)
    psf = np.where(np.isfinite(psf), psf, 0.0)
    return psf / psf.sum()


def _epsf(img: np.ndarray, stars: np.ndarray, size: int) -> np.ndarray:
    from astropy.nddata import NDData  # noqa: PLC0415 - optional dependency
    from astropy.table import Table  # noqa: PLC0415
    from photutils.psf import EPSFBuilder, extract_stars  # noqa: PLC0415

    cutouts = extract_stars(NDData(np.nan_to_num(img)),
                            Table({"x": stars[:, 0], "y": stars[:, 1]}), size=(size, size))
    builder = EPSFBuilder(oversampling=1, shape=(size + 2, size + 2), smoothing_kernel=None,
                          maxiters=10, progress_bar=False)
    epsf, _ = builder(cutouts)
    data = np.asarray(epsf.data, dtype=np.float64)
    dy, dx = data.shape[0] - size, data.shape[1] - size
    if dy > 0 or dx > 0:
        data = data[dy // 2:dy // 2 + size, dx // 2:dx // 2 + size]
    return data


def _moffat(img: np.ndarray, stars: np.ndarray, size: int, fwhm: float) -> np.ndarray:
    import warnings  # noqa: PLC0415

    from astropy.modeling import fitting, models  # noqa: PLC0415 - optional dependency

    half = size // 2
    g = np.arange(size, dtype=float)
    yy, xx = np.meshgrid(g, g, indexing="ij")
    fitter = fitting.TRFLSQFitter()
    shapes = []
    for x, y, _ in stars:
        ix, iy = round(x), round(y)
        cut = img[iy - half:iy + half + 1, ix - half:ix + half + 1]
        start = models.Moffat2D(amplitude=float(cut.max()), x_0=half + x - ix, y_0=half + y - iy,
                                gamma=fwhm / 1.5, alpha=3.0)
        start.alpha.bounds = (1.01, 20.0)
        start.gamma.bounds = (0.1, float(size))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = fitter(start, xx, yy, cut, maxiter=200)
        if np.isfinite(fit.gamma.value) and np.isfinite(fit.alpha.value):
            shapes.append((abs(float(fit.gamma.value)), float(fit.alpha.value)))
    if not shapes:
        msg = "Moffat fits failed on every star"
        raise ValueError(msg)
    gamma, alpha = np.median(np.asarray(shapes), axis=0)
    model = models.Moffat2D(amplitude=1.0, x_0=half, y_0=half, gamma=gamma, alpha=alpha)
    return model(xx, yy)


def estimate_flux_scale(science: Any, reference: Any, *, fwhm: float = 3.0,
                        radius: float | None = None, threshold: float = 10.0,
                        sigma_science: float | None = None,
                        sigma_reference: float | None = None, saturation: float | None = None,
                        mask: Any = None, min_stars: int = 3) -> float:
    """Flux ratio science / reference (F_n / F_r) from stars matched in both images.

    Isolated stars are found in the reference; both images are measured in the same
    circular apertures (large enough for both PSFs); the ratio is the inverse-variance
    weighted mean of the per-star ratios after iterative 3-sigma clipping (variable
    stars and transients drop out).

    Parameters
    ----------
    science, reference : array (2-D, same shape)
        Background-subtracted, registered images (electrons).
    fwhm : float, optional
        FWHM of the broader PSF in pixels.
    radius : float, optional
        Aperture radius; default ``3 * fwhm``.
    threshold : float, optional
        Detection threshold in units of the reference noise.
    sigma_science, sigma_reference : float, optional
        Background noise of each image; measured by sigma clipping when not given.
    saturation : float, optional
        Reject stars reaching this level in either image.
    mask : array of bool, optional
        True for pixels to ignore.
    min_stars : int, optional
        Fewest usable stars.

    Returns
    -------
    float
        F_n / F_r.

    Raises
    ------
    ValueError
        For shape mismatch, bad images, or fewer than ``min_stars`` usable stars.

    Examples
    --------
    >>> import numpy as np
    >>> yy, xx = np.mgrid[:64, :64]
    >>> stars = sum(f * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 4.5)
    ...             for f, x, y in [(900, 16, 16), (500, 47, 17), (700, 16, 47), (400, 46, 46)])
    >>> rng = np.random.default_rng(0)
    >>> ref = stars + rng.normal(0.0, 1.0, stars.shape)
    >>> sci = 1.5 * stars + rng.normal(0.0, 1.0, stars.shape)
    >>> round(estimate_flux_scale(sci, ref, fwhm=3.5), 2)
    1.5
    """
    from astropy.stats import sigma_clip, sigma_clipped_stats  # noqa: PLC0415
    from photutils.aperture import CircularAperture, aperture_photometry  # noqa: PLC0415

    sci, ref = _as_image(science, "science"), _as_image(reference, "reference")
    if sci.shape != ref.shape:
        msg = f"science shape {sci.shape} differs from reference shape {ref.shape}"
        raise ValueError(msg)
    bad = _bad(sci, mask) | ~np.isfinite(ref)
    sig = []
    for img, given in ((sci, sigma_science), (ref, sigma_reference)):
        s = float(sigma_clipped_stats(img, mask=bad)[2]) if given is None else float(given)
        if not (math.isfinite(s) and s > 0):
            msg = f"noise must be positive, got {s}"
            raise ValueError(msg)
        sig.append(s)
    radius = 3.0 * fwhm if radius is None else float(radius)
    size = 2 * math.ceil(radius) + 1
    stars = _find_stars(ref, bad, fwhm=fwhm, sigma=sig[1], threshold=threshold, size=size,
                        saturation=saturation)
    if saturation is not None and len(stars):
        peaks = [sci[round(y), round(x)] for x, y, _ in stars]
        stars = stars[np.asarray(peaks) < saturation]
    if len(stars) < min_stars:
        msg = f"estimate_flux_scale found {len(stars)} usable stars, need {min_stars}"
        raise ValueError(msg)
    aper = CircularAperture(stars[:, :2], r=radius)
    f_sci = np.asarray(aperture_photometry(np.where(bad, 0, sci), aper)["aperture_sum"])
    f_ref = np.asarray(aperture_photometry(np.where(bad, 0, ref), aper)["aperture_sum"])
    area = math.pi * radius**2
    var_sci = np.clip(f_sci, 0, None) + area * sig[0] ** 2
    var_ref = np.clip(f_ref, 0, None) + area * sig[1] ** 2
    good = (f_ref > 20 * np.sqrt(var_ref)) & (f_sci > 0)
    if good.sum() < min_stars:
        msg = f"estimate_flux_scale found {int(good.sum())} stars with S/N > 20, need {min_stars}"
        raise ValueError(msg)
    ratio = f_sci[good] / f_ref[good]
    var = ratio**2 * (var_sci[good] / f_sci[good] ** 2 + var_ref[good] / f_ref[good] ** 2)
    kept = ~np.ma.getmaskarray(sigma_clip(ratio, sigma=3.0, maxiters=10))
    weights = 1.0 / var[kept]
    return float(np.sum(weights * ratio[kept]) / np.sum(weights))


def _upsampled_cc(spec: np.ndarray, centre: np.ndarray, upsample: int, half: int) -> np.ndarray:
    """Cross-correlation near ``centre`` on a 1/upsample grid, by matrix DFT."""
    ny, nx = spec.shape
    offs = np.arange(-half, half + 1) / upsample
    ky, kx = np.fft.fftfreq(ny), np.fft.fftfreq(nx)
    ey = np.exp(2j * np.pi * np.outer(centre[0] + offs, ky))
    ex = np.exp(2j * np.pi * np.outer(kx, centre[1] + offs))
    return (ey @ spec @ ex).real


def estimate_shift(science: Any, reference: Any, *, upsample: int = 20,
                   mask: Any = None, max_shift: float | None = 10.0) -> tuple[float, float]:
    """Sub-pixel shift (dy, dx) that moves ``reference`` onto ``science``.

    ``science(y, x) ~ reference(y - dy, x - dx)``: the peak of the FFT
    cross-correlation, refined to ``1 / upsample`` pixel with an upsampled matrix DFT
    around it (Guizar-Sicairos et al. 2008).

    Parameters
    ----------
    science, reference : array (2-D, same shape)
        Images on the same pixel grid.
    upsample : int, optional
        Refinement factor (precision ``1 / upsample`` pixel).
    mask : array of bool, optional
        True for pixels to ignore (set to the median).
    max_shift : float or None
        Largest shift searched, in pixels per axis (images are already on the
        same grid, so only small residuals are plausible; None searches all).
        Pixels are also clipped at 100 robust sigma so that saturated stars,
        bleed trails and satellite trails cannot steer the correlation.

    Returns
    -------
    tuple of float
        (dy, dx) in pixels; apply with :func:`shift_image`.

    Raises
    ------
    ValueError
        For shape mismatch, bad images, or ``upsample < 1``.

    Examples
    --------
    >>> import numpy as np
    >>> yy, xx = np.mgrid[:32, :32]
    >>> ref = np.exp(-((xx - 15.0) ** 2 + (yy - 16.0) ** 2) / 8.0)
    >>> sci = np.exp(-((xx - 15.5) ** 2 + (yy - 15.75) ** 2) / 8.0)
    >>> [round(v, 2) for v in estimate_shift(sci, ref)]
    [-0.25, 0.5]
    """
    if int(upsample) < 1:
        msg = f"upsample must be at least 1, got {upsample}"
        raise ValueError(msg)
    sci, ref = _as_image(science, "science"), _as_image(reference, "reference")
    if sci.shape != ref.shape:
        msg = f"science shape {sci.shape} differs from reference shape {ref.shape}"
        raise ValueError(msg)
    if max_shift is not None and not max_shift > 0:
        msg = f"max_shift must be positive or None, got {max_shift!r}"
        raise ValueError(msg)
    bad = _bad(sci, mask) | ~np.isfinite(ref)

    def prepared(image: np.ndarray) -> np.ndarray:
        centre = np.median(image[~bad])
        sigma = 1.4826 * np.median(np.abs(image[~bad] - centre)) or 1.0
        return np.where(bad, 0.0, np.clip(image - centre, -5.0 * sigma, 100.0 * sigma))

    spec = scipy.fft.fft2(prepared(sci), workers=-1) * np.conj(scipy.fft.fft2(prepared(ref), workers=-1))
    cc = scipy.fft.ifft2(spec, workers=-1).real
    dims = np.array(cc.shape)
    if max_shift is not None:
        lags = [np.minimum(np.arange(n), n - np.arange(n)) for n in cc.shape]
        cc = np.where((lags[0][:, None] <= max_shift) & (lags[1][None, :] <= max_shift), cc, -np.inf)
    peak = np.array(np.unravel_index(np.argmax(cc), cc.shape), dtype=float)
    peak[peak > dims // 2] -= dims[peak > dims // 2]
    up = int(upsample)
    for step in ([2, up] if up > 1 else []):  # coarse then fine, each within +-1.5 px
        half = math.ceil(1.5 * step)
        fine = _upsampled_cc(spec, peak, step, half)
        iy, ix = np.unravel_index(np.argmax(fine), fine.shape)
        peak = peak + (np.array([iy, ix]) - half) / step
    return float(peak[0]), float(peak[1])


def shift_image(image: Any, shift: Any, *, workers: int | None = None) -> Any:
    """Shift an image by (dy, dx) pixels with a Fourier phase ramp.

    The shift is exact for band-limited images and periodic; the rows and columns that
    wrap around are set to NaN so that :func:`astrid.differencing.zogy` masks them.
    Runs on the device of ``image``.

    Parameters
    ----------
    image : array (2-D)
        Image to shift (NaN pixels count as 0 and stay NaN at their new place).
    shift : (float, float)
        (dy, dx) as returned by :func:`estimate_shift`.
    workers : int, optional
        CPU FFT threads.

    Returns
    -------
    array
        Shifted image (float64) with NaN in the wrapped border.

    Raises
    ------
    ValueError
        For a non-2-D image or a malformed shift.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.zeros((8, 8)); img[3, 3] = 1.0
    >>> out = shift_image(img, (1.0, 2.0))
    >>> int(np.nanargmax(out)) == 4 * 8 + 5, bool(np.isnan(out[0, 0]))
    (True, True)
    """
    xp = get_xp(image)
    img = xp.asarray(image, dtype=xp.float64)
    if img.ndim != 2:
        msg = f"image must be 2-D, got shape {img.shape}"
        raise ValueError(msg)
    dy, dx = (float(v) for v in np.broadcast_to(np.asarray(shift, dtype=float), (2,)))
    if not (math.isfinite(dy) and math.isfinite(dx)):
        msg = f"shift must be two finite numbers, got {shift!r}"
        raise ValueError(msg)
    fft = fft_module(xp)
    kw = {"workers": -1 if workers is None else workers} if xp is np else {}
    ny, nx = img.shape
    bad = ~xp.isfinite(img)
    ramp = np.exp(-2j * np.pi * (np.fft.fftfreq(ny)[:, None] * dy
                                 + np.fft.rfftfreq(nx)[None, :] * dx))
    out = fft.irfft2(fft.rfft2(xp.where(bad, 0.0, img), **kw) * xp.asarray(ramp), s=(ny, nx),
                     **kw)
    if bool(bad.any()):
        moved = fft.irfft2(fft.rfft2(bad.astype(xp.float64), **kw) * xp.asarray(ramp),
                           s=(ny, nx), **kw)
        out[moved > 0.01] = xp.nan
    wy, wx = math.ceil(abs(dy)), math.ceil(abs(dx))
    if wy:
        out[slice(0, wy) if dy > 0 else slice(ny - wy, ny)] = xp.nan
    if wx:
        out[:, slice(0, wx) if dx > 0 else slice(nx - wx, nx)] = xp.nan
    return out


def register_wcs(image: Any, wcs_from: Any, wcs_to: Any, *,
                 shape_out: tuple[int, int] | None = None, order: str = "bilinear") -> np.ndarray:
    """Reproject ``image`` from the pixel grid of ``wcs_from`` onto that of ``wcs_to``.

    Uses ``reproject.reproject_interp``; pixels outside the input footprint are NaN.

    Parameters
    ----------
    image : array (2-D)
        Image on the grid of ``wcs_from``.
    wcs_from, wcs_to : astropy.wcs.WCS or astropy.io.fits.Header
        Celestial WCS of the input and of the target grid.
    shape_out : (int, int), optional
        Output shape; default the input shape.
    order : str, optional
        Interpolation order for ``reproject_interp``.

    Returns
    -------
    numpy.ndarray
        The image on the target grid.

    Raises
    ------
    ValueError
        When a WCS is missing or has no celestial axes.

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.wcs import WCS
    >>> w = WCS(naxis=2); w.wcs.ctype = ["RA---TAN", "DEC--TAN"]; w.wcs.crval = [10, 20]
    >>> w.wcs.crpix = [8, 8]; w.wcs.cdelt = [-1e-4, 1e-4]
    >>> img = np.arange(256.0).reshape(16, 16)
    >>> bool(np.allclose(register_wcs(img, w, w)[2:-2, 2:-2], img[2:-2, 2:-2]))
    True
    """
    from astropy.io.fits import Header  # noqa: PLC0415 - optional dependency
    from astropy.wcs import WCS  # noqa: PLC0415
    from reproject import reproject_interp  # noqa: PLC0415

    wcs = []
    for name, w in (("wcs_from", wcs_from), ("wcs_to", wcs_to)):
        if w is None:
            msg = f"{name} is missing: registration through the WCS needs both WCS"
            raise ValueError(msg)
        w = WCS(w) if isinstance(w, Header) else w
        if not isinstance(w, WCS) or not w.has_celestial:
            msg = f"{name} must be an astropy WCS with celestial axes, got {type(w).__name__}"
            raise ValueError(msg)
        wcs.append(w.celestial)
    img = np.asarray(to_numpy(image), dtype=np.float64)
    if img.ndim != 2:
        msg = f"image must be 2-D, got shape {img.shape}"
        raise ValueError(msg)
    out, footprint = reproject_interp((img, wcs[0]), wcs[1], shape_out=shape_out or img.shape,
                                      order=order)
    out = np.asarray(out, dtype=np.float64)
    out[np.asarray(footprint) == 0] = np.nan
    return out
