// mxrc._core.bus: Ring, RingSet and test-only stress helpers.
#include "rings.hpp"

#include <pybind11/stl.h>
#include <sched.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "mxrc/segment.hpp"

namespace py = pybind11;

namespace mxrc::bindings {

namespace {

constexpr std::chrono::milliseconds kLockTimeout{2000};

[[noreturn]] void throw_busy(const PyRing& r, const char* side, int32_t pid) {
  throw SegmentError(r.name + " is busy: process " + std::to_string(pid) + " kept its " + side +
                     " side for " + std::to_string(kLockTimeout.count()) + " ms (one non-RT " +
                     side + " at a time)");
}

int check_priority(const py::object& priority) {
  if (priority.is_none()) return -1;
  const int p = priority.cast<int>();
  if (p < 0 || p >= kPriorityCount) {
    throw py::value_error("priority must be 0 (CRITICAL), 1 (HIGH), 2 (NORMAL) or 3 (LOW), got " +
                          std::to_string(p));
  }
  return p;
}

std::string_view bytes_view(const py::buffer& data, py::buffer_info& info) {
  info = data.request();
  if (info.ndim > 1 || (info.ndim == 1 && info.strides[0] != info.itemsize)) {
    throw py::value_error("a record must be contiguous bytes");
  }
  return {static_cast<const char*>(info.ptr), static_cast<std::size_t>(info.size * info.itemsize)};
}

void check_len(const PyRing& r, std::size_t len) {
  if (len > r.ring.record_size()) {
    throw py::value_error("record of " + std::to_string(len) + " bytes does not fit the " + r.name +
                          ": at most " + std::to_string(r.ring.record_size()) + " bytes");
  }
}

// push under the producer lock; true if queued, false if dropped.
bool push(PyRing& r, const py::buffer& data, const py::object& priority) {
  const int prio = check_priority(priority);
  py::buffer_info info;
  const std::string_view rec = bytes_view(data, info);
  check_len(r, rec.size());
  RingSideLock lock(r.ring, RingSideLock::Producer);
  if (!lock.lock(kLockTimeout)) throw_busy(r, "producer", lock.holder_pid());
  const int rc = prio < 0 ? r.ring.try_push(rec.data(), rec.size())
                          : r.ring.try_push_admitted(rec.data(), rec.size(), prio);
  return rc == 0;
}

// Pops up to `max` records under the consumer lock.
std::vector<std::string> pop_records(PyRing& r, std::size_t max) {
  std::vector<std::string> out;
  std::vector<char> buf(r.ring.record_size());
  RingSideLock lock(r.ring, RingSideLock::Consumer);
  if (!lock.lock(kLockTimeout)) throw_busy(r, "consumer", lock.holder_pid());
  while (out.size() < max) {
    std::size_t len = 0;
    if (r.ring.try_pop(buf.data(), buf.size(), &len) != 0) break;
    out.emplace_back(buf.data(), len);
  }
  return out;
}

py::dict counters_dict(const RingCounters& c) {
  py::dict d;
  d["capacity"] = c.capacity;
  d["record_size"] = c.record_size;
  d["pushed"] = c.pushed;
  d["accepted"] = c.accepted;
  d["dropped"] = c.dropped;
  d["popped"] = c.popped;
  d["size"] = c.size;
  py::list by_prio;
  for (uint64_t v : c.dropped_by_priority) by_prio.append(v);
  d["dropped_by_priority"] = by_prio;
  d["overflowed"] = c.overflowed;
  return d;
}

PyRing ring_of(const PyRingSet& s, RingKind k) {
  PyRing r;
  r.keepalive = s.keepalive;
  r.ring = s.set.ring(k);
  r.name =
      std::string(ring_kind_name(k)) + " ring of stats slot " + std::to_string(s.set.slot_index());
  return r;
}

RingKind kind_of(const std::string& name) {
  for (uint32_t i = 0; i < kRingKinds; ++i) {
    if (name == ring_kind_name(static_cast<RingKind>(i))) return static_cast<RingKind>(i);
  }
  throw py::key_error("no ring named '" + name +
                      "': expected one of log, span, event, critical, command");
}

// A ring in process memory (tests, benchmarks).
PyRing private_ring(uint32_t capacity, uint32_t record_size) {
  const std::size_t bytes = ring_bytes(capacity, record_size);
  void* mem = std::aligned_alloc(64, bytes);
  if (!mem) throw std::bad_alloc();
  std::shared_ptr<void> owner(mem, [](void* p) { std::free(p); });
  PyRing r;
  r.ring = SpscRing::format(mem, capacity, record_size);
  r.keepalive = std::move(owner);
  r.name = "private ring";
  return r;
}

// ---------------------------------------------------------------- stress (test-only)

uint64_t splitmix(uint64_t x) noexcept {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// Record `seq` of a stress run: 16..record_size bytes; bytes 0-7 seq, 8-15 an
// FNV-1a checksum of the rest, then bytes derived from seq.
std::size_t stress_record(uint64_t seq, uint32_t record_size, unsigned char* out) noexcept {
  const std::size_t len = 16 + splitmix(seq) % (record_size - 16 + 1);
  uint64_t x = splitmix(seq ^ 0xA5A5A5A5A5A5A5A5ULL);
  for (std::size_t i = 16; i < len; ++i) {
    if ((i & 7) == 0) x = splitmix(x);
    out[i] = static_cast<unsigned char>(x >> ((i & 7) * 8));
  }
  uint64_t h = 0xcbf29ce484222325ULL;
  for (std::size_t i = 16; i < len; ++i) h = (h ^ out[i]) * 0x100000001b3ULL;
  std::memcpy(out, &seq, 8);
  std::memcpy(out + 8, &h, 8);
  return len;
}

int64_t now_ns() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

py::dict stress_produce(PyRing& r, uint64_t n, bool admission, int64_t spin_ns) {
  if (r.ring.record_size() < 16) throw py::value_error("stress records need >= 16 bytes");
  uint64_t accepted = 0, dropped = 0;
  uint64_t dropped_prio[kPriorityCount] = {0, 0, 0, 0};
  {
    // Safe: only the ring's atomics, kept mapped by r.keepalive, are touched.
    py::gil_scoped_release nogil;
    std::vector<unsigned char> buf(r.ring.record_size());
    for (uint64_t seq = 0; seq < n; ++seq) {
      const std::size_t len = stress_record(seq, r.ring.record_size(), buf.data());
      const int prio = static_cast<int>(seq % kPriorityCount);
      const int rc = admission ? r.ring.try_push_admitted(buf.data(), len, prio)
                               : r.ring.try_push(buf.data(), len);
      if (rc == 0) {
        ++accepted;
      } else {
        ++dropped;
        if (admission) ++dropped_prio[prio];
      }
      if (spin_ns > 0) {
        // Busy (not sleeping): a slower producer lets the consumer empty the ring.
        const int64_t until = now_ns() + spin_ns;
        while (now_ns() < until) {
        }
      }
    }
  }
  py::dict d;
  d["attempted"] = n;
  d["accepted"] = accepted;
  d["dropped"] = dropped;
  py::list by_prio;
  for (uint64_t v : dropped_prio) by_prio.append(v);
  d["dropped_by_priority"] = by_prio;
  return d;
}

// Pops on its own thread until stopped and drained, checking every record.
class StressConsumer {
 public:
  explicit StressConsumer(PyRing r) : r_(std::move(r)) {
    if (r_.ring.record_size() < 16) throw py::value_error("stress records need >= 16 bytes");
    thread_ = std::thread([this] { run(); });
  }
  ~StressConsumer() {
    stop_.store(true, std::memory_order_release);
    if (thread_.joinable()) thread_.join();
  }
  void stop() { stop_.store(true, std::memory_order_release); }
  py::dict join() {
    stop();
    if (thread_.joinable()) {
      // Safe: the consumer thread never touches Python.
      py::gil_scoped_release nogil;
      thread_.join();
    }
    py::dict d;
    d["popped"] = popped_;
    d["corrupt"] = corrupt_;
    d["out_of_order"] = out_of_order_;  // seq not above the previous one (reorder or duplicate)
    d["gaps"] = gaps_;                  // records missing between the ones seen
    d["first_seq"] = first_seq_;
    d["last_seq"] = last_seq_;
    return d;
  }

 private:
  void run() noexcept {
    const uint32_t rs = r_.ring.record_size();
    std::vector<unsigned char> got(rs), want(rs);
    for (;;) {
      // Read before the pop: the producer finished before stop(), so an
      // empty ring seen after it means everything was drained.
      const bool stopping = stop_.load(std::memory_order_acquire);
      std::size_t len = 0;
      if (r_.ring.try_pop(got.data(), got.size(), &len) != 0) {
        if (stopping) return;
        sched_yield();
        continue;
      }
      ++popped_;
      uint64_t seq = 0;
      std::memcpy(&seq, got.data(), 8);
      const std::size_t want_len = stress_record(seq, rs, want.data());
      if (len != want_len || std::memcmp(got.data(), want.data(), len) != 0) {
        ++corrupt_;
        continue;
      }
      if (!seen_any_) {
        seen_any_ = true;
        first_seq_ = seq;
        gaps_ += seq;
      } else if (seq <= last_seq_) {
        ++out_of_order_;
        continue;
      } else {
        gaps_ += seq - last_seq_ - 1;
      }
      last_seq_ = seq;
    }
  }

  PyRing r_;
  std::atomic<bool> stop_{false};
  uint64_t popped_ = 0, corrupt_ = 0, out_of_order_ = 0, gaps_ = 0;
  uint64_t first_seq_ = 0, last_seq_ = 0;
  bool seen_any_ = false;
  std::thread thread_;
};

}  // namespace

void register_rings(py::module_& m) {
  m.attr("RING_KINDS") = py::make_tuple("log", "span", "event", "critical", "command");
  py::dict sizes;
  for (uint32_t i = 0; i < kRingKinds; ++i) {
    sizes[ring_kind_name(static_cast<RingKind>(i))] = kRingRecordSize[i];
  }
  m.attr("RING_RECORD_SIZES") = sizes;
  m.attr("RING_MIN_CAPACITY") = kRingMinCapacity;
  m.attr("RING_MAX_CAPACITY") = kRingMaxCapacity;
  m.attr("RING_HEADER_SIZE") = sizeof(RingHeader);

  m.def("ring_bytes", &ring_bytes, py::arg("capacity"), py::arg("record_size"),
        "bytes of a ring of this geometry (header + slots, a multiple of 64)");
  m.def("ring_admits", &ring_admits, py::arg("fill"), py::arg("capacity"), py::arg("priority"),
        "whether a ring with `fill` records leaves room for a record of this priority");

  py::class_<PyRing>(m, "Ring", "one SPSC ring of fixed-size records in shared memory")
      .def_property_readonly("name", [](const PyRing& r) { return r.name; })
      .def_property_readonly("capacity", [](const PyRing& r) { return r.ring.capacity(); })
      .def_property_readonly("record_size", [](const PyRing& r) { return r.ring.record_size(); })
      .def_property_readonly(
          "address", [](const PyRing& r) { return reinterpret_cast<uintptr_t>(r.ring.header()); })
      .def("size", [](const PyRing& r) { return r.ring.size(); })
      .def("push", &push, py::arg("data"), py::arg("priority") = py::none(),
           "copy a record in (non-RT producers serialised); False when dropped")
      .def(
          "pop",
          [](PyRing& r) -> py::object {
            auto recs = pop_records(r, 1);
            if (recs.empty()) return py::none();
            return py::bytes(recs[0]);
          },
          "the oldest record, or None when empty (non-RT consumers serialised)")
      .def(
          "pop_many",
          [](PyRing& r, std::size_t max) {
            py::list out;
            for (const auto& rec : pop_records(r, max)) out.append(py::bytes(rec));
            return out;
          },
          py::arg("max"), "up to `max` records, oldest first")
      .def("counters", [](const PyRing& r) { return counters_dict(r.ring.counters()); })
      .def_property_readonly("overflowed", [](const PyRing& r) { return r.ring.overflowed(); })
      .def("clear_overflow", [](PyRing& r) { r.ring.clear_overflow(); });

  py::class_<PyRingSet>(m, "RingSet", "the rings of one cycle thread (one per stats slot)")
      .def_property_readonly("slot_index", [](const PyRingSet& s) { return s.set.slot_index(); })
      .def(
          "ring",
          [](const PyRingSet& s, const std::string& name) { return ring_of(s, kind_of(name)); },
          py::arg("name"))
      .def_property_readonly("log", [](const PyRingSet& s) { return ring_of(s, RingKind::Log); })
      .def_property_readonly("span", [](const PyRingSet& s) { return ring_of(s, RingKind::Span); })
      .def_property_readonly("event",
                             [](const PyRingSet& s) { return ring_of(s, RingKind::Event); })
      .def_property_readonly("critical",
                             [](const PyRingSet& s) { return ring_of(s, RingKind::Critical); })
      .def_property_readonly("command",
                             [](const PyRingSet& s) { return ring_of(s, RingKind::Command); })
      .def(
          "publish_event",
          [](PyRingSet& s, const py::buffer& data, int priority) {
            check_priority(py::int_(priority));
            PyRing r = ring_of(s, priority == 0 ? RingKind::Critical : RingKind::Event);
            py::buffer_info info;
            const std::string_view rec = bytes_view(data, info);
            check_len(r, rec.size());
            RingSideLock lock(r.ring, RingSideLock::Producer);
            if (!lock.lock(kLockTimeout)) throw_busy(r, "producer", lock.holder_pid());
            return s.set.publish_event(rec.data(), rec.size(), priority) == 0;
          },
          py::arg("data"), py::arg("priority"),
          "RT -> agent event: CRITICAL to the critical ring (overflow sets the sticky flags), "
          "others to the event ring with admission; False when dropped")
      .def(
          "poll_command",
          [](PyRingSet& s) -> py::object {
            PyRing r = ring_of(s, RingKind::Command);
            auto recs = pop_records(r, 1);
            if (recs.empty()) return py::none();
            return py::bytes(recs[0]);
          },
          "agent -> RT: the next command record, or None")
      .def_property_readonly("critical_overflow",
                             [](const PyRingSet& s) { return s.set.critical_overflow(); })
      .def("clear_critical_overflow", [](PyRingSet& s) { s.set.clear_critical_overflow(); })
      .def("counters", [](const PyRingSet& s) {
        py::dict d;
        for (uint32_t i = 0; i < kRingKinds; ++i) {
          const auto k = static_cast<RingKind>(i);
          d[ring_kind_name(k)] = counters_dict(s.set.ring(k).counters());
        }
        return d;
      });

  m.def("_private_ring", &private_ring, py::arg("capacity"), py::arg("record_size"),
        "a ring in process memory (tests, benchmarks)");
  m.def("_ring_stress_produce", &stress_produce, py::arg("ring"), py::arg("n"),
        py::arg("admission") = false, py::arg("spin_ns") = 0,
        "test-only: push n checksummed records at full speed (or spin_ns apart) from this "
        "thread (GIL released), as the ring's only producer");
  py::class_<StressConsumer>(m, "_RingStressConsumer")
      .def(py::init<PyRing>(), py::arg("ring"))
      .def("stop", &StressConsumer::stop)
      .def("join", &StressConsumer::join);
}

}  // namespace mxrc::bindings
