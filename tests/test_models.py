import numpy as np
import pytest
import torch
from torch import nn

from sela_edu.models import ARCHS, FEATURE_ARCHS, MultiHeadNet, build_model, clusters_per_head, init_head, unwrap


pytestmark = pytest.mark.usefixtures("one_torch_thread")

# (arch, in_channels, image_size, feature_dim, extra kwargs); batch 2 keeps the 224 px AlexNet cheap
# on CPU, and the ResNets run at small sizes (their small stem keeps full resolution: costly at 32 px).
CASES = [
    ("smallcnn", 1, 8, 256, {}),
    ("smallcnn", 1, 28, 256, {}),
    ("smallcnn", 3, 32, 256, {}),
    ("alexnet32", 3, 32, 4096, {}),
    ("alexnet", 3, 224, 4096, {}),
    ("resnet18", 3, 16, 512, {}),
    ("resnet18", 1, 32, 512, {"small_stem": False}),  # standard 7x7/2 stem, grey input
    ("resnet50", 3, 8, 2048, {}),
]


def test_cases_cover_every_arch():
    assert {c[0] for c in CASES} == set(ARCHS) - set(FEATURE_ARCHS)  # the feature archs: tests below


@pytest.mark.parametrize("arch,channels,size,dim,extra", CASES)
def test_output_shapes(arch, channels, size, dim, extra):
    torch.manual_seed(0)
    model = build_model(arch, num_heads=3, num_clusters=[4, 5, 6], in_channels=channels, image_size=size,
                        **extra)
    assert isinstance(model, MultiHeadNet)
    assert model.feature_dim == dim
    assert len(model.heads) == 3 and model.num_clusters == [4, 5, 6]
    first_conv = next(m for m in model.backbone.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.in_channels == channels
    x = torch.randn(2, channels, size, size)
    with torch.no_grad():
        out = model.train()(x)  # train mode: BatchNorm uses the batch of 2
        assert isinstance(out, list) and [o.shape for o in out] == [(2, 4), (2, 5), (2, 6)]
        model.eval()
        feats = model.features(x)
        scores = model(x)
    assert feats.shape == (2, dim) and torch.isfinite(feats).all()
    # The heads are linear layers on exactly these features.
    for head, s in zip(model.heads, scores):
        torch.testing.assert_close(s, head(feats))


def test_gradients_reach_first_layer():
    model = build_model("smallcnn", num_heads=2, num_clusters=5, in_channels=1, image_size=28)
    loss = sum(o.logsumexp(1).sum() for o in model(torch.randn(4, 1, 28, 28)))
    loss.backward()
    first_conv = model.backbone[0]
    assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0
    assert all(h.weight.grad.abs().sum() > 0 for h in model.heads)


def test_alexnet_conv_maps():
    big = build_model("alexnet", image_size=224).eval()
    small = build_model("alexnet32", image_size=32).eval()
    with torch.no_grad():
        # backbone = (convs ending in an adaptive pool, flatten, fc); the pool is an identity at the
        # nominal size, and the smallest accepted size still leaves a real 1 x 1 / 2 x 2 map.
        assert big.backbone[0][:-1](torch.randn(1, 3, 224, 224)).shape == (1, 256, 6, 6)
        assert small.backbone[0][:-1](torch.randn(1, 3, 32, 32)).shape == (1, 256, 4, 4)
        assert big.backbone[0][:-1](torch.randn(1, 3, 63, 63)).shape == (1, 256, 1, 1)
        assert small.backbone[0][:-1](torch.randn(1, 3, 16, 16)).shape == (1, 256, 2, 2)
        assert big(torch.randn(1, 3, 63, 63))[0].shape == (1, 10)
    widths = [m.out_channels for m in big.backbone.modules() if isinstance(m, nn.Conv2d)]
    assert widths == [96, 256, 384, 384, 256]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in big.backbone.modules()) == 5


def test_resnet_stem_choice():
    small = build_model("resnet18", image_size=32)
    assert small.backbone.conv1.kernel_size == (3, 3) and small.backbone.conv1.stride == (1, 1)
    assert isinstance(small.backbone.maxpool, nn.Identity)
    big = build_model("resnet18", image_size=224)
    assert big.backbone.conv1.kernel_size == (7, 7) and isinstance(big.backbone.maxpool, nn.MaxPool2d)
    forced = build_model("resnet18", image_size=32, small_stem=False)
    assert forced.backbone.conv1.kernel_size == (7, 7)
    assert isinstance(build_model("resnet18").backbone.fc, nn.Identity)


def test_int_num_clusters_and_reset_heads():
    model = build_model("smallcnn", num_heads=4, num_clusters=7, in_channels=1, image_size=8)
    assert model.num_heads == 4 and model.num_clusters == [7] * 4
    backbone_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    model.reset_heads(2, [3, 9])
    assert model.num_clusters == [3, 9]
    model.eval()
    out = model(torch.randn(5, 1, 8, 8))
    assert [o.shape for o in out] == [(5, 3), (5, 9)]
    for k, v in model.backbone.state_dict().items():
        torch.testing.assert_close(v, backbone_before[k])
    model.reset_heads(1, 12)
    assert model.num_clusters == [12] and model.build_kwargs["num_clusters"] == 12
    # build_kwargs rebuild the same architecture (what a checkpoint needs)
    rebuilt = build_model(**model.build_kwargs)
    assert rebuilt.load_state_dict(model.state_dict()) is not None


def test_reset_heads_follows_backbone_dtype():
    model = build_model("smallcnn", in_channels=1, image_size=8).double()
    model.reset_heads(2, 5)
    assert all(h.weight.dtype == torch.float64 for h in model.heads)


def test_heads_start_near_uniform():
    # Small head weights (as in the official code): initial softmax close to uniform.
    model = build_model("smallcnn", num_clusters=10, in_channels=1, image_size=28).eval()
    with torch.no_grad():
        p = model(torch.randn(8, 1, 28, 28))[0].softmax(1)
    assert (p - 0.1).abs().max() < 0.05


def test_models_and_the_trainer_read_k_per_head_by_one_rule():
    from sela_edu.training import clusters_per_head as trainers_rule

    assert trainers_rule is clusters_per_head
    model = build_model("smallcnn", num_heads=3, num_clusters="4, 5,6", in_channels=1, image_size=8)
    assert model.num_clusters == [4, 5, 6]
    model.reset_heads(np.int64(2), np.int64(3))  # numpy integers, as a notebook's arrays give them
    assert model.num_clusters == [3, 3] and model.build_kwargs["num_clusters"] == 3


def test_init_head_starts_a_head_small_with_zero_bias():
    torch.manual_seed(0)
    head = nn.Linear(256, 100)
    init_head(head)
    assert head.bias.detach().abs().max() == 0 and abs(float(head.weight.detach().std()) - 0.01) < 0.001


def test_unwrap_takes_the_model_out_of_a_ddp_wrapper_only():
    class Wrapper(nn.Module):  # DistributedDataParallel keeps the network as .module
        def __init__(self, module):
            super().__init__()
            self.module = module

    model = build_model("smallcnn", in_channels=1, image_size=8)
    assert unwrap(Wrapper(model)) is model and unwrap(model) is model
    other = nn.Linear(2, 2)
    other.module = "not a network"
    assert unwrap(other) is other


def test_bad_arch_lists_archs():
    with pytest.raises(ValueError, match="resnet18") as err:
        build_model("vgg16")
    assert "vgg16" in str(err.value) and all(a in str(err.value) for a in ARCHS)


@pytest.mark.parametrize("arch,size,needed", [("alexnet", 32, 63), ("alexnet32", 8, 16), ("smallcnn", 4, 8),
                                              ("resnet50", 16, 32)])
def test_image_too_small(arch, size, needed):
    kwargs = {"small_stem": False} if arch.startswith("resnet") else {}
    with pytest.raises(ValueError, match=rf"image_size {size} px .* at least {needed} px"):
        build_model(arch, image_size=size, **kwargs)


@pytest.mark.parametrize("kwargs,match", [
    ({"num_heads": 0}, "num_heads"),
    ({"num_heads": 2, "num_clusters": [5, 5, 5]}, "num_heads is 2"),
    ({"num_clusters": 1}, ">= 2"),
    ({"num_clusters": 10.0}, "num_clusters"),
    ({"num_clusters": "10,x"}, ">= 2"),
    ({"in_channels": 0}, "in_channels"),
    ({"small_stem": True}, "ResNets only"),
    ({"head_temperature": 0}, "head_temperature"),
    ({"head_temperature": float("nan")}, "head_temperature"),
    ({"head_temperature": True}, "head_temperature"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_model("smallcnn", **kwargs)


@pytest.mark.parametrize("arch,size,dim", [("smallcnn", 28, 128 * 4 * 4), ("alexnet32", 32, 256 * 4 * 4)])
def test_conv_features_are_the_flattened_last_conv_stage(arch, size, dim):
    from sela_edu.models import build_model

    model = build_model(arch, num_heads=1, num_clusters=10, in_channels=1, image_size=size).eval()
    x = torch.randn(2, 1, size, size)
    conv = model.conv_features(x)
    assert conv.shape == (2, dim)
    # the fully connected part of the backbone maps it to the features the heads read
    fc_start = next(i for i, layer in enumerate(model.backbone) if isinstance(layer, torch.nn.Flatten)) + 1
    assert torch.allclose(model.backbone[fc_start:](conv), model.features(x), atol=1e-5)


def test_cosine_heads_read_only_the_direction_of_the_feature():
    torch.manual_seed(0)
    model = build_model("smallcnn", num_heads=2, num_clusters=[3, 5], in_channels=1, image_size=28,
                        head_temperature=0.1)
    assert model.build_kwargs["head_temperature"] == 0.1
    feats = torch.randn(6, model.feature_dim)
    scores = model.head_scores(feats)
    assert [s.shape for s in scores] == [(6, 3), (6, 5)]
    for s, scaled in zip(scores, model.head_scores(7.5 * feats)):
        assert torch.allclose(s, scaled, atol=1e-5)
        assert s.abs().max() <= 1 / 0.1 + 1e-4  # a cosine over T
    linear = build_model("smallcnn", num_clusters=3, in_channels=1, image_size=28)
    assert "head_temperature" not in linear.build_kwargs
    assert torch.allclose(linear.head_scores(feats)[0], linear.heads[0](feats))


def test_feature_mlp_reads_feature_vectors():
    torch.manual_seed(0)
    model = build_model("feature-mlp", num_heads=2, num_clusters=[3, 5], in_features=40)
    assert isinstance(model, MultiHeadNet) and model.feature_dim == 512 and model.num_clusters == [3, 5]
    assert model.build_kwargs == {"arch": "feature-mlp", "in_features": 40, "num_heads": 2, "num_clusters": [3, 5]}
    x = torch.randn(8, 40)
    out = model.train()(x)
    assert [o.shape for o in out] == [(8, 3), (8, 5)]
    model.eval()
    feats = model.features(x)
    assert feats.shape == (8, 512) and bool((feats >= 0).all())  # the hidden layer ends in a ReLU
    for head, s in zip(model.heads, model(x)):
        torch.testing.assert_close(s, head(feats))
    rebuilt = build_model(**model.build_kwargs)
    rebuilt.load_state_dict(model.state_dict())
    torch.testing.assert_close(rebuilt.eval()(x)[1], model(x)[1])


@pytest.mark.parametrize("kwargs,match", [
    ({}, "in_features must be their length"),
    ({"in_features": 0}, "in_features must be their length"),
    ({"in_features": 8, "rotation": True}, "cannot be rotated"),
    ({"in_features": 8, "small_stem": True}, "ResNets only"),
    ({"in_features": 8, "num_clusters": 1}, ">= 2"),
])
def test_feature_mlp_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_model("feature-mlp", **kwargs)


def test_image_archs_refuse_in_features():
    with pytest.raises(ValueError, match="reads images"):
        build_model("smallcnn", in_channels=1, image_size=28, in_features=16)
