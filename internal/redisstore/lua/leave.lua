-- leave: remove sessions, whatever post they view.
-- KEYS[1] - viewers hash
-- KEYS[2] - deadlines sorted set
-- KEYS[3] - seq counter
-- ARGV[1] - key prefix
-- ARGV[2..n] - session ids; unknown ones are ignored
-- Returns the number of sessions that were viewing a post.
local left = 0
local changed = {}
for i = 2, #ARGV do
  local sid = ARGV[i]
  redis.call('DEL', prefix .. 'session:' .. sid)
  redis.call('ZREM', KEYS[2], sid)
  local post = redis.call('HGET', KEYS[1], sid)
  if post then
    redis.call('HDEL', KEYS[1], sid)
    if redis.call('SREM', prefix .. 'viewers:' .. post, sid) == 1 then
      changed[post] = true
    end
    left = left + 1
  end
end
-- One count per post and batch: a shutdown leaving 500 viewers of one post
-- publishes once, not 500 times.
for post in pairs(changed) do
  publish(post)
end
return left
