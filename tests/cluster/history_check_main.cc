// witmq-history-check FILE [--rules lost,redelivered,order,phantom,epoch]: checks a history
// recorded by the cluster scenarios or tools/chaos.sh (tests/cluster/history.h) and prints its
// figures and violations. Exit 0: no violation; 1: violations; 2: the file or arguments are bad.
#include <cstdio>
#include <sstream>
#include <string>

#include "cluster/history.h"

int main(int argc, char** argv) {
  using namespace witmq::cluster::history;
  std::string path;
  Rules rules;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--rules" && i + 1 < argc) {
      rules = Rules{false, false, false, false, false};
      std::stringstream names(argv[++i]);
      std::string name;
      while (std::getline(names, name, ',')) {
        if (name == "lost") {
          rules.lost = true;
        } else if (name == "redelivered") {
          rules.redelivered = true;
        } else if (name == "order") {
          rules.order = true;
        } else if (name == "phantom") {
          rules.phantom = true;
        } else if (name == "epoch") {
          rules.epoch = true;
        } else {
          std::fprintf(stderr,
                       "--rules: '%s' is not one of lost, redelivered, order, phantom, epoch\n",
                       name.c_str());
          return 2;
        }
      }
    } else if (path.empty() && !arg.starts_with("--")) {
      path = arg;
    } else {
      std::fprintf(stderr, "usage: witmq-history-check FILE [--rules RULE,...]\n");
      return 2;
    }
  }
  if (path.empty()) {
    std::fprintf(stderr, "usage: witmq-history-check FILE [--rules RULE,...]\n");
    return 2;
  }
  std::string error;
  auto ops = read_file(path, &error);
  if (!ops) {
    std::fprintf(stderr, "witmq-history-check: %s\n", error.c_str());
    return 2;
  }
  const Report report = check(*ops, rules);
  std::fputs(report.summary(20).c_str(), stdout);
  return report.ok() ? 0 : 1;
}
