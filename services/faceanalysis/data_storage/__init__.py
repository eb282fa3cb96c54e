"""data-storage: results in Redis with a TTL and indexes, plus a JSON archive."""
