#include "common/log.h"

#include <cstdio>
#include <ctime>

namespace witmq::log {

namespace {
std::atomic<int> g_level{static_cast<int>(Level::kInfo)};
constexpr std::string_view kNames[] = {"DEBUG", "INFO", "WARN", "ERROR"};
}  // namespace

void set_level(Level l) { g_level.store(static_cast<int>(l), std::memory_order_relaxed); }
Level level() { return static_cast<Level>(g_level.load(std::memory_order_relaxed)); }

Result<Level> parse_level(std::string_view name) {
  if (name == "debug") return Level::kDebug;
  if (name == "info") return Level::kInfo;
  if (name == "warn") return Level::kWarn;
  if (name == "error") return Level::kError;
  return invalid_argument(
      fmt::format("log-level: '{}' is not one of debug, info, warn, error", name));
}

void write(Level l, std::string_view text) {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  tm utc{};
  gmtime_r(&ts.tv_sec, &utc);
  // One fwrite per line keeps lines from different threads whole.
  auto line = fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z {} {}\n", utc.tm_year + 1900,
                          utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec,
                          ts.tv_nsec / 1'000'000, kNames[static_cast<int>(l)], text);
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace witmq::log
