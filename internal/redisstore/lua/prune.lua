-- prune: remove sessions whose key has expired.
-- KEYS[1] - viewers hash
-- KEYS[2] - deadlines sorted set
-- KEYS[3] - seq counter
-- KEYS[4..n] - the keys touched (see common.lua)
-- ARGV[1..7] - key and channel names (see names() in common.lua)
-- ARGV[8..n] - pairs of session id that is due, the post Go believes it
--              views
-- Returns {number of pruned sessions, how many ms after its deadline each
-- was pruned..., then sid, post of each session found on another post}. A
-- session whose key still exists is live (an app server refreshed or
-- re-registered it): its deadline is set back to the key's real expiry and
-- nothing else is touched, so racing app servers and gc replicas are safe.
names()
local now = now_ms()
local posts, looked, seen, elsewhere = {}, {}, {}, {}
for i = first_arg, #ARGV, 2 do
  local sid = ARGV[i]
  if not seen[sid] then
    seen[sid] = true
    local key = N.session .. sid
    -- EXISTS on an expired key also makes Redis expire it now (lazy expiry).
    if redis.call('EXISTS', key) == 1 then
      looked[#looked + 1] = {sid = sid, live = true, pttl = redis.call('PTTL', key),
        deadline = redis.call('ZSCORE', KEYS[2], sid)}
    else
      local s = look(sid, ARGV[i + 1], posts, elsewhere)
      if s then
        looked[#looked + 1] = s
      end
    end
  end
end
-- Writes only from here (see look in common.lua); deadlines put back
-- before any is removed, so the index is not emptied under them.
for _, s in ipairs(looked) do
  if s.live and s.pttl >= 0 then
    redis.call('ZADD', KEYS[2], now + s.pttl, s.sid)
  end
end
local lags = {}
local changed = {}
for _, s in ipairs(looked) do
  if s.live then
    if s.pttl < 0 and s.deadline then
      -- A session key without a TTL was not written by these scripts; it
      -- can never become due, so it must not stay in the index.
      redis.call('ZREM', KEYS[2], s.sid)
    end
  else
    remove(s, posts, changed)
    if s.post then
      lags[#lags + 1] = s.deadline and now - tonumber(s.deadline) or 0
    end
  end
end
publish_changed(posts, changed)
local out = {#lags}
for i = 1, #lags do
  out[#out + 1] = lags[i]
end
for i = 1, #elsewhere do
  out[#out + 1] = elsewhere[i]
end
return out
