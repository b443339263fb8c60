-- due: the sessions whose deadline has passed, by Redis's clock.
-- KEYS[1] - deadlines sorted set
-- ARGV[1] - at most this many session ids
-- Returns {ms until the next deadline or -1 if none, sid, sid, ...}.
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local out = {-1}
if #due == 0 then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if #first == 2 then
    out[1] = math.max(0, tonumber(first[2]) - now)
  end
else
  out[1] = 0
end
for i = 1, #due do
  out[#out + 1] = due[i]
end
return out
