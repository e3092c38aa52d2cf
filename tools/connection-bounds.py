#!/usr/bin/env python3
"""Measures what N connections of one kind make a fresh witmqd hold: RSS (/proc/PID/status) and
file descriptors (/proc/PID/fd), read before the connections open and one second after (0.3 s for refusals).
The figures of docs/SECURITY.md ("Limits a client cannot exceed") come from it.

Usage: tools/connection-bounds.py WITMQD KIND N [witmqd arguments...]
KIND:  header         never connects; announces the largest connect (8192 bytes) and stops
       header16m      never connects; announces a 16 MiB frame and stops
       connected      connects and stays idle
       connected16m   connects, then announces a 16 MiB send and stops
       refused        the daemon runs with max-connections 1; N connections beyond it
"""
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "daemon"))
import python_client as pc  # noqa: E402


def connect_frame():
    return pc.frame(pc.CONNECT, 1, pc.enc_list([1], pc.u16) + pc.enc_string("") + b"\x00")


def header(length, ftype):
    return struct.pack(">IBBI", length, ftype, 0, 2)


OPENERS = {
    "header": lambda s: s.sendall(header(8192, pc.CONNECT)),
    "header16m": lambda s: s.sendall(header(16 << 20, pc.CONNECT)),
    "connected": lambda s: s.sendall(connect_frame()),
    "connected16m": lambda s: s.sendall(connect_frame() + header(16 << 20, pc.SEND)),
    "refused": lambda s: None,
}


def main():
    binary, kind, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    args = sys.argv[4:] + (["--set", "max-connections=1"] if kind == "refused" else [])
    with tempfile.TemporaryDirectory() as tmp:
        log_path = os.path.join(tmp, "stderr")
        with open(log_path, "wb") as log:
            p = subprocess.Popen([binary, "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
                                  "--data-dir", os.path.join(tmp, "data")] + args,
                                 stdout=subprocess.PIPE, stderr=log)
            try:
                port = None
                for line in p.stdout:
                    line = line.decode()
                    if line.startswith("listening on"):
                        port = int(line.strip().rsplit(":", 1)[1])
                        break

                def rss_kib():
                    with open("/proc/%d/status" % p.pid) as f:
                        return next(int(x.split()[1]) for x in f if x.startswith("VmRSS:"))

                def fds():
                    return len(os.listdir("/proc/%d/fd" % p.pid))

                probe = pc.Conn(port, "probe")
                probe.connect()
                probe.ping(1)
                time.sleep(0.5)
                rss0, fds0 = rss_kib(), fds()
                start = time.monotonic()
                conns = []
                for _ in range(n):
                    s = socket.create_connection(("127.0.0.1", port))
                    OPENERS[kind](s)
                    conns.append(s)
                took = time.monotonic() - start
                probe.ping(2)
                # Refusals are measured while their goaways are under way (each lasts up to 2 s).
                time.sleep(0.3 if kind == "refused" else 1.0)
                rss1, fds1 = rss_kib(), fds()
                print("%s x%d (opened in %.2f s): RSS %d -> %d KiB (%+.1f KiB each), "
                      "descriptors %d -> %d" % (kind, n, took, rss0, rss1, (rss1 - rss0) / n, fds0,
                                                fds1))
                for s in conns:
                    s.close()
            finally:
                p.terminate()
                p.wait()
        with open(log_path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
        print("log: %d bytes, %d lines about refusals" % (len(text), text.count("refus")))


if __name__ == "__main__":
    main()
