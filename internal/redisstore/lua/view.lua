-- view: make a session a viewer of a post, moving it off any other post of
-- the partition (Go moves it off a post of another partition first).
-- KEYS[1] - viewers hash (session id -> post id)
-- KEYS[2] - deadlines sorted set (session id -> deadline in ms)
-- KEYS[3] - seq counter
-- KEYS[4..n] - the keys touched (see common.lua)
-- ARGV[1..6] - key and channel names (see names() in common.lua)
-- ARGV[7] - session id
-- ARGV[8] - post id
-- ARGV[9] - session TTL in milliseconds
-- ARGV[10] - "1" to count a view of the post, "0" not to
-- ARGV[11] - lifetime of the post's views counter after this view, in ms; 0
--            keeps it forever (and takes away a lifetime set before)
-- ARGV[12] - the post Go believes the session views in this partition, or ""
-- ARGV[13] - "1" if the tab is hidden (in the post's hidden set), "0" if not
-- Returns {viewers, views, seq, reading} of the post, or {-1, old} untouched
-- when the session views another post old than Go believes: Go runs it again
-- with it.
names()
local sid, post, ttl = ARGV[first_arg], ARGV[first_arg + 1], tonumber(ARGV[first_arg + 2])
local count_view = ARGV[first_arg + 3]
local views_ttl = tonumber(ARGV[first_arg + 4])
local from = ARGV[first_arg + 5]
local hide = ARGV[first_arg + 6] == '1'
local now = now_ms()

local old = redis.call('HGET', KEYS[1], sid)
if old and old ~= post and old ~= from then
  return {-1, old}
end
-- Reads first, writes after (see look in common.lua): the old post's set
-- may be emptied, and so deleted, by the move.
local posts = {}
local leaves = old and old ~= post and redis.call('SISMEMBER', N.viewers .. old, sid) == 1
local was_hidden_old = old and old ~= post and redis.call('SISMEMBER', N.hidden .. old, sid) == 1
if leaves or was_hidden_old then
  post_numbers(old, posts)
end
local card = redis.call('SCARD', N.viewers .. post)
local added = redis.call('SISMEMBER', N.viewers .. post, sid) == 0
local views = tonumber(redis.call('GET', N.views .. post) or '0')
local hidden = hidden_count(post)
local was_hidden = redis.call('SISMEMBER', N.hidden .. post, sid) == 1

if leaves or was_hidden_old then
  local o = posts[old]
  if leaves then
    redis.call('SREM', N.viewers .. old, sid)
    o.card = o.card - 1
  end
  if was_hidden_old then
    o.hidden = o.hidden - 1
  end
  if o.card == 0 then
    redis.call('DEL', N.hidden .. old) -- gone with the last viewer (see hidden_count)
  elseif was_hidden_old then
    redis.call('SREM', N.hidden .. old, sid)
  end
  publish(old, o.card, o.views, o.hidden)
end
redis.call('SET', N.session .. sid, post, 'PX', ttl)
redis.call('HSET', KEYS[1], sid, post)
redis.call('ZADD', KEYS[2], now + ttl, sid)
if added then
  redis.call('SADD', N.viewers .. post, sid)
  card = card + 1
end
local turned = hide ~= was_hidden
if turned and hide then
  redis.call('SADD', N.hidden .. post, '', sid)
  hidden = hidden + 1
else
  redis.call('SADD', N.hidden .. post, '') -- exists while the post's viewers do
  if turned then
    redis.call('SREM', N.hidden .. post, sid)
    hidden = hidden - 1
  end
end
-- A session's first view of a post never finds it on that post already; a
-- view retried after a lost reply does, and must not count twice.
local counted = count_view == '1' and old ~= post
if counted then
  views = redis.call('INCR', N.views .. post)
end
-- Every view pushes the counter's expiry out, so only the totals of posts
-- nobody views any more go; a counter per made-up id cannot pile up.
if views_ttl > 0 then
  redis.call('PEXPIRE', N.views .. post, views_ttl)
else
  redis.call('PERSIST', N.views .. post)
end
if added or counted or turned then
  return publish(post, card, views, hidden)
end
return {card, views, seq(), math.max(0, card - hidden)}
