<?php

declare(strict_types=1);

namespace Presence;

/**
 * An argument the server would refuse, found before anything was sent: retrying
 * cannot help, the calling code must change.
 */
class InvalidInputException extends PresenceException
{
}
