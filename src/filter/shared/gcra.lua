-- One shared rate-limit check: GCRA (the generic cell rate algorithm) for one client under one
-- rate rule, on Redis's own clock, and, when bans are shared, the ban check and the count of
-- the client's rate-limit refusals. Every balancer runs this same script (EVALSHA), and Redis
-- runs one script at a time, so two balancers asking for the same client at the same instant
-- are served one after the other: the limit is one limit, not one per balancer.
--
-- It is the algorithm of src/filter/rate_limit.rs, with instants in microseconds since the Unix
-- epoch read from redis.call('TIME'), so that the balancers' own clocks never matter. A Lua
-- number is a double: exact for whole microseconds until the year 2255.
--
-- KEYS[1]  PREFIX rl:{CLIENT}:RULE  the client's "theoretical arrival time" (tat) under RULE (a
--                                    rule's path, * for the general rule): when its bucket is
--                                    full again. Expires then: a full bucket is no key at all.
-- KEYS[2]  PREFIX hits:{CLIENT}     the client's recent rate-limit refusals, oldest first, at
--                                    most after + 1 of them (only with shared bans)
-- KEYS[3]  PREFIX ban:{CLIENT}      when the client's ban ends; expires then
--          The {CLIENT} hash tag puts one client's keys in one Redis Cluster slot.
-- ARGV[1]  interval: microseconds for one token to come back (period / count)
-- ARGV[2]  depth: burst * interval
-- ARGV[3]  ban after: a client refused more than this many times within the window is banned;
--          0 when bans are not shared (then KEYS[2] and KEYS[3] are not touched)
-- ARGV[4]  ban window, microseconds
-- ARGV[5]  ban duration, microseconds
--
-- Returns { verdict, microseconds, now }:
--   {0, 0, now}         allowed: a token was taken
--   {1, wait, now}      refused: a token is back in `wait`; the tat did not move
--   {2, left, now}      refused: the client is banned for `left` more
--   {3, duration, now}  refused, and this refusal was one too many: banned from now for `duration`
-- `now` is Redis's clock, for the caller's record of the ban's end.
--
-- A worked example: rate=2/s burst=3, so interval = 500000 and depth = 1500000; a client
-- quiet until now (no key). Times in ms after its first request (the script works in us):
--
--   at      GET tat   max(tat, now) + interval   minus now   <= depth?   answer   key after
--   0       (none)    0 + 500 = 500              500         yes         0        500, PX 500
--   0       500       500 + 500 = 1000           1000        yes         0        1000, PX 1000
--   0       1000      1000 + 500 = 1500          1500        yes         0        1500, PX 1500
--   0       1500      1500 + 500 = 2000          2000        no          1, 500   unchanged
--   499     1500      2000                       1501        no          1, 1     unchanged
--   500     1500      2000                       1500        yes         0        2000, PX 1500
--   60000   (expired) 60000 + 500 = 60500        500         yes         0        60500, PX 500
--
-- A refusal never moves the tat, so a client refused at T with `wait` is refused by every call
-- before T + wait, whichever balancer makes it: a balancer may keep "refused until T + wait" to
-- itself and answer 429 without asking (the near-cache in src/filter/shared/mod.rs).
--
-- With `ban after=2 window=10s` shared (ARGV[3] = 2): each refusal appends now to KEYS[2] and
-- counts the entries younger than the window; the third within 10 s sets KEYS[3] to now +
-- duration (PX duration), drops KEYS[1] and KEYS[2] (the client starts afresh after its ban),
-- and answers 3. The balancer then adds the ban to the sorted set PREFIX bans and publishes it,
-- so that every balancer refuses the client without asking (src/filter/shared/store.rs).

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local depth = tonumber(ARGV[2])
local after = tonumber(ARGV[3])

-- Whole numbers as digits: tostring would write 1.7e+15.
local function int(x)
  return string.format('%.0f', x)
end

-- A PX of whole milliseconds, at least 1.
local function px(us)
  return math.max(1, math.ceil(us / 1000))
end

if after > 0 then
  local left = redis.call('PTTL', KEYS[3])
  if left > 0 then
    return { 2, left * 1000, now }
  end
end

local tat = tonumber(redis.call('GET', KEYS[1])) or now
local next = math.max(tat, now) + interval
if next - now <= depth then
  redis.call('SET', KEYS[1], int(next), 'PX', px(next - now))
  return { 0, 0, now }
end
local wait = next - now - depth
if after == 0 then
  return { 1, wait, now }
end

-- The sliding window of refusals, as src/filter/bans.rs keeps it in memory.
local window = tonumber(ARGV[4])
local duration = tonumber(ARGV[5])
redis.call('RPUSH', KEYS[2], int(now))
redis.call('LTRIM', KEYS[2], -(after + 1), -1)
local hits = 0
for _, h in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  if now - tonumber(h) < window then
    hits = hits + 1
  end
end
if hits > after then
  redis.call('SET', KEYS[3], int(now + duration), 'PX', px(duration))
  redis.call('DEL', KEYS[1], KEYS[2])
  return { 3, duration, now }
end
redis.call('PEXPIRE', KEYS[2], px(window))
return { 1, wait, now }
