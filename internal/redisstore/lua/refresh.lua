-- refresh: push live sessions' deadlines one TTL into the future; or, to
-- hold them, to at least a time into the future, never nearer.
-- KEYS[1] - viewers hash
-- KEYS[2] - deadlines sorted set
-- KEYS[3] - seq counter (unused; the helpers' layout)
-- KEYS[4..n] - the keys touched (see common.lua)
-- ARGV[1..7] - key and channel names (see names() in common.lua)
-- ARGV[8] - session TTL in milliseconds (the hold's length, holding)
-- ARGV[9] - "1" to hold: a deadline further out than the TTL is kept
-- ARGV[10..n] - pairs of session id, post id the app server believes it views
-- Returns the session ids whose key is gone or names another post, or that
-- are missing from the viewers hash or the post's set; the app server
-- registers those again with view, which also repairs a move whose reply was
-- lost, and state that a failover, a restore or a hand edit left half there.
names()
local ttl = tonumber(ARGV[first_arg])
local hold = ARGV[first_arg + 1] == '1'
local now = now_ms()
local missing = {}
for i = first_arg + 2, #ARGV, 2 do
  local sid, post = ARGV[i], ARGV[i + 1]
  local key = N.session .. sid
  if redis.call('GET', key) == post and redis.call('HGET', KEYS[1], sid) == post
      and redis.call('SISMEMBER', N.viewers .. post, sid) == 1 then
    if not hold or tonumber(redis.call('ZSCORE', KEYS[2], sid) or '0') < now + ttl then
      redis.call('PEXPIRE', key, ttl)
      redis.call('ZADD', KEYS[2], now + ttl, sid)
    end
  else
    missing[#missing + 1] = sid
  end
end
return missing
