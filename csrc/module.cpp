// fastconv._C: defines the kernel ops fastconv_C::<op> (schemas in common/schemas.h). The kernels register
// themselves per device from cpu/ and cuda/. The Python module is empty: importing it loads this library,
// whose static initialisers run the registrations.
#include <Python.h>
#include <torch/library.h>

#include "common/schemas.h"

extern "C" {
PyMODINIT_FUNC PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "Kernel ops fastconv_C.* of fastconv", -1, nullptr};
  return PyModule_Create(&module);
}
}

TORCH_LIBRARY(fastconv_C, m) {
  for (const char* schema : fastconv::kOpSchemas) {
    m.def(schema);
  }
}
