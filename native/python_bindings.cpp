// Native helpers for mlx_serving. Each function here has a pure-Python twin in
// mlx_serving.native_bridge that is used when this module is absent.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#ifndef MLX_SERVING_NO_METRICS
#include <vector>

#include "metrics/latency_histogram.h"
#endif

namespace py = pybind11;

#ifndef MLX_SERVING_NO_METRICS
namespace {

void bind_metrics(py::module_& m) {
  using mlx_serving::HistogramSnapshot;
  using mlx_serving::LatencyHistogram;

  py::class_<HistogramSnapshot>(m, "HistogramSnapshot",
                                "Cumulative bucket counts, ready for a Prometheus exporter.")
      .def_readonly("le", &HistogramSnapshot::le)
      .def_readonly("cumulative", &HistogramSnapshot::cumulative)
      .def_readonly("count", &HistogramSnapshot::count)
      .def_readonly("sum", &HistogramSnapshot::sum);

  // std::invalid_argument from the class surfaces as ValueError, as in the Python twin.
  py::class_<LatencyHistogram>(m, "LatencyHistogram",
                               "Lock-free latency histogram in seconds, log-spaced buckets.")
      .def(py::init<>())
      .def_property_readonly_static("SUB_BUCKETS",
                                    [](py::object) { return LatencyHistogram::kSubBuckets; })
      .def_property_readonly_static("MIN_EXPONENT",
                                    [](py::object) { return LatencyHistogram::kMinExponent; })
      .def_property_readonly_static("MAX_EXPONENT",
                                    [](py::object) { return LatencyHistogram::kMaxExponent; })
      .def_property_readonly_static("BUCKET_COUNT",
                                    [](py::object) { return LatencyHistogram::kBucketCount; })
      .def("observe", &LatencyHistogram::observe, py::arg("seconds"))
      .def(
          "observe_many",
          [](LatencyHistogram& self, const std::vector<double>& seconds) {
            self.observe_many(seconds.data(), seconds.size());
          },
          py::arg("seconds"))
      .def("percentile", &LatencyHistogram::percentile, py::arg("p"))
      .def_property_readonly("count", &LatencyHistogram::count)
      .def_property_readonly("sum", &LatencyHistogram::sum)
      .def_property_readonly("min", &LatencyHistogram::min)
      .def_property_readonly("max", &LatencyHistogram::max)
      .def("snapshot", &LatencyHistogram::snapshot)
      .def("reset", &LatencyHistogram::reset);
}

}  // namespace
#endif

PYBIND11_MODULE(_native, m) {
  m.doc() = "mlx_serving native helpers";
  m.attr("ABI_VERSION") = 1;
#ifndef MLX_SERVING_NO_METRICS
  bind_metrics(m);
#endif
}
