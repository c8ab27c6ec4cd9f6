// mxrc._core.bus: the shared-memory segment, stats blocks, histograms, rings
// (rings.cpp) and the agent's heartbeat words.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <cstring>
#include <ctime>
#include <memory>
#include <string>
#include <thread>

#include "mxrc/histogram.hpp"
#include "mxrc/segment.hpp"
#include "mxrc/stats.hpp"
#include "register.hpp"
#include "rings.hpp"
#include "stats_slot.hpp"

namespace py = pybind11;

namespace mxrc::bindings {

namespace {

constexpr int kDefaultRetries = 64;

py::array_t<uint64_t> bucket_array(const HistogramSnapshot& h) {
  py::array_t<uint64_t> a(static_cast<py::ssize_t>(hist::kBucketCount));
  std::memcpy(a.mutable_data(), h.buckets, sizeof h.buckets);
  return a;
}

py::dict histogram_dict(const HistogramSnapshot& h) {
  py::dict d;
  d["count"] = h.count;
  d["sum"] = h.sum;
  d["min"] = h.min;
  d["max"] = h.max;
  d["overflow"] = h.overflow;
  d["buckets"] = bucket_array(h);
  return d;
}

py::dict snapshot_dict(const StatsSnapshot& s) {
  py::dict d;
  d["name"] = s.name;
  d["tid"] = s.tid;
  d["state"] = static_cast<int32_t>(s.state);
  d["period_ns"] = s.period_ns;
  d["deadline_ns"] = s.deadline_ns;
  d["start_ns"] = s.start_ns;
  d["heartbeat_ns"] = s.heartbeat_ns;
  d["skipped_release_count"] = s.skipped_release_count;
  d["body_error_count"] = s.body_error_count;
  d["minor_faults"] = s.minor_faults;
  d["involuntary_ctx_switches"] = s.involuntary_ctx_switches;
  d["cycle_count"] = s.cycle_count;
  d["deadline_miss_count"] = s.deadline_miss_count;
  d["consecutive_misses"] = s.consecutive_misses;
  d["max_consecutive_misses"] = s.max_consecutive_misses;
  d["gil_contended_cycles"] = s.gil_contended_cycles;
  d["wake_latency_n"] = s.wake_latency_n;
  d["wake_latency_mean_ns"] = s.wake_latency_mean_ns;
  d["wake_latency_m2"] = s.wake_latency_m2;
  d["wake_latency"] = histogram_dict(s.wake_latency);
  d["body_start_latency"] = histogram_dict(s.body_start_latency);
  d["exec_time"] = histogram_dict(s.exec_time);
  d["gil_wait"] = histogram_dict(s.gil_wait);
  d["torn"] = s.torn;
  d["retries"] = s.retries;
  return d;
}

py::dict read_dict(const StatsBlock* block, int max_retries) {
  // ~40 KB snapshot: kept off the (Python thread's) stack.
  auto snap = std::make_unique<StatsSnapshot>();
  {
    // Safe: read_stats only loads atomics of a block kept alive by the caller.
    py::gil_scoped_release nogil;
    *snap = read_stats(block, max_retries);
  }
  return snapshot_dict(*snap);
}

py::dict header_dict(const SegmentHeaderInfo& h) {
  py::dict d;
  d["magic"] = h.magic;
  d["layout_version"] = h.layout_version;
  d["header_size"] = h.header_size;
  d["total_size"] = h.total_size;
  d["generation"] = h.generation;
  d["epoch"] = h.epoch;
  d["created_realtime_ns"] = h.created_realtime_ns;
  d["wallclock_offset_ns"] = h.wallclock_offset_ns;
  d["owner_pid"] = h.owner_pid;
  d["max_stats"] = h.max_stats;
  d["stats_offset"] = h.stats_offset;
  d["stats_slot_size"] = h.stats_slot_size;
  d["agent_heartbeat_ns"] = h.agent_heartbeat_ns;
  d["agent_pid"] = h.agent_pid;
  d["agent_generation"] = h.agent_generation;
  d["critical_overflow"] = h.critical_overflow != 0;
  d["ring_sets_offset"] = h.ring_sets_offset;
  d["ring_set_size"] = h.ring_set_size;
  py::dict caps;
  for (uint32_t k = 0; k < kRingKinds; ++k) {
    caps[ring_kind_name(static_cast<RingKind>(k))] = h.ring_capacities.of(static_cast<RingKind>(k));
  }
  d["ring_capacities"] = caps;
  d["datastore_offset"] = h.datastore_offset;
  d["datastore_bytes"] = h.datastore_bytes;
  d["datastore_slots"] = h.datastore_slots;
  return d;
}

py::dict agent_dict(const AgentHeartbeat& a) {
  py::dict d;
  d["heartbeat_ns"] = a.heartbeat_ns;
  d["pid"] = a.pid;
  d["generation"] = a.generation;
  return d;
}

// A region of a segment's mapping, exposed through the buffer protocol
// (memoryview(region), numpy.frombuffer(region)); keeps the mapping alive.
struct PyRegion {
  std::shared_ptr<void> keepalive;
  void* data;
  std::size_t size;
};

StatsSlot slot_with_rings(const Segment& seg, std::shared_ptr<void> keepalive, StatsBlock* block) {
  StatsSlot slot{std::move(keepalive), block};
  const int index = seg.slot_index_of(block);
  if (index >= 0) slot.rings = seg.ring_set(static_cast<uint32_t>(index));
  return slot;
}

StatsSlot make_private(const std::string& name) {
  if (name.size() > kStatsNameMax) {
    throw std::invalid_argument("stats name longer than " + std::to_string(kStatsNameMax) +
                                " bytes: '" + name + "'");
  }
  std::shared_ptr<StatsBlock> b(new StatsBlock());  // value-initialised: zero
  reset_stats_block(b.get(), name.c_str());
  StatsSlot slot{b, b.get()};
  return slot;
}

// A standalone histogram (tests, benchmarks).
struct PyHistogram {
  std::unique_ptr<Histogram> h{new Histogram()};
  PyHistogram() { h->reset(); }
};

struct PyStatsWriter {
  explicit PyStatsWriter(StatsSlot s) : slot(std::move(s)), writer(slot.block) {}
  StatsSlot slot;
  StatsWriter writer;
};

// Test-only: a C++ thread writing n synthetic samples into a block, sample
// i (1-based) with wake latency i ns, body start 2i, exec time 3i, GIL wait
// 4i, a miss every 7th cycle. A consistent snapshot of c cycles therefore
// has sums c(c+1)/2 * (1, 2, 3, 4) and c/7 misses.
class TestWriter {
 public:
  TestWriter(StatsSlot slot, uint64_t n, int64_t pause_ns)
      : slot_(std::move(slot)), n_(n), pause_ns_(pause_ns) {
    thread_ = std::thread([this] { run(); });
  }
  ~TestWriter() { join(); }
  void join() {
    if (thread_.joinable()) {
      // Safe: the writer thread never touches Python.
      py::gil_scoped_release nogil;
      thread_.join();
    }
  }
  bool done() const { return done_.load(std::memory_order_acquire); }

 private:
  void run() noexcept {
    StatsWriter w(slot_.block);
    w.begin(1000, 1000, 0, 0);
    w.set_state(RtState::Running);
    for (uint64_t i = 1; i <= n_; ++i) {
      const auto k = static_cast<int64_t>(i);
      const int64_t release = k * 1000;
      CycleSample s{release, release + k, release + 2 * k, release + 5 * k, 4 * k, i % 7 == 0};
      w.record(s);
      if (pause_ns_ > 0) {
        timespec ts{0, pause_ns_};
        nanosleep(&ts, nullptr);
      }
    }
    w.set_state(RtState::Shutdown);
    done_.store(true, std::memory_order_release);
  }
  StatsSlot slot_;
  uint64_t n_;
  long pause_ns_;
  std::atomic<bool> done_{false};
  std::thread thread_;
};

// Test-only: read a block `reads` times; count consistent, torn and
// inconsistent (not torn but violating TestWriter's invariants) snapshots.
py::dict check_test_writer(const StatsSlot& slot, int reads, int max_retries) {
  uint64_t consistent = 0, torn = 0, inconsistent = 0, last_count = 0, regressions = 0;
  uint64_t changes = 0;  // consistent reads that saw a new cycle count
  {
    // Safe: only atomics of a block held alive by `slot` are read.
    py::gil_scoped_release nogil;
    auto snap = std::make_unique<StatsSnapshot>();
    for (int r = 0; r < reads; ++r) {
      *snap = read_stats(slot.block, max_retries);
      if (snap->torn) {
        ++torn;
        continue;
      }
      const uint64_t c = snap->cycle_count;
      const uint64_t tri = c * (c + 1) / 2;
      uint64_t bucket_total = 0;
      for (uint64_t b : snap->wake_latency.buckets) bucket_total += b;
      bool ok = snap->wake_latency.count == c && snap->body_start_latency.count == c &&
                snap->exec_time.count == c && snap->gil_wait.count == c && bucket_total == c &&
                snap->wake_latency.sum == tri && snap->body_start_latency.sum == 2 * tri &&
                snap->exec_time.sum == 3 * tri && snap->gil_wait.sum == 4 * tri &&
                snap->deadline_miss_count == c / 7 && snap->wake_latency_n == c &&
                (c == 0 || snap->wake_latency.max == c);
      if (ok) {
        ++consistent;
        if (c != last_count) ++changes;
      } else {
        ++inconsistent;
      }
      if (c < last_count) ++regressions;
      last_count = c;
    }
  }
  py::dict d;
  d["consistent"] = consistent;
  d["torn"] = torn;
  d["inconsistent"] = inconsistent;
  d["regressions"] = regressions;
  d["changes"] = changes;
  return d;
}

py::dict slot_info_dict(const SlotInfo& s) {
  py::dict d;
  d["index"] = s.index;
  d["state"] = slot_state_name(s.state);
  d["name"] = s.name;
  d["claimer_pid"] = s.claimer_pid;
  d["claim_count"] = s.claim_count;
  return d;
}

}  // namespace

void register_bus(py::module_& m) {
  register_rings(m);
  m.attr("LAYOUT_VERSION") = kSegmentLayoutVersion;
  m.attr("DEFAULT_DATASTORE_REGION_BYTES") = kDefaultDatastoreRegionBytes;
  m.attr("MAX_DATASTORE_REGION_BYTES") = kMaxDatastoreRegionBytes;
  m.attr("SEGMENT_HEADER_SIZE") = sizeof(SegmentHeader);
  m.attr("MAGIC") = kSegmentMagic;
  m.attr("DEFAULT_MAX_STATS") = kDefaultMaxStats;
  m.attr("STATS_NAME_MAX") = kStatsNameMax;
  m.attr("BUCKET_COUNT") = hist::kBucketCount;
  m.attr("MAX_TRACKABLE_NS") = hist::kMaxTrackable;
  m.attr("GIL_CONTENDED_NS") = kGilContendedNs;
  m.attr("STATS_BLOCK_SIZE") = sizeof(StatsBlock);

  m.def("bucket_index", [](uint64_t v) {
    if (v > hist::kMaxTrackable) throw std::invalid_argument("value above MAX_TRACKABLE_NS");
    return hist::bucket_index(v);
  });
  m.def("bucket_lower", [](std::size_t i) {
    if (i >= hist::kBucketCount) throw py::index_error("bucket index out of range");
    return hist::bucket_lower(i);
  });
  m.def("bucket_upper", [](std::size_t i) {
    if (i >= hist::kBucketCount) throw py::index_error("bucket index out of range");
    return hist::bucket_upper(i);
  });
  m.def(
      "bucket_bounds",
      [] {
        py::array_t<uint64_t> lo(static_cast<py::ssize_t>(hist::kBucketCount));
        py::array_t<uint64_t> hi(static_cast<py::ssize_t>(hist::kBucketCount));
        auto* l = lo.mutable_data();
        auto* h = hi.mutable_data();
        for (std::size_t i = 0; i < hist::kBucketCount; ++i) {
          l[i] = hist::bucket_lower(i);
          h[i] = hist::bucket_upper(i);
        }
        return py::make_tuple(lo, hi);
      },
      "(lower, upper) inclusive value bounds of every bucket, as uint64 arrays");

  py::class_<PyHistogram>(m, "Histogram", "a standalone histogram (same layout as the stats')")
      .def(py::init<>())
      .def("record", [](PyHistogram& self, uint64_t v) { self.h->record(v); })
      .def("record_many",
           [](PyHistogram& self,
              const py::array_t<uint64_t, py::array::c_style | py::array::forcecast>& values) {
             const uint64_t* p = values.data();
             const auto n = values.size();
             for (py::ssize_t i = 0; i < n; ++i) self.h->record(p[i]);
           })
      .def("reset", [](PyHistogram& self) { self.h->reset(); })
      .def("snapshot", [](const PyHistogram& self) {
        auto snap = std::make_unique<HistogramSnapshot>();
        snap->load_from(*self.h);
        return histogram_dict(*snap);
      });

  py::class_<StatsSlot>(m, "StatsSlot", "a stats block and what keeps it alive")
      .def_property_readonly("name",
                             [](const StatsSlot& s) {
                               char name[kStatsNameMax + 1];
                               for (std::size_t i = 0; i <= kStatsNameMax; ++i) {
                                 name[i] = s.block->name[i].load(std::memory_order_acquire);
                               }
                               name[kStatsNameMax] = '\0';
                               return std::string(name);
                             })
      .def_property_readonly(
          "state",
          [](const StatsSlot& s) { return s.block->state.load(std::memory_order_acquire); })
      .def_property_readonly(
          "heartbeat_ns",
          [](const StatsSlot& s) { return s.block->heartbeat_ns.load(std::memory_order_acquire); })
      .def_property_readonly(
          "address", [](const StatsSlot& s) { return reinterpret_cast<uintptr_t>(s.block); })
      .def_property_readonly(
          "rings",
          [](const StatsSlot& s) -> py::object {
            if (!s.rings.valid()) return py::none();
            return py::cast(PyRingSet{s.keepalive, s.rings});
          },
          "the slot's ring set in the segment, or None for a standalone block")
      .def(
          "read",
          [](const StatsSlot& s, int max_retries) { return read_dict(s.block, max_retries); },
          py::arg("max_retries") = kDefaultRetries, "copy of the block (dict; torn flag)");

  m.def("private_stats", &make_private, py::arg("name"),
        "a standalone zeroed stats block (for executives without a segment)");

  py::class_<PyRegion>(m, "Region", py::buffer_protocol(),
                       "a writable region of a segment (buffer protocol); keeps it mapped")
      .def_buffer([](PyRegion& r) {
        return py::buffer_info(r.data, 1, py::format_descriptor<uint8_t>::format(), 1,
                               {static_cast<py::ssize_t>(r.size)}, {py::ssize_t{1}});
      })
      .def_property_readonly("address",
                             [](const PyRegion& r) { return reinterpret_cast<uintptr_t>(r.data); })
      .def_property_readonly("size", [](const PyRegion& r) { return r.size; })
      .def("__len__", [](const PyRegion& r) { return r.size; });

  const RingCapacities default_caps;
  py::class_<Segment, std::shared_ptr<Segment>>(m, "Segment")
      .def_static(
          "create",
          [](const std::string& instance, uint32_t max_stats, uint32_t log_ring_capacity,
             uint32_t span_ring_capacity, uint32_t event_ring_capacity,
             uint32_t critical_ring_capacity, uint32_t command_ring_capacity,
             uint64_t datastore_region_bytes, uint32_t datastore_slots) {
            SegmentOptions o;
            o.max_stats = max_stats;
            o.rings.log = log_ring_capacity;
            o.rings.span = span_ring_capacity;
            o.rings.event = event_ring_capacity;
            o.rings.critical = critical_ring_capacity;
            o.rings.command = command_ring_capacity;
            o.datastore_region_bytes = datastore_region_bytes;
            o.datastore_slots = datastore_slots;
            return Segment::create(instance, o);
          },
          py::arg("instance"), py::arg("max_stats") = kDefaultMaxStats,
          py::arg("log_ring_capacity") = default_caps.log,
          py::arg("span_ring_capacity") = default_caps.span,
          py::arg("event_ring_capacity") = default_caps.event,
          py::arg("critical_ring_capacity") = default_caps.critical,
          py::arg("command_ring_capacity") = default_caps.command,
          py::arg("datastore_region_bytes") = kDefaultDatastoreRegionBytes,
          py::arg("datastore_slots") = SegmentOptions{}.datastore_slots)
      .def_static("attach", &Segment::attach, py::arg("instance"))
      .def_static("remove", &Segment::remove, py::arg("instance"), py::arg("force") = false)
      .def_static("unlink", &Segment::remove, py::arg("instance"), py::arg("force") = false,
                  "alias of remove()")
      .def_static("path", &segment_path, py::arg("instance"))
      .def_static("validate_instance_name", &validate_instance_name, py::arg("instance"))
      .def("close", &Segment::close)
      .def_property_readonly("closed", &Segment::closed)
      .def_property_readonly("is_owner", &Segment::is_owner)
      .def_property_readonly("instance", &Segment::instance)
      .def("header", [](const Segment& s) { return header_dict(s.header()); })
      .def("owner_alive", &Segment::owner_alive)
      .def("refresh_wallclock_offset", &Segment::refresh_wallclock_offset)
      .def("bump_generation", &Segment::bump_generation)
      .def(
          "claim_stats",
          [](Segment& s, const std::string& name) {
            std::shared_ptr<StatsBlock> b = s.claim_stats(name);
            return slot_with_rings(s, b, b.get());
          },
          py::arg("name"))
      .def("slots",
           [](const Segment& s) {
             py::list out;
             for (const auto& i : s.slots()) out.append(slot_info_dict(i));
             return out;
           })
      .def(
          "stats_slot",
          [](const Segment& s, const std::string& name) -> py::object {
            const StatsBlock* b = s.find_stats(name);
            if (!b) return py::none();
            // Read-only use: the slot handle keeps the mapping, not a claim.
            return py::cast(slot_with_rings(s, s.keepalive(), const_cast<StatsBlock*>(b)));
          },
          py::arg("name"), "a reading handle on the claimed/released block `name`, or None")
      .def("find_slot", &Segment::find_slot, py::arg("name"))
      .def(
          "ring_set",
          [](const Segment& s, uint32_t index) {
            return PyRingSet{s.keepalive(), s.ring_set(index)};
          },
          py::arg("slot_index"))
      .def(
          "rings",
          [](const Segment& s, const std::string& name) -> py::object {
            const int i = s.find_slot(name);
            if (i < 0) return py::none();
            return py::cast(PyRingSet{s.keepalive(), s.ring_set(static_cast<uint32_t>(i))});
          },
          py::arg("name"), "the ring set of the claimed/released slot `name`, or None")
      .def("datastore_region",
           [](const Segment& s) {
             const SegmentRegion r = s.datastore_region();
             return PyRegion{s.keepalive(), r.data, r.size};
           })
      .def_property_readonly("critical_overflow", &Segment::critical_overflow)
      .def("clear_critical_overflow", &Segment::clear_critical_overflow)
      .def("agent_heartbeat", [](const Segment& s) { return agent_dict(s.agent_heartbeat()); })
      .def("attach_agent", &Segment::attach_agent)
      .def("beat_agent", &Segment::beat_agent, py::arg("now_ns") = 0)
      .def("detach_agent", &Segment::detach_agent);

  // Test-only: StatsWriter driven from Python (holds the slot alive).
  py::class_<PyStatsWriter>(m, "_StatsWriter")
      .def(py::init<StatsSlot>(), py::arg("slot"))
      .def("begin", [](PyStatsWriter& w, int64_t period_ns, int64_t deadline_ns, int32_t tid,
                       int64_t start_ns) { w.writer.begin(period_ns, deadline_ns, tid, start_ns); })
      .def(
          "record",
          [](PyStatsWriter& w, int64_t release_ns, int64_t wake_ns, int64_t body_start_ns,
             int64_t body_end_ns, int64_t gil_wait_ns, bool deadline_missed) {
            w.writer.record(CycleSample{release_ns, wake_ns, body_start_ns, body_end_ns,
                                        gil_wait_ns, deadline_missed});
          },
          py::arg("release_ns"), py::arg("wake_ns"), py::arg("body_start_ns"),
          py::arg("body_end_ns"), py::arg("gil_wait_ns") = -1, py::arg("deadline_missed") = false)
      .def("heartbeat", [](PyStatsWriter& w, int64_t now_ns) { w.writer.heartbeat(now_ns); })
      .def("set_state",
           [](PyStatsWriter& w, int32_t state) { w.writer.set_state(static_cast<RtState>(state)); })
      .def("add_skipped_releases",
           [](PyStatsWriter& w, uint64_t n) { w.writer.add_skipped_releases(n); })
      .def("add_body_error", [](PyStatsWriter& w) { w.writer.add_body_error(); })
      .def("sample_rusage", [](PyStatsWriter& w) { w.writer.sample_rusage(); });

  m.def(
      "_start_test_writer",
      [](const StatsSlot& slot, uint64_t n, int64_t pause_ns) {
        return std::make_unique<TestWriter>(slot, n, pause_ns);
      },
      py::arg("slot"), py::arg("n"), py::arg("pause_ns") = 0);
  py::class_<TestWriter>(m, "_TestWriter")
      .def("join", &TestWriter::join)
      .def_property_readonly("done", &TestWriter::done);
  m.def("_check_test_writer", &check_test_writer, py::arg("slot"), py::arg("reads"),
        py::arg("max_retries") = kDefaultRetries);
}

}  // namespace mxrc::bindings
