"""The local environment's cache: the Redis `make run` starts on a Unix socket, else one in process.

Every Dagster run is its own process, so only a server keeps the real-time counters and the cached
dashboard answers from one run to the next; `scripts/run_local.sh` names it in HUB_REDIS_URL.
"""

from __future__ import annotations

from hub_pipelines import settings
from hub_pipelines.resources.cache import InProcessCache, RedisCache


def local_cache() -> InProcessCache | RedisCache:
    """Redis when HUB_REDIS_URL names one (e.g. unix:///…/.hub/redis/redis.sock), else in process."""
    url = settings.local_redis_url()
    return RedisCache(url=url) if url else InProcessCache()
