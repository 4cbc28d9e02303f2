"""Pixel classes shared by the simulator, the model and the evaluation.

The class map of every sample stores these integer codes. Transient kinds are
genuine astrophysical changes; artifact kinds are what a real/bogus step must
reject.
"""

from __future__ import annotations

__all__ = [
    "ARTIFACT_KINDS",
    "CLASS_CODES",
    "CLASS_NAMES",
    "TRANSIENT_KINDS",
    "is_transient",
]

CLASS_NAMES: tuple[str, ...] = (
    "background",
    "supernova",
    "variable",
    "moving",
    "cosmic_ray",
    "hot_pixel",
    "bleed_trail",
    "satellite_trail",
    "dipole",
)
"""Class names in code order: ``CLASS_NAMES[code]``."""

CLASS_CODES: dict[str, int] = {name: code for code, name in enumerate(CLASS_NAMES)}
"""Class code for each name."""

TRANSIENT_KINDS: tuple[str, ...] = ("supernova", "variable", "moving")
"""Genuine transients (real)."""

ARTIFACT_KINDS: tuple[str, ...] = (
    "cosmic_ray",
    "hot_pixel",
    "bleed_trail",
    "satellite_trail",
    "dipole",
)
"""Artifacts (bogus)."""


def is_transient(kind: str) -> bool:
    """Return whether ``kind`` names a genuine transient.

    Raises
    ------
    ValueError
        If ``kind`` is not a known class name.

    Examples
    --------
    >>> is_transient("supernova"), is_transient("cosmic_ray")
    (True, False)
    """
    if kind not in CLASS_CODES:
        msg = f"unknown kind {kind!r}; known: {', '.join(CLASS_NAMES)}"
        raise ValueError(msg)
    return kind in TRANSIENT_KINDS
