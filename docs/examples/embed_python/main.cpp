// A C++ program that embeds Python (pybind11/embed.h), builds an
// mxrc.Executive from a configuration directory (Executive.from_config) and
// hands it a C++ cycle body through a capsule named "mxrc.body". The body
// runs on the executive's C++ cycle thread without the GIL (a native body);
// Python only configures, starts, waits and reports.
//
//   embed_python CONFIG_DIR [CYCLES]
//
// The end is ordered: the executive is stopped and its cycle thread joined
// (run() returns after the join; stop() makes sure on every path), then every
// Python object is released, and only then does the interpreter end (the
// scoped_interpreter's destructor). Prints "key: value" lines.
#include <pybind11/embed.h>
#include <sched.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "mxrc.h"

namespace py = pybind11;

namespace {

// What the body keeps. Written by the cycle thread only while the loop runs;
// main reads it after the thread was joined.
struct BodyState {
  std::uint64_t calls = 0;
  std::uint64_t last_cycle = 0;
  std::int64_t period_ns = 0;
  std::uint64_t cpus_seen = 0;       // bit per CPU the body ran on (CPUs 0..63)
  std::uint64_t clock_mismatch = 0;  // the executive's clock read before the release
  std::uint32_t api_version = 0;
};

// The body: an mxrc_body_fn. ctx->user is the capsule's context.
int body(const mxrc_cycle_ctx* ctx) noexcept {
  auto* s = static_cast<BodyState*>(ctx->user);
  s->calls += 1;
  s->last_cycle = ctx->cycle;
  s->period_ns = ctx->period_ns;
  s->api_version = ctx->api->abi_version;
  const int cpu = ::sched_getcpu();  // vDSO/rseq read, no system call
  if (cpu >= 0 && cpu < 64) s->cpus_seen |= std::uint64_t{1} << cpu;
  // Entries taken from the reserved space need a version check.
  if (MXRC_API_VERSION_AT_LEAST(ctx->api, 2) && ctx->api->clock_ns(ctx) < ctx->release_ns) {
    s->clock_mismatch += 1;
  }
  return 0;
}

std::string cpulist(std::uint64_t bits) {
  std::string out;
  for (int c = 0; c < 64; ++c) {
    if (bits & (std::uint64_t{1} << c)) out += (out.empty() ? "" : ",") + std::to_string(c);
  }
  return out;
}

int run(const std::string& config_dir, long cycles, BodyState& state) {
  py::module_ mxrc = py::module_::import("mxrc");
  // The capsule: the body's address, named so that mxrc knows what it holds;
  // its context becomes ctx->user. (A function pointer travels as void*.)
  py::capsule capsule(reinterpret_cast<void*>(&body), "mxrc.body");
  if (PyCapsule_SetContext(capsule.ptr(), &state) != 0) throw py::error_already_set();

  // cpu_affinity.json, numa_binding.json and perf_monitor.json of config_dir
  // decide cores, policy, priority, memory locking, period and deadline.
  py::object ex = mxrc.attr("Executive").attr("from_config")(config_dir, capsule);
  py::object stats;
  try {
    stats = ex.attr("run")(cycles);  // waits with the GIL released; Ctrl-C works
  } catch (...) {
    ex.attr("stop")();  // the cycle thread must be joined before the interpreter ends
    throw;
  }
  ex.attr("stop")();  // already stopped by run(): returns at once

  std::printf("state: %s\n", py::str(ex.attr("state").attr("name")).cast<std::string>().c_str());
  std::printf("cycles: %llu\n", stats.attr("cycle_count").cast<unsigned long long>());
  std::printf("deadline misses: %llu\n",
              stats.attr("deadline_miss_count").cast<unsigned long long>());
  py::object wake = stats.attr("wake_latency");
  std::printf("wake latency us: p50 %.1f p99 %.1f\n",
              wake.attr("percentile")(0.5).cast<double>() / 1e3,
              wake.attr("percentile")(0.99).cast<double>() / 1e3);
  std::printf("sched fallback: %s\n", ex.attr("sched_fallback").cast<bool>() ? "yes" : "no");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s CONFIG_DIR [CYCLES]\n", argv[0]);
    return 64;
  }
  const long cycles = argc > 2 ? std::atol(argv[2]) : 1000;
  BodyState state;  // outlives the executive (and the interpreter)
  int rc = 0;
  {
    py::scoped_interpreter interpreter;
    try {
      rc = run(argv[1], cycles, state);
    } catch (const py::error_already_set& e) {
      std::fprintf(stderr, "Python error: %s\n", e.what());
      rc = 1;
    }
  }  // the interpreter ends here, after the executive's thread was joined
  if (rc != 0) return rc;
  std::printf("body calls: %llu\n", static_cast<unsigned long long>(state.calls));
  std::printf("last cycle: %llu\n", static_cast<unsigned long long>(state.last_cycle));
  std::printf("period ns: %lld\n", static_cast<long long>(state.period_ns));
  std::printf("cpus seen: %s\n", cpulist(state.cpus_seen).c_str());
  std::printf("api version: %u\n", state.api_version);
  std::printf("clock mismatches: %llu\n", static_cast<unsigned long long>(state.clock_mismatch));
  return state.calls == static_cast<unsigned long long>(cycles) ? 0 : 1;
}
