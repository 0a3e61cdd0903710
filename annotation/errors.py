"""Errors raised by :mod:`annotation`: every Label Studio failure becomes one of these.

The tree (``retryable`` in brackets: whether trying the same call again later can help)::

    AnnotationError
    ├── LabelStudioUnavailable     [yes]  connection refused, timeout, 5xx, 429: the server is down or busy
    ├── LabelStudioRejected        [no]   a 4xx answer: the request or the project state is wrong
    │   └── LabelStudioAuthError   [no]   401/403: the API token is wrong or lacks permission
    ├── ProjectConfigError         [no]   a labelling config juicer cannot use, or a change that would orphan labels
    ├── WebhookPayloadError        [no]   a webhook body that is not a Label Studio annotation event
    │   └── EventNotConfirmedError [no]   an event Label Studio does not confirm (juicer reads back every one)
    │       └── EventNotServedError [no]  a real annotation, but on a task of a project juicer does not serve
    └── TaskImageError             [5xx/timeout: yes]  a task's image URL that is not allowed or cannot be fetched

SDK (``label_studio_sdk.core.api_error.ApiError``) and ``httpx`` errors are chained with ``raise ... from``, so
the original is in ``__cause__``.
"""

from __future__ import annotations


class AnnotationError(Exception):
    """Something went wrong talking to Label Studio; ``retryable`` says whether a later retry can help."""

    retryable: bool = False

    def __init__(self, message: str, *, retryable: bool | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if retryable is not None:
            self.retryable = retryable
        self.status = status


class LabelStudioUnavailable(AnnotationError):
    """Label Studio did not answer in time, refused the connection, or failed with 5xx/429: try again later."""

    retryable = True


class LabelStudioRejected(AnnotationError):
    """Label Studio answered 4xx: the request was wrong for the server's state; fix it before retrying."""


class LabelStudioAuthError(LabelStudioRejected):
    """Label Studio answered 401/403: the API token is wrong, expired, or the user lacks the permission."""


class ProjectConfigError(AnnotationError):
    """The project's labelling configuration cannot be changed as asked (e.g. a class that has labels removed)."""


class WebhookPayloadError(AnnotationError):
    """A webhook body that is not a readable Label Studio annotation event."""


class EventNotConfirmedError(WebhookPayloadError):
    """An event that does not match what Label Studio itself holds (read with juicer's own token): it is dropped."""


class EventNotServedError(EventNotConfirmedError):
    """An annotation Label Studio holds, on a task juicer has no item for (a project it does not serve): dropped, counted."""


class TaskImageError(AnnotationError):
    """A task's image cannot be read: a URL juicer may not fetch (not Label Studio's, host not allowed), or a failed fetch."""
