-- common: helpers prepended to every script that changes a post's count.
-- Expects KEYS[1] to be the viewers hash, KEYS[3] the seq counter and
-- ARGV[1] the key prefix.
local prefix = ARGV[1]

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- read returns {viewers, views, seq} of a post without changing anything.
local function read(post)
  local viewers = redis.call('SCARD', prefix .. 'viewers:' .. post)
  local views = tonumber(redis.call('GET', prefix .. 'views:' .. post) or '0')
  local seq = tonumber(redis.call('GET', KEYS[3]) or '0')
  return {viewers, views, seq}
end

-- publish gives the post's change the next seq and tells every app server
-- that listens for the post; the payload is the wire protocol's count frame
-- plus seq, so PHP code and app servers share one format.
local function publish(post)
  local seq = redis.call('INCR', KEYS[3])
  local viewers = redis.call('SCARD', prefix .. 'viewers:' .. post)
  local views = redis.call('GET', prefix .. 'views:' .. post) or '0'
  redis.call('PUBLISH', prefix .. 'presence:post:' .. post,
    '{"type":"count","post":"' .. post .. '","viewers":' .. viewers ..
    ',"views":' .. views .. ',"seq":' .. seq .. '}')
  return {viewers, tonumber(views), seq}
end

-- forget removes a session from the viewers hash and its post's set, notes
-- the post in changed, and returns the post (nil when it viewed none).
local function forget(sid, changed)
  local post = redis.call('HGET', KEYS[1], sid)
  if not post then
    return nil
  end
  redis.call('HDEL', KEYS[1], sid)
  if redis.call('SREM', prefix .. 'viewers:' .. post, sid) == 1 then
    changed[post] = true
  end
  return post
end

-- publish_changed publishes one count per changed post: a batch removing
-- 500 viewers of one post publishes once, not 500 times.
local function publish_changed(changed)
  for post in pairs(changed) do
    publish(post)
  end
end
