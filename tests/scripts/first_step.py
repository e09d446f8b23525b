"""Run by tests under torchrun: fine-tune until the first optimiser step, print the global loss on rank 0."""

import contextlib
import json
import sys

import torch
import torch.distributed as dist

from siamdetr.config import load_config
from siamdetr.stages.finetune import run as finetune


class FirstStepDone(Exception):
    pass


def main() -> None:
    cfg = load_config(params=None, profile="smoke", overrides=sys.argv[1:])
    seen = {}

    def stop(step, values):
        loss = torch.tensor(values["loss"], dtype=torch.float64)
        if dist.is_initialized():
            dist.all_reduce(loss)
            loss /= dist.get_world_size()
        seen["loss"] = loss.item()
        raise FirstStepDone

    with contextlib.suppress(FirstStepDone):
        finetune(cfg, on_step=stop)
    if not dist.is_initialized() or dist.get_rank() == 0:
        print(json.dumps(seen))
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
