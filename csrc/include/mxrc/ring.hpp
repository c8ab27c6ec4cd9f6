// Bounded single-producer/single-consumer rings of fixed-size records in
// shared memory, and the per-cycle-thread ring set of the segment.
//
// A ring is a RingHeader followed by `capacity` slots (capacity a power of
// two); a slot is one length word and record_size / 8 record words. Every
// word is a std::atomic<uint64_t>: the producer stores the record's words and
// length (relaxed), then publishes it by advancing `head` (release); the
// consumer reads `head` (acquire), copies the record out and frees the slot
// by advancing `tail` (release). head and tail only grow (64-bit: they never
// wrap in practice), so a ring keeps its indices across producer and consumer
// restarts and `head - tail` is always the fill.
//
// When the ring is full the NEWEST record is dropped and counted; the
// producer never waits and never moves the consumer's index (an
// overwrite-oldest SPSC ring would, and the consumer would read torn
// records). Priority decides admission, not order: try_push_admitted() drops
// LOW at >= 80 % fill, NORMAL at >= 90 %, HIGH and CRITICAL only when full.
//
// Roles. At most one thread pushes and one thread pops at any time.
// try_push()/try_pop() assume it (the cycle thread is the only producer of
// its RT->agent rings and the only consumer of its command ring): noexcept,
// no allocation, no lock, no system call. Non-RT code that may have several
// producers (or consumers) in several threads or processes serialises them
// with RingSideLock (a process-local mutex plus a pid word in the header).
//
// Counters (each an atomic; a snapshot across them is not atomic, so the
// identity below holds exactly once the ring is quiet):
//   pushed = accepted + dropped, accepted = head, popped = tail,
//   pushed = popped + dropped + size().
#pragma once

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

namespace mxrc {

// Event priorities (= MXRC_PRIO_* of mxrc.h).
enum class Priority : int { Critical = 0, High = 1, Normal = 2, Low = 3 };
inline constexpr int kPriorityCount = 4;
const char* priority_name(int priority) noexcept;  // "CRITICAL", ..., or "UNKNOWN"

inline constexpr uint64_t kRingMagic = 0x474E495243525843ULL;  // bytes "CXRCRING"
inline constexpr uint32_t kRingMinCapacity = 2;
inline constexpr uint32_t kRingMaxCapacity = 1U << 24;    // records
inline constexpr uint32_t kRingMaxRecordSize = 1U << 16;  // bytes

struct alignas(64) RingHeader {
  // Geometry, written once when the ring is formatted.
  std::atomic<uint64_t> magic;         // kRingMagic
  std::atomic<uint32_t> capacity;      // records, a power of two
  std::atomic<uint32_t> record_size;   // bytes per record, a multiple of 8
  std::atomic<uint32_t> overflowed;    // sticky: 1 once a record was dropped
  std::atomic<int32_t> producer_lock;  // pid of the non-RT producer inside a push (0 = none)
  std::atomic<int32_t> consumer_lock;  // pid of the non-RT consumer inside a pop (0 = none)
  std::atomic<uint32_t> reserved0;
  // Written by the producer only.
  alignas(64) std::atomic<uint64_t> head;  // records accepted = next slot to write
  std::atomic<uint64_t> dropped;           // records refused (full or admission)
  std::atomic<uint64_t> tail_cache;        // the producer's last view of tail
  std::atomic<uint64_t> dropped_by_priority[kPriorityCount];  // try_push_admitted drops
  // Written by the consumer only.
  alignas(64) std::atomic<uint64_t> tail;  // records taken = next slot to read
  std::atomic<uint64_t> head_cache;        // the consumer's last view of head
};

static_assert(std::atomic<uint64_t>::is_always_lock_free);
static_assert(std::atomic<uint32_t>::is_always_lock_free);
static_assert(std::atomic<int32_t>::is_always_lock_free);
static_assert(std::is_standard_layout_v<RingHeader>);
static_assert(sizeof(RingHeader) == 192);  // three cache lines

// Plain copy of a ring's counters.
struct RingCounters {
  uint32_t capacity = 0;
  uint32_t record_size = 0;
  uint64_t pushed = 0;    // accepted + dropped
  uint64_t accepted = 0;  // head
  uint64_t dropped = 0;
  uint64_t popped = 0;  // tail
  uint64_t size = 0;    // accepted - popped, at most capacity
  uint64_t dropped_by_priority[kPriorityCount] = {0, 0, 0, 0};
  bool overflowed = false;
};

// Bytes of a ring (header + slots), a multiple of 64. Throws
// std::invalid_argument for a bad geometry (see validate_ring_geometry).
std::size_t ring_bytes(uint32_t capacity, uint32_t record_size);
// capacity a power of two in kRingMinCapacity..kRingMaxCapacity, record_size
// a multiple of 8 in 8..kRingMaxRecordSize; else std::invalid_argument
// naming `what` (e.g. "event ring").
void validate_ring_geometry(uint32_t capacity, uint32_t record_size, const char* what = "ring");

// Whether `fill` records in a ring of `capacity` leave room for a record of
// this priority (LOW below 80 %, NORMAL below 90 %, HIGH/CRITICAL below 100 %).
constexpr bool ring_admits(uint64_t fill, uint64_t capacity, int priority) noexcept {
  switch (priority) {
    case static_cast<int>(Priority::Low):
      return fill * 5 < capacity * 4;
    case static_cast<int>(Priority::Normal):
      return fill * 10 < capacity * 9;
    default:
      return fill < capacity;
  }
}

// A view of one ring (no ownership: the memory must outlive it). Copyable.
class SpscRing {
 public:
  SpscRing() noexcept = default;

  // Lays out a zeroed ring at `mem` (64-byte aligned, ring_bytes() long).
  // Not concurrent with any user of that memory.
  static SpscRing format(void* mem, uint32_t capacity, uint32_t record_size);
  // A view of a formatted ring of `avail` bytes at `mem`; throws
  // std::runtime_error naming `what` when it is not a valid ring.
  static SpscRing attach(void* mem, std::size_t avail, const char* what = "ring");

  bool valid() const noexcept { return h_ != nullptr; }
  RingHeader* header() const noexcept { return h_; }
  uint32_t capacity() const noexcept { return cap_; }
  uint32_t record_size() const noexcept { return rec_; }

  // Producer. 0: queued. ENOSPC: dropped (full), counted. EINVAL: len >
  // record_size or no ring (not counted).
  int try_push(const void* rec, std::size_t len) noexcept {
    return push(rec, len, static_cast<int>(Priority::High), false);
  }
  // As try_push, admission by priority (MXRC_PRIO_*); ENOSPC also when the
  // fill is above the priority's threshold; EINVAL for an unknown priority.
  int try_push_admitted(const void* rec, std::size_t len, int priority) noexcept {
    if (priority < 0 || priority >= kPriorityCount) return EINVAL;
    return push(rec, len, priority, true);
  }

  // Consumer. 0: the oldest record copied to out, *len = its length.
  // EAGAIN: empty. EMSGSIZE: cap is smaller than the record (*len = its
  // length; the record stays). EINVAL: no ring.
  int try_pop(void* out, std::size_t cap, std::size_t* len) noexcept;

  // Any thread or process.
  uint64_t size() const noexcept;  // records waiting (0..capacity)
  RingCounters counters() const noexcept;
  bool overflowed() const noexcept {
    return h_ && h_->overflowed.load(std::memory_order_acquire) != 0;
  }
  // Clears the sticky overflow flag (non-RT; e.g. after an operator's reset).
  void clear_overflow() noexcept;

 private:
  explicit SpscRing(RingHeader* h) noexcept;
  std::atomic<uint64_t>* slot(uint64_t index) const noexcept {
    return reinterpret_cast<std::atomic<uint64_t>*>(slots_ + (index & mask_) * stride_);
  }
  int push(const void* rec, std::size_t len, int priority, bool admission) noexcept;
  void count_drop(int priority, bool admission) noexcept;

  RingHeader* h_ = nullptr;
  unsigned char* slots_ = nullptr;
  uint64_t mask_ = 0;
  std::size_t stride_ = 0;  // 8 + record_size
  uint32_t cap_ = 0;
  uint32_t rec_ = 0;
};

inline int SpscRing::push(const void* rec, std::size_t len, int priority, bool admission) noexcept {
  constexpr auto kRelaxed = std::memory_order_relaxed;
  if (h_ == nullptr || len > rec_ || (rec == nullptr && len > 0)) return EINVAL;
  const uint64_t head = h_->head.load(kRelaxed);  // ours: only the producer writes it
  uint64_t tail = h_->tail_cache.load(kRelaxed);
  if (!ring_admits(head - tail, cap_, priority)) {
    // The cached tail is old (tail only grows): look at the real one.
    tail = h_->tail.load(std::memory_order_acquire);
    h_->tail_cache.store(tail, kRelaxed);
    if (!ring_admits(head - tail, cap_, priority)) {
      count_drop(priority, admission);
      return ENOSPC;
    }
  }
  std::atomic<uint64_t>* s = slot(head);
  const auto* src = static_cast<const unsigned char*>(rec);
  const std::size_t words = (len + 7) / 8;
  for (std::size_t i = 0; i < words; ++i) {
    uint64_t w = 0;
    const std::size_t n = (i + 1) * 8 <= len ? 8 : len - i * 8;
    std::memcpy(&w, src + i * 8, n);
    s[1 + i].store(w, kRelaxed);
  }
  s[0].store(len, kRelaxed);
  h_->head.store(head + 1, std::memory_order_release);
  return 0;
}

inline void SpscRing::count_drop(int priority, bool admission) noexcept {
  constexpr auto kRelaxed = std::memory_order_relaxed;
  // Single producer: load + store, no read-modify-write needed.
  h_->dropped.store(h_->dropped.load(kRelaxed) + 1, std::memory_order_release);
  if (admission) {
    auto& d = h_->dropped_by_priority[priority];
    d.store(d.load(kRelaxed) + 1, kRelaxed);
  }
  if (h_->overflowed.load(kRelaxed) == 0) h_->overflowed.store(1, std::memory_order_release);
}

inline int SpscRing::try_pop(void* out, std::size_t cap, std::size_t* len) noexcept {
  constexpr auto kRelaxed = std::memory_order_relaxed;
  if (h_ == nullptr) return EINVAL;
  const uint64_t tail = h_->tail.load(kRelaxed);  // ours: only the consumer writes it
  uint64_t head = h_->head_cache.load(kRelaxed);
  if (head == tail) {
    head = h_->head.load(std::memory_order_acquire);
    h_->head_cache.store(head, kRelaxed);
    if (head == tail) return EAGAIN;
  }
  const std::atomic<uint64_t>* s = slot(tail);
  uint64_t n = s[0].load(kRelaxed);
  if (n > rec_) n = rec_;  // a corrupt length never makes us read past the slot
  if (len) *len = static_cast<std::size_t>(n);
  if (n > cap) return EMSGSIZE;
  auto* dst = static_cast<unsigned char*>(out);
  const std::size_t words = static_cast<std::size_t>((n + 7) / 8);
  for (std::size_t i = 0; i < words; ++i) {
    const uint64_t w = s[1 + i].load(kRelaxed);
    const std::size_t k = (i + 1) * 8 <= n ? 8 : static_cast<std::size_t>(n) - i * 8;
    std::memcpy(dst + i * 8, &w, k);
  }
  h_->tail.store(tail + 1, std::memory_order_release);
  return 0;
}

// Serialises the non-RT producers (side Producer) or consumers (Consumer) of
// one ring across threads (a process-local mutex) and processes (the pid word
// in the header; a dead holder's word is taken over). Never on the cycle
// thread. lock() waits up to `timeout` and returns false if another live
// process kept the word (holder_pid() names it).
class RingSideLock {
 public:
  enum Side { Producer, Consumer };
  RingSideLock(const SpscRing& ring, Side side) noexcept;
  ~RingSideLock() { unlock(); }
  RingSideLock(const RingSideLock&) = delete;
  RingSideLock& operator=(const RingSideLock&) = delete;
  bool lock(std::chrono::milliseconds timeout);
  void unlock() noexcept;
  int32_t holder_pid() const noexcept { return holder_; }

 private:
  std::atomic<int32_t>* word_;
  void* mutex_;
  bool locked_ = false;
  int32_t holder_ = 0;
};

// ---------------------------------------------------------------- ring sets

// The rings of one cycle thread (one per stats slot of the segment).
enum class RingKind : uint32_t { Log = 0, Span = 1, Event = 2, Critical = 3, Command = 4 };
inline constexpr uint32_t kRingKinds = 5;
// Record size of each kind, bytes: log 256, span 128, event 256 (one
// mxrc_event), critical 256, command 256 (agent -> RT).
inline constexpr uint32_t kRingRecordSize[kRingKinds] = {256, 128, 256, 256, 256};
const char* ring_kind_name(RingKind k) noexcept;  // "log", "span", "event", "critical", "command"

struct RingCapacities {
  uint32_t log = 8192;
  uint32_t span = 4096;
  uint32_t event = 1024;
  uint32_t critical = 64;
  uint32_t command = 256;
  uint32_t of(RingKind k) const noexcept;
};

struct alignas(64) RingSetHeader {
  std::atomic<uint64_t> magic;                    // kRingSetMagic
  std::atomic<uint32_t> slot_index;               // the stats slot it belongs to
  std::atomic<uint32_t> critical_overflow;        // sticky: the critical ring dropped a record
  std::atomic<uint64_t> ring_offset[kRingKinds];  // bytes from this header
  std::atomic<uint64_t> ring_bytes[kRingKinds];
};
inline constexpr uint64_t kRingSetMagic = 0x5445534743525843ULL;  // bytes "CXRCGSET"
static_assert(std::is_standard_layout_v<RingSetHeader>);

// Bytes of one ring set with these capacities (a multiple of 64).
std::size_t ring_set_bytes(const RingCapacities& caps);

// A view of one ring set. Copyable; the memory must outlive it.
class RingSet {
 public:
  RingSet() noexcept = default;
  // Lays out a ring set at `mem` (64-byte aligned, ring_set_bytes() long).
  // `segment_flag` (may be null): the segment header's sticky
  // critical_overflow word, also set when the critical ring overflows.
  static RingSet format(void* mem, const RingCapacities& caps, uint32_t slot_index,
                        std::atomic<uint32_t>* segment_flag);
  // Validates and views a formatted set; throws std::runtime_error.
  static RingSet attach(void* mem, std::size_t avail, const RingCapacities& caps,
                        std::atomic<uint32_t>* segment_flag);

  bool valid() const noexcept { return h_ != nullptr; }
  uint32_t slot_index() const noexcept;
  SpscRing& ring(RingKind k) noexcept { return rings_[static_cast<uint32_t>(k)]; }
  const SpscRing& ring(RingKind k) const noexcept { return rings_[static_cast<uint32_t>(k)]; }
  SpscRing& log() noexcept { return ring(RingKind::Log); }
  SpscRing& span() noexcept { return ring(RingKind::Span); }
  SpscRing& event() noexcept { return ring(RingKind::Event); }
  SpscRing& critical() noexcept { return ring(RingKind::Critical); }
  SpscRing& command() noexcept { return ring(RingKind::Command); }

  // RT -> agent event (the producer side of the event and critical rings):
  // CRITICAL goes to the critical ring, whose overflow sets the sticky
  // critical_overflow flags (this set's and the segment's); other priorities
  // go to the event ring with admission. Returns like try_push_admitted.
  int publish_event(const void* rec, std::size_t len, int priority) noexcept {
    if (priority == static_cast<int>(Priority::Critical)) {
      const int rc = critical().try_push_admitted(rec, len, priority);
      if (rc == ENOSPC) flag_critical_overflow();
      return rc;
    }
    return event().try_push_admitted(rec, len, priority);
  }
  // Agent -> RT: the next command/event, like SpscRing::try_pop.
  int poll_command(void* out, std::size_t cap, std::size_t* len) noexcept {
    return command().try_pop(out, cap, len);
  }

  bool critical_overflow() const noexcept;
  void clear_critical_overflow() noexcept;  // this set's flag only

 private:
  void flag_critical_overflow() noexcept;
  RingSetHeader* h_ = nullptr;
  std::atomic<uint32_t>* segment_flag_ = nullptr;
  SpscRing rings_[kRingKinds];
};

}  // namespace mxrc
