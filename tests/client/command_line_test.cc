// Parsing of the witmq command line (cli/command_line.h) and the shared scanner (cli/args.h).
#include "cli/command_line.h"

#include <gtest/gtest.h>

#include "cli/args.h"

namespace witmq::cli {
namespace {

Result<CliCommand> parse(std::vector<std::string> args, CliEnvironment env = {}) {
  return parse_command_line(args, env);
}

std::string error_of(std::vector<std::string> args) {
  auto r = parse(std::move(args));
  return r.ok() ? std::string("(parsed)") : r.error().message;
}

TEST(CommandLine, DefaultsAndEnvironment) {
  auto r = parse({"channels"});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->kind, CommandKind::kChannels);
  EXPECT_EQ(r->server.host, "127.0.0.1");
  EXPECT_EQ(r->server.port, 7400);
  EXPECT_FALSE(r->token);

  r = parse({"channels"}, {std::string("10.0.0.1:9000"), std::string("tok")});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->server.host, "10.0.0.1");
  EXPECT_EQ(r->server.port, 9000);
  EXPECT_EQ(r->token, std::optional<std::string>("tok"));

  // The flag wins over the environment, before or after the command.
  r = parse({"--server", "localhost:1234", "channels"}, {std::string("10.0.0.1:9000"), {}});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->server.port, 1234);
  r = parse({"channels", "--server=h:5"}, {std::string("10.0.0.1:9000"), {}});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->server.host, "h");
  EXPECT_EQ(r->server.port, 5);
  // A cluster's nodes: a list, from the flag or the environment; `server` is the first.
  r = parse({"--server", "a:1,b:2,c:3", "channels"}, {std::string("10.0.0.1:9000"), {}});
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(r->servers.size(), 3u);
  EXPECT_EQ(r->servers[2], (client::Endpoint{"c", 3}));
  EXPECT_EQ(r->server, (client::Endpoint{"a", 1}));
  r = parse({"channels"}, {std::string("x:7,y:8"), {}});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->servers, (std::vector<client::Endpoint>{{"x", 7}, {"y", 8}}));

  auto bad_env = parse({"channels"}, {std::string("h:0"), {}});
  ASSERT_FALSE(bad_env.ok());
  EXPECT_EQ(bad_env.error().message,
            "witmq: WITMQ_SERVER 'h:0': port '0' is not a number from 1 to 65535");
}

TEST(CommandLine, TlsOptions) {
  auto r = parse({"channels"});
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->tls.enabled);
  r = parse({"--tls", "--ca-file", "ca.pem", "send", "q", "x", "--cert-file=c.pem", "--key-file",
             "c.key"});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE(r->tls.enabled);
  EXPECT_EQ(r->tls.ca_file, "ca.pem");
  EXPECT_EQ(r->tls.cert_file, "c.pem");
  EXPECT_EQ(r->tls.key_file, "c.key");
  EXPECT_FALSE(r->tls.insecure);
  r = parse({"ping", "--tls", "--insecure"});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE(r->tls.insecure);

  EXPECT_EQ(error_of({"--ca-file", "ca.pem", "ping"}), "witmq ping: --ca-file needs --tls");
  EXPECT_EQ(error_of({"ping", "--insecure"}), "witmq ping: --insecure needs --tls");
  EXPECT_NE(error_of({"ping", "--tls", "--cert-file", "c.pem"}).find("--key-file"),
            std::string::npos);
  EXPECT_EQ(error_of({"ping", "--tls", "--insecure", "--ca-file", "ca.pem"}),
            "witmq ping: --insecure and --ca-file exclude each other");
  EXPECT_EQ(error_of({"ping", "--tls=yes"}).find("(parsed)"), std::string::npos);
}

TEST(CommandLine, Send) {
  auto r = parse({"send", "orders", "hello", "--meta", "a=1", "--meta=b=x=y", "--format",
                  "cloudevents", "--count", "3"});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->kind, CommandKind::kSend);
  EXPECT_EQ(r->channel, "orders");
  EXPECT_EQ(r->data, std::optional<std::string>("hello"));
  EXPECT_EQ(r->metadata, (Metadata{{"a", "1"}, {"b", "x=y"}}));
  EXPECT_EQ(r->format, Format::kCloudevents);
  EXPECT_EQ(r->count, 3u);

  r = parse({"send", "orders", "-"});
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->data);  // stdin
  r = parse({"send", "orders", "--lines"});
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->lines);
  EXPECT_FALSE(r->data);
  // "--" lets data start with a dash.
  r = parse({"send", "orders", "--", "-5"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->data, std::optional<std::string>("-5"));
}

TEST(CommandLine, SendErrorsNameTheProblem) {
  EXPECT_EQ(error_of({"send"}), "witmq send: missing CHANNEL");
  EXPECT_NE(error_of({"send", "q", "--format", "xml"}).find("'xml' is not one of"),
            std::string::npos);
  EXPECT_NE(error_of({"send", "q", "--meta", "novalue"}).find("--meta: 'novalue' is not KEY=VALUE"),
            std::string::npos);
  EXPECT_NE(error_of({"send", "q", "--meta", "=v"}).find("non-empty KEY"), std::string::npos);
  EXPECT_NE(error_of({"send", "q", "--count", "0"}).find("--count: '0' is not a whole number"),
            std::string::npos);
  EXPECT_NE(error_of({"send", "q", "--count", "3x"}).find("'3x'"), std::string::npos);
  EXPECT_NE(error_of({"send", "q", "a", "b"}).find("unexpected argument 'b'"), std::string::npos);
  EXPECT_NE(error_of({"send", "q", "--lines", "data"}).find("--lines reads stdin"),
            std::string::npos);
  EXPECT_NE(error_of({"send", "q", "--count"}).find("'--count' needs a value"), std::string::npos);
  EXPECT_EQ(error_of({"send", "bad name"}),
            "witmq send: CHANNEL: byte 3 (0x20) of the name is not one of A-Z a-z 0-9 . _ - : /");
  EXPECT_EQ(error_of({"stats", ".q"}), "witmq stats: CHANNEL '.q': a name may not start with '.'");
  EXPECT_NE(error_of({"send", "q", "--timeout", "5"}).find("unknown option '--timeout'"),
            std::string::npos);
}

TEST(CommandLine, Receive) {
  auto r = parse({"receive", "q"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->timeout_ms, 5000u);
  EXPECT_EQ(r->max, 1u);
  EXPECT_EQ(r->settle, Settle::kNone);
  EXPECT_EQ(r->output, OutputMode::kText);

  r = parse({"receive", "q", "--timeout", "0", "--max", "10", "--complete", "--json", "--ext",
             "start=earliest"});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->timeout_ms, 0u);
  EXPECT_EQ(r->max, 10u);
  EXPECT_EQ(r->settle, Settle::kComplete);
  EXPECT_EQ(r->output, OutputMode::kJson);
  EXPECT_EQ(r->extensions, (Metadata{{"start", "earliest"}}));

  r = parse({"--json", "receive", "q", "--abandon", "--wait"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->settle, Settle::kAbandon);
  EXPECT_TRUE(r->wait);
  EXPECT_EQ(r->output, OutputMode::kJson);

  r = parse({"receive", "q", "--data-only"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->output, OutputMode::kDataOnly);

  EXPECT_NE(error_of({"receive", "q", "--complete", "--abandon"}).find("exclude each other"),
            std::string::npos);
  EXPECT_NE(error_of({"receive", "q", "--wait", "--timeout", "1"}).find("exclude each other"),
            std::string::npos);
  EXPECT_NE(error_of({"receive", "q", "--json", "--data-only"}).find("exclude each other"),
            std::string::npos);
  EXPECT_NE(error_of({"receive", "q", "--max", "0"}).find("--max"), std::string::npos);
}

TEST(CommandLine, AutoSettlementExcludesCompleteAndAbandon) {
  EXPECT_EQ(error_of({"receive", "q", "--ext", "settlement=auto", "--complete"}),
            "witmq receive: --ext settlement=auto settles each message on delivery; it excludes "
            "--complete");
  EXPECT_EQ(error_of({"receive", "q", "--abandon", "--ext=settlement=auto"}),
            "witmq receive: --ext settlement=auto settles each message on delivery; it excludes "
            "--abandon");
  // The last settlement extension is the one the server applies.
  EXPECT_TRUE(parse({"receive", "q", "--ext", "settlement=auto", "--ext", "settlement=explicit",
                     "--complete"})
                  .ok());
  EXPECT_FALSE(parse({"receive", "q", "--ext", "settlement=explicit", "--ext", "settlement=auto",
                      "--complete"})
                   .ok());
  EXPECT_TRUE(parse({"receive", "q", "--ext", "settlement=auto"}).ok());
}

TEST(CommandLine, Declare) {
  auto r = parse({"declare", "t", "--kind", "publish-subscribe", "--durability", "none", "--set",
                  "max-deliveries=3"});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->kind, CommandKind::kDeclare);
  EXPECT_EQ(r->settings,
            (client::ChannelSettings{
                {"kind", "publish-subscribe"}, {"durability", "none"}, {"max-deliveries", "3"}}));
  EXPECT_EQ(error_of({"declare", "t"}),
            "witmq declare: missing --kind point-to-point|publish-subscribe");
  // The server's aliases are accepted and sent as given.
  r = parse({"declare", "q", "--kind", "queue"});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->settings, (client::ChannelSettings{{"kind", "queue"}}));
  r = parse({"declare", "t", "--kind", "topic"});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->settings, (client::ChannelSettings{{"kind", "topic"}}));
  EXPECT_EQ(error_of({"declare", "t", "--kind", "fifo"}),
            "witmq declare: --kind: 'fifo' is not point-to-point (alias queue) or "
            "publish-subscribe (alias topic)");
  EXPECT_NE(error_of({"declare", "t", "--kind", "point-to-point", "--durability", "fast"})
                .find("'fast' is not sync, group or none"),
            std::string::npos);
}

TEST(CommandLine, AdminCommands) {
  for (auto [name, kind] :
       std::vector<std::pair<std::string, CommandKind>>{{"delete", CommandKind::kDelete},
                                                        {"stats", CommandKind::kStats},
                                                        {"dead-letters", CommandKind::kDeadLetters},
                                                        {"replay", CommandKind::kReplay},
                                                        {"purge", CommandKind::kPurge}}) {
    auto r = parse({name, "q"});
    ASSERT_TRUE(r.ok()) << name << ": " << r.error().message;
    EXPECT_EQ(r->kind, kind);
    EXPECT_EQ(r->channel, "q");
    EXPECT_EQ(error_of({name}), "witmq " + name + ": missing CHANNEL");
  }
  auto r = parse({"dead-letters", "q", "--from", "7", "--max", "3"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->from, 7u);
  EXPECT_EQ(r->max, 3u);
  r = parse({"dead-letters", "q"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->max, 100u);
  r = parse({"replay", "q", "--max", "5"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->replay_max, std::optional<uint64_t>(5));
  EXPECT_FALSE(parse({"replay", "q"})->replay_max);
  EXPECT_NE(error_of({"channels", "extra"}).find("unexpected argument 'extra'"), std::string::npos);
  EXPECT_EQ(parse({"server-stats"})->kind, CommandKind::kServerStats);
  EXPECT_EQ(parse({"cluster"})->kind, CommandKind::kCluster);
  EXPECT_NE(error_of({"cluster", "orders"}).find("unexpected argument 'orders'"),
            std::string::npos);
  EXPECT_EQ(parse({"ping"})->kind, CommandKind::kPing);
}

TEST(CommandLine, Help) {
  auto r = parse({"--help"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->kind, CommandKind::kHelp);
  EXPECT_FALSE(r->help_topic);
  r = parse({"send", "--help"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->kind, CommandKind::kHelp);
  EXPECT_EQ(r->help_topic, std::optional<CommandKind>(CommandKind::kSend));
  r = parse({"help", "receive"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->help_topic, std::optional<CommandKind>(CommandKind::kReceive));
  r = parse({"-h", "purge"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->help_topic, std::optional<CommandKind>(CommandKind::kPurge));
  EXPECT_NE(usage(CommandKind::kReceive).find("--complete"), std::string::npos);
  // --timeout is one deadline for the whole command, and the help says so.
  EXPECT_NE(usage(CommandKind::kReceive).find("not per message"), std::string::npos);
  EXPECT_NE(usage(std::nullopt).find("dead-letters CHANNEL"), std::string::npos);
  EXPECT_NE(usage(std::nullopt).find("Exit codes"), std::string::npos);
  EXPECT_NE(error_of({"help", "nope"}).find("unknown command 'nope'"), std::string::npos);
}

TEST(CommandLine, UnknownCommandAndGlobalErrors) {
  EXPECT_EQ(error_of({}), "witmq: no command given (see witmq --help)");
  EXPECT_EQ(error_of({"frobnicate"}), "witmq: unknown command 'frobnicate' (see witmq --help)");
  // Errors in the global options start with the same prefix as every other error: "witmq:"
  // before the command, "witmq COMMAND:" after it.
  EXPECT_EQ(error_of({"--server", "h:99999", "channels"}),
            "witmq: --server 'h:99999': port '99999' is not a number from 1 to 65535");
  EXPECT_EQ(error_of({"channels", "--server", ""}),
            "witmq channels: --server is empty; expected HOST:PORT");
  EXPECT_EQ(error_of({"--connect-timeout", "0", "channels"}),
            "witmq: --connect-timeout: '0' is not a whole number from 1 to 3600000");
  EXPECT_EQ(error_of({"ping", "--connect-timeout=x"}),
            "witmq ping: --connect-timeout: 'x' is not a whole number from 1 to 3600000");
  EXPECT_NE(error_of({"--bogus", "channels"}).find("unknown option '--bogus'"), std::string::npos);
  EXPECT_NE(error_of({"channels", "--json=yes"}).find("takes no value"), std::string::npos);
}

TEST(Args, ScannerForms) {
  const OptionSpec specs[] = {{"a", true}, {"b", false}};
  std::vector<std::string> args{"x", "--a", "1", "--a=2", "--b", "--", "--a", "-"};
  auto r = scan_args(args, specs, "t");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->all("a"), (std::vector<std::string>{"1", "2"}));
  EXPECT_EQ(*r->last("a"), "2");
  EXPECT_TRUE(r->has("b"));
  EXPECT_EQ(r->positional, (std::vector<std::string>{"x", "--a", "-"}));

  auto stop = scan_args(args, specs, "t", /*stop_at_positional=*/true);
  ASSERT_TRUE(stop.ok());
  EXPECT_FALSE(stop->has("a"));
  EXPECT_EQ(stop->positional.size(), args.size());
}

TEST(Args, Numbers) {
  EXPECT_EQ(*parse_uint("n", "42", 0, 100), 42u);
  EXPECT_FALSE(parse_uint("n", "", 0, 100).ok());
  EXPECT_FALSE(parse_uint("n", "-1", 0, 100).ok());
  EXPECT_FALSE(parse_uint("n", "101", 0, 100).ok());
  EXPECT_FALSE(parse_uint("n", "99999999999999999999999", 0, UINT64_MAX).ok());
  EXPECT_EQ(parse_uint("n", "7", 8, 9).error().message,
            "--n: '7' is not a whole number from 8 to 9");
}

TEST(Args, NameField) {
  EXPECT_EQ(name_field("CHANNEL", "channel", "channel: the name is empty"),
            "CHANNEL: the name is empty");
  EXPECT_EQ(name_field("--server", "server address", "server address 'x:': empty port after ':'"),
            "--server 'x:': empty port after ':'");
  EXPECT_EQ(name_field("--channel", "channel", "channelled: odd"), "--channel: channelled: odd");
  EXPECT_EQ(name_field("--channel", "channel", "something else"), "--channel: something else");
}

TEST(Endpoint, Forms) {
  auto e = client::parse_endpoint("example.org:80");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->host, "example.org");
  EXPECT_EQ(e->port, 80);
  e = client::parse_endpoint("example.org");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->port, 7400);
  e = client::parse_endpoint(":9");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->host, "127.0.0.1");
  EXPECT_EQ(e->port, 9);
  e = client::parse_endpoint("[::1]:7500");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->host, "::1");
  EXPECT_EQ(e->port, 7500);
  EXPECT_FALSE(client::parse_endpoint("").ok());
  EXPECT_FALSE(client::parse_endpoint("h:").ok());
  EXPECT_FALSE(client::parse_endpoint("h:0").ok());
  EXPECT_FALSE(client::parse_endpoint("h:65536").ok());
  EXPECT_FALSE(client::parse_endpoint("::1").ok());
  EXPECT_FALSE(client::parse_endpoint("[::1").ok());
  EXPECT_FALSE(client::parse_endpoint("[::1]x").ok());
}

}  // namespace
}  // namespace witmq::cli

namespace witmq::cli {
namespace {

TEST(CommandLine, RequestAndRespond) {
  auto r =
      parse({"request", "svc", "hello", "--timeout", "250", "--replies", "3", "--meta", "k=v"});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->kind, CommandKind::kRequest);
  EXPECT_EQ(r->channel, "svc");
  EXPECT_EQ(r->data, std::optional<std::string>("hello"));
  EXPECT_EQ(r->timeout_ms, 250u);
  EXPECT_EQ(r->replies, 3u);
  EXPECT_EQ(r->metadata, (Metadata{{"k", "v"}}));
  r = parse({"request", "svc", "-"});
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->data.has_value());
  EXPECT_EQ(r->replies, 1u);

  r = parse({"respond", "svc", "--exec", "tr a-z A-Z", "--max", "2", "--ext", "lease-ms=500"});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->kind, CommandKind::kRespond);
  EXPECT_EQ(r->exec, "tr a-z A-Z");
  EXPECT_EQ(r->respond_max, 2u);
  r = parse({"respond", "svc", "--echo"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exec, "");
  EXPECT_EQ(r->respond_max, 0u);

  auto error = [](std::vector<std::string> args) {
    auto p = parse(std::move(args));
    return p.ok() ? std::string("(parsed)") : p.error().message;
  };
  EXPECT_EQ(error({"respond", "svc"}), "witmq respond: give one of --exec CMD and --echo");
  EXPECT_EQ(error({"respond", "svc", "--echo", "--exec", "cat"}),
            "witmq respond: give one of --exec CMD and --echo");
  EXPECT_NE(error({"request", "svc", "x", "--replies", "0"}).find("--replies"), std::string::npos);
  EXPECT_NE(error({"request", "svc", "x", "--replies", "1001"}).find("--replies"),
            std::string::npos);
  EXPECT_NE(error({"request", "svc", "x", "--timeout", "0"}).find("--timeout"), std::string::npos);
  EXPECT_NE(error({"request", "svc", "x", "extra"}).find("unexpected argument 'extra'"),
            std::string::npos);
}

}  // namespace
}  // namespace witmq::cli
