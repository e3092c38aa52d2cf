/* filter: settles by content. Consumes "payments"; a message whose data contains
 * "\"approved\":true" is completed, any other is abandoned (witmq retries it and, after the
 * channel's max-deliveries, moves it to the dead-letter channel "payments.dlq"). Counts what it
 * did in the metadata of a summary it sends to "payments.filtered" once per batch. */
#define WITMQ_GUEST_IMPLEMENTATION
#include "witmq_guest.h"

static witmq_string_t channels[] = {{"payments", 8}};
static witmq_kv_t extensions[] = {{{"batch-size", 10}, {"20", 2}}};
static witmq_client_t client;

bool witmq_guest_configure(witmq_guest_configuration_t *out, witmq_error_t *err) {
  (void)err;
  out->channels.ptr = channels;
  out->channels.len = 1;
  out->extensions.is_some = true;
  out->extensions.val.ptr = extensions;
  out->extensions.val.len = 1;
  return true;
}

static bool approved(const witmq_bytes_t *data) {
  static const char needle[] = "\"approved\":true";
  const size_t n = sizeof needle - 1;
  for (size_t i = 0; i + n <= data->len; ++i) {
    if (memcmp(data->ptr + i, needle, n) == 0) return true;
  }
  return false;
}

bool witmq_guest_handler(const witmq_message_list_t *batch, witmq_error_t *err) {
  unsigned completed = 0, abandoned = 0;
  for (size_t i = 0; i < batch->len; ++i) {
    const witmq_message_t *m = &batch->ptr[i];
    if (approved(&m->data)) {
      if (witmq_complete(m, NULL)) ++completed;
    } else {
      if (witmq_abandon(m, NULL)) ++abandoned;
    }
  }
  if (client == 0 && !witmq_connect("", &client, err)) return false;
  char counts[2][21];
  witmq_u64_to_str(completed, counts[0]);
  witmq_u64_to_str(abandoned, counts[1]);
  witmq_kv_t md[2] = {{witmq_str("completed"), witmq_str(counts[0])},
                      {witmq_str("abandoned"), witmq_str(counts[1])}};
  witmq_message_t summary;
  memset(&summary, 0, sizeof summary);
  summary.format = WITMQ_FORMAT_RAW;
  summary.metadata.is_some = true;
  summary.metadata.val.ptr = md;
  summary.metadata.val.len = 2;
  return witmq_send(client, "payments.filtered", &summary, 1, err);
}
