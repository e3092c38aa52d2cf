// The upstream wasi:messaging draft's messaging-core world (worlds.h, guest_world_draft.cc):
// recognition, channels from the settings, handle + producer.send + the message resource
// end to end with the real broker, and hostile guests of that world.
#include <gtest/gtest.h>

#include "guest/guest_fixture.h"
#include "guest/guest_instance.h"

namespace witmq::guest {
namespace {

using namespace testing;  // NOLINT

std::string load_error(const std::string& stem) {
  auto m = load_guest_module(wasm_path(stem), WasmLimits{});
  EXPECT_FALSE(m.ok()) << stem << " was accepted";
  return m.ok() ? std::string() : m.error().message;
}

class DraftWorldTest : public GuestHostTest {
 protected:
  GuestOptions draft(const std::string& name, const std::string& stem) {
    GuestOptions o = options(name, stem);
    o.channels = {"draft.in"};
    return o;
  }
};

class DraftCGuestTest : public DraftWorldTest {
 protected:
  void SetUp() override {
#ifndef WITMQ_EXAMPLE_GUESTS_BUILT
    GTEST_SKIP() << "no clang able to target wasm32-wasi: the C test guests were not built";
#endif
    DraftWorldTest::SetUp();
  }
};

TEST_F(DraftCGuestTest, IsRecognizedAsMessagingCore) {
  auto m = load_guest_module(wasm_path("draft_forward_guest"), WasmLimits{});
  ASSERT_TRUE(m.ok()) << m.error().message;
  EXPECT_EQ(module_world(**m), World::kMessagingCore);
  auto seed = load_guest_module(wasm_path("ok_guest"), WasmLimits{});
  ASSERT_TRUE(seed.ok()) << seed.error().message;
  EXPECT_EQ(module_world(**seed), World::kMessaging);
}

TEST_F(DraftCGuestTest, HandlesEachMessageAndSendsWithTheMessageResource) {
  GuestHost* h = start(draft("draft", "draft_forward_guest"));
  ASSERT_TRUE(h);
  send("draft.in", {text_message("a"), text_message("b")});
  std::vector<Message> got;
  ASSERT_TRUE(eventually([&] {
    auto r = receive("draft.out", 100ms);
    got.insert(got.end(), r.begin(), r.end());
    return got.size() >= 2;
  }));
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(text_of(got[0]), "fwd:a");
  EXPECT_EQ(text_of(got[1]), "fwd:b");
  for (const Message& m : got) {
    const std::string* content_type = find_metadata(m, "content-type");
    ASSERT_NE(content_type, nullptr);
    EXPECT_EQ(*content_type, "text/plain");
    const std::string* from = find_metadata(m, "from");  // message.topic of the delivered one
    ASSERT_NE(from, nullptr);
    EXPECT_EQ(*from, "draft.in");
    EXPECT_NE(find_metadata(m, "had-metadata"), nullptr);
  }
  ASSERT_TRUE(eventually([&] { return h->stats().completed == 2; })) << h->stats().completed;
  EXPECT_EQ(h->stats().traps, 0u);
  EXPECT_EQ(h->stats().handler_errors, 0u);
}

TEST_F(DraftCGuestTest, AnErrAbandonsOnlyThatMessage) {
  GuestHost* h = start(draft("draft", "draft_forward_guest"));
  ASSERT_TRUE(h);
  // One batch: the two good messages are completed although the batch's other one failed.
  send("draft.in", {text_message("ok1"), text_message("fail"), text_message("ok2")});
  auto dead = dead_letters(1, "draft.in.dlq");
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_EQ(text_of(dead[0]), "fail");
  std::vector<std::string> out;
  for (auto r = receive("draft.out", 500ms); !r.empty(); r = receive("draft.out", 200ms)) {
    for (const Message& m : r) out.push_back(text_of(m));
  }
  EXPECT_EQ(out, (std::vector<std::string>{"fwd:ok1", "fwd:ok2"}));
  EXPECT_GE(h->stats().handler_errors, 1u);
  EXPECT_TRUE(logged("refused: fail"));
  EXPECT_EQ(h->stats().traps, 0u);
}

TEST_F(DraftCGuestTest, ASendOutsideTheGrantsReturnsPermissionDenied) {
  GuestOptions o = draft("draft", "draft_forward_guest");
  auth::Grants grants;
  grants.receive.push_back(*auth::ChannelPattern::parse("draft.in"));
  grants.send.push_back(*auth::ChannelPattern::parse("elsewhere"));
  o.permissions = grants;
  GuestHost* h = start(o);
  ASSERT_TRUE(h);
  send("draft.in", {text_message("x")});
  ASSERT_TRUE(eventually([&] { return h->stats().handler_errors >= 1; }));
  EXPECT_TRUE(logged("permission")) << "the err of handle is logged";
  EXPECT_TRUE(logged("draft.out"));
  EXPECT_TRUE(receive("draft.out", 200ms).empty());
  EXPECT_EQ(h->stats().traps, 0u);
}

TEST_F(DraftCGuestTest, WithoutChannelsTheGuestIsRefused) {
  auto h = GuestHost::load(*broker_, options("draft", "draft_forward_guest"), nullptr);
  ASSERT_FALSE(h.ok());
  EXPECT_NE(h.error().message.find("messaging-core"), std::string::npos) << h.error().message;
  EXPECT_NE(h.error().message.find("\"channels\""), std::string::npos) << h.error().message;
}

TEST_F(DraftWorldTest, AModuleOfNoWorldIsRefusedNamingWhatIsMissing) {
  const std::string e = load_error("no_world_guest");
  EXPECT_NE(e.find("matches no world"), std::string::npos) << e;
  EXPECT_NE(e.find(abi_names::kHandler), std::string::npos) << e;
  EXPECT_NE(e.find(draft_names::kHandle), std::string::npos) << e;
}

TEST_F(DraftWorldTest, AnImportWithTheWrongSignatureIsRefused) {
  const std::string e = load_error("draft_wrong_signature_guest");
  EXPECT_NE(e.find("\"wasi:messaging/producer@0.2.0-draft\".\"send\""), std::string::npos) << e;
  EXPECT_NE(e.find("expected (func (param i32 i32 i32 i32 i32))"), std::string::npos) << e;
}

TEST_F(DraftWorldTest, AMessageHandleNeverCreatedTrapsTheGuestOnly) {
  GuestHost* h = start(draft("bad", "draft_bad_handle_guest"));
  ASSERT_TRUE(h);
  send("draft.in", {text_message("x")});
  ASSERT_TRUE(eventually([&] { return h->stats().traps >= 1; }));
  EXPECT_TRUE(logged("message handle 77 is not live"));
  EXPECT_EQ(h->stats().completed, 0u);
}

TEST_F(DraftWorldTest, AHugeLengthTrapsWithoutTheHostCopyingIt) {
  GuestHost* h = start(draft("huge", "draft_huge_guest"));
  ASSERT_TRUE(h);
  send("draft.in", {text_message("x")});
  ASSERT_TRUE(eventually([&] { return h->stats().traps >= 1; }));
  EXPECT_EQ(h->stats().completed, 0u);
  // The broker and other clients carry on.
  send("draft.other", {text_message("still here")});
  auto r = receive("draft.other", 1000ms);
  ASSERT_EQ(r.size(), 1u);
}

}  // namespace
}  // namespace witmq::guest
