// Multi-thread test of mxrc's data store, built with -fsanitize=thread by
// tests/test_datastore_tsan.py together with csrc/src/datastore.cpp.
//
// An "RT" thread writes cycle k into four slots (int64, float64, f64array,
// string) with try_write and services snapshots at every cycle boundary; an
// "agent" thread writes a shared f64array with the retrying write() and
// another one through a write scope (acquire / words / release); reader
// threads copy slots out; a snapshot thread requests and reads snapshots.
// Checked: no reader ever sees a torn array (all elements equal), RT-only
// slots only move forward, every snapshot holds one cycle's values in all
// four RT slots with versions 2 * cycle, and the final versions count every
// completed write.
//
// Exit status 0 when every check passed; 1 with a message otherwise.
// ThreadSanitizer reports races itself (TSAN_OPTIONS=halt_on_error=1
// exitcode=66). With -DMXRC_TSAN_SELF_CHECK the program also commits a
// deliberate data race, so that the test can prove TSan is watching.
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "mxrc/datastore.hpp"

namespace {

std::atomic<int> failures{0};

void check(bool ok, const char* what, unsigned long long a = 0, unsigned long long b = 0) {
  if (!ok && failures.fetch_add(1) < 20) {
    std::fprintf(stderr, "FAILED: %s (%llu, %llu)\n", what, a, b);
  }
}

constexpr uint32_t kArray = 32;

}  // namespace

int main(int argc, char** argv) {
  const uint64_t cycles = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 20000;
  using mxrc::DataStore;
  using mxrc::DsType;
  const std::size_t size = DataStore::region_bytes(16, 4096);
  void* mem = std::aligned_alloc(64, size);
  std::memset(mem, 0, size);
  DataStore ds = DataStore::open(mem, size, 16);
  const int32_t i_k = ds.define("k", DsType::Int64, 1);
  const int32_t i_x = ds.define("x", DsType::Float64, 1);
  const int32_t i_arr = ds.define("arr", DsType::F64Array, kArray);
  const int32_t i_s = ds.define("s", DsType::String, 24);
  const int32_t i_shared = ds.define("shared", DsType::F64Array, kArray);
  const int32_t i_scope = ds.define("scope", DsType::F64Array, kArray);
  check(ds.define("arr", DsType::F64Array, kArray) == i_arr, "idempotent define");

  std::atomic<bool> rt_done{false};
  std::atomic<uint64_t> rt_busy{0}, agent_writes{0}, scope_writes{0};

#ifdef MXRC_TSAN_SELF_CHECK
  static uint64_t deliberate_race = 0;  // plain memory written by two threads: TSan must object
  std::thread racer([] { deliberate_race += 1; });
  deliberate_race += 1;
  racer.join();
#endif

  std::thread rt([&] {
    double arr[kArray];
    DataStore view = ds;  // a copy of the view, as another thread would hold it
    for (uint64_t k = 1; k <= cycles; ++k) {
      for (double& e : arr) e = static_cast<double>(k);
      check(view.try_write_i64(i_k, static_cast<int64_t>(k)) == 0, "rt int64");
      check(view.try_write_f64(i_x, static_cast<double>(k)) == 0, "rt float64");
      check(view.try_write(i_arr, arr, sizeof arr) == 0, "rt array");
      const std::string s = std::to_string(k);
      check(view.try_write(i_s, s.data(), static_cast<uint32_t>(s.size())) == 0, "rt string");
      const int32_t rc = view.try_write(i_shared, arr, sizeof arr);
      if (rc == EBUSY) {
        rt_busy.fetch_add(1, std::memory_order_relaxed);
      } else {
        check(rc == 0, "rt shared", static_cast<unsigned long long>(rc));
      }
      view.service_snapshot(k);
    }
    rt_done.store(true, std::memory_order_release);
  });

  std::thread agent([&] {
    double arr[kArray];
    uint64_t n = 0;
    while (!rt_done.load(std::memory_order_acquire)) {
      ++n;
      for (double& e : arr) e = -static_cast<double>(n);
      check(ds.write(i_shared, arr, sizeof arr, 1'000'000'000) == 0, "agent write");
      agent_writes.fetch_add(1, std::memory_order_relaxed);
      if (ds.acquire(i_scope, 1'000'000'000) == 0) {
        std::atomic<uint64_t>* w = ds.words(i_scope);
        double v = static_cast<double>(n);
        uint64_t bits;
        std::memcpy(&bits, &v, 8);
        for (uint32_t e = 0; e < kArray; ++e) w[e].store(bits, std::memory_order_relaxed);
        ds.release(i_scope, kArray * 8);
        scope_writes.fetch_add(1, std::memory_order_relaxed);
      } else {
        check(false, "agent acquire");
      }
    }
  });

  auto reader = [&](int32_t index, bool monotonic) {
    double buf[kArray];
    double last = 0;
    while (!rt_done.load(std::memory_order_acquire)) {
      uint32_t len = 0;
      uint64_t version = 0;
      const int32_t rc = ds.read(index, buf, sizeof buf, &len, &version);
      if (rc == EAGAIN) continue;
      check(rc == 0 && len == sizeof buf, "reader rc/len", static_cast<unsigned long long>(rc),
            len);
      bool same = true;
      for (uint32_t e = 1; e < kArray; ++e) same = same && buf[e] == buf[0];
      check(same, "torn array");
      if (monotonic) {
        check(buf[0] >= last, "array went back");
        check(static_cast<double>(version / 2) == buf[0], "version != 2 * value");
        last = buf[0];
      }
    }
  };
  std::thread r1(reader, i_arr, true), r2(reader, i_shared, false), r3(reader, i_scope, true);

  std::thread scalar_reader([&] {
    int64_t last_k = 0;
    while (!rt_done.load(std::memory_order_acquire)) {
      int64_t k = 0;
      double x = 0;
      if (ds.read_i64(i_k, &k) == 0) {
        check(k >= last_k, "int64 went back");
        last_k = k;
      }
      if (ds.read_f64(i_x, &x) == 0) check(x >= 0, "float64");
      check(ds.read_f64(i_k, &x) == EINVAL, "typed read checks the type");
      (void)ds.versions();
      (void)ds.change_counter();
    }
  });

  uint64_t snapshots = 0;
  uint64_t forced = 0;
  std::thread snapper([&] {
    mxrc::DsSnapshotCopy c;
    while (!rt_done.load(std::memory_order_acquire)) {
      const uint64_t token = ds.request_snapshot();
      int32_t rc = ENOENT;
      while (rc != 0 && !rt_done.load(std::memory_order_acquire)) {
        rc = ds.read_snapshot(token, c);
        if (rc != 0) std::this_thread::yield();
      }
      if (rc != 0) break;
      ++snapshots;
      const uint64_t k = c.cycle;
      // Only slots the agent writes can be caught mid-write (a forced
      // snapshot after kDsSnapshotMaxPostpone postponements).
      if (c.torn_count != 0) ++forced;
      check((c.versions[static_cast<std::size_t>(i_shared)] & 1U) +
                    (c.versions[static_cast<std::size_t>(i_scope)] & 1U) ==
                c.torn_count,
            "torn slots are agent slots", c.torn_count);
      int64_t ik;
      double x;
      std::memcpy(&ik, &c.words[ds.slot_info(i_k).offset], 8);
      std::memcpy(&x, &c.words[ds.slot_info(i_x).offset], 8);
      check(static_cast<uint64_t>(ik) == k, "snapshot int64", static_cast<unsigned long long>(ik),
            k);
      check(x == static_cast<double>(k), "snapshot float64");
      const uint32_t off = ds.slot_info(i_arr).offset;
      for (uint32_t e = 0; e < kArray; ++e) {
        double v;
        std::memcpy(&v, &c.words[off + e], 8);
        check(v == static_cast<double>(k), "snapshot array");
      }
      const std::string s = std::to_string(k);
      check(c.lens[static_cast<std::size_t>(i_s)] == s.size() &&
                std::memcmp(&c.words[ds.slot_info(i_s).offset], s.data(), s.size()) == 0,
            "snapshot string");
      for (int32_t i : {i_k, i_x, i_arr, i_s}) {
        check(c.versions[static_cast<std::size_t>(i)] == 2 * k, "snapshot version",
              c.versions[static_cast<std::size_t>(i)], k);
      }
    }
  });

  rt.join();
  agent.join();
  r1.join();
  r2.join();
  r3.join();
  scalar_reader.join();
  snapper.join();

  check(ds.version(i_k) == 2 * cycles, "final int64 version");
  check(ds.version(i_arr) == 2 * cycles, "final array version");
  const uint64_t shared_writes = cycles - rt_busy.load() + agent_writes.load();
  check(ds.version(i_shared) == 2 * shared_writes, "shared version counts every write",
        ds.version(i_shared), shared_writes);
  check(ds.version(i_scope) == 2 * scope_writes.load(), "scope version");
  std::printf(
      "cycles %llu, rt busy %llu, agent writes %llu, scope writes %llu, snapshots %llu "
      "(forced %llu)\n",
      static_cast<unsigned long long>(cycles), static_cast<unsigned long long>(rt_busy.load()),
      static_cast<unsigned long long>(agent_writes.load()),
      static_cast<unsigned long long>(scope_writes.load()),
      static_cast<unsigned long long>(snapshots), static_cast<unsigned long long>(forced));
  std::free(mem);
  if (failures.load() != 0) {
    std::fprintf(stderr, "%d check(s) failed\n", failures.load());
    return 1;
  }
  std::printf("ok\n");
  return 0;
}
