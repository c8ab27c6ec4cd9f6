#include "mxrc/datastore.hpp"

#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <new>

namespace mxrc {

namespace {

constexpr auto kRelaxed = std::memory_order_relaxed;
constexpr auto kAcq = std::memory_order_acquire;
constexpr auto kRel = std::memory_order_release;

constexpr int64_t kOpenWaitNs = 2'000'000'000;    // open(): wait for another formatter
constexpr int64_t kDefineWaitNs = 2'000'000'000;  // define(): wait for the define lock

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

int64_t monotonic_ns() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

void sleep_ns(int64_t ns) noexcept {
  timespec ts{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

bool process_alive(int32_t pid) noexcept {
  if (pid <= 0) return false;
  return ::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM;
}

// Non-RT waiting: spin briefly, then yield, then sleep 20 µs at a time, until
// the deadline. wait() returns false once the deadline has passed.
class Backoff {
 public:
  explicit Backoff(int64_t timeout_ns) noexcept
      : deadline_(timeout_ns > 0 ? monotonic_ns() + timeout_ns : 0) {}
  bool wait() noexcept {
    if (deadline_ == 0 || monotonic_ns() >= deadline_) return false;
    if (n_ < 64) {
      cpu_relax();
    } else if (n_ < 256) {
      sched_yield();
    } else {
      sleep_ns(20'000);
    }
    ++n_;
    return true;
  }

 private:
  int64_t deadline_;
  unsigned n_ = 0;
};

std::size_t round_up(std::size_t v, std::size_t a) noexcept { return (v + a - 1) / a * a; }

struct Layout {
  std::size_t slot_table, arena, snapshot, snap_versions, snap_lens, snap_words, total;
};

Layout layout_of(uint32_t max_slots, uint64_t arena_words) noexcept {
  Layout l{};
  l.slot_table = sizeof(DataStoreHeader);
  l.arena = l.slot_table + std::size_t{max_slots} * sizeof(DataStoreSlot);
  l.snapshot = round_up(l.arena + arena_words * 8, 64);
  l.snap_versions = l.snapshot + sizeof(DataStoreSnapshotHeader);
  l.snap_lens = l.snap_versions + std::size_t{max_slots} * 8;
  l.snap_words = l.snap_lens + std::size_t{max_slots} * 8;
  l.total = round_up(l.snap_words + arena_words * 8, 64);
  return l;
}

std::string hex64(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%016" PRIx64, v);
  return buf;
}

std::string region_name(const void* region, std::size_t size) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "region at %p (%zu bytes)", region, size);
  return buf;
}

[[noreturn]] void format_error(const std::string& what) {
  throw DataStoreError(DataStoreError::Kind::Format, what);
}

[[noreturn]] void definition_error(const std::string& what) {
  throw DataStoreError(DataStoreError::Kind::Definition, what);
}

void check_max_slots(uint32_t max_slots) {
  if (max_slots < 1 || max_slots > kDsMaxSlotsLimit) {
    throw std::invalid_argument("data store max_slots must be 1.." +
                                std::to_string(kDsMaxSlotsLimit) + ", got " +
                                std::to_string(max_slots));
  }
}

DataStoreHeader* header_at(void* region) noexcept {
  return std::launder(reinterpret_cast<DataStoreHeader*>(region));
}

std::string type_text(DsType t, uint32_t capacity) {
  std::string s = ds_type_name(t);
  if (t == DsType::String || t == DsType::F64Array) s += "[" + std::to_string(capacity) + "]";
  return s;
}

std::string slot_name(const DataStoreSlot& s) {
  char name[kDsNameMax + 1];
  for (std::size_t i = 0; i <= kDsNameMax; ++i) name[i] = s.name[i].load(kRelaxed);
  name[kDsNameMax] = '\0';
  return name;
}

void copy_out(const std::atomic<uint64_t>* src, unsigned char* dst, uint64_t n) noexcept {
  const uint64_t full = n / 8;
  for (uint64_t i = 0; i < full; ++i) {
    const uint64_t w = src[i].load(kRelaxed);
    std::memcpy(dst + 8 * i, &w, 8);
  }
  const uint64_t rem = n % 8;
  if (rem != 0) {
    const uint64_t w = src[full].load(kRelaxed);
    std::memcpy(dst + 8 * full, &w, rem);
  }
}

void copy_in(std::atomic<uint64_t>* dst, const unsigned char* src, uint64_t n) noexcept {
  const uint64_t full = n / 8;
  for (uint64_t i = 0; i < full; ++i) {
    uint64_t w;
    std::memcpy(&w, src + 8 * i, 8);
    dst[i].store(w, kRelaxed);
  }
  const uint64_t rem = n % 8;
  if (rem != 0) {
    uint64_t w = 0;
    std::memcpy(&w, src + 8 * full, rem);
    dst[full].store(w, kRelaxed);
  }
}

// The define lock: a pid in the header, taken by CAS; a holder whose process
// is gone is replaced.
class DefineLock {
 public:
  DefineLock(std::atomic<int32_t>& word, int32_t pid) : word_(word), pid_(pid) {
    const int64_t deadline = monotonic_ns() + kDefineWaitNs;
    for (;;) {
      int32_t holder = 0;
      if (word_.compare_exchange_strong(holder, pid_, kAcq, kRelaxed)) return;
      if (holder != pid_ && !process_alive(holder) &&
          word_.compare_exchange_strong(holder, pid_, kAcq, kRelaxed)) {
        return;
      }
      if (monotonic_ns() >= deadline) {
        throw DataStoreError(
            DataStoreError::Kind::Busy,
            "data store define lock held by pid " + std::to_string(holder) + " for more than 2 s");
      }
      sleep_ns(50'000);
    }
  }
  ~DefineLock() { word_.store(0, kRel); }
  DefineLock(const DefineLock&) = delete;
  DefineLock& operator=(const DefineLock&) = delete;

 private:
  std::atomic<int32_t>& word_;
  int32_t pid_;
};

}  // namespace

const char* ds_type_name(DsType t) noexcept {
  switch (t) {
    case DsType::Int64:
      return "int64";
    case DsType::Float64:
      return "float64";
    case DsType::Bool:
      return "bool";
    case DsType::String:
      return "string";
    case DsType::F64Array:
      return "f64array";
  }
  return "unknown";
}

bool ds_type_valid(uint32_t t) noexcept {
  return t >= static_cast<uint32_t>(DsType::Int64) && t <= static_cast<uint32_t>(DsType::F64Array);
}

uint64_t DataStore::value_words(DsType type, uint32_t capacity) noexcept {
  switch (type) {
    case DsType::Int64:
    case DsType::Float64:
    case DsType::Bool:
      return capacity == 1 ? 1 : 0;
    case DsType::String:
      return (uint64_t{capacity} + 7) / 8;
    case DsType::F64Array:
      return capacity;
  }
  return 0;
}

uint64_t DataStore::max_len(DsType type, uint32_t capacity) noexcept {
  switch (type) {
    case DsType::Int64:
    case DsType::Float64:
      return 8;
    case DsType::Bool:
      return 1;
    case DsType::String:
      return capacity;
    case DsType::F64Array:
      return uint64_t{capacity} * 8;
  }
  return 0;
}

std::size_t DataStore::region_bytes(uint32_t max_slots, std::size_t arena_bytes) {
  check_max_slots(max_slots);
  const uint64_t words = (uint64_t{arena_bytes} + 7) / 8;
  if (words < 1 || words > kDsMaxArenaWords) {
    throw std::invalid_argument("data store arena_bytes must be 1.." +
                                std::to_string(kDsMaxArenaWords * 8) + ", got " +
                                std::to_string(arena_bytes));
  }
  return layout_of(max_slots, words).total;
}

std::size_t DataStore::arena_bytes_for(std::size_t region_bytes, uint32_t max_slots) noexcept {
  if (max_slots < 1 || max_slots > kDsMaxSlotsLimit) return 0;
  const std::size_t fixed = layout_of(max_slots, 0).total;
  if (region_bytes <= fixed) return 0;
  uint64_t w = (region_bytes - fixed) / 16;
  if (w > kDsMaxArenaWords) w = kDsMaxArenaWords;
  while (w > 0 && layout_of(max_slots, w).total > region_bytes) --w;
  return static_cast<std::size_t>(w * 8);
}

DataStore::DataStore(void* region) noexcept : h_(header_at(region)) {
  auto* base = static_cast<unsigned char*>(region);
  max_slots_ = h_->max_slots.load(kRelaxed);
  arena_words_ = h_->arena_words.load(kRelaxed);
  const Layout l = layout_of(max_slots_, arena_words_);
  slots_ = std::launder(reinterpret_cast<DataStoreSlot*>(base + l.slot_table));
  arena_ = std::launder(reinterpret_cast<std::atomic<uint64_t>*>(base + l.arena));
  snap_ = std::launder(reinterpret_cast<DataStoreSnapshotHeader*>(base + l.snapshot));
  snap_versions_ = std::launder(reinterpret_cast<std::atomic<uint64_t>*>(base + l.snap_versions));
  snap_lens_ = std::launder(reinterpret_cast<std::atomic<uint64_t>*>(base + l.snap_lens));
  snap_words_ = std::launder(reinterpret_cast<std::atomic<uint64_t>*>(base + l.snap_words));
  pid_ = static_cast<int32_t>(::getpid());
}

namespace {

void check_region(const void* region, std::size_t size) {
  if (region == nullptr) format_error("data store region is NULL");
  if (reinterpret_cast<uintptr_t>(region) % 8 != 0) {
    format_error("data store " + region_name(region, size) +
                 " is not 8-byte aligned (every word is a std::atomic<uint64_t>)");
  }
}

// Formats region (already checked); the header's format_pid is set to
// format_pid. Publishes the magic last.
void format_region(void* region, std::size_t size, uint32_t max_slots, uint64_t words,
                   int32_t format_pid) {
  const Layout l = layout_of(max_slots, words);
  if (l.total > size) {
    format_error("data store " + region_name(region, size) + " is too small for " +
                 std::to_string(max_slots) + " slots and " + std::to_string(words * 8) +
                 " bytes of values: it needs " + std::to_string(l.total) + " bytes");
  }
  auto* base = static_cast<unsigned char*>(region);
  auto* h = new (region) DataStoreHeader;
  // First the marks open() uses to tell an interrupted format from garbage.
  h->magic.store(0, kRel);
  h->format_version.store(kDataStoreFormatVersion, kRelaxed);
  h->header_size.store(static_cast<uint32_t>(sizeof(DataStoreHeader)), kRelaxed);
  h->region_bytes.store(l.total, kRelaxed);
  h->max_slots.store(max_slots, kRelaxed);
  h->slot_size.store(static_cast<uint32_t>(sizeof(DataStoreSlot)), kRelaxed);
  h->arena_words.store(words, kRelaxed);
  h->slot_table_offset.store(l.slot_table, kRelaxed);
  h->arena_offset.store(l.arena, kRelaxed);
  h->snapshot_offset.store(l.snapshot, kRelaxed);
  h->format_pid.store(format_pid, kRelaxed);
  h->define_lock.store(0, kRelaxed);
  h->slot_count.store(0, kRelaxed);
  h->reserved0.store(0, kRelaxed);
  h->arena_used.store(0, kRelaxed);
  h->change_counter.store(0, kRelaxed);
  h->snapshot_request.store(0, kRelaxed);
  h->snapshot_done.store(0, kRelaxed);
  h->snapshot_postponed.store(0, kRelaxed);
  h->snapshots_taken.store(0, kRelaxed);
  for (uint32_t i = 0; i < max_slots; ++i) {
    auto* s = new (base + l.slot_table + std::size_t{i} * sizeof(DataStoreSlot)) DataStoreSlot;
    s->version.store(0, kRelaxed);
    s->len.store(0, kRelaxed);
    s->type.store(0, kRelaxed);
    s->capacity.store(0, kRelaxed);
    s->offset.store(0, kRelaxed);
    s->writer_pid.store(0, kRelaxed);
    for (auto& c : s->name) c.store('\0', kRelaxed);
  }
  auto zero_words = [base](std::size_t offset, uint64_t n) {
    for (uint64_t i = 0; i < n; ++i) {
      auto* w = new (base + offset + i * 8) std::atomic<uint64_t>;
      w->store(0, kRelaxed);
    }
  };
  zero_words(l.arena, words);
  auto* sh = new (base + l.snapshot) DataStoreSnapshotHeader;
  sh->seq.store(0, kRelaxed);
  sh->token.store(0, kRelaxed);
  sh->cycle.store(0, kRelaxed);
  sh->taken_ns.store(0, kRelaxed);
  sh->slot_count.store(0, kRelaxed);
  sh->torn_count.store(0, kRelaxed);
  sh->arena_used.store(0, kRelaxed);
  zero_words(l.snap_versions, max_slots);
  zero_words(l.snap_lens, max_slots);
  zero_words(l.snap_words, words);
  h->magic.store(kDataStoreMagic, kRel);
}

}  // namespace

DataStore DataStore::format(void* region, std::size_t size, uint32_t max_slots,
                            std::size_t arena_bytes) {
  check_region(region, size);
  check_max_slots(max_slots);
  uint64_t words = 0;
  if (arena_bytes == 0) {
    words = arena_bytes_for(size, max_slots) / 8;
    if (words == 0) {
      format_error("data store " + region_name(region, size) + " is too small for " +
                   std::to_string(max_slots) + " slots: it needs at least " +
                   std::to_string(layout_of(max_slots, 1).total) + " bytes");
    }
  } else {
    words = (uint64_t{arena_bytes} + 7) / 8;
    if (words > kDsMaxArenaWords) {
      throw std::invalid_argument("data store arena_bytes above " +
                                  std::to_string(kDsMaxArenaWords * 8));
    }
  }
  format_region(region, size, max_slots, words, 0);
  return DataStore(region);
}

DataStore DataStore::attach(void* region, std::size_t size) {
  check_region(region, size);
  const std::string where = "data store " + region_name(region, size);
  if (size < sizeof(DataStoreHeader)) {
    format_error(where + " is smaller than a data store header (" +
                 std::to_string(sizeof(DataStoreHeader)) + " bytes)");
  }
  DataStoreHeader* h = header_at(region);
  const uint64_t magic = h->magic.load(kAcq);
  if (magic != kDataStoreMagic) {
    format_error(where + " is not an mxrc data store: magic " + hex64(magic) + ", expected " +
                 hex64(kDataStoreMagic) + " (\"MXRCDS01\")" +
                 (magic == 0 ? "; it is not formatted yet" : ""));
  }
  const uint32_t version = h->format_version.load(kRelaxed);
  if (version != kDataStoreFormatVersion) {
    format_error(where + " has data store format version " + std::to_string(version) +
                 "; this mxrc reads version " + std::to_string(kDataStoreFormatVersion));
  }
  const uint32_t header_size = h->header_size.load(kRelaxed);
  const uint32_t slot_size = h->slot_size.load(kRelaxed);
  if (header_size != sizeof(DataStoreHeader) || slot_size != sizeof(DataStoreSlot)) {
    format_error(where + " has header/slot sizes " + std::to_string(header_size) + "/" +
                 std::to_string(slot_size) + ", expected " +
                 std::to_string(sizeof(DataStoreHeader)) + "/" +
                 std::to_string(sizeof(DataStoreSlot)));
  }
  const uint32_t max_slots = h->max_slots.load(kRelaxed);
  const uint64_t words = h->arena_words.load(kRelaxed);
  if (max_slots < 1 || max_slots > kDsMaxSlotsLimit || words < 1 || words > kDsMaxArenaWords) {
    format_error(where + " has a corrupt header: max_slots " + std::to_string(max_slots) +
                 ", arena words " + std::to_string(words));
  }
  const Layout l = layout_of(max_slots, words);
  const uint64_t claimed = h->region_bytes.load(kRelaxed);
  if (claimed != l.total || h->slot_table_offset.load(kRelaxed) != l.slot_table ||
      h->arena_offset.load(kRelaxed) != l.arena ||
      h->snapshot_offset.load(kRelaxed) != l.snapshot) {
    format_error(where + " has a corrupt header: its offsets do not match " +
                 std::to_string(max_slots) + " slots and " + std::to_string(words) +
                 " arena words");
  }
  if (claimed > size) {
    format_error(where + " is smaller than the data store formatted in it (" +
                 std::to_string(claimed) + " bytes)");
  }
  if (h->slot_count.load(kAcq) > max_slots) {
    format_error(where + " has a corrupt header: slot_count above max_slots");
  }
  return DataStore(region);
}

DataStore DataStore::open(void* region, std::size_t size, uint32_t max_slots) {
  check_region(region, size);
  check_max_slots(max_slots);
  if (size < sizeof(DataStoreHeader)) return attach(region, size);  // throws: too small
  DataStoreHeader* h = header_at(region);
  const auto self = static_cast<int32_t>(::getpid());
  const int64_t deadline = monotonic_ns() + kOpenWaitNs;
  // The region seen as words (the format_pid/define_lock word is skipped by the zero check).
  const auto* words = std::launder(reinterpret_cast<const std::atomic<uint64_t>*>(region));
  const std::size_t n_words = size / 8;
  constexpr std::size_t kPidWord = offsetof(DataStoreHeader, format_pid) / 8;
  for (;;) {
    const uint64_t magic = h->magic.load(kAcq);
    if (magic != 0) return attach(region, size);  // formatted (or foreign: attach says so)
    int32_t formatter = h->format_pid.load(kAcq);
    if (formatter == 0) {
      bool zero = true;
      for (std::size_t i = 0; i < n_words && zero; ++i) {
        if (i != kPidWord && words[i].load(kRelaxed) != 0) zero = false;
      }
      if (!zero) {
        // Someone may have started formatting meanwhile: look again first.
        if (h->format_pid.load(kAcq) != 0 || h->magic.load(kAcq) != 0) continue;
        format_error("data store " + region_name(region, size) +
                     " is neither an mxrc data store (no magic) nor zero-filled: refusing to "
                     "format it");
      }
    }
    if (formatter != 0 && formatter != self && !process_alive(formatter) &&
        (h->header_size.load(kRelaxed) != sizeof(DataStoreHeader) ||
         h->format_version.load(kRelaxed) != kDataStoreFormatVersion)) {
      // A "formatter" that is no process and left none of format()'s first
      // marks: garbage, not an interrupted format.
      if (h->format_pid.load(kAcq) != formatter || h->magic.load(kAcq) != 0) continue;
      format_error("data store " + region_name(region, size) +
                   " is neither an mxrc data store (no magic) nor zero-filled: refusing to "
                   "format it");
    }
    if ((formatter == 0 || (formatter != self && !process_alive(formatter))) &&
        h->format_pid.compare_exchange_strong(formatter, self, kAcq, kRelaxed)) {
      const uint64_t arena_words = arena_bytes_for(size, max_slots) / 8;
      if (arena_words == 0) {
        h->format_pid.store(0, kRel);
        format_error("data store " + region_name(region, size) + " is too small for " +
                     std::to_string(max_slots) + " slots: it needs at least " +
                     std::to_string(layout_of(max_slots, 1).total) + " bytes");
      }
      format_region(region, size, max_slots, arena_words, self);
      return DataStore(region);
    }
    if (monotonic_ns() >= deadline) {
      throw DataStoreError(DataStoreError::Kind::Busy,
                           "data store " + region_name(region, size) + ": pid " +
                               std::to_string(formatter) +
                               " has been formatting it for more than 2 s");
    }
    sleep_ns(200'000);
  }
}

uint32_t DataStore::slot_count() const noexcept {
  if (!h_) return 0;
  const uint32_t n = h_->slot_count.load(kAcq);
  return n > max_slots_ ? max_slots_ : n;
}

DsStats DataStore::stats() const noexcept {
  DsStats s;
  if (!h_) return s;
  s.region_bytes = h_->region_bytes.load(kRelaxed);
  s.max_slots = max_slots_;
  s.slot_count = slot_count();
  s.arena_words = arena_words_;
  s.arena_used = h_->arena_used.load(kAcq);
  s.change_counter = h_->change_counter.load(kAcq);
  s.snapshot_request = h_->snapshot_request.load(kAcq);
  s.snapshot_done = h_->snapshot_done.load(kAcq);
  s.snapshots_taken = h_->snapshots_taken.load(kRelaxed);
  s.snapshot_postponed = h_->snapshot_postponed.load(kRelaxed);
  return s;
}

bool DataStore::resolve(int32_t index, DataStoreSlot** slot, DsType* type, uint32_t* capacity,
                        std::atomic<uint64_t>** words) const noexcept {
  if (!h_ || index < 0) return false;
  if (static_cast<uint32_t>(index) >= slot_count()) return false;
  DataStoreSlot* s = &slots_[index];
  const uint32_t t = s->type.load(kRelaxed);
  const uint32_t cap = s->capacity.load(kRelaxed);
  const uint64_t off = s->offset.load(kRelaxed);
  if (!ds_type_valid(t)) return false;
  const uint64_t n = value_words(static_cast<DsType>(t), cap);
  if (n == 0 || off + n > arena_words_) return false;  // corrupt: never index out of the arena
  *slot = s;
  *type = static_cast<DsType>(t);
  *capacity = cap;
  *words = arena_ + off;
  return true;
}

int32_t DataStore::define(const std::string& name, DsType type, uint32_t capacity) {
  if (!h_) throw std::logic_error("invalid DataStore view");
  if (name.empty() || name.size() > kDsNameMax) {
    definition_error("data store slot name must be 1.." + std::to_string(kDsNameMax) +
                     " bytes, got " + std::to_string(name.size()) + " ('" + name + "')");
  }
  for (char c : name) {
    if (c < 0x21 || c > 0x7e) {
      definition_error("data store slot name '" + name +
                       "': only printable ASCII without spaces is allowed");
    }
  }
  if (!ds_type_valid(static_cast<uint32_t>(type))) {
    definition_error("data store slot '" + name + "': unknown type " +
                     std::to_string(static_cast<uint32_t>(type)) + " (expected MXRC_DS_* 1..5)");
  }
  if (type == DsType::Int64 || type == DsType::Float64 || type == DsType::Bool) {
    if (capacity > 1) {
      definition_error("data store slot '" + name + "': a " + ds_type_name(type) +
                       " holds one value (capacity 1), got capacity " + std::to_string(capacity));
    }
    capacity = 1;
  } else if (capacity < 1) {
    definition_error("data store slot '" + name + "': a " + ds_type_name(type) +
                     " needs a capacity >= 1 (" + (type == DsType::String ? "bytes" : "elements") +
                     ")");
  } else if (type == DsType::F64Array && capacity > (1U << 29)) {
    definition_error("data store slot '" + name + "': capacity above 2^29 elements");
  }
  const uint64_t n_words = value_words(type, capacity);

  DefineLock lock(h_->define_lock, pid_);
  const uint32_t n = slot_count();
  for (uint32_t i = 0; i < n; ++i) {
    const DataStoreSlot& s = slots_[i];
    if (slot_name(s) != name) continue;
    const auto t = static_cast<DsType>(s.type.load(kRelaxed));
    const uint32_t cap = s.capacity.load(kRelaxed);
    if (t == type && cap == capacity) return static_cast<int32_t>(i);
    definition_error("data store slot '" + name + "' is already defined as " + type_text(t, cap) +
                     " (index " + std::to_string(i) + "); cannot redefine it as " +
                     type_text(type, capacity));
  }
  if (n >= max_slots_) {
    definition_error("data store is full: all " + std::to_string(max_slots_) +
                     " slots are defined; cannot define '" + name +
                     "' (raise rt.bus.datastore_slots)");
  }
  const uint64_t used = h_->arena_used.load(kRelaxed);
  if (used + n_words > arena_words_) {
    definition_error("data store arena is full: '" + name + "' (" + type_text(type, capacity) +
                     ") needs " + std::to_string(n_words * 8) + " bytes, " +
                     std::to_string((arena_words_ - used) * 8) + " of " +
                     std::to_string(arena_words_ * 8) + " are free (raise rt.bus.datastore_bytes)");
  }
  DataStoreSlot& s = slots_[n];
  const uint64_t initial_len = type == DsType::String ? 0 : max_len(type, capacity);
  s.version.store(0, kRelaxed);
  s.len.store(initial_len, kRelaxed);
  s.type.store(static_cast<uint32_t>(type), kRelaxed);
  s.capacity.store(capacity, kRelaxed);
  s.offset.store(static_cast<uint32_t>(used), kRelaxed);
  s.writer_pid.store(0, kRelaxed);
  for (std::size_t i = 0; i <= kDsNameMax; ++i) {
    s.name[i].store(i < name.size() ? name[i] : '\0', kRelaxed);
  }
  for (uint64_t i = 0; i < n_words; ++i) arena_[used + i].store(0, kRelaxed);
  h_->arena_used.store(used + n_words, kRel);
  h_->slot_count.store(n + 1, kRel);  // publishes the slot
  return static_cast<int32_t>(n);
}

bool DataStore::slot_type(int32_t index, DsType* type, uint32_t* capacity) const noexcept {
  DataStoreSlot* s = nullptr;
  std::atomic<uint64_t>* w = nullptr;
  DsType t{};
  uint32_t cap = 0;
  if (!resolve(index, &s, &t, &cap, &w)) return false;
  if (type) *type = t;
  if (capacity) *capacity = cap;
  return true;
}

DsSlotInfo DataStore::slot_info(int32_t index) const {
  DataStoreSlot* s = nullptr;
  DsType type{};
  uint32_t cap = 0;
  std::atomic<uint64_t>* w = nullptr;
  if (!resolve(index, &s, &type, &cap, &w)) {
    throw DataStoreError(DataStoreError::Kind::NotFound,
                         "data store has no slot index " + std::to_string(index) + " (" +
                             std::to_string(slot_count()) + " defined)");
  }
  DsSlotInfo info;
  info.index = index;
  info.name = slot_name(*s);
  info.type = type;
  info.capacity = cap;
  info.offset = s->offset.load(kRelaxed);
  info.words = value_words(type, cap);
  info.version = s->version.load(kAcq);
  info.len = s->len.load(kRelaxed);
  info.writer_pid = s->writer_pid.load(kRelaxed);
  return info;
}

std::vector<uint64_t> DataStore::versions() const {
  const uint32_t n = slot_count();
  std::vector<uint64_t> out(n);
  for (uint32_t i = 0; i < n; ++i) out[i] = slots_[i].version.load(kAcq);
  return out;
}

int32_t DataStore::find(const char* name) const noexcept {
  if (!h_ || name == nullptr) return -ENOENT;
  const uint32_t n = slot_count();
  for (uint32_t i = 0; i < n; ++i) {
    const DataStoreSlot& s = slots_[i];
    std::size_t k = 0;
    for (; k <= kDsNameMax; ++k) {
      const char c = s.name[k].load(kRelaxed);
      if (c != name[k]) break;
      if (c == '\0') return static_cast<int32_t>(i);
    }
  }
  return -ENOENT;
}

uint64_t DataStore::version(int32_t index) const noexcept {
  if (!h_ || index < 0 || static_cast<uint32_t>(index) >= slot_count()) return 0;
  return slots_[index].version.load(kAcq);
}

uint64_t DataStore::change_counter() const noexcept {
  return h_ ? h_->change_counter.load(kAcq) : 0;
}

int32_t DataStore::read(int32_t index, void* out, uint32_t cap, uint32_t* len_out,
                        uint64_t* version_out, unsigned attempts) const noexcept {
  DataStoreSlot* s = nullptr;
  DsType type{};
  uint32_t capacity = 0;
  std::atomic<uint64_t>* w = nullptr;
  if (!resolve(index, &s, &type, &capacity, &w)) return EINVAL;
  if (out == nullptr && cap > 0) return EINVAL;
  auto* dst = static_cast<unsigned char*>(out);
  const uint64_t limit = max_len(type, capacity);
  const uint64_t room = type == DsType::F64Array ? cap / 8 * 8 : cap;
  for (unsigned a = 0; a < attempts; ++a) {
    const uint64_t v1 = s->version.load(kAcq);
    if ((v1 & 1U) != 0) {
      cpu_relax();
      continue;
    }
    uint64_t len = s->len.load(kRelaxed);
    if (len > limit) len = limit;  // only a torn length can exceed it: the check below retries
    const uint64_t n = len < room ? len : room;
    if (type == DsType::Bool) {
      if (n > 0) *dst = w[0].load(kRelaxed) != 0 ? 1 : 0;
    } else {
      copy_out(w, dst, n);
    }
    std::atomic_thread_fence(kAcq);
    if (s->version.load(kRelaxed) != v1) continue;
    if (type == DsType::String && len < cap) dst[len] = '\0';
    if (len_out) *len_out = static_cast<uint32_t>(len);
    if (version_out) *version_out = v1;
    return 0;
  }
  return EAGAIN;
}

namespace {

template <typename T>
int32_t read_word(const DataStoreSlot* s, const std::atomic<uint64_t>* w, T* out,
                  uint64_t* version_out, unsigned attempts) noexcept {
  for (unsigned a = 0; a < attempts; ++a) {
    const uint64_t v1 = s->version.load(kAcq);
    if ((v1 & 1U) != 0) {
      cpu_relax();
      continue;
    }
    const uint64_t bits = w[0].load(kRelaxed);
    std::atomic_thread_fence(kAcq);
    if (s->version.load(kRelaxed) != v1) continue;
    std::memcpy(out, &bits, sizeof(T));
    if (version_out) *version_out = v1;
    return 0;
  }
  return EAGAIN;
}

}  // namespace

int32_t DataStore::read_f64(int32_t index, double* out, uint64_t* version_out,
                            unsigned attempts) const noexcept {
  DataStoreSlot* s = nullptr;
  DsType type{};
  uint32_t cap = 0;
  std::atomic<uint64_t>* w = nullptr;
  if (out == nullptr || !resolve(index, &s, &type, &cap, &w) || type != DsType::Float64) {
    return EINVAL;
  }
  return read_word(s, w, out, version_out, attempts);
}

int32_t DataStore::read_i64(int32_t index, int64_t* out, uint64_t* version_out,
                            unsigned attempts) const noexcept {
  DataStoreSlot* s = nullptr;
  DsType type{};
  uint32_t cap = 0;
  std::atomic<uint64_t>* w = nullptr;
  if (out == nullptr || !resolve(index, &s, &type, &cap, &w) || type != DsType::Int64) {
    return EINVAL;
  }
  return read_word(s, w, out, version_out, attempts);
}

int32_t DataStore::check_write(DsType type, uint32_t capacity, const void* value,
                               uint32_t len) const noexcept {
  if (value == nullptr && len > 0) return EINVAL;
  switch (type) {
    case DsType::Int64:
    case DsType::Float64:
      return len == 8 ? 0 : EINVAL;
    case DsType::Bool:
      return len == 1 ? 0 : EINVAL;
    case DsType::String:
      return len <= capacity ? 0 : EINVAL;
    case DsType::F64Array:
      return len % 8 == 0 && len / 8 <= capacity ? 0 : EINVAL;
  }
  return EINVAL;
}

int32_t DataStore::try_write(int32_t index, const void* value, uint32_t len) noexcept {
  DataStoreSlot* s = nullptr;
  DsType type{};
  uint32_t cap = 0;
  std::atomic<uint64_t>* w = nullptr;
  if (!resolve(index, &s, &type, &cap, &w)) return EINVAL;
  if (check_write(type, cap, value, len) != 0) return EINVAL;
  uint64_t v = s->version.load(kRelaxed);
  if ((v & 1U) != 0 || !s->version.compare_exchange_strong(v, v + 1, kAcq, kRelaxed)) {
    return EBUSY;
  }
  std::atomic_thread_fence(kRel);
  s->writer_pid.store(pid_, kRelaxed);
  const auto* src = static_cast<const unsigned char*>(value);
  if (type == DsType::Bool) {
    w[0].store(*src != 0 ? 1 : 0, kRelaxed);
  } else {
    copy_in(w, src, len);
  }
  s->len.store(len, kRelaxed);
  s->version.store(v + 2, kRel);
  h_->change_counter.fetch_add(1, kRel);
  return 0;
}

int32_t DataStore::try_write_f64(int32_t index, double value) noexcept {
  DataStoreSlot* s = nullptr;
  DsType type{};
  uint32_t cap = 0;
  std::atomic<uint64_t>* w = nullptr;
  if (!resolve(index, &s, &type, &cap, &w) || type != DsType::Float64) return EINVAL;
  return try_write(index, &value, 8);
}

int32_t DataStore::try_write_i64(int32_t index, int64_t value) noexcept {
  DataStoreSlot* s = nullptr;
  DsType type{};
  uint32_t cap = 0;
  std::atomic<uint64_t>* w = nullptr;
  if (!resolve(index, &s, &type, &cap, &w) || type != DsType::Int64) return EINVAL;
  return try_write(index, &value, 8);
}

int32_t DataStore::try_acquire(int32_t index) noexcept {
  DataStoreSlot* s = nullptr;
  DsType type{};
  uint32_t cap = 0;
  std::atomic<uint64_t>* w = nullptr;
  if (!resolve(index, &s, &type, &cap, &w)) return EINVAL;
  uint64_t v = s->version.load(kRelaxed);
  if ((v & 1U) != 0 || !s->version.compare_exchange_strong(v, v + 1, kAcq, kRelaxed)) {
    return EBUSY;
  }
  std::atomic_thread_fence(kRel);
  s->writer_pid.store(pid_, kRelaxed);
  return 0;
}

std::atomic<uint64_t>* DataStore::words(int32_t index) const noexcept {
  DataStoreSlot* s = nullptr;
  DsType type{};
  uint32_t cap = 0;
  std::atomic<uint64_t>* w = nullptr;
  return resolve(index, &s, &type, &cap, &w) ? w : nullptr;
}

void DataStore::release(int32_t index, uint32_t len) noexcept {
  DataStoreSlot* s = nullptr;
  DsType type{};
  uint32_t cap = 0;
  std::atomic<uint64_t>* w = nullptr;
  if (!resolve(index, &s, &type, &cap, &w)) return;
  const uint64_t v = s->version.load(kRelaxed);
  if ((v & 1U) == 0) return;  // not held
  const uint64_t limit = max_len(type, cap);
  uint64_t n = len > limit ? limit : len;
  if (type == DsType::F64Array) n = n / 8 * 8;
  if (type == DsType::Int64 || type == DsType::Float64 || type == DsType::Bool) n = limit;
  s->len.store(n, kRelaxed);
  s->version.store(v + 1, kRel);
  h_->change_counter.fetch_add(1, kRel);
}

int32_t DataStore::write(int32_t index, const void* value, uint32_t len,
                         int64_t timeout_ns) noexcept {
  Backoff backoff(timeout_ns);
  for (;;) {
    const int32_t rc = try_write(index, value, len);
    if (rc != EBUSY || !backoff.wait()) return rc;
  }
}

int32_t DataStore::read_wait(int32_t index, void* out, uint32_t cap, uint32_t* len_out,
                             uint64_t* version_out, int64_t timeout_ns) const noexcept {
  Backoff backoff(timeout_ns);
  for (;;) {
    const int32_t rc = read(index, out, cap, len_out, version_out, kDsRtReadAttempts);
    if (rc != EAGAIN || !backoff.wait()) return rc;
  }
}

int32_t DataStore::acquire(int32_t index, int64_t timeout_ns) noexcept {
  Backoff backoff(timeout_ns);
  for (;;) {
    const int32_t rc = try_acquire(index);
    if (rc != EBUSY || !backoff.wait()) return rc;
  }
}

uint64_t DataStore::request_snapshot() noexcept {
  return h_ ? h_->snapshot_request.fetch_add(1, std::memory_order_acq_rel) + 1 : 0;
}

uint64_t DataStore::snapshot_done() const noexcept { return h_ ? h_->snapshot_done.load(kAcq) : 0; }

SnapshotResult DataStore::service_snapshot(uint64_t cycle, int64_t now_ns) noexcept {
  if (!h_) return SnapshotResult::Idle;
  const uint64_t req = h_->snapshot_request.load(kAcq);
  if (req == h_->snapshot_done.load(kRelaxed)) return SnapshotResult::Idle;
  uint64_t sq = snap_->seq.load(kRelaxed);
  if ((sq & 1U) != 0 || !snap_->seq.compare_exchange_strong(sq, sq + 1, kAcq, kRelaxed)) {
    return SnapshotResult::Busy;
  }
  std::atomic_thread_fence(kRel);
  snap_->token.store(0, kRelaxed);
  const uint32_t n = slot_count();
  uint64_t end = 0;
  // Copies slot i (words, length, version) into the snapshot area; false
  // when it stayed mid-write for kDsRtReadAttempts attempts.
  auto copy_slot = [&](uint32_t i) noexcept {
    DataStoreSlot* s = nullptr;
    DsType type{};
    uint32_t cap = 0;
    std::atomic<uint64_t>* w = nullptr;
    if (!resolve(static_cast<int32_t>(i), &s, &type, &cap, &w)) return false;
    const uint64_t off = static_cast<uint64_t>(w - arena_);
    const uint64_t n_words = value_words(type, cap);
    if (off + n_words > end) end = off + n_words;
    for (unsigned a = 0; a < kDsRtReadAttempts; ++a) {
      const uint64_t v1 = s->version.load(kAcq);
      if ((v1 & 1U) != 0) {
        cpu_relax();
        continue;
      }
      const uint64_t len = s->len.load(kRelaxed);
      for (uint64_t k = 0; k < n_words; ++k) {
        snap_words_[off + k].store(w[k].load(kRelaxed), kRelaxed);
      }
      std::atomic_thread_fence(kAcq);
      if (s->version.load(kRelaxed) != v1) continue;
      snap_versions_[i].store(v1, kRelaxed);
      snap_lens_[i].store(len, kRelaxed);
      return true;
    }
    return false;
  };
  // A slot being written by another writer (the agent) is marked pending and
  // tried again after all the others: its writer has had time to finish.
  constexpr uint64_t kPending = ~uint64_t{0};
  uint32_t pending = 0;
  for (uint32_t i = 0; i < n; ++i) {
    if (!copy_slot(i)) {
      snap_versions_[i].store(kPending, kRelaxed);
      ++pending;
    }
  }
  uint32_t torn = 0;
  if (pending != 0) {
    const bool force = h_->snapshot_postponed.load(kRelaxed) >= kDsSnapshotMaxPostpone;
    for (uint32_t i = 0; i < n; ++i) {
      if (snap_versions_[i].load(kRelaxed) != kPending || copy_slot(i)) continue;
      if (!force) {
        snap_->seq.store(sq + 2, kRel);  // token 0: nothing valid in the area
        h_->snapshot_postponed.store(h_->snapshot_postponed.load(kRelaxed) + 1, kRelaxed);
        return SnapshotResult::Postponed;
      }
      // Forced: reported torn (an odd version); never index a corrupt slot.
      snap_versions_[i].store(i < max_slots_ ? slots_[i].version.load(kRelaxed) | 1U : 1U,
                              kRelaxed);
      snap_lens_[i].store(0, kRelaxed);
      ++torn;
    }
  }
  snap_->cycle.store(cycle, kRelaxed);
  snap_->taken_ns.store(now_ns >= 0 ? now_ns : monotonic_ns(), kRelaxed);
  snap_->slot_count.store(n, kRelaxed);
  snap_->torn_count.store(torn, kRelaxed);
  snap_->arena_used.store(end, kRelaxed);
  snap_->token.store(req, kRelaxed);
  snap_->seq.store(sq + 2, kRel);
  h_->snapshot_postponed.store(0, kRelaxed);
  h_->snapshots_taken.fetch_add(1, kRelaxed);
  h_->snapshot_done.store(req, kRel);
  return SnapshotResult::Taken;
}

int32_t DataStore::read_snapshot(uint64_t min_token, DsSnapshotCopy& out, unsigned attempts) const {
  if (!h_) return ENOENT;
  for (unsigned a = 0; a < attempts; ++a) {
    const uint64_t s1 = snap_->seq.load(kAcq);
    if ((s1 & 1U) != 0) {
      if (a > 8) sched_yield();
      continue;
    }
    out.token = snap_->token.load(kRelaxed);
    out.cycle = snap_->cycle.load(kRelaxed);
    out.taken_ns = snap_->taken_ns.load(kRelaxed);
    uint32_t n = snap_->slot_count.load(kRelaxed);
    if (n > max_slots_) n = max_slots_;
    out.slot_count = n;
    out.torn_count = snap_->torn_count.load(kRelaxed);
    uint64_t used = snap_->arena_used.load(kRelaxed);
    if (used > arena_words_) used = arena_words_;
    out.versions.resize(n);
    out.lens.resize(n);
    out.words.resize(used);
    for (uint32_t i = 0; i < n; ++i) {
      out.versions[i] = snap_versions_[i].load(kRelaxed);
      out.lens[i] = snap_lens_[i].load(kRelaxed);
    }
    for (uint64_t i = 0; i < used; ++i) out.words[i] = snap_words_[i].load(kRelaxed);
    std::atomic_thread_fence(kAcq);
    if (snap_->seq.load(kRelaxed) != s1) continue;
    if (out.token == 0 || out.token < min_token) return ENOENT;
    return 0;
  }
  return EAGAIN;
}

std::vector<int32_t> DataStore::repair(int64_t grace_ns) {
  std::vector<int32_t> released;
  if (!h_) return released;
  const uint32_t n = slot_count();
  std::vector<uint64_t> odd(n, 0);
  bool any = false;
  for (uint32_t i = 0; i < n; ++i) {
    const uint64_t v = slots_[i].version.load(kAcq);
    if ((v & 1U) != 0) {
      odd[i] = v;
      any = true;
    }
  }
  if (!any) return released;
  if (grace_ns > 0) sleep_ns(grace_ns);
  for (uint32_t i = 0; i < n; ++i) {
    if (odd[i] == 0) continue;
    DataStoreSlot& s = slots_[i];
    const int32_t writer = s.writer_pid.load(kRelaxed);
    if (writer == pid_ || process_alive(writer)) continue;
    uint64_t v = odd[i];
    if (s.version.compare_exchange_strong(v, v + 1, std::memory_order_acq_rel, kRelaxed)) {
      h_->change_counter.fetch_add(1, kRel);
      released.push_back(static_cast<int32_t>(i));
    }
  }
  return released;
}

namespace ds_c {

int32_t find(const DataStore* ds, const char* name) noexcept {
  return ds ? ds->find(name) : -ENOENT;
}

int32_t read(const DataStore* ds, int32_t index, void* out, uint32_t cap, uint32_t* len_out,
             uint64_t* version_out) noexcept {
  return ds ? ds->read(index, out, cap, len_out, version_out) : ENOENT;
}

int32_t write(DataStore* ds, int32_t index, const void* value, uint32_t len) noexcept {
  return ds ? ds->try_write(index, value, len) : ENOENT;
}

int32_t read_f64(const DataStore* ds, int32_t index, double* out) noexcept {
  return ds ? ds->read_f64(index, out) : ENOENT;
}

int32_t write_f64(DataStore* ds, int32_t index, double value) noexcept {
  return ds ? ds->try_write_f64(index, value) : ENOENT;
}

int32_t read_i64(const DataStore* ds, int32_t index, int64_t* out) noexcept {
  return ds ? ds->read_i64(index, out) : ENOENT;
}

int32_t write_i64(DataStore* ds, int32_t index, int64_t value) noexcept {
  return ds ? ds->try_write_i64(index, value) : ENOENT;
}

}  // namespace ds_c

}  // namespace mxrc
