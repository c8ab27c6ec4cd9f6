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
//
// The bus (ARCHITECTURE §2). With a ring set (the stats slot's, in the
// segment) the loop publishes its own state changes as events
// ("rt.state_changed", "rt.safe_mode_entered", "rt.safe_mode_exited": HIGH
// priority, JSON payloads built without formatting functions) and the C
// table's publish_event / poll_event reach the rings; with a data store the
// ds_* entries reach it and a pending snapshot request is serviced at every
// cycle boundary, before the bodies. The agent watchdog (a heartbeat word and
// a timeout) puts the executive into SAFE_MODE when the agent's heartbeat goes
// stale and takes it out again when it is fresh, if the agent was the only
// reason for SAFE_MODE.
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
#include "mxrc/datastore.hpp"
#include "mxrc/ring.hpp"
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

  // --- the bus (all optional; null = none) ---
  // This cycle thread's ring set (Segment::ring_set of its stats slot) and
  // the instance's data store. Both views are copied by the constructor; the
  // memory they view must outlive the Executive. Without a ring set the C
  // table's publish_event/poll_event return ENOENT and the loop publishes no
  // events; without a data store the ds_* entries return ENOENT.
  RingSet* rings = nullptr;
  DataStore* datastore = nullptr;
  // Agent watchdog: the segment header's agent_heartbeat_ns word
  // (CLOCK_MONOTONIC of the agent's last beat, 0 = never) and the age after
  // which the executive enters SAFE_MODE (reason agent). Off when either is
  // null/0, and on a simulated clock. The agent gets one timeout after the
  // first release to beat for the first time.
  const std::atomic<std::int64_t>* agent_heartbeat = nullptr;
  std::int64_t agent_timeout_ns = 0;
};

// Why the executive is in SAFE_MODE: bits of Executive::safe_mode_reasons().
// It leaves SAFE_MODE when no reason is left.
inline constexpr std::uint32_t kSafeReasonRequested = 1U;  // enter_safe_mode / request_safe_mode
inline constexpr std::uint32_t kSafeReasonBodyError = 2U;  // a body error, ErrorPolicy::SafeMode
inline constexpr std::uint32_t kSafeReasonAgent = 4U;      // the agent's heartbeat is stale

// What made the cycle thread change state (the "trigger" of rt.state_changed).
enum class StateTrigger : int {
  Start = 0,       // setup done (READY), first release (RUNNING), or a failed start (ERROR)
  Request = 1,     // pause/resume/enter_safe_mode/exit_safe_mode (any thread or the body)
  BodyError = 2,   // a body error (ERROR or SAFE_MODE by the error policy)
  Agent = 3,       // the agent watchdog
  Stop = 4,        // the loop ended (SHUTDOWN)
  ClockError = 5,  // clock_nanosleep failed (ERROR)
};
const char* state_trigger_name(StateTrigger t) noexcept;  // "start", "request", ...

// Flags bit 0 of an mxrc_event: the payload is UTF-8 JSON.
inline constexpr std::uint8_t kEventFlagJson = 0x01U;

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
  // enter_safe_mode adds the reason "requested"; exit_safe_mode drops the
  // reasons "requested" and "body error" and leaves SAFE_MODE unless the
  // agent watchdog still holds it. Leaving SAFE_MODE returns to the state it
  // interrupted (RUNNING or PAUSED); pause()/resume() during SAFE_MODE choose
  // that state.
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

  // --- the bus ---
  bool has_rings() const noexcept { return has_rings_; }
  const RingSet* rings() const noexcept { return has_rings_ ? &rings_ : nullptr; }
  DataStore* datastore() noexcept { return ds_; }
  // The watchdog is on (a heartbeat word, a timeout > 0, a real clock).
  bool agent_watchdog() const noexcept { return agent_hb_ != nullptr; }
  std::int64_t agent_timeout_ns() const noexcept { return agent_timeout_ns_; }
  // kSafeReason* bits; 0 outside SAFE_MODE. Written by the cycle thread.
  std::uint32_t safe_mode_reasons() const noexcept {
    return safe_reasons_.load(std::memory_order_acquire);
  }
  // Events the loop itself tried to publish (state changes) and how many of
  // them the event ring refused.
  std::uint64_t loop_events() const noexcept {
    return loop_events_.load(std::memory_order_acquire);
  }
  std::uint64_t loop_events_dropped() const noexcept {
    return loop_events_dropped_.load(std::memory_order_acquire);
  }
  // Cycle thread only (bodies): what the C table's publish_event and
  // poll_event do. publish_event validates *ev (priority, payload_len, a
  // non-empty type: else EINVAL), fills id (slot index << 48 | sequence) and
  // timestamp_ns (the executive's clock) when 0, and copies it into the event
  // ring (CRITICAL: the critical ring): 0, ENOSPC dropped by admission,
  // ENOENT without rings. poll_event takes the next command-ring record:
  // 0, EAGAIN none, ENOENT without rings (a shorter record is zero-padded).
  int publish_event(const mxrc_event* ev) noexcept;
  int poll_event(mxrc_event* out) noexcept;

  // The table every body gets (static, filled once).
  static const mxrc_api* api() noexcept;

 private:
  void thread_main() noexcept;
  void loop() noexcept;
  // Emits rt.state_changed (then `follow`, when given) before the stats block shows
  // the new state: whoever sees the state there finds its events in the ring.
  void set_state(RtState s, StateTrigger trigger, mxrc_event* follow = nullptr) noexcept;
  [[nodiscard]] int sleep_until(std::int64_t release_ns) noexcept;
  std::int64_t now() const noexcept;  // clock_ns() for the loop
  void apply_requests(std::int64_t now_ns) noexcept;
  // SAFE_MODE bookkeeping (cycle thread): add a reason (entering SAFE_MODE if
  // not in it), or drop reasons (leaving it when none is left).
  void add_safe_reason(std::uint32_t reason, StateTrigger trigger, std::int64_t now_ns) noexcept;
  void drop_safe_reasons(std::uint32_t reasons, StateTrigger trigger, std::int64_t now_ns) noexcept;
  void check_agent(std::int64_t now_ns) noexcept;
  void emit(mxrc_event& ev) noexcept;  // the loop's own events (HIGH, JSON)
  std::uint64_t next_event_id() noexcept;
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
  // The bus.
  RingSet rings_{};
  bool has_rings_ = false;
  DataStore ds_view_{};
  DataStore* ds_ = nullptr;                              // &ds_view_ or null
  const std::atomic<std::int64_t>* agent_hb_ = nullptr;  // null: watchdog off
  std::int64_t agent_timeout_ns_ = 0;
  std::uint64_t event_id_base_ = 0;  // slot index << 48
  std::atomic<std::uint64_t> event_seq_{0};
  std::atomic<std::uint32_t> safe_reasons_{0};
  std::atomic<std::uint64_t> loop_events_{0};
  std::atomic<std::uint64_t> loop_events_dropped_{0};
  RtState safe_return_ = RtState::Running;  // cycle thread only: where SAFE_MODE returns to
  std::int64_t safe_since_ns_ = 0;          // cycle thread only

  static_assert(std::atomic<std::int64_t>::is_always_lock_free);
  static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
  static_assert(std::atomic<std::int32_t>::is_always_lock_free);
  static_assert(std::atomic<bool>::is_always_lock_free);
  static_assert(std::atomic<std::uint32_t>::is_always_lock_free);
};

}  // namespace mxrc
