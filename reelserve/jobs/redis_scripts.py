"""Every Lua script of the distributed mode's job store and queue; their key names come from
``reelserve.redis_names``.

The job store's scripts all receive the same index block as ``KEYS[1..10]`` (``RedisKeys.job_index``),
then their own keys; ``ARGV[1]`` and ``ARGV[2]`` are the job and tenant-index key prefixes, for the ids
a script only learns from an index (undeclared keys, which Cluster allows when they are in the slot
of the declared ones: every name of a namespace shares its hash tag). The broker's scripts do the
same with a stream prefix: an entry map value names the level, and so the stream, of a job.
"""

from __future__ import annotations

from reelserve.redis_names import BROKER_GROUP, STATUS_ORDER
from reelserve.schemas import FINAL_STATUSES, UNFINISHED_STATUSES

PRUNE_BATCH = 500  # expired jobs dropped from the indexes per script call, so no call blocks Redis for long

# Reply codes of the reading scripts (first element of their reply).
AGAIN, OK, UNKNOWN_CURSOR = 0, 1, 2


def _job_script(body: str) -> str:
    """A job-store script: the shared header (index names, helpers), then ``body``."""
    return _JOB_LUA_HEADER + body


def _lua_table(entries: dict[str, object]) -> str:
    return "{" + ", ".join(f'["{k}"] = {v}' for k, v in entries.items()) + "}"


_JOB_LUA_HEADER = f"""
local SEQ, JOBS, UNFINISHED, EXPIRING, EXPIRING_TENANTS = 1, 2, 3, 4, 5
local STATUS_KEY = {_lua_table({s.value: 6 + i for i, s in enumerate(STATUS_ORDER)})}
local IS_UNFINISHED = {_lua_table({s.value: "true" for s in UNFINISHED_STATUSES})}
local IS_FINAL = {_lua_table({s.value: "true" for s in FINAL_STATUSES})}
local JOB_PREFIX, TENANT_PREFIX = ARGV[1], ARGV[2]

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Remove ``id`` from every index (not its records).
local function forget(id)
  local tenant = redis.call('HGET', KEYS[EXPIRING_TENANTS], id)
  if tenant then redis.call('ZREM', TENANT_PREFIX .. tenant, id) end
  redis.call('HDEL', KEYS[EXPIRING_TENANTS], id)
  redis.call('ZREM', KEYS[JOBS], id)
  redis.call('ZREM', KEYS[UNFINISHED], id)
  redis.call('ZREM', KEYS[EXPIRING], id)
  for _, k in pairs(STATUS_KEY) do redis.call('ZREM', KEYS[k], id) end
end

-- Forget up to {PRUNE_BATCH} jobs whose records expired; returns how many.
local function prune()
  local due = redis.call('ZRANGEBYSCORE', KEYS[EXPIRING], '-inf', '(' .. now_ms(), 'LIMIT', 0, {PRUNE_BATCH})
  local dropped = 0
  for _, id in ipairs(due) do
    if redis.call('EXISTS', JOB_PREFIX .. id) == 0 then
      forget(id)
      dropped = dropped + 1
    elseif redis.call('PTTL', JOB_PREFIX .. id) == -1 then  -- someone made it permanent
      redis.call('ZREM', KEYS[EXPIRING], id)
      redis.call('HDEL', KEYS[EXPIRING_TENANTS], id)
    end
  end
  return dropped
end

local function set_status(id, seq, old, new)
  if old then
    redis.call('ZREM', KEYS[STATUS_KEY[old]], id)
    if not IS_UNFINISHED[new] then redis.call('ZREM', KEYS[UNFINISHED], id) end
  end
  redis.call('ZADD', KEYS[STATUS_KEY[new]], seq, id)
  if IS_UNFINISHED[new] then redis.call('ZADD', KEYS[UNFINISHED], seq, id) end
end

local function log_transition(log, old, new)
  local t = redis.call('TIME')
  local at = tonumber(t[1]) + tonumber(t[2]) / 1e6
  redis.call('RPUSH', log, cjson.encode({{["from"] = old or cjson.null, to = new, at = at}}))
end

-- A final job's record and log expire ``retention_ms`` from now (never when it is 0).
local function expire(id, job, log, tenant, retention_ms)
  if retention_ms <= 0 then return end
  local at = now_ms() + retention_ms
  redis.call('PEXPIREAT', job, at)
  redis.call('PEXPIREAT', log, at)
  redis.call('ZADD', KEYS[EXPIRING], at, id)
  if tenant ~= '' then redis.call('HSET', KEYS[EXPIRING_TENANTS], id, tenant) end
end

local function keep(id, job, log)
  redis.call('PERSIST', job)
  redis.call('PERSIST', log)
  redis.call('ZREM', KEYS[EXPIRING], id)
  redis.call('HDEL', KEYS[EXPIRING_TENANTS], id)
end
"""

# KEYS: index, job, log. ARGV: prefixes, id, status, data, tenant, retention_ms. 1 created, 0 exists.
CREATE_JOB_LUA = _job_script("""
local id, status, tenant, retention = ARGV[3], ARGV[4], ARGV[6], tonumber(ARGV[7])
local job, log = KEYS[11], KEYS[12]
if redis.call('EXISTS', job) == 1 then return 0 end
forget(id)  -- what is left of an earlier job with this id whose record expired
redis.call('DEL', log)
local seq = redis.call('INCR', KEYS[SEQ])
redis.call('HSET', job, 'data', ARGV[5], 'status', status, 'seq', seq, 'tenant', tenant)
redis.call('ZADD', KEYS[JOBS], seq, id)
if tenant ~= '' then redis.call('ZADD', TENANT_PREFIX .. tenant, seq, id) end
set_status(id, seq, false, status)
log_transition(log, false, status)
if IS_FINAL[status] then expire(id, job, log, tenant, retention) end
return 1
""")

# KEYS: index, job, log. ARGV: prefixes, id, status, data, tenant, retention_ms, then '*' (any stored
# status) or '=' followed by the expected statuses. 1 written, 0 not (gone, or status not expected).
SAVE_JOB_LUA = _job_script("""
local id, status, tenant, retention = ARGV[3], ARGV[4], ARGV[6], tonumber(ARGV[7])
local job, log = KEYS[11], KEYS[12]
local stored = redis.call('HMGET', job, 'status', 'seq', 'tenant')
local old, seq, old_tenant = stored[1], stored[2], stored[3] or ''
if not old then return 0 end
if ARGV[8] ~= '*' then
  local expected = false
  for i = 9, #ARGV do if ARGV[i] == old then expected = true end end
  if not expected then return 0 end
end
redis.call('HSET', job, 'data', ARGV[5], 'status', status, 'tenant', tenant)
if tenant ~= old_tenant then
  if old_tenant ~= '' then redis.call('ZREM', TENANT_PREFIX .. old_tenant, id) end
  if tenant ~= '' then redis.call('ZADD', TENANT_PREFIX .. tenant, seq, id) end
  redis.call('HDEL', KEYS[EXPIRING_TENANTS], id)
  if tenant ~= '' and redis.call('ZSCORE', KEYS[EXPIRING], id) then
    redis.call('HSET', KEYS[EXPIRING_TENANTS], id, tenant)
  end
end
if old ~= status then
  set_status(id, seq, old, status)
  log_transition(log, old, status)
  if IS_FINAL[status] and not IS_FINAL[old] then expire(id, job, log, tenant, retention)
  elseif IS_FINAL[old] and not IS_FINAL[status] then keep(id, job, log) end
end
return 1
""")

# KEYS: index, job, log. ARGV: prefixes, id. Returns 1 if the job existed.
DELETE_JOB_LUA = _job_script("""
local id, job, log = ARGV[3], KEYS[11], KEYS[12]
local tenant = redis.call('HGET', job, 'tenant')
if tenant and tenant ~= '' then redis.call('ZREM', TENANT_PREFIX .. tenant, id) end
forget(id)
redis.call('DEL', log)
return redis.call('DEL', job)
""")

# KEYS: index, the sorted set to page. ARGV: prefixes, limit, [cursor id]. Reply: {AGAIN} (call again:
# more expired jobs to forget first), {UNKNOWN_CURSOR}, or {OK, job JSON...} newest first.
LIST_JOBS_LUA = _job_script(f"""
if prune() >= {PRUNE_BATCH} then return {{{AGAIN}}} end
local zset, limit, after = KEYS[11], tonumber(ARGV[3]), ARGV[4]
local max = '+inf'
if after then
  local score = redis.call('ZSCORE', zset, after)
  if not score then return {{{UNKNOWN_CURSOR}}} end
  max = '(' .. score
end
local page = {{{OK}}}
while #page - 1 < limit do
  local ids = redis.call('ZREVRANGEBYSCORE', zset, max, '-inf', 'WITHSCORES', 'LIMIT', 0, limit - #page + 1)
  if #ids == 0 then break end
  for i = 1, #ids, 2 do
    local data = redis.call('HGET', JOB_PREFIX .. ids[i], 'data')
    if data then page[#page + 1] = data else forget(ids[i]); redis.call('ZREM', zset, ids[i]) end
    max = '(' .. ids[i + 1]
  end
end
return page
""")

# KEYS: index. ARGV: prefixes. Reply: job JSON of queued and in-progress jobs, oldest first.
UNFINISHED_JOBS_LUA = _job_script("""
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[UNFINISHED], 0, -1)) do
  local data = redis.call('HGET', JOB_PREFIX .. id, 'data')
  if data then out[#out + 1] = data else forget(id) end
end
return out
""")

# KEYS: index. ARGV: prefixes. Reply: {AGAIN} or {OK, count per status in STATUS_ORDER...}.
COUNT_JOBS_LUA = _job_script(f"""
if prune() >= {PRUNE_BATCH} then return {{{AGAIN}}} end
local out = {{{OK}}}
for i = 1, {len(STATUS_ORDER)} do out[#out + 1] = redis.call('ZCARD', KEYS[5 + i]) end
return out
""")


# -- broker --------------------------------------------------------------------------------------
DEAD_LETTER_MAXLEN = 10_000  # dead-letter entries kept per model (approximately: MAXLEN ~)

# Invariant every script keeps: an entry leaves its stream (XDEL) whenever it leaves the group's
# pending list (XACK), so a stream holds exactly the undelivered entries plus the pending ones, and
# every pending id is older than every undelivered one (the group delivers in id order; reclaimed
# entries keep their ids; released ones are re-added as new entries).
_BROKER_LUA_HEADER = f"""
local GROUP = '{BROKER_GROUP}'

-- The stream, entry id and level of a map value "<level>|<entry id>" (``prefix``: the model's streams).
local function locate(prefix, value)
  local sep = string.find(value, '|', 1, true)
  local level = string.sub(value, 1, sep - 1)
  return prefix .. level, string.sub(value, sep + 1), tonumber(level)
end

-- Entries delivered to some worker and not acknowledged yet.
local function pending_count(stream)
  local reply = redis.pcall('XPENDING', stream, GROUP)
  if reply.err then return 0 end  -- no stream or no group yet: nothing was delivered
  return reply[1]
end

-- The consumer that holds the entry, or false when it is not pending (not delivered, or done).
local function owner(stream, id)
  local reply = redis.call('XPENDING', stream, GROUP, id, id, 1)
  if #reply == 0 then return false end
  return reply[1][2]
end

-- Is the entry in the stream and not delivered (queued)?
local function queued(stream, id)
  return #redis.call('XRANGE', stream, id, id) == 1 and not owner(stream, id)
end
"""

# KEYS: stream, entry map. ARGV: stream prefix, job id, batch key, level. Reply: the entry id. A job
# that already has an entry (queued, or delivered and not acknowledged) keeps it: nothing is added.
PUT_ENTRY_LUA = _BROKER_LUA_HEADER + """
local job_id, batch_key, level = ARGV[2], ARGV[3], ARGV[4]
local known = redis.call('HGET', KEYS[2], job_id)
if known then
  local stream, id = locate(ARGV[1], known)
  if #redis.call('XRANGE', stream, id, id) == 1 then return id end
end
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('XGROUP', 'CREATE', KEYS[1], GROUP, '0', 'MKSTREAM') end
local id = redis.call('XADD', KEYS[1], '*', 'job_id', job_id, 'batch_key', batch_key, 'level', level)
redis.call('HSET', KEYS[2], job_id, level .. '|' .. id)
return id
"""

# KEYS: entry map. ARGV: stream prefix, job id. 1 removed; 0 not queued (delivered, or unknown).
DISCARD_ENTRY_LUA = _BROKER_LUA_HEADER + """
local value = redis.call('HGET', KEYS[1], ARGV[2])
if not value then return 0 end
local stream, id = locate(ARGV[1], value)
if not queued(stream, id) then return 0 end
redis.call('XDEL', stream, id)
redis.call('HDEL', KEYS[1], ARGV[2])
return 1
"""

# KEYS: entry map. ARGV: stream prefix, job id. Removes the job's entry whoever holds it; reply 1 if
# it was pending (delivered, not acknowledged), else 0.
ACK_ENTRY_LUA = _BROKER_LUA_HEADER + """
local value = redis.call('HGET', KEYS[1], ARGV[2])
if not value then return 0 end
local stream, id = locate(ARGV[1], value)
local acked = redis.call('XACK', stream, GROUP, id)
redis.call('XDEL', stream, id)
redis.call('HDEL', KEYS[1], ARGV[2])
return acked
"""

# KEYS: the stream of each entry. ARGV: consumer, then each entry's id. Reply per entry: 1 still this
# consumer's (its idle time is now 0), or 0 no longer (acknowledged, or reclaimed by another worker).
TOUCH_ENTRIES_LUA = _BROKER_LUA_HEADER + """
local out = {}
for i, stream in ipairs(KEYS) do
  local id = ARGV[i + 1]
  if owner(stream, id) == ARGV[1] then
    redis.call('XCLAIM', stream, GROUP, ARGV[1], 0, id, 'JUSTID')  -- JUSTID: delivery count unchanged
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""

# KEYS: stream, dead-letter stream, entry map. ARGV: consumer, min idle ms, max deliveries, level.
# Claims every entry idle that long (XAUTOCLAIM counts it as one more delivery); one delivered more
# than max deliveries times is dead-lettered instead. Reply: {{id, job id, batch key, ...}, {job id...}}.
RECLAIM_ENTRIES_LUA = _BROKER_LUA_HEADER + f"""
local claimed, dead, cursor = {{}}, {{}}, '0-0'
repeat
  local reply = redis.call('XAUTOCLAIM', KEYS[1], GROUP, ARGV[1], ARGV[2], cursor, 'COUNT', 100)
  cursor = reply[1]
  for _, entry in ipairs(reply[2]) do
    local id, fields = entry[1], {{}}
    for i = 1, #entry[2], 2 do fields[entry[2][i]] = entry[2][i + 1] end
    local deliveries = redis.call('XPENDING', KEYS[1], GROUP, id, id, 1)[1][4]
    if deliveries > tonumber(ARGV[3]) then
      redis.call('XADD', KEYS[2], 'MAXLEN', '~', {DEAD_LETTER_MAXLEN}, '*', 'job_id', fields.job_id,
        'batch_key', fields.batch_key, 'level', ARGV[4], 'deliveries', deliveries, 'reason', 'worker_lost')
      redis.call('XACK', KEYS[1], GROUP, id)
      redis.call('XDEL', KEYS[1], id)
      redis.call('HDEL', KEYS[3], fields.job_id)
      dead[#dead + 1] = fields.job_id
    else
      claimed[#claimed + 1] = id
      claimed[#claimed + 1] = fields.job_id
      claimed[#claimed + 1] = fields.batch_key
    end
  end
until cursor == '0-0'
return {{claimed, dead}}
"""

# KEYS: stream, entry map. ARGV: consumer, level, then (entry id, job id, batch key) per entry. Each
# entry this consumer still holds is re-added as a new, undelivered entry (at the end of its stream)
# and the old one removed. Reply: how many were given back.
RELEASE_ENTRIES_LUA = _BROKER_LUA_HEADER + """
local released = 0
for i = 3, #ARGV, 3 do
  local id, job_id, batch_key = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if owner(KEYS[1], id) == ARGV[1] then
    local new = redis.call('XADD', KEYS[1], '*', 'job_id', job_id, 'batch_key', batch_key, 'level', ARGV[2])
    redis.call('XACK', KEYS[1], GROUP, id)
    redis.call('XDEL', KEYS[1], id)
    redis.call('HSET', KEYS[2], job_id, ARGV[2] .. '|' .. new)
    released = released + 1
  end
end
return released
"""

# KEYS: the stream of each level. Reply: undelivered entries per level (stream length minus pending).
DEPTH_LUA = _BROKER_LUA_HEADER + """
local out = {}
for i, stream in ipairs(KEYS) do out[i] = redis.call('XLEN', stream) - pending_count(stream) end
return out
"""

# KEYS: entry map, then the stream of each level. ARGV: stream prefix, job id, then each level (as
# KEYS). Reply: undelivered entries ahead of the job, or -1 when it is not queued.
POSITION_LUA = _BROKER_LUA_HEADER + """
local value = redis.call('HGET', KEYS[1], ARGV[2])
if not value then return -1 end
local own, id, level = locate(ARGV[1], value)
if not queued(own, id) then return -1 end
local ahead = 0
for i = 2, #KEYS do
  local stream = KEYS[i]
  if tonumber(ARGV[i + 1]) < level then
    ahead = ahead + redis.call('XLEN', stream) - pending_count(stream)
  elseif stream == own then  -- older entries of its own level: the pending ones are all older still
    ahead = ahead + #redis.call('XRANGE', stream, '-', '(' .. id) - pending_count(stream)
  end
end
return ahead
"""
