// mxrc._core.demo: the native demo body of `mxrc run` (mxrc/demo_axis.hpp).
#include <pybind11/pybind11.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "buffer.hpp"
#include "mxrc/demo_axis.hpp"
#include "register.hpp"

namespace py = pybind11;

namespace mxrc::bindings {

void register_demo(py::module_& m) {
  m.attr("STATE_SIZE") = static_cast<std::size_t>(demo::kStateSize);
  m.def(
      "axis_step",
      [](const py::object& state, std::uint64_t steps) {
        WritableBuffer buf(state);
        if (buf.size() != demo::kStateSize * sizeof(double)) {
          throw std::invalid_argument("state must be a contiguous float64 array of " +
                                      std::to_string(demo::kStateSize) + " items");
        }
        auto* s = static_cast<double*>(buf.data());
        // The buffer view pins the memory; the loop touches nothing Python owns.
        py::gil_scoped_release release;
        for (std::uint64_t i = 0; i < steps; ++i) mxrc_demo_axis_step(s);
      },
      py::arg("state"), py::arg("steps") = 1,
      "Run `steps` cycles of the native demo axis on a float64 state array (in place).");
  m.def(
      "native_axis_body_address",
      [] { return reinterpret_cast<std::uintptr_t>(&mxrc_demo_axis_body); },
      "Address of the native demo body `int mxrc_demo_axis_body(const mxrc_cycle_ctx*)`; "
      "its user_data is the address of the float64 state array.");
}

}  // namespace mxrc::bindings
