// The per-cycle-thread stats block (lives in shared memory) and its single
// writer (the cycle loop) and readers (any thread or process).
//
// Consistency: every multi-word update made by StatsWriter::record() happens
// inside a seqlock (`seq` odd while writing). read_stats() copies the whole
// block and retries a bounded number of times until it saw an even, unchanged
// `seq`; otherwise it returns the last copy flagged `torn`. Single-word fields
// (state, heartbeat, skipped releases, body errors, rusage, identity) are
// written outside the seqlock: each is individually atomic. Readers never
// write to the block, so reading never perturbs the loop.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>

#include "mxrc/histogram.hpp"

namespace mxrc {

enum class RtState : int32_t {
  Init = 0,
  Ready = 1,
  Running = 2,
  Paused = 3,
  SafeMode = 4,
  Error = 5,
  Shutdown = 6
};

const char* rt_state_name(RtState s) noexcept;

inline constexpr std::size_t kStatsNameMax = 63;  // bytes, without the terminating NUL

// Standard layout, only std::atomic members and fixed arrays of them. A
// zero-filled block followed by reset_stats_block() is the initial state.
struct alignas(64) StatsBlock {
  std::atomic<char> name[kStatsNameMax + 1];  // NUL-terminated, set at claim
  std::atomic<int32_t> tid;                   // cycle thread (0 until begin())
  std::atomic<int32_t> state;                 // RtState
  std::atomic<int64_t> period_ns;
  std::atomic<int64_t> deadline_ns;
  std::atomic<int64_t> start_ns;      // CLOCK_MONOTONIC of the first release
  std::atomic<int64_t> heartbeat_ns;  // CLOCK_MONOTONIC of the last wake
  std::atomic<uint64_t> skipped_release_count;
  std::atomic<uint64_t> body_error_count;
  std::atomic<uint64_t> minor_faults;              // getrusage(RUSAGE_THREAD) ru_minflt
  std::atomic<uint64_t> involuntary_ctx_switches;  // ru_nivcsw
  alignas(64) std::atomic<uint64_t> seq;           // seqlock over what follows
  std::atomic<uint64_t> cycle_count;
  std::atomic<uint64_t> deadline_miss_count;
  std::atomic<uint64_t> consecutive_misses;
  std::atomic<uint64_t> max_consecutive_misses;
  std::atomic<uint64_t> gil_contended_cycles;  // gil wait > kGilContendedNs
  std::atomic<uint64_t> wake_latency_n;        // Welford over wake latency (ns)
  std::atomic<double> wake_latency_mean_ns;
  std::atomic<double> wake_latency_m2;
  alignas(64) Histogram wake_latency;  // wake - release
  Histogram body_start_latency;        // body start - release
  Histogram exec_time;                 // body end - body start
  Histogram gil_wait;                  // Python tier only
};

static_assert(std::atomic<char>::is_always_lock_free);
static_assert(std::atomic<int32_t>::is_always_lock_free);
static_assert(std::atomic<int64_t>::is_always_lock_free);
static_assert(std::atomic<uint64_t>::is_always_lock_free);
static_assert(std::atomic<double>::is_always_lock_free);
static_assert(std::is_standard_layout_v<StatsBlock>);

// A GIL wait above this counts the cycle in gil_contended_cycles.
inline constexpr int64_t kGilContendedNs = 100'000;

// Zero the block and set its name (truncated to kStatsNameMax bytes). Not
// concurrent with a writer; readers may observe it (they see a torn/zero block).
void reset_stats_block(StatsBlock* block, const char* name) noexcept;

// One cycle's timestamps (CLOCK_MONOTONIC ns).
struct CycleSample {
  int64_t release_ns, wake_ns, body_start_ns, body_end_ns;
  int64_t gil_wait_ns; /* -1 when not a Python body */
  bool deadline_missed;
};

// The single writer of a block (the cycle thread). Every call is noexcept,
// allocation-free and lock-free; only sample_rusage() makes a system call.
// Negative durations (clock anomalies) are recorded as 0.
class StatsWriter {
 public:
  explicit StatsWriter(StatsBlock* block) noexcept;
  // Identity of the run; does not clear counters (reset_stats_block does).
  void begin(int64_t period_ns, int64_t deadline_ns, int32_t tid, int64_t start_ns) noexcept;
  void record(const CycleSample& s) noexcept;  // histograms, counts, misses, mean/var, heartbeat
  void heartbeat(int64_t now_ns) noexcept;     // also while PAUSED (no body)
  void set_state(RtState s) noexcept;
  void add_skipped_releases(uint64_t n) noexcept;
  void add_body_error() noexcept;
  void
  sample_rusage() noexcept;  // getrusage(RUSAGE_THREAD): minor faults, nivcsw; call every N cycles

  StatsBlock* block() const noexcept { return b_; }

 private:
  StatsBlock* b_;
};

// Plain copy of a block.
struct StatsSnapshot {
  std::string name;
  int32_t tid = 0;
  RtState state = RtState::Init;
  int64_t period_ns = 0;
  int64_t deadline_ns = 0;
  int64_t start_ns = 0;
  int64_t heartbeat_ns = 0;
  uint64_t skipped_release_count = 0;
  uint64_t body_error_count = 0;
  uint64_t minor_faults = 0;
  uint64_t involuntary_ctx_switches = 0;
  uint64_t cycle_count = 0;
  uint64_t deadline_miss_count = 0;
  uint64_t consecutive_misses = 0;
  uint64_t max_consecutive_misses = 0;
  uint64_t gil_contended_cycles = 0;
  uint64_t wake_latency_n = 0;
  double wake_latency_mean_ns = 0;
  double wake_latency_m2 = 0;
  HistogramSnapshot wake_latency;
  HistogramSnapshot body_start_latency;
  HistogramSnapshot exec_time;
  HistogramSnapshot gil_wait;
  bool torn = false;     // the seqlock never settled within max_retries
  unsigned retries = 0;  // attempts beyond the first
};

// Copies everything. Tries 1 + max_retries times (max_retries < 0 counts as
// 0). Allocates (the name string): not for the cycle thread.
StatsSnapshot read_stats(const StatsBlock* block, int max_retries);

}  // namespace mxrc
