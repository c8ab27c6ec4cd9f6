// NUMA memory policy through the system calls directly (no libnuma).
// Policies are per thread (set_mempolicy) or per address range (mbind);
// neither moves pages that already exist unless asked to.
#pragma once

#include <sys/types.h>

#include <array>
#include <cstddef>
#include <vector>

namespace mxrc {

enum class MemPolicy : int {
  Default = 0,             // MPOL_DEFAULT: the process default (local)
  Preferred = 1,           // MPOL_PREFERRED: one node first, others if full
  Bind = 2,                // MPOL_BIND: only these nodes
  Interleave = 3,          // MPOL_INTERLEAVE: round-robin over nodes
  Local = 4,               // MPOL_LOCAL: the node of the allocating CPU
  PreferredMany = 5,       // MPOL_PREFERRED_MANY (Linux 5.15)
  WeightedInterleave = 6,  // MPOL_WEIGHTED_INTERLEAVE (Linux 6.9)
};

using NodeSet = std::vector<int>;

// A fixed-size node mask (1024 nodes, the kernel's maximum), no allocation.
class NodeMask {
 public:
  static constexpr int kMaxNodes = 1024;
  bool set(int node) noexcept;
  bool test(int node) const noexcept;
  int count() const noexcept;
  bool subset_of(const NodeMask& other) const noexcept;
  unsigned long* data() noexcept { return words_.data(); }
  const unsigned long* data() const noexcept { return words_.data(); }
  // The `maxnode` argument for this mask (the kernel reads maxnode - 1 bits).
  static constexpr unsigned long maxnode() noexcept { return kMaxNodes + 1; }
  NodeSet to_set() const;
  static NodeMask from_set(const NodeSet& nodes);  // std::invalid_argument

 private:
  static constexpr std::size_t kBitsPerWord = 8 * sizeof(unsigned long);
  std::array<unsigned long, static_cast<std::size_t>(kMaxNodes) / kBitsPerWord> words_{};
};

struct MemPolicyInfo {
  MemPolicy policy = MemPolicy::Default;
  unsigned flags = 0;  // MPOL_F_STATIC_NODES / MPOL_F_RELATIVE_NODES
  NodeSet nodes;
};

// Nodes this thread may allocate from (get_mempolicy MPOL_F_MEMS_ALLOWED).
NodeSet allowed_memory_nodes();

// set_mempolicy for the calling thread. DEFAULT and LOCAL take no nodes,
// PREFERRED exactly one, the others at least one. Throws
// std::invalid_argument naming a node outside the allowed nodes or a wrong
// node count, SystemError (set_mempolicy) otherwise.
void set_memory_policy(MemPolicy policy, const NodeSet& nodes, unsigned flags = 0);
// Non-throwing: 0 or errno (EINVAL for the cases above).
[[nodiscard]] int try_set_memory_policy(MemPolicy policy, const NodeMask& nodes,
                                        unsigned flags = 0) noexcept;

// The calling thread's policy (get_mempolicy).
MemPolicyInfo get_memory_policy();
// The policy governing the page that holds addr (MPOL_F_ADDR).
MemPolicyInfo get_memory_policy_at(const void* addr);
// The node that holds the page at addr (MPOL_F_NODE | MPOL_F_ADDR); the page
// must have been touched.
int node_of_address(const void* addr);

// mbind on [addr, addr + len); addr must be page-aligned. flags: MPOL_MF_*
// (STRICT, MOVE, MOVE_ALL). Throws like set_memory_policy, SystemError (mbind).
void bind_memory(void* addr, std::size_t len, MemPolicy policy, const NodeSet& nodes,
                 unsigned flags = 0);

// Moves the pages of process pid (0: this one) from `from` to `to` nodes.
// Returns the number of pages that could not be moved. SystemError
// (migrate_pages).
long migrate_pages(pid_t pid, const NodeSet& from, const NodeSet& to);

}  // namespace mxrc
