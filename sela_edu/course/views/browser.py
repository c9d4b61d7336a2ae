"""Browse the clusters a model found: pick a head and a cluster, see who is in it and how sure the plan is.

SeLa's authors show their results as an interactive browser of clusters; this is the kit's version,
for any :class:`~sela_edu.models.MultiHeadNet` and data set, or for precomputed scores or labels (a
released model's, say). For one cluster it shows

* its **size** (beside the equal share N/K that the label step enforces),
* its **members ordered by confidence**: the soft assignment of the transport plan,
  ``q_ik = softmax_k(lam * scores_ik + L_k)`` with ``L`` the cluster potential that
  :func:`~sela_edu.labelling.self_label` returns. Most confident first shows what the cluster "is";
  least confident first shows the images that the equipartition pushed in,
* its **true-class make-up** and **purity** when targets exist,
* the **clusters most like it**: cosine similarity of the head's weight vectors, of the clusters'
  mean (centred) features, or of their mean soft assignments.

The numbers are computed in :mod:`sela_edu.course.views.cluster_views` (no widgets needed); this module draws
them. In JupyterLab, :func:`browse` shows widgets; where there is no widget front end (papermill, nbval,
``$SELA_STATIC_FIGURES``, plain Python) it draws the same information as one static figure.

Example (notebook 03)::

    from sela_edu.course.views.browser import browse
    browser = browse(result.model, data, lam=config.lam)

Everything the widgets show is also in :attr:`ClusterBrowser.state`, so the callbacks can be driven
in a test: set ``browser.head_widget.value`` / ``browser.cluster_widget.value`` and read the state.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np
import torch

# The numbers come from cluster_views; they stay importable from here, where notebooks and callers find them.
from sela_edu.course.views import cluster_views
from sela_edu.course.views.cluster_views import SIMILARITIES, HeadView, cluster_similarity, head_views, soft_assignment
from sela_edu.course.views.figures import image_for_display, to_numpy

__all__ = [
    "HeadView",
    "ClusterBrowser",
    "soft_assignment",
    "cluster_similarity",
    "head_views",
    "from_model",
    "from_scores",
    "browse",
]


class ClusterBrowser:
    """Widgets to browse the clusters of every head (see the module docstring), and their static stand-in.

    Parameters: ``views`` (one :class:`HeadView` per head), ``images`` (N x C x H x W, uint8 or floats
    in [0, 1]; optional), ``targets`` (N true classes; optional), ``classes`` (their names),
    ``per_page`` members shown, ``num_neighbours`` similar clusters listed, ``draw`` whether callbacks
    redraw the image panel (tests switch it off to drive the state alone).
    """

    def __init__(self, views: Sequence[HeadView], images=None, targets=None, classes: Sequence[str] | None = None,
                 *, per_page: int = 24, num_neighbours: int = 5, draw: bool = True, lam: float | None = None):
        if not views:
            raise ValueError("need at least one head")
        self.views = list(views)
        n = self.views[0].labels.size
        if any(v.labels.size != n for v in self.views):
            raise ValueError("every head must label the same images")
        self.images = None if images is None else to_numpy(images)
        if self.images is not None and (self.images.ndim != 4 or self.images.shape[0] != n):
            raise ValueError(f"images must be N x C x H x W with N = {n}, got shape {self.images.shape}")
        self.targets = None if targets is None else to_numpy(targets).astype(np.int64).ravel()
        if self.targets is not None and self.targets.size != n:
            raise ValueError(f"need {n} targets, got {self.targets.size}")
        num_classes = 0 if self.targets is None else int(self.targets.max()) + 1
        self.classes = list(classes) if classes is not None else [str(c) for c in range(num_classes)]
        self.per_page = int(per_page)
        self.num_neighbours = int(num_neighbours)
        self.draw = draw
        self.lam = lam
        self.head = 0
        self.cluster = 0
        self.least_confident = False
        self._widgets = None

    # ---------------------------------------------------------------- what is shown (no widgets needed)

    def cluster_state(self, head: int, cluster: int, least_confident: bool = False) -> dict:
        """Everything the browser shows for one cluster, as plain Python values (see
        :func:`~sela_edu.course.views.cluster_views.cluster_state`)."""
        return cluster_views.cluster_state(self.views, head, cluster, shown=self.per_page,
                                           num_neighbours=self.num_neighbours, targets=self.targets,
                                           classes=self.classes, least_confident=least_confident)

    @property
    def state(self) -> dict:
        """The current selection's :meth:`cluster_state`."""
        return self.cluster_state(self.head, self.cluster, self.least_confident)

    def select(self, head: int | None = None, cluster: int | None = None) -> dict:
        """Change the selection (through the widgets when they exist, so they stay in step)."""
        if self._widgets is not None:
            if head is not None:
                self.head_widget.value = int(head)
            if cluster is not None:
                self.cluster_widget.value = int(cluster)
        else:
            if head is not None:
                self.head = int(head)
                self.cluster = min(self.cluster, self.views[self.head].num_clusters - 1)
            if cluster is not None:
                self.cluster = int(cluster)
        return self.state

    def summary_html(self, state: dict | None = None) -> str:
        st = state or self.state
        view = self.views[st["head"]]
        lines = [f"<b>Head {st['head']}, cluster {st['cluster']}</b> of {view.num_clusters}: "
                 f"<b>{st['size']}</b> images (equal share N/K = {st['equal_share']:.1f})"]
        if st["mean_confidence"] is not None:
            lines.append(f"mean confidence of the plan in its members: {st['mean_confidence']:.2f}")
        if st["purity"] is not None:
            make_up = ", ".join(f"{html.escape(name)} {count}" for name, count in st["make_up"][:6])
            more = " ..." if len(st["make_up"]) > 6 else ""
            lines.append(f"purity <b>{100 * st['purity']:.0f} %</b>; true classes: {make_up}{more}")
        near = ", ".join(f"{j} ({s:.2f})" for j, s in st["neighbours"])
        lines.append(f"most like it ({st['similarity']} cosine): {near}")
        return "<br>".join(lines)

    # ---------------------------------------------------------------- drawing

    def _draw_members(self, fig_or_axes, state: dict):
        """Thumbnails of the shown members, each titled with its confidence (and true class)."""
        axes = fig_or_axes
        for j, ax in enumerate(axes):
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if j >= len(state["members"]) or self.images is None:
                continue
            i = state["members"][j]
            img = image_for_display(self.images[i])
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
            bits = []
            if state["confidence"] is not None:
                bits.append(f"{state['confidence'][j]:.2f}")
            if self.targets is not None:
                bits.append(self.classes[self.targets[i]][:8])
            ax.set_title(" ".join(bits), fontsize=6, pad=1)

    def member_figure(self, state: dict | None = None, columns: int = 12):
        """A figure of the current cluster's shown members."""
        import matplotlib.pyplot as plt

        st = state or self.state
        count = max(1, min(self.per_page, len(st["members"])))
        rows = (count + columns - 1) // columns
        fig, axes = plt.subplots(rows, columns, figsize=(columns * 0.8, rows * 0.95), squeeze=False)
        self._draw_members(axes.ravel(), st)
        fig.subplots_adjust(wspace=0.05, hspace=0.35, left=0.01, right=0.99, top=0.9, bottom=0.02)
        return fig

    def static_figure(self, head: int = 0, clusters: Sequence[int] | None = None, *, per_cluster: int = 10,
                      max_clusters: int = 6):
        """The browser as one figure (for papermill and print): one row per cluster (the largest by
        default) with its most confident members, its size, purity and most similar clusters."""
        import matplotlib.pyplot as plt

        view = self.views[head]
        if clusters is None:
            clusters = [int(c) for c in np.argsort(-view.sizes, kind="stable")[:max_clusters]]
        fig, axes = plt.subplots(len(clusters), per_cluster,
                                 figsize=(per_cluster * 0.85 + 2.6, len(clusters) * 1.0), squeeze=False)
        saved = self.per_page
        self.per_page = per_cluster
        try:
            for r, c in enumerate(clusters):
                st = self.cluster_state(head, c)
                self._draw_members(axes[r], st)
                text = f"cluster {c}\nn = {st['size']}"
                if st["purity"] is not None:
                    text += f", purity {100 * st['purity']:.0f} %\nmostly {st['make_up'][0][0]}"
                text += "\nlike " + ", ".join(str(j) for j, _ in st["neighbours"][:3])
                axes[r, 0].set_ylabel(text, rotation=0, ha="right", va="center", fontsize=7, labelpad=8)
        finally:
            self.per_page = saved
        lam = f", lambda {self.lam:g}" if self.lam else ""
        fig.suptitle(f"Head {head} (K = {view.num_clusters}{lam}): largest clusters, most confident members "
                     "first (number: soft assignment)", fontsize=9)
        fig.subplots_adjust(wspace=0.05, hspace=0.45, left=0.2, right=0.99, top=0.9, bottom=0.02)
        return fig

    # ---------------------------------------------------------------- widgets

    def widget(self):
        """The widget tree (built once): head and cluster pickers, order, summary, members, neighbours."""
        if self._widgets is not None:
            return self._widgets
        import ipywidgets as w

        self.head_widget = w.Dropdown(
            options=[(f"head {h} (K = {v.num_clusters})", h) for h, v in enumerate(self.views)],
            value=self.head, description="head")
        self.cluster_widget = w.BoundedIntText(value=self.cluster, min=0,
                                               max=self.views[self.head].num_clusters - 1, description="cluster",
                                               layout=w.Layout(width="160px"))
        self.cluster_slider = w.IntSlider(value=self.cluster, min=0, max=self.views[self.head].num_clusters - 1,
                                          readout=False, continuous_update=False)
        w.link((self.cluster_widget, "value"), (self.cluster_slider, "value"))  # Python-side: tests see it too
        self.order_widget = w.ToggleButtons(options=[("most confident first", False), ("least confident first", True)],
                                            value=self.least_confident, style={"button_width": "150px"})
        self.summary_widget = w.HTML()
        self.members_widget = w.Output()
        self.neighbour_buttons = [w.Button(layout=w.Layout(width="auto")) for _ in range(self.num_neighbours)]
        for b in self.neighbour_buttons:
            b.on_click(self._on_neighbour)
        self.head_widget.observe(self._on_head, names="value")
        self.cluster_widget.observe(self._on_cluster, names="value")
        self.order_widget.observe(self._on_order, names="value")
        self._widgets = w.VBox([
            w.HBox([self.head_widget, self.cluster_widget, self.cluster_slider]),
            self.order_widget,
            self.summary_widget,
            w.HBox([w.Label("jump to a similar cluster:"), *self.neighbour_buttons]),
            self.members_widget,
        ])
        self._refresh()
        return self._widgets

    def _on_head(self, change) -> None:
        self.head = int(change["new"])
        k = self.views[self.head].num_clusters
        # lower the bound first when the new head has fewer clusters (the value is clamped with it)
        self.cluster_widget.max = self.cluster_slider.max = k - 1
        self.cluster = int(self.cluster_widget.value)
        self._refresh()

    def _on_cluster(self, change) -> None:
        self.cluster = int(change["new"])
        self._refresh()

    def _on_order(self, change) -> None:
        self.least_confident = bool(change["new"])
        self._refresh()

    def _on_neighbour(self, button) -> None:
        self.cluster_widget.value = int(button.cluster)

    def _refresh(self) -> None:
        st = self.state
        self.summary_widget.value = self.summary_html(st)
        for b, item in zip(self.neighbour_buttons, st["neighbours"] + [None] * self.num_neighbours):
            b.layout.display = None if item else "none"
            if item:
                b.cluster = item[0]
                b.description = f"{item[0]} ({item[1]:.2f})"
        if self.draw and self.images is not None:
            import matplotlib.pyplot as plt
            from IPython.display import display

            self.members_widget.clear_output(wait=True)
            fig = self.member_figure(st)
            with self.members_widget:
                display(fig)
            plt.close(fig)

    def _ipython_display_(self):  # noqa: D401 - IPython hook
        from IPython.display import display

        display(self.widget())


def from_scores(scores=None, *, lam: float = 10.0, labels=None, potentials=None, images=None, targets=None,
                classes=None, weights=None, features=None, similarity: str | None = None,
                **browser_kwargs) -> ClusterBrowser:
    """A browser from precomputed outputs (see :func:`head_views` for what each argument gives)."""
    views = head_views(scores, lam=lam, labels=labels, potentials=potentials, weights=weights, features=features,
                       similarity=similarity)
    return ClusterBrowser(views, images, targets, classes, lam=lam, **browser_kwargs)


def from_model(model, data, *, lam: float = 10.0, similarity: str = "features", batch_size: int = 256,
               device=None, **browser_kwargs) -> ClusterBrowser:
    """A browser for a trained :class:`~sela_edu.models.MultiHeadNet` on ``data`` (ImageData: images
    are shown; FolderData: no thumbnails). Scores every image once, solves the label step per head at
    ``lam`` for the plan's confidences, and compares clusters by ``similarity``."""
    if similarity not in SIMILARITIES:
        raise ValueError(f"unknown similarity {similarity!r}; choose one of {', '.join(SIMILARITIES)}")
    from sela_edu.evaluation import score_dataset

    outputs = ("heads", "features") if similarity == "features" else ("heads",)
    scored = score_dataset(model, data, outputs=outputs, batch_size=batch_size, device=device)
    scores, feats = scored["heads"], scored.outputs.get("features")
    weights = [head.weight.detach().cpu() for head in model.heads]
    images = getattr(data, "images", None)
    return from_scores(scores, lam=lam, images=images, targets=getattr(data, "targets", None),
                       classes=getattr(data, "classes", None), weights=weights, features=feats,
                       similarity=similarity, **browser_kwargs)


def browse(model=None, data=None, *, lam: float = 10.0, scores=None, labels=None, max_images: int | None = 5000,
           seed: int = 0, head: int = 0, static: bool | None = None, save_as: str | None = None,
           **kwargs) -> ClusterBrowser:
    """One call for a notebook: build the browser and show it.

    ``browse(model, data, lam=10)`` for a kit model; ``browse(scores=..., data=data)`` or
    ``browse(labels=..., data=data)`` for precomputed outputs. ``max_images`` browses a seeded random
    subset (scoring and the label step stay quick; ``None``: all). ``static`` (default: no widget
    front end, see :func:`~sela_edu.course.series.profiles.widgets_enabled`) draws the static figure instead,
    saved as ``save_as`` with :func:`~sela_edu.course.views.figures.save_figure` when given. Returns the browser.
    """
    from sela_edu.course.series.profiles import widgets_enabled

    if model is None and scores is None and labels is None:
        raise ValueError("browse needs a model (with data), or scores / labels")
    if max_images is not None and data is not None and len(data) > max_images:
        keep = torch.from_numpy(np.sort(np.random.default_rng(seed).choice(len(data), max_images, replace=False)))
        data = data.subset(keep)
        if scores is not None:
            scores = [torch.as_tensor(s)[keep] for s in (scores if isinstance(scores, (list, tuple)) else [scores])]
        if labels is not None:
            labels = torch.as_tensor(labels)
            labels = labels[..., keep]
    if model is not None:
        if data is None:
            raise ValueError("browse(model, data): the model needs images to label")
        browser = from_model(model, data, lam=lam, **kwargs)
    else:
        browser = from_scores(scores, lam=lam, labels=labels, images=getattr(data, "images", None),
                              targets=getattr(data, "targets", None), classes=getattr(data, "classes", None),
                              **kwargs)
    browser.head = head
    static = not widgets_enabled() if static is None else static
    if static:
        import matplotlib.pyplot as plt

        fig = browser.static_figure(head)
        if save_as:
            from sela_edu.course.views.figures import save_figure

            save_figure(fig, save_as)
        plt.show()
    else:
        from IPython.display import display

        display(browser.widget())
    return browser
