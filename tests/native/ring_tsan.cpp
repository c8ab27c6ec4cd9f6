// Two-thread (and more) test of mxrc's SPSC rings, built with
// -fsanitize=thread by tests/test_ring_tsan.py together with csrc/src/ring.cpp.
//
// 1. One producer thread, one consumer thread, a monitor thread reading the
//    counters: every record intact (checksummed, variable length), order
//    kept, no duplicates, pushed = popped + dropped + left.
// 2. The same with admission by priority (try_push_admitted).
// 3. RingSet::publish_event: CRITICAL to its own ring with sticky overflow
//    flags; the consumer drains both rings.
// 4. Several non-RT producers serialised by RingSideLock on one ring.
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
#include <memory>
#include <thread>
#include <vector>

#include "mxrc/ring.hpp"

namespace {

int failures = 0;

void check(bool ok, const char* what, unsigned long long a = 0, unsigned long long b = 0) {
  if (!ok) {
    std::fprintf(stderr, "FAILED: %s (%llu, %llu)\n", what, a, b);
    ++failures;
  }
}

uint64_t mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// Record `seq` of producer `who`: 24..record_size bytes: seq, who, checksum,
// then bytes derived from (who, seq).
std::size_t make_record(uint64_t who, uint64_t seq, uint32_t record_size, unsigned char* out) {
  const std::size_t len = 24 + mix(seq ^ (who << 48)) % (record_size - 24 + 1);
  uint64_t x = mix(seq * 31 + who);
  uint64_t sum = 0xcbf29ce484222325ULL;
  for (std::size_t i = 24; i < len; ++i) {
    if ((i & 7) == 0) x = mix(x);
    out[i] = static_cast<unsigned char>(x >> ((i & 7) * 8));
    sum = (sum ^ out[i]) * 0x100000001b3ULL;
  }
  std::memcpy(out, &seq, 8);
  std::memcpy(out + 8, &who, 8);
  std::memcpy(out + 16, &sum, 8);
  return len;
}

struct Ring {
  std::unique_ptr<void, void (*)(void*)> mem{nullptr, std::free};
  mxrc::SpscRing ring;
  Ring(uint32_t capacity, uint32_t record_size) {
    const std::size_t bytes = mxrc::ring_bytes(capacity, record_size);
    mem.reset(std::aligned_alloc(64, bytes));
    ring = mxrc::SpscRing::format(mem.get(), capacity, record_size);
  }
};

// Checks records of up to `producers` producers: each one's sequence rises.
struct Checker {
  explicit Checker(std::size_t producers) : last(producers, UINT64_MAX) {}
  std::vector<uint64_t> last;
  uint64_t seen = 0, corrupt = 0, disorder = 0;
  void take(const unsigned char* rec, std::size_t len, uint32_t record_size) {
    ++seen;
    uint64_t seq = 0, who = 0;
    std::memcpy(&seq, rec, 8);
    std::memcpy(&who, rec + 8, 8);
    if (who >= last.size()) {
      ++corrupt;
      return;
    }
    std::vector<unsigned char> want(record_size);
    const std::size_t want_len = make_record(who, seq, record_size, want.data());
    if (want_len != len || std::memcmp(want.data(), rec, len) != 0) {
      ++corrupt;
      return;
    }
    if (last[who] != UINT64_MAX && seq <= last[who]) ++disorder;
    last[who] = seq;
  }
};

void spsc(uint32_t capacity, uint64_t n, bool admission) {
  Ring r(capacity, 256);
  std::atomic<bool> done{false};
  uint64_t refused = 0;
  std::thread producer([&] {
    std::vector<unsigned char> buf(256);
    for (uint64_t seq = 0; seq < n; ++seq) {
      const std::size_t len = make_record(0, seq, 256, buf.data());
      const int rc = admission
                         ? r.ring.try_push_admitted(buf.data(), len, static_cast<int>(seq % 4))
                         : r.ring.try_push(buf.data(), len);
      if (rc == ENOSPC) ++refused;
      if (seq % 1024 == 0) std::this_thread::yield();  // let the consumer catch up sometimes
    }
    done.store(true, std::memory_order_release);
  });
  std::thread monitor([&] {
    while (!done.load(std::memory_order_acquire)) {
      const mxrc::RingCounters c = r.ring.counters();
      check(c.size <= capacity, "size within capacity", c.size, capacity);
      check(r.ring.size() <= capacity, "size() within capacity");
      std::this_thread::yield();
    }
  });
  Checker checker(1);
  std::thread consumer([&] {
    std::vector<unsigned char> buf(256);
    for (;;) {
      const bool stopping = done.load(std::memory_order_acquire);
      std::size_t len = 0;
      const int rc = r.ring.try_pop(buf.data(), buf.size(), &len);
      if (rc == 0) {
        checker.take(buf.data(), len, 256);
      } else if (stopping) {
        break;
      } else {
        std::this_thread::yield();
      }
    }
  });
  producer.join();
  monitor.join();
  consumer.join();
  const mxrc::RingCounters c = r.ring.counters();
  check(checker.corrupt == 0, "no torn or corrupt record", checker.corrupt);
  check(checker.disorder == 0, "order kept, no duplicates", checker.disorder);
  check(c.pushed == n, "pushed counts every attempt", c.pushed, n);
  check(c.dropped == refused, "dropped = ENOSPC returns", c.dropped, refused);
  check(c.popped == checker.seen, "popped = records seen", c.popped, checker.seen);
  check(c.pushed == c.popped + c.dropped + c.size, "pushed = popped + dropped + left");
  check(c.size == 0, "drained", c.size);
  if (admission) {
    uint64_t by_prio = 0;
    for (uint64_t d : c.dropped_by_priority) by_prio += d;
    check(by_prio == c.dropped, "drops by priority add up", by_prio, c.dropped);
  }
  check(c.overflowed == (c.dropped > 0), "overflow flag follows drops");
  std::printf("spsc capacity %u%s: pushed %llu popped %llu dropped %llu\n", capacity,
              admission ? " (admission)" : "", static_cast<unsigned long long>(c.pushed),
              static_cast<unsigned long long>(c.popped),
              static_cast<unsigned long long>(c.dropped));
}

void ring_set(uint64_t n) {
  mxrc::RingCapacities caps;
  caps.log = 16;
  caps.span = 16;
  caps.event = 32;
  caps.critical = 4;
  caps.command = 16;
  const std::size_t bytes = mxrc::ring_set_bytes(caps);
  std::unique_ptr<void, void (*)(void*)> mem(std::aligned_alloc(64, bytes), std::free);
  std::atomic<uint32_t> segment_flag{0};
  mxrc::RingSet set = mxrc::RingSet::format(mem.get(), caps, 0, &segment_flag);
  std::atomic<bool> done{false};
  std::thread producer([&] {
    std::vector<unsigned char> buf(256);
    for (uint64_t seq = 0; seq < n; ++seq) {
      const int prio = static_cast<int>(seq % 4);
      const std::size_t len = make_record(static_cast<uint64_t>(prio == 0), seq, 256, buf.data());
      (void)set.publish_event(buf.data(), len, prio);
    }
    done.store(true, std::memory_order_release);
  });
  Checker checker(2);  // producer 0: event ring, producer 1: critical ring
  std::thread consumer([&] {
    std::vector<unsigned char> buf(256);
    for (;;) {
      const bool stopping = done.load(std::memory_order_acquire);
      std::size_t len = 0;
      bool any = false;
      if (set.event().try_pop(buf.data(), buf.size(), &len) == 0) {
        checker.take(buf.data(), len, 256);
        any = true;
      }
      if (set.critical().try_pop(buf.data(), buf.size(), &len) == 0) {
        checker.take(buf.data(), len, 256);
        any = true;
      }
      if (!any && stopping) break;
      if (!any) std::this_thread::yield();
      (void)set.critical_overflow();
    }
  });
  producer.join();
  consumer.join();
  const auto ev = set.event().counters();
  const auto cr = set.critical().counters();
  check(checker.corrupt == 0, "ring set: no corrupt record", checker.corrupt);
  check(checker.disorder == 0, "ring set: order kept", checker.disorder);
  check(ev.pushed + cr.pushed == n, "ring set: every event offered once", ev.pushed + cr.pushed, n);
  check(ev.popped + cr.popped == checker.seen, "ring set: popped = seen");
  check(set.critical_overflow() == (cr.dropped > 0), "critical flag follows critical drops");
  check((segment_flag.load() != 0) == (cr.dropped > 0), "segment flag follows critical drops");
  std::printf(
      "ring set: events %llu (dropped %llu), critical %llu (dropped %llu)\n",
      static_cast<unsigned long long>(ev.pushed), static_cast<unsigned long long>(ev.dropped),
      static_cast<unsigned long long>(cr.pushed), static_cast<unsigned long long>(cr.dropped));
}

void locked_producers(int producers, uint64_t per_producer) {
  Ring r(64, 128);
  std::atomic<int> running{producers};
  std::vector<std::thread> threads;
  std::atomic<uint64_t> refused{0};
  for (int p = 0; p < producers; ++p) {
    threads.emplace_back([&, p] {
      std::vector<unsigned char> buf(128);
      for (uint64_t seq = 0; seq < per_producer; ++seq) {
        const std::size_t len = make_record(static_cast<uint64_t>(p), seq, 128, buf.data());
        mxrc::RingSideLock lock(r.ring, mxrc::RingSideLock::Producer);
        if (!lock.lock(std::chrono::seconds(10))) {
          check(false, "producer lock taken");
          break;
        }
        if (r.ring.try_push(buf.data(), len) == ENOSPC) refused.fetch_add(1);
      }
      running.fetch_sub(1, std::memory_order_release);
    });
  }
  Checker checker(static_cast<std::size_t>(producers));
  std::thread consumer([&] {
    std::vector<unsigned char> buf(128);
    for (;;) {
      const bool stopping = running.load(std::memory_order_acquire) == 0;
      std::size_t len = 0;
      mxrc::RingSideLock lock(r.ring, mxrc::RingSideLock::Consumer);
      if (!lock.lock(std::chrono::seconds(10))) {
        check(false, "consumer lock taken");
        break;
      }
      const int rc = r.ring.try_pop(buf.data(), buf.size(), &len);
      lock.unlock();
      if (rc == 0) {
        checker.take(buf.data(), len, 128);
      } else if (stopping) {
        break;
      } else {
        std::this_thread::yield();
      }
    }
  });
  for (auto& t : threads) t.join();
  consumer.join();
  const auto c = r.ring.counters();
  const uint64_t n = per_producer * static_cast<uint64_t>(producers);
  check(checker.corrupt == 0, "locked producers: no corrupt record", checker.corrupt);
  check(checker.disorder == 0, "locked producers: each producer's order kept", checker.disorder);
  check(c.pushed == n, "locked producers: pushed", c.pushed, n);
  check(c.dropped == refused.load(), "locked producers: dropped", c.dropped, refused.load());
  check(c.popped == checker.seen && c.size == 0, "locked producers: drained");
  std::printf("locked producers: pushed %llu popped %llu dropped %llu\n",
              static_cast<unsigned long long>(c.pushed), static_cast<unsigned long long>(c.popped),
              static_cast<unsigned long long>(c.dropped));
}

#ifdef MXRC_TSAN_SELF_CHECK
int plain_counter = 0;  // deliberately not atomic
void deliberate_race() {
  std::thread t([] {
    for (int i = 0; i < 1000; ++i) plain_counter = plain_counter + 1;
  });
  for (int i = 0; i < 1000; ++i) plain_counter = plain_counter + 1;
  t.join();
}
#endif

}  // namespace

int main(int argc, char** argv) {
  const uint64_t scale = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 1;
#ifdef MXRC_TSAN_SELF_CHECK
  deliberate_race();
#endif
  spsc(16, 50'000 * scale, false);    // small ring: many drops
  spsc(1024, 50'000 * scale, false);  // roomy ring: few drops
  spsc(64, 50'000 * scale, true);     // admission by priority
  ring_set(40'000 * scale);
  locked_producers(3, 5'000 * scale);
  if (failures != 0) {
    std::fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  std::printf("ok\n");
  return 0;
}
