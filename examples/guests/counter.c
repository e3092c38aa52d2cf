/* counter: keeps state across batches. Consumes "events", counts messages and bytes since the
 * instance started, and after each batch sends the running totals to "events.count" as
 * "messages=<n> bytes=<n>". The totals live in the instance's memory: they survive from batch to
 * batch, and start again from zero if witmq re-instantiates the guest after a trap. */
#define WITMQ_GUEST_IMPLEMENTATION
#include "witmq_guest.h"

static witmq_string_t channels[] = {{"events", 6}};
static witmq_client_t client;
static uint64_t messages, bytes;

bool witmq_guest_configure(witmq_guest_configuration_t *out, witmq_error_t *err) {
  (void)err;
  out->channels.ptr = channels;
  out->channels.len = 1;
  out->extensions.is_some = false;
  return true;
}

bool witmq_guest_handler(const witmq_message_list_t *batch, witmq_error_t *err) {
  for (size_t i = 0; i < batch->len; ++i) bytes += batch->ptr[i].data.len;
  messages += batch->len;
  if (client == 0 && !witmq_connect("", &client, err)) return false;
  char text[64];
  size_t n = 0;
  memcpy(text, "messages=", 9);
  n = 9 + witmq_u64_to_str(messages, text + 9);
  memcpy(text + n, " bytes=", 7);
  n += 7;
  n += witmq_u64_to_str(bytes, text + n);
  witmq_message_t total;
  memset(&total, 0, sizeof total);
  total.data.ptr = (uint8_t *)text;
  total.data.len = (size_t)n;
  total.format = WITMQ_FORMAT_RAW;
  return witmq_send(client, "events.count", &total, 1, err);
}
