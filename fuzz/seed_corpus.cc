// Writes the generated part of the fuzzers' seed corpora and their dictionaries, so they follow
// the code they fuzz:
//   OUT/frames/      every sample frame of the codec tests (tests/net/corpus.h), each alone and
//                    all of one side in one stream, and every malformed case of the same corpus,
//                    with the default and with fuzz/frame_input.h's small limits
//   OUT/config/      the embedded default configuration
//   OUT/frames.dict  the extension keys and values, the reserved metadata keys
//   OUT/config.dict  every configuration key, channel setting, guest key and flag
// The hand-written seeds (fuzz/corpus/) and config/*.json are used beside these.
//
// Usage: witmq_fuzz_seeds OUT
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "broker/channel_settings.h"
#include "broker/extensions.h"
#include "daemon/config.h"
#include "frame_input.h"
#include "guest/guest_options.h"
#include "net/corpus.h"

namespace witmq::fuzz {
namespace {

namespace fs = std::filesystem;
using net::Side;

void write_file(const fs::path& path, std::span<const uint8_t> bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  if (!out) {
    std::fprintf(stderr, "witmq_fuzz_seeds: cannot write %s\n", path.c_str());
    std::exit(1);
  }
}

void write_text(const fs::path& path, std::string_view text) {
  write_file(path, {reinterpret_cast<const uint8_t*>(text.data()), text.size()});
}

// Seeds larger than this would raise libFuzzer's default -max_len and slow every run down.
constexpr size_t kMaxSeedBytes = 4096;

void write_frame_seeds(const fs::path& dir) {
  fs::create_directories(dir);
  int n = 0;
  auto seed = [&](std::string_view kind, Side side, bool small, std::span<const uint8_t> stream) {
    if (stream.size() > kMaxSeedBytes) return;
    // Alternate small and large chunks (the split seed's low bit) across the seeds.
    const auto split = static_cast<uint16_t>(n * 7919 + 1);
    char name[64];
    std::snprintf(name, sizeof name, "%s-%03d", std::string(kind).c_str(), n++);
    write_file(dir / name, make_frame_input(side, small, split, stream));
  };

  std::vector<uint8_t> requests, replies;
  for (const net::Frame& f : net::testing::sample_frames()) {
    const std::vector<uint8_t> bytes = net::testing::encoded(f);
    const bool request = net::is_request_type(f.type());
    seed("sample", request ? Side::kServer : Side::kClient, false, bytes);
    auto& stream = request ? requests : replies;
    stream.insert(stream.end(), bytes.begin(), bytes.end());
  }
  seed("stream", Side::kServer, false, requests);
  seed("stream", Side::kClient, false, replies);

  for (bool small : {false, true}) {
    const net::Limits limits = small ? kSmallLimits : net::Limits{};
    for (const auto& c : net::testing::malformed_corpus(limits)) {
      std::vector<uint8_t> stream;
      if (!c.first_frame) stream = net::testing::hello_frame();
      stream.insert(stream.end(), c.bytes.begin(), c.bytes.end());
      seed("malformed", Side::kServer, small, stream);
    }
  }
}

// One libFuzzer dictionary entry per line: "text", with " and \ escaped and anything not
// printable as \xNN.
void write_dictionary(const fs::path& path, const std::set<std::string>& words) {
  std::string text;
  for (const auto& w : words) {
    text += '"';
    for (char c : w) {
      const auto u = static_cast<unsigned char>(c);
      if (c == '"' || c == '\\') {
        text += '\\';
        text += c;
      } else if (u < 0x20 || u >= 0x7f) {
        char hex[5];
        std::snprintf(hex, sizeof hex, "\\x%02x", u);
        text += hex;
      } else {
        text += c;
      }
    }
    text += "\"\n";
  }
  write_text(path, text);
}

void write_dictionaries(const fs::path& dir) {
  std::set<std::string> frames;
  for (const auto& d : broker::extension_docs()) frames.emplace(d.key);
  for (const char* v :
       {"earliest", "latest", "time:", "explicit", "auto", "2024-01-01T00:00:00Z"}) {
    frames.emplace(v);
  }
  for (auto k : {meta::kId, meta::kAttempt, meta::kReceipt, meta::kChannel}) {
    frames.emplace(k);
  }
  write_dictionary(dir / "frames.dict", frames);

  std::set<std::string> config;
  for (const auto& k : daemon::config_keys()) {
    config.emplace(k.name);
    config.emplace("--set\n" + std::string(k.name) + "=");
  }
  for (const auto& d : broker::channel_setting_docs()) config.emplace(d.key);
  for (const auto& d : guest::guest_option_docs()) config.emplace(d.key);
  for (const char* v : {"--config", "--listen", "--http-listen", "--data-dir", "--log-level",
                        "--check-config", "point-to-point", "publish-subscribe", "sync", "group",
                        "none", "requeue", "dead-letter", "drop", "[::1]:0", "127.0.0.1:0"}) {
    config.emplace(v);
  }
  write_dictionary(dir / "config.dict", config);
}

}  // namespace
}  // namespace witmq::fuzz

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  if (argc != 2) {
    std::fprintf(stderr, "usage: witmq_fuzz_seeds OUT\n");
    return 2;
  }
  const fs::path out = argv[1];
  witmq::fuzz::write_frame_seeds(out / "frames");
  fs::create_directories(out / "config");
  witmq::fuzz::write_text(out / "config" / "default.json", witmq::daemon::default_config_text());
  witmq::fuzz::write_dictionaries(out);
  return 0;
}
