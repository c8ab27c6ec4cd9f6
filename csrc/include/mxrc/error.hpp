// Errors raised by the non-hot-path system layer.
//
// Hot-path code never throws; it returns a [[nodiscard]] status. Setup calls
// (affinity, scheduling, memory policy) throw these so that the errno and the
// system call that produced it travel together to the caller.
#pragma once

#include <stdexcept>
#include <string>
#include <system_error>

namespace mxrc {

// A failed system call: carries errno and the call's name. The Python
// binding turns it into OSError(errno, "<what> (from <syscall>)").
class SystemError : public std::system_error {
 public:
  SystemError(int err, const std::string& syscall, const std::string& what)
      : std::system_error(err, std::generic_category(), what + " (from " + syscall + ")"),
        syscall_(syscall) {}
  const std::string& syscall() const noexcept { return syscall_; }

 private:
  std::string syscall_;
};

// The host or kernel cannot do what was asked (e.g. SCHED_DEADLINE on a thread
// pinned to a subset of CPUs). Python: mxrc.UnsupportedError.
class UnsupportedError : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

}  // namespace mxrc
