"""Does a proposals store cover the images it is used with?

A store made for another folder (or holding NaN boxes) would give every image it lacks zero proposals, and
pretraining would run on without a word. Pretraining checks coverage first: images the store lacks (other
than those its own run skipped as unreadable) or whose boxes are not finite count as without proposals, and
above a tolerance that is an error naming the store and the folder.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from siamdetr.errors import DatasetError
from siamdetr.proposals.store import ProposalStore, dataset_identity

log = logging.getLogger(__name__)


@dataclass
class Coverage:
    n_images: int
    missing: list[str]  # neither in the store nor skipped by its run
    nonfinite: list[str]  # stored boxes with a NaN or an infinity

    @property
    def without(self) -> int:
        return len(self.missing) + len(self.nonfinite)


def coverage(store: ProposalStore, keys: list[str]) -> Coverage:
    skipped = set(store.skipped)
    nonfinite = set(store.nonfinite_keys())
    return Coverage(
        n_images=len(keys),
        missing=[k for k in keys if k not in store and k not in skipped],
        nonfinite=[k for k in keys if k in nonfinite],
    )


def made_for(store: ProposalStore, root: Path, keys: list[str]) -> str | None:
    """A sentence saying which images the store was made for, when they are not these; else None."""
    if store.dataset is None:
        return None
    here = dataset_identity(root, keys)
    made = store.dataset
    if (made.get("root"), made.get("fingerprint")) == (here["root"], here["fingerprint"]):
        return None
    return (
        f"it was made for {made.get('root')} ({made.get('n_images')} images, fingerprint {made.get('fingerprint')}), "
        f"not {here['root']} ({here['n_images']} images, fingerprint {here['fingerprint']})"
    )


def check_coverage(store: ProposalStore, root: Path, keys: list[str], tolerance: float) -> Coverage:
    """Raise when more than `tolerance` (a fraction) of the images have no usable proposals; warn when the
    store was made for other images but covers these."""
    found = coverage(store, keys)
    origin = made_for(store, root, keys)
    if found.without > tolerance * max(found.n_images, 1):
        examples = ", ".join((found.missing + found.nonfinite)[:3])
        raise DatasetError(
            f"{store.path}: {found.without} of {found.n_images} images of {root} have no usable proposals "
            f"({len(found.missing)} not in the store, {len(found.nonfinite)} with non-finite boxes; e.g. {examples}), "
            f"more than pretrain.max_missing_proposals = {tolerance:g}"
            + (f"; {origin}" if origin else "")
            + f". Recompute it: siamdetr proposals --images {root} --out {store.path}"
        )
    if origin:
        log.warning("%s: %s (it covers all but %d of these images)", store.path, origin, found.without)
    elif found.without:
        log.warning("%s: %d of %d images have no usable proposals", store.path, found.without, found.n_images)
    return found
