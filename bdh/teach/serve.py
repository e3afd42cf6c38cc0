"""`bdh view --serve`: the viewer page on a local HTTP server (stdlib `http.server`) that steps the live simulator.

    GET  /                      the page (the same view.js as the static page, in serve mode)
    POST /api/load  {"prompt"}  start a prompt: pass A picks the shown nodes; returns the page data, no frames yet
    POST /api/step  {"by"}      advance the live simulator by "sub" | "round" | "token" | "all"; returns new frames
    GET  /api/node?pop=P&i=I    any node's variables and synapses (on demand; sigma series by replay)

Binds 127.0.0.1 unless told otherwise; one request at a time (the simulator is one object); request bodies and
prompts are bounded; every bad request is a 4xx with a one-line JSON {"error": ...}, never a traceback.
"""

from __future__ import annotations

import json
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlparse

from .view import ViewError, ViewSession, page

MAX_BODY = 64 * 1024


class _BadRequest(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


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


def _load(h, session, url):
    prompt = h._body().get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise _BadRequest(400, "prompt: expected a non-empty string")
    raw = prompt.encode("utf-8")
    if len(raw) > session.max_prompt:
        raise _BadRequest(413, f"prompt: expected at most {session.max_prompt} bytes, got {len(raw)}")
    return h._json(200, session.load(list(raw)))


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
    """One request: routed by ROUTES to the server's session (`server.session`, under `server.lock`)."""

    server_version = "bdh-view"

    def log_message(self, fmt, *args):  # quiet unless asked
        if self.server.log is not None:
            self.server.log(f"{self.address_string()} {fmt % args}")

    def _send(self, status, body: bytes, ctype="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status, obj):
        self._send(status, json.dumps(obj, separators=(",", ":")).encode())

    def _body(self) -> dict:
        try:
            size = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            raise _BadRequest(400, "Content-Length: expected an integer") from None
        if size > MAX_BODY:
            raise _BadRequest(413, f"request body: expected at most {MAX_BODY} bytes, got {size}")
        raw = self.rfile.read(size) if size > 0 else b""
        try:
            obj = json.loads(raw or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _BadRequest(400, "request body: expected a JSON object") from None
        if not isinstance(obj, dict):
            raise _BadRequest(400, "request body: expected a JSON object")
        return obj

    def _route(self, method, url):
        answer = ROUTES.get((method, url.path))
        if answer is not None:
            with self.server.lock:
                return answer(self, self.server.session, url)
        if any(path == url.path for _, path in ROUTES):
            raise _BadRequest(405, f"{method} {url.path}: method not allowed")
        raise _BadRequest(404, f"{url.path}: not found (the viewer serves /, /api/load, /api/step, /api/node)")

    def _handle(self, method):
        try:
            self._route(method, urlparse(self.path))
        except _BadRequest as e:
            self._json(e.status, {"error": str(e)})
        except ViewError as e:
            self._json(400, {"error": str(e)})
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as e:  # a bug: the traceback goes to the server's stderr
            traceback.print_exc()
            self._json(500, {"error": f"internal error ({type(e).__name__}: {e}); see the server's output"})

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_PUT(self):
        self._handle("PUT")

    def do_DELETE(self):
        self._handle("DELETE")


def make_server(session: ViewSession, host: str = "127.0.0.1", port: int = 0, log=None) -> HTTPServer:
    """An HTTPServer for `session` (port 0: a free port, see server.server_address)."""
    session.serving = True
    srv = HTTPServer((host, port), Handler)
    srv.session, srv.lock, srv.log = session, threading.Lock(), log
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
