"""Never compute the same video twice: cache keys, the two tiers, and the ``ResultCache`` facade."""

from reelserve.cache.bloom import KeyFilter
from reelserve.cache.entry import CacheEntry, Hit
from reelserve.cache.key import cache_key, normalise_prompt, output_signature, prompt_hash, signature_hash
from reelserve.cache.memory import MemoryTier
from reelserve.cache.policy import CacheDecision, CachePolicy, SensitiveRules
from reelserve.cache.redis_tier import RedisTier, redis_tier_from_url
from reelserve.cache.result_cache import ResultCache
from reelserve.cache.semantic_cache import SemanticCache

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
