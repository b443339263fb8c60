-- refresh: push live sessions' deadlines one TTL into the future.
-- KEYS[1] - deadlines sorted set
-- ARGV[1] - key prefix
-- ARGV[2] - session TTL in milliseconds
-- ARGV[3..n] - pairs of session id, post id the app server believes it views
-- Returns the session ids whose key is gone or names another post; the app
-- server registers those again with view, which also repairs a move whose
-- reply was lost.
local ttl = tonumber(ARGV[2])
local now = now_ms()
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
