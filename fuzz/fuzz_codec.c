/* libFuzzer target: transfer encodings and RFC 2047 encoded words
 * (csrc/smtp_codec.c).
 *
 * Input layout: 8 header bytes, then the data.
 *   byte 0      base64 line length: 76, 0 (no breaks) or 1 + byte % 100
 *   byte 1      first_col for smtp_encode_words (byte % 40)
 *   byte 2      output-buffer limit for the streaming passes (0: none)
 *   bytes 3-6   chunk sizes for the streaming passes, used in turn
 *               (0 is an empty update)
 *   byte 7      unused (kept for layout stability)
 *
 * Invariants checked, every input:
 *  - base64 and QP encoders: streaming over the chunks (with a small
 *    output limit: SMTP_E_LIMIT leaves buffer and state unchanged, the
 *    caller drains and retries) equals one-shot; decode(encode(x)) == x for
 *    base64 and == x with line ends made CRLF for QP; every output line is
 *    at most the line length (76 for QP, counting the '=' of a soft
 *    break); no bare CR or LF; only the expected alphabet; QP: no line
 *    starts with '.', none ends with a space or tab;
 *  - base64 and QP decoders on the raw data never crash; base64 decode
 *    errors leave the buffer unchanged and only SMTP_E_ARGUMENT is
 *    reported; decode(encode(decode(x))) == decode(x);
 *  - smtp_encode_words: every line, the first counted from first_col, is at
 *    most 78 columns; every encoded word is at most 75 characters; the
 *    words decode back to the text; folds are CRLF SP;
 *  - smtp_header_is_plain does not crash.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_buf.h"
#include "smtp_codec.h"
#include "smtp_error.h"

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "fuzz_codec: invariant failed at line %d: %s\n", __LINE__, \
                    #cond);                                                           \
            abort();                                                                  \
        }                                                                             \
    } while (0)

#define BIG ((size_t)1 << 24)

static int is_b64_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '+' || c == '/' || c == '=';
}

static void check_crlf_only(const char *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        if (p[i] == '\r')
            CHECK(i + 1 < n && p[i + 1] == '\n');
        if (p[i] == '\n')
            CHECK(i > 0 && p[i - 1] == '\r');
    }
}

/* Longest line (CRLF excluded). */
static size_t longest_line(const char *p, size_t n)
{
    size_t i, col = 0, max = 0;
    for (i = 0; i < n; i++) {
        if (p[i] == '\r' || p[i] == '\n') {
            col = 0;
            continue;
        }
        if (++col > max)
            max = col;
    }
    return max;
}

static void buf_eq(const smtp_buf *a, const smtp_buf *b)
{
    CHECK(smtp_buf_len(a) == smtp_buf_len(b));
    CHECK(memcmp(smtp_buf_ptr(a), smtp_buf_ptr(b), smtp_buf_len(a)) == 0);
}

typedef struct chunker {
    const uint8_t *sizes;
    size_t k;
    int zeros;
} chunker;

/* The next chunk size; SIZE_MAX (the rest) after four empty ones in a
 * row, so the streaming loops always end. */
static size_t next_chunk(chunker *c)
{
    size_t n = c->sizes[c->k++ % 4];
    if (n > 0) {
        c->zeros = 0;
        return n;
    }
    return ++c->zeros > 4 ? (size_t)-1 : 0;
}

/* Moves everything from tmp to acc. */
static void drain(smtp_buf *tmp, smtp_buf *acc)
{
    CHECK(smtp_buf_append(acc, smtp_buf_ptr(tmp), smtp_buf_len(tmp)) == 0);
    smtp_buf_clear(tmp);
}

static int hexv(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* ---- base64 ------------------------------------------------------------- */

static void b64_stream(const char *in, size_t n, size_t line_len, size_t limit, chunker ch,
                       smtp_buf *acc)
{
    smtp_b64 s;
    smtp_buf tmp;
    size_t at = 0;
    smtp_b64_init(&s, line_len);
    smtp_buf_init(&tmp, limit ? limit : BIG);
    for (;;) {
        size_t len = at < n ? next_chunk(&ch) : 0;
        int rc;
        if (len > n - at)
            len = n - at;
        for (;;) {
            smtp_b64 saved = s;
            size_t before = smtp_buf_len(&tmp);
            rc = at < n ? smtp_b64_update(&s, in + at, len, &tmp) : smtp_b64_finish(&s, &tmp);
            if (rc == 0)
                break;
            CHECK(rc == SMTP_E_LIMIT);
            CHECK(smtp_buf_len(&tmp) == before);
            CHECK(memcmp(&saved, &s, sizeof s) == 0);
            if (before == 0)
                tmp.limit = BIG; /* the chunk alone is larger than the limit */
            drain(&tmp, acc);
        }
        drain(&tmp, acc);
        if (at >= n)
            break;
        at += len;
    }
    smtp_buf_free(&tmp);
}

static void test_b64(const char *in, size_t n, size_t line_len, size_t limit, chunker ch)
{
    smtp_b64 s;
    smtp_buf one, streamed, dec;
    size_t eff = line_len == 0 ? 0 : line_len < 4 ? 4 : line_len - line_len % 4, i;
    const char *p;
    size_t len;

    smtp_buf_init(&one, BIG);
    smtp_b64_init(&s, line_len);
    CHECK(smtp_b64_update(&s, in, n, &one) == 0);
    CHECK(smtp_b64_finish(&s, &one) == 0);
    p = smtp_buf_ptr(&one);
    len = smtp_buf_len(&one);

    smtp_buf_init(&streamed, BIG);
    b64_stream(in, n, line_len, limit, ch, &streamed);
    buf_eq(&one, &streamed);

    check_crlf_only(p, len);
    for (i = 0; i < len; i++)
        CHECK(is_b64_char(p[i]) || p[i] == '\r' || p[i] == '\n');
    if (eff)
        CHECK(longest_line(p, len) <= eff);
    else
        CHECK(memchr(p, '\n', len) == NULL);
    if (line_len == 76)
        CHECK(longest_line(p, len) <= 76);
    if (eff && len)
        CHECK(len >= 2 && p[len - 2] == '\r' && p[len - 1] == '\n');
    CHECK((n == 0) == (len == 0));

    smtp_buf_init(&dec, BIG);
    CHECK(smtp_b64_decode(p, len, &dec) == 0);
    CHECK(smtp_buf_len(&dec) == n && memcmp(smtp_buf_ptr(&dec), in, n) == 0);

    smtp_buf_free(&one);
    smtp_buf_free(&streamed);
    smtp_buf_free(&dec);
}

static void test_b64_decode(const char *in, size_t n)
{
    smtp_buf out, re, again;
    smtp_b64 s;
    int rc;
    smtp_buf_init(&out, BIG);
    CHECK(smtp_buf_append(&out, "xy", 2) == 0); /* decoding appends */
    rc = smtp_b64_decode(in, n, &out);
    CHECK(rc == 0 || rc == SMTP_E_ARGUMENT);
    if (rc) {
        CHECK(smtp_buf_len(&out) == 2);
    } else {
        const char *d = smtp_buf_ptr(&out) + 2;
        size_t dn = smtp_buf_len(&out) - 2;
        CHECK(dn <= n / 4 * 3 + 2);
        smtp_buf_init(&re, BIG);
        smtp_b64_init(&s, 76);
        CHECK(smtp_b64_update(&s, d, dn, &re) == 0);
        CHECK(smtp_b64_finish(&s, &re) == 0);
        smtp_buf_init(&again, BIG);
        CHECK(smtp_b64_decode(smtp_buf_ptr(&re), smtp_buf_len(&re), &again) == 0);
        CHECK(smtp_buf_len(&again) == dn && memcmp(smtp_buf_ptr(&again), d, dn) == 0);
        smtp_buf_free(&re);
        smtp_buf_free(&again);
    }
    /* A tight limit: SMTP_E_LIMIT or success, never a write past it. */
    {
        smtp_buf small;
        smtp_buf_init(&small, n / 2);
        rc = smtp_b64_decode(in, n, &small);
        CHECK(rc == 0 || rc == SMTP_E_ARGUMENT || rc == SMTP_E_LIMIT);
        CHECK(smtp_buf_len(&small) <= n / 2);
        smtp_buf_free(&small);
    }
    smtp_buf_free(&out);
}

/* ---- quoted-printable --------------------------------------------------- */

static void qp_stream(const char *in, size_t n, size_t limit, chunker ch, smtp_buf *acc)
{
    smtp_qp s;
    smtp_buf tmp;
    size_t at = 0;
    smtp_qp_init(&s);
    smtp_buf_init(&tmp, limit ? limit : BIG);
    for (;;) {
        size_t len = at < n ? next_chunk(&ch) : 0;
        int rc;
        if (len > n - at)
            len = n - at;
        for (;;) {
            smtp_qp saved = s;
            size_t before = smtp_buf_len(&tmp);
            rc = at < n ? smtp_qp_update(&s, in + at, len, &tmp) : smtp_qp_finish(&s, &tmp);
            if (rc == 0)
                break;
            CHECK(rc == SMTP_E_LIMIT);
            CHECK(smtp_buf_len(&tmp) == before);
            CHECK(memcmp(&saved, &s, sizeof s) == 0);
            if (before == 0)
                tmp.limit = BIG;
            drain(&tmp, acc);
        }
        drain(&tmp, acc);
        if (at >= n)
            break;
        at += len;
    }
    smtp_buf_free(&tmp);
}

static size_t normalise_eol(const char *in, size_t n, char *out)
{
    size_t i, o = 0;
    for (i = 0; i < n; i++) {
        if (in[i] == '\r' || in[i] == '\n') {
            if (in[i] == '\r' && i + 1 < n && in[i + 1] == '\n')
                i++;
            out[o++] = '\r';
            out[o++] = '\n';
        } else {
            out[o++] = in[i];
        }
    }
    return o;
}

static void test_qp(const char *in, size_t n, size_t limit, chunker ch)
{
    smtp_qp s;
    smtp_buf one, streamed, dec;
    const char *p;
    size_t len, i, norm_len;
    char *norm;

    smtp_buf_init(&one, BIG);
    smtp_qp_init(&s);
    CHECK(smtp_qp_update(&s, in, n, &one) == 0);
    CHECK(smtp_qp_finish(&s, &one) == 0);
    p = smtp_buf_ptr(&one);
    len = smtp_buf_len(&one);

    smtp_buf_init(&streamed, BIG);
    qp_stream(in, n, limit, ch, &streamed);
    buf_eq(&one, &streamed);

    check_crlf_only(p, len);
    CHECK(longest_line(p, len) <= 76);
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        CHECK(c == '\r' || c == '\n' || c == '\t' || (c >= 0x20 && c < 0x7f));
        if (c == '=') /* a soft break or a whole =XX escape */
            CHECK(i + 2 < len && ((p[i + 1] == '\r' && p[i + 2] == '\n') ||
                                  (hexv(p[i + 1]) >= 0 && hexv(p[i + 2]) >= 0)));
        if ((c == '\r') && i > 0)
            CHECK(p[i - 1] != ' ' && p[i - 1] != '\t');
        if (c == '.')
            CHECK(i > 0 && p[i - 1] != '\n');
    }
    if (len > 0)
        CHECK(p[len - 1] != ' ' && p[len - 1] != '\t');

    norm = malloc(2 * n + 1);
    norm_len = normalise_eol(in, n, norm);
    smtp_buf_init(&dec, BIG);
    CHECK(smtp_qp_decode(p, len, &dec) == 0);
    CHECK(smtp_buf_len(&dec) == norm_len && memcmp(smtp_buf_ptr(&dec), norm, norm_len) == 0);
    free(norm);

    smtp_buf_free(&one);
    smtp_buf_free(&streamed);
    smtp_buf_free(&dec);
}

static void test_qp_decode(const char *in, size_t n)
{
    smtp_buf out;
    int rc;
    smtp_buf_init(&out, BIG);
    rc = smtp_qp_decode(in, n, &out);
    CHECK(rc == 0);
    CHECK(smtp_buf_len(&out) <= 2 * n);
    smtp_buf_free(&out);
    {
        smtp_buf small;
        smtp_buf_init(&small, n / 3);
        rc = smtp_qp_decode(in, n, &small);
        CHECK(rc == 0 || rc == SMTP_E_LIMIT);
        if (rc)
            CHECK(smtp_buf_len(&small) == 0);
        smtp_buf_free(&small);
    }
}

/* ---- RFC 2047 ------------------------------------------------------------ */

/* Decodes one encoded word w/wn (already checked to start "=?UTF-8?"),
 * appending to out. */
static void decode_word(const char *w, size_t wn, smtp_buf *out)
{
    const char *payload;
    size_t pn, i;
    CHECK(wn >= 12 && memcmp(w, "=?UTF-8?", 8) == 0 && w[9] == '?');
    CHECK(w[wn - 2] == '?' && w[wn - 1] == '=');
    payload = w + 10;
    pn = wn - 12;
    CHECK(pn > 0);
    if (w[8] == 'B') {
        for (i = 0; i < pn; i++)
            CHECK(is_b64_char(payload[i]));
        CHECK(pn % 4 == 0);
        CHECK(smtp_b64_decode(payload, pn, out) == 0);
    } else {
        CHECK(w[8] == 'Q');
        for (i = 0; i < pn; i++) {
            char c = payload[i];
            if (c == '_') {
                CHECK(smtp_buf_append(out, " ", 1) == 0);
            } else if (c == '=') {
                char b;
                CHECK(i + 2 < pn && hexv(payload[i + 1]) >= 0 && hexv(payload[i + 2]) >= 0);
                b = (char)(hexv(payload[i + 1]) << 4 | hexv(payload[i + 2]));
                CHECK(smtp_buf_append(out, &b, 1) == 0);
                i += 2;
            } else {
                CHECK((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                      (c >= '0' && c <= '9') || strchr("!*+-/", c));
                CHECK(smtp_buf_append(out, &c, 1) == 0);
            }
        }
    }
}

static void test_words(const char *in, size_t n, size_t first_col)
{
    smtp_buf out, dec;
    const char *p;
    size_t len, pos = 0, col = first_col;
    int first = 1;

    smtp_buf_init(&out, BIG);
    CHECK(smtp_encode_words(in, n, first_col, &out) == 0);
    p = smtp_buf_ptr(&out);
    len = smtp_buf_len(&out);
    CHECK((n == 0) == (len == 0));
    check_crlf_only(p, len);
    smtp_buf_init(&dec, BIG);
    /* Lines: [word] (CRLF SP word)* ; the first may be empty (a leading
     * fold when nothing fits after first_col). */
    while (pos < len) {
        const char *eol = NULL;
        size_t i, line_end, ws;
        for (i = pos; i + 1 < len; i++)
            if (p[i] == '\r' && p[i + 1] == '\n') {
                eol = p + i;
                break;
            }
        line_end = eol ? (size_t)(eol - p) : len;
        CHECK(col + (line_end - pos) <= 78);
        if (!first) {
            CHECK(line_end > pos && p[pos] == ' ');
            pos++;
        }
        /* The line holds words separated by nothing (one per line here). */
        ws = pos;
        if (line_end > ws) {
            CHECK(line_end - ws <= 75);
            decode_word(p + ws, line_end - ws, &dec);
        } else {
            CHECK(first); /* only the first line may be empty */
        }
        first = 0;
        col = 0;
        pos = eol ? line_end + 2 : len;
        if (eol)
            CHECK(pos < len); /* never a fold at the end */
    }
    CHECK(smtp_buf_len(&dec) == n && memcmp(smtp_buf_ptr(&dec), in, n) == 0);
    smtp_buf_free(&dec);
    smtp_buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t line_len, first_col, limit, n;
    char *in;
    chunker ch;

    if (size < 8)
        return 0;
    line_len = data[0] == 0 ? 76 : data[0] == 1 ? 0 : 1 + data[0] % 100;
    first_col = data[1] % 40;
    limit = data[2] == 0 ? 0 : (size_t)data[2] * 3;
    ch.sizes = data + 3;
    ch.k = 0;
    ch.zeros = 0;
    n = size - 8;
    in = malloc(n ? n : 1);
    memcpy(in, data + 8, n); /* exact size: ASan catches overreads */

    test_b64(in, n, line_len, limit, ch);
    test_qp(in, n, limit, ch);
    test_b64_decode(in, n);
    test_qp_decode(in, n);
    test_words(in, n, first_col);
    (void)smtp_header_is_plain(in, n);

    free(in);
    return 0;
}
