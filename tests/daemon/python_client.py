#!/usr/bin/env python3
"""A client for the witmq wire protocol (version 1), written from docs/PROTOCOL.md alone, with the
Python 3 standard library only. Run as a test it starts the real witmqd on 127.0.0.1, an ephemeral
port and a temporary data directory, drives it over real sockets, prints one line per check and
ends with one line `N passed, M failed`. It exits 0 only when every check passed.

    python3 tests/daemon/python_client.py --witmqd build/src/daemon/witmqd

Section numbers in the comments (§n) refer to docs/PROTOCOL.md.
"""

import argparse
import json
import os
import queue
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

READ_TIMEOUT = 10.0  # every socket read is bounded by this (seconds)
QUIET = 0.3  # how long "nothing more arrives" is watched for (seconds)

# ---------------------------------------------------------------------------------------------
# §4 frame types
# ---------------------------------------------------------------------------------------------

CONNECT = 0x01
SEND = 0x02
SUBSCRIBE_TRY_RECEIVE = 0x03
SUBSCRIBE_RECEIVE = 0x04
UPDATE_GUEST_CONFIGURATION = 0x05
COMPLETE_MESSAGE = 0x06
ABANDON_MESSAGE = 0x07
STREAM_START = 0x08
CREDIT = 0x09
STREAM_STOP = 0x0A
PING = 0x0B
CHANNEL_LIST = 0x20
CHANNEL_DECLARE = 0x21
CHANNEL_DELETE = 0x22
CHANNEL_STATS = 0x23
BROWSE = 0x24
REPLAY_DEAD_LETTERS = 0x25
PURGE = 0x26
SERVER_STATS = 0x27
OK = 0x80  # success reply type = request type | 0x80
DELIVER = 0xC0
STREAM_END = 0xC1
GOAWAY = 0xFE
ERROR = 0xFF

# §3 format-spec cases
CLOUDEVENTS, HTTP, AMQP, MQTT, KAFKA, RAW = range(6)

# §9 error codes
ERROR_CODES = {
    1: "invalid-argument", 2: "not-found", 3: "already-exists", 4: "stale-receipt",
    5: "permission-denied", 6: "resource-exhausted", 7: "unavailable", 8: "corruption",
    9: "io-error", 10: "unsupported", 11: "failed-precondition", 12: "internal",
}
CODE = {name: code for code, name in ERROR_CODES.items()}


def code_name(code):
    return ERROR_CODES.get(code, "internal(%d)" % code)  # unknown codes are treated as internal


class ProtocolError(Exception):
    """The peer sent bytes that break docs/PROTOCOL.md."""


class ReadTimeout(Exception):
    """Nothing (or not enough) arrived within the bounded read timeout."""


class ConnectionClosed(Exception):
    """The peer closed the TCP stream."""


class RequestFailed(Exception):
    """A request was answered with an error frame (or failed by a goaway)."""

    def __init__(self, code, text, frame_type=ERROR):
        super().__init__("%s (%d): %s" % (code_name(code), code, text))
        self.code = code
        self.text = text
        self.frame_type = frame_type


# ---------------------------------------------------------------------------------------------
# §3 field encodings
# ---------------------------------------------------------------------------------------------


def u8(v):
    return struct.pack(">B", v)


def u16(v):
    return struct.pack(">H", v)


def u32(v):
    return struct.pack(">I", v)


def u64(v):
    return struct.pack(">Q", v)


def enc_bytes(b):
    return u32(len(b)) + bytes(b)


def enc_string(s):
    """A `string`; a str is UTF-8 encoded, a bytes object is sent as it is (for malformed tests)."""
    return enc_bytes(s.encode("utf-8") if isinstance(s, str) else s)


def enc_option(value, encode):
    return b"\x00" if value is None else b"\x01" + encode(value)


def enc_list(items, encode):
    return u32(len(items)) + b"".join(encode(item) for item in items)


def enc_pair(kv):
    return enc_string(kv[0]) + enc_string(kv[1])


def enc_pairs(pairs):
    return enc_option(pairs, lambda p: enc_list(p, enc_pair))


class Message:
    """WIT message: bytes data, format format, option<list<pair>> metadata."""

    def __init__(self, data=b"", fmt=RAW, metadata=None):
        self.data = bytes(data)
        self.format = fmt
        self.metadata = None if metadata is None else list(metadata)

    def meta(self):
        """Metadata as a dict (duplicate keys are reported by the caller through meta_keys)."""
        return dict(self.metadata or [])

    def meta_keys(self):
        return [k for k, _ in (self.metadata or [])]

    def get(self, key):
        return self.meta().get(key)

    def user_meta(self):
        return [(k, v) for k, v in (self.metadata or []) if not k.startswith("witmq-")]

    def receipt_only(self):
        """The recommended settle form (§6.5): empty data, raw, just the witmq-receipt entry."""
        return Message(b"", RAW, [("witmq-receipt", self.get("witmq-receipt"))])

    def __repr__(self):
        return "Message(%r, %d, %r)" % (self.data, self.format, self.metadata)


def enc_message(m):
    return enc_bytes(m.data) + u8(m.format) + enc_pairs(m.metadata)


def enc_messages(messages):
    return enc_list(messages, enc_message)


def enc_guest_configuration(channels, extensions=None):
    return enc_list(channels, enc_string) + enc_pairs(extensions)


def enc_error_body(code, text):
    return u16(code) + enc_string(text)


def frame(ftype, request_id, body=b"", flags=0):
    """§2: u32 length (6 + body), u8 type, u8 flags, u32 request id, body."""
    return struct.pack(">IBBI", 6 + len(body), ftype, flags, request_id) + body


# ---------------------------------------------------------------------------------------------
# §3 strict decoding
# ---------------------------------------------------------------------------------------------

MIN_SIZE = {"u16": 2, "string": 4, "pair": 8, "message": 6}


class Decoder:
    def __init__(self, body):
        self.body = body
        self.pos = 0

    def left(self):
        return len(self.body) - self.pos

    def take(self, n, what):
        if n > self.left():
            raise ProtocolError("%s: needs %d bytes, %d left" % (what, n, self.left()))
        b = self.body[self.pos:self.pos + n]
        self.pos += n
        return b

    def u8(self, what="u8"):
        return self.take(1, what)[0]

    def u16(self, what="u16"):
        return struct.unpack(">H", self.take(2, what))[0]

    def u32(self, what="u32"):
        return struct.unpack(">I", self.take(4, what))[0]

    def u64(self, what="u64"):
        return struct.unpack(">Q", self.take(8, what))[0]

    def bytes(self, what="bytes"):
        n = self.u32(what + " length")
        return self.take(n, what)

    def string(self, what="string"):
        raw = self.bytes(what)
        try:
            return raw.decode("utf-8")  # strict: rejects overlong forms, surrogates, > U+10FFFF
        except UnicodeDecodeError as e:
            raise ProtocolError("%s: not well-formed UTF-8: %s" % (what, e))

    def option(self, decode, what="option"):
        tag = self.u8(what + " tag")
        if tag == 0:
            return None
        if tag == 1:
            return decode()
        raise ProtocolError("%s: option tag %d" % (what, tag))

    def list(self, decode, min_size, what="list"):
        n = self.u32(what + " count")
        if n * min_size > self.left():
            raise ProtocolError("%s: count %d cannot fit in %d bytes" % (what, n, self.left()))
        return [decode() for _ in range(n)]

    def pairs(self, what="metadata"):
        return self.option(
            lambda: self.list(lambda: (self.string("key"), self.string("value")), MIN_SIZE["pair"],
                              what), what)

    def format(self):
        f = self.u8("format")
        if f > 5:
            raise ProtocolError("format %d is not a format-spec case" % f)
        return f

    def message(self):
        data = self.bytes("data")
        fmt = self.format()
        return Message(data, fmt, self.pairs())

    def messages(self):
        return self.list(self.message, MIN_SIZE["message"], "messages")

    def error_body(self):
        return self.u16("code"), self.string("message")

    def end(self):
        if self.left():
            raise ProtocolError("%d bytes left after the last field" % self.left())


def decode_body(ftype, body):
    """Decodes a server-to-client body by its type (§4); the whole body must be used."""
    d = Decoder(body)
    if ftype == CONNECT | OK:
        v = {"version": d.u16(), "server": d.string("server")}
        for key in ("max-frame-bytes", "max-send-messages", "max-receive-messages",
                    "max-message-bytes", "max-metadata-entries", "max-metadata-bytes",
                    "max-config-channels", "max-in-flight", "max-credit", "idle-timeout-ms"):
            v[key] = d.u32(key)
    elif ftype in (SEND | OK, UPDATE_GUEST_CONFIGURATION | OK, COMPLETE_MESSAGE | OK,
                   ABANDON_MESSAGE | OK, STREAM_START | OK, CREDIT | OK, STREAM_STOP | OK):
        v = None
    elif ftype == SUBSCRIBE_TRY_RECEIVE | OK:
        v = d.option(d.messages, "messages")
    elif ftype == SUBSCRIBE_RECEIVE | OK:
        v = d.messages()
    elif ftype == PING | OK:
        v = d.u64("payload")
    elif ftype == BROWSE | OK:
        v = d.messages()
    elif CHANNEL_LIST | OK <= ftype <= SERVER_STATS | OK:
        text = d.string("json")
        try:
            v = json.loads(text)
        except ValueError as e:
            raise ProtocolError("admin reply is not JSON: %s: %r" % (e, text))
    elif ftype == DELIVER:
        v = (d.string("channel"), d.messages())
    elif ftype in (STREAM_END, GOAWAY, ERROR):
        v = d.error_body()
    else:
        raise ProtocolError("frame type 0x%02x is not one a server sends" % ftype)
    d.end()
    return v


class Frame:
    def __init__(self, ftype, flags, request_id, body, index):
        self.type = ftype
        self.flags = flags
        self.id = request_id
        self.body = body
        self.index = index  # arrival position on its connection
        self.value = decode_body(ftype, body)

    def raw(self):
        return frame(self.type, self.id, self.body, self.flags)

    def __repr__(self):
        return "Frame(type=0x%02x, id=%d, value=%r)" % (self.type, self.id, self.value)


# ---------------------------------------------------------------------------------------------
# A connection: writer + reader matching replies to request ids
# ---------------------------------------------------------------------------------------------


class Conn:
    def __init__(self, port, label):
        self.label = label
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rbuf = bytearray()
        self.inbox = []  # frames read and not yet consumed, in arrival order
        self.count = 0  # frames read so far
        self.next_id = 1
        self.max_frame_bytes = 16777216  # §2 default until connect-ok says otherwise
        self.limits = None
        self.closed = False

    # -- writing --
    def fresh_id(self):
        rid = self.next_id
        self.next_id = (self.next_id + 1) & 0xFFFFFFFF
        return rid

    def write(self, data):
        self.sock.sendall(data)

    def send(self, ftype, body=b"", rid=None, flags=0):
        rid = self.fresh_id() if rid is None else rid
        self.write(frame(ftype, rid, body, flags))
        return rid

    # -- reading --
    def _read_one(self, deadline):
        """Reads one whole frame (blocking until deadline) and appends it to the inbox."""
        while True:
            if len(self.rbuf) >= 4:
                length = struct.unpack(">I", self.rbuf[:4])[0]
                if length < 6 or length > self.max_frame_bytes:
                    raise ProtocolError("bad frame length %d" % length)
                if len(self.rbuf) >= 4 + length:
                    head = bytes(self.rbuf[4:4 + length])
                    del self.rbuf[:4 + length]
                    ftype, flags, rid = struct.unpack(">BBI", head[:6])
                    if flags != 0:
                        raise ProtocolError("frame with flags 0x%02x" % flags)
                    f = Frame(ftype, flags, rid, head[6:], self.count)
                    self.count += 1
                    self.inbox.append(f)
                    return f
            if self.closed:
                raise ConnectionClosed("%s: connection closed" % self.label)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ReadTimeout("%s: nothing arrived in time" % self.label)
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise ReadTimeout("%s: nothing arrived in time" % self.label)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.closed = True
                if self.rbuf:
                    raise ConnectionClosed("%s: closed inside a frame (%d bytes)" %
                                           (self.label, len(self.rbuf)))
                raise ConnectionClosed("%s: connection closed" % self.label)
            self.rbuf += chunk

    def _take(self, pred):
        for i, f in enumerate(self.inbox):
            if pred(f):
                return self.inbox.pop(i)
        return None

    def wait_for(self, pred, timeout=READ_TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            f = self._take(pred)
            if f is not None:
                return f
            g = self._take(lambda x: x.type == GOAWAY)
            if g is not None:
                # §9: every unanswered request has failed with the goaway's error.
                raise RequestFailed(g.value[0], g.value[1], GOAWAY)
            self._read_one(deadline)

    def reply(self, rid, timeout=READ_TIMEOUT):
        """The reply (success or error) to request rid; deliver/stream-end are left in the inbox."""
        return self.wait_for(lambda f: f.id == rid and f.type not in (DELIVER, STREAM_END), timeout)

    def next_frame(self, timeout=READ_TIMEOUT):
        if self.inbox:
            return self.inbox.pop(0)
        self._read_one(time.monotonic() + timeout)
        return self.inbox.pop(0)

    def pump(self, duration):
        """Reads whatever arrives during `duration` seconds into the inbox."""
        deadline = time.monotonic() + duration
        try:
            while True:
                self._read_one(deadline)
        except ReadTimeout:
            pass

    def pending(self, rid):
        return any(f.id == rid and f.type not in (DELIVER, STREAM_END) for f in self.inbox)

    def take_delivers(self, stream_id):
        out = [f for f in self.inbox if f.type in (DELIVER, STREAM_END) and f.id == stream_id]
        self.inbox = [f for f in self.inbox if f not in out]
        return out

    def read_to_close(self, timeout=READ_TIMEOUT):
        """Every frame until the server closes the stream."""
        frames = list(self.inbox)
        self.inbox = []
        deadline = time.monotonic() + timeout
        try:
            while True:
                self._read_one(deadline)
                frames.extend(self.inbox)
                self.inbox = []
        except ConnectionClosed:
            return frames

    # -- requests --
    def call(self, ftype, body=b"", timeout=READ_TIMEOUT):
        """Sends a request and returns its reply frame (success or error)."""
        return self.reply(self.send(ftype, body), timeout)

    def ok(self, ftype, body=b"", timeout=READ_TIMEOUT):
        f = self.call(ftype, body, timeout)
        if f.type == ERROR:
            raise RequestFailed(f.value[0], f.value[1])
        if f.type != ftype | OK:
            raise ProtocolError("reply type 0x%02x to request type 0x%02x" % (f.type, ftype))
        return f.value

    def connect(self, name="", versions=(1,), token=None):
        body = enc_list(list(versions), u16) + enc_string(name) + enc_option(token, enc_string)
        f = self.call(CONNECT, body)
        if f.type == GOAWAY:
            raise RequestFailed(f.value[0], f.value[1], GOAWAY)
        self.limits = self._connected(f)
        return self.limits

    def _connected(self, f):
        if f.type == ERROR:
            raise RequestFailed(f.value[0], f.value[1])
        if f.type != CONNECT | OK:
            raise ProtocolError("connect answered by type 0x%02x" % f.type)
        self.limits = f.value
        self.max_frame_bytes = f.value["max-frame-bytes"]
        return f.value

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    # -- WIT operations --
    def send_messages(self, channel, messages):
        return self.ok(SEND, enc_string(channel) + enc_messages(messages))

    def try_receive(self, channel, timeout_ms=0):
        return self.ok(SUBSCRIBE_TRY_RECEIVE, enc_string(channel) + u32(timeout_ms),
                       timeout=READ_TIMEOUT + timeout_ms / 1000.0)

    def configure(self, channels, extensions=None):
        return self.ok(UPDATE_GUEST_CONFIGURATION, enc_guest_configuration(channels, extensions))

    def complete(self, m):
        return self.ok(COMPLETE_MESSAGE, enc_message(m))

    def abandon(self, m):
        return self.ok(ABANDON_MESSAGE, enc_message(m))

    def ping(self, payload):
        return self.ok(PING, u64(payload))

    def admin(self, ftype, obj):
        return self.ok(ftype, enc_string(json.dumps(obj)))


# ---------------------------------------------------------------------------------------------
# The daemon
# ---------------------------------------------------------------------------------------------


class Daemon:
    def __init__(self, binary, tmpdir):
        self.stderr_path = os.path.join(tmpdir, "witmqd.stderr")
        self.stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [binary, "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
             "--data-dir", os.path.join(tmpdir, "data")],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.stderr)
        self.lines = queue.Queue()
        self.reader = threading.Thread(target=self._read_stdout, daemon=True)
        self.reader.start()
        self.port = None

    def _read_stdout(self):
        for line in self.proc.stdout:  # keeps draining stdout so the daemon never blocks on it
            self.lines.put(line.decode("utf-8", "replace").rstrip("\n"))
        self.lines.put(None)

    def wait_listening(self, timeout=30.0):
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError("witmqd did not print 'listening on' within %.0f s" % timeout)
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError("witmqd exited before listening (code %s)" % self.proc.wait())
            if line.startswith("listening on "):
                address = line[len("listening on "):].strip()
                host, _, port = address.rpartition(":")
                self.port = int(port)
                return host, self.port

    def terminate(self, timeout=15.0):
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()

    def stderr_tail(self, n=20):
        try:
            with open(self.stderr_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-n:]).decode("utf-8", "replace")
        except OSError:
            return ""


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------


class Results:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.last_text = ""

    def check(self, name, cond, detail=""):
        if cond:
            self.passed += 1
            print("PASS  %s" % name, flush=True)
        else:
            self.failed += 1
            print("FAIL  %s%s" % (name, (": " + detail) if detail else ""), flush=True)
        return cond

    def eq(self, name, actual, expected):
        return self.check(name, actual == expected, "got %r, expected %r" % (actual, expected))

    def error(self, name, conn, ftype, body, expected_code, timeout=READ_TIMEOUT):
        """Sends a request and checks it is answered by an error frame with expected_code."""
        rid = conn.send(ftype, body)
        f = conn.reply(rid, timeout)
        self.last_text = f.value[1] if f.type == ERROR else ""
        if f.type != ERROR:
            return self.check(name, False, "got reply type 0x%02x %r, expected error %s" %
                              (f.type, f.value, code_name(expected_code)))
        return self.check(name, f.value[0] == expected_code,
                          "got error %s (%d) %r, expected %s" %
                          (code_name(f.value[0]), f.value[0], f.value[1], code_name(expected_code)))

    def section(self, name, fn, *args):
        print("--- %s" % name, flush=True)
        try:
            fn(self, *args)
        except Exception as e:  # a section that blows up counts as one failed check
            self.check("%s: ran to the end" % name, False,
                       "%s: %s" % (type(e).__name__, e))
            traceback.print_exc(file=sys.stdout)


def hexs(b):
    return " ".join("%02x" % x for x in b)


def unhex(s):
    return bytes.fromhex("".join(s.split()))


def check_reserved(r, label, m, channel, attempt, with_receipt=True):
    """§6.5: the reserved entries witmq adds on delivery."""
    md = m.meta()
    keys = m.meta_keys()
    r.check("%s: metadata has no duplicate keys" % label, len(keys) == len(set(keys)), repr(keys))
    r.eq("%s: witmq-channel" % label, md.get("witmq-channel"), channel)
    seq = md.get("witmq-sequence", "")
    r.check("%s: witmq-sequence is decimal" % label, seq.isdigit(), repr(seq))
    r.eq("%s: witmq-id is <channel>/<sequence>" % label, md.get("witmq-id"), "%s/%s" % (channel, seq))
    if attempt is not None:
        r.eq("%s: witmq-attempt" % label, md.get("witmq-attempt"), str(attempt))
    published = md.get("witmq-published-at", "")
    now_ms = int(time.time() * 1000)
    r.check("%s: witmq-published-at is recent ms since the epoch" % label,
            published.isdigit() and now_ms - 120000 < int(published) <= now_ms + 5000,
            "%r (now %d)" % (published, now_ms))
    if with_receipt:
        r.check("%s: witmq-receipt present and non-empty" % label,
                bool(md.get("witmq-receipt")), repr(md.get("witmq-receipt")))
    else:
        r.check("%s: no witmq-receipt" % label, "witmq-receipt" not in md, repr(keys))
    return int(seq) if seq.isdigit() else -1


# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------


def t_examples(r):
    """§14: the client's encoder reproduces the worked examples byte for byte."""
    connect = unhex("""00 00 00 15 01 00 00 00 00 01 00 00 00 01 00 01
                       00 00 00 04 64 65 6d 6f 00""")
    mine = frame(CONNECT, 1, enc_list([1], u16) + enc_string("demo") + enc_option(None, enc_string))
    r.eq("§14 connect example encodes identically", hexs(mine), hexs(connect))

    send = unhex("""00 00 00 2a 02 00 00 00 00 02 00 00 00 06 6f 72 64 65 72 73
                    00 00 00 01 00 00 00 02 68 69 05 01 00 00 00 01
                    00 00 00 01 6b 00 00 00 01 76""")
    mine = frame(SEND, 2, enc_string("orders") + enc_messages([Message(b"hi", RAW, [("k", "v")])]))
    r.eq("§14 send example encodes identically", hexs(mine), hexs(send))
    r.eq("§14 send-ok example", hexs(frame(SEND | OK, 2)), hexs(unhex("00 00 00 06 82 00 00 00 00 02")))

    err = unhex("""00 00 00 1a ff 00 00 00 00 03 00 02
                   00 00 00 0e 6e 6f 20 63 68 61 6e 6e 65 6c 20 27 78 27""")
    r.eq("§14 error example encodes identically",
         hexs(frame(ERROR, 3, enc_error_body(2, "no channel 'x'"))), hexs(err))
    r.eq("§14 error example decodes", decode_body(ERROR, err[10:]), (2, "no channel 'x'"))

    r.eq("§14 stream-start example", hexs(frame(STREAM_START, 7, u32(2))),
         hexs(unhex("00 00 00 0a 08 00 00 00 00 07 00 00 00 02")))
    deliver = unhex("""00 00 00 33 c0 00 00 00 00 07 00 00 00 04 6a 6f 62 73 00 00 00 01
                       00 00 00 01 78 05 01 00 00 00 01
                       00 00 00 0d 77 69 74 6d 71 2d 72 65 63 65 69 70 74 00 00 00 01 72""")
    r.eq("§14 deliver example length", struct.unpack(">I", deliver[:4])[0], len(deliver) - 4)
    ch, msgs = decode_body(DELIVER, deliver[10:])
    r.check("§14 deliver example decodes", ch == "jobs" and len(msgs) == 1 and
            msgs[0].data == b"x" and msgs[0].metadata == [("witmq-receipt", "r")], repr((ch, msgs)))
    r.eq("§14 credit example", hexs(frame(CREDIT, 8, u32(1))),
         hexs(unhex("00 00 00 0a 09 00 00 00 00 08 00 00 00 01")))
    r.eq("§3 empty raw message is 00 00 00 00 05 00", hexs(enc_message(Message())),
         "00 00 00 00 05 00")


EXPECTED_LIMITS = {
    "max-frame-bytes": 16777216, "max-send-messages": 10000, "max-receive-messages": 10000,
    "max-message-bytes": 1048576, "max-metadata-entries": 64, "max-metadata-bytes": 16384,
    "max-config-channels": 1024, "max-in-flight": 1024, "max-credit": 10000,
    "idle-timeout-ms": 0,
}


def t_connect(r, ctx):
    port = ctx["port"]
    c1 = Conn(port, "c1")
    ctx["c1"] = c1
    # The §14 connect example, sent as its literal bytes.
    c1.write(unhex("00 00 00 15 01 00 00 00 00 01 00 00 00 01 00 01 00 00 00 04 64 65 6d 6f 00"))
    f = c1.reply(1)
    c1.next_id = 2
    r.eq("connect: reply type is connect-ok (0x81)", f.type, CONNECT | OK)
    r.eq("connect: reply carries the connect's request id", f.id, 1)
    lim = c1._connected(f)
    r.eq("connect-ok: version", lim["version"], 1)
    r.check("connect-ok: server names witmqd/<version>", lim["server"].startswith("witmqd/") and
            len(lim["server"]) > len("witmqd/"), repr(lim["server"]))
    r.eq("connect-ok: body is 46 bytes + server", len(f.body), 46 + len(lim["server"].encode()))
    for key, value in EXPECTED_LIMITS.items():
        r.eq("connect-ok: %s is the §11 default" % key, lim[key], value)
    if lim["server"] == "witmqd/0.1.0":
        r.eq("connect-ok: bytes equal the §14 example", hexs(f.raw()), hexs(unhex("""
            00 00 00 40 81 00 00 00 00 01 00 01 00 00 00 0c 77 69 74 6d 71 64 2f 30 2e 31 2e 30
            01 00 00 00 00 00 27 10 00 00 27 10 00 10 00 00 00 00 00 40 00 00 40 00
            00 00 04 00 00 00 04 00 00 00 27 10 00 00 00 00""")))

    # §5.1: highest common version; a token is ignored by a server without authentication.
    c2 = Conn(port, "c2")
    ctx["c2"] = c2
    lim2 = c2.connect("py-client-2", versions=(1, 7), token="some-token")
    r.eq("connect listing [1, 7] with a token: version 1 picked", lim2["version"], 1)

    # §5.1: a second connect is failed-precondition; the connection stays usable.
    r.error("second connect: error failed-precondition", c1, CONNECT,
            enc_list([1], u16) + enc_string("again") + b"\x00", CODE["failed-precondition"])
    r.eq("second connect: connection still usable (ping)", c1.ping(42), 42)

    # §5.1: a client listing only version 1 may pipeline right after connect.
    c3 = Conn(port, "c3")
    cid = c3.send(CONNECT, enc_list([1], u16) + enc_string("") + b"\x00")
    pid = c3.send(PING, u64(7))
    r.eq("pipelined after connect: connect-ok", c3.reply(cid).type, CONNECT | OK)
    pf = c3.reply(pid)
    r.check("pipelined after connect: pong 7", pf.type == PING | OK and pf.value == 7, repr(pf))
    c3.close()


def t_send_receive(r, ctx):
    c1 = ctx["c1"]
    ch = "p2p.orders"
    batch = [
        Message(b"first", RAW, [("k", "v"), ("witmq-id", "forged"), ("color", "red")]),
        Message(b"\x00\x01\xff binary", CLOUDEVENTS, [("ce-type", "com.example.x")]),
        Message(b"", HTTP, None),
    ]
    r.eq("send: 3 messages with metadata -> send-ok (empty)", c1.send_messages(ch, batch), None)
    r.eq("send: empty list -> send-ok", c1.send_messages(ch, []), None)
    got = c1.try_receive(ch, 0)
    r.check("try-receive: some", got is not None, repr(got))
    got = got or []
    r.eq("try-receive: all 3 messages", len(got), 3)
    if len(got) != 3:
        return
    for i, (m, sent) in enumerate(zip(got, batch)):
        r.eq("try-receive[%d]: data" % i, m.data, sent.data)
        r.eq("try-receive[%d]: format" % i, m.format, sent.format)
        r.check("try-receive[%d]: metadata is some" % i, m.metadata is not None, repr(m.metadata))
        expected_user = [(k, v) for k, v in (sent.metadata or []) if not k.startswith("witmq-")]
        r.eq("try-receive[%d]: user metadata kept, in order" % i, m.user_meta(), expected_user)
    seqs = [check_reserved(r, "try-receive[%d]" % i, m, ch, 1) for i, m in enumerate(got)]
    r.check("try-receive: sequences consecutive in list order",
            seqs[0] >= 0 and seqs == list(range(seqs[0], seqs[0] + 3)), repr(seqs))
    r.check("send: reserved key witmq-id on a sent message was dropped",
            got[0].meta_keys().count("witmq-id") == 1 and got[0].get("witmq-id") != "forged",
            repr(got[0].metadata))
    r.eq("try-receive: nothing more available -> none", c1.try_receive(ch, 0), None)

    # §6.5 complete with just the receipt.
    r.eq("complete-message with just the receipt -> complete-message-ok",
         c1.complete(got[0].receipt_only()), None)
    # §6.5 abandon, then the requeue (default backoff) delivers attempt 2.
    r.eq("abandon-message with just the receipt -> abandon-message-ok",
         c1.abandon(got[1].receipt_only()), None)
    again = c1.try_receive(ch, 5000) or []
    r.eq("after abandon: one message redelivered", len(again), 1)
    if again:
        m = again[0]
        r.eq("redelivery: same data", m.data, got[1].data)
        r.eq("redelivery: same sequence", m.get("witmq-sequence"), got[1].get("witmq-sequence"))
        check_reserved(r, "redelivery", m, ch, 2)
        r.check("redelivery: new receipt", m.get("witmq-receipt") != got[1].get("witmq-receipt"))
        # §6.5: a client MAY send the message back exactly as delivered.
        r.eq("complete-message with the message as delivered", c1.complete(m), None)
    r.eq("complete-message with the message as delivered (3rd)", c1.complete(got[2]), None)
    r.eq("all settled: try-receive -> none", c1.try_receive(ch, 0), None)
    ctx["orders_seqs"] = seqs


def t_receipts(r, ctx):
    port = ctx["port"]
    c1 = ctx["c1"]
    r.error("complete with a garbage receipt: invalid-argument", c1, COMPLETE_MESSAGE,
            enc_message(Message(b"", RAW, [("witmq-receipt", "garbage")])), CODE["invalid-argument"])
    r.error("abandon with a garbage receipt: invalid-argument", c1, ABANDON_MESSAGE,
            enc_message(Message(b"", RAW, [("witmq-receipt", "not a receipt!")])),
            CODE["invalid-argument"])
    r.error("complete with no metadata (missing receipt): invalid-argument", c1, COMPLETE_MESSAGE,
            enc_message(Message(b"data", RAW, None)), CODE["invalid-argument"])
    r.error("complete with metadata but no receipt: invalid-argument", c1, COMPLETE_MESSAGE,
            enc_message(Message(b"", RAW, [("k", "v")])), CODE["invalid-argument"])

    # A receipt whose lease expired (lease-ms extension at its minimum 100).
    ch = "p2p.lease"
    a = Conn(port, "lease")
    a.connect("lease-client")
    a.send_messages(ch, [Message(b"leased")])
    r.eq("lease: configure lease-ms=100", a.configure([ch], [("lease-ms", "100")]), None)
    first = a.try_receive(ch, 0) or []
    r.eq("lease: received 1", len(first), 1)
    if not first:
        a.close()
        return
    time.sleep(0.5)
    r.error("complete with an expired lease's receipt: stale-receipt", a, COMPLETE_MESSAGE,
            enc_message(first[0].receipt_only()), CODE["stale-receipt"])
    r.eq("lease: configure lease-ms=30000", a.configure([ch], [("lease-ms", "30000")]), None)
    second = a.try_receive(ch, 5000) or []
    r.eq("lease expiry: message available again", len(second), 1)
    if second:
        check_reserved(r, "after lease expiry", second[0], ch, 2)
        r.error("old receipt after redelivery: stale-receipt", a, ABANDON_MESSAGE,
                enc_message(first[0].receipt_only()), CODE["stale-receipt"])
        r.eq("current receipt completes", a.complete(second[0].receipt_only()), None)
        ctx["settled_receipt"] = second[0].receipt_only()
    a.close()


def t_waiting(r, ctx):
    port, c1, c2 = ctx["port"], ctx["c1"], ctx["c2"]
    ch = "p2p.wait"
    r.eq("channel-declare p2p.wait -> {}", c1.admin(CHANNEL_DECLARE, {"name": ch}), {})

    t0 = time.monotonic()
    r.eq("try-receive 300 ms on an empty channel -> none", c1.try_receive(ch, 300), None)
    elapsed = time.monotonic() - t0
    r.check("try-receive 300 ms waited about 300 ms", 0.25 <= elapsed < 5.0, "%.3f s" % elapsed)

    # §1, §6.3: a subscribe-receive that waits does not hold up later requests.
    recv_id = c1.send(SUBSCRIBE_RECEIVE, enc_string(ch))
    ping_id = c1.send(PING, u64(0xDEADBEEF))
    pong = c1.reply(ping_id)
    r.check("pipelining: later ping answered while subscribe-receive waits",
            pong.type == PING | OK and pong.value == 0xDEADBEEF, repr(pong))
    c1.pump(0.2)
    r.check("pipelining: subscribe-receive still unanswered", not c1.pending(recv_id),
            repr(c1.inbox))
    c2.send_messages(ch, [Message(b"wake up", KAFKA, [("from", "c2")])])
    f = c1.reply(recv_id)
    r.eq("subscribe-receive: reply type 0x84", f.type, SUBSCRIBE_RECEIVE | OK)
    r.check("subscribe-receive: answered after the later ping (out of order)",
            f.index > pong.index, "receive #%d, pong #%d" % (f.index, pong.index))
    msgs = f.value if f.type == SUBSCRIBE_RECEIVE | OK else []
    r.check("subscribe-receive: the message sent by the other connection",
            len(msgs) == 1 and msgs[0].data == b"wake up" and msgs[0].format == KAFKA and
            msgs[0].user_meta() == [("from", "c2")], repr(msgs))
    if msgs:
        check_reserved(r, "subscribe-receive", msgs[0], ch, 1)
        c1.complete(msgs[0].receipt_only())

    # try-receive with a timeout returns as soon as something arrives.
    tid = c1.send(SUBSCRIBE_TRY_RECEIVE, enc_string(ch) + u32(8000))
    c1.pump(0.2)
    r.check("try-receive 8000 ms: waiting", not c1.pending(tid), repr(c1.inbox))
    t0 = time.monotonic()
    c2.send_messages(ch, [Message(b"late")])
    f = c1.reply(tid)
    elapsed = time.monotonic() - t0
    got = f.value if f.type == SUBSCRIBE_TRY_RECEIVE | OK else None
    r.check("try-receive 8000 ms: some, as soon as the message was sent",
            got is not None and len(got) == 1 and got[0].data == b"late" and elapsed < 4.0,
            "%r after %.3f s" % (f, elapsed))
    if got:
        c1.complete(got[0].receipt_only())

    # §12: when a connection closes, the messages it holds become available again (failed attempt).
    d = Conn(port, "dropper")
    d.connect("")
    d.send_messages("p2p.release", [Message(b"held")])
    held = d.try_receive("p2p.release", 0) or []
    r.eq("disconnect: other connection holds 1 message", len(held), 1)
    d.close()
    back = c1.try_receive("p2p.release", 5000) or []
    r.check("disconnect: held message available again", len(back) == 1 and back[0].data == b"held",
            repr(back))
    if back:
        r.eq("disconnect: counted as a failed attempt (witmq-attempt 2)",
             back[0].get("witmq-attempt"), "2")
        c1.complete(back[0].receipt_only())


def seqs_of(messages):
    return [int(m.get("witmq-sequence")) for m in messages]


def t_streaming(r, ctx):
    port, c2 = ctx["port"], ctx["c2"]
    ch = "stream.jobs"
    s = Conn(port, "streamer")
    s.connect("streamer")
    r.error("stream-start with no configured channel: failed-precondition", s, STREAM_START,
            u32(5), CODE["failed-precondition"])
    r.error("credit with no stream: failed-precondition", s, CREDIT, u32(1),
            CODE["failed-precondition"])
    r.error("update-guest-configuration with unknown extension: invalid-argument", s,
            UPDATE_GUEST_CONFIGURATION, enc_guest_configuration([ch], [("no-such-key", "1")]),
            CODE["invalid-argument"])
    r.check("the error names the unknown extension key", "no-such-key" in r.last_text,
            repr(r.last_text))
    r.error("update-guest-configuration with batch-size=0: invalid-argument", s,
            UPDATE_GUEST_CONFIGURATION, enc_guest_configuration([ch], [("batch-size", "0")]),
            CODE["invalid-argument"])
    r.error("update-guest-configuration with a bad channel name: invalid-argument", s,
            UPDATE_GUEST_CONFIGURATION, enc_guest_configuration(["bad name"]),
            CODE["invalid-argument"])
    r.eq("update-guest-configuration [stream.jobs] batch-size=2 -> ok",
         s.configure([ch], [("batch-size", "2")]), None)
    r.error("bad update after a good one: invalid-argument", s, UPDATE_GUEST_CONFIGURATION,
            enc_guest_configuration(["stream.other"], [("batch-size", "0")]),
            CODE["invalid-argument"])  # nothing changed: checked below by channel and batch size
    c2.send_messages(ch, [Message(("job-%d" % i).encode()) for i in range(10)])
    r.error("stream-start credit above max-credit: resource-exhausted", s, STREAM_START,
            u32(s.limits["max-credit"] + 1), CODE["resource-exhausted"])

    sid = s.send(STREAM_START, u32(3))
    start = s.reply(sid)
    r.eq("stream-start credit 3 -> stream-start-ok", start.type, STREAM_START | OK)
    delivered = []
    granted = 3
    frames = []

    def collect(want, duration):
        deadline = time.monotonic() + duration
        while sum(len(f.value[1]) for f in frames if f.type == DELIVER) < want:
            if time.monotonic() > deadline:
                break
            s.pump(0.05)
            frames.extend(s.take_delivers(sid))
        s.pump(QUIET)
        frames.extend(s.take_delivers(sid))

    collect(3, READ_TIMEOUT)
    dels = [f for f in frames if f.type == DELIVER]
    r.check("stream: stream-start-ok precedes every deliver",
            all(f.index > start.index for f in frames), repr([f.index for f in frames]))
    r.check("stream: no stream-end", all(f.type == DELIVER for f in frames), repr(frames))
    for f in dels:
        delivered.extend(f.value[1])
    r.eq("stream: exactly the credit (3) delivered, no more", len(delivered), 3)
    r.check("stream: deliver frames carry the stream id, the channel, 1..batch-size(2) messages",
            all(f.id == sid and f.value[0] == ch and 1 <= len(f.value[1]) <= 2 for f in dels),
            repr([(f.id, f.value[0], len(f.value[1])) for f in dels]))
    for i, m in enumerate(delivered):
        check_reserved(r, "deliver[%d]" % i, m, ch, 1)
    r.error("second stream-start while active: failed-precondition", s, STREAM_START, u32(1),
            CODE["failed-precondition"])

    # Settling does not return credit.
    for m in delivered:
        s.complete(m.receipt_only())
    frames.clear()
    s.pump(QUIET)
    frames.extend(s.take_delivers(sid))
    r.eq("stream: completing messages returns no credit (nothing delivered)", len(frames), 0)

    cid = s.send(CREDIT, u32(4))
    cf = s.reply(cid)
    r.eq("credit 4 -> credit-ok", cf.type, CREDIT | OK)
    granted += 4
    collect(4, READ_TIMEOUT)
    more = [m for f in frames if f.type == DELIVER for m in f.value[1]]
    r.eq("stream: 4 more delivered after credit 4, no more", len(more), 4)
    r.check("stream: every deliver of n messages within batch-size 2",
            all(len(f.value[1]) <= 2 for f in frames if f.type == DELIVER))
    delivered.extend(more)
    r.check("stream: delivered in channel order", seqs_of(delivered) == sorted(seqs_of(delivered))
            and len(set(seqs_of(delivered))) == len(delivered), repr(seqs_of(delivered)))
    r.check("stream: never more delivered than credit granted", len(delivered) <= granted,
            "%d delivered, %d granted" % (len(delivered), granted))
    r.error("credit over max-credit: resource-exhausted", s, CREDIT,
            u32(s.limits["max-credit"] + 1), CODE["resource-exhausted"])

    # One more credit, one more message.
    frames.clear()
    for m in more:
        s.complete(m.receipt_only())
    s.ok(CREDIT, u32(1))
    granted += 1
    collect(1, READ_TIMEOUT)
    one = [m for f in frames if f.type == DELIVER for m in f.value[1]]
    r.eq("stream: credit 1 -> one more delivered", len(one), 1)
    delivered.extend(one)

    # stream-stop while credit remains and messages are available: stream-stop-ok follows the
    # last deliver of the stream.
    frames.clear()
    s.send(CREDIT, u32(2))
    granted += 2
    stop_id = s.send(STREAM_STOP)
    deadline = time.monotonic() + READ_TIMEOUT
    stop = None
    while stop is None:
        f = s._read_one(deadline)
        if f.id == stop_id and f.type not in (DELIVER, STREAM_END):
            stop = s._take(lambda x: x is f)
    frames.extend(s.take_delivers(sid))
    r.eq("stream-stop -> stream-stop-ok", stop.type, STREAM_STOP | OK)
    before = [m for f in frames if f.type == DELIVER for m in f.value[1]]
    delivered.extend(before)
    s.pump(QUIET)
    after = s.take_delivers(sid)
    r.eq("stream: no deliver after stream-stop-ok", len(after), 0)
    r.check("stream: never more delivered than credit granted (overall)",
            len(delivered) <= granted, "%d delivered, %d granted" % (len(delivered), granted))
    r.error("credit after stream-stop: failed-precondition", s, CREDIT, u32(1),
            CODE["failed-precondition"])
    r.eq("stream-stop with no active stream -> stream-stop-ok", s.ok(STREAM_STOP), None)

    # The remaining messages are still there for a receive (10 sent in all).
    for m in one + before:
        s.complete(m.receipt_only())
    rest = []
    for _ in range(10):
        got = s.try_receive(ch, 0)
        if not got:
            break
        r.check("try-receive on a configured channel honours batch-size 2", len(got) <= 2,
                "%d messages" % len(got))
        rest.extend(got)
    r.eq("stream: delivered + received = the 10 messages sent",
         sorted(m.data for m in delivered + rest), sorted(("job-%d" % i).encode() for i in range(10)))
    for m in rest:
        s.complete(m.receipt_only())

    # A new stream may be started after a stop.
    sid2 = s.send(STREAM_START, u32(0))
    r.eq("new stream-start credit 0 after stop -> ok", s.reply(sid2).type, STREAM_START | OK)
    c2.send_messages(ch, [Message(b"zero-credit")])
    s.pump(QUIET)
    r.eq("stream with credit 0 delivers nothing", len(s.take_delivers(sid2)), 0)
    s.ok(CREDIT, u32(1))
    f = s.wait_for(lambda x: x.type == DELIVER and x.id == sid2)
    r.check("stream: credit 1 -> the waiting message", f.value[1][0].data == b"zero-credit",
            repr(f))
    s.complete(f.value[1][0].receipt_only())

    # update-guest-configuration changes the channels a running stream draws from.
    other = "stream.other"
    r.eq("running stream: reconfigure to [stream.other]", s.configure([other]), None)
    c2.send_messages(other, [Message(b"other-1")])
    s.ok(CREDIT, u32(1))
    f = s.wait_for(lambda x: x.type == DELIVER and x.id == sid2)
    r.check("running stream: delivers from the newly configured channel",
            f.value[0] == other and [m.data for m in f.value[1]] == [b"other-1"], repr(f))
    s.complete(f.value[1][0].receipt_only())
    r.eq("running stream: reconfigure to no channel", s.configure([]), None)
    r.eq("stream with no channel left stays active (credit-ok)", s.ok(CREDIT, u32(1)), None)
    c2.send_messages(other, [Message(b"other-2")])
    s.pump(QUIET)
    r.eq("stream with no channel left delivers nothing", len(s.take_delivers(sid2)), 0)
    r.eq("stream-stop -> stream-stop-ok", s.ok(STREAM_STOP), None)

    # §7.6: the server ends a stream by itself when its configured channel is deleted.
    doomed = "stream.doomed"
    c2.admin(CHANNEL_DECLARE, {"name": doomed})
    s.configure([doomed])
    sid3 = s.send(STREAM_START, u32(5))
    r.eq("stream on stream.doomed: stream-start-ok", s.reply(sid3).type, STREAM_START | OK)
    c2.admin(CHANNEL_DELETE, {"name": doomed})
    f = s.wait_for(lambda x: x.type in (DELIVER, STREAM_END) and x.id == sid3)
    r.check("channel deleted under a stream with credit: stream-end on the stream id",
            f.type == STREAM_END, repr(f))
    if f.type == STREAM_END:
        print("      (stream-end code %s: %r)" % (code_name(f.value[0]), f.value[1]))
    s.pump(QUIET)
    r.eq("no deliver after stream-end", len(s.take_delivers(sid3)), 0)
    r.error("credit after stream-end: failed-precondition", s, CREDIT, u32(1),
            CODE["failed-precondition"])
    s.configure([ch])
    sid4 = s.send(STREAM_START, u32(1))
    r.eq("a new stream may start after stream-end", s.reply(sid4).type, STREAM_START | OK)
    r.eq("stream-stop -> stream-stop-ok", s.ok(STREAM_STOP), None)
    s.close()


def t_misc(r, ctx):
    c1 = ctx["c1"]
    lim = c1.limits
    r.eq("ping 0x0123456789abcdef -> pong, same payload", c1.ping(0x0123456789ABCDEF),
         0x0123456789ABCDEF)
    r.eq("ping 0 -> pong 0", c1.ping(0), 0)
    r.eq("ping 2^64-1 -> pong 2^64-1", c1.ping(2 ** 64 - 1), 2 ** 64 - 1)
    for label, name in (("space", "bad name"), ("leading dot", ".hidden"), ("empty", ""),
                        ("201 bytes", "a" * 201), ("star", "orders*")):
        r.error("bad channel name (%s) in send: invalid-argument" % label, c1, SEND,
                enc_string(name) + enc_messages([Message(b"x")]), CODE["invalid-argument"])
    r.error("bad channel name in try-receive: invalid-argument", c1, SUBSCRIBE_TRY_RECEIVE,
            enc_string("no spaces allowed") + u32(0), CODE["invalid-argument"])
    r.eq("after bad channel names: connection usable (ping)", c1.ping(99), 99)
    r.eq("channel name of 200 bytes with every allowed character class is accepted",
         c1.send_messages(("Az09._-:/" * 23)[:200], []), None)

    # §11 limits: within max-frame-bytes, an error reply and the connection stays.
    r.error("send of max-send-messages + 1: resource-exhausted", c1, SEND,
            enc_string("p2p.limits") + enc_messages([Message()] * (lim["max-send-messages"] + 1)),
            CODE["resource-exhausted"])
    r.error("message data of max-message-bytes + 1: resource-exhausted", c1, SEND,
            enc_string("p2p.limits") + enc_messages([Message(b"x" * (lim["max-message-bytes"] + 1))]),
            CODE["resource-exhausted"])
    r.error("max-metadata-entries + 1 entries: resource-exhausted", c1, SEND,
            enc_string("p2p.limits") + enc_messages(
                [Message(b"", RAW, [("k%d" % i, "v") for i in range(lim["max-metadata-entries"] + 1)])]),
            CODE["resource-exhausted"])
    r.eq("max-metadata-entries entries plus witmq- ones are accepted", c1.send_messages(
        "p2p.limits", [Message(b"", RAW, [("k%d" % i, "v") for i in range(lim["max-metadata-entries"])]
                               + [("witmq-x", "y")])]), None)
    r.error("metadata bytes above max-metadata-bytes: resource-exhausted", c1, SEND,
            enc_string("p2p.limits") + enc_messages(
                [Message(b"", RAW, [("big", "v" * lim["max-metadata-bytes"])])]),
            CODE["resource-exhausted"])
    r.error("guest-configuration above max-config-channels: resource-exhausted", c1,
            UPDATE_GUEST_CONFIGURATION,
            enc_guest_configuration(["c%d" % i for i in range(lim["max-config-channels"] + 1)]),
            CODE["resource-exhausted"])
    r.eq("after limit errors: connection usable (ping)", c1.ping(100), 100)
    got = c1.try_receive("p2p.limits", 0) or []
    r.eq("limits: only the accepted message was stored", len(got), 1)
    for m in got:
        c1.complete(m.receipt_only())


def t_admin(r, ctx):
    c1, c2 = ctx["c1"], ctx["c2"]
    stats = c1.admin(CHANNEL_STATS, {"name": "p2p.orders"})
    r.eq("channel-stats: name", stats.get("name"), "p2p.orders")
    r.eq("channel-stats: settings.kind", (stats.get("settings") or {}).get("kind"), "point-to-point")
    r.eq("channel-stats: is-dead-letter", stats.get("is-dead-letter"), False)
    r.eq("channel-stats: sends-total", stats.get("sends-total"), 3)
    r.eq("channel-stats: depth", stats.get("depth"), 0)
    r.eq("channel-stats: in-flight", stats.get("in-flight"), 0)
    r.eq("channel-stats: completes-total", stats.get("completes-total"), 3)
    r.eq("channel-stats: abandons-total", stats.get("abandons-total"), 1)
    r.eq("channel-stats: redeliveries-total", stats.get("redeliveries-total"), 1)
    r.check("channel-stats: subscriptions is a list", isinstance(stats.get("subscriptions"), list),
            repr(stats.get("subscriptions")))
    listed = c1.admin(CHANNEL_LIST, {})
    names = [c.get("name") for c in listed.get("channels", [])]
    for n in ("p2p.orders", "p2p.wait", "stream.jobs", "p2p.lease"):
        r.check("channel-list: contains %s" % n, n in names, repr(names))
    r.error("channel-stats of a missing channel: not-found", c1, CHANNEL_STATS,
            enc_string(json.dumps({"name": "no.such.channel"})), CODE["not-found"])
    r.error("channel-stats with an unknown field: invalid-argument", c1, CHANNEL_STATS,
            enc_string(json.dumps({"name": "p2p.orders", "bogus": 1})), CODE["invalid-argument"])
    r.check("the error names the unknown field", "bogus" in r.last_text, repr(r.last_text))
    r.error("channel-declare with an unknown setting: invalid-argument", c1, CHANNEL_DECLARE,
            enc_string(json.dumps({"name": "p2p.never", "settings": {"bogus-setting": 1}})),
            CODE["invalid-argument"])
    r.error("channel-stats with a wrong JSON type: invalid-argument", c1, CHANNEL_STATS,
            enc_string(json.dumps({"name": 5})), CODE["invalid-argument"])
    r.error("admin body that is not JSON: invalid-argument", c1, CHANNEL_LIST,
            enc_string("{not json"), CODE["invalid-argument"])
    r.error("admin body that is a JSON array: invalid-argument", c1, CHANNEL_LIST,
            enc_string("[]"), CODE["invalid-argument"])

    # browse: reads without acquiring; reserved entries except the receipt; pages.
    ch = "p2p.browse"
    c1.send_messages(ch, [Message(("b%d" % i).encode()) for i in range(3)])
    page = c1.admin(BROWSE, {"channel": ch, "from": 0, "max": 2})
    r.eq("browse max 2: 2 messages", [m.data for m in page], [b"b0", b"b1"])
    for i, m in enumerate(page):
        check_reserved(r, "browse[%d]" % i, m, ch, None, with_receipt=False)
    # §13: browse carries neither witmq-attempt nor witmq-receipt.
    r.check("browse: no witmq-attempt, no witmq-receipt",
            bool(page) and all(m.get("witmq-attempt") is None and m.get("witmq-receipt") is None
                               for m in page),
            repr([m.metadata for m in page]))
    nxt = int(page[-1].get("witmq-sequence")) + 1 if page else 0
    page2 = c1.admin(BROWSE, {"channel": ch, "from": nxt})
    r.eq("browse next page: the last message", [m.data for m in page2], [b"b2"])
    nxt = int(page2[-1].get("witmq-sequence")) + 1 if page2 else nxt
    r.eq("browse past the end: empty list", c1.admin(BROWSE, {"channel": ch, "from": nxt}), [])
    got = c1.try_receive(ch, 0) or []
    r.eq("browse did not acquire: receive gets all 3", [m.data for m in got], [b"b0", b"b1", b"b2"])
    for m in got:
        c1.complete(m.receipt_only())

    # channel-declare publish-subscribe: every subscription sees every message.
    topic = "topic.news"
    r.eq("channel-declare publish-subscribe -> {}",
         c1.admin(CHANNEL_DECLARE, {"name": topic, "settings": {"kind": "publish-subscribe"}}), {})
    r.error("channel-declare changing kind: already-exists", c1, CHANNEL_DECLARE,
            enc_string(json.dumps({"name": topic, "settings": {"kind": "point-to-point"}})),
            CODE["already-exists"])
    c1.configure([topic], [("start", "earliest")])
    c2.configure([topic], [("start", "earliest")])
    c2.send_messages(topic, [Message(b"extra!")])
    a = c1.try_receive(topic, 3000) or []
    b = c2.try_receive(topic, 3000) or []
    r.check("publish-subscribe: both subscriptions see the message",
            [m.data for m in a] == [b"extra!"] and [m.data for m in b] == [b"extra!"],
            "%r / %r" % (a, b))
    for conn, ms in ((c1, a), (c2, b)):
        for m in ms:
            conn.complete(m.receipt_only())
    c1.configure([])
    c2.configure([])
    stats = c1.admin(CHANNEL_STATS, {"name": topic})
    r.eq("channel-stats publish-subscribe: kind", (stats.get("settings") or {}).get("kind"),
         "publish-subscribe")
    server = c1.admin(SERVER_STATS, {})
    r.check("server-stats: a JSON object", isinstance(server, dict), repr(server))
    r.eq("channel-delete -> {}", c1.admin(CHANNEL_DELETE, {"name": "p2p.browse"}), {})
    r.error("channel-stats after delete: not-found", c1, CHANNEL_STATS,
            enc_string(json.dumps({"name": "p2p.browse"})), CODE["not-found"])


def t_policies(r, ctx):
    """§6.5 dead letters, §13 replay-dead-letters / purge, §7 settlement, §5.1 durable names."""
    port, c1, c2 = ctx["port"], ctx["c1"], ctx["c2"]

    # abandon-policy dead-letter: abandon moves the message to <name>.dlq at once.
    ch, dlq = "p2p.dl", "p2p.dl.dlq"
    r.eq("channel-declare abandon-policy dead-letter -> {}",
         c1.admin(CHANNEL_DECLARE, {"name": ch, "settings": {"abandon-policy": "dead-letter"}}), {})
    c1.send_messages(ch, [Message(b"dead", AMQP, [("k", "v")])])
    got = c1.try_receive(ch, 0) or []
    r.eq("dead-letter: received 1", len(got), 1)
    if got:
        c1.abandon(got[0].receipt_only())
        r.eq("dead-letter: source channel empty after abandon", c1.try_receive(ch, 300), None)
        page = c1.admin(BROWSE, {"channel": dlq})
        r.eq("dead-letter: one message in <name>.dlq", len(page), 1)
        if page:
            md = page[0].meta()
            r.check("dead-letter: data, format and user metadata kept",
                    page[0].data == b"dead" and page[0].format == AMQP and
                    page[0].user_meta() == [("k", "v")], repr(page[0]))
            for key in ("witmq-dlq-reason", "witmq-dlq-source", "witmq-dlq-source-sequence",
                        "witmq-dlq-subscription", "witmq-dlq-attempts", "witmq-dlq-time"):
                r.check("dead-letter: carries %s" % key, key in md, repr(page[0].metadata))
            r.eq("dead-letter: witmq-dlq-source", md.get("witmq-dlq-source"), ch)
            r.eq("dead-letter: witmq-dlq-source-sequence", md.get("witmq-dlq-source-sequence"),
                 got[0].get("witmq-sequence"))
            r.eq("dead-letter: witmq-channel is the dead-letter channel",
                 md.get("witmq-channel"), dlq)
        stats = c1.admin(CHANNEL_STATS, {"name": dlq})
        r.eq("channel-stats of <name>.dlq: is-dead-letter", stats.get("is-dead-letter"), True)
        r.eq("replay-dead-letters -> {\"moved\": 1}",
             c1.admin(REPLAY_DEAD_LETTERS, {"channel": dlq}), {"moved": 1})
        back = c1.try_receive(ch, 3000) or []
        r.check("replay: message back on its source channel without witmq-dlq- entries",
                len(back) == 1 and back[0].data == b"dead" and back[0].user_meta() == [("k", "v")]
                and not any(k.startswith("witmq-dlq-") for k in back[0].meta_keys()), repr(back))
        for m in back:
            c1.complete(m.receipt_only())

    # max-deliveries: dead-lettered after that many failed attempts whatever the policy.
    ch = "p2p.maxdel"
    c1.admin(CHANNEL_DECLARE, {"name": ch, "settings": {"max-deliveries": 2,
                                                        "backoff-initial-ms": 0}})
    c1.send_messages(ch, [Message(b"twice")])
    for attempt in (1, 2):
        got = c1.try_receive(ch, 3000) or []
        r.check("max-deliveries 2: attempt %d delivered" % attempt,
                len(got) == 1 and got[0].get("witmq-attempt") == str(attempt), repr(got))
        for m in got:
            c1.abandon(m.receipt_only())
    r.eq("max-deliveries 2: no third delivery", c1.try_receive(ch, 500), None)
    page = c1.admin(BROWSE, {"channel": ch + ".dlq"})
    r.check("max-deliveries 2: dead-lettered with witmq-dlq-attempts 2",
            len(page) == 1 and page[0].get("witmq-dlq-attempts") == "2", repr(page))

    # purge settles every available message.
    ch = "p2p.purge"
    c1.send_messages(ch, [Message(b"1"), Message(b"2"), Message(b"3")])
    r.eq("purge -> {\"purged\": 3}", c1.admin(PURGE, {"channel": ch}), {"purged": 3})
    r.eq("purge: nothing left to receive", c1.try_receive(ch, 0), None)

    # settlement auto: settled as delivered, nothing stays in flight.
    ch = "p2p.auto"
    a = Conn(port, "auto")
    a.connect("")
    a.configure([ch], [("settlement", "auto")])
    a.send_messages(ch, [Message(b"a1"), Message(b"a2")])
    got = a.try_receive(ch, 0) or []
    r.eq("settlement auto: both received", [m.data for m in got], [b"a1", b"a2"])
    stats = a.admin(CHANNEL_STATS, {"name": ch})
    r.check("settlement auto: nothing in flight, nothing available",
            stats.get("in-flight") == 0 and stats.get("depth") == 0, repr(stats))
    a.close()

    # A named client's publish-subscribe subscription is durable; "" starts at latest.
    topic = "topic.durable"
    c1.admin(CHANNEL_DECLARE, {"name": topic, "settings": {"kind": "publish-subscribe"}})
    d = Conn(port, "durable")
    d.connect("durable-reader")
    d.configure([topic], [("start", "earliest")])
    c2.send_messages(topic, [Message(b"m1")])
    got = d.try_receive(topic, 3000) or []
    r.eq("durable: first connection reads m1", [m.data for m in got], [b"m1"])
    for m in got:
        d.complete(m.receipt_only())
    d.close()
    c2.send_messages(topic, [Message(b"m2")])
    d = Conn(port, "durable-again")
    d.connect("durable-reader")
    d.configure([topic])
    got = d.try_receive(topic, 3000) or []
    r.eq("durable: reconnecting under the same name resumes at m2", [m.data for m in got], [b"m2"])
    for m in got:
        d.complete(m.receipt_only())
    d.close()
    e = Conn(port, "ephemeral")
    e.connect("")
    r.eq("new subscription starts at latest: m1, m2 not seen", e.try_receive(topic, 0), None)
    c2.send_messages(topic, [Message(b"m3")])
    got = e.try_receive(topic, 3000) or []
    r.eq("new subscription: a message published after it is seen", [m.data for m in got], [b"m3"])
    e.close()


def t_malformed_kept(r, ctx):
    """§10: a malformed body is skipped and answered with an error; the connection stays."""
    port = ctx["port"]
    m = Conn(port, "malformed")
    m.connect("malformed")
    good_msg = enc_messages([Message(b"x")])
    cases = [
        ("unassigned type 0x50", 0x50, b"", 0, "unsupported"),
        ("unassigned type 0x0c", 0x0C, b"", 0, "unsupported"),
        ("unassigned type 0x28", 0x28, b"{}", 0, "unsupported"),
        ("reply type 0x81 sent as a request", 0x81, b"", 0, "unsupported"),
        ("error type 0xff sent as a request", 0xFF, enc_error_body(1, "x"), 0, "unsupported"),
        ("flags 0x01 on ping", PING, u64(1), 0x01, "invalid-argument"),
        ("flags 0x80 on send", SEND, enc_string("p2p.bad") + good_msg, 0x80, "invalid-argument"),
        ("ping body ends inside the u64", PING, b"\x00" * 7, 0, "invalid-argument"),
        ("ping body with a byte after the last field", PING, b"\x00" * 9, 0, "invalid-argument"),
        ("stream-stop with a non-empty body", STREAM_STOP, b"\x00", 0, "invalid-argument"),
        ("channel string length beyond the frame", SEND, u32(1000) + b"abc", 0,
         "invalid-argument"),
        ("send: body ends after the channel", SEND, enc_string("p2p.bad"), 0, "invalid-argument"),
        ("send: message list count that cannot fit", SEND,
         enc_string("p2p.bad") + u32(0xFFFFFFFF) + enc_message(Message()), 0, "invalid-argument"),
        ("send: data length beyond the frame", SEND,
         enc_string("p2p.bad") + u32(1) + u32(50) + b"ab", 0, "invalid-argument"),
        ("channel not UTF-8 (ff fe)", SEND, enc_string(b"\xff\xfe") + good_msg, 0,
         "invalid-argument"),
        ("channel with an overlong UTF-8 form (c0 af)", SEND, enc_string(b"ab\xc0\xaf") + good_msg,
         0, "invalid-argument"),
        ("metadata key with a surrogate (ed a0 80)", SEND, enc_string("p2p.bad") + u32(1) +
         enc_bytes(b"") + u8(RAW) + b"\x01" + u32(1) + enc_string(b"\xed\xa0\x80") +
         enc_string("v"), 0, "invalid-argument"),
        ("metadata value above U+10FFFF (f4 90 80 80)", SEND, enc_string("p2p.bad") + u32(1) +
         enc_bytes(b"") + u8(RAW) + b"\x01" + u32(1) + enc_string("k") +
         enc_string(b"\xf4\x90\x80\x80"), 0, "invalid-argument"),
        ("option tag 2", SEND, enc_string("p2p.bad") + u32(1) + enc_bytes(b"x") + u8(RAW) + b"\x02",
         0, "invalid-argument"),
        ("format 6", SEND, enc_string("p2p.bad") + u32(1) + enc_bytes(b"x") + b"\x06\x00", 0,
         "invalid-argument"),
        ("format 255 in complete-message", COMPLETE_MESSAGE, enc_bytes(b"") + b"\xff\x00", 0,
         "invalid-argument"),
        ("try-receive: timeout cut short", SUBSCRIBE_TRY_RECEIVE, enc_string("p2p.bad") + b"\x00\x00",
         0, "invalid-argument"),
        ("guest-configuration: extensions option missing", UPDATE_GUEST_CONFIGURATION,
         enc_list(["p2p.bad"], enc_string), 0, "invalid-argument"),
        ("guest-configuration: pair count that cannot fit", UPDATE_GUEST_CONFIGURATION,
         enc_list([], enc_string) + b"\x01" + u32(1000), 0, "invalid-argument"),
        ("admin JSON not UTF-8", CHANNEL_LIST, enc_string(b"{\xff}"), 0, "invalid-argument"),
        ("credit with a 2-byte body", CREDIT, b"\x00\x01", 0, "invalid-argument"),
    ]
    for label, ftype, body, flags, code in cases:
        rid = m.send(ftype, body, flags=flags)
        f = m.reply(rid)
        r.check("malformed (%s): error %s on its request id" % (label, code),
                f.type == ERROR and f.value[0] == CODE[code],
                "got type 0x%02x %r" % (f.type, f.value))
    r.eq("malformed frames: connection still usable (ping)", m.ping(123456), 123456)
    names = [c.get("name") for c in m.admin(CHANNEL_LIST, {}).get("channels", [])]
    r.check("malformed frames: no channel p2p.bad was created", "p2p.bad" not in names, repr(names))

    # A frame that arrives in pieces is simply waited for.
    whole = frame(PING, m.fresh_id(), u64(77))
    for i in range(len(whole)):
        m.write(whole[i:i + 1])
        time.sleep(0.005)
    f = m.reply(struct.unpack(">I", whole[6:10])[0])
    r.check("a frame sent byte by byte is answered", f.type == PING | OK and f.value == 77, repr(f))
    m.close()


def expect_goaway(r, label, conn, code, goaway_id):
    frames = conn.read_to_close()
    g = [f for f in frames if f.type == GOAWAY]
    r.check("%s: goaway %s then close" % (label, code_name(code)),
            len(g) == 1 and g[0].value[0] == code and frames[-1] is g[0],
            repr(frames))
    if g:
        r.eq("%s: goaway request id" % label, g[0].id, goaway_id)
    return frames


def t_malformed_closed(r, ctx):
    """§10: framing lost, or no client yet: goaway, then close; other connections carry on."""
    port, c1 = ctx["port"], ctx["c1"]

    a = Conn(port, "short-length")
    a.connect("")
    a.write(u32(5) + b"\x0b\x00\x00\x00\x00")
    expect_goaway(r, "length field 5 (below 6)", a, CODE["invalid-argument"], 0)
    a.close()

    a = Conn(port, "zero-length")
    a.write(u32(0))
    expect_goaway(r, "length field 0 before connect", a, CODE["invalid-argument"], 0)
    a.close()

    a = Conn(port, "huge-length")
    a.connect("")
    a.write(u32(a.limits["max-frame-bytes"] + 1))  # only the 4 length bytes
    expect_goaway(r, "length field max-frame-bytes + 1", a, CODE["resource-exhausted"], 0)
    a.close()

    a = Conn(port, "no-connect")
    a.send(PING, u64(1), rid=77)
    expect_goaway(r, "first frame is not connect", a, CODE["failed-precondition"], 77)
    a.close()

    a = Conn(port, "bad-version")
    cid = a.send(CONNECT, enc_list([2], u16) + enc_string("") + b"\x00", rid=5)
    a.send(PING, u64(1), rid=6)  # pipelined after a failing connect: discarded unanswered
    frames = expect_goaway(r, "connect with no common version", a, CODE["unsupported"], cid)
    r.check("failed connect: pipelined frame discarded unanswered",
            all(f.id != 6 for f in frames), repr(frames))
    a.close()

    a = Conn(port, "17-versions")
    cid = a.send(CONNECT, enc_list([1] * 17, u16) + enc_string("") + b"\x00")
    expect_goaway(r, "connect with 17 versions", a, CODE["invalid-argument"], cid)
    a.close()

    a = Conn(port, "bad-name")
    cid = a.send(CONNECT, enc_list([1], u16) + enc_string(b"\xc3") + b"\x00")
    expect_goaway(r, "connect with a name that is not UTF-8", a, CODE["invalid-argument"], cid)
    a.close()

    a = Conn(port, "connect-trailing")
    cid = a.send(CONNECT, enc_list([1], u16) + enc_string("") + b"\x00\x00")
    expect_goaway(r, "connect with a byte after the last field", a, CODE["invalid-argument"], cid)
    a.close()

    # A connection that closes in the middle of a frame loses that frame and nothing else.
    a = Conn(port, "half-frame")
    a.connect("")
    whole = frame(SEND, a.fresh_id(), enc_string("p2p.half") + enc_messages([Message(b"x")]))
    a.write(whole[:len(whole) // 2])
    a.close()
    time.sleep(0.1)
    names = [c.get("name") for c in c1.admin(CHANNEL_LIST, {}).get("channels", [])]
    r.check("half a frame then close: the frame is lost (no channel p2p.half)",
            "p2p.half" not in names, repr(names))
    r.eq("other connections unaffected (ping on c1)", c1.ping(2024), 2024)


def t_settled_again(r, ctx):
    """Settling an already completed message's receipt (the doc names expired/moved-on leases)."""
    c1 = ctx["c1"]
    receipt = ctx.get("settled_receipt")
    if receipt is None:
        return
    f = c1.call(COMPLETE_MESSAGE, enc_message(receipt))
    r.check("complete with the receipt of a completed message: stale-receipt",
            f.type == ERROR and f.value[0] == CODE["stale-receipt"], repr(f))


def t_shutdown(r, ctx):
    """§6.3, §10: shutdown answers a waiting subscribe-receive with unavailable, then goaway 0."""
    port, daemon = ctx["port"], ctx["daemon"]
    w = Conn(port, "waiter")
    w.connect("")
    recv_id = w.send(SUBSCRIBE_RECEIVE, enc_string("p2p.wait"))
    r.eq("shutdown: waiter is waiting (ping answered)", w.ping(5), 5)
    r.check("shutdown: subscribe-receive still pending", not w.pending(recv_id))
    daemon.proc.send_signal(signal.SIGTERM)
    frames = w.read_to_close()
    kinds = [(f.type, f.id, f.value[0] if isinstance(f.value, tuple) else f.value) for f in frames]
    r.check("shutdown: waiting subscribe-receive -> error unavailable, then goaway unavailable id 0",
            kinds == [(ERROR, recv_id, CODE["unavailable"]), (GOAWAY, 0, CODE["unavailable"])],
            repr(frames))
    c1frames = ctx["c1"].read_to_close()
    r.check("shutdown: idle connection gets goaway unavailable id 0, then close",
            [(f.type, f.id, f.value[0]) for f in c1frames] == [(GOAWAY, 0, CODE["unavailable"])],
            repr(c1frames))
    c2frames = ctx["c2"].read_to_close()
    r.check("shutdown: second idle connection gets goaway unavailable id 0, then close",
            [(f.type, f.id, f.value[0]) for f in c2frames] == [(GOAWAY, 0, CODE["unavailable"])],
            repr(c2frames))
    for c in (w, ctx["c1"], ctx["c2"]):
        c.close()
    try:
        code = daemon.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        code = "still running after 15 s"
    r.eq("witmqd exits 0 after SIGTERM", code, 0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--witmqd", required=True, help="path of the witmqd binary")
    args = parser.parse_args()

    r = Results()
    r.section("§14 worked examples", t_examples)
    tmpdir = tempfile.mkdtemp(prefix="witmq-python-client-")
    daemon = None
    conns = []
    try:
        daemon = Daemon(args.witmqd, tmpdir)
        host, port = daemon.wait_listening(30.0)
        r.eq("witmqd prints 'listening on 127.0.0.1:PORT'", host, "127.0.0.1")
        ctx = {"port": port, "daemon": daemon}
        for name, fn in (("§5 connect", t_connect),
                         ("§6.1-6.2, §6.5 send, try-receive, complete, abandon", t_send_receive),
                         ("§6.5 receipts", t_receipts),
                         ("§6.3, §12 waiting receives and pipelining", t_waiting),
                         ("§7 streaming", t_streaming),
                         ("§8, §11 ping, channel names, limits", t_misc),
                         ("§13 admin extensions", t_admin),
                         ("§6.5, §13 dead letters, purge, settlement, durable names",
                          t_policies),
                         ("§10 malformed input, connection kept", t_malformed_kept),
                         ("§10 malformed input, connection closed", t_malformed_closed),
                         ("§6.5 settling a settled message", t_settled_again)):
            r.section(name, fn, ctx)
            conns = [c for c in (ctx.get("c1"), ctx.get("c2")) if c]
        r.section("§6.3, §10 shutdown", t_shutdown, ctx)
    except Exception as e:
        r.check("test harness", False, "%s: %s" % (type(e).__name__, e))
        traceback.print_exc(file=sys.stdout)
    finally:
        for c in conns:
            c.close()
        if daemon is not None:
            if daemon.proc.poll() is None:
                daemon.kill()
                r.check("witmqd stopped", False, "had to be killed")
            else:
                daemon.kill()
            if r.failed:
                tail = daemon.stderr_tail()
                if tail:
                    print("witmqd stderr (last lines):\n" + tail)
        shutil.rmtree(tmpdir, ignore_errors=True)
    print("%d passed, %d failed" % (r.passed, r.failed), flush=True)
    return 0 if r.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
