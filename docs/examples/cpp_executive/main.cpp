// A C++ program running an mxrc cycle loop with its own C++ body (tier 1):
// no Python anywhere. It links the installed core (find_package(mxrc)).
//
//   cpp_executive [--cycles N] [--period-us P] [--cpu C] [--fifo PRIORITY]
//                 [--lock-memory] [--instance NAME]
//
// --instance publishes the stats block in the instance's shared-memory segment
// (/dev/shm/mxrc-NAME) while the loop runs, so another process (`mxrc status`,
// mxrc.bus.Segment.attach, the Prometheus collector) can read it live.
// Prints "key: value" lines; exit status 0 when all cycles ran.
#include <sched.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mxrc/cycle.hpp>
#include <mxrc/segment.hpp>
#include <mxrc/stats.hpp>
#include <mxrc/system.hpp>
#include <string>

namespace {

struct Options {
  std::uint64_t cycles = 1000;
  std::int64_t period_us = 1000;
  int cpu = -1;  // -1: the highest CPU this process may use
  int fifo_priority = 0;
  bool lock_memory = false;
  std::string instance;
};

// A first-order axis driven towards a setpoint by a P controller. Only the
// cycle thread touches it while the loop runs; main reads it after join().
struct Axis {
  double position = 0.0;
  double setpoint = 1.0;
  double gain_per_s = 20.0;
  std::uint64_t calls = 0;
  std::uint64_t last_cycle = 0;
  std::uint64_t early_wakes = 0;  // woke before the release: must stay 0
  std::uint64_t cpus_seen = 0;    // bit per CPU the body ran on (CPUs 0..63)
};

int step(Axis& a, const mxrc_cycle_ctx& ctx) noexcept {
  const double dt = static_cast<double>(ctx.period_ns) * 1e-9;
  a.position += a.gain_per_s * (a.setpoint - a.position) * dt;
  a.calls += 1;
  a.last_cycle = ctx.cycle;
  if (ctx.wake_ns < ctx.release_ns) a.early_wakes += 1;
  const int cpu = ::sched_getcpu();  // vDSO/rseq read, no system call
  if (cpu >= 0 && cpu < 64) a.cpus_seen |= std::uint64_t{1} << cpu;
  return std::isfinite(a.position) ? 0 : 1;  // non-zero: a body error
}

bool parse(int argc, char** argv, Options& o) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--lock-memory") {
      o.lock_memory = true;
    } else if (arg == "--cycles" && has_value) {
      o.cycles = std::strtoull(argv[++i], nullptr, 10);
    } else if (arg == "--period-us" && has_value) {
      o.period_us = std::strtoll(argv[++i], nullptr, 10);
    } else if (arg == "--cpu" && has_value) {
      o.cpu = std::atoi(argv[++i]);
    } else if (arg == "--fifo" && has_value) {
      o.fifo_priority = std::atoi(argv[++i]);
    } else if (arg == "--instance" && has_value) {
      o.instance = argv[++i];
    } else {
      std::fprintf(stderr, "unknown or incomplete argument: %s\n", arg.c_str());
      return false;
    }
  }
  if (o.cycles == 0 || o.period_us <= 0) {
    std::fprintf(stderr, "--cycles and --period-us must be > 0\n");
    return false;
  }
  return true;
}

double us(std::uint64_t ns) { return static_cast<double>(ns) / 1e3; }

void print_stats(const mxrc::StatsSnapshot& s) {
  std::printf("state: %s\n", mxrc::rt_state_name(s.state));
  std::printf("cycles: %llu\n", static_cast<unsigned long long>(s.cycle_count));
  std::printf("deadline misses: %llu\n", static_cast<unsigned long long>(s.deadline_miss_count));
  std::printf("skipped releases: %llu\n", static_cast<unsigned long long>(s.skipped_release_count));
  std::printf("body errors: %llu\n", static_cast<unsigned long long>(s.body_error_count));
  const auto& w = s.wake_latency;
  std::printf("wake latency us: p50 %.1f p99 %.1f max %.1f\n", us(w.percentile(0.50)),
              us(w.percentile(0.99)), us(w.max));
  const double var =
      s.wake_latency_n ? s.wake_latency_m2 / static_cast<double>(s.wake_latency_n) : 0.0;
  std::printf("jitter us: %.1f\n", std::sqrt(var) / 1e3);
  const auto& e = s.exec_time;
  std::printf("exec time us: p50 %.1f p99 %.1f max %.1f\n", us(e.percentile(0.50)),
              us(e.percentile(0.99)), us(e.max));
}

int run(const Options& o) {
  // The stats block: a slot of the instance's segment, or private memory.
  std::shared_ptr<mxrc::Segment> segment;
  std::shared_ptr<mxrc::StatsBlock> stats;
  if (!o.instance.empty()) {
    segment = mxrc::Segment::create(o.instance);
    stats = segment->claim_stats("main");
    std::printf("segment: %s\n", mxrc::segment_path(o.instance).c_str());
  } else {
    stats.reset(new mxrc::StatsBlock());  // value-initialised: zero
    mxrc::reset_stats_block(stats.get(), "main");
  }

  mxrc::ExecutiveConfig cfg;
  cfg.name = "main";
  cfg.period_ns = o.period_us * 1000;
  cfg.overrun = mxrc::OverrunPolicy::Skip;
  cfg.setup.cpus = {o.cpu >= 0 ? o.cpu : mxrc::get_thread_affinity().back()};
  cfg.setup.lock_memory = o.lock_memory;
  cfg.setup.prefault_stack_bytes = 256 * 1024;
  cfg.setup.timer_slack_ns = 1;
  if (o.fifo_priority > 0) {
    cfg.setup.policy = mxrc::SchedPolicy::Fifo;
    cfg.setup.priority = o.fifo_priority;
  }
  const int pinned = cfg.setup.cpus.front();

  Axis axis;
  mxrc::Executive ex(cfg, stats.get());
  ex.add_function([&axis](const mxrc_cycle_ctx& ctx) { return step(axis, ctx); });
  ex.stop_after(o.cycles);  // the loop ends by itself after N cycles

  const mxrc::StartStatus st = ex.start();  // setup + first release, on the cycle thread
  if (!st.ok()) {
    if (st.step == mxrc::StartStep::Setup) {
      std::fprintf(stderr, "thread setup failed at %s (%s): errno %d\n",
                   mxrc::setup_step_name(st.setup.failed_step),
                   mxrc::setup_step_syscall(st.setup.failed_step), st.setup.error);
    } else {
      std::fprintf(stderr, "start failed (step %d, error %d)\n", static_cast<int>(st.step),
                   st.error);
    }
    return 2;
  }
  std::printf("cycle thread: tid %d on CPU %d\n", ex.tid(), pinned);
  (void)ex.join();  // waits for the N cycles

  print_stats(mxrc::read_stats(stats.get(), 16));
  std::printf("body calls: %llu\n", static_cast<unsigned long long>(axis.calls));
  std::printf("last cycle: %llu\n", static_cast<unsigned long long>(axis.last_cycle));
  std::printf("early wakes: %llu\n", static_cast<unsigned long long>(axis.early_wakes));
  mxrc::CpuSet seen;
  for (int c = 0; c < 64; ++c) {
    if (axis.cpus_seen & (std::uint64_t{1} << c)) seen.push_back(c);
  }
  std::printf("cpus seen: %s\n", mxrc::format_cpulist(seen).c_str());
  std::printf("position: %.6f\n", axis.position);
  return axis.calls == o.cycles ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!parse(argc, argv, o)) return 64;
  try {
    return run(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 3;
  }
}
