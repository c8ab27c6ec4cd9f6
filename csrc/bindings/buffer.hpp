// A writable, contiguous view of a Python buffer (buffer protocol), released
// when it goes out of scope. While the view exists the exporter keeps the
// memory in place (e.g. a bytearray cannot be resized), so the pointer stays
// valid with the GIL released.
#pragma once

#include <pybind11/pybind11.h>

#include <cstddef>

namespace mxrc::bindings {

class WritableBuffer {
 public:
  explicit WritableBuffer(const pybind11::handle& obj) {
    if (PyObject_GetBuffer(obj.ptr(), &view_, PyBUF_WRITABLE | PyBUF_ANY_CONTIGUOUS) != 0) {
      throw pybind11::error_already_set();
    }
  }
  WritableBuffer(const WritableBuffer&) = delete;
  WritableBuffer& operator=(const WritableBuffer&) = delete;
  WritableBuffer(WritableBuffer&& other) noexcept : view_(other.view_) {
    other.view_.obj = nullptr;
  }
  WritableBuffer& operator=(WritableBuffer&&) = delete;
  ~WritableBuffer() {
    if (view_.obj != nullptr) PyBuffer_Release(&view_);
  }
  void* data() const noexcept { return view_.buf; }
  std::size_t size() const noexcept { return static_cast<std::size_t>(view_.len); }

 private:
  Py_buffer view_{};
};

}  // namespace mxrc::bindings
