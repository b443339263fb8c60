<?php

declare(strict_types=1);

namespace Presence;

/**
 * The server answered, but not with success: an HTTP error status, or an answer that
 * is not what the API documents. getCode() is the HTTP status.
 */
class ServerException extends PresenceException
{
    /**
     * @param string $url       The request's URL.
     * @param int    $status    The HTTP status.
     * @param string $errorCode The API's error code (invalid_token, forbidden, ...),
     *                          or '' when the answer carried none.
     */
    public function __construct(
        string $message,
        private readonly string $url,
        private readonly int $status,
        private readonly string $errorCode = '',
    ) {
        parent::__construct($message, $status);
    }

    /** The URL of the refused request. */
    public function getUrl(): string
    {
        return $this->url;
    }

    /** The HTTP status of the answer. */
    public function getStatus(): int
    {
        return $this->status;
    }

    /**
     * The API's error code, stable and meant for programs (see api/openapi.yaml):
     * invalid_post, invalid_token, token_expired, forbidden, unavailable, ...; ''
     * when the answer did not come from the API (a proxy's error page).
     */
    public function getErrorCode(): string
    {
        return $this->errorCode;
    }
}
