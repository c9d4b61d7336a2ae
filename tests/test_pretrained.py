"""Loading the authors' checkpoints: state dicts fabricated in the official key layouts, cache, verification."""

from __future__ import annotations

import zipfile

import pytest
import torch
import torchvision

from sela_edu.apps import pretrained as pt
from sela_edu.apps.pretrained.convert import without_data_parallel
from sela_edu.apps.pretrained.registry import SWAV_URL, released_spec
from sela_edu.models import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _official_alexnet(kit, rotation: bool = False, data_parallel: bool = False) -> dict:
    """The kit's AlexNet weights renamed to models/alexnet.py's keys (features.<i>, classifier.<i>, top_layer<h>)."""
    out = {}
    for key, value in kit.state_dict().items():
        if key.startswith("backbone.0."):
            name = ("features.module." if data_parallel else "features.") + key[len("backbone.0."):]
        elif key.startswith("backbone.2."):
            name = "classifier." + key[len("backbone.2."):]
        else:
            head, rest = key[len("heads."):].split(".", 1)
            name = f"top_layer{head}.{rest}"
        out[name] = value.clone()
    if rotation:
        h = kit.num_heads
        out[f"top_layer{h}.weight"] = torch.randn(4, 4096)
        out[f"top_layer{h}.bias"] = torch.randn(4)
    return out


def _official_preact(width: int = 8, heads=(5, 7)) -> tuple[dict, pt.PreActResNet50]:
    net = pt.PreActResNet50(width=width)
    state = dict(net.state_dict())
    for h, k in enumerate(heads):
        state[f"top_layer{h}.weight"] = torch.randn(k, net.out_dim)
        state[f"top_layer{h}.bias"] = torch.randn(k)
    return state, net.eval()


@pytest.fixture(scope="module")
def kit_alexnet():
    torch.manual_seed(0)
    return build_model("alexnet", num_heads=3, num_clusters=5, image_size=224).eval()


def test_official_alexnet_layout_maps_onto_the_kit(kit_alexnet):
    kit = kit_alexnet
    state = _official_alexnet(kit, rotation=True, data_parallel=True)
    assert pt.detect_layout(without_data_parallel(state)) == "sela-alexnet"
    model, info = pt.model_from_state_dict(state)
    assert info["arch"] == "alexnet" and info["head_sizes"] == [5, 5, 5]
    rot = info["rotation_head"]
    assert isinstance(rot, torch.nn.Linear) and rot.out_features == 4
    assert torch.equal(rot.weight, state["top_layer3.weight"])
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(model.features(x), kit.features(x))
        for a, b in zip(model(x), kit(x)):
            assert torch.allclose(a, b)


def test_single_head_top_layer_and_wrong_shapes(kit_alexnet):
    state = _official_alexnet(kit_alexnet)
    for h in (1, 2):
        del state[f"top_layer{h}.weight"], state[f"top_layer{h}.bias"]
    state["top_layer.weight"] = state.pop("top_layer0.weight")
    state["top_layer.bias"] = state.pop("top_layer0.bias")
    model, info = pt.model_from_state_dict(state)
    assert info["head_sizes"] == [5]
    state["features.0.weight"] = torch.zeros(96, 3, 5, 5)
    with pytest.raises(pt.PretrainedError, match="features|backbone.0.0.weight"):
        pt.model_from_state_dict(state)


def test_preact_resnet50_keys_follow_the_official_file():
    net = pt.PreActResNet50()  # full width: the official models/resnetv2.py names and shapes
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert shapes["features.0.weight"] == (64, 3, 7, 7)
    assert shapes["features.2.0.bn1.weight"] == (64,)
    assert shapes["features.2.0.shortcut.0.weight"] == (256, 64, 1, 1)
    assert shapes["features.5.2.conv3.weight"] == (2048, 512, 1, 1)
    assert shapes["features.3.0.conv2.weight"] == (128, 128, 3, 3)
    assert "features.3.1.shortcut.0.weight" not in shapes
    assert not any(k.startswith("features.1.") for k in shapes)  # the max-pool has no parameters
    assert net.out_dim == 2048


def test_preact_checkpoint_file_round_trip(tmp_path):
    state, net = _official_preact()
    path = tmp_path / "resnet-10x3k.pth"
    torch.save(state, path)
    pre = pt.load_checkpoint_file(path)
    assert pre.arch == "resnet50-preact" and pre.layout == "sela-resnetv2" and pre.labels is None
    assert pre.model.num_clusters == [5, 7]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(pre.model.features(x), net(x), atol=1e-6)
        out = pre.model(x)
    assert torch.allclose(out[1], net(x) @ state["top_layer1.weight"].T + state["top_layer1.bias"], atol=1e-5)


@pytest.mark.parametrize("label_key", ["labels", "L"])
def test_torchvision_format_with_labels(tmp_path, label_key):
    torch.manual_seed(0)
    tv = torchvision.models.resnet18(num_classes=12).eval()
    labels = torch.randint(0, 12, (3, 40))
    path = tmp_path / "resnet18-1k_pp.pth"
    torch.save({"state_dict": tv.state_dict(), label_key: labels}, path)
    pre = pt.load_checkpoint_file(path)
    assert pre.arch == "resnet18" and pre.layout == "torchvision"
    assert torch.equal(pre.labels, labels)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(pre.model(x)[0], tv(x), atol=1e-5)


def test_official_resnetv1_layout_maps_like_change_state_dict():
    tv = torchvision.models.resnet50(num_classes=9).eval()
    names = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6", "layer4": "7"}
    state = {}
    for key, value in tv.state_dict().items():
        first, rest = key.split(".", 1)
        if first == "fc":
            state[f"top_layer0.{rest}"] = value
        else:
            state[f"features.{names[first]}.{rest}"] = value
    model, info = pt.model_from_state_dict(state)
    assert info["layout"] == "sela-resnetv1" and info["arch"] == "resnet50"
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x)[0], tv(x), atol=1e-4)


def test_unknown_layout_is_refused():
    with pytest.raises(pt.PretrainedError, match="unknown checkpoint layout"):
        pt.model_from_state_dict({"encoder.weight": torch.zeros(2)})


def test_corrupt_and_truncated_files(tmp_path):
    bad = tmp_path / "garbage.pth"
    bad.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(pt.PretrainedError, match="truncated or corrupt"):
        pt.load_checkpoint_file(bad)
    state, _ = _official_preact()
    good = tmp_path / "good.pth"
    torch.save(state, good)
    data = good.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(pt.PretrainedError, match=r"cut\.pth"):
        pt.load_checkpoint_file(cut)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(pt.PretrainedError, match="empty"):
        pt.load_checkpoint_file(empty)
    with pytest.raises(FileNotFoundError):
        pt.load_checkpoint_file(tmp_path / "absent.pth")


def test_offline_missing_file_names_url_and_path(tmp_path, monkeypatch):
    monkeypatch.setenv("SELA_CACHE", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError) as err:
        pt.load_released("resnet50-1k-pp", offline=True)
    text = str(err.value)
    assert "new_models/resnet50-1k_pp.pth" in text and str(tmp_path / "cache" / "resnet50-1k_pp.pth") in text
    with pytest.raises(FileNotFoundError, match="pretrained.zip"):
        pt.load_released("alexnet-10x3k-rot", offline=True)
    with pytest.raises(ValueError, match="unknown released model"):
        pt.load_released("vgg16")


def test_released_from_archive_and_cache_verification(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    state, net = _official_preact()
    member = tmp_path / "resnet-10x3k.pth"
    torch.save(state, member)
    with zipfile.ZipFile(cache / "pretrained.zip", "w") as zf:
        zf.write(member, "self-label_models/resnet-10x3k.pth")
        zf.writestr("self-label_models/README", "x")
    pre = pt.load_released("resnet50-10x3k", cache=cache, offline=True, progress=False)
    assert pre.spec.name == "resnet50-10x3k" and pre.model.num_clusters == [5, 7]
    assert (cache / "resnet-10x3k.pth.sha256").is_file()
    assert pre.info["sha256"] == (cache / "resnet-10x3k.pth.sha256").read_text().split()[0]
    # a cached file that changes afterwards is caught by its recorded SHA-256
    extracted = cache / "resnet-10x3k.pth"
    raw = bytearray(extracted.read_bytes())
    raw[-100] ^= 0xFF
    extracted.write_bytes(bytes(raw))
    with pytest.raises(pt.PretrainedError, match="SHA-256|CRC|corrupt"):
        pt.load_released("resnet50-10x3k", cache=cache, offline=True)
    # a member the archive does not hold: the error lists what it holds
    with pytest.raises(pt.PretrainedError, match="README"):
        pt.load_released("alexnet-10x3k", cache=cache, offline=True)


def test_truncated_archive_is_refused(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    with zipfile.ZipFile(tmp_path / "full.zip", "w") as zf:
        zf.writestr("resnet-10x3k.pth", b"0" * 5000)
    data = (tmp_path / "full.zip").read_bytes()
    (cache / "pretrained.zip").write_bytes(data[:2000])
    with pytest.raises(pt.PretrainedError, match="truncated or corrupt|CRC"):
        pt.fetch("resnet50-10x3k", cache=cache, offline=True)


def test_kit_model_file_and_bare_state_dict(tmp_path):
    model = build_model("smallcnn", num_heads=2, num_clusters=[3, 4], in_channels=1, image_size=28)
    path = tmp_path / "model.pt"
    torch.save({"build_kwargs": dict(model.build_kwargs), "state_dict": model.state_dict(),
                "data": {"mean": [0.3], "std": [0.35]}}, path)
    pre = pt.load_checkpoint_file(path)
    assert pre.layout == "kit" and pre.arch == "smallcnn" and pre.image_size == 28
    assert pre.mean == (0.3,) and pre.model.num_clusters == [3, 4]
    bare = tmp_path / "bare.pt"
    torch.save(model.state_dict(), bare)
    with pytest.raises(pt.PretrainedError, match="arch="):
        pt.load_checkpoint_file(bare)
    pre = pt.load_checkpoint_file(bare, arch="smallcnn", image_size=28, in_channels=1)
    x = torch.randn(2, 1, 28, 28)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(pre.model.features(x), model.features(x))


def test_unexpected_error_reading_a_file_is_not_hidden(tmp_path, monkeypatch):
    """A failure that says nothing about the file's content (a disk error, a bug) reaches the caller as it
    is, instead of being reported as a corrupt file."""
    model = build_model("smallcnn", num_heads=1, num_clusters=3, in_channels=1, image_size=28)
    path = tmp_path / "model.pt"
    torch.save({"build_kwargs": dict(model.build_kwargs), "state_dict": model.state_dict()}, path)

    def failing_read(*args, **kwargs):
        raise OSError("read failed")

    monkeypatch.setattr(torch, "load", failing_read)
    with pytest.raises(OSError, match="read failed"):
        pt.load_checkpoint_file(path)


def _count_torch_loads(monkeypatch) -> list:
    calls = []
    real = torch.load

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", counting)
    return calls


def _feature_run_checkpoint(folder):
    """The training checkpoint a `sela-edu label --backbone` run writes: the folder-backbone preset's heads
    trained by the kit's trainer on feature vectors, one epoch."""
    from sela_edu.data.features import FeatureData
    from sela_edu.training import train
    from sela_edu.training.presets import folder_backbone_config

    data = FeatureData.from_features(torch.randn(64, 8, generator=torch.Generator().manual_seed(0)))
    config = folder_backbone_config(len(data), 4, epochs=1, batch_size=32, device="cpu", checkpoint_dir=str(folder))
    train(config, data, progress=False)
    return folder / "last.pt"


def test_a_released_file_and_a_kit_checkpoint_are_read_once(tmp_path, monkeypatch):
    tv = torchvision.models.resnet18(num_classes=5)
    released = tmp_path / "resnet18-1k_pp.pth"
    torch.save({"state_dict": tv.state_dict(), "labels": torch.zeros(1, 10, dtype=torch.long)}, released)
    kit = tmp_path / "kit"
    model = build_model("smallcnn", num_heads=1, num_clusters=3, in_channels=1, image_size=28)
    from sela_edu.training.checkpoint import save_checkpoint

    save_checkpoint(kit / "last.pt", {"model": model.state_dict(), "config": {"dataset": "fashion-mnist",
                                                                              "arch": "smallcnn"}})
    calls = _count_torch_loads(monkeypatch)
    assert pt.load_checkpoint_file(released).layout == "torchvision"
    assert calls == [released]
    calls.clear()
    assert pt.load_checkpoint_file(kit / "last.pt").arch == "smallcnn"
    assert calls == [kit / "last.pt"]


def test_a_kit_checkpoint_of_another_format_version_keeps_its_message(tmp_path):
    from sela_edu.training import checkpoint as ckpt

    model = build_model("smallcnn", num_heads=1, num_clusters=3, in_channels=1, image_size=28)
    path = tmp_path / "last.pt"
    torch.save({"format": ckpt.FORMAT, "version": ckpt.FORMAT_VERSION + 1,
                "state": {"model": model.state_dict(), "config": {"dataset": "fashion-mnist"}}}, path)
    with pytest.raises(ckpt.CheckpointError,
                       match=rf"{path.name} has format version {ckpt.FORMAT_VERSION + 1}.*reads version"):
        pt.load_checkpoint_file(path)


def test_a_backbone_runs_training_checkpoint_is_named_with_what_reads_it(tmp_path):
    last = _feature_run_checkpoint(tmp_path / "out" / "checkpoints")
    with pytest.raises(pt.PretrainedError) as err:
        pt.load_checkpoint_file(last)
    text = str(err.value)
    assert text.startswith(f"{last} holds heads trained on a frozen backbone's features")
    assert "training checkpoint of a `sela-edu label --backbone` run" in text and "in_features" not in text
    assert f"sela-edu assign FOLDER --model {tmp_path / 'out' / 'heads.pt'}" in text


def test_kit_model_file_keeps_cosine_heads(tmp_path):
    model = build_model("smallcnn", num_heads=1, num_clusters=4, in_channels=1, image_size=28, head_temperature=0.2)
    path = tmp_path / "model.pt"
    torch.save({"build_kwargs": dict(model.build_kwargs), "state_dict": model.state_dict()}, path)
    pre = pt.load_checkpoint_file(path)
    x = torch.randn(2, 1, 28, 28)
    model.eval()
    pre.model.eval()
    assert pre.model.head_temperature == 0.2
    with torch.no_grad():
        assert torch.allclose(pre.model(x)[0], model(x)[0], atol=1e-6)


def test_kit_checkpoint_with_only_its_config_is_rebuilt_at_its_image_size(tmp_path):
    # a run at image_size 16 (the official CIFAR preset upsamples likewise) with cosine heads
    model = build_model("smallcnn", num_heads=1, num_clusters=4, in_channels=1, image_size=16, head_temperature=0.2)
    path = tmp_path / "checkpoint.pt"
    torch.save({"config": {"dataset": "fashion-mnist", "arch": "smallcnn", "image_size": 16, "head_temperature": 0.2},
                "state_dict": model.state_dict()}, path)
    pre = pt.load_checkpoint_file(path)
    assert pre.image_size == 16 and pre.model.head_temperature == 0.2


def test_list_released_names_every_model_and_readme_figures():
    text = pt.list_released()
    for name in pt.RELEASED:
        assert name in text
    assert "61.5" in text and "68.8" in text
    # SeLa's own files on the VGG server; the SwAV repository's on dl.fbaipublicfiles.com
    assert all(spec.url.startswith(pt.ASSET_URL if spec.layout != "swav" else SWAV_URL)
               for spec in pt.RELEASED.values())


def test_a_backbone_runs_heads_checkpoint_is_named_with_what_reads_it(tmp_path):
    heads = build_model("feature-mlp", num_heads=1, num_clusters=4, in_features=8)
    path = tmp_path / "last.pt"
    torch.save({"config": {"dataset": "fashion-mnist", "arch": "feature-mlp"}, "state_dict": heads.state_dict()}, path)
    with pytest.raises(pt.PretrainedError, match=r"last\.pt holds heads .*sela-edu assign"):
        pt.load_checkpoint_file(path)


# --- the SwAV repository's ResNet-50s (SwAV, DeepCluster-v2, SeLa-v2): files written here in their layout ---

#: registry name -> (file name, prototype sets, top-1 of the facebookresearch/swav README's Model Zoo)
SWAV_FILES = {
    "swav-800ep": ("swav_800ep_pretrain.pth.tar", 1, 75.3),
    "swav-400ep": ("swav_400ep_pretrain.pth.tar", 1, 74.6),
    "swav-200ep": ("swav_200ep_pretrain.pth.tar", 1, 73.9),
    "swav-100ep": ("swav_100ep_pretrain.pth.tar", 1, 72.1),
    "swav-200ep-bs256": ("swav_200ep_bs256_pretrain.pth.tar", 1, 72.7),
    "swav-400ep-bs256": ("swav_400ep_bs256_pretrain.pth.tar", 1, 74.3),
    "swav-400ep-2x224": ("swav_400ep_2x224_pretrain.pth.tar", 1, 70.1),
    "deepcluster-v2-800ep": ("deepclusterv2_800ep_pretrain.pth.tar", 3, 75.2),
    "deepcluster-v2-400ep": ("deepclusterv2_400ep_pretrain.pth.tar", 3, 74.3),
    "deepcluster-v2-400ep-2x224": ("deepclusterv2_400ep_2x224_pretrain.pth.tar", 3, 70.2),
    "sela-v2-400ep": ("selav2_400ep_pretrain.pth.tar", 1, 71.8),
    "sela-v2-400ep-2x224": ("selav2_400ep_2x224_pretrain.pth.tar", 1, 67.2),
}


@pytest.fixture(scope="module")
def swav_resnet50():
    """A torchvision ResNet-50 (random weights, BatchNorm statistics made non-trivial) and a small MLP
    projection head shaped like src/resnet50.py's (Linear, BatchNorm1d, ReLU, Linear)."""
    torch.manual_seed(0)
    tv = torchvision.models.resnet50(weights=None).eval()
    with torch.no_grad():
        for m in tv.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    proj = torch.nn.Sequential(torch.nn.Linear(2048, 32), torch.nn.BatchNorm1d(32), torch.nn.ReLU(),
                               torch.nn.Linear(32, 16)).eval()
    with torch.no_grad():
        proj[1].running_mean.uniform_(-0.1, 0.1)
    return tv, proj


def _swav_state(tv, proj, sets: int = 1, k: int = 30, prefix: str = "module.") -> dict:
    """What main_swav.py / main_deepclusterv2.py save: the DDP model's keys (``module.``), torchvision's
    ResNet-50 without fc, ``projection_head.*`` and ``prototypes.weight`` (``prototypes.prototypes<i>.weight``
    for several sets)."""
    state = {prefix + key: v.clone() for key, v in tv.state_dict().items() if not key.startswith("fc.")}
    state.update({f"{prefix}projection_head.{key}": v.clone() for key, v in proj.state_dict().items()})
    g = torch.Generator().manual_seed(sets)
    if sets == 1:
        state[prefix + "prototypes.weight"] = torch.randn(k, 16, generator=g)
    else:
        for i in range(sets):
            state[f"{prefix}prototypes.prototypes{i}.weight"] = torch.randn(k + i, 16, generator=g)
    return state


def _assert_backbone_is(pre, tv):
    kit = pre.model.state_dict()
    for key, value in tv.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(kit["backbone." + key], value), key


@pytest.mark.parametrize("wrapped, sets, prefix", [(False, 1, "module."), (True, 3, "module."), (True, 1, "")])
def test_swav_layout_file_becomes_the_network_swav_trained(tmp_path, swav_resnet50, wrapped, sets, prefix):
    tv, proj = swav_resnet50
    state = _swav_state(tv, proj, sets=sets, prefix=prefix)
    assert pt.detect_layout(without_data_parallel(state)) == "swav"
    path = tmp_path / "swav_pretrain.pth.tar"
    torch.save({"epoch": 400, "state_dict": state} if wrapped else state, path)
    pre = pt.load_checkpoint_file(path)
    assert pre.arch == "resnet50" and pre.layout == "swav" and pre.labels is None and pre.rotation_head is None
    _assert_backbone_is(pre, tv)
    protos = [v for key, v in state.items() if "prototypes" in key]
    # the projection head and one cosine head per prototype set, at SwAV's temperature
    assert pre.model.num_clusters == [p.shape[0] for p in protos] and pre.model.head_temperature == 0.1
    assert pre.info["prototype_sizes"] == [p.shape[0] for p in protos]
    assert all(torch.equal(a, b) for a, b in zip(pre.info["prototypes"], protos))
    head = pre.info["projection_head"]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = pre.model.features(x)
        assert torch.allclose(feats, torch.flatten(torch.nn.Sequential(*list(tv.children())[:-1])(x), 1), atol=1e-5)
        assert torch.allclose(head(feats), proj(feats), atol=1e-6)
        z = torch.nn.functional.normalize(proj(feats), dim=1)
        for scores, p in zip(pre.model(x), protos):
            expected = z @ torch.nn.functional.normalize(p, dim=1).t() / 0.1
            assert torch.allclose(scores, expected, atol=1e-5)


def test_swav_layout_without_extras_and_with_fc(swav_resnet50):
    """A file with its projection head and prototypes dropped is torchvision's layout; read as "swav" (what
    the registry asks) it loads the same; an fc, as in torchvision's layout, becomes the head."""
    tv, _ = swav_resnet50
    state = {"module." + k: v for k, v in tv.state_dict().items()}
    assert pt.detect_layout(without_data_parallel(state)) == "torchvision"
    model, info = pt.model_from_state_dict(state, "swav")
    assert info["layout"] == "swav" and info["projection_head"] is None and info["prototypes"] == []
    assert model.num_clusters == [1000] and torch.equal(model.heads[0].weight, tv.fc.weight)


def test_bad_swav_files_name_the_path(tmp_path, swav_resnet50):
    tv, proj = swav_resnet50
    state = _swav_state(tv, proj)
    state["module.prototypes.weight"] = torch.randn(30, 17)  # does not fit the 16-d projection
    path = tmp_path / "swav_800ep_pretrain.pth.tar"
    torch.save(state, path)
    with pytest.raises(pt.PretrainedError, match=rf"{path.name}.*prototypes of width 17"):
        pt.load_checkpoint_file(path)
    state = _swav_state(tv, proj)
    state["module.projection_head.0.weight"] = torch.randn(32, 1000)  # reads 1000-d features
    torch.save(state, path)
    with pytest.raises(pt.PretrainedError, match=rf"{path.name}.*projection head reads 1000-d"):
        pt.load_checkpoint_file(path)
    state = _swav_state(tv, proj)
    state["module.prototypes.extra"] = torch.zeros(3)
    torch.save(state, path)
    with pytest.raises(pt.PretrainedError, match=rf"{path.name}.*unexpected prototype entry"):
        pt.load_checkpoint_file(path)
    torch.save(_swav_state(tv, proj), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(pt.PretrainedError, match=rf"{path.name}.*truncated or corrupt"):
        pt.load_checkpoint_file(path)


def test_swav_registry_entries_follow_the_swav_readme():
    from sela_edu import paper

    swav = {name: spec for name, spec in pt.RELEASED.items() if spec.layout == "swav"}
    assert list(swav) == list(SWAV_FILES)
    text = pt.list_released()
    for name, (filename, sets, top1) in SWAV_FILES.items():
        spec = pt.RELEASED[name]
        assert spec.url == "https://dl.fbaipublicfiles.com/deepcluster/" + filename and spec.filename == filename
        assert spec.arch == "resnet50" and not spec.in_archive and spec.sha256 is None
        assert (spec.num_heads, spec.num_clusters) == (sets, 3000)
        assert dict(spec.figures) == {"linear probe top-1": top1} == paper.RELEASED_MODELS[name]
        assert "facebookresearch/swav" in spec.description
        line = next(row for row in text.splitlines() if row.split()[0] == name)
        assert f"linear probe top-1 {top1}" in line
    assert released_spec("SeLa_v2_400ep").name == "sela-v2-400ep"


@pytest.mark.parametrize("name", ["swav-800ep", "deepcluster-v2-400ep-2x224", "sela-v2-400ep"])
def test_released_swav_models_load_from_the_cache(tmp_path, swav_resnet50, name):
    tv, proj = swav_resnet50
    filename, sets, _ = SWAV_FILES[name]
    cache = tmp_path / "cache"
    cache.mkdir()
    torch.save(_swav_state(tv, proj, sets=sets), cache / filename)
    pre = pt.load_released(name, cache=cache, offline=True, progress=False)
    assert pre.spec.name == name and pre.layout == "swav" and pre.arch == "resnet50"
    _assert_backbone_is(pre, tv)
    assert len(pre.info["prototypes"]) == sets
    assert (cache / (filename + ".sha256")).is_file()


def test_offline_missing_swav_file_names_url_and_path(tmp_path):
    cache = tmp_path / "cache"
    for name in ("swav-400ep-2x224", "deepcluster-v2-800ep", "sela-v2-400ep-2x224"):
        filename = SWAV_FILES[name][0]
        with pytest.raises(FileNotFoundError) as err:
            pt.load_released(name, cache=cache, offline=True)
        text = str(err.value)
        assert "https://dl.fbaipublicfiles.com/deepcluster/" + filename in text and str(cache / filename) in text
