#include "mxrc/histogram.hpp"

#include <cmath>

namespace mxrc {

void Histogram::reset() noexcept {
  count.store(0, std::memory_order_relaxed);
  sum.store(0, std::memory_order_relaxed);
  min.store(kEmptyMin, std::memory_order_relaxed);
  max.store(0, std::memory_order_relaxed);
  overflow.store(0, std::memory_order_relaxed);
  for (auto& b : buckets) b.store(0, std::memory_order_relaxed);
}

void HistogramSnapshot::load_from(const Histogram& h) noexcept {
  count = h.count.load(std::memory_order_relaxed);
  sum = h.sum.load(std::memory_order_relaxed);
  min = h.min.load(std::memory_order_relaxed);
  max = h.max.load(std::memory_order_relaxed);
  overflow = h.overflow.load(std::memory_order_relaxed);
  for (std::size_t i = 0; i < hist::kBucketCount; ++i) {
    buckets[i] = h.buckets[i].load(std::memory_order_relaxed);
  }
  if (count == 0 || min == Histogram::kEmptyMin) min = 0;
}

uint64_t HistogramSnapshot::percentile(double q) const noexcept {
  if (count == 0) return 0;
  if (!(q > 0.0)) return min;  // also NaN
  if (q >= 1.0) return max;
  // rank = ceil(q * count), at least 1
  double r = std::ceil(q * static_cast<double>(count));
  uint64_t rank = r < 1.0 ? 1 : static_cast<uint64_t>(r);
  uint64_t seen = 0;
  for (std::size_t i = 0; i < hist::kBucketCount; ++i) {
    seen += buckets[i];
    if (seen >= rank) {
      uint64_t v = hist::bucket_upper(i);
      if (v > max) v = max;
      if (v < min) v = min;
      return v;
    }
  }
  return max;  // in the overflow
}

}  // namespace mxrc
