"""Errors a caller can act on: each names the input field at fault and why."""

from __future__ import annotations

import errno


class InputError(ValueError):
    """Bad input, found before any work starts. The service answers it with a 4xx."""

    def __init__(self, field: str | None, message: str, status: int = 400,
                 errors: list[tuple[str | None, str]] | None = None):
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message
        self.status = status
        # Every (field, message) found, when there were several (a form's checks over HTTP).
        self.errors = errors or [(field, message)]


class UnknownModel(InputError):
    """A model name nothing resolves: a 400 naming `model`, and on /v1 OpenAI's 404 model_not_found."""

    def __init__(self, message: str):
        super().__init__("model", message)


class ServiceError(RuntimeError):
    """The service could not be reached, or failed on its side (5xx): the request may be retried."""

    def __init__(self, message: str, status: int = 503):
        super().__init__(message)
        self.status = status


class StorageError(OSError):
    """A file under the home folder could not be written (disk full, read-only, no permission). The
    service answers 507, naming the file and the reason; what was there before is left whole."""

    def __init__(self, path, cause: OSError):
        reason = cause.strerror or str(cause)
        super().__init__(cause.errno, f"could not write {path}: {reason}")
        self.path = path
        self.reason = reason
        self.full = cause.errno in (errno.ENOSPC, errno.EDQUOT)


class Busy(RuntimeError):
    """Too much work already waits for what the request needs: try again later (HTTP 429).

    Neither the caller's mistake nor a provider's failure: nothing is cooled down."""

    def __init__(self, field: str, message: str, retry_after_s: int = 1):
        super().__init__(message)
        self.field = field
        self.retry_after_s = retry_after_s
