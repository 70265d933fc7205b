"""Answer-cache backends, chosen by URL through ``medianest.aggregation.cache.CACHES``."""
