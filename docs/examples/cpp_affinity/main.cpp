// Prints the CPUs this process may use, pins the main thread to the highest
// of them, reads the affinity back and sets a 1 ns timer slack through the
// ARCHITECTURE §5 setup (which returns a status instead of throwing).
#include <cstdio>
#include <exception>
#include <mxrc/system.hpp>

int main() {
  try {
    const mxrc::CpuSet allowed = mxrc::get_thread_affinity();
    std::printf("allowed: %s\n", mxrc::format_cpulist(allowed).c_str());

    const int target = allowed.back();
    mxrc::set_thread_affinity({target});
    const mxrc::CpuSet now = mxrc::get_thread_affinity();
    std::printf("pinned: %s\n", mxrc::format_cpulist(now).c_str());

    mxrc::ThreadSetup setup;
    setup.timer_slack_ns = 1;
    const mxrc::SetupStatus status = mxrc::apply_thread_setup(setup);
    if (!status.ok()) {
      std::printf("setup failed at %s: errno %d\n", mxrc::setup_step_name(status.failed_step),
                  status.error);
      return 2;
    }
    std::printf("timer slack: %lu ns\n", mxrc::get_timer_slack_ns());
    return now == mxrc::CpuSet{target} ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 3;
  }
}
