/* A load generator for nats-server in the shape of witmq-bench (bench/peers/run.sh builds it
 * with the system compiler against Debian's libnats-dev):
 *
 *   core: 1 publisher, --subs subscriber connections on one subject; each subscriber gets every
 *         message (core NATS publishes are not confirmed, so the publisher is not held back).
 *   js:   1 producer publishing asynchronously to a JetStream file stream with at most --window
 *         unconfirmed publishes; --subs consumers, each on its own connection pulling batches of
 *         --fetch from its own durable pull consumer and acknowledging each message. With one
 *         consumer the stream is a work queue; with more, a message goes once every consumer
 *         has acknowledged it (interest retention), so each gets every message.
 *
 * Each message carries its send time (CLOCK_MONOTONIC, ns) in its first 8 bytes; latency is from
 * that time to the consumer having the message. The result is one line:
 *   RESULT produced=N consumed=N seconds=S msgs_per_s=R produced_per_s=R p50_ms=A p99_ms=B
 *          p999_ms=C dropped=D ok=0|1
 * (consumed: by all subscribers together; seconds: from the first publish to the last receipt;
 * ok=1: every subscriber got every message). Exit code 0 when ok, 1 otherwise, 2 on a usage
 * error; a consumer that makes no progress for --timeout seconds ends the run.
 */
#include <nats/nats.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_SUBS 64

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* One receiver: its latencies (one slot per expected message) and its count. */
typedef struct {
  uint64_t *lat;
  int64_t capacity;
  volatile int64_t received; /* written by its own thread only */
  volatile uint64_t last_ns;
} receiver;

static void record(receiver *r, const char *data, int len) {
  uint64_t sent = 0, t = now_ns();
  if (len >= 8) memcpy(&sent, data, 8);
  if (r->received < r->capacity) r->lat[r->received] = t > sent ? t - sent : 0;
  r->last_ns = t;
  __atomic_add_fetch(&r->received, 1, __ATOMIC_RELAXED);
}

static void on_core_msg(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure) {
  (void)nc;
  (void)sub;
  record((receiver *)closure, natsMsg_GetData(msg), natsMsg_GetDataLength(msg));
  natsMsg_Destroy(msg);
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static double pct_ms(const uint64_t *v, int64_t n, double p) {
  if (n == 0) return 0;
  int64_t i = (int64_t)(p / 100.0 * (double)n);
  if (i >= n) i = n - 1;
  return (double)v[i] / 1e6;
}

static void die(const char *what, natsStatus s) {
  fprintf(stderr, "nats_bench: %s: %s\n", what, natsStatus_GetText(s));
  nats_PrintLastErrorStack(stderr);
  exit(1);
}

/* The js consumer's thread. */
typedef struct {
  natsSubscription *sub;
  receiver *r;
  int64_t expected;
  int fetch;
  uint64_t stall_ns;
  natsStatus error;
} js_consumer;

static void *js_consume(void *arg) {
  js_consumer *c = (js_consumer *)arg;
  uint64_t last_progress = now_ns();
  while (c->r->received < c->expected) {
    natsMsgList list = {0};
    natsStatus s = natsSubscription_Fetch(&list, c->sub, c->fetch, 500, NULL);
    if (s == NATS_TIMEOUT) {
      if (now_ns() - last_progress > c->stall_ns) break;
      continue;
    }
    if (s != NATS_OK) {
      c->error = s;
      break;
    }
    for (int i = 0; i < list.Count; i++) {
      record(c->r, natsMsg_GetData(list.Msgs[i]), natsMsg_GetDataLength(list.Msgs[i]));
      s = natsMsg_Ack(list.Msgs[i], NULL);
      if (s != NATS_OK && c->error == NATS_OK) c->error = s;
    }
    natsMsgList_Destroy(&list);
    last_progress = now_ns();
  }
  return NULL;
}

int main(int argc, char **argv) {
  const char *url = "nats://127.0.0.1:4222", *mode = "core";
  int64_t messages = 100000;
  int size = 128, subs = 1, window = 1000, fetch = 1000, timeout_s = 60;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v) {
      fprintf(stderr, "nats_bench: %s needs a value\n", a);
      return 2;
    }
    if (!strcmp(a, "--url"))
      url = v;
    else if (!strcmp(a, "--mode"))
      mode = v;
    else if (!strcmp(a, "--messages"))
      messages = atoll(v);
    else if (!strcmp(a, "--size"))
      size = atoi(v);
    else if (!strcmp(a, "--subs"))
      subs = atoi(v);
    else if (!strcmp(a, "--window"))
      window = atoi(v);
    else if (!strcmp(a, "--fetch"))
      fetch = atoi(v);
    else if (!strcmp(a, "--timeout"))
      timeout_s = atoi(v);
    else {
      fprintf(stderr, "nats_bench: unknown option %s\n", a);
      return 2;
    }
    i++;
  }
  const int js = !strcmp(mode, "js");
  if ((!js && strcmp(mode, "core")) || messages < 1 || size < 8 || subs < 1 || subs > MAX_SUBS ||
      window < 1 || fetch < 1 || timeout_s < 1) {
    fprintf(stderr,
            "nats_bench: --mode core|js, --messages >= 1, --size >= 8, --subs 1..%d, "
            "--window >= 1, --fetch >= 1, --timeout >= 1\n",
            MAX_SUBS);
    return 2;
  }
  const uint64_t stall_ns = (uint64_t)timeout_s * 1000000000ull;

  natsStatus s;
  natsConnection *pub = NULL, *subc[MAX_SUBS] = {0};
  natsSubscription *sub[MAX_SUBS] = {0};
  receiver rcv[MAX_SUBS];
  memset(rcv, 0, sizeof rcv);
  for (int i = 0; i < subs; i++) {
    rcv[i].capacity = messages;
    rcv[i].lat = calloc((size_t)messages, sizeof(uint64_t));
    if (!rcv[i].lat) die("calloc", NATS_NO_MEMORY);
  }
  if ((s = natsConnection_ConnectTo(&pub, url)) != NATS_OK) die("connect", s);

  jsCtx *jsx = NULL, *cjs[MAX_SUBS] = {0};
  js_consumer jc[MAX_SUBS];
  memset(jc, 0, sizeof jc);
  pthread_t jt[MAX_SUBS];
  if (js) {
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.PublishAsync.MaxPending = window;
    jo.PublishAsync.StallWait = (int64_t)timeout_s * 1000; /* how long a full window may block */
    if ((s = natsConnection_JetStream(&jsx, pub, &jo)) != NATS_OK) die("jetstream", s);
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    const char *subjects[] = {"bench.js"};
    sc.Name = "BENCH";
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    /* One subscriber: a work queue. More: each has its own durable consumer and a message goes
     * once all of them have acknowledged it. */
    sc.Retention = subs == 1 ? js_WorkQueuePolicy : js_InterestPolicy;
    sc.Storage = js_FileStorage;
    jsErrCode jerr = 0;
    if ((s = js_AddStream(NULL, jsx, &sc, NULL, &jerr)) != NATS_OK) die("add stream", s);
    /* Each consumer on its own connection, as witmq-bench's, all subscribed before publishing. */
    for (int i = 0; i < subs; i++) {
      if ((s = natsConnection_ConnectTo(&subc[i], url)) != NATS_OK) die("connect consumer", s);
      if ((s = natsConnection_JetStream(&cjs[i], subc[i], NULL)) != NATS_OK) die("jetstream", s);
      jsSubOptions so;
      jsSubOptions_Init(&so);
      so.Config.AckPolicy = js_AckExplicit;
      so.Config.MaxAckPending = 100000;
      char durable[32];
      snprintf(durable, sizeof durable, "worker-%d", i);
      if ((s = js_PullSubscribe(&sub[i], cjs[i], "bench.js", durable, NULL, &so, &jerr)) !=
          NATS_OK) {
        die("pull subscribe", s);
      }
      jc[i].sub = sub[i];
      jc[i].r = &rcv[i];
      jc[i].expected = messages;
      jc[i].fetch = fetch;
      jc[i].stall_ns = stall_ns;
    }
    for (int i = 0; i < subs; i++) pthread_create(&jt[i], NULL, js_consume, &jc[i]);
  } else {
    for (int i = 0; i < subs; i++) {
      if ((s = natsConnection_ConnectTo(&subc[i], url)) != NATS_OK) die("connect subscriber", s);
      if ((s = natsConnection_Subscribe(&sub[i], subc[i], "bench.core", on_core_msg, &rcv[i])) !=
          NATS_OK) {
        die("subscribe", s);
      }
      /* No client-side limit: a subscriber that falls behind queues, it does not drop. */
      if ((s = natsSubscription_SetPendingLimits(sub[i], -1, -1)) != NATS_OK) {
        die("pending limits", s);
      }
      if ((s = natsConnection_Flush(subc[i])) != NATS_OK) die("flush subscriber", s);
    }
  }

  char *data = calloc(1, (size_t)size);
  memset(data, 'x', (size_t)size);
  const uint64_t start = now_ns();
  for (int64_t k = 0; k < messages; k++) {
    uint64_t t = now_ns();
    memcpy(data, &t, 8);
    if (js) {
      s = js_PublishAsync(jsx, "bench.js", data, size, NULL);
    } else {
      s = natsConnection_Publish(pub, "bench.core", data, size);
    }
    if (s != NATS_OK) die("publish", s);
  }
  if (js) {
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = (int64_t)timeout_s * 1000;
    if ((s = js_PublishAsyncComplete(jsx, &po)) != NATS_OK) die("publish complete", s);
    natsMsgList pending = {0};
    if (js_PublishAsyncGetPendingList(&pending, jsx) == NATS_OK) {
      fprintf(stderr, "nats_bench: %d publishes unconfirmed\n", pending.Count);
      natsMsgList_Destroy(&pending);
    }
  } else if ((s = natsConnection_FlushTimeout(pub, (int64_t)timeout_s * 1000)) != NATS_OK) {
    die("flush publisher", s);
  }
  const uint64_t produced_ns = now_ns();

  /* Wait for the receivers: every message, or no progress for --timeout. */
  if (js) {
    for (int i = 0; i < subs; i++) {
      pthread_join(jt[i], NULL);
      if (jc[i].error != NATS_OK) {
        fprintf(stderr, "nats_bench: consumer %d: %s\n", i, natsStatus_GetText(jc[i].error));
      }
    }
  } else {
    int64_t last_total = -1;
    uint64_t last_change = now_ns();
    for (;;) {
      int64_t total = 0;
      for (int i = 0; i < subs; i++) total += rcv[i].received;
      if (total >= messages * subs) break;
      if (total != last_total) {
        last_total = total;
        last_change = now_ns();
      } else if (now_ns() - last_change > stall_ns) {
        break;
      }
      nats_Sleep(5);
    }
  }

  int64_t consumed = 0, dropped = 0;
  uint64_t last = start;
  for (int i = 0; i < subs; i++) {
    if (!js && sub[i]) {
      int64_t d = 0;
      natsSubscription_GetDropped(sub[i], &d);
      dropped += d;
    }
  }
  for (int i = 0; i < subs; i++) natsSubscription_Unsubscribe(sub[i]);
  for (int i = 0; i < subs; i++) {
    consumed += rcv[i].received;
    if (rcv[i].last_ns > last) last = rcv[i].last_ns;
  }
  uint64_t *all = malloc(sizeof(uint64_t) * (size_t)(consumed > 0 ? consumed : 1));
  int64_t n = 0;
  for (int i = 0; i < subs; i++) {
    int64_t c = rcv[i].received < rcv[i].capacity ? rcv[i].received : rcv[i].capacity;
    memcpy(all + n, rcv[i].lat, sizeof(uint64_t) * (size_t)c);
    n += c;
  }
  qsort(all, (size_t)n, sizeof(uint64_t), cmp_u64);
  const double seconds = (double)(last - start) / 1e9;
  printf(
      "RESULT produced=%lld consumed=%lld seconds=%.3f msgs_per_s=%.0f produced_per_s=%.0f "
      "p50_ms=%.3f p99_ms=%.3f p999_ms=%.3f dropped=%lld ok=%d\n",
      (long long)messages, (long long)consumed, seconds, seconds > 0 ? consumed / seconds : 0,
      messages / ((double)(produced_ns - start) / 1e9), pct_ms(all, n, 50), pct_ms(all, n, 99),
      pct_ms(all, n, 99.9), (long long)dropped, consumed >= messages * subs && dropped == 0);
  fflush(stdout);

  if (js) {
    jsErrCode jerr = 0;
    js_DeleteStream(jsx, "BENCH", NULL, &jerr);
    jsCtx_Destroy(jsx);
    for (int i = 0; i < subs; i++) jsCtx_Destroy(cjs[i]);
  }
  for (int i = 0; i < subs; i++) {
    natsSubscription_Destroy(sub[i]);
    natsConnection_Destroy(subc[i]);
    free(rcv[i].lat);
  }
  natsConnection_Destroy(pub);
  free(all);
  free(data);
  nats_Close();
  return consumed >= messages * subs && dropped == 0 ? 0 : 1;
}
