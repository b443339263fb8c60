-- view: make a session a viewer of a post, moving it off any other post of
-- the partition (Go moves it off a post of another partition first).
-- KEYS[1] - viewers hash (session id -> post id)
-- KEYS[2] - deadlines sorted set (session id -> deadline in ms)
-- KEYS[3] - seq counter
-- KEYS[4..n] - the keys touched (see common.lua)
-- ARGV[1..7] - key and channel names (see names() in common.lua)
-- ARGV[8] - session id
-- ARGV[9] - post id
-- ARGV[10] - session TTL in milliseconds
-- ARGV[11] - "1" to count a view of the post, "0" not to
-- ARGV[12] - lifetime of the post's views counter after this view, in ms; 0
--            keeps it forever (and takes away a lifetime set before)
-- ARGV[13] - the post Go believes the session views in this partition, or ""
-- ARGV[14] - "1" if the tab is hidden (in the post's hidden set), "0" if not
-- ARGV[15] - the visitor id of the tab's browser, or "" (a person of its own)
-- Returns {viewers, views, seq, reading, people} of the post, or {-1, old}
-- untouched when the session views another post old than Go believes: Go
-- runs it again with it.
names()
local sid, post, ttl = ARGV[first_arg], ARGV[first_arg + 1], tonumber(ARGV[first_arg + 2])
local count_view = ARGV[first_arg + 3]
local views_ttl = tonumber(ARGV[first_arg + 4])
local from = ARGV[first_arg + 5]
local hide = ARGV[first_arg + 6] == '1'
local visitor = ARGV[first_arg + 7]
if visitor == '' then
  visitor = 's:' .. sid
end
local now = now_ms()

local old = redis.call('HGET', KEYS[1], sid)
if old and old ~= post and old ~= from then
  return {-1, old}
end
-- Reads first, writes after (see look in common.lua): the old post's sets
-- may be emptied, and so deleted, by the move.
local posts = {}
local moving = old and old ~= post
local leaves = moving and redis.call('SISMEMBER', N.viewers .. old, sid) == 1
local was_hidden_old = moving and redis.call('SISMEMBER', N.hidden .. old, sid) == 1
local v_old = moving and redis.call('HGET', N.people .. old, 's:' .. sid)
if leaves or was_hidden_old or v_old then
  post_numbers(old, posts)
  if v_old then
    posts[old].rcs[v_old] = tonumber(redis.call('HGET', N.people .. old, 'v:' .. v_old) or '0') or 0
  end
end
local card = redis.call('SCARD', N.viewers .. post)
local added = redis.call('SISMEMBER', N.viewers .. post, sid) == 0
local views = tonumber(redis.call('GET', N.views .. post) or '0')
local hidden_card = redis.call('SCARD', N.hidden .. post)
local hidden = math.max(0, hidden_card - 1) -- see hidden_count
local was_hidden = redis.call('SISMEMBER', N.hidden .. post, sid) == 1
local counts = redis.call('HMGET', N.people .. post, '#', 'n')
local distinct, entries = tonumber(counts[1] or '0') or 0, tonumber(counts[2] or '0') or 0
local v_cur = redis.call('HGET', N.people .. post, 's:' .. sid)
local rc_cur = v_cur and v_cur ~= visitor and tonumber(redis.call('HGET', N.people .. post, 'v:' .. v_cur) or '0') or 0
local rc_new = tonumber(redis.call('HGET', N.people .. post, 'v:' .. visitor) or '0') or 0

if leaves or was_hidden_old or v_old then
  local o = posts[old]
  if leaves then
    redis.call('SREM', N.viewers .. old, sid)
    o.card = o.card - 1
  end
  if was_hidden_old then
    o.hidden = o.hidden - 1
  end
  local gone = leaves and o.card == 0
  if v_old then
    unname(old, o, sid, v_old, gone)
  end
  if gone then
    redis.call('DEL', N.hidden .. old, N.people .. old) -- gone with the last viewer (see hidden_count)
  elseif was_hidden_old then
    redis.call('SREM', N.hidden .. old, sid)
  end
  publish(old, o.card, o.views, o.hidden, o.distinct, o.entries)
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
  if hidden_card == 0 then
    redis.call('SADD', N.hidden .. post, '') -- exists while the post's viewers do
  end
  if turned then
    redis.call('SREM', N.hidden .. post, sid)
    hidden = hidden - 1
  end
end
-- The session's visitor in the post's people (see people_of).
local renamed = v_cur ~= visitor
if renamed then
  if v_cur then
    if rc_cur <= 1 then
      redis.call('HDEL', N.people .. post, 'v:' .. v_cur)
      distinct = distinct - 1
    else
      redis.call('HINCRBY', N.people .. post, 'v:' .. v_cur, -1)
    end
  else
    entries = entries + 1
  end
  if rc_new == 0 then
    distinct = distinct + 1
  end
  redis.call('HINCRBY', N.people .. post, 'v:' .. visitor, 1)
  redis.call('HSET', N.people .. post, 's:' .. sid, visitor, '#', distinct, 'n', entries)
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
if added or counted or turned or renamed then
  return publish(post, card, views, hidden, distinct, entries)
end
return {card, views, seq(), math.max(0, card - hidden), people_of(card, distinct, entries)}
