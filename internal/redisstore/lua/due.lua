-- due: the sessions whose deadline has passed, by Redis's clock.
-- KEYS[1] - viewers hash
-- KEYS[2] - deadlines sorted set
-- KEYS[3] - seq counter (unused; the helpers' layout)
-- ARGV[1..7] - key and channel names (see names() in common.lua)
-- ARGV[8] - at most this many session ids
-- Returns {ms until the next deadline or -1 if none, sid, post, sid, post,
-- ...}, each post from the viewers hash: Go names it to prune. A deadline
-- whose session is not in the hash is an orphan with no count to change: it
-- is dropped here (if its session is alive after all, the app server's
-- refresh finds it missing from the hash and registers it again).
names()
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[first_arg]))
local out = {-1}
for i = 1, #due do
  local sid = due[i]
  local post = redis.call('HGET', KEYS[1], sid)
  if post then
    out[#out + 1] = sid
    out[#out + 1] = post
  else
    redis.call('ZREM', KEYS[2], sid)
  end
end
if #due > 0 then
  -- Orphans dropped count as progress: the caller polls again at once.
  out[1] = 0
else
  local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  if #first == 2 then
    out[1] = math.max(0, tonumber(first[2]) - now)
  end
end
return out
