<?php
/**
 * Waits for a process started by test.sh to be ready, up to a deadline:
 *
 *     php wait.php redis <host:port> <pid> <seconds>   # until Redis answers PING
 *     php wait.php http <url> <pid> <seconds>          # until the URL answers 200
 *
 * Gives up at once when process <pid> has exited, and says why it gave up.
 */

declare(strict_types=1);

[, $kind, $target, $pid, $seconds] = $argv + [null, '', '', '0', '10'];
$deadline = microtime(true) + (float) $seconds;
$last = 'no attempt';

while (true) {
    if (!alive((int) $pid)) {
        fwrite(STDERR, "$kind $target: process $pid exited ($last)\n");
        exit(1);
    }
    if ($kind === 'redis') {
        $s = @stream_socket_client("tcp://$target", $errno, $error, 0.5);
        if ($s !== false) {
            stream_set_timeout($s, 1);
            fwrite($s, "PING\r\n");
            $line = (string) fgets($s);
            fclose($s);
            if (str_starts_with($line, '+PONG')) {
                exit(0);
            }
            $last = 'answered ' . trim($line);
        } else {
            $last = $error;
        }
    } else {
        $context = stream_context_create(['http' => ['timeout' => 1, 'ignore_errors' => true]]);
        $body = @file_get_contents($target, false, $context);
        $status = isset($http_response_header[0]) ? $http_response_header[0] : 'no answer';
        if ($body !== false && preg_match('#^HTTP/\S+ 200 #', $status)) {
            exit(0);
        }
        $last = trim($status . ' ' . (string) $body);
    }
    if (microtime(true) > $deadline) {
        fwrite(STDERR, "$kind $target: not ready within $seconds s ($last)\n");
        exit(1);
    }
    usleep(50000); // readiness is not announced anywhere: ask again shortly
}

/** Whether process $pid runs; zombies count as exited. */
function alive(int $pid): bool
{
    exec('ps -o stat= -p ' . $pid . ' 2>/dev/null', $out, $status);
    if ($status === 127) {
        return true; // no ps: the deadline alone decides
    }
    return $status === 0 && !str_starts_with(trim($out[0] ?? ''), 'Z');
}
