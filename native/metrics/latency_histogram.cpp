#include "latency_histogram.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>

namespace mlx_serving {
namespace {

constexpr double kInfinity = std::numeric_limits<double>::infinity();
constexpr int kSubBucketBits = 4;
static_assert(1 << kSubBucketBits == LatencyHistogram::kSubBuckets,
              "sub-buckets are read straight from the top mantissa bits");
constexpr int kMantissaBits = 52;
constexpr int kExponentBias = 1023;
const double kLowest = std::ldexp(1.0, LatencyHistogram::kMinExponent);
const double kHighest = std::ldexp(1.0, LatencyHistogram::kMaxExponent);

void require_finite(double seconds) {
  if (!std::isfinite(seconds)) {
    throw std::invalid_argument("a latency must be a finite number of seconds");
  }
}

double clamp_negative(double seconds) { return seconds > 0.0 ? seconds : 0.0; }

void store_min(std::atomic<double>& slot, double value) {
  double current = slot.load(std::memory_order_relaxed);
  while (value < current &&
         !slot.compare_exchange_weak(current, value, std::memory_order_relaxed)) {
  }
}

void store_max(std::atomic<double>& slot, double value) {
  double current = slot.load(std::memory_order_relaxed);
  while (value > current &&
         !slot.compare_exchange_weak(current, value, std::memory_order_relaxed)) {
  }
}

}  // namespace

LatencyHistogram::LatencyHistogram() { reset(); }

int LatencyHistogram::bucket_index(double seconds) {
  if (!(seconds >= kLowest)) return 0;
  if (seconds >= kHighest) return kBucketCount - 1;
  std::uint64_t bits;
  std::memcpy(&bits, &seconds, sizeof bits);
  // seconds is a normal double here: 1.mantissa * 2^exponent.
  const int exponent = static_cast<int>((bits >> kMantissaBits) & 0x7ff) - kExponentBias;
  const int sub = static_cast<int>((bits >> (kMantissaBits - kSubBucketBits)) &
                                   (kSubBuckets - 1));
  return 1 + (exponent - kMinExponent) * kSubBuckets + sub;
}

double LatencyHistogram::lower_bound(int index) {
  if (index <= 0) return 0.0;
  if (index >= kBucketCount - 1) return kHighest;
  const int octave = (index - 1) / kSubBuckets;
  const int sub = (index - 1) % kSubBuckets;
  return std::ldexp(1.0 + static_cast<double>(sub) / kSubBuckets, kMinExponent + octave);
}

double LatencyHistogram::upper_bound(int index) {
  return index >= kBucketCount - 1 ? kInfinity : lower_bound(index + 1);
}

void LatencyHistogram::record_extremes(double low, double high, double total) {
  double current = sum_.load(std::memory_order_relaxed);
  while (!sum_.compare_exchange_weak(current, current + total, std::memory_order_relaxed)) {
  }
  store_min(min_, low);
  store_max(max_, high);
}

void LatencyHistogram::observe(double seconds) {
  require_finite(seconds);
  const double value = clamp_negative(seconds);
  record_extremes(value, value, value);
  buckets_[bucket_index(value)].fetch_add(1, std::memory_order_release);
}

void LatencyHistogram::observe_many(const double* seconds, std::size_t n) {
  if (n == 0) return;
  // The batch's own running total, added once: the Python twin sums in the same order.
  double total = 0.0;
  double low = kInfinity;
  double high = -kInfinity;
  for (std::size_t i = 0; i < n; ++i) {
    require_finite(seconds[i]);
    const double value = clamp_negative(seconds[i]);
    total += value;
    low = value < low ? value : low;
    high = value > high ? value : high;
  }
  record_extremes(low, high, total);
  for (std::size_t i = 0; i < n; ++i) {
    buckets_[bucket_index(clamp_negative(seconds[i]))].fetch_add(1, std::memory_order_release);
  }
}

std::uint64_t LatencyHistogram::load_counts(Counts& counts) const {
  std::uint64_t total = 0;
  for (int i = 0; i < kBucketCount; ++i) {
    counts[i] = buckets_[i].load(std::memory_order_acquire);
    total += counts[i];
  }
  return total;
}

std::optional<double> LatencyHistogram::percentile(double p) const {
  if (!(p >= 0.0 && p <= 100.0)) {
    throw std::invalid_argument("percentile must be within [0, 100]");
  }
  Counts counts;
  const std::uint64_t total = load_counts(counts);
  if (total == 0) return std::nullopt;
  const double seen_min = min_.load(std::memory_order_relaxed);
  const double seen_max = max_.load(std::memory_order_relaxed);
  const double target = p / 100.0 * static_cast<double>(total);
  std::uint64_t below = 0;
  for (int i = 0; i < kBucketCount; ++i) {
    const std::uint64_t in_bucket = counts[i];
    if (in_bucket == 0) continue;
    if (static_cast<double>(below + in_bucket) >= target) {
      const double lower = lower_bound(i);
      const double upper = upper_bound(i);
      const double lo = lower > seen_min ? lower : seen_min;
      const double hi = upper < seen_max ? upper : seen_max;
      const double fraction =
          (target - static_cast<double>(below)) / static_cast<double>(in_bucket);
      return lo + (hi - lo) * fraction;
    }
    below += in_bucket;
  }
  return seen_max;  // unreachable: target <= total
}

std::uint64_t LatencyHistogram::count() const {
  Counts counts;
  return load_counts(counts);
}

double LatencyHistogram::sum() const { return sum_.load(std::memory_order_relaxed); }

std::optional<double> LatencyHistogram::min() const {
  if (count() == 0) return std::nullopt;
  return min_.load(std::memory_order_relaxed);
}

std::optional<double> LatencyHistogram::max() const {
  if (count() == 0) return std::nullopt;
  return max_.load(std::memory_order_relaxed);
}

HistogramSnapshot LatencyHistogram::snapshot() const {
  Counts counts;
  HistogramSnapshot snap;
  snap.count = load_counts(counts);
  snap.sum = sum_.load(std::memory_order_relaxed);
  snap.le.reserve(kBucketCount);
  snap.cumulative.reserve(kBucketCount);
  std::uint64_t running = 0;
  for (int i = 0; i < kBucketCount; ++i) {
    running += counts[i];
    snap.le.push_back(upper_bound(i));
    snap.cumulative.push_back(running);
  }
  return snap;
}

void LatencyHistogram::reset() {
  for (auto& bucket : buckets_) bucket.store(0, std::memory_order_relaxed);
  sum_.store(0.0, std::memory_order_relaxed);
  min_.store(kInfinity, std::memory_order_relaxed);
  max_.store(-kInfinity, std::memory_order_relaxed);
}

}  // namespace mlx_serving
