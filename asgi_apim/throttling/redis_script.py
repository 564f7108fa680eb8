"""Every limit of a request in one Redis round trip.

`limits`' Redis storage runs one script per limit to take a hit and another
round trip to read what remains. `RedisScriptEngine` keeps its storage (the
connection, the key prefix, the key layout of each strategy, so `limits`' own
strategies read the same counts) but takes all of a request's limits in one
Lua script: check every limit, and only if none is exhausted charge them all
and return the remaining quota and reset time of the reported ones. Time is
Redis's own (``TIME``), so every node of a cluster of gateways sees one clock.

On Redis Cluster a request's keys live in different slots, so each limit is
its own call (still one round trip per limit, hit and window together); a
limit exhausted there leaves the limits before it charged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, TypeGuard, cast

from limits.aio.storage import RedisClusterStorage, RedisStorage, Storage
from limits.aio.storage.redis.redispy import RedispyBridge
from limits.errors import StorageError
from redis.asyncio import Redis, RedisCluster

from asgi_apim.throttling.base import TAKEN, Limit, Verdict, refused

SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local strategy = ARGV[1]
local n = (#ARGV - 1) / 3

local function moving_window(key, cutoff, high)
  local low, found = 0, -1
  while low <= high do
    local mid = math.floor((low + high) / 2)
    local value = tonumber(redis.call('LINDEX', key, mid))
    if value and value >= cutoff then
      found = mid
      low = mid + 1
    else
      high = mid - 1
    end
  end
  if found < 0 then return 0, now end
  return found + 1, tonumber(redis.call('LINDEX', key, found))
end

local function sliding_window(previous, current, ms)
  local ttl = tonumber(redis.call('PTTL', current))
  if ttl > 0 and ttl < ms then
    redis.call('RENAME', current, previous)
    redis.call('SET', current, 0, 'PX', ttl + ms)
  end
  local pc = tonumber(redis.call('GET', previous)) or 0
  local pt = math.max(tonumber(redis.call('PTTL', previous)), 0)
  local cc = tonumber(redis.call('GET', current)) or 0
  local ct = math.max(tonumber(redis.call('PTTL', current)), 0)
  return pc, pt, cc, ct
end

local function sliding_reset(pc, pt, cc, ct, ms)
  local reset = nil
  if pc > 0 then reset = pt % (ms / pc) end
  if cc > 0 then
    local rotation = ct > ms and ct - ms or ct
    if reset == nil or rotation < reset then reset = rotation end
  end
  return math.ceil(reset or 0)
end

-- a key another strategy left (a list where a count belongs, or the reverse, after the
-- strategy changed on a live Redis) is that caller's count under a layout this strategy
-- cannot read: it starts again, as a memory storage's entry of another kind does
local function fresh(key, want)
  local kind = redis.call('TYPE', key)['ok']
  if kind ~= 'none' and kind ~= want then redis.call('DEL', key) end
end

local seen = {}
for i = 1, n do
  local amount = tonumber(ARGV[3 * i - 1])
  local expiry = tonumber(ARGV[3 * i])
  if amount < 1 then return {i, expiry * 1000} end
  if strategy == 'moving-window' then
    fresh(KEYS[i], 'list')
  elseif strategy == 'fixed-window' then
    fresh(KEYS[i], 'string')
  else
    fresh(KEYS[2 * i - 1], 'string')
    fresh(KEYS[2 * i], 'string')
  end
  if strategy == 'fixed-window' then
    if (tonumber(redis.call('GET', KEYS[i])) or 0) >= amount then
      local ttl = tonumber(redis.call('PTTL', KEYS[i]))
      if ttl < 0 then ttl = expiry * 1000 end
      return {i, ttl}
    end
  elseif strategy == 'moving-window' then
    local entry = tonumber(redis.call('LINDEX', KEYS[i], amount - 1))
    if entry and entry >= now - expiry then
      return {i, math.ceil((entry + expiry - now) * 1000)}
    end
  else
    local ms = expiry * 1000
    local pc, pt, cc, ct = sliding_window(KEYS[2 * i - 1], KEYS[2 * i], ms)
    if math.floor(pc * pt / ms) + cc + 1 > amount then
      return {i, sliding_reset(pc, pt, cc, ct, ms)}
    end
    seen[i] = {pc, pt}
  end
end

local out = {0}
local stamp = string.format('%.6f', now)
for i = 1, n do
  local amount = tonumber(ARGV[3 * i - 1])
  local expiry = tonumber(ARGV[3 * i])
  local report = ARGV[3 * i + 1] == '1'
  if strategy == 'fixed-window' then
    local count = redis.call('INCRBY', KEYS[i], 1)
    if count == 1 then redis.call('EXPIRE', KEYS[i], expiry) end
    if report then
      out[#out + 1] = amount - count
      out[#out + 1] = redis.call('PTTL', KEYS[i])
    end
  elseif strategy == 'moving-window' then
    redis.call('LPUSH', KEYS[i], stamp)
    redis.call('LTRIM', KEYS[i], 0, amount - 1)
    redis.call('EXPIRE', KEYS[i], expiry)
    if report then
      local count, oldest = moving_window(KEYS[i], now - expiry, amount - 1)
      out[#out + 1] = amount - count
      out[#out + 1] = math.ceil((oldest + expiry - now) * 1000)
    end
  else
    local ms = expiry * 1000
    local current = KEYS[2 * i]
    local cc
    if redis.call('EXISTS', current) == 1 then
      cc = redis.call('INCRBY', current, 1)
    else
      cc = 1
      redis.call('SET', current, 1, 'PX', ms * 2)
    end
    if report then
      local pc, pt = seen[i][1], seen[i][2]
      local ct = math.max(tonumber(redis.call('PTTL', current)), 0)
      out[#out + 1] = amount - (math.floor(pc * pt / ms) + cc)
      out[#out + 1] = sliding_reset(pc, pt, cc, ct, ms)
    end
  end
end
return out
"""


class RedisScriptEngine:
    remote = True

    @staticmethod
    def supports(storage: Storage) -> TypeGuard[RedisStorage]:
        return isinstance(storage, RedisStorage) and isinstance(storage.bridge, RedispyBridge)

    def __init__(self, storage: RedisStorage, strategy: str, *, timeout: float = 1.0) -> None:
        self.storage = storage
        self.strategy = strategy
        self.timeout = timeout
        self.sliding = strategy == "sliding-window-counter"
        self.per_limit = isinstance(storage, RedisClusterStorage)
        bridge = storage.bridge
        if not isinstance(bridge, RedispyBridge):
            raise TypeError("RedisScriptEngine runs its script through redis-py: see RedisScriptEngine.supports")
        self.bridge = bridge
        self.prefixed = bridge.prefixed_key
        self.script = self._client().register_script(SCRIPT)

    def keys(self, limit: Limit, ident: str) -> list[str]:
        """The Redis keys of one limit, exactly as `limits`' Redis storage names them."""
        key = limit.key(ident)
        if self.sliding:
            return [self.prefixed(f"{{{key}}}/-1"), self.prefixed(f"{{{key}}}")]
        return [self.prefixed(key)]

    async def acquire(self, limits: Sequence[Limit], ids: Sequence[str], report: bool) -> Verdict:
        try:
            async with asyncio.timeout(self.timeout):
                if not self.per_limit:
                    return await self._run(limits, ids, report)
                windows: list[float] = []
                for limit, ident in zip(limits, ids):
                    verdict = await self._run((limit,), (ident,), report)
                    if verdict.failed is not None:
                        return verdict
                    windows += verdict.windows
                return Verdict(None, 0, windows) if report else TAKEN
        except StorageError:
            raise
        except Exception as exc:  # any failure of the remote storage (redis-py's cluster client raises
            raise StorageError(exc) from exc  # RedisClusterException, no RedisError, when it finds no cluster)

    async def _run(self, limits: Sequence[Limit], ids: Sequence[str], report: bool) -> Verdict:
        keys: list[str] = []
        args: list[Any] = [self.strategy]
        for limit, ident in zip(limits, ids):
            keys += self.keys(limit, ident)
            args += (limit.amount, limit.expiry, 1 if report and limit.report else 0)
        result = await self.script(keys=keys, args=args)
        if int(result[0]):
            return refused(limits[int(result[0]) - 1], int(result[1]) / 1000)
        if not report:
            return TAKEN
        return Verdict(None, 0, [int(v) / 1000 if i % 2 else int(v) for i, v in enumerate(result[1:])])

    def _client(self) -> Redis | RedisCluster:
        # limits types the connection by a protocol narrower than the redis-py client it is
        return cast("Redis | RedisCluster", self.bridge.get_connection())

    async def aclose(self) -> None:
        await self._client().aclose()
