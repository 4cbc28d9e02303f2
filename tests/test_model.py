"""The U-Net: data, training, calibration, tiled inference, bundles, bad inputs."""

import json

import numpy as np
import pytest
import torch
from toy_data import make_dataset

from astrid.classes import CLASS_CODES, CLASS_NAMES
from astrid.manifest import Manifest, ManifestError, write_fits
from astrid.model import (
    CHANNELS,
    IGNORE_INDEX,
    Augmentation,
    ModelConfig,
    ModelError,
    Normalisation,
    SegmentationLoss,
    TrainedModel,
    UNetSpec,
    build_unet,
    fit_temperature,
    load_model,
    mc_dropout,
    predict_image,
    read_stack,
    save_model,
    tile_layout,
    train_unet,
)
from astrid.model.data import GridTiles, TileDataset, TileSampler, _augment, load_split

SUPERNOVA, COSMIC_RAY = CLASS_CODES["supernova"], CLASS_CODES["cosmic_ray"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("toy"))


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    return train_unet(dataset, tile_size=32, epochs=4, model_size="tiny", batch_size=8,
                      tiles_per_epoch=64, seed=0, output_dir=tmp_path_factory.mktemp("run"),
                      progress=False)


def tiny_model(channels=CHANNELS, seed=0):
    torch.manual_seed(seed)
    spec = UNetSpec.named("tiny", n_channels=len(channels))
    return TrainedModel(build_unet(len(channels), spec=spec).eval(), ModelConfig(spec, channels))


def sky_image(size=160, seed=1):
    rng = np.random.default_rng(seed)
    img = (100 + 5 * rng.standard_normal((4, size, size))).astype(np.float32)
    for _ in range(6):
        cy, cx = rng.integers(10, size - 10, 2)
        img[[0, 2], cy - 1:cy + 2, cx - 1:cx + 2] += 200
        img[3, cy - 1:cy + 2, cx - 1:cx + 2] += 30
    return img


# --- data ------------------------------------------------------------------------------


def test_normalisation_puts_noise_in_unit_sigma(dataset):
    stack = torch.from_numpy(read_stack(dataset, dataset.samples[0], CHANNELS))
    from astrid.model.data import scale, stretch

    scaled = scale(stack, channels=CHANNELS, normalisation=Normalisation())
    for c in range(3):  # science, reference, difference: median 0, MAD-sigma 1
        x = scaled[c].flatten()
        assert abs(float(x.median())) < 0.2
        assert 0.8 < float(1.4826 * (x - x.median()).abs().median()) < 1.2
    assert torch.equal(scaled[3], stack[3])  # S_corr is left as it is
    out = stretch(scaled, normalisation=Normalisation())
    assert float(out.abs().max()) <= 50 and torch.isfinite(out).all()


def test_sampler_oversamples_transients_and_artifacts(dataset):
    pool = load_split(dataset, "train", channels=CHANNELS, normalisation=Normalisation())
    rng = np.random.default_rng(0)

    def share_with_objects(empty_fraction):
        sampler = TileSampler([pool], pool_weights=[1], tile_size=16, empty_fraction=empty_fraction)
        hits = 0
        for _ in range(400):
            _, k, y0, x0 = sampler.draw(rng)
            hits += bool(pool.labels[k][y0:y0 + 16, x0:x0 + 16].any())
        return hits / 400

    assert share_with_objects(0.25) > 0.8
    assert share_with_objects(0.25) > share_with_objects(1.0) + 0.2


def test_augmentation_keeps_images_and_labels_aligned():
    x = np.zeros((4, 16, 16), np.float32)
    y = np.zeros((16, 16), np.uint8)
    x[:, 3, 11] = 50.0
    y[3, 11] = COSMIC_RAY
    rng = np.random.default_rng(0)
    for _ in range(8):
        xa, ya = _augment(x, y, rng, channels=CHANNELS,
                          augmentation=Augmentation(noise=0.0, artifacts=0.0))
        assert np.unravel_index(np.argmax(xa[0]), ya.shape) == tuple(np.argwhere(ya)[0])
    xa, ya = _augment(x, y, rng, channels=CHANNELS, augmentation=Augmentation(artifacts=1.0))
    assert {CLASS_CODES["cosmic_ray"]} <= set(np.unique(ya).tolist())
    assert np.isfinite(xa).all() and xa.dtype == np.float32


def test_training_tiles_are_deterministic_and_well_formed(dataset):
    pool = load_split(dataset, "train", channels=CHANNELS, normalisation=Normalisation())
    sampler = TileSampler([pool], pool_weights=[1], tile_size=32, empty_fraction=0.25)

    def first(seed):
        ds = TileDataset(sampler, length=4, channels=CHANNELS, normalisation=Normalisation(),
                         augmentation=Augmentation(), seed=seed)
        return ds[0]

    (x, y), (x2, y2) = first(3), first(3)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert x.shape == (4, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    grid = GridTiles(pool, tile_size=32, channels=CHANNELS, normalisation=Normalisation())
    assert len(grid) == 2 * 4  # two 64x64 images, four tiles each


# --- network and loss --------------------------------------------------------------------


def test_build_unet_sizes_and_validation():
    for size, channels in (("tiny", 1), ("small", 4)):
        net = build_unet(channels, len(CLASS_NAMES), size=size).eval()
        assert net(torch.zeros(2, channels, 48, 48)).shape == (2, len(CLASS_NAMES), 48, 48)
    assert sum(p.numel() for p in build_unet(4, 9, size="small").parameters()) < 2_000_000
    with pytest.raises(ValueError, match="model size"):
        build_unet(4, 9, size="huge")
    with pytest.raises(ValueError, match="dropout"):
        build_unet(4, 9, dropout=1.5)


def test_loss_ignores_masked_pixels_and_weights_classes():
    logits = torch.randn(2, 9, 8, 8)
    target = torch.randint(0, 9, (2, 8, 8))
    loss = SegmentationLoss([1.0] * 9)
    masked = target.clone()
    masked[:, :4] = IGNORE_INDEX
    assert torch.isfinite(loss(logits, masked))
    kept = logits.clone()
    kept[:, :, :4] = 100 * torch.randn(2, 9, 4, 8)  # changes only ignored pixels
    assert torch.allclose(loss(logits, masked), loss(kept, masked))
    assert torch.isfinite(SegmentationLoss(None, focal_gamma=2.0)(logits, target))
    assert SegmentationLoss([1.0] * 9, dice=0.5).name == "weighted_ce+0.5dice"


def test_tiny_model_overfits_a_few_tiles(dataset):
    pool = load_split(dataset, "train", channels=CHANNELS, normalisation=Normalisation())
    grid = GridTiles(pool, tile_size=32, channels=CHANNELS, normalisation=Normalisation())
    xb = torch.stack([grid[i][0] for i in range(4)])
    yb = torch.stack([grid[i][1] for i in range(4)])
    torch.manual_seed(0)
    net = build_unet(4, 9, size="tiny", dropout=0.0)
    loss_fn = SegmentationLoss(None, dice=0.0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(120):
        opt.zero_grad()
        loss = loss_fn(net(xb), yb)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] / 20


# --- training ------------------------------------------------------------------------------


def test_train_unet_end_to_end(trained, dataset):
    assert len(trained.history) == 4
    first, last = trained.history[0], trained.history[-1]
    assert last["train_loss"] < first["train_loss"]
    assert {"epoch", "train_loss", "valid_loss", "macro_dice", "seconds"} <= set(first)
    assert trained.best_metric == max(row["macro_dice"] for row in trained.history)
    for key in ("bundle", "weights", "config", "history", "summary", "checkpoint"):
        assert trained.paths[key].exists(), key
    params = trained.params
    assert params["dataset_hash"] == dataset.content_hash()
    assert params["channels"] == ",".join(CHANNELS) and params["synthetic_real_ratio"] == "1:0"
    assert params["loss"].startswith("weighted_ce+")
    config = json.loads(trained.paths["config"].read_text())
    assert config["temperature"] == pytest.approx(trained.temperature)
    assert config["classes"] == list(CLASS_NAMES)


def test_training_is_reproducible(dataset, tmp_path):
    runs = [train_unet(dataset, tile_size=32, epochs=1, model_size="tiny", batch_size=8,
                       tiles_per_epoch=16, seed=7, output_dir=tmp_path / str(i), progress=False,
                       calibration_pixels=0) for i in range(2)]
    assert runs[0].history[0]["train_loss"] == runs[1].history[0]["train_loss"]
    a, b = (r.model.net.state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_train_unet_starts_from_init_model(trained, dataset, tmp_path):
    common = {"tile_size": 32, "epochs": 1, "lr": 1e-8, "batch_size": 8, "tiles_per_epoch": 16,
              "progress": False, "calibration_pixels": 0}
    before = {k: v.detach().clone() for k, v in trained.model.net.state_dict().items()}
    tuned = train_unet(dataset, init_model=trained.bundle, model_size="small", dropout=0.3,
                       output_dir=tmp_path / "tuned", **common)
    assert tuned.model.config.spec == trained.model.config.spec  # model_size, dropout ignored
    assert tuned.model.config.channels == trained.model.config.channels
    assert tuned.params["model_size"] == "tiny"
    assert tuned.params["finetuned_from"] == str(trained.bundle)
    assert tuned.model.config.training["finetuned"] is True
    start = dict(trained.model.net.named_parameters())
    for name, value in tuned.model.net.named_parameters():
        assert torch.allclose(value.detach().cpu(), start[name].detach().cpu(), atol=1e-5), name
    valid = load_split(dataset, "val", channels=CHANNELS, normalisation=Normalisation())
    tiles = GridTiles(valid, tile_size=32, channels=CHANNELS, normalisation=Normalisation(), max_tiles=8)
    xb = torch.stack([tiles[i][0] for i in range(len(tiles))])

    def logits(model):
        with torch.inference_mode():
            return model.net.eval().cpu()(xb).as_subclass(torch.Tensor)

    scratch = train_unet(dataset, model_size="tiny", output_dir=tmp_path / "scratch", **common)
    ref, out, other = logits(trained.model), logits(tuned.model), logits(scratch.model)
    # weights barely move at lr=1e-8; BatchNorm running statistics still follow the epoch's tiles
    change = (out - ref).abs().mean() / ref.abs().mean()
    assert change < 0.25 < (other - ref).abs().mean() / ref.abs().mean()
    # an in-memory init model is copied, not trained in place
    train_unet(dataset, init_model=trained.model, output_dir=tmp_path / "mem", **common)
    assert all(torch.equal(v, before[k]) for k, v in trained.model.net.state_dict().items())
    with pytest.raises(ValueError, match="channels .* disagree with init_model"):
        train_unet(dataset, init_model=trained.model, channels="difference,score", **common)
    with pytest.raises(ValueError, match="normalisation"):
        train_unet(dataset, init_model=trained.model, normalisation=Normalisation(scope="tile"),
                   **common)


def test_temperature_scaling_lowers_validation_nll(trained):
    fit = trained.calibration.fit
    assert fit.temperature != 1.0
    assert fit.nll_after < fit.nll_before
    cal = trained.calibration
    assert cal.confidence_before.shape == cal.confidence_after.shape == cal.correct.shape


def test_fit_temperature_recovers_overconfidence():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(20000, 5, generator=g) * 2
    targets = torch.multinomial(torch.softmax(logits, 1), 1, generator=g)[:, 0]
    fit = fit_temperature(3.0 * logits, targets)
    assert fit.temperature == pytest.approx(3.0, rel=0.05)
    assert fit.nll_after < fit.nll_before
    with pytest.raises(ValueError, match="non-finite|NaN"):
        fit_temperature(torch.full((4, 3), float("nan")), torch.zeros(4, dtype=torch.long))


# --- inference ------------------------------------------------------------------------------


def receptive_radius(net, size=128):
    x = torch.zeros(1, net.layers[0][0][0].in_channels, size, size, requires_grad=True)
    net.eval()
    net(x)[0, :, size // 2, size // 2].sum().backward()
    rows = np.nonzero(x.grad.abs().sum((0, 1)).numpy().any(axis=1))[0]
    return int(max(size // 2 - rows.min(), rows.max() - size // 2))


def test_tiled_inference_matches_whole_image_and_has_no_seams(trained):
    model, img = trained.model, sky_image()
    radius = receptive_radius(build_unet(4, 9, spec=model.config.spec))
    whole = predict_image(model, img, tile_size=160, overlap=0, amp=False).probabilities
    tiled = predict_image(model, img, tile_size=96, overlap=32, amp=False).probabilities
    starts, length = tile_layout(160, tile=96, overlap=32, multiple=model.config.spec.multiple)
    assert len(starts) == 2
    # away from tile borders (farther than the receptive field from any interior edge): equal
    exact = np.ones(160, bool)
    for s in starts:
        for edge in (s, s + length):
            if 0 < edge < 160:
                exact[max(edge - radius, 0):edge + radius] = False
    region = exact[:, None] & exact[None, :]
    assert region.sum() > 1000
    np.testing.assert_allclose(tiled[:, region], whole[:, region], atol=1e-5)


def test_blended_tiles_leave_no_seams():
    # an untrained network is uncertain everywhere, so stitching errors would show
    model, img = tiny_model(seed=0), sky_image()
    whole = predict_image(model, img, tile_size=160, overlap=0, amp=False).probabilities

    def excess_jump(overlap):
        """Largest jump across a tile edge beyond the whole-image jump there."""
        probs = predict_image(model, img, tile_size=96, overlap=overlap, amp=False).probabilities
        starts, length = tile_layout(160, tile=96, overlap=overlap, multiple=4)
        jump = np.abs(np.diff(probs, axis=1)).max(axis=(0, 2))
        reference = np.abs(np.diff(whole, axis=1)).max(axis=(0, 2))
        edges = {s for s in starts if s > 0} | {s + length for s in starts if s + length < 160}
        return max(jump[e - 1] - reference[e - 1] for e in edges)

    assert excess_jump(32) < 0.005
    assert excess_jump(0) > 0.02  # hard stitching does show seams


def test_prediction_fields_and_inputs(trained, dataset):
    model = trained.model
    sample = dataset.split("val")[0]
    pred = predict_image(model, sample, manifest=dataset, tile_size=32, overlap=8)
    assert pred.probabilities.shape == (9, 64, 64) and pred.probabilities.dtype == np.float32
    np.testing.assert_allclose(pred.probabilities.sum(0), 1.0, atol=1e-4)
    assert pred.class_map.dtype == np.uint8 and pred.uncertainty.shape == (64, 64)
    assert 0 <= pred.uncertainty.min() and pred.uncertainty.max() <= 1 + 1e-6
    assert pred.std is None and pred.mutual_information is None
    stack = read_stack(dataset, sample, CHANNELS)
    by_name = predict_image(model, dict(zip(CHANNELS, stack, strict=True)), tile_size=32, overlap=8)
    np.testing.assert_array_equal(by_name.probabilities, pred.probabilities)
    batch = predict_image(model, np.stack([stack, stack]), tile_size=32, overlap=8)
    np.testing.assert_allclose(batch.probabilities[1], pred.probabilities, atol=1e-6)
    as_tensor = predict_image(model, torch.from_numpy(stack), tile_size=32, overlap=8)
    assert isinstance(as_tensor.probabilities, torch.Tensor)  # the device follows the data
    real = pred.probability_of(["supernova", "variable", "moving"])
    assert real.shape == (64, 64) and real.max() <= 1 + 1e-6


def test_mc_dropout_uncertainty(trained, dataset):
    sample = dataset.split("val")[0]
    runs = [predict_image(trained.model, sample, manifest=dataset, tile_size=64, overlap=0,
                          mc_samples=4, seed=s) for s in (0, 0, 1)]
    assert np.array_equal(runs[0].probabilities, runs[1].probabilities)  # seeded
    assert not np.array_equal(runs[0].probabilities, runs[2].probabilities)
    assert runs[0].std.shape == (64, 64) and runs[0].std.max() > 0
    assert (runs[0].mutual_information >= 0).all()
    net = trained.model.net
    with mc_dropout(net):
        assert not net.training
    assert not net.training  # eval mode restored


# --- bundles ---------------------------------------------------------------------------------


def test_save_load_round_trip_gives_identical_outputs(trained, tmp_path):
    img = sky_image(64)
    bundle = save_model(trained.model, tmp_path / "bundle")
    state = torch.load(bundle / "weights.pt", weights_only=True)  # tensors only
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    loaded = load_model(bundle)
    assert loaded.config.to_dict() == trained.model.config.to_dict()
    a = predict_image(trained.model, img, tile_size=32, overlap=8, mc_samples=2)
    b = predict_image(loaded, img, tile_size=32, overlap=8, mc_samples=2)
    np.testing.assert_array_equal(a.probabilities, b.probabilities)
    np.testing.assert_array_equal(a.std, b.std)
    c = predict_image(str(trained.bundle), img, tile_size=32, overlap=8, mc_samples=2)
    np.testing.assert_array_equal(a.probabilities, c.probabilities)
    with pytest.raises(FileExistsError):
        save_model(trained.model, bundle)


def test_model_file_from_another_architecture_is_refused(tmp_path):
    tiny = save_model(tiny_model(), tmp_path / "tiny")
    spec = UNetSpec.named("small", n_channels=4)
    other = save_model(TrainedModel(build_unet(4, spec=spec), ModelConfig(spec, CHANNELS)),
                       tmp_path / "small")
    (tiny / "weights.pt").write_bytes((other / "weights.pt").read_bytes())
    with pytest.raises(ModelError, match="another architecture"):
        load_model(tiny)
    two = save_model(tiny_model(("difference", "score")), tmp_path / "two")
    config = json.loads((two / "config.json").read_text())
    config["channels"] = list(CHANNELS)
    (two / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="channels"):
        load_model(two)
    config["schema"] = "something/else"
    (two / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="not an AstrID model config"):
        load_model(two)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing")


def test_weights_that_are_not_plain_tensors_are_refused(tmp_path):
    bundle = save_model(tiny_model(), tmp_path / "b")
    torch.save({"x": torch.zeros(1), "code": object()}, bundle / "weights.pt")
    with pytest.raises(ModelError, match="tensors-only"):
        load_model(bundle)


# --- bad inputs -------------------------------------------------------------------------------


def test_wrong_number_of_channels_is_refused():
    with pytest.raises(ValueError, match="3 channels but the model takes 4"):
        predict_image(tiny_model(), np.zeros((3, 32, 32), np.float32), tile_size=32, overlap=0)
    with pytest.raises(ValueError, match="lacks channel"):
        predict_image(tiny_model(), {"science": np.zeros((32, 32))}, tile_size=32, overlap=0)


def test_nans_in_inputs_are_refused_or_filled():
    img = sky_image(32)
    img[2, 5, 5] = np.nan
    with pytest.raises(ValueError, match="non-finite.*difference"):
        predict_image(tiny_model(), img, tile_size=32, overlap=0)
    pred = predict_image(tiny_model(), img, tile_size=32, overlap=0, nonfinite="fill")
    assert np.isfinite(pred.probabilities).all()


def test_nans_in_training_data(tmp_path):
    manifest = make_dataset(tmp_path / "d", n=3, splits=("train", "val", "test"))
    sample = manifest.split("train")[0]
    science = manifest.read(sample, "science")
    science[10, 10] = np.nan
    write_fits(manifest.file(sample, "science"), science, overwrite=True)
    read = {"channels": CHANNELS, "normalisation": Normalisation()}
    with pytest.raises(ValueError, match="non-finite input pixels"):
        load_split(manifest, "train", **read)
    mask = np.zeros(science.shape, np.uint8)
    mask[9:12, 9:12] = 1
    write_fits(tmp_path / "d" / "mask.fits", mask)
    manifest.add_product(sample, "diff_mask", "mask.fits")
    pool = load_split(manifest, "train", **read)
    assert pool.labels[0][10, 10] == IGNORE_INDEX and not np.isnan(pool.images[0][:, 0, 0]).any()


def test_empty_and_mismatched_manifests_are_refused(tmp_path, dataset):
    empty = Manifest(root=tmp_path / "empty", name="empty")
    empty.save()
    with pytest.raises(ManifestError, match="no samples"):
        train_unet(empty.path, output_dir=tmp_path / "o1", progress=False)
    no_val = make_dataset(tmp_path / "noval", n=2, splits=("train", "test"))
    with pytest.raises(ManifestError, match="no 'val' samples"):
        train_unet(no_val, model_size="tiny", tile_size=32, output_dir=tmp_path / "o2",
                   progress=False)
    shifted = make_dataset(tmp_path / "shape", n=3, splits=("train", "val", "test"))
    sample = shifted.split("train")[0]
    write_fits(shifted.file(sample, "labels"), np.zeros((32, 32), np.uint8), overwrite=True)
    with pytest.raises(ManifestError, match="labels .* differ"):
        load_split(shifted, "train", channels=CHANNELS, normalisation=Normalisation())
    missing = make_dataset(tmp_path / "missing", n=3, splits=("train", "val", "test"))
    del missing.split("train")[0]["score"]
    with pytest.raises(ManifestError, match="no 'score' product"):
        load_split(missing, "train", channels=CHANNELS, normalisation=Normalisation())


def test_bad_training_options_are_refused(dataset, tmp_path):
    common = {"output_dir": tmp_path, "progress": False}
    with pytest.raises(ValueError, match="tile_size must be a multiple of 8"):
        train_unet(dataset, tile_size=36, **common)
    with pytest.raises(ValueError, match="unknown channel"):
        train_unet(dataset, channels="science,flat", **common)
    with pytest.raises(ValueError, match="real_manifest"):
        train_unet(dataset, real_fraction=0.5, **common)
    with pytest.raises(ValueError, match="loss"):
        train_unet(dataset, loss="mse", **common)
    with pytest.raises(ValueError, match="exceeds image"):
        train_unet(dataset, tile_size=128, model_size="tiny", **common)


def test_real_data_mixing(dataset, tmp_path):
    real = make_dataset(tmp_path / "real", n=3, seed=5, splits=("train", "val", "test"))
    result = train_unet(dataset, real_manifest=real, real_fraction=0.5, tile_size=32, epochs=1,
                        model_size="tiny", batch_size=8, tiles_per_epoch=16, progress=False,
                        output_dir=tmp_path / "out", calibration_pixels=0)
    assert result.params["synthetic_real_ratio"] == "0.5:0.5"
    assert result.params["real_dataset_hash"] == real.content_hash()
    assert result.params["n_valid_images"] == 2  # both datasets' val samples


def test_tile_layout_covers_with_overlap():
    for size in (64, 100, 2048, 4000):
        starts, length = tile_layout(size, tile=512, overlap=64, multiple=16)
        assert length % 16 == 0 and starts[0] == 0
        if len(starts) > 1:
            assert starts[-1] + length == size
            assert min(a + length - b for a, b in zip(starts, starts[1:], strict=False)) >= 63
        else:
            assert length >= size
