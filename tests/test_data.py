"""Tests for sela_edu.data: every data set in its real file format, loaders, sharding, imbalance, downloads,
and the course's data decision built on them (sela_edu.course.cpu_dataset).

CIFAR, SVHN and image folders are tested on small files written here in the official formats
(python pickles, MATLAB .mat, PNG folders); Fashion-MNIST on the shared copy when it exists.
"""

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data.distributed import DistributedSampler

from sela_edu.data.augment import BatchAugment
from sela_edu.data import (DATASET_INFO, DATASET_NAMES, FolderData, ImageData, default_augment, epoch_indices,
                           heavy_imbalance, imbalanced_indices, light_imbalance, load_dataset, make_loader)

# the data root, or the shared data folder beside the clone (where the project's machines keep it)
SHARED = Path(os.environ.get("SELA_DATA_ROOT") or Path(__file__).resolve().parents[2] / "shared" / "data")


# --- writers of the official file formats ---------------------------------------------------------

def _pickle(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def write_cifar10(root, per_batch=6, n_test=5, seed=0):
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = []
    for k in range(1, 6):
        x = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        y = rng.integers(0, 10, per_batch).tolist()
        _pickle(folder / f"data_batch_{k}", {"batch_label": f"training batch {k} of 5", "labels": y, "data": x,
                                             "filenames": [f"img{k}_{i}.png" for i in range(per_batch)]})
        batches.append((x, y))
    xt = rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)
    yt = rng.integers(0, 10, n_test).tolist()
    _pickle(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": yt, "data": xt,
                                    "filenames": [f"t{i}.png" for i in range(n_test)]})
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _pickle(folder / "batches.meta", {"label_names": names, "num_cases_per_batch": per_batch, "num_vis": 3072})
    return batches, (xt, yt), names


def write_cifar100(root, n_train=12, n_test=4, seed=1):
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = rng.integers(0, 100, n).tolist()
        _pickle(folder / split, {"filenames": [f"{split}{i}.png" for i in range(n)], "batch_label": split,
                                 "fine_labels": fine, "coarse_labels": [f // 5 for f in fine], "data": x})
        out[split] = (x, fine)
    names = [f"class{i:02d}" for i in range(100)]
    _pickle(folder / "meta", {"fine_label_names": names, "coarse_label_names": [f"super{i}" for i in range(20)]})
    return out, names


def write_svhn(root, split="train", n=7, seed=2):
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    folder = Path(root) / "svhn"
    folder.mkdir(parents=True, exist_ok=True)
    x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)       # H x W x C x N, as distributed
    digits = np.arange(n) % 10
    y = np.where(digits == 0, 10, digits).astype(np.uint8)[:, None]  # SVHN writes digit 0 as 10
    savemat(folder / f"{split}_32x32.mat", {"X": x, "y": y})
    return x, digits


def write_image_folder(root, classes=("cat", "dog"), per_class=3, size=(40, 30)):
    from PIL import Image

    rng = np.random.default_rng(3)
    for c in classes:
        (Path(root) / c).mkdir(parents=True)
        for i in range(per_class):
            arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(arr).save(Path(root) / c / f"{i}.png")
    return Path(root)


# --- loading each data set ------------------------------------------------------------------------

def test_digits_shapes_ranges_and_split():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert isinstance(train, ImageData)
    assert len(train) + len(test) == 1797 and len(test) == 360
    assert train.images.shape[1:] == (1, 8, 8) and train.images.dtype == torch.uint8
    assert train.targets.dtype == torch.int64
    assert int(train.images.max()) == 255 and int(train.images.min()) == 0
    assert train.image_size == 8 and train.num_channels == 1
    # stratified: every digit in both parts, in proportion
    assert torch.bincount(test.targets, minlength=10).min() >= 30
    # the split is fixed: loading twice gives the same images
    assert torch.equal(load_dataset("digits", "test").images, test.images)
    # the stated normalisation matches the images
    allx = torch.cat([train.images, test.images]).float() / 255
    assert abs(allx.mean().item() - train.mean[0]) < 1e-3 and abs(allx.std().item() - train.std[0]) < 1e-3


def test_cifar10_real_format(tmp_path):
    batches, (xt, yt), names = write_cifar10(tmp_path)
    train = load_dataset("cifar10", "train", root=tmp_path, verify=False)
    test = load_dataset("cifar10", "test", root=tmp_path, verify=False)
    assert train.images.shape == (30, 3, 32, 32) and train.images.dtype == torch.uint8
    assert test.images.shape == (5, 3, 32, 32)
    assert train.classes == names and train.classes[-1] == "truck"
    # row-major 3072 = 3 x 32 x 32 (all red, then green, then blue)
    assert torch.equal(train.images[0], torch.from_numpy(batches[0][0][0].reshape(3, 32, 32)))
    assert train.targets.tolist() == sum((y for _, y in batches), [])
    assert test.targets.tolist() == yt
    assert train.mean == DATASET_INFO["cifar10"]["mean"]


def test_cifar10_md5_check_refuses_copies_by_default(tmp_path):
    write_cifar10(tmp_path)
    with pytest.raises(RuntimeError, match="MD5.*verify=False"):
        load_dataset("cifar10", root=tmp_path)


def test_cifar100_real_format(tmp_path):
    out, names = write_cifar100(tmp_path)
    train = load_dataset("cifar100", "train", root=tmp_path, verify=False)
    test = load_dataset("cifar100", "test", root=tmp_path, verify=False)
    assert train.images.shape == (12, 3, 32, 32) and test.images.shape == (4, 3, 32, 32)
    assert train.targets.tolist() == out["train"][1]          # fine labels
    assert train.classes == names
    assert torch.equal(test.images[3], torch.from_numpy(out["test"][0][3].reshape(3, 32, 32)))


def test_svhn_real_format(tmp_path):
    x, digits = write_svhn(tmp_path, "train")
    write_svhn(tmp_path, "test", n=3)
    train = load_dataset("svhn", "train", root=tmp_path, verify=False)
    assert train.images.shape == (7, 3, 32, 32)
    assert train.targets.tolist() == digits.tolist()          # 10 read back as 0
    assert torch.equal(train.images[4], torch.from_numpy(x[..., 4]).permute(2, 0, 1))
    assert len(load_dataset("svhn", "test", root=tmp_path, verify=False)) == 3
    with pytest.raises(RuntimeError, match="MD5"):
        load_dataset("svhn", root=tmp_path)


def test_image_folder(tmp_path):
    root = write_image_folder(tmp_path / "pets")
    data = load_dataset("folder", root=root)
    assert isinstance(data, FolderData)
    assert len(data) == 6 and data.classes == ["cat", "dog"] and data.targets.tolist() == [0, 0, 0, 1, 1, 1]
    x, target, index = data.dataset[4]
    assert x.shape == (3, 224, 224) and target == 1 and index == 4
    sub = data.subset([5, 0])
    assert len(sub) == 2 and sub.targets.tolist() == [1, 0] and sub.dataset[0][2] == 0


def test_imagenet_layout(tmp_path):
    write_image_folder(tmp_path / "imagenet" / "val", classes=("n01", "n02", "n03"), per_class=1)
    val = load_dataset("imagenet", "val", root=tmp_path)
    assert isinstance(val, FolderData) and val.classes == ["n01", "n02", "n03"] and val.image_size == 224
    with pytest.raises(FileNotFoundError, match=r"imagenet[/\\]train"):
        load_dataset("imagenet", "train", root=tmp_path)


@pytest.mark.skipif(not (SHARED / "FashionMNIST" / "raw").is_dir(),
                    reason="Fashion-MNIST raw files not in the data root (FashionMNIST/raw)")
def test_fashion_mnist_from_data_root(monkeypatch):
    monkeypatch.setenv("SELA_DATA_ROOT", str(SHARED))
    test = load_dataset("fashion-mnist", "test")
    assert test.images.shape == (10000, 1, 28, 28) and test.images.dtype == torch.uint8
    assert torch.bincount(test.targets).tolist() == [1000] * 10
    assert test.classes[0] == "T-shirt/top"
    x = test.images.float() / 255   # the test split's statistics are close to the training split's
    assert abs(x.mean().item() - test.mean[0]) < 0.01 and abs(x.std().item() - test.std[0]) < 0.01


# --- errors ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, folder, expected", [
    ("cifar10", "cifar-10-batches-py", "data_batch_1"),
    ("cifar100", "cifar-100-python", "meta"),
    ("svhn", "svhn", "train_32x32.mat"),
    ("fashion-mnist", "FashionMNIST/raw", "train-images-idx3-ubyte"),
])
def test_missing_files_name_files_folder_and_download(tmp_path, name, folder, expected):
    with pytest.raises(FileNotFoundError) as err:
        load_dataset(name, root=tmp_path)
    message = str(err.value)
    assert str(tmp_path / folder) in message and expected in message and "download=True" in message


def test_missing_files_under_data_root_env(tmp_path, monkeypatch):
    monkeypatch.setenv("SELA_DATA_ROOT", str(tmp_path / "elsewhere"))
    with pytest.raises(FileNotFoundError, match="elsewhere"):
        load_dataset("cifar10")


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as err:
        load_dataset("mnist-ish")
    assert all(name in str(err.value) for name in DATASET_NAMES)


def test_names_are_read_as_the_user_types_them():
    from sela_edu.data.datasets import canonical_name, normalise_name

    assert normalise_name(" Fashion_MNIST ") == "fashion-mnist" and normalise_name("ResNet50_10x3k") == "resnet50-10x3k"
    assert [canonical_name(n) for n in ("FashionMNIST", "CIFAR_10", " cifar-100", "SVHN")] == \
        ["fashion-mnist", "cifar10", "cifar100", "svhn"]
    with pytest.raises(ValueError, match="string"):
        canonical_name(10)


@pytest.mark.parametrize("name, split", [("cifar10", "val"), ("digits", "validation"), ("imagenet", "test")])
def test_bad_split(name, split):
    with pytest.raises(ValueError, match="split"):
        load_dataset(name, split)


def test_folder_needs_root_and_imagenet_cannot_download(tmp_path):
    with pytest.raises(ValueError, match="root"):
        load_dataset("folder")
    with pytest.raises(ValueError, match="image-net.org"):
        load_dataset("imagenet", root=tmp_path, download=True)
    with pytest.raises(FileNotFoundError, match="class"):
        load_dataset("folder", root=tmp_path)   # exists, but has no class sub-folders


def test_subset_and_validation():
    d = load_dataset("digits", "test")
    sub = d.subset(torch.tensor([3, 1]))
    assert torch.equal(sub.images[0], d.images[3]) and sub.targets.tolist() == d.targets[[3, 1]].tolist()
    assert len(d.subset(d.targets == 0)) == int((d.targets == 0).sum())
    with pytest.raises(ValueError, match="indices"):
        d.subset([0, len(d)])
    with pytest.raises(ValueError, match="uint8"):
        ImageData("x", torch.zeros(2, 1, 4, 4), torch.zeros(2), ["a"], (0.5,), (0.2,))


def test_default_augment_settings():
    assert default_augment("digits").flip is False and default_augment("digits").scale == (0.6, 1.0)
    assert default_augment("svhn").flip is False and default_augment("cifar10").flip is True
    paper = default_augment("cifar100")
    assert (paper.scale, paper.grayscale, paper.brightness, paper.size) == ((0.2, 1.0), 0.2, 0.4, 32)
    fashion = default_augment("fashion-mnist")
    assert (fashion.scale, fashion.flip, fashion.brightness, fashion.contrast) == ((0.2, 1.0), True, 0.4, 0.4)
    assert default_augment("imagenet").size == 224


# --- loaders --------------------------------------------------------------------------------------

def _small(n=50):
    d = load_dataset("digits", "test")
    return d.subset(range(n))


@pytest.mark.parametrize("train", [False, True])
def test_loader_covers_each_index_once(train):
    d = _small(50)
    loader = make_loader(d, 16, train=train, drop_last=False)
    seen, count = [], 0
    for x, t, i in loader:
        assert x.dtype == torch.float32 and x.shape[1:] == (1, 8, 8)
        assert torch.equal(t, d.targets[i])
        seen.append(i)
        count += 1
    assert count == len(loader) == 4
    assert sorted(torch.cat(seen).tolist()) == list(range(50))


def test_loader_plain_batches_are_the_images_normalised():
    d = _small(20)
    x, _, i = next(iter(make_loader(d, 20, train=False)))
    assert torch.equal(i, torch.arange(20))
    assert torch.allclose(x, (d.images.float() / 255 - d.mean[0]) / d.std[0])


def test_train_loader_drops_short_batch_and_is_deterministic_per_epoch():
    d = _small(50)
    a, b = make_loader(d, 16, train=True, seed=3), make_loader(d, 16, train=True, seed=3)
    assert len(a) == 3
    first = [(x, i) for x, _, i in a]
    again = [(x, i) for x, _, i in b]
    assert all(torch.equal(x1, x2) and torch.equal(i1, i2) for (x1, i1), (x2, i2) in zip(first, again))
    b.set_epoch(1)
    other = [(x, i) for x, _, i in b]
    assert not torch.equal(first[0][1], other[0][1])          # another shuffle in another epoch
    a.set_epoch(1)
    assert torch.equal(next(iter(a))[0], other[0][0])         # but the same one for the same epoch


@pytest.mark.parametrize("train", [True, False])
def test_the_set_stays_on_the_device_and_batches_take_no_copy_of_images(monkeypatch, train):
    """On a device (the meta device stands in for a GPU), the uint8 images are copied there once for every
    epoch of the loader, each epoch's order once; a batch brings at most its packed augmentation parameters
    (one small copy); index and targets stay on the host, cut from the epoch's order."""
    g = torch.Generator().manual_seed(0)
    d = ImageData("cifar10", torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8, generator=g),
                  torch.arange(50) % 10, [str(c) for c in range(10)], (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    loader = make_loader(d, 16, train=train, drop_last=False, device="meta")
    original = torch.Tensor.to
    copies = []

    def counting_to(tensor, *args, **kwargs):
        out = original(tensor, *args, **kwargs)
        if tensor.device.type == "cpu" and out.device.type == "meta":
            copies.append(tuple(tensor.shape))
        return out

    monkeypatch.setattr(torch.Tensor, "to", counting_to)
    for epoch in range(3):
        loader.set_epoch(epoch)
        for x, t, i in loader:
            assert x.device.type == "meta" and x.dtype == torch.float32 and x.shape[1:] == (3, 8, 8)
            assert i.device.type == "cpu" and t.device.type == "cpu" and torch.equal(t, d.targets[i])
    image_copies = [s for s in copies if s == tuple(d.images.shape)]
    order_copies = [s for s in copies if s == (50,)]
    packed = [s for s in copies if len(s) == 2 and s[1] == 10]  # a batch's augmentation parameters
    constants = len(copies) - len(image_copies) - len(order_copies) - len(packed)  # made once (colour matrices)
    assert len(image_copies) == 1 and len(order_copies) == 3
    assert len(packed) == (3 * len(loader) if train else 0) and constants <= 2, copies


def test_custom_augment_is_used():
    d = _small(8)
    aug = BatchAugment(4, scale=(0.5, 1.0), flip=False, mean=d.mean, std=d.std)
    x, _, _ = next(iter(make_loader(d, 8, train=True, augment=aug)))
    assert x.shape == (8, 1, 4, 4)


def test_epoch_indices_match_distributed_sampler():
    for n, world in ((10, 3), (7, 4), (2, 5)):
        for rank in range(world):
            ours = epoch_indices(n, shuffle=True, seed=4, epoch=2, rank=rank, world_size=world)
            sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=4)
            sampler.set_epoch(2)
            assert ours.tolist() == list(sampler)


def test_distributed_shards_cover_everything_with_equal_batches():
    d = _small(23)
    world = 3
    shards, lengths = [], set()
    for rank in range(world):
        loader = make_loader(d, 4, train=False, shuffle=True, distributed=True, rank=rank, world_size=world)
        idx = torch.cat([i for _, _, i in loader])
        assert idx.numel() == 8                                # ceil(23 / 3), padded
        shards.append(idx)
        lengths.add(len(loader))
    assert lengths == {2}
    union = torch.cat(shards)
    assert set(union.tolist()) == set(range(23)) and union.numel() == 24   # one image twice (padding)


def test_distributed_reads_torch_distributed(monkeypatch):
    import torch.distributed as dist

    d = _small(10)
    with pytest.raises(ValueError, match="torch.distributed"):
        make_loader(d, 4, train=False, distributed=True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    loader = make_loader(d, 4, train=False, distributed=True)
    assert torch.cat([i for _, _, i in loader]).tolist() == [1, 3, 5, 7, 9]


def test_make_loader_bad_arguments():
    d = _small(10)
    with pytest.raises(ValueError, match="batch_size"):
        make_loader(d, 0, train=True)
    with pytest.raises(ValueError, match="rank"):
        make_loader(d, 2, train=False, distributed=True, rank=3, world_size=2)
    with pytest.raises(ValueError, match="ImageData or FolderData"):
        make_loader(torch.zeros(3), 2, train=False)


def test_folder_loader_train_plain_and_distributed(tmp_path):
    data = load_dataset("folder", root=write_image_folder(tmp_path / "f"))
    data.image_size = 32        # keep the per-image work small
    plain = make_loader(data, 4, train=False)
    batches = list(plain)
    assert len(batches) == len(plain) == 2
    assert batches[0][0].shape == (4, 3, 32, 32) and torch.cat([b[2] for b in batches]).tolist() == list(range(6))
    state = torch.get_rng_state()
    one = [x for x, _, _ in make_loader(data, 3, train=True, seed=1)]
    two = [x for x, _, _ in make_loader(data, 3, train=True, seed=1)]
    assert torch.equal(torch.get_rng_state(), state)      # the caller's random stream is left alone
    assert all(torch.equal(a, b) for a, b in zip(one, two))
    # each image's augmentation is seeded by (seed, epoch, image): the same with a worker process
    worker = [x for x, _, _ in make_loader(data, 3, train=True, seed=1, num_workers=1)]
    assert all(torch.equal(a, b) for a, b in zip(one, worker))
    shard = [torch.cat([i for _, _, i in make_loader(data, 2, train=False, distributed=True, rank=r, world_size=4)])
             for r in range(4)]
    assert {len(s) for s in shard} == {2} and set(torch.cat(shard).tolist()) == set(range(6))


# --- imbalance ------------------------------------------------------------------------------------

def _targets(per_class=100, classes=10):
    g = torch.Generator().manual_seed(0)
    return torch.arange(classes).repeat_interleave(per_class)[torch.randperm(per_class * classes, generator=g)]


def test_imbalanced_indices_exact_counts_sorted_and_seeded():
    t = _targets()
    kept = imbalanced_indices(t, [0.0, 0.25, 0.5, 0.333, 1.0, 0, 0, 0, 0, 0.05], seed=1)
    counts = torch.bincount(t[kept], minlength=10).tolist()
    assert counts == [100, 75, 50, 67, 0, 100, 100, 100, 100, 95]
    assert torch.equal(kept, kept.sort().values) and kept.dtype == torch.int64
    assert torch.equal(kept, imbalanced_indices(t, [0.0, 0.25, 0.5, 0.333, 1.0, 0, 0, 0, 0, 0.05], seed=1))
    assert not torch.equal(kept, imbalanced_indices(t, [0.0, 0.25, 0.5, 0.333, 1.0, 0, 0, 0, 0, 0.05], seed=2))


def test_one_class_fraction_does_not_change_another_class_subset():
    t = _targets()
    a = imbalanced_indices(t, {3: 0.5}, seed=0)
    b = imbalanced_indices(t, {3: 0.5, 1: 0.2}, seed=0)
    assert torch.equal(a[t[a] == 3], b[t[b] == 3])


def test_light_and_heavy_imbalance():
    t = _targets()
    light = torch.bincount(t[light_imbalance(t)], minlength=10).tolist()
    assert light == [100] * 9 + [50]
    assert torch.bincount(t[light_imbalance(t, cls=2)], minlength=10)[2] == 50
    heavy = torch.bincount(t[heavy_imbalance(t)], minlength=10).tolist()
    assert heavy == [90, 80, 70, 60, 50, 40, 30, 20, 10, 0]      # literal reading: the last class is gone
    capped = torch.bincount(t[heavy_imbalance(t, max_fraction=0.9)], minlength=10).tolist()
    assert capped[-1] == 10
    half = torch.bincount(t[heavy_imbalance(t, step=0.05)], minlength=10).tolist()
    assert half == [95, 90, 85, 80, 75, 70, 65, 60, 55, 50]


@pytest.mark.parametrize("fractions, message", [
    ([0.5] * 9, "10 classes"),
    ([1.5] + [0] * 9, r"\[0, 1\]"),
    ([-0.1] + [0] * 9, r"\[0, 1\]"),
    ({12: 0.5}, "does not occur"),
])
def test_imbalance_bad_fractions(fractions, message):
    with pytest.raises(ValueError, match=message):
        imbalanced_indices(_targets(), fractions)


def test_imbalance_helpers_bad_arguments():
    t = _targets()
    with pytest.raises(ValueError, match="step"):
        heavy_imbalance(t, step=2)
    with pytest.raises(ValueError, match="cls"):
        light_imbalance(t, cls=10)


# --- availability, download with a short timeout, the course's digits fallback ---------------------

def test_available_follows_the_data_layout(tmp_path):
    from sela_edu.data import available

    assert available("digits", tmp_path)
    assert not available("fashion-mnist", tmp_path) and not available("cifar10", tmp_path)
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for p in ("train", "t10k"):
        for k in ("images-idx3", "labels-idx1"):
            (raw / f"{p}-{k}-ubyte").write_bytes(b"")
    assert available("fashion_mnist", tmp_path)
    with pytest.raises(ValueError, match="unknown data set"):
        available("mnist3d", tmp_path)


def test_download_failure_falls_back_to_digits_with_a_notice_quickly(tmp_path, monkeypatch):
    import time

    from sela_edu.course import cpu_dataset
    from sela_edu.data import download

    monkeypatch.delenv("SELA_OFFLINE", raising=False)
    monkeypatch.setattr(download, "_reachable", lambda host, port, timeout: True)

    def failing_download(key, base, timeout):
        raise TimeoutError("timed out")

    monkeypatch.setattr(download, "_download", failing_download)
    logs = []
    start = time.perf_counter()
    assert cpu_dataset("classroom", None, tmp_path, log=logs.append) == "digits"
    assert time.perf_counter() - start < 2
    assert any("download failed" in line and "TimeoutError" in line for line in logs)
    assert logs[-1].startswith("NOTICE: Fashion-MNIST") and "03" in logs[-1] and "05" in logs[-1]


def test_unreachable_server_gives_up_within_the_timeout(tmp_path, monkeypatch):
    import time

    from sela_edu.data import download

    monkeypatch.delenv("SELA_OFFLINE", raising=False)
    import socket

    def hanging_connection(*a, **k):   # a server that never answers (DNS or TCP)
        time.sleep(5)
        raise OSError("no answer")

    monkeypatch.setattr(socket, "create_connection", hanging_connection)
    downloads = []
    monkeypatch.setattr(download, "_download", lambda *a: downloads.append(a))
    logs = []
    start = time.perf_counter()
    assert not download.ensure_dataset("fashion-mnist", tmp_path, timeout=0.5, log=logs.append)
    assert time.perf_counter() - start < 2 and not downloads
    assert "did not answer within 0.5 s" in logs[0]


def test_offline_setting_and_smoke_profile_never_download(tmp_path, monkeypatch):
    from sela_edu.course import cpu_dataset
    from sela_edu.data import download

    monkeypatch.setattr(download, "_reachable", lambda *a: pytest.fail("no network check when offline"))
    monkeypatch.setenv("SELA_OFFLINE", "1")
    assert not download.ensure_dataset("fashion-mnist", tmp_path, log=None)
    assert cpu_dataset("smoke", None, tmp_path) == "digits"
    assert cpu_dataset("classroom", "cifar-10", tmp_path) == "cifar10"


def test_successful_download_gives_fashion_mnist(tmp_path, monkeypatch):
    from sela_edu.course import cpu_dataset
    from sela_edu.data import download

    monkeypatch.delenv("SELA_OFFLINE", raising=False)
    monkeypatch.setattr(download, "_reachable", lambda *a: True)

    def fake_download(key, base, timeout):
        raw = base / "FashionMNIST" / "raw"
        raw.mkdir(parents=True)
        for p in ("train", "t10k"):
            for k in ("images-idx3", "labels-idx1"):
                (raw / f"{p}-{k}-ubyte").write_bytes(b"")

    monkeypatch.setattr(download, "_download", fake_download)
    logs = []
    assert cpu_dataset("classroom", None, tmp_path, log=logs.append) == "fashion-mnist"
    assert not any(line.startswith("NOTICE") for line in logs)


def test_paper_profile_takes_the_notebooks_paper_data_set_without_looking_for_fashion_mnist(tmp_path, monkeypatch):
    from sela_edu.course import cpu_dataset
    from sela_edu.course.series import data_choice
    monkeypatch.setattr(data_choice, "ensure_dataset", lambda *a, **k: pytest.fail("no Fashion-MNIST at paper"))
    assert cpu_dataset("paper", None, tmp_path, paper="cifar-10") == "cifar10"
    assert cpu_dataset("paper", "svhn", tmp_path, paper="cifar10") == "svhn"     # the parameter wins
    assert cpu_dataset("smoke", None, tmp_path, paper="cifar10") == "digits"     # only the paper profile


def test_data_decision_names_a_bad_profile_or_data_set(tmp_path):
    from sela_edu.course import cpu_dataset

    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        cpu_dataset("fast", None, tmp_path)
    with pytest.raises(ValueError, match="unknown data set 'mnist3d'"):
        cpu_dataset("classroom", "mnist3d", tmp_path)
