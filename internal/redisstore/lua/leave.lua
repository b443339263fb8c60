-- leave: remove sessions, whatever post they view.
-- KEYS[1] - viewers hash
-- KEYS[2] - deadlines sorted set
-- KEYS[3] - seq counter
-- ARGV[1..4] - key and channel names (see names() in common.lua)
-- ARGV[5..n] - session ids; unknown ones are ignored
-- Returns the number of sessions that were viewing a post.
names()
local left = 0
local changed = {}
for i = first_arg, #ARGV do
  local sid = ARGV[i]
  redis.call('DEL', N.session .. sid)
  redis.call('ZREM', KEYS[2], sid)
  if forget(sid, changed) then
    left = left + 1
  end
end
publish_changed(changed)
return left
