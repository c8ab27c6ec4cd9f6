// Locked and prefaulted memory, timer slack.
#pragma once

#include <cstddef>

namespace mxrc {

std::size_t page_size() noexcept;

// mlockall(MCL_CURRENT | MCL_FUTURE [| MCL_ONFAULT]). With on_fault (the
// default) pages are locked when first touched instead of being faulted in
// all at once (a new thread's whole stack is not populated); prefault what the
// cycle touches. The kernel still counts the full size of every locked
// mapping against RLIMIT_MEMLOCK (MCL_CURRENT: the whole address space), so
// without CAP_IPC_LOCK the limit must be unlimited. Throws SystemError (mlockall): EPERM/ENOMEM
// when RLIMIT_MEMLOCK is too small and CAP_IPC_LOCK is missing.
void lock_memory(bool on_fault = true);
[[nodiscard]] int try_lock_memory(bool on_fault = true) noexcept;

// munlockall(). Throws SystemError (munlockall).
void unlock_memory();

// Bytes of the calling thread's stack below the current stack pointer, or 0
// when unknown (pthread_getattr_np failed).
std::size_t stack_bytes_available() noexcept;

// The largest nbytes prefault_stack() accepts on the calling thread here: the
// stack left minus a 64 KiB margin (0 when unknown).
std::size_t max_prefault_stack_bytes() noexcept;

// Touches nbytes of the calling thread's stack below the current frame, page
// by page, so later calls do not page-fault. Throws std::invalid_argument
// when nbytes (plus a 64 KiB margin) exceeds the stack left.
void prefault_stack(std::size_t nbytes);
[[nodiscard]] int try_prefault_stack(std::size_t nbytes) noexcept;  // 0 or EINVAL

// Faults in every page of [addr, addr + len) for writing, keeping the
// contents (MADV_POPULATE_WRITE, else an atomic read-modify-write of one byte
// per page). Throws SystemError (madvise).
void prefault(void* addr, std::size_t len);
[[nodiscard]] int try_prefault(void* addr, std::size_t len) noexcept;

// PR_SET_TIMERSLACK on the calling thread. 0 restores the thread's default
// (the value it inherited). Throws SystemError (prctl).
void set_timer_slack_ns(unsigned long ns);
[[nodiscard]] int try_set_timer_slack_ns(unsigned long ns) noexcept;
unsigned long get_timer_slack_ns();

}  // namespace mxrc
