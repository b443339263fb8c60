-- common: helpers prepended to every script that changes a post's count.
-- Expects KEYS[3] to be the seq counter and ARGV[1] the key prefix.
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
