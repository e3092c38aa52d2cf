#!/usr/bin/env python3
"""A soak of one witmqd under mixed load (tools/soak.sh runs it; docs/PERFORMANCE.md, "Soak").

The load, all at once for the whole run:
  - point-to-point: a producer sends to "soak-queue", a consumer receives and completes;
  - publish-subscribe: a producer publishes to "soak-topic", two named (durable) subscribers
    receive and complete;
  - a guest (examples/guests/echo.c) consumes "orders" and forwards each message to
    "orders.audit"; a producer feeds "orders", a consumer drains "orders.audit";
  - HTTP: GET /metrics and GET /v1/channels every second;
  - churn: a client connects every few tens of milliseconds, does one thing (a send, a receive
    it leaves unsettled, an ephemeral topic receive) and disconnects.
Every --interval seconds it samples witmqd's resident memory (VmRSS), its open descriptors, the
size of its data directory and the latency of the point-to-point sends in the interval (send to
send-ok, median and 99th percentile), and prints one row.

The run fails (exit 1) when a worker fails or when any of the four figures trends upward after
the warm-up: the first third of the samples is the warm-up; the median of the second third is
compared with the median of the last third, and the last may exceed the second by the figure's
tolerance at most (relative and absolute, --tolerance-*), so that noise and one-off steps (a
RocksDB flush) do not count, while a leak that goes on does. Setup errors exit 2.
"""
import argparse
import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "daemon"))
import python_client as pc  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


class Soak:
    def __init__(self, args, tmp):
        self.args = args
        self.tmp = tmp
        self.stop = threading.Event()
        self.errors = []
        self.lock = threading.Lock()
        self.latencies = []  # seconds, p2p sends since the last sample
        self.counts = {"sent": 0, "completed": 0, "churn": 0, "scrapes": 0}
        self.data_dir = os.path.join(tmp, "data")
        config = {
            "storage-write-buffer-bytes": args.write_buffer_bytes,
            "channels": {"soak-topic": {"kind": "publish-subscribe"}},
            "guests": [{"name": "echo", "module": args.guest, "instances": 1}],
        }
        for kv in args.set:
            key, _, value = kv.partition("=")
            config[key] = json.loads(value)
        config_path = os.path.join(tmp, "witmqd.json")
        with open(config_path, "w") as f:
            json.dump(config, f)
        self.stderr = open(os.path.join(tmp, "witmqd.stderr"), "wb")
        self.proc = subprocess.Popen(
            [args.witmqd, "--config", config_path, "--listen", "127.0.0.1:0",
             "--http-listen", "127.0.0.1:0", "--data-dir", self.data_dir],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.stderr)
        self.port = self.http_port = None
        deadline = time.monotonic() + 60
        while self.port is None or self.http_port is None:
            if time.monotonic() > deadline:
                raise RuntimeError("witmqd did not print its addresses within 60 s")
            line = self.proc.stdout.readline().decode()
            if not line:
                raise RuntimeError("witmqd exited before listening: " + self.stderr_tail())
            if line.startswith("listening on"):
                self.port = int(line.strip().rsplit(":", 1)[1])
            elif line.startswith("http listening on"):
                self.http_port = int(line.strip().rsplit(":", 1)[1])

    def stderr_tail(self, n=15):
        with open(os.path.join(self.tmp, "witmqd.stderr"), "rb") as f:
            return b"\n".join(f.read().splitlines()[-n:]).decode("utf-8", "replace")

    def count(self, key, n=1):
        with self.lock:
            self.counts[key] += n

    # ---- workers ---------------------------------------------------------------------------

    def worker(self, name, body):
        def run():
            try:
                body()
            except Exception as e:  # a failed worker fails the soak
                if not self.stop.is_set():
                    with self.lock:
                        self.errors.append("%s: %s: %s" % (name, type(e).__name__, e))
                    self.stop.set()
        t = threading.Thread(target=run, name=name, daemon=True)
        t.start()
        return t

    def paced(self, rate, step):
        """Calls step() about `rate` times a second until the soak stops."""
        period = 1.0 / rate
        next_at = time.monotonic()
        while not self.stop.is_set():
            step()
            next_at += period
            delay = next_at - time.monotonic()
            if delay > 0:
                self.stop.wait(delay)
            else:
                next_at = time.monotonic()

    def producer(self, channel, rate, measure):
        c = pc.Conn(self.port, "producer " + channel)
        c.connect()
        payload = os.urandom(self.args.message_bytes)

        def step():
            t0 = time.monotonic()
            c.send_messages(channel, [pc.Message(payload)])
            if measure:
                with self.lock:
                    self.latencies.append(time.monotonic() - t0)
            self.count("sent")
        try:
            self.paced(rate, step)
        finally:
            c.close()

    def consumer(self, channel, name=""):
        c = pc.Conn(self.port, "consumer " + channel)
        c.connect(name)
        try:
            while not self.stop.is_set():
                batch = c.try_receive(channel, 200) or []
                for m in batch:
                    c.complete(m.receipt_only())
                self.count("completed", len(batch))
        finally:
            c.close()

    def churn(self):
        rng = random.Random(1)

        def step():
            c = pc.Conn(self.port, "churn")
            try:
                c.connect()
                what = rng.randrange(3)
                if what == 0:
                    c.send_messages("soak-queue", [pc.Message(b"churn")])
                elif what == 1:
                    c.try_receive("soak-queue", 0)  # left unsettled: released at disconnect
                else:
                    c.try_receive("soak-topic", 0)  # an ephemeral subscription, gone at close
            finally:
                c.close()
            self.count("churn")
        self.paced(self.args.churn_rate, step)

    def scraper(self):
        def step():
            for path in ("/metrics", "/v1/channels"):
                h = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=30)
                try:
                    h.request("GET", path)
                    r = h.getresponse()
                    r.read()
                    if r.status != 200:
                        raise RuntimeError("GET %s: %d" % (path, r.status))
                finally:
                    h.close()
            self.count("scrapes")
        self.paced(1.0, step)

    # ---- samples ---------------------------------------------------------------------------

    def rss_kib(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            return next(int(x.split()[1]) for x in f if x.startswith("VmRSS:"))

    def fds(self):
        return len(os.listdir("/proc/%d/fd" % self.proc.pid))

    def data_kib(self):
        total = 0
        for root, _, files in os.walk(self.data_dir):
            for name in files:
                try:
                    total += os.path.getsize(os.path.join(root, name))
                except OSError:
                    pass  # a file RocksDB removed meanwhile
        return total // 1024

    def run(self):
        a = self.args
        self.worker("p2p producer", lambda: self.producer("soak-queue", a.rate, True))
        self.worker("p2p consumer", lambda: self.consumer("soak-queue"))
        self.worker("topic producer", lambda: self.producer("soak-topic", a.rate, False))
        self.worker("topic subscriber a", lambda: self.consumer("soak-topic", "soak-a"))
        self.worker("topic subscriber b", lambda: self.consumer("soak-topic", "soak-b"))
        self.worker("guest producer", lambda: self.producer("orders", a.rate / 2, False))
        self.worker("guest consumer", lambda: self.consumer("orders.audit"))
        self.worker("http scraper", self.scraper)
        self.worker("churn", self.churn)
        probe = pc.Conn(self.port, "probe")
        probe.connect("soak-probe")
        rows = []
        print("  time     rss_kib  heap_kib  fds  data_kib  p50_ms  p99_ms  sent  completed  churn  "
              "connections  clients  waiters  ephemeral", flush=True)
        started = time.monotonic()
        end = started + a.seconds
        while not self.stop.is_set() and time.monotonic() < end:
            self.stop.wait(min(a.interval, max(0.0, end - time.monotonic())))
            if self.stop.is_set():
                break
            with self.lock:
                lat = sorted(self.latencies)
                self.latencies = []
                counts = dict(self.counts)
            stats = probe.admin(pc.SERVER_STATS, {})
            row = {
                "t": time.monotonic() - started,
                "rss_kib": self.rss_kib(),
                "heap_kib": stats.get("memory", {}).get("heap-in-use-bytes", 0) // 1024,
                "fds": self.fds(),
                "data_kib": self.data_kib(),
                "p50_ms": 1000 * lat[len(lat) // 2] if lat else 0.0,
                "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else 0.0,
            }
            rows.append(row)
            b = stats.get("broker", {})
            print("%6.0f s  %7d  %8d  %3d  %8d  %6.2f  %6.2f  %5d  %9d  %5d  %11d  %7s  %7s  %9s" %
                  (row["t"], row["rss_kib"], row["heap_kib"], row["fds"], row["data_kib"], row["p50_ms"],
                   row["p99_ms"], counts["sent"], counts["completed"], counts["churn"],
                   stats["connections"], b.get("clients"), b.get("waiters"),
                   b.get("ephemeral-subscriptions")), flush=True)
            if self.proc.poll() is not None:
                self.errors.append("witmqd exited with %s" % self.proc.returncode)
                break
        self.stop.set()
        probe.close()
        if a.csv:
            with open(a.csv, "w") as f:
                f.write("t,rss_kib,heap_kib,fds,data_kib,p50_ms,p99_ms\n")
                for r in rows:
                    f.write("%.1f,%d,%d,%d,%d,%.3f,%.3f\n" % (r["t"], r["rss_kib"], r["heap_kib"],
                                                              r["fds"],
                                                           r["data_kib"], r["p50_ms"],
                                                           r["p99_ms"]))
        return rows

    def close(self):
        self.stop.set()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()


def trends(rows, tolerances):
    """The figures whose median over the last third of the rows exceeds their median over the
    second third by more than (relative, absolute) tolerance, as text; [] when none does."""
    n = len(rows)
    third = n // 3
    second, last = rows[third:2 * third], rows[n - third:]
    failed = []
    for key, (rel, absolute) in tolerances.items():
        m2 = statistics.median(r[key] for r in second)
        m3 = statistics.median(r[key] for r in last)
        bound = m2 * (1 + rel) + absolute
        verdict = "ok" if m3 <= bound else "TRENDS UP"
        print("trend %-8s: median of the second third %.2f, of the last third %.2f, bound %.2f: "
              "%s" % (key, m2, m3, bound, verdict), flush=True)
        if m3 > bound:
            failed.append(key)
    return failed


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--witmqd", required=True)
    p.add_argument("--guest", required=True, help="the echo guest's module (echo.wasm)")
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    p.add_argument("--rate", type=float, default=100.0,
                   help="messages a second of each producer (the guest's: half)")
    p.add_argument("--churn-rate", type=float, default=20.0, help="connections a second")
    p.add_argument("--message-bytes", type=int, default=1024)
    p.add_argument("--write-buffer-bytes", type=int, default=1 << 20,
                   help="storage-write-buffer-bytes: small, so that flushes come often")
    p.add_argument("--tolerance-rss", default="0.10,4096", help="relative,absolute (KiB)")
    p.add_argument("--tolerance-fds", default="0.1,4", help="relative,absolute")
    p.add_argument("--tolerance-data", default="0.5,16384", help="relative,absolute (KiB)")
    p.add_argument("--tolerance-latency", default="1.0,5", help="relative,absolute (ms), p50")
    p.add_argument("--csv", help="write the samples to this file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                   help="a witmqd configuration key, e.g. --set tail-cache-bytes=1048576")
    args = p.parse_args()

    def tol(text):
        rel, absolute = text.split(",")
        return float(rel), float(absolute)

    tolerances = {"rss_kib": tol(args.tolerance_rss), "fds": tol(args.tolerance_fds),
                  "data_kib": tol(args.tolerance_data), "p50_ms": tol(args.tolerance_latency)}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            soak = Soak(args, tmp)
        except (RuntimeError, OSError) as e:
            print("ERROR: %s" % e, flush=True)
            return 2
        try:
            rows = soak.run()
        finally:
            soak.close()
        if soak.errors:
            for e in soak.errors:
                print("FAIL: %s" % e, flush=True)
            print(soak.stderr_tail(), flush=True)
            return 1
        if len(rows) < 6:
            print("ERROR: %d samples; a soak needs at least 6 (--seconds / --interval)" % len(rows))
            return 2
        failed = trends(rows, tolerances)
        print("soak: %d samples over %.0f s; %d sent, %d completed, %d churned connections, "
              "%d scrapes" % (len(rows), rows[-1]["t"], soak.counts["sent"],
                              soak.counts["completed"], soak.counts["churn"],
                              soak.counts["scrapes"]), flush=True)
        if failed:
            print("FAIL: trends upward after the warm-up: %s" % ", ".join(failed), flush=True)
            return 1
        print("PASS", flush=True)
        return 0


if __name__ == "__main__":
    sys.exit(main())
