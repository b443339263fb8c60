-- refresh: push live sessions' deadlines one TTL into the future.
-- KEYS[1] - deadlines sorted set
-- ARGV[1] - key prefix
-- ARGV[2] - session TTL in milliseconds
-- ARGV[3..n] - pairs of session id, post id the app server believes it views
-- Returns the session ids whose key is gone or names another post; the app
-- server registers those again with view, which also repairs a move whose
-- reply was lost.
local prefix, ttl = ARGV[1], tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local missing = {}
for i = 3, #ARGV, 2 do
  local sid, post = ARGV[i], ARGV[i + 1]
  local key = prefix .. 'session:' .. sid
  if redis.call('GET', key) == post then
    redis.call('PEXPIRE', key, ttl)
    redis.call('ZADD', KEYS[1], now + ttl, sid)
  else
    missing[#missing + 1] = sid
  end
end
return missing
