#include "mxrc/memory.hpp"

#include <alloca.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "mxrc/error.hpp"

#ifndef MCL_ONFAULT
#define MCL_ONFAULT 4
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

namespace mxrc {

namespace {
// Stack kept free below the prefaulted region for the calls that follow.
constexpr std::size_t kStackMargin = 64 * 1024;

__attribute__((noinline)) void touch_stack(std::size_t nbytes, std::size_t page) noexcept {
  // alloca places the block just below this frame; touch it from the top
  // (nearest the current frame) down, one write per page, so the stack grows
  // in order. volatile keeps the writes.
  volatile char* block = static_cast<volatile char*>(alloca(nbytes));
  for (std::size_t off = nbytes; off > 0;) {
    const std::size_t step = off < page ? off : page;
    off -= step;
    block[off] = 0;
  }
}
}  // namespace

std::size_t page_size() noexcept {
  static const std::size_t size = [] {
    const long raw = ::sysconf(_SC_PAGESIZE);
    return raw > 0 ? static_cast<std::size_t>(raw) : std::size_t{4096};
  }();
  return size;
}

int try_lock_memory(bool on_fault) noexcept {
  int flags = MCL_CURRENT | MCL_FUTURE;
  if (on_fault) flags |= MCL_ONFAULT;
  return ::mlockall(flags) == 0 ? 0 : errno;
}

void lock_memory(bool on_fault) {
  const int err = try_lock_memory(on_fault);
  if (err != 0) {
    throw SystemError(err, "mlockall",
                      std::string("cannot lock the process's memory (MCL_CURRENT | MCL_FUTURE") +
                          (on_fault ? " | MCL_ONFAULT)" : ")"));
  }
}

void unlock_memory() {
  if (::munlockall() != 0) throw SystemError(errno, "munlockall", "cannot unlock memory");
}

std::size_t stack_bytes_available() noexcept {
  pthread_attr_t attr;
  if (::pthread_getattr_np(::pthread_self(), &attr) != 0) return 0;  // returns the error
  void* low = nullptr;
  std::size_t size = 0;
  const int rc = ::pthread_attr_getstack(&attr, &low, &size);
  ::pthread_attr_destroy(&attr);
  if (rc != 0) return 0;
  volatile char here = 0;
  const auto sp = reinterpret_cast<std::uintptr_t>(&here);
  const auto bottom = reinterpret_cast<std::uintptr_t>(low);
  return sp > bottom ? static_cast<std::size_t>(sp - bottom) : 0;
}

std::size_t max_prefault_stack_bytes() noexcept {
  const std::size_t avail = stack_bytes_available();
  return avail > kStackMargin ? avail - kStackMargin : 0;
}

int try_prefault_stack(std::size_t nbytes) noexcept {
  if (nbytes == 0) return 0;
  const std::size_t avail = stack_bytes_available();
  if (avail < kStackMargin || nbytes > avail - kStackMargin) return EINVAL;
  touch_stack(nbytes, page_size());
  return 0;
}

void prefault_stack(std::size_t nbytes) {
  if (try_prefault_stack(nbytes) != 0) {
    const std::size_t avail = stack_bytes_available();
    throw std::invalid_argument(
        "cannot prefault " + std::to_string(nbytes) + " bytes of stack: the calling thread has " +
        std::to_string(avail) + " bytes of stack left and " + std::to_string(kStackMargin) +
        " must stay free (give the thread a larger stack or prefault less)");
  }
}

int try_prefault(void* addr, std::size_t len) noexcept {
  if (len == 0) return 0;
  if (addr == nullptr) return EINVAL;
  const std::size_t page = page_size();
  const auto begin = reinterpret_cast<std::uintptr_t>(addr);
  const std::uintptr_t first = begin & ~(static_cast<std::uintptr_t>(page) - 1);
  const std::uintptr_t end = begin + len;
  const std::uintptr_t last = (end + page - 1) & ~(static_cast<std::uintptr_t>(page) - 1);
  // MADV_POPULATE_WRITE (Linux 5.14) faults the pages in for writing without
  // changing a byte, and is safe while other threads write to the buffer.
  if (::madvise(reinterpret_cast<void*>(first), static_cast<std::size_t>(last - first),
                MADV_POPULATE_WRITE) == 0) {
    return 0;
  }
  if (errno != EINVAL) return errno;
  // Older kernels: an atomic add of 0 to one byte per page writes the page
  // (a write fault) and keeps its contents even with concurrent writers.
  auto* bytes = static_cast<unsigned char*>(addr);
  for (std::uintptr_t p = begin; p < end;
       p = (p & ~(static_cast<std::uintptr_t>(page) - 1)) + page) {
    __atomic_fetch_add(bytes + (p - begin), static_cast<unsigned char>(0), __ATOMIC_RELAXED);
  }
  return 0;
}

void prefault(void* addr, std::size_t len) {
  const int err = try_prefault(addr, len);
  if (err != 0) {
    throw SystemError(err, "madvise",
                      "cannot prefault a buffer of " + std::to_string(len) + " bytes");
  }
}

int try_set_timer_slack_ns(unsigned long ns) noexcept {
  return ::prctl(PR_SET_TIMERSLACK, ns, 0UL, 0UL, 0UL) == 0 ? 0 : errno;
}

void set_timer_slack_ns(unsigned long ns) {
  const int err = try_set_timer_slack_ns(ns);
  if (err != 0) {
    throw SystemError(
        err, "prctl",
        "cannot set the timer slack to " + std::to_string(ns) + " ns (PR_SET_TIMERSLACK)");
  }
}

unsigned long get_timer_slack_ns() {
  const int raw = ::prctl(PR_GET_TIMERSLACK, 0UL, 0UL, 0UL, 0UL);
  if (raw < 0) throw SystemError(errno, "prctl", "cannot read the timer slack (PR_GET_TIMERSLACK)");
  return static_cast<unsigned long>(raw);
}

}  // namespace mxrc
