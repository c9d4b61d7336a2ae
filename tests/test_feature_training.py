"""Heads on a frozen backbone's features as a mode of the trainer: the feature data kind (FeatureData, its
noise augmentation and loader), the feature-mlp network, the folder-backbone preset, and train() on them."""

from __future__ import annotations

import pytest
import torch

from sela_edu.data import ImageData
from sela_edu.data.features import FeatureData, FeatureNoise, feature_loader
from sela_edu.evaluation.metrics import nmi
from sela_edu.training import build_for_config, config_from_preset, train
from sela_edu.training.presets import PRESETS, SUMMARIES, folder_backbone_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _blobs(n=240, dim=16, k=4, seed=0):
    """n feature vectors in k well-separated blobs (ReLU-like: non-negative), and their blob."""
    g = torch.Generator().manual_seed(seed)
    centres = 3 * torch.rand(k, dim, generator=g)
    targets = torch.arange(n) % k
    features = (centres[targets] + 0.3 * torch.randn(n, dim, generator=g)).clamp_min(0)
    return FeatureData.from_features(features, targets, name="blobs")


# --------------------------------------------------------------------------------------------- the data kind


def test_feature_data_standardises_with_its_own_statistics():
    data = _blobs()
    x = data.standardise(data.features)
    torch.testing.assert_close(x.mean(0), torch.zeros(data.feature_dim), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.std(0), torch.ones(data.feature_dim), atol=1e-5, rtol=0)
    flat = FeatureData.from_features(torch.cat([torch.randn(10, 2), torch.full((10, 1), 7.0)], 1))
    assert flat.std[2] == 1.0 and bool((flat.targets == -1).all())  # a constant dimension is left as it is
    part = data.subset([5, 0, 7])
    assert torch.equal(part.features, data.features[[5, 0, 7]]) and torch.equal(part.mean, data.mean)


@pytest.mark.parametrize("kwargs,match", [
    (dict(features=torch.zeros(4, 3, dtype=torch.long)), "float N x D"),
    (dict(features=torch.zeros(4, 3, 2)), "float N x D"),
    (dict(targets=torch.zeros(5)), "one target per feature vector"),
    (dict(mean=torch.zeros(2)), "one value per dimension"),
    (dict(std=torch.zeros(3)), "std must be positive"),
])
def test_feature_data_refuses_bad_input(kwargs, match):
    fields = dict(name="f", features=torch.zeros(4, 3), targets=torch.zeros(4), mean=torch.zeros(3),
                  std=torch.ones(3))
    with pytest.raises(ValueError, match=match):
        FeatureData(**{**fields, **kwargs})


def test_feature_noise_is_seeded_noise_and_dropout_then_standardisation():
    data = _blobs()
    x = data.features[:128]
    noise = FeatureNoise(data.mean, data.std)
    a = noise(x, generator=torch.Generator().manual_seed(1))
    b = noise(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, noise(x, generator=torch.Generator().manual_seed(2)))
    # dropped values are raw zeros, standardised: -mean / std
    dropped = torch.isclose(a, (-data.mean / data.std).expand_as(a), atol=1e-6)
    assert 0.15 < dropped.float().mean() < 0.25
    clean = FeatureNoise(data.mean, data.std, noise=0.0, dropout=0.0)
    torch.testing.assert_close(clean(x), data.standardise(x))
    with pytest.raises(ValueError, match="dropout"):
        FeatureNoise(data.mean, data.std, dropout=1.0)
    with pytest.raises(ValueError, match="N x D batch"):
        noise(torch.zeros(2, 3, 4))


def test_feature_loader_yields_indexed_batches_seeded_per_epoch():
    data = _blobs(n=100)
    plain = list(feature_loader(data, 32, train=False))
    assert [len(i) for _, _, i in plain] == [32, 32, 32, 4]
    x, y, index = (torch.cat(parts) for parts in zip(*plain))
    assert torch.equal(index, torch.arange(100)) and torch.equal(y, data.targets)
    torch.testing.assert_close(x, data.standardise(data.features))
    loader = feature_loader(data, 32, train=True, seed=3)
    assert len(loader) == 3  # a short last batch is dropped while training

    def epoch(e):
        loader.set_epoch(e)
        return [(x.clone(), i.clone()) for x, _, i in loader]

    first, again, second = epoch(0), epoch(0), epoch(1)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    assert not torch.equal(first[0][1], second[0][1])
    with pytest.raises(ValueError, match="FeatureData"):
        feature_loader(torch.zeros(3, 2), 2, train=False)


# --------------------------------------------------------------------------------------------- the preset


def test_folder_backbone_preset_is_the_classroom_sgd_on_feature_vectors():
    preset, classroom = config_from_preset("folder-backbone"), config_from_preset("classroom")
    differences = {k: v for k, v in preset.to_dict().items() if classroom.to_dict()[k] != v}
    assert differences == {"dataset": "folder", "arch": "feature-mlp", "num_heads": 1, "num_clusters": 10,
                           "epochs": 50, "nopts": 50, "nopt_schedule": "even"}
    # the SGD that trained label --backbone's heads before they were a mode of the trainer
    assert (preset.lr, preset.momentum, preset.weight_decay, preset.lr_schedule, preset.batch_size) == \
        (0.05, 0.9, 5e-4, "cosine", 256)


def test_folder_backbone_preset_sizes_to_the_folder():
    assert "folder-backbone" in SUMMARIES and PRESETS["folder-backbone"]["arch"] == "feature-mlp"
    config = folder_backbone_config(60, [3, 4], seed=2)
    assert (config.num_heads, config.num_clusters, config.batch_size) == (2, [3, 4], 60)  # never above N
    assert config.epochs == PRESETS["folder-backbone"]["epochs"] == config.nopts  # one label step per epoch
    config = folder_backbone_config(1000, 10, epochs=7, batch_size=100)
    assert (config.epochs, config.nopts, config.batch_size, config.num_clusters) == (7, 7, 100, 10)
    with pytest.raises(ValueError, match="num_images"):
        folder_backbone_config(1, 3)


def test_arch_and_data_kind_must_match():
    features = _blobs()
    images = ImageData("digits", torch.zeros(8, 1, 8, 8, dtype=torch.uint8), torch.zeros(8), [], (0.3,), (0.4,))
    model = build_for_config(folder_backbone_config(len(features), 4), features)
    assert model.build_kwargs["in_features"] == features.feature_dim
    with pytest.raises(ValueError, match="does not read images"):
        build_for_config(config_from_preset("folder-backbone"), images)
    with pytest.raises(ValueError, match="does not read feature vectors"):
        build_for_config(config_from_preset("smoke"), features)


# --------------------------------------------------------------------------------------------- the trainer


def test_trainer_finds_the_blobs_in_features():
    data = _blobs()
    config = folder_backbone_config(len(data), 4, epochs=6, batch_size=64, device="cpu")
    result = train(config, data, progress=False)
    assert [r["relabels"] for r in result.history] == [1] * 6
    assert result.history[-1]["nmi"][0] > 0.9  # the trainer reads the targets of FeatureData as of images
    assert nmi(data.targets, result.labels[0]) == pytest.approx(result.history[-1]["nmi"][0])


def test_feature_training_resumes_bit_for_bit(tmp_path):
    data = _blobs()

    def run(folder, callback=None):
        config = folder_backbone_config(len(data), [4, 6], epochs=3, batch_size=64, device="cpu",
                                        checkpoint_dir=str(folder))
        return train(config, data, progress=False, callback=callback)

    def stop_after_first(record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    whole = run(tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "split", stop_after_first)
    resumed = run(tmp_path / "split")
    assert torch.equal(resumed.labels, whole.labels)
    for key, value in whole.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
