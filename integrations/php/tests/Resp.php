<?php

declare(strict_types=1);

namespace Presence\Tests;

/**
 * A bare Redis connection speaking RESP2, so the tests can look at Redis (who is
 * subscribed, what is published) without phpredis, and independently of the code
 * under test.
 */
final class Resp
{
    /** @var resource */
    private $socket;
    private string $buffer = '';

    public function __construct(string $hostPort)
    {
        $socket = @stream_socket_client('tcp://' . $hostPort, $errno, $error, 2.0);
        if ($socket === false) {
            throw new \RuntimeException("Redis: cannot connect to $hostPort: $error");
        }
        stream_set_read_buffer($socket, 0);
        $this->socket = $socket;
    }

    /** Sends a command and returns its reply. */
    public function call(string ...$args): mixed
    {
        $this->send(...$args);
        return $this->reply(microtime(true) + 2.0);
    }

    public function send(string ...$args): void
    {
        $out = '*' . count($args) . "\r\n";
        foreach ($args as $a) {
            $out .= '$' . strlen($a) . "\r\n" . $a . "\r\n";
        }
        fwrite($this->socket, $out);
    }

    /** The next reply or pushed message, or throws at the deadline. */
    public function reply(float $deadline): mixed
    {
        $line = $this->line($deadline);
        $rest = substr($line, 1);
        switch ($line[0]) {
            case '+':
                return $rest;
            case '-':
                throw new \RuntimeException('Redis: ' . $rest);
            case ':':
                return (int) $rest;
            case '$':
                if ((int) $rest < 0) {
                    return null;
                }
                while (strlen($this->buffer) < (int) $rest + 2) {
                    $this->fill($deadline);
                }
                $bulk = substr($this->buffer, 0, (int) $rest);
                $this->buffer = (string) substr($this->buffer, (int) $rest + 2);
                return $bulk;
            case '*':
                $items = [];
                for ($i = 0; $i < (int) $rest; $i++) {
                    $items[] = $this->reply($deadline);
                }
                return $items;
        }
        throw new \RuntimeException('Redis: unexpected reply ' . $line);
    }

    private function line(float $deadline): string
    {
        while (($end = strpos($this->buffer, "\r\n")) === false) {
            $this->fill($deadline);
        }
        $line = substr($this->buffer, 0, $end);
        $this->buffer = (string) substr($this->buffer, $end + 2);
        return $line;
    }

    private function fill(float $deadline): void
    {
        $left = $deadline - microtime(true);
        if ($left <= 0) {
            throw new \RuntimeException('Redis: no reply within the deadline');
        }
        $read = [$this->socket];
        $none = null;
        if (stream_select($read, $none, $none, (int) $left, (int) (fmod($left, 1) * 1e6)) === 1) {
            $bytes = fread($this->socket, 65536);
            if ($bytes === '' || $bytes === false) {
                throw new \RuntimeException('Redis: connection closed');
            }
            $this->buffer .= $bytes;
        }
    }
}
