/* Test guest for the draft's messaging-request-reply world (wasi:messaging@0.2.0-draft), written
 * against the canonical ABI by hand. handle(message) makes one request and reports its outcome
 * as a message to "draft.out": "ok:<n>:<reply 1>|<reply 2>..." or "err:<case>:<text>" (case 0
 * timeout, 1 connection, 2 permission-denied, 3 other).
 *
 * The delivered message's metadata says what to ask: "topic" (default "rr.svc"), "timeout-ms"
 * and "expected-replies" (decimal; each sets that option), "no-options" (pass none). The request
 * carries the delivered data.
 *
 * Data "hostile:<what>" instead makes one call with a bad argument (the host must trap the guest
 * or return an error, never crash): bad-client, bad-message, bad-options, bad-option-tag,
 * huge-topic, bad-retptr, reply-bad-handle, reply-same-handle, reply-not-request,
 * options-double-drop; and of the types and producer interfaces: send-bad-client,
 * send-huge-topic, send-dropped-message, huge-data, bad-utf8, message-flood, metadata-flood. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define TYPES "wasi:messaging/types@0.2.0-draft"
#define RR "wasi:messaging/request-reply@0.2.0-draft"
#define IMPORT(module, name) __attribute__((import_module(module), import_name(name)))

IMPORT(TYPES, "[static]client.connect")
void client_connect(const char *name, size_t len, void *ret);
IMPORT(TYPES, "[constructor]message") int32_t message_new(const uint8_t *data, size_t len);
IMPORT(TYPES, "[method]message.data") void message_data(int32_t self, void *ret);
IMPORT(TYPES, "[method]message.metadata") void message_metadata(int32_t self, void *ret);
IMPORT(TYPES, "[resource-drop]message") void message_drop(int32_t self);
IMPORT(TYPES, "[method]message.set-content-type")
void message_set_content_type(int32_t self, const char *s, size_t len);
IMPORT(TYPES, "[method]message.add-metadata")
void message_add_metadata(int32_t self, const char *k, size_t kl, const char *v, size_t vl);
IMPORT("wasi:messaging/producer@0.2.0-draft", "send")
void producer_send(int32_t client, const char *topic, size_t len, int32_t message, void *ret);
IMPORT(RR, "[constructor]request-options") int32_t options_new(void);
IMPORT(RR, "[method]request-options.set-timeout-ms")
void options_set_timeout(int32_t self, uint32_t ms);
IMPORT(RR, "[method]request-options.set-expected-replies")
void options_set_expected(int32_t self, uint32_t n);
IMPORT(RR, "[resource-drop]request-options") void options_drop(int32_t self);
IMPORT(RR, "request")
void rr_request(int32_t client, const char *topic, size_t len, int32_t message, int32_t has_options,
                int32_t options, void *ret);
IMPORT(RR, "reply") void rr_reply(int32_t reply_to, int32_t message, void *ret);

typedef struct {
  uint8_t is_some;
  char *ptr;
  size_t len;
} option_list_t;
typedef struct {
  uint8_t *ptr;
  size_t len;
} bytes_t;
typedef struct {
  char *kp;
  size_t kl;
  char *vp;
  size_t vl;
} kv_t;
/* result<T, error>: tag, then the payload at 4 */
typedef struct {
  uint8_t is_err;
  union {
    int32_t handle;
    struct {
      int32_t *ptr;
      size_t len;
    } list;
    struct {
      uint8_t tag;
      char *ptr;
      size_t len;
    } error;
  } val;
} result_t;

__attribute__((export_name("cabi_realloc"))) void *cabi_realloc(void *ptr, size_t old_size,
                                                                 size_t align, size_t new_size) {
  (void)old_size;
  if (new_size == 0) return (void *)align;
  void *p = realloc(ptr, new_size);
  if (!p) abort();
  return p;
}

static int32_t client;
static result_t handle_result;
static char out[65536];
static size_t out_len;

static void put(const void *p, size_t n) {
  if (n > sizeof(out) - out_len) n = sizeof(out) - out_len;
  memcpy(out + out_len, p, n);
  out_len += n;
}
static void put_str(const char *s) { put(s, strlen(s)); }
static void put_u32(uint32_t v) {
  char digits[10];
  size_t n = 0;
  do digits[n++] = (char)('0' + v % 10);
  while ((v /= 10) != 0);
  while (n > 0) put(&digits[--n], 1);
}

static int is(const char *p, size_t n, const char *s) { return n == strlen(s) && !memcmp(p, s, n); }

static uint32_t parse_u32(const char *p, size_t n) {
  uint32_t v = 0;
  for (size_t i = 0; i < n; ++i) v = v * 10 + (uint32_t)(p[i] - '0');
  return v;
}

/* Sends out[0..out_len) to draft.out; returns the handle's result. */
static result_t *report(void) {
  int32_t m = message_new((const uint8_t *)out, out_len);
  result_t sent;
  producer_send(client, "draft.out", 9, m, &sent);
  if (sent.is_err) {
    handle_result = sent;
    return &handle_result;
  }
  handle_result.is_err = 0;
  return &handle_result;
}

static void hostile(const char *what, size_t n, int32_t delivered) {
  result_t r;
  int32_t m = message_new((const uint8_t *)"x", 1);
  if (is(what, n, "bad-client")) rr_request(99, "rr.svc", 6, m, 0, 0, &r);
  if (is(what, n, "bad-message")) rr_request(client, "rr.svc", 6, 777, 0, 0, &r);
  if (is(what, n, "bad-options")) rr_request(client, "rr.svc", 6, m, 1, 555, &r);
  if (is(what, n, "bad-option-tag")) rr_request(client, "rr.svc", 6, m, 7, 0, &r);
  if (is(what, n, "huge-topic")) rr_request(client, "rr.svc", 0x7fffffff, m, 0, 0, &r);
  if (is(what, n, "bad-retptr")) rr_request(client, "rr.svc", 6, m, 0, 0, (void *)0xfffffff0);
  if (is(what, n, "reply-bad-handle")) rr_reply(delivered, 4242, &r);
  if (is(what, n, "reply-same-handle")) rr_reply(delivered, delivered, &r);
  if (is(what, n, "reply-not-request")) {
    rr_reply(m, message_new((const uint8_t *)"y", 1), &r);
    put_str(r.is_err ? "err:" : "ok:");
    if (r.is_err) {
      put_u32(r.val.error.tag);
      put_str(":");
      put(r.val.error.ptr, r.val.error.len);
    }
    return;
  }
  if (is(what, n, "send-bad-client")) producer_send(99, "draft.out", 9, m, &r);
  if (is(what, n, "send-huge-topic")) producer_send(client, "draft.out", 0x7fffffff, m, &r);
  if (is(what, n, "send-dropped-message")) {
    message_drop(m);
    producer_send(client, "draft.out", 9, m, &r);
  }
  if (is(what, n, "huge-data")) message_new((const uint8_t *)16, 0x7ffffff0);
  if (is(what, n, "bad-utf8")) message_set_content_type(m, "\xff\xfe", 2);
  if (is(what, n, "message-flood")) {
    for (int i = 0; i < 5000; ++i) message_new((const uint8_t *)"z", 1);
  }
  if (is(what, n, "metadata-flood")) {
    char key[8] = "k";
    for (int i = 0; i < 5000; ++i) {
      key[1] = (char)('0' + i % 10);
      key[2] = (char)('0' + i / 10 % 10);
      key[3] = (char)('0' + i / 100 % 10);
      key[4] = (char)('0' + i / 1000 % 10);
      message_add_metadata(m, key, 5, "v", 1);
    }
  }
  if (is(what, n, "options-double-drop")) {
    int32_t o = options_new();
    options_drop(o);
    options_drop(o);
  }
  put_str("survived");
}

__attribute__((export_name("wasi:messaging/incoming-handler@0.2.0-draft#handle"))) result_t *
handle(int32_t message) {
  bytes_t data;
  option_list_t metadata;
  message_data(message, &data);
  message_metadata(message, &metadata);
  out_len = 0;
  if (client == 0) {
    result_t r;
    client_connect("", 0, &r);
    if (r.is_err) {
      handle_result = r;
      return &handle_result;
    }
    client = r.val.handle;
  }
  if (data.len > 8 && !memcmp(data.ptr, "hostile:", 8)) {
    hostile((const char *)data.ptr + 8, data.len - 8, message);
    message_drop(message);
    return report();
  }
  const char *topic = "rr.svc";
  size_t topic_len = 6;
  int32_t options = options_new();
  int has_options = 1;
  kv_t *kv = metadata.is_some ? (kv_t *)metadata.ptr : 0;
  for (size_t i = 0; kv && i < metadata.len; ++i) {
    if (is(kv[i].kp, kv[i].kl, "topic")) {
      topic = kv[i].vp;
      topic_len = kv[i].vl;
    } else if (is(kv[i].kp, kv[i].kl, "timeout-ms")) {
      options_set_timeout(options, parse_u32(kv[i].vp, kv[i].vl));
    } else if (is(kv[i].kp, kv[i].kl, "expected-replies")) {
      options_set_expected(options, parse_u32(kv[i].vp, kv[i].vl));
    } else if (is(kv[i].kp, kv[i].kl, "no-options")) {
      has_options = 0;
    }
  }
  if (!has_options) options_drop(options);
  int32_t request = message_new(data.ptr, data.len);
  result_t r;
  rr_request(client, topic, topic_len, request, has_options, has_options ? options : 0, &r);
  message_drop(request); /* borrowed by request: still ours */
  message_drop(message);
  if (r.is_err) {
    put_str("err:");
    put_u32(r.val.error.tag);
    put_str(":");
    if (r.val.error.tag != 0) put(r.val.error.ptr, r.val.error.len);
    return report();
  }
  put_str("ok:");
  put_u32((uint32_t)r.val.list.len);
  put_str(":");
  for (size_t i = 0; i < r.val.list.len; ++i) {
    bytes_t reply;
    message_data(r.val.list.ptr[i], &reply);
    if (i > 0) put_str("|");
    put(reply.ptr, reply.len);
    free(reply.ptr);
    message_drop(r.val.list.ptr[i]);
  }
  free(r.val.list.ptr);
  return report();
}
