/* Non-blocking ZeroMQ calls for the hot paths, in C, without letting go of the GIL.
 *
 * pyzmq releases the GIL around every send and receive and turns every option number into an
 * enum member on each getsockopt. For a call that cannot block (ZMQ_DONTWAIT, ZMQ_EVENTS) both
 * are pure cost: the enum lookup is most of a ZMQ_EVENTS query (1.3 µs), and in a process with
 * a second busy thread (the telemetry actor's writer) each release hands the GIL over, and the
 * loop waits to get it back before it can go on. Here the same libzmq calls are made directly,
 * with the GIL held. Only calls that cannot block are made here (send and receive with
 * ZMQ_DONTWAIT): one that may wait must let other threads run and retry after a signal, which
 * pyzmq does.
 *
 * Optional, like bus/_speedups.c: bus/_zmqio.py uses it when it was built and configured, and
 * pyzmq otherwise (or when LINEBUS_PURE_PYTHON is set). No libzmq header or library is needed
 * at build time: _zmqio.py hands over the addresses of the functions of the libzmq that pyzmq
 * itself loaded (found through ctypes), so the sockets and these calls share one libzmq.
 *
 * Every function takes the socket's handle (pyzmq's Socket.underlying, 0 once closed) and
 * reports an error as a positive errno (an int) instead of raising: _zmqio.py raises pyzmq's
 * own exception for it, so the errors are the ones pyzmq gives. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <stddef.h>

#define ZMQ_DONTWAIT_FLAG 1
#define ZMQ_EVENTS_OPTION 15

/* zmq_msg_t as zmq.h declares it: 64 opaque bytes, aligned for a pointer. */
typedef struct {
    union {
        unsigned char bytes[64];
        void *align;
    } u;
} zmq_msg_t;

typedef int (*getsockopt_fn)(void *, int, void *, size_t *);
typedef int (*send_fn)(void *, const void *, size_t, int);
typedef int (*msg_init_fn)(zmq_msg_t *);
typedef int (*msg_recv_fn)(zmq_msg_t *, void *, int);
typedef void *(*msg_data_fn)(zmq_msg_t *);
typedef size_t (*msg_size_fn)(const zmq_msg_t *);
typedef int (*msg_more_fn)(const zmq_msg_t *);
typedef int (*msg_close_fn)(zmq_msg_t *);
typedef int (*errno_fn)(void);

static struct {
    getsockopt_fn getsockopt;
    send_fn send;
    msg_init_fn msg_init;
    msg_recv_fn msg_recv;
    msg_data_fn msg_data;
    msg_size_fn msg_size;
    msg_more_fn msg_more;
    msg_close_fn msg_close;
    errno_fn error;
} zmq;

static int configured = 0;

static PyObject *
configure(PyObject *module, PyObject *args)
{
    /* The addresses, in this order, of zmq_getsockopt, zmq_send, zmq_msg_init, zmq_msg_recv,
     * zmq_msg_data, zmq_msg_size, zmq_msg_more, zmq_msg_close and zmq_errno. */
    PyObject *a[9];
    if (!PyArg_ParseTuple(args, "OOOOOOOOO", &a[0], &a[1], &a[2], &a[3], &a[4], &a[5], &a[6],
                          &a[7], &a[8]))
        return NULL;
    void *p[9];
    for (int i = 0; i < 9; i++) {
        p[i] = PyLong_AsVoidPtr(a[i]);
        if (p[i] == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "a libzmq function's address is 0");
            return NULL;
        }
    }
    zmq.getsockopt = (getsockopt_fn)p[0];
    zmq.send = (send_fn)p[1];
    zmq.msg_init = (msg_init_fn)p[2];
    zmq.msg_recv = (msg_recv_fn)p[3];
    zmq.msg_data = (msg_data_fn)p[4];
    zmq.msg_size = (msg_size_fn)p[5];
    zmq.msg_more = (msg_more_fn)p[6];
    zmq.msg_close = (msg_close_fn)p[7];
    zmq.error = (errno_fn)p[8];
    configured = 1;
    Py_RETURN_NONE;
}

static PyObject *
not_configured(void)
{
    PyErr_SetString(PyExc_RuntimeError, "bus._zmqcalls: configure() was not called");
    return NULL;
}

static PyObject *
blocking(void)
{
    /* A call that may wait must let other threads run, and retry after a signal: pyzmq's. */
    PyErr_SetString(PyExc_ValueError, "bus._zmqcalls makes non-blocking calls only (ZMQ_DONTWAIT)");
    return NULL;
}

/* The socket handle and flags of a send or receive. 0: the call can go on; -1: an exception is
 * set; else the errno to answer with (ENOTSOCK: a closed socket's handle is 0). */
static int
target(PyObject *handle_arg, PyObject *flags_arg, void **handle, int *flags)
{
    *handle = PyLong_AsVoidPtr(handle_arg);
    if (*handle == NULL)
        return PyErr_Occurred() ? -1 : ENOTSOCK;
    *flags = (int)PyLong_AsLong(flags_arg);
    if (*flags == -1 && PyErr_Occurred())
        return -1;
    if (!(*flags & ZMQ_DONTWAIT_FLAG)) {
        blocking();
        return -1;
    }
    return 0;
}

static PyObject *
events(PyObject *module, PyObject *arg)
{
    /* events(handle) -> ZMQ_EVENTS as an int >= 0, or -errno */
    if (!configured)
        return not_configured();
    void *handle = PyLong_AsVoidPtr(arg);
    if (handle == NULL)
        return PyErr_Occurred() ? NULL : PyLong_FromLong(-ENOTSOCK);
    int value = 0;
    size_t size = sizeof(value);
    if (zmq.getsockopt(handle, ZMQ_EVENTS_OPTION, &value, &size) != 0)
        return PyLong_FromLong(-zmq.error());
    return PyLong_FromLong(value);
}

static PyObject *
send(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    /* send(handle, data: bytes, flags) -> 0, or errno */
    if (!configured)
        return not_configured();
    if (nargs != 3 || !PyBytes_Check(args[1]) || !PyLong_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "send(handle: int, data: bytes, flags: int)");
        return NULL;
    }
    void *handle;
    int flags, status = target(args[0], args[2], &handle, &flags);
    if (status)
        return status < 0 ? NULL : PyLong_FromLong(status);
    const char *data = PyBytes_AS_STRING(args[1]);
    size_t size = (size_t)PyBytes_GET_SIZE(args[1]);
    int rc = zmq.send(handle, data, size, flags);
    return PyLong_FromLong(rc < 0 ? zmq.error() : 0);
}

static PyObject *
recv(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    /* recv(handle, flags) -> (frame: bytes, more: bool), or errno */
    if (!configured)
        return not_configured();
    if (nargs != 2 || !PyLong_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "recv(handle: int, flags: int)");
        return NULL;
    }
    void *handle;
    int flags, status = target(args[0], args[1], &handle, &flags);
    if (status)
        return status < 0 ? NULL : PyLong_FromLong(status);
    zmq_msg_t msg;
    zmq.msg_init(&msg);
    if (zmq.msg_recv(&msg, handle, flags) < 0) {
        int error = zmq.error();
        zmq.msg_close(&msg);
        return PyLong_FromLong(error);
    }
    PyObject *frame = PyBytes_FromStringAndSize(zmq.msg_data(&msg), (Py_ssize_t)zmq.msg_size(&msg));
    int more = zmq.msg_more(&msg);
    zmq.msg_close(&msg);
    if (frame == NULL)
        return NULL;
    PyObject *result = PyTuple_New(2);
    if (result == NULL) {
        Py_DECREF(frame);
        return NULL;
    }
    PyTuple_SET_ITEM(result, 0, frame);
    PyTuple_SET_ITEM(result, 1, Py_NewRef(more ? Py_True : Py_False));
    return result;
}

static PyMethodDef module_methods[] = {
    {"configure", configure, METH_VARARGS,
     "configure(*addresses): libzmq's zmq_getsockopt, zmq_send, zmq_msg_init, zmq_msg_recv, "
     "zmq_msg_data, zmq_msg_size, zmq_msg_more, zmq_msg_close and zmq_errno, in this order."},
    {"events", events, METH_O, "events(handle) -> ZMQ_EVENTS (an int >= 0), or -errno."},
    {"send", (PyCFunction)(void (*)(void))send, METH_FASTCALL,
     "send(handle, data: bytes, flags) -> 0, or errno. Copies data, as pyzmq's copy=True; "
     "flags must hold ZMQ_DONTWAIT."},
    {"recv", (PyCFunction)(void (*)(void))recv, METH_FASTCALL,
     "recv(handle, flags) -> (frame: bytes, more: bool), or errno; flags must hold ZMQ_DONTWAIT."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "bus._zmqcalls",
    .m_doc = "Non-blocking libzmq calls with the GIL held (bus/_zmqio.py).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__zmqcalls(void)
{
    return PyModule_Create(&module);
}
