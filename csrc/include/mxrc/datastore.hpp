// The data store: typed slots with per-slot versions, over ANY raw memory
// region (the segment's data store region, a private buffer, an mmap'd file).
//
// Region format (version 1), every word a std::atomic:
//
//   DataStoreHeader   256 bytes: magic, format version, sizes and offsets,
//                     define lock, slot count, arena use, change counter,
//                     snapshot request / done
//   DataStoreSlot[max_slots]   64 bytes each: version (the slot's seqlock),
//                     value length, type, capacity, arena offset, last writer
//                     pid, name (<= 31 bytes, NUL-padded)
//   arena             atomic<uint64_t>[arena_words]: the values
//   snapshot area     DataStoreSnapshotHeader (seqlock, token, cycle, time),
//                     versions[max_slots], lens[max_slots], words[arena_words]
//
// Slots are only ever added (define), never removed; a slot's name, type,
// capacity and offset are written before slot_count publishes it (release)
// and never change afterwards.
//
// Writers (several: the RT body and the agent): CAS the version even -> odd,
// store the words and the length, store version + 2 (release), bump
// change_counter. The RT side (try_write, try_acquire) returns EBUSY instead
// of waiting; non-RT writers (write, acquire) retry with a backoff until a
// deadline. Readers copy out with a bounded number of attempts and report
// EAGAIN (torn) instead of spinning. A slot's version is even when stable and
// counts 2 per completed write (0 = never written); an odd version stays odd
// only while a writer holds the slot, or forever if that writer died: repair()
// releases slots held by dead processes.
//
// Snapshot: request_snapshot() (non-RT) asks; the cycle thread calls
// service_snapshot() at a cycle boundary, which copies every slot's words,
// length and version into the snapshot area without allocating;
// read_snapshot() (non-RT) copies it out.
//
// Not for the cycle thread: format, attach, open, define, slot_info, write,
// read_wait, acquire, read_snapshot, repair (they may allocate, sleep or throw).
// For the cycle thread (noexcept, no allocation, no lock, no system call
// except clock_gettime): find, read, read_f64, read_i64, try_write,
// try_write_f64, try_write_i64, try_acquire, release, version,
// service_snapshot, and the ds_c functions below.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace mxrc {

inline constexpr uint64_t kDataStoreMagic = 0x313053444352584DULL;  // bytes "MXRCDS01"
inline constexpr uint32_t kDataStoreFormatVersion = 1;
inline constexpr std::size_t kDsNameMax = 31;  // bytes, without the terminating NUL
inline constexpr uint32_t kDsMaxSlotsLimit = 4096;
inline constexpr uint64_t kDsMaxArenaWords = 0xFFFFFFFFULL;  // offsets are 32-bit
// Attempts of a cycle-thread read (and of service_snapshot per slot) before
// it reports EAGAIN.
inline constexpr unsigned kDsRtReadAttempts = 16;
// service_snapshot() postpones a snapshot while a slot is being written; after
// this many consecutive postponements it takes it anyway, flagging such slots
// torn (their snapshot version is odd).
inline constexpr uint64_t kDsSnapshotMaxPostpone = 64;

// Values of DataStoreSlot::type: the MXRC_DS_* of mxrc.h.
enum class DsType : uint32_t { Int64 = 1, Float64 = 2, Bool = 3, String = 4, F64Array = 5 };

const char* ds_type_name(DsType t) noexcept;  // "int64", ..., "unknown"
bool ds_type_valid(uint32_t t) noexcept;

// Thrown by the non-RT functions. kind says what went wrong.
class DataStoreError : public std::runtime_error {
 public:
  enum class Kind {
    Format,      // not a data store, other format version, too small, misaligned
    Definition,  // bad name/type/capacity, conflicting definition, table or arena full
    NotFound,    // no such slot
    Value,       // a value of the wrong type or size
    Busy,        // another writer kept the slot (or the define lock)
    Torn,        // a reader kept seeing a write in progress
  };
  DataStoreError(Kind kind, const std::string& what) : std::runtime_error(what), kind_(kind) {}
  Kind kind() const noexcept { return kind_; }

 private:
  Kind kind_;
};

struct alignas(64) DataStoreHeader {
  std::atomic<uint64_t> magic;  // kDataStoreMagic, stored last by format (release)
  std::atomic<uint32_t> format_version;
  std::atomic<uint32_t> header_size;   // sizeof(DataStoreHeader)
  std::atomic<uint64_t> region_bytes;  // bytes the format uses (<= the region)
  std::atomic<uint32_t> max_slots;
  std::atomic<uint32_t> slot_size;  // sizeof(DataStoreSlot)
  std::atomic<uint64_t> arena_words;
  std::atomic<uint64_t> slot_table_offset;  // bytes from the region's start
  std::atomic<uint64_t> arena_offset;
  std::atomic<uint64_t> snapshot_offset;
  alignas(64) std::atomic<int32_t> format_pid;  // open(): the process formatting a zeroed region
  std::atomic<int32_t> define_lock;             // pid of the process defining a slot; 0 = free
  std::atomic<uint32_t> slot_count;             // published (release) after each define
  std::atomic<uint32_t> reserved0;
  std::atomic<uint64_t> arena_used;                    // words handed out (under define_lock)
  alignas(64) std::atomic<uint64_t> change_counter;    // +1 per completed write
  alignas(64) std::atomic<uint64_t> snapshot_request;  // +1 per request_snapshot()
  std::atomic<uint64_t> snapshot_done;                 // request number of the last snapshot taken
  std::atomic<uint64_t> snapshot_postponed;            // consecutive postponements (servicer only)
  std::atomic<uint64_t> snapshots_taken;
};

struct alignas(64) DataStoreSlot {
  std::atomic<uint64_t> version;    // seqlock: even = stable (2 per write), odd = being written
  std::atomic<uint64_t> len;        // bytes of the value (written inside the seqlock)
  std::atomic<uint32_t> type;       // DsType
  std::atomic<uint32_t> capacity;   // bytes (STRING), elements (F64ARRAY), 1 otherwise
  std::atomic<uint32_t> offset;     // first arena word
  std::atomic<int32_t> writer_pid;  // process of the last writer to take the slot
  std::atomic<char> name[kDsNameMax + 1];
};

struct alignas(64) DataStoreSnapshotHeader {
  std::atomic<uint64_t> seq;    // seqlock over the snapshot area; CAS even -> odd by a servicer
  std::atomic<uint64_t> token;  // the request it answers; 0 = none (or abandoned)
  std::atomic<uint64_t> cycle;  // the cycle boundary it was taken at
  std::atomic<int64_t> taken_ns;
  std::atomic<uint32_t> slot_count;
  std::atomic<uint32_t> torn_count;  // slots copied while being written (forced snapshot)
  std::atomic<uint64_t> arena_used;
};

static_assert(std::atomic<char>::is_always_lock_free);
static_assert(std::atomic<int32_t>::is_always_lock_free);
static_assert(std::atomic<uint32_t>::is_always_lock_free);
static_assert(std::atomic<int64_t>::is_always_lock_free);
static_assert(std::atomic<uint64_t>::is_always_lock_free);
static_assert(sizeof(std::atomic<uint64_t>) == 8 && alignof(std::atomic<uint64_t>) == 8);
static_assert(std::is_standard_layout_v<DataStoreHeader>);
static_assert(std::is_standard_layout_v<DataStoreSlot>);
static_assert(std::is_standard_layout_v<DataStoreSnapshotHeader>);
static_assert(sizeof(DataStoreHeader) == 256);
static_assert(sizeof(DataStoreSlot) == 64);
static_assert(sizeof(DataStoreSnapshotHeader) == 64);

struct DsSlotInfo {
  int32_t index = -1;
  std::string name;
  DsType type = DsType::Int64;
  uint32_t capacity = 0;
  uint32_t offset = 0;
  uint64_t words = 0;
  uint64_t version = 0;
  uint64_t len = 0;
  int32_t writer_pid = 0;
};

struct DsStats {
  uint64_t region_bytes = 0;
  uint32_t max_slots = 0;
  uint32_t slot_count = 0;
  uint64_t arena_words = 0;
  uint64_t arena_used = 0;
  uint64_t change_counter = 0;
  uint64_t snapshot_request = 0;
  uint64_t snapshot_done = 0;
  uint64_t snapshots_taken = 0;
  uint64_t snapshot_postponed = 0;
};

// A plain copy of the snapshot area (read_snapshot).
struct DsSnapshotCopy {
  uint64_t token = 0;
  uint64_t cycle = 0;
  int64_t taken_ns = 0;
  uint32_t slot_count = 0;
  uint32_t torn_count = 0;
  std::vector<uint64_t> versions;  // per slot; odd = torn (forced snapshot)
  std::vector<uint64_t> lens;
  std::vector<uint64_t> words;  // the arena, words [0, arena_used)
};

enum class SnapshotResult : int32_t {
  Idle = 0,       // no request pending
  Taken = 1,      // a snapshot was taken
  Postponed = 2,  // a slot was being written: try again at the next boundary
  Busy = 3,       // another thread is servicing a snapshot right now
};

// A view on a formatted region: copyable, does not own the memory (keep the
// region mapped while any view is used). A default-constructed view is invalid.
class DataStore {
 public:
  DataStore() noexcept = default;

  // Bytes a region needs for max_slots slots and arena_bytes of values
  // (rounded up to 8). Throws std::invalid_argument outside the limits.
  static std::size_t region_bytes(uint32_t max_slots, std::size_t arena_bytes);
  // The largest arena (bytes, a multiple of 8) that fits in region_bytes with
  // max_slots slots; 0 when not even one word fits.
  static std::size_t arena_bytes_for(std::size_t region_bytes, uint32_t max_slots) noexcept;

  // Formats region[0, size): arena_bytes of values (0: all that fits).
  // Not concurrent with any other user of the region. Throws DataStoreError
  // (Format: misaligned or too small) or std::invalid_argument.
  static DataStore format(void* region, std::size_t size, uint32_t max_slots,
                          std::size_t arena_bytes = 0);
  // A region some process formatted. Throws DataStoreError(Format) naming
  // what was expected and found (magic, version, sizes).
  static DataStore attach(void* region, std::size_t size);
  // attach(), or format() a zero-filled region (e.g. a fresh segment's data
  // store region). Safe when several processes open the same zeroed region at
  // once: one formats, the others wait for it (up to 2 s).
  static DataStore open(void* region, std::size_t size, uint32_t max_slots);

  bool valid() const noexcept { return h_ != nullptr; }
  void* region() const noexcept { return h_; }
  uint32_t max_slots() const noexcept { return max_slots_; }
  uint64_t arena_words() const noexcept { return arena_words_; }
  uint32_t slot_count() const noexcept;
  DsStats stats() const noexcept;

  // --- definitions (non-RT) ---
  // Index of a new slot, or of the existing one with the same definition.
  // capacity: bytes for STRING, elements for F64ARRAY (>= 1), 0 or 1 for the
  // scalars. Throws DataStoreError(Definition) for a bad name/capacity, a
  // conflicting definition, a full table or arena.
  int32_t define(const std::string& name, DsType type, uint32_t capacity);
  DsSlotInfo slot_info(int32_t index) const;  // throws DataStoreError(NotFound)
  std::vector<uint64_t> versions() const;     // every defined slot's version

  // --- cycle-thread safe ---
  int32_t find(const char* name) const noexcept;  // index, or -ENOENT (also for NULL)
  // Type and capacity of a defined slot; false for a bad index.
  bool slot_type(int32_t index, DsType* type, uint32_t* capacity) const noexcept;
  uint64_t version(int32_t index) const noexcept;  // 0 for a bad index
  uint64_t change_counter() const noexcept;
  // Returns 0, EINVAL (bad index, NULL out with cap > 0) or EAGAIN (a write
  // kept being in progress for `attempts` attempts). Copies min(len, cap)
  // bytes (arrays: whole elements); *len_out = bytes of the value (may exceed
  // cap: truncated). A STRING shorter than cap is NUL-terminated.
  int32_t read(int32_t index, void* out, uint32_t cap, uint32_t* len_out, uint64_t* version_out,
               unsigned attempts = kDsRtReadAttempts) const noexcept;
  int32_t read_f64(int32_t index, double* out, uint64_t* version_out = nullptr,
                   unsigned attempts = kDsRtReadAttempts) const noexcept;  // FLOAT64 only
  int32_t read_i64(int32_t index, int64_t* out, uint64_t* version_out = nullptr,
                   unsigned attempts = kDsRtReadAttempts) const noexcept;  // INT64 only
  // Returns 0, EINVAL (bad index, type or length) or EBUSY (another writer
  // holds the slot: never waits).
  int32_t try_write(int32_t index, const void* value, uint32_t len) noexcept;
  int32_t try_write_f64(int32_t index, double value) noexcept;
  int32_t try_write_i64(int32_t index, int64_t value) noexcept;
  // Write scope: take the slot (EBUSY if held), write its words in place
  // through words(), then release() with the value's length in bytes (which
  // publishes the new version). Every acquire that returned 0 must be
  // released.
  int32_t try_acquire(int32_t index) noexcept;
  std::atomic<uint64_t>* words(int32_t index) const noexcept;  // nullptr for a bad index
  void release(int32_t index, uint32_t len) noexcept;

  // --- non-RT: retry with a backoff until timeout_ns has passed ---
  int32_t write(int32_t index, const void* value, uint32_t len, int64_t timeout_ns) noexcept;
  int32_t read_wait(int32_t index, void* out, uint32_t cap, uint32_t* len_out,
                    uint64_t* version_out, int64_t timeout_ns) const noexcept;
  int32_t acquire(int32_t index, int64_t timeout_ns) noexcept;

  // --- snapshot ---
  uint64_t request_snapshot() noexcept;  // non-RT; returns the request's token (>= 1)
  uint64_t snapshot_done() const noexcept;
  // Cycle thread, at a cycle boundary. now_ns < 0: CLOCK_MONOTONIC now.
  SnapshotResult service_snapshot(uint64_t cycle, int64_t now_ns = -1) noexcept;
  // Non-RT. 0: *out holds a snapshot with token >= min_token; ENOENT: none
  // yet; EAGAIN: it kept changing for `attempts` attempts.
  int32_t read_snapshot(uint64_t min_token, DsSnapshotCopy& out, unsigned attempts = 64) const;

  // Non-RT: releases slots left odd by writers whose process is gone (the
  // version stayed the same odd value for grace_ns and its writer_pid does not
  // exist). The value is what the dead writer left: rewrite it. Returns the
  // indices released.
  std::vector<int32_t> repair(int64_t grace_ns);

  // Words a value of (type, capacity) occupies; 0 for an invalid pair.
  static uint64_t value_words(DsType type, uint32_t capacity) noexcept;
  // Largest value length in bytes of (type, capacity).
  static uint64_t max_len(DsType type, uint32_t capacity) noexcept;

 private:
  explicit DataStore(void* region) noexcept;
  bool resolve(int32_t index, DataStoreSlot** slot, DsType* type, uint32_t* capacity,
               std::atomic<uint64_t>** words) const noexcept;
  int32_t check_write(DsType type, uint32_t capacity, const void* value,
                      uint32_t len) const noexcept;

  DataStoreHeader* h_ = nullptr;
  DataStoreSlot* slots_ = nullptr;
  std::atomic<uint64_t>* arena_ = nullptr;
  DataStoreSnapshotHeader* snap_ = nullptr;
  std::atomic<uint64_t>* snap_versions_ = nullptr;
  std::atomic<uint64_t>* snap_lens_ = nullptr;
  std::atomic<uint64_t>* snap_words_ = nullptr;
  uint32_t max_slots_ = 0;
  uint64_t arena_words_ = 0;
  int32_t pid_ = 0;  // this process (cached: the RT path makes no getpid call)
};

// The data-store entries of the C function table (mxrc.h), without the ctx:
// the executive routes ctx -> its DataStore and calls these. A NULL store
// means "no data store" (ENOENT). Return values as documented in mxrc.h.
namespace ds_c {
int32_t find(const DataStore* ds, const char* name) noexcept;  // index, or -ENOENT
int32_t read(const DataStore* ds, int32_t index, void* out, uint32_t cap, uint32_t* len_out,
             uint64_t* version_out) noexcept;
int32_t write(DataStore* ds, int32_t index, const void* value, uint32_t len) noexcept;
int32_t read_f64(const DataStore* ds, int32_t index, double* out) noexcept;
int32_t write_f64(DataStore* ds, int32_t index, double value) noexcept;
int32_t read_i64(const DataStore* ds, int32_t index, int64_t* out) noexcept;
int32_t write_i64(DataStore* ds, int32_t index, int64_t value) noexcept;
}  // namespace ds_c

}  // namespace mxrc
