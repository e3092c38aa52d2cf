#include "net/frames.h"

#include <limits>
#include <type_traits>

namespace witmq::net {

std::string_view frame_type_name(FrameType type) {
  switch (type) {
    case FrameType::kConnect:
      return "connect";
    case FrameType::kSend:
      return "send";
    case FrameType::kSubscribeTryReceive:
      return "subscribe-try-receive";
    case FrameType::kSubscribeReceive:
      return "subscribe-receive";
    case FrameType::kUpdateGuestConfiguration:
      return "update-guest-configuration";
    case FrameType::kCompleteMessage:
      return "complete-message";
    case FrameType::kAbandonMessage:
      return "abandon-message";
    case FrameType::kStreamStart:
      return "stream-start";
    case FrameType::kCredit:
      return "credit";
    case FrameType::kStreamStop:
      return "stream-stop";
    case FrameType::kPing:
      return "ping";
    case FrameType::kChannelList:
      return "channel-list";
    case FrameType::kChannelDeclare:
      return "channel-declare";
    case FrameType::kChannelDelete:
      return "channel-delete";
    case FrameType::kChannelStats:
      return "channel-stats";
    case FrameType::kBrowse:
      return "browse";
    case FrameType::kReplayDeadLetters:
      return "replay-dead-letters";
    case FrameType::kPurge:
      return "purge";
    case FrameType::kServerStats:
      return "server-stats";
    case FrameType::kConnectOk:
      return "connect-ok";
    case FrameType::kSendOk:
      return "send-ok";
    case FrameType::kSubscribeTryReceiveOk:
      return "subscribe-try-receive-ok";
    case FrameType::kSubscribeReceiveOk:
      return "subscribe-receive-ok";
    case FrameType::kUpdateGuestConfigurationOk:
      return "update-guest-configuration-ok";
    case FrameType::kCompleteMessageOk:
      return "complete-message-ok";
    case FrameType::kAbandonMessageOk:
      return "abandon-message-ok";
    case FrameType::kStreamStartOk:
      return "stream-start-ok";
    case FrameType::kCreditOk:
      return "credit-ok";
    case FrameType::kStreamStopOk:
      return "stream-stop-ok";
    case FrameType::kPong:
      return "pong";
    case FrameType::kChannelListOk:
      return "channel-list-ok";
    case FrameType::kChannelDeclareOk:
      return "channel-declare-ok";
    case FrameType::kChannelDeleteOk:
      return "channel-delete-ok";
    case FrameType::kChannelStatsOk:
      return "channel-stats-ok";
    case FrameType::kBrowseOk:
      return "browse-ok";
    case FrameType::kReplayDeadLettersOk:
      return "replay-dead-letters-ok";
    case FrameType::kPurgeOk:
      return "purge-ok";
    case FrameType::kServerStatsOk:
      return "server-stats-ok";
    case FrameType::kRequest:
      return "request";
    case FrameType::kReply:
      return "reply";
    case FrameType::kRequestOk:
      return "request-ok";
    case FrameType::kReplyOk:
      return "reply-ok";
    case FrameType::kDeliver:
      return "deliver";
    case FrameType::kStreamEnd:
      return "stream-end";
    case FrameType::kGoaway:
      return "goaway";
    case FrameType::kError:
      return "error";
  }
  return "unknown";
}

bool is_known_frame_type(uint8_t code) {
  return frame_type_name(static_cast<FrameType>(code)) != "unknown";
}

bool is_request_type(FrameType type) { return static_cast<uint8_t>(type) < 0x80; }

Limits client_limits(const ServerLimits& announced) {
  auto or_max = [](uint32_t v) { return v == 0 ? std::numeric_limits<uint32_t>::max() : v; };
  Limits l;
  l.max_frame_bytes = or_max(announced.max_frame_bytes);
  l.max_batch_messages = or_max(announced.max_receive_messages);
  l.max_message_bytes = or_max(announced.max_message_bytes);
  l.max_metadata_entries = or_max(announced.max_metadata_entries);
  l.max_metadata_bytes = or_max(announced.max_metadata_bytes);
  l.max_config_channels = or_max(announced.max_config_channels);
  return l;
}

FrameType Frame::type() const {
  return std::visit(
      [](const auto& b) {
        using T = std::decay_t<decltype(b)>;
        if constexpr (std::is_same_v<T, AdminRequest>) {
          return static_cast<FrameType>(kAdminRequestBase + static_cast<uint8_t>(b.op));
        } else if constexpr (std::is_same_v<T, AdminReply>) {
          return static_cast<FrameType>(kAdminReplyBase + static_cast<uint8_t>(b.op));
        } else {
          return T::kType;
        }
      },
      body);
}

}  // namespace witmq::net
