#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""tests/httpd/robust.py - robustness test of bench/httpd (qilin-httpd).

Starts the real server (the binary named by $QILIN_HTTPD) on a free port of
127.0.0.1 and drives it with curl and with raw sockets: malformed request
line, oversized headers and bodies, a request split byte by byte, pipelined
requests, the idle timeout, 1000 connections dropped with an RST, the
--max-conns limit; then checks that the server's open fds are back to their
baseline, that it still answers, and that SIGTERM stops it cleanly (exit 0;
under ASan/LSan, no report).

Also: 408 for a request trickled in over more than the idle time.

Output is what tests/run.sh counts: "PASS: httpd/NAME" or "FAIL: httpd/NAME:
why" per case, "SKIP: httpd/NAME: why" for a case that cannot run, and a
Check-style summary line. Exit 77 (skipped) when the server binary is not
built; 1 when a case failed. Every wait is bounded.
"""
import json
import os
import re
import resource
import signal
import socket
import struct
import subprocess
import sys
import time

SERVER = os.environ.get("QILIN_HTTPD", "")
IDLE_MS = 1000
results = []


def fnv1a(data):
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


class Server:
    def __init__(self, *args):
        cmd = [SERVER, "-a", "127.0.0.1", "-p", "0", "-w", "2",
               "--idle-ms", str(IDLE_MS)] + list(args)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = b""
        deadline = time.time() + 20
        os.set_blocking(self.proc.stdout.fileno(), False)
        while time.time() < deadline and not line.endswith(b"\n"):
            chunk = self.proc.stdout.read(1)
            if chunk:
                line += chunk
            elif self.proc.poll() is not None:
                break
            else:
                time.sleep(0.01)
        m = re.match(rb"listening on 127\.0\.0\.1:(\d+)\n", line)
        if not m:
            err = self.proc.stderr.read() if self.proc.poll() is not None else b""
            self.proc.kill()
            raise RuntimeError("server did not start: %r %r" % (line, err))
        self.port = int(m.group(1))

    def fds(self):
        return len(os.listdir("/proc/%d/fd" % self.proc.pid))

    def wait_fds(self, want, secs=10):
        deadline = time.time() + secs
        n = self.fds()
        while n > want and time.time() < deadline:
            time.sleep(0.05)
            n = self.fds()
        return n

    def stop(self):
        """SIGTERM, then the exit status and stderr (killed after 20 s)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
            return None, err
        return self.proc.returncode, err


def connect(port, timeout=5):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_response(s, buf=b""):
    """One response from s: (status, headers dict, body, rest of buf)."""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise EOFError("connection closed before a full response (%r)" % buf[:100])
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for ln in lines[1:]:
        k, v = ln.split(":", 1)
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0"))
    while len(rest) < n:
        chunk = s.recv(65536)
        if not chunk:
            raise EOFError("connection closed inside a body")
        rest += chunk
    return status, headers, rest[:n], rest[n:]


def closed_after(s, secs=5):
    """True if the peer closes s (EOF or reset) within secs."""
    s.settimeout(secs)
    try:
        while True:
            if not s.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def curl(port, *args):
    out = subprocess.run(["curl", "-s", "-S", "--max-time", "5", "-w", "\n%{http_code}",
                          "http://127.0.0.1:%d%s" % (port, args[-1])] + list(args[:-1]),
                         capture_output=True, timeout=10)
    body, _, code = out.stdout.rpartition(b"\n")
    return int(code or b"0"), body


def case(name):
    def deco(fn):
        def run(*a):
            try:
                fn(*a)
                results.append((name, None))
                print("PASS: httpd/%s" % name, flush=True)
            except Exception as e:  # noqa: BLE001 - every failure is reported
                results.append((name, str(e) or type(e).__name__))
                print("FAIL: httpd/%s: %s" % (name, str(e) or type(e).__name__), flush=True)
        return run
    return deco


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


@case("endpoints_curl")
def t_endpoints(srv):
    code, body = curl(srv.port, "/healthz")
    check(code == 200 and body == b"ok\n", "healthz: %d %r" % (code, body))
    payload = b"deferred task body \x01\x02"
    code, body = curl(srv.port, "-X", "POST", "--data-binary", payload, "/defer-task")
    check(code == 202, "POST /defer-task: %d %r" % (code, body))
    m = re.fullmatch(rb'\{"id":(\d+)\}', body)
    check(m, "202 body: %r" % body)
    tid = int(m.group(1))
    deadline = time.time() + 5
    while True:
        code, body = curl(srv.port, "/task/%d" % tid)
        check(code == 200, "GET /task/%d: %d" % (tid, code))
        if b'"done"' in body or time.time() > deadline:
            break
        time.sleep(0.05)
    want = b'{"id":%d,"state":"done","hash":"%016x"}' % (tid, fnv1a(payload))
    check(body == want, "task state %r, want %r" % (body, want))
    for path in ("/task/999999999", "/task/abc", "/task/", "/nope"):
        code, body = curl(srv.port, path)
        check(code == 404, "%s: %d" % (path, code))
    code, _ = curl(srv.port, "-X", "DELETE", "/defer-task")
    check(code == 405, "DELETE /defer-task: %d" % code)
    code, _ = curl(srv.port, "-X", "POST", "/healthz")
    check(code == 405, "POST /healthz: %d" % code)
    code, body = curl(srv.port, "/stats")
    check(code == 200, "stats: %d" % code)
    stats = json.loads(body)
    check(len(stats["workers"]) == 2 and sum(w["tasks_done"] for w in stats["workers"]) >= 1,
          "stats: %r" % stats)


@case("malformed_request_line")
def t_malformed(srv):
    for bad in (b"GARBAGE\r\n\r\n", b"GET /healthz HTTP/9.Z\r\n\r\n", b"\x00\x01\x02\x03\r\n\r\n",
                b"GET /healthz HTTP/1.1\r\nHost\r\n\r\n"):
        s = connect(srv.port)
        s.sendall(bad)
        status, headers, _, _ = read_response(s)
        check(status == 400, "%r: status %d" % (bad, status))
        check(headers.get("connection") == "close", "%r: no Connection: close" % bad)
        check(closed_after(s), "%r: connection left open" % bad)
        s.close()


@case("oversized_headers_413")
def t_big_headers(srv):
    s = connect(srv.port)
    req = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (10 * 1024) + b"\r\n\r\n"
    try:
        s.sendall(req)
    except (ConnectionResetError, BrokenPipeError):
        pass
    status, _, _, _ = read_response(s)
    check(status == 413, "status %d" % status)
    check(closed_after(s), "connection left open")
    s.close()
    # Many small headers adding up past 8 KiB, split across sends.
    s = connect(srv.port)
    s.sendall(b"GET /healthz HTTP/1.1\r\n")
    for i in range(300):
        try:
            s.sendall(b"X-H%d: %s\r\n" % (i, b"b" * 30))
        except (ConnectionResetError, BrokenPipeError):
            break
    status, _, _, _ = read_response(s)
    check(status == 413, "many headers: status %d" % status)
    s.close()


@case("oversized_body_413")
def t_big_body(srv):
    s = connect(srv.port)
    s.sendall(b"POST /defer-task HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n")
    status, _, _, _ = read_response(s)
    check(status == 413, "Content-Length 70000: status %d" % status)
    check(closed_after(s), "connection left open")
    s.close()
    # Chunked: no length up front, the limit is counted as the body arrives.
    s = connect(srv.port)
    s.sendall(b"POST /defer-task HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (8192, b"c" * 8192)
    try:
        for _ in range(10):
            s.sendall(chunk)
    except (ConnectionResetError, BrokenPipeError):
        pass
    status, _, _, _ = read_response(s)
    check(status == 413, "chunked 80 KiB: status %d" % status)
    s.close()
    # At the limit exactly: accepted.
    s = connect(srv.port)
    body = b"d" * (64 * 1024)
    s.sendall(b"POST /defer-task HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
              + body)
    status, _, rbody, _ = read_response(s)
    check(status == 202, "64 KiB body: status %d %r" % (status, rbody))
    s.close()


@case("byte_by_byte")
def t_byte_by_byte(srv):
    s = connect(srv.port)
    body = b"split across many sends"
    req = (b"POST /defer-task HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
           + body + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    for i in range(len(req)):
        s.send(req[i:i + 1])
        time.sleep(0.0005)
    status, _, rbody, rest = read_response(s)
    check(status == 202 and rbody.startswith(b'{"id":'), "POST: %d %r" % (status, rbody))
    status, _, rbody, _ = read_response(s, rest)
    check(status == 200 and rbody == b"ok\n", "healthz: %d %r" % (status, rbody))
    s.close()


@case("pipelined_in_order")
def t_pipelined(srv):
    s = connect(srv.port)
    reqs, kinds = [], []
    for i in range(60):
        if i % 3 == 0:
            b = b"p%d" % i
            reqs.append(b"POST /defer-task HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                        % (len(b), b))
            kinds.append("post")
        elif i % 3 == 1:
            reqs.append(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            kinds.append("health")
        else:
            reqs.append(b"GET /nope%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
            kinds.append("404")
    s.sendall(b"".join(reqs))
    rest, last_id = b"", 0
    for i, k in enumerate(kinds):
        status, _, body, rest = read_response(s, rest)
        if k == "post":
            m = re.fullmatch(rb'\{"id":(\d+)\}', body)
            check(status == 202 and m, "#%d: %d %r" % (i, status, body))
            check(int(m.group(1)) > last_id, "#%d: ids out of order" % i)
            last_id = int(m.group(1))
        elif k == "health":
            check(status == 200 and body == b"ok\n", "#%d: %d %r" % (i, status, body))
        else:
            check(status == 404, "#%d: %d" % (i, status))
    check(rest == b"", "extra bytes after the last response")
    # HTTP/1.0 without keep-alive: one answer, then the connection closes.
    s.sendall(b"GET /healthz HTTP/1.0\r\n\r\nGET /healthz HTTP/1.0\r\n\r\n")
    status, headers, _, rest = read_response(s)
    check(status == 200 and headers.get("connection") == "close", "HTTP/1.0: %d" % status)
    check(closed_after(s), "HTTP/1.0 connection left open")
    s.close()


@case("idle_timeout")
def t_idle(srv):
    s = connect(srv.port, timeout=10)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    read_response(s)
    t0 = time.time()
    s.settimeout(10)
    try:
        data = s.recv(100)
    except ConnectionResetError:
        data = b""
    dt = time.time() - t0
    check(data == b"", "got data instead of a close: %r" % data)
    lo, hi = IDLE_MS / 1000.0 * 0.9, IDLE_MS / 1000.0 + 1.5
    check(lo <= dt <= hi, "closed after %.2f s, want %.2f..%.2f" % (dt, lo, hi))
    s.close()
    # A half-sent request is idle too.
    s = connect(srv.port, timeout=10)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost:")
    check(closed_after(s, 5), "half request never closed")
    s.close()


@case("slow_request_408")
def t_slow(srv):
    s = connect(srv.port, timeout=10)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    t0, got = time.time(), None
    # One byte every 200 ms: never idle, but the request never completes.
    while time.time() - t0 < 6:
        try:
            s.send(b"a")
        except (ConnectionResetError, BrokenPipeError):
            break
        s.settimeout(0.2)
        try:
            got = s.recv(65536)
            break
        except socket.timeout:
            pass
    dt = time.time() - t0
    check(got is not None and got.startswith(b"HTTP/1.1 408 "), "no 408: %r" % got)
    check(dt <= IDLE_MS / 1000.0 + 2, "408 after %.2f s" % dt)
    check(closed_after(s), "connection left open after 408")
    s.close()


@case("rst_storm_1000")
def t_rst(srv, base):
    socks = []
    lg = struct.pack("ii", 1, 0)
    for i in range(1000):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(("127.0.0.1", srv.port))
        socks.append(s)
    for i, s in enumerate(socks):
        # Some mid-request, some mid-body, some idle; all dropped with an RST.
        if i % 3 == 0:
            s.send(b"GET /heal")
        elif i % 3 == 1:
            s.send(b"POST /defer-task HTTP/1.1\r\nContent-Length: 100\r\n\r\nxx")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, lg)
    time.sleep(0.2)
    for s in socks:
        s.close()
    n = srv.wait_fds(base, 10)
    check(n == base, "server fds %d after the RSTs, baseline %d" % (n, base))
    code, body = curl(srv.port, "/healthz")
    check(code == 200, "healthz after the RSTs: %d" % code)


@case("max_conns")
def t_max_conns():
    srv = Server("--max-conns", "5")
    try:
        base = srv.fds()
        held = []
        for i in range(5):
            s = connect(srv.port)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            st, _, _, _ = read_response(s)
            check(st == 200, "conn %d: %d" % (i, st))
            held.append(s)
        for i in range(3):
            s = connect(srv.port)
            try:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                st, _, _, _ = read_response(s)
                check(st == 503, "excess conn answered %d" % st)
            except (EOFError, ConnectionResetError, BrokenPipeError):
                pass  # closed at once: also a refusal
            check(closed_after(s), "excess connection left open")
            s.close()
        held.pop().close()
        deadline, ok = time.time() + 5, False
        while time.time() < deadline and not ok:
            s = connect(srv.port)
            try:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                ok = read_response(s)[0] == 200
            except (EOFError, ConnectionResetError, BrokenPipeError):
                time.sleep(0.05)
            s.close()
        check(ok, "no room after a connection closed")
        for s in held:
            s.close()
        n = srv.wait_fds(base, 10)
        check(n == base, "fds %d, baseline %d" % (n, base))
    finally:
        rc, err = srv.stop()
    check(rc == 0, "exit status %s: %s" % (rc, err[-500:]))


def main():
    if not SERVER or not os.access(SERVER, os.X_OK):
        print("httpd: %s not built (make benches builds it)" % (SERVER or "$QILIN_HTTPD"))
        return 77
    for tool in ("curl",):
        if subprocess.run(["sh", "-c", "command -v " + tool], capture_output=True).returncode:
            print("httpd: %s missing (scripts/deps.sh build installs it)" % tool)
            return 77
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    srv = Server()
    base = srv.fds()
    t_endpoints(srv)
    t_malformed(srv)
    t_big_headers(srv)
    t_big_body(srv)
    t_byte_by_byte(srv)
    t_pipelined(srv)
    t_idle(srv)
    t_slow(srv)
    t_rst(srv, base)
    t_max_conns()

    @case("fds_back_and_clean_stop")
    def t_final():
        n = srv.wait_fds(base, 10)
        check(n == base, "server fds %d, baseline %d" % (n, base))
        code, body = curl(srv.port, "/healthz")
        check(code == 200 and body == b"ok\n", "healthz at the end: %d" % code)
        rc, err = srv.stop()
        check(rc == 0, "exit status %s: %s" % (rc, err[-800:]))
        check(b"Sanitizer" not in err and b"runtime error" not in err,
              "sanitizer report: %s" % err[-800:])
    t_final()
    if srv.proc.poll() is None:
        srv.proc.kill()
    failed = sum(1 for _, e in results if e)
    n = len(results)
    print("%d%%: Checks: %d, Failures: %d, Errors: 0" % ((n - failed) * 100 // max(n, 1), n,
                                                          failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
