// The torture test's model of what the daemon must still hold after a crash (torture.h), alone:
// the crash check is only as good as its idea of which messages may be gone.
#include <gtest/gtest.h>

#include "torture.h"

namespace witmq::daemon::torture {
namespace {

std::vector<std::string> missing_ids(Model& model, const std::set<std::string>& found) {
  uint64_t checked = 0;
  std::vector<std::string> out;
  for (const auto& [id, channel] : model.missing(found, &checked)) out.push_back(id);
  std::sort(out.begin(), out.end());
  return out;
}

TEST(TortureModelTest, ConfirmedSendsAfterAnAnsweredDeleteMustBeStored) {
  Model model;
  model.sending("before", "t0");
  model.confirmed("before");
  model.delete_started("t0");
  model.disrupted("t0");  // sent
  model.delete_finished("t0");
  model.disrupted("t0");  // answered
  model.sending("after", "t0");
  model.confirmed("after");
  model.daemon_stopped();
  EXPECT_EQ(missing_ids(model, {}), std::vector<std::string>{"after"});
}

// A delete whose connection was closed before its answer may still run on the daemon, after
// sends that other connections made since (the daemon had read it, and an admin call runs to its
// end once started): those sends may be gone too, until the daemon stops.
TEST(TortureModelTest, AGivenUpDeleteMayRemoveLaterSendsUntilTheDaemonStops) {
  Model model;
  model.delete_started("t2");
  model.disrupted("t2");
  model.given_up_removal("t2", /*is_delete=*/true);
  model.sending("m1-1459", "t2");
  model.confirmed("m1-1459");
  model.sending("other", "t1");
  model.confirmed("other");
  // Until the stop the delete is in flight: stats samples on either side are not comparable.
  auto deletes = model.deletes("t2");
  EXPECT_NE(deletes.first, deletes.second);
  model.daemon_stopped();
  deletes = model.deletes("t2");
  EXPECT_EQ(deletes.first, deletes.second);
  EXPECT_EQ(missing_ids(model, {}), std::vector<std::string>{"other"});

  // After the restart the given-up delete is over: new sends are followed again.
  model.sending("next", "t2");
  model.confirmed("next");
  model.daemon_stopped();
  EXPECT_EQ(missing_ids(model, {"other"}), std::vector<std::string>{"next"});
}

TEST(TortureModelTest, AGivenUpPurgeMayRemoveLaterSendsUntilTheDaemonStops) {
  Model model;
  model.disrupted("t3");
  model.given_up_removal("t3", /*is_delete=*/false);
  model.sending("later", "t3");
  model.confirmed("later");
  EXPECT_EQ(model.deletes("t3").first, model.deletes("t3").second);
  model.daemon_stopped();
  EXPECT_TRUE(missing_ids(model, {}).empty());
}

}  // namespace
}  // namespace witmq::daemon::torture
