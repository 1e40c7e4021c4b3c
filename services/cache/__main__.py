"""cache: the in-memory LRU+TTL key/value service (replaces Redis). Thin shell over shared.cache."""

from shared.cache_service import CacheService
from shared.service import run

if __name__ == "__main__":
    run(CacheService)
