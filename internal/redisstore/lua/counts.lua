-- counts: read the counts of several posts at one instant.
-- KEYS[1] - viewers hash (unused; the helpers' layout)
-- KEYS[2] - deadlines sorted set (unused)
-- KEYS[3] - seq counter
-- KEYS[4..n] - the keys read (see common.lua)
-- ARGV[1..7] - key and channel names (see names() in common.lua)
-- ARGV[8..n] - post ids
-- Returns {seq, viewers1, views1, reading1, people1, viewers2, ...}: reading seq in
-- the same script lets the caller order these counts against published
-- ones. It writes only to move seq forward to the clock (see seq).
names()
local out = {seq()}
for i = first_arg, #ARGV do
  local viewers = redis.call('SCARD', N.viewers .. ARGV[i])
  out[#out + 1] = viewers
  out[#out + 1] = tonumber(redis.call('GET', N.views .. ARGV[i]) or '0')
  out[#out + 1] = math.max(0, viewers - hidden_count(ARGV[i]))
  local counts = redis.call('HMGET', N.people .. ARGV[i], '#', 'n')
  out[#out + 1] = people_of(viewers, tonumber(counts[1] or '0') or 0, tonumber(counts[2] or '0') or 0)
end
return out
