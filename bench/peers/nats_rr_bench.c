/* Request-reply on nats-server in the shape of `witmq-bench --mode request-reply --pipeline 1`
 * (docs/PERFORMANCE.md): --requesters connections, each one thread sending a request and waiting
 * for its reply before the next (natsConnection_Request, NATS's inbox-based request-reply);
 * --responders connections subscribed to the subject in one queue group (competing responders),
 * each answering with the request's data. Build with the system compiler against Debian's
 * libnats-dev:
 *
 *   cc -O2 -o nats_rr_bench nats_rr_bench.c -lnats -lpthread
 *   nats_rr_bench [--url nats://127.0.0.1:4222] [--requesters N] [--responders M]
 *                 [--requests TOTAL] [--size BYTES]
 *
 * The result is one line:
 *   RESULT round_trips=N seconds=S round_trips_per_s=R p50_us=A p99_us=B p999_us=C failures=F
 * Exit code 0 when every request was answered, 1 otherwise, 2 on a usage error.
 */
#include <nats/nats.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_CONNS 256

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static void die(const char *what, natsStatus s) {
  fprintf(stderr, "nats_rr_bench: %s: %s\n", what, natsStatus_GetText(s));
  exit(1);
}

static void on_request(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure) {
  (void)sub;
  (void)closure;
  natsConnection_Publish(nc, natsMsg_GetReply(msg), natsMsg_GetData(msg),
                         natsMsg_GetDataLength(msg));
  natsMsg_Destroy(msg);
}

typedef struct {
  natsConnection *nc;
  int64_t count;
  int size;
  uint64_t *lat;
  int64_t done, failures;
  uint64_t last_ns;
} requester;

static void *run_requester(void *arg) {
  requester *r = (requester *)arg;
  char *data = calloc(1, (size_t)r->size + 1);
  for (int64_t i = 0; i < r->count; i++) {
    natsMsg *reply = NULL;
    const uint64_t start = now_ns();
    natsStatus s = natsConnection_Request(&reply, r->nc, "rr.bench", data, r->size, 30000);
    if (s != NATS_OK) {
      r->failures++;
      continue;
    }
    r->last_ns = now_ns();
    r->lat[r->done++] = r->last_ns - start;
    natsMsg_Destroy(reply);
  }
  free(data);
  return NULL;
}

int main(int argc, char **argv) {
  const char *url = "nats://127.0.0.1:4222";
  int requesters = 1, responders = 1, size = 128;
  int64_t requests = 20000;
  for (int i = 1; i < argc; i += 2) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v) break;
    if (!strcmp(a, "--url")) url = v;
    else if (!strcmp(a, "--requesters")) requesters = atoi(v);
    else if (!strcmp(a, "--responders")) responders = atoi(v);
    else if (!strcmp(a, "--requests")) requests = atoll(v);
    else if (!strcmp(a, "--size")) size = atoi(v);
    else {
      fprintf(stderr, "nats_rr_bench: unknown option %s\n", a);
      return 2;
    }
  }
  if (requesters < 1 || requesters > MAX_CONNS || responders < 1 || responders > MAX_CONNS ||
      requests < 1 || size < 0) {
    fprintf(stderr, "nats_rr_bench: --requesters and --responders 1..%d, --requests >= 1\n",
            MAX_CONNS);
    return 2;
  }
  natsConnection *resp[MAX_CONNS];
  natsSubscription *subs[MAX_CONNS];
  natsStatus s;
  for (int i = 0; i < responders; i++) {
    if ((s = natsConnection_ConnectTo(&resp[i], url)) != NATS_OK) die("connect", s);
    s = natsConnection_QueueSubscribe(&subs[i], resp[i], "rr.bench", "responders", on_request,
                                      NULL);
    if (s != NATS_OK) die("queue-subscribe", s);
    if ((s = natsConnection_Flush(resp[i])) != NATS_OK) die("flush", s);
  }
  requester req[MAX_CONNS];
  pthread_t threads[MAX_CONNS];
  for (int i = 0; i < requesters; i++) {
    memset(&req[i], 0, sizeof req[i]);
    if ((s = natsConnection_ConnectTo(&req[i].nc, url)) != NATS_OK) die("connect", s);
    req[i].count = requests / requesters + (i < requests % requesters);
    req[i].size = size;
    req[i].lat = calloc((size_t)req[i].count + 1, sizeof(uint64_t));
  }
  const uint64_t start = now_ns();
  for (int i = 0; i < requesters; i++) pthread_create(&threads[i], NULL, run_requester, &req[i]);
  int64_t done = 0, failures = 0;
  uint64_t last = start;
  for (int i = 0; i < requesters; i++) {
    pthread_join(threads[i], NULL);
    done += req[i].done;
    failures += req[i].failures;
    if (req[i].last_ns > last) last = req[i].last_ns;
  }
  uint64_t *all = calloc((size_t)done + 1, sizeof(uint64_t));
  int64_t k = 0;
  for (int i = 0; i < requesters; i++) {
    memcpy(all + k, req[i].lat, (size_t)req[i].done * sizeof(uint64_t));
    k += req[i].done;
  }
  qsort(all, (size_t)done, sizeof(uint64_t), cmp_u64);
#define PCT(p) (done ? (double)all[(int64_t)((p) / 100.0 * (double)done) < done                    \
                                       ? (int64_t)((p) / 100.0 * (double)done)                       \
                                       : done - 1] / 1e3                                            \
                     : 0.0)
  const double seconds = (double)(last - start) / 1e9;
  printf("RESULT round_trips=%lld seconds=%.3f round_trips_per_s=%.0f p50_us=%.1f p99_us=%.1f "
         "p999_us=%.1f failures=%lld\n",
         (long long)done, seconds, seconds > 0 ? (double)done / seconds : 0.0, PCT(50), PCT(99),
         PCT(99.9), (long long)failures);
  for (int i = 0; i < requesters; i++) {
    natsConnection_Destroy(req[i].nc);
    free(req[i].lat);
  }
  for (int i = 0; i < responders; i++) {
    natsSubscription_Destroy(subs[i]);
    natsConnection_Destroy(resp[i]);
  }
  free(all);
  nats_Close();
  return failures == 0 ? 0 : 1;
}
