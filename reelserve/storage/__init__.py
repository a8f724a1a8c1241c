"""Blob storage for finished videos and thumbnails."""

from reelserve.storage.base import Storage
from reelserve.storage.local import LocalStorage

__all__ = ["LocalStorage", "Storage"]
