// mxrc._core._bench: C++ loops for the per-operation benchmarks of bench/
// (pytest-benchmark times one call; the cost per operation is that time
// divided by the loop count). Not an API: the arguments are raw addresses of
// objects the caller keeps alive (Ring.address, DataStore.address).
#include <pybind11/pybind11.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "mxrc/datastore.hpp"
#include "mxrc/ring.hpp"
#include "register.hpp"

namespace py = pybind11;

namespace mxrc::bindings {

namespace {

// The ring whose header is at `address` (a formatted ring the caller keeps mapped).
SpscRing ring_at(uintptr_t address) {
  if (address == 0) throw std::invalid_argument("ring address is 0");
  auto* h = reinterpret_cast<RingHeader*>(address);
  const std::size_t bytes = ring_bytes(h->capacity.load(std::memory_order_acquire),
                                       h->record_size.load(std::memory_order_acquire));
  return SpscRing::attach(h, bytes, "benchmark ring");
}

DataStore* store_at(uintptr_t address) {
  if (address == 0) throw std::invalid_argument("data store address is 0");
  return reinterpret_cast<DataStore*>(address);
}

void check_len(const SpscRing& r, std::size_t len) {
  if (len > r.record_size()) {
    throw std::invalid_argument("record_len " + std::to_string(len) + " > record size " +
                                std::to_string(r.record_size()));
  }
}

int64_t mono_ns() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// n try_push (priority < 0) or try_push_admitted calls of record_len bytes;
// returns the records accepted.
uint64_t ring_push_n(uintptr_t address, uint64_t n, std::size_t record_len, int priority) {
  SpscRing r = ring_at(address);
  check_len(r, record_len);
  std::vector<unsigned char> rec(r.record_size(), 0xA5);
  uint64_t accepted = 0;
  py::gil_scoped_release nogil;
  for (uint64_t i = 0; i < n; ++i) {
    std::memcpy(rec.data(), &i, sizeof i);
    const int rc = priority < 0 ? r.try_push(rec.data(), record_len)
                                : r.try_push_admitted(rec.data(), record_len, priority);
    accepted += rc == 0 ? 1 : 0;
  }
  return accepted;
}

// Up to n try_pop calls; returns the records taken.
uint64_t ring_pop_n(uintptr_t address, uint64_t n) {
  SpscRing r = ring_at(address);
  std::vector<unsigned char> out(r.record_size());
  uint64_t popped = 0;
  py::gil_scoped_release nogil;
  for (uint64_t i = 0; i < n; ++i) {
    std::size_t len = 0;
    if (r.try_pop(out.data(), out.size(), &len) != 0) break;
    ++popped;
  }
  return popped;
}

// n records through the ring in batches (push `batch`, pop `batch`) on one
// thread: the uncontended cost of one push plus one pop.
uint64_t ring_push_pop(uintptr_t address, uint64_t n, std::size_t record_len, uint32_t batch) {
  SpscRing r = ring_at(address);
  check_len(r, record_len);
  if (batch == 0 || batch > r.capacity()) {
    throw std::invalid_argument("batch must be 1.." + std::to_string(r.capacity()));
  }
  std::vector<unsigned char> rec(r.record_size(), 0x5A), out(r.record_size());
  uint64_t moved = 0;
  py::gil_scoped_release nogil;
  while (moved < n) {
    uint32_t k = 0;
    for (; k < batch && moved + k < n; ++k) {
      if (r.try_push(rec.data(), record_len) != 0) break;
    }
    for (uint32_t j = 0; j < k; ++j) {
      std::size_t len = 0;
      r.try_pop(out.data(), out.size(), &len);
    }
    if (k == 0) break;  // the ring was not empty to begin with: refuse to spin
    moved += k;
  }
  return moved;
}

// n records from this thread (producer) to a consumer thread; the producer
// retries when the ring is full. Returns {elapsed_ns, full_retries, empty_polls}.
py::dict ring_transfer(uintptr_t address, uint64_t n, std::size_t record_len) {
  SpscRing r = ring_at(address);
  check_len(r, record_len);
  std::atomic<uint64_t> empty_polls{0};
  uint64_t full_retries = 0;
  int64_t elapsed = 0;
  {
    py::gil_scoped_release nogil;
    std::atomic<bool> go{false};
    std::thread consumer([&] {
      std::vector<unsigned char> out(r.record_size());
      uint64_t got = 0, polls = 0;
      while (!go.load(std::memory_order_acquire)) {
      }
      while (got < n) {
        std::size_t len = 0;
        if (r.try_pop(out.data(), out.size(), &len) == 0) {
          ++got;
        } else {
          ++polls;
        }
      }
      empty_polls.store(polls, std::memory_order_relaxed);
    });
    std::vector<unsigned char> rec(r.record_size(), 0x3C);
    const int64_t t0 = mono_ns();
    go.store(true, std::memory_order_release);
    for (uint64_t i = 0; i < n; ++i) {
      std::memcpy(rec.data(), &i, sizeof i);
      while (r.try_push(rec.data(), record_len) != 0) ++full_retries;
    }
    consumer.join();
    elapsed = mono_ns() - t0;
  }
  py::dict d;
  d["elapsed_ns"] = elapsed;
  d["full_retries"] = full_retries;
  d["empty_polls"] = empty_polls.load(std::memory_order_relaxed);
  return d;
}

enum class DsOp { ReadF64, WriteF64, ReadI64, WriteI64, Read, Write };

DsOp ds_op(const std::string& op) {
  if (op == "read_f64") return DsOp::ReadF64;
  if (op == "write_f64") return DsOp::WriteF64;
  if (op == "read_i64") return DsOp::ReadI64;
  if (op == "write_i64") return DsOp::WriteI64;
  if (op == "read") return DsOp::Read;
  if (op == "write") return DsOp::Write;
  throw std::invalid_argument("op must be read_f64, write_f64, read_i64, write_i64, read or " +
                              std::string("write, got '") + op + "'");
}

// n calls of one ds_c function (what the C table's ds_* entries call) on the
// slot `index`; read/write move the slot's whole value (its maximum size).
// Returns how many calls did not return 0.
uint64_t ds_loop(uintptr_t store_address, int32_t index, uint64_t n, const std::string& op_name) {
  DataStore* ds = store_at(store_address);
  const DsOp op = ds_op(op_name);
  DsType type{};
  uint32_t capacity = 0;
  if (!ds->slot_type(index, &type, &capacity)) {
    throw std::invalid_argument("the data store has no slot index " + std::to_string(index));
  }
  const auto max_len = static_cast<uint32_t>(DataStore::max_len(type, capacity));
  std::vector<unsigned char> buf(max_len + 8, 0);
  if (type == DsType::F64Array) {
    for (uint32_t i = 0; i < capacity; ++i) {
      const double v = i;
      std::memcpy(buf.data() + 8 * i, &v, 8);
    }
  } else if (type == DsType::Bool) {
    buf[0] = 1;
  }
  uint64_t failed = 0;
  py::gil_scoped_release nogil;
  for (uint64_t i = 0; i < n; ++i) {
    int32_t rc = 0;
    switch (op) {
      case DsOp::ReadF64: {
        double v = 0;
        rc = ds_c::read_f64(ds, index, &v);
        break;
      }
      case DsOp::WriteF64:
        rc = ds_c::write_f64(ds, index, static_cast<double>(i));
        break;
      case DsOp::ReadI64: {
        int64_t v = 0;
        rc = ds_c::read_i64(ds, index, &v);
        break;
      }
      case DsOp::WriteI64:
        rc = ds_c::write_i64(ds, index, static_cast<int64_t>(i));
        break;
      case DsOp::Read: {
        uint32_t len = 0;
        uint64_t version = 0;
        rc = ds_c::read(ds, index, buf.data(), max_len, &len, &version);
        break;
      }
      case DsOp::Write:
        rc = ds_c::write(ds, index, buf.data(), max_len);
        break;
    }
    failed += rc != 0 ? 1 : 0;
  }
  return failed;
}

}  // namespace

void register_bench(py::module_& m) {
  m.def("ring_push_n", &ring_push_n, py::arg("ring_address"), py::arg("n"), py::arg("record_len"),
        py::arg("priority") = -1,
        "n try_push (or try_push_admitted) calls; returns the records accepted");
  m.def("ring_pop_n", &ring_pop_n, py::arg("ring_address"), py::arg("n"),
        "up to n try_pop calls; returns the records taken");
  m.def("ring_push_pop", &ring_push_pop, py::arg("ring_address"), py::arg("n"),
        py::arg("record_len"), py::arg("batch") = 64,
        "n records pushed and popped in batches on this thread; returns the records moved");
  m.def("ring_transfer", &ring_transfer, py::arg("ring_address"), py::arg("n"),
        py::arg("record_len"),
        "n records from this thread to a consumer thread: {elapsed_ns, full_retries, "
        "empty_polls}");
  m.def("ds_loop", &ds_loop, py::arg("store_address"), py::arg("index"), py::arg("n"),
        py::arg("op"), "n calls of one ds_c function; returns how many did not return 0");
}

}  // namespace mxrc::bindings
