// Guest configuration keys: parsing, errors naming the key, and docs/GUESTS.md kept in step with
// the one place the keys are defined.
#include "guest/guest_options.h"

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace witmq::guest {
namespace {

using nlohmann::json;

TEST(GuestOptions, ParsesEveryKey) {
  auto o = guest_options_from_json(json::parse(R"({
    "name": "audit", "module": "guests/echo.wasm", "instances": 3,
    "instruction-budget": 5000000, "memory-pages": 32, "channels": ["orders", "orders.eu"],
    "group": "auditors", "batch-size": 50, "batch-wait-ms": 250, "restart-backoff-ms": 100
  })"),
                                   "guests[0]");
  ASSERT_TRUE(o.ok()) << o.error().message;
  EXPECT_EQ(o->name, "audit");
  EXPECT_EQ(o->module_path, "guests/echo.wasm");
  EXPECT_EQ(o->instances, 3u);
  EXPECT_EQ(o->instruction_budget, 5'000'000u);
  EXPECT_EQ(o->memory_pages, 32u);
  EXPECT_EQ(o->channels, (std::vector<std::string>{"orders", "orders.eu"}));
  EXPECT_EQ(o->group, "auditors");
  EXPECT_EQ(o->batch_size, 50u);
  EXPECT_EQ(o->batch_wait.count(), 250);
  EXPECT_EQ(o->restart_backoff.count(), 100);
}

TEST(GuestOptions, ErrorsNameTheKeyAndTheValue) {
  auto err = [](const char* text) {
    auto o = guest_options_from_json(json::parse(text), "guests[1]");
    EXPECT_FALSE(o.ok()) << text;
    return o.ok() ? std::string() : o.error().message;
  };
  EXPECT_EQ(err(R"({"name": "g", "module": "m.wasm", "memory-pages": 70000})"),
            "guests[1].memory-pages: 70000 is out of range 1..65536");
  EXPECT_EQ(err(R"({"name": "g", "module": "m.wasm", "instances": "2"})"),
            "guests[1].instances: expected an integer 1..256, got \"2\"");
  EXPECT_EQ(err(R"({"name": "g", "module": "m.wasm", "instances": -1})"),
            "guests[1].instances: expected an integer 1..256, got -1");
  EXPECT_NE(err(R"({"name": "g", "module": "m.wasm", "budget": 1})")
                .find("guests[1].budget: unknown guest setting (known: name, module, instances"),
            std::string::npos);
  EXPECT_NE(err(R"({"name": "g", "module": "m.wasm", "channels": [".bad"]})")
                .find("guests[1].channels: "),
            std::string::npos);
  EXPECT_EQ(err(R"({"module": "m.wasm"})"), "guest '': \"name\" is required (a non-empty string)");
  EXPECT_EQ(err(R"([1])"), "guests[1]: expected an object, got [1]");
}

TEST(GuestOptions, EnvIsAnObjectOfStringsCheckedWithClearErrors) {
  auto o = guest_options_from_json(
      json::parse(R"({"name": "g", "module": "m.wasm", "env": {"B": "2", "A": ""}})"), "guests[0]");
  ASSERT_TRUE(o.ok()) << o.error().message;
  EXPECT_EQ(o->env, (std::vector<std::pair<std::string, std::string>>{{"A", ""}, {"B", "2"}}));
  EXPECT_TRUE(guest_options_from_json(json::parse(R"({"name": "g", "module": "m.wasm"})"), "g")
                  ->env.empty());

  auto err = [](const std::string& text) {
    auto r = guest_options_from_json(json::parse(text), "guests[1]");
    EXPECT_FALSE(r.ok()) << text;
    return r.ok() ? std::string() : r.error().message;
  };
  EXPECT_EQ(err(R"({"name": "g", "module": "m.wasm", "env": ["A=1"]})"),
            "guests[1].env: expected an object of strings {\"NAME\": \"value\"}, got [\"A=1\"]");
  EXPECT_EQ(err(R"({"name": "g", "module": "m.wasm", "env": {"A": 1}})"),
            "guests[1].env: variable 'A': expected a string, got 1");
  EXPECT_EQ(err(R"({"name": "g", "module": "m.wasm", "env": {"A=B": "1"}})"),
            "guest 'g': \"env\" variable name 'A=B' contains '=' or NUL, which a name cannot hold");
  EXPECT_EQ(err(R"({"name": "g", "module": "m.wasm", "env": {"": "1"}})"),
            "guest 'g': \"env\" has a variable name of 0 bytes, expected 1..256");
  EXPECT_EQ(err(R"({"name": "g", "module": "m.wasm", "env": {"A": "x\u0000y"}})"),
            "guest 'g': \"env\" variable 'A' has a value containing NUL");
  EXPECT_EQ(
      err(json({{"name", "g"}, {"module", "m.wasm"}, {"env", {{"A", std::string(4097, 'v')}}}})
              .dump()),
      "guest 'g': \"env\" variable 'A' has a value of 4097 bytes, at most 4096 are allowed");
  json many = json::object();
  for (int i = 0; i < 257; ++i) many["V" + std::to_string(i)] = "1";
  EXPECT_EQ(err(json({{"name", "g"}, {"module", "m.wasm"}, {"env", many}}).dump()),
            "guest 'g': \"env\" has 257 variables, at most 256 are allowed");
}

TEST(GuestOptions, DocsListEveryKey) {
  std::ifstream in(std::string(WITMQ_SOURCE_DIR) + "/docs/GUESTS.md");
  ASSERT_TRUE(in) << "docs/GUESTS.md not found";
  std::stringstream text;
  text << in.rdbuf();
  for (const auto& d : guest_option_docs()) {
    EXPECT_NE(text.str().find("| `" + std::string(d.key) + "` | " + std::string(d.type) + " | "),
              std::string::npos)
        << "docs/GUESTS.md lacks the row for \"" << d.key << "\" (" << d.type << ")";
  }
}

}  // namespace
}  // namespace witmq::guest
