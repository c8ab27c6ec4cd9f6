#include "mxrc/ring.hpp"

#include <signal.h>
#include <unistd.h>

#include <functional>
#include <mutex>
#include <new>
#include <stdexcept>
#include <thread>

#include "mxrc.h"

namespace mxrc {

// The ring's priorities and record sizes are the C ABI's.
static_assert(static_cast<int>(Priority::Critical) == MXRC_PRIO_CRITICAL);
static_assert(static_cast<int>(Priority::High) == MXRC_PRIO_HIGH);
static_assert(static_cast<int>(Priority::Normal) == MXRC_PRIO_NORMAL);
static_assert(static_cast<int>(Priority::Low) == MXRC_PRIO_LOW);
static_assert(kRingRecordSize[static_cast<uint32_t>(RingKind::Event)] == sizeof(mxrc_event));
static_assert(kRingRecordSize[static_cast<uint32_t>(RingKind::Critical)] == sizeof(mxrc_event));
static_assert(kRingRecordSize[static_cast<uint32_t>(RingKind::Command)] == sizeof(mxrc_event));

namespace {

constexpr auto kAcq = std::memory_order_acquire;
constexpr auto kRel = std::memory_order_release;
constexpr auto kRelaxed = std::memory_order_relaxed;

constexpr std::size_t kAlign = 64;

std::size_t round_up(std::size_t v, std::size_t to) noexcept { return (v + to - 1) / to * to; }

bool power_of_two(uint64_t v) noexcept { return v != 0 && (v & (v - 1)) == 0; }

bool process_gone(int32_t pid) noexcept {
  return pid > 0 && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
}

// Striped process-local mutexes for RingSideLock (no allocation per ring).
constexpr std::size_t kStripes = 64;
std::mutex& stripe(const void* word) noexcept {
  static std::mutex stripes[kStripes];
  return stripes[std::hash<const void*>{}(word) % kStripes];
}

}  // namespace

const char* priority_name(int priority) noexcept {
  switch (priority) {
    case 0:
      return "CRITICAL";
    case 1:
      return "HIGH";
    case 2:
      return "NORMAL";
    case 3:
      return "LOW";
    default:
      return "UNKNOWN";
  }
}

void validate_ring_geometry(uint32_t capacity, uint32_t record_size, const char* what) {
  if (!power_of_two(capacity) || capacity < kRingMinCapacity || capacity > kRingMaxCapacity) {
    throw std::invalid_argument(std::string(what) + " capacity must be a power of two in " +
                                std::to_string(kRingMinCapacity) + ".." +
                                std::to_string(kRingMaxCapacity) + " records, got " +
                                std::to_string(capacity));
  }
  if (record_size < 8 || record_size > kRingMaxRecordSize || record_size % 8 != 0) {
    throw std::invalid_argument(std::string(what) + " record size must be a multiple of 8 in 8.." +
                                std::to_string(kRingMaxRecordSize) + " bytes, got " +
                                std::to_string(record_size));
  }
}

std::size_t ring_bytes(uint32_t capacity, uint32_t record_size) {
  validate_ring_geometry(capacity, record_size);
  return round_up(sizeof(RingHeader) + std::size_t{capacity} * (8 + std::size_t{record_size}),
                  kAlign);
}

SpscRing::SpscRing(RingHeader* h) noexcept
    : h_(h),
      slots_(reinterpret_cast<unsigned char*>(h) + sizeof(RingHeader)),
      mask_(h->capacity.load(kAcq) - 1ULL),
      stride_(8 + std::size_t{h->record_size.load(kAcq)}),
      cap_(h->capacity.load(kAcq)),
      rec_(h->record_size.load(kAcq)) {}

SpscRing SpscRing::format(void* mem, uint32_t capacity, uint32_t record_size) {
  const std::size_t bytes = ring_bytes(capacity, record_size);
  if (reinterpret_cast<uintptr_t>(mem) % kAlign != 0) {
    throw std::invalid_argument("ring memory must be 64-byte aligned");
  }
  auto* h = new (mem) RingHeader;
  h->magic.store(0, kRelaxed);
  h->capacity.store(capacity, kRelaxed);
  h->record_size.store(record_size, kRelaxed);
  h->overflowed.store(0, kRelaxed);
  h->producer_lock.store(0, kRelaxed);
  h->consumer_lock.store(0, kRelaxed);
  h->reserved0.store(0, kRelaxed);
  h->head.store(0, kRelaxed);
  h->dropped.store(0, kRelaxed);
  h->tail_cache.store(0, kRelaxed);
  for (auto& d : h->dropped_by_priority) d.store(0, kRelaxed);
  h->tail.store(0, kRelaxed);
  h->head_cache.store(0, kRelaxed);
  // Slot words: atomics with trivial construction; their content is only
  // read after a push published it.
  auto* slots = static_cast<unsigned char*>(mem) + sizeof(RingHeader);
  const std::size_t words = (bytes - sizeof(RingHeader)) / 8;
  for (std::size_t i = 0; i < words; ++i) {
    new (slots + i * 8) std::atomic<uint64_t>(0);
  }
  h->magic.store(kRingMagic, kRel);
  return SpscRing(h);
}

SpscRing SpscRing::attach(void* mem, std::size_t avail, const char* what) {
  const std::string name(what);
  if (avail < sizeof(RingHeader)) {
    throw std::runtime_error(name + ": " + std::to_string(avail) + " bytes, too small for a ring");
  }
  auto* h = std::launder(reinterpret_cast<RingHeader*>(mem));
  if (h->magic.load(kAcq) != kRingMagic) throw std::runtime_error(name + ": not a formatted ring");
  const uint32_t cap = h->capacity.load(kAcq);
  const uint32_t rec = h->record_size.load(kAcq);
  try {
    validate_ring_geometry(cap, rec, what);
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(e.what());
  }
  const std::size_t need = ring_bytes(cap, rec);
  if (need > avail) {
    throw std::runtime_error(name + ": needs " + std::to_string(need) + " bytes, region has " +
                             std::to_string(avail));
  }
  return SpscRing(h);
}

uint64_t SpscRing::size() const noexcept {
  if (!h_) return 0;
  // tail first: head read afterwards is at least as new, so head >= tail.
  const uint64_t tail = h_->tail.load(kAcq);
  const uint64_t head = h_->head.load(kAcq);
  const uint64_t fill = head >= tail ? head - tail : 0;
  return fill > cap_ ? cap_ : fill;
}

RingCounters SpscRing::counters() const noexcept {
  RingCounters c;
  if (!h_) return c;
  c.capacity = cap_;
  c.record_size = rec_;
  c.popped = h_->tail.load(kAcq);
  c.accepted = h_->head.load(kAcq);
  c.dropped = h_->dropped.load(kAcq);
  c.pushed = c.accepted + c.dropped;
  const uint64_t fill = c.accepted >= c.popped ? c.accepted - c.popped : 0;
  c.size = fill > cap_ ? cap_ : fill;
  for (int p = 0; p < kPriorityCount; ++p) {
    c.dropped_by_priority[p] = h_->dropped_by_priority[p].load(kAcq);
  }
  c.overflowed = h_->overflowed.load(kAcq) != 0;
  return c;
}

void SpscRing::clear_overflow() noexcept {
  if (h_) h_->overflowed.store(0, kRel);
}

// ---------------------------------------------------------------- RingSideLock

RingSideLock::RingSideLock(const SpscRing& ring, Side side) noexcept
    : word_(ring.valid()
                ? (side == Producer ? &ring.header()->producer_lock : &ring.header()->consumer_lock)
                : nullptr),
      mutex_(word_ ? &stripe(word_) : nullptr) {}

bool RingSideLock::lock(std::chrono::milliseconds timeout) {
  if (!word_ || locked_) return locked_ || !word_;
  auto& m = *static_cast<std::mutex*>(mutex_);
  const auto give_up = std::chrono::steady_clock::now() + timeout;
  if (!m.try_lock()) {
    // Another thread of this process is inside a push/pop: brief.
    while (!m.try_lock()) {
      if (std::chrono::steady_clock::now() > give_up) {
        holder_ = static_cast<int32_t>(::getpid());
        return false;
      }
      std::this_thread::yield();
    }
  }
  const auto me = static_cast<int32_t>(::getpid());
  for (;;) {
    int32_t cur = 0;
    if (word_->compare_exchange_strong(cur, me, std::memory_order_acq_rel)) break;
    // cur == me: left by this process (it died in the middle only if it was
    // a fork parent's word); we hold the process-local mutex, so take it.
    if ((cur == me || process_gone(cur)) &&
        word_->compare_exchange_strong(cur, me, std::memory_order_acq_rel)) {
      break;
    }
    if (std::chrono::steady_clock::now() > give_up) {
      holder_ = cur;
      m.unlock();
      return false;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
  locked_ = true;
  holder_ = me;
  return true;
}

void RingSideLock::unlock() noexcept {
  if (!locked_) return;
  word_->store(0, kRel);
  static_cast<std::mutex*>(mutex_)->unlock();
  locked_ = false;
}

// ---------------------------------------------------------------- ring sets

const char* ring_kind_name(RingKind k) noexcept {
  switch (k) {
    case RingKind::Log:
      return "log";
    case RingKind::Span:
      return "span";
    case RingKind::Event:
      return "event";
    case RingKind::Critical:
      return "critical";
    case RingKind::Command:
      return "command";
  }
  return "unknown";
}

uint32_t RingCapacities::of(RingKind k) const noexcept {
  switch (k) {
    case RingKind::Log:
      return log;
    case RingKind::Span:
      return span;
    case RingKind::Event:
      return event;
    case RingKind::Critical:
      return critical;
    case RingKind::Command:
      return command;
  }
  return 0;
}

namespace {

std::string ring_what(RingKind k) { return std::string(ring_kind_name(k)) + " ring"; }

}  // namespace

std::size_t ring_set_bytes(const RingCapacities& caps) {
  std::size_t total = round_up(sizeof(RingSetHeader), kAlign);
  for (uint32_t i = 0; i < kRingKinds; ++i) {
    const auto k = static_cast<RingKind>(i);
    validate_ring_geometry(caps.of(k), kRingRecordSize[i], ring_what(k).c_str());
    total += ring_bytes(caps.of(k), kRingRecordSize[i]);
  }
  return total;
}

RingSet RingSet::format(void* mem, const RingCapacities& caps, uint32_t slot_index,
                        std::atomic<uint32_t>* segment_flag) {
  (void)ring_set_bytes(caps);  // validates every geometry first
  if (reinterpret_cast<uintptr_t>(mem) % kAlign != 0) {
    throw std::invalid_argument("ring set memory must be 64-byte aligned");
  }
  auto* h = new (mem) RingSetHeader;
  h->magic.store(0, kRelaxed);
  h->slot_index.store(slot_index, kRelaxed);
  h->critical_overflow.store(0, kRelaxed);
  RingSet set;
  set.h_ = h;
  set.segment_flag_ = segment_flag;
  std::size_t offset = round_up(sizeof(RingSetHeader), kAlign);
  for (uint32_t i = 0; i < kRingKinds; ++i) {
    const auto k = static_cast<RingKind>(i);
    const std::size_t bytes = ring_bytes(caps.of(k), kRingRecordSize[i]);
    h->ring_offset[i].store(offset, kRelaxed);
    h->ring_bytes[i].store(bytes, kRelaxed);
    set.rings_[i] =
        SpscRing::format(static_cast<unsigned char*>(mem) + offset, caps.of(k), kRingRecordSize[i]);
    offset += bytes;
  }
  h->magic.store(kRingSetMagic, kRel);
  return set;
}

RingSet RingSet::attach(void* mem, std::size_t avail, const RingCapacities& caps,
                        std::atomic<uint32_t>* segment_flag) {
  if (avail < sizeof(RingSetHeader)) throw std::runtime_error("ring set region too small");
  auto* h = std::launder(reinterpret_cast<RingSetHeader*>(mem));
  if (h->magic.load(kAcq) != kRingSetMagic) throw std::runtime_error("not a formatted ring set");
  RingSet set;
  set.h_ = h;
  set.segment_flag_ = segment_flag;
  for (uint32_t i = 0; i < kRingKinds; ++i) {
    const auto k = static_cast<RingKind>(i);
    const uint64_t offset = h->ring_offset[i].load(kAcq);
    const uint64_t bytes = h->ring_bytes[i].load(kAcq);
    if (offset < sizeof(RingSetHeader) || offset > avail || bytes > avail - offset) {
      throw std::runtime_error(ring_what(k) + " lies outside its ring set");
    }
    set.rings_[i] = SpscRing::attach(static_cast<unsigned char*>(mem) + offset,
                                     static_cast<std::size_t>(bytes), ring_what(k).c_str());
    if (set.rings_[i].capacity() != caps.of(k) ||
        set.rings_[i].record_size() != kRingRecordSize[i]) {
      throw std::runtime_error(ring_what(k) + " has " + std::to_string(set.rings_[i].capacity()) +
                               " records of " + std::to_string(set.rings_[i].record_size()) +
                               " bytes, the header says " + std::to_string(caps.of(k)) + " of " +
                               std::to_string(kRingRecordSize[i]));
    }
  }
  return set;
}

uint32_t RingSet::slot_index() const noexcept { return h_ ? h_->slot_index.load(kAcq) : 0; }

bool RingSet::critical_overflow() const noexcept {
  return h_ && h_->critical_overflow.load(kAcq) != 0;
}

void RingSet::clear_critical_overflow() noexcept {
  if (h_) h_->critical_overflow.store(0, kRel);
}

void RingSet::flag_critical_overflow() noexcept {
  if (!h_) return;
  if (h_->critical_overflow.load(kRelaxed) == 0) h_->critical_overflow.store(1, kRel);
  if (segment_flag_ && segment_flag_->load(kRelaxed) == 0) segment_flag_->store(1, kRel);
}

}  // namespace mxrc
