// The canonical ABI against a real wabt instance of wat/abi_probe.wat (memory, a counting bump
// cabi_realloc, and a guest-configuration built in the module's static data).
#include "guest/canonical_abi.h"

#include <gtest/gtest.h>

#include <cstring>

#include "guest/handle_table.h"
#include "guest/test_wasm.h"
#include "guest/wasm_runtime.h"

namespace witmq::guest {
namespace {

using testing::wasm_path;

// ---- Layouts, derived by hand from the canonical ABI rules ---------------------------------

// message: data list<u8> @0 (8, align 4); format enum of 6 cases = u8 @8; metadata
// option<list<..>> = u8 discriminant + list at 4 -> 12 bytes, align 4, @12; total 24, align 4.
static_assert(abi::kMessage == abi::Layout{24, 4});
static_assert(abi::kMessageData == 0 && abi::kMessageFormat == 8 && abi::kMessageMetadata == 12);
static_assert(abi::kOptionKeyValues == abi::Layout{12, 4} && abi::kOptionPayload == 4);
static_assert(abi::kKeyValue == abi::Layout{16, 4});
static_assert(abi::kFormat == abi::Layout{1, 1});
// guest-configuration: channels @0 (8), extensions option @8 (12) -> 20, align 4.
static_assert(abi::kGuestConfiguration == abi::Layout{20, 4});
static_assert(abi::kConfigChannels == 0 && abi::kConfigExtensions == 8);
// result<_, error>: u8 + handle at 4 -> 8.
static_assert(abi::kResultUnit == abi::Layout{8, 4} && abi::kResultUnitPayload == 4);
static_assert(abi::kResultHandle == abi::Layout{8, 4});
// result<guest-configuration, error>: u8 + payload at 4 (20 bytes) -> 24.
static_assert(abi::kResultConfiguration == abi::Layout{24, 4});
static_assert(abi::kResultConfigurationPayload == 4);
// result<list<message>, error>: u8 + list at 4 -> 12.
static_assert(abi::kResultMessages == abi::Layout{12, 4});
// result<option<list<message>>, error>: u8 + option (12) at 4 -> 16.
static_assert(abi::kResultOptionMessages == abi::Layout{16, 4});
static_assert(abi::kResultOptionMessagesPayload == 4);
// Discriminant widths.
static_assert(abi::discriminant(2) == abi::kU8 && abi::discriminant(256) == abi::kU8);
static_assert(abi::discriminant(257) == abi::kU16 && abi::discriminant(65537) == abi::kU32);
// Flat forms.
static_assert(abi::kFlatMessage == 6 && abi::kFlatGuestConfiguration == 5);

TEST(CanonicalAbiLayout, RecordPadsToAlignment) {
  // record { a: u8, b: u32, c: u8 } = 1 + 3 pad + 4 + 1 + 3 pad = 12, align 4
  EXPECT_EQ(abi::record({abi::kU8, abi::kU32, abi::kU8}), (abi::Layout{12, 4}));
  EXPECT_EQ(abi::field_offset({abi::kU8, abi::kU32, abi::kU8}, 2), 8u);
  // variant with u16 discriminant and u8 payload: 2 + 1 -> 4, align 2
  EXPECT_EQ(abi::variant(300, {abi::kU8}), (abi::Layout{4, 2}));
}

// ---- A real instance ------------------------------------------------------------------------

ModuleRequirements probe_requirements() {
  ModuleRequirements r;
  r.exports = {{"cabi_realloc",
                {{ValType::kI32, ValType::kI32, ValType::kI32, ValType::kI32}, {ValType::kI32}}}};
  return r;
}

class ProbeMemory : public abi::GuestMemory {
 public:
  explicit ProbeMemory(WasmInstance& w) : w_(w), realloc_(w.find_export("cabi_realloc")) {}
  std::span<uint8_t> bytes() override {
    return {w_.memory_data(), static_cast<size_t>(w_.memory_size())};
  }
  uint32_t realloc(uint32_t old_ptr, uint32_t old_size, uint32_t align,
                   uint32_t new_size) override {
    std::vector<RawValue> out;
    CallOutcome o = w_.call(realloc_, {old_ptr, old_size, align, new_size}, &out);
    if (!o.ok()) throw GuestTrap(o.message);
    ++calls;
    return static_cast<uint32_t>(out.at(0));
  }
  int calls = 0;

 private:
  WasmInstance& w_;
  int realloc_;
};

class CanonicalAbiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto module = WasmModule::compile_file(wasm_path("abi_probe"), probe_requirements(), {});
    ASSERT_TRUE(module.ok()) << module.error().message;
    auto inst = WasmInstance::instantiate(*module, {});
    ASSERT_TRUE(inst.ok()) << inst.error().message;
    wasm_ = std::move(inst).value();
    mem_ = std::make_unique<ProbeMemory>(*wasm_);
  }

  uint32_t call_ptr(const char* name) {
    std::vector<RawValue> out;
    CallOutcome o = wasm_->call(wasm_->find_export(name), {}, &out);
    EXPECT_TRUE(o.ok()) << o.message;
    return static_cast<uint32_t>(out.at(0));
  }
  uint32_t u32_at(uint32_t ptr) {
    uint32_t v;
    std::memcpy(&v, wasm_->memory_data() + ptr, 4);
    return v;
  }
  std::string str_at(uint32_t ptr, uint32_t len) {
    return std::string(reinterpret_cast<const char*>(wasm_->memory_data() + ptr), len);
  }

  std::unique_ptr<WasmInstance> wasm_;
  std::unique_ptr<ProbeMemory> mem_;
};

std::vector<Message> sample_batch() {
  Message a;
  a.data = {'h', 'e', 'l', 'l', 'o'};
  a.format = Format::kCloudevents;
  a.metadata = Metadata{{"witmq-id", "orders/1"}, {"k\xc3\xa9y", "v"}};
  Message b;
  b.format = Format::kRaw;  // empty data, no metadata
  Message c;
  c.data = {0, 1, 2};
  c.format = Format::kKafka;
  c.metadata = Metadata{};  // some(empty list)
  return {a, b, c};
}

TEST_F(CanonicalAbiTest, LowerListOfMessagesLaysOutEveryField) {
  const auto batch = sample_batch();
  const auto [ptr, len] = abi::lower_messages(*mem_, batch);
  ASSERT_EQ(len, 3u);
  EXPECT_EQ(ptr % 4, 0u);
  // One realloc for the outer list, then per message: data, and when metadata is some, the
  // tuple list plus one per string.
  EXPECT_EQ(mem_->calls, 1 + (1 + 1 + 4) + 1 + (1 + 1));

  // Message 0, read back by hand at the computed offsets.
  const uint32_t m0 = ptr;
  EXPECT_EQ(str_at(u32_at(m0 + 0), u32_at(m0 + 4)), "hello");
  EXPECT_EQ(wasm_->memory_data()[m0 + 8], 0);   // cloudevents
  EXPECT_EQ(wasm_->memory_data()[m0 + 12], 1);  // some
  const uint32_t kv = u32_at(m0 + 16);
  EXPECT_EQ(u32_at(m0 + 20), 2u);
  EXPECT_EQ(kv % 4, 0u);
  EXPECT_EQ(str_at(u32_at(kv), u32_at(kv + 4)), "witmq-id");
  EXPECT_EQ(str_at(u32_at(kv + 8), u32_at(kv + 12)), "orders/1");
  EXPECT_EQ(str_at(u32_at(kv + 16), u32_at(kv + 20)), "k\xc3\xa9y");
  // Message 1: empty data, raw, none.
  const uint32_t m1 = ptr + 24;
  EXPECT_EQ(u32_at(m1 + 4), 0u);
  EXPECT_EQ(wasm_->memory_data()[m1 + 8], 5);
  EXPECT_EQ(wasm_->memory_data()[m1 + 12], 0);
  // Message 2: kafka, some(empty).
  const uint32_t m2 = ptr + 48;
  EXPECT_EQ(wasm_->memory_data()[m2 + 8], 4);
  EXPECT_EQ(wasm_->memory_data()[m2 + 12], 1);
  EXPECT_EQ(u32_at(m2 + 20), 0u);

  // And lifting gives the batch back.
  EXPECT_EQ(abi::lift_messages(*mem_, ptr, len), batch);
}

TEST_F(CanonicalAbiTest, LiftGuestConfigurationBuiltByTheGuest) {
  const uint32_t ptr = call_ptr("config_ok");
  auto result = abi::load_result_configuration(*mem_, ptr);
  ASSERT_TRUE(std::holds_alternative<GuestConfiguration>(result));
  const auto& gc = std::get<GuestConfiguration>(result);
  EXPECT_EQ(gc.channels, (std::vector<std::string>{"orders", "orders.audit"}));
  ASSERT_TRUE(gc.extensions.has_value());
  EXPECT_EQ(*gc.extensions, (Metadata{{"start", "earliest"}}));
}

TEST_F(CanonicalAbiTest, GuestConfigurationRoundTrips) {
  GuestConfiguration gc{{"a", "b.c"}, Metadata{{"group", "g1"}, {"batch-size", "10"}}};
  const uint32_t at =
      mem_->realloc(0, 0, abi::kGuestConfiguration.align, abi::kGuestConfiguration.size);
  abi::store_guest_configuration(*mem_, at, gc);
  EXPECT_EQ(abi::load_guest_configuration(*mem_, at), gc);
}

TEST_F(CanonicalAbiTest, InvalidUtf8Traps) {
  const uint32_t ptr = call_ptr("config_bad_utf8");
  EXPECT_THROW(abi::load_result_configuration(*mem_, ptr), GuestTrap);
}

TEST_F(CanonicalAbiTest, OutOfBoundsListTraps) {
  const uint32_t ptr = call_ptr("config_out_of_bounds");
  try {
    abi::load_result_configuration(*mem_, ptr);
    FAIL() << "expected a trap";
  } catch (const GuestTrap& t) {
    EXPECT_NE(std::string(t.what()).find("outside guest memory"), std::string::npos) << t.what();
  }
}

TEST_F(CanonicalAbiTest, BadDiscriminantTraps) {
  const uint32_t ptr = call_ptr("config_bad_discriminant");
  EXPECT_THROW(abi::load_result_configuration(*mem_, ptr), GuestTrap);
}

TEST_F(CanonicalAbiTest, PointerChecks) {
  const uint32_t size = static_cast<uint32_t>(wasm_->memory_size());
  // A list that ends exactly at the end of memory is fine; one byte more is not.
  EXPECT_NO_THROW(abi::lift_bytes(*mem_, size - 4, 4));
  EXPECT_THROW(abi::lift_bytes(*mem_, size - 4, 5), GuestTrap);
  // ptr + len wrapping past 2^32 is caught.
  EXPECT_THROW(abi::lift_bytes(*mem_, 0xffffffffu, 2), GuestTrap);
  // list<message> must be 4-byte aligned, and len * 24 is computed without overflow.
  EXPECT_THROW(abi::lift_messages(*mem_, 1026, 1), GuestTrap);
  EXPECT_THROW(abi::lift_messages(*mem_, 1024, 0x20000000u), GuestTrap);
  // format-spec has 6 cases.
  EXPECT_THROW(abi::lift_format(6), GuestTrap);
  EXPECT_EQ(abi::lift_format(5), Format::kRaw);
  // Return areas are checked before anything is stored.
  EXPECT_THROW(abi::store_result_unit(*mem_, size - 4, std::nullopt), GuestTrap);
  EXPECT_THROW(abi::store_result_unit(*mem_, 1026, std::nullopt), GuestTrap);
}

TEST_F(CanonicalAbiTest, ResultsThroughReturnAreas) {
  const uint32_t area = mem_->realloc(0, 0, 4, 16);
  abi::store_result_option_messages(*mem_, area, std::nullopt);
  EXPECT_EQ(wasm_->memory_data()[area], 0);      // ok
  EXPECT_EQ(wasm_->memory_data()[area + 4], 0);  // none
  abi::store_result_option_messages(*mem_, area, sample_batch());
  EXPECT_EQ(wasm_->memory_data()[area + 4], 1);  // some
  EXPECT_EQ(abi::lift_messages(*mem_, u32_at(area + 8), u32_at(area + 12)), sample_batch());
  abi::store_result_error(*mem_, area, abi::kResultOptionMessages,
                          abi::kResultOptionMessagesPayload, {7});
  EXPECT_EQ(wasm_->memory_data()[area], 1);
  EXPECT_EQ(u32_at(area + 4), 7u);
  abi::store_result_unit(*mem_, area, abi::ErrorHandle{3});
  auto err = abi::load_result_unit(*mem_, area);
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->index, 3u);
  abi::store_string_result(*mem_, area, "trace text");
  EXPECT_EQ(str_at(u32_at(area), u32_at(area + 4)), "trace text");
}

TEST(CanonicalAbiUtf8, Validation) {
  EXPECT_TRUE(abi::valid_utf8("plain"));
  EXPECT_TRUE(abi::valid_utf8("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"));
  EXPECT_FALSE(abi::valid_utf8("\xc0\xaf"));          // overlong
  EXPECT_FALSE(abi::valid_utf8("\xed\xa0\x80"));      // surrogate
  EXPECT_FALSE(abi::valid_utf8("\xf4\x90\x80\x80"));  // > U+10FFFF
  EXPECT_FALSE(abi::valid_utf8("\xe2\x82"));          // truncated
  EXPECT_FALSE(abi::valid_utf8("\x80"));              // stray continuation
}

TEST(HandleTable, IssuesFromOneAndTrapsOnDeadHandles) {
  HandleTable<int> t("client", 8);
  EXPECT_THROW(t.get(0, "use"), GuestTrap);
  const uint32_t a = t.add(10);
  const uint32_t b = t.add(20);
  EXPECT_EQ(a, 1u);
  EXPECT_EQ(b, 2u);
  EXPECT_EQ(t.get(a, "use"), 10);
  EXPECT_EQ(t.take(a, "drop"), 10);
  EXPECT_THROW(t.get(a, "use"), GuestTrap);
  EXPECT_THROW(t.take(a, "drop"), GuestTrap);
  EXPECT_THROW(t.get(99, "use"), GuestTrap);
  EXPECT_EQ(t.add(30), 1u);  // the freed slot is reused
  EXPECT_EQ(t.size(), 2u);
  try {
    t.get(7, "send");
    FAIL();
  } catch (const GuestTrap& e) {
    EXPECT_STREQ(e.what(), "send: client handle 7 is not live (never issued or already dropped)");
  }
}

}  // namespace
}  // namespace witmq::guest
