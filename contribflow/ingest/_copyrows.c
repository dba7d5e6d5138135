/* The binary COPY of a plain chunk's good rows, in load order, built without the GIL.
 *
 * Load order is raw's unique index's: by declaration id (its UTF-8 bytes), then record hash, then
 * file order. The definition is ingest.py's Python path (recordhash.digests and load_order, the keys of
 * pseudonym.Pseudonymiser, _Preparer._plain_payload, a text COPY); this loads the same rows in the
 * same order (tests/test_copyrows.py). It saves the interpreter's work on every row, and it hashes,
 * keys, sorts and encodes with the GIL released, so that the next chunk is validated in Python
 * meanwhile: on two cores that work leaves the critical path. Binary spares PostgreSQL the parsing
 * of every value (its COPY of 1M rows: 3.0 s as text, 2.3 s as binary).
 *
 * The pseudonymisation key is only read from the caller's bytes (the Python process holds it anyway)
 * and never written anywhere; the taxpayer keys it yields go only into the COPY data.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

/* SHA-256 and HMAC-SHA256 from OpenSSL's libcrypto, the library CPython's own hashlib and hmac use:
 * vetted, FIPS-capable (the algorithms are fetched from the default library context, so a FIPS
 * provider configured there is the one used), and with the CPU's SHA instructions on x86 and arm64.
 * Both algorithms are fetched once, at import; each call of binary_copy makes its own contexts,
 * so the GIL-free work shares no mutable OpenSSL state. */

static EVP_MD *sha256_md;
static EVP_MAC *hmac_mac;

static int sha256(EVP_MD_CTX *ctx, const unsigned char *data, size_t size, unsigned char out[32])
{
    unsigned int length = 0;
    return EVP_DigestInit_ex2(ctx, sha256_md, NULL) && EVP_DigestUpdate(ctx, data, size)
                   && EVP_DigestFinal_ex(ctx, out, &length) && length == 32
               ? 0
               : -1;
}

/* A context for HMAC-SHA256 (RFC 2104) under key; NULL when OpenSSL refuses. */
static EVP_MAC_CTX *hmac_new(const unsigned char *key, size_t size)
{
    static const unsigned char no_key[1] = {0};
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", digest, 0), OSSL_PARAM_construct_end()};
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(hmac_mac);
    if (ctx != NULL && EVP_MAC_init(ctx, size ? key : no_key, size, params))
        return ctx;
    EVP_MAC_CTX_free(ctx);
    return NULL;
}

/* HMAC-SHA256 of data under the context's key (re-initialised for each message). */
static int hmac(EVP_MAC_CTX *ctx, const unsigned char *data, size_t size, unsigned char out[32])
{
    size_t length = 0;
    return EVP_MAC_init(ctx, NULL, 0, NULL) && EVP_MAC_update(ctx, data, size)
                   && EVP_MAC_final(ctx, out, &length, 32) && length == 32
               ? 0
               : -1;
}

static const char HEX[] = "0123456789abcdef";

static char *write_hex(char *out, const unsigned char *bytes, int size)
{
    for (int j = 0; j < size; j++) {
        *out++ = HEX[bytes[j] >> 4];
        *out++ = HEX[bytes[j] & 15];
    }
    return out;
}

/* The rows. */

typedef struct {
    const char *id;     /* the declaration id: the line's first value */
    Py_ssize_t id_size;
    uint64_t key;       /* the digest's first 8 bytes, big-endian: the uuid's memcmp order */
    Py_ssize_t row;     /* file order breaks ties, as numpy's stable lexsort does */
} Slot;

static int slot_order(const void *left, const void *right)
{
    const Slot *x = left, *y = right;
    Py_ssize_t shorter = x->id_size < y->id_size ? x->id_size : y->id_size;
    int by_id = memcmp(x->id, y->id, (size_t)shorter);
    if (by_id != 0)
        return by_id;
    if (x->id_size != y->id_size)
        return x->id_size < y->id_size ? -1 : 1;
    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    return (x->row > y->row) - (x->row < y->row);
}

/* COPY's binary format: big-endian integers, each field its length then its bytes. */

static char *put16(char *out, uint16_t value)
{
    out[0] = (char)(value >> 8);
    out[1] = (char)value;
    return out + 2;
}

static char *put32(char *out, uint32_t value)
{
    out[0] = (char)(value >> 24);
    out[1] = (char)(value >> 16);
    out[2] = (char)(value >> 8);
    out[3] = (char)value;
    return out + 4;
}

static char *put_text(char *out, const char *text, Py_ssize_t size)
{
    out = put32(out, (uint32_t)size);
    memcpy(out, text, (size_t)size);
    return out + size;
}

static int digits_value(const char *text, int count, long long *value)
{
    long long v = 0;
    for (int i = 0; i < count; i++) {
        if (text[i] < '0' || text[i] > '9')
            return -1;
        v = v * 10 + (text[i] - '0');
    }
    *value = v;
    return 0;
}

/* Days from 1970-01-01 to a date of the proleptic Gregorian calendar (H. Hinnant's algorithm). */
static long long days_from_civil(long long y, long long m, long long d)
{
    y -= m <= 2;
    long long era = (y >= 0 ? y : y - 399) / 400;
    long long yoe = y - era * 400;
    long long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* A validated YYYY-MM-DD as PostgreSQL's binary date: days from 2000-01-01. */
static char *put_date(char *out, const char *text, Py_ssize_t size)
{
    static const int month_days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    long long y, m, d;
    if (size != 10 || text[4] != '-' || text[7] != '-' || digits_value(text, 4, &y) < 0
        || digits_value(text + 5, 2, &m) < 0 || digits_value(text + 8, 2, &d) < 0)
        return NULL;
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (y < 1 || m < 1 || m > 12 || d < 1 || d > month_days[m - 1] + (m == 2 && leap))
        return NULL;
    out = put32(out, 4);
    return put32(out, (uint32_t)(int32_t)(days_from_civil(y, m, d) - 10957));
}

/* A validated amount (1 to 12 digits, then optionally a point and 1 or 2 digits: the source writes
 * 343.3, 0.0 or 12) as numeric(14,2) prints it, into out (16 bytes): no leading zero, a point, two
 * digits. Returns its length, or -1 when text is not such an amount. */
static int canonical_amount(const char *text, Py_ssize_t size, char *out)
{
    Py_ssize_t point = 0;
    while (point < size && text[point] != '.')
        point++;
    Py_ssize_t decimals = point < size ? size - point - 1 : 0;
    if (point < 1 || point > 12 || (point < size && (decimals < 1 || decimals > 2)))
        return -1;
    for (Py_ssize_t i = 0; i < size; i++)
        if (i != point && (text[i] < '0' || text[i] > '9'))
            return -1;
    Py_ssize_t first = 0;
    while (first < point - 1 && text[first] == '0')
        first++;
    int n = (int)(point - first);
    memcpy(out, text + first, (size_t)n);
    out[n++] = '.';
    out[n++] = decimals >= 1 ? text[point + 1] : '0';
    out[n++] = decimals >= 2 ? text[point + 2] : '0';
    return n;
}

/* A canonical amount (0 or [1-9][0-9]{0,11}, a point, two digits) as PostgreSQL's binary
 * numeric: base-10000 digits, the weight of the first, sign, display scale 2. */
static char *put_amount(char *out, const char *text, Py_ssize_t size)
{
    long long whole, cents;
    Py_ssize_t point = size - 3;
    if (point < 1 || point > 12 || text[point] != '.' || digits_value(text, (int)point, &whole) < 0
        || digits_value(text + point + 1, 2, &cents) < 0 || (point > 1 && text[0] == '0'))
        return NULL;
    uint16_t groups[4]; /* least significant first */
    int ndigits = 0;
    for (long long rest = whole; rest > 0; rest /= 10000)
        groups[ndigits++] = (uint16_t)(rest % 10000);
    out = put32(out, (uint32_t)(8 + 2 * (ndigits + 1)));
    out = put16(out, (uint16_t)(ndigits + 1));
    out = put16(out, (uint16_t)(int16_t)(ndigits - 1)); /* weight: -1 when there is no whole part */
    out = put16(out, 0x0000);                           /* positive */
    out = put16(out, 2);                                /* display scale */
    for (int g = ndigits - 1; g >= 0; g--)
        out = put16(out, groups[g]);
    return put16(out, (uint16_t)(cents * 100));
}

enum { FIELDS = 8 };

/* One tuple: its 14 fields in the order of ingest's binary COPY (record_hash, taxpayer_key,
 * source_line, then the three added constants, then the line's eight values). NULL when the line
 * is not eight plain values with a validated amount and a calendar date (validation's job). */
static char *put_row(char *out, const unsigned char digest[32], const char *key, int64_t number,
                     const char *added, Py_ssize_t added_size, const char *line, Py_ssize_t size)
{
    const char *field[FIELDS + 1];
    int count = 0;
    field[count++] = line;
    for (Py_ssize_t i = 0; i < size; i++)
        if (line[i] == ',') {
            if (count == FIELDS)
                return NULL;
            field[count++] = line + i + 1;
        }
    if (count != FIELDS)
        return NULL;
    field[FIELDS] = line + size + 1;
    out = put16(out, 6 + FIELDS);
    out = put32(out, 16);
    memcpy(out, digest, 16);
    out += 16;
    out = put_text(out, key, 64);
    out = put32(out, 4);
    out = put32(out, (uint32_t)(int32_t)number);
    memcpy(out, added, (size_t)added_size);
    out += added_size;
    for (int f = 0; f < FIELDS && out != NULL; f++) {
        Py_ssize_t length = field[f + 1] - field[f] - 1;
        if (f == 2)
            out = put_date(out, field[f], length);
        else if (f == 3) {
            char amount[16];
            int size_of_amount = canonical_amount(field[f], length, amount);
            out = size_of_amount < 0 ? NULL : put_amount(out, amount, size_of_amount);
        }
        else
            out = put_text(out, field[f], length);
    }
    return out;
}

typedef struct {
    Py_ssize_t rows;
    const char **line;
    Py_ssize_t *line_size;
    const char **id;
    Py_ssize_t *id_size;
    Py_ssize_t ids;
    EVP_MAC_CTX *pseudonym; /* HMAC-SHA256 under the pseudonymisation key */
    EVP_MD_CTX *digest;     /* SHA-256 of the record hashes */
    char *key;              /* 64 hex digits for each id */
    const int64_t *code;
    const int64_t *number;
    const char *added;
    Py_ssize_t added_size;
    Slot *slots;
    Py_ssize_t *offset; /* of each row's text in stage, in file order; offset[rows] is the total */
    char *stage;
    char *canonical;    /* room for one line with its amount made canonical */
    Py_ssize_t bad_row; /* set when build_stage returns -2 */
} Rows;

/* The record hash's SHA-256 of a line (without its newline): the line itself where its amount (the
 * fourth value) is already canonical, else the line with that amount made canonical in buffer
 * (room for the line and 16 bytes). -2 when the line has no fourth value or it is no amount, -3
 * when OpenSSL fails. */
static int hash_canonical(EVP_MD_CTX *ctx, const char *line, Py_ssize_t size, char *buffer,
                          unsigned char digest[32])
{
    Py_ssize_t start = 0, commas = 0, stop;
    while (start < size && commas < 3)
        if (line[start++] == ',')
            commas++;
    for (stop = start; stop < size && line[stop] != ','; stop++)
        ;
    char amount[16];
    int n = commas == 3 ? canonical_amount(line + start, stop - start, amount) : -1;
    if (n < 0)
        return -2;
    if (n == stop - start && memcmp(amount, line + start, (size_t)n) == 0)
        return sha256(ctx, (const unsigned char *)line, (size_t)size, digest) < 0 ? -3 : 0;
    memcpy(buffer, line, (size_t)start);
    memcpy(buffer + start, amount, (size_t)n);
    memcpy(buffer + start + n, line + stop, (size_t)(size - stop));
    return sha256(ctx, (const unsigned char *)buffer, (size_t)(start + n + size - stop), digest) < 0 ? -3 : 0;
}

/* Hash, key, encode and sort the rows into stage, in file order. Needs no Python object: runs
 * without the GIL. Returns 0; -1 when stage cannot be allocated; -2 for a row put_row refuses;
 * -3 when OpenSSL fails. */
static int build_stage(Rows *r)
{
    unsigned char digest[32];
    Py_ssize_t bound = 0;
    r->key = malloc(r->ids ? (size_t)r->ids * 64 : 1);
    if (r->key == NULL)
        return -1;
    for (Py_ssize_t k = 0; k < r->ids; k++) {
        if (hmac(r->pseudonym, (const unsigned char *)r->id[k], (size_t)r->id_size[k], digest) < 0)
            return -3;
        write_hex(r->key + 64 * k, digest, 32);
    }
    /* Fixed fields and lengths: 2 + 20 + 68 + 8 + 8 * 4; a date and an amount take at most
     * 14 bytes more than their text. */
    Py_ssize_t longest = 0;
    for (Py_ssize_t i = 0; i < r->rows; i++) {
        bound += 2 + 20 + 68 + 8 + 8 * 4 + 14 + r->added_size + r->line_size[i];
        longest = r->line_size[i] > longest ? r->line_size[i] : longest;
    }
    r->stage = malloc(bound ? (size_t)bound : 1);
    r->canonical = malloc((size_t)longest + 16);
    if (r->stage == NULL || r->canonical == NULL)
        return -1;
    char *canonical = r->canonical;
    char *out = r->stage;
    for (Py_ssize_t i = 0; i < r->rows; i++) {
        r->offset[i] = out - r->stage;
        Py_ssize_t size = r->line_size[i] - 1; /* without its newline */
        int hashed = hash_canonical(r->digest, r->line[i], size, canonical, digest);
        if (hashed < 0) {
            r->bad_row = i;
            return hashed;
        }
        uint64_t key = 0;
        for (int j = 0; j < 8; j++)
            key = (key << 8) | digest[j];
        Py_ssize_t id_size = 0;
        while (id_size < size && r->line[i][id_size] != ',')
            id_size++;
        r->slots[i].id = r->line[i];
        r->slots[i].id_size = id_size;
        r->slots[i].key = key;
        r->slots[i].row = i;
        out = put_row(out, digest, r->key + 64 * r->code[i], r->number[i], r->added,
                      r->added_size, r->line[i], size);
        if (out == NULL) {
            r->bad_row = i;
            return -2;
        }
    }
    r->offset[r->rows] = out - r->stage;
    qsort(r->slots, (size_t)r->rows, sizeof(Slot), slot_order);
    return 0;
}

static Py_ssize_t piece_stop(Py_ssize_t start, Py_ssize_t piece_rows, Py_ssize_t rows)
{
    return start + piece_rows < rows ? start + piece_rows : rows;
}

static void fill_piece(const Rows *r, Py_ssize_t start, Py_ssize_t stop, char *out)
{
    for (Py_ssize_t s = start; s < stop; s++) {
        Py_ssize_t i = r->slots[s].row;
        Py_ssize_t size = r->offset[i + 1] - r->offset[i];
        memcpy(out, r->stage + r->offset[i], (size_t)size);
        out += size;
    }
}

static int int64_vector(PyObject *obj, Py_buffer *view, const char *what, Py_ssize_t rows)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return -1;
    if (view->itemsize != 8 || view->ndim != 1 || view->format == NULL
        || (strcmp(view->format, "q") != 0 && strcmp(view->format, "l") != 0
            && strcmp(view->format, "<q") != 0 && strcmp(view->format, "<l") != 0
            && strcmp(view->format, "=q") != 0 && strcmp(view->format, "=l") != 0)) {
        PyErr_Format(PyExc_TypeError, "%s must be a contiguous vector of int64", what);
        return -1;
    }
    if (view->shape[0] != rows) {
        PyErr_Format(PyExc_ValueError, "%s has %zd values for %zd lines", what, view->shape[0], rows);
        return -1;
    }
    return 0;
}

/* The UTF-8 text of each str of a tuple (the tuple keeps them alive). */
static int utf8_items(PyObject *tuple, const char *what, const char **text, Py_ssize_t *size)
{
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(tuple); i++) {
        PyObject *item = PyTuple_GET_ITEM(tuple, i);
        if (!PyUnicode_Check(item)) {
            PyErr_Format(PyExc_TypeError, "%s[%zd] is not a str", what, i);
            return -1;
        }
        if ((text[i] = PyUnicode_AsUTF8AndSize(item, &size[i])) == NULL)
            return -1;
    }
    return 0;
}

PyDoc_STRVAR(binary_copy_doc,
"binary_copy(lines, codes, ids, key, numbers, added, piece_rows) -> list[bytes]\n\n"
"The tuples of a binary COPY (no header, no trailer) of plain lines in contract order, in\n"
"load order (declaration id, then record hash, then line), in pieces of piece_rows rows. Each tuple: the record hash (uuid: the first\n"
"16 bytes of the SHA-256 of the line without its newline, its amount made canonical), the HMAC-SHA256 under key of its\n"
"taxpayer ids[codes[i]] (text, 64 hex digits), numbers[i] (int4), added (fields already in\n"
"binary), then the line's eight values (event_date as date, amount as numeric). Every line must\n"
"end with a newline; codes and numbers are int64 vectors.");

static PyObject *binary_copy(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *lines_arg, *codes_arg, *ids_arg, *numbers_arg, *added_arg;
    Py_buffer codes = {0}, numbers = {0}, key = {0};
    Py_ssize_t piece_rows;
    if (!PyArg_ParseTuple(args, "OOOy*OSn:binary_copy", &lines_arg, &codes_arg, &ids_arg, &key,
                          &numbers_arg, &added_arg, &piece_rows))
        return NULL;
    PyObject *lines = NULL, *ids = NULL, *pieces = NULL;
    Rows r = {0};
    if (piece_rows < 1) {
        PyErr_SetString(PyExc_ValueError, "piece_rows must be at least 1");
        goto done;
    }
    /* Own references: the strings must outlive the GIL-free work, whatever the caller does. */
    lines = PySequence_Tuple(lines_arg);
    ids = lines ? PySequence_Tuple(ids_arg) : NULL;
    if (ids == NULL)
        goto done;
    r.rows = PyTuple_GET_SIZE(lines);
    r.ids = PyTuple_GET_SIZE(ids);
    r.pseudonym = hmac_new(key.buf, (size_t)key.len);
    r.digest = EVP_MD_CTX_new();
    if (r.pseudonym == NULL || r.digest == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL could not set up HMAC-SHA256 and SHA-256");
        goto done;
    }
    if (int64_vector(codes_arg, &codes, "codes", r.rows) < 0
        || int64_vector(numbers_arg, &numbers, "numbers", r.rows) < 0)
        goto done;
    r.code = codes.buf;
    r.number = numbers.buf;
    Py_ssize_t slots = r.rows ? r.rows : 1;
    r.line = PyMem_Malloc(sizeof(char *) * slots);
    r.line_size = PyMem_Malloc(sizeof(Py_ssize_t) * slots);
    r.id = PyMem_Malloc(sizeof(char *) * (r.ids ? r.ids : 1));
    r.id_size = PyMem_Malloc(sizeof(Py_ssize_t) * (r.ids ? r.ids : 1));
    r.slots = PyMem_Malloc(sizeof(Slot) * slots);
    r.offset = PyMem_Malloc(sizeof(Py_ssize_t) * (r.rows + 1));
    if (!r.line || !r.line_size || !r.id || !r.id_size || !r.slots || !r.offset) {
        PyErr_NoMemory();
        goto done;
    }
    r.added = PyBytes_AS_STRING(added_arg);
    r.added_size = PyBytes_GET_SIZE(added_arg);
    if (utf8_items(ids, "ids", r.id, r.id_size) < 0 || utf8_items(lines, "lines", r.line, r.line_size) < 0)
        goto done;
    for (Py_ssize_t i = 0; i < r.rows; i++) {
        if (r.line_size[i] == 0 || r.line[i][r.line_size[i] - 1] != '\n') {
            PyErr_Format(PyExc_ValueError, "lines[%zd] does not end with a newline", i);
            goto done;
        }
        if (r.number[i] < 1 || r.number[i] > INT32_MAX) {
            PyErr_Format(PyExc_ValueError, "numbers[%zd] = %lld is not a line number (int4)", i,
                         (long long)r.number[i]);
            goto done;
        }
        if (r.code[i] < 0 || r.code[i] >= r.ids) {
            PyErr_Format(PyExc_ValueError, "codes[%zd] = %lld is not an index of ids", i,
                         (long long)r.code[i]);
            goto done;
        }
    }
    int built;
    Py_BEGIN_ALLOW_THREADS
    built = build_stage(&r);
    Py_END_ALLOW_THREADS
    if (built == -2) {
        /* Not the line itself: an error message ends up in logs, and the line holds a taxpayer. */
        PyErr_Format(PyExc_ValueError, "lines[%zd] is not eight plain values with a calendar date "
                     "and an amount", r.bad_row);
        goto done;
    }
    if (built == -3) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL failed to compute a SHA-256 or an HMAC");
        goto done;
    }
    if (built < 0) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t n_pieces = (r.rows + piece_rows - 1) / piece_rows;
    if ((pieces = PyList_New(n_pieces)) == NULL)
        goto done;
    for (Py_ssize_t p = 0; p < n_pieces; p++) {
        Py_ssize_t start = p * piece_rows, stop = piece_stop(start, piece_rows, r.rows);
        Py_ssize_t size = 0;
        for (Py_ssize_t s = start; s < stop; s++) {
            Py_ssize_t i = r.slots[s].row;
            size += r.offset[i + 1] - r.offset[i];
        }
        PyObject *piece = PyBytes_FromStringAndSize(NULL, size);
        if (piece == NULL) {
            Py_CLEAR(pieces);
            goto done;
        }
        PyList_SET_ITEM(pieces, p, piece);
    }
    /* One release for all pieces: each taking the GIL back can wait a switch interval (5 ms). */
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t p = 0; p < n_pieces; p++)
        fill_piece(&r, p * piece_rows, piece_stop(p * piece_rows, piece_rows, r.rows),
                   PyBytes_AS_STRING(PyList_GET_ITEM(pieces, p)));
    Py_END_ALLOW_THREADS
done:
    free(r.stage);
    free(r.canonical);
    EVP_MAC_CTX_free(r.pseudonym);
    EVP_MD_CTX_free(r.digest);
    free(r.key);
    PyMem_Free(r.line);
    PyMem_Free(r.line_size);
    PyMem_Free(r.id);
    PyMem_Free(r.id_size);
    PyMem_Free(r.slots);
    PyMem_Free(r.offset);
    Py_XDECREF(lines);
    Py_XDECREF(ids);
    PyBuffer_Release(&key);
    if (codes.obj != NULL)
        PyBuffer_Release(&codes);
    if (numbers.obj != NULL)
        PyBuffer_Release(&numbers);
    return pieces;
}

PyDoc_STRVAR(sha256_doc, "sha256(data) -> bytes\n\nThe SHA-256 digest binary_copy uses (for tests).");

static PyObject *sha256_py(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer data;
    unsigned char digest[32];
    if (!PyArg_ParseTuple(args, "y*:sha256", &data))
        return NULL;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int failed = ctx == NULL || sha256(ctx, data.buf, (size_t)data.len, digest) < 0;
    EVP_MD_CTX_free(ctx);
    PyBuffer_Release(&data);
    if (failed) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL failed to compute a SHA-256");
        return NULL;
    }
    return PyBytes_FromStringAndSize((const char *)digest, 32);
}

PyDoc_STRVAR(hmac_doc, "hmac_sha256(key, data) -> bytes\n\nThe HMAC-SHA256 binary_copy uses (for tests).");

static PyObject *hmac_py(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer key, data;
    unsigned char digest[32];
    if (!PyArg_ParseTuple(args, "y*y*:hmac_sha256", &key, &data))
        return NULL;
    EVP_MAC_CTX *ctx = hmac_new(key.buf, (size_t)key.len);
    int failed = ctx == NULL || hmac(ctx, data.buf, (size_t)data.len, digest) < 0;
    EVP_MAC_CTX_free(ctx);
    PyBuffer_Release(&key);
    PyBuffer_Release(&data);
    if (failed) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL failed to compute an HMAC-SHA256");
        return NULL;
    }
    return PyBytes_FromStringAndSize((const char *)digest, 32);
}

static PyMethodDef methods[] = {
    {"binary_copy", binary_copy, METH_VARARGS, binary_copy_doc},
    {"sha256", sha256_py, METH_VARARGS, sha256_doc},
    {"hmac_sha256", hmac_py, METH_VARARGS, hmac_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "contribflow.ingest._copyrows",
    "The binary COPY of plain rows in load order, built without the GIL.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__copyrows(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
    hmac_mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (sha256_md == NULL || hmac_mac == NULL) {
        PyErr_SetString(PyExc_ImportError, "OpenSSL's libcrypto offers no SHA256 or HMAC here");
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddStringConstant(m, "OPENSSL", OpenSSL_version(OPENSSL_VERSION)) < 0)
        Py_CLEAR(m);
    return m;
}
