"""Errors users see as one clear line (the CLI prints them without a traceback)."""


class DatasetError(ValueError):
    """A dataset file or directory is missing or malformed; the message names it."""


class BadImageError(DatasetError):
    """An image file cannot be decoded (unreadable, truncated, not an image)."""


class CheckpointError(DatasetError):
    """A checkpoint file is empty, truncated, not a checkpoint, or unsafe to load."""


class Stopped(Exception):  # noqa: N818  (a request, not a fault)
    """Raised by a training hook to end a run on purpose (a sweep's pruner); the run is closed as KILLED."""


class RunLocked(RuntimeError):
    """Another live process is training the same run directory."""


class NonFiniteLoss(RuntimeError):
    """Training diverged (a NaN or infinite loss or prediction): stop rather than write NaN weights into a
    checkpoint."""


class TrackingError(RuntimeError):
    """The MLflow tracking store cannot be reached, read or written."""


class DiskFull(OSError):
    """No space left while writing an output; the message names the file."""
