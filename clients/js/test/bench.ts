// A small bounded benchmark of the client: one producer sends N messages in batches while one
// consumer streams them with credit and completes each one; the figure is messages per second
// from the first send to the last complete-ok. It starts its own witmqd (WITMQD, as the tests)
// unless --server HOST:PORT is given.
//
//   node dist-test/bench.js [--messages 50000] [--size 64] [--batch 100] [--credit 1000]
//                           [--durability group] [--consume stream|receive] [--server HOST:PORT]
//
// --consume receive takes the messages with subscribe-receive (batch-size = --credit) instead of
// a stream.

import { Client, type Message } from "witmq";

import { Daemon, uniqueChannel } from "./daemon.js";

function option(name: string, fallback: string): string {
  const at = process.argv.indexOf(`--${name}`);
  return at >= 0 && at + 1 < process.argv.length ? process.argv[at + 1]! : fallback;
}

const total = Number(option("messages", "50000"));
const size = Number(option("size", "64"));
const batch = Number(option("batch", "100"));
const credit = Number(option("credit", "1000"));
const durability = option("durability", "group");
const serverOption = option("server", "");
const consume = option("consume", "stream");
if (![total, size, batch, credit].every((n) => Number.isInteger(n) && n > 0) || total > 10_000_000) {
  console.error("bench: --messages (1..10000000), --size, --batch and --credit take positive integers");
  process.exit(2);
}

const daemon = serverOption === "" ? await Daemon.start() : null;
const servers = [serverOption === "" ? daemon!.address : serverOption];
try {
  const producer = await Client.connect({ servers });
  const consumer = await Client.connect({ servers });
  const channel = uniqueChannel("bench");
  await producer.channelDeclare(channel, { durability: durability as "group" });
  await consumer.updateGuestConfiguration([channel], { "batch-size": String(Math.min(credit, 10000)) });
  const stream = consume === "stream" ? await consumer.stream({ credit }) : null;

  const payload = new Uint8Array(size).fill(0x61);
  const started = process.hrtime.bigint();
  const cpuBefore = process.cpuUsage();
  // The producer keeps up to 8 batches in flight.
  const produce = (async () => {
    const inFlight = new Set<Promise<void>>();
    for (let sent = 0; sent < total; ) {
      const n = Math.min(batch, total - sent);
      const p: Promise<void> = producer.send(channel, Array.from({ length: n }, () => payload)).finally(() => inFlight.delete(p));
      inFlight.add(p);
      sent += n;
      if (inFlight.size >= 8) await Promise.race(inFlight);
    }
    await Promise.all(inFlight);
  })();

  // Completes are pipelined: the loop does not wait for each complete-ok.
  const completes: Array<Promise<void>> = [];
  let received = 0;
  if (stream !== null) {
    for await (const m of stream as AsyncIterable<Message>) {
      completes.push(consumer.complete(m));
      if (completes.length >= credit) await Promise.all(completes.splice(0));
      if (++received === total) break;
    }
  } else {
    while (received < total) {
      const batch = await consumer.receive(channel);
      received += batch.length;
      for (const m of batch) completes.push(consumer.complete(m));
      if (completes.length >= credit) await Promise.all(completes.splice(0));
    }
  }
  await Promise.all(completes);
  await produce;
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const cpu = process.cpuUsage(cpuBefore);
  // The client's own CPU time (both connections, this process): what the client costs per
  // message, apart from the server and the machine's load.
  const clientCpuSeconds = (cpu.user + cpu.system) / 1e6;
  console.log(
    JSON.stringify({
      messages: total,
      size,
      batch,
      credit,
      durability,
      seconds: Number(seconds.toFixed(3)),
      "msgs-per-second": Math.round(total / seconds),
      "client-cpu-seconds": Number(clientCpuSeconds.toFixed(3)),
      "msgs-per-client-cpu-second": Math.round(total / clientCpuSeconds),
    }),
  );
  producer.close();
  consumer.close();
} finally {
  await daemon?.stop();
}
