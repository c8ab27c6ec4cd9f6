#include "mxrc/cycle.hpp"

#include <pthread.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <utility>

namespace mxrc {

namespace {

constexpr std::int64_t kNsPerSec = 1'000'000'000;
constexpr std::int64_t kSleepChunkNs = 10'000'000;  // stop is noticed within 10 ms
constexpr std::int64_t kMaxStartLeadNs = 1'000'000;

inline std::int64_t mono_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * kNsPerSec + ts.tv_nsec;
}

inline timespec to_timespec(std::int64_t ns) noexcept {
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(ns / kNsPerSec);
  ts.tv_nsec = static_cast<long>(ns % kNsPerSec);
  return ts;
}

int invoke_native(void* target, const mxrc_cycle_ctx* ctx, Invocation* /*inv*/) noexcept {
  return reinterpret_cast<mxrc_body_fn>(target)(ctx);
}

int invoke_function(void* target, const mxrc_cycle_ctx* ctx, Invocation* /*inv*/) noexcept {
  try {
    return (*static_cast<const CycleFunction*>(target))(*ctx);
  } catch (...) {
    return -1;  // a throwing C++ body is a body error
  }
}

#ifdef MXRC_EVENT_FLAG_JSON
static_assert(kEventFlagJson == MXRC_EVENT_FLAG_JSON);
#endif

constexpr std::uint64_t kEventSeqMask = (std::uint64_t{1} << 48) - 1;
constexpr std::int64_t kNsPerMs = 1'000'000;

// Appends JSON text to a fixed buffer (an event's payload) without any
// formatting function: no allocation, no locale. Silently stops at the end of
// the buffer (the loop's payloads are far shorter than it).
class JsonOut {
 public:
  JsonOut(std::uint8_t* buf, std::size_t cap) noexcept : buf_(buf), cap_(cap) {}
  void raw(const char* s) noexcept {
    while (*s != '\0' && n_ < cap_) buf_[n_++] = static_cast<std::uint8_t>(*s++);
  }
  void str(const char* s) noexcept {  // only names without quotes or escapes
    raw("\"");
    raw(s);
    raw("\"");
  }
  void uint(std::uint64_t v) noexcept {
    char digits[20];
    int k = 0;
    do {
      digits[k++] = static_cast<char>('0' + v % 10);
      v /= 10;
    } while (v != 0);
    while (k > 0 && n_ < cap_) buf_[n_++] = static_cast<std::uint8_t>(digits[--k]);
  }
  // ns as milliseconds: "500", or "0.25" (up to six decimals, trailing zeros dropped).
  void ms(std::int64_t ns) noexcept {
    if (ns < 0) ns = 0;
    const auto u = static_cast<std::uint64_t>(ns);
    uint(u / kNsPerMs);
    std::uint64_t frac = u % kNsPerMs;
    if (frac == 0) return;
    char d[6];
    for (int i = 5; i >= 0; --i) {
      d[i] = static_cast<char>('0' + frac % 10);
      frac /= 10;
    }
    int last = 5;
    while (last > 0 && d[last] == '0') --last;
    raw(".");
    for (int i = 0; i <= last && n_ < cap_; ++i) buf_[n_++] = static_cast<std::uint8_t>(d[i]);
  }
  std::size_t size() const noexcept { return n_; }

 private:
  std::uint8_t* buf_;
  std::size_t cap_;
  std::size_t n_ = 0;
};

void set_type(mxrc_event& ev, const char* type) noexcept {
  std::size_t i = 0;
  for (; type[i] != '\0' && i < sizeof ev.type; ++i) ev.type[i] = type[i];
}

const char* safe_reason_name(std::uint32_t reason) noexcept {
  switch (reason) {
    case kSafeReasonRequested:
      return "requested";
    case kSafeReasonBodyError:
      return "body_error";
    case kSafeReasonAgent:
      return "agent";
    default:
      return "unknown";
  }
}

}  // namespace

const char* state_trigger_name(StateTrigger t) noexcept {
  switch (t) {
    case StateTrigger::Start:
      return "start";
    case StateTrigger::Request:
      return "request";
    case StateTrigger::BodyError:
      return "body_error";
    case StateTrigger::Agent:
      return "agent";
    case StateTrigger::Stop:
      return "stop";
    case StateTrigger::ClockError:
      return "clock_error";
  }
  return "unknown";
}

// The C function table. Its functions reach the Executive through ctx->executive.
struct ExecutiveApi {
  static std::int64_t now_ns() noexcept { return mono_ns(); }
  static Executive* self(const mxrc_cycle_ctx* ctx) noexcept {
    return ctx == nullptr ? nullptr : static_cast<Executive*>(ctx->executive);
  }
  static std::int32_t state(const mxrc_cycle_ctx* ctx) noexcept {
    Executive* e = self(ctx);
    return e == nullptr ? -1 : static_cast<std::int32_t>(e->state());
  }
  static std::int32_t request_safe_mode(const mxrc_cycle_ctx* ctx) noexcept {
    Executive* e = self(ctx);
    if (e == nullptr) return EINVAL;
    e->enter_safe_mode();
    return 0;
  }
  static std::int32_t request_stop(const mxrc_cycle_ctx* ctx) noexcept {
    Executive* e = self(ctx);
    if (e == nullptr) return EINVAL;
    e->request_stop();
    return 0;
  }
  static std::int64_t clock_ns(const mxrc_cycle_ctx* ctx) noexcept {
    Executive* e = self(ctx);
    return e == nullptr ? -1 : e->clock_ns();
  }
  static std::int32_t sim_advance(const mxrc_cycle_ctx* ctx, std::int64_t ns) noexcept {
    Executive* e = self(ctx);
    return e == nullptr ? EINVAL : e->sim_advance(ns);
  }
  // Data store: ctx -> executive -> its data store (null: ENOENT). Writes
  // take the RT path (EBUSY instead of waiting).
  static std::int32_t ds_find(const mxrc_cycle_ctx* ctx, const char* name) noexcept {
    Executive* e = self(ctx);
    return e == nullptr ? -EINVAL : ds_c::find(e->ds_, name);
  }
  static std::int32_t ds_read(const mxrc_cycle_ctx* ctx, std::int32_t index, void* out,
                              std::uint32_t cap, std::uint32_t* len_out,
                              std::uint64_t* version_out) noexcept {
    Executive* e = self(ctx);
    return e == nullptr ? EINVAL : ds_c::read(e->ds_, index, out, cap, len_out, version_out);
  }
  static std::int32_t ds_write(const mxrc_cycle_ctx* ctx, std::int32_t index, const void* value,
                               std::uint32_t len) noexcept {
    Executive* e = self(ctx);
    return e == nullptr ? EINVAL : ds_c::write(e->ds_, index, value, len);
  }
  static std::int32_t ds_read_f64(const mxrc_cycle_ctx* ctx, std::int32_t index,
                                  double* out) noexcept {
    Executive* e = self(ctx);
    return e == nullptr ? EINVAL : ds_c::read_f64(e->ds_, index, out);
  }
  static std::int32_t ds_write_f64(const mxrc_cycle_ctx* ctx, std::int32_t index,
                                   double value) noexcept {
    Executive* e = self(ctx);
    return e == nullptr ? EINVAL : ds_c::write_f64(e->ds_, index, value);
  }
  static std::int32_t ds_read_i64(const mxrc_cycle_ctx* ctx, std::int32_t index,
                                  std::int64_t* out) noexcept {
    Executive* e = self(ctx);
    return e == nullptr ? EINVAL : ds_c::read_i64(e->ds_, index, out);
  }
  static std::int32_t ds_write_i64(const mxrc_cycle_ctx* ctx, std::int32_t index,
                                   std::int64_t value) noexcept {
    Executive* e = self(ctx);
    return e == nullptr ? EINVAL : ds_c::write_i64(e->ds_, index, value);
  }
  static std::int32_t publish_event(const mxrc_cycle_ctx* ctx, const mxrc_event* ev) noexcept {
    Executive* e = self(ctx);
    return e == nullptr ? EINVAL : e->publish_event(ev);
  }
  static std::int32_t poll_event(const mxrc_cycle_ctx* ctx, mxrc_event* out) noexcept {
    Executive* e = self(ctx);
    return e == nullptr ? EINVAL : e->poll_event(out);
  }
};

extern "C" {
static int64_t mxrc_api_now_ns(void) { return ExecutiveApi::now_ns(); }
static int32_t mxrc_api_state(const mxrc_cycle_ctx* ctx) { return ExecutiveApi::state(ctx); }
static int32_t mxrc_api_request_safe_mode(const mxrc_cycle_ctx* ctx) {
  return ExecutiveApi::request_safe_mode(ctx);
}
static int32_t mxrc_api_request_stop(const mxrc_cycle_ctx* ctx) {
  return ExecutiveApi::request_stop(ctx);
}
static int64_t mxrc_api_clock_ns(const mxrc_cycle_ctx* ctx) { return ExecutiveApi::clock_ns(ctx); }
static int32_t mxrc_api_sim_advance(const mxrc_cycle_ctx* ctx, int64_t ns) {
  return ExecutiveApi::sim_advance(ctx, ns);
}
static int32_t mxrc_api_ds_find(const mxrc_cycle_ctx* ctx, const char* name) {
  return ExecutiveApi::ds_find(ctx, name);
}
static int32_t mxrc_api_ds_read(const mxrc_cycle_ctx* ctx, int32_t index, void* out, uint32_t cap,
                                uint32_t* len_out, uint64_t* version_out) {
  return ExecutiveApi::ds_read(ctx, index, out, cap, len_out, version_out);
}
static int32_t mxrc_api_ds_write(const mxrc_cycle_ctx* ctx, int32_t index, const void* value,
                                 uint32_t len) {
  return ExecutiveApi::ds_write(ctx, index, value, len);
}
static int32_t mxrc_api_ds_read_f64(const mxrc_cycle_ctx* ctx, int32_t index, double* out) {
  return ExecutiveApi::ds_read_f64(ctx, index, out);
}
static int32_t mxrc_api_ds_write_f64(const mxrc_cycle_ctx* ctx, int32_t index, double value) {
  return ExecutiveApi::ds_write_f64(ctx, index, value);
}
static int32_t mxrc_api_ds_read_i64(const mxrc_cycle_ctx* ctx, int32_t index, int64_t* out) {
  return ExecutiveApi::ds_read_i64(ctx, index, out);
}
static int32_t mxrc_api_ds_write_i64(const mxrc_cycle_ctx* ctx, int32_t index, int64_t value) {
  return ExecutiveApi::ds_write_i64(ctx, index, value);
}
static int32_t mxrc_api_publish_event(const mxrc_cycle_ctx* ctx, const mxrc_event* event) {
  return ExecutiveApi::publish_event(ctx, event);
}
static int32_t mxrc_api_poll_event(const mxrc_cycle_ctx* ctx, mxrc_event* out) {
  return ExecutiveApi::poll_event(ctx, out);
}
}

const mxrc_api* Executive::api() noexcept {
  static const mxrc_api table = [] {
    mxrc_api t{};
    t.abi_version = MXRC_ABI_VERSION;
    t.size = static_cast<std::uint32_t>(sizeof(mxrc_api));
    t.now_ns = &mxrc_api_now_ns;
    t.state = &mxrc_api_state;
    t.request_safe_mode = &mxrc_api_request_safe_mode;
    t.request_stop = &mxrc_api_request_stop;
    t.clock_ns = &mxrc_api_clock_ns;
    t.sim_advance = &mxrc_api_sim_advance;
    t.ds_find = &mxrc_api_ds_find;
    t.ds_read = &mxrc_api_ds_read;
    t.ds_write = &mxrc_api_ds_write;
    t.ds_read_f64 = &mxrc_api_ds_read_f64;
    t.ds_write_f64 = &mxrc_api_ds_write_f64;
    t.ds_read_i64 = &mxrc_api_ds_read_i64;
    t.ds_write_i64 = &mxrc_api_ds_write_i64;
    t.publish_event = &mxrc_api_publish_event;
    t.poll_event = &mxrc_api_poll_event;
    return t;
  }();
  return &table;
}

Action native_action(mxrc_body_fn fn, void* user, std::uint32_t every,
                     std::uint32_t offset) noexcept {
  Action a;
  a.fn = &invoke_native;
  a.target = reinterpret_cast<void*>(fn);
  a.user = user;
  a.every = every;
  a.offset = offset;
  return a;
}

Executive::Executive(ExecutiveConfig config, StatsBlock* stats)
    : config_(std::move(config)),
      simulated_(config_.clock == ClockKind::Simulated),
      stats_(stats),
      writer_(stats) {
  if (stats_ == nullptr) throw std::invalid_argument("Executive needs a stats block");
  if (config_.period_ns <= 0) throw std::invalid_argument("period_ns must be > 0");
  if (config_.deadline_ns < 0) throw std::invalid_argument("deadline_ns must be >= 0");
  if (config_.deadline_ns == 0) config_.deadline_ns = config_.period_ns;
  if (config_.clock != ClockKind::Monotonic && config_.clock != ClockKind::Simulated) {
    throw std::invalid_argument("clock must be Monotonic or Simulated");
  }
  if (!config_.setup.timer_slack_ns) config_.setup.timer_slack_ns = 1UL;
  if (config_.rusage_every == 0) config_.rusage_every = 100;
  if (config_.thread_name.empty()) config_.thread_name = "mxrc-" + config_.name;
  if (config_.thread_name.size() > 15) config_.thread_name.resize(15);
  if (config_.agent_timeout_ns < 0) throw std::invalid_argument("agent_timeout_ns must be >= 0");
  if (config_.rings != nullptr) {
    if (!config_.rings->valid()) throw std::invalid_argument("rings: not a formatted ring set");
    rings_ = *config_.rings;
    has_rings_ = true;
    event_id_base_ = static_cast<std::uint64_t>(rings_.slot_index()) << 48;
  }
  if (config_.datastore != nullptr) {
    if (!config_.datastore->valid()) throw std::invalid_argument("datastore: not a data store");
    ds_view_ = *config_.datastore;
    ds_ = &ds_view_;
  }
  // The views are copied: the config keeps no pointer to the caller's.
  config_.rings = nullptr;
  config_.datastore = nullptr;
  if (config_.agent_heartbeat != nullptr && config_.agent_timeout_ns > 0 && !simulated_) {
    agent_hb_ = config_.agent_heartbeat;
    agent_timeout_ns_ = config_.agent_timeout_ns;
  }
  // Pre-size so that nothing grows later; actions are added before start().
  actions_.reserve(8);
}

Executive::~Executive() {
  request_stop();
  if (started_) (void)join(-1);  // never destroy an Executive from its own cycle thread
}

static void check_action(const Action& a) {
  if (a.fn == nullptr) throw std::invalid_argument("action without a function");
  if (a.every == 0) throw std::invalid_argument("every must be >= 1");
  if (a.offset >= a.every) throw std::invalid_argument("offset must be < every");
}

void Executive::add_action(const Action& action) {
  if (started_) throw std::logic_error("add_action after start()");
  check_action(action);
  actions_.push_back(action);
}

void Executive::add_function(CycleFunction fn, std::uint32_t every, std::uint32_t offset,
                             void* user) {
  if (started_) throw std::logic_error("add_function after start()");
  if (!fn) throw std::invalid_argument("empty function");
  functions_.push_back(std::make_unique<CycleFunction>(std::move(fn)));
  Action a;
  a.fn = &invoke_function;
  a.target = functions_.back().get();
  a.user = user;
  a.every = every;
  a.offset = offset;
  add_action(a);
}

void Executive::set_safe_mode_action(const Action& action) {
  if (started_) throw std::logic_error("set_safe_mode_action after start()");
  Action a = action;
  a.every = 1;
  a.offset = 0;
  check_action(a);
  safe_action_ = a;
  has_safe_action_ = true;
}

void Executive::add_init_hook(InitHook hook) {
  if (started_) throw std::logic_error("add_init_hook after start()");
  init_hooks_.push_back(std::move(hook));
}

void Executive::set_thread_hooks(ThreadHooks hooks) {
  if (started_) throw std::logic_error("set_thread_hooks after start()");
  hooks_ = std::move(hooks);
}

StartStatus Executive::start() {
  if (started_) throw std::logic_error("Executive started twice");
  started_ = true;
  try {
    thread_ = std::thread([this] { thread_main(); });
  } catch (const std::system_error& e) {
    joined_ = true;
    StartStatus s;
    s.step = StartStep::Thread;
    s.error = e.code().value();
    finished_.store(true, std::memory_order_release);
    return s;
  }
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [this] { return start_phase_ != 0; });
  const StartStatus status = start_status_;
  lock.unlock();
  if (!status.ok()) (void)join(-1);
  return status;
}

void Executive::request_stop() noexcept { stop_.store(true, std::memory_order_release); }
void Executive::stop_after(std::uint64_t cycles) noexcept {
  stop_after_.store(cycles, std::memory_order_release);
}
void Executive::pause() noexcept { pause_req_.store(1, std::memory_order_release); }
void Executive::resume() noexcept { pause_req_.store(-1, std::memory_order_release); }
void Executive::enter_safe_mode() noexcept { safe_req_.store(1, std::memory_order_release); }
void Executive::exit_safe_mode() noexcept { safe_req_.store(-1, std::memory_order_release); }
void Executive::adjust_phase(std::int64_t delta_ns) noexcept {
  pending_phase_ns_.fetch_add(delta_ns, std::memory_order_acq_rel);
}

std::int64_t Executive::clock_ns() const noexcept { return now(); }

std::int64_t Executive::now() const noexcept {
  return simulated_ ? sim_now_ns_.load(std::memory_order_acquire) : mono_ns();
}

int Executive::sim_advance(std::int64_t ns) noexcept {
  if (!simulated_) return ENOTSUP;
  if (ns < 0) return EINVAL;
  const std::int64_t t = sim_now_ns_.load(std::memory_order_acquire);
  if (t > std::numeric_limits<std::int64_t>::max() - ns) return EINVAL;
  // A plain store: only the cycle thread writes the virtual clock.
  sim_now_ns_.store(t + ns, std::memory_order_release);
  return 0;
}

bool Executive::join(std::int64_t timeout_ns) {
  if (!started_) return true;
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (timeout_ns < 0) {
      cv_.wait(lock, [this] { return exited_; });
    } else if (!cv_.wait_for(lock, std::chrono::nanoseconds(timeout_ns),
                             [this] { return exited_; })) {
      return false;
    }
  }
  std::lock_guard<std::mutex> lock(join_mu_);  // two callers may get here together
  if (!joined_) {
    if (thread_.get_id() == std::this_thread::get_id()) return false;  // never join oneself
    thread_.join();
    joined_ = true;
  }
  return true;
}

void Executive::set_state(RtState s, StateTrigger trigger, mxrc_event* follow) noexcept {
  const auto prev = static_cast<RtState>(
      state_.exchange(static_cast<std::int32_t>(s), std::memory_order_acq_rel));
  if (s == RtState::Error || s == RtState::Shutdown) {
    safe_reasons_.store(0, std::memory_order_release);
  }
  if (prev != s && has_rings_) {
    mxrc_event ev{};
    set_type(ev, "rt.state_changed");
    JsonOut j(ev.payload, sizeof ev.payload);
    j.raw("{\"from\":");
    j.str(rt_state_name(prev));
    j.raw(",\"to\":");
    j.str(rt_state_name(s));
    j.raw(",\"trigger\":");
    j.str(state_trigger_name(trigger));
    j.raw("}");
    ev.payload_len = static_cast<std::uint16_t>(j.size());
    emit(ev);
  }
  if (follow != nullptr && has_rings_) emit(*follow);
  writer_.set_state(s);  // last: see the declaration
}

std::uint64_t Executive::next_event_id() noexcept {
  const std::uint64_t seq = event_seq_.fetch_add(1, std::memory_order_relaxed) + 1;
  return event_id_base_ | (seq & kEventSeqMask);
}

void Executive::emit(mxrc_event& ev) noexcept {
  ev.priority = MXRC_PRIO_HIGH;
  ev.flags = kEventFlagJson;
  loop_events_.fetch_add(1, std::memory_order_relaxed);
  if (publish_event(&ev) != 0) loop_events_dropped_.fetch_add(1, std::memory_order_relaxed);
}

int Executive::publish_event(const mxrc_event* ev) noexcept {
  if (!has_rings_) return ENOENT;
  if (ev == nullptr || ev->priority > MXRC_PRIO_LOW || ev->payload_len > MXRC_EVENT_PAYLOAD_MAX ||
      ev->type[0] == '\0') {
    return EINVAL;
  }
  if (ev->id != 0 && ev->timestamp_ns != 0) {
    return rings_.publish_event(ev, sizeof *ev, ev->priority);
  }
  mxrc_event e;
  std::memcpy(&e, ev, sizeof e);
  if (e.id == 0) e.id = next_event_id();
  if (e.timestamp_ns == 0) e.timestamp_ns = now();
  return rings_.publish_event(&e, sizeof e, e.priority);
}

int Executive::poll_event(mxrc_event* out) noexcept {
  if (!has_rings_) return ENOENT;
  if (out == nullptr) return EINVAL;
  std::size_t len = 0;
  const int rc = rings_.poll_command(out, sizeof *out, &len);
  if (rc == 0 && len < sizeof *out) {
    std::memset(reinterpret_cast<unsigned char*>(out) + len, 0, sizeof *out - len);
  }
  return rc;
}

void Executive::add_safe_reason(std::uint32_t reason, StateTrigger trigger,
                                std::int64_t now_ns) noexcept {
  const RtState s = state();
  if (s == RtState::Error || s == RtState::Shutdown) return;
  safe_reasons_.store(safe_reasons_.load(std::memory_order_relaxed) | reason,
                      std::memory_order_release);
  if (s == RtState::SafeMode) return;  // already: only the reason is added
  safe_return_ = s == RtState::Paused ? RtState::Paused : RtState::Running;
  safe_since_ns_ = now_ns;
  mxrc_event ev{};
  set_type(ev, "rt.safe_mode_entered");
  JsonOut j(ev.payload, sizeof ev.payload);
  j.raw("{\"reason\":");
  j.str(safe_reason_name(reason));
  if (reason == kSafeReasonAgent) {
    j.raw(",\"timeout_ms\":");
    j.ms(agent_timeout_ns_);
  }
  j.raw("}");
  ev.payload_len = static_cast<std::uint16_t>(j.size());
  set_state(RtState::SafeMode, trigger, &ev);
}

void Executive::drop_safe_reasons(std::uint32_t reasons, StateTrigger trigger,
                                  std::int64_t now_ns) noexcept {
  const std::uint32_t left = safe_reasons_.load(std::memory_order_relaxed) & ~reasons;
  safe_reasons_.store(left, std::memory_order_release);
  if (left != 0 || state() != RtState::SafeMode) return;
  mxrc_event ev{};
  set_type(ev, "rt.safe_mode_exited");
  JsonOut j(ev.payload, sizeof ev.payload);
  j.raw("{\"downtime_ms\":");
  j.ms(now_ns - safe_since_ns_);
  j.raw("}");
  ev.payload_len = static_cast<std::uint16_t>(j.size());
  set_state(safe_return_, trigger, &ev);
}

void Executive::check_agent(std::int64_t now_ns) noexcept {
  if (agent_hb_ == nullptr) return;
  const RtState s = state();
  if (s == RtState::Error || s == RtState::Shutdown) return;
  const std::int64_t beat = agent_hb_->load(std::memory_order_acquire);
  // Never beat, or last beat before the loop started: the agent has one
  // timeout from the first release on.
  const std::int64_t start = start_ns_.load(std::memory_order_relaxed);
  const std::int64_t since = beat > start ? beat : start;
  const bool stale = now_ns - since > agent_timeout_ns_;
  const bool flagged = (safe_reasons_.load(std::memory_order_relaxed) & kSafeReasonAgent) != 0;
  if (stale && !flagged) {
    add_safe_reason(kSafeReasonAgent, StateTrigger::Agent, now_ns);
  } else if (!stale && flagged) {
    drop_safe_reasons(kSafeReasonAgent, StateTrigger::Agent, now_ns);
  }
}

void Executive::thread_main() noexcept {
  tid_.store(static_cast<std::int32_t>(::syscall(SYS_gettid)), std::memory_order_release);
  (void)::pthread_setname_np(::pthread_self(), config_.thread_name.c_str());

  StartStatus status;
  // A simulated loop keeps no real time: pinning, an RT policy or locked
  // memory would only let a flat-out loop starve the CPU it runs on.
  SetupStatus setup = simulated_ ? SetupStatus{} : apply_thread_setup(config_.setup);
  const bool rt_policy = config_.setup.policy && (*config_.setup.policy == SchedPolicy::Fifo ||
                                                  *config_.setup.policy == SchedPolicy::RoundRobin);
  if (!setup.ok() && setup.failed_step == SetupStep::Scheduler && setup.error == EPERM &&
      config_.allow_sched_fallback && rt_policy) {
    status.sched_fallback = true;
    ThreadSetup rest;
    rest.timer_slack_ns = config_.setup.timer_slack_ns;
    setup = apply_thread_setup(rest);
  }
  if (!setup.ok()) {
    status.step = StartStep::Setup;
    status.setup = setup;
  }

  bool hooks_started = false;
  if (status.ok()) {
    if (hooks_.thread_start) hooks_.thread_start();
    hooks_started = true;
    for (std::size_t i = 0; i < init_hooks_.size(); ++i) {
      const int rc = init_hooks_[i]();
      if (rc != 0) {
        status.step = StartStep::Hook;
        status.hook_index = static_cast<int>(i);
        status.hook_result = rc;
        break;
      }
    }
  }

  if (status.ok()) {
    ctx_.abi_version = MXRC_ABI_VERSION;
    ctx_.size = static_cast<std::uint32_t>(sizeof(mxrc_cycle_ctx));
    ctx_.period_ns = config_.period_ns;
    ctx_.api = api();
    ctx_.executive = this;
    set_state(RtState::Ready, StateTrigger::Start);
  } else {
    set_state(RtState::Error, StateTrigger::Start);
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    start_status_ = status;
    start_phase_ = status.ok() ? 1 : 2;
  }
  cv_.notify_all();

  if (status.ok()) loop();
  if (hooks_started && hooks_.thread_exit) hooks_.thread_exit();

  finished_.store(true, std::memory_order_release);
  {
    std::lock_guard<std::mutex> lock(mu_);
    exited_ = true;
  }
  cv_.notify_all();
}

int Executive::sleep_until(std::int64_t release_ns) noexcept {
  if (simulated_) {
    if (stop_.load(std::memory_order_acquire)) return 1;
    // The release happens at once: the clock jumps forward to it (never back:
    // after an overrun the cycle is late by the same virtual amount).
    if (sim_now_ns_.load(std::memory_order_acquire) < release_ns) {
      sim_now_ns_.store(release_ns, std::memory_order_release);
    }
    return 0;
  }
  for (;;) {
    if (stop_.load(std::memory_order_acquire)) return 1;
    const std::int64_t now = mono_ns();
    if (now >= release_ns) return 0;
    const std::int64_t target = release_ns - now > kSleepChunkNs ? now + kSleepChunkNs : release_ns;
    const timespec ts = to_timespec(target);
    // clock_nanosleep returns the error number; it does not set errno.
    const int rc = ::clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr);
    if (rc != 0 && rc != EINTR) return rc;
    if (rc == 0 && target == release_ns) return 0;
  }
}

void Executive::apply_requests(std::int64_t now_ns) noexcept {
  const RtState s = state();
  if (s == RtState::Error || s == RtState::Shutdown) return;
  const std::int32_t safe = safe_req_.exchange(0, std::memory_order_acq_rel);
  const std::int32_t pause = pause_req_.exchange(0, std::memory_order_acq_rel);
  if (safe > 0) {
    add_safe_reason(kSafeReasonRequested, StateTrigger::Request, now_ns);
    return;  // a pause asked together with safe mode is dropped: safe mode wins
  }
  if (s == RtState::SafeMode) {
    // pause/resume choose the state SAFE_MODE returns to.
    if (pause > 0) safe_return_ = RtState::Paused;
    if (pause < 0) safe_return_ = RtState::Running;
    if (safe < 0) {
      drop_safe_reasons(kSafeReasonRequested | kSafeReasonBodyError, StateTrigger::Request, now_ns);
    }
    return;
  }
  if (pause > 0 && s == RtState::Running) {
    set_state(RtState::Paused, StateTrigger::Request);
  } else if (pause < 0 && s == RtState::Paused) {
    set_state(RtState::Running, StateTrigger::Request);
  }
}

void Executive::run_actions(const Action* actions, std::size_t n, std::uint64_t k,
                            std::int64_t release, std::int64_t wake) noexcept {
  ctx_.cycle = k;
  ctx_.release_ns = release;
  ctx_.wake_ns = wake;
  ctx_.deadline_ns = release + config_.deadline_ns;
  bool any = false;
  std::int64_t body_start = 0;
  std::int64_t gil_wait = -1;
  const bool safe_body = actions == &safe_action_;
  for (std::size_t i = 0; i < n; ++i) {
    const Action& a = actions[i];
    if (k % a.every != a.offset) continue;
    ctx_.slot = a.offset;
    ctx_.every = a.every;
    ctx_.user = a.user;
    Invocation inv;
    inv.body_start_ns = now();
    const int rc = a.fn(a.target, &ctx_, &inv);
    if (!any) {
      body_start = inv.body_start_ns;
      any = true;
    }
    if (inv.gil_wait_ns >= 0) gil_wait = (gil_wait < 0 ? 0 : gil_wait) + inv.gil_wait_ns;
    if (rc != 0) {
      body_errors_.fetch_add(1, std::memory_order_acq_rel);
      writer_.add_body_error();
      std::int64_t none = -1;
      if (first_error_cycle_.compare_exchange_strong(none, static_cast<std::int64_t>(k),
                                                     std::memory_order_acq_rel)) {
        first_error_code_.store(rc, std::memory_order_release);
      }
      if (config_.on_error == ErrorPolicy::Stop) {
        set_state(RtState::Error, StateTrigger::BodyError);
        error_stop_.store(true, std::memory_order_release);
        break;
      }
      if (config_.on_error == ErrorPolicy::SafeMode && !safe_body) {
        add_safe_reason(kSafeReasonBodyError, StateTrigger::BodyError, now());
        break;
      }
    }
  }
  const std::int64_t end = now();
  CycleSample sample{};
  sample.release_ns = release;
  sample.wake_ns = wake;
  sample.body_start_ns = any ? body_start : end;
  sample.body_end_ns = end;
  sample.gil_wait_ns = gil_wait;
  sample.deadline_missed = end > release + config_.deadline_ns;
  writer_.record(sample);
}

void Executive::loop() noexcept {
  const std::int64_t period = config_.period_ns;
  const std::int64_t lead = period < kMaxStartLeadNs ? period : kMaxStartLeadNs;
  const std::int64_t start = simulated_ ? 0 : mono_ns() + lead;
  start_ns_.store(start, std::memory_order_release);
  writer_.begin(period, config_.deadline_ns, tid(), start);
  set_state(RtState::Running, StateTrigger::Start);

  std::uint64_t k = 0;
  std::uint64_t iter = 0;
  std::int64_t phase = 0;
  // rusage counts real faults and preemptions: not sampled on a simulated
  // clock, so that a simulated run's stats are the same every time.
  const std::uint32_t rusage_every = simulated_ ? 0 : config_.rusage_every;
  for (;;) {
    const std::int64_t release = start + static_cast<std::int64_t>(k) * period + phase;
    const int rc = sleep_until(release);
    if (rc != 0) {
      if (stop_.load(std::memory_order_acquire)) break;
      set_state(RtState::Error, StateTrigger::ClockError);  // cannot keep time
      return;
    }
    const std::int64_t wake = now();
    apply_requests(wake);
    phase += pending_phase_ns_.exchange(0, std::memory_order_acq_rel);
    // Cycle boundary, before the bodies: a pending data store snapshot (the
    // values as cycle k-1 left them), then the agent watchdog.
    if (ds_ != nullptr) (void)ds_->service_snapshot(k, wake);
    check_agent(wake);

    const RtState s = state();
    if (s == RtState::Running) {
      run_actions(actions_.data(), actions_.size(), k, release, wake);
    } else if (s == RtState::SafeMode && has_safe_action_) {
      run_actions(&safe_action_, 1, k, release, wake);
    } else {
      writer_.heartbeat(wake);
    }
    ++iter;
    iterations_.store(iter, std::memory_order_release);
    if (rusage_every != 0 && iter % rusage_every == 0) writer_.sample_rusage();
    if (error_stop_.load(std::memory_order_acquire)) return;  // state stays ERROR
    const std::uint64_t limit = stop_after_.load(std::memory_order_acquire);
    if (limit != 0 && iter >= limit) break;

    ++k;
    if (config_.overrun == OverrunPolicy::Skip) {
      const std::int64_t next = start + static_cast<std::int64_t>(k) * period + phase;
      const std::int64_t t = now();
      if (t > next) {
        const auto behind = static_cast<std::uint64_t>((t - next) / period) + 1;
        k += behind;
        writer_.add_skipped_releases(behind);
      }
    }
  }
  set_state(RtState::Shutdown, StateTrigger::Stop);
}

}  // namespace mxrc
