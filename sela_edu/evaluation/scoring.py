"""The one loop that runs a model over a data set: :func:`score_dataset`.

Everything in the kit that needs a model's outputs on every image (the label step's scores, k-means'
features, the kNN and linear-probe protocols, the cluster browser, ``sela-edu label`` and ``assign``)
calls this function, so "how an image is scored" is decided in one place:

* **which data**: an :class:`~sela_edu.data.ImageData` / ``FolderData`` (plain batches in data order, or
  ``augment``-ed ones), a float image tensor ``N x C x H x W``, or any iterable of batches as the kit's
  loaders yield them (``(x, targets, index)``; ``(x, targets)`` and bare ``x`` are taken in order);
* **which mode**: eval mode by default; ``train_mode=True`` scores with BatchNorm's batch statistics, as
  the official CIFAR code scores its training loader (it also updates the running statistics, once per
  batch, as there);
* **which outputs**: ``"heads"`` (every head's scores), ``"features"`` (what the heads read),
  ``"conv_features"`` (the flattened last convolutional stage), ``"output"`` (``model(x)`` of a plain
  module) or the name of any submodule (``"backbone.3"``, captured with a forward hook);
* **where to**: float32 CPU matrices (one row per image), and/or streamed into the label step's
  :class:`~sela_edu.labelling.ScoreBuffer` s (``into={head: buffer}``), which never hold a copy of the
  scores in memory.

On a GPU the pass does not wait for the device batch by batch: rows go to the host by non-blocking copies
(pinned memory), read after one synchronisation at the end; batches run under the model's memory format
(channels-last when its weights are) and, with ``amp``, under autocast.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from sela_edu.models import unwrap

#: Output names with a meaning of their own; any other name is a submodule of the model.
NAMED_OUTPUTS = ("heads", "features", "conv_features", "output")


@dataclass
class DatasetScores:
    """What :func:`score_dataset` computed.

    ``outputs``: name -> ``N x D`` float32 CPU tensor (``"heads"``: a list of ``N x K`` tensors, one per
    head). ``index``: the data-set position of each row (``0 .. N-1`` in data order unless the scoring
    was asked to keep the loader's order). ``targets``: the batches' targets, row for row, or None when
    the batches carry none.
    """

    outputs: dict
    index: torch.Tensor
    targets: torch.Tensor | None

    def __getitem__(self, name: str):
        if name not in self.outputs:
            raise KeyError(f"{name!r} was not scored; scored: {', '.join(self.outputs) or 'nothing'}")
        return self.outputs[name]


def _model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _split_batch(batch) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    if isinstance(batch, torch.Tensor):
        return batch, None, None
    if isinstance(batch, (tuple, list)) and 1 <= len(batch) <= 3:
        x = batch[0]
        y = batch[1] if len(batch) >= 2 else None
        idx = batch[2] if len(batch) == 3 else None
        return x, y, idx
    raise ValueError("each batch must be an image tensor or a tuple (x,), (x, targets) or "
                     f"(x, targets, index); got {type(batch).__name__}"
                     + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else ""))


def _batches(data, *, batch_size: int, augment, device: torch.device, seed: int):
    """(iterable of batches, number of batches or None) for any ``data`` that :func:`score_dataset` takes."""
    from sela_edu.data import FolderData, ImageData, make_loader

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(data, (ImageData, FolderData)):
        # augment given: the loader's training path applies it to every batch; no shuffle, no dropped rows
        loader = make_loader(data, batch_size, train=augment is not None, shuffle=False, drop_last=False,
                             augment=augment, device=device, seed=seed)
        return loader, len(loader)
    if augment is not None:
        raise ValueError("augment= needs an ImageData or FolderData; a tensor or a loader brings its own transform")
    if isinstance(data, torch.Tensor):
        if data.ndim != 4 or not data.is_floating_point():
            raise ValueError("an image tensor must be float N x C x H x W (normalised), got "
                             f"dtype {data.dtype} and shape {tuple(data.shape)}; for uint8 images use an ImageData")
        return ((data[i:i + batch_size] for i in range(0, data.shape[0], batch_size)),
                (data.shape[0] + batch_size - 1) // batch_size)
    if isinstance(data, Iterable):
        return data, (len(data) if hasattr(data, "__len__") else None)
    raise ValueError("data must be an ImageData / FolderData, an image tensor or an iterable of batches, "
                     f"got {type(data).__name__}")


def _check_outputs(model: nn.Module, outputs: Sequence[str], train_mode: bool) -> list[str]:
    names = [outputs] if isinstance(outputs, str) else list(outputs)
    modules = dict(model.named_modules())
    for name in names:
        if name not in NAMED_OUTPUTS and name not in modules:
            raise ValueError(f"unknown output {name!r}: use one of {', '.join(NAMED_OUTPUTS)} or a submodule "
                             f"name of the model (e.g. {next(iter(n for n in modules if n), 'backbone')!r})")
    if "conv_features" in names and not hasattr(model, "conv_features"):
        raise ValueError("output 'conv_features' needs a model with a conv_features method (a MultiHeadNet)")
    if train_mode and "conv_features" in names and len(names) > 1:
        # two forward passes per batch would update BatchNorm's running statistics twice
        raise ValueError("train_mode=True scores one output pass per batch: ask for 'conv_features' alone")
    return names


def _has_heads(model: nn.Module) -> bool:
    return callable(getattr(model, "features", None)) and callable(getattr(model, "head_scores", None))


def _forward(model: nn.Module, x: torch.Tensor, names: list[str], need_heads: bool) -> dict:
    """The asked-for outputs of one batch, from as few forward passes as possible (features feed the heads)."""
    has_features = callable(getattr(model, "features", None))
    out = {}
    if "conv_features" in names:
        out["conv_features"] = model.conv_features(x)
    if "output" in names:
        out["output"] = model(x)
    if need_heads and _has_heads(model):
        out["features"] = model.features(x)
        out["heads"] = list(model.head_scores(out["features"]))
    elif need_heads:  # a module whose forward returns the heads' scores (e.g. a backbone with trained heads)
        out["heads"] = out["output"] if "output" in out else model(x)
        if not isinstance(out["heads"], (list, tuple)):
            raise ValueError("output 'heads' needs a model with features and head_scores, or one whose "
                             "forward returns a list of score tensors")
    if "features" in names and "features" not in out:
        out["features"] = model.features(x) if has_features else model(x)
    if not out:  # only submodule outputs: run the model once so that their hooks fire
        (model.features if has_features else model)(x)
    return out


def _to_host(t: torch.Tensor) -> torch.Tensor:
    """``t`` on the host. From a GPU without waiting (into pinned memory): the values are read only after
    the one synchronisation at the end of the pass."""
    if t.device.type == "cuda":
        return t.to("cpu", non_blocking=True)
    return t.cpu()


def _as_rows(name: str, value) -> torch.Tensor:
    if isinstance(value, (list, tuple)):
        raise ValueError(f"output {name!r} returned a list (several heads); ask for 'heads', or pass a model "
                         "with a `features` method, or a module that returns one tensor")
    return _to_host(value.detach().float().reshape(value.shape[0], -1))


def _channels_last(net: nn.Module, device: torch.device) -> bool:
    """Whether batches should go in channels-last on ``device``: on a GPU, for a network whose weights are
    (``channels_last``), so that the scoring passes run in the training step's memory format. (On the CPU
    batches are left as they come: the CPU's arithmetic stays what it was.)"""
    if device.type == "cpu":
        return False
    weight = next((p for p in net.parameters() if p.ndim == 4), None)
    return (weight is not None and weight.is_contiguous(memory_format=torch.channels_last)
            and not weight.is_contiguous())


def _data_order(index: torch.Tensor) -> torch.Tensor:
    """The permutation that puts rows in data order; the indices must cover 0 .. N-1 exactly once."""
    n = index.numel()
    order = torch.argsort(index)
    if not torch.equal(index[order], torch.arange(n)):
        distinct = int(torch.unique(index).numel())
        raise ValueError(
            f"the loader's indices must cover 0..{n - 1} exactly once; saw {n} rows, {distinct} distinct "
            f"indices, largest {int(index.max())}. Use an evaluation loader over the whole data set "
            "(train=False, drop_last=False, not a distributed shard), or in_order=False")
    return order


@torch.no_grad()
def score_dataset(model: nn.Module, data, *, outputs: str | Sequence[str] = ("heads",), augment=None,
                  train_mode: bool = False, batch_size: int = 512, device=None,
                  into: Mapping[int, object] | None = None, in_order: bool = True, amp: bool | torch.dtype = False,
                  seed: int = 0, progress: bool = False) -> DatasetScores:
    """Run ``model`` over every image of ``data`` once and collect the ``outputs`` asked for.

    Args:
        model: a :class:`~sela_edu.models.MultiHeadNet` or any module (a DistributedDataParallel wrapper is
            looked through). It runs without gradients in eval mode (``train_mode=True``: train mode) and
            is put back in its previous mode afterwards.
        data: an ImageData / FolderData (batched here, plain transform, data order), a float image tensor,
            or an iterable of batches (see the module docstring). With an index in the batches, rows are
            put in data order; shuffled loaders are fine.
        outputs: names of the outputs to keep as matrices (module docstring); ``()`` keeps none (with
            ``into``, the scores then go only to the buffers).
        augment: a training augmentation applied to every batch of an ImageData / FolderData.
        batch_size: images per batch for a data set or a tensor (a loader brings its own).
        device: where the model runs; default: where its parameters are. Batches are moved there.
        into: ``{head: ScoreBuffer}``: each batch's scores of those heads are added to the buffers, in the
            order the batches come (:attr:`DatasetScores.index` says which image each row is).
        in_order: put the matrices' rows in data order (the indices must then cover ``0..N-1`` once);
            False keeps the batches' order, e.g. for a distributed shard.
        amp: score under autocast on a GPU (ignored elsewhere): True for float16, or the dtype.
        seed: the loader's seed (the augmentation's random draws).
        progress: show a tqdm bar.

    Returns:
        :class:`DatasetScores`.
    """
    net = unwrap(model)
    device = torch.device(device) if device is not None else _model_device(net)
    names = _check_outputs(net, outputs, train_mode)
    into = dict(into or {})
    batches, total = _batches(data, batch_size=batch_size, augment=augment, device=device, seed=seed)
    captured: dict[str, torch.Tensor] = {}
    hooks = [dict(net.named_modules())[name].register_forward_hook(
        lambda _m, _i, out, name=name: captured.__setitem__(name, out))
        for name in names if name not in NAMED_OUTPUTS]
    rows: dict[str, list] = {name: [] for name in names}
    counts, targets, indices = [], [], []
    use_amp = (amp is True or isinstance(amp, torch.dtype)) and device.type == "cuda"
    amp_dtype = amp if isinstance(amp, torch.dtype) else torch.float16
    channels_last = _channels_last(net, device)
    was_training = net.training
    net.train(train_mode)
    try:
        for batch in tqdm(batches, total=total, disable=not progress, desc="scoring", leave=False):
            x, y, idx = _split_batch(batch)
            x = x.to(device, non_blocking=True)
            if channels_last and x.ndim == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                out = _forward(net, x, names, "heads" in names or bool(into))
            out.update(captured)
            for head, buffer in into.items():
                if not 0 <= head < len(out["heads"]):
                    raise ValueError(f"into names head {head}, but the model has {len(out['heads'])} heads")
                buffer.add(out["heads"][head])
            for name in names:
                value = out[name]
                rows[name].append([_to_host(s.float()) for s in value] if name == "heads"
                                  else _as_rows(name, value))
            counts.append(x.shape[0])
            targets.append(None if y is None else _to_host(torch.as_tensor(y).long()))
            indices.append(None if idx is None else _to_host(torch.as_tensor(idx).long()))
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # the pass's one wait: every non-blocking copy to the host has landed
    finally:
        net.train(was_training)
        for hook in hooks:
            hook.remove()
    if not indices:
        raise ValueError("data yielded no batches")
    return _collect(rows, counts, targets, indices, in_order)


def _collect(rows: dict, counts: list[int], targets: list, indices: list, in_order: bool) -> DatasetScores:
    """The batches' rows as one DatasetScores, in data order when asked."""
    if any(i is None for i in indices) != all(i is None for i in indices):
        raise ValueError("some batches carry an index and some do not")
    index = torch.arange(sum(counts)) if indices[0] is None else torch.cat(indices)
    target = None if any(t is None for t in targets) else torch.cat(targets)
    outputs = {name: ([torch.cat([p[h] for p in parts]) for h in range(len(parts[0]))] if name == "heads"
                      else torch.cat(parts)) for name, parts in rows.items()}
    if in_order and indices[0] is not None:
        order = _data_order(index)
        index = index[order]
        target = None if target is None else target[order]
        outputs = {name: ([s[order] for s in value] if name == "heads" else value[order])
                   for name, value in outputs.items()}
    return DatasetScores(outputs, index, target)
