#!/usr/bin/env python3
"""What connections cost witmqd and what they leave behind, measured against the real daemon
(started here on 127.0.0.1, ephemeral ports, a temporary data directory). docs/PERFORMANCE.md
("Memory per connection") has the figures and the commands that made them.

    tools/footprint.py WITMQD idle   [--connections N] [--tls] [--max-kib-per-connection K]
    tools/footprint.py WITMQD rounds [--rounds R] [--connections N] [--max-growth-mib M]
    tools/footprint.py WITMQD many   [--connections N] [--sample S] [--max-kib-per-connection K]

idle    opens N connections that connect (over TLS with --tls) and stay idle; prints the resident
        memory (VmRSS) they add, per connection.
rounds  R rounds of: N connections connect, get connect-ok, disconnect; after each round waits
        until server-stats shows no connection, no broker client, waiter or ephemeral
        subscription, then until the freed memory is given back; prints the resident memory after
        each round and the growth over all rounds.
many    holds N connections at once (raising the descriptor limit to its hard limit; the clients use
        one loopback source address per 5,000 connections), sends a message through S
        of them and receives each on another, and prints the time to accept them all (from the
        first connect to the last connect-ok) and the memory per connection.

Every mode exits 1 when a bound given on the command line (--max-...) is not met, 2 on a setup
error. Standard library only.
"""
import argparse
import json
import os
import resource
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "daemon"))
import python_client as pc  # noqa: E402

IP_BIND_ADDRESS_NO_PORT = 24  # linux/in.h: the port is picked at connect, per 4-tuple
# Connections per loopback source address: well below the ephemeral range (32768-60999, 28,232
# ports), since the kernel's search for a free port slows down as the range fills.
PORTS_PER_SOURCE = 5_000
READ_TIMEOUT = 30.0


class SetupError(Exception):
    pass


def connect_frame(rid=1):
    return pc.frame(pc.CONNECT, rid, pc.enc_list([1], pc.u16) + pc.enc_string("") + b"\x00")


class Witmqd:
    """The daemon under test, with its stdout's address lines read."""

    def __init__(self, binary, tmp, args=(), tls=False):
        self.tmp = tmp
        extra = list(args)
        if tls:
            cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                            "-days", "1", "-subj", "/CN=localhost"], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            extra += ["--set", "tls-listen=127.0.0.1:0", "--set", "tls-cert-file=" + cert,
                      "--set", "tls-key-file=" + key]
        self.stderr = open(os.path.join(tmp, "witmqd.stderr"), "wb")
        self.proc = subprocess.Popen(
            [binary, "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
             "--data-dir", os.path.join(tmp, "data")] + extra,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.stderr)
        self.port = self.tls_port = self.http_port = None
        deadline = time.monotonic() + 30
        while self.port is None or (tls and self.tls_port is None) or self.http_port is None:
            if time.monotonic() > deadline:
                raise SetupError("witmqd did not print its addresses within 30 s")
            line = self.proc.stdout.readline().decode()
            if not line:
                raise SetupError("witmqd exited before listening: %s" % self.stderr_tail())
            port = int(line.strip().rsplit(":", 1)[1]) if ":" in line else None
            if line.startswith("listening on"):
                self.port = port
            elif line.startswith("tls listening on"):
                self.tls_port = port
            elif line.startswith("http listening on"):
                self.http_port = port
        self.probe = pc.Conn(self.port, "probe")
        self.probe.connect("probe")
        self.tables_at_start = self.stats().get("broker")

    def rss_kib(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            return next(int(x.split()[1]) for x in f if x.startswith("VmRSS:"))

    def fds(self):
        return len(os.listdir("/proc/%d/fd" % self.proc.pid))

    def stats(self):
        return self.probe.admin(pc.SERVER_STATS, {})

    def stderr_tail(self, n=10):
        with open(os.path.join(self.tmp, "witmqd.stderr"), "rb") as f:
            return b"\n".join(f.read().splitlines()[-n:]).decode("utf-8", "replace")

    def stop(self):
        self.probe.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()


def read_frame(sock, rbuf):
    """One whole frame from a blocking socket: (type, request id, body)."""
    while True:
        if len(rbuf) >= 4:
            length = struct.unpack(">I", rbuf[:4])[0]
            if len(rbuf) >= 4 + length:
                ftype, _, rid = struct.unpack(">BBI", bytes(rbuf[4:10]))
                body = bytes(rbuf[10:4 + length])
                del rbuf[:4 + length]
                return ftype, rid, body
        chunk = sock.recv(65536)
        if not chunk:
            raise pc.ConnectionClosed("the server closed the connection")
        rbuf += chunk


def expect_connect_ok(sock):
    ftype, _, body = read_frame(sock, bytearray())
    if ftype != pc.CONNECT | pc.OK:
        raise SetupError("connect answered by 0x%02x: %r" % (ftype, body[:200]))


def raise_descriptor_limit(needed):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard != resource.RLIM_INFINITY and needed > hard:
        raise SetupError("%d descriptors are needed and the hard limit (ulimit -Hn) is %d: raise "
                         "it (LimitNOFILE= in a systemd unit, ulimits in compose, or as root with "
                         "CAP_SYS_RESOURCE) or lower --connections" % (needed, hard))


def open_connections(port, n, tls_context=None, batch=500):
    """n connected (connect-ok received) sockets; clients spread over 127.0.0.x source addresses
    (round robin, PORTS_PER_SOURCE each) so that more than one address's ephemeral ports can be
    used."""
    sources = max(1, -(-n // PORTS_PER_SOURCE))
    socks = []
    for start in range(0, n, batch):
        group = []
        for i in range(start, min(n, start + batch)):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            source = "127.0.0.%d" % (1 + i % sources)
            if source != "127.0.0.1":
                s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                s.bind((source, 0))
            s.settimeout(READ_TIMEOUT)
            s.connect(("127.0.0.1", port))
            if tls_context:
                s = tls_context.wrap_socket(s)
            s.sendall(connect_frame())
            group.append(s)
        for s in group:
            expect_connect_ok(s)
        socks.extend(group)
    return socks


def close_all(socks):
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


def wait_for(what, pred, timeout=60.0):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value is True:
            return
        if time.monotonic() > deadline:
            raise SetupError("%s: not so within %.0f s: %s" % (what, timeout, value))
        time.sleep(0.2)


def tables_empty(d):
    """True once only the probe is connected and the broker's tables are as they were before
    the clients came (the HTTP side holds a client of its own); else the figures that are not
    there yet."""
    s = d.stats()
    b = s["broker"]
    keys = ("clients", "waiters", "ephemeral-subscriptions")
    if s["connections"] == 1 and all(b[k] == d.tables_at_start[k] for k in keys):
        return True
    return {"connections": s["connections"], "broker": b, "at start": d.tables_at_start}


def settled_rss(d, quiet=0.5, timeout=30.0):
    """Resident memory once it has stopped falling (freed memory given back)."""
    last = d.rss_kib()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = d.rss_kib()
        if now >= last - 64:
            return now
        last = now
    return last


def mode_idle(d, args):
    tls = None
    port = d.port
    if args.tls:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
        port = d.tls_port
    raise_descriptor_limit(args.connections + 100)
    before = settled_rss(d)
    socks = open_connections(port, args.connections, tls)
    d.probe.ping(1)
    # The writer gives its buffers back after connect-ok is written; let every session get there.
    time.sleep(1.0)
    after = d.rss_kib()
    stats = d.stats()
    per = (after - before) / args.connections
    print("idle %s connections x%d: RSS %d -> %d KiB: %.1f KiB per connection; buffered-bytes %s "
          "(max %s per connection)" % ("TLS" if args.tls else "plain", args.connections, before,
                                       after, per, stats.get("buffered-bytes"),
                                       stats.get("buffered-bytes-max")), flush=True)
    close_all(socks)
    if args.max_kib_per_connection is not None and per > args.max_kib_per_connection:
        print("FAIL: %.1f KiB per idle connection, above the bound %.1f" %
              (per, args.max_kib_per_connection))
        return 1
    return 0


def mode_rounds(d, args):
    raise_descriptor_limit(args.connections + 100)
    start = settled_rss(d)
    print("before the rounds: RSS %d KiB, heap in use %d B" %
          (start, d.stats()["memory"]["heap-in-use-bytes"]), flush=True)
    first = None
    for r in range(1, args.rounds + 1):
        t0 = time.monotonic()
        socks = open_connections(d.port, args.connections)
        took = time.monotonic() - t0
        peak = d.rss_kib()
        close_all(socks)
        wait_for("round %d: the tables empty again" % r, lambda: tables_empty(d))
        rss = settled_rss(d, quiet=args.release_wait)
        first = rss if first is None else first
        s = d.stats()
        print("round %d: %d connected in %.2f s, RSS at the peak %d KiB, after %d KiB; "
              "connections %d, broker %s, buffered-bytes %d, heap in use %d B, heap free %d B, "
              "releases %d" %
              (r, args.connections, took, peak, rss, s["connections"], json.dumps(s["broker"]),
               s["buffered-bytes"], s["memory"]["heap-in-use-bytes"],
               s["memory"]["heap-free-bytes"], s["memory"]["releases"]),
              flush=True)
    end = d.rss_kib()
    growth = (end - start) / 1024.0
    print("growth over %d rounds of %d: %.1f MiB from before the first round, %.1f MiB from after "
          "it" % (args.rounds, args.connections, growth, (end - first) / 1024.0), flush=True)
    if args.max_growth_mib is not None and growth > args.max_growth_mib:
        print("FAIL: grew %.1f MiB, above the bound %.1f MiB" % (growth, args.max_growth_mib))
        return 1
    return 0


def mode_many(d, args):
    raise_descriptor_limit(args.connections + 200)
    before = settled_rss(d)
    fds_before = d.fds()
    t0 = time.monotonic()
    socks = open_connections(d.port, args.connections)
    took = time.monotonic() - t0
    d.probe.ping(1)
    time.sleep(1.0)
    after = d.rss_kib()
    stats = d.stats()
    per = (after - before) / args.connections
    print("many: %d connections accepted and connected in %.2f s (%.0f per second); RSS %d -> %d "
          "KiB: %.1f KiB per connection; descriptors %d -> %d; connections-by-state %s" %
          (args.connections, took, args.connections / took, before, after, per, fds_before,
           d.fds(), json.dumps(stats["connections-by-state"])), flush=True)
    # A message through a sample of the connections, each received on the probe.
    step = max(1, args.connections // max(1, args.sample))
    sample = socks[::step][:args.sample]
    t1 = time.monotonic()
    for i, s in enumerate(sample):
        s.sendall(pc.frame(pc.SEND, 2, pc.enc_string("many-sample") +
                           pc.enc_messages([pc.Message(b"m%d" % i)])))
    for s in sample:
        ftype, _, body = read_frame(s, bytearray())
        if ftype != pc.SEND | pc.OK:
            raise SetupError("send answered by 0x%02x: %r" % (ftype, body[:200]))
    got = 0
    while got < len(sample):
        batch = d.probe.try_receive("many-sample", 1000)
        if not batch:
            raise SetupError("received %d of the %d sample messages" % (got, len(sample)))
        for m in batch:
            d.probe.complete(m.receipt_only())
        got += len(batch)
    print("many: %d messages sent through a sample of the connections and received in %.2f s" %
          (len(sample), time.monotonic() - t1), flush=True)
    close_all(socks)
    wait_for("the tables empty again", lambda: tables_empty(d))
    if args.max_kib_per_connection is not None and per > args.max_kib_per_connection:
        print("FAIL: %.1f KiB per connection, above the bound %.1f" %
              (per, args.max_kib_per_connection))
        return 1
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("witmqd")
    p.add_argument("mode", choices=["idle", "rounds", "many"])
    p.add_argument("--connections", type=int, default=5000)
    p.add_argument("--tls", action="store_true")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--sample", type=int, default=100)
    p.add_argument("--release-wait", type=float, default=1.5,
                   help="rounds: seconds without RSS falling that count as settled")
    p.add_argument("--max-kib-per-connection", type=float)
    p.add_argument("--max-growth-mib", type=float)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="passed to witmqd as --set KEY=VALUE")
    args = p.parse_args()
    witmqd_args = []
    for kv in args.set:
        witmqd_args += ["--set", kv]
    if args.mode == "many":
        witmqd_args += ["--set", "max-connections=%d" % (args.connections + 100)]
    if args.mode == "rounds":
        # Freed memory is given back within a second of a round's end, not ten.
        witmqd_args += ["--set", "memory-release-interval-ms=1000"]
    with tempfile.TemporaryDirectory() as tmp:
        d = None
        try:
            d = Witmqd(args.witmqd, tmp, witmqd_args, tls=args.tls)
            return {"idle": mode_idle, "rounds": mode_rounds, "many": mode_many}[args.mode](d, args)
        except (SetupError, OSError, pc.ProtocolError, pc.RequestFailed, pc.ConnectionClosed,
                pc.ReadTimeout) as e:
            print("ERROR: %s" % e, flush=True)
            if d:
                print(d.stderr_tail(), flush=True)
            return 2
        finally:
            if d:
                d.stop()


if __name__ == "__main__":
    sys.exit(main())
