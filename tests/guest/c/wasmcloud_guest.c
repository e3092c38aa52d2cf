/* Test guest for wasmCloud's wasmcloud:messaging@0.2.0 world (wit/wasmcloud-messaging/), written
 * against the canonical ABI by hand. handle-message(msg), by the message's subject:
 *  - "wc.ask": the body is "<subject> <timeout-ms> <payload>": consumer.request(subject,
 *    payload, timeout-ms), then publishes "got:<reply body>|<reply subject>" to "wc.out" (or
 *    "err:<text>").
 *  - "wc.svc*": a responder: publishes "re:<body>" to the message's reply-to (or "noreply" to
 *    "wc.out" when it has none).
 *  - any other: body "fail" returns err "refused: fail", "trap" traps; otherwise publishes
 *    "fwd:<body>" to "wc.out", with reply-to "from:<subject>". */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CONSUMER "wasmcloud:messaging/consumer@0.2.0"
#define IMPORT(module, name) __attribute__((import_module(module), import_name(name)))

IMPORT(CONSUMER, "request")
void consumer_request(const char *subject, size_t subject_len, const uint8_t *body,
                      size_t body_len, uint32_t timeout_ms, void *ret);
IMPORT(CONSUMER, "publish")
void consumer_publish(const char *subject, size_t subject_len, const uint8_t *body,
                      size_t body_len, uint32_t has_reply_to, const char *reply_to,
                      size_t reply_to_len, void *ret);

/* broker-message as stored: subject, body, option<string> reply-to */
typedef struct {
  char *subject;
  size_t subject_len;
  uint8_t *body;
  size_t body_len;
  uint8_t has_reply_to;
  char *reply_to;
  size_t reply_to_len;
} broker_message_t;
/* result<_, string> and result<broker-message, string>: tag, then the payload at 4 */
typedef struct {
  uint8_t is_err;
  char *ptr;
  size_t len;
} result_unit_t;
typedef struct {
  uint8_t is_err;
  union {
    broker_message_t ok;
    struct {
      char *ptr;
      size_t len;
    } err;
  } val;
} result_message_t;

__attribute__((export_name("cabi_realloc"))) void *cabi_realloc(void *ptr, size_t old_size,
                                                                 size_t align, size_t new_size) {
  (void)old_size;
  if (new_size == 0) return (void *)align;
  void *p = realloc(ptr, new_size);
  if (!p) abort();
  return p;
}

static result_unit_t handle_result;

/* Lists the host lowered: an empty one points at cabi_realloc's non-allocation (its alignment),
 * which must not be freed. */
static void free_list(void *ptr, size_t len) {
  if (len > 0) free(ptr);
}

static int is(const char *s, size_t len, const char *lit) {
  return len == strlen(lit) && memcmp(s, lit, len) == 0;
}

/* Publishes prefix + data to subject; returns the publish result. */
static result_unit_t publish(const char *subject, size_t subject_len, const char *prefix,
                             const void *data, size_t len, const char *reply_to,
                             size_t reply_to_len) {
  const size_t n = strlen(prefix);
  uint8_t *out = malloc(n + len + 1);
  if (!out) abort();
  memcpy(out, prefix, n);
  if (len) memcpy(out + n, data, len);
  result_unit_t r;
  consumer_publish(subject, subject_len, out, n + len, reply_to != NULL, reply_to, reply_to_len,
                   &r);
  free(out);
  return r;
}

__attribute__((export_name("wasmcloud:messaging/handler@0.2.0#handle-message"))) result_unit_t *
handle_message(char *subject, size_t subject_len, uint8_t *body, size_t body_len,
               uint32_t has_reply_to, char *reply_to, size_t reply_to_len) {
  result_unit_t sent = {0, 0, 0};
  if (is(subject, subject_len, "wc.ask")) {
    const uint8_t *end = body + body_len;
    const uint8_t *space = memchr(body, ' ', body_len);
    const size_t target_len = space ? (size_t)(space - body) : body_len;
    const uint8_t *at = space ? space + 1 : end;
    uint32_t timeout_ms = 0;
    while (at < end && *at >= '0' && *at <= '9') timeout_ms = timeout_ms * 10 + (*at++ - '0');
    if (at < end && *at == ' ') ++at;
    result_message_t r;
    consumer_request((const char *)body, target_len, at, (size_t)(end - at), timeout_ms, &r);
    if (r.is_err) {
      sent = publish("wc.out", 6, "err:", r.val.err.ptr, r.val.err.len, NULL, 0);
      free_list(r.val.err.ptr, r.val.err.len);
    } else {
      const broker_message_t *m = &r.val.ok;
      char *text = malloc(m->body_len + 1 + m->subject_len);
      if (!text) abort();
      memcpy(text, m->body, m->body_len);
      text[m->body_len] = '|';
      memcpy(text + m->body_len + 1, m->subject, m->subject_len);
      sent = publish("wc.out", 6, "got:", text, m->body_len + 1 + m->subject_len, NULL, 0);
      free(text);
      free_list(m->subject, m->subject_len);
      free_list(m->body, m->body_len);
      if (m->has_reply_to) free_list(m->reply_to, m->reply_to_len);
    }
  } else if (subject_len >= 6 && memcmp(subject, "wc.svc", 6) == 0) {
    if (has_reply_to) {
      sent = publish(reply_to, reply_to_len, "re:", body, body_len, NULL, 0);
    } else {
      sent = publish("wc.out", 6, "noreply", NULL, 0, NULL, 0);
    }
  } else {
    if (is((char *)body, body_len, "trap")) __builtin_trap();
    if (is((char *)body, body_len, "fail")) {
      handle_result.is_err = 1;
      handle_result.ptr = "refused: fail";
      handle_result.len = 13;
      return &handle_result;
    }
    char *from = malloc(5 + subject_len);
    if (!from) abort();
    memcpy(from, "from:", 5);
    memcpy(from + 5, subject, subject_len);
    sent = publish("wc.out", 6, "fwd:", body, body_len, from, 5 + subject_len);
    free(from);
  }
  free_list(subject, subject_len);
  free_list(body, body_len);
  if (has_reply_to) free_list(reply_to, reply_to_len);
  handle_result = sent; /* the publish error text, if any, is the guest's error */
  return &handle_result;
}
