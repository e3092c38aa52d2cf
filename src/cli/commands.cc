#include "cli/commands.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/exit_codes.h"
#include "cli/message_output.h"
#include "cli/reply_command.h"
#include "client/client.h"
#include "client/tls_context.h"
#include "net/codec.h"

namespace witmq::cli {
namespace {

using client::Client;
using Clock = std::chrono::steady_clock;

// Context for one command's run: where to print and how to report failures.
struct Runner {
  const CliCommand& cmd;
  std::istream& in;
  std::ostream& out;
  std::ostream& err;
  std::string prefix;  // "witmq send"
  std::unique_ptr<Client> client;

  // Reports a failed call: exit 3 when the connection is gone, else 1.
  int failed(std::string_view what, const Error& e) {
    if (client && !client->is_open()) {
      err << fmt::format("{}: connection to {}:{} lost during {}: {}\n", prefix, cmd.server.host,
                         cmd.server.port, what, e.to_string());
      return kExitUnavailable;
    }
    err << fmt::format("{}: {}: {}\n", prefix, what, e.to_string());
    return kExitServerError;
  }

  int connect() {
    client::Options options;
    options.token = cmd.token;
    options.connect_timeout = std::chrono::milliseconds(cmd.connect_timeout_ms);
    options.tls = cmd.tls;
    if (cmd.tls.enabled) {
      // A TLS file that does not load is the caller's mistake, not the server's refusal.
      if (auto ctx = client::make_client_tls_context(cmd.tls); !ctx.ok()) {
        err << fmt::format("{}: {}\n", prefix, ctx.error().message);
        return kExitUsage;
      }
    }
    if (cmd.tls.insecure) {
      err << fmt::format(
          "{}: warning: --insecure: the server's certificate is not verified; anyone on the "
          "path can pose as the server\n",
          prefix);
    }
    std::vector<client::Endpoint> servers = cmd.servers;
    if (servers.empty()) servers.push_back(cmd.server);
    // With several servers (a cluster), a lost connection moves to the next one.
    if (servers.size() > 1) options.reconnect_timeout = std::chrono::seconds(15);
    std::string where;
    for (const auto& s : servers) {
      where += fmt::format("{}{}:{}", where.empty() ? "" : ",", s.host, s.port);
    }
    auto c = Client::connect(servers, cmd.name, options);
    if (!c.ok()) {
      const Error& e = c.error();
      if (e.code == ErrorCode::kUnavailable) {
        err << fmt::format("{}: cannot connect to {}: {}\n", prefix, where, e.message);
        return kExitUnavailable;
      }
      err << fmt::format("{}: the server at {} refused the connection: {}\n", prefix, where,
                         e.to_string());
      return kExitServerError;
    }
    client = std::move(*c);
    return kExitOk;
  }

  void print(const Message& m) {
    out << format_message(m, cmd.output);
    out.flush();
  }

  // The messages one copy of the send is made of: DATA, all of stdin, or each line of stdin.
  std::vector<Message> base_messages() {
    std::vector<std::string> datas;
    if (cmd.data) {
      datas.push_back(*cmd.data);
    } else if (cmd.lines) {
      std::string line;
      while (std::getline(in, line)) datas.push_back(line);
    } else {
      datas.emplace_back(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    std::vector<Message> out_messages;
    for (auto& d : datas) {
      Message m;
      m.data.assign(d.begin(), d.end());
      m.format = cmd.format;
      if (!cmd.metadata.empty()) m.metadata = cmd.metadata;
      out_messages.push_back(std::move(m));
    }
    return out_messages;
  }

  int send() {
    std::vector<Message> base = base_messages();
    if (base.empty()) {
      err << fmt::format("{}: stdin held no lines; nothing to send\n", prefix);
      return kExitUsage;
    }
    if (int rc = connect(); rc != kExitOk) return rc;
    const auto& limits = client->server_info().limits;
    uint64_t per_frame = cmd.batch;
    if (limits.max_send_messages != 0)
      per_frame = std::min<uint64_t>(per_frame, limits.max_send_messages);
    // Keep each frame well under the server's frame limit.
    const uint64_t frame_budget = limits.max_frame_bytes / 2;
    const uint64_t total = base.size() * cmd.count;
    uint64_t sent = 0;
    std::vector<Message> batch;
    while (sent < total) {
      batch.clear();
      uint64_t bytes = net::message_frame_overhead(cmd.channel);
      while (sent + batch.size() < total && batch.size() < per_frame) {
        const Message& m = base[(sent + batch.size()) % base.size()];
        const uint64_t size = net::message_wire_size(m);
        if (!batch.empty() && bytes + size > frame_budget) break;
        bytes += size;
        batch.push_back(m);
      }
      if (auto st = client->send(cmd.channel, batch); !st.ok()) {
        if (sent > 0) {
          err << fmt::format("{}: {} message(s) were sent before the failure\n", prefix, sent);
        }
        return failed("send", st.error());
      }
      sent += batch.size();
    }
    if (cmd.output == OutputMode::kJson) {
      out << nlohmann::json{{"channel", cmd.channel}, {"sent", sent}}.dump() << "\n";
    } else {
      out << fmt::format("sent {} message{} to {}\n", sent, sent == 1 ? "" : "s", cmd.channel);
    }
    return kExitOk;
  }

  int receive() {
    if (int rc = connect(); rc != kExitOk) return rc;
    // Each receive asks for at most the messages still to be printed: any more in a batch would
    // be acquired but neither printed nor settled. A numeric --ext batch-size lowers that, the
    // server's max-receive-messages bounds the default; a batch-size that is not a number is sent
    // as given, for the server to refuse.
    std::optional<uint64_t> user_batch;  // the last --ext batch-size, when it is a number
    bool batch_as_given = false;         // the last --ext batch-size is not a number
    for (const auto& [key, value] : cmd.extensions) {
      if (key != "batch-size") continue;
      uint64_t n = 0;
      auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
      batch_as_given = value.empty() || ec != std::errc() || p != value.data() + value.size();
      user_batch = batch_as_given ? std::nullopt : std::optional<uint64_t>(n);
    }
    const auto& limits = client->server_info().limits;
    const uint64_t ceiling =
        user_batch ? *user_batch
                   : (limits.max_receive_messages ? limits.max_receive_messages : 10'000);
    uint64_t batch = std::min<uint64_t>(cmd.max, ceiling);
    auto configure = [&](uint64_t batch_size) {
      GuestConfiguration config{{cmd.channel}, cmd.extensions};
      if (!batch_as_given) {
        std::erase_if(*config.extensions,
                      [](const KeyValue& kv) { return kv.first == "batch-size"; });
        config.extensions->emplace_back("batch-size", std::to_string(batch_size));
      }
      return client->update_guest_configuration(config);
    };
    if (auto st = configure(batch); !st.ok())
      return failed("update-guest-configuration", st.error());

    const auto deadline = Clock::now() + std::chrono::milliseconds(cmd.timeout_ms);
    uint32_t got = 0;
    bool first = true;
    while (got < cmd.max) {
      const uint32_t remaining = cmd.max - got;
      if (!batch_as_given && remaining < batch) {
        batch = remaining;
        if (auto st = configure(batch); !st.ok()) {
          return failed("update-guest-configuration", st.error());
        }
      }
      std::vector<Message> messages;
      if (cmd.wait) {
        auto r = client->subscribe_receive(cmd.channel);
        if (!r.ok()) return failed("subscribe-receive", r.error());
        messages = std::move(*r);
      } else {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        if (left.count() <= 0 && !first) break;
        first = false;
        auto r = client->subscribe_try_receive(
            cmd.channel, static_cast<uint32_t>(std::max<int64_t>(left.count(), 0)));
        if (!r.ok()) return failed("subscribe-try-receive", r.error());
        if (!r->has_value()) break;
        messages = std::move(**r);
      }
      for (const auto& m : messages) {
        if (got == cmd.max) break;
        print(m);
        ++got;
        if (cmd.settle == Settle::kComplete) {
          if (auto st = client->complete_message(m); !st.ok()) {
            return failed("complete-message", st.error());
          }
        } else if (cmd.settle == Settle::kAbandon) {
          if (auto st = client->abandon_message(m); !st.ok()) {
            return failed("abandon-message", st.error());
          }
        }
      }
    }
    if (got == 0) {
      err << fmt::format("{}: no message on '{}' within {} ms\n", prefix, cmd.channel,
                         cmd.timeout_ms);
      return kExitNothingReceived;
    }
    return kExitOk;
  }

  int request() {
    std::vector<Message> base = base_messages();
    if (base.size() != 1) {
      err << fmt::format("{}: expected one message to send\n", prefix);
      return kExitUsage;
    }
    if (int rc = connect(); rc != kExitOk) return rc;
    auto r = client->request(cmd.channel, base.front(), std::chrono::milliseconds(cmd.timeout_ms),
                             cmd.replies);
    if (!r.ok()) {
      if (r.error().code == ErrorCode::kTimeout) {
        err << fmt::format("{}: no reply on '{}' within {} ms\n", prefix, cmd.channel,
                           cmd.timeout_ms);
        return kExitNothingReceived;
      }
      return failed("request", r.error());
    }
    for (const auto& m : *r) print(m);
    return kExitOk;
  }

  int respond() {
    if (int rc = connect(); rc != kExitOk) return rc;
    // One request at a time: a larger batch would hold requests another responder could answer.
    GuestConfiguration config{{cmd.channel}, cmd.extensions};
    std::erase_if(*config.extensions, [](const KeyValue& kv) { return kv.first == "batch-size"; });
    config.extensions->emplace_back("batch-size", "1");
    if (auto st = client->update_guest_configuration(config); !st.ok()) {
      return failed("update-guest-configuration", st.error());
    }
    const auto& limits = client->server_info().limits;
    const size_t max_output = limits.max_message_bytes ? limits.max_message_bytes : (1u << 20);
    uint64_t answered = 0;
    while (cmd.respond_max == 0 || answered < cmd.respond_max) {
      auto r = client->subscribe_receive(cmd.channel);
      if (!r.ok()) return failed("subscribe-receive", r.error());
      for (const auto& m : *r) {
        if (find_metadata(m, meta::kReplyTo) == nullptr) {
          const std::string* id = find_metadata(m, meta::kId);
          err << fmt::format("{}: message {} is not a request (no {}); completed unanswered\n",
                             prefix, id ? *id : "?", meta::kReplyTo);
          if (auto st = client->complete_message(m); !st.ok()) {
            return failed("complete-message", st.error());
          }
          continue;
        }
        Message reply;
        reply.format = m.format;
        if (cmd.exec.empty()) {
          reply.data = m.data;
        } else {
          auto output = run_for_reply(cmd.exec, m.data, max_output);
          if (!output.ok()) {
            err << fmt::format("{}: {}; the request is abandoned\n", prefix,
                               output.error().message);
            if (auto st = client->abandon_message(m); !st.ok()) {
              return failed("abandon-message", st.error());
            }
            continue;
          }
          reply.data = std::move(*output);
        }
        if (auto st = client->reply(m, reply); !st.ok()) return failed("reply", st.error());
        if (auto st = client->complete_message(m); !st.ok()) {
          return failed("complete-message", st.error());
        }
        ++answered;
      }
    }
    if (cmd.output == OutputMode::kJson) {
      out << nlohmann::json{{"channel", cmd.channel}, {"answered", answered}}.dump() << "\n";
    } else {
      out << fmt::format("answered {} request{} on {}\n", answered, answered == 1 ? "" : "s",
                         cmd.channel);
    }
    return kExitOk;
  }

  int channels() {
    if (int rc = connect(); rc != kExitOk) return rc;
    auto r = client->list_channels();
    if (!r.ok()) return failed("channel-list", r.error());
    out << format_channel_list(*r, cmd.output);
    return kExitOk;
  }

  int declare() {
    if (int rc = connect(); rc != kExitOk) return rc;
    if (auto st = client->declare_channel(cmd.channel, cmd.settings); !st.ok()) {
      return failed("channel-declare", st.error());
    }
    if (cmd.output == OutputMode::kJson) {
      out << nlohmann::json{{"declared", cmd.channel}}.dump() << "\n";
    } else {
      out << fmt::format("declared {}\n", cmd.channel);
    }
    return kExitOk;
  }

  int remove() {
    if (int rc = connect(); rc != kExitOk) return rc;
    if (auto st = client->delete_channel(cmd.channel); !st.ok()) {
      return failed("channel-delete", st.error());
    }
    if (cmd.output == OutputMode::kJson) {
      out << nlohmann::json{{"deleted", cmd.channel}}.dump() << "\n";
    } else {
      out << fmt::format("deleted {}\n", cmd.channel);
    }
    return kExitOk;
  }

  int stats() {
    if (int rc = connect(); rc != kExitOk) return rc;
    auto r = client->channel_stats(cmd.channel);
    if (!r.ok()) return failed("channel-stats", r.error());
    out << format_channel_stats(*r, cmd.output);
    return kExitOk;
  }

  // Whether `e` is the server's not-found reply (and not a lost connection).
  bool is_not_found(const Error& e) const {
    return e.code == ErrorCode::kNotFound && client->is_open();
  }

  // The dead-letter channel of cmd.channel, and whether it exists yet.
  struct DeadLetterChannel {
    std::string name;
    bool exists = false;
  };

  // Finds cmd.channel's dead-letter channel: CHANNEL itself when its name ends in ".dlq", else
  // its dead-letter-channel setting. The broker creates a dead-letter channel with its first dead
  // letter, so one that does not exist yet is empty, not an error, as long as its source channel
  // exists. A missing source is not-found: CHANNEL, or for a ".dlq" name the channel whose
  // dead-letter channel it would be.
  Result<DeadLetterChannel> find_dead_letter_channel() {
    if (cmd.channel.ends_with(".dlq")) {
      auto self = client->channel_stats(cmd.channel);
      if (self.ok()) return DeadLetterChannel{cmd.channel, true};
      if (!is_not_found(self.error())) return std::move(self).error();
      const std::string source = cmd.channel.substr(0, cmd.channel.size() - 4);
      auto s = client->channel_stats(source);
      if (s.ok() && s->dead_letter_target() == cmd.channel) {
        return DeadLetterChannel{cmd.channel, false};
      }
      if (!s.ok() && !is_not_found(s.error())) return std::move(s).error();
      return std::move(self).error();
    }
    auto source = client->channel_stats(cmd.channel);
    if (!source.ok()) return std::move(source).error();
    DeadLetterChannel dlq{source->dead_letter_target(), true};
    auto st = client->channel_stats(dlq.name);
    if (!st.ok()) {
      if (!is_not_found(st.error())) return std::move(st).error();
      dlq.exists = false;
    }
    return dlq;
  }

  int dead_letters() {
    if (int rc = connect(); rc != kExitOk) return rc;
    auto dlq = find_dead_letter_channel();
    if (!dlq.ok()) return failed("channel-stats", dlq.error());
    if (!dlq->exists) return kExitOk;
    auto r = client->browse(dlq->name, cmd.from, cmd.max);
    if (!r.ok()) return failed(fmt::format("browse {}", dlq->name), r.error());
    for (const auto& m : *r) print(m);
    return kExitOk;
  }

  int replay() {
    if (int rc = connect(); rc != kExitOk) return rc;
    auto dlq = find_dead_letter_channel();
    if (!dlq.ok()) return failed("channel-stats", dlq.error());
    uint64_t moved = 0;
    if (dlq->exists) {
      auto r = client->replay_dead_letters(dlq->name, cmd.replay_max);
      if (!r.ok()) return failed(fmt::format("replay-dead-letters {}", dlq->name), r.error());
      moved = *r;
    }
    if (cmd.output == OutputMode::kJson) {
      out << nlohmann::json{{"channel", dlq->name}, {"moved", moved}}.dump() << "\n";
    } else {
      out << fmt::format("moved {} message{} from {}\n", moved, moved == 1 ? "" : "s", dlq->name);
    }
    return kExitOk;
  }

  int purge() {
    if (int rc = connect(); rc != kExitOk) return rc;
    auto r = client->purge(cmd.channel);
    if (!r.ok()) return failed("purge", r.error());
    if (cmd.output == OutputMode::kJson) {
      out << nlohmann::json{{"channel", cmd.channel}, {"purged", *r}}.dump() << "\n";
    } else {
      out << fmt::format("purged {} message{} from {}\n", *r, *r == 1 ? "" : "s", cmd.channel);
    }
    return kExitOk;
  }

  int server_stats() {
    if (int rc = connect(); rc != kExitOk) return rc;
    auto r = client->server_stats();
    if (!r.ok()) return failed("server-stats", r.error());
    auto j = nlohmann::json::parse(*r, nullptr, false);
    out << (j.is_discarded() ? *r : j.dump(cmd.output == OutputMode::kJson ? -1 : 2)) << "\n";
    return kExitOk;
  }

  // The "cluster" member of server-stats (the daemon adds it in cluster mode).
  int cluster() {
    if (int rc = connect(); rc != kExitOk) return rc;
    auto r = client->server_stats();
    if (!r.ok()) return failed("server-stats", r.error());
    auto j = nlohmann::json::parse(*r, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("cluster")) {
      err << fmt::format("{}: the server is not in cluster mode (no cluster-node-id)\n", prefix);
      return kExitServerError;
    }
    const nlohmann::json& c = j["cluster"];
    if (cmd.output == OutputMode::kJson) {
      out << c.dump() << "\n";
      return kExitOk;
    }
    out << format_cluster(c);
    return kExitOk;
  }

  int ping() {
    if (int rc = connect(); rc != kExitOk) return rc;
    const auto start = Clock::now();
    auto r = client->ping(42);
    if (!r.ok()) return failed("ping", r.error());
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    const auto& info = client->server_info();
    if (cmd.output == OutputMode::kJson) {
      out << nlohmann::json{{"server", info.server}, {"version", info.version}, {"rtt_ms", ms}}
                 .dump()
          << "\n";
    } else {
      out << fmt::format("pong from {} (protocol {}) in {:.3f} ms\n", info.server, info.version,
                         ms);
    }
    return kExitOk;
  }
};

}  // namespace

int run_command(const CliCommand& cmd, std::istream& in, std::ostream& out, std::ostream& err) {
  Runner r{cmd, in, out, err, fmt::format("witmq {}", command_name(cmd.kind)), nullptr};
  switch (cmd.kind) {
    case CommandKind::kHelp:
      out << usage(cmd.help_topic);
      return kExitOk;
    case CommandKind::kSend:
      return r.send();
    case CommandKind::kReceive:
      return r.receive();
    case CommandKind::kChannels:
      return r.channels();
    case CommandKind::kDeclare:
      return r.declare();
    case CommandKind::kDelete:
      return r.remove();
    case CommandKind::kStats:
      return r.stats();
    case CommandKind::kDeadLetters:
      return r.dead_letters();
    case CommandKind::kReplay:
      return r.replay();
    case CommandKind::kPurge:
      return r.purge();
    case CommandKind::kServerStats:
      return r.server_stats();
    case CommandKind::kCluster:
      return r.cluster();
    case CommandKind::kPing:
      return r.ping();
    case CommandKind::kRequest:
      return r.request();
    case CommandKind::kRespond:
      return r.respond();
  }
  return kExitUsage;
}

}  // namespace witmq::cli
