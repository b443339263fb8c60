-- common: helpers prepended to every script.
--
-- No key or channel name is spelled in Lua: Go builds them (keys.go). The
-- keys of one partition come first in KEYS: its viewers hash, deadlines
-- index and seq counter. The names of per-post and per-session keys come as
-- four prefixes that a post or session id completes, the command that
-- publishes (PUBLISH on one node, SPUBLISH in a cluster), then two more
-- prefixes (hidden, people); scripts take those at ARGV[1..7] and call
-- names() first.
--
-- Every key a script touches is also listed in KEYS (after the first three)
-- by Go, from the posts it believes the sessions are on. In a cluster that
-- is what makes a slot migration safe: Redis checks the listed keys before
-- the script runs and answers TRYAGAIN or ASK while they are split between
-- two nodes, where a key it did not list could be looked up on the wrong
-- node, or fail the script half-way through its writes. So a script never
-- touches a post that Go did not name: when it finds a session on another
-- post than Go believed, it leaves that session alone and returns it, and
-- Go runs the script again naming the right post.
local N = {}

local function names()
  N.viewers, N.views, N.channel, N.session, N.publish, N.hidden, N.people =
    ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
end

-- first_arg is where a script finds its own arguments.
local first_arg = 8

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- clock_us is Redis's clock in microseconds. (2^53, where Lua's numbers stop
-- being exact, is in 2255.)
local function clock_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- current_seq is the stored seq; one that is missing or not a number counts
-- as 0, so the clock replaces it.
local function current_seq()
  return tonumber(redis.call('GET', KEYS[3]) or '') or 0
end

-- seq returns the current seq, first moving it forward to Redis's clock when
-- it is behind. App servers drop a count whose seq is not above the newest
-- they hold, and Redis can come back with a lower seq than they saw: after a
-- restart without persistence, a FLUSHALL, a restore of an older snapshot or
-- a failover to a replica that lagged. Since seq never falls behind the
-- clock, any change made after such a loss is numbered above every count
-- handed out before it. A seq that is not a number is replaced the same way.
local function seq()
  local now = clock_us()
  local cur = current_seq()
  if cur < now then
    -- %d, because Lua would write a number this large as 1.79e+15.
    redis.call('SET', KEYS[3], string.format('%d', now))
    return now
  end
  return cur
end

-- next_seq takes the number of a change: one above the current seq, or the
-- clock when seq is behind it, in one write.
local function next_seq()
  local n = math.max(current_seq() + 1, clock_us())
  redis.call('SET', KEYS[3], string.format('%d', n))
  return n
end

-- A post's people hash counts the visitors among its viewers: "s:<sid>"
-- names the visitor of a session on the post, "v:<visitor>" counts that
-- visitor's sessions there, "#" the visitors and "n" the sessions named.
-- A viewer named in none (registered before people were counted) is a person
-- of its own, so people is "#" plus the viewers beyond "n". The hash exists
-- exactly while the post's viewers set does, as the hidden set does (see
-- hidden_count).
local function people_of(viewers, distinct, entries)
  local people = distinct + math.max(0, viewers - entries)
  if viewers == 0 then
    return 0
  end
  return math.min(viewers, math.max(1, people))
end

-- publish gives the post's change the next seq and tells every app server
-- that listens for the post its new numbers, which the caller computed from
-- what it read before writing (see look). The payload is
-- presence.CountMessage (wire.go), built here because the numbers exist only
-- inside Redis; a Go test checks its bytes against that type.
-- hidden is how many of the viewers are in the background (reading is the
-- rest); distinct and entries are the post's people hash's "#" and "n" (see
-- people_of).
local function publish(post, viewers, views, hidden, distinct, entries)
  local n = next_seq()
  local reading = math.max(0, viewers - hidden)
  local people = people_of(viewers, distinct, entries)
  -- %d, because Lua would print a number this large as 1.79e+15.
  redis.call(N.publish, N.channel .. post,
    '{"type":"count","post":"' .. post .. '","viewers":' .. viewers ..
    ',"views":' .. views .. ',"reading":' .. reading .. ',"people":' .. people ..
    ',"seq":' .. string.format('%d', n) .. '}')
  return {viewers, tonumber(views), n, reading, people}
end

-- Scripts that remove sessions read everything first and write after.
-- Redis deletes a set, hash or sorted set that a write empties, and while a
-- cluster migrates the slot it refuses any later command on a missing key
-- ("Script attempted to access a non local key"): a script that read after
-- writing could stop half-way through its writes. Reading first, a refusal
-- comes before anything is written; writing after, no key is touched once
-- a write may have deleted it.

-- A post's hidden set holds its hidden viewers and, beside them, "" (no
-- session id), so that it exists exactly while the post's set of viewers
-- does: scripts list both in KEYS, and in a migrating slot Redis refuses a
-- script that lists a key it does not have (TRYAGAIN). The post's hidden
-- viewers are one fewer than the set's members.
local function hidden_count(post)
  return math.max(0, redis.call('SCARD', N.hidden .. post) - 1)
end

-- post_numbers reads a post's count and views once per script, into posts.
local function post_numbers(post, posts)
  if not posts[post] then
    local counts = redis.call('HMGET', N.people .. post, '#', 'n')
    posts[post] = {card = redis.call('SCARD', N.viewers .. post),
      views = redis.call('GET', N.views .. post) or '0',
      hidden = hidden_count(post),
      distinct = tonumber(counts[1] or '0') or 0, entries = tonumber(counts[2] or '0') or 0,
      rcs = {}}
  end
end

-- look reads what removing a session needs: its post in the hash, whether
-- it is in that post's set and in the deadlines index, and the post's
-- numbers. A session on another post than expected (whose keys Go did not
-- list) is noted in elsewhere as sid, post and look returns nil.
local function look(sid, expected, posts, elsewhere)
  local post = redis.call('HGET', KEYS[1], sid)
  if post and post ~= expected then
    elsewhere[#elsewhere + 1] = sid
    elsewhere[#elsewhere + 1] = post
    return nil
  end
  local s = {sid = sid, post = post, deadline = redis.call('ZSCORE', KEYS[2], sid)}
  if post then
    s.member = redis.call('SISMEMBER', N.viewers .. post, sid) == 1
    s.hidden = redis.call('SISMEMBER', N.hidden .. post, sid) == 1
    post_numbers(post, posts)
    s.visitor = redis.call('HGET', N.people .. post, 's:' .. sid)
    local rcs = posts[post].rcs
    if s.visitor and rcs[s.visitor] == nil then
      rcs[s.visitor] = tonumber(redis.call('HGET', N.people .. post, 'v:' .. s.visitor) or '0') or 0
    end
  end
  return s
end

-- unname takes a session that leaves post out of its people hash: p is the
-- post's numbers, whose rcs holds the visitor's sessions there as read.
-- Its writes are left out when the post's sets go altogether (gone).
local function unname(post, p, sid, visitor, gone)
  local rc = p.rcs[visitor]
  p.rcs[visitor] = rc - 1
  p.entries = p.entries - 1
  if rc <= 1 then
    p.distinct = p.distinct - 1
  end
  if gone then
    return
  end
  redis.call('HDEL', N.people .. post, 's:' .. sid)
  if rc <= 1 then
    redis.call('HDEL', N.people .. post, 'v:' .. visitor)
  else
    redis.call('HINCRBY', N.people .. post, 'v:' .. visitor, -1)
  end
  redis.call('HSET', N.people .. post, '#', p.distinct, 'n', p.entries)
end

-- remove writes the removal of a looked-at session from the hash, its
-- post's set and the deadlines index, and notes the post in changed.
local function remove(s, posts, changed)
  if s.post then
    redis.call('HDEL', KEYS[1], s.sid)
  end
  if s.member then
    redis.call('SREM', N.viewers .. s.post, s.sid)
    posts[s.post].card = posts[s.post].card - 1
    changed[s.post] = true
  end
  if s.hidden then
    posts[s.post].hidden = posts[s.post].hidden - 1
    changed[s.post] = true
  end
  local p = s.post and posts[s.post]
  -- The post's hidden set and people hash go with its last viewer (see
  -- hidden_count), once: nothing may touch them after that.
  local gone = s.member and p.card == 0
  if s.visitor then
    unname(s.post, p, s.sid, s.visitor, gone or p.deleted)
    changed[s.post] = true
  end
  if gone then
    redis.call('DEL', N.hidden .. s.post, N.people .. s.post)
    p.deleted = true
  elseif s.hidden and not p.deleted then
    redis.call('SREM', N.hidden .. s.post, s.sid)
  end
  if s.deadline then
    redis.call('ZREM', KEYS[2], s.sid)
  end
end

-- publish_changed publishes one count per changed post: a batch removing
-- 500 viewers of one post publishes once, not 500 times.
local function publish_changed(posts, changed)
  for post in pairs(changed) do
    local p = posts[post]
    publish(post, p.card, p.views, p.hidden, p.distinct, p.entries)
  end
end
