"""Real local servers for the outward actions: an HTTP receiver and an SMTP server on 127.0.0.1,
and a worker whose outward activities can be made to die at a chosen point."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    target: str = ""  # the request target as sent: path and query

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """An HTTP endpoint on 127.0.0.1. Paths: /ok (200), /flaky (500 twice, then 200),
    /throttle (429 Retry-After: 1 once, then 200), /missing (404), /hang (hangs 3 s once,
    then 200), /down (always 503)."""

    port: int = 0
    requests: list[Received] = field(default_factory=list)
    hits: dict[str, int] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def to(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            path = self.path.split("?")[0]
            with lock:
                receiver.requests.append(
                    Received(
                        self.command,
                        path,
                        {k.lower(): v for k, v in self.headers.items()},
                        body,
                        self.path,
                    )
                )
                hit = receiver.hits[path] = receiver.hits.get(path, 0) + 1
            status, headers = 200, {}
            if path == "/flaky" and hit <= 2:
                status = 500
            elif path == "/throttle" and hit == 1:
                status, headers = 429, {"Retry-After": "1"}
            elif path == "/missing":
                status = 404
            elif path == "/down":
                status = 503
            elif path == "/hang" and hit == 1:
                time.sleep(3)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "2")
            self.end_headers()
            with contextlib.suppress(OSError):
                self.wfile.write(b"{}")

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    return Handler


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(found))
    server.daemon_threads = True
    found.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield found
    server.shutdown()
    server.server_close()


@dataclass
class Mailbox:
    host: str = "127.0.0.1"
    port: int = 0
    messages: list[Any] = field(default_factory=list)  # email.message.Message
    recipients: list[list[str]] = field(default_factory=list)  # RCPT TO of each message
    encrypted: list[bool] = field(default_factory=list)  # each message came over TLS
    logins: list[tuple[str, str, bool]] = field(default_factory=list)  # user, password, TLS

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        from aiosmtpd.smtp import AuthResult, LoginPassword

        assert isinstance(auth_data, LoginPassword)
        user, password = auth_data.login.decode(), auth_data.password.decode()
        self.logins.append((user, password, session.ssl is not None))
        return AuthResult(success=True)

    refuse: set[str] = field(default_factory=set)  # recipients answered 550
    defer_once: set[str] = field(default_factory=set)  # recipients answered 451 the first time

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if address in self.refuse:
            return "550 no such user"
        if address in self.defer_once:
            self.defer_once.discard(address)
            return "451 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        from email import message_from_bytes

        self.recipients.append(list(envelope.rcpt_tos))
        self.encrypted.append(session.ssl is not None)
        self.messages.append(message_from_bytes(envelope.content))
        return "250 Message accepted for delivery"


@contextlib.contextmanager
def running_mailbox(
    *, tls_context: ssl.SSLContext | None = None, auth: bool = False
) -> Iterator[Mailbox]:
    """An SMTP server on 127.0.0.1; `tls_context`: it offers STARTTLS; `auth`: it accepts
    AUTH (also without TLS, as a badly configured server would) and records each login."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    box = Mailbox(port=port)
    options: dict[str, Any] = {}
    if tls_context is not None:
        options["tls_context"] = tls_context
    if auth:
        options.update(authenticator=box.authenticate, auth_require_tls=False)
    controller = Controller(box, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    with running_mailbox() as box:
        yield box


@dataclass
class MailCA:
    """A certificate authority made for the test, and a server certificate for 127.0.0.1."""

    ca: trustme.CA
    server_context: ssl.SSLContext
    ca_file: str


@pytest.fixture(scope="session")
def mail_ca(tmp_path_factory: pytest.TempPathFactory) -> MailCA:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca_file = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return MailCA(ca=ca, server_context=context, ca_file=str(ca_file))


@pytest.fixture
def start_mailbox() -> Any:
    """`running_mailbox`, for tests that start their own (a test module cannot import it from
    here: which `conftest` module it gets depends on what pytest collected first)."""
    return running_mailbox
