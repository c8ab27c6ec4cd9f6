// One register_<area>() per area of mxrc._core.
#pragma once

#include <pybind11/pybind11.h>

namespace mxrc::bindings {
void register_sched(pybind11::module_& m);
void register_numa(pybind11::module_& m);
void register_clock(pybind11::module_& m);
void register_bus(pybind11::module_& m);
void register_cycle(pybind11::module_& m);
void register_demo(pybind11::module_& m);
void register_datastore(pybind11::module_& m);
void register_bench(pybind11::module_& m);
}  // namespace mxrc::bindings
