"""Two CPU processes (gloo) train a smoke run under DistributedDataParallel: both ranks must end with the
same weights and the same full label table, and the labels must come from a joint solve over all shards."""

from __future__ import annotations

import os

import pytest
import torch
import torch.multiprocessing as mp

from sela_edu.training import torchrun as dist_utils

WORLD = 2
# Odd on purpose: each rank's shard is padded by one repeated image, which the label step must ignore.
NUM_IMAGES = 301


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from sela_edu.data import load_dataset
    from sela_edu.training import config_from_preset, train

    try:
        config = config_from_preset("smoke", device="cpu", max_images=NUM_IMAGES, batch_size=32, epochs=2, nopts=3,
                                    checkpoint_dir=os.path.join(out_dir, "ckpt"))
        result = train(config, load_dataset("digits"), progress=False)
        sizes = [r.cluster_sizes.tolist() for r in result.last_relabel]
        # k-means pseudo-labels: features gathered from both shards, clustered once, broadcast.
        kmeans = train(config_from_preset("smoke", device="cpu", max_images=NUM_IMAGES, batch_size=32, epochs=1,
                                          nopts=1, method="kmeans"), load_dataset("digits"), progress=False)
        # SwAV: codes per batch on each rank's shard; the labels it reports are merged at each epoch's end.
        swav = train(config_from_preset("smoke", device="cpu", max_images=NUM_IMAGES, batch_size=32, epochs=1,
                                        method="swav", head_temperature=0.1, projection_dim=16,
                                        projection_hidden=32, large_crops=2, small_crops=2, small_crop_size=6,
                                        small_crop_scale=[0.2, 0.5]), load_dataset("digits"),
                     progress=False)
        torch.save({"model": result.model.state_dict(), "labels": result.labels, "sizes": sizes,
                    "history": result.history, "world": dist_utils.get_world_size(),
                    "kmeans_model": kmeans.model.state_dict(), "kmeans_labels": kmeans.labels,
                    "swav_labels": swav.labels},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist_utils.cleanup()


@pytest.mark.slow
def test_two_gloo_ranks_agree_on_weights_and_labels(tmp_path, free_port):
    mp.spawn(_worker, args=(free_port, str(tmp_path)), nprocs=WORLD, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    assert r0["world"] == r1["world"] == WORLD
    for key, value in r0["model"].items():
        assert torch.equal(value, r1["model"][key]), key
    assert torch.equal(r0["labels"], r1["labels"])
    for key, value in r0["kmeans_model"].items():
        assert torch.equal(value, r1["kmeans_model"][key]), key
    assert torch.equal(r0["kmeans_labels"], r1["kmeans_labels"])
    assert len(torch.unique(r0["kmeans_labels"][0])) == 10
    # SwAV's labels: each image's code from the rank that saw it, the same table on both ranks (a rank's
    # own rows alone would leave the other shard at its random initial labels, different on each rank)
    assert torch.equal(r0["swav_labels"], r1["swav_labels"])
    labels = r0["labels"]
    assert labels.shape == (2, NUM_IMAGES)
    # A joint solve: cluster sizes are counted over both shards and cover every image exactly once
    # (the padded repeat is not counted), and they match the gathered label table.
    for head, sizes in enumerate(r0["sizes"]):
        assert sum(sizes) == NUM_IMAGES
        assert sizes == torch.bincount(labels[head], minlength=len(sizes)).tolist()
    assert r0["sizes"] == r1["sizes"]
    # Rank 0 wrote the checkpoint, with the same labels.
    from sela_edu.training.checkpoint import load_checkpoint

    state = load_checkpoint(tmp_path / "ckpt" / "last.pt")
    assert state["world_size"] == WORLD and torch.equal(state["labels"], labels)
