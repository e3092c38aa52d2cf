/* hello_component: a guest written against wasi-libc as any C program is (printf, time), built
 * into a component with jco (docs/GUESTS.md, "Components"). Consumes "hello.in", logs one line
 * per batch on stdout, and forwards every message to "hello.out" with the time it saw as the
 * metadata entry "seen-at". */
#define WITMQ_GUEST_IMPLEMENTATION
#include "witmq_guest.h"

#include <stdio.h>
#include <time.h>

static witmq_string_t channels[] = {{"hello.in", 8}};
static witmq_client_t client;

bool witmq_guest_configure(witmq_guest_configuration_t *out, witmq_error_t *err) {
  (void)err;
  out->channels.ptr = channels;
  out->channels.len = 1;
  out->extensions.is_some = false;
  return true;
}

bool witmq_guest_handler(const witmq_message_list_t *batch, witmq_error_t *err) {
  if (client == 0 && !witmq_connect("", &client, err)) return false;
  const time_t now = time(NULL);
  printf("hello: %zu message(s) at %lld\n", batch->len, (long long)now);
  fflush(stdout);
  static char seen_at[24];
  snprintf(seen_at, sizeof seen_at, "%lld", (long long)now);
  witmq_kv_t meta[1] = {{{"seen-at", 7}, {seen_at, strlen(seen_at)}}};
  for (size_t i = 0; i < batch->len; ++i) {
    witmq_message_t m = batch->ptr[i];
    m.metadata.is_some = true;
    m.metadata.val.ptr = meta;
    m.metadata.val.len = 1;
    if (!witmq_send(client, "hello.out", &m, 1, err)) return false;
  }
  return true;
}
