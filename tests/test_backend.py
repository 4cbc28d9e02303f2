import numpy as np
import pytest

from astrid import backend


def test_resolve_device_cpu_and_errors(monkeypatch):
    assert backend.resolve_device("cpu") == "cpu"
    monkeypatch.setenv("ASTRID_DEVICE", "cpu")
    assert backend.resolve_device() == "cpu"
    with pytest.raises(ValueError, match="device must be"):
        backend.resolve_device("tpu")
    if not backend.HAS_CUPY:
        with pytest.raises(ValueError, match="CuPy"):
            backend.resolve_device("gpu")
        assert backend.resolve_device("auto") == "cpu"


def test_numpy_roundtrip_and_fft():
    x = backend.to_device(np.arange(8.0), "cpu", dtype=np.float32)
    xp = backend.get_xp(x)
    assert xp is np and x.dtype == np.float32
    fft = backend.fft_module(xp)
    assert np.allclose(fft.irfft(fft.rfft(x), n=8), x, atol=1e-5)
    assert backend.to_numpy(x).tolist() == list(range(8))
    assert backend.device_name(np).startswith("cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not backend.HAS_CUPY, reason="needs CuPy and a GPU")
def test_gpu_arrays_follow_the_data():
    g = backend.to_device(np.ones(4), "gpu")
    assert backend.get_xp(g).__name__ == "cupy"
    with pytest.raises(TypeError, match="different devices"):
        backend.get_xp(g, np.ones(4))
    assert backend.to_numpy(g).sum() == 4
