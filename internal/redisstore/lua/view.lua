-- view: make a session a viewer of a post, moving it off any other post.
-- KEYS[1] - viewers hash (session id -> post id)
-- KEYS[2] - deadlines sorted set (session id -> deadline in ms)
-- KEYS[3] - seq counter
-- ARGV[1] - key prefix; post and session keys are built from it
-- ARGV[2] - session id
-- ARGV[3] - post id
-- ARGV[4] - session TTL in milliseconds
-- ARGV[5] - "1" to count a view of the post, "0" not to
-- ARGV[6] - lifetime of the post's views counter after this view, in ms; 0
--           keeps it forever (and takes away a lifetime set before)
-- Returns {viewers, views, seq} of the post.
local sid, post, ttl = ARGV[2], ARGV[3], tonumber(ARGV[4])
local views_ttl = tonumber(ARGV[6])
local now = now_ms()

local old = redis.call('HGET', KEYS[1], sid)
if old and old ~= post then
  if redis.call('SREM', prefix .. 'viewers:' .. old, sid) == 1 then
    publish(old)
  end
end
redis.call('SET', prefix .. 'session:' .. sid, post, 'PX', ttl)
redis.call('HSET', KEYS[1], sid, post)
redis.call('ZADD', KEYS[2], now + ttl, sid)
local added = redis.call('SADD', prefix .. 'viewers:' .. post, sid)
-- A session's first view of a post never finds it on that post already; a
-- view retried after a lost reply does, and must not count twice.
local counted = ARGV[5] == '1' and old ~= post
if counted then
  redis.call('INCR', prefix .. 'views:' .. post)
end
-- Every view pushes the counter's expiry out, so only the totals of posts
-- nobody views any more go; a counter per made-up id cannot pile up.
if views_ttl > 0 then
  redis.call('PEXPIRE', prefix .. 'views:' .. post, views_ttl)
else
  redis.call('PERSIST', prefix .. 'views:' .. post)
end
if added == 1 or counted then
  return publish(post)
end
return read(post)
