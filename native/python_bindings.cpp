// Native helpers for mlx_serving. Each function here has a pure-Python twin in
// mlx_serving.native_bridge that is used when this module is absent.
#include <pybind11/pybind11.h>

namespace py = pybind11;

PYBIND11_MODULE(_native, m) {
  m.doc() = "mlx_serving native helpers";
  m.attr("ABI_VERSION") = 1;
}
