"""The Lua scripts of :mod:`medianest.messaging.backends.redis`.

Both take Redis's own clock (``TIME``; Redis 7 replicates a script's effects, so a script
may read it before writing), so that every process agrees on when a retry is due. They
touch keys they compute (the group's streams), which suits one Redis, not Redis Cluster.
"""

_NOW_MS = (
    "local t = redis.call('TIME') "
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) "
)

SCHEDULE_RETRY = (
    _NOW_MS
    + """
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[4])
return redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
"""
)
"""KEYS: delayed zset, stream; ARGV: group, entry id, delay ms, envelope. Schedule, ack."""

MOVE_DUE = (
    _NOW_MS
    + """
local moved, next_in = 0, -1
for i = 1, #KEYS, 2 do
  local due = redis.call('ZRANGEBYSCORE', KEYS[i], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
  for _, text in ipairs(due) do
    redis.call('XADD', KEYS[i + 1], '*', 'm', text)
    redis.call('ZREM', KEYS[i], text)
  end
  moved = moved + #due
  local head = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
  if head[2] then
    local wait = math.max(0, tonumber(head[2]) - now)
    if next_in < 0 or wait < next_in then next_in = wait end
  end
end
return {moved, next_in}
"""
)
"""KEYS: (delayed zset, retry stream) pairs; ARGV: batch. Moves due retries; answers
{moved, ms until the next one is due or -1}."""
