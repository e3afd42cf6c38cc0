"""`bdh view --serve`: the viewer page on a local HTTP server (stdlib `http.server`) that steps the live simulator.

    GET  /                      the page (the same view.js as the static page, in serve mode)
    POST /api/load  {"prompt"}  start a prompt: pass A picks the shown nodes; returns the page data, no frames yet
    POST /api/step  {"by"}      advance the live simulator by "sub" | "round" | "token" | "all"; returns new frames
    GET  /api/node?pop=P&i=I    any node's variables and synapses (on demand; sigma series by replay)

More than one person: every client gets its own session (its own prompt and simulator), found by the cookie
`bdh_session` the server sets on the first answer (the page's fetch() sends it back, so view.js needs no session
code). Sessions are bounded in number (`max_sessions`) and in memory (`max_frames`, the frames all sessions keep
together); the least recently used one is evicted first, and its client starts afresh with a new cookie.

The server is threaded (one thread per connection) and every connection has a timeout (`timeout`, seconds): a
client that connects and sends nothing, or half a body, holds only its own thread until the timeout closes it.
Each session has its own lock, so one client's long step delays only that client.

Binds 127.0.0.1 unless told otherwise; request bodies and prompts are bounded. Every answer is JSON (the page
itself aside): a bad request is a 4xx with a one-line {"error": ...}; an error is one line in the server's log
(stderr), never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import sys
import threading
from collections import OrderedDict
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from .view import ViewError, ViewSession, page

MAX_BODY = 64 * 1024  # bytes of a request body
MAX_SESSIONS = 16  # clients served at once; the least recently used is evicted first
MAX_FRAMES = 200_000  # frames all sessions keep together (the memory bound); the oldest sessions go first
TIMEOUT = 10.0  # seconds a connection may stay silent (idle, or mid-request) before it is closed
COOKIE = "bdh_session"


class _BadRequest(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def new_session(template: ViewSession) -> ViewSession:
    """A fresh session with the template's compiled network and settings (the network is shared, read only)."""
    s = ViewSession(
        template.compiled,
        backend=template.backend,
        neurons=template.K,
        hub_cap=template.hub_cap,
        synapses=template.M,
        max_prompt=template.max_prompt,
        title=template.title,
        label=template.label,
        device=template.device,
        task=template.task,
        model=template.model,
        edges=template.E,
        sigma_synapses=template.Ms,
    )
    s.serving = True
    return s


class Sessions:
    """The clients' sessions by id, least recently used first; bounded in number and in the frames kept."""

    def __init__(self, template: ViewSession, max_sessions: int = MAX_SESSIONS, max_frames: int = MAX_FRAMES):
        self.template, self.max_sessions, self.max_frames = template, int(max_sessions), int(max_frames)
        self._by_id: OrderedDict[str, tuple[ViewSession, threading.Lock]] = OrderedDict()
        self._lock = threading.Lock()
        self.evicted = 0

    def get(self, sid: str | None) -> tuple[str, ViewSession, threading.Lock, bool]:
        """(id, session, its lock, new?) for the client's id; an unknown or missing id gets a new session."""
        with self._lock:
            if sid in self._by_id:
                self._by_id.move_to_end(sid)
                return (sid, *self._by_id[sid], False)
            sid = secrets.token_urlsafe(16)
            self._by_id[sid] = (new_session(self.template), threading.Lock())
            self._evict(keep=sid)
            return (sid, *self._by_id[sid], True)

    def trim(self, keep: str) -> None:
        """After a request: evict the oldest sessions while the frames kept exceed the budget (never `keep`)."""
        with self._lock:
            self._evict(keep)

    def _evict(self, keep: str) -> None:
        def frames():
            return sum(len(s.frames) for s, _ in self._by_id.values() if getattr(s, "frames", None))

        while len(self._by_id) > 1 and (len(self._by_id) > self.max_sessions or frames() > self.max_frames):
            oldest = next(k for k in self._by_id if k != keep)
            del self._by_id[oldest]
            self.evicted += 1

    def __len__(self):
        return len(self._by_id)


def _page(h, session, url):
    return h._send(200, page(session.data(), serve=True).encode(), "text/html; charset=utf-8")


def _node(h, session, url):
    q = parse_qs(url.query)
    pop = q.get("pop", ["neurons"])[0]
    try:
        i = int(q.get("i", [""])[0])
    except ValueError:
        raise _BadRequest(400, "i: expected an integer node index") from None
    return h._json(200, session.node(pop, i))


def prompt_ids(prompt, max_prompt: int) -> list[int]:
    """A typed prompt as byte ids (UTF-8); a 400 for what is not text (an unpaired surrogate), a 413 if too long."""
    if not isinstance(prompt, str) or not prompt:
        raise _BadRequest(400, "prompt: expected a non-empty string")
    try:
        raw = prompt.encode("utf-8")
    except UnicodeEncodeError as e:
        raise _BadRequest(
            400, f"prompt: expected Unicode text, got an unpaired surrogate U+{ord(prompt[e.start]):04X} at {e.start}"
        ) from None
    if len(raw) > max_prompt:
        raise _BadRequest(413, f"prompt: expected at most {max_prompt} bytes, got {len(raw)}")
    return list(raw)


def _load(h, session, url):
    return h._json(200, session.load(prompt_ids(h._body().get("prompt"), session.max_prompt)))


def _step(h, session, url):
    frames = session.step(h._body().get("by", "sub"))
    return h._json(200, dict(frames=frames, done=session.done))


# (method, path) -> the function that answers it
ROUTES = {
    ("GET", "/"): _page,
    ("GET", "/index.html"): _page,
    ("GET", "/api/node"): _node,
    ("POST", "/api/load"): _load,
    ("POST", "/api/step"): _step,
}


class Handler(BaseHTTPRequestHandler):
    """One connection (its own thread): each request routed by ROUTES to the client's session, under its lock."""

    server_version = "bdh-view"

    def setup(self):
        self.timeout = self.server.conn_timeout  # the socket's timeout: a silent client is closed, not waited for
        super().setup()

    def log_message(self, fmt, *args):  # requests: quiet unless asked
        if self.server.access_log is not None:
            self.server.access_log(f"{self.address_string()} {fmt % args}")

    def log_error(self, fmt, *args):  # errors: one line in the server's log
        self.server.log(f"bdh view: {self.address_string()}: {fmt % args}".replace("\n", " "))

    def send_error(self, code, message=None, explain=None):
        """http.server's own errors (a bad request line, headers too long, ...) as one-line JSON too."""
        self.log_error("%d %s", code, message or "")
        self.close_connection = True
        with contextlib.suppress(OSError):
            self._json(code, {"error": message or self.responses.get(code, ("error",))[0]})

    def _send(self, status, body: bytes, ctype="application/json"):
        if getattr(self, "_keep", None):  # the memory bound holds before the client hears back
            self.server.sessions.trim(keep=self._keep)
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if getattr(self, "_new_sid", None):
            self.send_header("Set-Cookie", f"{COOKIE}={self._new_sid}; Path=/; HttpOnly; SameSite=Strict")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status, obj):
        self._send(status, json.dumps(obj, separators=(",", ":")).encode())

    def _body(self) -> dict:
        try:
            size = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            raise _BadRequest(400, "Content-Length: expected an integer") from None
        if size < 0:
            raise _BadRequest(400, f"Content-Length: expected a size >= 0, got {size}")
        if size > MAX_BODY:
            raise _BadRequest(413, f"request body: expected at most {MAX_BODY} bytes, got {size}")
        raw = self.rfile.read(size) if size > 0 else b""  # a half-sent body ends in the socket's timeout
        if len(raw) < size:
            raise _BadRequest(400, f"request body: expected {size} bytes, got {len(raw)} before the end")
        try:
            obj = json.loads(raw or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _BadRequest(400, "request body: expected a JSON object") from None
        if not isinstance(obj, dict):
            raise _BadRequest(400, "request body: expected a JSON object")
        return obj

    def _sid(self) -> str | None:
        try:
            c = SimpleCookie(self.headers.get("Cookie", ""))
        except CookieError:
            return None
        return c[COOKIE].value if COOKIE in c else None

    def _route(self, method, url):
        answer = ROUTES.get((method, url.path))
        if answer is None:
            if any(path == url.path for _, path in ROUTES):
                raise _BadRequest(405, f"{method} {url.path}: method not allowed")
            raise _BadRequest(404, f"{url.path}: not found (the viewer serves /, /api/load, /api/step, /api/node)")
        sid, session, lock, new = self.server.sessions.get(self._sid())
        self._new_sid, self._keep = (sid if new else None), sid
        with lock:
            answer(self, session, url)

    def _handle(self, method):
        self._new_sid = self._keep = None
        try:
            self._route(method, urlparse(self.path))
        except (_BadRequest, ViewError) as e:
            status = getattr(e, "status", 400)
            self.log_error("%d %s %s: %s", status, method, self.path, e)
            self.close_connection = True
            self._json(status, {"error": str(e)})
        except (TimeoutError, BrokenPipeError, ConnectionResetError) as e:
            self.log_error("%s %s: connection %s", method, self.path, type(e).__name__)
            self.close_connection = True
        except Exception as e:  # a bug: one line in the log (never a traceback), a 500 to the client
            self.log_error("500 %s %s: internal error %s: %s", method, self.path, type(e).__name__, e)
            self.close_connection = True
            self._json(500, {"error": f"internal error ({type(e).__name__}: {e}); see the server's output"})

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_PUT(self):
        self._handle("PUT")

    def do_DELETE(self):
        self._handle("DELETE")


class Server(ThreadingHTTPServer):
    """A thread per connection (daemon threads: Ctrl-C never waits for a silent client)."""

    daemon_threads = True

    def handle_error(self, request, client_address):  # what escaped a handler: one line, never a traceback
        e = sys.exc_info()[1]
        self.log(f"bdh view: {client_address[0]}: connection error {type(e).__name__}: {e}".replace("\n", " "))


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def make_server(
    session: ViewSession,
    host: str = "127.0.0.1",
    port: int = 0,
    log=_stderr,
    access_log=None,
    max_sessions: int = MAX_SESSIONS,
    max_frames: int = MAX_FRAMES,
    timeout: float = TIMEOUT,
) -> Server:
    """A threaded server; `session` is the template every client's own session copies (port 0: a free port, see
    server.server_address). `log` gets the error lines, `access_log` (if given) one line per request."""
    srv = Server((host, port), Handler)
    srv.sessions = Sessions(session, max_sessions, max_frames)
    srv.log, srv.access_log, srv.conn_timeout = log, access_log, float(timeout)
    return srv


def serve(session: ViewSession, host="127.0.0.1", port=0, out=sys.stdout) -> None:
    srv = make_server(session, host, port)
    h, p = srv.server_address[:2]
    print(f"bdh view: serving on http://{h}:{p}/  (Ctrl-C to stop)", file=out, flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
