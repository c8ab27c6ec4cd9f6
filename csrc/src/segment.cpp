#include "mxrc/segment.hpp"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <new>
#include <thread>

#include "mxrc/error.hpp"

namespace mxrc {

namespace {

constexpr auto kAcq = std::memory_order_acquire;
constexpr auto kRel = std::memory_order_release;
constexpr auto kRelaxed = std::memory_order_relaxed;
constexpr auto kSeqCst = std::memory_order_seq_cst;

int64_t clock_ns(clockid_t id) noexcept {
  timespec ts{};
  clock_gettime(id, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

std::size_t page_size() noexcept {
  long p = sysconf(_SC_PAGESIZE);
  return p > 0 ? static_cast<std::size_t>(p) : 4096U;
}

std::size_t round_up(std::size_t v, std::size_t to) noexcept { return (v + to - 1) / to * to; }

uint64_t make_control(SlotState s, int32_t pid) noexcept {
  return (static_cast<uint64_t>(static_cast<uint32_t>(pid)) << 32) | static_cast<uint32_t>(s);
}
SlotState control_state(uint64_t c) noexcept {
  return static_cast<SlotState>(static_cast<uint32_t>(c & 0xffffffffU));
}
int32_t control_pid(uint64_t c) noexcept { return static_cast<int32_t>(c >> 32); }

bool process_dead(int32_t pid) noexcept {
  if (pid <= 0) return true;
  return ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
}

std::string hex64(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%016" PRIx64, v);
  return buf;
}

// An fd closed on scope exit unless released.
struct Fd {
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int release() noexcept {
    int f = fd;
    fd = -1;
    return f;
  }
};

// A mapping unmapped on scope exit.
struct Map {
  void* addr = MAP_FAILED;
  std::size_t size = 0;
  Map(int fd, std::size_t sz, int prot, int flags) : size(sz) {
    addr = ::mmap(nullptr, sz, prot, flags, fd, 0);
  }
  ~Map() {
    if (addr != MAP_FAILED) ::munmap(addr, size);
  }
  Map(const Map&) = delete;
  Map& operator=(const Map&) = delete;
  bool ok() const noexcept { return addr != MAP_FAILED; }
};

SegmentHeader* header_at(void* addr) noexcept {
  return std::launder(reinterpret_cast<SegmentHeader*>(addr));
}

constexpr std::size_t kRegionAlign = 64;

// Where each part of a v2 segment goes.
struct Layout {
  std::size_t stats_offset = 0;
  std::size_t ring_sets_offset = 0;
  std::size_t ring_set_size = 0;
  std::size_t datastore_offset = 0;
  std::size_t datastore_bytes = 0;
  std::size_t total = 0;
};

Layout layout_for(const SegmentOptions& o) {
  Layout l;
  l.stats_offset = sizeof(SegmentHeader);
  l.ring_sets_offset =
      round_up(l.stats_offset + std::size_t{o.max_stats} * sizeof(StatsSlotEntry), kRegionAlign);
  l.ring_set_size = ring_set_bytes(o.rings);
  l.datastore_offset =
      round_up(l.ring_sets_offset + std::size_t{o.max_stats} * l.ring_set_size, kRegionAlign);
  l.datastore_bytes = static_cast<std::size_t>(o.datastore_region_bytes);
  l.total = round_up(l.datastore_offset + l.datastore_bytes, page_size());
  return l;
}

std::string read_name(const StatsBlock& b) {
  char name[kStatsNameMax + 1];
  for (std::size_t i = 0; i <= kStatsNameMax; ++i) name[i] = b.name[i].load(kAcq);
  name[kStatsNameMax] = '\0';
  return name;
}

}  // namespace

struct Segment::Mapping {
  void* addr = nullptr;
  std::size_t size = 0;
  int fd = -1;
  std::string shm_name;
  bool owner = false;
  bool unlinked = false;
  // Layout, validated when mapped (never re-read from the shared header).
  std::size_t stats_offset = 0;
  std::size_t slot_size = 0;
  uint32_t slot_count = 0;
  std::size_t ring_sets_offset = 0;
  std::size_t ring_set_size = 0;
  RingCapacities ring_caps;
  std::size_t datastore_offset = 0;
  std::size_t datastore_bytes = 0;
  std::vector<RingSet> ring_sets;  // one per slot, views into this mapping

  ~Mapping() {
    if (addr) ::munmap(addr, size);
    if (fd >= 0) ::close(fd);  // releases the owner's flock
  }
  SegmentHeader* header() const noexcept { return header_at(addr); }
  StatsSlotEntry* slot(uint32_t i) const noexcept {
    auto* base = static_cast<char*>(addr) + stats_offset + std::size_t{i} * slot_size;
    return std::launder(reinterpret_cast<StatsSlotEntry*>(base));
  }
  uint32_t max_stats() const noexcept { return slot_count; }
};

// Released when the last reference to a claimed block is dropped.
struct ClaimGuard {
  std::shared_ptr<Segment::Mapping> mapping;
  StatsSlotEntry* entry;
  int32_t pid;
  ~ClaimGuard() {
    uint64_t expected = make_control(SlotState::Claimed, pid);
    entry->control.compare_exchange_strong(expected, make_control(SlotState::Released, pid),
                                           kSeqCst);
  }
};

const char* slot_state_name(SlotState s) noexcept {
  switch (s) {
    case SlotState::Free:
      return "free";
    case SlotState::Claiming:
      return "claiming";
    case SlotState::Named:
      return "named";
    case SlotState::Claimed:
      return "claimed";
    case SlotState::Released:
      return "released";
  }
  return "unknown";
}

void validate_instance_name(const std::string& instance) {
  bool ok = !instance.empty() && instance.size() <= kInstanceNameMax;
  for (char c : instance) {
    const bool allowed = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                         (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
    ok = ok && allowed;
  }
  if (!ok) {
    throw std::invalid_argument("invalid instance name '" + instance +
                                "': expected 1 to 64 characters from [A-Za-z0-9_.-]");
  }
}

std::string segment_shm_name(const std::string& instance) {
  validate_instance_name(instance);
  return "/mxrc-" + instance;
}

std::string segment_path(const std::string& instance) {
  validate_instance_name(instance);
  return "/dev/shm/mxrc-" + instance;
}

int64_t wallclock_offset_now_ns() noexcept {
  // The sample with the tightest monotonic bracket around the realtime read.
  int64_t best_span = INT64_MAX;
  int64_t best = 0;
  for (int i = 0; i < 3; ++i) {
    const int64_t m1 = clock_ns(CLOCK_MONOTONIC);
    const int64_t r = clock_ns(CLOCK_REALTIME);
    const int64_t m2 = clock_ns(CLOCK_MONOTONIC);
    if (m2 - m1 < best_span) {
      best_span = m2 - m1;
      best = r - (m1 + (m2 - m1) / 2);
    }
  }
  return best;
}

namespace {

// The header of an existing segment of any layout version, copied out; all
// zero if the file is too small, unmappable or not an mxrc segment.
struct HeaderPeek {
  int32_t owner_pid = 0;
  uint64_t generation = 0;
};

HeaderPeek peek_header(int fd) noexcept {
  struct stat st{};
  if (::fstat(fd, &st) != 0 || static_cast<std::size_t>(st.st_size) < sizeof(SegmentHeader)) {
    return {};
  }
  Map m(fd, sizeof(SegmentHeader), PROT_READ, MAP_SHARED);
  if (!m.ok()) return {};
  const SegmentHeader* h = header_at(m.addr);
  if (h->magic.load(kAcq) != kSegmentMagic) return {};
  return {h->owner_pid.load(kAcq), h->generation.load(kAcq)};
}

// Whether another open file description holds the segment's exclusive lock.
bool lock_held_elsewhere(int fd) noexcept {
  if (::flock(fd, LOCK_SH | LOCK_NB) == 0) {
    ::flock(fd, LOCK_UN);
    return false;
  }
  return errno == EWOULDBLOCK;
}

// A creator (or reclaimer) sizes and initialises the segment under its lock
// and publishes the magic last; a large segment takes milliseconds. Wait for
// it (up to 2 s) instead of calling its segment foreign. Without a lock
// holder only a short grace is given (the creator takes the lock just after
// creating the name).
void wait_while_initialising(int fd) noexcept {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  for (;;) {
    struct stat st{};
    uint64_t magic = 0;
    const bool ready = ::fstat(fd, &st) == 0 && st.st_size >= 2 * 8 &&
                       ::pread(fd, &magic, sizeof magic, 0) == sizeof magic && magic != 0;
    if (ready) return;
    const auto waited = Clock::now() - start;
    if (waited > std::chrono::seconds(2)) return;
    if (waited > std::chrono::milliseconds(50) && !lock_held_elsewhere(fd)) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

[[noreturn]] void throw_in_use(const std::string& instance, int fd) {
  const int32_t pid = peek_header(fd).owner_pid;
  std::string who = pid > 0 ? "live process pid " + std::to_string(pid) : "another live process";
  throw SegmentInUse("instance '" + instance + "' is in use: " + segment_path(instance) +
                         " is owned by " + who +
                         " (it holds the segment's lock); stop it or pick another instance name",
                     static_cast<pid_t>(pid));
}

}  // namespace

Segment::Segment(std::string instance, std::shared_ptr<Mapping> mapping, bool owner)
    : instance_(std::move(instance)), mapping_(std::move(mapping)), owner_(owner) {}

Segment::~Segment() { close(); }

std::shared_ptr<Segment> Segment::create(const std::string& instance, uint32_t max_stats) {
  SegmentOptions options;
  options.max_stats = max_stats;
  return create(instance, options);
}

std::shared_ptr<Segment> Segment::create(const std::string& instance,
                                         const SegmentOptions& options) {
  const std::string name = segment_shm_name(instance);
  const uint32_t max_stats = options.max_stats;
  if (max_stats < 1 || max_stats > kMaxStatsLimit) {
    throw std::invalid_argument("max_stats must be 1.." + std::to_string(kMaxStatsLimit) +
                                ", got " + std::to_string(max_stats));
  }
  if (options.datastore_region_bytes > kMaxDatastoreRegionBytes) {
    throw std::invalid_argument("datastore_region_bytes must be at most " +
                                std::to_string(kMaxDatastoreRegionBytes) + ", got " +
                                std::to_string(options.datastore_region_bytes));
  }
  const Layout layout = layout_for(options);  // validates the ring capacities
  int raw = -1;
  bool existed = false;
  for (int attempt = 0; attempt < 5 && raw < 0; ++attempt) {
    raw = ::shm_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0660);
    if (raw >= 0) {
      existed = false;
      break;
    }
    if (errno != EEXIST) {
      throw SystemError(errno, "shm_open", "cannot create " + segment_path(instance));
    }
    raw = ::shm_open(name.c_str(), O_RDWR | O_CLOEXEC, 0);
    if (raw >= 0) {
      existed = true;
      break;
    }
    if (errno != ENOENT) {
      throw SystemError(errno, "shm_open", "cannot open " + segment_path(instance));
    }
    // unlinked between the two calls: try again
  }
  if (raw < 0)
    throw SegmentError("cannot create " + segment_path(instance) + ": name keeps changing");
  Fd fd(raw);

  if (::flock(fd.fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) throw_in_use(instance, fd.fd);
    throw SystemError(errno, "flock", "cannot lock " + segment_path(instance));
  }
  if (!existed) (void)::fchmod(fd.fd, 0660);  // undo the umask

  const uint64_t old_generation = existed ? peek_header(fd.fd).generation : 0;
  const std::size_t size = layout.total;
  // Never shrink a reclaimed file: a dead owner's readers may still map it.
  struct stat st{};
  if (::fstat(fd.fd, &st) != 0) {
    throw SystemError(errno, "fstat", "cannot stat " + segment_path(instance));
  }
  if (static_cast<std::size_t>(st.st_size) < size &&
      ::ftruncate(fd.fd, static_cast<off_t>(size)) != 0) {
    const int err = errno;
    if (!existed) ::shm_unlink(name.c_str());
    throw SystemError(err, "ftruncate", "cannot size " + segment_path(instance));
  }
  void* addr = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd.fd, 0);
  if (addr == MAP_FAILED) {
    const int err = errno;
    if (!existed) ::shm_unlink(name.c_str());
    throw SystemError(err, "mmap", "cannot map " + segment_path(instance));
  }

  auto mapping = std::make_shared<Mapping>();
  mapping->addr = addr;
  mapping->size = size;
  mapping->fd = fd.release();
  mapping->shm_name = name;
  mapping->owner = true;
  mapping->stats_offset = layout.stats_offset;
  mapping->slot_size = sizeof(StatsSlotEntry);
  mapping->slot_count = max_stats;
  mapping->ring_sets_offset = layout.ring_sets_offset;
  mapping->ring_set_size = layout.ring_set_size;
  mapping->ring_caps = options.rings;
  mapping->datastore_offset = layout.datastore_offset;
  mapping->datastore_bytes = layout.datastore_bytes;

  // Initialise: magic cleared first, published last.
  auto* h = new (addr) SegmentHeader;
  h->magic.store(0, kRel);
  h->layout_version.store(kSegmentLayoutVersion, kRelaxed);
  h->header_size.store(static_cast<uint32_t>(sizeof(SegmentHeader)), kRelaxed);
  h->total_size.store(size, kRelaxed);
  h->generation.store(old_generation + 1, kRelaxed);
  h->epoch.store(0, kRelaxed);
  h->created_realtime_ns.store(clock_ns(CLOCK_REALTIME), kRelaxed);
  h->wallclock_offset_ns.store(wallclock_offset_now_ns(), kRelaxed);
  h->owner_pid.store(static_cast<int32_t>(::getpid()), kRelaxed);
  h->max_stats.store(max_stats, kRelaxed);
  h->stats_offset.store(layout.stats_offset, kRelaxed);
  h->stats_slot_size.store(sizeof(StatsSlotEntry), kRelaxed);
  h->agent_heartbeat_ns.store(0, kRelaxed);
  h->agent_pid.store(0, kRelaxed);
  h->critical_overflow.store(0, kRelaxed);
  h->agent_generation.store(0, kRelaxed);
  h->ring_sets_offset.store(layout.ring_sets_offset, kRelaxed);
  h->ring_set_size.store(layout.ring_set_size, kRelaxed);
  for (uint32_t k = 0; k < kRingKinds; ++k) {
    h->ring_capacity[k].store(options.rings.of(static_cast<RingKind>(k)), kRelaxed);
    h->ring_record_size[k].store(kRingRecordSize[k], kRelaxed);
  }
  h->datastore_offset.store(layout.datastore_offset, kRelaxed);
  h->datastore_bytes.store(layout.datastore_bytes, kRelaxed);
  h->datastore_slots.store(options.datastore_slots, kRelaxed);
  h->reserved32.store(0, kRelaxed);
  for (auto& r : h->reserved) r.store(0, kRelaxed);
  auto* base = static_cast<char*>(addr);
  for (uint32_t i = 0; i < max_stats; ++i) {
    auto* e =
        new (base + layout.stats_offset + std::size_t{i} * sizeof(StatsSlotEntry)) StatsSlotEntry;
    e->control.store(make_control(SlotState::Free, 0), kRelaxed);
    e->claim_count.store(0, kRelaxed);
    e->block.seq.store(0, kRelaxed);
    reset_stats_block(&e->block, "");
  }
  mapping->ring_sets.reserve(max_stats);
  for (uint32_t i = 0; i < max_stats; ++i) {
    mapping->ring_sets.push_back(
        RingSet::format(base + layout.ring_sets_offset + std::size_t{i} * layout.ring_set_size,
                        options.rings, i, &h->critical_overflow));
  }
  // The data store region starts zero-filled; its format belongs to DataStore.
  std::memset(base + layout.datastore_offset, 0, layout.datastore_bytes);
  h->magic.store(kSegmentMagic, kRel);

  return std::shared_ptr<Segment>(new Segment(instance, std::move(mapping), true));
}

std::shared_ptr<Segment> Segment::attach(const std::string& instance) {
  const std::string name = segment_shm_name(instance);
  const std::string path = segment_path(instance);
  int raw = ::shm_open(name.c_str(), O_RDWR | O_CLOEXEC, 0);
  if (raw < 0) {
    if (errno == ENOENT) {
      throw SegmentError("no instance '" + instance + "' running: " + path + " does not exist");
    }
    throw SystemError(errno, "shm_open", "cannot open " + path);
  }
  Fd fd(raw);
  wait_while_initialising(fd.fd);
  struct stat st{};
  if (::fstat(fd.fd, &st) != 0) throw SystemError(errno, "fstat", "cannot stat " + path);
  const auto file_size = static_cast<std::size_t>(st.st_size);
  const std::string foreign = path + " is not an mxrc segment: ";
  if (file_size < 2 * sizeof(uint64_t)) {
    throw SegmentError(foreign + std::to_string(file_size) + " bytes, too small for a header");
  }
  SegmentHeaderInfo info;
  {
    Map m(fd.fd, sizeof(SegmentHeader), PROT_READ, MAP_SHARED);
    if (!m.ok()) throw SystemError(errno, "mmap", "cannot map " + path);
    const SegmentHeader* h = header_at(m.addr);
    info.magic = h->magic.load(kAcq);
    if (info.magic != kSegmentMagic) {
      throw SegmentError(foreign + "bad magic " + hex64(info.magic) + ", expected " +
                         hex64(kSegmentMagic) + " (or its creator is still initialising it)");
    }
    info.layout_version = h->layout_version.load(kAcq);
    if (info.layout_version != kSegmentLayoutVersion) {
      throw SegmentError(path + " has layout v" + std::to_string(info.layout_version) +
                         ", this mxrc reads v" + std::to_string(kSegmentLayoutVersion) +
                         ": upgrade/downgrade mxrc to the version of the process that created "
                         "it, or restart the instance with this version");
    }
    info.header_size = h->header_size.load(kAcq);
    info.total_size = h->total_size.load(kAcq);
    info.max_stats = h->max_stats.load(kAcq);
    info.stats_offset = h->stats_offset.load(kAcq);
    info.stats_slot_size = h->stats_slot_size.load(kAcq);
    info.ring_sets_offset = h->ring_sets_offset.load(kAcq);
    info.ring_set_size = h->ring_set_size.load(kAcq);
    info.ring_capacities.log = h->ring_capacity[0].load(kAcq);
    info.ring_capacities.span = h->ring_capacity[1].load(kAcq);
    info.ring_capacities.event = h->ring_capacity[2].load(kAcq);
    info.ring_capacities.critical = h->ring_capacity[3].load(kAcq);
    info.ring_capacities.command = h->ring_capacity[4].load(kAcq);
    for (uint32_t k = 0; k < kRingKinds; ++k) {
      if (h->ring_record_size[k].load(kAcq) != kRingRecordSize[k]) info.ring_set_size = 0;
    }
    info.datastore_offset = h->datastore_offset.load(kAcq);
    info.datastore_bytes = h->datastore_bytes.load(kAcq);
  }
  const bool sizes_ok =
      info.header_size == sizeof(SegmentHeader) && info.stats_slot_size == sizeof(StatsSlotEntry) &&
      info.stats_offset >= sizeof(SegmentHeader) && info.max_stats >= 1 &&
      info.max_stats <= kMaxStatsLimit &&
      info.stats_offset + std::size_t{info.max_stats} * info.stats_slot_size <= info.total_size &&
      info.total_size <= file_size;
  if (!sizes_ok) {
    throw SegmentError(foreign + "inconsistent header (header " + std::to_string(info.header_size) +
                       " bytes, slot " + std::to_string(info.stats_slot_size) + " bytes x " +
                       std::to_string(info.max_stats) + ", total " +
                       std::to_string(info.total_size) + ", file " + std::to_string(file_size) +
                       ")");
  }
  // The region table: ring sets after the stats slots, the data store after
  // the ring sets, everything inside the mapping and as this version lays it out.
  std::size_t expected_set_size = 0;
  try {
    expected_set_size = ring_set_bytes(info.ring_capacities);
  } catch (const std::invalid_argument&) {
    expected_set_size = 0;
  }
  const uint64_t stats_end = info.stats_offset + uint64_t{info.max_stats} * info.stats_slot_size;
  const uint64_t rings_end = info.ring_sets_offset + uint64_t{info.max_stats} * info.ring_set_size;
  const bool regions_ok =
      expected_set_size != 0 && info.ring_set_size == expected_set_size &&
      info.ring_sets_offset % kRegionAlign == 0 && info.ring_sets_offset >= stats_end &&
      info.datastore_offset % kRegionAlign == 0 && info.datastore_offset >= rings_end &&
      info.datastore_bytes <= kMaxDatastoreRegionBytes &&
      info.datastore_offset + info.datastore_bytes <= info.total_size;
  if (!regions_ok) {
    throw SegmentError(
        foreign + "inconsistent region table (ring sets at " +
        std::to_string(info.ring_sets_offset) + ", " + std::to_string(info.ring_set_size) +
        " bytes each, expected " + std::to_string(expected_set_size) + " for capacities log " +
        std::to_string(info.ring_capacities.log) + "/span " +
        std::to_string(info.ring_capacities.span) + "/event " +
        std::to_string(info.ring_capacities.event) + "/critical " +
        std::to_string(info.ring_capacities.critical) + "/command " +
        std::to_string(info.ring_capacities.command) + "; data store at " +
        std::to_string(info.datastore_offset) + ", " + std::to_string(info.datastore_bytes) +
        " bytes; total " + std::to_string(info.total_size) + ")");
  }
  const auto size = static_cast<std::size_t>(info.total_size);
  void* addr = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd.fd, 0);
  if (addr == MAP_FAILED) throw SystemError(errno, "mmap", "cannot map " + path);
  auto mapping = std::make_shared<Mapping>();
  mapping->addr = addr;
  mapping->size = size;
  mapping->fd = fd.release();
  mapping->shm_name = name;
  mapping->owner = false;
  mapping->stats_offset = static_cast<std::size_t>(info.stats_offset);
  mapping->slot_size = static_cast<std::size_t>(info.stats_slot_size);
  mapping->slot_count = info.max_stats;
  mapping->ring_sets_offset = static_cast<std::size_t>(info.ring_sets_offset);
  mapping->ring_set_size = static_cast<std::size_t>(info.ring_set_size);
  mapping->ring_caps = info.ring_capacities;
  mapping->datastore_offset = static_cast<std::size_t>(info.datastore_offset);
  mapping->datastore_bytes = static_cast<std::size_t>(info.datastore_bytes);
  auto* base = static_cast<char*>(addr);
  auto* flag = &mapping->header()->critical_overflow;
  mapping->ring_sets.reserve(info.max_stats);
  for (uint32_t i = 0; i < info.max_stats; ++i) {
    try {
      mapping->ring_sets.push_back(RingSet::attach(
          base + mapping->ring_sets_offset + std::size_t{i} * mapping->ring_set_size,
          mapping->ring_set_size, mapping->ring_caps, flag));
    } catch (const std::runtime_error& e) {
      throw SegmentError(foreign + "ring set of stats slot " + std::to_string(i) + ": " + e.what());
    }
  }
  return std::shared_ptr<Segment>(new Segment(instance, std::move(mapping), false));
}

bool Segment::remove(const std::string& instance, bool force) {
  const std::string name = segment_shm_name(instance);
  int raw = ::shm_open(name.c_str(), O_RDWR | O_CLOEXEC, 0);
  if (raw < 0) {
    if (errno == ENOENT) return false;
    if (!force) throw SystemError(errno, "shm_open", "cannot open " + segment_path(instance));
  } else {
    Fd fd(raw);
    if (!force && ::flock(fd.fd, LOCK_EX | LOCK_NB) != 0) {
      if (errno == EWOULDBLOCK) throw_in_use(instance, fd.fd);
      throw SystemError(errno, "flock", "cannot lock " + segment_path(instance));
    }
  }
  if (::shm_unlink(name.c_str()) != 0) {
    if (errno == ENOENT) return false;
    throw SystemError(errno, "shm_unlink", "cannot remove " + segment_path(instance));
  }
  return true;
}

void Segment::close() noexcept {
  if (!mapping_) return;
  if (owner_ && !mapping_->unlinked) {
    ::shm_unlink(mapping_->shm_name.c_str());
    mapping_->unlinked = true;
  }
  mapping_.reset();
}

const std::shared_ptr<Segment::Mapping>& Segment::checked() const {
  if (!mapping_) throw SegmentError("segment of instance '" + instance_ + "' is closed");
  return mapping_;
}

SegmentHeaderInfo Segment::header() const {
  const SegmentHeader* h = checked()->header();
  SegmentHeaderInfo i;
  i.magic = h->magic.load(kAcq);
  i.layout_version = h->layout_version.load(kAcq);
  i.header_size = h->header_size.load(kAcq);
  i.total_size = h->total_size.load(kAcq);
  i.generation = h->generation.load(kAcq);
  i.epoch = h->epoch.load(kAcq);
  i.created_realtime_ns = h->created_realtime_ns.load(kAcq);
  i.wallclock_offset_ns = h->wallclock_offset_ns.load(kAcq);
  i.owner_pid = h->owner_pid.load(kAcq);
  i.max_stats = h->max_stats.load(kAcq);
  i.stats_offset = h->stats_offset.load(kAcq);
  i.stats_slot_size = h->stats_slot_size.load(kAcq);
  i.agent_heartbeat_ns = h->agent_heartbeat_ns.load(kAcq);
  i.agent_pid = h->agent_pid.load(kAcq);
  i.critical_overflow = h->critical_overflow.load(kAcq);
  i.agent_generation = h->agent_generation.load(kAcq);
  i.ring_sets_offset = h->ring_sets_offset.load(kAcq);
  i.ring_set_size = h->ring_set_size.load(kAcq);
  i.ring_capacities = checked()->ring_caps;
  i.datastore_offset = h->datastore_offset.load(kAcq);
  i.datastore_bytes = h->datastore_bytes.load(kAcq);
  i.datastore_slots = h->datastore_slots.load(kAcq);
  return i;
}

bool Segment::owner_alive() const {
  const auto& m = checked();
  if (owner_) return true;
  // Our own open file description: a shared lock is refused while the
  // owner holds its exclusive one.
  if (::flock(m->fd, LOCK_SH | LOCK_NB) == 0) {
    ::flock(m->fd, LOCK_UN);
    return false;
  }
  if (errno == EWOULDBLOCK) return true;
  throw SystemError(errno, "flock", "cannot test the lock of " + segment_path(instance_));
}

void Segment::refresh_wallclock_offset() {
  const auto& m = checked();
  if (!owner_) throw SegmentError("only the owner refreshes the wall-clock offset");
  m->header()->wallclock_offset_ns.store(wallclock_offset_now_ns(), kRel);
}

uint64_t Segment::bump_generation() {
  return checked()->header()->generation.fetch_add(1, kSeqCst) + 1;
}

std::shared_ptr<void> Segment::keepalive() const { return checked(); }

std::vector<SlotInfo> Segment::slots() const {
  const auto& m = checked();
  std::vector<SlotInfo> out;
  const uint32_t n = m->max_stats();
  out.reserve(n);
  for (uint32_t i = 0; i < n; ++i) {
    const StatsSlotEntry* e = m->slot(i);
    const uint64_t c = e->control.load(kAcq);
    SlotInfo s;
    s.index = i;
    s.state = control_state(c);
    s.claimer_pid = control_pid(c);
    s.claim_count = e->claim_count.load(kAcq);
    if (s.state == SlotState::Claimed || s.state == SlotState::Released ||
        s.state == SlotState::Named) {
      s.name = read_name(e->block);
    }
    out.push_back(std::move(s));
  }
  return out;
}

int Segment::find_slot(const std::string& name) const {
  const auto& m = checked();
  const uint32_t n = m->max_stats();
  // A live claim wins over a released block or one whose claimer died.
  int fallback = -1;
  for (uint32_t i = 0; i < n; ++i) {
    const StatsSlotEntry* e = m->slot(i);
    const uint64_t c = e->control.load(kAcq);
    const SlotState s = control_state(c);
    if (s != SlotState::Claimed && s != SlotState::Released) continue;
    if (read_name(e->block) != name) continue;
    if (s == SlotState::Claimed && !process_dead(control_pid(c))) return static_cast<int>(i);
    if (fallback < 0) fallback = static_cast<int>(i);
  }
  return fallback;
}

const StatsBlock* Segment::find_stats(const std::string& name) const {
  const int i = find_slot(name);
  return i < 0 ? nullptr : &checked()->slot(static_cast<uint32_t>(i))->block;
}

int Segment::slot_index_of(const StatsBlock* block) const {
  const auto& m = checked();
  for (uint32_t i = 0; i < m->max_stats(); ++i) {
    if (&m->slot(i)->block == block) return static_cast<int>(i);
  }
  return -1;
}

RingSet Segment::ring_set(uint32_t slot_index) const {
  const auto& m = checked();
  if (slot_index >= m->ring_sets.size()) {
    throw std::invalid_argument("stats slot index " + std::to_string(slot_index) +
                                " out of range: " + segment_path(instance_) + " has " +
                                std::to_string(m->ring_sets.size()) + " slots");
  }
  return m->ring_sets[slot_index];
}

SegmentRegion Segment::datastore_region() const {
  const auto& m = checked();
  SegmentRegion r;
  r.size = m->datastore_bytes;
  r.data = r.size ? static_cast<char*>(m->addr) + m->datastore_offset : nullptr;
  return r;
}

bool Segment::critical_overflow() const {
  return checked()->header()->critical_overflow.load(kAcq) != 0;
}

void Segment::clear_critical_overflow() {
  const auto& m = checked();
  for (auto& set : m->ring_sets) set.clear_critical_overflow();
  m->header()->critical_overflow.store(0, kRel);
}

AgentHeartbeat Segment::agent_heartbeat() const {
  const SegmentHeader* h = checked()->header();
  AgentHeartbeat a;
  a.heartbeat_ns = h->agent_heartbeat_ns.load(kAcq);
  a.pid = h->agent_pid.load(kAcq);
  a.generation = h->agent_generation.load(kAcq);
  return a;
}

uint64_t Segment::attach_agent() {
  SegmentHeader* h = checked()->header();
  const uint64_t generation = h->agent_generation.fetch_add(1, kSeqCst) + 1;
  h->agent_pid.store(static_cast<int32_t>(::getpid()), kSeqCst);
  h->agent_heartbeat_ns.store(clock_ns(CLOCK_MONOTONIC), kSeqCst);
  return generation;
}

void Segment::beat_agent(int64_t now_ns) {
  SegmentHeader* h = checked()->header();
  h->agent_heartbeat_ns.store(now_ns != 0 ? now_ns : clock_ns(CLOCK_MONOTONIC), kRel);
}

void Segment::detach_agent() {
  SegmentHeader* h = checked()->header();
  int32_t me = static_cast<int32_t>(::getpid());
  h->agent_pid.compare_exchange_strong(me, 0, kSeqCst);
}

const SegmentHeader* Segment::raw_header() const { return checked()->header(); }

std::shared_ptr<StatsBlock> Segment::claim_stats(const std::string& name) {
  if (name.empty() || name.size() > kStatsNameMax || name.find('\0') != std::string::npos) {
    throw std::invalid_argument("stats name must be 1.." + std::to_string(kStatsNameMax) +
                                " bytes without NUL, got '" + name + "'");
  }
  const auto& m = checked();
  const uint32_t n = m->max_stats();
  const auto me = static_cast<int32_t>(::getpid());

  // 1. Take a slot: the released one of the same name (a rerun replaces its
  // previous stats), then a free one, then any released one. A slot claimed by
  // a process that no longer exists counts as released.
  StatsSlotEntry* mine = nullptr;
  uint32_t my_index = 0;
  for (int pass = 0; pass < 3 && !mine; ++pass) {
    for (uint32_t i = 0; i < n && !mine; ++i) {
      StatsSlotEntry* e = m->slot(i);
      uint64_t c = e->control.load(kAcq);
      const SlotState s = control_state(c);
      bool candidate = false;
      if (pass == 1) {
        candidate = s == SlotState::Free;
      } else {
        const bool stale =
            s == SlotState::Released || (s == SlotState::Claimed && process_dead(control_pid(c)));
        candidate = stale && (pass == 2 || read_name(e->block) == name);
      }
      if (candidate &&
          e->control.compare_exchange_strong(c, make_control(SlotState::Claiming, me), kSeqCst)) {
        mine = e;
        my_index = i;
      }
    }
  }
  if (!mine) {
    throw SegmentError("no free stats slot in " + segment_path(instance_) + " (all " +
                       std::to_string(n) + " in use); create it with a larger max_stats");
  }

  // 2. Publish the name, then check uniqueness: a slot of the same name that
  // is claimed, or named with a lower index, wins; a slot still in Claiming
  // is waited for (its name is not visible yet).
  reset_stats_block(&mine->block, name.c_str());
  mine->control.store(make_control(SlotState::Named, me), kSeqCst);
  auto give_back = [&] {  // nothing was written: the slot becomes free again
    mine->control.store(make_control(SlotState::Claiming, me), kSeqCst);
    reset_stats_block(&mine->block, "");
    mine->control.store(make_control(SlotState::Free, 0), kSeqCst);
  };
  const auto give_up_at = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  for (uint32_t i = 0; i < n; ++i) {
    if (i == my_index) continue;
    const StatsSlotEntry* e = m->slot(i);
    for (;;) {
      const uint64_t c = e->control.load(kSeqCst);
      const SlotState s = control_state(c);
      if (s == SlotState::Claiming && !process_dead(control_pid(c))) {
        if (std::chrono::steady_clock::now() > give_up_at) {
          give_back();
          throw SegmentError("stats slot " + std::to_string(i) + " of " + segment_path(instance_) +
                             " stays half-claimed by pid " + std::to_string(control_pid(c)));
        }
        std::this_thread::yield();
        continue;
      }
      const bool live =
          (s == SlotState::Claimed || s == SlotState::Named) && !process_dead(control_pid(c));
      if (live && read_name(e->block) == name && (s == SlotState::Claimed || i < my_index)) {
        give_back();
        throw SegmentError("stats name '" + name + "' is already claimed in " +
                           segment_path(instance_) + " (slot " + std::to_string(i) + ", pid " +
                           std::to_string(control_pid(c)) + ")");
      }
      break;
    }
  }
  mine->claim_count.fetch_add(1, kSeqCst);
  mine->control.store(make_control(SlotState::Claimed, me), kSeqCst);

  auto guard = std::make_shared<ClaimGuard>();
  guard->mapping = m;
  guard->entry = mine;
  guard->pid = me;
  return std::shared_ptr<StatsBlock>(guard, &mine->block);
}

}  // namespace mxrc
