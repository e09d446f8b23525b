"""Proposal recall: the share of ground-truth boxes that some proposal covers at an IoU threshold.

The usual measure of proposal quality (Hosang et al. 2016): each non-crowd ground-truth box counts as found
if its best-overlapping proposal among the top n reaches the IoU threshold; proposals may be reused. Used to
compare methods and edge maps on labelled data, never for training.
"""

from __future__ import annotations

import os
from pathlib import PurePosixPath

import numpy as np
import torch
from pycocotools.coco import COCO
from torchvision.ops import box_iou

from siamdetr.data.coco import load_coco
from siamdetr.proposals.store import ProposalStore

IOU_THRESHOLDS = (0.5, 0.7)
TOP_N: tuple[int | None, ...] = (10, 100, None)  # None: all of an image's boxes


def ground_truth_xyxy(coco: COCO, image_id: int) -> torch.Tensor:
    """An image's non-crowd boxes as xyxy (crowd regions are not objects a proposal should find)."""
    xywh = [a["bbox"] for a in coco.imgToAnns.get(image_id, []) if not a.get("iscrowd", 0)]
    boxes = torch.tensor(xywh, dtype=torch.float32).reshape(-1, 4)
    return torch.cat([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], dim=1)


def proposal_recall(
    store: ProposalStore, gt: str | os.PathLike | COCO, images_relative_to: str = ""
) -> dict[str, float | int]:
    """Recall of `gt`'s boxes by `store`'s proposals: keys `recall@{iou}_top{n}` and `recall@{iou}_all`.

    gt: a COCO instances file or a loaded COCO. An image's store key is its `file_name` below
    `images_relative_to`, the folder of gt's images relative to the directory the store was computed on
    ("" when it was computed on that folder itself, "val2017" when on the COCO root). An image missing from
    the store counts as having no proposals (`n_missing`). Also returns boxes_per_image, n_images and n_gt.
    """
    coco = gt if isinstance(gt, COCO) else load_coco(gt)[0]
    best_iou: dict[int | None, list[torch.Tensor]] = {n: [] for n in TOP_N}
    n_boxes, n_missing = [], 0
    for image_id in sorted(coco.imgs):
        key = str(PurePosixPath(images_relative_to, coco.imgs[image_id]["file_name"]))
        if key in store:
            boxes = torch.from_numpy(store[key][0])
        else:
            boxes, n_missing = torch.zeros((0, 4)), n_missing + 1
        n_boxes.append(len(boxes))
        truth = ground_truth_xyxy(coco, image_id)
        for n in TOP_N:
            top = boxes[:n]
            found = box_iou(truth, top).amax(dim=1) if len(top) else torch.zeros(len(truth))
            best_iou[n].append(found)
    out: dict[str, float | int] = {}
    for n, parts in best_iou.items():
        ious = torch.cat(parts)
        for t in IOU_THRESHOLDS:
            out[f"recall@{t}_{'all' if n is None else f'top{n}'}"] = (
                float((ious >= t).float().mean()) if len(ious) else 0.0
            )
    n_gt = sum(len(p) for p in best_iou[None])
    return {
        **out,
        "boxes_per_image": float(np.mean(n_boxes)),
        "n_images": len(n_boxes),
        "n_gt": n_gt,
        "n_missing": n_missing,
    }
