// The handle through which Python passes a stats block to the cycle loop.
#pragma once

#include <memory>

#include "mxrc/ring.hpp"
#include "mxrc/stats.hpp"

namespace mxrc::bindings {

// keepalive owns the memory behind `block` (a segment mapping plus the slot
// claim, or a standalone block); hold a copy for as long as `block` is used.
// `rings` is the slot's ring set in the segment (invalid for a standalone
// block); keepalive keeps it mapped too. Registered as mxrc._core.bus.StatsSlot.
struct StatsSlot {
  std::shared_ptr<void> keepalive;
  mxrc::StatsBlock* block;
  mxrc::RingSet rings{};
};

}  // namespace mxrc::bindings
