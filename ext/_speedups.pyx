# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""perfsdk's hot path in C: the quantile sketch, rolling series, the per-call timing wrapper,
counters and gauges, the vectorised threshold check, and what snapshots and the Prometheus text
cost most: one-call series statistics, record construction, histogram counts read straight from
serialised sketches, exposition lines filled in from templates.

``perfsdk/_speedups_py.py`` is the pure-Python twin with identical semantics (same keys, same
floating-point operations in the same order, same bytes on serialisation); the test-suite checks that
the two agree. Read the twin first: it is the specification, this is the fast copy.

Atomicity: every method here runs without calling back into Python between reading and writing the
C state, so under the GIL a recording is never interleaved with another (no observation lost).
"""

cimport cython
from cpython.object cimport PyObject
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport int64_t, uint64_t, uint8_t
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memchr, memcmp, memcpy, memset, strlen
from libc.math cimport floor, ldexp, cbrt, sqrt, log2, isnan, isinf, INFINITY, NAN

cdef extern from "_clock.h":
    int perfsdk_use_tsc
    int64_t perfsdk_now_ticks() nogil
    int64_t perfsdk_monotonic_ns() nogil
    int perfsdk_have_tsc() nogil

cdef extern from "Python.h":
    ctypedef PyObject* (*vectorcallfunc)(PyObject* callable, PyObject* const* args, size_t nargsf,
                                         PyObject* kwnames)
    PyObject* PyObject_Vectorcall(PyObject* callable, PyObject* const* args, size_t nargsf,
                                  PyObject* kwnames)
    PyObject* PyObject_CallNoArgs(PyObject* callable)
    vectorcallfunc PyVectorcall_Function(PyObject* callable)
    long long PyLong_AsLongLong(PyObject* obj)
    PyObject* PyErr_Occurred()
    void Py_DECREF(PyObject* o)
    void PyErr_Fetch(PyObject** t, PyObject** v, PyObject** tb)
    void PyErr_Restore(PyObject* t, PyObject* v, PyObject* tb)
    void PyErr_Clear()
    unsigned long Py_TPFLAGS_HAVE_VECTORCALL
    unsigned long Py_TPFLAGS_METHOD_DESCRIPTOR
    ctypedef struct PyTypeObjectRaw "PyTypeObject":
        Py_ssize_t tp_vectorcall_offset
        unsigned long tp_flags
        PyObject* (*tp_alloc)(PyTypeObjectRaw* t, Py_ssize_t n)
        int (*tp_descr_set)(PyObject* d, PyObject* obj, PyObject* value)
    PyTypeObjectRaw* Py_TYPE(PyObject* o)
    object PyMethod_New(object func, object self)
    char* PyOS_double_to_string(double val, char format_code, int precision, int flags,
                                int* ptype) except NULL
    int Py_DTSF_ADD_DOT_0
    void PyMem_Free(void* p)
    PyObject* bytes_new_raw "PyBytes_FromStringAndSize"(const char* v, Py_ssize_t n)
    char* bytes_data_raw "PyBytes_AS_STRING"(PyObject* b)
    int _PyBytes_Resize(PyObject** b, Py_ssize_t newsize)
    long long PyLong_AsLongLongAndOverflow(object v, int* overflow) except? -1

# --- the index mapping -------------------------------------------------------------------------
# log2(x) is approximated from the float's bits by a cubic in the significand (DDSketch's
# "cubically interpolated" mapping): no log() per value. MAX_SLOPE_RATIO bounds how much faster the
# true log2 grows than the cubic (7 / (10 ln 2), at s = 0), so scaling by it keeps every bucket's
# upper/lower ratio within gamma and the relative error within alpha.
cdef double CUBIC_A = 6.0 / 35.0
cdef double CUBIC_B = -3.0 / 5.0
cdef double CUBIC_C = 10.0 / 7.0
cdef double MAX_SLOPE_RATIO = 1.00988652862228
cdef double MIN_INDEXABLE = 2.2250738585072014e-308
cdef double DBL_MAX_VALUE = 1.7976931348623157e308
# Below this the bucket ratio gamma rounds towards 1 and the key mapping loses meaning.
cdef double MIN_ALPHA_C = 1e-6
MIN_ALPHA = MIN_ALPHA_C
cdef double TWO_POW_M52 = 2.220446049250313e-16
cdef double CARDANO_D0 = CUBIC_B * CUBIC_B - 3.0 * CUBIC_A * CUBIC_C
cdef int64_t DEFAULT_MAX_BINS = 2048
cdef int64_t GROW_SLACK = 32
cdef int64_t EMPTY_EPOCH = -(1LL << 62)
cdef enum:
    PENDING_CAP = 64
FORMAT_MAGIC = b"PSK1"

cdef inline double approx_log2(double x) noexcept nogil:
    cdef uint64_t bits
    memcpy(&bits, &x, 8)
    cdef double e = <double>(<int64_t>((bits >> 52) & 0x7FF) - 1023)
    cdef double s = <double>(bits & 0xFFFFFFFFFFFFFULL) * TWO_POW_M52
    return ((CUBIC_A * s + CUBIC_B) * s + CUBIC_C) * s + e

cdef inline int64_t key_of(double magnitude, double mult) noexcept nogil:
    # floor() without a libm call (baseline x86-64 has no roundsd); exact for |v| < 2**62
    cdef double v = approx_log2(magnitude) * mult
    cdef int64_t k = <int64_t>v
    if v < <double>k:
        k -= 1
    return k

cdef inline double exp2_approx(double y) noexcept nogil:
    cdef double e = floor(y)
    cdef double d = y - e
    cdef double d1 = 2.0 * CUBIC_B * CUBIC_B * CUBIC_B - 9.0 * CUBIC_A * CUBIC_B * CUBIC_C - 27.0 * CUBIC_A * CUBIC_A * d
    cdef double p = cbrt((d1 - sqrt(d1 * d1 - 4.0 * CARDANO_D0 * CARDANO_D0 * CARDANO_D0)) / 2.0)
    cdef double s = -(CUBIC_B + p + CARDANO_D0 / p) / (3.0 * CUBIC_A)
    return ldexp(1.0 + s, <int>e)

cdef inline double value_of(int64_t key, double mult) noexcept nogil:
    cdef double lo = exp2_approx(<double>key / mult)
    cdef double hi = exp2_approx(<double>(key + 1) / mult)
    cdef double r
    if isinf(hi):
        hi = DBL_MAX_VALUE  # the top bucket ends at the largest double
    r = hi / lo
    return lo * (2.0 * r / (1.0 + r))  # the harmonic mean of lo and hi, without overflow

cdef double multiplier_for(double alpha):
    cdef double gamma = (1.0 + alpha) / (1.0 - alpha)
    return MAX_SLOPE_RATIO / log2(gamma)

def check_alpha(alpha):
    """Validate a relative accuracy; return it as a float."""
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"alpha={alpha!r} is not a number; expected a float in (0, 1), e.g. 0.01") from None
    if not (MIN_ALPHA_C <= a < 1.0):
        raise ValueError(f"alpha={alpha!r} is outside [1e-06, 1); expected e.g. 0.01 for 1% relative error")
    return a

# --- dense store -------------------------------------------------------------------------------

cdef struct Store:
    uint64_t* bins
    int64_t offset
    int64_t cap
    int64_t kmin
    int64_t kmax
    uint64_t total

cdef inline void store_init(Store* st) noexcept nogil:
    st.bins = NULL
    st.offset = 0
    st.cap = 0
    st.kmin = 0
    st.kmax = -1
    st.total = 0

cdef inline void store_free(Store* st) noexcept nogil:
    if st.bins != NULL:
        free(st.bins)
    store_init(st)

cdef inline void store_clear(Store* st) noexcept nogil:
    if st.bins != NULL and st.total > 0:
        memset(st.bins, 0, <size_t>st.cap * sizeof(uint64_t))
    st.total = 0
    st.kmin = 0
    st.kmax = -1

cdef inline void store_reset(Store* st) noexcept nogil:
    """Empty the store, keeping its memory (zeroes only the keys in use: nothing else is set)."""
    if st.total > 0:
        memset(st.bins + (st.kmin - st.offset), 0, <size_t>(st.kmax - st.kmin + 1) * sizeof(uint64_t))
    st.total = 0
    st.kmin = 0
    st.kmax = -1

cdef int store_cover(Store* st, int64_t lo, int64_t hi, bint upward) noexcept nogil:
    """Make the array cover keys [lo, hi] (and the keys already held). 0 on success, -1 on no memory."""
    if st.cap > 0 and lo >= st.offset and hi < st.offset + st.cap:
        return 0
    if st.total > 0:
        if st.kmin < lo:
            lo = st.kmin
        if st.kmax > hi:
            hi = st.kmax
    cdef int64_t need = hi - lo + 1
    cdef int64_t cap = need + GROW_SLACK
    cdef int64_t offset = lo if upward else lo - GROW_SLACK
    cdef uint64_t* bins = <uint64_t*>calloc(<size_t>cap, sizeof(uint64_t))
    if bins == NULL:
        return -1
    if st.total > 0:
        memcpy(bins + (st.kmin - offset), st.bins + (st.kmin - st.offset),
               <size_t>(st.kmax - st.kmin + 1) * sizeof(uint64_t))
    if st.bins != NULL:
        free(st.bins)
    st.bins = bins
    st.offset = offset
    st.cap = cap
    return 0

cdef inline int store_add(Store* st, int64_t key, uint64_t n, int64_t max_bins) noexcept nogil:
    """Add n at key. Beyond max_bins distinct keys the lowest keys are folded into one bucket."""
    cdef uint64_t folded = 0
    cdef int64_t k, new_lo
    if key >= st.kmin and key <= st.kmax:
        st.bins[key - st.offset] += n
        st.total += n
        return 0
    if n == 0:
        return 0
    if st.total == 0:
        if store_cover(st, key, key, True) < 0:
            return -1
        st.kmin = key
        st.kmax = key
    elif key > st.kmax:
        if max_bins > 0 and key - st.kmin + 1 > max_bins:
            new_lo = key - max_bins + 1
            k = st.kmin
            while k <= st.kmax and k < new_lo:
                folded += st.bins[k - st.offset]
                st.bins[k - st.offset] = 0
                k += 1
            if st.kmax < new_lo:
                # everything was folded: the store restarts at new_lo (nothing left to copy)
                st.total = 0
                if store_cover(st, new_lo, key, True) < 0:
                    return -1
                st.total = folded
            else:
                st.kmin = new_lo
                if store_cover(st, new_lo, key, True) < 0:
                    return -1
            st.kmin = new_lo
            st.bins[new_lo - st.offset] += folded
        elif store_cover(st, st.kmin, key, True) < 0:
            return -1
        st.kmax = key
    elif key < st.kmin:
        if max_bins > 0 and st.kmax - key + 1 > max_bins:
            key = st.kmax - max_bins + 1
        if key < st.kmin:
            if store_cover(st, key, st.kmax, False) < 0:
                return -1
            st.kmin = key
    st.bins[key - st.offset] += n
    st.total += n
    return 0

cdef int store_merge(Store* dst, Store* src, int64_t max_bins) noexcept nogil:
    """Add src's counts key by key, as store_add would one at a time."""
    cdef int64_t k, first, last, lo, hi
    cdef uint64_t c
    cdef uint64_t* d
    cdef uint64_t* s
    if src.total == 0:
        return 0
    first = src.kmin
    while src.bins[first - src.offset] == 0:
        first += 1
    last = src.kmax
    while src.bins[last - src.offset] == 0:
        last -= 1
    lo = first
    hi = last
    if dst.total > 0:
        if dst.kmin < lo:
            lo = dst.kmin
        if dst.kmax > hi:
            hi = dst.kmax
    if max_bins <= 0 or hi - lo + 1 <= max_bins:
        # Nothing to fold: the same as adding key by key, in one pass over the arrays.
        if store_cover(dst, lo, hi, True) < 0:
            return -1
        d = dst.bins + (first - dst.offset)
        s = src.bins + (first - src.offset)
        for k in range(last - first + 1):
            d[k] += s[k]
        dst.kmin = lo
        dst.kmax = hi
        dst.total += src.total
        return 0
    k = first
    while k <= last:
        c = src.bins[k - src.offset]
        if c and store_add(dst, k, c, max_bins) < 0:
            return -1
        k += 1
    return 0

cdef int64_t store_nbytes(Store* st) noexcept nogil:
    return st.cap * <int64_t>sizeof(uint64_t)

# --- sketch data -------------------------------------------------------------------------------

cdef struct SketchData:
    Store pos
    Store neg
    uint64_t zero
    uint64_t count
    uint64_t dropped
    double sum
    double min
    double max

cdef inline void sk_init(SketchData* s) noexcept nogil:
    store_init(&s.pos)
    store_init(&s.neg)
    s.zero = 0
    s.count = 0
    s.dropped = 0
    s.sum = 0.0
    s.min = INFINITY
    s.max = -INFINITY

cdef inline void sk_free(SketchData* s) noexcept nogil:
    store_free(&s.pos)
    store_free(&s.neg)

cdef inline void sk_clear(SketchData* s) noexcept nogil:
    store_clear(&s.pos)
    store_clear(&s.neg)
    s.zero = 0
    s.count = 0
    s.dropped = 0
    s.sum = 0.0
    s.min = INFINITY
    s.max = -INFINITY

cdef inline void sk_reset(SketchData* s) noexcept nogil:
    store_reset(&s.pos)
    store_reset(&s.neg)
    s.zero = 0
    s.count = 0
    s.dropped = 0
    s.sum = 0.0
    s.min = INFINITY
    s.max = -INFINITY

cdef inline void sk_add_key(SketchData* s, int kind, int64_t key, double x, int64_t max_bins) noexcept nogil:
    """kind: 1 positive store, -1 negative store, 0 zero bucket."""
    if kind > 0:
        if store_add(&s.pos, key, 1, max_bins) < 0:
            s.dropped += 1
            return
    elif kind < 0:
        if store_add(&s.neg, key, 1, max_bins) < 0:
            s.dropped += 1
            return
    else:
        s.zero += 1
    s.count += 1
    s.sum += x
    if x < s.min:
        s.min = x
    if x > s.max:
        s.max = x

cdef inline int classify(double x, double mult, int64_t* key) noexcept nogil:
    """2: drop (NaN/inf); 1: positive; -1: negative; 0: zero bucket."""
    if isnan(x) or isinf(x):
        return 2
    if x >= MIN_INDEXABLE:
        key[0] = key_of(x, mult)
        return 1
    if x <= -MIN_INDEXABLE:
        key[0] = key_of(-x, mult)
        return -1
    return 0

cdef int sk_merge(SketchData* dst, SketchData* src, int64_t max_bins) noexcept nogil:
    if store_merge(&dst.pos, &src.pos, max_bins) < 0:
        return -1
    if store_merge(&dst.neg, &src.neg, max_bins) < 0:
        return -1
    dst.zero += src.zero
    dst.count += src.count
    dst.dropped += src.dropped
    dst.sum += src.sum
    if src.min < dst.min:
        dst.min = src.min
    if src.max > dst.max:
        dst.max = src.max
    return 0

cdef void sk_quantiles_sorted(SketchData* s, double mult, double* qs, Py_ssize_t n, double* out) noexcept nogil:
    """qs ascending in [0, 1]; out[i] is the value at rank floor(qs[i] * (count - 1))."""
    cdef Py_ssize_t i = 0
    cdef double cum = 0.0
    cdef double last = <double>(s.count - 1)
    cdef double v, rank = 0.0
    cdef int64_t j, m
    cdef uint64_t c
    cdef const uint64_t* p
    if s.count == 0:
        while i < n:
            out[i] = NAN
            i += 1
        return
    if n > 0:
        rank = qs[0] * last  # the next quantile's rank, as long as i < n
    if s.neg.total > 0 and i < n:
        p = s.neg.bins + (s.neg.kmin - s.neg.offset)
        j = s.neg.kmax - s.neg.kmin
        while j >= 0:
            c = p[j]
            if c:
                cum += <double>c
                if cum > rank:  # value_of only for the buckets reported
                    v = -value_of(s.neg.kmin + j, mult)
                    while i < n and cum > qs[i] * last:
                        out[i] = v
                        i += 1
                    if i == n:
                        break
                    rank = qs[i] * last
            j -= 1
    if s.zero and i < n:
        cum += <double>s.zero
        while i < n and cum > qs[i] * last:
            out[i] = 0.0
            i += 1
        if i < n:
            rank = qs[i] * last
    if s.pos.total > 0 and i < n:
        p = s.pos.bins + (s.pos.kmin - s.pos.offset)
        m = s.pos.kmax - s.pos.kmin + 1
        j = 0
        while j < m:
            c = p[j]
            if c:
                cum += <double>c
                if cum > rank:
                    v = value_of(s.pos.kmin + j, mult)
                    while i < n and cum > qs[i] * last:
                        out[i] = v
                        i += 1
                    if i == n:
                        break
                    rank = qs[i] * last
            j += 1
    while i < n:  # unreachable unless counts disagree; keep the answer defined
        out[i] = s.max
        i += 1
    i = 0
    while i < n:
        if out[i] < s.min or qs[i] <= 0.0:
            out[i] = s.min
        elif out[i] > s.max or qs[i] >= 1.0:
            out[i] = s.max
        i += 1

# --- varint serialisation ----------------------------------------------------------------------

cdef struct Buf:
    uint8_t* data
    Py_ssize_t len
    Py_ssize_t cap
    bint fixed  # data is a bytes object's, sized in advance: it never grows

cdef int buf_reserve(Buf* b, Py_ssize_t extra) noexcept nogil:
    cdef Py_ssize_t cap
    cdef uint8_t* data
    if b.len + extra <= b.cap:
        return 0
    if b.fixed:
        return -1  # sized wrong: a bug, reported as MemoryError
    cap = b.cap * 2 if b.cap else 256
    while cap < b.len + extra:
        cap *= 2
    data = <uint8_t*>malloc(<size_t>cap)
    if data == NULL:
        return -1
    if b.data != NULL:
        memcpy(data, b.data, <size_t>b.len)
        free(b.data)
    b.data = data
    b.cap = cap
    return 0

cdef inline int buf_varint(Buf* b, uint64_t v) noexcept nogil:
    if buf_reserve(b, 10) < 0:
        return -1
    while v >= 0x80:
        b.data[b.len] = <uint8_t>((v & 0x7F) | 0x80)
        b.len += 1
        v >>= 7
    b.data[b.len] = <uint8_t>v
    b.len += 1
    return 0

cdef inline int buf_double(Buf* b, double d) noexcept nogil:
    if buf_reserve(b, 8) < 0:
        return -1
    memcpy(b.data + b.len, &d, 8)  # little-endian hosts only (x86-64, aarch64)
    b.len += 8
    return 0

cdef inline void buf_init(Buf* b) noexcept nogil:
    b.data = NULL
    b.len = 0
    b.cap = 0
    b.fixed = False

cdef int buf_in_bytes(Buf* b, Py_ssize_t size, PyObject** raw) except -1:
    """Point b at a new bytes object of size bytes (a new reference in raw), to be written in
    place and cut to length by bytes_done: no copy at the end."""
    raw[0] = bytes_new_raw(NULL, size)
    if raw[0] == NULL:
        raise MemoryError()
    b.data = <uint8_t*>bytes_data_raw(raw[0])
    b.len = 0
    b.cap = size
    b.fixed = True
    return 0

cdef object bytes_done(Buf* b, PyObject** raw):
    """The bytes object of buf_in_bytes, cut to what was written; raw is taken over (NULL)."""
    cdef PyObject* r = raw[0]
    raw[0] = NULL
    if _PyBytes_Resize(&r, b.len) < 0:  # frees r on failure
        raise MemoryError()
    out = <object>r
    Py_DECREF(r)
    return out

cdef inline int buf_write(Buf* b, const char* text, Py_ssize_t n) noexcept nogil:
    if buf_reserve(b, n) < 0:
        return -1
    memcpy(b.data + b.len, text, <size_t>n)
    b.len += n
    return 0

cdef object buf_take_bytes(Buf* b):
    """The buffer's content as bytes; frees the buffer."""
    try:
        return PyBytes_FromStringAndSize(<char*>b.data, b.len)  # NULL, 0 gives b""
    finally:
        free(b.data)
        buf_init(b)

cdef inline uint64_t zigzag(int64_t v) noexcept nogil:
    return (<uint64_t>v << 1) ^ <uint64_t>(v >> 63)

cdef inline int64_t unzigzag(uint64_t v) noexcept nogil:
    return <int64_t>(v >> 1) ^ -<int64_t>(v & 1)

cdef inline void put_varint(Buf* b, uint64_t v) noexcept nogil:
    """buf_varint without the room check: the caller reserved 10 bytes."""
    while v >= 0x80:
        b.data[b.len] = <uint8_t>((v & 0x7F) | 0x80)
        b.len += 1
        v >>= 7
    b.data[b.len] = <uint8_t>v
    b.len += 1

cdef int buf_store(Buf* b, Store* st) noexcept nogil:
    cdef int64_t j, m
    cdef uint64_t c
    cdef const uint64_t* p
    cdef uint8_t* w
    if st.total == 0:
        return buf_varint(b, 0)
    m = st.kmax - st.kmin + 1
    if buf_reserve(b, 10 * (m + 2)) < 0:
        return -1
    put_varint(b, <uint64_t>m)
    put_varint(b, zigzag(st.kmin))
    p = st.bins + (st.kmin - st.offset)
    w = b.data + b.len
    for j in range(m):
        c = p[j]
        while c >= 0x80:
            w[0] = <uint8_t>((c & 0x7F) | 0x80)
            w += 1
            c >>= 7
        w[0] = <uint8_t>c
        w += 1
    b.len = w - b.data
    return 0

cdef int sk_serialize(Buf* b, SketchData* d, double alpha, int64_t max_bins) noexcept nogil:
    """Append the version-1 bytes of a sketch (see Sketch.to_bytes). 0, or -1 on no memory."""
    if buf_write(b, "PSK1\x01", 5) < 0:
        return -1
    if (buf_double(b, alpha) < 0 or buf_varint(b, <uint64_t>max_bins) < 0
            or buf_varint(b, d.zero) < 0 or buf_varint(b, d.dropped) < 0
            or buf_double(b, d.sum) < 0 or buf_double(b, d.min) < 0 or buf_double(b, d.max) < 0
            or buf_store(b, &d.pos) < 0 or buf_store(b, &d.neg) < 0):
        return -1
    return 0

cdef class _Reader:
    cdef const uint8_t* data
    cdef Py_ssize_t pos
    cdef Py_ssize_t n
    cdef object keep

    cdef uint64_t varint(self) except? 0xFFFFFFFFFFFFFFFF:
        cdef uint64_t v = 0
        cdef int shift = 0
        cdef uint8_t byte
        while True:
            if self.pos >= self.n or shift > 63:
                raise ValueError("truncated or corrupt sketch bytes (varint)")
            byte = self.data[self.pos]
            self.pos += 1
            v |= (<uint64_t>(byte & 0x7F)) << shift
            if byte < 0x80:
                return v
            shift += 7

    cdef double float64(self) except? -1.0:
        cdef double d
        if self.pos + 8 > self.n:
            raise ValueError("truncated sketch bytes (float)")
        memcpy(&d, self.data + self.pos, 8)
        self.pos += 8
        return d

    cdef int store(self, Store* st, int64_t max_bins) except -1:
        cdef uint64_t nb = self.varint()
        cdef int64_t kmin, i
        cdef uint64_t c
        if nb == 0:
            return 0
        if nb > <uint64_t>(self.n - self.pos):
            raise ValueError("corrupt sketch bytes (bucket count larger than the payload)")
        kmin = unzigzag(self.varint())
        for i in range(<int64_t>nb):
            c = self.varint()
            if c and store_add(st, kmin + i, c, max_bins) < 0:
                raise MemoryError()
        return 0

# --- Sketch ------------------------------------------------------------------------------------

cdef class Sketch:
    """A relative-error quantile sketch (DDSketch-style log buckets, accuracy ``alpha``).

    Every quantile it reports is within ``alpha`` (relative) of the true value of the same rank.
    ``max_bins=0`` (the default) never folds buckets: memory grows with the log of the data's dynamic
    range (about 35 buckets per power of two at 1%). With a cap, the lowest buckets are folded.
    Zero and magnitudes below 2.2250738585072014e-308 go to a zero bucket (reported as 0.0);
    negative values go to a mirrored store; NaN and infinities are dropped and counted in ``dropped``.
    """
    cdef SketchData d
    cdef readonly double alpha
    cdef readonly double mult
    cdef readonly long long max_bins

    def __cinit__(self, alpha=0.01, max_bins=0):
        sk_init(&self.d)
        self.alpha = check_alpha(alpha)
        self.mult = multiplier_for(self.alpha)
        mb = int(max_bins)
        if mb != 0 and mb < 16:
            raise ValueError(f"max_bins={max_bins!r} is too small; expected 0 (no cap) or an integer >= 16")
        self.max_bins = mb

    def __dealloc__(self):
        sk_free(&self.d)

    cpdef add(self, double value):
        cdef int64_t key = 0
        cdef int kind = classify(value, self.mult, &key)
        if kind == 2:
            self.d.dropped += 1
        else:
            sk_add_key(&self.d, kind, key, value, self.max_bins)

    def add_many(self, values):
        cdef double v
        for v in values:
            self.add(v)

    cpdef merge(self, Sketch other):
        if other.alpha != self.alpha:
            raise ValueError(f"cannot merge sketches of different accuracy: alpha={other.alpha!r} into alpha={self.alpha!r}")
        if sk_merge(&self.d, &other.d, self.max_bins) < 0:
            raise MemoryError()

    def copy(self):
        cdef Sketch out = Sketch(self.alpha, self.max_bins)
        out.merge(self)
        return out

    def clear(self):
        sk_clear(&self.d)

    @property
    def count(self):
        return self.d.count

    @property
    def sum(self):
        return self.d.sum

    @property
    def min(self):
        return self.d.min if self.d.count else NAN

    @property
    def max(self):
        return self.d.max if self.d.count else NAN

    @property
    def zero_count(self):
        return self.d.zero

    @property
    def dropped(self):
        return self.d.dropped

    @property
    def nbytes(self):
        return <long long>sizeof(SketchData) + store_nbytes(&self.d.pos) + store_nbytes(&self.d.neg)

    def quantile(self, q):
        return self.quantiles([q])[0]

    def quantiles(self, qs):
        cdef list ql = check_quantiles(qs)
        cdef Py_ssize_t n = len(ql), i
        order = sorted(range(n), key=ql.__getitem__)
        cdef double* sq = <double*>malloc(<size_t>(n + 1) * sizeof(double))
        cdef double* out = <double*>malloc(<size_t>(n + 1) * sizeof(double))
        if sq == NULL or out == NULL:
            free(sq)
            free(out)
            raise MemoryError()
        for i in range(n):
            sq[i] = ql[order[i]]
        sk_quantiles_sorted(&self.d, self.mult, sq, n, out)
        res = [0.0] * n
        for i in range(n):
            res[order[i]] = out[i]
        free(sq)
        free(out)
        return res

    def bins(self):
        """(positive {key: count}, negative {key: count}, zero count) for inspection and tests."""
        return store_dict(&self.d.pos), store_dict(&self.d.neg), self.d.zero

    def to_bytes(self):
        cdef Buf b
        buf_init(&b)
        if sk_serialize(&b, &self.d, self.alpha, self.max_bins) < 0:
            free(b.data)
            raise MemoryError()
        return buf_take_bytes(&b)

    def cumulative_counts(self, keys):
        """Cumulative counts at each of ``keys`` (ascending sketch keys), then ``count``.

        Entry i counts the zero and negative observations and the positive ones in buckets whose
        key is ``<= keys[i]``; the last entry is ``count``. (The Prometheus histogram passes, for
        each upper bound, the last key whose representative value is at or below it.)
        """
        cdef Keys ks
        keys_init(&ks, keys)
        try:
            return cumulative_tuple(&self.d.pos, self.d.zero + self.d.neg.total, self.d.count, &ks)
        finally:
            keys_free(&ks)

    @staticmethod
    def from_bytes(data):
        cdef const uint8_t[:] view = memoryview(data).cast("B")
        cdef _Reader r = _Reader()
        if view.shape[0] < 13 or bytes(memoryview(data)[:4]) != FORMAT_MAGIC:
            raise ValueError("not perfsdk sketch bytes (bad magic); expected the output of Sketch.to_bytes()")
        if view[4] != 1:
            raise ValueError(f"unsupported sketch format version {view[4]}; this perfsdk reads version 1")
        r.keep = data
        r.data = &view[0]
        r.n = view.shape[0]
        r.pos = 5
        alpha = r.float64()
        max_bins = r.varint()
        cdef Sketch s = Sketch(alpha, max_bins)
        s.d.zero = r.varint()
        s.d.dropped = r.varint()
        s.d.sum = r.float64()
        s.d.min = r.float64()
        s.d.max = r.float64()
        r.store(&s.d.pos, s.max_bins)
        r.store(&s.d.neg, s.max_bins)
        if r.pos != r.n:
            raise ValueError("corrupt sketch bytes (trailing data)")
        s.d.count = s.d.zero + s.d.pos.total + s.d.neg.total
        return s

    def _add_bins(self, pos, neg, zero, count_sum, vmin, vmax, dropped=0):
        """Merge pre-bucketed counts (from the Numba kernels). pos/neg: (first_key, counts)."""
        cdef int64_t k0, i
        cdef uint64_t c
        for store_id, pair in ((1, pos), (-1, neg)):
            if pair is None:
                continue
            k0 = pair[0]
            counts = pair[1]
            for i in range(len(counts)):
                c = counts[i]
                if c:
                    if store_add(&self.d.pos if store_id == 1 else &self.d.neg, k0 + i, c, self.max_bins) < 0:
                        raise MemoryError()
                    self.d.count += c
        self.d.zero += <uint64_t>zero
        self.d.count += <uint64_t>zero
        self.d.dropped += <uint64_t>dropped
        self.d.sum += <double>count_sum
        if vmin < self.d.min:
            self.d.min = vmin
        if vmax > self.d.max:
            self.d.max = vmax

    def __reduce__(self):
        return (Sketch.from_bytes, (self.to_bytes(),))

    def __repr__(self):
        return f"Sketch(alpha={self.alpha!r}, count={self.d.count})"

cdef dict store_dict(Store* st):
    cdef dict out = {}
    cdef int64_t k
    if st.total == 0:
        return out
    k = st.kmin
    while k <= st.kmax:
        if st.bins[k - st.offset]:
            out[k] = st.bins[k - st.offset]
        k += 1
    return out

def check_quantiles(qs):
    out = []
    for q in qs:
        try:
            f = float(q)
        except (TypeError, ValueError):
            raise ValueError(f"quantile {q!r} is not a number; expected a float in [0, 1]") from None
        if not (0.0 <= f <= 1.0):
            raise ValueError(f"quantile {q!r} is outside [0, 1]; write p99 as 0.99")
        out.append(f)
    return out

# --- quantile lists, bucket keys, sample text ---------------------------------------------------

cdef struct QList:
    double* sorted  # the quantiles in ascending order
    Py_ssize_t* order  # order[j]: the caller's index of sorted[j]
    Py_ssize_t n

cdef int qlist_init(QList* q, qs) except -1:
    cdef list ql = check_quantiles(qs)
    cdef Py_ssize_t n = len(ql), i
    cdef bint ascending = True
    q.n = n
    q.sorted = <double*>malloc(<size_t>(n + 1) * sizeof(double))
    q.order = <Py_ssize_t*>malloc(<size_t>(n + 1) * sizeof(Py_ssize_t))
    if q.sorted == NULL or q.order == NULL:
        qlist_free(q)
        raise MemoryError()
    for i in range(1, n):
        if ql[i] < ql[i - 1]:
            ascending = False
            break
    if ascending:
        for i in range(n):
            q.sorted[i] = ql[i]
            q.order[i] = i
    else:
        order = sorted(range(n), key=ql.__getitem__)
        for i in range(n):
            q.order[i] = order[i]
            q.sorted[i] = ql[q.order[i]]
    return 0

cdef void qlist_free(QList* q) noexcept:
    free(q.sorted)
    free(q.order)
    q.sorted = NULL
    q.order = NULL

cdef enum:
    SMALL_KEYS = 64

cdef struct Keys:
    int64_t* k  # small, or malloc'ed
    Py_ssize_t n
    int64_t small[SMALL_KEYS]

# The last tuple of keys converted, and its C copy: renderers pass the same tuple every time.
cdef object g_keys_obj = None
cdef int64_t* g_keys = NULL
cdef Py_ssize_t g_nkeys = 0

cdef int keys_init(Keys* ks, keys) except -1:
    """Bucket keys as a C array (the caller's own copy); they must be ascending (equal neighbours
    allowed)."""
    global g_keys_obj, g_keys, g_nkeys
    cdef Py_ssize_t n, i
    cdef int64_t* conv
    ks.k = NULL
    ks.n = 0
    if keys is not g_keys_obj:
        seq = keys if type(keys) is tuple or type(keys) is list else tuple(keys)
        n = len(seq)
        conv = <int64_t*>malloc(<size_t>(n + 1) * sizeof(int64_t))
        if conv == NULL:
            raise MemoryError()
        try:
            for i in range(n):
                conv[i] = seq[i]
                if i and conv[i] < conv[i - 1]:
                    raise ValueError(
                        f"bucket keys must be ascending; got {seq[i - 1]!r} then {seq[i]!r}")
        except BaseException:
            free(conv)
            raise
        if type(keys) is not tuple:  # only an immutable sequence can be remembered
            ks.k = conv
            ks.n = n
            return 0
        free(g_keys)
        g_keys = conv
        g_nkeys = n
        g_keys_obj = keys
    ks.n = g_nkeys
    if g_nkeys <= SMALL_KEYS:
        ks.k = ks.small
    else:
        ks.k = <int64_t*>malloc(<size_t>g_nkeys * sizeof(int64_t))
        if ks.k == NULL:
            raise MemoryError()
    memcpy(ks.k, g_keys, <size_t>g_nkeys * sizeof(int64_t))
    return 0

cdef void keys_free(Keys* ks) noexcept:
    if ks.k != ks.small:
        free(ks.k)
    ks.k = NULL

cdef void store_cumulative(Store* st, uint64_t base, Keys* ks, uint64_t* out) noexcept nogil:
    """out[i] = base + the counts of the buckets whose key is <= ks.k[i]."""
    cdef Py_ssize_t i = 0
    cdef uint64_t cum = base
    cdef int64_t k
    if st.total > 0:
        k = st.kmin
        while k <= st.kmax and i < ks.n:
            while i < ks.n and ks.k[i] < k:
                out[i] = cum
                i += 1
            cum += st.bins[k - st.offset]
            k += 1
    while i < ks.n:
        out[i] = cum
        i += 1

cdef tuple cumulative_tuple(Store* pos, uint64_t base, uint64_t count, Keys* ks):
    cdef uint64_t* out = <uint64_t*>malloc(<size_t>(ks.n + 1) * sizeof(uint64_t))
    cdef Py_ssize_t i
    if out == NULL:
        raise MemoryError()
    try:
        store_cumulative(pos, base, ks, out)
        res = [count] * (ks.n + 1)
        for i in range(ks.n):
            res[i] = out[i]
        return tuple(res)
    finally:
        free(out)

cdef inline int buf_uint(Buf* b, uint64_t v) noexcept nogil:
    cdef char tmp[24]
    cdef int i = 24
    while True:
        i -= 1
        tmp[i] = <char>(48 + v % 10)
        v //= 10
        if v == 0:
            break
    return buf_write(b, tmp + i, 24 - i)

# Texts of floats already written, by their bits (direct-mapped; a collision replaces the entry).
# A snapshot's quantiles are bucket values, a small set, and a series' sum appears twice per
# render and stays the same while the series is idle: most floats are found here.
cdef struct FloatText:
    uint64_t bits
    uint8_t n  # 0: empty
    char text[23]

cdef enum:
    FLOAT_TEXTS = 4096
cdef FloatText g_float_texts[FLOAT_TEXTS]

cdef int buf_float_text(Buf* b, double v) except -1:
    """A float as Prometheus reads it: the shortest repr that reads back, or NaN, +Inf, -Inf."""
    cdef char* text
    cdef uint64_t bits
    cdef FloatText* e
    cdef size_t n
    cdef int r
    if isnan(v):
        r = buf_write(b, "NaN", 3)
    elif isinf(v):
        r = buf_write(b, "+Inf" if v > 0 else "-Inf", 4)
    else:
        memcpy(&bits, &v, 8)
        e = &g_float_texts[(bits * 0x9E3779B97F4A7C15ULL) >> 52]
        if e.n and e.bits == bits:
            r = buf_write(b, e.text, e.n)
        else:
            text = PyOS_double_to_string(v, b'r', 0, Py_DTSF_ADD_DOT_0, NULL)
            n = strlen(text)
            if n <= sizeof(e.text):
                e.bits = bits
                e.n = <uint8_t>n
                memcpy(e.text, text, n)
            r = buf_write(b, text, <Py_ssize_t>n)
            PyMem_Free(text)
    if r < 0:
        raise MemoryError()
    return 0

cdef int buf_value_text(Buf* b, v) except -1:
    """bytes verbatim (text formatted before), an int in decimal, anything else as a float."""
    cdef long long n
    cdef int r = 0
    if type(v) is bytes:
        r = buf_write(b, <const char*>(<bytes>v), len(<bytes>v))
    elif type(v) is int:
        try:
            n = v
        except OverflowError:
            text = str(v).encode("ascii")
            r = buf_write(b, <const char*>(<bytes>text), len(text))
        else:
            if n < 0:
                r = buf_write(b, "-", 1)
                if r == 0:
                    r = buf_uint(b, <uint64_t>(-(n + 1)) + 1)
            else:
                r = buf_uint(b, <uint64_t>n)
    else:
        return buf_float_text(b, float(v))
    if r < 0:
        raise MemoryError()
    return 0

cdef struct Template:
    const char* start
    const char* at  # the rest of the template
    const char* end

cdef int template_init(Template* t, template, Py_ssize_t nvalues, Buf* b) except -1:
    """Start writing ``template`` (lines that each end with a newline, one per value)."""
    if not isinstance(template, bytes):
        raise TypeError(f"a template is bytes, got {type(template).__name__}")
    t.start = t.at = <const char*>(<bytes>template)
    t.end = t.at + len(<bytes>template)
    if t.end > t.at and (t.end - 1)[0] != 10:
        raise ValueError("every line of a template ends with a newline")
    if buf_reserve(b, (t.end - t.at) + 25 * nvalues + 1) < 0:
        raise MemoryError()
    return 0

cdef inline int template_line(Template* t, Buf* b) noexcept nogil:
    """Write the next line of the template up to its newline (the value goes there): 0, -1 on no
    memory, -2 when the template has no line left."""
    cdef const char* nl = NULL
    if t.at < t.end:
        nl = <const char*>memchr(t.at, 10, <size_t>(t.end - t.at))
    if nl == NULL:
        return -2
    cdef int r = buf_write(b, t.at, nl - t.at)
    t.at = nl + 1
    return r

cdef int template_check(Template* t, int r, Py_ssize_t nvalues) except -1:
    """Raise for what template_line returned (r), or when lines are left at the end (r == 0)."""
    cdef Py_ssize_t lines = 0
    cdef const char* p
    if r == -1:
        raise MemoryError()
    if r == -2 or t.at != t.end:
        p = t.start
        while p < t.end:
            p = <const char*>memchr(p, 10, <size_t>(t.end - p)) + 1
            lines += 1
        raise ValueError(f"{nvalues} values for a template of {lines} lines")
    return 0

def format_samples(template, values):
    """``template`` with each value's text written at the end of its line, as one bytes.

    ``template`` is exposition lines without their values: each ends with a newline, one line
    per value. A value that is ``bytes`` is written as it is (text formatted earlier); an
    ``int`` in decimal; anything else as a float, the shortest text that reads back as the same
    float (``repr``), or ``NaN``, ``+Inf``, ``-Inf``.
    """
    cdef tuple vs = values if type(values) is tuple else tuple(values)
    cdef Py_ssize_t i, n = len(vs), size
    cdef int r, overflow
    cdef Template t
    cdef Buf b
    cdef PyObject* raw = NULL
    if not isinstance(template, bytes):
        raise TypeError(f"a template is bytes, got {type(template).__name__}")
    size = len(<bytes>template) + 25 * n + 1  # the most a float or an int64 takes is 24
    for i in range(n):
        v = vs[i]
        if type(v) is bytes:
            size += len(<bytes>v)
        elif type(v) is int:
            PyLong_AsLongLongAndOverflow(v, &overflow)
            if overflow:
                size += len(str(v))
    buf_init(&b)
    try:
        buf_in_bytes(&b, size, &raw)
        template_init(&t, template, n, &b)
        for i in range(n):
            r = template_line(&t, &b)
            if r < 0:
                template_check(&t, r, n)
            buf_value_text(&b, vs[i])
            if buf_write(&b, "\n", 1) < 0:
                raise MemoryError()
        template_check(&t, 0, n)
        return bytes_done(&b, &raw)
    finally:
        if raw != NULL:
            Py_DECREF(raw)

cdef struct CReader:
    const uint8_t* data
    Py_ssize_t pos
    Py_ssize_t n
    bint bad

cdef inline uint64_t cr_varint(CReader* r) noexcept nogil:
    cdef uint64_t v = 0
    cdef int shift = 0
    cdef uint8_t byte
    while True:
        if r.pos >= r.n or shift > 63:
            r.bad = True
            return 0
        byte = r.data[r.pos]
        r.pos += 1
        v |= (<uint64_t>(byte & 0x7F)) << shift
        if byte < 0x80:
            return v
        shift += 7

cdef inline double cr_float64(CReader* r) noexcept nogil:
    cdef double d = 0.0
    if r.pos + 8 > r.n:
        r.bad = True
        return d
    memcpy(&d, r.data + r.pos, 8)
    r.pos += 8
    return d

cdef bint read_header(CReader* r, double* alpha, uint64_t* max_bins, uint64_t* zero,
                      double* total_sum) noexcept nogil:
    """Read the version-1 header of sketch bytes up to the positive store; False when it is not
    plain (then Sketch.from_bytes decides)."""
    if r.n < 13 or memcmp(r.data, "PSK1\x01", 5) != 0:
        return False
    r.pos = 5
    alpha[0] = cr_float64(r)
    max_bins[0] = cr_varint(r)
    zero[0] = cr_varint(r)
    cr_varint(r)  # dropped
    total_sum[0] = cr_float64(r)
    cr_float64(r)  # min
    cr_float64(r)  # max
    return (not r.bad and MIN_ALPHA_C <= alpha[0] < 1.0
            and (max_bins[0] == 0 or 16 <= max_bins[0] < (1ULL << 63)))

cdef inline bint sum_counts(CReader* r, uint64_t n, uint64_t* cum) noexcept nogil:
    """Add the next n bucket counts to cum; False when the bytes run out."""
    cdef uint64_t j
    cdef uint64_t total = cum[0], run = 0
    cdef uint8_t byte, high = 0
    cdef const uint8_t* p
    if n <= <uint64_t>(r.n - r.pos):
        # most counts are below 128, one byte each: sum a run of them at once
        p = r.data + r.pos
        for j in range(n):
            run += p[j]
            high |= p[j]
        if high < 0x80:
            r.pos += <Py_ssize_t>n
            cum[0] = total + run
            return True
    for j in range(n):
        if r.pos < r.n:
            byte = r.data[r.pos]
            if byte < 0x80:
                r.pos += 1
                total += byte
                continue
        total += cr_varint(r)
        if r.bad:
            return False
    cum[0] = total
    return True

cdef bint read_stores(CReader* r, uint64_t max_bins, Keys* ks, uint64_t base,
                      uint64_t* out, uint64_t* count) noexcept nogil:
    """After read_header: read both stores to the end, writing the positive store's cumulative
    counts (as store_cumulative does, starting from base) when ks is not NULL, and the total of
    base and both stores to count. False when they are not plain (corrupt, or a capped sketch's
    positive store to fold: Sketch.from_bytes decides)."""
    cdef uint64_t nb, done, upto, cum = 0, neg = 0
    cdef Py_ssize_t i
    cdef int64_t kmin
    cdef int store
    for store in range(2):
        nb = cr_varint(r)
        if r.bad or nb > <uint64_t>(r.n - r.pos):
            return False
        if nb and store == 0 and max_bins != 0 and nb > max_bins:
            return False
        kmin = unzigzag(cr_varint(r)) if nb else 0
        done = 0
        if store == 0 and ks != NULL:
            for i in range(ks.n):
                # the buckets with keys kmin .. ks.k[i], clipped to the store
                if ks.k[i] < kmin:
                    upto = 0
                elif <uint64_t>(ks.k[i] - kmin) >= nb:
                    upto = nb
                else:
                    upto = <uint64_t>(ks.k[i] - kmin) + 1
                if upto > done:
                    if not sum_counts(r, upto - done, &cum):
                        return False
                    done = upto
                out[i] = cum
        if not sum_counts(r, nb - done, &cum if store == 0 else &neg):
            return False
    if ks != NULL:  # the zero bucket and every negative observation count in each bucket
        for i in range(ks.n):
            out[i] += base + neg
    count[0] = base + cum + neg
    return not r.bad and r.pos == r.n

def histogram_samples(data, ladders, template):
    """The Prometheus histogram lines of the sketch ``data`` serialises (``Sketch.to_bytes()``).

    ``ladders`` maps a sketch's ``alpha`` to its bucket keys (ascending: for each upper bound, the
    last key whose representative value is at or below it); a missing alpha raises ``KeyError``.
    ``template`` has one line per key, then the ``+Inf``, ``_sum`` and ``_count`` lines, as
    :func:`format_samples` takes them; the values are ``Sketch.cumulative_counts(keys)`` (the
    last, ``+Inf``, is ``count``), then the sketch's ``sum`` and ``count``. Same as decoding
    ``data`` with ``Sketch.from_bytes``, without building the sketch.
    """
    cdef bytes raw = data if type(data) is bytes else bytes(data)
    cdef CReader r
    cdef double alpha = 0.0, total_sum = 0.0
    cdef uint64_t max_bins = 0, zero = 0, count = 0
    cdef Py_ssize_t stores_at, i
    cdef Keys ks
    cdef Sketch sk = None
    cdef uint64_t small_out[SMALL_KEYS + 1]
    cdef uint64_t* out = small_out
    cdef Template t
    cdef Buf b
    cdef int w
    cdef PyObject* text = NULL
    r.data = <const uint8_t*>(<char*>raw)
    r.n = len(raw)
    r.bad = False
    ks.k = NULL
    plain = read_header(&r, &alpha, &max_bins, &zero, &total_sum)
    stores_at = r.pos
    if plain:
        try:
            keys = ladders[alpha]
        except KeyError:
            # corrupt bytes are a ValueError from from_bytes, whatever the ladders hold
            if not read_stores(&r, max_bins, NULL, zero, NULL, &count):
                Sketch.from_bytes(raw)
            raise
    else:
        sk = Sketch.from_bytes(raw)  # raises what from_bytes raises
        alpha, total_sum = sk.alpha, sk.d.sum
        keys = ladders[alpha]
    keys_init(&ks, keys)
    buf_init(&b)
    try:
        if ks.n > SMALL_KEYS:
            out = <uint64_t*>malloc(<size_t>(ks.n + 1) * sizeof(uint64_t))
            if out == NULL:
                raise MemoryError()
        if sk is None:
            r.pos = stores_at
            if not read_stores(&r, max_bins, &ks, zero, out, &count):
                sk = Sketch.from_bytes(raw)  # corrupt (raises), or a store to fold
        if sk is not None:
            store_cumulative(&sk.d.pos, sk.d.zero + sk.d.neg.total, &ks, out)
            count = sk.d.count
        out[ks.n] = count
        if not isinstance(template, bytes):
            raise TypeError(f"a template is bytes, got {type(template).__name__}")
        buf_in_bytes(&b, len(<bytes>template) + 25 * (ks.n + 3) + 1, &text)
        template_init(&t, template, ks.n + 3, &b)
        for i in range(ks.n + 1):
            w = template_line(&t, &b)
            if w == 0:
                w = buf_uint(&b, out[i])
            if w == 0:
                w = buf_write(&b, "\n", 1)
            if w < 0:
                template_check(&t, w, ks.n + 3)
        w = template_line(&t, &b)
        if w < 0:
            template_check(&t, w, ks.n + 3)
        buf_float_text(&b, total_sum)
        w = buf_write(&b, "\n", 1)
        if w == 0:
            w = template_line(&t, &b)
        if w == 0:
            w = buf_uint(&b, count)
        if w == 0:
            w = buf_write(&b, "\n", 1)
        template_check(&t, w, ks.n + 3)
        return bytes_done(&b, &text)
    finally:
        if text != NULL:
            Py_DECREF(text)
        if out != small_out:
            free(out)
        keys_free(&ks)

# --- Series: total + ring of time slices ---------------------------------------------------------

# Where Series.stats merges slices: kept (and grown) across calls, so merging allocates nothing.
cdef SketchData g_scratch
sk_init(&g_scratch)

cdef tuple stats_tuple(uint64_t count, uint64_t errors, double total, double vmin, double vmax,
                       double seconds, QList* q, double* qv, above):
    cdef list out = [None] * (q.n + 9)
    cdef Py_ssize_t j
    out[0] = count
    out[1] = errors
    out[2] = total
    out[3] = vmin if count else NAN
    out[4] = vmax if count else NAN
    out[5] = total / <double>count if count else NAN
    out[6] = <double>count / seconds if seconds > 0 else 0.0
    for j in range(q.n):
        out[7 + q.order[j]] = qv[j]
    out[7 + q.n] = seconds
    out[8 + q.n] = above
    return tuple(out)

cdef struct Slice:
    SketchData sk
    int64_t epoch
    uint64_t errors
    uint64_t above

cdef inline int64_t floordiv(int64_t a, int64_t b) noexcept nogil:
    cdef int64_t q = a / b
    if (a % b != 0) and ((a < 0) != (b < 0)):
        q -= 1
    return q

@cython.final
cdef class Series:
    """One named series: totals since start plus a rolling window made of a ring of time slices.

    Times are in ticks of the clock that feeds it (``ticks_per_second`` of them a second); values in
    seconds (or any unit). The window is the current slice plus the ``slices - 1`` before it. A
    recording touches only the current slice; a slice's content is folded into the retired totals when
    its slot is reused (as HdrHistogram's Recorder swaps intervals), so the totals cost nothing per call.
    """
    cdef SketchData retired
    cdef uint64_t retired_errors
    cdef uint64_t retired_above
    cdef Slice* ring
    cdef readonly int slices
    cdef readonly long long slice_ticks
    cdef readonly double ticks_per_second
    cdef readonly double seconds_per_tick
    cdef readonly double alpha
    cdef readonly double mult
    cdef readonly long long max_bins
    cdef readonly long long created
    cdef double threshold_value
    cdef bint has_threshold
    cdef Slice* cur
    cdef int64_t cur_start
    cdef int64_t cur_end
    # Durations (in ticks) from the per-call wrapper, all belonging to the current slice, waiting to
    # be bucketed in one tight loop: the call path only appends. Flushed before anything reads the
    # series or moves to another slice, so the buffer is never observable.
    cdef int64_t pending[PENDING_CAP]
    cdef int npending
    # Slices taken into use and clears (a clear adds what it forgets): with the counts of
    # observations, dropped values and errors, it makes ``version`` (see state()).
    cdef uint64_t events

    def __cinit__(self, alpha=0.01, window_seconds=60.0, slices=6, ticks_per_second=1e9,
                  threshold=None, created=0, max_bins=4096):
        cdef int i
        sk_init(&self.retired)
        self.ring = NULL
        self.alpha = check_alpha(alpha)
        self.mult = multiplier_for(self.alpha)
        mb = int(max_bins)
        if mb != 0 and mb < 16:
            raise ValueError(f"max_bins={max_bins!r} is too small; expected 0 (no cap) or an integer >= 16")
        self.max_bins = mb
        n = int(slices)
        if n < 1 or n > 1000:
            raise ValueError(f"slices={slices!r} is outside 1..1000")
        ws = float(window_seconds)
        if not (ws > 0.0) or isinf(ws):
            raise ValueError(f"window_seconds={window_seconds!r} must be a positive number of seconds")
        tps = float(ticks_per_second)
        if not (tps > 0.0) or isinf(tps):
            raise ValueError(f"ticks_per_second={ticks_per_second!r} must be positive")
        self.slices = n
        self.ticks_per_second = tps
        self.seconds_per_tick = 1.0 / tps
        self.slice_ticks = max(1, int(ws * tps / n))
        self.ring = <Slice*>calloc(n, sizeof(Slice))
        if self.ring == NULL:
            raise MemoryError()
        for i in range(n):
            sk_init(&self.ring[i].sk)
            self.ring[i].epoch = EMPTY_EPOCH
        self.cur = NULL
        self.cur_start = 1
        self.cur_end = 0
        self.created = int(created)
        if threshold is None:
            self.has_threshold = False
            self.threshold_value = 0.0
        else:
            t = float(threshold)
            if isnan(t):
                raise ValueError(f"threshold={threshold!r} is not a number")
            self.has_threshold = True
            self.threshold_value = t

    def __dealloc__(self):
        cdef int i
        sk_free(&self.retired)
        if self.ring != NULL:
            for i in range(self.slices):
                sk_free(&self.ring[i].sk)
            free(self.ring)

    cdef Slice* rotate(self, int64_t now) noexcept:
        cdef int64_t epoch = floordiv(now, self.slice_ticks)
        cdef Slice* s = &self.ring[((epoch % self.slices) + self.slices) % self.slices]
        if s.epoch != epoch:
            if s.epoch > epoch:
                return NULL  # older than the window: counted in the totals only
            self.events += 1
            if s.epoch != EMPTY_EPOCH:
                sk_merge(&self.retired, &s.sk, self.max_bins)
                self.retired_errors += s.errors
                self.retired_above += s.above
                sk_clear(&s.sk)
                s.errors = 0
                s.above = 0
            s.epoch = epoch
        self.cur = s
        self.cur_start = epoch * self.slice_ticks
        self.cur_end = self.cur_start + self.slice_ticks
        return s

    cdef inline void record_c(self, double value, int64_t now, bint error) noexcept:
        cdef int64_t key = 0
        cdef int kind = classify(value, self.mult, &key)
        cdef Slice* s
        if self.npending:
            self.flush_pending()
        if now >= self.cur_start and now < self.cur_end:
            s = self.cur
        else:
            s = self.rotate(now)
        if s == NULL:
            if error:
                self.retired_errors += 1
            if kind == 2:
                self.retired.dropped += 1
                return
            sk_add_key(&self.retired, kind, key, value, self.max_bins)
            if self.has_threshold and value > self.threshold_value:
                self.retired_above += 1
            return
        if error:
            s.errors += 1
        if kind == 2:
            s.sk.dropped += 1
            return
        sk_add_key(&s.sk, kind, key, value, self.max_bins)
        if self.has_threshold and value > self.threshold_value:
            s.above += 1

    cdef void flush_pending(self) noexcept:
        cdef int i
        cdef int64_t key = 0
        cdef int kind
        cdef double value
        cdef Slice* s = self.cur
        cdef int n = self.npending
        self.npending = 0
        for i in range(n):
            value = <double>self.pending[i] * self.seconds_per_tick
            kind = classify(value, self.mult, &key)
            if kind == 2:
                s.sk.dropped += 1
                continue
            sk_add_key(&s.sk, kind, key, value, self.max_bins)
            if self.has_threshold and value > self.threshold_value:
                s.above += 1

    cdef inline void record_ticks(self, int64_t ticks, int64_t now, bint error) noexcept:
        """The per-call wrapper's entry: a duration in ticks, ending at now."""
        if now >= self.cur_start and now < self.cur_end:
            if error:
                self.cur.errors += 1
            self.pending[self.npending] = ticks
            self.npending += 1
            if self.npending == PENDING_CAP:
                self.flush_pending()
            return
        self.record_c(<double>ticks * self.seconds_per_tick, now, error)

    def clear(self, long long created):
        """Forget every observation (a forked child starts clean); start again at created."""
        cdef int i
        self.events = self.version_c() + 1  # the version still moves forward
        self.npending = 0
        sk_clear(&self.retired)
        self.retired_errors = 0
        self.retired_above = 0
        for i in range(self.slices):
            sk_clear(&self.ring[i].sk)
            self.ring[i].errors = 0
            self.ring[i].above = 0
            self.ring[i].epoch = EMPTY_EPOCH
        self.cur = NULL
        self.cur_start = 1
        self.cur_end = 0
        self.created = created

    def record(self, double value, long long now):
        """Record one observation taken at ``now`` (ticks)."""
        self.record_c(value, now, False)

    def record_error(self, double value, long long now):
        """Record one failed observation: counted as an error and, being a real duration, measured."""
        self.record_c(value, now, True)

    def window(self, long long now):
        """(sketch, errors, above_threshold, seconds covered) over the rolling window ending at now."""
        if self.npending:
            self.flush_pending()
        cdef Sketch out = Sketch(self.alpha, self.max_bins)
        cdef int64_t epoch_now = floordiv(now, self.slice_ticks)
        cdef uint64_t errors = 0, above = 0
        cdef int i
        cdef Slice* s
        for i in range(self.slices):
            s = &self.ring[i]
            if s.epoch <= epoch_now and s.epoch > epoch_now - self.slices:
                if sk_merge(&out.d, &s.sk, self.max_bins) < 0:
                    raise MemoryError()
                errors += s.errors
                above += s.above
        out.d.dropped = 0
        cdef int64_t start = (epoch_now - self.slices + 1) * self.slice_ticks
        if start < self.created:
            start = self.created
        return out, errors, above, <double>(now - start) * self.seconds_per_tick

    def totals(self, long long now):
        """(sketch, errors, above_threshold, seconds since the series was created) since start."""
        if self.npending:
            self.flush_pending()
        cdef Sketch out = Sketch(self.alpha, self.max_bins)
        cdef uint64_t errors = self.retired_errors, above = self.retired_above
        cdef int i
        if sk_merge(&out.d, &self.retired, self.max_bins) < 0:
            raise MemoryError()
        for i in range(self.slices):
            if sk_merge(&out.d, &self.ring[i].sk, self.max_bins) < 0:
                raise MemoryError()
            errors += self.ring[i].errors
            above += self.ring[i].above
        return out, errors, above, <double>(now - self.created) * self.seconds_per_tick

    cdef uint64_t version_c(self) noexcept:
        if self.npending:
            self.flush_pending()
        cdef uint64_t v = (self.events + self.retired.count + self.retired.dropped
                           + self.retired_errors)
        cdef int i
        for i in range(self.slices):
            v += self.ring[i].sk.count + self.ring[i].sk.dropped + self.ring[i].errors
        return v

    def state(self, long long now):
        """(version, window epoch, window seconds, seconds since start) at ``now``: cheap.

        ``version`` moves forward with every change of the data (an observation, a dropped
        value, an error, a slice taken into use, a clear); the window epoch (``now`` in slices)
        moves when the window does. While both stay the same, ``stats()`` gives the same
        answers but for the two spans (the last two items here) and the rates made of them.
        """
        cdef int64_t epoch_now = floordiv(now, self.slice_ticks)
        cdef int64_t start = (epoch_now - self.slices + 1) * self.slice_ticks
        if start < self.created:
            start = self.created
        return (self.version_c(), epoch_now, <double>(now - start) * self.seconds_per_tick,
                <double>(now - self.created) * self.seconds_per_tick)

    def stats(self, long long now, qs, bint sketches=False):
        """Everything a snapshot takes from the series, in one call and one consistent view.

        Returns ``(window, total, dropped, window_bytes, total_bytes)``. ``window`` and ``total``
        are ``(count, errors, sum, min, max, mean, rate, *quantiles, seconds, above)``, the fields
        of ``perfsdk.records.Stats`` in order, with one quantile per entry of ``qs``; ``min``,
        ``max`` and the quantiles are NaN, ``mean`` NaN and ``rate`` 0.0 when the span is empty
        (rate is 0.0 too over no time); ``above`` is None without a threshold. The sketches'
        bytes (``Sketch.to_bytes()`` of ``window(now)[0]`` and ``totals(now)[0]``) only when
        ``sketches`` is true, else None. Same numbers as ``window(now)`` and ``totals(now)``.
        """
        cdef QList q
        cdef double* wq
        cdef double* tq
        cdef Buf wb, tb
        cdef SketchData* sc = &g_scratch
        cdef int64_t epoch_now = floordiv(now, self.slice_ticks), start
        cdef uint64_t werrors = 0, wabove = 0, terrors, tabove, wcount, tcount, dropped
        cdef double wsum, wmin, wmax, tsum, tmin, tmax, wsec, tsec
        cdef int i, failed = 0
        cdef Slice* s
        qlist_init(&q, qs)
        wq = <double*>malloc(<size_t>(2 * q.n + 1) * sizeof(double))
        if wq == NULL:
            qlist_free(&q)
            raise MemoryError()
        tq = wq + q.n
        buf_init(&wb)
        buf_init(&tb)
        if self.npending:
            self.flush_pending()
        # The scratch sketch is shared by every series: nothing below calls back into Python
        # until its numbers are copied out, so under the GIL no other call can touch it.
        sk_reset(sc)
        for i in range(self.slices):
            s = &self.ring[i]
            if s.epoch <= epoch_now and s.epoch > epoch_now - self.slices:
                if sk_merge(sc, &s.sk, self.max_bins) < 0:
                    failed = 1
                werrors += s.errors
                wabove += s.above
        sc.dropped = 0
        wcount, wsum, wmin, wmax = sc.count, sc.sum, sc.min, sc.max
        sk_quantiles_sorted(sc, self.mult, q.sorted, q.n, wq)
        if sketches and sk_serialize(&wb, sc, self.alpha, self.max_bins) < 0:
            failed = 1
        sk_reset(sc)
        terrors = self.retired_errors
        tabove = self.retired_above
        if sk_merge(sc, &self.retired, self.max_bins) < 0:
            failed = 1
        for i in range(self.slices):
            if sk_merge(sc, &self.ring[i].sk, self.max_bins) < 0:
                failed = 1
            terrors += self.ring[i].errors
            tabove += self.ring[i].above
        tcount, tsum, tmin, tmax, dropped = sc.count, sc.sum, sc.min, sc.max, sc.dropped
        sk_quantiles_sorted(sc, self.mult, q.sorted, q.n, tq)
        if sketches and sk_serialize(&tb, sc, self.alpha, self.max_bins) < 0:
            failed = 1
        start = (epoch_now - self.slices + 1) * self.slice_ticks
        if start < self.created:
            start = self.created
        wsec = <double>(now - start) * self.seconds_per_tick
        tsec = <double>(now - self.created) * self.seconds_per_tick
        try:
            if failed:
                raise MemoryError()
            window = stats_tuple(wcount, werrors, wsum, wmin, wmax, wsec, &q, wq,
                                 wabove if self.has_threshold else None)
            total = stats_tuple(tcount, terrors, tsum, tmin, tmax, tsec, &q, tq,
                                tabove if self.has_threshold else None)
            wbytes = buf_take_bytes(&wb) if sketches else None
            tbytes = buf_take_bytes(&tb) if sketches else None
            return window, total, dropped, wbytes, tbytes
        finally:
            free(wb.data)
            free(tb.data)
            free(wq)
            qlist_free(&q)

    cdef uint64_t sum_counts(self, int what) noexcept:
        if self.npending:
            self.flush_pending()
        cdef uint64_t n
        cdef int i
        if what == 0:
            n = self.retired.count
        elif what == 1:
            n = self.retired_errors
        elif what == 2:
            n = self.retired_above
        else:
            n = self.retired.dropped
        for i in range(self.slices):
            if what == 0:
                n += self.ring[i].sk.count
            elif what == 1:
                n += self.ring[i].errors
            elif what == 2:
                n += self.ring[i].above
            else:
                n += self.ring[i].sk.dropped
        return n

    @property
    def count(self):
        return self.sum_counts(0)

    @property
    def errors(self):
        return self.sum_counts(1)

    @property
    def above_threshold(self):
        return self.sum_counts(2)

    @property
    def dropped(self):
        return self.sum_counts(3)

    @property
    def threshold(self):
        return self.threshold_value if self.has_threshold else None

    @property
    def window_seconds(self):
        return self.slice_ticks * self.slices * self.seconds_per_tick

    @property
    def nbytes(self):
        if self.npending:
            self.flush_pending()
        cdef long long n = sizeof(SketchData) + store_nbytes(&self.retired.pos) + store_nbytes(&self.retired.neg)
        cdef int i
        for i in range(self.slices):
            n += sizeof(Slice) + store_nbytes(&self.ring[i].sk.pos) + store_nbytes(&self.ring[i].sk.neg)
        return n

    def __repr__(self):
        return f"Series(count={self.sum_counts(0)}, errors={self.sum_counts(1)})"

# --- the clock ----------------------------------------------------------------------------------

cdef double g_ticks_per_second = 1e9
cdef int64_t g_cal_ticks0 = 0
cdef int64_t g_cal_ns0 = 0

cdef void calibrate_tsc(int64_t spin_ns):
    """Measure the counter against CLOCK_MONOTONIC, bracketing each reading to bound the error."""
    global g_ticks_per_second, g_cal_ticks0, g_cal_ns0
    cdef int64_t a0, a1, m0, m1, b0, b1
    a0 = perfsdk_now_ticks()
    m0 = perfsdk_monotonic_ns()
    b0 = perfsdk_now_ticks()
    m1 = m0
    while m1 - m0 < spin_ns:
        a1 = perfsdk_now_ticks()
        m1 = perfsdk_monotonic_ns()
        b1 = perfsdk_now_ticks()
    g_cal_ticks0 = (a0 + b0) // 2
    g_cal_ns0 = m0
    g_ticks_per_second = <double>(((a1 + b1) // 2) - g_cal_ticks0) * 1e9 / <double>(m1 - m0)

def _init_clock():
    global g_ticks_per_second
    use = False
    if perfsdk_have_tsc():
        try:
            with open("/sys/devices/system/clocksource/clocksource0/current_clocksource") as f:
                use = f.read().strip() == "tsc"
        except OSError:
            use = False
    global perfsdk_use_tsc
    perfsdk_use_tsc = 1 if use else 0
    if use:
        calibrate_tsc(1000000)
    else:
        g_ticks_per_second = 1e9

_init_clock()

def refine_clock():
    """Re-measure the counter's rate over the whole time since import (more precise as time passes).

    Series created afterwards use the new rate; returns ticks per second.
    """
    global g_ticks_per_second
    cdef int64_t t, m
    if perfsdk_use_tsc:
        t = perfsdk_now_ticks()
        m = perfsdk_monotonic_ns()
        if m - g_cal_ns0 > 10000000:
            g_ticks_per_second = <double>(t - g_cal_ticks0) * 1e9 / <double>(m - g_cal_ns0)
    return g_ticks_per_second

def now_ticks():
    """The native clock: TSC ticks where the kernel trusts the TSC, else CLOCK_MONOTONIC nanoseconds."""
    return perfsdk_now_ticks()

def ticks_per_second():
    return g_ticks_per_second

def clock_source():
    return "tsc" if perfsdk_use_tsc else "monotonic"

# --- the per-call wrapper ------------------------------------------------------------------------

cdef PyObject* timed_vectorcall(PyObject* callable, PyObject* const* args, size_t nargsf,
                                PyObject* kwnames) noexcept:
    cdef int64_t t0, t1
    cdef PyObject* r
    cdef PyObject* func
    cdef vectorcallfunc vc
    if (<TimedFunction>callable).native_clock:
        # Borrowed references throughout: the caller holds the wrapper, the wrapper holds the rest.
        func = <PyObject*>(<TimedFunction>callable).func
        vc = PyVectorcall_Function(func)
        t0 = perfsdk_now_ticks()
        if vc != NULL:
            r = vc(func, args, nargsf, kwnames)  # straight into the callee's vectorcall
        else:
            r = PyObject_Vectorcall(func, args, nargsf, kwnames)
        t1 = perfsdk_now_ticks()
        if t1 < t0:
            t1 = t0
        (<TimedFunction>callable).series.record_ticks(t1 - t0, t1, r == NULL)
        return r
    return timed_vectorcall_slow(<TimedFunction>callable, args, nargsf, kwnames)

cdef PyObject* timed_vectorcall_slow(TimedFunction self, PyObject* const* args, size_t nargsf,
                                     PyObject* kwnames) noexcept:
    cdef Series series = self.series
    cdef int64_t t0, t1
    cdef PyObject* r
    cdef PyObject* et
    cdef PyObject* ev
    cdef PyObject* tb
    t0 = self.read_clock()
    r = PyObject_Vectorcall(<PyObject*>self.func, args, nargsf, kwnames)
    if r == NULL:
        # the injected clock is Python code: park the pending exception while it runs
        PyErr_Fetch(&et, &ev, &tb)
        t1 = self.read_clock()
        PyErr_Restore(et, ev, tb)
    else:
        t1 = self.read_clock()
    series.record_ticks(t1 - t0, t1, r == NULL)
    return r

cdef class TimedFunction:
    """What ``@perfsdk.timed`` returns for a plain function: times each call in C and records it."""
    cdef vectorcallfunc vectorcall
    cdef readonly object func
    cdef readonly Series series
    cdef readonly object clock
    cdef bint native_clock
    cdef dict __dict__
    cdef object __weakref__

    def __init__(self, func, Series series not None, clock=None):
        if not callable(func):
            raise TypeError(f"timed() needs a callable, got {func!r}")
        self.func = func
        self.series = series
        self.clock = clock
        self.native_clock = clock is None
        self.vectorcall = timed_vectorcall

    cdef int64_t read_clock(self) noexcept:
        # An injected clock (tests) that fails reads as 0 rather than raising into the caller.
        cdef PyObject* r = PyObject_CallNoArgs(<PyObject*>self.clock)
        cdef long long v
        if r == NULL:
            PyErr_Clear()
            return 0
        v = PyLong_AsLongLong(r)
        Py_DECREF(r)
        if v == -1 and PyErr_Occurred() != NULL:
            PyErr_Clear()
            return 0
        return v

    def __call__(self, *args, **kwargs):
        # Reached only by callers that bypass vectorcall; same semantics.
        cdef int64_t t0 = perfsdk_now_ticks() if self.clock is None else self.read_clock()
        cdef int64_t t1
        try:
            r = self.func(*args, **kwargs)
        except BaseException:
            t1 = perfsdk_now_ticks() if self.clock is None else self.read_clock()
            self.series.record_c(<double>(t1 - t0) * self.series.seconds_per_tick, t1, True)
            raise
        t1 = perfsdk_now_ticks() if self.clock is None else self.read_clock()
        self.series.record_c(<double>(t1 - t0) * self.series.seconds_per_tick, t1, False)
        return r

    def __get__(self, obj, objtype):
        if obj is None:
            return self
        return PyMethod_New(self, obj)

    def __reduce__(self):
        return getattr(self, "__qualname__", None) or self.func.__qualname__

    def __repr__(self):
        return f"<timed {self.func!r}>"

cdef TimedFunction _prototype = TimedFunction.__new__(TimedFunction)
cdef PyTypeObjectRaw* _tp = <PyTypeObjectRaw*>TimedFunction
_tp.tp_vectorcall_offset = <Py_ssize_t>(<char*>&_prototype.vectorcall - <char*><PyObject*>_prototype)
_tp.tp_flags |= Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_METHOD_DESCRIPTOR
_prototype = None

# --- counters and gauges -----------------------------------------------------------------------

cdef class Counter:
    """A monotonically increasing total (GIL-atomic)."""
    cdef double value_

    def inc(self, double amount=1.0):
        if not (amount >= 0.0) or isinf(amount):
            raise ValueError(f"counter increment {amount!r} must be finite and >= 0; use a gauge for values that go down")
        self.value_ += amount

    def reset(self):
        """Back to zero (a forked child starts clean)."""
        self.value_ = 0.0

    @property
    def value(self):
        return self.value_

cdef class Gauge:
    """A value that goes up and down (GIL-atomic)."""
    cdef double value_

    def set(self, double value):
        self.value_ = value

    def inc(self, double amount=1.0):
        self.value_ += amount

    def dec(self, double amount=1.0):
        self.value_ -= amount

    @property
    def value(self):
        return self.value_

# --- records ------------------------------------------------------------------------------------

import types as _types

cdef inline int set_slot(PyObject* d, PyObject* obj, PyObject* value) except -1:
    return Py_TYPE(d).tp_descr_set(d, obj, value)

@cython.final
cdef class RecordMaker:
    """``RecordMaker(cls, names)(*values)``: a ``cls`` with each slot of ``names`` set to its value.

    For the frozen, slotted dataclasses of ``perfsdk.records``: the same object as
    ``cls(*values)`` (every field given), built without ``__init__``, each slot set through its
    member descriptor in C. A snapshot builds three records per timer, thousands a second.
    """
    cdef object cls
    cdef tuple slots
    cdef Py_ssize_t n

    def __init__(self, cls, names):
        if not isinstance(cls, type):
            raise TypeError(f"RecordMaker needs a class, got {cls!r}")
        slots = []
        for name in names:
            d = cls.__dict__.get(name)
            if type(d) is not _types.MemberDescriptorType:
                raise TypeError(f"{cls.__name__}.{name} is not a slot of {cls.__name__}")
            slots.append(d)
        self.cls = cls
        self.slots = tuple(slots)
        self.n = len(self.slots)

    def __call__(self, *values):
        cdef Py_ssize_t i
        cdef PyTypeObjectRaw* t = <PyTypeObjectRaw*>self.cls
        if len(values) != self.n:
            raise TypeError(f"{self.cls.__name__} takes {self.n} values, got {len(values)}")
        cdef PyObject* raw = t.tp_alloc(t, 0)
        if raw == NULL:
            raise MemoryError()
        obj = <object>raw
        Py_DECREF(raw)  # obj holds it now
        for i in range(self.n):
            set_slot(<PyObject*>self.slots[i], <PyObject*>obj, <PyObject*>values[i])
        return obj

    def __repr__(self):
        return f"RecordMaker({self.cls.__name__})"

# --- vectorised threshold check ----------------------------------------------------------------

STAT_CODES = {"count": 0, "rate": 1, "mean": 2, "min": 3, "max": 4, "sum": 5, "quantile": 6,
              "errors": 7, "error_ratio": 8, "above": 9}
OP_CODES = {">": 0, ">=": 1, "<": 2, "<=": 3}

def evaluate_rules(list sketches, const double[:] seconds, const double[:] errors,
                   const double[:] above, const long long[:] series_idx, const int[:] stat,
                   const double[:] arg, const int[:] op, const double[:] limit,
                   double[:] out_value, unsigned char[:] out_match):
    """Evaluate many rules against many series in one call.

    Rules must be sorted by (series index, quantile): every rule on one series is answered from one
    pass over its buckets. Writes the observed value and whether the rule matched.
    """
    cdef Py_ssize_t n = series_idx.shape[0], i = 0, j, m, nq
    cdef long long si
    cdef Sketch sk
    cdef double v, c
    cdef double* qs = <double*>malloc(<size_t>(n + 1) * sizeof(double))
    cdef double* qv = <double*>malloc(<size_t>(n + 1) * sizeof(double))
    cdef int o
    if qs == NULL or qv == NULL:
        free(qs)
        free(qv)
        raise MemoryError()
    try:
        while i < n:
            si = series_idx[i]
            sk = <Sketch>sketches[si]
            j = i
            while j < n and series_idx[j] == si:
                j += 1
            nq = 0
            for m in range(i, j):
                if stat[m] == 6:
                    qs[nq] = arg[m]
                    nq += 1
            if nq:
                sk_quantiles_sorted(&sk.d, sk.mult, qs, nq, qv)
            nq = 0
            c = <double>sk.d.count
            for m in range(i, j):
                o = stat[m]
                if o == 0:
                    v = c
                elif o == 1:
                    v = c / seconds[si] if seconds[si] > 0 else NAN
                elif o == 2:
                    v = sk.d.sum / c if c > 0 else NAN
                elif o == 3:
                    v = sk.d.min if c > 0 else NAN
                elif o == 4:
                    v = sk.d.max if c > 0 else NAN
                elif o == 5:
                    v = sk.d.sum
                elif o == 6:
                    v = qv[nq]
                    nq += 1
                elif o == 7:
                    v = errors[si]
                elif o == 8:
                    v = errors[si] / c if c > 0 else NAN
                else:
                    v = above[si]
                out_value[m] = v
                o = op[m]
                if o == 0:
                    out_match[m] = v > limit[m]
                elif o == 1:
                    out_match[m] = v >= limit[m]
                elif o == 2:
                    out_match[m] = v < limit[m]
                else:
                    out_match[m] = v <= limit[m]
            i = j
    finally:
        free(qs)
        free(qv)
