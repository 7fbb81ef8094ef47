"""The cluster's Lua scripts (edge.bus.cluster): each change of the routing state the nodes
share in Redis is one atomic step, and a change of the filters or the retained messages is
announced in that same step, so that every node sees the changes in the order Redis made them.
"""

from __future__ import annotations

import hashlib
from typing import Any

from twisted.internet.defer import Deferred

from .client import Commands, RedisError

# KEYS[1] = subs hash; ARGV[1] = node, ARGV[2] = interest channel, then op/filter pairs.
INTEREST_SCRIPT = """
local node, changed = ARGV[1], {}
for i = 3, #ARGV, 2 do
  local op, f = ARGV[i], ARGV[i + 1]
  local raw = redis.call('HGET', KEYS[1], f)
  local nodes = raw and cjson.decode(raw) or {}
  local out = {}
  for _, n in ipairs(nodes) do if n ~= node then out[#out + 1] = n end end
  if op == '+' then out[#out + 1] = node end
  if #out == 0 then redis.call('HDEL', KEYS[1], f)
  else redis.call('HSET', KEYS[1], f, cjson.encode(out)) end
  changed[#changed + 1] = {f, out}
end
redis.call('PUBLISH', ARGV[2], cjson.encode(changed))
return #changed
"""

# Removes a node from every filter (a node starting again, stopping, or found dead).
PURGE_SCRIPT = """
local node, changed = ARGV[1], {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local ok, nodes = pcall(cjson.decode, all[i + 1])
  if ok and type(nodes) == 'table' then
    local out, found = {}, false
    for _, n in ipairs(nodes) do
      if n == node then found = true else out[#out + 1] = n end
    end
    if found then
      if #out == 0 then redis.call('HDEL', KEYS[1], all[i])
      else redis.call('HSET', KEYS[1], all[i], cjson.encode(out)) end
      changed[#changed + 1] = {all[i], out}
    end
  end
end
if #changed > 0 then redis.call('PUBLISH', ARGV[2], cjson.encode(changed)) end
return #changed
"""

# KEYS[1] = retained hash; ARGV[1] = retain channel, ARGV[2] = the batch, then topic/record
# pairs (a record with an empty payload clears its topic).
RETAIN_SCRIPT = """
for i = 3, #ARGV, 2 do
  if ARGV[i + 1] == '' then redis.call('HDEL', KEYS[1], ARGV[i])
  else redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
"""

# KEYS[1] = tl:route, KEYS[2] = tl:mqtt:clients; ARGV[1] = node, then device ('' for none) /
# client id pairs: every connection a node accepted in one reactor turn. Returns, per pair,
# the nodes that held the device and the client id before.
CLAIM_SCRIPT = """
local node, out = ARGV[1], {}
for i = 2, #ARGV, 2 do
  local dev, cid = ARGV[i], ARGV[i + 1]
  local before_dev = ''
  if dev ~= '' then
    before_dev = redis.call('HGET', KEYS[1], dev) or ''
    redis.call('HSET', KEYS[1], dev, node)
  end
  out[#out + 1] = before_dev
  out[#out + 1] = redis.call('HGET', KEYS[2], cid) or ''
  redis.call('HSET', KEYS[2], cid, node)
end
return out
"""

# KEYS[1] = tl:mqtt:clients; ARGV[1] = node, then client ids: each registration that is
# still this node's goes (the connections that ended in one reactor turn).
DELETE_IF_OURS = """
local n = 0
for i = 2, #ARGV do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[1] then
    n = n + redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return n
"""

# Forwarded messages wait for their node in a list, not in a pub/sub connection's output
# buffer (which Redis cuts at client-output-buffer-limit pubsub, losing what it held). KEYS[1] =
# the node's queue, KEYS[2] = its byte count; ARGV[1] = a batch, ARGV[2] = the node's channel,
# ARGV[3] = how long (ms) the keys of a node that stopped popping outlive the last push.
# A batch into an empty queue wakes the node (a 'W' on its channel). Returns the bytes waiting.
PUSH_SCRIPT = """
local n = redis.call('RPUSH', KEYS[1], ARGV[1])
local waiting = redis.call('INCRBY', KEYS[2], #ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
if n == 1 then redis.call('PUBLISH', ARGV[2], 'W') end
return waiting
"""

# The node takes up to ARGV[1] batches from its queue (KEYS[1]) and counts their bytes off
# KEYS[2]; returns them, oldest first (an empty list: nothing waits).
POP_SCRIPT = """
local items = redis.call('LPOP', KEYS[1], ARGV[1])
if not items then
  redis.call('DEL', KEYS[2])
  return {}
end
local n = 0
for _, item in ipairs(items) do n = n + #item end
if redis.call('LLEN', KEYS[1]) == 0 then redis.call('DEL', KEYS[2])
else redis.call('DECRBY', KEYS[2], n) end
return items
"""

SCRIPTS = (
    INTEREST_SCRIPT,
    PURGE_SCRIPT,
    RETAIN_SCRIPT,
    CLAIM_SCRIPT,
    DELETE_IF_OURS,
    PUSH_SCRIPT,
    POP_SCRIPT,
)
# Redis names scripts by their SHA-1.
_SHA1 = {source: hashlib.sha1(source.encode()).hexdigest() for source in SCRIPTS}  # noqa: S324


def run_script(client: Commands, source: str, *args: Any) -> Deferred[Any]:
    """EVALSHA (the scripts are loaded when the cluster starts); EVAL if Redis lost them."""
    d = client.execute("EVALSHA", _SHA1[source], *args)

    def missing(failure: Any) -> Any:
        if failure.check(RedisError) and "NOSCRIPT" in str(failure.value):
            return client.execute("EVAL", source, *args)
        return failure

    return d.addErrback(missing)
