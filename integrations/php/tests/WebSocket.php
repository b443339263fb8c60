<?php

declare(strict_types=1);

namespace Presence\Tests;

/**
 * The smallest RFC 6455 client the tests need: a tab that opens /v1/ws, sends masked
 * text frames and reads the server's frames. It answers pings, refuses what the
 * protocol does not use (binary frames, extensions) and never waits past a deadline.
 */
final class WebSocket
{
    private const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

    /** @var resource */
    private $socket;
    private string $buffer = '';

    /** Opens a WebSocket to $base/v1/ws, e.g. http://127.0.0.1:8080. */
    public static function open(string $base, float $timeout = 5.0): self
    {
        $deadline = microtime(true) + $timeout;
        $url = parse_url($base);
        $hostPort = $url['host'] . ':' . ($url['port'] ?? 80);
        $socket = @stream_socket_client('tcp://' . $hostPort, $errno, $error, $timeout);
        if ($socket === false) {
            throw new \RuntimeException("WebSocket: cannot connect to $hostPort: $error");
        }
        // stream_select sees only the socket, not PHP's read buffer: unbuffered, it
        // never reports "nothing to read" while bytes wait in the buffer.
        stream_set_read_buffer($socket, 0);
        $ws = new self();
        $ws->socket = $socket;
        $key = base64_encode(random_bytes(16));
        $ws->write("GET /v1/ws HTTP/1.1\r\nHost: $hostPort\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            . "Sec-WebSocket-Key: $key\r\nSec-WebSocket-Version: 13\r\n\r\n");
        while (($end = strpos($ws->buffer, "\r\n\r\n")) === false) {
            $ws->fill($deadline);
        }
        $head = substr($ws->buffer, 0, $end);
        $ws->buffer = (string) substr($ws->buffer, $end + 4);
        $accept = base64_encode(sha1($key . self::GUID, true));
        if (!preg_match('#^HTTP/1\.1 101 #', $head) || !preg_match('/^Sec-WebSocket-Accept:\s*' . preg_quote($accept, '/') . '\s*$/mi', $head)) {
            throw new \RuntimeException("WebSocket: handshake refused:\n$head");
        }
        return $ws;
    }

    /** Sends one JSON object as a masked text frame, as browsers do. */
    public function send(array $frame): void
    {
        $this->frame(0x1, json_encode($frame, JSON_UNESCAPED_SLASHES | JSON_THROW_ON_ERROR));
    }

    /**
     * Reads frames until one's JSON satisfies $match and returns its text, or throws at
     * the deadline (microtime(true) seconds) with what came instead.
     */
    public function await(float $deadline, callable $match): string
    {
        $seen = [];
        while (true) {
            try {
                $text = $this->next($deadline);
            } catch (\RuntimeException $e) {
                throw new \RuntimeException($e->getMessage() . ($seen ? '; received instead: ' . implode(' ', $seen) : ''), 0, $e);
            }
            $frame = json_decode($text, true);
            if (is_array($frame) && $match($frame)) {
                return $text;
            }
            $seen[] = $text;
        }
    }

    /** Closes with 1000, without waiting for the server's answer. */
    public function close(): void
    {
        if (is_resource($this->socket)) {
            @$this->frame(0x8, pack('n', 1000));
            fclose($this->socket);
        }
    }

    public function __destruct()
    {
        $this->close();
    }

    /** The next text message; pings are answered on the way. */
    private function next(float $deadline): string
    {
        $message = null;
        while (true) {
            [$fin, $opcode, $payload] = $this->read($deadline);
            switch ($opcode) {
                case 0x0: // continuation
                case 0x1: // text
                    if (($opcode === 0x0) !== ($message !== null)) {
                        throw new \RuntimeException('WebSocket: a continuation frame out of place');
                    }
                    $message = ($message ?? '') . $payload;
                    if ($fin) {
                        return $message;
                    }
                    break;
                case 0x8:
                    $code = strlen($payload) >= 2 ? unpack('n', $payload)[1] : 1005;
                    throw new \RuntimeException(sprintf('WebSocket: closed by the server, %d %s', $code, substr($payload, 2)));
                case 0x9:
                    $this->frame(0xA, $payload);
                    break;
                case 0xA:
                    break;
                default:
                    throw new \RuntimeException(sprintf('WebSocket: unexpected frame, opcode %d', $opcode));
            }
        }
    }

    /** @return array{bool, int, string} one frame: FIN, opcode and payload */
    private function read(float $deadline): array
    {
        $this->need(2, $deadline);
        $b0 = ord($this->buffer[0]);
        $b1 = ord($this->buffer[1]);
        if ($b1 & 0x80) {
            throw new \RuntimeException('WebSocket: the server masked a frame');
        }
        if ($b0 & 0x70) {
            throw new \RuntimeException('WebSocket: RSV bits set, but no extension was negotiated');
        }
        $len = $b1 & 0x7f;
        $head = 2;
        if ($len === 126) {
            $this->need(4, $deadline);
            $len = unpack('n', substr($this->buffer, 2, 2))[1];
            $head = 4;
        } elseif ($len === 127) {
            $this->need(10, $deadline);
            $len = unpack('J', substr($this->buffer, 2, 8))[1];
            $head = 10;
        }
        $this->need($head + $len, $deadline);
        $payload = substr($this->buffer, $head, $len);
        $this->buffer = (string) substr($this->buffer, $head + $len);
        return [($b0 & 0x80) !== 0, $b0 & 0x0f, $payload];
    }

    private function frame(int $opcode, string $payload): void
    {
        $len = strlen($payload);
        $head = chr(0x80 | $opcode);
        if ($len < 126) {
            $head .= chr(0x80 | $len);
        } elseif ($len < 65536) {
            $head .= chr(0x80 | 126) . pack('n', $len);
        } else {
            $head .= chr(0x80 | 127) . pack('J', $len);
        }
        $mask = random_bytes(4);
        $this->write($head . $mask . ($payload ^ str_repeat($mask, intdiv($len, 4) + 1)));
    }

    private function write(string $bytes): void
    {
        while ($bytes !== '') {
            $n = @fwrite($this->socket, $bytes);
            if ($n === false || $n === 0) {
                throw new \RuntimeException('WebSocket: write failed');
            }
            $bytes = substr($bytes, $n);
        }
    }

    private function need(int $n, float $deadline): void
    {
        while (strlen($this->buffer) < $n) {
            $this->fill($deadline);
        }
    }

    private function fill(float $deadline): void
    {
        $left = $deadline - microtime(true);
        if ($left <= 0) {
            throw new \RuntimeException('WebSocket: nothing within the deadline');
        }
        $read = [$this->socket];
        $none = null;
        $ready = stream_select($read, $none, $none, (int) $left, (int) (fmod($left, 1) * 1e6));
        if ($ready === false) {
            throw new \RuntimeException('WebSocket: select failed');
        }
        if ($ready === 0) {
            return; // the loop above checks the deadline again
        }
        $bytes = fread($this->socket, 65536);
        if ($bytes === false || ($bytes === '' && feof($this->socket))) {
            throw new \RuntimeException('WebSocket: connection closed by the server');
        }
        $this->buffer .= $bytes;
    }
}
