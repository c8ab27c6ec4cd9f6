#include "mxrc/numa.hpp"

#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "mxrc/cpuset.hpp"
#include "mxrc/error.hpp"
#include "mxrc/memory.hpp"

namespace mxrc {

namespace {
constexpr unsigned long kFlagNode = 1UL << 0;                  // MPOL_F_NODE
constexpr unsigned long kFlagAddr = 1UL << 1;                  // MPOL_F_ADDR
constexpr unsigned long kFlagMemsAllowed = 1UL << 2;           // MPOL_F_MEMS_ALLOWED
constexpr int kModeFlags = (1 << 15) | (1 << 14) | (1 << 13);  // MPOL_MODE_FLAGS

long sys_get_mempolicy(int* mode, unsigned long* mask, unsigned long maxnode, const void* addr,
                       unsigned long flags) noexcept {
  return ::syscall(SYS_get_mempolicy, mode, mask, maxnode, addr, flags);
}

const char* mode_name(MemPolicy policy) noexcept {
  switch (policy) {
    case MemPolicy::Default:
      return "DEFAULT";
    case MemPolicy::Preferred:
      return "PREFERRED";
    case MemPolicy::Bind:
      return "BIND";
    case MemPolicy::Interleave:
      return "INTERLEAVE";
    case MemPolicy::Local:
      return "LOCAL";
    case MemPolicy::PreferredMany:
      return "PREFERRED_MANY";
    case MemPolicy::WeightedInterleave:
      return "WEIGHTED_INTERLEAVE";
  }
  return "unknown";
}

// 0 when the node count suits the policy, EINVAL otherwise.
int check_count(MemPolicy policy, int count) noexcept {
  switch (policy) {
    case MemPolicy::Default:
    case MemPolicy::Local:
      return count == 0 ? 0 : EINVAL;
    case MemPolicy::Preferred:
      return count == 1 ? 0 : EINVAL;
    case MemPolicy::Bind:
    case MemPolicy::Interleave:
    case MemPolicy::PreferredMany:
    case MemPolicy::WeightedInterleave:
      return count >= 1 ? 0 : EINVAL;
  }
  return EINVAL;
}

int allowed_mask(NodeMask* out) noexcept {
  int mode = 0;
  return sys_get_mempolicy(&mode, out->data(), NodeMask::maxnode(), nullptr, kFlagMemsAllowed) == 0
             ? 0
             : errno;
}

// Throws std::invalid_argument for a node outside the allowed nodes or a
// node count that does not suit the policy.
NodeMask checked_nodes(MemPolicy policy, const NodeSet& nodes) {
  const int raw = static_cast<int>(policy);
  if (raw < static_cast<int>(MemPolicy::Default) ||
      raw > static_cast<int>(MemPolicy::WeightedInterleave)) {
    throw std::invalid_argument("unknown memory policy " + std::to_string(raw) +
                                " (expected MPOL_DEFAULT 0 .. MPOL_WEIGHTED_INTERLEAVE 6)");
  }
  const NodeMask mask = NodeMask::from_set(nodes);
  if (check_count(policy, mask.count()) != 0) {
    std::string need = policy == MemPolicy::Preferred ? "exactly one node"
                       : (policy == MemPolicy::Default || policy == MemPolicy::Local)
                           ? "no nodes"
                           : "at least one node";
    throw std::invalid_argument(std::string("memory policy ") + mode_name(policy) + " takes " +
                                need + "; got {" + format_cpulist(nodes) + "}");
  }
  NodeMask allowed;
  if (allowed_mask(&allowed) == 0) {
    for (int node : nodes) {
      if (!allowed.test(node)) {
        throw std::invalid_argument(
            "NUMA node " + std::to_string(node) + " is not available: this thread may use nodes " +
            format_cpulist(allowed.to_set()) + " (online nodes in its cpuset's mems)");
      }
    }
  }
  return mask;
}

MemPolicyInfo to_info(int mode, const NodeMask& mask) {
  MemPolicyInfo info;
  info.flags = static_cast<unsigned>(mode & kModeFlags);
  info.policy = static_cast<MemPolicy>(mode & ~kModeFlags);
  info.nodes = mask.to_set();
  // Kernels before 5.x report LOCAL as PREFERRED with no node.
  if (info.policy == MemPolicy::Preferred && info.nodes.empty()) info.policy = MemPolicy::Local;
  return info;
}
}  // namespace

bool NodeMask::set(int node) noexcept {
  if (node < 0 || node >= kMaxNodes) return false;
  const auto bit = static_cast<std::size_t>(node);
  words_[bit / kBitsPerWord] |= 1UL << (bit % kBitsPerWord);
  return true;
}

bool NodeMask::test(int node) const noexcept {
  if (node < 0 || node >= kMaxNodes) return false;
  const auto bit = static_cast<std::size_t>(node);
  return (words_[bit / kBitsPerWord] >> (bit % kBitsPerWord)) & 1UL;
}

int NodeMask::count() const noexcept {
  int n = 0;
  for (unsigned long w : words_) n += __builtin_popcountl(w);
  return n;
}

bool NodeMask::subset_of(const NodeMask& other) const noexcept {
  for (std::size_t i = 0; i < words_.size(); ++i) {
    if ((words_[i] & ~other.words_[i]) != 0UL) return false;
  }
  return true;
}

NodeSet NodeMask::to_set() const {
  NodeSet out;
  for (int node = 0; node < kMaxNodes; ++node) {
    if (test(node)) out.push_back(node);
  }
  return out;
}

NodeMask NodeMask::from_set(const NodeSet& nodes) {
  NodeMask mask;
  for (int node : nodes) {
    if (!mask.set(node)) {
      throw std::invalid_argument("NUMA node " + std::to_string(node) +
                                  " is out of range (expected 0.." + std::to_string(kMaxNodes - 1) +
                                  ")");
    }
  }
  return mask;
}

NodeSet allowed_memory_nodes() {
  NodeMask mask;
  const int err = allowed_mask(&mask);
  if (err != 0) {
    throw SystemError(err, "get_mempolicy", "cannot read the allowed NUMA nodes");
  }
  return mask.to_set();
}

int try_set_memory_policy(MemPolicy policy, const NodeMask& nodes, unsigned flags) noexcept {
  if (check_count(policy, nodes.count()) != 0) return EINVAL;
  const int mode = static_cast<int>(policy) | static_cast<int>(flags);
  const bool empty = nodes.count() == 0;
  const long rc = ::syscall(SYS_set_mempolicy, mode, empty ? nullptr : nodes.data(),
                            empty ? 0UL : NodeMask::maxnode());
  return rc == 0 ? 0 : errno;
}

void set_memory_policy(MemPolicy policy, const NodeSet& nodes, unsigned flags) {
  const NodeMask mask = checked_nodes(policy, nodes);
  const int err = try_set_memory_policy(policy, mask, flags);
  if (err != 0) {
    throw SystemError(err, "set_mempolicy",
                      std::string("cannot set memory policy ") + mode_name(policy) + " on nodes {" +
                          format_cpulist(nodes) + "}");
  }
}

MemPolicyInfo get_memory_policy() {
  int mode = 0;
  NodeMask mask;
  if (sys_get_mempolicy(&mode, mask.data(), NodeMask::maxnode(), nullptr, 0UL) != 0) {
    throw SystemError(errno, "get_mempolicy", "cannot read the thread's memory policy");
  }
  return to_info(mode, mask);
}

MemPolicyInfo get_memory_policy_at(const void* addr) {
  int mode = 0;
  NodeMask mask;
  if (sys_get_mempolicy(&mode, mask.data(), NodeMask::maxnode(), addr, kFlagAddr) != 0) {
    throw SystemError(errno, "get_mempolicy", "cannot read the memory policy at an address");
  }
  return to_info(mode, mask);
}

int node_of_address(const void* addr) {
  int node = -1;
  if (sys_get_mempolicy(&node, nullptr, 0UL, addr, kFlagNode | kFlagAddr) != 0) {
    throw SystemError(errno, "get_mempolicy", "cannot read the NUMA node of an address");
  }
  return node;
}

void bind_memory(void* addr, std::size_t len, MemPolicy policy, const NodeSet& nodes,
                 unsigned flags) {
  if (reinterpret_cast<std::uintptr_t>(addr) % page_size() != 0) {
    throw std::invalid_argument("mbind needs a page-aligned address (page size " +
                                std::to_string(page_size()) + " bytes)");
  }
  const NodeMask mask = checked_nodes(policy, nodes);
  const bool empty = mask.count() == 0;
  const long rc =
      ::syscall(SYS_mbind, addr, len, static_cast<int>(policy), empty ? nullptr : mask.data(),
                empty ? 0UL : NodeMask::maxnode(), flags);
  if (rc != 0) {
    throw SystemError(errno, "mbind",
                      std::string("cannot bind ") + std::to_string(len) + " bytes to policy " +
                          mode_name(policy) + " on nodes {" + format_cpulist(nodes) + "}");
  }
}

long migrate_pages(pid_t pid, const NodeSet& from, const NodeSet& to) {
  const NodeMask from_mask = NodeMask::from_set(from);
  const NodeMask to_mask = NodeMask::from_set(to);
  if (from_mask.count() == 0 || to_mask.count() == 0) {
    throw std::invalid_argument("migrate_pages needs at least one source and one target node");
  }
  const long rc =
      ::syscall(SYS_migrate_pages, pid, NodeMask::maxnode(), from_mask.data(), to_mask.data());
  if (rc < 0) {
    throw SystemError(
        errno, "migrate_pages",
        "cannot migrate pages of " +
            (pid == 0 ? std::string("this process") : "process " + std::to_string(pid)) +
            " from nodes {" + format_cpulist(from) + "} to {" + format_cpulist(to) + "}");
  }
  return rc;
}

}  // namespace mxrc
