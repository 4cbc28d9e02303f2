"""Physics and interface tests of astrid.differencing (ZOGY and the Gaussian baseline)."""

import math

import numpy as np
import pytest

from astrid import backend
from astrid.differencing import (
    BaselineResult,
    ZogyResult,
    difference_images,
    gaussian_match_subtract,
    zogy,
    zogy_tiled,
)

SKY_REF, SKY_SCI, READ = 400.0, 800.0, 5.0
SIG_REF, SIG_SCI = math.sqrt(SKY_REF + READ**2), math.sqrt(SKY_SCI + READ**2)


# --------------------------------------------------------------------------- helpers
def profile(kind, fwhm, dx, dy, beta=3.0):
    r2 = dx * dx + dy * dy
    if kind == "gaussian":
        s = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
        return np.exp(-0.5 * r2 / s**2)
    alpha = fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
    return (1.0 + r2 / alpha**2) ** (-beta)


def stamp(kind, fwhm, half=None, centre=(0.0, 0.0)):
    half = math.ceil(4 * fwhm) if half is None else half
    g = np.arange(-half, half + 1, dtype=float)
    p = profile(kind, fwhm, g[None, :] - centre[1], g[:, None] - centre[0])
    return p / p.sum()


def render(shape, xs, ys, fluxes, kind, fwhm):
    """Point sources at sub-pixel (x, y), each a normalised sampled profile."""
    img = np.zeros(shape)
    half = math.ceil(4 * fwhm)
    for x, y, f in zip(xs, ys, fluxes, strict=True):
        ix, iy = round(x), round(y)
        p = stamp(kind, fwhm, half, centre=(y - iy, x - ix))
        y0, x0 = iy - half, ix - half
        sy = slice(max(y0, 0), min(iy + half + 1, shape[0]))
        sx = slice(max(x0, 0), min(ix + half + 1, shape[1]))
        img[sy, sx] += f * p[sy.start - y0:sy.stop - y0, sx.start - x0:sx.stop - x0]
    return img


def observe(rng, model, sky):
    """Poisson (sky + model) plus read noise, background subtracted."""
    return rng.poisson(sky + model).astype(float) - sky + rng.normal(0.0, READ, model.shape)


def optimal_snr(flux, psf_sci, psf_ref, sig_sci, sig_ref, grid=256):
    """Background-limited ZOGY S/N of a point source (eqs. 13-17, F = 1)."""
    pn = np.abs(np.fft.fft2(psf_sci, s=(grid, grid))) ** 2
    pr = np.abs(np.fft.fft2(psf_ref, s=(grid, grid))) ** 2
    return flux * math.sqrt(np.sum(pn * pr / (sig_sci**2 * pr + sig_ref**2 * pn)) / grid**2)


def expected_scorr(model_sci, psf_sci, psf_ref, sig_sci, sig_ref):
    """Noise-free S_corr of a science-only source: S/N with its own Poisson noise."""
    return naive_zogy(model_sci, np.zeros_like(model_sci), psf_sci, psf_ref, sig_sci, sig_ref)[2]


def naive_zogy(n, r, pn, pr, sn, sr, fn=1.0, fr=1.0):
    """Textbook ZOGY with full-grid complex FFTs, for checking normalisations."""
    shape = n.shape

    def pad(p):
        z = np.zeros(shape)
        z[:p.shape[0], :p.shape[1]] = p
        return np.roll(z, (-(p.shape[0] // 2), -(p.shape[1] // 2)), axis=(0, 1))

    pn_h, pr_h = np.fft.fft2(pad(pn)), np.fft.fft2(pad(pr))
    n_h, r_h = np.fft.fft2(n), np.fft.fft2(r)
    den = sn**2 * fr**2 * np.abs(pr_h) ** 2 + sr**2 * fn**2 * np.abs(pn_h) ** 2
    d_h = (fr * pr_h * n_h - fn * pn_h * r_h) / np.sqrt(den)
    f_d = fr * fn / math.sqrt(sn**2 * fr**2 + sr**2 * fn**2)
    pd_h = fr * fn * pr_h * pn_h / (f_d * np.sqrt(den))
    s = np.fft.ifft2(f_d * d_h * np.conj(pd_h)).real
    kn = np.fft.ifft2(fr**2 * fn * np.conj(pn_h) * np.abs(pr_h) ** 2 / den).real
    kr = np.fft.ifft2(fn**2 * fr * np.conj(pr_h) * np.abs(pn_h) ** 2 / den).real
    conv = lambda img, k: np.fft.ifft2(np.fft.fft2(img) * np.fft.fft2(k)).real  # noqa: E731
    v = conv(n + sn**2, kn**2) + conv(r + sr**2, kr**2)
    return np.fft.ifft2(d_h).real, s, s / np.sqrt(v)


def star_field(rng, shape, n_stars, fluxes=(2e3, 2e5)):
    xs = rng.uniform(-5, shape[1] + 5, n_stars)
    ys = rng.uniform(-5, shape[0] + 5, n_stars)
    f = np.exp(rng.uniform(np.log(fluxes[0]), np.log(fluxes[1]), n_stars))
    return xs, ys, f


@pytest.fixture(scope="module")
def psfs():
    return stamp("moffat", 3.5), stamp("moffat", 2.5)


# --------------------------------------------------------------------------- statistics
@pytest.mark.parametrize(("fwhm_sci", "fwhm_ref", "sky_sci", "sky_ref"),
                         [(3.0, 3.0, 400.0, 400.0), (3.5, 2.5, SKY_SCI, SKY_REF),
                          (2.2, 4.0, 200.0, 900.0)])
def test_pure_noise_gives_standard_normal_scorr(fwhm_sci, fwhm_ref, sky_sci, sky_ref):
    # The mean of S_corr over one image scatters by ~sqrt(PSF area / N_pix) (~0.03 for
    # 256 x 256), so pool eight independent pairs to test it at the 0.02 level.
    rng = np.random.default_rng(11)
    shape = (256, 256)
    pooled = []
    for _ in range(8):
        sci, ref = observe(rng, np.zeros(shape), sky_sci), observe(rng, np.zeros(shape), sky_ref)
        out = zogy(sci, ref, stamp("moffat", fwhm_sci), stamp("moffat", fwhm_ref),
                   sigma_science=math.sqrt(sky_sci + READ**2),
                   sigma_reference=math.sqrt(sky_ref + READ**2))
        assert isinstance(out, ZogyResult)
        pooled.append(out.score_corr[~out.mask])
        assert abs(out.difference.std() - 1.0) < 0.02  # D is white with unit variance
        # Background-limited noise of S is F_S (eq. 42): S / sqrt(F_S) ~ N(0, 1) too.
        assert abs(out.score.std() / math.sqrt(out.flux_normalisation) - 1.0) < 0.05
        assert out.psf_difference.sum() == pytest.approx(1.0)
    pooled = np.concatenate(pooled)
    assert abs(pooled.mean()) < 0.02
    assert abs(pooled.std() - 1.0) < 0.05


def test_matches_textbook_formulas_including_source_noise(psfs):
    rng = np.random.default_rng(3)
    shape = (128, 96)
    xs, ys, f = star_field(rng, shape, 15)
    sci = observe(rng, render(shape, xs, ys, f, "moffat", 3.5), SKY_SCI)
    ref = observe(rng, render(shape, xs, ys, f, "moffat", 2.5), SKY_REF)
    d, s, scorr = naive_zogy(sci, ref, *psfs, SIG_SCI, SIG_REF, fn=1.2, fr=0.9)
    out = zogy(sci, ref, *psfs, sigma_science=SIG_SCI, sigma_reference=SIG_REF,
               flux_scale_science=1.2, flux_scale_reference=0.9)
    np.testing.assert_allclose(out.difference, d, atol=1e-9)
    np.testing.assert_allclose(out.score, s, atol=1e-9 * np.abs(s).max())
    np.testing.assert_allclose(out.score_corr, scorr, atol=1e-6)
    assert out.flux_scale_difference == pytest.approx(1.2 * 0.9 / math.hypot(SIG_SCI * 0.9,
                                                                            SIG_REF * 1.2))


# --------------------------------------------------------------------------- transients
@pytest.mark.parametrize("centre", [(64, 64), (40, 81)])
def test_point_source_recovered_at_optimal_snr(psfs, centre):
    rng = np.random.default_rng(5)
    shape = (128, 128)
    flux = 30.0 / optimal_snr(1.0, *psfs, SIG_SCI, SIG_REF)  # background-limited S/N 30
    model = render(shape, [centre[1]], [centre[0]], [flux], "moffat", 3.5)
    # The optimum for this flux also counts the source's own Poisson noise (eq. 26).
    best = expected_scorr(model, *psfs, SIG_SCI, SIG_REF)[centre]
    assert 0.85 * 30.0 < best < 30.0
    sci, ref = observe(rng, model, SKY_SCI), observe(rng, np.zeros(shape), SKY_REF)
    out = zogy(sci, ref, *psfs, sigma_science=SIG_SCI, sigma_reference=SIG_REF)
    peak = np.unravel_index(np.argmax(out.score_corr), shape)
    assert tuple(int(v) for v in peak) == centre
    assert out.score_corr[centre] == pytest.approx(best, rel=0.10)
    assert out.difference[centre] > 5.0  # positive: science minus reference


def test_flux_image_measures_transient_flux(psfs):
    rng = np.random.default_rng(7)
    shape = (128, 128)
    flux = 100.0 / optimal_snr(1.0, *psfs, SIG_SCI, SIG_REF)
    xs, ys, f = star_field(rng, shape, 10)
    stars_sci = render(shape, xs, ys, f, "moffat", 3.5)
    stars_ref = render(shape, xs, ys, f, "moffat", 2.5)
    trans = render(shape, [70.0], [52.0], [flux], "moffat", 3.5)
    sci, ref = observe(rng, stars_sci + trans, SKY_SCI), observe(rng, stars_ref, SKY_REF)
    out = zogy(sci, ref, *psfs, sigma_science=SIG_SCI, sigma_reference=SIG_REF)
    assert out.flux[52, 70] == pytest.approx(flux, rel=0.05)
    snr = expected_scorr(trans, *psfs, SIG_SCI, SIG_REF)[52, 70]
    assert out.flux_error[52, 70] == pytest.approx(flux / snr, rel=0.1)
    # Flux scales: a science image in other units gives the flux in true units.
    scaled = zogy(2.0 * sci, ref, *psfs, sigma_science=2.0 * SIG_SCI, sigma_reference=SIG_REF,
                  flux_scale_science=2.0, variance_science=4.0 * (sci + SIG_SCI**2).clip(0),
                  variance_reference=(ref + SIG_REF**2).clip(0))
    assert scaled.flux[52, 70] == pytest.approx(flux, rel=0.05)


def test_equal_psfs_reduce_to_scaled_plain_difference():
    rng = np.random.default_rng(9)
    psf = stamp("gaussian", 2.4, half=9)
    sci, ref = rng.normal(0.0, 20.0, (2, 64, 80))
    out = zogy(sci, ref, psf, psf, sigma_science=20.0, sigma_reference=20.0,
               flux_scale_science=1.7, flux_scale_reference=1.7)
    np.testing.assert_allclose(out.difference, (sci - ref) / (20.0 * math.sqrt(2.0)), atol=1e-8)


def test_swapping_images_negates_products(psfs):
    rng = np.random.default_rng(13)
    shape = (96, 96)
    xs, ys, f = star_field(rng, shape, 12)
    sci = observe(rng, render(shape, xs, ys, f, "moffat", 3.5), SKY_SCI)
    ref = observe(rng, render(shape, xs, ys, f, "moffat", 2.5), SKY_REF)
    kw = {"sigma_astrometric": 0.1}
    a = zogy(sci, ref, *psfs, sigma_science=SIG_SCI, sigma_reference=SIG_REF, **kw)
    b = zogy(ref, sci, psfs[1], psfs[0], sigma_science=SIG_REF, sigma_reference=SIG_SCI, **kw)
    np.testing.assert_allclose(b.difference, -a.difference, atol=1e-9)
    np.testing.assert_allclose(b.score_corr, -a.score_corr, atol=1e-9)


def test_astrometric_noise_term_removes_false_detections_on_bright_stars():
    rng = np.random.default_rng(17)
    shape = (128, 128)
    xs, ys = rng.uniform(10, 118, 25), rng.uniform(10, 118, 25)
    f = np.exp(rng.uniform(np.log(2e4), np.log(5e5), 25))
    shift = 0.3  # the reference is misregistered by 0.3 px along both axes
    sci = observe(rng, render(shape, xs, ys, f, "gaussian", 3.5), SKY_SCI)
    ref = observe(rng, render(shape, xs + shift, ys + shift, f, "gaussian", 2.5), SKY_REF)
    args = (sci, ref, stamp("gaussian", 3.5), stamp("gaussian", 2.5))
    kw = {"sigma_science": SIG_SCI, "sigma_reference": SIG_REF}
    with_ast = zogy(*args, sigma_astrometric=shift, **kw)
    without = zogy(*args, **kw)
    base = gaussian_match_subtract(sci, ref, fwhm_science=3.5, fwhm_reference=2.5, **kw)
    assert isinstance(base, BaselineResult)
    n_with = int((np.abs(with_ast.score_corr) > 5).sum())
    n_without = int((np.abs(without.score_corr) > 5).sum())
    n_base = int((np.abs(base.score) > 5).sum())
    assert n_with <= 2
    assert n_without > 10 * max(n_with, 1)
    assert n_base > 50


# --------------------------------------------------------------------------- tiles, masks, precision
def test_tiled_equals_untiled_for_uniform_psf(psfs):
    rng = np.random.default_rng(19)
    shape = (256, 224)
    xs, ys, f = star_field(rng, shape, 40)
    sci = observe(rng, render(shape, xs, ys, f, "moffat", 3.5), SKY_SCI)
    ref = observe(rng, render(shape, xs, ys, f, "moffat", 2.5), SKY_REF)
    kw = {"sigma_science": SIG_SCI, "sigma_reference": SIG_REF}
    whole = zogy(sci, ref, *psfs, **kw)
    tiled = zogy_tiled(sci, ref, lambda tile: psfs[0], psfs[1], tile_size=128, overlap=90, **kw)
    inner = (slice(32, -32), slice(32, -32))
    np.testing.assert_allclose(tiled.score_corr[inner], whole.score_corr[inner], atol=2e-3)
    np.testing.assert_allclose(tiled.difference[inner], whole.difference[inner], atol=2e-3)
    np.testing.assert_allclose(tiled.flux[inner], whole.flux[inner],
                               atol=2e-3 * float(np.abs(whole.flux).max()))


def test_tiled_follows_a_spatially_varying_psf():
    rng = np.random.default_rng(23)
    shape = (128, 256)
    xs, ys = rng.uniform(8, 248, 60), rng.uniform(8, 120, 60)
    f = np.full(60, 1e5)
    left = xs < 128
    fw_sci = np.where(left, 2.8, 4.2)
    sci = sum(observe(rng, render(shape, xs[m], ys[m], f[m], "moffat", w), SKY_SCI / 2)
              for m, w in ((left, 2.8), (~left, 4.2)))
    ref = observe(rng, render(shape, xs, ys, f, "moffat", 2.5), SKY_REF)

    def psf_sci(tile):
        centre = 0.5 * (tile[1].start + tile[1].stop)
        return stamp("moffat", 2.8 if centre < 128 else 4.2, half=17)

    kw = {"sigma_science": SIG_SCI, "sigma_reference": SIG_REF}
    tiled = zogy_tiled(sci, ref, psf_sci, stamp("moffat", 2.5, half=17), tile_size=128,
                       overlap=100, **kw)
    single = zogy(sci, ref, stamp("moffat", 3.5, half=17), stamp("moffat", 2.5, half=17), **kw)
    on_stars = render(shape, xs, ys, f, "moffat", 3.5) > 100.0
    assert np.std(tiled.score_corr[on_stars]) < 0.5 * np.std(single.score_corr[on_stars])
    assert fw_sci.size == 60


def test_masked_nan_and_saturated_pixels_do_not_ring(psfs):
    rng = np.random.default_rng(29)
    shape = (128, 128)
    xs, ys, f = np.array([40.0, 90.0]), np.array([50.0, 80.0]), np.array([3e6, 5e4])
    sci = observe(rng, render(shape, xs, ys, f, "moffat", 3.5), SKY_SCI)
    ref = observe(rng, render(shape, xs, ys, f, "moffat", 2.5), SKY_REF)
    kw = {"sigma_science": SIG_SCI, "sigma_reference": SIG_REF}
    clean = zogy(sci, ref, *psfs, **kw)
    bad_sci = sci.copy()
    bad_sci[20:24, 100:103] = np.nan  # a patch of dead pixels
    sat = 0.5 * sci[50, 40]
    bad_sci = np.where(bad_sci >= sat, 1e9, bad_sci)  # a saturated (clipped) core
    out = zogy(bad_sci, ref, *psfs, saturation=(sat, np.inf), **kw)
    assert np.all(np.isfinite(out.score_corr)) and np.all(np.isfinite(out.difference))
    assert out.mask[20:24, 100:103].all() and out.mask[50, 40]
    r = out.info["footprint_radius"]
    assert out.mask[22, 101 + r] and out.mask[22 - r, 101]  # grown by the footprint
    assert np.all(out.score_corr[out.mask & ~clean.mask] == 0.0)
    assert not out.mask[100, 20]
    good = ~out.mask
    assert np.abs(out.score_corr[good] - clean.score_corr[good]).max() < 0.5
    assert np.abs(out.score_corr[good]).max() < 5.0
    user = np.zeros(shape, bool)
    user[60:62, 60:62] = True
    assert zogy(sci, ref, *psfs, mask=user, **kw).mask[61, 61]


def test_float32_is_close_to_float64(psfs):
    rng = np.random.default_rng(31)
    shape = (128, 128)
    xs, ys, f = star_field(rng, shape, 20)
    sci = observe(rng, render(shape, xs, ys, f, "moffat", 3.5), SKY_SCI)
    ref = observe(rng, render(shape, xs, ys, f, "moffat", 2.5), SKY_REF)
    kw = {"sigma_science": SIG_SCI, "sigma_reference": SIG_REF, "sigma_astrometric": 0.05}
    a = zogy(sci, ref, *psfs, **kw)
    b = zogy(sci, ref, *psfs, dtype="float32", **kw)
    assert b.score_corr.dtype == np.float32 and b.difference.dtype == np.float32
    np.testing.assert_allclose(b.score_corr, a.score_corr, atol=2e-3)
    np.testing.assert_allclose(b.difference, a.difference, atol=2e-3)


def test_asymmetric_psfs_use_the_complex_path():
    rng = np.random.default_rng(37)
    shape = (96, 128)
    pn = stamp("moffat", 3.0, half=12, centre=(0.3, -0.2))
    pr = stamp("gaussian", 2.5, half=12, centre=(-0.1, 0.4))
    sci, ref = rng.normal(0.0, 20.0, (2, *shape))
    sci[40:43, 60:63] += 500.0
    d, s, scorr = naive_zogy(sci, ref, pn, pr, 20.0, 20.0)
    out = zogy(sci, ref, pn, pr, sigma_science=20.0, sigma_reference=20.0)
    np.testing.assert_allclose(out.difference, d, atol=1e-9)
    np.testing.assert_allclose(out.score_corr, scorr, atol=1e-6)


def test_baseline_score_is_normalised_on_noise():
    rng = np.random.default_rng(41)
    sci, ref = rng.normal(0.0, SIG_SCI, (128, 128)), rng.normal(0.0, SIG_REF, (128, 128))
    out = gaussian_match_subtract(sci, ref, fwhm_science=3.5, fwhm_reference=2.5,
                                  sigma_science=SIG_SCI, sigma_reference=SIG_REF)
    assert out.convolved == "reference"
    assert out.kernel_fwhm == pytest.approx(math.sqrt(3.5**2 - 2.5**2))
    assert abs(out.score.std() - 1.0) < 0.05
    assert abs(out.difference.std() / out.noise - 1.0) < 0.05
    same = gaussian_match_subtract(sci, ref, fwhm_science=3.0, fwhm_reference=3.0,
                                   sigma_science=SIG_SCI, sigma_reference=SIG_REF)
    np.testing.assert_allclose(same.difference, sci - ref, atol=1e-9)


# --------------------------------------------------------------------------- bad input

def test_wide_psf_on_a_small_image_keeps_the_mask_footprint_inside_the_image():
    """A PSF nearly as wide as the image (DECam seeing on a 64 px cutout): the footprint fits its grid."""
    rng = np.random.default_rng(7)
    sci, ref = rng.normal(0.0, 1.0, (2, 64, 64))
    mask = np.zeros((64, 64), bool)
    mask[30, 30] = True
    res = zogy(sci, ref, stamp("gaussian", 16.0, half=31), stamp("gaussian", 7.0, half=31),
               sigma_science=1.0, sigma_reference=1.0, mask=mask)
    assert res.info["footprint_radius"] <= 31 and res.mask[30, 30]
    assert np.isfinite(res.score_corr).all()


def test_bad_inputs_raise_value_errors_naming_the_problem(psfs):
    rng = np.random.default_rng(43)
    sci, ref = rng.normal(0.0, 10.0, (2, 64, 64))
    kw = {"sigma_science": 10.0, "sigma_reference": 10.0}
    with pytest.raises(ValueError, match="shape"):
        zogy(sci, ref[:, :60], *psfs, **kw)
    with pytest.raises(ValueError, match="science has no finite pixels"):
        zogy(np.full_like(sci, np.nan), ref, *psfs, **kw)
    with pytest.raises(ValueError, match="reference is constant"):
        zogy(sci, np.ones_like(ref), *psfs, **kw)
    with pytest.raises(ValueError, match="sigma_science"):
        zogy(sci, ref, *psfs, sigma_science=0.0, sigma_reference=10.0)
    with pytest.raises(ValueError, match="sigma_reference"):
        zogy(sci, ref, *psfs, sigma_science=1.0, sigma_reference=-1.0)
    with pytest.raises(ValueError, match="psf_science must sum to one"):
        zogy(sci, ref, 2 * psfs[0], psfs[1], **kw)
    with pytest.raises(ValueError, match="psf_reference stamp .* larger than the image"):
        zogy(sci, ref, psfs[0], stamp("gaussian", 3.0, half=40), **kw)
    with pytest.raises(ValueError, match="dtype"):
        zogy(sci, ref, *psfs, dtype="float16", **kw)
    with pytest.raises(ValueError, match="flux_scale_science"):
        zogy(sci, ref, *psfs, flux_scale_science=0.0, **kw)
    with pytest.raises(ValueError, match="sigma_astrometric"):
        zogy(sci, ref, *psfs, sigma_astrometric=-0.1, **kw)
    with pytest.raises(ValueError, match="variance_reference"):
        zogy(sci, ref, *psfs, variance_science=np.ones((64, 64)), **kw)
    with pytest.raises(ValueError, match="mask shape"):
        zogy(sci, ref, *psfs, mask=np.zeros((8, 8), bool), **kw)
    with pytest.raises(ValueError, match="2-D"):
        zogy(sci[0], ref[0], *psfs, **kw)
    with pytest.raises(ValueError, match="must exceed overlap"):
        zogy_tiled(sci, ref, *psfs, tile_size=32, overlap=40, **kw)
    with pytest.raises(ValueError, match="kernel reach"):
        zogy_tiled(sci, ref, *psfs, tile_size=48, overlap=6, **kw)
    with pytest.raises(ValueError, match="fwhm_science"):
        gaussian_match_subtract(sci, ref, fwhm_science=0.0, fwhm_reference=2.0, **kw)
    with pytest.raises(ValueError, match="wcs_from is missing"):
        difference_images(sci, ref, registration="wcs", wcs_science=None, wcs_reference=None)
    with pytest.raises(ValueError, match="registration"):
        difference_images(sci, ref, registration="magic")


# --------------------------------------------------------------------------- GPU parity
@pytest.fixture(params=["numpy", "cupy"])
def xp_name(request):
    if request.param == "cupy" and not backend.HAS_CUPY:
        pytest.skip("needs CuPy and a GPU")
    return request.param


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_backends_agree(xp_name, dtype, psfs):
    rng = np.random.default_rng(47)
    shape = (128, 128)
    xs, ys, f = star_field(rng, shape, 20)
    sci = observe(rng, render(shape, xs, ys, f, "moffat", 3.5), SKY_SCI)
    ref = observe(rng, render(shape, xs, ys, f, "moffat", 2.5), SKY_REF)
    sci[10:12, 10:12] = np.nan
    kw = {"sigma_science": SIG_SCI, "sigma_reference": SIG_REF, "sigma_astrometric": 0.1,
          "dtype": dtype}
    cpu = zogy(sci, ref, *psfs, **kw)
    device = "gpu" if xp_name == "cupy" else "cpu"
    out = zogy(backend.to_device(sci, device), backend.to_device(ref, device), *psfs, **kw)
    assert backend.get_xp(out.score_corr).__name__ == xp_name
    tol = 1e-4 if dtype == "float32" else 1e-9
    for key in ("difference", "score_corr", "score_std"):
        np.testing.assert_allclose(backend.to_numpy(getattr(out, key)), getattr(cpu, key),
                                   rtol=tol, atol=tol * float(np.abs(getattr(cpu, key)).max()))
    assert np.array_equal(backend.to_numpy(out.mask), cpu.mask)


def test_difference_dataset_adds_products_and_never_overwrites(tmp_path):
    from astrid.differencing import difference_dataset
    from astrid.manifest import Manifest, read_fits
    from astrid.simulate import generate_dataset

    manifest = generate_dataset(tmp_path / "ds", n_fields=2, n_epochs=1, image_size=128, seed=3)
    difference_dataset(manifest)
    back = Manifest.load(tmp_path / "ds")
    assert back.verify() == []
    free = []
    for sample in back.samples:
        for key in ("difference", "score", "psf_difference", "diff_mask"):
            assert back.file(sample, key).is_file()
        score, header = read_fits(back.file(sample, "score"))
        assert header["PSFSRC"] == "truth" and header["FREF"] > 0
        psf = back.read(sample, "psf_difference")
        assert abs(psf.sum() - 1) < 1e-3
        ok = (back.read(sample, "labels") == 0) & (back.read(sample, "diff_mask") == 0)
        free.append(score[ok])
    free = np.concatenate(free)
    assert abs(np.median(free)) < 0.15
    assert 0.85 < 1.4826 * np.median(np.abs(free - np.median(free))) < 1.25
    assert back.info["differencing_seconds_per_image"] > 0
    with pytest.raises(FileExistsError, match="already has a difference image"):
        difference_dataset(back)
    with pytest.raises(ValueError, match="psf_source"):
        difference_dataset(back, psf_source="gauss", overwrite=True)
