/* Tests for smtp_codec: base64, quoted-printable, RFC 2047 encoded words. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "smtp_buf.h"
#include "smtp_codec.h"
#include "smtp_error.h"

#define BIG_LIMIT ((size_t)1 << 30)

/* A local PRNG so runs are reproducible and independent of rand(). */
typedef struct rng {
    uint32_t x;
} rng;

static uint32_t rng_next(rng *r)
{
    r->x ^= r->x << 13;
    r->x ^= r->x >> 17;
    r->x ^= r->x << 5;
    return r->x;
}

static size_t rng_below(rng *r, size_t n)
{
    return n ? rng_next(r) % n : 0;
}

static void fill_random(rng *r, unsigned char *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        p[i] = (unsigned char)rng_next(r);
}

/* Text-like bytes that hit every QP rule: blanks, line ends, dots, '=',
 * controls and high bytes, with plenty of plain letters between. */
static void fill_texty(rng *r, unsigned char *p, size_t n)
{
    static const char specials[] = " \t\r\n.=\x01\x7f\xc3\xa9" "F";
    size_t i;
    for (i = 0; i < n; i++) {
        uint32_t v = rng_next(r);
        if (v % 3 == 0)
            p[i] = (unsigned char)specials[(v >> 8) % (sizeof specials - 1)];
        else
            p[i] = (unsigned char)('a' + (v >> 8) % 26);
    }
}

/* ---- generic streaming encoder, so split tests serve b64 and QP alike -- */

typedef struct encoder {
    int is_qp;
    size_t line_len;
    smtp_b64 b64;
    smtp_qp qp;
} encoder;

static void enc_init(encoder *e, int is_qp, size_t line_len)
{
    e->is_qp = is_qp;
    e->line_len = line_len;
    if (is_qp)
        smtp_qp_init(&e->qp);
    else
        smtp_b64_init(&e->b64, line_len);
}

static int enc_update(encoder *e, const unsigned char *p, size_t n, smtp_buf *out)
{
    return e->is_qp ? smtp_qp_update(&e->qp, (const char *)p, n, out)
                    : smtp_b64_update(&e->b64, (const char *)p, n, out);
}

static int enc_finish(encoder *e, smtp_buf *out)
{
    return e->is_qp ? smtp_qp_finish(&e->qp, out) : smtp_b64_finish(&e->b64, out);
}

static int encode_oneshot(int is_qp, size_t line_len, const unsigned char *p, size_t n,
                          smtp_buf *out)
{
    encoder e;
    enc_init(&e, is_qp, line_len);
    return enc_update(&e, p, n, out) || enc_finish(&e, out);
}

/* Encodes p split at the given cut points (ascending). */
static int encode_cut(int is_qp, size_t line_len, const unsigned char *p, size_t n,
                      const size_t *cuts, size_t ncuts, smtp_buf *out)
{
    encoder e;
    size_t prev = 0, i;
    enc_init(&e, is_qp, line_len);
    for (i = 0; i < ncuts; i++) {
        if (enc_update(&e, p + prev, cuts[i] - prev, out))
            return 1;
        prev = cuts[i];
    }
    return enc_update(&e, p + prev, n - prev, out) || enc_finish(&e, out);
}

static int same_output(const smtp_buf *a, const smtp_buf *b)
{
    return smtp_buf_len(a) == smtp_buf_len(b) &&
           memcmp(smtp_buf_ptr(a), smtp_buf_ptr(b), smtp_buf_len(a)) == 0;
}

/* Every single cut and every pair of cuts, compared with one-shot. */
static int all_splits_match(int is_qp, size_t line_len, const unsigned char *p, size_t n)
{
    smtp_buf one, split;
    size_t i, j;
    int ok = 1;

    smtp_buf_init(&one, BIG_LIMIT);
    smtp_buf_init(&split, BIG_LIMIT);
    if (encode_oneshot(is_qp, line_len, p, n, &one))
        ok = 0;
    for (i = 0; ok && i <= n; i++) {
        for (j = i; ok && j <= n; j++) {
            size_t cuts[2];
            cuts[0] = i;
            cuts[1] = j;
            smtp_buf_clear(&split);
            if (encode_cut(is_qp, line_len, p, n, cuts, 2, &split) || !same_output(&one, &split))
                ok = 0;
        }
    }
    smtp_buf_free(&one);
    smtp_buf_free(&split);
    return ok;
}

static int random_splits_match(rng *r, int is_qp, size_t line_len, const unsigned char *p,
                               size_t n, int rounds)
{
    smtp_buf one, split;
    size_t cuts[64];
    int ok = 1, round;

    smtp_buf_init(&one, BIG_LIMIT);
    smtp_buf_init(&split, BIG_LIMIT);
    if (encode_oneshot(is_qp, line_len, p, n, &one))
        ok = 0;
    for (round = 0; ok && round < rounds; round++) {
        size_t ncuts = 1 + rng_below(r, 64), i, prev = 0;
        for (i = 0; i < ncuts; i++) {
            /* Mostly tiny pieces near the previous cut, some long jumps. */
            size_t step = rng_below(r, 4) == 0 ? rng_below(r, n + 1) : rng_below(r, 5);
            prev = prev + step > n ? n : prev + step;
            cuts[i] = prev;
        }
        smtp_buf_clear(&split);
        if (encode_cut(is_qp, line_len, p, n, cuts, ncuts, &split) || !same_output(&one, &split))
            ok = 0;
    }
    smtp_buf_free(&one);
    smtp_buf_free(&split);
    return ok;
}

/* Every line at most max chars and ended by CRLF (the last line too when
 * must_end_crlf), with no CR or LF anywhere else. */
static int lines_ok(const char *p, size_t n, size_t max, int must_end_crlf)
{
    size_t i, col = 0;
    for (i = 0; i < n; i++) {
        if (p[i] == '\r') {
            if (i + 1 >= n || p[i + 1] != '\n')
                return 0;
            i++;
            col = 0;
        } else if (p[i] == '\n') {
            return 0;
        } else if (++col > max) {
            return 0;
        }
    }
    return !must_end_crlf || col == 0;
}

/* ---- base64 -------------------------------------------------------------- */

static void test_b64_vectors(void)
{
    static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const coded[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=",
                                        "Zm9vYmFy"};
    size_t i;

    for (i = 0; i < sizeof plain / sizeof plain[0]; i++) {
        smtp_buf out, lined, dec;
        char want[32], name[80];
        smtp_buf_init(&out, BIG_LIMIT);
        smtp_buf_init(&lined, BIG_LIMIT);
        smtp_buf_init(&dec, BIG_LIMIT);

        snprintf(name, sizeof name, "b64 RFC 4648 \"%s\" without line breaks", plain[i]);
        CHECK(encode_oneshot(0, 0, (const unsigned char *)plain[i], strlen(plain[i]), &out) == 0 &&
                  smtp_buf_len(&out) == strlen(coded[i]) &&
                  memcmp(smtp_buf_ptr(&out), coded[i], strlen(coded[i])) == 0,
              name);

        snprintf(want, sizeof want, "%s%s", coded[i], *coded[i] ? "\r\n" : "");
        snprintf(name, sizeof name, "b64 RFC 4648 \"%s\" with 76-char lines", plain[i]);
        CHECK(encode_oneshot(0, 76, (const unsigned char *)plain[i], strlen(plain[i]), &lined) == 0 &&
                  smtp_buf_len(&lined) == strlen(want) &&
                  memcmp(smtp_buf_ptr(&lined), want, strlen(want)) == 0,
              name);

        snprintf(name, sizeof name, "b64 RFC 4648 decode \"%s\"", coded[i]);
        CHECK(smtp_b64_decode(coded[i], strlen(coded[i]), &dec) == 0 &&
                  smtp_buf_len(&dec) == strlen(plain[i]) &&
                  memcmp(smtp_buf_ptr(&dec), plain[i], strlen(plain[i])) == 0,
              name);
        smtp_buf_free(&out);
        smtp_buf_free(&lined);
        smtp_buf_free(&dec);
    }
}

static int b64_decodes_to(const char *in, const char *want, size_t want_len)
{
    smtp_buf out;
    int ok;
    smtp_buf_init(&out, BIG_LIMIT);
    ok = smtp_b64_decode(in, strlen(in), &out) == 0 && smtp_buf_len(&out) == want_len &&
         memcmp(smtp_buf_ptr(&out), want, want_len) == 0;
    smtp_buf_free(&out);
    return ok;
}

static int b64_rejects(const char *in)
{
    smtp_buf out;
    int ok;
    smtp_buf_init(&out, BIG_LIMIT);
    smtp_buf_append_str(&out, "keep");
    ok = smtp_b64_decode(in, strlen(in), &out) == SMTP_E_ARGUMENT && smtp_buf_len(&out) == 4 &&
         memcmp(smtp_buf_ptr(&out), "keep", 4) == 0;
    smtp_buf_free(&out);
    return ok;
}

static void test_b64_decode_edges(void)
{
    CHECK(b64_decodes_to(" Zm9v\r\nYmFy\t\n", "foobar", 6), "b64 decode skips whitespace");
    CHECK(b64_decodes_to("Zm9vYg= =\r\n", "foob", 4), "b64 decode allows whitespace inside padding");
    CHECK(b64_decodes_to("Zg", "f", 1), "b64 decode accepts missing padding (2 chars)");
    CHECK(b64_decodes_to("Zm8", "fo", 2), "b64 decode accepts missing padding (3 chars)");
    CHECK(b64_decodes_to("//+/", "\xff\xff\xbf", 3), "b64 decode '+' and '/'");
    CHECK(b64_rejects("Zm9v*YmFy"), "b64 decode rejects '*' and leaves out untouched");
    CHECK(b64_rejects("Zm9v-_"), "b64 decode rejects the URL-safe alphabet");
    CHECK(b64_rejects("Zm9v\vYmFy"), "b64 decode rejects vertical tab (not whitespace here)");
    CHECK(b64_rejects("Z"), "b64 decode rejects a lone sextet");
    CHECK(b64_rejects("Zg==Zg=="), "b64 decode rejects data after padding");
    CHECK(b64_rejects("Z==="), "b64 decode rejects padding after one char");
    CHECK(b64_rejects("Zg==="), "b64 decode rejects three pads");
    CHECK(b64_rejects("===="), "b64 decode rejects padding only");
    CHECK(b64_rejects("Zm9v\x80"), "b64 decode rejects high bytes");
}

static void test_b64_line_lengths(void)
{
    unsigned char data[300];
    smtp_buf out;
    rng r = {0x1234567u};
    size_t n;
    int ok72 = 1, ok4 = 1;

    fill_random(&r, data, sizeof data);
    smtp_buf_init(&out, BIG_LIMIT);
    for (n = 0; n <= sizeof data; n++) {
        smtp_buf_clear(&out);
        /* 75 is not a multiple of 4: the encoder uses 72. */
        if (encode_oneshot(0, 75, data, n, &out) ||
            !lines_ok(smtp_buf_ptr(&out), smtp_buf_len(&out), 72, 1) ||
            (n >= 54 && memcmp(smtp_buf_ptr(&out) + 72, "\r\n", 2) != 0))
            ok72 = 0;
        smtp_buf_clear(&out);
        if (encode_oneshot(0, 2, data, n, &out) ||
            !lines_ok(smtp_buf_ptr(&out), smtp_buf_len(&out), 4, 1) ||
            smtp_buf_len(&out) != (n + 2) / 3 * 6)
            ok4 = 0;
    }
    CHECK(ok72, "b64 line_len 75 rounds down to 72-char lines");
    CHECK(ok4, "b64 line_len 2 becomes 4-char lines");

    smtp_buf_clear(&out);
    CHECK(encode_oneshot(0, 0, data, 300, &out) == 0 && smtp_buf_len(&out) == 400 &&
              memchr(smtp_buf_ptr(&out), '\r', 400) == NULL,
          "b64 line_len 0 never breaks");

    smtp_buf_clear(&out);
    CHECK(encode_oneshot(0, 76, data, 57, &out) == 0 && smtp_buf_len(&out) == 78,
          "b64 exactly one full line gets one CRLF, not two");
    smtp_buf_free(&out);
}

static int b64_round_trip(const unsigned char *p, size_t n, size_t line_len)
{
    smtp_buf enc, dec;
    int ok;
    smtp_buf_init(&enc, BIG_LIMIT);
    smtp_buf_init(&dec, BIG_LIMIT);
    ok = encode_oneshot(0, line_len, p, n, &enc) == 0 &&
         (line_len == 0 || lines_ok(smtp_buf_ptr(&enc), smtp_buf_len(&enc), line_len, 1)) &&
         smtp_b64_decode(smtp_buf_ptr(&enc), smtp_buf_len(&enc), &dec) == 0 &&
         smtp_buf_len(&dec) == n && (n == 0 || memcmp(smtp_buf_ptr(&dec), p, n) == 0);
    smtp_buf_free(&enc);
    smtp_buf_free(&dec);
    return ok;
}

static void test_b64_random(void)
{
    static const size_t big[] = {1000, 4095, 4096, 4097, 65537, 300000};
    static const size_t line_lens[] = {76, 0, 4, 64};
    unsigned char *data = malloc(300000);
    rng r = {0xC0FFEEu};
    size_t n, i, l;
    int ok_split = 1, ok_trip = 1;
    char name[100];

    for (l = 0; l < sizeof line_lens / sizeof line_lens[0]; l++) {
        ok_split = ok_trip = 1;
        for (n = 0; n <= 70; n++) {
            fill_random(&r, data, n);
            if (!all_splits_match(0, line_lens[l], data, n))
                ok_split = 0;
            if (!b64_round_trip(data, n, line_lens[l]))
                ok_trip = 0;
        }
        snprintf(name, sizeof name, "b64 line_len %zu: every 1- and 2-cut split of 0..70 bytes equals one-shot",
                 line_lens[l]);
        CHECK(ok_split, name);
        snprintf(name, sizeof name, "b64 line_len %zu: lines and decode round trip, 0..70 bytes",
                 line_lens[l]);
        CHECK(ok_trip, name);
    }
    for (i = 0; i < sizeof big / sizeof big[0]; i++) {
        fill_random(&r, data, big[i]);
        snprintf(name, sizeof name, "b64 %zu bytes: random splits equal one-shot", big[i]);
        CHECK(random_splits_match(&r, 0, 76, data, big[i], 20), name);
        snprintf(name, sizeof name, "b64 %zu bytes: 76-char CRLF lines, round trip", big[i]);
        CHECK(b64_round_trip(data, big[i], 76), name);
    }
    free(data);
}

static void test_b64_limits(void)
{
    unsigned char data[100];
    smtp_buf out, want;
    smtp_b64 s;
    rng r = {42};

    fill_random(&r, data, sizeof data);
    smtp_buf_init(&want, BIG_LIMIT);
    encode_oneshot(0, 76, data, sizeof data, &want);

    smtp_buf_init(&out, 50);
    smtp_b64_init(&s, 76);
    CHECK(smtp_b64_update(&s, (const char *)data, 1, &out) == 0 && smtp_buf_len(&out) == 0,
          "b64 carries a short input without output");
    CHECK(smtp_b64_update(&s, (const char *)data + 1, 99, &out) == SMTP_E_LIMIT &&
              smtp_buf_len(&out) == 0,
          "b64 over the buffer limit gives SMTP_E_LIMIT and writes nothing");
    out.limit = BIG_LIMIT;
    CHECK(smtp_b64_update(&s, (const char *)data + 1, 99, &out) == 0 && smtp_b64_finish(&s, &out) == 0 &&
              same_output(&out, &want),
          "b64 retry after SMTP_E_LIMIT gives the same output as one-shot");
    smtp_buf_free(&out);
    smtp_buf_free(&want);
}

/* ---- quoted-printable ---------------------------------------------------- */

static int qp_encodes(const char *in, size_t n, const char *want)
{
    smtp_buf out;
    int ok;
    smtp_buf_init(&out, BIG_LIMIT);
    ok = encode_oneshot(1, 0, (const unsigned char *)in, n, &out) == 0 &&
         smtp_buf_len(&out) == strlen(want) &&
         memcmp(smtp_buf_ptr(&out), want, strlen(want)) == 0;
    if (!ok)
        printf("# got: %.*s\n", (int)smtp_buf_len(&out), smtp_buf_ptr(&out));
    smtp_buf_free(&out);
    return ok;
}

#define QP_ENC(in, want, name) CHECK(qp_encodes((in), sizeof(in) - 1, (want)), (name))

static int is_hex_upper(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F');
}

/* Everything a conforming QP body must satisfy, line by line. */
static int qp_output_ok(const char *p, size_t n)
{
    size_t start = 0, i;

    if (!lines_ok(p, n, 76, 0))
        return 0;
    while (start < n) {
        const char *nl = memchr(p + start, '\r', n - start);
        size_t end = nl ? (size_t)(nl - p) : n;
        size_t len = end - start;
        const char *line = p + start;
        int soft = len > 0 && line[len - 1] == '=';
        size_t content = soft ? len - 1 : len;

        if (len > 0 && line[0] == '.')
            return 0;
        if (content > 0 && (line[content - 1] == ' ' || line[content - 1] == '\t') && !soft)
            return 0;
        for (i = 0; i < content; i++) {
            unsigned char c = (unsigned char)line[i];
            if (c == '=') {
                if (i + 2 >= content)
                    return 0; /* an escape cut by the line end */
                if (!is_hex_upper(line[i + 1]) || !is_hex_upper(line[i + 2]))
                    return 0;
                i += 2;
            } else if (!(c == ' ' || c == '\t' || (c >= 0x21 && c <= 0x7e))) {
                return 0;
            }
        }
        start = nl ? end + 2 : n;
    }
    return 1;
}

/* The reference for a QP round trip: every CRLF, LF or CR becomes CRLF. */
static size_t normalise_line_ends(const unsigned char *in, size_t n, unsigned char *out)
{
    size_t i, o = 0;
    for (i = 0; i < n; i++) {
        if (in[i] == '\r' || in[i] == '\n') {
            out[o++] = '\r';
            out[o++] = '\n';
            if (in[i] == '\r' && i + 1 < n && in[i + 1] == '\n')
                i++;
        } else {
            out[o++] = in[i];
        }
    }
    return o;
}

static int qp_round_trip(const unsigned char *p, size_t n)
{
    smtp_buf enc, dec;
    unsigned char *want = malloc(2 * n + 1);
    size_t want_len = normalise_line_ends(p, n, want);
    int ok;

    smtp_buf_init(&enc, BIG_LIMIT);
    smtp_buf_init(&dec, BIG_LIMIT);
    ok = encode_oneshot(1, 0, p, n, &enc) == 0 &&
         qp_output_ok(smtp_buf_ptr(&enc), smtp_buf_len(&enc)) &&
         smtp_qp_decode(smtp_buf_ptr(&enc), smtp_buf_len(&enc), &dec) == 0 &&
         smtp_buf_len(&dec) == want_len && memcmp(smtp_buf_ptr(&dec), want, want_len) == 0;
    smtp_buf_free(&enc);
    smtp_buf_free(&dec);
    free(want);
    return ok;
}

static void test_qp_cases(void)
{
    char x75[80], want[200];

    QP_ENC("hello world", "hello world", "qp plain text is unchanged");
    QP_ENC("", "", "qp empty input gives nothing");
    QP_ENC("a=b", "a=3Db", "qp '=' is escaped");
    QP_ENC("caf\xc3\xa9 \x7f\x01", "caf=C3=A9 =7F=01", "qp high bytes, DEL and controls are escaped");
    QP_ENC("a\tb  c", "a\tb  c", "qp inner tab and spaces stay literal");
    QP_ENC("trailing ", "trailing=20", "qp space at the end of input is escaped");
    QP_ENC("trailing\t", "trailing=09", "qp tab at the end of input is escaped");
    QP_ENC("a \r\nb", "a=20\r\nb", "qp space before CRLF is escaped");
    QP_ENC("a\t\nb", "a=09\r\nb", "qp tab before LF is escaped");
    QP_ENC("a  \rb", "a =20\r\nb", "qp only the last of several blanks is escaped");
    QP_ENC("a\r\nb\nc\rd", "a\r\nb\r\nc\r\nd", "qp CRLF, LF and CR each become one CRLF");
    QP_ENC("\r\r\n\n", "\r\n\r\n\r\n", "qp CR CRLF LF is three line breaks");
    QP_ENC("x\r\n", "x\r\n", "qp a final line break is kept, no extra one added");
    QP_ENC(".\r\n..x\n.", "=2E\r\n=2E.x\r\n=2E", "qp a dot that starts a line is escaped");
    QP_ENC("a.b", "a.b", "qp a dot inside a line stays literal");
    QP_ENC("From here", "From here", "qp 'From ' is left alone");

    memset(x75, 'x', 75);
    memcpy(x75 + 75, ".ab", 4);
    snprintf(want, sizeof want, "%.75s=\r\n=2Eab", x75);
    CHECK(qp_encodes(x75, 78, want), "qp a dot pushed to a new line by a soft break is escaped");

    memset(x75, 'x', 77);
    x75[77] = 0;
    snprintf(want, sizeof want, "%.75s", x75);
    CHECK(qp_encodes(x75, 75, want), "qp 75 characters fit on one line");
    snprintf(want, sizeof want, "%.75s=\r\nxx", x75);
    CHECK(qp_encodes(x75, 77, want), "qp soft break after 75 characters, '=' makes 76");

    memset(x75, 'x', 74);
    memcpy(x75 + 74, "=", 2);
    snprintf(want, sizeof want, "%.74s=\r\n=3D", x75);
    CHECK(qp_encodes(x75, 75, want), "qp an escape that does not fit moves whole to the next line");

    memset(x75, 'x', 75);
    memcpy(x75 + 75, " ", 2);
    snprintf(want, sizeof want, "%.75s=\r\n=20", x75);
    CHECK(qp_encodes(x75, 76, want), "qp an escaped trailing space that does not fit moves whole");
}

static void test_qp_long_lines(void)
{
    unsigned char line[1000];
    size_t n;
    int ok = 1;

    for (n = 0; n < sizeof line; n++)
        line[n] = (unsigned char)(n % 7 == 3 ? '=' : n % 11 == 0 ? ' ' : 'a' + n % 26);
    for (n = 0; n <= sizeof line; n += 37)
        if (!qp_round_trip(line, n))
            ok = 0;
    CHECK(ok, "qp long lines with escapes soft-break at <= 76 and decode back");
}

static void test_qp_random(void)
{
    static const size_t big[] = {500, 4096, 65537};
    unsigned char *data = malloc(65537);
    rng r = {0xBADF00Du};
    size_t n, i;
    int ok_split = 1, ok_trip = 1;
    char name[100];

    for (n = 0; n <= 60; n++) {
        int rep;
        for (rep = 0; rep < 4; rep++) {
            fill_texty(&r, data, n);
            if (!all_splits_match(1, 0, data, n))
                ok_split = 0;
            if (!qp_round_trip(data, n))
                ok_trip = 0;
        }
    }
    CHECK(ok_split, "qp every 1- and 2-cut split of 0..60 bytes equals one-shot");
    CHECK(ok_trip, "qp output conforms and decodes to the input with CRLF line ends (short)");

    for (i = 0; i < sizeof big / sizeof big[0]; i++) {
        fill_texty(&r, data, big[i]);
        snprintf(name, sizeof name, "qp %zu text bytes: random splits equal one-shot", big[i]);
        CHECK(random_splits_match(&r, 1, 0, data, big[i], 20), name);
        snprintf(name, sizeof name, "qp %zu text bytes: conforming output, round trip", big[i]);
        CHECK(qp_round_trip(data, big[i]), name);
        fill_random(&r, data, big[i]);
        snprintf(name, sizeof name, "qp %zu binary bytes: random splits equal one-shot", big[i]);
        CHECK(random_splits_match(&r, 1, 0, data, big[i], 10), name);
        snprintf(name, sizeof name, "qp %zu binary bytes: conforming output, round trip", big[i]);
        CHECK(qp_round_trip(data, big[i]), name);
    }
    free(data);
}

static int qp_decodes_to(const char *in, size_t n, const char *want, size_t want_len)
{
    smtp_buf out;
    int ok;
    smtp_buf_init(&out, BIG_LIMIT);
    ok = smtp_qp_decode(in, n, &out) == 0 && smtp_buf_len(&out) == want_len &&
         memcmp(smtp_buf_ptr(&out), want, want_len) == 0;
    if (!ok)
        printf("# got: %.*s\n", (int)smtp_buf_len(&out), smtp_buf_ptr(&out));
    smtp_buf_free(&out);
    return ok;
}

#define QP_DEC(in, want, name) \
    CHECK(qp_decodes_to((in), sizeof(in) - 1, (want), sizeof(want) - 1), (name))

static void test_qp_decode(void)
{
    QP_DEC("=41=4a=4A=3d", "AJJ=", "qp decode upper and lower hex");
    QP_DEC("ab=\r\ncd", "abcd", "qp decode removes =CRLF");
    QP_DEC("ab=\ncd", "abcd", "qp decode removes =LF");
    QP_DEC("ab= \t\r\ncd", "abcd", "qp decode: blanks after a soft-break '=' came from transport");
    QP_DEC("ab=", "ab", "qp decode: '=' at the end means no final line break");
    QP_DEC("a\nb\r\nc\rd", "a\r\nb\r\nc\r\nd", "qp decode keeps hard line ends as CRLF");
    QP_DEC("ab  \r\ncd \t", "ab\r\ncd", "qp decode deletes trailing blanks (RFC 2045 rule 3)");
    QP_DEC("a b=20\r\n", "a b \r\n", "qp decode keeps inner and escaped blanks");
    QP_DEC("=G1 =4", "=G1 =4", "qp decode keeps invalid escapes literally");
    QP_DEC("=\xff=", "=\xff", "qp decode is lenient with raw high bytes");
    QP_DEC("", "", "qp decode of nothing is nothing");
}

static void test_qp_limits(void)
{
    smtp_buf out;
    smtp_qp s;
    smtp_buf_init(&out, 4);
    smtp_qp_init(&s);
    CHECK(smtp_qp_update(&s, "ab ", 3, &out) == 0 && smtp_buf_len(&out) == 2,
          "qp holds a space that might be trailing");
    CHECK(smtp_qp_update(&s, "\xff\xff", 2, &out) == SMTP_E_LIMIT && smtp_buf_len(&out) == 2 &&
              s.has_held,
          "qp over the limit: SMTP_E_LIMIT, nothing written, state kept");
    CHECK(smtp_qp_finish(&s, &out) == SMTP_E_LIMIT && smtp_buf_len(&out) == 2,
          "qp finish over the limit: SMTP_E_LIMIT, nothing written");
    out.limit = 100;
    CHECK(smtp_qp_finish(&s, &out) == 0 && smtp_buf_len(&out) == 5 &&
              memcmp(smtp_buf_ptr(&out), "ab=20", 5) == 0,
          "qp finish after a failed one completes correctly");
    smtp_buf_free(&out);
}

/* ---- RFC 2047 encoded words -------------------------------------------- */

/* Independent strict UTF-8 check (Unicode table 3-7). */
static int utf8_valid(const unsigned char *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = p[i];
        size_t need, k;
        unsigned char lo = 0x80, hi = 0xbf;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf)
            need = 1;
        else if (c >= 0xe0 && c <= 0xef)
            need = 2;
        else if (c >= 0xf0 && c <= 0xf4)
            need = 3;
        else
            return 0;
        if (c == 0xe0) lo = 0xa0;
        if (c == 0xed) hi = 0x9f;
        if (c == 0xf0) lo = 0x90;
        if (c == 0xf4) hi = 0x8f;
        if (i + need >= n)
            return 0;
        if (p[i + 1] < lo || p[i + 1] > hi)
            return 0;
        for (k = 2; k <= need; k++)
            if (p[i + k] < 0x80 || p[i + k] > 0xbf)
                return 0;
        i += need + 1;
    }
    return 1;
}

static int q_safe(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           strchr("!*+-/", c) != NULL;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Decodes a Q payload strictly: only safe characters, '_' and =XX. */
static int q_decode(const char *p, size_t n, smtp_buf *out)
{
    size_t i;
    for (i = 0; i < n; i++) {
        char c = p[i];
        if (c == '_') {
            c = ' ';
        } else if (c == '=') {
            if (i + 2 >= n)
                return -1;
            if (hexval(p[i + 1]) < 0 || hexval(p[i + 2]) < 0)
                return -1;
            c = (char)(hexval(p[i + 1]) << 4 | hexval(p[i + 2]));
            i += 2;
        } else if (!q_safe((unsigned char)c)) {
            return -1;
        }
        smtp_buf_append(out, &c, 1);
    }
    return 0;
}

typedef struct words_report {
    int ok;          /* structure, sizes and decoding all fine */
    int each_utf8;   /* every word decodes to valid UTF-8 on its own */
    char scheme;     /* 'B' or 'Q' (all words must agree) */
    size_t words;
} words_report;

/* Parses the output of smtp_encode_words and checks every property the
 * header promises; the decoded words, concatenated, must give the text. */
static words_report inspect_words(const char *text, size_t len, size_t first_col)
{
    words_report rep = {1, 1, 0, 0};
    smtp_buf out, all;
    const char *p, *end;
    size_t col = first_col;

    smtp_buf_init(&out, BIG_LIMIT);
    smtp_buf_init(&all, BIG_LIMIT);
    if (smtp_encode_words(text, len, first_col, &out) != 0) {
        rep.ok = 0;
        goto done;
    }
    p = smtp_buf_ptr(&out);
    end = p + smtp_buf_len(&out);
    while (p < end) {
        const char *q, *close;
        smtp_buf one;
        size_t wlen;
        int rc;

        if (end - p >= 3 && memcmp(p, "\r\n ", 3) == 0) {
            p += 3;
            col = 1;
            continue;
        }
        if (end - p < 12 || memcmp(p, "=?UTF-8?", 8) != 0 || (p[8] != 'B' && p[8] != 'Q') ||
            p[9] != '?') {
            rep.ok = 0;
            break;
        }
        if (rep.scheme && rep.scheme != p[8])
            rep.ok = 0;
        rep.scheme = p[8];
        for (close = NULL, q = p + 10; q + 1 < end; q++)
            if (q[0] == '?' && q[1] == '=') {
                close = q;
                break;
            }
        if (!close) {
            rep.ok = 0;
            break;
        }
        wlen = (size_t)(close + 2 - p);
        col += wlen;
        if (wlen > 75 || col > 78)
            rep.ok = 0;
        smtp_buf_init(&one, BIG_LIMIT);
        rc = rep.scheme == 'B' ? smtp_b64_decode(p + 10, (size_t)(close - p - 10), &one)
                               : q_decode(p + 10, (size_t)(close - p - 10), &one);
        if (rc != 0 || smtp_buf_len(&one) == 0)
            rep.ok = 0;
        if (!utf8_valid((const unsigned char *)smtp_buf_ptr(&one), smtp_buf_len(&one)))
            rep.each_utf8 = 0;
        smtp_buf_append(&all, smtp_buf_ptr(&one), smtp_buf_len(&one));
        smtp_buf_free(&one);
        rep.words++;
        p = close + 2;
        if (p < end && (end - p < 3 || memcmp(p, "\r\n ", 3) != 0))
            rep.ok = 0; /* words must be separated by a fold */
    }
    if (smtp_buf_len(&all) != len || (len && memcmp(smtp_buf_ptr(&all), text, len) != 0))
        rep.ok = 0;
done:
    smtp_buf_free(&out);
    smtp_buf_free(&all);
    return rep;
}

static int words_equal(const char *text, size_t first_col, const char *want)
{
    smtp_buf out;
    int ok;
    smtp_buf_init(&out, BIG_LIMIT);
    ok = smtp_encode_words(text, strlen(text), first_col, &out) == 0 &&
         smtp_buf_len(&out) == strlen(want) && memcmp(smtp_buf_ptr(&out), want, strlen(want)) == 0;
    if (!ok)
        printf("# got: %.*s\n", (int)smtp_buf_len(&out), smtp_buf_ptr(&out));
    smtp_buf_free(&out);
    return ok;
}

static void test_words_exact(void)
{
    CHECK(words_equal("", 9, ""), "words: empty text gives nothing");
    CHECK(words_equal("Hello", 9, "=?UTF-8?Q?Hello?="), "words: short ASCII in Q");
    CHECK(words_equal("Caf\xc3\xa9 au lait", 9, "=?UTF-8?Q?Caf=C3=A9_au_lait?="),
          "words: one accent in mostly ASCII chooses Q");
    CHECK(words_equal("a=b?c_d.e", 0, "=?UTF-8?B?YT1iP2NfZC5l?="),
          "words: B when escapes would make Q longer (29 vs 24)");
    CHECK(words_equal("\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e", 9, "=?UTF-8?B?5pel5pys6Kqe?="),
          "words: CJK chooses B");
    CHECK(words_equal("hello=world?yes_no.end", 0, "=?UTF-8?Q?hello=3Dworld=3Fyes=5Fno=2Eend?="),
          "words: Q escapes '=', '?', '_' and anything outside the phrase-safe set");
    CHECK(words_equal("A!*+-/z", 0, "=?UTF-8?Q?A!*+-/z?="), "words: Q keeps !*+-/ literal");
}

static void test_words_properties(void)
{
    static const char ascii[] =
        "The quick brown fox jumps over the lazy dog while the five boxing wizards jump "
        "quickly and a grumpy wizard makes a toxic brew for the evil queen and jack";
    static const char japanese[] =
        "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xae\xe3\x83\x86\xe3\x82\xad\xe3\x82\xb9"
        "\xe3\x83\x88\xe3\x81\xa7\xe3\x81\x99\xe3\x80\x82\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e"
        "\xe3\x81\xae\xe3\x83\x86\xe3\x82\xad\xe3\x82\xb9\xe3\x83\x88\xe3\x81\xa7\xe3\x81\x99"
        "\xe3\x80\x82\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xae\xe3\x83\x86\xe3\x82\xad";
    static const char emoji[] =
        "\xf0\x9f\x98\x80\xf0\x9f\x8e\x89\xf0\x9f\x9a\x80\xf0\x9f\x8d\x95\xf0\x9f\x98\x80"
        "\xf0\x9f\x8e\x89\xf0\x9f\x9a\x80\xf0\x9f\x8d\x95\xf0\x9f\x98\x80\xf0\x9f\x8e\x89"
        "\xf0\x9f\x9a\x80\xf0\x9f\x8d\x95\xf0\x9f\x98\x80\xf0\x9f\x8e\x89\xf0\x9f\x9a\x80"
        "\xf0\x9f\x8d\x95 ok";
    static const char invalid[] = "bad \xff\xfe \xc3 \xe6\x97 \xed\xa0\x80 end \xc3\xa9";
    static const size_t cols[] = {0, 9, 40, 63, 64, 66, 70, 78, 100};
    words_report rep;
    size_t c;
    int ok = 1;
    char name[120];

    rep = inspect_words(ascii, sizeof ascii - 1, 9);
    CHECK(rep.ok && rep.scheme == 'Q' && rep.words > 2, "words: long ASCII folds into Q words <= 75, lines <= 78");
    rep = inspect_words(japanese, sizeof japanese - 1, 9);
    CHECK(rep.ok && rep.each_utf8 && rep.scheme == 'B' && rep.words > 1,
          "words: Japanese uses B, no word splits a character");
    rep = inspect_words(emoji, sizeof emoji - 1, 9);
    CHECK(rep.ok && rep.each_utf8 && rep.scheme == 'B' && rep.words > 1,
          "words: emoji (4-byte) never split between words");
    rep = inspect_words(invalid, sizeof invalid - 1, 9);
    CHECK(rep.ok, "words: invalid UTF-8 is carried byte by byte");

    for (c = 0; c < sizeof cols / sizeof cols[0]; c++) {
        words_report a = inspect_words(ascii, sizeof ascii - 1, cols[c]);
        words_report j = inspect_words(japanese, sizeof japanese - 1, cols[c]);
        words_report e = inspect_words(emoji, sizeof emoji - 1, cols[c]);
        snprintf(name, sizeof name, "words: first_col %zu keeps every line within 78", cols[c]);
        CHECK(a.ok && j.ok && j.each_utf8 && e.ok && e.each_utf8, name);
    }

    {
        /* Random mixes of 1- to 4-byte characters, many first columns. */
        static const char *const pieces[] = {"a", " ", "Z", "?", "_", "=", "\xc3\xa9", "\xd0\x96",
                                             "\xe6\x97\xa5", "\xe2\x82\xac", "\xf0\x9f\x98\x80"};
        rng r = {777};
        char text[400];
        int round;
        for (round = 0; round < 500; round++) {
            size_t len = 0, target = rng_below(&r, 300);
            while (len < target) {
                const char *piece = pieces[rng_below(&r, sizeof pieces / sizeof pieces[0])];
                memcpy(text + len, piece, strlen(piece));
                len += strlen(piece);
            }
            rep = inspect_words(text, len, rng_below(&r, 90));
            if (!rep.ok || !rep.each_utf8)
                ok = 0;
        }
        CHECK(ok, "words: 500 random UTF-8 texts keep every property");
    }
}

static void test_words_first_col_fold(void)
{
    smtp_buf out;
    smtp_buf_init(&out, BIG_LIMIT);
    CHECK(smtp_encode_words("Hi", 2, 70, &out) == 0 && smtp_buf_len(&out) == 3 + 14 &&
              memcmp(smtp_buf_ptr(&out), "\r\n =?UTF-8?Q?Hi?=", 17) == 0,
          "words: no room on the first line starts the value on a folded line");
    smtp_buf_clear(&out);
    CHECK(smtp_encode_words("Hi", 2, 64, &out) == 0 && smtp_buf_len(&out) == 14,
          "words: a word that fits exactly stays on the first line");
    smtp_buf_free(&out);
}

static void test_words_limit(void)
{
    smtp_buf out;
    smtp_buf_init(&out, 10);
    CHECK(smtp_encode_words("Hello", 5, 0, &out) == SMTP_E_LIMIT && smtp_buf_len(&out) == 0,
          "words: SMTP_E_LIMIT, nothing written");
    smtp_buf_free(&out);
}

/* ---- smtp_header_is_plain ------------------------------------------------ */

static void test_is_plain(void)
{
    CHECK(smtp_header_is_plain("", 0), "plain: empty");
    CHECK(smtp_header_is_plain("Hello, world!", 13), "plain: printable ASCII");
    CHECK(smtp_header_is_plain("a\tb ~", 5), "plain: tab, space and '~'");
    CHECK(smtp_header_is_plain("x = y?", 6), "plain: '=' and '?' apart");
    CHECK(smtp_header_is_plain("?= end =", 8), "plain: '?=' and a final '=' are harmless");
    CHECK(!smtp_header_is_plain("a =?b", 5), "plain: '=?' looks like an encoded word");
    CHECK(!smtp_header_is_plain("caf\xc3\xa9", 5), "plain: UTF-8 needs encoding");
    CHECK(!smtp_header_is_plain("a\r\nb", 4), "plain: CR LF are not plain");
    CHECK(!smtp_header_is_plain("\x7f", 1), "plain: DEL is not plain");
    CHECK(!smtp_header_is_plain("a\0b", 3), "plain: NUL is not plain");
    CHECK(smtp_header_is_plain("a=?b", 2), "plain: only len bytes are examined");
}

/* ---- smtp_text_shape_of, smtp_crlf ------------------------------------- */

static void shape_is(const char *text, size_t len, int only_crlf, int seven_bit, size_t longest,
                     const char *what)
{
    smtp_text_shape sh;
    smtp_text_shape_of(text, len, &sh);
    CHECK(sh.only_crlf == only_crlf && sh.seven_bit == seven_bit && sh.longest_line == longest, what);
}

static void crlf_is(const char *text, const char *want, const char *what)
{
    smtp_buf out;
    smtp_buf_init(&out, 1024);
    CHECK(smtp_crlf(text, strlen(text), &out) == 0 && smtp_buf_len(&out) == strlen(want) &&
          memcmp(smtp_buf_ptr(&out), want, strlen(want)) == 0, what);
    smtp_buf_free(&out);
}

static void test_text_shape(void)
{
    shape_is("", 0, 1, 1, 0, "shape: empty");
    shape_is("abc", 3, 1, 1, 3, "shape: one line without an end");
    shape_is("ab\r\ncdef\r\n", 10, 1, 1, 4, "shape: CRLF lines, longest 4");
    shape_is("ab\ncd", 5, 0, 1, 5, "shape: a bare LF counts in its line");
    shape_is("ab\r", 3, 0, 1, 3, "shape: a CR at the very end is bare");
    shape_is("\r\r\n", 3, 0, 1, 1, "shape: CR before CRLF");
    shape_is("\n", 1, 0, 1, 1, "shape: a lone LF");
    shape_is("a\tb", 3, 1, 1, 3, "shape: TAB is 7bit");
    shape_is("a\0b", 3, 1, 0, 3, "shape: NUL is not 7bit");
    shape_is("\x7f", 1, 1, 0, 1, "shape: DEL is not 7bit");
    shape_is("caf\xc3\xa9\r\n", 7, 1, 0, 5, "shape: 8-bit");
    shape_is("\x0c", 1, 1, 0, 1, "shape: form feed is a control");
    crlf_is("", "", "crlf: empty");
    crlf_is("a\nb\rc\r\nd", "a\r\nb\r\nc\r\nd", "crlf: LF, CR and CRLF each become CRLF");
    crlf_is("\n\r", "\r\n\r\n", "crlf: LF CR is two line ends");
    crlf_is("\r\n\r", "\r\n\r\n", "crlf: a final bare CR");
    crlf_is("x", "x", "crlf: no line end, none added");
    {
        smtp_buf out;
        smtp_buf_init(&out, 3);
        CHECK(smtp_crlf("ab\ncd", 5, &out) == SMTP_E_LIMIT, "crlf: the buffer's limit holds");
        smtp_buf_free(&out);
    }
}

int main(void)
{
    test_text_shape();
    test_b64_vectors();
    test_b64_decode_edges();
    test_b64_line_lengths();
    test_b64_random();
    test_b64_limits();
    test_qp_cases();
    test_qp_long_lines();
    test_qp_random();
    test_qp_decode();
    test_qp_limits();
    test_words_exact();
    test_words_properties();
    test_words_first_col_fold();
    test_words_limit();
    test_is_plain();
    return check_done();
}
