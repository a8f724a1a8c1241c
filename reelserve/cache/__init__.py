"""Never compute the same video twice: cache keys, the two tiers, and the ``ResultCache`` facade.

Each name is imported when first used: settings read the cache policy at every CLI start, and the
Redis tier, the Bloom filter and the embedding model need not come with it.
"""

from __future__ import annotations

from reelserve.lazy_names import lazy_names

_LAZY = {
    "CacheDecision": "reelserve.cache.policy",
    "CacheEntry": "reelserve.cache.entry",
    "CachePolicy": "reelserve.cache.policy",
    "Hit": "reelserve.cache.entry",
    "KeyFilter": "reelserve.cache.bloom",
    "MemoryTier": "reelserve.cache.memory",
    "RedisTier": "reelserve.cache.redis_tier",
    "ResultCache": "reelserve.cache.result_cache",
    "SemanticCache": "reelserve.cache.semantic_cache",
    "SensitiveRules": "reelserve.cache.policy",
    "cache_key": "reelserve.cache.key",
    "normalise_prompt": "reelserve.cache.key",
    "output_signature": "reelserve.cache.key",
    "prompt_hash": "reelserve.cache.key",
    "redis_tier_from_url": "reelserve.cache.redis_tier",
    "signature_hash": "reelserve.cache.key",
}

__all__ = [
    "CacheDecision",
    "CacheEntry",
    "CachePolicy",
    "Hit",
    "KeyFilter",
    "MemoryTier",
    "RedisTier",
    "ResultCache",
    "SemanticCache",
    "SensitiveRules",
    "cache_key",
    "normalise_prompt",
    "output_signature",
    "prompt_hash",
    "redis_tier_from_url",
    "signature_hash",
]


__getattr__ = lazy_names(__name__, _LAZY)
