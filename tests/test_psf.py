"""Tests of the input estimators in astrid.psf and the end-to-end difference_images."""

import math

import numpy as np
import pytest

from astrid.differencing import difference_images
from astrid.psf import (
    estimate_background,
    estimate_flux_scale,
    estimate_psf,
    estimate_shift,
    register_wcs,
    shift_image,
)

SKY, READ = 300.0, 5.0


def moffat_stamp(fwhm, half, centre=(0.0, 0.0), beta=3.0):
    g = np.arange(-half, half + 1, dtype=float)
    alpha = fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
    r2 = (g[None, :] - centre[1]) ** 2 + (g[:, None] - centre[0]) ** 2
    p = (1.0 + r2 / alpha**2) ** (-beta)
    return p / p.sum()


def render(shape, xs, ys, fluxes, fwhm):
    img = np.zeros(shape)
    half = math.ceil(4 * fwhm)
    for x, y, f in zip(xs, ys, fluxes, strict=True):
        ix, iy = round(x), round(y)
        p = f * moffat_stamp(fwhm, half, centre=(y - iy, x - ix))
        y0, x0 = iy - half, ix - half
        sy = slice(max(y0, 0), min(iy + half + 1, shape[0]))
        sx = slice(max(x0, 0), min(ix + half + 1, shape[1]))
        img[sy, sx] += p[sy.start - y0:sy.stop - y0, sx.start - x0:sx.stop - x0]
    return img


def grid_stars(shape, step, rng, flux=(5e4, 2e5)):
    ys, xs = np.mgrid[step // 2:shape[0] - step // 2:step, step // 2:shape[1] - step // 2:step]
    xs = xs.ravel() + rng.uniform(-0.5, 0.5, xs.size)
    ys = ys.ravel() + rng.uniform(-0.5, 0.5, ys.size)
    return xs, ys, rng.uniform(*flux, xs.size)


def observe(rng, model, sky=SKY):
    return rng.poisson(sky + model).astype(float) + rng.normal(0.0, READ, model.shape)


def test_background_and_noise():
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:128, :128]
    sky = SKY + 0.2 * xx
    img = rng.normal(sky, 10.0)
    img[10:12, 10:12] = np.nan
    bkg = estimate_background(img, box_size=32)
    assert np.nanmax(np.abs(bkg.background - sky)[16:-16, 16:-16]) < 4.0
    assert bkg.sigma == pytest.approx(10.0, rel=0.05)
    with pytest.raises(ValueError, match="constant"):
        estimate_background(np.ones((32, 32)))


@pytest.mark.parametrize("method", ["epsf", "moffat"])
def test_psf_estimate_matches_truth(method):
    rng = np.random.default_rng(2)
    shape = (192, 192)
    xs, ys, f = grid_stars(shape, 32, rng)
    img = observe(rng, render(shape, xs, ys, f, 3.0)) - SKY
    psf = estimate_psf(img, method=method, fwhm=3.0, size=15)
    truth = moffat_stamp(3.0, 7)
    assert psf.shape == (15, 15) and psf.sum() == pytest.approx(1.0)
    assert np.unravel_index(np.argmax(psf), psf.shape) == (7, 7)
    assert np.abs(psf - truth).sum() < 0.1  # L1 distance of unit-sum stamps
    with pytest.raises(ValueError, match="method"):
        estimate_psf(img, method="gauss")
    with pytest.raises(ValueError, match="isolated"):
        estimate_psf(rng.normal(0.0, 1.0, shape), fwhm=3.0)


def test_flux_scale_from_matched_stars():
    rng = np.random.default_rng(3)
    shape = (160, 160)
    xs, ys, f = grid_stars(shape, 32, rng, flux=(2e4, 1e5))
    ref = observe(rng, render(shape, xs, ys, f, 2.5)) - SKY
    f_sci = 1.3 * f
    f_sci[3] *= 3.0  # a variable star must not pull the fit
    sci = observe(rng, render(shape, xs, ys, f_sci, 3.5)) - SKY
    assert estimate_flux_scale(sci, ref, fwhm=3.5) == pytest.approx(1.3, rel=0.02)
    with pytest.raises(ValueError, match="shape"):
        estimate_flux_scale(sci, ref[:100])


def test_shift_is_recovered_and_applied():
    rng = np.random.default_rng(4)
    shape = (128, 128)
    xs, ys, f = grid_stars(shape, 32, rng)
    ref = observe(rng, render(shape, xs, ys, f, 3.0)) - SKY
    sci = observe(rng, render(shape, xs + 0.7, ys - 0.3, f, 3.0)) - SKY
    dy, dx = estimate_shift(sci, ref)
    assert dy == pytest.approx(-0.3, abs=0.05) and dx == pytest.approx(0.7, abs=0.05)
    moved = shift_image(ref, (dy, dx))
    assert np.isnan(moved[:, 0]).all() and np.isnan(moved[-1]).all()
    inner = (slice(8, -8), slice(8, -8))
    resid = sci[inner] - moved[inner]
    assert np.std(resid) < 1.5 * math.sqrt(2 * (SKY + READ**2))


def test_register_wcs_reprojects_and_requires_both_wcs():
    from astropy.wcs import WCS

    def make(crpix):
        w = WCS(naxis=2)
        w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        w.wcs.crval = [150.0, 2.0]
        w.wcs.crpix = crpix
        w.wcs.cdelt = [-1e-4, 1e-4]
        return w

    img = np.random.default_rng(5).normal(0.0, 1.0, (48, 48))
    out = register_wcs(img, make([20.0, 20.0]), make([23.0, 18.0]))
    # A pixel (x, y) of the input lands at (x + 3, y - 2) on the target grid.
    np.testing.assert_allclose(out[5:40, 8:40], img[7:42, 5:37], atol=1e-6)
    assert np.isnan(out[:, :3]).all()
    with pytest.raises(ValueError, match="wcs_to is missing"):
        register_wcs(img, make([20.0, 20.0]), None)
    with pytest.raises(ValueError, match="celestial"):
        register_wcs(img, make([20.0, 20.0]), WCS(naxis=2))


def test_difference_images_end_to_end():
    rng = np.random.default_rng(6)
    shape = (160, 160)
    xs, ys, f = grid_stars(shape, 32, rng, flux=(3e4, 1e5))
    ref = observe(rng, render(shape, xs, ys, f, 2.5), sky=400.0)
    sci_model = render(shape, xs + 0.4, ys - 0.25, 1.2 * f, 3.5)
    sci_model += render(shape, [64.4], [95.75], [2.5e4], 3.5)  # a new source, S/N ~ 40
    sci = observe(rng, sci_model, sky=800.0)
    out = difference_images(sci, ref, registration="shift", psf_method="moffat", fwhm=3.0,
                            sigma_astrometric=0.05)
    info = out.info
    assert info["shift"][1] == pytest.approx(0.4, abs=0.05)
    assert info["flux_scale"] == pytest.approx(1.2, rel=0.03)
    assert info["sigma_science"] == pytest.approx(math.sqrt(825.0), rel=0.05)
    assert info["psf_science_estimated"] and info["psf_reference_estimated"]
    peak = np.unravel_index(np.argmax(np.where(out.mask, 0, out.score_corr)), shape)
    assert abs(int(peak[0]) - 96) <= 1 and abs(int(peak[1]) - 64) <= 1
    assert out.score_corr[peak] > 20
    quiet = ~out.mask
    quiet[86:106, 54:74] = False
    assert np.abs(out.score_corr[quiet]).max() < 6.0
    assert abs(np.std(out.score_corr[quiet]) - 1.0) < 0.15


def test_estimate_shift_is_not_steered_by_a_saturated_trail():
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[:128, :128]
    stars = rng.uniform(10, 118, (40, 2))
    fluxes = rng.uniform(200, 2000, 40)

    def render(dy, dx):
        image = np.zeros((128, 128))
        for (y, x), f in zip(stars, fluxes, strict=True):
            image += f * np.exp(-((yy - y - dy) ** 2 + (xx - x - dx) ** 2) / (2 * 1.5**2))
        return image + rng.normal(0, 5, image.shape)

    reference = render(0.0, 0.0)
    science = render(0.4, -0.6)
    science[:, 90:93] += 6e4  # a bleed trail the reference lacks
    reference[30:33, :] += 6e4  # and a satellite trail only in the reference
    dy, dx = estimate_shift(science, reference)
    assert abs(dy - 0.4) < 0.1 and abs(dx + 0.6) < 0.1
    with pytest.raises(ValueError, match="max_shift"):
        estimate_shift(science, reference, max_shift=0)
