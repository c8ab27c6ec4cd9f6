// mxrc._core: the private extension. One submodule per area, each registered
// by register_<area>() in its own file.
#include <pybind11/pybind11.h>

#include "mxrc/error.hpp"
#include "register.hpp"

namespace py = pybind11;

PYBIND11_MODULE(_core, m) {
  m.doc() = "mxrc compiled core (private; use the mxrc package)";
  m.attr("__version__") = MXRC_VERSION_STRING;

  // Map C++ errors onto the Python hierarchy. mxrc.errors is imported lazily
  // (at throw time) so that importing _core alone never imports mxrc.
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const mxrc::SystemError& e) {
      // OSError(errno, "<what> (from <syscall>): <strerror>"); calling OSError
      // with an errno picks the subclass (PermissionError, ProcessLookupError...),
      // which is then raised as that type.
      py::object err = py::reinterpret_steal<py::object>(
          PyObject_CallFunction(PyExc_OSError, "is", e.code().value(), e.what()));
      PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(err.ptr())), err.ptr());
    } catch (const mxrc::UnsupportedError& e) {
      py::object cls = py::module_::import("mxrc.errors").attr("UnsupportedError");
      PyErr_SetString(cls.ptr(), e.what());
    }
  });

  auto sched = m.def_submodule("sched", "affinity, scheduling, memory locking");
  mxrc::bindings::register_sched(sched);
  auto numa = m.def_submodule("numa", "NUMA memory policy system calls");
  mxrc::bindings::register_numa(numa);
  auto clock = m.def_submodule("clock", "clock synchronisation state");
  mxrc::bindings::register_clock(clock);
}
