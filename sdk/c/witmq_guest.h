/* witmq_guest.h: write a wasi:messaging@0.2.0-draft guest for witmq in C.
 *
 * A guest is a core WebAssembly module (clang --target=wasm32-wasi -mexec-model=reactor) that
 * implements two functions:
 *
 *   bool witmq_guest_configure(witmq_guest_configuration_t *out, witmq_error_t *err);
 *   bool witmq_guest_handler(const witmq_message_list_t *batch, witmq_error_t *err);
 *
 * and includes this header in exactly one file with WITMQ_GUEST_IMPLEMENTATION defined first:
 * that file then also defines the canonical-ABI exports witmq calls (`cabi_realloc`, `#configure`,
 * `#handler` and their `cabi_post_` companions). Return true for `ok`; return false and store an
 * error handle in *err for `err` (a guest cannot make an error itself: it passes on one it got
 * from a failed call below).
 *
 * Memory: the batch passed to witmq_guest_handler belongs to the SDK and is freed when the
 * handler returns; copy what you keep. The configuration returned by witmq_guest_configure is
 * read by the host and never freed, so point it at static data.
 *
 * Settlement: complete or abandon a message yourself with witmq_complete / witmq_abandon; every
 * message you leave alone is completed when the handler returns true and abandoned when it
 * returns false or traps. Delivered messages carry witmq-* metadata (id, channel, sequence,
 * attempt, receipt); pass the message back unchanged to settle it.
 *
 * Handles: witmq keeps a client handle valid after send / subscribe-* (the WIT signature moves
 * it, witmq does not), so connect once and reuse the client. Using a dropped or unknown handle
 * traps the guest.
 *
 * Layouts below match the canonical ABI on wasm32 (pointers and size_t are 4 bytes).
 */
#ifndef WITMQ_GUEST_H
#define WITMQ_GUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Types (canonical ABI layouts) ---------------------------------------------------------- */

/* string: UTF-8 bytes, not NUL-terminated. */
typedef struct {
  const char *ptr;
  size_t len;
} witmq_string_t;

/* list<u8> */
typedef struct {
  uint8_t *ptr;
  size_t len;
} witmq_bytes_t;

/* tuple<string, string> */
typedef struct {
  witmq_string_t key;
  witmq_string_t value;
} witmq_kv_t;

/* list<tuple<string, string>> */
typedef struct {
  witmq_kv_t *ptr;
  size_t len;
} witmq_kv_list_t;

/* option<list<tuple<string, string>>> */
typedef struct {
  bool is_some;
  witmq_kv_list_t val;
} witmq_option_kv_list_t;

/* format-spec: the canonical ABI case index, stored in one byte. */
enum {
  WITMQ_FORMAT_CLOUDEVENTS = 0,
  WITMQ_FORMAT_HTTP = 1,
  WITMQ_FORMAT_AMQP = 2,
  WITMQ_FORMAT_MQTT = 3,
  WITMQ_FORMAT_KAFKA = 4,
  WITMQ_FORMAT_RAW = 5,
};

/* message { data, format, metadata }: 24 bytes. */
typedef struct {
  witmq_bytes_t data;
  uint8_t format;
  witmq_option_kv_list_t metadata;
} witmq_message_t;

/* list<message> */
typedef struct {
  witmq_message_t *ptr;
  size_t len;
} witmq_message_list_t;

/* list<string> */
typedef struct {
  witmq_string_t *ptr;
  size_t len;
} witmq_string_list_t;

/* guest-configuration { channels, extensions }: 20 bytes. */
typedef struct {
  witmq_string_list_t channels;
  witmq_option_kv_list_t extensions;
} witmq_guest_configuration_t;

/* Resource handles: indices into the host's per-instance tables (0 is never valid). */
typedef uint32_t witmq_client_t;
typedef uint32_t witmq_error_t;

_Static_assert(sizeof(witmq_message_t) == 24, "message layout");
_Static_assert(sizeof(witmq_guest_configuration_t) == 20, "guest-configuration layout");
_Static_assert(sizeof(witmq_kv_t) == 16, "tuple<string, string> layout");

/* ---- Imports (core signatures of the canonical ABI) ------------------------------------------ */

#define WITMQ_IMPORT(module, name) __attribute__((import_module(module), import_name(name)))
#define WITMQ_TYPES "wasi:messaging/messaging-types@0.2.0-draft"
#define WITMQ_PRODUCER "wasi:messaging/producer@0.2.0-draft"
#define WITMQ_CONSUMER "wasi:messaging/consumer@0.2.0-draft"

WITMQ_IMPORT(WITMQ_TYPES, "[static]client.connect")
void witmq_raw_client_connect(const char *name, size_t name_len, void *ret);
WITMQ_IMPORT(WITMQ_TYPES, "[static]error.trace")
void witmq_raw_error_trace(void *ret);
WITMQ_IMPORT(WITMQ_TYPES, "[resource-drop]client")
void witmq_raw_client_drop(witmq_client_t client);
WITMQ_IMPORT(WITMQ_TYPES, "[resource-drop]error")
void witmq_raw_error_drop(witmq_error_t error);
WITMQ_IMPORT(WITMQ_PRODUCER, "send")
void witmq_raw_send(witmq_client_t client, const char *channel, size_t channel_len,
                    const witmq_message_t *messages, size_t count, void *ret);
WITMQ_IMPORT(WITMQ_CONSUMER, "subscribe-try-receive")
void witmq_raw_subscribe_try_receive(witmq_client_t client, const char *channel, size_t channel_len,
                                     uint32_t timeout_ms, void *ret);
WITMQ_IMPORT(WITMQ_CONSUMER, "subscribe-receive")
void witmq_raw_subscribe_receive(witmq_client_t client, const char *channel, size_t channel_len,
                                 void *ret);
WITMQ_IMPORT(WITMQ_CONSUMER, "update-guest-configuration")
void witmq_raw_update_guest_configuration(const witmq_string_t *channels, size_t channel_count,
                                          uint32_t has_extensions, const witmq_kv_t *extensions,
                                          size_t extension_count, void *ret);
WITMQ_IMPORT(WITMQ_CONSUMER, "complete-message")
void witmq_raw_complete_message(const uint8_t *data, size_t data_len, uint32_t format,
                                uint32_t has_metadata, const witmq_kv_t *metadata,
                                size_t metadata_count, void *ret);
WITMQ_IMPORT(WITMQ_CONSUMER, "abandon-message")
void witmq_raw_abandon_message(const uint8_t *data, size_t data_len, uint32_t format,
                               uint32_t has_metadata, const witmq_kv_t *metadata,
                               size_t metadata_count, void *ret);

/* ---- Helpers -------------------------------------------------------------------------------- */

/* Return areas: result<_, error> (8 bytes), result<client, error> (8),
 * result<list<message>, error> (12), result<option<list<message>>, error> (16). */
typedef struct {
  uint8_t is_err;
  uint32_t payload;
} witmq_result_handle_t;
typedef struct {
  uint8_t is_err;
  union {
    witmq_message_list_t ok;
    witmq_error_t err;
  } val;
} witmq_result_messages_t;
typedef struct {
  uint8_t is_err;
  union {
    struct {
      bool is_some;
      witmq_message_list_t val;
    } ok;
    witmq_error_t err;
  } val;
} witmq_result_option_messages_t;

/* A witmq_string_t over a NUL-terminated string (no copy). */
static inline witmq_string_t witmq_str(const char *s) {
  witmq_string_t out = {s, strlen(s)};
  return out;
}

/* Writes `v` in decimal to `buf` (at least 21 bytes), NUL-terminated; returns the length.
 * (Guests that avoid stdio need no WASI imports at all.) */
static inline size_t witmq_u64_to_str(uint64_t v, char *buf) {
  char tmp[20];
  size_t n = 0;
  do {
    tmp[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v != 0);
  for (size_t i = 0; i < n; ++i) buf[i] = tmp[n - 1 - i];
  buf[n] = '\0';
  return n;
}

/* True if `s` equals the NUL-terminated `text`. */
static inline bool witmq_string_eq(witmq_string_t s, const char *text) {
  size_t n = strlen(text);
  return s.len == n && memcmp(s.ptr, text, n) == 0;
}

/* The value of the first metadata entry named `key`, or NULL. */
static inline const witmq_string_t *witmq_metadata_get(const witmq_message_t *m, const char *key) {
  if (!m->metadata.is_some) return NULL;
  for (size_t i = 0; i < m->metadata.val.len; ++i) {
    if (witmq_string_eq(m->metadata.val.ptr[i].key, key)) return &m->metadata.val.ptr[i].value;
  }
  return NULL;
}

static inline bool witmq_take_result(const witmq_result_handle_t *r, uint32_t *ok,
                                     witmq_error_t *err) {
  if (r->is_err) {
    if (err)
      *err = r->payload;
    else
      witmq_raw_error_drop(r->payload);
    return false;
  }
  if (ok) *ok = r->payload;
  return true;
}

/* client.connect(name). True and *client on ok; false and *err (or dropped if err is NULL). */
static inline bool witmq_connect(const char *name, witmq_client_t *client, witmq_error_t *err) {
  witmq_result_handle_t r;
  witmq_raw_client_connect(name, strlen(name), &r);
  return witmq_take_result(&r, client, err);
}

/* producer.send(client, channel, messages). */
static inline bool witmq_send(witmq_client_t client, const char *channel,
                              const witmq_message_t *messages, size_t count, witmq_error_t *err) {
  witmq_result_handle_t r;
  witmq_raw_send(client, channel, strlen(channel), messages, count, &r);
  return witmq_take_result(&r, NULL, err);
}

/* consumer.complete-message(m) / abandon-message(m). */
static inline bool witmq_complete(const witmq_message_t *m, witmq_error_t *err) {
  witmq_result_handle_t r;
  witmq_raw_complete_message(m->data.ptr, m->data.len, m->format, m->metadata.is_some,
                             m->metadata.val.ptr, m->metadata.val.len, &r);
  return witmq_take_result(&r, NULL, err);
}
static inline bool witmq_abandon(const witmq_message_t *m, witmq_error_t *err) {
  witmq_result_handle_t r;
  witmq_raw_abandon_message(m->data.ptr, m->data.len, m->format, m->metadata.is_some,
                            m->metadata.val.ptr, m->metadata.val.len, &r);
  return witmq_take_result(&r, NULL, err);
}

/* consumer.update-guest-configuration(gc): subscribe to other channels from now on. */
static inline bool witmq_update_guest_configuration(const witmq_guest_configuration_t *gc,
                                                    witmq_error_t *err) {
  witmq_result_handle_t r;
  witmq_raw_update_guest_configuration(gc->channels.ptr, gc->channels.len, gc->extensions.is_some,
                                       gc->extensions.val.ptr, gc->extensions.val.len, &r);
  return witmq_take_result(&r, NULL, err);
}

/* error.trace(): the last error's description. The caller frees out->ptr with free(). */
static inline void witmq_error_trace(witmq_string_t *out) { witmq_raw_error_trace(out); }

static inline void witmq_error_drop(witmq_error_t e) { witmq_raw_error_drop(e); }
static inline void witmq_client_drop(witmq_client_t c) { witmq_raw_client_drop(c); }

/* Frees a list of messages the host allocated (a batch, or a subscribe-* result). */
void witmq_free_messages(witmq_message_list_t *list);

/* ---- What the guest implements ----------------------------------------------------------------
 */

bool witmq_guest_configure(witmq_guest_configuration_t *out, witmq_error_t *err);
bool witmq_guest_handler(const witmq_message_list_t *batch, witmq_error_t *err);

/* ---- Exports (in the one file that defines WITMQ_GUEST_IMPLEMENTATION) ------------------------
 */

#ifdef WITMQ_GUEST_IMPLEMENTATION

/* cabi_realloc: the host allocates lowered values (batches, strings) with it. A zero-size
 * request returns a non-null aligned address and allocates nothing. */
__attribute__((export_name("cabi_realloc"))) void *cabi_realloc(void *old, size_t old_size,
                                                                size_t align, size_t new_size) {
  (void)old_size;
  if (new_size == 0) return (void *)align;
  void *p = realloc(old, new_size); /* malloc's 16-byte alignment covers every canonical type */
  if (!p) abort();
  return p;
}

static void witmq_free_block(void *p, size_t len) {
  if (len != 0) free(p); /* zero-length blocks were never allocated (see cabi_realloc) */
}

static void witmq_free_kv_list(witmq_option_kv_list_t *kv) {
  if (!kv->is_some) return;
  for (size_t i = 0; i < kv->val.len; ++i) {
    witmq_free_block((void *)kv->val.ptr[i].key.ptr, kv->val.ptr[i].key.len);
    witmq_free_block((void *)kv->val.ptr[i].value.ptr, kv->val.ptr[i].value.len);
  }
  witmq_free_block(kv->val.ptr, kv->val.len);
}

void witmq_free_messages(witmq_message_list_t *list) {
  for (size_t i = 0; i < list->len; ++i) {
    witmq_free_block(list->ptr[i].data.ptr, list->ptr[i].data.len);
    witmq_free_kv_list(&list->ptr[i].metadata);
  }
  witmq_free_block(list->ptr, list->len);
  list->ptr = NULL;
  list->len = 0;
}

/* result<guest-configuration, error>: discriminant, payload at 4. */
static struct {
  uint8_t is_err;
  union {
    witmq_guest_configuration_t ok;
    witmq_error_t err;
  } val;
} witmq_configure_ret;

__attribute__((export_name("wasi:messaging/messaging-guest@0.2.0-draft#configure"))) void *
witmq_export_configure(void) {
  witmq_guest_configuration_t gc;
  witmq_error_t err = 0;
  memset(&gc, 0, sizeof gc);
  if (witmq_guest_configure(&gc, &err)) {
    witmq_configure_ret.is_err = 0;
    witmq_configure_ret.val.ok = gc;
  } else {
    witmq_configure_ret.is_err = 1;
    witmq_configure_ret.val.err = err;
  }
  return &witmq_configure_ret;
}

__attribute__((export_name("cabi_post_wasi:messaging/messaging-guest@0.2.0-draft#configure"))) void
witmq_export_post_configure(void *ret) {
  (void)ret; /* the configuration is static data */
}

static witmq_result_handle_t witmq_handler_ret;

__attribute__((export_name("wasi:messaging/messaging-guest@0.2.0-draft#handler"))) void *
witmq_export_handler(witmq_message_t *messages, size_t count) {
  witmq_message_list_t batch = {messages, count};
  witmq_error_t err = 0;
  const bool ok = witmq_guest_handler(&batch, &err);
  witmq_free_messages(&batch);
  witmq_handler_ret.is_err = ok ? 0 : 1;
  witmq_handler_ret.payload = ok ? 0 : err;
  return &witmq_handler_ret;
}

__attribute__((export_name("cabi_post_wasi:messaging/messaging-guest@0.2.0-draft#handler"))) void
witmq_export_post_handler(void *ret) {
  (void)ret; /* result<_, error> owns no memory */
}

#endif /* WITMQ_GUEST_IMPLEMENTATION */

#ifdef __cplusplus
}
#endif

#endif /* WITMQ_GUEST_H */
