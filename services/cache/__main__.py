"""cache: the in-memory LRU+TTL key/value service (replaces Redis). Thin shell over shared.cache."""

from services.cache.service import CacheService
from shared.bus.service import run

if __name__ == "__main__":
    run(CacheService)
