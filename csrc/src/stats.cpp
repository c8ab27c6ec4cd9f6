#include "mxrc/stats.hpp"

#include <sys/resource.h>

#include <cstring>

namespace mxrc {

namespace {
constexpr auto kRelaxed = std::memory_order_relaxed;

// b - a, or 0 when b < a (computed unsigned: no overflow for any inputs).
uint64_t elapsed(int64_t a, int64_t b) noexcept {
  return b > a ? static_cast<uint64_t>(b) - static_cast<uint64_t>(a) : 0;
}

void bump(std::atomic<uint64_t>& a, uint64_t d = 1) noexcept {
  a.store(a.load(kRelaxed) + d, kRelaxed);
}
}  // namespace

const char* rt_state_name(RtState s) noexcept {
  switch (s) {
    case RtState::Init:
      return "INIT";
    case RtState::Ready:
      return "READY";
    case RtState::Running:
      return "RUNNING";
    case RtState::Paused:
      return "PAUSED";
    case RtState::SafeMode:
      return "SAFE_MODE";
    case RtState::Error:
      return "ERROR";
    case RtState::Shutdown:
      return "SHUTDOWN";
  }
  return "UNKNOWN";
}

void reset_stats_block(StatsBlock* b, const char* name) noexcept {
  // Mark "being written" so concurrent readers retry instead of trusting a
  // half-reset block.
  uint64_t s = b->seq.load(kRelaxed);
  if ((s & 1U) == 0) s += 1;
  b->seq.store(s, kRelaxed);
  std::atomic_thread_fence(std::memory_order_release);

  std::size_t n = name ? std::strlen(name) : 0;
  if (n > kStatsNameMax) n = kStatsNameMax;
  for (std::size_t i = 0; i <= kStatsNameMax; ++i) {
    b->name[i].store(i < n ? name[i] : '\0', kRelaxed);
  }
  b->tid.store(0, kRelaxed);
  b->state.store(static_cast<int32_t>(RtState::Init), kRelaxed);
  b->period_ns.store(0, kRelaxed);
  b->deadline_ns.store(0, kRelaxed);
  b->start_ns.store(0, kRelaxed);
  b->heartbeat_ns.store(0, kRelaxed);
  b->skipped_release_count.store(0, kRelaxed);
  b->body_error_count.store(0, kRelaxed);
  b->minor_faults.store(0, kRelaxed);
  b->involuntary_ctx_switches.store(0, kRelaxed);
  b->cycle_count.store(0, kRelaxed);
  b->deadline_miss_count.store(0, kRelaxed);
  b->consecutive_misses.store(0, kRelaxed);
  b->max_consecutive_misses.store(0, kRelaxed);
  b->gil_contended_cycles.store(0, kRelaxed);
  b->wake_latency_n.store(0, kRelaxed);
  b->wake_latency_mean_ns.store(0.0, kRelaxed);
  b->wake_latency_m2.store(0.0, kRelaxed);
  b->wake_latency.reset();
  b->body_start_latency.reset();
  b->exec_time.reset();
  b->gil_wait.reset();

  b->seq.store(s + 1, std::memory_order_release);
}

StatsWriter::StatsWriter(StatsBlock* block) noexcept : b_(block) {}

void StatsWriter::begin(int64_t period_ns, int64_t deadline_ns, int32_t tid,
                        int64_t start_ns) noexcept {
  b_->period_ns.store(period_ns, std::memory_order_release);
  b_->deadline_ns.store(deadline_ns, std::memory_order_release);
  b_->start_ns.store(start_ns, std::memory_order_release);
  b_->tid.store(tid, std::memory_order_release);
}

void StatsWriter::record(const CycleSample& s) noexcept {
  const uint64_t seq = b_->seq.load(kRelaxed);  // single writer: always even here
  b_->seq.store(seq + 1, kRelaxed);
  std::atomic_thread_fence(std::memory_order_release);

  const uint64_t wake = elapsed(s.release_ns, s.wake_ns);
  b_->wake_latency.record(wake);
  b_->body_start_latency.record(elapsed(s.release_ns, s.body_start_ns));
  b_->exec_time.record(elapsed(s.body_start_ns, s.body_end_ns));
  if (s.gil_wait_ns >= 0) {
    b_->gil_wait.record(static_cast<uint64_t>(s.gil_wait_ns));
    if (s.gil_wait_ns > kGilContendedNs) bump(b_->gil_contended_cycles);
  }
  bump(b_->cycle_count);
  if (s.deadline_missed) {
    bump(b_->deadline_miss_count);
    const uint64_t c = b_->consecutive_misses.load(kRelaxed) + 1;
    b_->consecutive_misses.store(c, kRelaxed);
    if (c > b_->max_consecutive_misses.load(kRelaxed)) {
      b_->max_consecutive_misses.store(c, kRelaxed);
    }
  } else {
    b_->consecutive_misses.store(0, kRelaxed);
  }
  // Welford
  const uint64_t n = b_->wake_latency_n.load(kRelaxed) + 1;
  const double x = static_cast<double>(wake);
  const double mean = b_->wake_latency_mean_ns.load(kRelaxed);
  const double delta = x - mean;
  const double new_mean = mean + delta / static_cast<double>(n);
  b_->wake_latency_n.store(n, kRelaxed);
  b_->wake_latency_mean_ns.store(new_mean, kRelaxed);
  b_->wake_latency_m2.store(b_->wake_latency_m2.load(kRelaxed) + delta * (x - new_mean), kRelaxed);

  b_->seq.store(seq + 2, std::memory_order_release);
  b_->heartbeat_ns.store(s.wake_ns, std::memory_order_release);
}

void StatsWriter::heartbeat(int64_t now_ns) noexcept {
  b_->heartbeat_ns.store(now_ns, std::memory_order_release);
}

void StatsWriter::set_state(RtState s) noexcept {
  b_->state.store(static_cast<int32_t>(s), std::memory_order_release);
}

void StatsWriter::add_skipped_releases(uint64_t n) noexcept {
  b_->skipped_release_count.store(b_->skipped_release_count.load(kRelaxed) + n,
                                  std::memory_order_release);
}

void StatsWriter::add_body_error() noexcept {
  b_->body_error_count.store(b_->body_error_count.load(kRelaxed) + 1, std::memory_order_release);
}

void StatsWriter::sample_rusage() noexcept {
  struct rusage ru{};
  if (getrusage(RUSAGE_THREAD, &ru) != 0) return;
  b_->minor_faults.store(static_cast<uint64_t>(ru.ru_minflt), std::memory_order_release);
  b_->involuntary_ctx_switches.store(static_cast<uint64_t>(ru.ru_nivcsw),
                                     std::memory_order_release);
}

StatsSnapshot read_stats(const StatsBlock* b, int max_retries) {
  StatsSnapshot out;
  const unsigned attempts = 1U + static_cast<unsigned>(max_retries < 0 ? 0 : max_retries);
  char name[kStatsNameMax + 1];
  bool settled = false;
  unsigned attempt = 0;
  for (; attempt < attempts && !settled; ++attempt) {
    const uint64_t s1 = b->seq.load(std::memory_order_acquire);
    out.cycle_count = b->cycle_count.load(kRelaxed);
    out.deadline_miss_count = b->deadline_miss_count.load(kRelaxed);
    out.consecutive_misses = b->consecutive_misses.load(kRelaxed);
    out.max_consecutive_misses = b->max_consecutive_misses.load(kRelaxed);
    out.gil_contended_cycles = b->gil_contended_cycles.load(kRelaxed);
    out.wake_latency_n = b->wake_latency_n.load(kRelaxed);
    out.wake_latency_mean_ns = b->wake_latency_mean_ns.load(kRelaxed);
    out.wake_latency_m2 = b->wake_latency_m2.load(kRelaxed);
    out.wake_latency.load_from(b->wake_latency);
    out.body_start_latency.load_from(b->body_start_latency);
    out.exec_time.load_from(b->exec_time);
    out.gil_wait.load_from(b->gil_wait);
    for (std::size_t i = 0; i <= kStatsNameMax; ++i) name[i] = b->name[i].load(kRelaxed);
    std::atomic_thread_fence(std::memory_order_acquire);
    const uint64_t s2 = b->seq.load(kRelaxed);
    settled = (s1 & 1U) == 0 && s1 == s2;
  }
  out.torn = !settled;
  out.retries = attempt - 1;
  name[kStatsNameMax] = '\0';
  out.name = name;
  out.tid = b->tid.load(std::memory_order_acquire);
  const int32_t st = b->state.load(std::memory_order_acquire);
  out.state = (st >= 0 && st <= static_cast<int32_t>(RtState::Shutdown)) ? static_cast<RtState>(st)
                                                                         : RtState::Error;
  out.period_ns = b->period_ns.load(std::memory_order_acquire);
  out.deadline_ns = b->deadline_ns.load(std::memory_order_acquire);
  out.start_ns = b->start_ns.load(std::memory_order_acquire);
  out.heartbeat_ns = b->heartbeat_ns.load(std::memory_order_acquire);
  out.skipped_release_count = b->skipped_release_count.load(std::memory_order_acquire);
  out.body_error_count = b->body_error_count.load(std::memory_order_acquire);
  out.minor_faults = b->minor_faults.load(std::memory_order_acquire);
  out.involuntary_ctx_switches = b->involuntary_ctx_switches.load(std::memory_order_acquire);
  return out;
}

}  // namespace mxrc
