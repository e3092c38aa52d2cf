// Fuzzes the CloudEvents HTTP reader (net/cloudevents.h). Input: header lines "name: value"
// (names lower-cased, as the HTTP server hands them over), an empty line, then the body.
// A request that is accepted becomes a message the broker stores and delivers over TCP, so it
// must survive the wire: a deliver frame carrying it must decode on the client side to the same
// message (the broker's reserved witmq- entries aside, which it drops on send).
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "fuzz_check.h"
#include "net/cloudevents.h"
#include "net/codec.h"

namespace witmq::fuzz {
namespace {

using Headers = std::vector<std::pair<std::string, std::string>>;

// Splits the input into headers and body.
std::string_view parse_request(std::string_view text, Headers& headers) {
  while (!text.empty()) {
    size_t end = text.find('\n');
    std::string_view line = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view() : text.substr(end + 1);
    if (line.empty()) break;
    const size_t colon = line.find(':');
    std::string name(line.substr(0, colon));
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    std::string_view value = colon == std::string_view::npos ? "" : line.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    headers.emplace_back(std::move(name), std::string(value));
  }
  return text;
}

void check_deliverable(Message m) {
  if (m.metadata) {
    std::erase_if(*m.metadata, [](const KeyValue& kv) { return is_reserved_key(kv.first); });
  }
  // The HTTP side bounds the request; what is checked here is the encoding, not the limits.
  constexpr uint32_t kMax = std::numeric_limits<uint32_t>::max() - net::kMaxReservedEntries;
  const net::Limits unlimited{kMax, kMax, kMax, kMax, kMax, kMax};
  net::Buffer out;
  net::encode_deliver(out, 1, "orders", {&m, 1});
  const net::DecodeResult r = net::decode_frame(out, net::Side::kClient, unlimited);
  const auto* bad = std::get_if<net::DecodeError>(&r);
  WITMQ_FUZZ_CHECK(bad == nullptr, "an accepted request's message does not decode: %s",
                   bad->error.message.c_str());
  const auto* d = std::get_if<net::Decoded>(&r);
  WITMQ_FUZZ_CHECK(d != nullptr, "an accepted request's message: NeedMore from a whole frame");
  const auto& deliver = std::get<net::Deliver>(d->frame.body);
  WITMQ_FUZZ_CHECK(deliver.messages.size() == 1 && deliver.messages[0] == m,
                   "an accepted request's message changed on the wire");
}

}  // namespace
}  // namespace witmq::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace witmq;
  fuzz::Headers headers;
  const std::string_view body =
      fuzz::parse_request({reinterpret_cast<const char*>(data), size}, headers);
  auto request = net::message_from_http(headers, body);
  if (!request) {
    WITMQ_FUZZ_CHECK(!request.error().message.empty(), "a refused request without a message");
    return 0;
  }
  fuzz::check_deliverable(std::move(request->message));
  return 0;
}
