<?php

declare(strict_types=1);

namespace Presence;

/**
 * Anything this package throws. Catch it to treat every failure alike; catch a
 * subclass to tell a caller's mistake (InvalidInputException), an unreachable
 * server (ConnectionException) and a refusal by the server (ServerException) apart.
 */
class PresenceException extends \RuntimeException
{
}
