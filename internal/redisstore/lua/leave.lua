-- leave: remove sessions from the posts they view.
-- KEYS[1] - viewers hash
-- KEYS[2] - deadlines sorted set
-- KEYS[3] - seq counter
-- KEYS[4..n] - the keys touched (see common.lua)
-- ARGV[1..7] - key and channel names (see names() in common.lua)
-- ARGV[8..n] - pairs of session id, the post Go believes it views; unknown
--              sessions are ignored
-- Returns {left, then sid, post of each session found on another post}: those
-- are untouched, for Go to leave again naming the post.
names()
local posts, looked, seen, elsewhere = {}, {}, {}, {}
for i = first_arg, #ARGV, 2 do
  local sid = ARGV[i]
  if not seen[sid] then
    seen[sid] = true
    local s = look(sid, ARGV[i + 1], posts, elsewhere)
    if s then
      s.key = redis.call('EXISTS', N.session .. sid) == 1
      looked[#looked + 1] = s
    end
  end
end
-- Writes only from here (see look in common.lua).
local left = 0
local changed = {}
for _, s in ipairs(looked) do
  if s.key then
    redis.call('DEL', N.session .. s.sid)
  end
  remove(s, posts, changed)
  if s.post then
    left = left + 1
  end
end
publish_changed(posts, changed)
local out = {left}
for i = 1, #elsewhere do
  out[#out + 1] = elsewhere[i]
end
return out
