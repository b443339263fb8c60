<?php
/**
 * Tests of the Presence PHP client, with plain php-cli: no PHPUnit, no Composer.
 *
 *     sh integrations/php/tests/test.sh     # starts Redis and presence, then runs this
 *     php integrations/php/tests/run.php    # alone: the tests that need a server are skipped
 *
 * test.sh passes the server in PRESENCE_TEST_URL, PRESENCE_TEST_REDIS (host:port),
 * PRESENCE_TEST_KEY_PREFIX, PRESENCE_TEST_PUBLISH_KEY and PRESENCE_TEST_POST_SECRET.
 * Prints one line per test and a last line "N passed, M failed, K skipped"; exits 1
 * when a test failed.
 */

declare(strict_types=1);

use Presence\Client;
use Presence\ConnectionException;
use Presence\InvalidInputException;
use Presence\RedisPublisher;
use Presence\ServerException;
use Presence\Tests\Resp;
use Presence\Tests\WebSocket;

error_reporting(E_ALL);
ini_set('display_errors', 'stderr');

// A warning or notice is a bug: make it fail the test that caused it.
set_error_handler(static function (int $severity, string $message, string $file, int $line): bool {
    throw new ErrorException($message, 0, $severity, $file, $line);
});

// The package's own PSR-4 mapping, as Composer would set it up, and the test helpers.
spl_autoload_register(static function (string $class): void {
    foreach (['Presence\\Tests\\' => __DIR__ . '/', 'Presence\\' => dirname(__DIR__) . '/src/'] as $prefix => $dir) {
        if (str_starts_with($class, $prefix)) {
            $file = $dir . str_replace('\\', '/', substr($class, strlen($prefix))) . '.php';
            if (is_file($file)) {
                require $file;
            }
            return;
        }
    }
});

/*
 * The assert helper.
 */

final class Failure extends Exception
{
}

final class Skipped extends Exception
{
}

function check(bool $ok, string $what): void
{
    if (!$ok) {
        throw new Failure($what);
    }
}

function same(mixed $want, mixed $got, string $what): void
{
    if ($want !== $got) {
        throw new Failure(sprintf('%s: got %s, want %s', $what, show($got), show($want)));
    }
}

/** Runs $fn, which must throw a $class whose message contains every $part. */
function throws(string $class, callable $fn, string ...$parts): Throwable
{
    try {
        $fn();
    } catch (Failure $e) {
        throw $e;
    } catch (Throwable $e) {
        if (!$e instanceof $class) {
            throw new Failure(sprintf('threw %s "%s", want %s', get_class($e), $e->getMessage(), $class));
        }
        foreach ($parts as $part) {
            if (!str_contains($e->getMessage(), $part)) {
                throw new Failure(sprintf('message "%s" does not say "%s"', $e->getMessage(), $part));
            }
        }
        return $e;
    }
    throw new Failure("threw nothing, want $class");
}

function skip(string $why): never
{
    throw new Skipped($why);
}

function show(mixed $v): string
{
    return is_string($v) ? json_encode($v, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_INVALID_UTF8_SUBSTITUTE) : var_export($v, true);
}

/** @var array<string, callable(): ?string> $tests name => test; a test may return a note */
$tests = [];

function test(string $name, callable $fn): void
{
    $GLOBALS['tests'][$name] = $fn;
}

/*
 * The environment.
 */

const SECRET = '0123456789abcdef0123456789abcdef'; // the secret of the Go tests and api/protocol.md

$env = [
    'url' => (string) getenv('PRESENCE_TEST_URL'),
    'redis' => (string) getenv('PRESENCE_TEST_REDIS'),
    'prefix' => (string) getenv('PRESENCE_TEST_KEY_PREFIX'),
    'key' => (string) getenv('PRESENCE_TEST_PUBLISH_KEY'),
    'secret' => (string) getenv('PRESENCE_TEST_POST_SECRET'),
];

/** The server's settings, or a skip when there is no server. */
function server(): array
{
    $env = $GLOBALS['env'];
    if ($env['url'] === '' || $env['key'] === '' || $env['secret'] === '') {
        skip('no server: PRESENCE_TEST_URL is not set (tests/test.sh starts one)');
    }
    return $env;
}

/** A client of the test server with its publish key and post secret. */
function client(): Client
{
    $s = server();
    return new Client($s['url'], publishKey: $s['key'], postSecret: $s['secret']);
}

/** A post id of this run: the server's Redis may outlive one run. */
function post(string $name): string
{
    static $run = null;
    $run ??= 'php' . bin2hex(random_bytes(4));
    return $run . '-' . $name;
}

function deadline(float $seconds): float
{
    return microtime(true) + $seconds;
}

/** A tab viewing $post, after the server counted it. */
function viewer(Client $client, string $post): WebSocket
{
    $ws = WebSocket::open($client->baseUrl());
    $ws->await(deadline(5), static fn (array $f): bool => $f['type'] === 'hello');
    $ws->send(['type' => 'view', 'post' => $post, 'token' => $client->token($post)]);
    $ws->await(deadline(5), static fn (array $f): bool => $f['type'] === 'count' && $f['post'] === $post);
    return $ws;
}

/**
 * Waits until an app server listens on the post's channel. A view is answered before
 * the subscription is in place, and an event published in between would reach nobody.
 */
function waitSubscribed(string $post): void
{
    $s = server();
    $channel = $s['prefix'] . 'presence:post:' . $post;
    $redis = new Resp($s['redis']);
    $end = deadline(5);
    while (($redis->call('PUBSUB', 'NUMSUB', $channel)[1] ?? 0) < 1) {
        if (microtime(true) > $end) {
            throw new Failure("nobody subscribed to $channel within 5 s");
        }
        usleep(5000); // a subscription sends nothing that could be awaited
    }
}

/** A socket that accepts TCP connections (the kernel does) and never answers. */
function silentServer(): array
{
    $socket = stream_socket_server('tcp://127.0.0.1:0', $errno, $error);
    check($socket !== false, "cannot listen: $error");
    return [$socket, 'http://' . stream_socket_get_name($socket, false)];
}

/** Whether anybody connected to a silentServer() socket. */
function connected($socket): bool
{
    $read = [$socket];
    $none = null;
    return stream_select($read, $none, $none, 0) > 0;
}

/*
 * Tokens.
 */

test('token() equals the Go signer\'s and api/protocol.md\'s tokens', static function (): void {
    $c = new Client('127.0.0.1:1', postSecret: SECRET);
    // presence.TestSigner_MatchesPHP: post 13, expiring 1767225600 (2026-01-01), made
    // on 2025-12-24, seven days and the rest of that day before.
    same('1767225600.6f8baa973395ee62043c99ed56c4126a6c98e100d802865a1c390a178bed72ab', $c->token('13', 1766534400), 'token of 13');
    same('1767225600.612aff5ef408344a532c46d7dcf89367354fb1857967c77d6121b537a85827ff', $c->token('1', 1766620799), 'token of 1');
    same('1767225600.4ba4885b5dd33b17d6883ce5eefa6cf542744153c913c20c18dc65f1d1c4c976', $c->token('2', 1766534400), 'token of 2');
});

test('token() equals the WordPress plugin\'s, byte for byte', static function (): void {
    $script = __DIR__ . '/wordpress_token.php';
    if (!is_file(dirname(__DIR__, 2) . '/wordpress/presence-counter/presence-counter.php')) {
        skip('integrations/wordpress/presence-counter is not in this checkout');
    }
    $secret = bin2hex(random_bytes(20));
    foreach ([[7, '13', 1766534400], [7, 'hello-world', 1700000000], [7, '2-45', 86399], [1, 'a_B-9', 1766620800], [30, str_repeat('x', 64), 2000000123]] as [$days, $post, $now]) {
        $cmd = implode(' ', array_map('escapeshellarg', [PHP_BINARY, $script, $secret, $post, (string) $now, (string) $days]));
        $plugin = shell_exec($cmd . ' 2>&1');
        $c = new Client('127.0.0.1:1', postSecret: $secret, tokenDays: $days);
        same($plugin, $c->token($post, $now), "token of $post at $now with $days days");
    }
});

test('token() expires at a midnight (UTC), the lifetime in days after today', static function (): void {
    $now = 1766534400 + 45000; // 2025-12-24 12:30 UTC
    [$expires] = explode('.', (new Client('127.0.0.1:1', postSecret: SECRET))->token('13', $now));
    same('1767225600', $expires, 'expiry with 7 days');
    [$expires] = explode('.', (new Client('127.0.0.1:1', postSecret: SECRET, tokenDays: 1))->token('13', $now));
    same((string) (1766534400 + 2 * 86400), $expires, 'expiry with 1 day');
    $token = (new Client('127.0.0.1:1', postSecret: SECRET))->token('13');
    check((int) explode('.', $token)[0] - time() > 7 * 86400, "a token made now lives more than 7 days: $token");
});

test('token() without a post secret throws', static function (): void {
    throws(InvalidInputException::class, static fn () => (new Client('127.0.0.1:1'))->token('13'), 'needs a post secret', 'PRESENCE_POST_SECRET');
});

/*
 * Checks made before any request.
 */

test('the server URL: host:port means http://, paths and other schemes are refused', static function (): void {
    same('http://127.0.0.1:8080', (new Client('127.0.0.1:8080'))->baseUrl(), 'host:port');
    same('https://presence.example.com', (new Client('https://presence.example.com/'))->baseUrl(), 'https with a slash');
    same('http://[::1]:8080', (new Client('http://[::1]:8080'))->baseUrl(), 'IPv6');
    throws(InvalidInputException::class, static fn () => new Client('ftp://example.com'), 'http(s) URL', 'ftp://example.com');
    throws(InvalidInputException::class, static fn () => new Client('http://example.com/presence'), 'without path');
    throws(InvalidInputException::class, static fn () => new Client(''), 'http(s) URL');
});

test('settings the server could not hold are refused at construction', static function (): void {
    throws(InvalidInputException::class, static fn () => new Client('h:1', publishKey: 'short-key'), 'publish key is 9 characters long', '16 or more');
    throws(InvalidInputException::class, static fn () => new Client('h:1', publishKey: "0123456789abcdef\r\nX: y"), 'publish key must be printable ASCII');
    throws(InvalidInputException::class, static fn () => new Client('h:1', postSecret: str_repeat('s', 31)), 'post secret is 31 characters long', '32 or more');
    throws(InvalidInputException::class, static fn () => new Client('h:1', postSecret: SECRET . ',' . SECRET), 'no comma');
    throws(InvalidInputException::class, static fn () => new Client('h:1', timeout: 0), 'timeout must be a positive number');
    throws(InvalidInputException::class, static fn () => new Client('h:1', connectTimeout: NAN), 'connect timeout must be a positive number');
    throws(InvalidInputException::class, static fn () => new Client('h:1', postSecret: SECRET, tokenDays: 0), '1 to 3650 days');
    check((new Client('h:1', publishKey: '', postSecret: '')) instanceof Client, "'' means not set");
});

test('invalid post ids throw before any request, saying what is wrong', static function (): void {
    [$socket, $url] = silentServer();
    $c = new Client($url, publishKey: str_repeat('k', 16), postSecret: SECRET);
    throws(InvalidInputException::class, static fn () => $c->count(''), 'post id is empty');
    throws(InvalidInputException::class, static fn () => $c->count(str_repeat('7', 65)), 'post id is 65 characters long, at most 64 allowed');
    throws(InvalidInputException::class, static fn () => $c->count('a.b'), 'post id "a.b" has a character outside [A-Za-z0-9_-] at position 1');
    throws(InvalidInputException::class, static fn () => $c->count('../x'), 'at position 0');
    throws(InvalidInputException::class, static fn () => $c->counts(['1', 'a b']), 'post id "a b"', 'position 1');
    throws(InvalidInputException::class, static fn () => $c->counts([1.5]), 'post id must be a string, got float');
    throws(InvalidInputException::class, static fn () => $c->publish('ü', 'comment'), 'at position 0');
    throws(InvalidInputException::class, static fn () => $c->token('a/b'), 'at position 1');
    check(!connected($socket), 'a connection was made');
});

test('counts() takes 1 to 100 posts; publish() checks its key, name and data first', static function (): void {
    [$socket, $url] = silentServer();
    $c = new Client($url, publishKey: str_repeat('k', 16));
    throws(InvalidInputException::class, static fn () => $c->counts([]), 'counts() takes 1 to 100 posts, got 0');
    throws(InvalidInputException::class, static fn () => $c->counts(range(1, 101)), 'got 101');
    throws(InvalidInputException::class, static fn () => (new Client($url))->publish('13', 'comment'), 'needs a publish key', 'PRESENCE_PUBLISH_KEYS');
    throws(InvalidInputException::class, static fn () => $c->publish('13', ''), 'event name must be 1-64 characters, got 0');
    throws(InvalidInputException::class, static fn () => $c->publish('13', 'new comment'), 'event name "new comment" has a character outside [A-Za-z0-9_.:-]');
    throws(InvalidInputException::class, static fn () => $c->publish('13', 'big', str_repeat('x', 16384)), 'the event is 16408 bytes as JSON, the server takes at most 16384');
    throws(InvalidInputException::class, static fn () => $c->publish('13', 'bad', "\xff"), 'cannot be sent as JSON', 'UTF-8');
    throws(InvalidInputException::class, static fn () => $c->publish('13', 'bad', NAN), 'cannot be sent as JSON');
    check(!connected($socket), 'a connection was made');
});

/*
 * The Redis path, without a server.
 */

test('event messages are the frames of api/protocol.md', static function (): void {
    same('{"type":"event","post":"13","name":"comment","data":{"id":7,"author":"Ana"}}', RedisPublisher::message('13', 'comment', ['id' => 7, 'author' => 'Ana']), 'message');
    same('{"type":"event","post":"13","name":"ping","data":null}', RedisPublisher::message('13', 'ping'), 'without data');
    // As the server relays data: compact, not HTML-escaped, slashes and UTF-8 as they are.
    same('{"type":"event","post":"13","name":"a.b:c-d_e","data":["<b>é</b>","a/b",1.5,{}]}', RedisPublisher::message('13', 'a.b:c-d_e', ['<b>é</b>', 'a/b', 1.5, new stdClass()]), 'data');
    throws(InvalidInputException::class, static fn () => RedisPublisher::message('13', 'big', str_repeat('x', 20480)), 'the event message is 20531 bytes, app servers take at most 20480');
});

test('Redis channel names are the server\'s (redisstore.Keys.Channel)', static function (): void {
    if (!extension_loaded('redis')) {
        skip('phpredis is not installed (Debian: php-redis)');
    }
    $redis = new Redis(); // not connected: naming needs no connection
    same('presence:post:13', (new RedisPublisher($redis))->channel('13'), 'one node');
    same('app1:presence:post:13', (new RedisPublisher($redis, 'app1:'))->channel('13'), 'with a prefix');
    same('presence:post{27}:13', (new RedisPublisher($redis, '', true))->channel('13'), 'cluster, as README.md gives it');
    same('p:presence:post{' . (crc32('hello-world') % 64) . '}:hello-world', (new RedisPublisher($redis, 'p:', true))->channel('hello-world'), 'cluster with a prefix');
    throws(InvalidInputException::class, static fn () => new RedisPublisher($redis, 'app{1}:', true), 'which Cluster mode refuses');
    throws(InvalidInputException::class, static fn () => (new RedisPublisher($redis))->publish('a b', 'x'), 'post id "a b"');
});

/*
 * Transport failures.
 */

test('a server that never answers makes count() throw within the timeout', static function (): string {
    [$socket, $url] = silentServer();
    $c = new Client($url, connectTimeout: 0.5, timeout: 1.0);
    $start = microtime(true);
    throws(ConnectionException::class, static fn () => $c->count('13'), "GET $url/v1/posts/13: no answer within 1 s", 'curl error 28');
    $took = microtime(true) - $start;
    check($took >= 0.9 && $took < 2.0, sprintf('threw after %.2f s, want about the 1 s timeout (and less than 2 s)', $took));
    check(connected($socket), 'the request never reached the socket');
    return sprintf('threw after %.2f s; timeout 1 s, limit 2 s', $took);
});

test('a refused connection throws with curl\'s error', static function (): string {
    [$socket, $url] = silentServer();
    fclose($socket); // nothing listens on the port any more
    $start = microtime(true);
    $e = throws(ConnectionException::class, static fn () => (new Client($url))->counts(['1', '2']), "GET $url/v1/viewers?post=1&post=2: ", 'curl error 7)');
    same(7, $e->getCode(), 'code');
    $took = microtime(true) - $start;
    check($took < 1.0, sprintf('took %.2f s', $took));
    return $e->getMessage();
});

test('an answer that is not the API\'s (a proxy\'s error page) is reported with its status', static function (): void {
    // A one-shot HTTP server in a child process, since this process is busy waiting for curl.
    $page = '<html><body><h1>502 Bad Gateway</h1></body></html>';
    $code = '$s = stream_socket_server("tcp://127.0.0.1:0"); echo stream_socket_get_name($s, false), "\n";'
        . '$c = stream_socket_accept($s, 5); if ($c) { fread($c, 65536); fwrite($c, "HTTP/1.1 502 Bad Gateway\r\n'
        . 'Content-Type: text/html\r\nContent-Length: ' . strlen($page) . '\r\nConnection: close\r\n\r\n' . $page . '"); fclose($c); }';
    $child = proc_open([PHP_BINARY, '-r', $code], [1 => ['pipe', 'w']], $pipes);
    try {
        $addr = trim((string) fgets($pipes[1]));
        $e = throws(ServerException::class, static fn () => (new Client($addr))->count('13'), "GET http://$addr/v1/posts/13: HTTP 502, not an answer of the Presence API: $page");
        same('', $e->getErrorCode(), 'error code');
        same(502, $e->getStatus(), 'status');
    } finally {
        fclose($pipes[1]);
        proc_close($child);
    }
});

/*
 * Against the server.
 */

test('count() of a post nobody viewed is 0 of everything', static function (): void {
    $p = post('unviewed');
    same(['post' => $p, 'viewers' => 0, 'views' => 0, 'reading' => 0, 'people' => 0], client()->count($p), 'count');
});

test('a viewer on a real WebSocket is counted by count() and counts()', static function (): void {
    $c = client();
    [$a, $b, $none] = [post('a'), post('b'), post('none')];
    $tabA = viewer($c, $a);
    $tabB = viewer($c, $b);
    same(['post' => $a, 'viewers' => 1, 'views' => 1, 'reading' => 1, 'people' => 1], $c->count($a), 'count of the viewed post');
    same([$a => 1, $none => 0, $b => 1], $c->counts([$a, $none, $b, $a]), 'counts, a repeat asked once');
    $tabA->close();
    $tabB->close();
});

test('publish() reaches a viewing tab as an event frame', static function (): void {
    $c = client();
    $p = post('http-event');
    $c->publish($p, 'nobody', 1); // accepted with nobody on the post: not an error
    $tab = viewer($c, $p);
    waitSubscribed($p);
    $data = ['id' => 7, 'author' => 'Ana', 'text' => '<b>Nice</b> post/é'];
    $c->publish($p, 'comment', $data);
    $frame = $tab->await(deadline(5), static fn (array $f): bool => $f['type'] === 'event');
    same(RedisPublisher::message($p, 'comment', $data), $frame, 'event frame');
});

test('RedisPublisher reaches a viewing tab through Redis (PUBLISH)', static function (): void {
    $s = server();
    if (!extension_loaded('redis')) {
        skip('phpredis is not installed (Debian: php-redis)');
    }
    $c = client();
    $p = post('redis-event');
    $tab = viewer($c, $p);
    waitSubscribed($p);
    [$host, $port] = explode(':', $s['redis']);
    $redis = new Redis();
    $redis->connect($host, (int) $port, 1.0);
    $n = (new RedisPublisher($redis, $s['prefix']))->publish($p, 'comment', ['id' => 8]);
    same(1, $n, 'subscribers that took it');
    $frame = $tab->await(deadline(5), static fn (array $f): bool => $f['type'] === 'event');
    same('{"type":"event","post":"' . $p . '","name":"comment","data":{"id":8}}', $frame, 'event frame');
});

test('RedisPublisher in Cluster mode sends SPUBLISH on the partition-tagged channel', static function (): void {
    $s = server();
    if (!extension_loaded('redis')) {
        skip('phpredis is not installed (Debian: php-redis)');
    }
    // One Redis 7 takes shard channels too, so a subscriber here sees what a cluster's
    // node would get; the channel name is the one the app servers SSUBSCRIBE to.
    $p = post('shard');
    $channel = $s['prefix'] . 'presence:post{' . (crc32($p) % 64) . '}:' . $p;
    $sub = new Resp($s['redis']);
    $sub->send('SSUBSCRIBE', $channel);
    same(['ssubscribe', $channel, 1], $sub->reply(deadline(2)), 'subscription');
    [$host, $port] = explode(':', $s['redis']);
    $redis = new Redis();
    $redis->connect($host, (int) $port, 1.0);
    same(1, (new RedisPublisher($redis, $s['prefix'], true))->publish($p, 'comment', ['id' => 9]), 'subscribers that took it');
    same(['smessage', $channel, RedisPublisher::message($p, 'comment', ['id' => 9])], $sub->reply(deadline(2)), 'message');
});

test('RedisPublisher reports an unreachable Redis', static function (): void {
    if (!extension_loaded('redis')) {
        skip('phpredis is not installed (Debian: php-redis)');
    }
    throws(ConnectionException::class, static fn () => (new RedisPublisher(new Redis()))->publish('13', 'comment'), 'PUBLISH presence:post:13: ');
});

test('a wrong publish key is refused with the server\'s error code', static function (): void {
    $s = server();
    $c = new Client($s['url'], publishKey: str_repeat('w', 32));
    $e = throws(ServerException::class, static fn () => $c->publish('13', 'comment'), "POST {$s['url']}/v1/posts/13/events: HTTP 403 forbidden: the publish key is not accepted");
    same(403, $e->getStatus(), 'status');
    same('forbidden', $e->getErrorCode(), 'error code');
});

test('without the post secret, counts are refused: invalid_token', static function (): void {
    $s = server();
    $c = new Client($s['url']);
    $e = throws(ServerException::class, static fn () => $c->count('13'), "GET {$s['url']}/v1/posts/13: HTTP 403 invalid_token: post \"13\" needs a token");
    same('invalid_token', $e->getErrorCode(), 'error code');
    throws(ServerException::class, static fn () => $c->counts(['1', '2']), 'HTTP 403 invalid_token');
});

test('a token signed with another secret is refused: invalid_token', static function (): void {
    $s = server();
    $c = new Client($s['url'], postSecret: SECRET);
    throws(ServerException::class, static fn () => $c->count('13'), 'HTTP 403 invalid_token: the token of post "13" is not signed with this server\'s secret');
    throws(ServerException::class, static fn () => $c->counts(['13', '14']), 'HTTP 403 invalid_token');
});

/*
 * Run.
 */

$passed = $failed = $skipped = 0;
foreach ($tests as $name => $fn) {
    try {
        $note = $fn();
        $passed++;
        echo 'ok    ', $name, is_string($note) ? " ($note)" : '', "\n";
    } catch (Skipped $e) {
        $skipped++;
        echo 'skip  ', $name, ': ', $e->getMessage(), "\n";
    } catch (Throwable $e) {
        $failed++;
        $where = $e instanceof Failure ? '' : sprintf(' [%s at %s:%d]', get_class($e), basename($e->getFile()), $e->getLine());
        echo 'FAIL  ', $name, ': ', $e->getMessage(), $where, "\n";
    }
}
echo "$passed passed, $failed failed, $skipped skipped\n";
exit($failed > 0 ? 1 : 0);
