-- leave: remove sessions from the posts they view.
-- KEYS[1] - viewers hash
-- KEYS[2] - deadlines sorted set
-- KEYS[3] - seq counter
-- KEYS[4..n] - the keys touched (see common.lua)
-- ARGV[1..5] - key and channel names (see names() in common.lua)
-- ARGV[6..n] - pairs of session id, the post Go believes it views; unknown
--              sessions are ignored
-- Returns {left, then sid, post of each session found on another post}: those
-- are untouched, for Go to leave again naming the post.
names()
local left = 0
local changed = {}
local elsewhere = {}
for i = first_arg, #ARGV, 2 do
  local sid, expected = ARGV[i], ARGV[i + 1]
  local post = redis.call('HGET', KEYS[1], sid)
  if forget(sid, expected, changed, elsewhere) then
    redis.call('DEL', N.session .. sid)
    redis.call('ZREM', KEYS[2], sid)
    if post then
      left = left + 1
    end
  end
end
publish_changed(changed)
local out = {left}
for i = 1, #elsewhere do
  out[#out + 1] = elsewhere[i]
end
return out
