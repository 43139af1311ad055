"""The `webhook` action: one HTTP request per (enrollment, action), as far as the receiver can tell.

An HTTP call cannot join the store's transaction, so exactly-once is built from two halves:
- the step row is written after the response, in one transaction; a retry that finds it returns
  the stored result without calling again (a crash after the step was stored sends nothing);
- every attempt carries the same `Idempotency-Key`, derived from the Temporal workflow id and
  the action id, so a receiver dedupes the window in between (a crash after the receiver
  answered, before the step was stored, sends one more request with the same key).

Failures: a timeout, a connection error, a 5xx and a 429 raise a retryable error (Temporal retries
with backoff per `worker._policies.WEBHOOK`; a 429's `Retry-After` sets the next delay); any other
4xx, a refused address, a bad template or an `${env:NAME}` that is missing or not allowed (see
`_secrets`) is a permanent failure stored on the step, and the enrollment goes on. What an
attempt reports has the secrets it used and URL credentials masked.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import socket
import time
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from crmflow.definitions import WebhookAction
from crmflow.store import RecordRepository
from crmflow.templates import TemplateProblem

from ._once import Checkpoint, idempotency_key, no_checkpoint, run_outward
from ._secrets import SecretRefused, Secrets, shown_url
from ._templating import render_for
from .models import ActionInput, ActionResult, EnrollmentContext

# Longest Retry-After honoured; a longer one is capped (the retry period is bounded anyway).
MAX_RETRY_AFTER = timedelta(minutes=10)


class Refused(Exception):
    """A permanent failure of the request before it is sent; the message is for the user."""


# IPv6 ranges that carry an IPv4 address in their last 32 bits, which a translator or tunnel
# on the way may deliver to: NAT64's well-known prefix (RFC 6052), IPv4-compatible (deprecated,
# RFC 4291) and IPv4-translated (SIIT, RFC 2765) addresses.
_LAST_32_BITS_IPV4 = tuple(
    ipaddress.IPv6Network(net) for net in ("64:ff9b::/96", "::/96", "::ffff:0:0:0/96")
)
# Local-use NAT64 (RFC 8215): where the IPv4 address sits depends on the length of the prefix
# the operator chose, and nothing in it is globally reachable: refused whole.
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")
# ISATAP interface identifiers (RFC 5214): 0000:5efe or 0200:5efe, then an IPv4 address.
_ISATAP_IDS = (0x00005EFE, 0x02005EFE)


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address may lead to: mapped, 6to4, Teredo (server and
    client), NAT64, IPv4-compatible, IPv4-translated and ISATAP forms."""
    found: list[ipaddress.IPv4Address] = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if any(ip in net for net in _LAST_32_BITS_IPV4):
        found.append(low32)
    if (int(ip) >> 32) & 0xFFFFFFFF in _ISATAP_IDS:
        found.append(low32)
    return found


def _not_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return not ip.is_global or ip.is_multicast


def forbidden_address(address: str) -> bool:
    """Loopback, private, link-local, reserved, multicast, unspecified: anything not global,
    also when it hides in an IPv6 address that embeds an IPv4 one (see `embedded_ipv4`)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv4Address):
        return _not_public(ip)
    if ip in _LOCAL_NAT64:
        return True
    if ip.ipv4_mapped is not None:
        # ::ffff:a.b.c.d is the IPv4 host itself: judged by that address alone.
        return _not_public(ip.ipv4_mapped)
    return _not_public(ip) or any(_not_public(v4) for v4 in embedded_ipv4(ip))


async def checked_address(host: str, port: int) -> str:
    """Resolve `host` and refuse it when any of its addresses is not public; returns the address
    to connect to (the one checked: a second resolution could answer differently)."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        # Retryable: DNS failures are usually transient.
        raise ApplicationError(f"cannot resolve {host}: {exc.strerror}", type="DnsError") from None
    addresses = [str(info[4][0]) for info in infos]
    refused = [a for a in addresses if forbidden_address(a)]
    if refused:
        what = "is" if refused[0] == host else f"resolves to {refused[0]},"
        raise Refused(
            f"{host} {what} a private, loopback or link-local address: "
            "refused (CRMFLOW_ALLOW_PRIVATE_WEBHOOKS=1 allows it)"
        )
    return addresses[0]


def retry_after(value: str | None, *, now: datetime) -> timedelta | None:
    """A Retry-After header (seconds or an HTTP date), capped at MAX_RETRY_AFTER."""
    if not value:
        return None
    value = value.strip()
    try:
        delay = timedelta(seconds=max(0.0, float(value)))
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        delay = max(timedelta(0), when - now)
    return min(delay, MAX_RETRY_AFTER)


def classify(response: httpx.Response, *, label: str) -> ActionResult:
    """The step result of a response, or raise the retryable error it calls for."""
    status = response.status_code
    if 200 <= status < 300:
        return ActionResult(outcome=f"{label}: {status}", detail={"status": status})
    if status == 429:
        delay = retry_after(response.headers.get("retry-after"), now=datetime.now(UTC))
        raise ApplicationError(
            f"{label}: 429 Too Many Requests", type="WebhookThrottled", next_retry_delay=delay
        )
    if status >= 500:
        raise ApplicationError(f"{label}: {status}", type="WebhookServerError")
    if 300 <= status < 400:
        where = response.headers.get("location", "?")
        return ActionResult(
            outcome=f"failed: {label}: {status} redirect to {where} (redirects are not followed)",
            failed=True,
            detail={"status": status},
        )
    return ActionResult(
        outcome=f"failed: {label}: {status} {response.reason_phrase}".rstrip(),
        failed=True,
        detail={"status": status},
    )


class RateLimiter:
    """At most `rate` requests per second per key, in this worker process; callers wait their
    turn (in arrival order) instead of being dropped. A turn further away than `max_wait` is not
    waited for in the activity: the caller is told when to come back, and the workflow waits on
    a timer, so a long queue never times an attempt out nor uses up its retries."""

    def __init__(self, rate: float | None, *, max_wait: float = 30.0) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.max_wait = max_wait
        self._next: dict[str, float] = {}

    def delay(self, key: str) -> float:
        """Book the next slot of `key` and return how long to wait for it; a slot further than
        `max_wait` away is not booked, and its (negated) distance is returned."""
        if not self.interval:
            return 0.0
        now = time.monotonic()
        slot = max(now, self._next.get(key, now))
        if slot - now > self.max_wait:
            return -(slot - now)
        self._next[key] = slot + self.interval
        return slot - now

    async def turn(self, key: str) -> float | None:
        """Wait for a booked turn (None), or return in how many seconds to ask again."""
        delay = self.delay(key)
        if delay < 0:
            return -delay
        if delay > 0:
            await asyncio.sleep(delay)
        return None


class WebhookActivities:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        allow_private: bool = False,
        rate: float | None = None,
        env: Mapping[str, str] | None = None,
        env_allowed: Collection[str] = (),
        checkpoint: Checkpoint | None = None,
        dry_run: bool = False,
    ) -> None:
        """`env_allowed`: names besides CRMFLOW_SECRET_* that `${env:NAME}` may read
        (CRMFLOW_WEBHOOK_ENV)."""
        self.sessions = sessions
        self.allow_private = allow_private
        self.dry_run = dry_run
        self.limiter = RateLimiter(rate)
        self.env = env if env is not None else os.environ
        self.env_allowed = frozenset(env_allowed)
        self.checkpoint = checkpoint or no_checkpoint

    @activity.defn(name="call_webhook")
    async def call_webhook(self, input: ActionInput) -> ActionResult:
        action = input.action
        if not isinstance(action, WebhookAction):
            raise TypeError(f"call_webhook cannot run a {action.type} action")
        return await run_outward(self.sessions, input, lambda: self._call(input, action))

    async def _call(self, input: ActionInput, action: WebhookAction) -> ActionResult:
        """One attempt. Whatever it reports (the step's outcome, which the store keeps; an
        error, whose message Temporal keeps in the history and the worker logs) has the
        secrets it used and any credentials of a URL masked."""
        key = idempotency_key(activity.info().workflow_id or "", action.id)
        secrets = Secrets(self.env, self.env_allowed)
        try:
            result = await self._deliver(input, action, key, secrets)
        except (Refused, SecretRefused) as exc:
            result = ActionResult(outcome=f"failed: {exc}", failed=True)
        except ApplicationError as exc:
            raise ApplicationError(
                secrets.redact(exc.message),
                type=exc.type,
                non_retryable=exc.non_retryable,
                next_retry_delay=exc.next_retry_delay,
            ) from None
        except Exception as exc:
            # Unexpected: retried like a transport error, its text masked all the same.
            raise ApplicationError(
                secrets.redact(str(exc)) or type(exc).__name__, type=type(exc).__name__
            ) from None
        attempt = activity.info().attempt
        return result.model_copy(
            update={
                "outcome": secrets.redact(result.outcome),
                "detail": {**result.detail, "attempt": attempt},
            }
        )

    def _properties(self, ctx: EnrollmentContext) -> dict[str, Any]:
        with self.sessions() as session:
            record = RecordRepository(session).get(ctx.object_type, ctx.record_id)
            return dict(record.properties) if record is not None else {}

    async def _deliver(
        self, input: ActionInput, action: WebhookAction, key: str, secrets: Secrets
    ) -> ActionResult:
        ctx = input.context
        props = await asyncio.to_thread(self._properties, ctx)

        def text(source: str) -> str:
            try:
                return render_for(ctx, source, props)
            except TemplateProblem as exc:
                raise Refused(str(exc)) from None

        # Steps show the URL as written, rendered but with its `${env:NAME}` references: no
        # encoding of a secret can slip through.
        shown = shown_url(secrets.shown(action.url, text).strip())
        try:
            url = httpx.URL(secrets.resolve(action.url, text).strip())
        except httpx.InvalidURL as exc:
            raise Refused(f"invalid URL {shown}: {exc}") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise Refused(f"{shown} is not an http:// or https:// URL")
        headers = {name: secrets.resolve(v, text) for name, v in action.headers.items()}
        for name, value in headers.items():
            if any(c in value for c in "\r\n\x00"):
                raise Refused(f"header {name}: the value contains a line break")
        headers["Idempotency-Key"] = key
        headers.setdefault("User-Agent", "crmflow")
        content = _body(action.body, text)
        if content is not None and not any(h.lower() == "content-type" for h in headers):
            headers["Content-Type"] = "application/json"
        label = f"{action.method} {shown}"
        if self.dry_run:
            return ActionResult(outcome=f"simulated: {label} (not sent)")
        target, extensions = url, {}
        if not self.allow_private:
            address = await checked_address(url.host, url.port or _default_port(url))
            # Connect to the address that was checked (no second lookup to rebind), keeping
            # the name for the Host header and for TLS (SNI and certificate check).
            target = url.copy_with(host=address)
            headers["Host"] = url.netloc.decode("ascii")
            if url.scheme == "https":
                extensions["sni_hostname"] = url.host
        later = await self.limiter.turn(ctx.workflow_key)
        if later is not None:
            return ActionResult(
                outcome=f"rate limit of {ctx.workflow_key}: {later:.0f}s of requests queued",
                retry_in=later,
            )
        self.checkpoint("before_effect", input)
        timeout = action.timeout.total_seconds()
        # Header values as UTF-8 bytes: a non-ASCII record value is sent, not an encoding error.
        raw_headers = {name.encode(): value.encode() for name, value in headers.items()}
        try:
            async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
                response = await client.request(
                    action.method,
                    target,
                    headers=raw_headers,
                    content=content,
                    extensions=extensions,
                )
        except httpx.TimeoutException:
            raise ApplicationError(
                f"{label}: timed out after {timeout:g}s", type="WebhookTimeout"
            ) from None
        except httpx.TransportError as exc:
            raise ApplicationError(
                f"{label}: {type(exc).__name__}: {exc}", type="WebhookConnection"
            ) from None
        self.checkpoint("after_effect", input)
        return classify(response, label=label)


def _default_port(url: httpx.URL) -> int:
    return 443 if url.scheme == "https" else 80


def _body(body: Any, text: Callable[[str], str]) -> bytes | None:
    if body is None:
        return None
    if isinstance(body, str):
        return text(body).encode()

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return text(value)
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        return value

    return json.dumps(walk(body), ensure_ascii=False).encode()
