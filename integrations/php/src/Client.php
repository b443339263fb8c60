<?php

declare(strict_types=1);

namespace Presence;

/**
 * A Presence server seen from PHP: live counts from its REST API, events through its
 * HTTP publish API, and the tokens of signed posts.
 *
 *     $presence = new Presence\Client('http://127.0.0.1:8080', publishKey: $key, postSecret: $secret);
 *     $count = $presence->count('13');   // ['post' => '13', 'viewers' => 5, 'views' => 120, 'reading' => 3, 'people' => 4]
 *
 * Every request has a connect timeout and a total timeout, so a page that asks a slow
 * or unreachable server waits for at most the total timeout.
 */
final class Client
{
    /** The most posts counts() asks for (httpapi.MaxBatch). */
    public const MAX_POSTS = 100;

    private const DAY = 86400;

    private string $base;
    private ?string $publishKey;
    private ?string $postSecret;

    /**
     * @param string      $server         The server's URL, e.g. http://127.0.0.1:8080 or
     *                                    https://presence.example.com; a bare host:port
     *                                    means http://host:port.
     * @param string|null $publishKey     One of the server's PRESENCE_PUBLISH_KEYS, for
     *                                    publish(); null or '' when not publishing.
     * @param string|null $postSecret     One of the server's PRESENCE_POST_SECRET, for
     *                                    token() and the tokens count() and counts()
     *                                    send; null or '' when the server signs no posts.
     * @param float       $connectTimeout Seconds to wait for the TCP (and TLS) connection.
     * @param float       $timeout        Seconds a whole request may take, connection
     *                                    included.
     * @param int         $tokenDays      Days a token stays valid after the day it is
     *                                    made on (1-3650), as in the WordPress plugin.
     *
     * @throws InvalidInputException when a setting could never work.
     */
    public function __construct(
        string $server,
        ?string $publishKey = null,
        ?string $postSecret = null,
        private readonly float $connectTimeout = 1.0,
        private readonly float $timeout = 3.0,
        private readonly int $tokenDays = 7,
    ) {
        $this->base = self::origin($server);
        $this->publishKey = self::secret('publish key', $publishKey, 16, true);
        $this->postSecret = self::secret('post secret', $postSecret, 32, false);
        foreach (['connect timeout' => $connectTimeout, 'timeout' => $timeout] as $what => $seconds) {
            if (!is_finite($seconds) || $seconds <= 0) {
                throw new InvalidInputException(sprintf('%s must be a positive number of seconds, got %s', $what, $seconds));
            }
        }
        if ($tokenDays < 1 || $tokenDays > 3650) {
            throw new InvalidInputException(sprintf('token lifetime must be 1 to 3650 days, got %d', $tokenDays));
        }
    }

    /** The server's URL as requests use it: scheme://host[:port], no trailing slash. */
    public function baseUrl(): string
    {
        return $this->base;
    }

    /**
     * The live viewers and total views of one post (GET /v1/posts/{post}), with
     * how many of the viewers are reading (their tab in view) and how many
     * different people they are. A post nobody has viewed has 0 of each. With a
     * post secret the post's token is sent. A server from before reading and
     * people counts every viewer as reading and as a person.
     *
     * @param string $post Post id: 1-64 characters of [A-Za-z0-9_-].
     * @return array{post: string, viewers: int, views: int, reading: int, people: int}
     *
     * @throws InvalidInputException for a post id the server would refuse (nothing is sent).
     * @throws ConnectionException   when the server cannot be reached in time.
     * @throws ServerException       when the server refuses, e.g. invalid_token (HTTP 403).
     */
    public function count(string $post): array
    {
        $post = Wire::post($post);
        $query = $this->postSecret === null ? '' : '?token=' . rawurlencode($this->token($post));
        $url = $this->base . '/v1/posts/' . $post . $query;
        $body = $this->request('GET', $url, null, 200);
        if (!is_int($body['viewers'] ?? null) || !is_int($body['views'] ?? null)) {
            throw self::unexpected('GET', $url, 200, 'no viewers and views');
        }
        $viewers = $body['viewers'];
        return [
            'post'    => $post,
            'viewers' => $viewers,
            'views'   => $body['views'],
            'reading' => is_int($body['reading'] ?? null) ? $body['reading'] : $viewers,
            'people'  => is_int($body['people'] ?? null) ? $body['people'] : $viewers,
        ];
    }

    /**
     * The live viewers of up to 100 posts, read by the server at one instant
     * (GET /v1/viewers). The API gives viewers only; ask count() for a post's views.
     *
     * @param array<string|int> $posts Post ids; ints are taken as their digits.
     *                                 Repeated ids are asked for once.
     * @return array<string, int> Viewers by post id, in the order asked. PHP turns
     *                            numeric keys such as "13" into ints; $counts['13']
     *                            still finds them.
     *
     * @throws InvalidInputException for no posts, more than 100, or a bad post id.
     * @throws ConnectionException   when the server cannot be reached in time.
     * @throws ServerException       when the server refuses.
     */
    public function counts(array $posts): array
    {
        $unique = [];
        foreach ($posts as $post) {
            $unique[Wire::post($post)] = true;
        }
        $unique = array_map('strval', array_keys($unique));
        if (count($unique) === 0 || count($unique) > self::MAX_POSTS) {
            throw new InvalidInputException(sprintf('counts() takes 1 to %d posts, got %d', self::MAX_POSTS, count($unique)));
        }
        // Tokens pair with posts by position, so each follows its post.
        $query = [];
        foreach ($unique as $post) {
            $query[] = 'post=' . $post;
            if ($this->postSecret !== null) {
                $query[] = 'token=' . rawurlencode($this->token($post));
            }
        }
        $url = $this->base . '/v1/viewers?' . implode('&', $query);
        $body = $this->request('GET', $url, null, 200);
        $counts = [];
        foreach ($unique as $post) {
            $n = $body['counts'][$post] ?? null;
            if (!is_int($n)) {
                throw self::unexpected('GET', $url, 200, sprintf('no count of post "%s"', $post));
            }
            $counts[$post] = $n;
        }
        return $counts;
    }

    /**
     * Pushes an event to every tab viewing or watching a post, on every app server
     * (POST /v1/posts/{post}/events). They receive
     * {"type":"event","post":...,"name":...,"data":...}. Like Redis pub/sub this is
     * fire-and-forget: a tab not connected now never gets the event, and success means
     * the server took it, not that anybody received it.
     *
     * @param string $post Post id: 1-64 characters of [A-Za-z0-9_-].
     * @param string $name Event name: 1-64 characters of [A-Za-z0-9_.:-].
     * @param mixed  $data Anything json_encode() takes; at most 16 KiB with the name.
     *                     Everybody on the post receives it. An empty PHP array is
     *                     sent as [], an empty object (new \stdClass) as {}.
     *
     * @throws InvalidInputException without a publish key, or for a bad post, name or data.
     * @throws ConnectionException   when the server cannot be reached in time.
     * @throws ServerException       when the server refuses, e.g. forbidden (HTTP 403,
     *                               a wrong key) or not_found (404, publishing is off).
     */
    public function publish(string $post, string $name, mixed $data = null): void
    {
        if ($this->publishKey === null) {
            throw new InvalidInputException('publish() needs a publish key: one of the server\'s PRESENCE_PUBLISH_KEYS');
        }
        $post = Wire::post($post);
        $body = Wire::eventBody($name, $data);
        $this->request('POST', $this->base . '/v1/posts/' . $post . '/events', $body, 202);
    }

    /**
     * The token that makes the server accept a post: "<expires>.<signature>", the
     * lowercase hex HMAC-SHA256 of "<post>.<expires>" under the post secret. The same
     * token the WordPress plugin puts in its pages, so pages and this client agree.
     *
     * The expiry is a midnight (UTC), $tokenDays after the end of the day of $now, so
     * every page rendered on one day carries the same token and page caches stay
     * stable; with 7 days a token lives 7 to 8 days.
     *
     * @param string   $post Post id: 1-64 characters of [A-Za-z0-9_-].
     * @param int|null $now  Unix time the token is made at; null for now.
     *
     * @throws InvalidInputException without a post secret, or for a bad post id.
     */
    public function token(string $post, ?int $now = null): string
    {
        if ($this->postSecret === null) {
            throw new InvalidInputException('token() needs a post secret: the server\'s PRESENCE_POST_SECRET');
        }
        $post = Wire::post($post);
        $now ??= time();
        $expires = (string) ((intdiv($now, self::DAY) + 1 + $this->tokenDays) * self::DAY);
        return $expires . '.' . hash_hmac('sha256', $post . '.' . $expires, $this->postSecret);
    }

    /**
     * Sends one request and returns its decoded JSON answer, or throws with the
     * method, the URL and what went wrong.
     */
    private function request(string $method, string $url, ?string $body, int $want): array
    {
        $headers = ['Accept: application/json'];
        $ch = curl_init($url);
        $options = [
            CURLOPT_RETURNTRANSFER => true,
            CURLOPT_FOLLOWLOCATION => false,
            CURLOPT_CONNECTTIMEOUT_MS => self::millis($this->connectTimeout),
            CURLOPT_TIMEOUT_MS => self::millis($this->timeout),
            // libcurl's synchronous resolver times out with alarm signals, in whole
            // seconds: a timeout under one second would fail every request at once.
            CURLOPT_NOSIGNAL => true,
            CURLOPT_USERAGENT => 'presence-php-client',
        ];
        if ($body !== null) {
            $options[CURLOPT_POST] = true;
            $options[CURLOPT_POSTFIELDS] = $body;
            $headers[] = 'Content-Type: application/json';
            $headers[] = 'Authorization: Bearer ' . $this->publishKey;
            // curl would otherwise ask for "100 Continue" before sending a body over
            // 1 KiB: a round trip more, and a second's wait behind a proxy that never
            // sends it.
            $headers[] = 'Expect:';
        }
        $options[CURLOPT_HTTPHEADER] = $headers;
        curl_setopt_array($ch, $options);
        $answer = curl_exec($ch);
        $status = (int) curl_getinfo($ch, CURLINFO_RESPONSE_CODE);
        $errno = curl_errno($ch);
        $error = curl_error($ch);
        $connected = curl_getinfo($ch, CURLINFO_CONNECT_TIME_T) > 0;

        if ($answer === false || $errno !== 0) {
            $what = $error;
            if ($errno === CURLE_OPERATION_TIMEDOUT) {
                $what = $connected
                    ? sprintf('no answer within %s s: %s', self::seconds($this->timeout), $error)
                    : sprintf('could not connect within %s s: %s', self::seconds(min($this->connectTimeout, $this->timeout)), $error);
            }
            throw new ConnectionException(sprintf('%s %s: %s (curl error %d)', $method, $url, $what, $errno), $errno);
        }

        $decoded = json_decode((string) $answer, true);
        if ($status !== $want) {
            $code = $decoded['error']['code'] ?? null;
            $message = $decoded['error']['message'] ?? null;
            if (is_string($code) && is_string($message)) {
                throw new ServerException(
                    sprintf('%s %s: HTTP %d %s: %s', $method, $url, $status, $code, $message),
                    $url,
                    $status,
                    $code,
                );
            }
            throw self::unexpected($method, $url, $status, 'not an answer of the Presence API: ' . self::excerpt((string) $answer));
        }
        if (!is_array($decoded)) {
            throw self::unexpected($method, $url, $status, 'not JSON: ' . self::excerpt((string) $answer));
        }
        return $decoded;
    }

    private static function unexpected(string $method, string $url, int $status, string $what): ServerException
    {
        return new ServerException(sprintf('%s %s: HTTP %d, %s', $method, $url, $status, $what), $url, $status);
    }

    /** The start of a body that is not the API's, for a message that stays readable. */
    private static function excerpt(string $body): string
    {
        $body = trim((string) preg_replace('/\s+/', ' ', $body));
        if ($body === '') {
            return '(empty body)';
        }
        return strlen($body) > 200 ? substr($body, 0, 200) . '...' : $body;
    }

    private static function origin(string $server): string
    {
        $server = trim($server);
        $url = str_contains($server, '://') ? $server : 'http://' . $server;
        $parts = parse_url($url);
        $scheme = strtolower((string) ($parts['scheme'] ?? ''));
        if ($parts === false || ($parts['host'] ?? '') === '' || !in_array($scheme, ['http', 'https'], true)) {
            throw new InvalidInputException(sprintf('server must be an http(s) URL or host:port, got "%s"', $server));
        }
        // The API lives at the root of its host (widget.js opens /v1/ws there too), so
        // anything after the origin is a mistake that would only produce 404s.
        if (isset($parts['user']) || isset($parts['query']) || isset($parts['fragment']) || !in_array($parts['path'] ?? '', ['', '/'], true)) {
            throw new InvalidInputException(sprintf('server must be scheme://host[:port] only, without path, query or credentials, got "%s"', $server));
        }
        return $scheme . '://' . $parts['host'] . (isset($parts['port']) ? ':' . $parts['port'] : '');
    }

    /**
     * '' and null both mean "not set", so values read from the environment can be
     * passed as they are. A value the server could never hold is refused here, where
     * the mistake is, rather than as a 403 on every request: the server splits its
     * setting on commas and trims white space around each value.
     */
    private static function secret(string $what, ?string $value, int $min, bool $header): ?string
    {
        if ($value === null || $value === '') {
            return null;
        }
        if (strlen($value) < $min) {
            throw new InvalidInputException(sprintf('%s is %d characters long; the server takes only %d or more', $what, strlen($value), $min));
        }
        if (str_contains($value, ',') || trim($value) !== $value) {
            throw new InvalidInputException(sprintf('%s must hold no comma and start and end with no white space, or the server could not hold it', $what));
        }
        // The key travels in a header, where a control character would end it.
        if ($header && !preg_match('/^[\x21-\x7e]+$/D', $value)) {
            throw new InvalidInputException(sprintf('%s must be printable ASCII without spaces', $what));
        }
        return $value;
    }

    private static function millis(float $seconds): int
    {
        return max(1, (int) ceil($seconds * 1000));
    }

    private static function seconds(float $seconds): string
    {
        return rtrim(rtrim(sprintf('%.3f', $seconds), '0'), '.');
    }
}
