"""Under torchrun the contrastive loss sees the global batch: two gloo processes against one.

Each process holds half of a batch and computes ``contrastive_loss`` on it (its rows against the
gathered columns). The reference is one process on the whole batch. Compared:

* the loss: the mean of the two processes' losses is the single-process loss;
* the gradient w.r.t. each process's own features: the sum over processes of their losses flows
  back to it, so it is WORLD times the single-process gradient of those rows;
* the gradient DDP leaves on the parameters of a small model producing the features (its mean over
  processes): exactly the single-process one, the scale that training uses;
* the same for the tiny MFCLIP trained the way the train engine trains it (its DDP-wrapped loss
  step), with the distillation term off: its prototypes are each process's own texts;
* one process in a group of one (torchrun on one GPU): the features go through the gather, and
  loss and gradients are those of no group at all.
"""

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from mfclip_cli.engines.train.training import _LossStep
from mfclip_cli.model import LabelSet, build_model, load_model_config
from mfclip_cli.model.config import SpaSettings
from mfclip_cli.model.losses import INITIAL_LOGIT_SCALE, contrastive_loss, gather_features

WORLD, LOCAL, DIM, LEVELS = 2, 4, 8, 3
SETTINGS = {
    "plain": SpaSettings(enabled=False),
    "spa-embeddings": SpaSettings(hardness=3.0, false_negatives="embeddings"),
    "spa-prompts": SpaSettings(hardness=3.0, false_negatives="prompts"),
}


def _batch() -> dict[str, torch.Tensor]:
    """The global batch: unit-norm features, inputs of the feature model, and the level embeddings
    of label sets that repeat within and across the two halves (false negatives across processes
    too)."""
    generator = torch.Generator().manual_seed(0)
    distinct = torch.randn(3, LEVELS, DIM, generator=generator, dtype=torch.float64)
    distinct[1, :2] = distinct[0, :2]  # label sets 0 and 1 differ at their last level only
    label_sets = torch.tensor([0, 1, 2, 0, 1, 0, 2, 2])
    levels = F.normalize(distinct, dim=-1)[label_sets]
    return {
        "ids": label_sets,
        "images": F.normalize(
            torch.randn(WORLD * LOCAL, DIM, generator=generator, dtype=torch.float64), dim=-1
        ),
        "texts": F.normalize(levels.sum(dim=1), dim=-1),
        "levels": levels,
        "x": torch.randn(WORLD * LOCAL, DIM, generator=generator, dtype=torch.float64),
    }


class _Features(nn.Module):
    """Image and text embeddings from linear maps, and their loss, as the train engine's DDP step
    computes it."""

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(1)
        self.image = nn.Parameter(torch.randn(DIM, DIM, generator=generator, dtype=torch.float64))
        self.text = nn.Parameter(torch.randn(DIM, DIM, generator=generator, dtype=torch.float64))
        self.log_scale = nn.Parameter(torch.tensor(INITIAL_LOGIT_SCALE, dtype=torch.float64))

    def forward(self, x, levels, ids, spa):
        images = F.normalize(x @ self.image, dim=-1)
        texts = F.normalize(levels.sum(dim=1) @ self.text, dim=-1)
        return contrastive_loss(images, texts, levels, ids, self.log_scale, spa)


def _loss_and_gradients(batch, spa, model) -> dict[str, torch.Tensor]:
    """The loss of ``batch``'s features and its gradients w.r.t. them, then the gradients ``model``
    (plain, or DDP-wrapped) leaves on its parameters; ``batch`` is the whole batch or this
    process's share of it."""
    images, texts = (batch[key].clone().requires_grad_(True) for key in ("images", "texts"))
    scale = torch.tensor(INITIAL_LOGIT_SCALE, dtype=torch.float64)
    loss = contrastive_loss(images, texts, batch["levels"], batch["ids"], scale, spa)
    loss.backward()
    model.zero_grad()
    model(batch["x"], batch["levels"], batch["ids"], spa).backward()
    module = getattr(model, "module", model)
    return {
        "loss": loss.detach(),
        "images": images.grad,
        "texts": texts.grad,
        **{f"param.{name}": p.grad.clone() for name, p in module.named_parameters()},
    }


def _rows(rank: int) -> slice:
    return slice(rank * LOCAL, (rank + 1) * LOCAL)


LABELS = [
    LabelSet("real"),
    LabelSet("diffusion", "t2i", "SDXL"),
    LabelSet("diffusion", "t2i", "Midjourney"),
    LabelSet("gan", "efs", "StyleGAN2"),
    LabelSet("diffusion", "t2i", "SDXL"),
    LabelSet("real"),
    LabelSet("gan", "fs", "SimSwap"),
    LabelSet("diffusion", "t2i", "Midjourney"),
]


def _mfclip_gradients(rows: slice, wrap) -> dict[str, torch.Tensor]:
    """Gradients of the tiny MFCLIP's trainable parameters after one loss step on ``rows`` of a
    fixed batch, the step wrapped by ``wrap`` (DDP, or nothing)."""
    config = load_model_config("tiny").replace(loss={"distill_weight": 0.0})
    torch.manual_seed(0)
    model = build_model(config)
    model.train()
    size = config.preprocess.crop_size
    faces = torch.rand(len(LABELS), 3, size, size, generator=torch.Generator().manual_seed(2))
    step = wrap(_LossStep(model))  # held: DDP reduces the gradients from hooks it owns
    total, *_ = step(faces[rows], LABELS[rows])
    total.backward()
    return {name: p.grad for name, p in model.named_parameters() if p.requires_grad}


def _worker(rank: int, port: int, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD
    )
    try:
        share = {key: value[_rows(rank)] for key, value in _batch().items()}
        model = nn.parallel.DistributedDataParallel(_Features())
        results = {name: _loss_and_gradients(share, spa, model) for name, spa in SETTINGS.items()}
        results["mfclip"] = _mfclip_gradients(_rows(rank), nn.parallel.DistributedDataParallel)
        torch.save(results, f"{folder}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ranks")
    mp.spawn(_worker, args=(_free_port(), str(folder)), nprocs=WORLD, join=True)
    return [torch.load(folder / f"rank{rank}.pt") for rank in range(WORLD)]


@pytest.mark.parametrize("name", SETTINGS)
def test_two_processes_see_the_global_batch(ranks, name):
    reference = _loss_and_gradients(_batch(), SETTINGS[name], _Features())
    results = [rank[name] for rank in ranks]
    mean = sum(result["loss"] for result in results) / WORLD
    torch.testing.assert_close(mean, reference["loss"], rtol=1e-12, atol=0)
    for rank, result in enumerate(results):
        for key in ("images", "texts"):  # the sum of both processes' losses flows back here
            torch.testing.assert_close(
                result[key], WORLD * reference[key][_rows(rank)], rtol=1e-10, atol=1e-14
            )
        for key in (key for key in reference if key.startswith("param.")):  # DDP's mean
            torch.testing.assert_close(result[key], reference[key], rtol=1e-10, atol=1e-14)
        # each process scores its own rows, not the full matrix: its loss is not the global one
        assert not torch.isclose(result["loss"], reference["loss"])


def test_ddp_training_of_mfclip_gets_the_single_process_gradient(ranks):
    reference = _mfclip_gradients(slice(None), lambda step: step)
    # the contrastive loss, the only one these two take part in, acts
    assert reference["criterion.log_logit_scale"] != 0
    assert torch.all(reference["language.level_logits"] != 0)
    for result in ranks:
        assert result["mfclip"].keys() == reference.keys()
        for name, gradient in reference.items():
            torch.testing.assert_close(result["mfclip"][name], gradient, rtol=1e-4, atol=1e-6)


def test_a_group_of_one_gathers_and_changes_nothing():
    reference = {
        name: _loss_and_gradients(_batch(), spa, _Features()) for name, spa in SETTINGS.items()
    }
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1
    )
    try:
        images = _batch()["images"]
        (gathered,), rows = gather_features(images)
        assert rows == slice(0, len(images)) and torch.equal(gathered, images)
        assert gathered.data_ptr() != images.data_ptr()  # the collective's copy, not the input
        model = nn.parallel.DistributedDataParallel(_Features())
        for name, spa in SETTINGS.items():
            result = _loss_and_gradients(_batch(), spa, model)
            assert result.keys() == reference[name].keys()
            for key, value in reference[name].items():
                torch.testing.assert_close(result[key], value, rtol=1e-12, atol=1e-15)
    finally:
        dist.destroy_process_group()
