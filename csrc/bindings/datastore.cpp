// mxrc._core.datastore: the data store (typed slots with per-slot versions)
// over any memory region, its C-table functions, and test-only threads.
#include "mxrc/datastore.hpp"

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "buffer.hpp"
#include "register.hpp"

namespace py = pybind11;

namespace mxrc::bindings {

namespace {

using Kind = DataStoreError::Kind;

// A data store view plus what keeps its memory alive.
struct PyDataStore {
  std::shared_ptr<void> keepalive;
  DataStore ds;
  std::size_t region_size = 0;
};

// Shared ownership of a Python object that may be dropped on any thread.
template <typename T>
std::shared_ptr<void> hold_python(T* p) {
  return std::shared_ptr<void>(p, [](void* q) {
    if (!Py_IsInitialized()) return;  // interpreter gone: leak rather than crash
    py::gil_scoped_acquire gil;
    delete static_cast<T*>(q);
  });
}

int64_t to_ns(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) {
    throw std::invalid_argument("timeout must be a finite number of seconds >= 0, got " +
                                std::to_string(seconds));
  }
  const double ns = seconds * 1e9;
  return ns > 9e18 ? static_cast<int64_t>(9e18) : static_cast<int64_t>(ns);
}

std::string describe(const DataStore& ds, int32_t index) {
  try {
    const DsSlotInfo i = ds.slot_info(index);
    return "data store slot '" + i.name + "' (index " + std::to_string(index) + ")";
  } catch (const DataStoreError&) {
    return "data store slot index " + std::to_string(index);
  }
}

int32_t writer_of(const DataStore& ds, int32_t index) {
  try {
    return ds.slot_info(index).writer_pid;
  } catch (const DataStoreError&) {
    return 0;
  }
}

void check_index(const DataStore& ds, int32_t index) {
  if (!ds.slot_type(index, nullptr, nullptr)) {
    throw DataStoreError(Kind::NotFound, "data store has no slot index " + std::to_string(index) +
                                             " (" + std::to_string(ds.slot_count()) + " defined)");
  }
}

[[noreturn]] void raise_busy(const DataStore& ds, int32_t index, double timeout_s) {
  throw DataStoreError(Kind::Busy, describe(ds, index) + " is held by another writer (pid " +
                                       std::to_string(writer_of(ds, index)) + ") for more than " +
                                       std::to_string(timeout_s) + " s");
}

[[noreturn]] void raise_torn(const DataStore& ds, int32_t index, double timeout_s) {
  throw DataStoreError(Kind::Torn, describe(ds, index) + ": a write (pid " +
                                       std::to_string(writer_of(ds, index)) +
                                       ") stayed in progress for " + std::to_string(timeout_s) +
                                       " s; if that process died, DataStore.repair() releases "
                                       "the slot");
}

// Reads into out (cap bytes): a fast try with the GIL held, then waits
// without it.
void read_raw(const PyDataStore& self, int32_t index, void* out, uint32_t cap, uint32_t* len,
              uint64_t* version, double timeout_s) {
  int32_t rc = self.ds.read(index, out, cap, len, version);
  if (rc == EAGAIN && timeout_s > 0) {
    const int64_t ns = to_ns(timeout_s);
    // Safe: the region is kept alive by self; out is owned by the caller.
    py::gil_scoped_release nogil;
    rc = self.ds.read_wait(index, out, cap, len, version, ns);
  }
  if (rc == EAGAIN) raise_torn(self.ds, index, timeout_s);
  if (rc != 0) check_index(self.ds, index);
  if (rc != 0) throw DataStoreError(Kind::Value, describe(self.ds, index) + ": read failed");
}

py::object value_from_bytes(DsType type, const unsigned char* data, uint64_t len) {
  switch (type) {
    case DsType::Int64: {
      int64_t v = 0;
      std::memcpy(&v, data, 8);
      return py::int_(v);
    }
    case DsType::Float64: {
      double v = 0;
      std::memcpy(&v, data, 8);
      return py::float_(v);
    }
    case DsType::Bool:
      return py::bool_(len > 0 && data[0] != 0);
    case DsType::String: {
      PyObject* s = PyUnicode_DecodeUTF8(reinterpret_cast<const char*>(data),
                                         static_cast<Py_ssize_t>(len), "replace");
      if (!s) throw py::error_already_set();
      return py::reinterpret_steal<py::object>(s);
    }
    case DsType::F64Array: {
      py::array_t<double> a(static_cast<py::ssize_t>(len / 8));
      if (len >= 8) std::memcpy(a.mutable_data(), data, len / 8 * 8);
      return std::move(a);
    }
  }
  return py::none();
}

py::tuple read_value(const PyDataStore& self, int32_t index, double timeout_s) {
  DsType type{};
  uint32_t cap = 0;
  if (!self.ds.slot_type(index, &type, &cap)) check_index(self.ds, index);
  uint32_t len = 0;
  uint64_t version = 0;
  py::object value;
  if (type == DsType::Int64 || type == DsType::Float64 || type == DsType::Bool) {
    unsigned char buf[8] = {};
    read_raw(self, index, buf, 8, &len, &version, timeout_s);
    value = value_from_bytes(type, buf, len);
  } else if (type == DsType::F64Array) {
    py::array_t<double> a(static_cast<py::ssize_t>(cap));
    read_raw(self, index, a.mutable_data(), cap * 8, &len, &version, timeout_s);
    if (len / 8 == cap) {
      value = std::move(a);
    } else {
      value = value_from_bytes(type, reinterpret_cast<const unsigned char*>(a.data()), len);
    }
  } else {
    std::vector<unsigned char> buf(std::size_t{cap} + 1);
    read_raw(self, index, buf.data(), cap, &len, &version, timeout_s);
    value = value_from_bytes(type, buf.data(), len);
  }
  return py::make_tuple(value, version);
}

void write_raw(PyDataStore& self, int32_t index, const void* value, uint32_t len,
               double timeout_s) {
  int32_t rc = self.ds.try_write(index, value, len);
  if (rc == EBUSY && timeout_s > 0) {
    const int64_t ns = to_ns(timeout_s);
    // Safe: value stays valid (held by the caller's Python object), the region by self.
    py::gil_scoped_release nogil;
    rc = self.ds.write(index, value, len, ns);
  }
  if (rc == EBUSY) raise_busy(self.ds, index, timeout_s);
  if (rc != 0) {
    check_index(self.ds, index);
    DsType type{};
    uint32_t cap = 0;
    self.ds.slot_type(index, &type, &cap);
    throw DataStoreError(Kind::Value, describe(self.ds, index) + " holds " + ds_type_name(type) +
                                          " (capacity " + std::to_string(cap) + "): a value of " +
                                          std::to_string(len) + " bytes does not fit");
  }
}

DsType type_of(const PyDataStore& self, int32_t index) {
  DsType type{};
  if (!self.ds.slot_type(index, &type, nullptr)) check_index(self.ds, index);
  return type;
}

void expect_type(const PyDataStore& self, int32_t index, DsType want) {
  const DsType t = type_of(self, index);
  if (t != want) {
    throw DataStoreError(Kind::Value, describe(self.ds, index) + " holds " + ds_type_name(t) +
                                          ", not " + ds_type_name(want));
  }
}

py::dict info_dict(const DsSlotInfo& i) {
  py::dict d;
  d["index"] = i.index;
  d["name"] = i.name;
  d["type"] = static_cast<uint32_t>(i.type);
  d["capacity"] = i.capacity;
  d["offset"] = i.offset;
  d["words"] = i.words;
  d["version"] = i.version;
  d["len"] = i.len;
  d["writer_pid"] = i.writer_pid;
  return d;
}

py::dict stats_dict(const DsStats& s) {
  py::dict d;
  d["region_bytes"] = s.region_bytes;
  d["max_slots"] = s.max_slots;
  d["slot_count"] = s.slot_count;
  d["arena_bytes"] = s.arena_words * 8;
  d["arena_used_bytes"] = s.arena_used * 8;
  d["change_counter"] = s.change_counter;
  d["snapshot_request"] = s.snapshot_request;
  d["snapshot_done"] = s.snapshot_done;
  d["snapshots_taken"] = s.snapshots_taken;
  d["snapshot_postponed"] = s.snapshot_postponed;
  return d;
}

py::object snapshot_dict(const PyDataStore& self, const DsSnapshotCopy& c) {
  py::dict values;
  py::dict versions;
  py::list torn;
  for (uint32_t i = 0; i < c.slot_count; ++i) {
    const auto index = static_cast<int32_t>(i);
    DsSlotInfo info;
    try {
      info = self.ds.slot_info(index);
    } catch (const DataStoreError&) {
      continue;
    }
    const uint64_t v = c.versions[i];
    versions[py::str(info.name)] = v;
    if ((v & 1U) != 0) {
      torn.append(info.name);
      values[py::str(info.name)] = py::none();
      continue;
    }
    if (info.offset + info.words > c.words.size()) continue;
    uint64_t len = c.lens[i];
    const uint64_t limit = DataStore::max_len(info.type, info.capacity);
    if (len > limit) len = limit;
    const auto* data = reinterpret_cast<const unsigned char*>(c.words.data() + info.offset);
    if (info.type == DsType::Bool) {
      values[py::str(info.name)] = py::bool_(c.words[info.offset] != 0);
    } else {
      values[py::str(info.name)] = value_from_bytes(info.type, data, len);
    }
  }
  py::dict d;
  d["token"] = c.token;
  d["cycle"] = c.cycle;
  d["taken_ns"] = c.taken_ns;
  d["slot_count"] = c.slot_count;
  d["values"] = values;
  d["versions"] = versions;
  d["torn"] = torn;
  return d;
}

PyDataStore make_store(std::shared_ptr<void> keepalive, void* region, std::size_t size,
                       const std::string& mode, uint32_t max_slots, std::size_t arena_bytes) {
  PyDataStore s;
  s.keepalive = std::move(keepalive);
  s.region_size = size;
  // Safe: the region is held by keepalive; open() may wait for another formatter.
  py::gil_scoped_release nogil;
  if (mode == "open") {
    s.ds = DataStore::open(region, size, max_slots);
  } else if (mode == "format") {
    s.ds = DataStore::format(region, size, max_slots, arena_bytes);
  } else if (mode == "attach") {
    s.ds = DataStore::attach(region, size);
  } else {
    throw std::invalid_argument("mode must be 'open', 'format' or 'attach', got '" + mode + "'");
  }
  return s;
}

PyDataStore make_private(uint32_t max_slots, std::size_t arena_bytes) {
  const std::size_t bytes = DataStore::region_bytes(max_slots, arena_bytes);
  const std::size_t alloc = (bytes + 63) / 64 * 64;
  void* mem = std::aligned_alloc(64, alloc);
  if (!mem) throw std::bad_alloc();
  std::memset(mem, 0, alloc);
  std::shared_ptr<void> keep(mem, [](void* p) { std::free(p); });
  return make_store(std::move(keep), mem, alloc, "format", max_slots, arena_bytes);
}

PyDataStore make_from_buffer(const py::object& buffer, const std::string& mode, uint32_t max_slots,
                             std::size_t arena_bytes) {
  auto* view = new WritableBuffer(buffer);
  void* data = view->data();
  const std::size_t size = view->size();
  return make_store(hold_python(view), data, size, mode, max_slots, arena_bytes);
}

PyDataStore make_from_address(uintptr_t address, std::size_t size, const py::object& owner,
                              const std::string& mode, uint32_t max_slots,
                              std::size_t arena_bytes) {
  if (address == 0) throw std::invalid_argument("address is 0");
  return make_store(hold_python(new py::object(owner)), reinterpret_cast<void*>(address), size,
                    mode, max_slots, arena_bytes);
}

// Test-only: a C++ thread behaving like a cycle thread. Cycle k = 1..n writes
// k into every given slot (INT64 k, FLOAT64 k, BOOL k odd, F64ARRAY all
// elements k at full capacity, STRING the decimal k), skipping a slot that
// another writer holds (counted), then services a snapshot request at the
// cycle boundary.
class TestCycle {
 public:
  TestCycle(PyDataStore store, std::vector<int32_t> indices, uint64_t n, int64_t pause_ns)
      : store_(std::move(store)), indices_(std::move(indices)), n_(n), pause_ns_(pause_ns) {
    for (int32_t i : indices_) check_index(store_.ds, i);
    thread_ = std::thread([this] { run(); });
  }
  ~TestCycle() { join(); }
  void join() {
    if (thread_.joinable()) {
      // Safe: the thread never touches Python.
      py::gil_scoped_release nogil;
      thread_.join();
    }
  }
  bool done() const { return done_.load(std::memory_order_acquire); }
  py::dict counters() const {
    py::dict d;
    d["cycles"] = cycles_.load(std::memory_order_acquire);
    d["busy"] = busy_.load(std::memory_order_acquire);
    d["taken"] = taken_.load(std::memory_order_acquire);
    d["postponed"] = postponed_.load(std::memory_order_acquire);
    d["snapshot_busy"] = snapshot_busy_.load(std::memory_order_acquire);
    return d;
  }

 private:
  void run() noexcept {
    DataStore& ds = store_.ds;
    std::vector<double> array;
    for (int32_t i : indices_) {
      DsType t{};
      uint32_t cap = 0;
      ds.slot_type(i, &t, &cap);
      if (t == DsType::F64Array && cap > array.size()) array.resize(cap);
    }
    for (uint64_t k = 1; k <= n_; ++k) {
      for (int32_t i : indices_) {
        DsType t{};
        uint32_t cap = 0;
        ds.slot_type(i, &t, &cap);
        int32_t rc = 0;
        switch (t) {
          case DsType::Int64:
            rc = ds.try_write_i64(i, static_cast<int64_t>(k));
            break;
          case DsType::Float64:
            rc = ds.try_write_f64(i, static_cast<double>(k));
            break;
          case DsType::Bool: {
            const unsigned char b = (k & 1U) != 0 ? 1 : 0;
            rc = ds.try_write(i, &b, 1);
            break;
          }
          case DsType::String: {
            char buf[24];
            const int len =
                std::snprintf(buf, sizeof buf, "%llu", static_cast<unsigned long long>(k));
            const auto n = static_cast<uint32_t>(len);
            rc = ds.try_write(i, buf, n <= cap ? n : cap);
            break;
          }
          case DsType::F64Array:
            for (uint32_t e = 0; e < cap; ++e) array[e] = static_cast<double>(k);
            rc = ds.try_write(i, array.data(), cap * 8);
            break;
        }
        if (rc == EBUSY) busy_.fetch_add(1, std::memory_order_relaxed);
      }
      switch (ds.service_snapshot(k)) {
        case SnapshotResult::Taken:
          taken_.fetch_add(1, std::memory_order_relaxed);
          break;
        case SnapshotResult::Postponed:
          postponed_.fetch_add(1, std::memory_order_relaxed);
          break;
        case SnapshotResult::Busy:
          snapshot_busy_.fetch_add(1, std::memory_order_relaxed);
          break;
        case SnapshotResult::Idle:
          break;
      }
      cycles_.store(k, std::memory_order_release);
      if (pause_ns_ > 0) {
        timespec ts{0, static_cast<long>(pause_ns_)};
        nanosleep(&ts, nullptr);
      }
    }
    done_.store(true, std::memory_order_release);
  }

  PyDataStore store_;
  std::vector<int32_t> indices_;
  uint64_t n_;
  int64_t pause_ns_;
  std::atomic<uint64_t> cycles_{0}, busy_{0}, taken_{0}, postponed_{0}, snapshot_busy_{0};
  std::atomic<bool> done_{false};
  std::thread thread_;
};

// Test-only: read an F64ARRAY slot `reads` times (cycle-thread reads); count
// consistent copies (all elements equal), torn ones (EAGAIN), inconsistent
// ones (elements differ), regressions (the value went down) and, when
// single_writer, copies whose version is not 2 * value.
py::dict check_reads(const PyDataStore& store, int32_t index, uint64_t reads, bool single_writer) {
  DsType type{};
  uint32_t cap = 0;
  if (!store.ds.slot_type(index, &type, &cap) || type != DsType::F64Array) {
    throw DataStoreError(Kind::Value, describe(store.ds, index) + " is not an f64array");
  }
  uint64_t ok = 0, torn = 0, inconsistent = 0, regressions = 0, version_mismatch = 0, changes = 0;
  {
    // Safe: only the region (kept alive by store) is touched.
    py::gil_scoped_release nogil;
    std::vector<double> buf(cap);
    double last = 0;
    for (uint64_t r = 0; r < reads; ++r) {
      uint32_t len = 0;
      uint64_t version = 0;
      const int32_t rc = store.ds.read(index, buf.data(), cap * 8, &len, &version);
      if (rc == EAGAIN) {
        ++torn;
        continue;
      }
      const uint32_t n = len / 8;
      bool same = n == cap;
      for (uint32_t e = 1; e < n && same; ++e) same = buf[e] == buf[0];
      if (!same) {
        ++inconsistent;
        continue;
      }
      ++ok;
      const double v = n > 0 ? buf[0] : 0;
      if (v < last) ++regressions;
      if (v != last) ++changes;
      last = v;
      if (single_writer && static_cast<double>(version / 2) != v) ++version_mismatch;
    }
  }
  py::dict d;
  d["ok"] = ok;
  d["torn"] = torn;
  d["inconsistent"] = inconsistent;
  d["regressions"] = regressions;
  d["version_mismatch"] = version_mismatch;
  d["changes"] = changes;
  return d;
}

const char* error_class(Kind k) noexcept {
  switch (k) {
    case Kind::Format:
      return "DataStoreFormatError";
    case Kind::Definition:
      return "DefinitionError";
    case Kind::NotFound:
      return "UnknownSlotError";
    case Kind::Value:
      return "SlotValueError";
    case Kind::Busy:
      return "DataStoreBusyError";
    case Kind::Torn:
      return "TornReadError";
  }
  return "DataStoreError";
}

}  // namespace

void register_datastore(py::module_& m) {
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const DataStoreError& e) {
      try {
        py::object cls = py::module_::import("mxrc.bus._datastore").attr(error_class(e.kind()));
        PyErr_SetString(cls.ptr(), e.what());
      } catch (py::error_already_set& err) {
        err.restore();  // importing mxrc failed: raise that
      }
    }
  });

  m.attr("FORMAT_VERSION") = kDataStoreFormatVersion;
  m.attr("MAGIC") = kDataStoreMagic;
  m.attr("NAME_MAX") = kDsNameMax;
  m.attr("MAX_SLOTS_LIMIT") = kDsMaxSlotsLimit;
  m.attr("RT_READ_ATTEMPTS") = kDsRtReadAttempts;
  m.attr("SNAPSHOT_MAX_POSTPONE") = kDsSnapshotMaxPostpone;
  m.attr("HEADER_SIZE") = sizeof(DataStoreHeader);
  m.attr("SLOT_SIZE") = sizeof(DataStoreSlot);
  m.attr("INT64") = static_cast<uint32_t>(DsType::Int64);
  m.attr("FLOAT64") = static_cast<uint32_t>(DsType::Float64);
  m.attr("BOOL") = static_cast<uint32_t>(DsType::Bool);
  m.attr("STRING") = static_cast<uint32_t>(DsType::String);
  m.attr("F64ARRAY") = static_cast<uint32_t>(DsType::F64Array);
  m.attr("SNAPSHOT_IDLE") = static_cast<int32_t>(SnapshotResult::Idle);
  m.attr("SNAPSHOT_TAKEN") = static_cast<int32_t>(SnapshotResult::Taken);
  m.attr("SNAPSHOT_POSTPONED") = static_cast<int32_t>(SnapshotResult::Postponed);
  m.attr("SNAPSHOT_BUSY") = static_cast<int32_t>(SnapshotResult::Busy);

  m.def("region_bytes", &DataStore::region_bytes, py::arg("max_slots"), py::arg("arena_bytes"),
        "bytes a region needs for max_slots slots and arena_bytes of values");
  m.def("arena_bytes_for", &DataStore::arena_bytes_for, py::arg("region_bytes"),
        py::arg("max_slots"), "the largest arena that fits (0: none)");

  py::class_<PyDataStore>(m, "DataStore", "a view on a formatted data store region")
      .def_static("private", &make_private, py::arg("max_slots"), py::arg("arena_bytes"),
                  "a data store in private (process) memory")
      .def_static("from_buffer", &make_from_buffer, py::arg("buffer"), py::arg("mode") = "open",
                  py::arg("max_slots") = 256, py::arg("arena_bytes") = 0,
                  "over a writable buffer (bytearray, mmap, numpy array); mode open/format/attach")
      .def_static("from_address", &make_from_address, py::arg("address"), py::arg("size"),
                  py::arg("owner"), py::arg("mode") = "open", py::arg("max_slots") = 256,
                  py::arg("arena_bytes") = 0,
                  "over raw memory kept alive by `owner` (e.g. a segment's data store region)")
      .def_property_readonly(
          "address", [](const PyDataStore& s) { return reinterpret_cast<uintptr_t>(&s.ds); })
      .def_property_readonly(
          "region_address",
          [](const PyDataStore& s) { return reinterpret_cast<uintptr_t>(s.ds.region()); })
      .def_property_readonly("region_size", [](const PyDataStore& s) { return s.region_size; })
      .def_property_readonly("max_slots", [](const PyDataStore& s) { return s.ds.max_slots(); })
      .def_property_readonly("slot_count", [](const PyDataStore& s) { return s.ds.slot_count(); })
      .def_property_readonly("change_counter",
                             [](const PyDataStore& s) { return s.ds.change_counter(); })
      .def("stats", [](const PyDataStore& s) { return stats_dict(s.ds.stats()); })
      .def(
          "define",
          [](PyDataStore& s, const std::string& name, uint32_t type, uint32_t capacity) {
            // Safe: may wait for another process's define lock; only the region is touched.
            py::gil_scoped_release nogil;
            return s.ds.define(name, static_cast<DsType>(type), capacity);
          },
          py::arg("name"), py::arg("type"), py::arg("capacity") = 0)
      .def(
          "find",
          [](const PyDataStore& s, const std::string& name) { return s.ds.find(name.c_str()); },
          py::arg("name"), "index, or -ENOENT")
      .def(
          "info",
          [](const PyDataStore& s, int32_t index) { return info_dict(s.ds.slot_info(index)); },
          py::arg("index"))
      .def(
          "version", [](const PyDataStore& s, int32_t index) { return s.ds.version(index); },
          py::arg("index"))
      .def("versions",
           [](const PyDataStore& s) {
             const std::vector<uint64_t> v = s.ds.versions();
             py::array_t<uint64_t> a(static_cast<py::ssize_t>(v.size()));
             if (!v.empty()) std::memcpy(a.mutable_data(), v.data(), v.size() * 8);
             return a;
           })
      .def("read", &read_value, py::arg("index"), py::arg("timeout") = 0.02,
           "(value, version): a copy")
      .def(
          "read_into",
          [](const PyDataStore& s, int32_t index, py::array_t<double, py::array::c_style>& out,
             double timeout) {
            expect_type(s, index, DsType::F64Array);
            if (!out.writeable()) throw std::invalid_argument("out is read-only");
            const auto n = static_cast<uint64_t>(out.size());
            if (n * 8 > 0xFFFFFFFFULL) throw std::invalid_argument("out is too large");
            uint32_t len = 0;
            uint64_t version = 0;
            read_raw(s, index, out.mutable_data(), static_cast<uint32_t>(n * 8), &len, &version,
                     timeout);
            return py::make_tuple(len / 8, version);
          },
          py::arg("index"), py::arg("out").noconvert(), py::arg("timeout") = 0.02,
          "(elements of the value, version); copies min(elements, out.size)")
      .def(
          "write_i64",
          [](PyDataStore& s, int32_t index, int64_t v, double timeout) {
            expect_type(s, index, DsType::Int64);
            write_raw(s, index, &v, 8, timeout);
          },
          py::arg("index"), py::arg("value"), py::arg("timeout") = 0.02)
      .def(
          "write_f64",
          [](PyDataStore& s, int32_t index, double v, double timeout) {
            expect_type(s, index, DsType::Float64);
            write_raw(s, index, &v, 8, timeout);
          },
          py::arg("index"), py::arg("value"), py::arg("timeout") = 0.02)
      .def(
          "write_bool",
          [](PyDataStore& s, int32_t index, bool v, double timeout) {
            expect_type(s, index, DsType::Bool);
            const unsigned char b = v ? 1 : 0;
            write_raw(s, index, &b, 1, timeout);
          },
          py::arg("index"), py::arg("value"), py::arg("timeout") = 0.02)
      .def(
          "write_bytes",
          [](PyDataStore& s, int32_t index, const py::bytes& v, double timeout) {
            expect_type(s, index, DsType::String);
            char* data = nullptr;
            Py_ssize_t len = 0;
            if (PyBytes_AsStringAndSize(v.ptr(), &data, &len) != 0) throw py::error_already_set();
            write_raw(s, index, data, static_cast<uint32_t>(len), timeout);
          },
          py::arg("index"), py::arg("value"), py::arg("timeout") = 0.02)
      .def(
          "write_array",
          [](PyDataStore& s, int32_t index,
             const py::array_t<double, py::array::c_style | py::array::forcecast>& v,
             double timeout) {
            expect_type(s, index, DsType::F64Array);
            if (v.ndim() != 1) {
              throw DataStoreError(Kind::Value, describe(s.ds, index) +
                                                    ": expected a 1-D array, got " +
                                                    std::to_string(v.ndim()) + " dimensions");
            }
            const auto n = static_cast<uint64_t>(v.size());
            write_raw(s, index, v.data(),
                      static_cast<uint32_t>(n > 0x1FFFFFFFULL ? 0xFFFFFFF8ULL : n * 8), timeout);
          },
          py::arg("index"), py::arg("value"), py::arg("timeout") = 0.02)
      .def(
          "acquire",
          [](PyDataStore& s, int32_t index, double timeout) {
            check_index(s.ds, index);
            int32_t rc = s.ds.try_acquire(index);
            if (rc == EBUSY && timeout > 0) {
              const int64_t ns = to_ns(timeout);
              // Safe: only the region (kept alive by s) is touched.
              py::gil_scoped_release nogil;
              rc = s.ds.acquire(index, ns);
            }
            if (rc == EBUSY) raise_busy(s.ds, index, timeout);
          },
          py::arg("index"), py::arg("timeout") = 0.02,
          "take the slot for a write scope (seqlock odd); release() ends it")
      .def(
          "view",
          [](PyDataStore& s, int32_t index, uint32_t length) {
            DsType type{};
            uint32_t cap = 0;
            if (!s.ds.slot_type(index, &type, &cap)) check_index(s.ds, index);
            if (type != DsType::F64Array && type != DsType::Float64) {
              throw DataStoreError(Kind::Value, describe(s.ds, index) + " holds " +
                                                    ds_type_name(type) +
                                                    ": a float64 view needs float64 or f64array");
            }
            if (length > cap) {
              throw DataStoreError(Kind::Value, describe(s.ds, index) + ": length " +
                                                    std::to_string(length) + " > capacity " +
                                                    std::to_string(cap));
            }
            // The words are std::atomic<uint64_t>: same size, alignment and
            // representation as a double's bits (static_asserted in datastore.hpp).
            auto* data = reinterpret_cast<double*>(s.ds.words(index));
            auto* keep = new std::shared_ptr<void>(s.keepalive);
            py::capsule base(keep, [](void* p) { delete static_cast<std::shared_ptr<void>*>(p); });
            return py::array_t<double>({static_cast<py::ssize_t>(length)}, {sizeof(double)}, data,
                                       base);
          },
          py::arg("index"), py::arg("length"),
          "zero-copy float64 view of the slot's words: only between acquire() and release()")
      .def(
          "release", [](PyDataStore& s, int32_t index, uint32_t len) { s.ds.release(index, len); },
          py::arg("index"), py::arg("len"), "end a write scope: publish len bytes, version + 2")
      .def("request_snapshot", [](PyDataStore& s) { return s.ds.request_snapshot(); })
      .def_property_readonly("snapshot_done",
                             [](const PyDataStore& s) { return s.ds.snapshot_done(); })
      .def(
          "service_snapshot",
          [](PyDataStore& s, uint64_t cycle, int64_t now_ns) {
            return static_cast<int32_t>(s.ds.service_snapshot(cycle, now_ns));
          },
          py::arg("cycle"), py::arg("now_ns") = -1,
          "cycle boundary: take a requested snapshot (SNAPSHOT_* result)")
      .def(
          "read_snapshot",
          [](const PyDataStore& s, uint64_t min_token) -> py::object {
            DsSnapshotCopy c;
            int32_t rc = 0;
            {
              // Safe: only the region (kept alive by s) and c are touched.
              py::gil_scoped_release nogil;
              rc = s.ds.read_snapshot(min_token, c);
            }
            if (rc != 0) return py::none();
            return snapshot_dict(s, c);
          },
          py::arg("min_token") = 1, "the snapshot area (dict) if it answers min_token, else None")
      .def(
          "repair",
          [](PyDataStore& s, double grace) {
            const int64_t ns = to_ns(grace);
            // Safe: sleeps; only the region is touched.
            py::gil_scoped_release nogil;
            return s.ds.repair(ns);
          },
          py::arg("grace") = 0.1);

  // The C table's data store entries (mxrc.h), called exactly as the
  // executive will call them; a None store is "no data store".
  m.def(
      "c_find",
      [](const PyDataStore* s, const std::string& name) {
        return ds_c::find(s ? &s->ds : nullptr, name.c_str());
      },
      py::arg("store").none(true), py::arg("name"));
  m.def(
      "c_read",
      [](const PyDataStore* s, int32_t index, uint32_t cap) {
        std::vector<unsigned char> buf(std::size_t{cap} + 1);
        uint32_t len = 0;
        uint64_t version = 0;
        const int32_t rc = ds_c::read(s ? &s->ds : nullptr, index, buf.data(), cap, &len, &version);
        DsType type{};
        const uint32_t room =
            s && s->ds.slot_type(index, &type, nullptr) && type == DsType::F64Array ? cap / 8 * 8
                                                                                    : cap;
        const std::size_t got = rc == 0 ? (len < room ? len : room) : 0;
        return py::make_tuple(rc, py::bytes(reinterpret_cast<const char*>(buf.data()), got), len,
                              version);
      },
      py::arg("store").none(true), py::arg("index"), py::arg("cap"),
      "(rc, bytes copied, len_out, version_out)");
  m.def(
      "c_write",
      [](PyDataStore* s, int32_t index, const py::bytes& value) {
        char* data = nullptr;
        Py_ssize_t len = 0;
        if (PyBytes_AsStringAndSize(value.ptr(), &data, &len) != 0) throw py::error_already_set();
        return ds_c::write(s ? &s->ds : nullptr, index, data, static_cast<uint32_t>(len));
      },
      py::arg("store").none(true), py::arg("index"), py::arg("value"));
  m.def(
      "c_read_f64",
      [](const PyDataStore* s, int32_t index) {
        double v = 0;
        const int32_t rc = ds_c::read_f64(s ? &s->ds : nullptr, index, &v);
        return py::make_tuple(rc, v);
      },
      py::arg("store").none(true), py::arg("index"));
  m.def(
      "c_write_f64",
      [](PyDataStore* s, int32_t index, double v) {
        return ds_c::write_f64(s ? &s->ds : nullptr, index, v);
      },
      py::arg("store").none(true), py::arg("index"), py::arg("value"));
  m.def(
      "c_read_i64",
      [](const PyDataStore* s, int32_t index) {
        int64_t v = 0;
        const int32_t rc = ds_c::read_i64(s ? &s->ds : nullptr, index, &v);
        return py::make_tuple(rc, v);
      },
      py::arg("store").none(true), py::arg("index"));
  m.def(
      "c_write_i64",
      [](PyDataStore* s, int32_t index, int64_t v) {
        return ds_c::write_i64(s ? &s->ds : nullptr, index, v);
      },
      py::arg("store").none(true), py::arg("index"), py::arg("value"));

  // Test-only.
  py::class_<TestCycle>(m, "_TestCycle")
      .def("join", &TestCycle::join)
      .def_property_readonly("done", &TestCycle::done)
      .def("counters", &TestCycle::counters);
  m.def(
      "_start_test_cycle",
      [](const PyDataStore& store, std::vector<int32_t> indices, uint64_t n, int64_t pause_ns) {
        return std::make_unique<TestCycle>(store, std::move(indices), n, pause_ns);
      },
      py::arg("store"), py::arg("indices"), py::arg("n"), py::arg("pause_ns") = 0);
  m.def("_check_reads", &check_reads, py::arg("store"), py::arg("index"), py::arg("reads"),
        py::arg("single_writer") = true);
}

}  // namespace mxrc::bindings
