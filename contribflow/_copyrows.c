/* The binary COPY of a plain chunk's good rows, in record-hash order, built without the GIL.
 *
 * The definition is ingest.py's Python path (recordhash.digests and hash_order, the keys of
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

/* SHA-256, FIPS 180-4. */

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block_portable(uint32_t state[8], const unsigned char *block)
{
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = ((uint32_t)block[4 * i] << 24) | ((uint32_t)block[4 * i + 1] << 16)
             | ((uint32_t)block[4 * i + 2] << 8) | (uint32_t)block[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROTR(w[i - 15], 7) ^ ROTR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROTR(w[i - 2], 17) ^ ROTR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
    uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (ROTR(e, 6) ^ ROTR(e, 11) ^ ROTR(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i];
        uint32_t t2 = (ROTR(a, 2) ^ ROTR(a, 13) ^ ROTR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    state[0] += a; state[1] += b; state[2] += c; state[3] += d;
    state[4] += e; state[5] += f; state[6] += g; state[7] += h;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#define HAVE_SHA_NI 1

/* The same compression with the x86 SHA extensions (Intel's published sequence): the state is
 * kept as the ABEF and CDGH halves sha256rnds2 works on. */
__attribute__((target("sha,sse4.1,ssse3")))
static void sha256_block_ni(uint32_t state[8], const unsigned char *block)
{
    const __m128i swap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i tmp = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&state[0]), 0xB1);
    __m128i cdgh = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&state[4]), 0x1B);
    __m128i abef = _mm_alignr_epi8(tmp, cdgh, 8);
    cdgh = _mm_blend_epi16(cdgh, tmp, 0xF0);
    const __m128i abef_start = abef, cdgh_start = cdgh;
    __m128i w[16];
    for (int i = 0; i < 16; i++) {
        if (i < 4) {
            w[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(block + 16 * i)), swap);
        } else {
            __m128i t = _mm_add_epi32(_mm_sha256msg1_epu32(w[i - 4], w[i - 3]),
                                      _mm_alignr_epi8(w[i - 1], w[i - 2], 4));
            w[i] = _mm_sha256msg2_epu32(t, w[i - 1]);
        }
        __m128i wk = _mm_add_epi32(w[i], _mm_loadu_si128((const __m128i *)&K256[4 * i]));
        cdgh = _mm_sha256rnds2_epu32(cdgh, abef, wk);
        abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(wk, 0x0E));
    }
    abef = _mm_add_epi32(abef, abef_start);
    cdgh = _mm_add_epi32(cdgh, cdgh_start);
    tmp = _mm_shuffle_epi32(abef, 0x1B);
    cdgh = _mm_shuffle_epi32(cdgh, 0xB1);
    _mm_storeu_si128((__m128i *)&state[0], _mm_blend_epi16(tmp, cdgh, 0xF0));
    _mm_storeu_si128((__m128i *)&state[4], _mm_alignr_epi8(cdgh, tmp, 8));
}

static int cpu_has_sha_ni(void)
{
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_SSE4_1) || !(c & bit_SSSE3))
        return 0;
    return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & bit_SHA);
}
#endif

/* Chosen once, at import: the SHA extensions where the CPU has them, portable C otherwise. */
static void (*sha256_block)(uint32_t state[8], const unsigned char *block) = sha256_block_portable;

static const uint32_t IV256[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                  0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

/* The digest of a message whose first `done` bytes (a multiple of 64) are already in `state`,
 * and whose remaining `size` bytes are `data`. */
typedef void (*BlockFunction)(uint32_t state[8], const unsigned char *block);

static void sha256_with(BlockFunction compress, const uint32_t start[8], uint64_t done,
                        const unsigned char *data, size_t size, unsigned char out[32])
{
    uint32_t state[8];
    unsigned char tail[128];
    size_t left = size;
    uint64_t bits = (done + (uint64_t)size) * 8;
    memcpy(state, start, sizeof(state));
    for (; left >= 64; left -= 64, data += 64)
        compress(state, data);
    size_t padded = left < 56 ? 64 : 128;
    memcpy(tail, data, left);
    tail[left] = 0x80;
    memset(tail + left + 1, 0, padded - left - 1);
    for (int i = 0; i < 8; i++)
        tail[padded - 1 - i] = (unsigned char)(bits >> (8 * i));
    compress(state, tail);
    if (padded == 128)
        compress(state, tail + 64);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (unsigned char)(state[i] >> 24);
        out[4 * i + 1] = (unsigned char)(state[i] >> 16);
        out[4 * i + 2] = (unsigned char)(state[i] >> 8);
        out[4 * i + 3] = (unsigned char)state[i];
    }
}

static void sha256_finish(const uint32_t start[8], uint64_t done, const unsigned char *data,
                          size_t size, unsigned char out[32])
{
    sha256_with(sha256_block, start, done, data, size, out);
}

static void sha256(const unsigned char *data, size_t size, unsigned char out[32])
{
    sha256_finish(IV256, 0, data, size, out);
}

/* HMAC-SHA256 (RFC 2104): the states after the key's inner and outer pads, computed once. */
typedef struct {
    uint32_t inner[8];
    uint32_t outer[8];
} Hmac;

static void hmac_init(Hmac *h, const unsigned char *key, size_t size)
{
    unsigned char block[64] = {0}, pad[64];
    if (size > 64)
        sha256(key, size, block);
    else
        memcpy(block, key, size);
    memcpy(h->inner, IV256, sizeof(IV256));
    memcpy(h->outer, IV256, sizeof(IV256));
    for (int i = 0; i < 64; i++)
        pad[i] = block[i] ^ 0x36;
    sha256_block(h->inner, pad);
    for (int i = 0; i < 64; i++)
        pad[i] = block[i] ^ 0x5c;
    sha256_block(h->outer, pad);
}

static void hmac(const Hmac *h, const unsigned char *data, size_t size, unsigned char out[32])
{
    unsigned char inner[32];
    sha256_finish(h->inner, 64, data, size, inner);
    sha256_finish(h->outer, 64, inner, 32, out);
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
    uint64_t key;   /* the digest's first 8 bytes, big-endian: the uuid's memcmp order */
    Py_ssize_t row; /* file order breaks ties, as numpy's stable argsort does */
} Slot;

static int slot_order(const void *left, const void *right)
{
    const Slot *x = left, *y = right;
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
    Hmac pseudonym;
    char *key;          /* 64 hex digits for each id */
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
 * (room for the line and 16 bytes). -1 when the line has no fourth value or it is no amount. */
static int hash_canonical(const char *line, Py_ssize_t size, char *buffer, unsigned char digest[32])
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
        return -1;
    if (n == stop - start && memcmp(amount, line + start, (size_t)n) == 0) {
        sha256((const unsigned char *)line, (size_t)size, digest);
        return 0;
    }
    memcpy(buffer, line, (size_t)start);
    memcpy(buffer + start, amount, (size_t)n);
    memcpy(buffer + start + n, line + stop, (size_t)(size - stop));
    sha256((const unsigned char *)buffer, (size_t)(start + n + size - stop), digest);
    return 0;
}

/* Hash, key, encode and sort the rows into stage, in file order. Needs no Python object: runs
 * without the GIL. Returns 0; -1 when stage cannot be allocated; -2 for a row put_row refuses. */
static int build_stage(Rows *r)
{
    unsigned char digest[32];
    Py_ssize_t bound = 0;
    r->key = malloc(r->ids ? (size_t)r->ids * 64 : 1);
    if (r->key == NULL)
        return -1;
    for (Py_ssize_t k = 0; k < r->ids; k++) {
        hmac(&r->pseudonym, (const unsigned char *)r->id[k], (size_t)r->id_size[k], digest);
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
        if (hash_canonical(r->line[i], size, canonical, digest) < 0) {
            r->bad_row = i;
            return -2;
        }
        uint64_t key = 0;
        for (int j = 0; j < 8; j++)
            key = (key << 8) | digest[j];
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
"record-hash order, in pieces of piece_rows rows. Each tuple: the record hash (uuid: the first\n"
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
    hmac_init(&r.pseudonym, key.buf, (size_t)key.len);
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

PyDoc_STRVAR(sha256_doc, "sha256(data, portable=False) -> bytes\n\n"
"The SHA-256 digest binary_copy uses, or the portable C one (for tests).");

static PyObject *sha256_py(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer data;
    int portable = 0;
    unsigned char digest[32];
    if (!PyArg_ParseTuple(args, "y*|p:sha256", &data, &portable))
        return NULL;
    sha256_with(portable ? sha256_block_portable : sha256_block, IV256, 0, data.buf,
                (size_t)data.len, digest);
    PyBuffer_Release(&data);
    return PyBytes_FromStringAndSize((const char *)digest, 32);
}

PyDoc_STRVAR(hmac_doc, "hmac_sha256(key, data) -> bytes\n\nThe HMAC-SHA256 binary_copy uses (for tests).");

static PyObject *hmac_py(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer key, data;
    Hmac h;
    unsigned char digest[32];
    if (!PyArg_ParseTuple(args, "y*y*:hmac_sha256", &key, &data))
        return NULL;
    hmac_init(&h, key.buf, (size_t)key.len);
    hmac(&h, data.buf, (size_t)data.len, digest);
    PyBuffer_Release(&key);
    PyBuffer_Release(&data);
    return PyBytes_FromStringAndSize((const char *)digest, 32);
}

static PyMethodDef methods[] = {
    {"binary_copy", binary_copy, METH_VARARGS, binary_copy_doc},
    {"sha256", sha256_py, METH_VARARGS, sha256_doc},
    {"hmac_sha256", hmac_py, METH_VARARGS, hmac_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "contribflow._copyrows",
    "The binary COPY of plain rows in record-hash order, built without the GIL.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__copyrows(void)
{
    const char *variant = "portable";
#ifdef HAVE_SHA_NI
    if (cpu_has_sha_ni()) {
        sha256_block = sha256_block_ni;
        variant = "x86 SHA extensions";
    }
#endif
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddStringConstant(m, "SHA256", variant) < 0)
        Py_CLEAR(m);
    return m;
}
