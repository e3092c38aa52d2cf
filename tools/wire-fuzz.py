#!/usr/bin/env python3
"""End-to-end wire fuzz loop: mutates valid protocol frames and sends them through real sockets to
a real witmqd, checking after every round that the daemon is alive and that a separate, well-behaved
connection's ping is answered within PING_BOUND; every 25 rounds it sends SIGHUP (a reload). At the
end the daemon must hold no more descriptors than at the start (every fuzzed connection released)
and stop with 0 on SIGTERM. Bounded and seeded: a failure is reproducible from the printed seed.

Usage: tools/wire-fuzz.py WITMQD [--seed N] [--rounds N]
Exits 0 when every round passed, 1 on the first failure (printing the seed, round and input).
"""
import argparse
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "daemon"))
import python_client as pc  # noqa: E402

PING_BOUND = 2.0  # seconds a control ping may take while the fuzzer runs


def connect_body(name="fuzz", token=None):
    return pc.enc_list([1], pc.u16) + pc.enc_string(name) + pc.enc_option(token, pc.enc_string)


def seeds():
    """Valid request frames of every type (ids are rewritten per round)."""
    msg = pc.Message(b"hello", pc.RAW, [("k", "v"), ("witmq-receipt", "1.2.3.4")])
    ch = pc.enc_string("fz.a")
    return [
        (pc.SEND, ch + pc.enc_messages([msg, pc.Message(b"x" * 40)])),
        (pc.SUBSCRIBE_TRY_RECEIVE, ch + pc.u32(0)),
        (pc.SUBSCRIBE_RECEIVE, ch + pc.u32(5) + pc.u32(10)),
        (pc.UPDATE_GUEST_CONFIGURATION, pc.enc_guest_configuration(["fz.a", "fz.*"], [("a", "b")])),
        (pc.COMPLETE_MESSAGE, pc.enc_message(msg)),
        (pc.ABANDON_MESSAGE, pc.enc_message(msg)),
        (pc.STREAM_START, ch + pc.u32(10)),
        (pc.CREDIT, pc.u32(5)),
        (pc.STREAM_STOP, b""),
        (pc.PING, pc.u64(7)),
        (pc.CHANNEL_LIST, pc.enc_string("{}")),
        (pc.CHANNEL_DECLARE, pc.enc_string('{"name":"fz.b","max-deliveries":3}')),
        (pc.CHANNEL_DELETE, pc.enc_string('{"name":"fz.b"}')),
        (pc.CHANNEL_STATS, pc.enc_string('{"name":"fz.a"}')),
        (pc.BROWSE, pc.enc_string('{"name":"fz.a","limit":5}')),
        (pc.REPLAY_DEAD_LETTERS, pc.enc_string('{"name":"fz.a"}')),
        (pc.PURGE, pc.enc_string('{"name":"fz.b"}')),
        (pc.SERVER_STATS, pc.enc_string("{}")),
    ]


INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 199, 200, 201, 8192,
               1 << 20, 16 << 20]


def mutate(rng, data):
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        if op == 0 and data:  # flip a bit
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        elif op == 1 and data:  # set a byte
            data[rng.randrange(len(data))] = rng.choice([0, 0xFF, 0x80, 0xC0, 0xED, 0xF4, 0x2E])
        elif op == 2 and len(data) >= 4:  # an interesting u32 at a random place
            i = rng.randrange(len(data) - 3)
            data[i:i + 4] = struct.pack(">I", rng.choice(INTERESTING))
        elif op == 3 and data:  # cut
            del data[rng.randrange(len(data)):]
        elif op == 4:  # insert junk
            i = rng.randrange(len(data) + 1)
            data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif op == 5 and data:  # duplicate a slice
            i = rng.randrange(len(data))
            j = rng.randrange(i, len(data) + 1)
            data[j:j] = data[i:j]
        elif op == 6:  # invalid UTF-8 in place
            i = rng.randrange(len(data) + 1)
            data[i:i] = rng.choice([b"\xc0\x80", b"\xed\xa0\x80", b"\xff", b"\xf4\x90\x80\x80", b"\xe2\x82"])
    return bytes(data)


def fuzz_frame(rng, rid):
    ftype, body = rng.choice(seeds())
    if rng.random() < 0.1:
        ftype = rng.randrange(256)
    raw = pc.frame(ftype, rid, body)
    if rng.random() < 0.3:  # mutate the body only and keep the length right
        head, body = raw[:10], mutate(rng, raw[10:])
        raw = struct.pack(">I", 6 + len(body)) + head[4:] + body
    elif rng.random() < 0.8:
        raw = mutate(rng, raw)
    return raw


def write_split(sock, rng, data):
    """Writes data in random pieces (sometimes one byte at a time)."""
    i = 0
    while i < len(data):
        n = 1 if rng.random() < 0.2 else rng.randint(1, 64)
        sock.sendall(data[i:i + n])
        i += n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("witmqd")
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--rounds", type=int, default=300)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    print("seed %d, %d rounds" % (args.seed, args.rounds), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        d = pc.Daemon(args.witmqd, tmp)
        try:
            d.wait_listening()
            control = pc.Conn(d.port, "control")
            control.connect("control")
            control.send_messages("fz.a", [pc.Message(b"m%d" % i) for i in range(20)])
            fds_at_start = len(os.listdir("/proc/%d/fd" % d.proc.pid))
            for rnd in range(args.rounds):
                if rnd % 25 == 24:
                    d.proc.send_signal(signal.SIGHUP)
                frames = []
                sock = socket.create_connection(("127.0.0.1", d.port), timeout=5)
                try:
                    if rng.random() < 0.8:  # usually connected first, so the frames reach the broker
                        sock.sendall(pc.frame(pc.CONNECT, 1, connect_body()))
                    for k in range(rng.randint(1, 8)):
                        frames.append(fuzz_frame(rng, 2 + k))
                    data = b"".join(frames)
                    write_split(sock, rng, data)
                    mode = rng.randrange(4)
                    if mode == 0:
                        sock.shutdown(socket.SHUT_WR)  # half-close
                    if mode <= 1:
                        sock.settimeout(0.2)
                        try:
                            while sock.recv(65536):
                                pass
                        except (socket.timeout, OSError):
                            pass
                except OSError:
                    pass  # the server may close a connection that sent garbage
                finally:
                    sock.close()
                t0 = time.monotonic()
                try:
                    control.ping(rnd)
                except Exception as e:  # noqa: BLE001
                    print("FAIL round %d seed %d: control ping: %s: %s\ninput %r" %
                          (rnd, args.seed, type(e).__name__, e, frames), flush=True)
                    print(d.stderr_tail(), flush=True)
                    return 1
                took = time.monotonic() - t0
                if d.proc.poll() is not None or took > PING_BOUND:
                    print("FAIL round %d seed %d: daemon %s, ping %.3f s\ninput %r" %
                          (rnd, args.seed, "exited %s" % d.proc.poll(), took, frames), flush=True)
                    print(d.stderr_tail(), flush=True)
                    return 1
            fds = fds_at_start + 1
            for _ in range(50):  # the last connections may still be closing
                fds = len(os.listdir("/proc/%d/fd" % d.proc.pid))
                if fds <= fds_at_start:
                    break
                time.sleep(0.1)
            if fds > fds_at_start:
                print("FAIL seed %d: %d descriptors at the end, %d at the start" %
                      (args.seed, fds, fds_at_start), flush=True)
                return 1
            rc = d.terminate()
            if rc != 0:
                print("FAIL: witmqd exited %d on SIGTERM" % rc)
                return 1
            print("%d rounds passed, seed %d" % (args.rounds, args.seed), flush=True)
            return 0
        finally:
            d.kill()


if __name__ == "__main__":
    sys.exit(main())
