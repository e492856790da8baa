"""Fixtures of the media workflow tests (see `tests.media.pipeline_env`)."""

from tests.media.pipeline_env import media_buckets, media_storage, media_world

__all__ = ["media_buckets", "media_storage", "media_world"]
