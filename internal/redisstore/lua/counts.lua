-- counts: read the counts of several posts at one instant.
-- KEYS[1] - seq counter
-- ARGV[1] - key prefix
-- ARGV[2..n] - post ids
-- Returns {seq, viewers1, views1, viewers2, views2, ...}: reading seq in the
-- same script lets the caller order these counts against published ones.
local prefix = ARGV[1]
local out = {tonumber(redis.call('GET', KEYS[1]) or '0')}
for i = 2, #ARGV do
  out[#out + 1] = redis.call('SCARD', prefix .. 'viewers:' .. ARGV[i])
  out[#out + 1] = tonumber(redis.call('GET', prefix .. 'views:' .. ARGV[i]) or '0')
end
return out
