"""Figures that notebooks and reports share.

Functions build :class:`matplotlib.figure.Figure` objects directly (no pyplot
state), so they work headless, in widgets and in notebooks alike. Each section
below belongs to one topic; add new sections at the end.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__: list[str] = []


# --- cutout figures ---

__all__ += ["cutout_gallery", "cutout_stretch", "figure_png", "show_triplet"]

_TRIPLET_TITLES = ("science", "reference", "difference")


def figure_png(fig: Any, *, dpi: float = 72) -> bytes:
    """Render a figure to PNG bytes (for widgets, and for ``IPython.display.Image`` in notebooks).

    Figures built here are not registered with pyplot, so Jupyter shows them
    only through an explicit image such as this one.

    Examples
    --------
    >>> from matplotlib.figure import Figure
    >>> figure_png(Figure(figsize=(1, 1)))[1:4]
    b'PNG'
    """
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def cutout_stretch(stamp: np.ndarray, *, signed: bool = False, asinh_a: float = 0.1) -> np.ndarray:
    """Map a stamp to display values in ``[0, 1]`` with a robust astronomical stretch.

    Images (``signed=False``) use the IRAF zscale interval followed by an
    asinh stretch, which shows the sky noise and keeps bright cores from
    saturating. Difference stamps (``signed=True``) use a symmetric linear
    interval ``[-v, v]`` with ``v`` the larger zscale limit in absolute value,
    so zero stays mid-grey and positive and negative residuals look alike.
    Non-finite pixels map to 0.

    Parameters
    ----------
    stamp : numpy.ndarray
        2-D image.
    signed : bool
        Treat the stamp as a difference image.
    asinh_a : float
        Softening of the asinh stretch (smaller: stronger compression).

    Returns
    -------
    numpy.ndarray
        float64 values in ``[0, 1]``, same shape.

    Raises
    ------
    ValueError
        When ``stamp`` is not 2-D or ``asinh_a`` is not positive.

    Examples
    --------
    >>> out = cutout_stretch(np.arange(16.0).reshape(4, 4))
    >>> out.shape, float(out.min()) >= 0.0, float(out.max()) <= 1.0
    ((4, 4), True, True)
    >>> float(cutout_stretch(np.zeros((4, 4)), signed=True)[0, 0])
    0.5
    """
    from astropy.visualization import AsinhStretch, ZScaleInterval

    image = np.asarray(stamp, dtype=float)
    if image.ndim != 2:
        msg = f"stamp must be 2-D, got shape {image.shape}"
        raise ValueError(msg)
    if not asinh_a > 0:
        msg = f"asinh_a must be positive, got {asinh_a!r}"
        raise ValueError(msg)
    finite = np.isfinite(image)
    out = np.zeros_like(image)
    if not finite.any():
        return out
    values = image[finite]
    lo, hi = ZScaleInterval().get_limits(values) if values.size > 1 else (values[0], values[0])
    if signed:
        half = max(abs(lo), abs(hi))
        if half <= 0:
            out[finite] = 0.5
            return out
        out[finite] = np.clip((values + half) / (2 * half), 0.0, 1.0)
        return out
    if hi <= lo:
        return out
    scaled = np.clip((values - lo) / (hi - lo), 0.0, 1.0)
    out[finite] = AsinhStretch(a=asinh_a)(scaled, clip=True)
    return out


def show_triplet(
    triplet: np.ndarray,
    *,
    titles: Sequence[str] = _TRIPLET_TITLES,
    suptitle: str = "",
    size: float = 2.4,
    marker: tuple[float, float] | None = None,
) -> Any:
    """Draw science, reference and difference stamps side by side.

    Parameters
    ----------
    triplet : numpy.ndarray
        ``(3, H, W)``: science, reference, difference (science minus reference).
    titles : sequence of str
        Panel titles.
    suptitle : str
        Figure title.
    size : float
        Panel size in inches.
    marker : (x, y), optional
        Pixel position to mark with a cross-hair on every panel.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        When ``triplet`` is not ``(3, H, W)``.

    Examples
    --------
    >>> fig = show_triplet(np.random.default_rng(0).normal(size=(3, 16, 16)))
    >>> len(fig.axes)
    3
    """
    from matplotlib.figure import Figure

    stamps = np.asarray(triplet)
    if stamps.ndim != 3 or stamps.shape[0] != 3:
        msg = f"triplet must have shape (3, H, W), got {stamps.shape}"
        raise ValueError(msg)
    if len(titles) != 3:
        msg = f"titles must name 3 panels, got {len(titles)}"
        raise ValueError(msg)
    fig = Figure(figsize=(3 * size, size + (0.3 if suptitle else 0.0)), layout="constrained")
    axes = fig.subplots(1, 3)
    for index, (ax, stamp, title) in enumerate(zip(axes, stamps, titles, strict=True)):
        ax.imshow(cutout_stretch(stamp, signed=index == 2), cmap="gray", origin="lower",
                  vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        if marker is not None:
            ax.plot([marker[0]], [marker[1]], marker="+", color="tab:red", markersize=14, alpha=0.6)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return fig


def cutout_gallery(
    triplets: np.ndarray,
    *,
    titles: Sequence[str] | None = None,
    max_rows: int = 8,
    size: float = 1.3,
) -> Any:
    """Draw several triplets, one row each (science, reference, difference).

    Parameters
    ----------
    triplets : numpy.ndarray
        ``(N, 3, H, W)``.
    titles : sequence of str, optional
        One row label per triplet.
    max_rows : int
        Draw at most this many rows.
    size : float
        Panel size in inches.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        When ``triplets`` is not ``(N, 3, H, W)`` with ``N >= 1``, or titles do not match.

    Examples
    --------
    >>> fig = cutout_gallery(np.zeros((2, 3, 8, 8)), titles=["a", "b"])
    >>> len(fig.axes)
    6
    """
    from matplotlib.figure import Figure

    stack = np.asarray(triplets)
    if stack.ndim != 4 or stack.shape[1] != 3 or stack.shape[0] < 1:
        msg = f"triplets must have shape (N, 3, H, W) with N >= 1, got {stack.shape}"
        raise ValueError(msg)
    if titles is not None and len(titles) != len(stack):
        msg = f"titles has {len(titles)} entries for {len(stack)} triplets"
        raise ValueError(msg)
    rows = min(len(stack), int(max_rows))
    fig = Figure(figsize=(3 * size + 0.8, rows * size), layout="constrained")
    axes = np.atleast_2d(fig.subplots(rows, 3))
    for row in range(rows):
        for col in range(3):
            ax = axes[row, col]
            ax.imshow(cutout_stretch(stack[row, col], signed=col == 2), cmap="gray", origin="lower",
                      vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(_TRIPLET_TITLES[col], fontsize=8)
        if titles is not None:
            axes[row, 0].set_ylabel(str(titles[row]), fontsize=6, rotation=0, ha="right", va="center")
    return fig


__all__ += ["show_context"]


def show_context(
    image: np.ndarray, x: float, y: float, *, size: int = 63, signed: bool = True, width: float = 5.0
) -> Any:
    """Draw a full image with the stamp around ``(x, y)`` outlined.

    Parameters
    ----------
    image : numpy.ndarray
        2-D image (usually the difference).
    x, y : float
        0-based pixel position (column, row) of the candidate.
    size : int
        Side of the outlined stamp in pixels.
    signed : bool
        Stretch as a difference image (see :func:`cutout_stretch`).
    width : float
        Figure width in inches.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        When ``image`` is not 2-D or ``size`` is not positive.

    Examples
    --------
    >>> fig = show_context(np.zeros((16, 16)), 4.0, 5.0, size=5)
    >>> len(fig.axes[0].patches)
    1
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    data = np.asarray(image)
    if data.ndim != 2:
        msg = f"image must be 2-D, got shape {data.shape}"
        raise ValueError(msg)
    if size < 1:
        msg = f"size must be positive, got {size}"
        raise ValueError(msg)
    ny, nx = data.shape
    fig = Figure(figsize=(width, width * ny / nx), layout="constrained")
    ax = fig.subplots()
    ax.imshow(cutout_stretch(data, signed=signed), cmap="gray", origin="lower", vmin=0, vmax=1,
              interpolation="nearest")
    half = size / 2
    ax.add_patch(Rectangle((x - half, y - half), size, size, fill=False, edgecolor="tab:red", linewidth=1.2))
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


# --- synthetic data figures (simulation) ---

__all__ += ["class_legend_handles", "show_class_map", "show_pair"]

_CLASS_COLORS = (
    "#000000",  # background
    "#e41a1c",  # supernova
    "#ff7f00",  # variable
    "#ffff33",  # moving
    "#4daf4a",  # cosmic_ray
    "#00e5ff",  # hot_pixel
    "#984ea3",  # bleed_trail
    "#377eb8",  # satellite_trail
    "#f781bf",  # dipole
)


def _class_cmap() -> Any:
    from matplotlib.colors import BoundaryNorm, ListedColormap

    from astrid.classes import CLASS_NAMES

    cmap = ListedColormap(_CLASS_COLORS[: len(CLASS_NAMES)])
    norm = BoundaryNorm(np.arange(len(CLASS_NAMES) + 1) - 0.5, len(CLASS_NAMES))
    return cmap, norm


def class_legend_handles(codes: Sequence[int] | None = None) -> list[Any]:
    """Legend patches for class codes (all classes when ``codes`` is None).

    Examples
    --------
    >>> [h.get_label() for h in class_legend_handles([0, 1])]
    ['background', 'supernova']
    """
    from matplotlib.patches import Patch

    from astrid.classes import CLASS_NAMES

    codes = range(len(CLASS_NAMES)) if codes is None else codes
    return [Patch(color=_CLASS_COLORS[c], label=CLASS_NAMES[c]) for c in codes]


def show_class_map(class_map: np.ndarray, *, ax: Any = None, size: float = 4.0) -> Any:
    """Draw a class map with a legend of the classes present.

    Parameters
    ----------
    class_map : numpy.ndarray
        2-D uint8 codes of :data:`astrid.classes.CLASS_NAMES`.
    ax : matplotlib.axes.Axes, optional
        Draw into this axes instead of a new figure.
    size : float
        Figure size in inches (new figure only).

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        When ``class_map`` is not 2-D or holds unknown codes.

    Examples
    --------
    >>> fig = show_class_map(np.array([[0, 1], [4, 8]], np.uint8))
    >>> len(fig.axes[0].get_legend().get_texts())
    4
    """
    from matplotlib.figure import Figure

    from astrid.classes import CLASS_NAMES

    labels = np.asarray(class_map)
    if labels.ndim != 2:
        msg = f"class_map must be 2-D, got shape {labels.shape}"
        raise ValueError(msg)
    present = np.unique(labels)
    if present.size and (present.min() < 0 or present.max() >= len(CLASS_NAMES)):
        msg = f"class_map holds codes outside 0..{len(CLASS_NAMES) - 1}"
        raise ValueError(msg)
    if ax is None:
        fig = Figure(figsize=(size * 1.35, size), layout="constrained")
        ax = fig.subplots()
    else:
        fig = ax.figure
    cmap, norm = _class_cmap()
    ax.imshow(labels, cmap=cmap, norm=norm, origin="lower", interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(handles=class_legend_handles([int(c) for c in present]), fontsize=7,
              loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


def show_pair(
    reference: np.ndarray,
    science: np.ndarray,
    *,
    class_map: np.ndarray | None = None,
    difference: np.ndarray | None = None,
    flux_ratio: float = 1.0,
    title: str = "",
    size: float = 3.0,
) -> Any:
    """Draw reference, science, their difference and (optionally) the class map.

    Parameters
    ----------
    reference, science : numpy.ndarray
        2-D images on the same pixel grid (ADU with sky).
    class_map : numpy.ndarray, optional
        Class codes to show in a fourth panel with a legend.
    difference : numpy.ndarray, optional
        Difference to show; default ``science - flux_ratio * reference`` with
        both medians removed (a plain, not PSF-matched, difference).
    flux_ratio : float
        Photometric scale of the science epoch relative to the reference
        (``10**(0.4 * (ZP_sci - ZP_ref))``).
    title : str
        Figure title.
    size : float
        Panel size in inches.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        When the images are not 2-D arrays of the same shape.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> fig = show_pair(rng.normal(size=(16, 16)), rng.normal(size=(16, 16)),
    ...                 class_map=np.zeros((16, 16), np.uint8))
    >>> len(fig.axes)
    4
    """
    from matplotlib.figure import Figure

    ref, sci = np.asarray(reference, float), np.asarray(science, float)
    if ref.ndim != 2 or ref.shape != sci.shape:
        msg = f"reference and science must be 2-D of one shape, got {ref.shape} and {sci.shape}"
        raise ValueError(msg)
    if difference is None:
        difference = (sci - np.median(sci)) - flux_ratio * (ref - np.median(ref))
    panels = [("reference", ref, False), ("science", sci, False), ("difference", difference, True)]
    n = len(panels) + (class_map is not None)
    fig = Figure(figsize=(n * size + (1.2 if class_map is not None else 0), size + 0.3),
                 layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, n))
    for ax, (name, image, signed) in zip(axes, panels, strict=False):
        ax.imshow(cutout_stretch(image, signed=signed), cmap="gray", origin="lower", vmin=0, vmax=1,
                  interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if class_map is not None:
        show_class_map(class_map, ax=axes[-1])
        axes[-1].set_title("classes", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


# --- model figures ---

__all__ += ["show_prediction", "show_reliability", "show_training_curves"]


def show_training_curves(history: Sequence[Any], *, size: float = 3.2) -> Any:
    """Draw the training and validation loss and the validation metric per epoch.

    Parameters
    ----------
    history : sequence of mapping
        One row per epoch with ``epoch``, ``train_loss``, ``valid_loss`` and
        optionally ``macro_dice`` (as in ``TrainResult.history``).
    size : float
        Panel height in inches.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        When ``history`` is empty.

    Examples
    --------
    >>> fig = show_training_curves([{"epoch": 0, "train_loss": 1.0, "valid_loss": 0.9,
    ...                              "macro_dice": 0.2}])
    >>> len(fig.axes)
    2
    """
    from matplotlib.figure import Figure

    rows = list(history)
    if not rows:
        msg = "history is empty: nothing to draw"
        raise ValueError(msg)
    epochs = [row["epoch"] for row in rows]
    fig = Figure(figsize=(2.6 * size, size), layout="constrained")
    loss_ax, metric_ax = fig.subplots(1, 2)
    for key, label in (("train_loss", "train"), ("valid_loss", "validation")):
        values = [row.get(key, np.nan) for row in rows]
        loss_ax.plot(epochs, values, marker="o", ms=3, label=label)
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("loss")
    loss_ax.legend(fontsize=8, frameon=False)
    metric_ax.plot(epochs, [row.get("macro_dice", np.nan) for row in rows], marker="o", ms=3,
                   color="C2")
    metric_ax.set_xlabel("epoch")
    metric_ax.set_ylabel("validation macro Dice")
    metric_ax.set_ylim(0, 1)
    return fig


def show_prediction(
    image: np.ndarray, prediction: Any, *, truth: np.ndarray | None = None, title: str = "",
    size: float = 3.0,
) -> Any:
    """Draw an input image, the true and the predicted class maps and the uncertainty.

    Parameters
    ----------
    image : numpy.ndarray
        2-D image to show (the difference, say), signed stretch.
    prediction : astrid.model.Prediction
        Anything with 2-D ``class_map`` and ``uncertainty`` arrays.
    truth : numpy.ndarray, optional
        True class map (pixels labelled 255, left out of training, show as background).
    title : str
        Figure title.
    size : float
        Panel size in inches.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        When the arrays are not 2-D of one shape.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> p = SimpleNamespace(class_map=np.zeros((8, 8), np.uint8), uncertainty=np.zeros((8, 8)))
    >>> len(show_prediction(np.ones((8, 8)), p, truth=np.zeros((8, 8), np.uint8)).axes)
    5
    """
    from matplotlib.figure import Figure

    img = np.asarray(image, float)
    predicted = np.asarray(prediction.class_map)
    uncertainty = np.asarray(prediction.uncertainty, float)
    shapes = {img.shape, predicted.shape, uncertainty.shape}
    if truth is not None:
        truth = np.where(np.asarray(truth) == 255, 0, np.asarray(truth))
        shapes.add(truth.shape)
    if img.ndim != 2 or len(shapes) != 1:
        msg = f"image, class maps and uncertainty must be 2-D of one shape, got {sorted(shapes)}"
        raise ValueError(msg)
    n = 3 + (truth is not None)
    fig = Figure(figsize=(n * size + 2.0, size + 0.3), layout="constrained")
    axes = list(fig.subplots(1, n))
    axes[0].imshow(cutout_stretch(img, signed=True), cmap="gray", origin="lower", vmin=0, vmax=1,
                   interpolation="nearest")
    axes[0].set_title("input", fontsize=9)
    panels = ([("truth", truth)] if truth is not None else []) + [("prediction", predicted)]
    for ax, (name, labels) in zip(axes[1:], panels, strict=False):
        show_class_map(labels, ax=ax)
        ax.set_title(name, fontsize=9)
    shown = axes[-1].imshow(uncertainty, cmap="magma", origin="lower", vmin=0, vmax=1,
                            interpolation="nearest")
    axes[-1].set_title("uncertainty (entropy)", fontsize=9)
    fig.colorbar(shown, ax=axes[-1], shrink=0.8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def show_reliability(calibration: Any, *, n_bins: int = 10, size: float = 3.5) -> Any:
    """Draw the reliability diagram of the top-class confidence before and after temperature scaling.

    Parameters
    ----------
    calibration : astrid.model.Calibration
        Anything with ``confidence_before``, ``confidence_after``, ``correct``
        (per pixel) and ``temperature``.
    n_bins : int
        Equal-width confidence bins.
    size : float
        Figure height in inches.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> rng = np.random.default_rng(0)
    >>> c = SimpleNamespace(confidence_before=rng.uniform(0.5, 1, 100),
    ...                     confidence_after=rng.uniform(0.5, 1, 100),
    ...                     correct=rng.random(100) < 0.8, temperature=1.5)
    >>> len(show_reliability(c).axes)
    2
    """
    from matplotlib.figure import Figure

    from astrid.metrics import expected_calibration_error, reliability_curve

    fig = Figure(figsize=(size * 1.1, size * 1.4), layout="constrained")
    top, bottom = fig.subplots(2, 1, height_ratios=(3, 1), sharex=True)
    top.plot([0, 1], [0, 1], ls=":", color="0.5", lw=1)
    correct = np.asarray(calibration.correct, bool)
    runs = (("before (T = 1)", calibration.confidence_before, "C3"),
            (f"after (T = {calibration.temperature:.2f})", calibration.confidence_after, "C0"))
    for label, confidence, color in runs:
        confidence = np.clip(np.asarray(confidence, float), 0.0, 1.0)
        _, accuracy, mean_conf, counts = reliability_curve(confidence, correct, n_bins=n_bins)
        ece = expected_calibration_error(confidence, correct, n_bins=n_bins)
        used = counts > 0
        top.plot(mean_conf[used], accuracy[used], marker="o", ms=4, color=color,
                 label=f"{label}, ECE {ece:.3f}")
        bottom.hist(confidence, bins=n_bins, range=(0, 1), histtype="step", color=color, log=True)
    top.set_ylabel("accuracy")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1.02)
    top.legend(fontsize=8, frameon=False, loc="upper left")
    bottom.set_xlabel("top-class confidence")
    bottom.set_ylabel("pixels")
    return fig


# --- differencing figures ---

__all__ += ["score_histogram", "show_difference"]


def show_difference(
    reference: np.ndarray,
    science: np.ndarray,
    difference: np.ndarray,
    score_corr: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    title: str = "",
    size: float = 3.0,
) -> Any:
    """Draw reference, science, ZOGY D and S_corr side by side (S_corr on a fixed ±5σ scale).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> img = rng.normal(size=(16, 16))
    >>> len(show_difference(img, img, img, img).axes)
    5
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4 * size + 0.8, size + 0.3), layout="constrained")
    axes = fig.subplots(1, 4)
    for ax, (name, image) in zip(axes[:3], (("reference", reference), ("science", science),
                                            ("D", difference)), strict=True):
        ax.imshow(cutout_stretch(np.asarray(image, float), signed=name == "D"), cmap="gray",
                  origin="lower", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(name, fontsize=9)
    shown = np.where(mask, np.nan, score_corr) if mask is not None else score_corr
    im = axes[3].imshow(shown, cmap="RdBu_r", origin="lower", vmin=-5, vmax=5,
                        interpolation="nearest")
    axes[3].set_title("S_corr (σ)", fontsize=9)
    fig.colorbar(im, ax=axes[3], shrink=0.8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def score_histogram(values: np.ndarray, *, bins: int = 80, size: float = 4.0) -> Any:
    """Histogram of S_corr values (e.g. source-free pixels) against N(0, 1) on a log scale.

    Examples
    --------
    >>> fig = score_histogram(np.random.default_rng(0).normal(size=1000))
    >>> fig.axes[0].get_yscale()
    'log'
    """
    from matplotlib.figure import Figure

    values = np.asarray(values, float).ravel()
    values = values[np.isfinite(values)]
    fig = Figure(figsize=(size * 1.4, size), layout="constrained")
    ax = fig.subplots()
    edges = np.linspace(-8, 8, bins + 1)
    ax.hist(values, bins=edges, density=True, histtype="step", color="k",
            label=f"S_corr: mean {values.mean():+.3f}, std {values.std():.3f}")
    centres = 0.5 * (edges[1:] + edges[:-1])
    ax.plot(centres, np.exp(-0.5 * centres**2) / np.sqrt(2 * np.pi), "r--", label="N(0, 1)")
    ax.set_yscale("log")
    ax.set_ylim(1e-6, 1)
    ax.set_xlabel("S_corr (σ)")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    return fig


# --- evaluation figures ---

__all__ += ["show_completeness", "show_confusion", "show_pr_curves", "show_reliability_curves"]


def _one_axis(size: float) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size * 1.3, size), layout="constrained")
    return fig, fig.subplots()


def show_pr_curves(curves: dict[str, dict[str, Any]], *, size: float = 4.0) -> Any:
    """Precision-recall curves per method with their operating points.

    ``curves`` maps a method to ``{"pr": (precision, recall), "operating": (p, r)}``
    (see :func:`astrid.evaluate.curves`).

    Examples
    --------
    >>> fig = show_pr_curves({"a": {"pr": ([1.0, 0.5], [0.5, 1.0]), "operating": (1.0, 0.5)}})
    >>> fig.axes[0].get_xlabel()
    'recall'
    """
    fig, ax = _one_axis(size)
    for name, curve in curves.items():
        precision, recall = curve["pr"]
        line, = ax.plot(recall, precision, label=name)
        p, r = curve.get("operating", (None, None))
        if p is not None and r is not None:
            ax.plot([r], [p], "o", color=line.get_color())
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.01), ylim=(0, 1.01))
    ax.legend(fontsize=8, loc="lower left")
    return fig


def show_reliability_curves(curves: dict[str, Any], *, size: float = 4.0) -> Any:
    """Reliability diagrams: observed fraction of real against predicted probability.

    ``curves`` maps a method to ``(centres, accuracy, confidence, counts)`` or None.

    Examples
    --------
    >>> c = (np.array([0.25, 0.75]), np.array([0.2, 0.8]), np.array([0.25, 0.75]), np.array([5, 5]))
    >>> len(show_reliability_curves({"a": c}).axes[0].lines)
    2
    """
    fig, ax = _one_axis(size)
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    for name, curve in curves.items():
        if curve is None:
            continue
        _, accuracy, confidence, counts = curve
        ok = np.asarray(counts) > 0
        ax.plot(np.asarray(confidence)[ok], np.asarray(accuracy)[ok], "o-", label=name)
    ax.set(xlabel="predicted probability real", ylabel="observed fraction real",
           xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=8, loc="upper left")
    return fig


def show_completeness(curves: dict[str, Any], *, size: float = 4.0) -> Any:
    """Completeness against injected S/N per method (``(centres, completeness, counts)`` or None).

    Examples
    --------
    >>> c = (np.array([3.0, 10.0]), np.array([0.2, 1.0]), np.array([4, 4]))
    >>> show_completeness({"a": c}).axes[0].get_xscale()
    'log'
    """
    fig, ax = _one_axis(size)
    for name, curve in curves.items():
        if curve is None:
            continue
        centres, completeness, counts = curve
        ok = np.asarray(counts) > 0
        ax.plot(np.asarray(centres)[ok], np.asarray(completeness)[ok], "o-", label=name)
    ax.axhline(0.5, color="k", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set(xlabel="injected S/N", ylabel="completeness", ylim=(0, 1.02))
    ax.legend(fontsize=8, loc="lower right")
    return fig


def show_confusion(matrix: np.ndarray, labels: Sequence[str], *, size: float = 3.5) -> Any:
    """Confusion matrix (rows true, columns predicted) with counts.

    Examples
    --------
    >>> show_confusion(np.eye(2, dtype=int), ["a", "b"]).axes[0].get_ylabel()
    'true kind'
    """
    fig, ax = _one_axis(size)
    matrix = np.asarray(matrix)
    ax.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center", fontsize=9)
    ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set(xlabel="predicted kind", ylabel="true kind")
    return fig


# --- monitoring figures ---

__all__ += ["show_drift_history", "show_metric_history"]


def _observation_dates(history: Any) -> tuple[Any, Any, Any]:
    """Middle, start and end of each run's observations as datetime64 (from the MJD columns)."""
    import pandas as pd

    def to_date(mjd: Any) -> Any:
        return pd.to_datetime((np.asarray(mjd, float) - 40587.0) * 86400.0, unit="s").to_numpy()

    return to_date(history["mjd"]), to_date(history["mjd_start"]), to_date(history["mjd_end"])


def _date_axis(ax: Any) -> None:
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def show_metric_history(
    history: Any, metrics: Sequence[str], *, shifted: str = "drift/shifted", size: float = 3.0,
) -> Any:
    """Plot metrics of scoring runs against the observation date, drifted batches in red.

    ``history`` is :func:`astrid.tracking.performance_history`'s table; each
    point sits at the middle of its batch's observations, with a bar over
    their range; batches whose ``shifted`` column is 1 are drawn in red.

    Examples
    --------
    >>> import pandas as pd
    >>> h = pd.DataFrame({"mjd": [59000.5, 59010.5], "mjd_start": [59000, 59010],
    ...                   "mjd_end": [59001, 59011], "auc_vs_truth": [0.9, 0.6], "drift/shifted": [0, 1]})
    >>> fig = show_metric_history(h, ["auc_vs_truth"])
    >>> fig.axes[0].get_ylabel()
    'auc_vs_truth'
    """
    from matplotlib.figure import Figure

    middle, start, end = _observation_dates(history)
    flagged = (np.asarray(history[shifted], float) == 1 if shifted in history
               else np.zeros(len(history), bool))
    fig = Figure(figsize=(size * 2.2, size * 0.8 * max(1, len(metrics))), layout="constrained")
    axes = np.atleast_1d(fig.subplots(max(1, len(metrics)), 1, sharex=True))
    for ax, name in zip(axes, metrics, strict=False):
        values = np.asarray(history[name], float) if name in history else np.full(len(history), np.nan)
        ax.plot(middle, values, "-", color="0.6", lw=1)
        for keep, colour in ((~flagged, "k"), (flagged, "r")):
            ax.hlines(values[keep], start[keep], end[keep], color=colour, lw=1)
            ax.plot(middle[keep], values[keep], "o", color=colour, ms=4)
        ax.set_ylabel(name, fontsize=8)
        _date_axis(ax)
    axes[-1].set_xlabel("observation date (UTC); red: input drift flagged")
    return fig


def show_drift_history(
    history: Any, *, threshold: float = 0.25, features: Sequence[str] | None = None, size: float = 3.5,
) -> Any:
    """Plot the population stability index of each input feature against the observation date.

    Reads the ``drift/<feature>/psi`` columns of
    :func:`astrid.tracking.performance_history`'s table (log scale, floored
    at 1e-3); the dashed line is the PSI flag threshold and the red points
    are the features flagged as shifted (``drift/<feature>/shifted``).

    Examples
    --------
    >>> import pandas as pd
    >>> h = pd.DataFrame({"mjd": [59000.5, 59010.5], "mjd_start": [59000, 59010], "mjd_end": [59001, 59011],
    ...                   "drift/psf_fwhm/psi": [0.02, 3.0], "drift/psf_fwhm/shifted": [0, 1]})
    >>> show_drift_history(h).axes[0].get_yscale()
    'log'
    """
    from matplotlib.figure import Figure

    middle, _, _ = _observation_dates(history)
    names = features or sorted(c.split("/")[1] for c in history.columns
                               if c.startswith("drift/") and c.endswith("/psi"))
    fig = Figure(figsize=(size * 2.0, size), layout="constrained")
    ax = fig.subplots()
    colours = [f"C{i % 10}" for i in range(len(names))]
    for name, colour, marker in zip(names, colours, "osD^vP*X" * 2, strict=False):
        psi = np.maximum(np.asarray(history.get(f"drift/{name}/psi", np.nan), float), 1e-3)
        ax.plot(middle, psi, "-", marker=marker, color=colour, ms=4, lw=1, label=name)
        flagged = np.asarray(history.get(f"drift/{name}/shifted", 0), float) == 1
        ax.plot(middle[flagged], psi[flagged], "o", ms=11, mfc="none", mec="r", mew=1.5)
    ax.axhline(threshold, color="k", ls="--", lw=0.8, label="PSI threshold")
    ax.plot([], [], "o", ms=11, mfc="none", mec="r", mew=1.5, label="flagged (PSI and KS)")
    ax.set_yscale("log")
    ax.set(xlabel="observation date (UTC)", ylabel="population stability index")
    _date_axis(ax)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def show_generic_vs_specific(comparison: Any, *, method: str = "unet",
                             metrics: Sequence[str] = ("f1", "average_precision", "auc_vs_drb_label"),
                             size: float = 3.0) -> Any:
    """Bar chart of the generic model against each survey's own model, one panel per metric.

    ``comparison`` is :func:`astrid.survey_models.compare_generic_specific`'s
    table; ``method`` picks which of its methods (``unet``, ``ensemble``...) is
    shown. Metrics a survey does not have (``auc_vs_drb_label`` exists only for
    real alerts) are left out of its panel.

    Examples
    --------
    >>> import pandas as pd
    >>> c = pd.DataFrame({"survey": ["ztf"] * 2, "model": ["generic", "specific"], "method": ["unet"] * 2,
    ...                   "metric": ["f1"] * 2, "value": [0.8, 0.9]})
    >>> fig = show_generic_vs_specific(c, metrics=["f1"])
    >>> fig.axes[0].get_title()
    'f1 (unet)'
    """
    from matplotlib.figure import Figure

    rows = comparison[(comparison["method"] == method) & comparison["metric"].isin(list(metrics))]
    shown = [m for m in metrics if m in set(rows["metric"])] or list(metrics[:1])
    fig = Figure(figsize=(size * 1.3 * len(shown), size), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(shown)))
    for ax, metric in zip(axes, shown, strict=True):
        table = rows[rows["metric"] == metric].pivot_table(index="survey", columns="model", values="value")
        x = np.arange(len(table))
        for k, (model, colour) in enumerate((("generic", "0.6"), ("specific", "C0"))):
            if model in table:
                ax.bar(x + (k - 0.5) * 0.38, table[model].to_numpy(float), width=0.38, color=colour,
                       label=model)
        ax.set_xticks(x, list(table.index), fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{metric} ({method})", fontsize=9)
    axes[0].legend(fontsize=8, loc="lower left")
    return fig
