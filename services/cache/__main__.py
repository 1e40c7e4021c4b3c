"""cache: the in-memory LRU+TTL key/value service (replaces Redis): services/cache/service.py."""

from services.cache.service import CacheService
from shared.bus.service import run

if __name__ == "__main__":
    run(CacheService)
