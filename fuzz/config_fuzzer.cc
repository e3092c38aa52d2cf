// Fuzzes the configuration loader (daemon/config.h) and, through it, the channel settings
// (broker/channel_settings.h) and guest options (guest/guest_options.h) parsers. Two input forms:
//   - text starting with '-': command-line arguments, one per line, through parse_command_line
//     (--set KEY=VALUE and the other flags) and then build_config over the layers they make;
//     --config is parsed but no file is read;
//   - anything else: the text of a config file, through parse_config_text and build_config.
// Nothing may throw out of them or crash; errors are Results with a message. A configuration
// that builds must hold the constraints build_config promises.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/command_line.h"
#include "daemon/config.h"
#include "fuzz_check.h"
#include "net/frames.h"

namespace witmq::fuzz {
namespace {

void check_config(const Result<daemon::Config>& c) {
  if (!c) {
    WITMQ_FUZZ_CHECK(!c.error().message.empty(), "a refused configuration without a message");
    return;
  }
  WITMQ_FUZZ_CHECK(c->broker.default_batch_size <= c->broker.max_batch_size,
                   "default-batch-size %u over max-batch-size %u", c->broker.default_batch_size,
                   c->broker.max_batch_size);
  WITMQ_FUZZ_CHECK(c->server.limits.max_message_bytes <= c->server.limits.max_frame_bytes,
                   "max-message-bytes %u over max-frame-bytes %u",
                   c->server.limits.max_message_bytes, c->server.limits.max_frame_bytes);
  WITMQ_FUZZ_CHECK(c->io_threads >= 1, "io-threads resolved to 0");
  for (const auto& [name, settings] : c->broker.channels) {
    WITMQ_FUZZ_CHECK(validate_channel_name(name).ok(), "channel '%s' declared with a bad name",
                     name.c_str());
    WITMQ_FUZZ_CHECK(settings.backoff_initial <= settings.backoff_max,
                     "channel '%s': backoff-initial-ms over backoff-max-ms", name.c_str());
  }
}

void fuzz_command_line(std::string_view text) {
  std::vector<std::string> args;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    args.emplace_back(text.substr(start, end - start));
    start = end + 1;
  }
  std::vector<const char*> argv;
  argv.reserve(args.size());
  for (const auto& a : args) argv.push_back(a.c_str());
  auto cl = daemon::parse_command_line(argv);
  if (!cl) {
    WITMQ_FUZZ_CHECK(!cl.error().message.empty(), "a refused command line without a message");
    return;
  }
  check_config(daemon::build_config(cl->overrides));
}

void fuzz_config_text(std::string_view text) {
  auto layer = daemon::parse_config_text(text, "fuzz.json");
  if (!layer) {
    WITMQ_FUZZ_CHECK(!layer.error().message.empty(), "a refused config file without a message");
    return;
  }
  WITMQ_FUZZ_CHECK(layer->values.is_object(), "a config file layer that is not an object");
  check_config(daemon::build_config({*layer}));
}

}  // namespace
}  // namespace witmq::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  if (!text.empty() && text.front() == '-') {
    witmq::fuzz::fuzz_command_line(text);
  } else {
    witmq::fuzz::fuzz_config_text(text);
  }
  return 0;
}
