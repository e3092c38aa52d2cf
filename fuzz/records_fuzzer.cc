// Fuzzes the decoder of the messages column family's values (storage/records.h decode_messages):
// the first 12 bytes of the input are the key (channel and seq), the rest the value, a run of
// messages or a single message as RocksDB would hand it back. Beyond "no crash, no sanitizer
// report, no over-read":
//   - a refused value's error is kCorruption and names the key (describe_key);
//   - a decoded value holds consecutive seqs ending at the key's;
//   - a decoded value whose messages share one publish time re-encodes to exactly its bytes (the
//     encoding is canonical), and MessageRun reads each message alike after skipping to it.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_check.h"
#include "storage/codec.h"
#include "storage/records.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace witmq;
  using namespace witmq::storage;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::string_view key = input.substr(0, std::min(size, kLogKeySize));
  const std::string_view value = input.substr(key.size());
  auto decoded = decode_messages(key, value);
  if (!decoded) {
    WITMQ_FUZZ_CHECK(decoded.error().code == ErrorCode::kCorruption, "refused with code %d: %s",
                     static_cast<int>(decoded.error().code), decoded.error().message.c_str());
    const std::string name = describe_key("messages", key);
    WITMQ_FUZZ_CHECK(decoded.error().message.find(name) != std::string::npos,
                     "the error does not name %s: %s", name.c_str(),
                     decoded.error().message.c_str());
    return 0;
  }
  const auto& ms = *decoded;
  const Seq last = parse_log_key(key)->second;
  WITMQ_FUZZ_CHECK(!ms.empty() && ms.back().seq == last, "%zu messages do not end at seq %llu",
                   ms.size(), static_cast<unsigned long long>(last));
  bool one_time = true;
  for (size_t i = 0; i < ms.size(); ++i) {
    WITMQ_FUZZ_CHECK(ms[i].seq == last - (ms.size() - 1 - i), "message %zu has seq %llu", i,
                     static_cast<unsigned long long>(ms[i].seq));
    one_time = one_time && ms[i].publish_time_ms == ms[0].publish_time_ms;
  }
  if (one_time) {
    std::vector<Message> plain;
    for (const auto& m : ms) plain.push_back(m.message);
    // A run of one written by hand decodes too; what put_messages writes for one message is the
    // single-message form.
    std::string again;
    if (static_cast<uint8_t>(value[0]) == kRunVersion) {
      append_message_run(again, ms[0].publish_time_ms, plain);
    } else {
      again = encode_message(ms[0].publish_time_ms, plain[0]);
    }
    WITMQ_FUZZ_CHECK(again == value, "%zu messages re-encoded to other bytes", ms.size());
  }
  // Skipping to each message and decoding it gives the message decoded in order.
  const size_t step = ms.size() / 4 + 1;
  for (size_t i = 0; i < ms.size(); i += step) {
    auto run = MessageRun::open(key, value);
    WITMQ_FUZZ_CHECK(run.ok(), "open failed after decode succeeded");
    run->skip_to(ms[i].seq);
    auto m = run->next();
    WITMQ_FUZZ_CHECK(m.ok() && m->seq == ms[i].seq && m->message == ms[i].message,
                     "skipping to seq %llu decodes another message",
                     static_cast<unsigned long long>(ms[i].seq));
  }
  return 0;
}
