// A latency histogram cheap enough to feed from the token loop: observe() is a handful of
// atomic operations, never a lock. mlx_serving.native_bridge.metrics holds its pure-Python
// twin; the two must keep the same bucket layout and the same arithmetic, bit for bit.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

namespace mlx_serving {

struct HistogramSnapshot {
  std::vector<double> le;                   // upper bound of each bucket; the last is +inf
  std::vector<std::uint64_t> cumulative;    // observations <= le, as Prometheus counts them
  std::uint64_t count = 0;
  double sum = 0.0;
};

class LatencyHistogram {
 public:
  // Each power of two is cut into kSubBuckets equal buckets, so a bucket is at most 1/16 of
  // its lower bound wide: an interpolated percentile is never off by more than 6.25%.
  // Powers of two make the bucket of a value its exponent and top mantissa bits, with no
  // log(), and every bound an exact double the Python twin reproduces with ldexp().
  static constexpr int kSubBuckets = 16;
  static constexpr int kMinExponent = -20;  // 2^-20 s, about 1 us: below it, one bucket
  static constexpr int kMaxExponent = 7;    // 2^7 s = 128 s: from it up, one bucket
  static constexpr int kBucketCount = (kMaxExponent - kMinExponent) * kSubBuckets + 2;

  LatencyHistogram();

  // Records one duration. Throws std::invalid_argument for NaN and infinities, which have
  // no place on the axis; a negative duration counts as 0.
  void observe(double seconds);
  // Records every value, or none of them if one is NaN or infinite.
  void observe_many(const double* seconds, std::size_t n);

  // p in [0, 100]; nullopt while empty. Interpolated linearly within the bucket that holds
  // the p-th percentile rank, over the part of the bucket between the observed min and max.
  std::optional<double> percentile(double p) const;
  std::uint64_t count() const;
  double sum() const;
  std::optional<double> min() const;
  std::optional<double> max() const;
  HistogramSnapshot snapshot() const;
  // Not atomic with respect to concurrent observe() calls: one racing it may be half kept.
  void reset();

  static int bucket_index(double seconds);
  static double lower_bound(int index);
  static double upper_bound(int index);

 private:
  using Counts = std::array<std::uint64_t, kBucketCount>;
  std::uint64_t load_counts(Counts& counts) const;
  void record_extremes(double low, double high, double total);

  // A bucket increment is the last store of an observation and is a release: a reader that
  // acquires the count of an observation also sees its sum, min and max.
  std::array<std::atomic<std::uint64_t>, kBucketCount> buckets_;
  std::atomic<double> sum_;
  std::atomic<double> min_;
  std::atomic<double> max_;
};

}  // namespace mlx_serving
