<?php

declare(strict_types=1);

namespace Presence;

/**
 * The server (or Redis) could not be reached or did not answer in time. The message
 * names the request and the transport's error; for curl, getCode() is the curl error
 * number (7: connection refused, 28: timeout).
 */
class ConnectionException extends PresenceException
{
}
