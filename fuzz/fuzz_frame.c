/* libFuzzer target: DATA / BDAT framing (csrc/smtp_frame.c).
 *
 * Input layout:
 *   byte 0   flags: bit 0 BDAT mode (f.stuffing = 0), bits 1-2 max_line
 *            (0: 998, 1: off, 2: small from byte 1, 3: 998)
 *   byte 1   small max_line (1..64) for flag value 2
 *   byte 2   number of split points (0..15)
 *   then 2 bytes per split point (offset into the data, mod len + 1)
 *   the rest is the message.
 *
 * Invariants checked:
 *  - the output has no bare CR or LF (every CR is followed by LF, every LF
 *    preceded by CR);
 *  - DATA mode: before smtp_frame_finish the output never contains
 *    CRLF "." CRLF nor starts with "." CRLF; after it the output ends with
 *    the terminator and holds it nowhere else; every line starting with
 *    '.' starts with "..";
 *  - un-stuffing the output gives back the message with its line ends
 *    (CRLF, LF, CR) made CRLF; in BDAT mode the output is exactly that;
 *  - chunking does not matter: the split output equals the one-shot one;
 *  - SMTP_E_LINE exactly when the message has a line longer than
 *    max_line, with error_line naming the first such line, and the state
 *    and output left as before the failing call; smtp_frame_check agrees.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_buf.h"
#include "smtp_error.h"
#include "smtp_frame.h"

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "fuzz_frame: invariant failed at line %d: %s\n", __LINE__, \
                    #cond);                                                           \
            abort();                                                                  \
        }                                                                             \
    } while (0)

static int cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
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

/* First position of CRLF "." CRLF, counting a ".\r\n" at the very start
 * as one (it follows the "354" reply's CRLF); n when absent. */
static size_t find_terminator(const char *p, size_t n)
{
    size_t i;
    if (n >= 3 && memcmp(p, ".\r\n", 3) == 0)
        return 0;
    for (i = 0; i + 5 <= n; i++)
        if (memcmp(p + i, "\r\n.\r\n", 5) == 0)
            return i;
    return n;
}

/* The message with every line end made CRLF; also the line number (from
 * 1) of the first line longer than max_line, 0 if none. */
static size_t normalise(const char *in, size_t n, char *out, size_t max_line,
                        unsigned long long *first_long)
{
    size_t i, o = 0, col = 0;
    unsigned long long line = 1;
    *first_long = 0;
    for (i = 0; i < n; i++) {
        if (in[i] == '\r' || in[i] == '\n') {
            if (in[i] == '\r' && i + 1 < n && in[i + 1] == '\n')
                i++;
            out[o++] = '\r';
            out[o++] = '\n';
            line++;
            col = 0;
            continue;
        }
        out[o++] = in[i];
        col++;
        if (max_line && col > max_line && !*first_long)
            *first_long = line;
    }
    return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int bdat, mode, failed = 0;
    size_t max_line, nsplit, i, msg_len, norm_len, cuts[17], ncuts = 0;
    const char *msg;
    char *norm;
    unsigned long long first_long;
    smtp_frame f, one;
    smtp_buf out, whole;

    if (size < 3)
        return 0;
    bdat = data[0] & 1;
    mode = (data[0] >> 1) & 3;
    max_line = mode == 1 ? 0 : mode == 2 ? 1 + data[1] % 64 : SMTP_MAX_LINE;
    nsplit = data[2] % 16;
    if (size < 3 + 2 * nsplit)
        return 0;
    msg = (const char *)data + 3 + 2 * nsplit;
    msg_len = size - 3 - 2 * nsplit;
    for (i = 0; i < nsplit; i++) {
        size_t v = (size_t)data[3 + 2 * i] << 8 | data[4 + 2 * i];
        cuts[ncuts++] = v % (msg_len + 1);
    }
    cuts[ncuts++] = msg_len;
    qsort(cuts, ncuts, sizeof cuts[0], cmp_size);

    norm = malloc(2 * msg_len + 1);
    norm_len = normalise(msg, msg_len, norm, max_line, &first_long);

    /* smtp_frame_check over the same chunks agrees on long lines. */
    {
        smtp_frame c;
        size_t at = 0;
        int rc = 0;
        smtp_frame_init(&c, max_line);
        c.stuffing = !bdat;
        for (i = 0; i < ncuts && rc == 0; i++) {
            rc = smtp_frame_check(&c, msg + at, cuts[i] - at);
            at = cuts[i];
        }
        CHECK(rc == 0 || rc == SMTP_E_LINE);
        CHECK((rc == SMTP_E_LINE) == (first_long != 0));
    }

    smtp_frame_init(&f, max_line);
    f.stuffing = !bdat;
    smtp_buf_init(&out, 16 * msg_len + 64);
    {
        size_t at = 0;
        for (i = 0; i < ncuts; i++) {
            size_t before = smtp_buf_len(&out);
            smtp_frame saved = f;
            int rc;
            char *copy = malloc(cuts[i] - at + 1);
            memcpy(copy, msg + at, cuts[i] - at); /* exact size for ASan */
            rc = smtp_frame_write(&f, copy, cuts[i] - at, &out);
            free(copy);
            CHECK(rc == 0 || rc == SMTP_E_LINE);
            if (rc == SMTP_E_LINE) {
                CHECK(max_line != 0);
                CHECK(smtp_buf_len(&out) == before);
                CHECK(f.error_line == first_long);
                f.error_line = saved.error_line;
                CHECK(memcmp(&f, &saved, sizeof f) == 0);
                failed = 1;
                break;
            }
            CHECK(smtp_buf_len(&out) - before <= smtp_frame_bound(cuts[i] - at));
            at = cuts[i];
            if (!bdat) {
                const char *p = smtp_buf_ptr(&out);
                size_t n = smtp_buf_len(&out);
                CHECK(find_terminator(p, n) == n);
            }
        }
    }
    CHECK(failed == (first_long != 0));

    if (!failed) {
        const char *p = smtp_buf_ptr(&out);
        size_t n = smtp_buf_len(&out), body_len, term;

        /* One call with the whole message gives the same bytes. */
        smtp_frame_init(&one, max_line);
        one.stuffing = !bdat;
        smtp_buf_init(&whole, 16 * msg_len + 64);
        CHECK(smtp_frame_write(&one, msg, msg_len, &whole) == 0);
        CHECK(smtp_buf_len(&whole) == n && memcmp(smtp_buf_ptr(&whole), p, n) == 0);
        CHECK(one.lines == f.lines);
        smtp_buf_free(&whole);

        check_crlf_only(p, n);
        if (bdat) {
            CHECK(n == norm_len && memcmp(p, norm, n) == 0);
        } else {
            /* Un-stuff line by line. */
            char *un = malloc(n + 1);
            size_t u = 0, ls = 0;
            while (ls < n) {
                const char *e = memchr(p + ls, '\n', n - ls);
                size_t le = e ? (size_t)(e - p) + 1 : n;
                if (p[ls] == '.') {
                    CHECK(le - ls >= 2 && p[ls + 1] == '.');
                    ls++;
                }
                memcpy(un + u, p + ls, le - ls);
                u += le - ls;
                ls = le;
            }
            CHECK(u == norm_len && memcmp(un, norm, u) == 0);
            free(un);
        }

        /* The end of data. */
        body_len = n;
        CHECK(smtp_frame_finish(&f, &out) == 0);
        p = smtp_buf_ptr(&out);
        n = smtp_buf_len(&out);
        check_crlf_only(p, n);
        CHECK(n >= 3 && memcmp(p + n - 3, ".\r\n", 3) == 0);
        term = find_terminator(p, n);
        if (body_len == 0)
            CHECK(n == 3 && term == 0);
        else if (!bdat) /* BDAT data may hold the sequence: it is counted */
            CHECK(term == n - 5);
    }

    smtp_buf_free(&out);
    free(norm);
    return 0;
}
