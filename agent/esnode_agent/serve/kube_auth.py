"""Every endpoint behind Kubernetes' own authentication and authorisation (metrics_auth = kubernetes).

As kube-rbac-proxy and controller-runtime's secure metrics do: the bearer token is checked with a
TokenReview, then the user it names with a SubjectAccessReview for verb get on the request path
(a nonResourceURL, e.g. /metrics). No token or a bad one: 401; not allowed: 403. Decisions are
cached for a TTL in a bounded map, and the reviews (blocking kubernetes-client calls) run in a
worker thread, never on the event loop. Tokens travel in clear unless the web config sets TLS.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

import anyio
from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from esnode_agent.serve.decision_cache import DecisionCache

if TYPE_CHECKING:
    from kubernetes import client

log = logging.getLogger(__name__)

Decision = Literal["allowed", "unauthenticated", "forbidden"]
_STATUS = {"unauthenticated": 401, "forbidden": 403}
# kubelet probes carry no token (kube-rbac-proxy's --ignore-paths); they reveal nothing.
PROBE_PATHS = frozenset({"/healthz", "/readyz"})
UNAUTHORIZED_HEADERS = {"WWW-Authenticate": 'Bearer realm="esnode"'}


class KubeReviewer:
    """TokenReview + SubjectAccessReview through the API server; blocking."""

    def __init__(self, api: client.ApiClient) -> None:
        from kubernetes import client  # noqa: PLC0415  (~9 MiB: only when metrics_auth is on)

        self._client = client
        self._authn = client.AuthenticationV1Api(api)
        self._authz = client.AuthorizationV1Api(api)

    def review(self, token: str, path: str) -> Decision:
        c = self._client
        token_review = self._authn.create_token_review(c.V1TokenReview(spec=c.V1TokenReviewSpec(token=token)))
        status = token_review.status
        if status is None or not status.authenticated or status.user is None:
            return "unauthenticated"
        user = status.user
        access = self._authz.create_subject_access_review(
            c.V1SubjectAccessReview(
                spec=c.V1SubjectAccessReviewSpec(
                    user=user.username,
                    uid=user.uid,
                    groups=user.groups,
                    extra=user.extra,
                    non_resource_attributes=c.V1NonResourceAttributes(path=path, verb="get"),
                )
            )
        )
        return "allowed" if access.status is not None and access.status.allowed else "forbidden"


def _bearer(headers: Headers) -> str | None:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


class KubeAuthGuard:
    def __init__(self, app: ASGIApp, reviewer: KubeReviewer, cache: DecisionCache[Decision]) -> None:
        self._app = app
        self._reviewer = reviewer
        self._cache = cache

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PROBE_PATHS:
            await self._app(scope, receive, send)
            return
        decision = await self._decide(Headers(scope=scope), scope["path"])
        if decision == "allowed":
            await self._app(scope, receive, send)
            return
        headers = UNAUTHORIZED_HEADERS if decision == "unauthenticated" else None
        response = PlainTextResponse(decision + "\n", status_code=_STATUS[decision], headers=headers)
        await response(scope, receive, send)

    async def _decide(self, headers: Headers, path: str) -> Decision:
        token = _bearer(headers)
        if token is None:
            return "unauthenticated"
        key = self._cache.key(token, path)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        try:
            decision = await anyio.to_thread.run_sync(self._reviewer.review, token, path)
        except Exception as exc:  # API server unreachable: refuse, and do not cache the refusal
            log.warning("token review failed", extra={"error": type(exc).__name__})
            return "unauthenticated"
        self._cache.put(key, decision)
        return decision


def kube_auth_guard(app: ASGIApp, api: client.ApiClient, cache_seconds: float) -> KubeAuthGuard:
    """metrics_auth = kubernetes: the whole app behind TokenReview and SubjectAccessReview."""
    log.info("kubernetes authentication and authorisation on every endpoint")
    return KubeAuthGuard(app, KubeReviewer(api), DecisionCache(cache_seconds))
