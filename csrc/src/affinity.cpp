#include "mxrc/affinity.hpp"

#include <dirent.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <set>
#include <stdexcept>
#include <string>

#include "mxrc/error.hpp"

namespace mxrc {

pid_t current_tid() noexcept { return static_cast<pid_t>(::syscall(SYS_gettid)); }

namespace {
std::string thread_name(pid_t tid) {
  return tid == 0 ? std::string("the calling thread") : "thread " + std::to_string(tid);
}

CpuMask read_mask(pid_t tid) {
  CpuMask mask;
  if (::sched_getaffinity(tid, CpuMask::bytes(), mask.data()) != 0) {
    throw SystemError(errno, "sched_getaffinity",
                      "cannot read the CPU affinity of " + thread_name(tid));
  }
  return mask;
}

CpuMask checked_mask(const CpuSet& cpus) {
  if (cpus.empty()) throw std::invalid_argument("an empty CPU set cannot be an affinity mask");
  return CpuMask::from_set(cpus);
}
}  // namespace

CpuSet get_thread_affinity(pid_t tid) { return read_mask(tid).to_set(); }

int try_set_thread_affinity(const CpuMask& mask, pid_t tid) noexcept {
  if (mask.empty()) return EINVAL;
  return ::sched_setaffinity(tid, CpuMask::bytes(), mask.data()) == 0 ? 0 : errno;
}

void set_thread_affinity(const CpuSet& cpus, pid_t tid) {
  const CpuMask mask = checked_mask(cpus);
  const int err = try_set_thread_affinity(mask, tid);
  if (err != 0) {
    throw SystemError(err, "sched_setaffinity",
                      "cannot pin " + thread_name(tid) + " to CPUs " + format_cpulist(cpus));
  }
}

std::vector<pid_t> list_threads(pid_t pid) {
  const std::string dir =
      pid == 0 ? std::string("/proc/self/task") : "/proc/" + std::to_string(pid) + "/task";
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) throw SystemError(errno, "opendir", "cannot list the threads in " + dir);
  std::vector<pid_t> tids;
  int err = 0;
  for (;;) {
    errno = 0;  // readdir signals an error only through errno (strtol may set it too)
    const dirent* entry = ::readdir(d);
    if (entry == nullptr) {
      err = errno;
      break;
    }
    char* end = nullptr;
    const long tid = std::strtol(entry->d_name, &end, 10);
    if (end != entry->d_name && *end == '\0' && tid > 0) tids.push_back(static_cast<pid_t>(tid));
  }
  ::closedir(d);
  if (err != 0) throw SystemError(err, "readdir", "cannot list the threads in " + dir);
  return tids;
}

std::map<pid_t, CpuSet> get_process_affinity(pid_t pid) {
  std::map<pid_t, CpuSet> out;
  for (pid_t tid : list_threads(pid)) {
    CpuMask mask;
    if (::sched_getaffinity(tid, CpuMask::bytes(), mask.data()) != 0) {
      if (errno == ESRCH) continue;  // the thread exited meanwhile
      throw SystemError(errno, "sched_getaffinity",
                        "cannot read the CPU affinity of thread " + std::to_string(tid));
    }
    out.emplace(tid, mask.to_set());
  }
  return out;
}

std::map<pid_t, CpuSet> set_process_affinity(const CpuSet& cpus, pid_t pid) {
  const CpuMask mask = checked_mask(cpus);
  std::map<pid_t, CpuMask> previous;
  std::set<pid_t> done;
  auto rollback = [&previous]() noexcept {
    for (const auto& [tid, old] : previous) {
      (void)::sched_setaffinity(tid, CpuMask::bytes(), old.data());
    }
  };
  // A thread may start while we walk: walk again until a pass finds no new
  // thread (bounded; a process that keeps spawning threads faster than we
  // can walk is reported).
  constexpr int kMaxPasses = 64;
  for (int pass = 0;; ++pass) {
    bool found_new = false;
    std::vector<pid_t> tids;
    try {
      tids = list_threads(pid);
    } catch (...) {
      rollback();
      throw;
    }
    for (pid_t tid : tids) {
      if (done.count(tid) != 0) continue;
      found_new = true;
      done.insert(tid);
      CpuMask old;
      if (::sched_getaffinity(tid, CpuMask::bytes(), old.data()) != 0) {
        if (errno == ESRCH) continue;
        const int err = errno;
        rollback();
        throw SystemError(err, "sched_getaffinity",
                          "cannot read the CPU affinity of thread " + std::to_string(tid));
      }
      if (::sched_setaffinity(tid, CpuMask::bytes(), mask.data()) != 0) {
        if (errno == ESRCH) continue;
        const int err = errno;
        rollback();
        throw SystemError(err, "sched_setaffinity",
                          "cannot pin thread " + std::to_string(tid) + " to CPUs " +
                              format_cpulist(cpus) + " (no thread of the process was changed)");
      }
      previous.emplace(tid, old);
    }
    if (!found_new) break;
    if (pass + 1 >= kMaxPasses) {
      rollback();
      throw SystemError(EAGAIN, "sched_setaffinity",
                        "threads kept starting while pinning the process; nothing was changed");
    }
  }
  std::map<pid_t, CpuSet> out;
  for (const auto& [tid, old] : previous) out.emplace(tid, old.to_set());
  return out;
}

}  // namespace mxrc
