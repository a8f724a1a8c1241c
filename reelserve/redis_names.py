"""Every Redis name of the distributed mode: the job store's, the queue's, the events', the result
cache's and the stats'. Nothing else builds a key string; the Lua scripts that use them live beside
their owners (``jobs/redis_scripts.py``, ``cache/redis_tier.py``).

Hash tag: every name of a namespace (``--redis-namespace``) starts with ``{namespace}``, so all of
them hash to one Cluster slot. A per-job tag (``{job_id}``) would colocate a job's record and its log,
but not the indexes (insertion order, per-status, per-tenant) that the same script must update in the
same atomic step, nor a cache entry and its index sets; one slot per namespace is what lets every
script run unchanged on Redis Cluster, including those that build index names from a prefix. The
price is that one namespace lives on one shard: job records and cache entries are small (metadata;
videos are in storage), so that is plenty.
"""

from __future__ import annotations

from dataclasses import dataclass

from reelserve.schemas import JobStatus

DEFAULT_NAMESPACE = "reelserve"
STATUS_ORDER = tuple(JobStatus)  # the order of the per-status keys in the index block and of COUNT's reply
BROKER_GROUP = "workers"  # the one consumer group of every stream: each entry goes to one worker


def _glob_escape(text: str) -> str:
    """``text`` matched literally in a SCAN pattern."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


@dataclass(frozen=True)
class RedisKeys:
    """Redis names under one namespace; two namespaces on one Redis share nothing."""

    namespace: str = DEFAULT_NAMESPACE

    def __post_init__(self) -> None:
        if not self.namespace or "{" in self.namespace or "}" in self.namespace:
            raise ValueError(f"namespace must be non-empty, without braces; got {self.namespace!r}")

    @property
    def prefix(self) -> str:
        return "{" + self.namespace + "}:"

    # -- adapters -------------------------------------------------------------------------------
    def adapters_lock(self) -> str:
        """Lock (redis-py's): held while a process changes the adapters' index in storage."""
        return f"{self.prefix}adapters-lock"

    # -- job store ------------------------------------------------------------------------------
    def job(self, job_id: str) -> str:
        """Hash: ``data`` (the job's JSON), ``status``, ``seq`` (insertion order), ``tenant`` ('' if none)."""
        return self.job_prefix() + job_id

    def job_prefix(self) -> str:
        return f"{self.prefix}job:"

    def transitions(self, job_id: str) -> str:
        """List of JSON ``{"from": status|null, "to": status, "at": unix seconds}``, oldest first."""
        return f"{self.prefix}transitions:{job_id}"

    def job_seq(self) -> str:
        """Counter: INCR gives each created job its insertion order."""
        return f"{self.prefix}job-seq"

    def jobs_by_insertion(self) -> str:
        """Sorted set: every job id, scored by insertion order."""
        return f"{self.prefix}jobs"

    def tenant_jobs(self, tenant: str) -> str:
        """Sorted set: one tenant's job ids, scored by insertion order."""
        return self.tenant_jobs_prefix() + tenant

    def tenant_jobs_prefix(self) -> str:
        return f"{self.prefix}tenant-jobs:"

    def unfinished(self) -> str:
        """Sorted set: ids of queued and in-progress jobs, scored by insertion order."""
        return f"{self.prefix}unfinished"

    def status_jobs(self, status: JobStatus) -> str:
        """Sorted set: ids of the jobs with ``status``, scored by insertion order."""
        return f"{self.prefix}status-jobs:{status.value}"

    def expiring(self) -> str:
        """Sorted set: ids of final jobs with a TTL, scored by the unix ms their records expire at."""
        return f"{self.prefix}expiring"

    def expiring_tenants(self) -> str:
        """Hash: id -> tenant of the expiring jobs that have one, to clean the tenant index after expiry."""
        return f"{self.prefix}expiring-tenants"

    def job_index(self) -> list[str]:
        """``KEYS[1..10]`` of every job-store script, in the order ``_JOB_LUA_HEADER`` names them."""
        fixed = [self.job_seq(), self.jobs_by_insertion(), self.unfinished(), self.expiring()]
        return [*fixed, self.expiring_tenants(), *(self.status_jobs(s) for s in STATUS_ORDER)]

    # -- broker (``RedisStreamsBroker``) --------------------------------------------------------
    def stream(self, model: str, level: int) -> str:
        """Stream: one model's queued jobs of one priority level, fields ``job_id``, ``batch_key``,
        ``level``; read by the consumer group ``BROKER_GROUP``."""
        return f"{self.stream_prefix(model)}{level}"

    def stream_prefix(self, model: str) -> str:
        return f"{self.prefix}stream:{model}:"

    def dead_letters(self, model: str) -> str:
        """Stream: one model's jobs given up on (``job_id``, ``batch_key``, ``level``, ``deliveries``,
        ``reason``), capped near ``DEAD_LETTER_MAXLEN`` entries."""
        return f"{self.prefix}dead:{model}"

    def broker_entries(self, model: str) -> str:
        """Hash: job id -> ``"<level>|<stream entry id>"`` of each of one model's entries in a stream.

        Per model, not per namespace: entry ids are only unique within one stream, so a map shared by
        two models could point one model's discard at the other model's entry."""
        return f"{self.prefix}entry:{model}"

    # -- events (``RedisEventBus``) -------------------------------------------------------------
    def events(self, job_id: str) -> str:
        """Pub/sub channel: the job's ``JobEvent``s as JSON, published by whichever process changes
        the job."""
        return f"{self.prefix}events:{job_id}"

    # -- the result cache and the stats ---------------------------------------------------------
    @property
    def cache(self) -> CacheKeys:
        return CacheKeys(f"{self.prefix}cache:")

    @property
    def stats(self) -> StatsKeys:
        return StatsKeys(self.prefix)


@dataclass(frozen=True)
class CacheKeys:
    """The result cache's names under one prefix (``RedisKeys.cache``: ``{namespace}:cache:``)."""

    prefix: str

    def entry(self, key: str) -> str:
        return f"{self.prefix}entry:{key}"

    def by_model(self, model: str) -> str:
        return f"{self.prefix}by-model:{model}"

    def by_prompt(self, prompt_hash: str) -> str:
        return f"{self.prefix}by-prompt:{prompt_hash}"

    def by_job(self, job_id: str) -> str:
        return f"{self.prefix}by-job:{job_id}"

    def semantic(self, key: str) -> str:
        """The semantic record (signature, prompt, vector) of one cache key."""
        return f"{self.prefix}semantic:{key}"

    def semantic_by_signature(self, signature: str) -> str:
        return f"{self.prefix}semantic-by-signature:{signature}"

    @property
    def semantic_pattern(self) -> str:
        return f"{_glob_escape(self.prefix)}semantic:*"

    @property
    def events(self) -> str:
        return f"{self.prefix}events"

    @property
    def entry_pattern(self) -> str:
        return f"{_glob_escape(self.prefix)}entry:*"

    @property
    def everything_pattern(self) -> str:
        return f"{_glob_escape(self.prefix)}*"


@dataclass(frozen=True)
class StatsKeys:
    """The dashboard's shared counters (``RedisStats``) under one prefix."""

    prefix: str

    def bucket(self, start: int) -> str:
        """Hash of counters of the bucket starting at ``start`` (unix seconds)."""
        return f"{self.prefix}stats:{start}"

    def latencies(self, start: int) -> str:
        """List of the bucket's end-to-end seconds (capped)."""
        return f"{self.bucket(start)}:latency"

    @property
    def workers(self) -> str:
        """Hash: worker name -> JSON status with the time it was written."""
        return f"{self.prefix}stats:workers"
