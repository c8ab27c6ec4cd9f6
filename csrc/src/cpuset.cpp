#include "mxrc/cpuset.hpp"

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "mxrc/error.hpp"

namespace mxrc {

bool CpuMask::set(int cpu) noexcept {
  if (cpu < 0 || cpu >= kMaxCpus) return false;
  const auto bit = static_cast<std::size_t>(cpu);
  words_[bit / kBitsPerWord] |= 1UL << (bit % kBitsPerWord);
  return true;
}

bool CpuMask::test(int cpu) const noexcept {
  if (cpu < 0 || cpu >= kMaxCpus) return false;
  const auto bit = static_cast<std::size_t>(cpu);
  return (words_[bit / kBitsPerWord] >> (bit % kBitsPerWord)) & 1UL;
}

int CpuMask::count() const noexcept {
  int n = 0;
  for (unsigned long w : words_) n += __builtin_popcountl(w);
  return n;
}

bool CpuMask::subset_of(const CpuMask& other) const noexcept {
  for (std::size_t i = 0; i < words_.size(); ++i) {
    if ((words_[i] & ~other.words_[i]) != 0UL) return false;
  }
  return true;
}

CpuSet CpuMask::to_set() const {
  CpuSet out;
  for (int cpu = 0; cpu < kMaxCpus; ++cpu) {
    if (test(cpu)) out.push_back(cpu);
  }
  return out;
}

CpuMask CpuMask::from_set(const CpuSet& cpus) {
  CpuMask mask;
  for (int cpu : cpus) {
    if (!mask.set(cpu)) {
      throw std::invalid_argument("CPU " + std::to_string(cpu) + " is out of range (expected 0.." +
                                  std::to_string(kMaxCpus - 1) + ")");
    }
  }
  return mask;
}

CpuSet normalize(CpuSet cpus) {
  std::sort(cpus.begin(), cpus.end());
  cpus.erase(std::unique(cpus.begin(), cpus.end()), cpus.end());
  return cpus;
}

namespace {
int parse_number(const std::string& part, const std::string& whole) {
  std::size_t used = 0;
  int value = -1;
  try {
    value = std::stoi(part, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != part.size() || part.empty() || value < 0 || value >= CpuMask::kMaxCpus) {
    throw std::invalid_argument("bad CPU list entry '" + part + "' in '" + whole +
                                "' (expected N, N-M or N-M:stride with 0 <= N <= M < " +
                                std::to_string(CpuMask::kMaxCpus) + ")");
  }
  return value;
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\n");
  if (b == std::string::npos) return "";
  const auto e = s.find_last_not_of(" \t\n");
  return s.substr(b, e - b + 1);
}
}  // namespace

CpuSet parse_cpulist(const std::string& text) {
  const std::string whole = trim(text);
  CpuSet out;
  std::stringstream ss(whole);
  std::string raw;
  while (std::getline(ss, raw, ',')) {
    const std::string part = trim(raw);
    if (part.empty()) continue;
    const auto dash = part.find('-');
    if (dash == std::string::npos) {
      out.push_back(parse_number(part, whole));
      continue;
    }
    const auto colon = part.find(':');
    const int lo = parse_number(part.substr(0, dash), whole);
    const int hi = parse_number(
        part.substr(dash + 1, colon == std::string::npos ? std::string::npos : colon - dash - 1),
        whole);
    const int stride = colon == std::string::npos ? 1 : parse_number(part.substr(colon + 1), whole);
    if (lo > hi || stride < 1) {
      throw std::invalid_argument("bad CPU list entry '" + part + "' in '" + whole +
                                  "' (expected N, N-M or N-M:stride with 0 <= N <= M < " +
                                  std::to_string(CpuMask::kMaxCpus) + ")");
    }
    for (int cpu = lo; cpu <= hi; cpu += stride) out.push_back(cpu);
  }
  return normalize(std::move(out));
}

std::string format_cpulist(const CpuSet& cpus_in) {
  const CpuSet cpus = normalize(cpus_in);
  std::string out;
  std::size_t i = 0;
  while (i < cpus.size()) {
    std::size_t j = i;
    while (j + 1 < cpus.size() && cpus[j + 1] == cpus[j] + 1) ++j;
    if (!out.empty()) out += ',';
    out += std::to_string(cpus[i]);
    if (j > i) out += '-' + std::to_string(cpus[j]);
    i = j + 1;
  }
  return out;
}

CpuSet online_cpus() {
  const char* path = "/sys/devices/system/cpu/online";
  errno = 0;  // ifstream need not set it: do not report a stale value
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) {
    throw SystemError(errno ? errno : EIO, "open", std::string("cannot read ") + path);
  }
  return parse_cpulist(line);
}

}  // namespace mxrc
