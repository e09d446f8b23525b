"""Optuna sweeps over Siamese DETR's loss weights and view IoU τ (`siamdetr sweep`), honest about seed noise."""
