"""The cluster browser: its numbers are right, and its widgets' callbacks update them (driven here without a
browser, by setting the widgets' values as a front end would)."""

import numpy as np
import pytest
import torch

from sela_edu.course.views import browser as cb
from sela_edu.data import ImageData
from sela_edu.models import build_model
from sela_edu.labelling import self_label


@pytest.fixture(scope="module")
def tiny(one_torch_thread):
    torch.manual_seed(0)
    n = 90
    targets = torch.arange(n) % 3
    images = torch.randint(0, 60, (n, 1, 8, 8), dtype=torch.uint8)
    for c in range(3):  # each class has its own bright band
        images[targets == c, :, 2 * c: 2 * c + 3, :] += 150
    data = ImageData("tiny", images, targets, ["zero", "one", "two"], (0.3,), (0.3,))
    model = build_model("smallcnn", num_heads=2, num_clusters=[3, 5], in_channels=1, image_size=8)
    with torch.no_grad():  # spread the heads so the clusters are not all alike at init
        for head in model.heads:
            head.weight.normal_(0, 1.0)
    return model, data


def test_soft_assignment_is_the_plan_and_agrees_with_the_solver_labels():
    torch.manual_seed(1)
    s = torch.randn(200, 4)
    res = self_label(s, 10.0)
    q = cb.soft_assignment(s, res.cluster_potential, 10.0)
    assert q.shape == (200, 4) and np.allclose(q.sum(1), 1.0)
    assert (q.argmax(1) == res.labels.numpy()).mean() > 0.99        # float32 ties may differ
    assert np.allclose(q.sum(0), 50.0, rtol=0.02)                    # equipartition: the plan's columns
    with pytest.raises(ValueError, match="K-vector"):
        cb.soft_assignment(s, torch.zeros(3), 10.0)


def test_browser_on_a_model_reports_size_purity_members_and_neighbours(tiny):
    model, data = tiny
    browser = cb.from_model(model, data, lam=10.0, draw=False, per_page=8, num_neighbours=2)
    views = browser.views
    assert [v.num_clusters for v in views] == [3, 5]
    st = browser.state
    view = views[0]
    members_all = np.flatnonzero(view.labels == 0)
    assert st["size"] == members_all.size == int(view.sizes[0])
    assert st["equal_share"] == pytest.approx(30.0)
    # members: in the cluster, ordered by decreasing confidence, per_page of them
    assert len(st["members"]) == min(8, members_all.size)
    assert set(st["members"]) <= set(members_all.tolist())
    assert st["confidence"] == sorted(st["confidence"], reverse=True)
    assert st["confidence"][0] == pytest.approx(view.confidence[members_all].max(), abs=1e-4)
    # purity and make-up from the targets
    counts = np.bincount(data.targets.numpy()[members_all], minlength=3)
    assert st["purity"] == pytest.approx(counts.max() / members_all.size)
    assert sum(c for _, c in st["make_up"]) == members_all.size
    assert st["make_up"][0] == (data.classes[counts.argmax()], counts.max())
    # neighbours: the other clusters, most similar first, never itself
    assert [j for j, _ in st["neighbours"]] and 0 not in [j for j, _ in st["neighbours"]]
    sims = [s for _, s in st["neighbours"]]
    assert sims == sorted(sims, reverse=True) and st["similarity"] == "features"


def test_widget_callbacks_update_the_display(tiny):
    model, data = tiny
    browser = cb.from_model(model, data, lam=10.0, draw=False, per_page=6, num_neighbours=3, similarity="weights")
    browser.widget()
    assert "Head 0, cluster 0" in browser.summary_widget.value

    browser.head_widget.value = 1                      # what the dropdown does in the browser
    assert browser.cluster_widget.max == 4 and browser.cluster_slider.max == 4
    browser.cluster_widget.value = 4
    st = browser.state
    view = browser.views[1]
    assert (st["head"], st["cluster"]) == (1, 4)
    assert st["size"] == int((view.labels == 4).sum())
    assert f"<b>{st['size']}</b> images" in browser.summary_widget.value
    assert f"purity <b>{100 * st['purity']:.0f} %</b>" in browser.summary_widget.value
    # weights similarity: cosine of the head's weight rows
    w = model.heads[1].weight.detach().numpy().astype(float)
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    best = int(np.argsort(-(w @ w[4]))[1])
    assert st["neighbours"][0][0] == best
    assert browser.neighbour_buttons[0].description.startswith(f"{best} (")
    assert browser.cluster_slider.value == 4           # the slider follows the text box

    browser.neighbour_buttons[0].click()               # jump to the most similar cluster
    assert browser.state["cluster"] == best == browser.cluster_widget.value

    browser.order_widget.value = True                  # least confident first
    conf = browser.state["confidence"]
    assert conf == sorted(conf)

    browser.head_widget.value = 0                      # fewer clusters: the selection is clamped
    assert browser.cluster_widget.max == 2 and browser.state["cluster"] <= 2 and browser.state["head"] == 0


def test_member_panel_draws(tiny):
    import matplotlib

    matplotlib.use("Agg")
    model, data = tiny
    browser = cb.from_model(model, data, lam=10.0, per_page=4)
    fig = browser.member_figure()
    titled = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titled) == min(4, browser.state["size"]) and all(" " in t for t in titled)  # "0.93 one"
    browser.widget()                                   # draws into the Output widget without a front end
    browser.cluster_widget.value = 1


def test_precomputed_scores_and_labels(tiny):
    _, data = tiny
    torch.manual_seed(2)
    scores = torch.randn(len(data), 4)
    solved = self_label(scores, 5.0)
    a = cb.from_scores([scores], lam=5.0, potentials=[solved.cluster_potential], targets=data.targets, draw=False)
    b = cb.from_scores(scores, lam=5.0, targets=data.targets, draw=False)     # solves the label step itself
    assert np.array_equal(a.views[0].labels, b.views[0].labels)
    assert a.views[0].similarity_kind == "scores"
    # labels only (e.g. a released labelling): sizes and purity, no confidence order
    c = cb.from_scores(labels=solved.labels[None], targets=data.targets, weights=[torch.randn(4, 7)], draw=False)
    st = c.select(cluster=2)
    assert st["size"] == int(solved.cluster_sizes[2]) and st["confidence"] is None
    assert st["members"] == np.flatnonzero(solved.labels.numpy() == 2)[:24].tolist()
    with pytest.raises(ValueError, match="scores .* or labels"):
        cb.from_scores()
    with pytest.raises(ValueError, match="clusters 0..3"):
        c.cluster_state(0, 4)


def test_browse_falls_back_to_a_static_figure(tiny, monkeypatch, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.setenv("SELA_STATIC_FIGURES", "1")
    monkeypatch.setenv("SELA_FIGURES_DIR", str(tmp_path))
    model, data = tiny
    browser = cb.browse(model, data, lam=10.0, max_images=60, save_as="browser_test")
    assert (tmp_path / "browser_test.png").stat().st_size > 1000
    assert browser.views[0].labels.size == 60 and browser._widgets is None
    fig = browser.static_figure(0, clusters=[0, 1], per_cluster=3)
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    assert len(labels) == 2 and labels[0].startswith("cluster 0\nn = ") and "purity" in labels[0]


def test_cluster_numbers_need_no_widgets(tiny):
    """The data part (cluster_views) stands alone: it loads neither ipywidgets nor matplotlib, and gives one
    cluster's numbers from the views, the targets and their names."""
    import subprocess
    import sys

    probe = ("import sys, sela_edu.course.views.cluster_views; "
             "print(sorted(m for m in ('ipywidgets', 'matplotlib', 'IPython') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"

    from sela_edu.course.views import cluster_views
    model, data = tiny
    labels = cb.from_model(model, data, lam=10.0, draw=False).views[1].labels
    views = cluster_views.head_views(labels=labels[None], weights=[model.heads[1].weight.detach()])
    targets = data.targets.numpy()
    for cluster in range(5):
        st = cluster_views.cluster_state(views, 0, cluster, shown=4, num_neighbours=2, targets=targets,
                                         classes=data.classes, least_confident=True)
        members = np.flatnonzero(views[0].labels == cluster)
        assert st["size"] == members.size and st["members"] == members[:4].tolist()   # no confidence: data order
        assert st["confidence"] is None and len(st["neighbours"]) == 2
        if members.size:
            counts = np.bincount(targets[members], minlength=3)
            assert st["make_up"][0] == (data.classes[counts.argmax()], counts.max())
            assert st["purity"] == pytest.approx(counts.max() / members.size)
    with pytest.raises(ValueError, match="clusters 0..4, not 5"):
        cluster_views.cluster_state(views, 0, 5, shown=4, num_neighbours=2)
