"""`${env:NAME}` in webhook URLs and headers: which of the worker's variables a definition may
read, and keeping their values, and credentials written in URLs, out of everything crmflow
reports (step outcomes in the store, activity failures in the Temporal history, logs).

A definition is data anyone with publish rights writes; the worker's environment holds the
store's URL, the SMTP password and the Temporal credentials. So a definition reads only what the
operator offered: variables named `CRMFLOW_SECRET_*`, and those listed in `CRMFLOW_WEBHOOK_ENV`,
never another `CRMFLOW_*` setting.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from urllib.parse import quote, quote_plus

SECRET_PREFIX = "CRMFLOW_SECRET_"
ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# `scheme://userinfo@`: the user part can be a token as much as the password.
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#@\s]*@")
# Shorter values are not masked in messages: it would garble them, and they are no secret.
_MIN_MASKED = 4


class SecretRefused(ValueError):
    """An `${env:NAME}` the worker will not resolve; names the variable, never its value."""


def env_refusal(name: str, allowed: Collection[str]) -> str | None:
    """Why `${env:NAME}` may not be read (None: it may)."""
    if name.startswith(SECRET_PREFIX):
        return None
    if name.startswith("CRMFLOW_"):
        return (
            f"${{env:{name}}} is refused: crmflow's own settings are never sent "
            f"(name the variable {SECRET_PREFIX}...)"
        )
    if name not in allowed:
        return (
            f"${{env:{name}}} is refused: only {SECRET_PREFIX}* variables and those listed in "
            "CRMFLOW_WEBHOOK_ENV are read"
        )
    return None


def redact_url_credentials(text: str) -> str:
    """`https://user:pass@host/` -> `https://***@host/`, wherever a URL stands in `text`."""
    return _URL_USERINFO.sub(r"\1***@", text)


def shown_url(text: str) -> str:
    """A URL as a step shows it: without credentials, query or fragment."""
    text = _URL_USERINFO.sub(r"\1", text, count=1)
    return re.split(r"[?#]", text, maxsplit=1)[0]


class Secrets:
    """Resolves `${env:NAME}` for one request and remembers the values it put in, so that
    `redact` can mask them (raw or percent-encoded) in whatever is reported about it."""

    def __init__(self, env: Mapping[str, str], allowed: Collection[str] = ()) -> None:
        self.env = env
        self.allowed = allowed
        self._masks: dict[str, str] = {}

    def resolve(self, value: str, render_text: Callable[[str], str]) -> str:
        """Render the template parts of `value`, then put in the `${env:NAME}` values. The env
        values are never rendered and a rendered record property never becomes an env
        reference: a record cannot make the worker send a variable the definition does not.
        Values go in as they are (a value for a URL's query is URL-encoded by whoever sets it)."""
        return self._substitute(value, render_text, resolve=True)

    def shown(self, value: str, render_text: Callable[[str], str]) -> str:
        """`value` rendered, its `${env:NAME}` references left as they are: what is reported."""
        return self._substitute(value, render_text, resolve=False)

    def _substitute(self, value: str, render_text: Callable[[str], str], *, resolve: bool) -> str:
        parts = ENV_REF.split(value)
        out = []
        for index, part in enumerate(parts):
            if index % 2 == 0:
                out.append(render_text(part) if part else "")
            elif not resolve:
                out.append(f"${{env:{part}}}")
            else:
                out.append(self._value(part))
        return "".join(out)

    def _value(self, name: str) -> str:
        refusal = env_refusal(name, self.allowed)
        if refusal is not None:
            raise SecretRefused(refusal)
        if name not in self.env:
            raise SecretRefused(f"environment variable {name} is not set on the worker")
        secret = self.env[name]
        self._remember(name, secret)
        return secret

    def _remember(self, name: str, secret: str) -> None:
        if len(secret) < _MIN_MASKED:
            return
        for form in (secret, quote(secret, safe=""), quote(secret), quote_plus(secret)):
            self._masks[form] = f"${{env:{name}}}"

    def redact(self, text: str) -> str:
        text = redact_url_credentials(text)
        for secret in sorted(self._masks, key=len, reverse=True):
            text = text.replace(secret, self._masks[secret])
        return text
