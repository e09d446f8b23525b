import pytest
import torch

from siamdetr.engine.loop import one_drop_schedule


def lrs(epochs: int, lr_drop: int) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)
    scheduler = one_drop_schedule(optimizer, lr_drop)
    out = []
    for _ in range(epochs):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_the_lr_drops_once_at_lr_drop_however_long_the_run():
    # StepLR(lr_drop=2) would train epochs 4-5 at 1e-6 and epochs 6+ at <= 1e-7
    assert lrs(40, 2) == pytest.approx([1e-4] * 2 + [1e-5] * 38)
    assert lrs(50, 40) == pytest.approx([1e-4] * 40 + [1e-5] * 10)


def test_no_drop_when_lr_drop_is_past_the_last_epoch():
    assert lrs(5, 10) == pytest.approx([1e-4] * 5)
