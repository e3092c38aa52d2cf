/* Test guest for the draft's messaging-request-reply world, written against the canonical ABI by
 * hand: handle(message) answers the request with request-reply.reply, data "re:<data>". Metadata
 * "replies" (decimal) sends that many replies ("re:<data>#<i>" for i > 0). Data "trap" traps
 * mid-request; a reply that fails returns its error from handle. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define TYPES "wasi:messaging/types@0.2.0-draft"
#define IMPORT(module, name) __attribute__((import_module(module), import_name(name)))

IMPORT(TYPES, "[constructor]message") int32_t message_new(const uint8_t *data, size_t len);
IMPORT(TYPES, "[method]message.data") void message_data(int32_t self, void *ret);
IMPORT(TYPES, "[method]message.metadata") void message_metadata(int32_t self, void *ret);
IMPORT(TYPES, "[resource-drop]message") void message_drop(int32_t self);
IMPORT("wasi:messaging/request-reply@0.2.0-draft", "reply")
void rr_reply(int32_t reply_to, int32_t message, void *ret);

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
typedef struct {
  uint8_t is_err;
  struct {
    uint8_t tag;
    char *ptr;
    size_t len;
  } error;
} result_t;

__attribute__((export_name("cabi_realloc"))) void *cabi_realloc(void *ptr, size_t old_size,
                                                                 size_t align, size_t new_size) {
  (void)old_size;
  if (new_size == 0) return (void *)align;
  void *p = realloc(ptr, new_size);
  if (!p) abort();
  return p;
}

static result_t handle_result;

__attribute__((export_name("wasi:messaging/incoming-handler@0.2.0-draft#handle"))) result_t *
handle(int32_t message) {
  bytes_t data;
  option_list_t metadata;
  message_data(message, &data);
  message_metadata(message, &metadata);
  if (data.len == 4 && memcmp(data.ptr, "trap", 4) == 0) __builtin_trap();
  uint32_t replies = 1;
  kv_t *kv = metadata.is_some ? (kv_t *)metadata.ptr : 0;
  for (size_t i = 0; kv && i < metadata.len; ++i) {
    if (kv[i].kl == 7 && !memcmp(kv[i].kp, "replies", 7)) {
      replies = 0;
      for (size_t j = 0; j < kv[i].vl; ++j) replies = replies * 10 + (uint32_t)(kv[i].vp[j] - '0');
    }
  }
  uint8_t *out = malloc(data.len + 16);
  if (!out) abort();
  memcpy(out, "re:", 3);
  memcpy(out + 3, data.ptr, data.len);
  handle_result.is_err = 0;
  for (uint32_t i = 0; i < replies; ++i) {
    size_t n = 3 + data.len;
    if (i > 0) {
      out[n++] = '#';
      out[n++] = (uint8_t)('0' + i % 10);
    }
    result_t r;
    rr_reply(message, message_new(out, n), &r);
    if (r.is_err) {
      handle_result = r;
      break;
    }
  }
  free(out);
  free(data.ptr);
  message_drop(message);
  return &handle_result;
}
