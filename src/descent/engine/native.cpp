// The per-gradient bookkeeping of a repeated step, in C++ (see native.py).
//
// A step with fresh gradients reads every param's .grad, checks it (dtype, device,
// layout, shape) and hands each large one to its kernel as a 1-D window over its memory.
// In Python that is about a microsecond and a half per gradient (attribute reads, a view
// through the dispatcher); here it is a tenth of that. Anything unusual answers None or
// False, and the Python path, which names what is wrong, runs instead.

#include <Python.h>

#include <cstring>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/TensorImpl.h>
#include <torch/csrc/Dtype.h>
#include <torch/csrc/autograd/python_variable.h>

namespace {

// A tensor whose memory a kernel may read as it is: strided, not a subclass that
// dispatches to Python, not a lazily conjugated or negated view.
bool plain(const at::Tensor& t) {
  if (t.layout() != c10::kStrided || t.is_conj() || t.is_neg()) {
    return false;
  }
  auto keys = t.key_set();
  return !keys.has(c10::DispatchKey::Python) && !keys.has(c10::DispatchKey::PythonTLSSnapshot);
}

bool same_shape(const at::Tensor& g, PyObject* shape) {
  if (!PyTuple_Check(shape)) {
    return false;
  }
  auto sizes = g.sizes();
  if (PyTuple_GET_SIZE(shape) != static_cast<Py_ssize_t>(sizes.size())) {
    return false;
  }
  for (size_t d = 0; d < sizes.size(); ++d) {
    long long want = PyLong_AsLongLong(PyTuple_GET_ITEM(shape, d));
    if (want == -1 && PyErr_Occurred()) {
      PyErr_Clear();
      return false;
    }
    if (want != sizes[d]) {
      return false;
    }
  }
  return true;
}

// Both contiguous, or the same strides and dense: memory order is the same in both.
bool laid_out_alike(const at::Tensor& a, const at::Tensor& b) {
  return (a.is_contiguous() && b.is_contiguous()) ||
      (a.strides() == b.strides() && a.is_non_overlapping_and_dense());
}

// grads(params, dtype, device_index, shapes) -> list | None
//
// Every param's .grad, when each is a plain strided tensor of ``dtype`` on device
// ``device_index`` (-1: the CPU) with its param's shape (``shapes[i]``, a torch.Size);
// None when any is missing or differs.
PyObject* gather(PyObject* params, c10::ScalarType want, int device, PyObject* shapes) {
  Py_ssize_t n = PyList_GET_SIZE(params);
  PyObject* out = PyList_New(n);
  if (out == nullptr) {
    return nullptr;
  }
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* obj = PyList_GET_ITEM(params, i);
    if (!THPVariable_Check(obj)) {
      Py_DECREF(out);
      Py_RETURN_NONE;
    }
    const at::Tensor& g = THPVariable_Unpack(obj).grad();
    if (!g.defined() || !plain(g) || g.scalar_type() != want || g.get_device() != device ||
        !same_shape(g, PyList_GET_ITEM(shapes, i))) {
      Py_DECREF(out);
      Py_RETURN_NONE;
    }
    PyObject* wrapped = THPVariable_Wrap(g);
    if (wrapped == nullptr) {
      Py_DECREF(out);
      return nullptr;
    }
    PyList_SET_ITEM(out, i, wrapped);
  }
  return out;
}

bool gather_args(PyObject* params, PyObject* dtype, PyObject* shapes) {
  if (!PyList_Check(params) || !PyList_Check(shapes) || !THPDtype_Check(dtype) ||
      PyList_GET_SIZE(params) != PyList_GET_SIZE(shapes)) {
    PyErr_SetString(PyExc_TypeError, "params: list, dtype, device: int, shapes: list of equal length");
    return false;
  }
  return true;
}

// grads(params, dtype, device_index, shapes) -> list | None: gather() from Python.
PyObject* grads(PyObject*, PyObject* args) {
  PyObject *params, *dtype, *shapes;
  int device;
  if (!PyArg_ParseTuple(args, "OOiO", &params, &dtype, &device, &shapes) || !gather_args(params, dtype, shapes)) {
    return nullptr;
  }
  return gather(params, reinterpret_cast<THPDtype*>(dtype)->scalar_type, device, shapes);
}

// again(params, ptrs, hosts, versions, dtype, device_index, shapes) -> list | None
//
// A repeated step's look at a flat bucket whose gradients are fresh tensors: every param
// still at its place in the flat buffer (``ptrs``), no host buffer (``step`` …) written
// since descent last did (``versions``), and every gradient as ``grads`` wants it and
// a tensor of its own (not a window into a shared buffer, which would be worth a new
// layout). The gradients then; None when anything differs (the Python path looks again,
// and names what is wrong).
PyObject* again(PyObject*, PyObject* args) {
  PyObject *params, *ptrs, *hosts, *versions, *dtype, *shapes;
  int device;
  if (!PyArg_ParseTuple(args, "OOOOOiO", &params, &ptrs, &hosts, &versions, &dtype, &device, &shapes) ||
      !gather_args(params, dtype, shapes)) {
    return nullptr;
  }
  if (!PyList_Check(params) || !PyList_Check(ptrs) || !PyList_Check(hosts) || !PyList_Check(versions) ||
      PyList_GET_SIZE(params) != PyList_GET_SIZE(ptrs) || PyList_GET_SIZE(hosts) != PyList_GET_SIZE(versions)) {
    PyErr_SetString(PyExc_TypeError, "again(params, ptrs, hosts, versions: lists, two pairs of equal length, ...)");
    return nullptr;
  }
  Py_ssize_t n = PyList_GET_SIZE(params);
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* obj = PyList_GET_ITEM(params, i);
    if (!THPVariable_Check(obj)) {
      Py_RETURN_NONE;
    }
    void* want = PyLong_AsVoidPtr(PyList_GET_ITEM(ptrs, i));
    if (PyErr_Occurred()) {
      return nullptr;
    }
    if (THPVariable_Unpack(obj).data_ptr() != want) {
      Py_RETURN_NONE;
    }
  }
  Py_ssize_t m = PyList_GET_SIZE(hosts);
  for (Py_ssize_t k = 0; k < m; ++k) {
    PyObject* obj = PyList_GET_ITEM(hosts, k);
    if (!THPVariable_Check(obj)) {
      Py_RETURN_NONE;
    }
    long long want = PyLong_AsLongLong(PyList_GET_ITEM(versions, k));
    if (want == -1 && PyErr_Occurred()) {
      return nullptr;
    }
    if (static_cast<long long>(THPVariable_Unpack(obj)._version()) != want) {
      Py_RETURN_NONE;
    }
  }
  PyObject* out = gather(params, reinterpret_cast<THPDtype*>(dtype)->scalar_type, device, shapes);
  if (out == nullptr || out == Py_None || n == 0) {
    return out;
  }
  const at::Tensor& g = THPVariable_Unpack(PyList_GET_ITEM(out, 0));
  if (g.is_view() || g.storage().nbytes() != static_cast<size_t>(g.numel()) * g.element_size()) {
    Py_DECREF(out);
    Py_RETURN_NONE;
  }
  return out;
}

// flat(args, slots, grads, params) -> bool
//
// For each (position, index) in ``slots``: args[position] := grads[index] as a 1-D window
// over its memory, laid out as params[index] is (both contiguous, or the same strides and
// dense). False, at the first gradient laid out otherwise (the caller reads them in
// Python then).
PyObject* flat(PyObject*, PyObject* args) {
  PyObject *out, *slots, *grads, *params;
  if (!PyArg_ParseTuple(args, "OOOO", &out, &slots, &grads, &params)) {
    return nullptr;
  }
  if (!PyList_Check(out) || !PyList_Check(slots) || !PyList_Check(grads) || !PyList_Check(params)) {
    PyErr_SetString(PyExc_TypeError, "flat(args: list, slots: list, grads: list, params: list)");
    return nullptr;
  }
  Py_ssize_t n = PyList_GET_SIZE(slots);
  for (Py_ssize_t s = 0; s < n; ++s) {
    PyObject* slot = PyList_GET_ITEM(slots, s);
    if (!PyTuple_Check(slot) || PyTuple_GET_SIZE(slot) != 2) {
      PyErr_SetString(PyExc_TypeError, "a slot is a (position, index) pair");
      return nullptr;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(PyTuple_GET_ITEM(slot, 0));
    Py_ssize_t i = PyLong_AsSsize_t(PyTuple_GET_ITEM(slot, 1));
    if (PyErr_Occurred()) {
      return nullptr;
    }
    if (pos < 0 || pos >= PyList_GET_SIZE(out) || i < 0 || i >= PyList_GET_SIZE(grads) ||
        i >= PyList_GET_SIZE(params)) {
      PyErr_SetString(PyExc_IndexError, "a slot out of range");
      return nullptr;
    }
    PyObject* gobj = PyList_GET_ITEM(grads, i);
    PyObject* pobj = PyList_GET_ITEM(params, i);
    if (!THPVariable_Check(gobj) || !THPVariable_Check(pobj)) {
      Py_RETURN_FALSE;
    }
    const at::Tensor& g = THPVariable_Unpack(gobj);
    const at::Tensor& p = THPVariable_Unpack(pobj);
    if (!plain(g) || !laid_out_alike(g, p) || g.numel() != p.numel()) {
      Py_RETURN_FALSE;
    }
    // The window: the gradient's own storage, elements storage_offset … + numel in memory
    // order (what ``window(g, 0, numel)`` makes in Python), without a trip through the
    // dispatcher. Only a kernel reads it.
    auto impl = c10::make_intrusive<c10::TensorImpl>(
        c10::TensorImpl::VIEW, c10::Storage(g.storage()), g.key_set(), g.dtype());
    int64_t len = g.numel();
    int64_t one = 1;
    impl->set_sizes_and_strides(c10::IntArrayRef(&len, 1), c10::IntArrayRef(&one, 1), g.storage_offset());
    PyObject* wrapped = THPVariable_Wrap(at::Tensor(std::move(impl)));
    if (wrapped == nullptr) {
      return nullptr;
    }
    PyList_SetItem(out, pos, wrapped);  // (steals the reference, drops the old item)
  }
  Py_RETURN_TRUE;
}

// stage(views, staged, grads, gaps) -> bool
//
// Copy grads[staged[k]] into views[k] (the staging buffer's windows, laid out as the
// params are) and zero every tensor of ``gaps``, as plain memory copies: CPU tensors of
// one dtype, each pair of the same size and layout. False, before anything is written,
// where one is not (the caller copies them with torch then). A small gradient's copy is
// a memcpy here, where a torch copy is a dispatch and an iterator (~0.8 us each).
PyObject* stage(PyObject*, PyObject* args) {
  PyObject *views, *staged, *grads, *gaps;
  if (!PyArg_ParseTuple(args, "OOOO", &views, &staged, &grads, &gaps)) {
    return nullptr;
  }
  if (!PyList_Check(views) || !PyList_Check(staged) || !PyList_Check(grads) || !PyList_Check(gaps) ||
      PyList_GET_SIZE(views) != PyList_GET_SIZE(staged)) {
    PyErr_SetString(PyExc_TypeError, "stage(views: list, staged: list of equal length, grads: list, gaps: list)");
    return nullptr;
  }
  Py_ssize_t n = PyList_GET_SIZE(views);
  std::vector<std::pair<const at::Tensor*, const at::Tensor*>> pairs;
  pairs.reserve(n);
  for (Py_ssize_t k = 0; k < n; ++k) {
    Py_ssize_t i = PyLong_AsSsize_t(PyList_GET_ITEM(staged, k));
    if (i == -1 && PyErr_Occurred()) {
      return nullptr;
    }
    if (i < 0 || i >= PyList_GET_SIZE(grads)) {
      PyErr_SetString(PyExc_IndexError, "a staged index out of range");
      return nullptr;
    }
    PyObject* vobj = PyList_GET_ITEM(views, k);
    PyObject* gobj = PyList_GET_ITEM(grads, i);
    if (!THPVariable_Check(vobj) || !THPVariable_Check(gobj)) {
      Py_RETURN_FALSE;
    }
    const at::Tensor& v = THPVariable_Unpack(vobj);
    const at::Tensor& g = THPVariable_Unpack(gobj);
    if (!v.is_cpu() || !g.is_cpu() || !plain(g) || !plain(v) || v.scalar_type() != g.scalar_type() ||
        v.sizes() != g.sizes() || !laid_out_alike(v, g)) {
      Py_RETURN_FALSE;
    }
    pairs.emplace_back(&v, &g);
  }
  Py_ssize_t m = PyList_GET_SIZE(gaps);
  for (Py_ssize_t k = 0; k < m; ++k) {
    PyObject* obj = PyList_GET_ITEM(gaps, k);
    if (!THPVariable_Check(obj)) {
      Py_RETURN_FALSE;
    }
    const at::Tensor& z = THPVariable_Unpack(obj);
    if (!z.is_cpu() || !plain(z) || !z.is_contiguous()) {
      Py_RETURN_FALSE;
    }
  }
  for (auto& [v, g] : pairs) {
    if (g->numel() > 0) {  // (an empty tensor may have no memory at all)
      std::memcpy(v->data_ptr(), g->data_ptr(), g->numel() * g->element_size());
    }
  }
  for (Py_ssize_t k = 0; k < m; ++k) {
    const at::Tensor& z = THPVariable_Unpack(PyList_GET_ITEM(gaps, k));
    if (z.numel() > 0) {
      std::memset(z.data_ptr(), 0, z.numel() * z.element_size());
    }
  }
  Py_RETURN_TRUE;
}

PyMethodDef methods[] = {
    {"grads", grads, METH_VARARGS, "every param's gradient when each is as expected, else None"},
    {"again", again, METH_VARARGS, "a repeated step's look at a bucket of fresh gradients"},
    {"flat", flat, METH_VARARGS, "gradients as 1-D windows into a kernel call's arguments"},
    {"stage", stage, METH_VARARGS, "small gradients copied into the staging buffer"},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "descent_native", nullptr, -1, methods};

}  // namespace

PyMODINIT_FUNC PyInit_descent_native(void) {
  return PyModule_Create(&module);
}
