// Completion-token wrappers over the broker's callback API, so callers can write
// `co_await async_send(broker, client, "orders", msgs, asio::use_awaitable)` or use
// `asio::use_future` in tests. The result is delivered on the token's associated executor (the
// broker's executor when the token has none).
#pragma once

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/post.hpp>
#include <utility>

#include "broker/broker.h"

namespace witmq::broker {

namespace detail {
// Wraps an Asio handler into a broker callback that re-posts the result to the handler's
// executor (broker callbacks run on storage/timer threads and must stay short).
template <typename Handler, typename Result>
auto repost(Broker& b, Handler handler) {
  auto ex = boost::asio::get_associated_executor(handler, b.executor());
  return [h = std::move(handler), ex](Result r) mutable {
    boost::asio::post(ex, [h = std::move(h), r = std::move(r)]() mutable { h(std::move(r)); });
  };
}
}  // namespace detail

template <typename Token>
auto async_send(Broker& b, ClientPtr client, std::string channel, std::vector<Message> messages,
                Token&& token) {
  return boost::asio::async_initiate<Token, void(Status)>(
      [&b](auto handler, ClientPtr c, std::string ch, std::vector<Message> msgs) {
        b.send(c, ch, std::move(msgs),
               detail::repost<decltype(handler), Status>(b, std::move(handler)));
      },
      token, std::move(client), std::move(channel), std::move(messages));
}

template <typename Token>
auto async_receive(Broker& b, ClientPtr client, std::vector<std::string> channels,
                   ReceiveOptions options, Token&& token) {
  using R = Result<std::vector<Message>>;
  return boost::asio::async_initiate<Token, void(R)>(
      [&b](auto handler, ClientPtr c, std::vector<std::string> chs, ReceiveOptions o) {
        b.receive(c, std::move(chs), o,
                  detail::repost<decltype(handler), R>(b, std::move(handler)));
      },
      token, std::move(client), std::move(channels), options);
}

}  // namespace witmq::broker
