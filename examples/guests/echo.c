/* echo: an audit forwarder. Consumes "orders" and sends every message, unchanged, to
 * "orders.audit". If the send fails the batch is abandoned (handler returns err) and witmq
 * delivers it again later. */
#define WITMQ_GUEST_IMPLEMENTATION
#include "witmq_guest.h"

static witmq_string_t channels[] = {{"orders", 6}};
static witmq_client_t client; /* connected on the first batch, reused afterwards */

bool witmq_guest_configure(witmq_guest_configuration_t *out, witmq_error_t *err) {
  (void)err;
  out->channels.ptr = channels;
  out->channels.len = 1;
  out->extensions.is_some = false;
  return true;
}

bool witmq_guest_handler(const witmq_message_list_t *batch, witmq_error_t *err) {
  if (client == 0 && !witmq_connect("", &client, err)) return false;
  /* witmq-* metadata of the delivered messages is dropped by the broker on send. */
  return witmq_send(client, "orders.audit", batch->ptr, batch->len, err);
}
