// CPU sets: a sorted list of CPU numbers for APIs, a fixed-size bit mask for
// system calls (no allocation, usable on the setup path of a cycle thread).
#pragma once

#include <sched.h>

#include <array>
#include <cstddef>
#include <string>
#include <vector>

namespace mxrc {

// CPU numbers, sorted ascending, no duplicates.
using CpuSet = std::vector<int>;

// A fixed-capacity CPU mask laid out like the kernel's cpu_set_t, large
// enough for any kernel (CONFIG_NR_CPUS <= 8192). 1 KiB, no allocation.
class CpuMask {
 public:
  static constexpr int kMaxCpus = 8192;

  void clear() noexcept { words_.fill(0UL); }
  // Returns false (and leaves the mask unchanged) for a CPU outside
  // [0, kMaxCpus).
  bool set(int cpu) noexcept;
  bool test(int cpu) const noexcept;
  int count() const noexcept;
  bool empty() const noexcept { return count() == 0; }
  // True when every CPU of this mask is in `other`.
  bool subset_of(const CpuMask& other) const noexcept;

  cpu_set_t* data() noexcept { return reinterpret_cast<cpu_set_t*>(words_.data()); }
  const cpu_set_t* data() const noexcept {
    return reinterpret_cast<const cpu_set_t*>(words_.data());
  }
  static constexpr std::size_t bytes() noexcept { return sizeof(Words); }

  CpuSet to_set() const;
  // Throws std::invalid_argument naming a CPU outside [0, kMaxCpus).
  static CpuMask from_set(const CpuSet& cpus);

 private:
  static constexpr std::size_t kBitsPerWord = 8 * sizeof(unsigned long);
  using Words = std::array<unsigned long, static_cast<std::size_t>(kMaxCpus) / kBitsPerWord>;
  Words words_{};
};

// Kernel CPU-list syntax ("0-3,8,10-11", also "0-7:2"). Throws
// std::invalid_argument naming the bad part.
CpuSet parse_cpulist(const std::string& text);
// Sorted, with runs collapsed: {0,1,2,3,8} -> "0-3,8".
std::string format_cpulist(const CpuSet& cpus);
// Sorts and removes duplicates.
CpuSet normalize(CpuSet cpus);

// CPUs online now, from /sys/devices/system/cpu/online. Throws SystemError
// when the file cannot be read.
CpuSet online_cpus();

}  // namespace mxrc
