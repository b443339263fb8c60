-- prune: remove sessions whose key has expired.
-- KEYS[1] - viewers hash
-- KEYS[2] - deadlines sorted set
-- KEYS[3] - seq counter
-- ARGV[1..4] - key and channel names (see names() in common.lua)
-- ARGV[5..n] - session ids that are due
-- Returns, for each pruned session, how many ms after its deadline it was
-- pruned. A session whose key still exists is live (an app server refreshed
-- or re-registered it): its deadline is set back to the key's real expiry and
-- nothing else is touched, so racing app servers and gc replicas are safe.
names()
local now = now_ms()
local lags = {}
local changed = {}
for i = first_arg, #ARGV do
  local sid = ARGV[i]
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
    redis.call('ZREM', KEYS[2], sid)
    if forget(sid, changed) then
      local lag = 0
      if deadline then
        lag = now - tonumber(deadline)
      end
      lags[#lags + 1] = lag
    end
  end
end
publish_changed(changed)
return lags
