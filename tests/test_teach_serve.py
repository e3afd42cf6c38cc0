"""`bdh view --serve` for more than one person: a session per client (a cookie), bounded sessions (oldest evicted
first), a threaded server whose silent connections delay nobody, every answer JSON, errors one line in the
server's log (never a traceback), an unpaired surrogate in a prompt a 400, the body limit a 413, 127.0.0.1 by
default."""

import http.cookiejar
import inspect
import json
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
from small_models import small_model

from bdh.cli import build_parser
from bdh.teach import serve as S
from bdh.teach.view import ViewSession
from equivalence import TensorRunner, compile_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def compiled():
    return compile_model(TensorRunner(small_model()).model)


class Server:
    def __init__(self, compiled, **kw):
        self.lines = []
        self.srv = S.make_server(ViewSession(compiled, max_prompt=16), "127.0.0.1", 0, log=self.lines.append, **kw)
        self.port = self.srv.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def client(self):
        """A client with its own cookie jar (a browser)."""
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

        def req(path, body=None, timeout=30):
            data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
            r = urllib.request.Request(self.base + path, data=data, headers={"Content-Type": "application/json"})
            try:
                with opener.open(r, timeout=timeout) as resp:
                    return resp.status, resp.read()
            except urllib.error.HTTPError as e:
                return e.code, e.read()

        return req

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture
def server(compiled):
    s = Server(compiled)
    yield s
    s.close()


def test_server_steps_the_simulator_and_rejects_bad_requests(server, compiled):
    """The page, then load + step return frames equal to a session stepped in Python; bad requests get a 4xx with
    a one-line JSON message (never a traceback): bad JSON, a prompt too long, stepping before loading, an unknown
    step, path or method, a bad node index, a body over the limit (413)."""
    req, c = server.client(), compiled
    st, body = req("/")
    assert st == 200 and b"bdh-data" in body and b'"mode":"serve"' in body
    for path, r, status, match in [
        ("/api/step", {"by": "sub"}, 400, "no prompt"),
        ("/api/load", b"{not json", 400, "JSON object"),
        ("/api/load", {"prompt": ""}, 400, "non-empty"),
        ("/api/load", {"prompt": "x" * 17}, 413, "at most 16 bytes"),
        ("/api/load", b" " * (S.MAX_BODY + 1), 413, f"at most {S.MAX_BODY} bytes"),
        ("/nope", None, 404, "not found"),
        ("/api/load", None, 405, "not allowed"),
    ]:
        st, body = req(path, r)
        err = json.loads(body)["error"]
        assert st == status and match in err and "\n" not in err and "Traceback" not in err, (path, st, err)
    st, body = req("/api/load", {"prompt": "hi"})
    assert st == 200 and json.loads(body)["labels"] == ["h", "i"]
    st, body = req("/api/step", {"by": "token"})
    frames = json.loads(body)["frames"]
    assert st == 200 and len(frames) == 1 + 2 * len(c.kernel.rounds) and "end" in frames[-1]
    ref = ViewSession(c)
    ref.load(list(b"hi"))
    assert json.loads(json.dumps(ref.step("token"))) == frames
    st, body = req("/api/step", {"by": "diagonal"})
    assert st == 400 and "sub, round, token or all" in json.loads(body)["error"]
    st, body = req("/api/node?pop=neurons&i=x")
    assert st == 400 and "integer" in json.loads(body)["error"]
    st, body = req("/api/node?pop=neurons&i=99")
    assert st == 400 and "[0, 31]" in json.loads(body)["error"]
    st, body = req("/api/step", {"by": "all"})
    assert st == 200 and json.loads(body)["done"] is True
    assert all("\n" not in line and "Traceback" not in line for line in server.lines)


def test_two_clients_keep_their_own_prompts(server, compiled):
    """Client B's prompt does not replace client A's: each steps its own simulator to its own end."""
    a, b = server.client(), server.client()
    assert json.loads(a("/api/load", {"prompt": "ab"})[1])["labels"] == ["a", "b"]
    assert json.loads(b("/api/load", {"prompt": "xyz"})[1])["labels"] == ["x", "y", "z"]
    per_token = 1 + 2 * len(compiled.kernel.rounds)
    fa = json.loads(a("/api/step", {"by": "all"})[1])["frames"]
    fb = json.loads(b("/api/step", {"by": "all"})[1])["frames"]
    assert len(fa) == 2 * per_token and len(fb) == 3 * per_token
    ref = ViewSession(compiled)
    ref.load(list(b"ab"))
    assert json.loads(json.dumps(ref.step("all"))) == fa
    assert b'"labels":["a","b"]' in a("/")[1] and b'"labels":["x","y","z"]' in b("/")[1]
    assert len(server.srv.sessions) == 2


def test_idle_and_half_sent_connections_delay_nobody(compiled):
    """A client that connects and sends nothing, and one that sends half a body, do not hold up another client's
    page and step (bounded wait, far below the connection timeout); the timeout then closes them."""
    srv = Server(compiled, timeout=3.0)
    idle = socket.create_connection(("127.0.0.1", srv.port))
    half = socket.create_connection(("127.0.0.1", srv.port))
    half.sendall(b'POST /api/load HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"prompt": ')
    try:
        req = srv.client()
        t0 = time.perf_counter()
        assert req("/", timeout=2.5)[0] == 200
        assert req("/api/load", {"prompt": "a"}, timeout=2.5)[0] == 200
        assert req("/api/step", {"by": "token"}, timeout=2.5)[0] == 200
        assert time.perf_counter() - t0 < 2.5
        half.settimeout(10)
        assert half.recv(1000) == b""  # closed by the timeout, nothing sent: the body never came
    finally:
        idle.close(), half.close(), srv.close()
    assert all("Traceback" not in line and "\n" not in line for line in srv.lines)


def test_surrogate_prompt_is_a_400_without_a_traceback(compiled, capfd):
    """The JSON escape "\\ud800" (an unpaired surrogate, not text) is a 400 with one line; stderr, where the
    server logs, holds one line and no traceback."""
    srv = Server(compiled)
    srv.srv.log = S._stderr
    try:
        st, body = srv.client()("/api/load", b'{"prompt": "a\\ud800"}')
    finally:
        srv.close()
    err = json.loads(body)["error"]
    assert st == 400 and "surrogate" in err and "\n" not in err
    logged = capfd.readouterr().err
    assert "Traceback" not in logged and "surrogate" in logged and logged.count("\n") == 1


def test_every_answer_is_json(server):
    """http.server's own errors (an unknown method, a bad request line) are one-line JSON too."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"BREW /api/load HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = b""
        while chunk := s.recv(4096):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert b" 501 " in head.split(b"\r\n")[0] and b"application/json" in head and "error" in json.loads(body)


def test_sessions_are_bounded_oldest_first(compiled):
    """At most max_sessions clients; a new one evicts the least recently used, which then starts afresh. The
    frames kept by all sessions together are bounded too (the oldest session goes first)."""
    srv = Server(compiled, max_sessions=2)
    try:
        a, b, c = srv.client(), srv.client(), srv.client()
        for cl, p in ((a, "a"), (b, "b")):
            assert cl("/api/load", {"prompt": p})[0] == 200
        assert b("/api/step", {"by": "sub"})[0] == 200  # b used last, a is the oldest
        assert c("/api/load", {"prompt": "c"})[0] == 200
        assert len(srv.srv.sessions) == 2 and srv.srv.sessions.evicted == 1
        assert b("/api/step", {"by": "sub"})[0] == 200
        st, body = a("/api/step", {"by": "sub"})  # evicted: a fresh session, no prompt yet
        assert st == 400 and "no prompt" in json.loads(body)["error"]
    finally:
        srv.close()
    per_token = 1 + 2 * len(compiled.kernel.rounds)
    srv = Server(compiled, max_frames=per_token + 1)
    try:
        a, b = srv.client(), srv.client()
        for cl in (a, b):
            assert cl("/api/load", {"prompt": "a"})[0] == 200 and cl("/api/step", {"by": "all"})[0] == 200
        assert len(srv.srv.sessions) == 1 and srv.srv.sessions.evicted == 1
    finally:
        srv.close()


def test_default_host_is_this_machine_only():
    """The server binds 127.0.0.1 unless told otherwise: make_server, serve and `bdh view --host`."""
    for f in (S.make_server, S.serve):
        assert inspect.signature(f).parameters["host"].default == "127.0.0.1"
    args = build_parser().parse_args(["view", "DIR", "--serve"])
    assert args.host == "127.0.0.1"
