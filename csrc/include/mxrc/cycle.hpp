// The cycle loop: one dedicated thread per Executive that sets itself up
// (ARCHITECTURE §5), runs init hooks, then releases its actions at
// start + k·period (+ phase adjustments) with clock_nanosleep(TIMER_ABSTIME),
// measures every cycle into a StatsBlock and follows the RT state machine.
//
// With ClockKind::Simulated the loop runs on a virtual clock instead: it
// starts at t = 0, each release happens at once (no sleep; the clock jumps to
// the release time), and only the bodies move the clock (sim_advance). Every
// timestamp is then virtual and a run's stats depend on the bodies alone.
//
// Bodies (tiers 1 and 2) are plain function pointers with a target pointer:
// calling one never allocates. The cycle thread never allocates, locks,
// formats text or does I/O; requests from other threads (pause, resume, safe
// mode, stop, phase) travel through atomics and are applied at cycle
// boundaries. Setup, start() and join() may allocate and block.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "mxrc.h"
#include "mxrc/setup.hpp"
#include "mxrc/stats.hpp"

namespace mxrc {

enum class OverrunPolicy : int {
  Skip = 0,     // after an overrun, advance to the next future release (count the skipped ones)
  RunLate = 1,  // run every release, late ones immediately
};

// The clock the loop runs on.
enum class ClockKind : int {
  Monotonic = 0,  // CLOCK_MONOTONIC, clock_nanosleep to each release
  Simulated = 1,  // virtual ns from 0; releases are immediate; bodies advance it
};

enum class ErrorPolicy : int {
  Stop = 0,      // state ERROR, the loop ends
  SafeMode = 1,  // state SAFE_MODE: the safe-mode body runs instead
  Continue = 2,  // count it and go on
};

// What an invocation reports besides its return value. The loop sets
// body_start_ns to "now" before the call; a body that has to wait before it
// really starts (the GIL of a Python body) overwrites it and sets gil_wait_ns.
struct Invocation {
  std::int64_t body_start_ns = 0;
  std::int64_t gil_wait_ns = -1;
};

// A body: fn(target, ctx, inv) returns 0 for success, anything else is a
// body error. noexcept: a body must not throw into the loop.
using InvokeFn = int (*)(void* target, const mxrc_cycle_ctx* ctx, Invocation* inv) noexcept;

struct Action {
  InvokeFn fn = nullptr;
  void* target = nullptr;
  void* user = nullptr;     // ctx->user
  std::uint32_t every = 1;  // runs when cycle % every == offset
  std::uint32_t offset = 0;
};

// A native body (tier 2): int body(const mxrc_cycle_ctx*). target is the
// function's address.
Action native_action(mxrc_body_fn fn, void* user = nullptr, std::uint32_t every = 1,
                     std::uint32_t offset = 0) noexcept;

// A C++ callable body (tier 1); the Executive owns it (add_function). Calling
// a std::function does not allocate.
using CycleFunction = std::function<int(const mxrc_cycle_ctx&)>;

struct ExecutiveConfig {
  std::string name = "main";
  std::int64_t period_ns = 1'000'000;
  std::int64_t deadline_ns = 0;  // 0: = period_ns
  OverrunPolicy overrun = OverrunPolicy::Skip;
  ErrorPolicy on_error = ErrorPolicy::Stop;
  ThreadSetup setup;                  // applied on the cycle thread before the first cycle
  bool allow_sched_fallback = false;  // EPERM for FIFO/RR: go on with the current policy
  std::string thread_name;            // pthread name (<= 15 bytes); empty: "mxrc-" + name
  std::uint32_t rusage_every = 100;   // cycles between getrusage(RUSAGE_THREAD) samples
  // Simulated: the thread setup above and rusage sampling are not applied
  // (the loop runs flat out as an ordinary thread; see docs/simulated-clock.md).
  ClockKind clock = ClockKind::Monotonic;
};

// Run on the cycle thread outside the loop: thread_start before setup's end
// (after apply_thread_setup), thread_exit after the last cycle. Used by the
// Python tier for its persistent thread state.
struct ThreadHooks {
  std::function<void()> thread_start;
  std::function<void()> thread_exit;
};

// An init hook runs on the cycle thread after setup, before the first cycle;
// a non-zero return fails start() (StartStep::Hook) and the thread ends.
using InitHook = std::function<int()>;

enum class StartStep : int { Ok = 0, Setup = 1, Hook = 2, Thread = 3 };

struct [[nodiscard]] StartStatus {
  StartStep step = StartStep::Ok;
  SetupStatus setup{};          // when step == Setup
  int hook_index = -1;          // when step == InitHook
  int hook_result = 0;          // its return value
  int error = 0;                // errno for Thread
  bool sched_fallback = false;  // the RT policy was refused and fallback allowed
  bool ok() const noexcept { return step == StartStep::Ok; }
};

class Executive {
 public:
  // stats: the block this loop writes (owned by the caller, outlives *this).
  Executive(ExecutiveConfig config, StatsBlock* stats);
  ~Executive();  // stops and joins
  Executive(const Executive&) = delete;
  Executive& operator=(const Executive&) = delete;

  // Before start() only (std::logic_error afterwards; std::invalid_argument
  // for every == 0, offset >= every, or a null fn).
  void add_action(const Action& action);
  void set_safe_mode_action(const Action& action);
  // Tier 1: the Executive keeps fn; ctx.user is user.
  void add_function(CycleFunction fn, std::uint32_t every = 1, std::uint32_t offset = 0,
                    void* user = nullptr);
  void add_init_hook(InitHook hook);
  void set_thread_hooks(ThreadHooks hooks);

  // Starts the cycle thread and blocks until it is READY (setup applied,
  // init hooks done) or failed; on failure the thread has been joined.
  // Throws std::logic_error when started twice.
  StartStatus start();

  // Requests (any thread, non-blocking, applied at the next cycle boundary).
  void request_stop() noexcept;
  void stop_after(std::uint64_t cycles) noexcept;  // end after `cycles` loop iterations
  void pause() noexcept;
  void resume() noexcept;
  void enter_safe_mode() noexcept;
  void exit_safe_mode() noexcept;
  void adjust_phase(std::int64_t delta_ns) noexcept;

  // The loop's clock: virtual ns of a simulated executive (0 before its
  // first release), CLOCK_MONOTONIC otherwise.
  std::int64_t clock_ns() const noexcept;
  bool simulated() const noexcept { return simulated_; }
  // Simulated clock only: the running body consumed ns of virtual time. 0 ok;
  // EINVAL for ns < 0 or when the clock would overflow; ENOTSUP on a real
  // clock. Meant for the bodies (the cycle thread): from another thread the
  // moment it lands is not deterministic.
  int sim_advance(std::int64_t ns) noexcept;

  // Waits up to timeout_ns (< 0: forever) for the thread to end; joins it.
  // Any thread may call it, several at once; false on timeout, and when
  // called from the cycle thread itself (it cannot join itself).
  bool join(std::int64_t timeout_ns = -1);
  bool finished() const noexcept { return finished_.load(std::memory_order_acquire); }
  bool started() const noexcept { return started_; }

  RtState state() const noexcept {
    return static_cast<RtState>(state_.load(std::memory_order_acquire));
  }
  std::int32_t tid() const noexcept { return tid_.load(std::memory_order_acquire); }
  std::uint64_t iterations() const noexcept { return iterations_.load(std::memory_order_acquire); }
  std::uint64_t body_errors() const noexcept {
    return body_errors_.load(std::memory_order_acquire);
  }
  // Release index and return value of the first body error (-1 / 0 when none).
  std::int64_t first_error_cycle() const noexcept {
    return first_error_cycle_.load(std::memory_order_acquire);
  }
  int first_error_code() const noexcept {
    return first_error_code_.load(std::memory_order_acquire);
  }
  std::int64_t start_ns() const noexcept { return start_ns_.load(std::memory_order_acquire); }
  const ExecutiveConfig& config() const noexcept { return config_; }
  StatsBlock* stats_block() const noexcept { return stats_; }

  // The table every body gets (static, filled once).
  static const mxrc_api* api() noexcept;

 private:
  void thread_main() noexcept;
  void loop() noexcept;
  void set_state(RtState s) noexcept;
  [[nodiscard]] int sleep_until(std::int64_t release_ns) noexcept;
  std::int64_t now() const noexcept;  // clock_ns() for the loop
  void apply_requests() noexcept;
  void run_actions(const Action* actions, std::size_t n, std::uint64_t k, std::int64_t release,
                   std::int64_t wake) noexcept;

  friend struct ExecutiveApi;

  ExecutiveConfig config_;
  bool simulated_ = false;  // config_.clock == Simulated
  StatsBlock* stats_;
  StatsWriter writer_;
  std::vector<Action> actions_;
  bool has_safe_action_ = false;
  Action safe_action_{};
  std::vector<std::unique_ptr<CycleFunction>> functions_;
  std::vector<InitHook> init_hooks_;
  ThreadHooks hooks_;
  std::thread thread_;
  bool started_ = false;
  bool joined_ = false;  // under join_mu_
  StartStatus start_status_{};
  std::mutex mu_;  // start/join handshake only, never taken inside the loop
  std::condition_variable cv_;
  std::mutex join_mu_;   // serialises thread_.join()
  int start_phase_ = 0;  // 0 pending, 1 ready, 2 failed (under mu_)
  bool exited_ = false;  // under mu_

  mxrc_cycle_ctx ctx_{};
  std::atomic<std::int32_t> state_{static_cast<std::int32_t>(RtState::Init)};
  std::atomic<std::int32_t> tid_{0};
  std::atomic<bool> stop_{false};
  std::atomic<bool> finished_{false};
  std::atomic<std::uint64_t> stop_after_{0};  // 0: none
  std::atomic<std::uint64_t> iterations_{0};
  std::atomic<std::uint64_t> body_errors_{0};
  std::atomic<std::int64_t> first_error_cycle_{-1};
  std::atomic<int> first_error_code_{0};
  std::atomic<std::int64_t> start_ns_{0};
  std::atomic<std::int64_t> pending_phase_ns_{0};
  // Virtual time of a simulated executive: written by the cycle thread (the
  // loop and its bodies), atomic so that other threads may read it.
  std::atomic<std::int64_t> sim_now_ns_{0};
  std::atomic<std::int32_t> pause_req_{0};  // +1 pause, -1 resume
  std::atomic<std::int32_t> safe_req_{0};   // +1 enter, -1 exit
  std::atomic<bool> error_stop_{false};
  bool in_safe_mode_ = false;  // cycle thread only
  bool paused_ = false;        // cycle thread only

  static_assert(std::atomic<std::int64_t>::is_always_lock_free);
  static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
  static_assert(std::atomic<std::int32_t>::is_always_lock_free);
  static_assert(std::atomic<bool>::is_always_lock_free);
};

}  // namespace mxrc
