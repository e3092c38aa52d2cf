/* Test guest: a C guest that uses wasi-libc as any C program would (printf, time, rand,
 * getentropy, getenv, a sleep) and forwards each message of "wasi.in" to "wasi.out" with what it
 * saw added as metadata. Built with clang --target=wasm32-wasi against wasi-libc, so it imports
 * wasi_snapshot_preview1 functions (fd_write, clock_time_get, random_get, environ_*, ...). */
#define WITMQ_GUEST_IMPLEMENTATION
#include "witmq_guest.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static witmq_string_t channels[] = {{"wasi.in", 7}};
static witmq_client_t client;
static unsigned batches;

bool witmq_guest_configure(witmq_guest_configuration_t *out, witmq_error_t *err) {
  (void)err;
  out->channels.ptr = channels;
  out->channels.len = 1;
  out->extensions.is_some = false;
  srand((unsigned)time(NULL));
  return true;
}

static witmq_string_t str(const char *s) {
  witmq_string_t out = {s, strlen(s)};
  return out;
}

bool witmq_guest_handler(const witmq_message_list_t *batch, witmq_error_t *err) {
  if (client == 0 && !witmq_connect("", &client, err)) return false;
  ++batches;
  const time_t now = time(NULL);
  unsigned char entropy[16];
  const int entropy_ok = getentropy(entropy, sizeof entropy) == 0;
  unsigned nonzero = 0;
  for (size_t i = 0; i < sizeof entropy; ++i) nonzero += entropy[i] != 0;
  const char *greeting = getenv("GREETING");
  const char *missing = getenv("NOT_SET");
  struct timespec nap = {0, 1000000}; /* 1 ms: poll_oneoff on a clock */
  const int slept = nanosleep(&nap, NULL) == 0;
  printf("batch %u of %zu message(s) at %lld, rand %d, greeting %s\n", batches, batch->len,
         (long long)now, rand() % 1000, greeting ? greeting : "(none)");
  fflush(stdout);
  fprintf(stderr, "to stderr\n");

  static char year_ok[8], entropy_text[8], greeting_text[64], slept_text[8];
  snprintf(year_ok, sizeof year_ok, "%d", now > 1600000000);
  snprintf(entropy_text, sizeof entropy_text, "%d", entropy_ok && nonzero > 0);
  snprintf(greeting_text, sizeof greeting_text, "%s", greeting && !missing ? greeting : "");
  snprintf(slept_text, sizeof slept_text, "%d", slept);
  witmq_kv_t meta[4] = {{str("time-ok"), str(year_ok)},
                                    {str("entropy-ok"), str(entropy_text)},
                                    {str("greeting"), str(greeting_text)},
                                    {str("slept"), str(slept_text)}};
  for (size_t i = 0; i < batch->len; ++i) {
    witmq_message_t m = batch->ptr[i];
    m.metadata.is_some = true;
    m.metadata.val.ptr = meta;
    m.metadata.val.len = 4;
    if (!witmq_send(client, "wasi.out", &m, 1, err)) return false;
  }
  return true;
}
