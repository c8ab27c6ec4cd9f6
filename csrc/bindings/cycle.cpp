// mxrc._core.cycle: the Executive (cycle loop) and its body tiers.
//
// Tier 2 (native): a function address called on the cycle thread without the
// GIL. Tier 3 (Python): the cycle thread keeps ONE PyThreadState for its
// whole life (PyGILState_Ensure at thread start, PyEval_SaveThread, then
// PyEval_RestoreThread / PyEval_SaveThread around each call) and measures how
// long it waited for the GIL. Every wait of a Python thread on the executive
// (start, wait, join) releases the GIL and checks for signals at least every
// 50 ms, so Ctrl-C works and a Python body never deadlocks against its caller.
//
// On a simulated clock a Python body's start is the loop's virtual time and
// its GIL wait is not recorded: real waits would make the stats differ from
// run to run.
//
// The bus: the executive takes the stats slot's ring set (a _core.bus.RingSet),
// a data store (_core.datastore.DataStore, or mxrc.bus.DataStore) and, for the
// agent watchdog, the segment (_core.bus.Segment) whose header holds the
// agent's heartbeat. What keeps their memory mapped lives in Guts, with the
// executive. A Python body publishes with ctx.publish() (encoded by
// mxrc.rt._executive._ctx_event_record, then copied into the ring like a
// native body's publish_event) and polls with ctx.poll_event().
#include "mxrc/cycle.hpp"

#include <dlfcn.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "mxrc/error.hpp"
#include "mxrc/segment.hpp"
#include "register.hpp"
#include "rings.hpp"
#include "stats_slot.hpp"
#include "thread_setup_args.hpp"

namespace py = pybind11;

namespace mxrc::bindings {

namespace {

inline std::int64_t mono_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

inline bool interpreter_finalizing() noexcept {
#if PY_VERSION_HEX >= 0x030D0000
  return Py_IsFinalizing() != 0;
#else
  return _Py_IsFinalizing() != 0;
#endif
}

constexpr std::int64_t kSignalCheckNs = 20'000'000;  // <= 50 ms between PyErr_CheckSignals

// What a Python body sees as its argument: one object per executive, updated
// (copied, no allocation) before each call.
struct CycleContext {
  mxrc_cycle_ctx ctx{};
  Executive* executive = nullptr;  // cleared when the executive goes away
  std::string name;                // the executive's, for messages
  py::object encode;               // (type, payload, priority, target_id, carrier) -> record
  py::object decode;               // record -> mxrc.bus.Event
};

// The kernel thread id of the calling thread (cached per thread).
std::int32_t this_tid() noexcept {
  thread_local const auto tid = static_cast<std::int32_t>(::syscall(SYS_gettid));
  return tid;
}

// The executive of a context, on its own cycle thread (the single producer of
// the RT->agent rings and the single consumer of the command ring).
Executive& bus_executive(const CycleContext& c, const char* what) {
  if (c.executive == nullptr) {
    throw std::runtime_error(std::string("ctx.") + what +
                             ": the executive of this context is gone");
  }
  if (!c.executive->has_rings()) {
    throw UnsupportedError(std::string("ctx.") + what + ": executive '" + c.name +
                           "' has no ring set: it writes a private stats block; create it with "
                           "segment=... to exchange events with the agent");
  }
  if (this_tid() != c.executive->tid()) {
    throw std::runtime_error(std::string("ctx.") + what +
                             ": call it from the body, on executive '" + c.name +
                             "''s cycle thread (the only producer and consumer of its "
                             "rings on the RT side)");
  }
  return *c.executive;
}

py::object publish_from_python(CycleContext& c, const py::object& type, const py::object& payload,
                               const py::object& priority, const py::object& target_id,
                               const py::object& carrier) {
  Executive& e = bus_executive(c, "publish");
  const py::object record = c.encode(type, payload, priority, target_id, carrier);
  char* data = nullptr;
  Py_ssize_t len = 0;
  if (PyBytes_AsStringAndSize(record.ptr(), &data, &len) != 0) throw py::error_already_set();
  if (static_cast<std::size_t>(len) != sizeof(mxrc_event)) {
    throw std::runtime_error("ctx.publish: the encoder returned " + std::to_string(len) +
                             " bytes, an mxrc_event is " + std::to_string(sizeof(mxrc_event)));
  }
  mxrc_event ev;
  std::memcpy(&ev, data, sizeof ev);
  const int rc = e.publish_event(&ev);
  if (rc == 0) return py::bool_(true);
  if (rc == ENOSPC) return py::bool_(false);
  throw py::value_error("ctx.publish: the ring refused the event record (errno " +
                        std::to_string(rc) + ")");
}

py::object poll_from_python(CycleContext& c) {
  Executive& e = bus_executive(c, "poll_event");
  mxrc_event ev;
  const int rc = e.poll_event(&ev);
  if (rc == EAGAIN) return py::none();
  if (rc != 0) {
    throw std::runtime_error("ctx.poll_event: the command ring failed (errno " +
                             std::to_string(rc) + ")");
  }
  return c.decode(py::bytes(reinterpret_cast<const char*>(&ev), sizeof ev));
}

// State shared by the Python-tier actions, hooks and thread hooks of one
// executive.
struct PyTier {
  PyThreadState* tstate = nullptr;
  PyGILState_STATE gstate{};
  bool have_tstate = false;
  PyObject* ctx_obj = nullptr;      // borrowed from PyExecutive::Guts::ctx_obj
  CycleContext* ctx = nullptr;      // the C++ side of ctx_obj
  PyObject* first_error = nullptr;  // owned; the first exception a body raised
  std::int64_t first_error_cycle = -1;
  PyObject* hook_error = nullptr;  // owned; the exception of a failed init hook
  bool simulated = false;          // the executive runs on a simulated clock
};

struct PyAction {
  PyTier* tier;
  PyObject* fn;  // owned by PyExecutive::Guts::keep
};

// The raised exception (a new reference, normalized, with its traceback
// attached); clears the error indicator. Needs the GIL.
PyObject* take_exception() noexcept {
#if PY_VERSION_HEX >= 0x030C0000
  return PyErr_GetRaisedException();
#else
  PyObject *type = nullptr, *value = nullptr, *tb = nullptr;
  PyErr_Fetch(&type, &value, &tb);
  PyErr_NormalizeException(&type, &value, &tb);
  if (value != nullptr && tb != nullptr) PyException_SetTraceback(value, tb);
  Py_XDECREF(type);
  Py_XDECREF(tb);
  return value;
#endif
}

// Called on the cycle thread without the GIL.
int invoke_python(void* target, const mxrc_cycle_ctx* ctx, Invocation* inv) noexcept {
  auto* a = static_cast<PyAction*>(target);
  PyTier* t = a->tier;
  if (!t->have_tstate || interpreter_finalizing()) return -2;  // never touch a dying interpreter
  if (t->simulated) {
    PyEval_RestoreThread(t->tstate);  // inv keeps the loop's virtual body start
  } else {
    const std::int64_t before = mono_ns();
    PyEval_RestoreThread(t->tstate);
    const std::int64_t start = mono_ns();
    inv->body_start_ns = start;
    inv->gil_wait_ns = start - before;
  }
  t->ctx->ctx = *ctx;
  PyObject* result = PyObject_CallOneArg(a->fn, t->ctx_obj);
  int rc = 0;
  if (result == nullptr) {
    rc = -1;
    if (t->first_error == nullptr) {
      t->first_error = take_exception();  // keeps the reference
      t->first_error_cycle = static_cast<std::int64_t>(ctx->cycle);
    } else {
      PyErr_Clear();
    }
  } else {
    Py_DECREF(result);
  }
  t->tstate = PyEval_SaveThread();
  return rc;
}

class PyExecutive {
 public:
  PyExecutive(py::object stats_slot, const std::string& name, std::int64_t period_ns,
              std::int64_t deadline_ns, int overrun, int on_error, const std::string& thread_name,
              bool allow_sched_fallback, int clock, const py::object& rings,
              const py::object& datastore, const py::object& agent_segment,
              std::int64_t agent_timeout_ns, const py::kwargs& setup)
      : stats_slot_(std::move(stats_slot)) {
    auto& slot = stats_slot_.cast<StatsSlot&>();
    if (slot.block == nullptr) throw std::invalid_argument("stats slot without a block");
    ExecutiveConfig cfg;
    cfg.name = name;
    cfg.period_ns = period_ns;
    cfg.deadline_ns = deadline_ns;
    if (overrun < 0 || overrun > 1) throw std::invalid_argument("overrun: 0 skip, 1 run_late");
    if (on_error < 0 || on_error > 2) throw std::invalid_argument("on_error: 0..2");
    if (clock < 0 || clock > 1) throw std::invalid_argument("clock: 0 monotonic, 1 simulated");
    cfg.overrun = static_cast<OverrunPolicy>(overrun);
    cfg.on_error = static_cast<ErrorPolicy>(on_error);
    cfg.thread_name = thread_name;
    cfg.allow_sched_fallback = allow_sched_fallback;
    cfg.clock = static_cast<ClockKind>(clock);
    apply_setup_kwargs(setup, cfg.setup, "Executive");
    attach_bus(cfg, rings, datastore, agent_segment, agent_timeout_ns);
    exec_ = std::make_unique<Executive>(std::move(cfg), slot.block);
    guts_->tier.simulated = exec_->simulated();

    auto ctx = std::make_unique<CycleContext>();
    ctx->executive = exec_.get();
    ctx->name = name;
    if (exec_->has_rings()) {
      // Imported here, not on the cycle thread.
      const py::module_ m = py::module_::import("mxrc.rt._executive");
      ctx->encode = m.attr("_ctx_event_record");
      ctx->decode = m.attr("_ctx_event_from_record");
    }
    guts_->ctx_obj = py::cast(std::move(ctx));
    guts_->tier.ctx = &guts_->ctx_obj.cast<CycleContext&>();
    guts_->tier.ctx_obj = guts_->ctx_obj.ptr();
  }

  ~PyExecutive() {
    if (exec_) {
      exec_->request_stop();
      if (exec_->started() && !exec_->finished() &&
          exec_->tid() == static_cast<std::int32_t>(::syscall(SYS_gettid))) {
        // The last reference died inside a body on the cycle thread (a
        // garbage collection there): the thread cannot join itself and still
        // runs on this state. Leak both; the thread stops after this cycle.
        (void)exec_.release();
        (void)guts_.release();
        (void)stats_slot_.release();  // the stats block stays too
        return;
      }
      // Safe: joining touches no Python object; the cycle thread may need the
      // GIL to finish its body and drop its thread state.
      py::gil_scoped_release release;
      (void)exec_->join(-1);
    }
    guts_->tier.ctx->executive = nullptr;
    Py_CLEAR(guts_->tier.first_error);
    Py_CLEAR(guts_->tier.hook_error);
  }

  void add_python_action(py::object fn, std::uint32_t every, std::uint32_t offset) {
    check_callable(fn);
    guts_->keep.push_back(fn);
    guts_->actions.push_back(std::make_unique<PyAction>(PyAction{&guts_->tier, fn.ptr()}));
    Action act;
    act.fn = &invoke_python;
    act.target = guts_->actions.back().get();
    act.every = every;
    act.offset = offset;
    exec_->add_action(act);
    needs_python_ = true;
  }

  void set_safe_mode_python(py::object fn) {
    check_callable(fn);
    guts_->keep.push_back(fn);
    guts_->actions.push_back(std::make_unique<PyAction>(PyAction{&guts_->tier, fn.ptr()}));
    Action act;
    act.fn = &invoke_python;
    act.target = guts_->actions.back().get();
    exec_->set_safe_mode_action(act);
    needs_python_ = true;
  }

  void add_native_action(std::uintptr_t address, std::uintptr_t user, std::uint32_t every,
                         std::uint32_t offset) {
    if (address == 0) throw std::invalid_argument("native body address is 0");
    exec_->add_action(native_action(reinterpret_cast<mxrc_body_fn>(address),
                                    reinterpret_cast<void*>(user), every, offset));
  }

  void set_safe_mode_native(std::uintptr_t address, std::uintptr_t user) {
    if (address == 0) throw std::invalid_argument("native body address is 0");
    exec_->set_safe_mode_action(
        native_action(reinterpret_cast<mxrc_body_fn>(address), reinterpret_cast<void*>(user)));
  }

  // Tier-1 bodies built into the core (C++ callables): used by the tests and
  // the benchmarks. kind: "noop"; "sleep_ns" (nanosleep arg ns: a slow body
  // that does not burn the CPU; on a simulated clock it consumes arg virtual
  // ns instead); "fail_at" (returns 7 on cycle arg); "fail_every" (returns 7
  // on every cycle that is a multiple of arg).
  void add_builtin_action(const std::string& kind, std::int64_t arg, std::uint32_t every,
                          std::uint32_t offset) {
    CycleFunction fn;
    if (kind == "noop") {
      fn = [](const mxrc_cycle_ctx&) { return 0; };
    } else if (kind == "sleep_ns" && exec_->simulated()) {
      if (arg < 0) throw std::invalid_argument("sleep_ns: arg must be >= 0");
      Executive* e = exec_.get();
      fn = [arg, e](const mxrc_cycle_ctx&) { return e->sim_advance(arg); };
    } else if (kind == "sleep_ns") {
      if (arg < 0) throw std::invalid_argument("sleep_ns: arg must be >= 0");
      fn = [arg](const mxrc_cycle_ctx&) {
        timespec ts{static_cast<time_t>(arg / 1'000'000'000),
                    static_cast<long>(arg % 1'000'000'000)};
        while (::clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts) == EINTR) {
        }
        return 0;
      };
    } else if (kind == "fail_at") {
      fn = [arg](const mxrc_cycle_ctx& c) {
        return static_cast<std::int64_t>(c.cycle) == arg ? 7 : 0;
      };
    } else if (kind == "fail_every") {
      if (arg <= 0) throw std::invalid_argument("fail_every: arg must be > 0");
      fn = [arg](const mxrc_cycle_ctx& c) {
        return static_cast<std::int64_t>(c.cycle) % arg == 0 ? 7 : 0;
      };
    } else {
      throw std::invalid_argument("unknown builtin body: " + kind);
    }
    exec_->add_function(std::move(fn), every, offset);
  }

  void add_init_hook(py::object fn) {
    check_callable(fn);
    guts_->keep.push_back(fn);
    PyObject* f = fn.ptr();
    PyTier* t = &guts_->tier;
    // Runs on the cycle thread before the first cycle, with the thread's own
    // thread state.
    exec_->add_init_hook([t, f]() -> int {
      if (!t->have_tstate || interpreter_finalizing()) return -2;
      PyEval_RestoreThread(t->tstate);
      PyObject* r = PyObject_CallNoArgs(f);
      int rc = 0;
      if (r == nullptr) {
        rc = -1;
        Py_XSETREF(t->hook_error, take_exception());
      } else {
        Py_DECREF(r);
      }
      t->tstate = PyEval_SaveThread();
      return rc;
    });
    needs_python_ = true;
  }

  // (step, syscall, errno, sched_fallback, hook_index); raises the init hook's
  // exception.
  py::tuple start() {
    if (needs_python_) {
      PyTier* t = &guts_->tier;
      ThreadHooks hooks;
      hooks.thread_start = [t] {
        if (interpreter_finalizing()) return;
        // The one thread state of this cycle thread, for its whole life.
        t->gstate = PyGILState_Ensure();
        t->tstate = PyEval_SaveThread();
        t->have_tstate = true;
      };
      hooks.thread_exit = [t] {
        if (!t->have_tstate) return;
        t->have_tstate = false;
        if (interpreter_finalizing()) return;  // leak it rather than touch a dying interpreter
        PyEval_RestoreThread(t->tstate);
        PyGILState_Release(t->gstate);
      };
      exec_->set_thread_hooks(std::move(hooks));
    }
    StartStatus st;
    {
      // Safe: start() touches no Python object; the cycle thread takes the
      // GIL for its thread state and init hooks while we wait.
      py::gil_scoped_release release;
      st = exec_->start();
    }
    std::string step, syscall;
    switch (st.step) {
      case StartStep::Ok:
        break;
      case StartStep::Setup:
        step = setup_step_name(st.setup.failed_step);
        syscall = setup_step_syscall(st.setup.failed_step);
        if (st.setup.failed_step == SetupStep::Scheduler &&
            exec_->config().setup.policy == SchedPolicy::Deadline) {
          syscall = "sched_setattr";
        }
        break;
      case StartStep::Hook:
        step = "init_hook";
        if (guts_->tier.hook_error != nullptr) {
          PyObject* e = guts_->tier.hook_error;
          guts_->tier.hook_error = nullptr;
          PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(e)), e);
          Py_DECREF(e);
          throw py::error_already_set();
        }
        break;
      case StartStep::Thread:
        step = "thread";
        syscall = "pthread_create";
        break;
    }
    int err = st.step == StartStep::Setup ? st.setup.error : st.error;
    return py::make_tuple(step, syscall, err, st.sched_fallback, st.hook_index);
  }

  // Waits (GIL released, signals checked every 20 ms) until the thread ended
  // or, with cycles, until that many iterations ran. Returns True when the
  // condition was met, False on timeout. A pending signal's exception
  // (KeyboardInterrupt) propagates.
  bool wait(std::optional<std::uint64_t> cycles, std::optional<double> timeout_s) {
    const std::int64_t t0 = mono_ns();
    const std::int64_t limit =
        timeout_s ? t0 + static_cast<std::int64_t>(*timeout_s * 1e9) : INT64_MAX;
    for (;;) {
      if (done(cycles)) return true;
      const std::int64_t now = mono_ns();
      if (now >= limit) return false;
      const std::int64_t chunk_end = std::min(limit, now + kSignalCheckNs);
      {
        // Safe: polling atomics of the executive only.
        py::gil_scoped_release release;
        if (cycles) {
          while (!done(cycles) && mono_ns() < chunk_end) {
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
          }
        } else {
          (void)exec_->join(std::max<std::int64_t>(0, chunk_end - mono_ns()));
        }
      }
      if (PyErr_CheckSignals() != 0) throw py::error_already_set();
    }
  }

  bool join(std::optional<double> timeout_s) {
    exec_->request_stop();
    return wait(std::nullopt, timeout_s);
  }

  bool done(const std::optional<std::uint64_t>& cycles) const noexcept {
    if (exec_->finished()) return true;
    return cycles && exec_->iterations() >= *cycles;
  }

  py::object first_error() const {
    if (guts_->tier.first_error == nullptr) return py::none();
    return py::reinterpret_borrow<py::object>(guts_->tier.first_error);
  }
  std::int64_t first_error_cycle() const { return exec_->first_error_cycle(); }

  Executive& core() { return *exec_; }
  const py::object& stats_slot() const { return stats_slot_; }
  py::object rings() const { return guts_->rings_obj; }
  py::object datastore() const { return guts_->datastore_obj; }

 private:
  static void check_callable(const py::object& fn) {
    if (!PyCallable_Check(fn.ptr())) throw py::type_error("body must be callable");
  }

  // Fills the bus part of cfg; what keeps the memory mapped goes to guts_.
  void attach_bus(ExecutiveConfig& cfg, const py::object& rings, const py::object& datastore,
                  const py::object& agent_segment, std::int64_t agent_timeout_ns) {
    if (!rings.is_none()) {
      if (!py::isinstance<PyRingSet>(rings)) {
        throw py::type_error("rings must be a _core.bus.RingSet (StatsSlot.rings) or None, got " +
                             std::string(py::str(py::type::of(rings).attr("__name__"))));
      }
      const auto& rs = rings.cast<const PyRingSet&>();
      if (!rs.set.valid()) throw std::invalid_argument("rings: not a formatted ring set");
      guts_->ring_view = rs.set;
      guts_->rings_obj = rings;
      cfg.rings = &guts_->ring_view;
    }
    if (!datastore.is_none()) {
      // mxrc.bus.DataStore wraps the core object.
      py::object core = py::getattr(datastore, "_core_store", datastore);
      const py::object cls = py::module_::import("mxrc._core").attr("datastore").attr("DataStore");
      if (!py::isinstance(core, cls)) {
        throw py::type_error("datastore must be an mxrc.bus.DataStore (or its core) or None, got " +
                             std::string(py::str(py::type::of(datastore).attr("__name__"))));
      }
      // The core object holds the DataStore view (and keeps its region alive).
      cfg.datastore = reinterpret_cast<DataStore*>(core.attr("address").cast<std::uintptr_t>());
      guts_->datastore_obj = core;
    }
    if (agent_timeout_ns < 0) {
      throw py::value_error("agent_timeout_ns must be >= 0 (0 = no agent watchdog), got " +
                            std::to_string(agent_timeout_ns));
    }
    if (agent_timeout_ns > 0) {
      if (agent_segment.is_none()) {
        throw py::value_error(
            "agent_timeout_ns needs agent_segment: the agent's heartbeat is in the segment");
      }
      py::object core = py::getattr(agent_segment, "_core_segment", agent_segment);
      if (!py::isinstance<Segment>(core)) {
        throw py::type_error("agent_segment must be an mxrc.bus.Segment (or its core), got " +
                             std::string(py::str(py::type::of(agent_segment).attr("__name__"))));
      }
      const auto seg = core.cast<std::shared_ptr<Segment>>();
      const SegmentHeader* h = seg->raw_header();  // SegmentError when closed
      guts_->segment_keep = seg->keepalive();
      cfg.agent_heartbeat = &h->agent_heartbeat_ns;
      cfg.agent_timeout_ns = agent_timeout_ns;
    }
  }

  py::object stats_slot_;
  // Everything the cycle thread touches lives in `guts_`, so that it can be
  // leaked together with the executive when the last reference dies on the
  // cycle thread itself (see the destructor).
  struct Guts {
    py::object ctx_obj;
    PyTier tier;
    std::vector<std::unique_ptr<PyAction>> actions;
    std::vector<py::object> keep;
    // The bus: the ring set's view and handle, the data store's core object
    // (its view and region), the segment mapping holding the heartbeat word.
    RingSet ring_view{};
    py::object rings_obj = py::none();
    py::object datastore_obj = py::none();
    std::shared_ptr<void> segment_keep;
  };
  std::unique_ptr<Guts> guts_ = std::make_unique<Guts>();
  std::unique_ptr<Executive> exec_;  // destroyed (joined) before guts_
  bool needs_python_ = false;
};

}  // namespace

void register_cycle(py::module_& m) {
  m.attr("ABI_VERSION") = MXRC_ABI_VERSION;
  m.attr("API_SIZE") = sizeof(mxrc_api);
  m.attr("CTX_SIZE") = sizeof(mxrc_cycle_ctx);
  m.attr("EVENT_SIZE") = sizeof(mxrc_event);
  m.attr("SAFE_REASON_REQUESTED") = kSafeReasonRequested;
  m.attr("SAFE_REASON_BODY_ERROR") = kSafeReasonBodyError;
  m.attr("SAFE_REASON_AGENT") = kSafeReasonAgent;

  m.def(
      "dladdr",
      [](std::uintptr_t address) -> py::object {
        Dl_info info{};
        if (address == 0 || ::dladdr(reinterpret_cast<void*>(address), &info) == 0 ||
            info.dli_fname == nullptr) {
          return py::none();
        }
        return py::make_tuple(std::string(info.dli_fname),
                              info.dli_sname ? py::object(py::str(info.dli_sname)) : py::none());
      },
      py::arg("address"),
      "(shared object path, symbol name or None) holding address, or None when "
      "no loaded "
      "object contains it (e.g. a libffi closure made from a Python "
      "function).");

  py::class_<CycleContext>(m, "CycleContext", "The argument of a Python cycle body.")
      .def_property_readonly("cycle", [](const CycleContext& c) { return c.ctx.cycle; })
      .def_property_readonly("slot", [](const CycleContext& c) { return c.ctx.slot; })
      .def_property_readonly("every", [](const CycleContext& c) { return c.ctx.every; })
      .def_property_readonly("release_ns", [](const CycleContext& c) { return c.ctx.release_ns; })
      .def_property_readonly("wake_ns", [](const CycleContext& c) { return c.ctx.wake_ns; })
      .def_property_readonly("deadline_ns", [](const CycleContext& c) { return c.ctx.deadline_ns; })
      .def_property_readonly("period_ns", [](const CycleContext& c) { return c.ctx.period_ns; })
      .def_property_readonly("state",
                             [](const CycleContext& c) {
                               return c.executive ? static_cast<int>(c.executive->state()) : -1;
                             })
      .def_property_readonly(
          "simulated",
          [](const CycleContext& c) { return c.executive && c.executive->simulated(); },
          "True when the executive runs on a simulated (virtual) clock.")
      .def(
          "now_ns",
          [](const CycleContext& c) { return c.executive ? c.executive->clock_ns() : mono_ns(); },
          "The executive's clock now (ns): virtual on a simulated clock, else CLOCK_MONOTONIC.")
      .def(
          "sim_advance",
          [](const CycleContext& c, std::int64_t ns) {
            if (c.executive == nullptr) {
              throw std::runtime_error("sim_advance: the executive of this context is gone");
            }
            if (!c.executive->simulated()) {
              throw UnsupportedError(
                  "sim_advance: this executive runs on CLOCK_MONOTONIC; only an executive made "
                  "with clock='simulated' has a virtual clock to advance");
            }
            if (ns < 0) {
              throw py::value_error(
                  "sim_advance: ns must be >= 0 (virtual time only moves "
                  "forward), got " +
                  std::to_string(ns));
            }
            if (c.executive->sim_advance(ns) != 0) {
              throw py::value_error("sim_advance: advancing the virtual clock by " +
                                    std::to_string(ns) + " ns overflows it");
            }
          },
          py::arg("ns"),
          "Consume ns of virtual time (simulated clock only): the body ends that much later.")
      .def("request_stop",
           [](const CycleContext& c) {
             if (c.executive) c.executive->request_stop();
           })
      .def("request_safe_mode",
           [](const CycleContext& c) {
             if (c.executive) c.executive->enter_safe_mode();
           })
      .def("publish", &publish_from_python, py::arg("type"), py::arg("payload") = py::none(),
           py::kw_only(), py::arg("priority") = "NORMAL", py::arg("target_id") = "",
           py::arg("carrier") = py::none(),
           "Copy an event into this cycle thread's RT->agent ring (CRITICAL: the critical "
           "ring); True when queued, False when dropped by admission.")
      .def("poll_event", &poll_from_python,
           "The next agent->RT event or command (mxrc.bus.Event), or None.")
      .def_property_readonly(
          "has_bus",
          [](const CycleContext& c) { return c.executive != nullptr && c.executive->has_rings(); },
          "True when the executive has a ring set (publish/poll_event work).");

  py::class_<PyExecutive>(m, "Executive")
      .def(py::init([](py::object stats, const std::string& name, std::int64_t period_ns,
                       std::int64_t deadline_ns, int overrun, int on_error,
                       const std::string& thread_name, bool allow_sched_fallback, int clock,
                       const py::object& rings, const py::object& datastore,
                       const py::object& agent_segment, std::int64_t agent_timeout_ns,
                       const py::kwargs& setup) {
             return std::make_unique<PyExecutive>(std::move(stats), name, period_ns, deadline_ns,
                                                  overrun, on_error, thread_name,
                                                  allow_sched_fallback, clock, rings, datastore,
                                                  agent_segment, agent_timeout_ns, setup);
           }),
           py::arg("stats"), py::kw_only(), py::arg("name") = "main",
           py::arg("period_ns") = 1'000'000, py::arg("deadline_ns") = 0, py::arg("overrun") = 0,
           py::arg("on_error") = 0, py::arg("thread_name") = "",
           py::arg("allow_sched_fallback") = false, py::arg("clock") = 0,
           py::arg("rings") = py::none(), py::arg("datastore") = py::none(),
           py::arg("agent_segment") = py::none(), py::arg("agent_timeout_ns") = 0,
           "Executive(stats, *, name, period_ns, deadline_ns, overrun, on_error, thread_name, "
           "allow_sched_fallback, clock (0 monotonic, 1 simulated), rings (a _core.bus.RingSet), "
           "datastore (a _core.datastore.DataStore), agent_segment (a _core.bus.Segment), "
           "agent_timeout_ns (0 = no agent watchdog), **setup); setup: the thread-setup keywords "
           "(csrc/bindings/thread_setup_args.hpp)")
      .def("add_python_action", &PyExecutive::add_python_action, py::arg("fn"),
           py::arg("every") = 1, py::arg("offset") = 0)
      .def("add_native_action", &PyExecutive::add_native_action, py::arg("address"),
           py::arg("user_data") = 0, py::arg("every") = 1, py::arg("offset") = 0)
      .def("add_builtin_action", &PyExecutive::add_builtin_action, py::arg("kind"),
           py::arg("arg") = 0, py::arg("every") = 1, py::arg("offset") = 0)
      .def("set_safe_mode_python", &PyExecutive::set_safe_mode_python, py::arg("fn"))
      .def("set_safe_mode_native", &PyExecutive::set_safe_mode_native, py::arg("address"),
           py::arg("user_data") = 0)
      .def("add_init_hook", &PyExecutive::add_init_hook, py::arg("fn"))
      .def("start", &PyExecutive::start)
      .def("wait", &PyExecutive::wait, py::arg("cycles") = py::none(),
           py::arg("timeout_s") = py::none())
      .def("join", &PyExecutive::join, py::arg("timeout_s") = py::none(),
           "request_stop() then wait for the thread to end")
      .def("request_stop", [](PyExecutive& e) { e.core().request_stop(); })
      .def(
          "stop_after", [](PyExecutive& e, std::uint64_t n) { e.core().stop_after(n); },
          py::arg("cycles"))
      .def("pause", [](PyExecutive& e) { e.core().pause(); })
      .def("resume", [](PyExecutive& e) { e.core().resume(); })
      .def("enter_safe_mode", [](PyExecutive& e) { e.core().enter_safe_mode(); })
      .def("exit_safe_mode", [](PyExecutive& e) { e.core().exit_safe_mode(); })
      .def(
          "adjust_phase", [](PyExecutive& e, std::int64_t d) { e.core().adjust_phase(d); },
          py::arg("delta_ns"))
      .def_property_readonly("state",
                             [](PyExecutive& e) { return static_cast<int>(e.core().state()); })
      .def_property_readonly("tid", [](PyExecutive& e) { return e.core().tid(); })
      .def_property_readonly("iterations", [](PyExecutive& e) { return e.core().iterations(); })
      .def_property_readonly("body_errors", [](PyExecutive& e) { return e.core().body_errors(); })
      .def_property_readonly("first_error", &PyExecutive::first_error)
      .def_property_readonly("first_error_cycle", &PyExecutive::first_error_cycle)
      .def_property_readonly("first_error_code",
                             [](PyExecutive& e) { return e.core().first_error_code(); })
      .def_property_readonly("start_ns", [](PyExecutive& e) { return e.core().start_ns(); })
      .def_property_readonly("simulated", [](PyExecutive& e) { return e.core().simulated(); })
      .def_property_readonly("clock_ns", [](PyExecutive& e) { return e.core().clock_ns(); })
      .def_property_readonly("started", [](PyExecutive& e) { return e.core().started(); })
      .def_property_readonly("finished", [](PyExecutive& e) { return e.core().finished(); })
      .def_property_readonly("period_ns",
                             [](PyExecutive& e) { return e.core().config().period_ns; })
      .def_property_readonly("deadline_ns",
                             [](PyExecutive& e) { return e.core().config().deadline_ns; })
      .def_property_readonly("stats_slot", &PyExecutive::stats_slot)
      .def_property_readonly("rings", &PyExecutive::rings, "the _core.bus.RingSet, or None")
      .def_property_readonly("datastore", &PyExecutive::datastore,
                             "the _core.datastore.DataStore, or None")
      .def_property_readonly("agent_watchdog",
                             [](PyExecutive& e) { return e.core().agent_watchdog(); })
      .def_property_readonly("agent_timeout_ns",
                             [](PyExecutive& e) { return e.core().agent_timeout_ns(); })
      .def_property_readonly("safe_mode_reasons",
                             [](PyExecutive& e) { return e.core().safe_mode_reasons(); })
      .def_property_readonly("loop_events", [](PyExecutive& e) { return e.core().loop_events(); })
      .def_property_readonly("loop_events_dropped",
                             [](PyExecutive& e) { return e.core().loop_events_dropped(); });
}

}  // namespace mxrc::bindings
