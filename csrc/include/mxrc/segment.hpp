// The instance's named shared-memory segment ("the bus"): a versioned header
// and, in layout v2, an array of stats slots (one StatsBlock per cycle
// thread), one ring set per stats slot (ring.hpp: log, span, event and
// critical rings RT -> agent, command ring agent -> RT) and a data store
// region (its format belongs to datastore.hpp). The header also carries the
// agent's heartbeat words.
//
// Layout v2 (every part 64-byte aligned, offsets in the header's region
// table): header | stats slots | ring set 0 .. max_stats-1 | data store
// region | padding to a page.
//
// POSIX shm "/mxrc-<instance>" (file /dev/shm/mxrc-<instance>, mode 0660).
// The owner is the creator; it holds flock(LOCK_EX) on its fd for the
// segment's life, so "the flock is free" means "the owner is gone" (a pid
// could be reused). create() reclaims a segment whose flock is free (owner
// killed) and bumps its generation. The owner unlinks the name on close().
//
// Every shared word is a std::atomic (lock-free, asserted). Objects in the
// mapping are created by the initialising process; others access them
// through std::launder'ed pointers (the usual cross-process convention).
//
// Not for the cycle thread: everything here may allocate, lock or make
// system calls, and throws (SegmentError, SystemError, invalid_argument).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "mxrc/ring.hpp"
#include "mxrc/stats.hpp"

namespace mxrc {

// Missing, foreign, wrong-version or otherwise unusable segment.
class SegmentError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Another live process owns the segment (holds its flock).
class SegmentInUse : public SegmentError {
 public:
  SegmentInUse(const std::string& what, pid_t owner_pid)
      : SegmentError(what), owner_pid_(owner_pid) {}
  pid_t owner_pid() const noexcept { return owner_pid_; }

 private:
  pid_t owner_pid_;
};

inline constexpr uint64_t kSegmentMagic =
    0x314745534352584DULL;  // bytes "MXRCSEG1" (little-endian)
inline constexpr uint32_t kSegmentLayoutVersion = 2;
inline constexpr uint32_t kDefaultMaxStats = 8;
inline constexpr uint32_t kMaxStatsLimit = 256;
inline constexpr std::size_t kInstanceNameMax = 64;
// Default size of the data store region: room for DataStore::region_bytes(256
// slots, 64 KiB arena) with its snapshot area.
inline constexpr uint64_t kDefaultDatastoreRegionBytes = 256 * 1024;
inline constexpr uint64_t kMaxDatastoreRegionBytes = 1ULL << 30;

// What a segment is created with.
struct SegmentOptions {
  uint32_t max_stats = kDefaultMaxStats;  // stats slots = ring sets, 1..kMaxStatsLimit
  RingCapacities rings;                   // records per ring, powers of two
  uint64_t datastore_region_bytes = kDefaultDatastoreRegionBytes;  // 0 = no data store
  // Slots the data store region is meant for, recorded in the header for
  // whoever formats it (DataStore::open); the segment itself never formats it.
  uint32_t datastore_slots = 256;
};

// Slot states (StatsSlotEntry::state).
enum class SlotState : uint32_t {
  Free = 0,      // never claimed (zeroed)
  Claiming = 1,  // a claimer took it, name not yet published
  Named = 2,     // name published, uniqueness being checked
  Claimed = 3,   // in use by a writer
  Released = 4,  // writer done; stats kept readable until the slot is reused
};

const char* slot_state_name(SlotState s) noexcept;

// The first five fields keep their offsets in every layout version (so any
// version can recognise and reclaim any other).
struct alignas(64) SegmentHeader {
  std::atomic<uint64_t> magic;  // kSegmentMagic, stored last at init (release)
  std::atomic<uint32_t> layout_version;
  std::atomic<uint32_t> header_size;  // sizeof(SegmentHeader)
  std::atomic<uint64_t> total_size;   // bytes of the mapping
  std::atomic<uint64_t> generation;   // 1 at creation, +1 per reclaim / bump_generation()
  std::atomic<uint64_t> epoch;        // election epoch (later issues); 0 = none
  std::atomic<int64_t> created_realtime_ns;
  std::atomic<int64_t> wallclock_offset_ns;  // CLOCK_REALTIME - CLOCK_MONOTONIC, by the owner
  std::atomic<int32_t> owner_pid;
  std::atomic<uint32_t> max_stats;
  std::atomic<uint64_t> stats_offset;     // byte offset of slot 0
  std::atomic<uint64_t> stats_slot_size;  // sizeof(StatsSlotEntry)
  // --- layout v2 ---
  // The agent (non-RT side): CLOCK_MONOTONIC of its last beat (0 = never),
  // its pid (0 = none attached) and +1 per agent attach.
  std::atomic<int64_t> agent_heartbeat_ns;
  std::atomic<int32_t> agent_pid;
  std::atomic<uint32_t> critical_overflow;  // sticky: some critical ring dropped a record
  std::atomic<uint64_t> agent_generation;
  // Region table.
  std::atomic<uint64_t> ring_sets_offset;              // byte offset of slot 0's ring set
  std::atomic<uint64_t> ring_set_size;                 // bytes per ring set
  std::atomic<uint32_t> ring_capacity[kRingKinds];     // records, by RingKind
  std::atomic<uint32_t> ring_record_size[kRingKinds];  // bytes, by RingKind
  std::atomic<uint64_t> datastore_offset;              // byte offset of the data store region
  std::atomic<uint64_t> datastore_bytes;               // its size (0 = none)
  std::atomic<uint32_t> datastore_slots;               // slots it is meant for (a hint)
  std::atomic<uint32_t> reserved32;                    // zero
  std::atomic<uint64_t> reserved[25];                  // zero
};

// control = (uint64(claimer pid) << 32) | SlotState: state and claimer change
// together in one CAS.
struct alignas(64) StatsSlotEntry {
  std::atomic<uint64_t> control;
  std::atomic<uint64_t> claim_count;  // times this slot was claimed
  StatsBlock block;
};

static_assert(std::atomic<uint32_t>::is_always_lock_free);
static_assert(std::atomic<int32_t>::is_always_lock_free);
static_assert(std::atomic<uint64_t>::is_always_lock_free);
static_assert(std::atomic<int64_t>::is_always_lock_free);
static_assert(std::is_standard_layout_v<SegmentHeader>);
static_assert(std::is_standard_layout_v<StatsSlotEntry>);
static_assert(sizeof(SegmentHeader) == 384);

// Plain copy of the header.
struct SegmentHeaderInfo {
  uint64_t magic = 0;
  uint32_t layout_version = 0;
  uint32_t header_size = 0;
  uint64_t total_size = 0;
  uint64_t generation = 0;
  uint64_t epoch = 0;
  int64_t created_realtime_ns = 0;
  int64_t wallclock_offset_ns = 0;
  int32_t owner_pid = 0;
  uint32_t max_stats = 0;
  uint64_t stats_offset = 0;
  uint64_t stats_slot_size = 0;
  int64_t agent_heartbeat_ns = 0;
  int32_t agent_pid = 0;
  uint32_t critical_overflow = 0;
  uint64_t agent_generation = 0;
  uint64_t ring_sets_offset = 0;
  uint64_t ring_set_size = 0;
  RingCapacities ring_capacities;
  uint64_t datastore_offset = 0;
  uint64_t datastore_bytes = 0;
  uint32_t datastore_slots = 0;
};

// The agent's heartbeat words, copied out.
struct AgentHeartbeat {
  int64_t heartbeat_ns = 0;  // CLOCK_MONOTONIC of the last beat, 0 = never
  int32_t pid = 0;           // 0 = no agent attached
  uint64_t generation = 0;   // agent attaches so far
};

// Age of the agent's last beat at `now_ns` (CLOCK_MONOTONIC), or -1 when it
// never beat. noexcept and lock-free: for the cycle thread.
inline int64_t agent_heartbeat_age_ns(const SegmentHeader& h, int64_t now_ns) noexcept {
  const int64_t beat = h.agent_heartbeat_ns.load(std::memory_order_acquire);
  if (beat == 0) return -1;
  return now_ns > beat ? now_ns - beat : 0;
}

// A region of the mapping.
struct SegmentRegion {
  void* data = nullptr;
  std::size_t size = 0;
};

struct SlotInfo {
  uint32_t index = 0;
  SlotState state = SlotState::Free;
  std::string name;
  int32_t claimer_pid = 0;
  uint64_t claim_count = 0;
};

// Throws std::invalid_argument unless instance matches [A-Za-z0-9_.-]{1,64}.
void validate_instance_name(const std::string& instance);
std::string segment_shm_name(const std::string& instance);  // "/mxrc-<instance>"
std::string segment_path(const std::string& instance);      // "/dev/shm/mxrc-<instance>"
int64_t wallclock_offset_now_ns() noexcept;                 // REALTIME - MONOTONIC

class Segment : public std::enable_shared_from_this<Segment> {
 public:
  // Owner. Throws SegmentInUse if a live owner holds it, invalid_argument
  // for bad options (ring capacities not powers of two, sizes out of range).
  static std::shared_ptr<Segment> create(const std::string& instance,
                                         const SegmentOptions& options);
  static std::shared_ptr<Segment> create(const std::string& instance,
                                         uint32_t max_stats = kDefaultMaxStats);
  // Non-owner. Throws SegmentError (missing, foreign, wrong version).
  static std::shared_ptr<Segment> attach(const std::string& instance);
  // Remove the name if no live owner holds it (or always, with force).
  // Returns false if it did not exist. Throws SegmentInUse otherwise.
  static bool remove(const std::string& instance, bool force = false);

  ~Segment();
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;

  // Owner: unlinks the name. Drops this object's reference to the mapping;
  // the mapping (and the owner's flock) lives on while claimed blocks are
  // still referenced. Idempotent.
  void close() noexcept;
  bool closed() const noexcept { return mapping_ == nullptr; }
  bool is_owner() const noexcept { return owner_; }
  const std::string& instance() const noexcept { return instance_; }

  SegmentHeaderInfo header() const;
  // Whether some process holds the owner's flock (always true for the owner).
  bool owner_alive() const;
  // Owner: republish CLOCK_REALTIME - CLOCK_MONOTONIC.
  void refresh_wallclock_offset();
  // A restarted writer announces itself; returns the new generation.
  uint64_t bump_generation();

  // Claim a stats slot named `name` (1..63 bytes; unique among claimed
  // slots). Prefers a free slot, then the released slot of the same name,
  // then the oldest released one (also slots whose claimer process died).
  // The returned pointer keeps the mapping alive; when the last copy is
  // dropped the slot becomes Released (stats stay readable).
  std::shared_ptr<StatsBlock> claim_stats(const std::string& name);

  std::vector<SlotInfo> slots() const;
  // Block of a claimed or released slot named `name`, or nullptr. The
  // pointer is valid while this Segment is open (or use keepalive()).
  const StatsBlock* find_stats(const std::string& name) const;
  // Index of that slot (a live claim first), or -1.
  int find_slot(const std::string& name) const;
  // Index of the slot holding `block` (from claim_stats/find_stats), or -1.
  int slot_index_of(const StatsBlock* block) const;

  // The ring set of stats slot `slot_index` (invalid_argument when out of
  // range). A view: valid while this Segment is open (or use keepalive()).
  // The cycle thread owning the slot is the producer of its log, span, event
  // and critical rings and the consumer of its command ring. A ring keeps its
  // records and counters across claims of the slot (a restarted writer's
  // agent still drains what the previous one left).
  RingSet ring_set(uint32_t slot_index) const;
  // The data store region (64-byte aligned, zero-filled at creation; size 0
  // when the segment was created without one).
  SegmentRegion datastore_region() const;
  // Sticky: some cycle thread's critical ring dropped a record.
  bool critical_overflow() const;
  void clear_critical_overflow();  // this flag and every ring set's

  // The agent's heartbeat words. attach_agent() announces a new agent
  // (pid = this process, generation + 1, a first beat) and returns its
  // generation; beat_agent() stores a beat (now_ns 0 = CLOCK_MONOTONIC now);
  // detach_agent() clears the pid if it is this process's (the last beat
  // stays, so the RT side sees the agent go stale).
  AgentHeartbeat agent_heartbeat() const;
  uint64_t attach_agent();
  void beat_agent(int64_t now_ns = 0);
  void detach_agent();
  // The raw header, for lock-free reads on the cycle thread (e.g.
  // agent_heartbeat_age_ns). Valid while the mapping lives (keepalive()).
  const SegmentHeader* raw_header() const;
  // Shared ownership of the mapping (for bindings holding raw pointers).
  std::shared_ptr<void> keepalive() const;

  struct Mapping;

 private:
  Segment(std::string instance, std::shared_ptr<Mapping> mapping, bool owner);
  const std::shared_ptr<Mapping>& checked() const;

  std::string instance_;
  std::shared_ptr<Mapping> mapping_;
  bool owner_;
};

}  // namespace mxrc
