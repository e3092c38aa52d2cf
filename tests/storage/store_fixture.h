// Shared pieces of the storage tests: a temporary directory per test and deterministic messages.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>

#include "common/message.h"
#include "storage/store.h"

namespace witmq::storage::testing {

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it on destruction.
class TempDir {
 public:
  TempDir() {
    const char* base = getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/witmq-storage-XXXXXX";
    if (mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed: " + tmpl);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// A message whose bytes are a function of (seed, size), so a reader can rebuild what was written.
inline Message make_message(uint64_t seed, size_t size, bool with_metadata = false) {
  Message m;
  m.data.resize(size);
  uint64_t x = seed * 0x9e3779b97f4a7c15ULL + 1;
  for (auto& b : m.data) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    b = static_cast<uint8_t>(x);
  }
  m.format = static_cast<Format>(seed % kFormatCount);
  if (with_metadata) {
    m.metadata = Metadata{{"seed", std::to_string(seed)}, {"empty", ""}};
  }
  return m;
}

// Counts callbacks down to zero; wait() gives up after a deadline so a lost callback fails the test
// instead of hanging it.
class Countdown {
 public:
  explicit Countdown(size_t n) : left_(n) {}
  void done() {
    std::lock_guard lock(mu_);
    if (left_ > 0 && --left_ == 0) cv_.notify_all();
  }
  bool wait(std::chrono::seconds timeout = std::chrono::seconds(20)) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return left_ == 0; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  size_t left_;
};

// A test with a store open in its own temporary directory.
class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override { open(); }

  StoreTest() {
    options_.path = dir_.sub("db");
    options_.write_buffer_size = 4 << 20;
    options_.block_cache_bytes = 8 << 20;
  }

  void open() {
    auto s = Store::open(options_);
    ASSERT_TRUE(s.ok()) << s.error().to_string();
    store_ = std::move(s).value();
  }
  void reopen() {
    store_.reset();
    open();
  }

  TempDir dir_;
  StoreOptions options_;  // used by open(); a test may change it and reopen()
  std::unique_ptr<Store> store_;
};

}  // namespace witmq::storage::testing
