"""The two errors a user's data can cause. Both are ValueErrors whose message names the path."""

from __future__ import annotations


class DataError(ValueError):
    """A data path or file is missing or malformed; the message names it and says what was expected."""


class CorruptImageError(ValueError):
    """An image file exists but cannot be decoded (truncated, not an image, ...).

    Takes a single message argument so that the DataLoader can re-raise it unchanged in the main
    process when it happens inside a worker.
    """
