"""SwAV (Caron et al., 2020): self-supervised training of a ResNet trunk by swapped prediction of online
cluster assignments. The `backbone` stage uses it on the small ResNet; the paper's R50 comes pretrained.

Each image gives 2 global crops and n small ones (multi-crop). Every crop's embedding is scored against K
prototype vectors. The two global crops' scores become soft codes through Sinkhorn-Knopp under an
equal-partition constraint (every prototype gets B/K of the batch), which is what stops all images from
collapsing onto one cluster; each crop then predicts the codes of the other global crop(s).

No queue of past embeddings: SwAV adds one when the batch is small next to K (256 images for 3000
prototypes); here K (64 by default) is no larger than the batch, so one batch is enough to spread over the
prototypes.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset
from torchvision.transforms import v2

from siamdetr.data.colour import ColourConfig, batched_colour_augment, normalise
from siamdetr.data.folder import ImageFolder
from siamdetr.engine.checkpoint import sample_seed
from siamdetr.engine.distributed import is_distributed
from siamdetr.errors import NonFiniteLoss

N_GLOBAL = 2
GLOBAL_SCALE = (0.14, 1.0)
LOCAL_SCALE = (0.05, 0.14)
BLUR_SIGMA = (0.1, 2.0)  # pixels at BLUR_REFERENCE_SIZE, scaled with the crop side
BLUR_REFERENCE_SIZE = 224


# ----------------------------------------------------------------------------------------- multi-crop
def crop_view(size: int, scale: tuple[float, float]) -> v2.Compose:
    """One random crop, maybe flipped, as floats in [0, 1]; its colour is augmented later, batched."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=scale, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )


def colour_config(size: int, blur: bool) -> ColourConfig:
    """SwAV's colour distortion (strength 0.8, jitter p 0.8, grayscale p 0.2) and, for global crops, blur
    with p 0.5 whose sigma scales with the crop side, so small synthetic crops are blurred as much,
    relative to their content, as 224-pixel ImageNet crops."""
    sigma = tuple(s * size / BLUR_REFERENCE_SIZE for s in BLUR_SIGMA)
    return ColourConfig(0.8, 0.8, 0.8, 0.2, jitter_p=0.8, grayscale_p=0.2, blur_p=0.5 * blur, blur_sigma=sigma)


def colour_crops(crops: list[Tensor], generator: torch.Generator | None = None) -> list[Tensor]:
    """Batched crops in [0, 1] → colour-augmented (each crop its own parameters) and ImageNet-normalised.
    One vectorised pass per crop position instead of torchvision's per-image ops, several times faster."""
    out = []
    for i, batch in enumerate(crops):
        cfg = colour_config(batch.shape[-1], blur=i < N_GLOBAL)
        out.append(normalise(batched_colour_augment(batch, generator, cfg)))
    return out


class MultiCrop:
    """One uint8 image → [2 global crops, then n_local small crops] (SwAV's multi-crop), colour not yet
    augmented (see colour_crops)."""

    def __init__(self, global_size: int, local_size: int, n_local: int) -> None:
        self.global_view = crop_view(global_size, GLOBAL_SCALE)
        self.local_view = crop_view(local_size, LOCAL_SCALE)
        self.n_local = n_local

    def __call__(self, image: Tensor) -> list[Tensor]:
        views = [self.global_view] * N_GLOBAL + [self.local_view] * self.n_local
        return [view(image).as_subclass(Tensor) for view in views]


class MultiCropImages(Dataset):
    """Multi-crops of an image folder; each sample's randomness comes from (seed, epoch, index), so it is the
    same whatever the number of workers or processes, and a resumed epoch replays exactly."""

    def __init__(self, images: ImageFolder, multi_crop: MultiCrop, seed: int) -> None:
        self.images, self.multi_crop, self.seed = images, multi_crop, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        item = self.images[index]
        if item is None:
            return None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, self.epoch, index))
            crops = self.multi_crop(item["image"])
        return {"crops": crops, "path": item["path"]}


def stack_crops(per_image: list[list[Tensor]]) -> list[Tensor]:
    """Per-image crop lists → one [B, 3, s, s] batch per crop position."""
    return [torch.stack(same_crop) for same_crop in zip(*per_image, strict=True)]


# ------------------------------------------------------------------------------------- Sinkhorn + loss
def _all_reduce(t: Tensor, op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM) -> Tensor:
    """In place over every process when torch.distributed runs, so the constraint holds for the global batch."""
    if is_distributed():
        dist.all_reduce(t, op=op)
    return t


@torch.no_grad()
def sinkhorn_knopp(scores: Tensor, epsilon: float, iters: int) -> Tensor:
    """Prototype scores [B, K] → codes [B, K]: each row a distribution over the K prototypes, and over the
    batch of all processes every prototype receives the same mass, B/K (the equal-partition constraint).

    The codes are the transport plan exp(scores / epsilon) rescaled by alternating row and column
    normalisation; `iters` rounds approximate the prototype marginals, the sample marginals are exact.
    """
    logits = scores.float() / epsilon
    logits = logits - _all_reduce(logits.max().clone(), dist.ReduceOp.MAX)  # exp stays finite for small epsilon
    plan = torch.exp(logits).t()  # [K, B]: the paper's Q
    k = plan.shape[0]
    b = _all_reduce(torch.tensor(float(plan.shape[1]), device=plan.device)).item()
    plan /= _all_reduce(plan.sum())
    for _ in range(iters):
        plan /= _all_reduce(plan.sum(dim=1, keepdim=True)) * k  # every prototype: mass 1/K
        plan /= plan.sum(dim=0, keepdim=True) * b  # every sample: mass 1/B
    return (plan * b).t()


def swapped_prediction_loss(scores: list[Tensor], codes: list[Tensor], temperature: float) -> Tensor:
    """Cross-entropy of each crop's softmax(scores / temperature) against the codes of every *other* global
    crop; averaged over the other crops, then over the global crops whose codes are predicted.

    scores: one [B, K] per crop, global crops first; codes: one [B, K] per global crop.
    """
    log_probs = [F.log_softmax(s / temperature, dim=1) for s in scores]
    per_code = []
    for i, q in enumerate(codes):
        terms = [-(q * lp).sum(dim=1).mean() for t, lp in enumerate(log_probs) if t != i]
        per_code.append(torch.stack(terms).mean())
    return torch.stack(per_code).mean()


# ------------------------------------------------------------------------------------------- the model
class SwAV(nn.Module):
    """Trunk → pooled C5 → projection MLP → unit embedding → scores against unit prototypes → swapped loss."""

    def __init__(
        self,
        trunk: nn.Module,
        feature_dim: int = 128,
        prototypes: int = 64,
        temperature: float = 0.1,
        epsilon: float = 0.05,
        sinkhorn_iters: int = 3,
        hidden_dim: int = 512,
    ) -> None:
        super().__init__()
        self.trunk = trunk
        self.projection_head = nn.Sequential(
            nn.Linear(trunk.channels["C5"], hidden_dim),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, feature_dim),
        )
        self.prototypes = nn.Linear(feature_dim, prototypes, bias=False)
        self.temperature, self.epsilon, self.sinkhorn_iters = temperature, epsilon, sinkhorn_iters
        self.normalize_prototypes()

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        """Unit prototypes make the scores cosine similarities; SwAV re-projects them before every step."""
        self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))

    def embed(self, crops: list[Tensor]) -> Tensor:
        """Unit embeddings [sum of batch sizes, feature_dim]; crops of one size share one trunk pass (and its
        BatchNorm statistics), as in SwAV."""
        pooled = [
            self.trunk(torch.cat(list(same_size)))["C5"].mean(dim=(2, 3))
            for _, same_size in itertools.groupby(crops, key=lambda c: c.shape[-2:])
        ]
        return F.normalize(self.projection_head(torch.cat(pooled)), dim=1)

    def forward(self, crops: list[Tensor]) -> Tensor:
        """crops: [global 1, global 2, local ...], each [B, 3, s, s] → the swapped prediction loss."""
        scores = self.prototypes(self.embed(crops)).split(crops[0].shape[0])
        codes = [sinkhorn_knopp(s.detach(), self.epsilon, self.sinkhorn_iters) for s in scores[:N_GLOBAL]]
        return swapped_prediction_loss(list(scores), codes, self.temperature)


def train_step(
    model: nn.Module, crops: list[Tensor], optimizer: torch.optim.Optimizer, step: int, freeze_prototypes_steps: int
) -> float:
    """One SwAV update of `model` (a SwAV, or DDP around one); returns the loss.

    For the first `freeze_prototypes_steps` steps the prototypes get no gradient (so AdamW leaves them alone,
    decay included): while the embedding is still random, moving them only chases noise.
    """
    swav: SwAV = model.module if isinstance(model, DistributedDataParallel) else model
    swav.normalize_prototypes()
    loss = model(crops)
    if not math.isfinite(loss.item()):
        raise NonFiniteLoss(f"SwAV loss is {loss.item()} at step {step}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if step < freeze_prototypes_steps:
        swav.prototypes.weight.grad = None
    optimizer.step()
    return loss.item()
