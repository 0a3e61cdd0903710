"""The v1 JSON API, a module per resource; each view declares its request and answer models at the route
(:mod:`app.http.openapi`), parses, calls the services, and answers JSON; errors are raised as problems.

The token, the origin of browser writes and the JSON depth are checked before any view runs
(:mod:`app.http.auth`); the Label Studio webhook is checked by its shared secret instead (:mod:`.webhooks`).
"""

from app.http.api import classes, items, jobs, labels, models, predict, reviews, webhooks  # noqa: F401  (each adds its routes)
from app.http.api.common import api

__all__ = ["api"]
