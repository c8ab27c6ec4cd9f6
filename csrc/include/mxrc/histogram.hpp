// HDR-style log-linear histogram of uint64 nanoseconds in fixed memory.
//
// Layout: values 0..63 have one bucket each (exact). Above, every power of two
// [2^e, 2^(e+1)) is split into 32 equal sub-buckets of width 2^(e-5), so a
// bucket's width is at most 1/32 (~3.1 %) of any value in it. Values up to
// kMaxTrackable (2^41 - 1 ns, ~36 min) are bucketed; larger ones only count in
// `overflow` (and in count/sum/min/max).
//
// The histogram lives in shared memory: every member is a std::atomic. record()
// is for a SINGLE writer (relaxed load + store, no read-modify-write); readers
// in other threads/processes load relaxed and get consistency from the
// enclosing seqlock (see stats.hpp). It never allocates, locks or makes
// system calls.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>

namespace mxrc {

namespace hist {
inline constexpr unsigned kSubBits = 5;                         // 32 sub-buckets per power of two
inline constexpr uint64_t kSubCount = uint64_t{1} << kSubBits;  // 32
inline constexpr unsigned kMaxExponent = 40;                    // highest power of two bucketed
inline constexpr uint64_t kMaxTrackable = (uint64_t{1} << (kMaxExponent + 1)) - 1;
// Buckets 0..63 are exact; then 32 per exponent 6..40.
inline constexpr std::size_t kBucketCount =
    static_cast<std::size_t>(2 * kSubCount + (kMaxExponent - kSubBits) * kSubCount);  // 1184

// Index of the bucket holding v. Precondition: v <= kMaxTrackable (callers
// route larger values to the overflow count).
constexpr std::size_t bucket_index(uint64_t v) noexcept {
  if (v < 2 * kSubCount) return static_cast<std::size_t>(v);
  unsigned e = 63U - static_cast<unsigned>(__builtin_clzll(v));  // floor(log2 v) >= 6
  unsigned shift = e - kSubBits;
  // i = (e - 4) * 32 + (v >> shift) - 32, with v >> shift in [32, 64)
  return static_cast<std::size_t>((uint64_t{e} - 4U) * kSubCount + (v >> shift) - kSubCount);
}

// Smallest value mapped to bucket i (i < kBucketCount).
constexpr uint64_t bucket_lower(std::size_t i) noexcept {
  if (i < 2 * kSubCount) return i;
  uint64_t q = i / kSubCount;  // = e - 4, >= 2
  uint64_t m = i % kSubCount + kSubCount;
  return m << (q - 1U);
}

// Largest value mapped to bucket i (inclusive; i < kBucketCount).
constexpr uint64_t bucket_upper(std::size_t i) noexcept {
  if (i < 2 * kSubCount) return i;
  uint64_t q = i / kSubCount;
  uint64_t m = i % kSubCount + kSubCount;
  return ((m + 1U) << (q - 1U)) - 1U;
}

static_assert(bucket_index(kMaxTrackable) == kBucketCount - 1);
static_assert(bucket_upper(kBucketCount - 1) == kMaxTrackable);
static_assert(bucket_lower(bucket_index(1000)) <= 1000 && bucket_upper(bucket_index(1000)) >= 1000);
}  // namespace hist

// A histogram in fixed memory. Standard layout, only atomics. A zero-filled
// Histogram is valid except for min (reset() sets it to the "empty" marker).
struct Histogram {
  static constexpr uint64_t kEmptyMin = std::numeric_limits<uint64_t>::max();

  std::atomic<uint64_t> count;  // all recorded values, incl. overflow
  std::atomic<uint64_t> sum;    // of all values (saturating at 2^64-1)
  std::atomic<uint64_t> min;    // kEmptyMin when count == 0
  std::atomic<uint64_t> max;
  std::atomic<uint64_t> overflow;  // values > hist::kMaxTrackable
  std::atomic<uint64_t> buckets[hist::kBucketCount];

  // Zero everything (min = kEmptyMin). Not concurrent with record().
  void reset() noexcept;

  // Single writer. Relaxed stores; readers rely on the enclosing seqlock.
  void record(uint64_t v) noexcept {
    auto bump = [](std::atomic<uint64_t>& a, uint64_t d) noexcept {
      a.store(a.load(std::memory_order_relaxed) + d, std::memory_order_relaxed);
    };
    bump(count, 1);
    uint64_t s = sum.load(std::memory_order_relaxed);
    sum.store(
        s > std::numeric_limits<uint64_t>::max() - v ? std::numeric_limits<uint64_t>::max() : s + v,
        std::memory_order_relaxed);
    if (v < min.load(std::memory_order_relaxed)) min.store(v, std::memory_order_relaxed);
    if (v > max.load(std::memory_order_relaxed)) max.store(v, std::memory_order_relaxed);
    if (v > hist::kMaxTrackable) {
      bump(overflow, 1);
    } else {
      bump(buckets[hist::bucket_index(v)], 1);
    }
  }
};

static_assert(std::atomic<uint64_t>::is_always_lock_free);
static_assert(std::is_standard_layout_v<Histogram>);

// A plain (non-atomic) copy of a Histogram, for readers.
struct HistogramSnapshot {
  uint64_t count = 0;
  uint64_t sum = 0;
  uint64_t min = 0;  // 0 when count == 0
  uint64_t max = 0;
  uint64_t overflow = 0;
  uint64_t buckets[hist::kBucketCount] = {};

  // Relaxed loads of every word (consistency comes from the caller's seqlock).
  void load_from(const Histogram& h) noexcept;
  // Value at quantile q in [0, 1] (upper bound of the bucket reached, clamped
  // to [min, max]); 0 when empty.
  uint64_t percentile(double q) const noexcept;
};

}  // namespace mxrc
