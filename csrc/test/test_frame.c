/* Tests for smtp_frame: DATA framing of hostile bodies at every split, line
 * length limits, and a large random body. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "smtp_buf.h"
#include "smtp_error.h"
#include "smtp_frame.h"

#define BIG_LIMIT ((size_t)1 << 30)
#define LIT(s) s, sizeof(s) - 1

typedef struct hostile {
    const char *body;
    size_t body_len;
    const char *wire;
    size_t wire_len;
} hostile;

static const hostile cases[] = {
    {LIT("a\nb"), LIT("a\r\nb\r\n.\r\n")},
    {LIT("a\rb"), LIT("a\r\nb\r\n.\r\n")},
    {LIT("a\r\r\nb"), LIT("a\r\n\r\nb\r\n.\r\n")},
    {LIT("\n.\n"), LIT("\r\n..\r\n.\r\n")},
    {LIT(".\r\n"), LIT("..\r\n.\r\n")},
    {LIT(".."), LIT("...\r\n.\r\n")},
    {LIT("x\r"), LIT("x\r\n.\r\n")},
    {LIT("x\r\n."), LIT("x\r\n..\r\n.\r\n")},
    {LIT("head\r\n.\r\ntail"), LIT("head\r\n..\r\ntail\r\n.\r\n")},
    {LIT("\n.\r\n"), LIT("\r\n..\r\n.\r\n")},
    {LIT("\r.\r"), LIT("\r\n..\r\n.\r\n")},
    {LIT("."), LIT("..\r\n.\r\n")},
    {LIT("a\n.\nb\n."), LIT("a\r\n..\r\nb\r\n..\r\n.\r\n")},
    {LIT("no newline"), LIT("no newline\r\n.\r\n")},
    {LIT(""), LIT(".\r\n")},
    {LIT("\r\n"), LIT("\r\n.\r\n")},
    {LIT("\n\r"), LIT("\r\n\r\n.\r\n")},
    {LIT("\r\r"), LIT("\r\n\r\n.\r\n")},
    {LIT("a\0b\r\0\n.\0"), LIT("a\0b\r\n\0\r\n..\0\r\n.\r\n")},
};

/* Frames body cut at the given ascending offsets; 0 or the first error. */
static int frame_cut(const char *body, size_t len, const size_t *cuts, size_t ncuts,
                     smtp_buf *out)
{
    smtp_frame f;
    size_t prev = 0, i;
    int rc;
    smtp_frame_init(&f, SMTP_MAX_LINE);
    for (i = 0; i < ncuts; i++) {
        rc = smtp_frame_write(&f, body + prev, cuts[i] - prev, out);
        if (rc)
            return rc;
        prev = cuts[i];
    }
    rc = smtp_frame_write(&f, body + prev, len - prev, out);
    return rc ? rc : smtp_frame_finish(&f, out);
}

static int buf_is(const smtp_buf *b, const char *want, size_t want_len)
{
    return smtp_buf_len(b) == want_len && memcmp(smtp_buf_ptr(b), want, want_len) == 0;
}

/* No bare CR or LF, the end of data exactly once and at the end. */
static int well_framed(const char *w, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        if (w[i] == '\r' && (i + 1 == n || w[i + 1] != '\n'))
            return 0;
        if (w[i] == '\n' && (i == 0 || w[i - 1] != '\r'))
            return 0;
    }
    if (n == 3)
        return memcmp(w, ".\r\n", 3) == 0;
    if (n < 5 || memcmp(w + n - 5, "\r\n.\r\n", 5) != 0)
        return 0;
    if (memcmp(w, ".\r\n", 3) == 0)
        return 0;
    for (i = 0; i + 5 < n; i++) {
        if (memcmp(w + i, "\r\n.\r\n", 5) == 0)
            return 0;
    }
    return 1;
}

static void test_hostile_bodies(void)
{
    size_t c;
    smtp_buf out;
    smtp_buf_init(&out, BIG_LIMIT);

    for (c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const hostile *h = &cases[c];
        size_t i, j, n = h->body_len;
        int one_ok, splits_ok = 1, bytes_ok;
        char name[80];
        size_t *cuts = malloc((n + 1) * sizeof *cuts);

        smtp_buf_clear(&out);
        one_ok = frame_cut(h->body, n, NULL, 0, &out) == 0 &&
                 buf_is(&out, h->wire, h->wire_len) && well_framed(h->wire, h->wire_len);
        snprintf(name, sizeof name, "hostile body %zu framed exactly, well framed", c);
        CHECK(one_ok, name);

        for (i = 0; i <= n; i++) {
            for (j = i; j <= n; j++) {
                size_t pair[2];
                pair[0] = i;
                pair[1] = j;
                smtp_buf_clear(&out);
                if (frame_cut(h->body, n, pair, 2, &out) != 0 ||
                    !buf_is(&out, h->wire, h->wire_len))
                    splits_ok = 0;
            }
        }
        snprintf(name, sizeof name, "hostile body %zu the same at every pair of cuts", c);
        CHECK(splits_ok, name);

        for (i = 0; i < n; i++)
            cuts[i] = i + 1;
        smtp_buf_clear(&out);
        bytes_ok = n == 0 || (frame_cut(h->body, n, cuts, n - 1, &out) == 0 &&
                              buf_is(&out, h->wire, h->wire_len));
        snprintf(name, sizeof name, "hostile body %zu the same byte by byte", c);
        CHECK(bytes_ok, name);
        free(cuts);
    }
    smtp_buf_free(&out);
}

static void test_line_limit(void)
{
    char line[1200];
    smtp_frame f;
    smtp_buf out;
    size_t at;
    int ok;

    memset(line, 'x', sizeof line);
    smtp_buf_init(&out, BIG_LIMIT);

    smtp_frame_init(&f, SMTP_MAX_LINE);
    CHECK(smtp_frame_write(&f, line, 998, &out) == 0 && smtp_buf_len(&out) == 998,
          "a line of 998 octets passes");
    CHECK(smtp_frame_write(&f, "\r\n", 2, &out) == 0 && smtp_frame_write(&f, line, 998, &out) == 0,
          "the line end resets the count");

    smtp_buf_clear(&out);
    smtp_frame_init(&f, SMTP_MAX_LINE);
    CHECK(smtp_frame_write(&f, line, 999, &out) == SMTP_E_LINE && f.error_line == 1,
          "999 octets fail on line 1");
    CHECK(smtp_buf_len(&out) == 0, "nothing written for the refused chunk");

    smtp_frame_init(&f, SMTP_MAX_LINE);
    CHECK(smtp_frame_write(&f, "ab", 2, &out) == 0, "a short start");
    {
        char chunk[1001];
        chunk[0] = '\n';
        memset(chunk + 1, 'x', 999);
        CHECK(smtp_frame_write(&f, chunk, 1000, &out) == SMTP_E_LINE && f.error_line == 2,
              "a long line after a line end in the same chunk is reported as line 2");
    }
    CHECK(buf_is(&out, "ab", 2) && f.lines == 0 && f.line_len == 2,
          "output and state as before the refused chunk");
    CHECK(smtp_frame_write(&f, "c", 1, &out) == 0 && smtp_frame_finish(&f, &out) == 0 &&
              buf_is(&out, "abc\r\n.\r\n", 8),
          "framing goes on after a refused chunk");

    /* A line of 999 across every cut: the second write fails, line 2. */
    ok = 1;
    for (at = 0; at < 4 + 999; at++) {
        char body[4 + 999];
        memcpy(body, "ok\r\n", 4);
        memset(body + 4, 'x', 999);
        smtp_buf_clear(&out);
        smtp_frame_init(&f, SMTP_MAX_LINE);
        if (smtp_frame_write(&f, body, at, &out) != 0 ||
            smtp_frame_write(&f, body + at, sizeof body - at, &out) != SMTP_E_LINE ||
            f.error_line != 2)
            ok = 0;
        smtp_frame_init(&f, SMTP_MAX_LINE);
        if (smtp_frame_check(&f, body, at) != 0 ||
            smtp_frame_check(&f, body + at, sizeof body - at) != SMTP_E_LINE ||
            f.error_line != 2)
            ok = 0;
    }
    CHECK(ok, "a 999-octet line fails at every cut, for write and check");

    smtp_frame_init(&f, SMTP_MAX_LINE);
    CHECK(smtp_frame_check(&f, line, 998) == 0 && smtp_frame_check(&f, "\r", 1) == 0 &&
              smtp_frame_check(&f, "\n", 1) == 0 && smtp_frame_check(&f, line, 998) == 0,
          "check: 998-octet lines with a CRLF split between chunks pass");

    smtp_frame_init(&f, 0);
    smtp_buf_clear(&out);
    CHECK(smtp_frame_write(&f, line, sizeof line, &out) == 0 && smtp_buf_len(&out) == sizeof line,
          "a limit of 0 disables the check");
    smtp_buf_free(&out);
}

static void test_output_limit(void)
{
    smtp_frame f;
    smtp_buf out;
    smtp_buf_init(&out, 100);
    smtp_frame_init(&f, SMTP_MAX_LINE);
    CHECK(smtp_frame_write(&f, "hello\n", 6, &out) == 0, "a small chunk fits");
    {
        char big[200];
        memset(big, 'y', sizeof big);
        CHECK(smtp_frame_write(&f, big, sizeof big, &out) == SMTP_E_LIMIT,
              "a chunk that cannot fit is a limit error");
    }
    CHECK(buf_is(&out, "hello\r\n", 7) && f.at_line_start, "state unchanged after a limit error");
    smtp_buf_free(&out);
}

static uint32_t xorshift(uint32_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 17;
    *x ^= *x << 5;
    return *x;
}

static void test_random_body(void)
{
    static const char alphabet[] = "\r\n..\0 abcdefghij";
    enum { N = 200000 };
    char *body = malloc(N);
    smtp_buf one, split;
    uint32_t x = 99991;
    size_t i;
    int round, same = 1, bounded = 1;

    for (i = 0; i < N; i++)
        body[i] = alphabet[xorshift(&x) % (sizeof alphabet - 1)];
    smtp_buf_init(&one, BIG_LIMIT);
    smtp_buf_init(&split, BIG_LIMIT);
    CHECK(frame_cut(body, N, NULL, 0, &one) == 0, "a large random body frames");
    CHECK(well_framed(smtp_buf_ptr(&one), smtp_buf_len(&one)), "and is well framed");
    CHECK(smtp_buf_len(&one) <= smtp_frame_bound(N) + 5, "within smtp_frame_bound");

    for (round = 0; round < 10; round++) {
        size_t cuts[400], ncuts = 0, at = 0;
        while (ncuts < 400) {
            at += 1 + xorshift(&x) % 1000;
            if (at >= N)
                break;
            cuts[ncuts++] = at;
        }
        smtp_buf_clear(&split);
        if (frame_cut(body, N, cuts, ncuts, &split) != 0 || smtp_buf_len(&split) != smtp_buf_len(&one) ||
            memcmp(smtp_buf_ptr(&split), smtp_buf_ptr(&one), smtp_buf_len(&one)) != 0)
            same = 0;
    }
    CHECK(same, "random cuts give the one-shot output");

    /* The bound holds for every chunk, not just the whole. */
    for (round = 0; round < 2000; round++) {
        size_t len = xorshift(&x) % 64, before;
        smtp_frame f;
        smtp_frame_init(&f, SMTP_MAX_LINE);
        smtp_buf_clear(&split);
        before = smtp_buf_len(&split);
        if (smtp_frame_write(&f, body + (xorshift(&x) % (N - 64)), len, &split) != 0 ||
            smtp_buf_len(&split) - before > smtp_frame_bound(len))
            bounded = 0;
    }
    CHECK(bounded, "every chunk's output within smtp_frame_bound");

    smtp_buf_free(&one);
    smtp_buf_free(&split);
    free(body);
}

int main(void)
{
    test_hostile_bodies();
    test_line_limit();
    test_output_limit();
    test_random_body();
    return check_done();
}
