#!/usr/bin/env python3
"""Throughput of the Python client: messages per second for send + receive + complete.

A producer connection sends N messages in batches (several batches in flight), while a consumer
connection streams them under credit and completes each one (its completes pipelined, a bounded
number in flight). The clock runs from the first send to the last complete-message-ok; the run is
bounded by --messages and --timeout.

Usage: bench.py (--witmqd PATH | --server HOST:PORT) [--messages N] [--size BYTES] [--batch N]
                [--credit N] [--window N] [--durability sync|group|none]

With --witmqd it starts that daemon on 127.0.0.1 (an ephemeral port, a temporary data directory)
and stops it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from typing import List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import witmq  # noqa: E402

CHANNEL = "bench.python"


async def produce(client: witmq.Client, n: int, size: int, batch: int, window: int) -> None:
    payload = b"x" * size
    in_flight = asyncio.Semaphore(window)

    async def one(count: int) -> None:
        try:
            await client.send(CHANNEL, [witmq.Message(payload)] * count)
        finally:
            in_flight.release()
    tasks: List["asyncio.Task[None]"] = []
    for start in range(0, n, batch):
        await in_flight.acquire()
        tasks.append(asyncio.ensure_future(one(min(batch, n - start))))
    await asyncio.gather(*tasks)


async def consume(client: witmq.Client, n: int, credit: int, window: int) -> None:
    in_flight = asyncio.Semaphore(window)
    tasks: List["asyncio.Task[None]"] = []

    async def complete(m: witmq.Message) -> None:
        try:
            await client.complete_message(m)
        finally:
            in_flight.release()
    taken = 0
    async with client.stream(credit) as stream:
        async for m in stream:
            await in_flight.acquire()
            tasks.append(asyncio.ensure_future(complete(m)))
            taken += 1
            if taken == n:
                break
    await asyncio.gather(*tasks)


async def run(address: str, args: argparse.Namespace) -> "tuple[float, float]":
    async with await witmq.connect(address) as producer, \
            await witmq.connect(address, name="bench-consumer") as consumer:
        await producer.channel_declare(CHANNEL, {"durability": args.durability})
        await consumer.update_guest_configuration([CHANNEL], {"batch-size": str(args.batch)})
        start, cpu = time.monotonic(), time.process_time()
        await asyncio.gather(produce(producer, args.messages, args.size, args.batch, args.window),
                             consume(consumer, args.messages, args.credit, args.window * 64))
        elapsed, cpu = time.monotonic() - start, time.process_time() - cpu
        stats = await producer.channel_stats(CHANNEL)
        if stats["completes-total"] != args.messages:
            raise SystemExit("completes-total %s, expected %d" % (stats["completes-total"],
                                                                  args.messages))
        return elapsed, cpu


def start_daemon(binary: str, tmp: str) -> "tuple[subprocess.Popen[bytes], str]":
    proc = subprocess.Popen([binary, "--listen", "127.0.0.1:0", "--http-listen", "",
                             "--data-dir", os.path.join(tmp, "data"), "--log-level", "warn"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.decode()
        if line.startswith("listening on "):
            return proc, line[len("listening on "):].strip()
    raise SystemExit("witmqd exited before listening (code %s)" % proc.wait())


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--witmqd", help="start this witmqd for the run")
    where.add_argument("--server", help="HOST:PORT of a running witmqd")
    p.add_argument("--messages", type=int, default=50000)
    p.add_argument("--size", type=int, default=100, help="data bytes per message")
    p.add_argument("--batch", type=int, default=100, help="messages per send and per deliver")
    p.add_argument("--credit", type=int, default=1000, help="the stream's credit")
    p.add_argument("--window", type=int, default=8, help="sends in flight")
    p.add_argument("--durability", default="group", choices=["sync", "group", "none"])
    p.add_argument("--timeout", type=float, default=600.0, help="seconds before giving up")
    args = p.parse_args(argv)
    if not 1 <= args.messages <= 10_000_000:
        p.error("--messages must be 1..10000000")
    proc = None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            if args.witmqd:
                proc, address = start_daemon(args.witmqd, tmp)
            else:
                address = args.server
            elapsed, cpu = asyncio.run(asyncio.wait_for(run(address, args), args.timeout))
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)
    # The client's CPU time (both connections share one process and one thread) says what one
    # core running the client reaches, whatever else the machine is doing.
    print("%d messages of %d bytes, send + stream + complete: %.2f s, %.0f msgs/s; client CPU "
          "%.2f s, %.1f us/msg, %.0f msgs/s per client core (batch %d, credit %d, durability %s, "
          "Python %s)"
          % (args.messages, args.size, elapsed, args.messages / elapsed, cpu,
             cpu * 1e6 / args.messages, args.messages / cpu, args.batch, args.credit,
             args.durability, sys.version.split()[0]))


if __name__ == "__main__":
    main()
