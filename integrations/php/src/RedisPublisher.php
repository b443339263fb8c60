<?php

declare(strict_types=1);

namespace Presence;

/**
 * Publishes events straight on the Redis that the app servers share, without an HTTP
 * request: PUBLISH on the post's channel on one Redis (or a Sentinel-watched primary),
 * SPUBLISH on the post's shard channel on a Redis Cluster. The message is the one the
 * HTTP publish API would put there, so tabs cannot tell the two paths apart.
 *
 *     $redis = new \Redis();
 *     $redis->connect('127.0.0.1', 6379, 1.0);
 *     (new Presence\RedisPublisher($redis))->publish('13', 'comment', ['id' => 7]);
 *
 * Not for embedded mode (no PRESENCE_REDIS_URL): there is no Redis to publish on;
 * use Client::publish().
 */
final class RedisPublisher
{
    /** How many partitions a cluster's keys are spread over (redisstore.Partitions). */
    public const PARTITIONS = 64;

    /**
     * @param \Redis|\RedisCluster $redis   A connected phpredis client. Its OPT_PREFIX is
     *                                      not applied: pass the server's prefix below.
     * @param string               $prefix  The server's PRESENCE_KEY_PREFIX.
     * @param bool                 $cluster Whether the server runs in Cluster mode
     *                                      (PRESENCE_REDIS_CLUSTER); pass a \RedisCluster
     *                                      then, which routes each channel to its node.
     *
     * @throws InvalidInputException for a prefix Cluster mode refuses.
     */
    public function __construct(
        private readonly \Redis|\RedisCluster $redis,
        private readonly string $prefix = '',
        private readonly bool $cluster = false,
    ) {
        if ($cluster && strpbrk($prefix, '{}') !== false) {
            throw new InvalidInputException(sprintf('key prefix "%s" has { or }, which Cluster mode refuses: they would choose the slot', $prefix));
        }
    }

    /**
     * Publishes an event to every tab viewing or watching the post, on every app server.
     * Fire-and-forget, like Redis pub/sub: nobody connected now, nobody receives it.
     *
     * @param string $post Post id: 1-64 characters of [A-Za-z0-9_-].
     * @param string $name Event name: 1-64 characters of [A-Za-z0-9_.:-].
     * @param mixed  $data Anything json_encode() takes; at most 20 KiB in the message.
     * @return int How many subscribers took it: app servers with a tab on the post (on a
     *             cluster, those of the node that holds the channel).
     *
     * @throws InvalidInputException for a bad post, name or data; nothing is sent.
     * @throws ConnectionException   when Redis cannot be reached.
     * @throws PresenceException     when Redis refuses the command.
     */
    public function publish(string $post, string $name, mixed $data = null): int
    {
        $message = Wire::eventMessage($post, $name, $data);
        $channel = $this->channel($post);
        $command = $this->cluster ? 'SPUBLISH' : 'PUBLISH';
        // rawCommand rather than publish(): phpredis would put its OPT_PREFIX in front of
        // the channel, which must be exactly the server's name.
        try {
            $n = $this->redis instanceof \RedisCluster
                ? $this->redis->rawCommand($channel, $command, $channel, $message)
                : $this->redis->rawCommand($command, $channel, $message);
        } catch (\RedisException | \RedisClusterException $e) {
            throw new ConnectionException(sprintf('%s %s: %s', $command, $channel, $e->getMessage()), 0, $e);
        }
        if (!is_int($n)) {
            $error = $this->redis->getLastError();
            throw new PresenceException(sprintf('%s %s: Redis refused it: %s', $command, $channel, $error ?? 'no error given'));
        }
        return $n;
    }

    /**
     * The post's channel: <prefix>presence:post:<post>, and on a cluster
     * <prefix>presence:post{<crc32(post) % 64>}:<post>, whose hash tag puts it on the
     * slot of the post's keys (redisstore.Keys.Channel).
     *
     * @throws InvalidInputException for a bad post id.
     */
    public function channel(string $post): string
    {
        $post = Wire::post($post);
        $tag = $this->cluster ? '{' . (crc32($post) % self::PARTITIONS) . '}' : '';
        return $this->prefix . 'presence:post' . $tag . ':' . $post;
    }

    /**
     * The message publish() sends, and the frame tabs receive:
     * {"type":"event","post":"13","name":"comment","data":{"id":7}}. For publishing
     * with another Redis client (Predis, redis-cli) on channel().
     *
     * @throws InvalidInputException for a bad post, name or data.
     */
    public static function message(string $post, string $name, mixed $data = null): string
    {
        return Wire::eventMessage($post, $name, $data);
    }
}
