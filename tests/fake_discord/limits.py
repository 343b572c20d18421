"""Discord's rate limits, as the fake Discord enforces them.

Discord answers every rate-limited route with ``X-RateLimit-*`` headers describing its bucket
(a fixed window that starts with the first request), a 429 with a JSON body and ``Retry-After``
when the bucket is empty, and a separate global limit per bot token. discord.py reads exactly
these (``discord/http.py``: ``X-Ratelimit-Bucket``, ``-Remaining``, ``-Limit``,
``-Reset-After``/``-Reset``; a 429 needs a ``Via`` header or it is taken for a Cloudflare ban,
and ``retry_after``/``global`` from the body).
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Limit:
    """``requests`` per window of ``per_s`` seconds."""

    requests: int
    per_s: float


@dataclass(frozen=True)
class RateLimits:
    """The limits the fake enforces; the defaults are Discord's (documented or observed).

    * ``global_per_s``: 50 requests/s per bot token, interactions and webhooks exempt;
    * ``reactions``: about 4/s per channel (Discord reports limit 1, reset after 0.25 s);
    * ``channel_messages``: 5 messages per 5 s per channel;
    * ``webhooks``: interaction follow-ups, 5 per 2 s per interaction token and route (Discord
      buckets follow-ups by the interaction, not the application id in their path:
      discord/discord-api-docs#2701);
    * ``channel_webhooks``: off unless set; messages created through webhooks (follow-ups
      included) per channel, a shared limit that Discord staff described as 30 per 60 s for
      webhooks (discord-api-docs#367) and that was observed but "hard to test" for follow-ups
      (#2701); answered with scope "shared";
    * ``reaction_users``: listing the users of one reaction (``GET .../reactions/{emoji}``),
      per channel. Discord buckets reactions per method and documents no number for this
      read; 5 per second is a conservative stand-in, so a client that ignores the headers
      meets 429s;
    * ``default``: every other route, per route and major parameter.
    """

    global_per_s: int = 50
    reactions: Limit = Limit(1, 0.25)
    channel_messages: Limit = Limit(5, 5.0)
    webhooks: Limit = Limit(5, 2.0)
    channel_webhooks: Limit | None = None
    reaction_users: Limit = Limit(5, 1.0)
    default: Limit = Limit(50, 1.0)


@dataclass(frozen=True)
class RouteBucket:
    """Where a request is counted: the route template's bucket, per major parameter."""

    template: str
    major: str
    limit: Limit
    global_limited: bool

    @property
    def hash(self) -> str:
        """Discord's opaque bucket id (``X-RateLimit-Bucket``), one per route template."""
        return hashlib.sha1(self.template.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Verdict:
    """The answer of a bucket to one request."""

    allowed: bool
    limit: int
    remaining: int
    reset_after: float
    bucket: str

    def headers(self, wall_clock: float) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": f"{wall_clock + self.reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{self.reset_after:.3f}",
            "X-RateLimit-Bucket": self.bucket,
        }


def too_many_requests_headers(retry_after: float, *, scope: str) -> dict[str, str]:
    """Headers of a 429 (``scope``: "user" for a route bucket, "global" or "shared")."""
    headers = {
        "Retry-After": str(max(1, math.ceil(retry_after))),
        "X-RateLimit-Scope": scope,
        # Discord sits behind Google's load balancer; discord.py treats a 429 without Via
        # as a Cloudflare ban and gives up at once.
        "Via": "1.1 google",
    }
    if scope == "global":
        headers["X-RateLimit-Global"] = "true"
    return headers


def too_many_requests_body(retry_after: float, *, is_global: bool) -> dict[str, object]:
    """The JSON of a 429, as Discord sends it."""
    return {
        "message": "You are being rate limited.",
        "retry_after": round(retry_after, 3),
        "global": is_global,
    }


_SNOWFLAKE = re.compile(r"^\d+$")


def classify(method: str, path: str, limits: RateLimits) -> RouteBucket:
    """The bucket of ``method path`` (path without the ``/api/v10`` prefix).

    >>> b = classify("PUT", "/channels/7/messages/9/reactions/👍/@me", RateLimits())
    >>> (b.major, b.limit, b.global_limited)
    ('7', Limit(requests=1, per_s=0.25), True)
    >>> classify("POST", "/webhooks/1/tok", RateLimits()).major
    'tok'
    >>> classify("GET", "/channels/7/messages/9/reactions/👍", RateLimits()).limit
    Limit(requests=5, per_s=1.0)
    """
    parts = path.strip("/").split("/")
    if parts[0] == "interactions":
        return RouteBucket(
            "POST /interactions/{id}/{token}/callback", parts[-2], limits.default, False
        )
    if parts[0] == "webhooks" and len(parts) >= 3:
        rest = "/messages/{message_id}" if len(parts) > 3 else ""
        template = f"{method} /webhooks/{{application_id}}/{{token}}{rest}"
        return RouteBucket(template, parts[2], limits.webhooks, False)
    if parts[0] == "channels" and len(parts) >= 2:
        channel = parts[1]
        if len(parts) >= 5 and parts[2] == "messages" and parts[4] == "reactions":
            if method == "GET" and len(parts) == 6:
                template = "GET /channels/{channel_id}/messages/{message_id}/reactions/{emoji}"
                return RouteBucket(template, channel, limits.reaction_users, True)
            # Adding and removing reactions share one bucket per channel.
            template = "/channels/{channel_id}/messages/{message_id}/reactions"
            return RouteBucket(template, channel, limits.reactions, True)
        if parts[2:] == ["messages"] and method == "POST":
            return RouteBucket(
                "POST /channels/{channel_id}/messages", channel, limits.channel_messages, True
            )
    template = method + " /" + "/".join("{id}" if _SNOWFLAKE.match(p) else p for p in parts)
    major = parts[1] if parts[0] in {"channels", "guilds"} and len(parts) > 1 else ""
    return RouteBucket(template, major, limits.default, True)


@dataclass
class _Window:
    started: float
    used: int = 0


@dataclass
class FixedWindows:
    """Fixed windows keyed by (bucket, major): a window starts with its first request."""

    clock: Callable[[], float] = time.monotonic
    _windows: dict[tuple[str, str], _Window] = field(default_factory=dict)

    def take(self, key: tuple[str, str], limit: Limit) -> Verdict:
        """Count one request; ``allowed`` is False (and nothing is counted) when full."""
        now = self.clock()
        window = self._windows.get(key)
        if window is None or now - window.started >= limit.per_s:
            window = self._windows[key] = _Window(now)
        reset_after = max(0.0, window.started + limit.per_s - now)
        if window.used >= limit.requests:
            return Verdict(False, limit.requests, 0, reset_after, key[0])
        window.used += 1
        return Verdict(True, limit.requests, limit.requests - window.used, reset_after, key[0])
