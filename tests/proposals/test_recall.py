import json

import numpy as np
import pytest

from siamdetr.proposals.boxes import Proposals
from siamdetr.proposals.recall import proposal_recall
from siamdetr.proposals.store import ProposalStore, ProposalWriter


@pytest.fixture(scope="module")
def gt(synth_root):
    path = synth_root / "coco_like" / "annotations" / "instances_val2017.json"
    data = json.loads(path.read_text())
    boxes = {im["file_name"]: [] for im in data["images"]}
    names = {im["id"]: im["file_name"] for im in data["images"]}
    for a in data["annotations"]:
        if not a["iscrowd"]:
            x, y, w, h = a["bbox"]
            boxes[names[a["image_id"]]].append([x, y, x + w, y + h])
    return path, {k: np.array(v, np.float32).reshape(-1, 4) for k, v in boxes.items()}


def store_of(path, boxes_by_key, prefix=""):
    writer = ProposalWriter(path, "test", {}, shard_size=len(boxes_by_key))
    keys = [prefix + k for k in boxes_by_key]
    results = [Proposals(b, np.linspace(1, 0, len(b), dtype=np.float32)) for b in boxes_by_key.values()]
    writer.finish([writer.write(0, keys, results)])
    return ProposalStore.open(path)


def test_ground_truth_boxes_have_recall_one(tmp_path, gt):
    path, boxes = gt
    r = proposal_recall(store_of(tmp_path / "p", boxes), path)
    assert r["n_gt"] == sum(len(b) for b in boxes.values()) > 0 and r["n_missing"] == 0
    assert all(r[f"recall@{t}_{n}"] == 1.0 for t in (0.5, 0.7) for n in ("top10", "top100", "all"))


def test_far_away_boxes_have_recall_zero(tmp_path, gt):
    path, boxes = gt
    far = {k: b + 1000 for k, b in boxes.items()}
    r = proposal_recall(store_of(tmp_path / "p", far), path)
    assert r["recall@0.5_all"] == 0.0 and r["recall@0.7_top10"] == 0.0


def test_only_the_top_n_count_and_missing_images_find_nothing(tmp_path, gt):
    path, boxes = gt
    decoy = np.array([[0, 0, 1, 1]] * 20, np.float32)
    late = {k: np.concatenate([decoy, b]) for k, b in boxes.items()}  # every true box ranked 21st or later
    r = proposal_recall(store_of(tmp_path / "p", late), path)
    assert r["recall@0.5_top10"] == 0.0 and r["recall@0.5_all"] == 1.0
    assert r["boxes_per_image"] == pytest.approx(20 + np.mean([len(b) for b in boxes.values()]))
    with_gt = [k for k, b in boxes.items() if len(b)]
    partial = {k: b for k, b in boxes.items() if k != with_gt[0]}
    r = proposal_recall(store_of(tmp_path / "q", partial), path)
    assert r["n_missing"] == 1 and r["recall@0.5_all"] == pytest.approx(1 - len(boxes[with_gt[0]]) / r["n_gt"])


def test_keys_below_a_parent_folder(tmp_path, gt):
    path, boxes = gt
    store = store_of(tmp_path / "p", boxes, prefix="val2017/")
    assert proposal_recall(store, path, images_relative_to="val2017")["recall@0.7_all"] == 1.0
    assert proposal_recall(store, path)["n_missing"] == len(boxes)
