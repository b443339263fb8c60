-- prune: remove sessions whose key has expired.
-- KEYS[1] - viewers hash
-- KEYS[2] - deadlines sorted set
-- KEYS[3] - seq counter
-- KEYS[4..n] - the keys touched (see common.lua)
-- ARGV[1..5] - key and channel names (see names() in common.lua)
-- ARGV[6..n] - pairs of session id that is due, the post Go believes it
--              views
-- Returns {number of pruned sessions, how many ms after its deadline each
-- was pruned..., then sid, post of each session found on another post}. A
-- session whose key still exists is live (an app server refreshed or
-- re-registered it): its deadline is set back to the key's real expiry and
-- nothing else is touched, so racing app servers and gc replicas are safe.
names()
local now = now_ms()
local lags = {}
local changed = {}
local elsewhere = {}
for i = first_arg, #ARGV, 2 do
  local sid, expected = ARGV[i], ARGV[i + 1]
  local key = N.session .. sid
  -- EXISTS on an expired key also makes Redis expire it now (lazy expiry).
  if redis.call('EXISTS', key) == 1 then
    local pttl = redis.call('PTTL', key)
    if pttl >= 0 then
      redis.call('ZADD', KEYS[2], now + pttl, sid)
    else
      -- A session key without a TTL was not written by these scripts; it
      -- can never become due, so it must not stay in the index.
      redis.call('ZREM', KEYS[2], sid)
    end
  else
    local deadline = redis.call('ZSCORE', KEYS[2], sid)
    local post = redis.call('HGET', KEYS[1], sid)
    if forget(sid, expected, changed, elsewhere) then
      redis.call('ZREM', KEYS[2], sid)
      if post then
        local lag = 0
        if deadline then
          lag = now - tonumber(deadline)
        end
        lags[#lags + 1] = lag
      end
    end
  end
end
publish_changed(changed)
local out = {#lags}
for i = 1, #lags do
  out[#out + 1] = lags[i]
end
for i = 1, #elsewhere do
  out[#out + 1] = elsewhere[i]
end
return out
