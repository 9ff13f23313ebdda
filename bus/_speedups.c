/* The subscriber's hot path in C: GapTracker's decode of the next event of a tracked topic.
 *
 * Optional: bus/_calls.py uses it when it was built (setup.py builds it when a C compiler and
 * Python's headers are there, and goes on without it otherwise) and does the same in Python
 * when it was not, or when LINEBUS_PURE_PYTHON is set. Only the common case is handled here:
 * the next event in sequence from the publisher whose body head GapTracker stored for the topic,
 * exactly the fast path of GapTracker.decode. Every other frame, and any doubt, goes to the
 * fallback (GapTracker._decode), which has the full rules. The msgpack decoding itself is
 * msgpack.unpackb's, called with the same arguments as the Python path. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

static PyObject *unpackb;        /* msgpack.unpackb */
static PyObject *unpack_kwargs;  /* {"strict_map_key": True, "ext_hook": no_ext_hook} */
static PyObject *has_timestamp;  /* protocol.has_timestamp(frame, value) -> bool */
static PyTypeObject *tracked;    /* TrackedEvent, a tuple subclass of 7 fields */
static PyObject *zero;

typedef struct {
    PyObject_HEAD
    PyObject *last;      /* dict: topic bytes -> [topic str, epoch, last seq, body head] */
    PyObject *fallback;  /* callable(frame) -> TrackedEvent | None: the full path */
} Decoder;

static PyObject *
full_path(Decoder *self, PyObject *frame)
{
    return PyObject_CallOneArg(self->fallback, frame);
}

static PyObject *
Decoder_decode(Decoder *self, PyObject *frame)
{
    if (!PyBytes_CheckExact(frame) || unpackb == NULL)
        return full_path(self, frame);
    const char *buf = PyBytes_AS_STRING(frame);
    Py_ssize_t size = PyBytes_GET_SIZE(frame);
    const char *nul = memchr(buf, 0, (size_t)size);
    if (nul == NULL)
        return full_path(self, frame);
    Py_ssize_t sep = nul - buf;
    PyObject *key = PyBytes_FromStringAndSize(buf, sep);
    if (key == NULL)
        return NULL;
    PyObject *state = PyDict_GetItemWithError(self->last, key); /* borrowed */
    Py_DECREF(key);
    if (state == NULL) {
        if (PyErr_Occurred())
            return NULL;
        return full_path(self, frame);
    }
    if (!PyList_CheckExact(state) || PyList_GET_SIZE(state) != 4)
        return full_path(self, frame);
    PyObject *head = PyList_GET_ITEM(state, 3);
    if (!PyBytes_CheckExact(head))
        return full_path(self, frame);
    Py_ssize_t head_size = PyBytes_GET_SIZE(head);
    if (size - sep - 1 < head_size || memcmp(nul + 1, PyBytes_AS_STRING(head), (size_t)head_size))
        return full_path(self, frame);

    PyObject *packed = PyBytes_FromStringAndSize(nul + 1, size - sep - 1);
    if (packed == NULL)
        return NULL;
    PyObject *args = PyTuple_Pack(1, packed);
    Py_DECREF(packed);
    if (args == NULL)
        return NULL;
    /* The state is held from here on: unpackb and has_timestamp run Python code. */
    Py_INCREF(state);
    PyObject *body = PyObject_Call(unpackb, args, unpack_kwargs);
    Py_DECREF(args);
    if (body == NULL) {
        /* Malformed: the full path decides (and counts it). */
        PyErr_Clear();
        Py_DECREF(state);
        return full_path(self, frame);
    }
    PyObject *result = NULL;
    if (!PyList_CheckExact(body) || PyList_GET_SIZE(body) != 7 || PyList_GET_SIZE(state) != 4)
        goto full;
    PyObject *last_seq = PyList_GET_ITEM(state, 2);
    if (!PyLong_CheckExact(last_seq))
        goto full;
    PyObject *seq = PyList_GET_ITEM(body, 4);
    PyObject *ts = PyList_GET_ITEM(body, 5);
    PyObject *data = PyList_GET_ITEM(body, 6);
    if (!PyLong_CheckExact(seq) || !(PyFloat_CheckExact(ts) || PyLong_CheckExact(ts)))
        goto full;
    /* seq == last seq + 1 (and so >= 1): the next in sequence. */
    int overflow_a = 0, overflow_b = 0;
    long long next = PyLong_AsLongLongAndOverflow(seq, &overflow_a);
    long long prev = PyLong_AsLongLongAndOverflow(last_seq, &overflow_b);
    if (overflow_a || overflow_b || prev == LLONG_MAX || next != prev + 1) {
        if (PyErr_Occurred())
            goto done;
        goto full;
    }
    if (memchr(buf, 0xFF, (size_t)size) != NULL) {
        PyObject *found = PyObject_CallFunctionObjArgs(has_timestamp, frame, data, NULL);
        if (found == NULL)
            goto done;
        int truth = PyObject_IsTrue(found);
        Py_DECREF(found);
        if (truth < 0)
            goto done;
        if (truth || PyList_GET_SIZE(state) != 4 || PyList_GET_ITEM(state, 2) != last_seq)
            goto full;
    }
    result = PyType_GenericAlloc(tracked, 7);
    if (result == NULL)
        goto done;
    PyObject *items[7] = {
        PyList_GET_ITEM(state, 0), PyList_GET_ITEM(body, 2), seq, ts, data, zero,
        PyList_GET_ITEM(body, 3),
    };
    for (int i = 0; i < 7; i++) {
        Py_INCREF(items[i]);
        PyTuple_SET_ITEM(result, i, items[i]);
    }
    Py_INCREF(seq);
    PyList_SET_ITEM(state, 2, seq);
    Py_DECREF(last_seq);
    goto done;
full:
    result = full_path(self, frame);
done:
    Py_DECREF(body);
    Py_DECREF(state);
    return result;
}

static int
Decoder_init(Decoder *self, PyObject *args, PyObject *kwds)
{
    PyObject *last, *fallback;
    static char *names[] = {"last", "fallback", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O:Decoder", names, &PyDict_Type, &last,
                                     &fallback))
        return -1;
    Py_INCREF(last);
    Py_XSETREF(self->last, last);
    Py_INCREF(fallback);
    Py_XSETREF(self->fallback, fallback);
    return 0;
}

static int
Decoder_traverse(Decoder *self, visitproc visit, void *arg)
{
    Py_VISIT(self->last);
    Py_VISIT(self->fallback);
    return 0;
}

static int
Decoder_clear(Decoder *self)
{
    Py_CLEAR(self->last);
    Py_CLEAR(self->fallback);
    return 0;
}

static void
Decoder_dealloc(Decoder *self)
{
    PyObject_GC_UnTrack(self);
    Decoder_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Decoder_methods[] = {
    {"decode", (PyCFunction)Decoder_decode, METH_O,
     "Decode one event frame: the next of a tracked topic here, any other by the fallback."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject DecoderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "bus._speedups.Decoder",
    .tp_basicsize = sizeof(Decoder),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Decoder(last, fallback): GapTracker's hot path (see bus/_calls.py).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Decoder_init,
    .tp_traverse = (traverseproc)Decoder_traverse,
    .tp_clear = (inquiry)Decoder_clear,
    .tp_dealloc = (destructor)Decoder_dealloc,
    .tp_methods = Decoder_methods,
};

static PyObject *
configure(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *unpack, *kwargs, *timestamp, *event_type;
    if (!PyArg_ParseTuple(args, "OO!OO!:configure", &unpack, &PyDict_Type, &kwargs, &timestamp,
                          &PyType_Type, &event_type))
        return NULL;
    if (!PyType_IsSubtype((PyTypeObject *)event_type, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "the event type must be a tuple subclass");
        return NULL;
    }
    Py_INCREF(unpack);
    Py_XSETREF(unpackb, unpack);
    Py_INCREF(kwargs);
    Py_XSETREF(unpack_kwargs, kwargs);
    Py_INCREF(timestamp);
    Py_XSETREF(has_timestamp, timestamp);
    Py_INCREF(event_type);
    Py_XSETREF(tracked, (PyTypeObject *)event_type);
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"configure", configure, METH_VARARGS,
     "configure(unpackb, unpack_kwargs, has_timestamp, TrackedEvent): what decode uses."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "bus._speedups",
    .m_doc = "Optional C hot path of the subscriber's event decoding (bus/_calls.py).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (PyType_Ready(&DecoderType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    zero = PyLong_FromLong(0);
    Py_INCREF(&DecoderType);
    if (PyModule_AddObject(m, "Decoder", (PyObject *)&DecoderType) < 0) {
        Py_DECREF(&DecoderType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
