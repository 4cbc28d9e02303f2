import pytest

from astrid.surveys import SURVEYS, get_survey


def test_presets_are_physical():
    for preset in SURVEYS.values():
        sky = preset.sky_electrons()
        assert 50 < sky < preset.saturation * preset.gain
        # a 20th-magnitude star gives a sensible number of electrons
        assert 1e2 < preset.electrons_per_second(20.0) * preset.exposure_time < 1e6
    assert get_survey("ZTF").pixel_scale > get_survey("decam").pixel_scale


def test_overrides_and_errors():
    assert get_survey("ztf", read_noise=5.0).read_noise == 5.0
    with pytest.raises(ValueError, match="unknown survey preset 'hst'"):
        get_survey("hst")
    with pytest.raises(ValueError, match="unknown survey parameter"):
        get_survey("ztf", colour=1)
    with pytest.raises(ValueError, match="saturation .* below the sky"):
        get_survey("ztf", saturation=10.0)
    with pytest.raises(ValueError, match="gain must be positive"):
        get_survey("ztf", gain=0.0)
    with pytest.raises(ValueError, match="band 'u'"):
        get_survey("ztf").band("u")
