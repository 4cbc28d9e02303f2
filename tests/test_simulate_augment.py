"""Augmentation keeps images and labels consistent."""

import numpy as np
import pytest

from astrid.classes import CLASS_CODES
from astrid.simulate import (
    add_noise,
    flip_rotate,
    inject_artifacts,
    random_flip_rotate,
    simulate_field,
)


@pytest.fixture(scope="module")
def sample():
    field = simulate_field("ztf", image_size=64, n_epochs=1, seed=3, n_supernovae=2,
                           n_cosmic_rays=3)
    ep = field.epochs[0]
    stack = np.stack([field.reference, ep.science, ep.ideal_difference])
    return stack, ep.class_map, ep.instance_map


@pytest.mark.parametrize("k", [0, 1, 2, 3])
@pytest.mark.parametrize("flip", [False, True])
def test_flip_rotate_moves_images_and_labels_together(sample, k, flip):
    stack, labels, inst = sample
    s2, l2, i2 = flip_rotate(stack, labels, inst, k=k, flip=flip)
    assert s2.shape == stack.shape and l2.dtype == labels.dtype and i2.dtype == inst.dtype
    for number in np.unique(inst)[1:]:
        before = stack[:, inst == number].sum(axis=1)
        after = s2[:, i2 == number].sum(axis=1)
        assert np.allclose(before, after)  # the same pixels carry the same label
    assert np.allclose(stack.sum(axis=(1, 2)), s2.sum(axis=(1, 2)), rtol=1e-6)  # flux kept
    assert np.array_equal(np.bincount(labels.ravel()), np.bincount(l2.ravel()))
    back = np.rot90(s2[..., ::-1] if flip else s2, -k, axes=(-2, -1))
    assert np.array_equal(back, stack)


def test_random_flip_rotate_uses_the_generator(sample):
    stack, labels, _ = sample
    a = random_flip_rotate(stack, labels, rng=np.random.default_rng(5))
    b = random_flip_rotate(stack, labels, rng=np.random.default_rng(5))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    with pytest.raises(ValueError, match="rng"):
        random_flip_rotate(stack, rng=5)


def test_flip_rotate_rejects_misaligned_arrays():
    with pytest.raises(ValueError, match="arrays"):
        flip_rotate(np.zeros((2, 4, 4)), np.zeros((4, 5)))


def test_add_noise_per_channel():
    images = np.zeros((2, 128, 128), np.float32)
    out = add_noise(images, sigma=np.array([1.0, 3.0])[:, None, None],
                    rng=np.random.default_rng(0))
    assert out[0].std() == pytest.approx(1.0, rel=0.03)
    assert out[1].std() == pytest.approx(3.0, rel=0.03)
    assert not images.any()  # input untouched
    with pytest.raises(ValueError, match="sigma"):
        add_noise(images, sigma=-1.0, rng=np.random.default_rng(0))


def test_inject_artifacts_labels_what_it_adds(sample):
    stack, labels, inst = sample
    out = inject_artifacts(stack, labels, inst, sigma=5.0, rng=np.random.default_rng(2),
                           n_cosmic_rays=4, n_hot_pixels=3, channels=(1, 2), signs=(1.0, 1.0),
                           electrons_per_unit=6.2)
    assert np.array_equal(out.images[0], stack[0])  # the reference is untouched
    added = out.images[1] - stack[1]
    assert np.allclose(out.images[2] - stack[2], added, atol=1e-3)
    assert added.sum() == pytest.approx(out.catalog.flux.sum(), rel=1e-3) or len(out.catalog) < 7
    for row in out.catalog.itertuples():
        mine = out.instance_map == row.instance
        assert mine.sum() == row.npix > 0
        assert np.all(out.class_map[mine] == CLASS_CODES[row.kind])
        assert np.all(added[mine] > 0)
    # labels that were there are kept where nothing was injected
    untouched = added == 0
    assert np.array_equal(out.class_map[untouched], labels[untouched])
    assert np.array_equal(labels, sample[1])  # inputs are not modified


def test_inject_artifacts_never_overwrites_transients():
    labels = np.full((32, 32), CLASS_CODES["supernova"], np.uint8)
    inst = np.ones((32, 32), np.int32)
    out = inject_artifacts(np.zeros((1, 32, 32)), labels, inst, sigma=1.0,
                           rng=np.random.default_rng(0), n_cosmic_rays=5)
    assert np.array_equal(out.class_map, labels) and len(out.catalog) == 0
    assert out.images.sum() > 0


def test_inject_artifacts_bad_input():
    z = np.zeros((1, 8, 8))
    m = np.zeros((8, 8), np.uint8)
    with pytest.raises(ValueError, match="channels"):
        inject_artifacts(z, m, m.astype(np.int32), sigma=1.0, rng=np.random.default_rng(0),
                         channels=(3,))
    with pytest.raises(ValueError, match="class_map"):
        inject_artifacts(z, m[:4], m, sigma=1.0, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="n_cosmic_rays"):
        inject_artifacts(z, m, m, sigma=1.0, rng=np.random.default_rng(0), n_cosmic_rays=-1)
