"""AstrID's ZOGY for the peer benchmark harness (``zogy_peers.py --ours``).

The harness (``../shared/bench/zogy_peers.py``) calls
``FUNC(ref, sci, psf_ref, psf_sci, sigma_ref, sigma_sci)`` with sky-subtracted float64
images in electrons, odd centred PSF stamps summing to one and the background noise of
each image, and reads ``"D"`` and ``"Scorr"`` from the returned mapping. Needs only
NumPy and SciPy besides AstrID itself (put ``/work/main`` and ``/work/main/benchmarks``
on ``PYTHONPATH``)::

    python zogy_peers.py --ours zogy_peer_adapter:zogy_for_bench
    python zogy_peers.py --ours zogy_peer_adapter:zogy_for_bench_f32   # float32 variant
"""

from __future__ import annotations

import astrid
from astrid.differencing import zogy

__version__ = astrid.__version__


def zogy_for_bench(ref, sci, psf_ref, psf_sci, sigma_ref, sigma_sci, *, dtype="float64"):
    """Run :func:`astrid.differencing.zogy` (science minus reference) in float64."""
    out = zogy(sci, ref, psf_sci, psf_ref, sigma_science=sigma_sci, sigma_reference=sigma_ref,
               dtype=dtype)
    return {"D": out.difference, "Scorr": out.score_corr, "S": out.score}


def zogy_for_bench_f32(ref, sci, psf_ref, psf_sci, sigma_ref, sigma_sci):
    """As :func:`zogy_for_bench`, computing in float32."""
    return zogy_for_bench(ref, sci, psf_ref, psf_sci, sigma_ref, sigma_sci, dtype="float32")
