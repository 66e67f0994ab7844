//! The Lua scripts. Each runs atomically in Redis, and reads the time from Redis (`TIME`) so that
//! the hosts' clocks never matter.
//!
//! Keys of other members' hashes are built inside the scripts from the member prefix; they share
//! the namespace's hash tag, so they live in the same slot as the declared keys.

/// Join (`ARGV[4] == "join"`) or heartbeat (`"beat"`).
///
/// KEYS: hosts, generation, control, left, broadcast, own member hash.
/// ARGV: own member, host timeout ms, generation (a fresh candidate at join, the known one at a
/// heartbeat), mode, member hash prefix, predecessor (`<incarnation hex>:<written>` or empty).
///
/// Returns `{status, generation, stream end, {member, written, predecessor, ...}, {left...}}`;
/// status `ok`, or `lost` (the generation changed: Redis lost its data) or `gone` (this member was
/// removed, as timed out) for a heartbeat, which then changes nothing.
pub(crate) const MEMBERSHIP: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local me = ARGV[1]
local timeout = tonumber(ARGV[2])
local prefix = ARGV[5]
local generation = redis.call('GET', KEYS[2])
if ARGV[4] == 'join' then
  if not generation then
    redis.call('SET', KEYS[2], ARGV[3])
    generation = ARGV[3]
  end
  redis.call('HSET', KEYS[6], 'seq', 0, 'started', now, 'prev', ARGV[6])
else
  if generation ~= ARGV[3] then
    return {'lost', generation or '', '', {}, {}}
  end
  if not redis.call('ZSCORE', KEYS[1], me) then
    return {'gone', generation, '', {}, {}}
  end
end
redis.call('ZADD', KEYS[1], now + timeout, me)
redis.call('PEXPIRE', KEYS[6], timeout)
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
for _, member in ipairs(dead) do
  local written = redis.call('HGET', prefix .. member, 'seq') or '0'
  redis.call('ZREM', KEYS[1], member)
  redis.call('DEL', prefix .. member)
  redis.call('PUBLISH', KEYS[3], 'expired ' .. member .. ' ' .. written)
end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. now)
local left = redis.call('ZRANGE', KEYS[4], 0, -1)
local members = {}
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local fields = redis.call('HMGET', prefix .. member, 'seq', 'prev')
  table.insert(members, member)
  table.insert(members, fields[1] or '0')
  table.insert(members, fields[2] or '')
end
local stream_end = ''
if ARGV[4] == 'join' then
  local last = redis.call('XREVRANGE', KEYS[5], '+', '-', 'COUNT', 1)
  if last[1] then stream_end = last[1][1] else stream_end = '0-0' end
end
return {'ok', generation, stream_end, members, left}
"#;

/// Broadcasts in one round trip: one stream entry holding them all (src/remote/packing.rs), then
/// the sender's written count in its member hash (only if the hash still exists: a member
/// declared dead must not come back without a timeout). One script, so a batch is written whole
/// or not at all.
///
/// KEYS: broadcast, own member hash. ARGV: host, incarnation hex, max length, the first sequence
/// number, the last, the packed frames.
pub(crate) const BROADCAST: &str = r#"
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'h', ARGV[1], 'i', ARGV[2], 's', ARGV[4], 'f', ARGV[6])
if redis.call('EXISTS', KEYS[2]) == 1 then
  -- A batch whose answer was lost may run after a later one: the count never goes back.
  local written = tonumber(redis.call('HGET', KEYS[2], 'seq') or '0') or 0
  if tonumber(ARGV[5]) > written then
    redis.call('HSET', KEYS[2], 'seq', ARGV[5])
  end
end
return 1
"#;

/// A graceful leave: out of the members, into the recently-left set (for one host timeout), and
/// a notice on the control channel with the final written count.
///
/// KEYS: hosts, own member hash, left, control. ARGV: own member, written, host timeout ms.
pub(crate) const LEAVE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PUBLISH', KEYS[4], 'left ' .. ARGV[1] .. ' ' .. ARGV[2])
return 1
"#;

/// Takes the agent lease if nobody holds it: `SET NX PX`, with a new epoch, max(INCR counter,
/// Redis time in ms), which grows even after Redis lost the counter; the counter is set to it, so
/// the next epoch is larger still. A notice on the control channel names the new holder.
///
/// KEYS: lease, epoch counter, control. ARGV: holder (`<host> <token>`), lease ms, host.
///
/// Returns `{1, value, fresh}` when taken (`fresh`: 1 if the counter did not exist, so Redis may
/// have lost a lease of before), else `{0, the holder's value, 0}`.
pub(crate) const AGENT_ACQUIRE: &str = r#"
local current = redis.call('GET', KEYS[1])
if current then
  return {0, current, 0}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local counted = redis.call('INCR', KEYS[2])
local fresh = 0
if counted == 1 then fresh = 1 end
local epoch = string.format('%d', math.max(counted, now))
redis.call('SET', KEYS[2], epoch)
local value = epoch .. ' ' .. ARGV[1]
redis.call('SET', KEYS[1], value, 'NX', 'PX', ARGV[2])
redis.call('PUBLISH', KEYS[3], 'agent ' .. ARGV[3] .. ' ' .. epoch)
return {1, value, fresh}
"#;

/// Renews the agent lease if it is still exactly ours (compare-and-PEXPIRE).
///
/// KEYS: lease. ARGV: our value, lease ms. Returns `{1, value}` when renewed, else
/// `{0, the holder's value or ''}`.
pub(crate) const AGENT_RENEW: &str = r#"
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, current}
end
return {0, current or ''}
"#;

/// Gives the agent lease up if it is still exactly ours (compare-and-delete), and tells the
/// others on the control channel, so that they try at once.
///
/// KEYS: lease, control. ARGV: our value, host, epoch. Returns 1 if it was ours.
pub(crate) const AGENT_RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', KEYS[2], 'released ' .. ARGV[2] .. ' ' .. ARGV[3])
  return 1
end
return 0
"#;
