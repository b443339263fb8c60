<?php

declare(strict_types=1);

namespace Presence;

/**
 * The server's rules for post ids and events, and the event message, shared by
 * Client and RedisPublisher. The rules are those of internal/presence (ParsePostID,
 * NewEvent) and the message is the frame of wire.go, so that what is checked here is
 * what the server accepts, and a message published on Redis is byte for byte the one
 * the HTTP API publishes.
 *
 * @internal
 */
final class Wire
{
    /** Longest post id (presence.MaxPostIDLen). */
    public const MAX_POST_LEN = 64;

    /** Longest event name (presence.MaxEventNameLen). */
    public const MAX_NAME_LEN = 64;

    /** Largest publish request body in bytes (httpapi.MaxEventBody). */
    public const MAX_EVENT_BODY = 16384;

    /** Largest event message on a post's channel in bytes (presence.MaxEventFrame). */
    public const MAX_EVENT_MESSAGE = 20480;

    /**
     * No HTML escaping and no escaped slashes or non-ASCII characters: the server
     * relays data as sent, so these flags keep the bytes the same on both paths and
     * the size that is checked the size that is sent. Invalid UTF-8 throws, as the
     * server refuses it.
     */
    private const JSON_FLAGS = JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_THROW_ON_ERROR;

    /**
     * Returns $post as the id the server takes, or throws saying what is wrong with it.
     * An int is taken as its decimal digits, since WordPress and most CMSs number posts.
     */
    public static function post(mixed $post): string
    {
        if (is_int($post)) {
            $post = (string) $post;
        }
        if (!is_string($post)) {
            throw new InvalidInputException(sprintf('post id must be a string, got %s', get_debug_type($post)));
        }
        if ($post === '') {
            throw new InvalidInputException('post id is empty');
        }
        if (strlen($post) > self::MAX_POST_LEN) {
            throw new InvalidInputException(sprintf(
                'post id is %d characters long, at most %d allowed',
                strlen($post),
                self::MAX_POST_LEN,
            ));
        }
        $bad = strspn($post, 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-');
        if ($bad < strlen($post)) {
            throw new InvalidInputException(sprintf(
                'post id %s has a character outside [A-Za-z0-9_-] at position %d',
                json_encode($post, JSON_UNESCAPED_SLASHES | JSON_INVALID_UTF8_SUBSTITUTE),
                $bad,
            ));
        }
        return $post;
    }

    /** Throws unless $name is an event name the server takes. */
    public static function eventName(string $name): void
    {
        if ($name === '' || strlen($name) > self::MAX_NAME_LEN) {
            throw new InvalidInputException(sprintf(
                'event name must be 1-%d characters, got %d',
                self::MAX_NAME_LEN,
                strlen($name),
            ));
        }
        if (strspn($name, 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-') < strlen($name)) {
            throw new InvalidInputException(sprintf(
                'event name %s has a character outside [A-Za-z0-9_.:-]',
                json_encode($name, JSON_UNESCAPED_SLASHES | JSON_INVALID_UTF8_SUBSTITUTE),
            ));
        }
    }

    /**
     * The body of POST /v1/posts/{post}/events.
     */
    public static function eventBody(string $name, mixed $data): string
    {
        self::eventName($name);
        $body = self::json(['name' => $name, 'data' => $data]);
        if (strlen($body) > self::MAX_EVENT_BODY) {
            throw new InvalidInputException(sprintf(
                'the event is %d bytes as JSON, the server takes at most %d',
                strlen($body),
                self::MAX_EVENT_BODY,
            ));
        }
        return $body;
    }

    /**
     * The event message of a post's channel, which is also the frame browsers get:
     * {"type":"event","post":"13","name":"comment","data":...}.
     */
    public static function eventMessage(string $post, string $name, mixed $data): string
    {
        $post = self::post($post);
        self::eventName($name);
        $message = self::json(['type' => 'event', 'post' => $post, 'name' => $name, 'data' => $data]);
        // App servers drop larger messages without telling the publisher.
        if (strlen($message) > self::MAX_EVENT_MESSAGE) {
            throw new InvalidInputException(sprintf(
                'the event message is %d bytes, app servers take at most %d',
                strlen($message),
                self::MAX_EVENT_MESSAGE,
            ));
        }
        return $message;
    }

    private static function json(array $value): string
    {
        try {
            return json_encode($value, self::JSON_FLAGS);
        } catch (\JsonException $e) {
            throw new InvalidInputException('event data cannot be sent as JSON: ' . $e->getMessage(), 0, $e);
        }
    }
}
