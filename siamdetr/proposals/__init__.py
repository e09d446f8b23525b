"""Offline object proposals that seed Siamese DETR's pretraining: EdgeBoxes (the paper's), Selective Search
(DETReg's) and random boxes (UP-DETR-like), computed once per image by a parallel, resumable runner and kept
in a memory-mapped store keyed by the image's path relative to the dataset root.

    boxes.py             the box type every method returns, conversions and clipping
    edges.py             edge + orientation maps for EdgeBoxes (OpenCV's SED model, or image gradients)
    edgeboxes.py         EdgeBoxes, with its sharpen-and-upscale retry and centre-box fallback
    selective_search.py  Selective Search (fast mode) on a downscaled copy
    random_boxes.py      random boxes, a pure function of (seed, image)
    store.py             the on-disk format: shards, index, writer and reader
    runner.py            images → store, in parallel and resumable
    recall.py            recall of ground-truth boxes, to compare methods
"""
