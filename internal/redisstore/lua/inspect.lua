-- inspect: the state of some sessions at one instant, for gc check.
-- KEYS[1] - viewers hash
-- KEYS[2] - deadlines sorted set
-- KEYS[3] - seq counter (unused; the helpers' layout)
-- It reads keys it does not list in KEYS: it writes nothing, and a check
-- run while a slot migrates may fail or misreport, and is run again.
-- ARGV[1..7] - key and channel names (see names() in common.lua)
-- ARGV[8..n] - pairs of session id, the post whose set it was found in ("" if
--              none); the scan that found them is not atomic, this is
-- Returns {now_ms, then per pair: post in the hash or "", session key's post
-- or "", deadline in ms or -1, 1 if in the found set's, 1 if in its hash
-- post's set}.
names()
local out = {now_ms()}
for i = first_arg, #ARGV, 2 do
  local sid, found = ARGV[i], ARGV[i + 1]
  local post = redis.call('HGET', KEYS[1], sid) or ''
  local sess = redis.call('GET', N.session .. sid) or ''
  local deadline = redis.call('ZSCORE', KEYS[2], sid)
  local in_found, in_own = 0, 0
  if found ~= '' then
    in_found = redis.call('SISMEMBER', N.viewers .. found, sid)
  end
  if post ~= '' then
    in_own = redis.call('SISMEMBER', N.viewers .. post, sid)
  end
  out[#out + 1] = post
  out[#out + 1] = sess
  out[#out + 1] = deadline and string.format('%d', tonumber(deadline)) or '-1'
  out[#out + 1] = in_found
  out[#out + 1] = in_own
end
return out
