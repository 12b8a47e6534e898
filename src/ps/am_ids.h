// Active-message ids of the parameter server's emulated-RMA paths.
#pragma once

#include <cstdint>

#include "src/ps/protocol.h"

namespace rdmaps::ps {

constexpr uint16_t kAmPush = 10;       ///< worker -> server: SlotHeader + payload into an inbox slot
constexpr uint16_t kAmWriteBack = 11;  ///< server -> worker: bytes into the receive region

/// Header of a write-back active message.
struct WriteBackHeader {
  uint64_t offset;   ///< byte offset in the worker's receive region
  uint32_t mailbox;  ///< 1: the payload is empty and `box` is the new mailbox
  uint32_t reserved;
  Mailbox box;
};

}  // namespace rdmaps::ps
