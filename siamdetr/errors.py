"""Errors users see as one clear line (the CLI prints them without a traceback)."""


class DatasetError(ValueError):
    """A dataset file or directory is missing or malformed; the message names it."""


class BadImageError(DatasetError):
    """An image file cannot be decoded (unreadable, truncated, not an image)."""
