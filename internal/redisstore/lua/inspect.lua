-- inspect: the state of some sessions at one instant, for gc check.
-- KEYS[1] - viewers hash
-- KEYS[2] - deadlines sorted set
-- ARGV[1] - key prefix
-- ARGV[2..n] - pairs of session id, the post whose set it was found in ("" if
--              none); the scan that found them is not atomic, this is
-- Returns {now_ms, then per pair: post in the hash or "", session key's post
-- or "", deadline in ms or -1, 1 if in the found set's, 1 if in its hash
-- post's set}.
local out = {now_ms()}
for i = 2, #ARGV, 2 do
  local sid, found = ARGV[i], ARGV[i + 1]
  local post = redis.call('HGET', KEYS[1], sid) or ''
  local sess = redis.call('GET', prefix .. 'session:' .. sid) or ''
  local deadline = redis.call('ZSCORE', KEYS[2], sid)
  local in_found, in_own = 0, 0
  if found ~= '' then
    in_found = redis.call('SISMEMBER', prefix .. 'viewers:' .. found, sid)
  end
  if post ~= '' then
    in_own = redis.call('SISMEMBER', prefix .. 'viewers:' .. post, sid)
  end
  out[#out + 1] = post
  out[#out + 1] = sess
  out[#out + 1] = deadline and string.format('%d', tonumber(deadline)) or '-1'
  out[#out + 1] = in_found
  out[#out + 1] = in_own
end
return out
