"""Point-spread functions and fast stamp rendering.

The PSF is an elliptical Moffat profile, sampled on a 2× sub-pixel grid when
the core is undersampled, truncated to a square stamp and normalised to sum 1
on that stamp. The same function draws the delivered PSF stamps (centred) and
every rendered point source (sub-pixel offsets), so the stamps in a dataset are
exactly the profile its sources were drawn with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["MoffatPSF", "add_stamps", "point_stamps"]


@dataclass(frozen=True)
class MoffatPSF:
    """An elliptical Moffat PSF in pixel units.

    ``I(r) ∝ (1 + r²/α²)^(-β)`` with ``r`` measured in an ellipse of axis ratio
    ``1 - ellipticity`` whose geometric-mean FWHM is ``fwhm``.

    Attributes
    ----------
    fwhm : float
        Geometric-mean full width at half maximum in pixels.
    beta : float
        Moffat power index (> 1; 2.5-4.5 for ground-based seeing).
    ellipticity : float
        ``1 - b/a`` in [0, 1).
    angle : float
        Position angle of the major axis in radians (from +x towards +y).
    """

    fwhm: float
    beta: float = 3.0
    ellipticity: float = 0.0
    angle: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.fwhm) and self.fwhm > 0):
            msg = f"fwhm must be positive, got {self.fwhm!r}"
            raise ValueError(msg)
        if not self.beta > 1:
            msg = f"beta must be > 1, got {self.beta!r}"
            raise ValueError(msg)
        if not 0 <= self.ellipticity < 1:
            msg = f"ellipticity must be in [0, 1), got {self.ellipticity!r}"
            raise ValueError(msg)

    @property
    def alpha(self) -> float:
        """Moffat core width α in pixels (geometric mean of the axes)."""
        return self.fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / self.beta) - 1.0))

    @property
    def radius(self) -> int:
        """Half-size of the stamps: ``ceil(3.5 FWHM)``, at least 4 pixels."""
        return max(4, math.ceil(3.5 * self.fwhm))

    @property
    def oversample(self) -> int:
        """Sub-pixel samples per axis: 2 when FWHM < 2.5 px (undersampled core), else 1."""
        return 2 if self.fwhm < 2.5 else 1

    def stamp(self, *, radius: int | None = None) -> np.ndarray:
        """Return the centred PSF stamp (odd size, float32, sums to 1).

        Examples
        --------
        >>> s = MoffatPSF(2.0).stamp(radius=4)
        >>> s.shape, round(float(s.sum()), 6), int(s.argmax()) == 40
        ((9, 9), 1.0, True)
        """
        return point_stamps(self, np.zeros(1), np.zeros(1), radius=radius)[0][0]

    def profile(self, du: np.ndarray, dv: np.ndarray) -> np.ndarray:
        """Evaluate the un-normalised profile at offsets ``(du, dv)`` in pixels."""
        a2 = self.alpha**2
        q = 1.0 - self.ellipticity
        c, s = math.cos(self.angle), math.sin(self.angle)
        u = du * c + dv * s
        v = -du * s + dv * c
        r2 = (u * u * q + v * v / q) / a2
        return (1.0 + r2) ** np.float32(-self.beta)

    def line_profile(self, distance: np.ndarray, *, widen: float = 1.0) -> np.ndarray:
        """Profile across a straight line source (per unit length), normalised to integrate to 1.

        For a round Moffat the line integral is ``∝ (1 + d²/α²)^(1/2 - β)``.

        Examples
        --------
        >>> p = MoffatPSF(2.0).line_profile(np.arange(-30.0, 30.25, 0.25))
        >>> round(float(p.sum() * 0.25), 3)
        1.0
        """
        alpha = self.alpha * widen
        gamma_ratio = math.gamma(self.beta - 0.5) / math.gamma(self.beta - 1.0)
        norm = gamma_ratio / (math.sqrt(math.pi) * alpha)
        return norm * (1.0 + (np.asarray(distance) / alpha) ** 2) ** (0.5 - self.beta)


def point_stamps(
    psf: MoffatPSF,
    x: np.ndarray,
    y: np.ndarray,
    *,
    radius: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render unit-flux PSF stamps centred at sub-pixel positions.

    Parameters
    ----------
    psf : MoffatPSF
        The profile.
    x, y : numpy.ndarray
        Source centres in 0-based pixel coordinates (pixel centres at integers).
    radius : int, optional
        Stamp half-size (default ``psf.radius``).

    Returns
    -------
    stamps : numpy.ndarray
        ``(n, 2r+1, 2r+1)`` float32 stamps, each summing to 1.
    x0, y0 : numpy.ndarray
        Integer pixel coordinates of each stamp's lower-left corner.

    Examples
    --------
    >>> st, x0, y0 = point_stamps(MoffatPSF(2.0), np.array([10.3]), np.array([5.0]), radius=3)
    >>> st.shape, int(x0[0]), int(y0[0])
    ((1, 7, 7), 7, 2)
    """
    r = psf.radius if radius is None else int(radius)
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    ix = np.rint(x).astype(np.int64)
    iy = np.rint(y).astype(np.int64)
    fx = (x - ix).astype(np.float32)[:, None, None]
    fy = (y - iy).astype(np.float32)[:, None, None]
    os_ = psf.oversample
    grid = np.arange(-r, r + 1, dtype=np.float32)
    total = np.zeros((x.size, 2 * r + 1, 2 * r + 1), dtype=np.float32)
    sub = (np.arange(os_, dtype=np.float32) + 0.5) / os_ - 0.5
    for sy in sub:
        dv = grid[None, :, None] + sy - fy
        for sx in sub:
            du = grid[None, None, :] + sx - fx
            total += psf.profile(du, dv)
    total /= total.sum(axis=(1, 2), keepdims=True)
    return total, ix - r, iy - r


def add_stamps(
    image: np.ndarray,
    stamps: np.ndarray,
    x0: np.ndarray,
    y0: np.ndarray,
    *,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Add stamps (optionally scaled by ``weights``) into ``image`` in place, clipping at edges.

    Parameters
    ----------
    image : numpy.ndarray
        2-D target, modified in place and returned.
    stamps : numpy.ndarray
        ``(n, h, w)`` stamps.
    x0, y0 : numpy.ndarray
        Lower-left pixel of each stamp in ``image``.
    weights : numpy.ndarray, optional
        Per-stamp multipliers (e.g. fluxes).

    Examples
    --------
    >>> img = np.zeros((4, 4), np.float32)
    >>> _ = add_stamps(img, np.ones((1, 3, 3), np.float32), np.array([2]), np.array([-1]))
    >>> float(img.sum())
    4.0
    """
    n, h, w = stamps.shape
    if n == 0:
        return image
    ny, nx = image.shape
    yy = np.asarray(y0)[:, None, None] + np.arange(h)[None, :, None]
    xx = np.asarray(x0)[:, None, None] + np.arange(w)[None, None, :]
    values = stamps if weights is None else stamps * np.asarray(weights, np.float32)[:, None, None]
    inside = (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
    flat = (yy * nx + xx)[inside]
    np.add.at(image.reshape(-1), flat, values[inside].astype(image.dtype, copy=False))
    return image
