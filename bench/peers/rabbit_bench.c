/* A load generator for rabbitmq-server in the shape of witmq-bench (bench/peers/run.sh builds
 * it with the system compiler against Debian's librabbitmq-dev): 1 producer with publisher
 * confirms and at most --window unconfirmed publishes, to a fanout exchange bound to --subs
 * queues (durable, --queue-type quorum by default); one consumer connection per queue with a
 * prefetch of --prefetch, acknowledging each message (basic.ack, not multiple). With --subs 1
 * that is point-to-point; with more, each queue gets every message (publish-subscribe).
 *
 * Each message carries its send time (CLOCK_MONOTONIC, ns) in its first 8 bytes; latency is from
 * that time to the consumer having the message. The result is one line:
 *   RESULT produced=N consumed=N seconds=S msgs_per_s=R produced_per_s=R p50_ms=A p99_ms=B
 *          p999_ms=C dropped=0 ok=0|1
 * (consumed: by all consumers together; seconds: from the first publish to the last receipt;
 * ok=1: every publish confirmed and every queue's consumer got every message). Exit code 0 when
 * ok, 1 otherwise, 2 on a usage error; nothing moving for --timeout seconds ends the run.
 */
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#define MAX_SUBS 64

static const char *host = "127.0.0.1";
static int port = 5672;
static const char *exchange = "witmq-bench.fanout";

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void check_reply(amqp_rpc_reply_t r, const char *what) {
  if (r.reply_type == AMQP_RESPONSE_NORMAL) return;
  if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION) {
    fprintf(stderr, "rabbit_bench: %s: %s\n", what, amqp_error_string2(r.library_error));
  } else if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
    amqp_connection_close_t *m = (amqp_connection_close_t *)r.reply.decoded;
    fprintf(stderr, "rabbit_bench: %s: connection closed: %.*s\n", what, (int)m->reply_text.len,
            (char *)m->reply_text.bytes);
  } else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
    amqp_channel_close_t *m = (amqp_channel_close_t *)r.reply.decoded;
    fprintf(stderr, "rabbit_bench: %s: channel closed: %.*s\n", what, (int)m->reply_text.len,
            (char *)m->reply_text.bytes);
  } else {
    fprintf(stderr, "rabbit_bench: %s: reply type %d\n", what, r.reply_type);
  }
  exit(1);
}

static amqp_connection_state_t open_connection(void) {
  amqp_connection_state_t c = amqp_new_connection();
  amqp_socket_t *s = amqp_tcp_socket_new(c);
  if (!s || amqp_socket_open(s, host, port) != AMQP_STATUS_OK) {
    fprintf(stderr, "rabbit_bench: cannot connect to %s:%d\n", host, port);
    exit(1);
  }
  check_reply(amqp_login(c, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest"), "login");
  amqp_channel_open(c, 1);
  check_reply(amqp_get_rpc_reply(c), "channel open");
  return c;
}

typedef struct {
  char queue[64];
  volatile int64_t expected; /* lowered by the main thread when the producer failed */
  int prefetch;
  uint64_t stall_ns;
  uint64_t *lat;
  volatile int64_t received;
  volatile uint64_t last_ns;
  volatile int ready;
} consumer;

static void *consume(void *arg) {
  consumer *k = (consumer *)arg;
  amqp_connection_state_t c = open_connection();
  amqp_basic_qos(c, 1, 0, (uint16_t)k->prefetch, 0);
  check_reply(amqp_get_rpc_reply(c), "basic.qos");
  amqp_basic_consume(c, 1, amqp_cstring_bytes(k->queue), amqp_empty_bytes, 0, 0, 0,
                     amqp_empty_table);
  check_reply(amqp_get_rpc_reply(c), "basic.consume");
  __atomic_store_n(&k->ready, 1, __ATOMIC_RELEASE);
  uint64_t last_progress = now_ns();
  while (k->received < k->expected) {
    amqp_envelope_t env;
    struct timeval tv = {0, 500000};
    amqp_maybe_release_buffers(c);
    amqp_rpc_reply_t r = amqp_consume_message(c, &env, &tv, 0);
    if (r.reply_type == AMQP_RESPONSE_NORMAL) {
      uint64_t sent = 0, t = now_ns();
      if (env.message.body.len >= 8) memcpy(&sent, env.message.body.bytes, 8);
      k->lat[k->received] = t > sent ? t - sent : 0;
      k->last_ns = t;
      __atomic_add_fetch(&k->received, 1, __ATOMIC_RELAXED);
      amqp_basic_ack(c, 1, env.delivery_tag, 0);
      amqp_destroy_envelope(&env);
      last_progress = t;
      continue;
    }
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_TIMEOUT) {
      if (now_ns() - last_progress > k->stall_ns) break;
      continue;
    }
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
        r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
      amqp_frame_t f; /* a frame that is not a delivery (e.g. basic.consume-ok): skip it */
      if (amqp_simple_wait_frame(c, &f) != AMQP_STATUS_OK) break;
      continue;
    }
    check_reply(r, "consume");
  }
  amqp_channel_close(c, 1, AMQP_REPLY_SUCCESS);
  amqp_connection_close(c, AMQP_REPLY_SUCCESS);
  amqp_destroy_connection(c);
  return NULL;
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

/* Publisher confirms: tags 1..N, acked in any order, singly or "multiple" (all up to a tag). */
typedef struct {
  unsigned char *acked;
  uint64_t low; /* every tag <= low is acked */
  int64_t count;
  int64_t nacked;
} confirms;

static void mark(confirms *cf, uint64_t tag, int multiple) {
  uint64_t from = multiple ? cf->low + 1 : tag;
  for (uint64_t t = from; t <= tag; t++) {
    if (!cf->acked[t]) {
      cf->acked[t] = 1;
      cf->count++;
    }
  }
  while (cf->acked[cf->low + 1]) cf->low++;
}

/* Reads one frame (waiting at most `timeout_us`) and applies a confirm it carries. 0 on a
 * timeout, 1 on a frame, -1 on an error. */
static int read_confirm(amqp_connection_state_t c, confirms *cf, long timeout_us) {
  amqp_frame_t f;
  struct timeval tv = {timeout_us / 1000000, timeout_us % 1000000};
  int st = amqp_simple_wait_frame_noblock(c, &f, &tv);
  if (st == AMQP_STATUS_TIMEOUT) return 0;
  if (st != AMQP_STATUS_OK) {
    fprintf(stderr, "rabbit_bench: producer: %s\n", amqp_error_string2(st));
    return -1;
  }
  if (f.frame_type != AMQP_FRAME_METHOD) return 1;
  if (f.payload.method.id == AMQP_BASIC_ACK_METHOD) {
    amqp_basic_ack_t *a = (amqp_basic_ack_t *)f.payload.method.decoded;
    mark(cf, a->delivery_tag, a->multiple);
  } else if (f.payload.method.id == AMQP_BASIC_NACK_METHOD) {
    amqp_basic_nack_t *a = (amqp_basic_nack_t *)f.payload.method.decoded;
    int64_t before = cf->count;
    mark(cf, a->delivery_tag, a->multiple);
    cf->nacked += cf->count - before;
  } else if (f.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD ||
             f.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD) {
    fprintf(stderr, "rabbit_bench: producer: the server closed the channel\n");
    return -1;
  }
  return 1;
}

int main(int argc, char **argv) {
  int64_t messages = 100000;
  int size = 128, subs = 1, window = 1000, prefetch = 1000, timeout_s = 60;
  const char *queue_type = "quorum";
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v) {
      fprintf(stderr, "rabbit_bench: %s needs a value\n", a);
      return 2;
    }
    if (!strcmp(a, "--host"))
      host = v;
    else if (!strcmp(a, "--port"))
      port = atoi(v);
    else if (!strcmp(a, "--messages"))
      messages = atoll(v);
    else if (!strcmp(a, "--size"))
      size = atoi(v);
    else if (!strcmp(a, "--subs"))
      subs = atoi(v);
    else if (!strcmp(a, "--window"))
      window = atoi(v);
    else if (!strcmp(a, "--prefetch"))
      prefetch = atoi(v);
    else if (!strcmp(a, "--queue-type"))
      queue_type = v;
    else if (!strcmp(a, "--timeout"))
      timeout_s = atoi(v);
    else {
      fprintf(stderr, "rabbit_bench: unknown option %s\n", a);
      return 2;
    }
    i++;
  }
  if (messages < 1 || size < 8 || subs < 1 || subs > MAX_SUBS || window < 1 || prefetch < 1 ||
      prefetch > 65535 || timeout_s < 1 || port < 1 ||
      (strcmp(queue_type, "quorum") && strcmp(queue_type, "classic"))) {
    fprintf(stderr,
            "rabbit_bench: --messages >= 1, --size >= 8, --subs 1..%d, --window >= 1, "
            "--prefetch 1..65535, --queue-type quorum|classic, --timeout >= 1\n",
            MAX_SUBS);
    return 2;
  }
  const uint64_t stall_ns = (uint64_t)timeout_s * 1000000000ull;

  amqp_connection_state_t c = open_connection();
  amqp_exchange_declare(c, 1, amqp_cstring_bytes(exchange), amqp_cstring_bytes("fanout"), 0, 0, 1,
                        0, amqp_empty_table);
  check_reply(amqp_get_rpc_reply(c), "exchange.declare");
  consumer k[MAX_SUBS];
  memset(k, 0, sizeof k);
  amqp_table_entry_t arg;
  arg.key = amqp_cstring_bytes("x-queue-type");
  arg.value.kind = AMQP_FIELD_KIND_UTF8;
  arg.value.value.bytes = amqp_cstring_bytes(queue_type);
  amqp_table_t args = {1, &arg};
  for (int i = 0; i < subs; i++) {
    snprintf(k[i].queue, sizeof k[i].queue, "witmq-bench-%d", i);
    amqp_queue_declare(c, 1, amqp_cstring_bytes(k[i].queue), 0, 1, 0, 0, args);
    check_reply(amqp_get_rpc_reply(c), "queue.declare");
    amqp_queue_purge(c, 1, amqp_cstring_bytes(k[i].queue));
    check_reply(amqp_get_rpc_reply(c), "queue.purge");
    amqp_queue_bind(c, 1, amqp_cstring_bytes(k[i].queue), amqp_cstring_bytes(exchange),
                    amqp_empty_bytes, amqp_empty_table);
    check_reply(amqp_get_rpc_reply(c), "queue.bind");
    k[i].expected = messages;
    k[i].prefetch = prefetch;
    k[i].stall_ns = stall_ns;
    k[i].lat = calloc((size_t)messages, sizeof(uint64_t));
    if (!k[i].lat) return 1;
  }
  pthread_t th[MAX_SUBS];
  for (int i = 0; i < subs; i++) pthread_create(&th[i], NULL, consume, &k[i]);
  for (int i = 0; i < subs; i++) {
    while (!__atomic_load_n(&k[i].ready, __ATOMIC_ACQUIRE)) {
      struct timespec ts = {0, 1000000};
      nanosleep(&ts, NULL);
    }
  }
  amqp_confirm_select(c, 1);
  check_reply(amqp_get_rpc_reply(c), "confirm.select");

  confirms cf = {calloc((size_t)messages + 2, 1), 0, 0, 0};
  char *data = malloc((size_t)size);
  memset(data, 'x', (size_t)size);
  amqp_basic_properties_t props;
  props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG;
  props.delivery_mode = 2; /* persistent */
  const uint64_t start = now_ns();
  int failed = 0;
  uint64_t last_confirm = start;
  for (int64_t sent = 0; sent < messages && !failed;) {
    if (sent - cf.count >= window) {
      int r = read_confirm(c, &cf, 500000);
      if (r < 0) failed = 1;
      if (r > 0) last_confirm = now_ns();
      if (r == 0 && now_ns() - last_confirm > stall_ns) failed = 1;
      continue;
    }
    uint64_t t = now_ns();
    memcpy(data, &t, 8);
    amqp_bytes_t body = {(size_t)size, data};
    if (amqp_basic_publish(c, 1, amqp_cstring_bytes(exchange), amqp_empty_bytes, 0, 0, &props,
                           body) != AMQP_STATUS_OK) {
      fprintf(stderr, "rabbit_bench: publish failed\n");
      failed = 1;
    }
    sent++;
  }
  while (!failed && cf.count < messages) {
    int r = read_confirm(c, &cf, 500000);
    if (r < 0) failed = 1;
    if (r > 0) last_confirm = now_ns();
    if (r == 0 && now_ns() - last_confirm > stall_ns) failed = 1;
  }
  const uint64_t produced_ns = now_ns();
  const int64_t produced = cf.count - cf.nacked;
  if (cf.nacked) fprintf(stderr, "rabbit_bench: %lld publishes nacked\n", (long long)cf.nacked);
  if (failed) {
    /* The consumers wait for messages that will not come: stop them after their stall time. */
    for (int i = 0; i < subs; i++) k[i].expected = k[i].received;
  }
  for (int i = 0; i < subs; i++) pthread_join(th[i], NULL);

  int64_t consumed = 0, n = 0;
  uint64_t last = start;
  for (int i = 0; i < subs; i++) {
    consumed += k[i].received;
    if (k[i].last_ns > last) last = k[i].last_ns;
  }
  uint64_t *all = malloc(sizeof(uint64_t) * (size_t)(consumed > 0 ? consumed : 1));
  for (int i = 0; i < subs; i++) {
    memcpy(all + n, k[i].lat, sizeof(uint64_t) * (size_t)k[i].received);
    n += k[i].received;
  }
  qsort(all, (size_t)n, sizeof(uint64_t), cmp_u64);
  const double seconds = (double)(last - start) / 1e9;
  printf(
      "RESULT produced=%lld consumed=%lld seconds=%.3f msgs_per_s=%.0f produced_per_s=%.0f "
      "p50_ms=%.3f p99_ms=%.3f p999_ms=%.3f dropped=0 ok=%d\n",
      (long long)produced, (long long)consumed, seconds, seconds > 0 ? consumed / seconds : 0,
      produced / ((double)(produced_ns - start) / 1e9), pct_ms(all, n, 50), pct_ms(all, n, 99),
      pct_ms(all, n, 99.9), !failed && consumed >= messages * subs);
  fflush(stdout);

  for (int i = 0; i < subs; i++) {
    amqp_queue_delete(c, 1, amqp_cstring_bytes(k[i].queue), 0, 0);
    free(k[i].lat);
  }
  amqp_exchange_delete(c, 1, amqp_cstring_bytes(exchange), 0);
  amqp_channel_close(c, 1, AMQP_REPLY_SUCCESS);
  amqp_connection_close(c, AMQP_REPLY_SUCCESS);
  amqp_destroy_connection(c);
  free(all);
  free(data);
  free(cf.acked);
  return !failed && consumed >= messages * subs ? 0 : 1;
}
