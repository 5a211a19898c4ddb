// The per-gradient bookkeeping of a repeated step, in C++ (see native.py).
//
// A step with fresh gradients reads every param's .grad, checks it (dtype, device,
// layout, shape) and hands each large one to its kernel as a 1-D window over its memory.
// In Python that is about a microsecond and a half per gradient (attribute reads, a view
// through the dispatcher); here it is a tenth of that. Anything unusual answers None or
// False, and the Python path, which names what is wrong, runs instead.

#include <Python.h>
#include <dlfcn.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <c10/core/CPUAllocator.h>
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

// The window a kernel reads a gradient through: the gradient's own storage, elements
// storage_offset … + numel in memory order (what ``window(g, 0, numel)`` makes in
// Python), without a trip through the dispatcher. Only a kernel reads it.
at::Tensor window_of(const at::Tensor& g) {
  auto impl = c10::make_intrusive<c10::TensorImpl>(
      c10::TensorImpl::VIEW, c10::Storage(g.storage()), g.key_set(), g.dtype());
  int64_t len = g.numel();
  int64_t one = 1;
  impl->set_sizes_and_strides(c10::IntArrayRef(&len, 1), c10::IntArrayRef(&one, 1), g.storage_offset());
  return at::Tensor(std::move(impl));
}

// A gradient a kernel may read through window_of() in place of its param's window: plain,
// laid out as the param is, as many elements.
bool readable(const at::Tensor& g, const at::Tensor& p) {
  return plain(g) && laid_out_alike(g, p) && g.numel() == p.numel();
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

// Slot ``slot`` (a (position, index) pair; positions below ``n``) of a kernel call: its
// position, and grads[index] as the window a kernel reads in place of params[index]'s.
// -1: a Python error set; 0: that gradient is laid out otherwise (or not a tensor);
// 1: ``pos`` and ``out`` set.
int slot_window(PyObject* slot, Py_ssize_t n, PyObject* grads, PyObject* params, Py_ssize_t& pos, at::Tensor& out) {
  if (!PyTuple_Check(slot) || PyTuple_GET_SIZE(slot) != 2) {
    PyErr_SetString(PyExc_TypeError, "a slot is a (position, index) pair");
    return -1;
  }
  pos = PyLong_AsSsize_t(PyTuple_GET_ITEM(slot, 0));
  Py_ssize_t i = PyLong_AsSsize_t(PyTuple_GET_ITEM(slot, 1));
  if (PyErr_Occurred()) {
    return -1;
  }
  if (pos < 0 || pos >= n || i < 0 || i >= PyList_GET_SIZE(grads) || i >= PyList_GET_SIZE(params)) {
    PyErr_SetString(PyExc_IndexError, "a slot out of range");
    return -1;
  }
  PyObject* gobj = PyList_GET_ITEM(grads, i);
  PyObject* pobj = PyList_GET_ITEM(params, i);
  if (!THPVariable_Check(gobj) || !THPVariable_Check(pobj)) {
    return 0;
  }
  const at::Tensor& g = THPVariable_Unpack(gobj);
  if (!readable(g, THPVariable_Unpack(pobj))) {
    return 0;
  }
  out = window_of(g);
  return 1;
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
    Py_ssize_t pos = 0;
    at::Tensor window;
    int ok = slot_window(PyList_GET_ITEM(slots, s), PyList_GET_SIZE(out), grads, params, pos, window);
    if (ok <= 0) {
      return ok < 0 ? nullptr : Py_NewRef(Py_False);
    }
    PyObject* wrapped = THPVariable_Wrap(std::move(window));
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
// The copies stage() makes: checked, before anything is written (-1: a Python error set;
// 0: a pair or gap it cannot copy as plain memory; 1: ``pairs`` holds them).
int stage_plan(PyObject* views, PyObject* staged, PyObject* grads, PyObject* gaps,
               std::vector<std::pair<const at::Tensor*, const at::Tensor*>>& pairs) {
  if (!PyList_Check(views) || !PyList_Check(staged) || !PyList_Check(grads) || !PyList_Check(gaps) ||
      PyList_GET_SIZE(views) != PyList_GET_SIZE(staged)) {
    PyErr_SetString(PyExc_TypeError, "stage(views: list, staged: list of equal length, grads: list, gaps: list)");
    return -1;
  }
  Py_ssize_t n = PyList_GET_SIZE(views);
  pairs.reserve(n);
  for (Py_ssize_t k = 0; k < n; ++k) {
    Py_ssize_t i = PyLong_AsSsize_t(PyList_GET_ITEM(staged, k));
    if (i == -1 && PyErr_Occurred()) {
      return -1;
    }
    if (i < 0 || i >= PyList_GET_SIZE(grads)) {
      PyErr_SetString(PyExc_IndexError, "a staged index out of range");
      return -1;
    }
    PyObject* vobj = PyList_GET_ITEM(views, k);
    PyObject* gobj = PyList_GET_ITEM(grads, i);
    if (!THPVariable_Check(vobj) || !THPVariable_Check(gobj)) {
      return 0;
    }
    const at::Tensor& v = THPVariable_Unpack(vobj);
    const at::Tensor& g = THPVariable_Unpack(gobj);
    if (!v.is_cpu() || !g.is_cpu() || !plain(g) || !plain(v) || v.scalar_type() != g.scalar_type() ||
        v.sizes() != g.sizes() || !laid_out_alike(v, g)) {
      return 0;
    }
    pairs.emplace_back(&v, &g);
  }
  Py_ssize_t m = PyList_GET_SIZE(gaps);
  for (Py_ssize_t k = 0; k < m; ++k) {
    PyObject* obj = PyList_GET_ITEM(gaps, k);
    if (!THPVariable_Check(obj)) {
      return 0;
    }
    const at::Tensor& z = THPVariable_Unpack(obj);
    if (!z.is_cpu() || !plain(z) || !z.is_contiguous()) {
      return 0;
    }
  }
  return 1;
}

// The copies of stage_plan() made, and the gaps zeroed.
void stage_copy(const std::vector<std::pair<const at::Tensor*, const at::Tensor*>>& pairs, PyObject* gaps) {
  for (auto& [v, g] : pairs) {
    if (g->numel() > 0) {  // (an empty tensor may have no memory at all)
      std::memcpy(v->data_ptr(), g->data_ptr(), g->numel() * g->element_size());
    }
  }
  Py_ssize_t m = PyList_GET_SIZE(gaps);
  for (Py_ssize_t k = 0; k < m; ++k) {
    const at::Tensor& z = THPVariable_Unpack(PyList_GET_ITEM(gaps, k));
    if (z.numel() > 0) {
      std::memset(z.data_ptr(), 0, z.numel() * z.element_size());
    }
  }
}

PyObject* stage(PyObject*, PyObject* args) {
  PyObject *views, *staged, *grads, *gaps;
  if (!PyArg_ParseTuple(args, "OOOO", &views, &staged, &grads, &gaps)) {
    return nullptr;
  }
  std::vector<std::pair<const at::Tensor*, const at::Tensor*>> pairs;
  int ok = stage_plan(views, staged, grads, gaps, pairs);
  if (ok < 0) {
    return nullptr;
  }
  if (ok == 0) {
    Py_RETURN_FALSE;
  }
  stage_copy(pairs, gaps);
  Py_RETURN_TRUE;
}

// -- a kernel's library, called without torch's runner ------------------------------------
//
// A kernel is an AOTInductor model: a shared library with a small C interface (make a
// model, run it on tensor handles). A call through torch's runner has a fixed cost of
// about 1.7 us; a 1 K-param step's kernel computes for 0.4 us. Here the library is
// opened and its model run through that C interface itself (0.7 us of fixed cost): a
// tensor handle is an ``at::Tensor*`` the model takes over (and deletes), as torch's
// runner hands it. Calls are made holding the GIL, so one model and one set of handle
// arrays per kernel serve every call.

struct Container;  // (asked once for the counts of inputs and outputs)
struct Model;
struct Handle;  // an at::Tensor*, given to (inputs) or taken from (outputs) the model

using Create = int32_t (*)(Container**, size_t, const char*, const char*);
using Delete = int32_t (*)(Container*);
using Count = int32_t (*)(Container*, size_t*);
using CreateModel = int32_t (*)(Model**, void*);
using RunModel = int32_t (*)(Model*, Handle**, Handle**);
using DeleteModel = int32_t (*)(Model*);

struct Kernel {
  Model* model = nullptr;
  RunModel run = nullptr;
  DeleteModel del = nullptr;
  size_t inputs = 0;
  size_t outputs = 0;
  std::vector<Handle*> in, out;  // (each call's handles)
};

const char* const KERNEL = "descent kernel";

void close_kernel(PyObject* capsule) {
  auto* k = static_cast<Kernel*>(PyCapsule_GetPointer(capsule, KERNEL));
  if (k != nullptr) {
    k->del(k->model);  // (the library stays loaded: its code may still be on a stack)
    delete k;
  }
}

// open_kernel(path) -> capsule
//
// The kernel library at ``path`` (a CPU model) opened and one model instance made.
// Raises OSError where the library or its interface is not there.
PyObject* open_kernel(PyObject*, PyObject* args) {
  const char* path;
  if (!PyArg_ParseTuple(args, "s", &path)) {
    return nullptr;
  }
  void* lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    PyErr_Format(PyExc_OSError, "cannot open %s: %s", path, dlerror());
    return nullptr;
  }
  auto create = reinterpret_cast<Create>(dlsym(lib, "AOTInductorModelContainerCreateWithDevice"));
  auto drop = reinterpret_cast<Delete>(dlsym(lib, "AOTInductorModelContainerDelete"));
  auto inputs = reinterpret_cast<Count>(dlsym(lib, "AOTInductorModelContainerGetNumInputs"));
  auto outputs = reinterpret_cast<Count>(dlsym(lib, "AOTInductorModelContainerGetNumOutputs"));
  auto make = reinterpret_cast<CreateModel>(dlsym(lib, "AOTInductorModelCreate"));
  auto run = reinterpret_cast<RunModel>(dlsym(lib, "AOTInductorModelRun"));
  auto del = reinterpret_cast<DeleteModel>(dlsym(lib, "AOTInductorModelDelete"));
  if (create == nullptr || drop == nullptr || inputs == nullptr || outputs == nullptr || make == nullptr ||
      run == nullptr || del == nullptr) {
    PyErr_Format(PyExc_OSError, "%s lacks the AOTInductor model interface", path);
    return nullptr;
  }
  std::string dir(path);
  dir = dir.substr(0, dir.find_last_of('/') + 1);
  // The counts of inputs and outputs come from a container (the model's own interface
  // has none for inputs); the calls run the model itself, without the container's
  // locking and scheduling.
  auto* k = new Kernel;
  k->run = run;
  k->del = del;
  Container* container = nullptr;
  bool made = create(&container, 1, "cpu", dir.c_str()) == 0 && inputs(container, &k->inputs) == 0 &&
      outputs(container, &k->outputs) == 0;
  if (container != nullptr) {
    drop(container);
  }
  if (!made || make(&k->model, nullptr) != 0 || k->model == nullptr) {
    delete k;
    PyErr_Format(PyExc_OSError, "could not make a model of %s", path);
    return nullptr;
  }
  k->in.resize(k->inputs);
  k->out.resize(k->outputs);
  PyObject* capsule = PyCapsule_New(k, KERNEL, close_kernel);
  if (capsule == nullptr) {
    del(k->model);
    delete k;
  }
  return capsule;
}

// The kernel run on ``inputs`` (k->inputs tensors, moved into the handles the model
// takes over): None where it returns nothing, else its outputs (a guarded step's flag).
PyObject* run_inputs(Kernel* k, at::Tensor* inputs) {
  Handle** in = k->in.data();
  for (size_t i = 0; i < k->inputs; ++i) {
    in[i] = reinterpret_cast<Handle*>(new at::Tensor(std::move(inputs[i])));
  }
  std::vector<Handle*>& out = k->out;
  std::fill(out.begin(), out.end(), nullptr);
  if (k->run(k->model, in, out.data()) != 0) {
    PyErr_SetString(PyExc_RuntimeError, "a kernel call failed (see the message above)");
    return nullptr;
  }
  bool none = true;  // (a step without a guard returns None: one null handle)
  for (Handle* h : out) {
    none = none && h == nullptr;
  }
  if (none) {
    Py_RETURN_NONE;
  }
  PyObject* result = PyList_New(static_cast<Py_ssize_t>(out.size()));
  for (size_t i = 0; i < out.size(); ++i) {
    auto* t = reinterpret_cast<at::Tensor*>(out[i]);
    PyObject* item = nullptr;
    if (t == nullptr) {
      item = Py_NewRef(Py_None);
    } else {
      item = result == nullptr ? nullptr : THPVariable_Wrap(std::move(*t));
      delete t;
    }
    if (result != nullptr) {
      if (item == nullptr) {
        Py_CLEAR(result);
      } else {
        PyList_SET_ITEM(result, static_cast<Py_ssize_t>(i), item);
      }
    }
  }
  return result;
}

Kernel* kernel_of(PyObject* capsule, PyObject* args) {
  auto* k = static_cast<Kernel*>(PyCapsule_GetPointer(capsule, KERNEL));
  if (k != nullptr && static_cast<size_t>(PyList_GET_SIZE(args)) != k->inputs) {
    PyErr_Format(PyExc_TypeError, "the kernel takes %zu tensors, not %zd", k->inputs, PyList_GET_SIZE(args));
    return nullptr;
  }
  return k;
}

// The tensors of ``args`` (a list; ``holes``: None stands for a tensor put in later,
// left undefined), or false with a TypeError.
bool tensors_of(PyObject* args, std::vector<at::Tensor>& out, bool holes = false) {
  Py_ssize_t n = PyList_GET_SIZE(args);
  out.reserve(n);
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* obj = PyList_GET_ITEM(args, i);
    if (holes && obj == Py_None) {
      out.emplace_back();
      continue;
    }
    if (!THPVariable_Check(obj)) {
      PyErr_Format(PyExc_TypeError, "argument %zd of a kernel call is not a tensor", i);
      return false;
    }
    out.push_back(THPVariable_Unpack(obj));
  }
  return true;
}

// run(kernel, args) -> None | list
//
// One call of the kernel on ``args`` (a list of tensors, as torch's runner takes them):
// None where the kernel returns nothing, else its outputs (a guarded step's flag).
PyObject* run(PyObject*, PyObject* const* argv, Py_ssize_t nargs) {
  if (nargs != 2 || !PyList_Check(argv[1])) {
    PyErr_SetString(PyExc_TypeError, "run(kernel, args: list)");
    return nullptr;
  }
  Kernel* k = kernel_of(argv[0], argv[1]);
  std::vector<at::Tensor> inputs;
  if (k == nullptr || !tensors_of(argv[1], inputs)) {
    return nullptr;
  }
  return run_inputs(k, inputs.data());
}

// call(kernel, args, scal_pos, scal, slots, grads, params, views, staged, gaps, single) -> bool
//
// One prepared kernel call of a step (what engine._make does in Python, in one call):
// the small gradients staged (as stage() does), the step's numbers ``scal`` put at
// ``scal_pos`` of ``args`` and each gradient of ``slots`` (position, index) at its
// position (None there in ``args``) as a 1-D window over its memory (as flat() does, without making Python
// objects of them), and the kernel run, on one thread when ``single`` (a short run costs
// less than waking the thread team; see engine._call). ``args`` itself is not changed.
// False, before anything is written, where stage() or flat() would answer False (the
// Python path makes the call then); a guarded kernel's flag is not looked at.
PyObject* call(PyObject*, PyObject* const* argv, Py_ssize_t nargs) {
  if (nargs != 11 || !PyList_Check(argv[1]) || !THPVariable_Check(argv[3]) || !PyList_Check(argv[4]) ||
      !PyList_Check(argv[5]) || !PyList_Check(argv[6])) {
    PyErr_SetString(PyExc_TypeError,
                    "call(kernel, args: list, scal_pos: int, scal: Tensor, slots: list, grads: list, "
                    "params: list, views, staged, gaps, single: bool)");
    return nullptr;
  }
  PyObject *args = argv[1], *slots = argv[4], *grads = argv[5], *params = argv[6], *gaps = argv[9];
  Kernel* k = kernel_of(argv[0], args);
  if (k == nullptr) {
    return nullptr;
  }
  Py_ssize_t n = PyList_GET_SIZE(args);
  Py_ssize_t scal_pos = PyLong_AsSsize_t(argv[2]);
  if (scal_pos == -1 && PyErr_Occurred()) {
    return nullptr;
  }
  if (scal_pos < 0 || scal_pos >= n) {
    PyErr_SetString(PyExc_IndexError, "the numbers' position is out of range");
    return nullptr;
  }
  std::vector<std::pair<const at::Tensor*, const at::Tensor*>> pairs;
  int ok = stage_plan(argv[7], argv[8], grads, gaps, pairs);
  if (ok <= 0) {
    return ok < 0 ? nullptr : Py_NewRef(Py_False);
  }
  std::vector<at::Tensor> inputs;
  if (!tensors_of(args, inputs, true)) {
    return nullptr;
  }
  inputs[scal_pos] = THPVariable_Unpack(argv[3]);
  Py_ssize_t m = PyList_GET_SIZE(slots);
  for (Py_ssize_t s = 0; s < m; ++s) {
    Py_ssize_t pos = 0;
    at::Tensor window;
    int got = slot_window(PyList_GET_ITEM(slots, s), n, grads, params, pos, window);
    if (got <= 0) {
      return got < 0 ? nullptr : Py_NewRef(Py_False);
    }
    inputs[pos] = std::move(window);
  }
  for (Py_ssize_t i = 0; i < n; ++i) {
    if (!inputs[i].defined()) {
      PyErr_Format(PyExc_TypeError, "argument %zd of a kernel call is None and no slot fills it", i);
      return nullptr;
    }
  }
  stage_copy(pairs, gaps);
  int threads = PyObject_IsTrue(argv[10]) ? at::get_num_threads() : 1;
  if (threads > 1) {
    at::set_num_threads(1);
  }
  PyObject* out = run_inputs(k, inputs.data());
  if (threads > 1) {
    at::set_num_threads(threads);
  }
  if (out == nullptr) {
    return nullptr;
  }
  Py_DECREF(out);
  Py_RETURN_TRUE;
}

// -- a step's numbers, separated from its flags --------------------------------------------

// pack(hs) -> (statics, names, numbers) | None
//
// What kernels.pack does, for a list of plain dicts (anything else: None, and the Python
// path runs): per dict, its True/False entries as a tuple of (name, flag) pairs, the
// names of the other entries, and their values appended to one list, in dict order.
PyObject* pack(PyObject*, PyObject* hs) {
  if (!PyList_Check(hs)) {
    return Py_NewRef(Py_None);
  }
  Py_ssize_t n = PyList_GET_SIZE(hs);
  for (Py_ssize_t i = 0; i < n; ++i) {
    if (!PyDict_CheckExact(PyList_GET_ITEM(hs, i))) {
      return Py_NewRef(Py_None);
    }
  }
  PyObject* statics = PyTuple_New(n);
  PyObject* names = PyTuple_New(n);
  PyObject* numbers = PyList_New(0);
  bool ok = statics != nullptr && names != nullptr && numbers != nullptr;
  for (Py_ssize_t i = 0; ok && i < n; ++i) {
    PyObject* h = PyList_GET_ITEM(hs, i);
    Py_ssize_t flags = 0, pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(h, &pos, &k, &v)) {
      flags += v == Py_True || v == Py_False;
    }
    PyObject* fixed = PyTuple_New(flags);
    PyObject* keys = PyTuple_New(PyDict_GET_SIZE(h) - flags);
    ok = fixed != nullptr && keys != nullptr;
    Py_ssize_t f = 0, j = 0;
    pos = 0;
    while (ok && PyDict_Next(h, &pos, &k, &v)) {
      if (v == Py_True || v == Py_False) {
        PyObject* pair = PyTuple_Pack(2, k, v);
        ok = pair != nullptr;
        if (ok) {
          PyTuple_SET_ITEM(fixed, f++, pair);
        }
      } else {
        PyTuple_SET_ITEM(keys, j++, Py_NewRef(k));
        ok = PyList_Append(numbers, v) == 0;
      }
    }
    if (fixed != nullptr) {
      PyTuple_SET_ITEM(statics, i, fixed);
    }
    if (keys != nullptr) {
      PyTuple_SET_ITEM(names, i, keys);
    }
  }
  if (!ok) {
    Py_XDECREF(statics);
    Py_XDECREF(names);
    Py_XDECREF(numbers);
    return nullptr;
  }
  PyObject* out = PyTuple_Pack(3, statics, names, numbers);
  Py_DECREF(statics);
  Py_DECREF(names);
  Py_DECREF(numbers);
  return out;
}

// -- large freed CPU blocks kept for the next gradient ------------------------------------
//
// The step inside backward frees each gradient as soon as its param has stepped. With
// glibc told to hand large blocks back to the OS at once (see backward.py), the next
// gradient backward makes is page-faulted in afresh: on a 50 M-param MLP 40 ms of a 110 ms
// iteration. Left to itself, glibc keeps the freed blocks but cannot reuse them for the
// next gradient (torch asks for 64-byte aligned memory, which needs a slightly larger
// free block than the one just freed), so the process grows by most of a set of
// gradients. This allocator stands in front of torch's CPU allocator while the step
// inside backward is on: a block of at least ``least`` bytes that is freed waits in a
// cache holding at most ``cap`` bytes (the oldest leave first), and an allocation takes
// the smallest waiting block that fits it with at most an eighth to spare. Smaller
// allocations go straight to torch's allocator, as do all of them once it is off.

class BlockCache final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) override {
    // (every CPU allocation of the process comes here: those the cache never takes pass
    // by without the lock)
    c10::Allocator* below = base_.load(std::memory_order_acquire);
    size_t cap = cap_.load(std::memory_order_relaxed);
    if (cap == 0 || n < least_.load(std::memory_order_relaxed) || n > cap) {
      return below->allocate(n);
    }
    void* p = nullptr;
    bool eligible = false;
    {
      std::lock_guard<std::mutex> hold(lock_);
      eligible = cap_ > 0 && n >= least_ && n <= cap_;
      size_t best = 0;
      for (size_t i = 0; eligible && i < free_.size(); ++i) {
        size_t size = free_[i].size;
        if (size >= n && size - n <= n / 8 && (p == nullptr || size < free_[best].size)) {
          p = free_[i].ptr;
          best = i;
        }
      }
      if (p != nullptr) {
        Block b = free_[best];
        free_.erase(free_.begin() + static_cast<std::ptrdiff_t>(best));
        cached_ -= b.size;
        live_[p] = b;
        ++hits_;
      } else if (eligible) {
        ++misses_;
      }
    }
    if (p == nullptr) {
      c10::DeleterFnPtr release = below->raw_deleter();
      if (!eligible || release == nullptr) {  // (nor can a block be had of one without)
        return below->allocate(n);
      }
      p = below->raw_allocate(n);
      std::lock_guard<std::mutex> hold(lock_);
      live_[p] = Block{p, n, release};
    }
    return {p, p, &BlockCache::give_back, c10::Device(c10::DeviceType::CPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override {
    return &BlockCache::give_back;
  }

  // (pure virtual in newer torch, absent in older: no ``override``)
  void copy_data(void* dest, const void* src, std::size_t count) const {
    std::memcpy(dest, src, count);
  }

  // Stand in front of torch's CPU allocator keeping at most ``cap`` bytes of blocks of
  // ``least`` bytes or more (cap 0: step aside and free what waits). False where it
  // could not (another allocator with a higher priority is in place).
  bool set(size_t cap, size_t least) {
    std::vector<Block> gone;
    c10::Allocator* now = c10::GetCPUAllocator();
    {
      std::lock_guard<std::mutex> hold(lock_);
      if (cap > 0 && now != this) {
        base_ = now;
      }
      cap_ = cap;
      least_ = std::max<size_t>(least, 1);
      trim(0, gone);
    }
    for (const Block& b : gone) {
      b.release(b.ptr);
    }
    if (cap > 0 && now != this) {
      c10::SetCPUAllocator(this, 0);
    } else if (cap == 0 && now == this) {
      c10::SetCPUAllocator(base_, 0);
    }
    return (c10::GetCPUAllocator() == this) == (cap > 0);
  }

  PyObject* info() {
    std::lock_guard<std::mutex> hold(lock_);
    return Py_BuildValue(
        "{s:O,s:n,s:n,s:n,s:K,s:K}", "on", c10::GetCPUAllocator() == this ? Py_True : Py_False, "cap",
        static_cast<Py_ssize_t>(cap_), "cached", static_cast<Py_ssize_t>(cached_), "blocks",
        static_cast<Py_ssize_t>(free_.size()), "hits", static_cast<unsigned long long>(hits_), "misses",
        static_cast<unsigned long long>(misses_));
  }

  static BlockCache& the() {
    static auto* cache = made();  // (never destroyed: blocks may outlive any scope)
    return *cache;
  }

 private:
  // A process forked while another thread holds the lock would find it held forever:
  // the fork waits for it, and both sides let go.
  static BlockCache* made() {
    auto* cache = new BlockCache;
    pthread_atfork([] { the().lock_.lock(); }, [] { the().lock_.unlock(); }, [] { the().lock_.unlock(); });
    return cache;
  }

  struct Block {
    void* ptr;
    size_t size;
    c10::DeleterFnPtr release;  // (the allocator below's own, for when it leaves)
  };

  static void give_back(void* p) {
    BlockCache& c = the();
    std::vector<Block> gone;
    c10::DeleterFnPtr other = nullptr;
    {
      std::lock_guard<std::mutex> hold(c.lock_);
      auto it = c.live_.find(p);
      if (it == c.live_.end()) {  // (raw memory the allocator below handed out)
        other = c.base_.load()->raw_deleter();
      } else {
        Block b = it->second;
        c.live_.erase(it);
        if (c.cap_ > 0 && b.size <= c.cap_) {
          c.trim(c.cap_ - b.size, gone);
          c.free_.push_back(b);
          c.cached_ += b.size;
        } else {
          gone.push_back(b);
        }
      }
    }
    for (const Block& g : gone) {
      g.release(g.ptr);
    }
    if (other != nullptr) {
      other(p);
    }
  }

  // Oldest blocks out until at most ``keep`` bytes wait (called holding the lock; the
  // caller frees ``gone`` after letting go of it).
  void trim(size_t keep, std::vector<Block>& gone) {
    size_t k = 0;
    while (k < free_.size() && cached_ > keep) {
      cached_ -= free_[k].size;
      gone.push_back(free_[k++]);
    }
    free_.erase(free_.begin(), free_.begin() + static_cast<std::ptrdiff_t>(k));
  }

  std::mutex lock_;
  // (written holding the lock; read without it on the way in)
  std::atomic<c10::Allocator*> base_{nullptr};
  std::atomic<size_t> cap_{0};
  std::atomic<size_t> least_{1};
  size_t cached_ = 0;
  uint64_t hits_ = 0, misses_ = 0;
  std::unordered_map<void*, Block> live_;  // blocks handed out, by address
  std::vector<Block> free_;  // blocks waiting, oldest first
};

// block_cache(cap, least) -> bool: see BlockCache::set
PyObject* block_cache(PyObject*, PyObject* args) {
  Py_ssize_t cap, least;
  if (!PyArg_ParseTuple(args, "nn", &cap, &least)) {
    return nullptr;
  }
  if (cap < 0 || least < 0) {
    PyErr_Format(PyExc_ValueError, "block_cache(cap, least) takes sizes >= 0, got %zd, %zd", cap, least);
    return nullptr;
  }
  return PyBool_FromLong(BlockCache::the().set(static_cast<size_t>(cap), static_cast<size_t>(least)));
}

// block_cache_info() -> dict: on, cap, cached (bytes), blocks, hits, misses
PyObject* block_cache_info(PyObject*, PyObject*) {
  return BlockCache::the().info();
}

PyMethodDef methods[] = {
    {"pack", pack, METH_O, "a step's numbers separated from its flags (as kernels.pack)"},
    {"block_cache", block_cache, METH_VARARGS, "keep large freed CPU blocks for reuse (cap 0: stop)"},
    {"block_cache_info", block_cache_info, METH_NOARGS, "what the block cache holds and how it served"},
    {"open_kernel", open_kernel, METH_VARARGS, "a kernel library opened, to be run by run()"},
    {"run", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(run)), METH_FASTCALL,
     "one kernel call (as torch's runner makes it)"},
    {"grads", grads, METH_VARARGS, "every param's gradient when each is as expected, else None"},
    {"again", again, METH_VARARGS, "a repeated step's look at a bucket of fresh gradients"},
    {"flat", flat, METH_VARARGS, "gradients as 1-D windows into a kernel call's arguments"},
    {"stage", stage, METH_VARARGS, "small gradients copied into the staging buffer"},
    {"call", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(call)), METH_FASTCALL,
     "one prepared kernel call: staged, gradients read in place, run"},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "descent_native", nullptr, -1, methods};

}  // namespace

PyMODINIT_FUNC PyInit_descent_native(void) {
  return PyModule_Create(&module);
}
