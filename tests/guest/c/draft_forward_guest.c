/* Test guest for the upstream draft's messaging-core world (wasi:messaging@0.2.0-draft), written
 * against the canonical ABI by hand: handle(message) forwards "fwd:<data>" to "draft.out" with
 * content type text/plain and metadata from=<topic> (and had-metadata=yes when the message came
 * with metadata). Data "fail" returns err other("refused: fail"); "trap" traps. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define TYPES "wasi:messaging/types@0.2.0-draft"
#define IMPORT(module, name) __attribute__((import_module(module), import_name(name)))

IMPORT(TYPES, "[static]client.connect")
void client_connect(const char *name, size_t len, void *ret);
IMPORT(TYPES, "[constructor]message") int32_t message_new(const uint8_t *data, size_t len);
IMPORT(TYPES, "[method]message.topic") void message_topic(int32_t self, void *ret);
IMPORT(TYPES, "[method]message.data") void message_data(int32_t self, void *ret);
IMPORT(TYPES, "[method]message.metadata") void message_metadata(int32_t self, void *ret);
IMPORT(TYPES, "[method]message.set-content-type")
void message_set_content_type(int32_t self, const char *s, size_t len);
IMPORT(TYPES, "[method]message.add-metadata")
void message_add_metadata(int32_t self, const char *k, size_t kl, const char *v, size_t vl);
IMPORT(TYPES, "[resource-drop]message") void message_drop(int32_t self);
IMPORT("wasi:messaging/producer@0.2.0-draft", "send")
void producer_send(int32_t client, const char *topic, size_t len, int32_t message, void *ret);

/* option<string>, list<u8>, option<metadata>: (tag,) ptr, len */
typedef struct {
  uint8_t is_some;
  char *ptr;
  size_t len;
} option_list_t;
typedef struct {
  uint8_t *ptr;
  size_t len;
} bytes_t;
/* result<_, error> and result<client, error>: tag, then the payload at 4 */
typedef struct {
  uint8_t is_err;
  union {
    int32_t handle;
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
  (void)align;
  if (new_size == 0) return (void *)align;
  void *p = realloc(ptr, new_size);
  if (!p) abort();
  return p;
}

static int32_t client;
static result_t handle_result;

static result_t *fail(uint8_t tag, const char *text, size_t len) {
  handle_result.is_err = 1;
  handle_result.val.error.tag = tag;
  handle_result.val.error.ptr = (char *)text;
  handle_result.val.error.len = len;
  return &handle_result;
}

__attribute__((export_name("wasi:messaging/incoming-handler@0.2.0-draft#handle"))) result_t *
handle(int32_t message) {
  option_list_t topic;
  bytes_t data;
  option_list_t metadata;
  message_topic(message, &topic);
  message_data(message, &data);
  message_metadata(message, &metadata);
  if (data.len == 4 && memcmp(data.ptr, "trap", 4) == 0) __builtin_trap();
  if (data.len == 4 && memcmp(data.ptr, "fail", 4) == 0) {
    message_drop(message);
    return fail(3, "refused: fail", 13);
  }
  if (client == 0) {
    result_t r;
    client_connect("", 0, &r);
    if (r.is_err) return fail(r.val.error.tag, r.val.error.ptr, r.val.error.len);
    client = r.val.handle;
  }
  uint8_t *out = malloc(data.len + 4);
  if (!out) abort();
  memcpy(out, "fwd:", 4);
  memcpy(out + 4, data.ptr, data.len);
  int32_t reply = message_new(out, data.len + 4);
  free(out);
  message_set_content_type(reply, "text/plain", 10);
  if (topic.is_some) message_add_metadata(reply, "from", 4, topic.ptr, topic.len);
  if (metadata.is_some && metadata.len > 0) {
    message_add_metadata(reply, "had-metadata", 12, "yes", 3);
  }
  message_drop(message);
  free(data.ptr);
  if (topic.is_some) free(topic.ptr);
  if (metadata.is_some) {
    char **kv = (char **)metadata.ptr; /* (key ptr, key len, value ptr, value len) each */
    for (size_t i = 0; i < metadata.len; ++i) {
      free(kv[4 * i]);
      free(kv[4 * i + 2]);
    }
    free(metadata.ptr);
  }
  result_t sent;
  producer_send(client, "draft.out", 9, reply, &sent);
  if (sent.is_err) return fail(sent.val.error.tag, sent.val.error.ptr, sent.val.error.len);
  handle_result.is_err = 0;
  return &handle_result;
}
