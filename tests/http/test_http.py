#!/usr/bin/python3
"""Integration tests of lib/http through tests/http/http_test_server.

Usage: test_http.py PATH_TO_http_test_server [TEST_NAME...]

Every test talks to a real server over real sockets.  The server is started
with a 1 s header timeout and a 1 s body timeout so that the timeout tests
run quickly.  The run fails if any test fails or if the server does not exit
0 after SIGTERM (under AddressSanitizer that also covers leaks)."""

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

SERVER = None
TIMEOUT = 10
FILE_PATH = None       # The file the server answers /file with.
FILE_DATA = b""


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)


class Server:
    def __init__(self, binary, *args):
        self.proc = subprocess.Popen([binary, *args], stdout=subprocess.PIPE)
        line = self.proc.stdout.readline()
        if not line:
            raise Failure("server did not start")
        self.port = int(line)

    def connect(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def stop(self):
        """SIGTERM, then wait; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return -1


class Reader:
    """Reads HTTP responses from a socket, keeping leftover bytes."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed")
        self.buf += data

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        if len(self.buf) < n:
            # Large bodies: collect the pieces and join once.
            parts, have = [self.buf], len(self.buf)
            while have < n:
                data = self.sock.recv(max(65536, min(n - have, 1 << 20)))
                if not data:
                    raise EOFError("connection closed")
                parts.append(data)
                have += len(data)
            self.buf = b"".join(parts)
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def rest(self, timeout=TIMEOUT):
        """Everything until the peer closes (EOF or reset)."""
        self.sock.settimeout(timeout)
        parts = [self.buf]
        self.buf = b""
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                parts.append(data)
        except (ConnectionResetError, BrokenPipeError):
            pass
        return b"".join(parts)

    def response(self, head=False):
        """Returns (status, headers dict with lower-case names, body)."""
        status_line = self._line()
        parts = status_line.split(b" ", 2)
        check(parts[0] == b"HTTP/1.1", "bad status line %r" % status_line)
        status = int(parts[1])
        headers = {}
        while True:
            line = self._line()
            if not line:
                break
            name, value = line.split(b":", 1)
            headers[name.decode().lower()] = value.strip().decode()
        if head or status in (100, 204, 304):
            return status, headers, b""
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    self._line()
                    break
                body += self._exact(size)
                check(self._exact(2) == b"\r\n", "bad chunk end")
            return status, headers, body
        n = int(headers.get("content-length", "0"))
        return status, headers, self._exact(n)

    def closed(self, timeout=TIMEOUT):
        """True when the peer closes (EOF or reset) within 'timeout'."""
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False


def request(method, path, headers=(), body=b"", version="HTTP/1.1"):
    lines = ["%s %s %s" % (method, path, version), "Host: test"]
    lines += ["%s: %s" % h for h in headers]
    if body and not any(h[0].lower() in ("content-length", "transfer-encoding")
                        for h in headers):
        lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def roundtrip(data, head=False):
    with SERVER.connect() as s:
        s.sendall(data)
        return Reader(s).response(head=head)


def get_json(path):
    status, _, body = roundtrip(request("GET", path))
    check(status == 200, "GET %s: %d" % (path, status))
    return json.loads(body)


def rss():
    status, _, body = roundtrip(request("GET", "/rss"))
    check(status == 200, "rss status %d" % status)
    return int(body)


# ---- Tests.

def test_hello():
    status, headers, body = roundtrip(request("GET", "/hello"))
    check(status == 200, "status %d" % status)
    check(body == b"Hello, world!\n", "body %r" % body)
    check(headers["content-length"] == "14", "content-length")
    check(headers.get("content-type") == "text/plain", "content-type")
    check("date" in headers, "no Date header")
    check("connection" not in headers, "keep-alive answer says Connection")


def test_keep_alive_and_pipelining():
    """Several requests in one send (a slow one first) are answered in
    order on the same connection."""
    with SERVER.connect() as s:
        data = (request("GET", "/slow") +
                request("GET", "/hello") +
                request("POST", "/echo", body=b"first body") +
                request("GET", "/v2.1/servers/abc/action") +
                request("PUT", "/upload", [("Transfer-Encoding", "chunked")],
                        b"5\r\nhello\r\n0\r\n\r\n") +
                request("HEAD", "/hello") +
                request("GET", "/stream") +
                request("GET", "/hello"))
        s.sendall(data)
        r = Reader(s)
        st, _, body = r.response()
        check((st, body) == (200, b"slow\n"), "1st: %d %r" % (st, body))
        st, _, body = r.response()
        check((st, body) == (200, b"Hello, world!\n"), "2nd: %r" % body)
        st, _, body = r.response()
        check((st, body) == (200, b"first body"), "3rd: %r" % body)
        st, _, body = r.response()
        check(json.loads(body) == {"route": "action-get", "id": "abc"}, "4th: %r" % body)
        st, _, body = r.response()
        check(json.loads(body)["bytes"] == 5, "5th: %r" % body)
        st, h, body = r.response(head=True)
        check(st == 200 and h["content-length"] == "14", "6th (HEAD): %r" % h)
        st, h, body = r.response()
        check(body.startswith(b"start\npiece 0\n"), "7th: %r" % body)
        st, _, body = r.response()
        check(body == b"Hello, world!\n", "8th: %r" % body)
        # The connection is still usable afterwards.
        s.sendall(request("GET", "/hello"))
        check(r.response()[0] == 200, "after pipeline")


def test_pipeline_read_ahead_limit():
    """More pipelined bytes than max_pipeline_bytes while a request is in
    flight: the server stops reading but answers everything in order."""
    with SERVER.connect() as s:
        n = 600
        data = request("GET", "/slow") + request("GET", "/hello") * n
        sender = threading.Thread(target=s.sendall, args=(data,))
        sender.start()
        r = Reader(s)
        check(r.response()[2] == b"slow\n", "slow first")
        for i in range(n):
            st, _, body = r.response()
            check(body == b"Hello, world!\n", "pipelined %d" % i)
        sender.join()


def test_http10():
    with SERVER.connect() as s:
        s.sendall(request("GET", "/hello", version="HTTP/1.0"))
        r = Reader(s)
        st, h, body = r.response()
        check(st == 200 and h.get("connection") == "close", "1.0: %r" % h)
        check(r.closed(), "HTTP/1.0 connection not closed")
    with SERVER.connect() as s:
        s.sendall(request("GET", "/hello", [("Connection", "keep-alive")], version="HTTP/1.0"))
        r = Reader(s)
        st, h, body = r.response()
        check(h.get("connection") == "keep-alive", "1.0 keep-alive: %r" % h)
        s.sendall(request("GET", "/hello", [("Connection", "keep-alive")], version="HTTP/1.0"))
        check(r.response()[0] == 200, "second 1.0 request")


def test_connection_close():
    with SERVER.connect() as s:
        s.sendall(request("GET", "/hello", [("Connection", "close")]) + request("GET", "/hello"))
        r = Reader(s)
        st, h, body = r.response()
        check(st == 200 and h.get("connection") == "close", "close: %r" % h)
        check(r.buf == b"", "data after the close answer")
        check(r.closed(), "not closed")


def test_head():
    st, h, body = roundtrip(request("HEAD", "/hello"), head=True)
    check(st == 200 and h["content-length"] == "14", "HEAD: %d %r" % (st, h))
    # No body bytes follow: the next answer on the connection parses.
    with SERVER.connect() as s:
        s.sendall(request("HEAD", "/v2.1/servers/x") + request("GET", "/hello"))
        r = Reader(s)
        r.response(head=True)
        check(r.response()[2] == b"Hello, world!\n", "after HEAD")


def test_404_405():
    st, h, body = roundtrip(request("GET", "/nope"))
    check(st == 404, "404: %d" % st)
    check(json.loads(body)["error"]["code"] == 404, "404 body %r" % body)
    check(h.get("x-error-handler") == "json", "custom error handler not used")
    st, h, body = roundtrip(request("DELETE", "/hello"))
    check(st == 405, "405: %d" % st)
    check(h.get("allow") == "GET, HEAD", "Allow: %r" % h.get("allow"))
    st, h, body = roundtrip(request("PUT", "/v2.1/servers/x/action", body=b"abc"))
    check(st == 405 and h.get("allow") == "GET, POST, HEAD", "405 action %r" % h)
    # An error answer without a body keeps the connection alive.
    with SERVER.connect() as s:
        s.sendall(request("GET", "/nope") + request("GET", "/hello"))
        r = Reader(s)
        check(r.response()[0] == 404, "pipelined 404")
        check(r.response()[0] == 200, "after 404")


def test_router():
    check(get_json("/v2.1/servers/detail") == {"route": "detail"}, "literal over capture")
    check(get_json("/v2.1/servers/detail/") == {"route": "detail"}, "trailing slash")
    check(get_json("/v2.1/servers/a%20b") == {"route": "show", "id": "a b"}, "decoding")
    st, _, body = roundtrip(request("POST", "/v2.1/servers/s1/action", body=b"{}"))
    check(json.loads(body) == {"route": "action-post", "id": "s1"}, "post action %r" % body)
    q = get_json("/query?x=1+2&flag&y=%41%42#frag")
    check(q["x"] == "1 2" and q["items"] == {"x": "1 2", "flag": "", "y": "AB"}, "query %r" % q)
    check(q["id"].startswith("req-") and len(q["id"]) == 40, "request id %r" % q["id"])


def test_stream_response():
    st, h, body = roundtrip(request("GET", "/stream"))
    check(h.get("transfer-encoding") == "chunked", "not chunked: %r" % h)
    check(body == b"start\n" + b"".join(b"piece %d\n" % i for i in range(5)),
          "body %r" % body)


def test_echo_body():
    payload = os.urandom(60000)
    st, h, body = roundtrip(request("POST", "/echo", body=payload))
    check(st == 200 and body == payload, "echo length %d" % len(body))
    # Chunked request body, buffered route.
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (b"abc", b"", b"defg")[::2])
    st, h, body = roundtrip(request("POST", "/echo", [("Transfer-Encoding", "chunked")],
                                    chunked + b"0\r\n\r\n"))
    check(body == b"abcdefg", "chunked echo %r" % body)


def test_header_too_large():
    with SERVER.connect() as s:
        s.sendall(request("GET", "/hello", [("X-Big", "a" * 20000)]))
        r = Reader(s)
        st, h, body = r.response()
        check(st == 431, "431: %d" % st)
        check(json.loads(body)["error"]["code"] == 431, "431 body %r" % body)
        check(h.get("connection") == "close", "431 without Connection: close")
        check(r.closed(), "not closed after 431")


def test_body_too_large():
    # Declared length over the route's 64 KiB: refused before the body.
    with SERVER.connect() as s:
        s.sendall(request("POST", "/echo", [("Content-Length", "100000")]))
        r = Reader(s)
        st, h, body = r.response()
        check(st == 413 and h.get("connection") == "close", "413: %d %r" % (st, h))
        check(r.closed(), "not closed after 413")
    # Chunked body growing over the limit.
    with SERVER.connect() as s:
        chunk = b"a" * 16384
        data = request("POST", "/echo", [("Transfer-Encoding", "chunked")],
                       b"".join(b"4000\r\n" + chunk + b"\r\n" for _ in range(5)))
        try:
            s.sendall(data)
        except (ConnectionResetError, BrokenPipeError):
            pass
        r = Reader(s)
        st, h, body = r.response()
        check(st == 413, "chunked 413: %d" % st)
    # Streamed route: declared length over its cap, and chunked over it.
    st, h, body = roundtrip(request("PUT", "/upload-capped", [("Content-Length", "2000000")]))
    check(st == 413, "capped declared: %d" % st)
    with SERVER.connect() as s:
        s.settimeout(TIMEOUT)
        s.sendall(request("PUT", "/upload-capped", [("Transfer-Encoding", "chunked")]))
        chunk = b"%x\r\n%s\r\n" % (65536, b"z" * 65536)
        try:
            for _ in range(20):
                s.sendall(chunk)
        except (ConnectionResetError, BrokenPipeError):
            pass
        st, h, body = Reader(s).response()
        check(st == 413 and json.loads(body)["error"]["code"] == 413, "capped chunked: %d" % st)


def test_malformed():
    other = SERVER.connect()
    with SERVER.connect() as s:
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n")
        r = Reader(s)
        st, h, body = r.response()
        check(st == 400, "400: %d" % st)
        check(json.loads(body)["error"]["code"] == 400, "400 body %r" % body)
        check(r.closed(), "not closed after 400")
    with SERVER.connect() as s:
        s.sendall(b"\x00\x01garbage\r\n\r\n")
        r = Reader(s)
        check(r.response()[0] == 400, "binary garbage")
        check(r.closed(), "not closed after garbage")
    with SERVER.connect() as s:
        s.sendall(request("POST", "/echo", [("Transfer-Encoding", "chunked")], b"zz\r\n"))
        r = Reader(s)
        check(r.response()[0] == 400, "bad chunk size")
    with other:
        other.sendall(request("GET", "/hello"))
        check(Reader(other).response()[0] == 200, "other client affected")


def test_expect_continue():
    with SERVER.connect() as s:
        body = b"x" * 1000
        s.sendall(request("POST", "/echo", [("Expect", "100-continue"),
                                            ("Content-Length", str(len(body)))]))
        r = Reader(s)
        st, h, _ = r.response()
        check(st == 100, "expected 100 Continue, got %d" % st)
        s.sendall(body)
        st, h, got = r.response()
        check(st == 200 and got == body, "after 100: %d" % st)
        # Streamed route: 100 when the handler starts reading.
        s.sendall(request("PUT", "/upload", [("Expect", "100-continue"),
                                             ("Content-Length", "3")]))
        check(r.response()[0] == 100, "no 100 for streamed route")
        s.sendall(b"abc")
        st, h, got = r.response()
        check(json.loads(got)["bytes"] == 3, "streamed after 100: %r" % got)
    # Too large: 413 and no 100.
    with SERVER.connect() as s:
        s.sendall(request("POST", "/echo", [("Expect", "100-continue"),
                                            ("Content-Length", "1000000")]))
        check(Reader(s).response()[0] == 413, "413 instead of 100")


def test_upload_into_handler_buffer():
    """A streamed body received into the handler's own buffer
    (http_req_set_body_buffer()) arrives whole and in order, with
    Content-Length and chunked (whose framing lands in that buffer too),
    sent in uneven pieces; the pieces come at the place offered."""
    data = os.urandom(3 << 20)
    want = {"bytes": len(data), "sum": sum(data)}

    def pieces(b):
        i, n = 0, 1
        while i < len(b):
            yield b[i:i + n]
            i += n
            n = n * 7 % 300007 + 1

    for chunked in (False, True):
        with SERVER.connect() as s:
            if chunked:
                s.sendall(request("PUT", "/upload-inplace", [("Transfer-Encoding", "chunked")]))
                for p in pieces(data):
                    s.sendall(b"%x\r\n" % len(p) + p + b"\r\n")
                s.sendall(b"0\r\n\r\n")
            else:
                s.sendall(request("PUT", "/upload-inplace", [("Content-Length", str(len(data)))]))
                for p in pieces(data):
                    s.sendall(p)
            st, _, body = Reader(s).response()
            got = json.loads(body)
            check(st == 200 and {k: got[k] for k in want} == want,
                  "chunked=%s: %d %r" % (chunked, st, got))
            check(got["in_place"] > 0 and not got["bad"], "chunked=%s: %r" % (chunked, got))


def test_upload_1gib_flat_rss():
    total = 1 << 30
    block = bytes(range(256)) * 4096      # 1 MiB
    chunk = b"%x\r\n" % len(block) + block + b"\r\n"
    before = rss()
    peak = [before]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    t0 = time.time()
    try:
        with SERVER.connect() as s:
            s.settimeout(60)
            s.sendall(request("PUT", "/upload", [("Transfer-Encoding", "chunked")]))
            for _ in range(total // len(block)):
                s.sendall(chunk)
            s.sendall(b"0\r\n\r\n")
            st, h, body = Reader(s).response()
    finally:
        done.set()
        sampler.join()
    elapsed = time.time() - t0
    check(st == 200, "upload status %d" % st)
    got = json.loads(body)
    check(got["bytes"] == total, "bytes %d" % got["bytes"])
    check(got["sum"] == sum(block) * (total // len(block)), "checksum")
    check(got["pauses"] >= 30, "pauses %d" % got["pauses"])
    growth = peak[0] - before
    print("    1 GiB chunked upload: %.2f s, RSS before %.1f MB, peak %.1f MB, growth %.2f MB, "
          "%d pauses" % (elapsed, before / 1e6, peak[0] / 1e6, growth / 1e6, got["pauses"]))
    check(growth < 20e6, "RSS grew by %d bytes" % growth)


def test_client_disconnects():
    """Clients that go away mid-body, mid-response and during a handler;
    the server must stay healthy (and clean under the sanitizers)."""
    for _ in range(5):
        with SERVER.connect() as s:
            s.sendall(request("PUT", "/upload", [("Transfer-Encoding", "chunked")],
                              b"10000\r\n" + b"q" * 30000))
        with SERVER.connect() as s:
            s.sendall(request("POST", "/echo", [("Content-Length", "1000")], b"a" * 10))
        with SERVER.connect() as s:
            s.sendall(request("GET", "/slow"))
        s = SERVER.connect()
        s.sendall(request("GET", "/stream"))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
        with SERVER.connect() as s:
            s.sendall(request("PUT", "/upload", [("Content-Length", "100000")], b"x" * 1000))
    time.sleep(0.4)
    check(roundtrip(request("GET", "/hello"))[0] == 200, "server unhealthy")


def test_header_timeout():
    with SERVER.connect() as s:
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n")
        t0 = time.time()
        closed = Reader(s).closed(timeout=5)
        elapsed = time.time() - t0
        check(closed, "slow client not cut off")
        check(0.7 < elapsed < 3, "cut off after %.2f s" % elapsed)
    # A connection that sends nothing at all is cut off as well.
    with SERVER.connect() as s:
        t0 = time.time()
        check(Reader(s).closed(timeout=5), "silent client not cut off")
        check(time.time() - t0 < 3, "silent client cut off late")
    # A body that stops arriving is cut off at the body timeout.
    with SERVER.connect() as s:
        s.sendall(request("POST", "/echo", [("Content-Length", "100")], b"a" * 10))
        t0 = time.time()
        check(Reader(s).closed(timeout=5), "stalled body not cut off")
        check(time.time() - t0 < 3, "stalled body cut off late")
    check(get_json("/stats")["timeouts"] >= 3, "timeouts not counted")


def test_many_idle_connections():
    n = 5000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 1000), hard))
    socks = []
    try:
        t0 = time.time()
        req = request("GET", "/hello")
        # Each connection sends its first request at once: the shared test
        # server cuts off connections that stay silent for its 1 s header
        # timeout, and opening 5,000 takes longer than that on a loaded
        # machine or under the sanitizers.
        for _ in range(n):
            s = SERVER.connect()
            s.sendall(req)
            socks.append(s)
        for s in socks:
            check(Reader(s).response()[0] == 200, "idle conn request")
        open_now = get_json("/stats")["connections_open"]
        check(open_now >= n, "only %d connections open" % open_now)
        time.sleep(1.5)
        # All of them are still open and usable.
        for s in socks:
            s.sendall(req)
        for s in socks:
            check(Reader(s).response()[0] == 200, "idle conn reused")
        check(roundtrip(request("GET", "/hello"))[0] == 200, "new connection")
        print("    %d keep-alive connections held (%.1f s), server RSS %.1f MB"
              % (n, time.time() - t0, rss() / 1e6))
    finally:
        for s in socks:
            s.close()


def test_max_connections(binary):
    srv = Server(binary, "--max-connections", "10")
    try:
        socks = [socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT)
                 for _ in range(12)]
        refused = 0
        for s in socks:
            try:
                s.sendall(request("GET", "/hello"))
                Reader(s).response()
            except (EOFError, ConnectionResetError, BrokenPipeError):
                refused += 1
        check(refused == 2, "%d refused" % refused)
        for s in socks:
            s.close()
        # The server notices the closes asynchronously: retry until a slot
        # is free again.
        st = None
        for _ in range(50):
            try:
                with socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT) as s:
                    s.sendall(request("GET", "/stats"))
                    st = json.loads(Reader(s).response()[2])
                    break
            except (EOFError, ConnectionResetError, BrokenPipeError):
                time.sleep(0.1)
        check(st is not None and st["connections_refused"] >= 2, "stats %r" % st)
    finally:
        check(srv.stop() == 0, "server exit")


def test_sigterm_graceful(binary):
    srv = Server(binary)
    idle = socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT)
    idle.sendall(request("GET", "/hello"))
    Reader(idle).response()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT) as s:
        s.sendall(request("GET", "/slow"))
        time.sleep(0.05)
        srv.proc.send_signal(signal.SIGTERM)
        r = Reader(s)
        st, h, body = r.response()
        check(st == 200 and body == b"slow\n", "in-flight answer: %d %r" % (st, body))
        check(h.get("connection") == "close", "no Connection: close during shutdown")
        check(r.closed(), "not closed after the in-flight answer")
    check(Reader(idle).closed(timeout=2), "idle connection not closed")
    try:
        rc = srv.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        rc = srv.stop()
    check(rc == 0, "exit code %d" % rc)
    try:
        socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()
        check(False, "still accepting after shutdown")
    except OSError:
        pass


# ---- File answers (http_respond_file: sendfile from the file to the socket).

def file_stats():
    return get_json("/file-stats")


def wait_file_stats(cond, timeout=10):
    """Polls /file-stats until cond(stats) holds; returns the last stats."""
    deadline = time.time() + timeout
    st = file_stats()
    while not cond(st) and time.time() < deadline:
        time.sleep(0.05)
        st = file_stats()
    return st


def test_file_whole():
    before = file_stats()
    st, h, body = roundtrip(request("GET", "/file"))
    check(st == 200, "status %d" % st)
    check(h["content-length"] == str(len(FILE_DATA)), "content-length %r" % h)
    check(h.get("content-type") == "application/octet-stream", "content-type %r" % h)
    check(body == FILE_DATA, "body differs (%d bytes)" % len(body))
    after = wait_file_stats(lambda x: x["ok"] > before["ok"])
    check(after["ok"] == before["ok"] + 1, "done not called with 0: %r" % after)
    check(after["bytes"] - before["bytes"] == len(FILE_DATA), "sent %r" % after)
    # HEAD: the head only, and the connection stays usable.
    with SERVER.connect() as s:
        s.sendall(request("HEAD", "/file") + request("GET", "/hello"))
        r = Reader(s)
        st, h, _ = r.response(head=True)
        check(st == 200 and h["content-length"] == str(len(FILE_DATA)), "HEAD %r" % h)
        check(r.response()[2] == b"Hello, world!\n", "after HEAD /file")


def test_file_ranges():
    n = len(FILE_DATA)
    cases = [("bytes=0-0", 0, 1), ("bytes=100-199", 100, 200), ("bytes=-500", n - 500, n),
             ("bytes=%d-" % (n - 10), n - 10, n), ("bytes=5-%d" % (n + 100), 5, n),
             ("bytes=1000000-9000000", 1000000, 9000001)]
    with SERVER.connect() as s:
        r = Reader(s)
        for rng, a, b in cases:
            s.sendall(request("GET", "/file", [("Range", rng)]))
            st, h, body = r.response()
            check(st == 206, "%s: status %d" % (rng, st))
            check(h["content-range"] == "bytes %d-%d/%d" % (a, b - 1, n),
                  "%s: content-range %r" % (rng, h.get("content-range")))
            check(body == FILE_DATA[a:b], "%s: body differs" % rng)
        s.sendall(request("GET", "/file", [("Range", "bytes=%d-" % n)]))
        st, h, body = r.response()
        check(st == 416 and h.get("content-range") == "bytes */%d" % n, "416: %d %r" % (st, h))
        s.sendall(request("GET", "/hello"))
        check(r.response()[0] == 200, "keep-alive after ranges")


def test_file_pipelined():
    """Requests pipelined before and after file answers are answered in
    order, with nothing written into the middle of a file body."""
    with SERVER.connect() as s:
        data = (request("GET", "/slow") +
                request("GET", "/file") +
                request("GET", "/hello") +
                request("GET", "/file", [("Range", "bytes=10-20")]) +
                request("POST", "/echo", body=b"after the file") +
                request("GET", "/stream") +
                request("GET", "/file"))
        s.sendall(data)
        r = Reader(s)
        check(r.response()[2] == b"slow\n", "1st")
        check(r.response()[2] == FILE_DATA, "2nd: file differs")
        check(r.response()[2] == b"Hello, world!\n", "3rd")
        check(r.response()[2] == FILE_DATA[10:21], "4th: range differs")
        check(r.response()[2] == b"after the file", "5th")
        check(r.response()[2].startswith(b"start\n"), "6th")
        check(r.response()[2] == FILE_DATA, "7th: file differs")
        s.sendall(request("GET", "/hello"))
        check(r.response()[0] == 200, "keep-alive after the pipeline")


def test_file_concurrent():
    results = []

    def fetch():
        try:
            results.append(roundtrip(request("GET", "/file"))[2] == FILE_DATA)
        except Exception:
            results.append(False)

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check(results == [True] * 4, "concurrent downloads %r" % results)


def test_file_client_closes():
    """Clients that go away half-way through a file body (closing or
    resetting): done reports -ECONNRESET, another client is served whole
    meanwhile and afterwards."""
    before = file_stats()
    other = SERVER.connect()
    other.sendall(request("GET", "/file"))
    other_reader = Reader(other)
    for rst in (False, True, False, True):
        s = SERVER.connect()
        s.sendall(request("GET", "/file"))
        got = 0
        while got < len(FILE_DATA) // 4:
            got += len(s.recv(65536))
        if rst:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    with other:
        check(other_reader.response()[2] == FILE_DATA, "other download differs")
    after = wait_file_stats(lambda x: x["reset"] >= before["reset"] + 4)
    check(after["reset"] - before["reset"] == 4, "resets %r" % after)
    check(roundtrip(request("GET", "/file"))[2] == FILE_DATA, "download afterwards")
    # Closed before the head was even read, and before the handler answered.
    before = file_stats()
    for _ in range(5):
        with SERVER.connect() as s:
            s.sendall(request("GET", "/file"))
        with SERVER.connect() as s:
            s.sendall(request("GET", "/file-later"))
    after = wait_file_stats(lambda x: x["ok"] + x["reset"] >= before["ok"] + before["reset"] + 10)
    check(after["ok"] + after["reset"] == before["ok"] + before["reset"] + 10,
          "outcomes %r" % after)
    check(after["reset"] >= before["reset"] + 5, "late answers not dropped: %r" % after)
    # A late file answer on a live connection, then the next request.
    with SERVER.connect() as s:
        s.sendall(request("GET", "/file-later") + request("GET", "/hello"))
        r = Reader(s)
        check(r.response()[2] == FILE_DATA, "late file differs")
        check(r.response()[2] == b"Hello, world!\n", "after the late file")


def test_file_short():
    """The file is shorter than announced: the bytes that exist are sent,
    then the connection is closed (the length cannot be met)."""
    before = file_stats()
    with SERVER.connect() as s:
        s.sendall(request("GET", "/file-short") + request("GET", "/hello"))
        r = Reader(s)
        status_line = r._line()
        check(b" 200 " in status_line, "status %r" % status_line)
        head = {}
        while True:
            line = r._line()
            if not line:
                break
            k, v = line.split(b":", 1)
            head[k.decode().lower()] = v.strip().decode()
        check(head["content-length"] == str(len(FILE_DATA) + 4096), "length %r" % head)
        # The whole file, then the close (a socket timeout fails the test).
        body = r.rest()
        check(body == FILE_DATA, "got %d bytes, not the file" % len(body))
    after = wait_file_stats(lambda x: x["nodata"] > before["nodata"])
    check(after["nodata"] == before["nodata"] + 1, "nodata %r" % after)


def test_file_send_timeout():
    """A client that stops reading is cut off after send_timeout (1 s
    here) once the socket buffers are full."""
    before = file_stats()
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", SERVER.port))
    with s:
        s.sendall(request("GET", "/file"))
        t0 = time.time()
        after = wait_file_stats(lambda x: x["timedout"] > before["timedout"], timeout=15)
        elapsed = time.time() - t0
        check(after["timedout"] == before["timedout"] + 1, "no send timeout: %r" % after)
        check(0.7 < elapsed < 8, "cut off after %.2f s" % elapsed)
        check(Reader(s).closed(timeout=5), "connection left open")
    check(roundtrip(request("GET", "/hello"))[0] == 200, "server unhealthy")


def test_file_sigterm(binary):
    """SIGTERM during a file body: the body is finished, then the
    connection closes and the server exits 0."""
    srv = Server(binary, "--file", FILE_PATH)
    try:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.connect(("127.0.0.1", srv.port))
        s.settimeout(TIMEOUT)
        with s:
            s.sendall(request("GET", "/file"))
            r = Reader(s)
            r._fill()
            srv.proc.send_signal(signal.SIGTERM)
            time.sleep(0.2)
            st, h, body = r.response()
            check(st == 200 and body == FILE_DATA, "in-flight file: %d, %d bytes"
                  % (st, len(body)))
            check(r.closed(), "not closed after the in-flight file")
        rc = srv.proc.wait(timeout=20)
        check(rc == 0, "exit code %d" % rc)
    finally:
        srv.stop()


CORS_ORIGIN = "http://dash.example:5000"


def test_cors():
    pre = [("Origin", CORS_ORIGIN), ("Access-Control-Request-Method", "POST"),
           ("Access-Control-Request-Headers", "content-type, x-auth-token")]
    # A preflight from an allowed origin is answered by the server itself,
    # on any path, and the connection stays usable.
    with SERVER.connect() as s:
        s.sendall(request("OPTIONS", "/v2.1/servers/x/action", pre)
                  + request("POST", "/echo", [("Origin", CORS_ORIGIN)], body=b"hi"))
        r = Reader(s)
        st, h, body = r.response()
        check(st == 204 and body == b"", "preflight 204: %d %r" % (st, body))
        check(h.get("access-control-allow-origin") == CORS_ORIGIN, "preflight origin %r" % h)
        check("POST" in h.get("access-control-allow-methods", ""), "methods %r" % h)
        check("X-Auth-Token" in h.get("access-control-allow-headers", ""), "headers %r" % h)
        st, h, body = r.response()
        check(st == 200 and body == b"hi", "POST after the preflight: %d" % st)
        check(h.get("access-control-allow-origin") == CORS_ORIGIN
              and h.get("vary") == "Origin"
              and "X-Subject-Token" in h.get("access-control-expose-headers", ""),
              "answer to the allowed origin %r" % h)
    # The second origin of the list; error answers carry the headers too.
    st, h, _ = roundtrip(request("GET", "/nope", [("Origin", "https://b.example")]))
    check(st == 404 and h.get("access-control-allow-origin") == "https://b.example",
          "404 to an allowed origin %r" % h)
    # Other origins, near misses included, get nothing, and their
    # preflight goes to the router (405 here).
    for o in ("http://evil.example", "http://dash.example:5001", "http://dash.example:5000/",
              "HTTP://dash.example:5000", "null"):
        st, h, _ = roundtrip(request("OPTIONS", "/hello", [("Origin", o)] + pre[1:]))
        check(st == 405 and not any(k.startswith("access-control") for k in h),
              "preflight from %s: %d %r" % (o, st, h))
        st, h, _ = roundtrip(request("GET", "/hello", [("Origin", o)]))
        check(st == 200 and "access-control-allow-origin" not in h, "GET from %s: %r" % (o, h))
    # An OPTIONS without Access-Control-Request-Method is no preflight.
    st, h, _ = roundtrip(request("OPTIONS", "/hello", [("Origin", CORS_ORIGIN)]))
    check(st == 405, "plain OPTIONS: %d" % st)


def test_cors_bad_list(binary):
    for bad in ("ftp://x.example", "http://a.example/path", "http://", "x" * 300,
                ",".join("http://h%d.example" % i for i in range(33))):
        p = subprocess.run([binary, "--cors", bad], capture_output=True, timeout=30)
        check(p.returncode == 1 and b"Invalid argument" in p.stderr,
              "refused list %r: %d %r" % (bad[:40], p.returncode, p.stderr))


TESTS = [
    test_hello, test_keep_alive_and_pipelining, test_pipeline_read_ahead_limit, test_http10,
    test_connection_close, test_head, test_404_405, test_router, test_stream_response,
    test_echo_body, test_header_too_large, test_body_too_large, test_malformed,
    test_expect_continue, test_upload_into_handler_buffer, test_upload_1gib_flat_rss, test_client_disconnects,
    test_header_timeout, test_many_idle_connections, test_file_whole, test_file_ranges,
    test_file_pipelined, test_file_concurrent, test_file_client_closes, test_file_short,
    test_file_send_timeout, test_cors,
]
SEPARATE = [test_max_connections, test_sigterm_graceful, test_file_sigterm, test_cors_bad_list]


def main():
    global SERVER, FILE_PATH, FILE_DATA
    binary = sys.argv[1]
    only = set(sys.argv[2:])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    failures = 0
    t_start = time.time()
    # 24 MiB: more than the socket buffers of both ends hold.
    FILE_DATA = os.urandom(24 << 20)
    fd, FILE_PATH = tempfile.mkstemp(prefix="nimbus-http-test-")
    os.write(fd, FILE_DATA)
    os.close(fd)
    SERVER = Server(binary, "--header-timeout-ms", "1000", "--body-timeout-ms", "1000",
                    "--send-timeout-ms", "1000", "--file", FILE_PATH,
                    "--cors", CORS_ORIGIN + ", https://b.example")
    for t in TESTS + SEPARATE:
        if only and t.__name__ not in only:
            continue
        t0 = time.time()
        try:
            if t in SEPARATE:
                t(binary)
            else:
                t()
            print("PASS %s (%.2f s)" % (t.__name__, time.time() - t0))
        except Exception as e:  # Any exception is a failure of that test.
            failures += 1
            print("FAIL %s: %s: %s" % (t.__name__, type(e).__name__, e))
        sys.stdout.flush()
    rc = SERVER.stop()
    os.unlink(FILE_PATH)
    if rc != 0:
        failures += 1
        print("FAIL server exit code %d" % rc)
    print("%d failure(s), %.1f s" % (failures, time.time() - t_start))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
