"""CPU dropout: torch's path against the cheaper mask of `siamdetr.models.attention`, one thread, in one run.

Micro: milliseconds for 2.56 M elements (a [256, 100, 100] tensor) — torch's dropout, the cheaper dropout,
and attention without dropout, with torch's dropout_p and with the cheaper mask. Tiny epoch: seconds per
fine-tuning epoch through the real stage (samples and trunk features cached, as the tiny profile runs), the
two paths alternated. Needs a prepared dataset (`dvc repro data`).

python benchmarks/dropout.py [--prepared data/prepared] [--epochs 2] → benchmarks/results/dropout.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

import torch
from torch import nn
from torch.nn import functional as F

from siamdetr.io import atomic_write_text
from siamdetr.models import attention, conditional

sys.path.insert(0, str(Path(__file__).parent))
from finetune_epoch import machine_facts, seconds_per_epoch  # noqa: E402


def milliseconds(fn, repeats: int = 20) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1e3


def torchs_attend(q, k, v, key_padding, p):
    mask = None if key_padding is None else ~key_padding[:, None, None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p).transpose(1, 2).flatten(2)


def torchs_mha_forward(self, query, key, value, key_padding_mask=None):
    return nn.MultiheadAttention.forward(
        self, query, key, value, key_padding_mask=key_padding_mask, need_weights=False
    )[0]


def torchs_paths() -> ExitStack:
    stack = ExitStack()
    stack.enter_context(mock.patch.object(attention, "dropout", lambda x, p, training: F.dropout(x, p, training)))
    stack.enter_context(mock.patch.object(attention, "attend", torchs_attend))
    stack.enter_context(mock.patch.object(conditional, "attend", torchs_attend))
    stack.enter_context(mock.patch.object(attention.MultiheadAttention, "forward", torchs_mha_forward))
    return stack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    x = torch.randn(256, 100, 100)
    q = torch.randn(256, 100, 16)
    micro = {
        "torch_dropout": milliseconds(lambda: F.dropout(x, 0.1, True)),
        "cheaper_dropout": milliseconds(lambda: attention.dropout(x, 0.1, True)),
        "sdpa_no_dropout": milliseconds(lambda: F.scaled_dot_product_attention(q, q, q)),
        "sdpa_dropout": milliseconds(lambda: F.scaled_dot_product_attention(q, q, q, dropout_p=0.1)),
        "attend_cheaper_dropout": milliseconds(lambda: attention.attend(q[:, None], q[:, None], q[:, None], None, 0.1)),
    }
    epochs: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        with torchs_paths():
            epochs["torch"], torch_metrics = seconds_per_epoch(
                "tiny", args.prepared, args.epochs, "samples+trunk", Path(tmp)
            )
        epochs["cheaper"], cheaper_metrics = seconds_per_epoch(
            "tiny", args.prepared, args.epochs, "samples+trunk", Path(tmp)
        )
    result = {
        **machine_facts(load),
        "micro_ms_2_56M_elements": {k: round(v, 2) for k, v in micro.items()},
        "tiny_epochs_per_run": args.epochs,
        "tiny_s_per_epoch": {k: round(v, 2) for k, v in epochs.items()},
        "tiny_ratio_cheaper_over_torch": round(epochs["cheaper"] / epochs["torch"], 3),
        # another mask stream is another draw of the run: AP moves, it is not expected to stay equal
        "ap50_percent": {"torch": round(torch_metrics["AP50"], 2), "cheaper": round(cheaper_metrics["AP50"], 2)},
    }
    out = Path(__file__).parent / "results" / "dropout.json"
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
