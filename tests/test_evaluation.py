import math

import numpy as np
import pytest
import torch
from torch import nn

from sela_edu.training import kmeans_labels
from sela_edu.data import ImageData, make_loader
from sela_edu.evaluation import (evaluate, knn_accuracy, linear_probe, pca_project, score_dataset,
                                 weighted_knn)
from sela_edu.evaluation.metrics import ari, cluster_accuracy, nmi
from sela_edu.labelling import ScoreBuffer, self_label
from sela_edu.models import build_model


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------- score_dataset's features


def features(model, data, **kwargs):
    return score_dataset(model, data, outputs="features", **kwargs)["features"]

class ShuffledLoader:
    """Batches (x, targets, index) in a shuffled order, like the data contract's training loader."""

    def __init__(self, images, targets, batch_size, seed=0):
        self.images, self.targets, self.batch_size = images, targets, batch_size
        self.order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))

    def __len__(self):
        return math.ceil(len(self.images) / self.batch_size)

    def __iter__(self):
        for i in range(0, len(self.order), self.batch_size):
            idx = self.order[i:i + self.batch_size]
            yield self.images[idx], self.targets[idx], idx


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = build_model("smallcnn", num_heads=2, num_clusters=4, in_channels=1, image_size=8)
    # Non-trivial BatchNorm running statistics, so train and eval modes really differ.
    with torch.no_grad():
        model.train()(torch.randn(32, 1, 8, 8) * 3 + 1)
    images = torch.randn(23, 1, 8, 8)
    targets = torch.arange(23) % 5
    return model, images, targets


def test_features_use_index_and_eval_mode(tiny):
    model, images, targets = tiny
    model.train()
    with torch.no_grad():
        expected = model.eval().features(images)
    model.train()
    scored = score_dataset(model, ShuffledLoader(images, targets, 5), outputs="features")
    feats, ys = scored["features"], scored.targets
    assert model.training  # mode restored
    assert feats.shape == (23, model.feature_dim) and feats.dtype == torch.float32
    torch.testing.assert_close(feats, expected, rtol=1e-4, atol=1e-5)
    assert torch.equal(ys, targets)
    # A plain tensor, batched here, gives the same rows.
    torch.testing.assert_close(features(model, images, batch_size=4), expected, rtol=1e-4, atol=1e-5)
    # (x, targets) batches without an index are taken in order.
    batches = [(images[i:i + 6], targets[i:i + 6]) for i in range(0, 23, 6)]
    torch.testing.assert_close(features(model, batches), expected, rtol=1e-4, atol=1e-5)


def test_features_of_a_plain_module_are_deterministic():
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Dropout(0.5)).train()
    x = torch.randn(10, 1, 2, 2)
    a, b = features(net, x), features(net, x)
    assert torch.equal(a, b)  # dropout off
    torch.testing.assert_close(a, net[1](x.flatten(1)).detach())


def test_features_bad_inputs(tiny):
    model, images, targets = tiny
    dup = [(images[:4], targets[:4], torch.tensor([0, 1, 2, 2]))]
    with pytest.raises(ValueError, match="exactly once"):
        features(model, dup)
    with pytest.raises(ValueError, match="uint8|float"):
        features(model, (images * 10).to(torch.uint8))
    with pytest.raises(ValueError, match="several heads"):
        features(_ListModel(), images)
    with pytest.raises(ValueError, match="no batches"):
        features(model, [])


class _ListModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(64, 2)

    def forward(self, x):
        return [self.lin(x.flatten(1))]


# --------------------------------------------------------------------------- score_dataset
# Each reference below is the loop a caller ran before it moved onto score_dataset, written out plainly:
# the one function must give the same numbers bit for bit (same batches, same mode, same dtype).

@pytest.fixture(scope="module")
def images_data():
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (37, 1, 8, 8), dtype=torch.uint8, generator=g)
    return ImageData("toy", images, torch.arange(37) % 4, ["a", "b", "c", "d"], (0.3,), (0.2,))


def _reference_outputs(model, loader, train_mode=False):
    """The cluster browser's old loop: features then every head's scores, batch by batch, data order."""
    model.train(train_mode)
    feats, heads, index = [], [], []
    with torch.no_grad():
        for x, _, idx in loader:
            f = model.features(x)
            feats.append(f.float().cpu())
            heads.append([s.float().cpu() for s in model.head_scores(f)])
            index.append(idx)
    order = torch.argsort(torch.cat(index))
    return torch.cat(feats)[order], [torch.cat([h[i] for h in heads])[order] for i in range(len(heads[0]))]


def test_score_dataset_gives_the_old_loops_numbers(tiny, images_data):
    model = tiny[0]
    feats, heads = _reference_outputs(model, make_loader(images_data, 10, train=False, shuffle=False))
    scored = score_dataset(model, images_data, outputs=("heads", "features"), batch_size=10)
    assert torch.equal(scored["features"], feats)
    assert len(scored["heads"]) == 2 and all(torch.equal(a, b) for a, b in zip(scored["heads"], heads))
    assert torch.equal(scored.index, torch.arange(37)) and torch.equal(scored.targets, images_data.targets)
    # label-a-folder's old loop: plain transform of consecutive slices, model(x)
    from sela_edu.data.augment import plain_transform
    with torch.no_grad():
        model.eval()
        outs = [model(plain_transform(images_data.images[i:i + 16], (0.3,), (0.2,))) for i in range(0, 37, 16)]
    assert all(torch.equal(torch.cat([o[h] for o in outs]), scored["heads"][h]) for h in range(2))
    # other layers: the flattened conv stage and any submodule (a forward hook)
    conv = score_dataset(model, images_data, outputs="conv_features", batch_size=10)["conv_features"]
    first = score_dataset(model, images_data, outputs="backbone.0", batch_size=10)["backbone.0"]
    x = plain_transform(images_data.images, (0.3,), (0.2,))
    with torch.no_grad():
        torch.testing.assert_close(conv, model.conv_features(x), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(first, model.backbone[0](x).flatten(1), rtol=1e-5, atol=1e-6)


def test_score_dataset_into_buffers_labels_as_the_solver_on_full_scores(tiny, images_data):
    model = tiny[0]
    buffers = {h: ScoreBuffer(37, 4, 10.0) for h in (0, 1)}
    scored = score_dataset(model, images_data, outputs=(), into=buffers, batch_size=8)
    assert scored.outputs == {}
    full = score_dataset(model, images_data, outputs="heads", batch_size=8)["heads"]
    for h in (0, 1):
        streamed, whole = self_label(buffers[h]), self_label(full[h], 10.0)
        assert torch.equal(streamed.labels, whole.labels)


def test_score_dataset_train_mode_updates_batchnorm_once_per_batch(tiny, images_data):
    import copy

    model, reference = copy.deepcopy(tiny[0]), copy.deepcopy(tiny[0])
    model.eval()
    feats, heads = _reference_outputs(reference, make_loader(images_data, 10, train=False, shuffle=False),
                                      train_mode=True)
    scored = score_dataset(model, images_data, outputs=("features", "heads"), train_mode=True, batch_size=10)
    assert not model.training  # mode restored
    assert torch.equal(scored["features"], feats) and torch.equal(scored["heads"][1], heads[1])
    for a, b in zip(model.state_dict().values(), reference.state_dict().values()):
        assert torch.equal(a, b)  # the same running statistics: one update per batch, as the reference


def test_score_dataset_augmented_and_in_loader_order(tiny, images_data):
    from sela_edu.data import default_augment

    model = tiny[0]
    augment = default_augment("fashion-mnist", size=8, mean=(0.3,), std=(0.2,))
    loader = make_loader(images_data, 10, train=True, shuffle=False, drop_last=False, augment=augment, seed=3)
    feats, _ = _reference_outputs(model, loader)
    scored = score_dataset(model, images_data, outputs="features", augment=augment, seed=3, batch_size=10)
    assert torch.equal(scored["features"], feats)
    assert not torch.equal(feats, score_dataset(model, images_data, outputs="features", batch_size=10)["features"])
    # a shuffled loader kept in its own order: rows follow the batches, index says which image each is
    shuffled = ShuffledLoader(tiny[1], tiny[2], 5)
    kept = score_dataset(model, shuffled, outputs="features", in_order=False)
    ordered = score_dataset(model, shuffled, outputs="features")
    assert torch.equal(kept.index, shuffled.order)
    assert torch.equal(kept["features"], ordered["features"][kept.index])


def test_score_dataset_bad_inputs(tiny, images_data):
    model = tiny[0]
    with pytest.raises(ValueError, match="unknown output 'logits'"):
        score_dataset(model, images_data, outputs="logits")
    with pytest.raises(ValueError, match="conv_features' alone"):
        score_dataset(model, images_data, outputs=("conv_features", "features"), train_mode=True)
    with pytest.raises(ValueError, match="into names head 5"):
        score_dataset(model, images_data, outputs=(), into={5: ScoreBuffer(37, 4, 10.0)})
    with pytest.raises(ValueError, match="augment= needs"):
        score_dataset(model, tiny[1], augment=lambda x, generator=None: x)
    with pytest.raises(ValueError, match="batch_size"):
        score_dataset(model, images_data, batch_size=0)
    with pytest.raises(ValueError, match="list of score tensors"):
        score_dataset(nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), tiny[1])
    with pytest.raises(KeyError, match="was not scored"):
        score_dataset(model, images_data, outputs="features")["heads"]


# --------------------------------------------------------------------------- evaluate

@pytest.fixture(scope="module")
def split():
    """Two blobs per class in 8 x 8 images: a task the random network's features partly solve."""
    g = torch.Generator().manual_seed(2)

    def make(n):
        targets = torch.arange(n) % 3
        images = (targets.view(-1, 1, 1, 1) * 80 + torch.randint(0, 60, (n, 1, 8, 8), generator=g)).to(torch.uint8)
        return ImageData("toy", images, targets, ["a", "b", "c"], (0.4,), (0.3,))

    return make(60), make(30)


def test_evaluate_is_knn_probe_and_head_metrics_on_the_scored_layers(tiny, split):
    model, (train, test) = tiny[0], split
    result = evaluate(model, train, test, layers=("features", "conv_features"), knn_k=[1, 10, 500])
    for layer in ("features", "conv_features"):
        tr = score_dataset(model, train, outputs=layer)[layer]
        te = score_dataset(model, test, outputs=layer)[layer]
        expected = knn_accuracy(tr, train.targets, te, test.targets, k=[1, 10, 60], sigma=0.1)
        assert result.knn[layer] == {1: expected[1], 10: expected[10], 500: expected[60]}  # k capped at N
        assert result.linear[layer] == linear_probe(tr, train.targets, te, test.targets).accuracy
    clusters = score_dataset(model, test)["heads"][1].argmax(1)
    assert result.heads[1] == {"nmi": nmi(test.targets, clusters), "ari": ari(test.targets, clusters),
                               "accuracy": cluster_accuracy(test.targets, clusters)}
    table = result.percent()
    assert table["knn_features_k10"] == 100.0 * result.knn["features"][10]
    assert table["linear_conv_features"] == 100.0 * result.linear["conv_features"]
    assert table["head0_nmi"] == result.heads[0]["nmi"]


def test_evaluate_pca_is_for_the_knn_only_and_accuracies_are_its_percent(tiny, split):
    model, (train, test) = tiny[0], split
    result = evaluate(model, train, test, knn_k=5, pca_dim=4, heads=False)
    tr = score_dataset(model, train, outputs="features")["features"]
    te = score_dataset(model, test, outputs="features")["features"]
    ptr, pte = pca_project(tr, te, dim=4)
    assert result.knn["features"][5] == knn_accuracy(ptr, train.targets, pte, test.targets, k=5)
    assert result.linear["features"] == linear_probe(tr, train.targets, te, test.targets).accuracy
    assert result.heads == []
    assert result.accuracies() == {"knn": 100.0 * result.knn["features"][5],
                                   "linear": 100.0 * result.linear["features"]}
    no_probe = evaluate(model, train, test, knn_k=[5, 7], probe=False, heads=False)
    assert no_probe.accuracies(k=7) == {"knn": 100.0 * no_probe.knn["features"][7]}
    with pytest.raises(ValueError, match="say which k"):
        no_probe.accuracies()


def test_evaluate_takes_loaders_and_refuses_what_it_cannot_measure(tiny, split):
    model, (train, test) = tiny[0], split
    loaders = [make_loader(d, 7, train=False) for d in (train, test)]
    assert (evaluate(model, *loaders, probe=False, heads=False).knn
            == evaluate(model, train, test, probe=False, heads=False).knn)
    with pytest.raises(ValueError, match="no targets"):
        evaluate(model, tiny[1], test)
    with pytest.raises(ValueError, match="at least one layer"):
        evaluate(model, train, test, layers=())
    with pytest.raises(ValueError, match="knn_k"):
        evaluate(model, train, test, knn_k=[])



# --------------------------------------------------------------------------- weighted kNN

def _unit(angles_deg):
    a = np.radians(angles_deg)
    return torch.tensor(np.stack([np.cos(a), np.sin(a)], 1), dtype=torch.float32)


def test_weighted_knn_hand_case():
    # Test image at 0 deg. Neighbours: one of class 1 at 0 deg (similarity 1), two of class 0 at
    # +-36.87 deg (similarity 0.8), one of class 1 at 180 deg (similarity -1, outside k = 3).
    # sigma = 0.1: class 1 gets e^10, class 0 gets 2 e^8 = e^10 * 2 e^-2 = 0.27 e^10 -> class 1.
    # sigma = 1:   class 1 gets e^1 = 2.72, class 0 gets 2 e^0.8 = 4.45 -> class 0.
    theta = math.degrees(math.acos(0.8))
    train = _unit([0, theta, -theta, 180]) * torch.tensor([[2.0], [0.5], [3.0], [1.0]])  # norms don't matter
    labels = torch.tensor([1, 0, 0, 1])
    test = _unit([0])
    assert weighted_knn(train, labels, test, k=3, sigma=0.1).tolist() == [1]
    assert weighted_knn(train, labels, test, k=3, sigma=1.0).tolist() == [0]
    assert weighted_knn(train, labels, test, k=1, sigma=1.0).tolist() == [1]
    # k = 4 adds the opposite class-1 image with weight e^-1: 2.72 + 0.37 < 4.45 at sigma 1.
    assert weighted_knn(train, labels, test, k=4, sigma=1.0).tolist() == [0]
    # Tiny sigma: the exponent shift keeps the weights finite.
    assert weighted_knn(train, labels, test, k=3, sigma=1e-3).tolist() == [1]


def _bruteforce_knn(train, labels, test, k, sigma, n_classes):
    tr = train / np.linalg.norm(train, axis=1, keepdims=True)
    te = test / np.linalg.norm(test, axis=1, keepdims=True)
    preds = []
    for q in te:
        sim = tr @ q
        nearest = np.argsort(-sim)[:k]
        votes = np.zeros(n_classes)
        for j in nearest:
            votes[labels[j]] += np.exp(sim[j] / sigma)
        preds.append(int(np.argmax(votes)))
    return np.array(preds)


@pytest.mark.parametrize("k,sigma", [(1, 0.1), (7, 0.1), (50, 0.5), (200, 0.1)])
def test_weighted_knn_matches_bruteforce(k, sigma):
    rng = np.random.default_rng(k)
    train = rng.normal(size=(300, 16))
    labels = rng.integers(0, 6, 300)
    train[:, 0] += labels  # some class structure so the vote is not pure noise
    test = rng.normal(size=(41, 16))
    test[:, 0] += rng.integers(0, 6, 41)
    expected = _bruteforce_knn(train, labels, test, k, sigma, 6)
    # float64 numpy input, tiny chunks to exercise the chunking
    got = weighted_knn(train, labels, test, k=k, sigma=sigma, chunk_size=7)
    assert got.dtype == torch.int64 and np.array_equal(got.numpy(), expected)
    got32 = weighted_knn(torch.tensor(train, dtype=torch.float32), torch.tensor(labels),
                         torch.tensor(test, dtype=torch.float32), k=k, sigma=sigma)
    assert (got32.numpy() == expected).mean() > 0.95  # float32 may flip a near-tie


def test_knn_accuracy_single_and_several_k():
    rng = np.random.default_rng(3)
    centers = rng.normal(size=(4, 8)) * 3
    ytr, yte = rng.integers(0, 4, 400), rng.integers(0, 4, 100)
    xtr = centers[ytr] + rng.normal(size=(400, 8))
    xte = centers[yte] + rng.normal(size=(100, 8))
    accs = knn_accuracy(xtr, ytr, xte, yte, k=[1, 10, 200])
    assert set(accs) == {1, 10, 200}
    for k, acc in accs.items():
        pred = weighted_knn(xtr, ytr, xte, k=k)
        assert acc == pytest.approx(float((pred.numpy() == yte).mean()))
    assert knn_accuracy(xtr, ytr, xte, yte, k=10) == accs[10]
    assert accs[10] > 0.8
    # Each training image is its own nearest neighbour.
    assert knn_accuracy(xtr, ytr, xtr, ytr, k=1) == 1.0


@pytest.mark.parametrize("kwargs,match", [
    ({"k": 0}, "k must be"),
    ({"k": 11}, r"\[1, 10\]"),
    ({"sigma": 0.0}, "sigma"),
    ({"num_classes": 2}, "num_classes"),
    ({"test_feats": torch.randn(3, 5)}, "dimensions"),
    ({"train_labels": torch.zeros(9, dtype=torch.long)}, "10 labels"),
    ({"train_labels": torch.zeros(10)}, "integer"),
    ({"train_feats": torch.full((10, 4), float("nan"))}, "NaN"),
    ({"test_feats": torch.randn(4)}, "2-D"),
])
def test_weighted_knn_bad_inputs(kwargs, match):
    args = {"train_feats": torch.randn(10, 4), "train_labels": torch.arange(10) % 3,
            "test_feats": torch.randn(3, 4), "k": 3}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        weighted_knn(**args)


def test_pca_project():
    rng = np.random.default_rng(0)
    # 3 informative directions in 20-d; PCA to 3 keeps the pairwise distances.
    basis = np.linalg.qr(rng.normal(size=(20, 3)))[0]
    train = rng.normal(size=(200, 3)) * [5, 3, 2] @ basis.T
    test = rng.normal(size=(30, 3)) * [5, 3, 2] @ basis.T
    tr, te = pca_project(torch.tensor(train), torch.tensor(test), dim=3)
    assert tr.shape == (200, 3) and te.shape == (30, 3) and tr.dtype == torch.float32
    d_before = np.linalg.norm(test[:, None] - train[None], axis=2)
    d_after = torch.cdist(te.double(), tr.double()).numpy()
    np.testing.assert_allclose(d_after, d_before, rtol=1e-4, atol=1e-4)
    assert tr.var(0)[0] > tr.var(0)[1] > tr.var(0)[2]  # ordered by variance
    assert pca_project(train, dim=2)[1] is None
    with pytest.raises(ValueError, match="dim must be"):
        pca_project(train, test, dim=21)
    with pytest.raises(ValueError, match="dimensions"):
        pca_project(train, test[:, :5], dim=2)


# --------------------------------------------------------------------------- linear probe

def test_linear_probe_separable():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(32, 5))
    xtr, xte = rng.normal(size=(2000, 32)), rng.normal(size=(500, 32))
    ytr, yte = (xtr @ w).argmax(1), (xte @ w).argmax(1)  # linearly separable by construction
    res = linear_probe(torch.tensor(xtr), torch.tensor(ytr), torch.tensor(xte), torch.tensor(yte),
                       weight_decay=1e-6, max_iter=500)
    assert res.train_accuracy > 0.99 and res.accuracy > 0.97
    assert res.iterations > 0 and res.seconds > 0
    pred = res.model.predict(torch.tensor(xte, dtype=torch.float32))
    assert pred.shape == (500,) and float((pred.numpy() == yte).mean()) == pytest.approx(res.accuracy)


def test_linear_probe_matches_sklearn_logistic_regression():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(1)
    centers = rng.normal(size=(4, 20)) * 0.5
    ytr, yte = rng.integers(0, 4, 1500), rng.integers(0, 4, 500)
    xtr = centers[ytr] + rng.normal(size=(1500, 20)) + 3  # offset: standardisation matters
    xte = centers[yte] + rng.normal(size=(500, 20)) + 3
    wd = 1e-3
    res = linear_probe(xtr, ytr, xte, yte, weight_decay=wd)
    scaler = StandardScaler().fit(xtr)
    # Same objective: mean cross-entropy + wd/2 |W|^2  <=>  C = 1 / (N wd)
    sk = LogisticRegression(C=1 / (len(xtr) * wd), max_iter=1000).fit(scaler.transform(xtr), ytr)
    sk_acc = sk.score(scaler.transform(xte), yte)
    assert 0.4 < sk_acc < 0.98  # a problem where the classifier actually matters
    assert abs(res.accuracy - sk_acc) <= 0.01
    np.testing.assert_allclose(res.model.linear.weight.detach().numpy(), sk.coef_, atol=2e-3)


def test_linear_probe_bad_inputs():
    x, y = torch.randn(10, 3), torch.arange(10) % 2
    with pytest.raises(ValueError, match="dimensions"):
        linear_probe(x, y, torch.randn(4, 2), y[:4])
    with pytest.raises(ValueError, match="test_y"):
        linear_probe(x, y, x, y[:5])
    with pytest.raises(ValueError, match="num_classes"):
        linear_probe(x, y, x, y, num_classes=1)


# --------------------------------------------------------------------------- k-means baseline

def test_kmeans_labels_recovers_blobs():
    from sklearn.datasets import make_blobs

    x, y = make_blobs(n_samples=600, centers=6, n_features=10, cluster_std=1.0, random_state=0)
    labels = kmeans_labels(torch.tensor(x, dtype=torch.float32), 6)
    assert labels.dtype == torch.int64 and labels.shape == (600,)
    assert int(labels.min()) >= 0 and int(labels.max()) < 6
    assert nmi(y, labels) > 0.95
    assert torch.equal(labels, kmeans_labels(x, 6))  # deterministic given the seed
    # DeepCluster's variant (PCA-whitening first) and the mini-batch solver also find them.
    assert nmi(y, kmeans_labels(x, 6, pca_dim=5)) > 0.95
    assert nmi(y, kmeans_labels(x, 6, minibatch=True, n_init=3)) > 0.95


def test_kmeans_labels_bad_inputs():
    with pytest.raises(ValueError, match="2-D"):
        kmeans_labels(np.zeros(5), 2)
    with pytest.raises(ValueError, match="k must be"):
        kmeans_labels(np.zeros((5, 2)), 6)
    with pytest.raises(ValueError, match="NaN"):
        kmeans_labels(np.full((5, 2), np.nan), 2)
    with pytest.raises(ValueError, match="pca_dim"):
        kmeans_labels(np.random.rand(5, 2), 2, pca_dim=3)
