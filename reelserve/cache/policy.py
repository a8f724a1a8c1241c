"""Which requests may use the result cache, and under which key: ``CachePolicy.decide``.

A request is kept out of the cache entirely (no lookup, no store) when it opts out
(``cache.enabled=false``) or when its prompt or negative prompt looks like it carries personal data
(``SensitiveRules``): a cache entry keeps the normalised prompt in Redis, and a semantic hit shows it
to another caller, so such prompts must never get there.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from reelserve.cache.key import cache_key, output_signature, signature_hash
from reelserve.schemas import CacheOptions, GenerationParams, VideoCreateRequest
from reelserve.schemas.tenants import ANONYMOUS_TENANT

log = logging.getLogger(__name__)

CacheScope = Literal["global", "per-tenant"]

# E-mail addresses, and phone numbers: 7 to 15 digits, optionally after a "+", with at most two
# separators (space . - / parentheses) between digits. Erring towards "sensitive" only costs a cache
# miss, so a long run of digits such as "2024-01-15" counts too.
EMAIL_PATTERN = r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"
PHONE_PATTERN = r"(?<![\w+])\+?\(?\d(?:[\s().\-/]{0,2}\d){6,14}(?!\w)"
DEFAULT_SENSITIVE_PATTERNS = (EMAIL_PATTERN, PHONE_PATTERN)

SensitiveHook = Callable[[str], bool]


def load_hook(spec: str) -> SensitiveHook:
    """The callable named by ``"package.module:function"``. Raises ``ValueError`` naming the problem."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"cache_sensitive_hook must look like 'module:function'; got {spec!r}")
    try:
        hook = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cache_sensitive_hook {spec!r} cannot be loaded: {exc}") from None
    if not callable(hook):
        raise ValueError(f"cache_sensitive_hook {spec!r} is not callable")  # noqa: TRY004 - a bad setting
    return hook  # type: ignore[no-any-return]


@dataclass(frozen=True)
class SensitiveRules:
    """A prompt is sensitive when any pattern is found in it (case-insensitive), or ``hook(prompt)`` is true.

    A hook that raises counts as "sensitive": failing closed keeps data out of a shared cache.
    """

    patterns: tuple[re.Pattern[str], ...] = ()
    hook: SensitiveHook | None = None

    @classmethod
    def compile(cls, patterns: Iterable[str] = DEFAULT_SENSITIVE_PATTERNS, hook: str | None = None) -> SensitiveRules:
        """Rules from regex strings and an optional ``"module:function"`` hook; ``ValueError`` on a bad one."""
        compiled = []
        for pattern in patterns:
            try:
                compiled.append(re.compile(pattern, re.IGNORECASE))
            except re.error as exc:
                raise ValueError(f"cache_sensitive_patterns: {pattern!r} is not a regex: {exc}") from None
        return cls(tuple(compiled), load_hook(hook) if hook else None)

    def match(self, *texts: str) -> bool:
        for text in texts:
            if not text:
                continue
            if any(pattern.search(text) for pattern in self.patterns):
                return True
            if self.hook is not None and self._hook_says(text):
                return True
        return False

    def _hook_says(self, text: str) -> bool:
        assert self.hook is not None
        try:
            return bool(self.hook(text))
        except Exception as exc:  # noqa: BLE001 - any failure of the operator's hook fails closed
            # The message names the error type only: the hook's message could quote the prompt.
            log.warning("cache: sensitive-prompt hook raised %s; treating the prompt as sensitive",
                        type(exc).__name__)
            return True


@dataclass(frozen=True)
class CacheDecision:
    """What the cache may do for one request.

    :param key: the exact-cache key; None when the request must neither read nor write the cache.
    :param signature: ``signature_hash`` of everything but the prompt (scope included): semantic
        matches are looked for among entries with this signature only.
    :param semantic: look for a semantic match on an exact miss, and index this prompt on completion.
    :param min_similarity: the cosine similarity a semantic match needs.
    :param sensitive: the prompt matched a sensitive-data rule (so ``key`` is None).
    """

    key: str | None
    signature: str
    semantic: bool
    min_similarity: float
    sensitive: bool


@dataclass(frozen=True)
class CachePolicy:
    """
    :param model_version: the served weights (``models.model_version``); part of every key.
    :param output_settings: server settings that change the pixels of a video; part of every key.
    :param scope: "global" shares results between all callers; "per-tenant" only between callers
        with the same API key.
    :param semantic_default: whether a request that does not say gets semantic matching.
    :param min_similarity_default: the threshold when a request does not give one.
    :param sensitive: prompts that are never cached.
    """

    model_version: str
    output_settings: Mapping[str, object] = field(default_factory=dict)
    scope: CacheScope = "global"
    semantic_default: bool = False
    min_similarity_default: float = 0.92
    sensitive: SensitiveRules = field(default_factory=SensitiveRules.compile)

    def decide(self, request: VideoCreateRequest, params: GenerationParams, tenant: str | None) -> CacheDecision:
        """``tenant`` names the caller (the API passes a hash of its key); used only per-tenant, where
        None is the anonymous tenant."""
        options = request.cache or CacheOptions()
        scope = "global" if self.scope == "global" else f"tenant:{tenant or ANONYMOUS_TENANT}"
        signature = signature_hash(output_signature(params, self.model_version, self.output_settings), scope)
        sensitive = self.sensitive.match(params.prompt, params.negative_prompt)
        usable = options.enabled and not sensitive
        key = cache_key(params, self.model_version, self.output_settings, scope) if usable else None
        semantic = options.semantic if options.semantic is not None else self.semantic_default
        min_similarity = (
            options.min_similarity if options.min_similarity is not None else self.min_similarity_default
        )
        return CacheDecision(key, signature, usable and semantic, min_similarity, sensitive)
