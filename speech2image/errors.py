"""Every error speech2image raises on purpose.

Each message is one line: what is wrong (the parameter and its value where there is
one), then how to fix it. Library errors are wrapped with ``raise ... from e``.
"""


def one_line(error: Exception, limit: int = 300) -> str:
    """A library error's message on one line, for wrapping it in one of ours."""
    return " ".join(str(error).split())[:limit] or type(error).__name__


def unanswered(part: str) -> str:
    """Why a request failed when a part of the Flow does not answer: named, without its address."""
    return f"{part} does not answer (it may be restarting); try again"


class Speech2ImageError(Exception):
    """Base class of the project's errors."""


class InvalidRequest(Speech2ImageError, ValueError):
    """A request parameter or document is invalid; raised before any model work."""


class AudioError(InvalidRequest):
    """Audio that cannot be used: empty, not audio, too long or too large."""


class ForbiddenSource(InvalidRequest):
    """A document's `uri` names a path or URL the operator has not allow-listed."""


class NotFound(InvalidRequest):
    """A request for a route or a thing this server does not have."""


class MethodNotAllowed(InvalidRequest):
    """A request with a method its route does not take (the route's own are in `allowed`)."""

    def __init__(self, message: str, allowed: str = ""):
        super().__init__(message)
        self.allowed = allowed


class SlowRequest(InvalidRequest):
    """A request body that paused too long or arrived too slowly: 408."""


class MisdirectedHost(InvalidRequest):
    """A request for a host name this server is not served under (DNS rebinding): 421."""


class ForeignOrigin(InvalidRequest):
    """A request that changes something, sent by another site's page: 403."""


class UnknownModel(NotFound):
    """A request names a model this server does not serve."""


class TooLarge(InvalidRequest):
    """A request's body is over what the server accepts."""


class Unauthenticated(Speech2ImageError):
    """A request without a valid API key, where keys are required."""


class Unavailable(Speech2ImageError):
    """A part of the Flow does not answer (an executor is down or restarting)."""


class ConfigurationError(Speech2ImageError, ValueError):
    """An executor argument the operator set is unknown, of the wrong type or out of range; stops start-up."""


class Busy(Speech2ImageError):
    """A replica's queue is full: the request was refused at once, before any work; retry in
    `retry_after` seconds (HTTP's Retry-After, gRPC's `retry-after` metadata).

    It crosses from an executor to the gateway as a Jina error, its class name and its args as
    strings: the args are (message, retry_after), so the gateway rebuilds it with ``Busy(*args)``
    (`speech2image.api.openai.executor_error`) and reads the number, not the message."""

    def __init__(self, message: str, retry_after: float = 1.0):
        super().__init__(message, float(retry_after))
        self.retry_after = float(retry_after)

    def __str__(self) -> str:
        return self.args[0]


class DeadlineExceeded(Speech2ImageError):
    """A request's deadline passed: while it waited (it was dropped) or between two steps of its work."""


class Cancelled(Speech2ImageError):
    """The client of a request went away; its work stopped (nobody receives this)."""


class ModelLoadError(Speech2ImageError, RuntimeError):
    """A model is unknown, not cached and not downloadable, or failed to load."""


class GenerationError(Speech2ImageError, RuntimeError):
    """A model failed while running (for example CUDA out of memory)."""


class ClientError(Speech2ImageError):
    """client.py: a request could not be made or was refused."""


class PrometheusError(Speech2ImageError):
    """tools/prometheus.py: Prometheus is not installed and cannot be, or did not start."""
