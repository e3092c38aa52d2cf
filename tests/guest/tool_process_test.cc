// The child processes of the compiled guest tier (src/guest/tool_process.h): bounded in time,
// in what they write, and killed with everything they started.
#include "guest/tool_process.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace witmq::guest {
namespace {

using namespace std::chrono_literals;

TEST(ToolProcess, OutputAndExitStatusAreReported) {
  ToolLimits limits;
  limits.max_output = 8;
  auto run =
      run_tool({"/bin/sh", "-c", "echo 0123456789abcdef; echo err >&2; exit 3"}, "/", limits);
  ASSERT_TRUE(run.ok()) << run.error().message;
  EXPECT_FALSE(run->ok());
  EXPECT_EQ(run->exit_code, 3);
  EXPECT_EQ(run->output, "01234567");  // the first max_output bytes
  EXPECT_EQ(run->describe(limits), "exited with status 3");
}

TEST(ToolProcess, ATimeoutKillsTheToolAndWhatItStarted) {
  const std::string pid_file =
      (std::filesystem::temp_directory_path() / ("witmq-tool-" + std::to_string(getpid())))
          .string();
  ToolLimits limits;
  limits.timeout = 200ms;
  auto run =
      run_tool({"/bin/sh", "-c", "sleep 60 & echo $! > " + pid_file + "; sleep 60"}, "/", limits);
  ASSERT_TRUE(run.ok()) << run.error().message;
  EXPECT_TRUE(run->timed_out);
  EXPECT_EQ(run->describe(limits), "timed out after 200 ms");
  pid_t background = 0;
  std::ifstream(pid_file) >> background;
  std::filesystem::remove(pid_file);
  ASSERT_GT(background, 0);
  // The background sleep was in the tool's process group: killed too (gone, or a zombie
  // waiting for init to reap it).
  bool gone = false;
  for (int i = 0; i < 200 && !gone; ++i) {
    std::ifstream stat("/proc/" + std::to_string(background) + "/stat");
    std::string pid, comm, state;
    gone = !(stat >> pid >> comm >> state) || state == "Z";
    if (!gone) usleep(10'000);
  }
  EXPECT_TRUE(gone);
}

TEST(ToolProcess, AFileLargerThanTheLimitEndsTheTool) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("witmq-tool-fsize-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  ToolLimits limits;
  limits.max_file_bytes = 1u << 20;
  auto run = run_tool({"/bin/sh", "-c", "head -c 4000000 /dev/zero > big"}, dir.string(), limits);
  ASSERT_TRUE(run.ok()) << run.error().message;
  EXPECT_FALSE(run->ok());
  EXPECT_LE(std::filesystem::file_size(dir / "big"), 1u << 20);
  std::filesystem::remove_all(dir);
}

TEST(ToolProcess, AToolThatCannotStartIsReported) {
  auto run = run_tool({"/nonexistent/tool"}, "/", ToolLimits{});
  ASSERT_TRUE(run.ok());
  EXPECT_EQ(run->exit_code, 127);
}

}  // namespace
}  // namespace witmq::guest
