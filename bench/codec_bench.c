/* Throughput of the DATA framing and the base64 encoder against memcpy.
 *
 *   cc -O2 -Icsrc -o codec_bench bench/codec_bench.c \
 *      csrc/smtp_frame.c csrc/smtp_codec.c csrc/smtp_buf.c csrc/smtp_mem.c csrc/smtp_error.c
 *   ./codec_bench [MB]          (default 64)
 *
 * Builds a realistic text message body (words, lines of 1 to 78 characters,
 * CRLF line ends, a blank line now and then, some lines starting with '.'),
 * then runs each kernel over the whole buffer in 64 KB chunks, the way the
 * session feeds the engine:
 *   memcpy  each chunk copied into a reused output buffer (the baseline)
 *   frame   smtp_frame_write into a reused smtp_buf, cleared after each chunk
 *   b64     smtp_b64_update (76-character lines) the same way
 * Each kernel makes one warm-up pass and 3 timed passes; the median pass is
 * reported as input MB/s (MB = 2^20 octets):
 *   RESULT kernel=frame mbps=1234.5 ratio=0.123
 * The output sizes are checked against what they must be (input plus one
 * octet per dot-stuffed line; 4/3 plus CRLFs for base64), so the work cannot
 * be skipped or wrong. Exits 1 on a mismatch.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "smtp_buf.h"
#include "smtp_codec.h"
#include "smtp_error.h"
#include "smtp_frame.h"

#define CHUNK 65536
#define PASSES 3

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const char *words[] = {
    "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with",
    "be", "by", "on", "not", "he", "this", "are", "or", "his", "from", "at", "which",
    "but", "have", "an", "had", "they", "you", "were", "their", "one", "all", "we",
    "message", "server", "delivery", "report", "quarterly", "attached", "regards",
    "invoice", "meeting", "Tuesday", "please", "review", "numbers", "2024-05-17",
    "https://example.com/a/b?c=d", "Hello,", "Thanks!", "--", "=====", "(see", "below)",
};

static unsigned long long rng = 88172645463325252ULL;
static unsigned rnd(unsigned n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (unsigned)(rng % n);
}

/* Fills buf with len octets of text; returns the number of lines that start
 * with '.' (each costs the framing one more octet). */
static size_t make_text(char *buf, size_t len)
{
    size_t n = 0, dots = 0, nwords = sizeof words / sizeof words[0];
    while (n < len) {
        size_t target = rnd(100) < 6 ? 0 : 20 + rnd(59); /* line length */
        size_t col = 0;
        if (target && rnd(200) == 0 && n < len) {
            buf[n++] = '.';
            col++;
            dots++;
        }
        while (col < target && n < len) {
            const char *w = words[rnd((unsigned)nwords)];
            size_t wl = strlen(w);
            if (col + wl + 1 > 78)
                break;
            if (col && n < len) {
                buf[n++] = ' ';
                col++;
            }
            for (size_t i = 0; i < wl && n < len; i++, col++)
                buf[n++] = w[i];
        }
        if (n < len)
            buf[n++] = '\r';
        if (n < len)
            buf[n++] = '\n';
    }
    /* The last line must end with CRLF for the count to be exact. */
    if (len >= 2) {
        buf[len - 2] = '\r';
        buf[len - 1] = '\n';
    }
    return dots;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static volatile unsigned char sink_byte;

/* One pass of a kernel; returns the output octets. */
static size_t pass_memcpy(const char *in, size_t len, char *dst)
{
    size_t total = 0;
    for (size_t off = 0; off < len; off += CHUNK) {
        size_t n = len - off < CHUNK ? len - off : CHUNK;
        memcpy(dst, in + off, n);
        sink_byte ^= (unsigned char)dst[n - 1];
        total += n;
    }
    return total;
}

static size_t pass_frame(const char *in, size_t len, smtp_buf *out)
{
    smtp_frame f;
    size_t total = 0;
    smtp_frame_init(&f, SMTP_MAX_LINE);
    for (size_t off = 0; off < len; off += CHUNK) {
        size_t n = len - off < CHUNK ? len - off : CHUNK;
        int rc = smtp_frame_write(&f, in + off, n, out);
        if (rc != 0) {
            fprintf(stderr, "smtp_frame_write: %s\n", smtp_strerror(rc));
            exit(1);
        }
        total += smtp_buf_len(out);
        sink_byte ^= (unsigned char)smtp_buf_ptr(out)[0];
        smtp_buf_clear(out);
    }
    smtp_frame_finish(&f, out);
    total += smtp_buf_len(out);
    smtp_buf_clear(out);
    return total;
}

static size_t pass_b64(const char *in, size_t len, smtp_buf *out)
{
    smtp_b64 s;
    size_t total = 0;
    smtp_b64_init(&s, 76);
    for (size_t off = 0; off < len; off += CHUNK) {
        size_t n = len - off < CHUNK ? len - off : CHUNK;
        int rc = smtp_b64_update(&s, in + off, n, out);
        if (rc != 0) {
            fprintf(stderr, "smtp_b64_update: %s\n", smtp_strerror(rc));
            exit(1);
        }
        total += smtp_buf_len(out);
        if (smtp_buf_len(out))
            sink_byte ^= (unsigned char)smtp_buf_ptr(out)[0];
        smtp_buf_clear(out);
    }
    smtp_b64_finish(&s, out);
    total += smtp_buf_len(out);
    smtp_buf_clear(out);
    return total;
}

enum { K_MEMCPY, K_FRAME, K_B64, NK };
static const char *names[NK] = { "memcpy", "frame", "b64" };

int main(int argc, char **argv)
{
    size_t mb = argc > 1 ? (size_t)atoi(argv[1]) : 64;
    size_t len = mb << 20;
    char *in = malloc(len), *dst = malloc(2 * CHUNK + 16);
    smtp_buf out;
    size_t dots, expect[NK];
    double mbps[NK];
    int bad = 0;

    if (!in || !dst || mb == 0) {
        fprintf(stderr, "codec_bench: cannot allocate %zu MB\n", mb);
        return 1;
    }
    dots = make_text(in, len);
    smtp_buf_init(&out, (size_t)1 << 30);

    expect[K_MEMCPY] = len;
    expect[K_FRAME] = len + dots + 3; /* the body ends with CRLF: ".\r\n" */
    {
        size_t chars = (len + 2) / 3 * 4;
        expect[K_B64] = chars + 2 * ((chars + 75) / 76);
    }

    for (int k = 0; k < NK; k++) {
        double t[PASSES];
        for (int p = -1; p < PASSES; p++) {
            double t0 = now();
            size_t got = k == K_MEMCPY ? pass_memcpy(in, len, dst)
                       : k == K_FRAME ? pass_frame(in, len, &out)
                       : pass_b64(in, len, &out);
            double t1 = now();
            if (got != expect[k]) {
                fprintf(stderr, "codec_bench: %s wrote %zu octets, expected %zu\n",
                        names[k], got, expect[k]);
                bad = 1;
            }
            if (p >= 0)
                t[p] = t1 - t0;
        }
        qsort(t, PASSES, sizeof t[0], cmp);
        mbps[k] = (double)len / (1 << 20) / t[PASSES / 2];
    }
    for (int k = 0; k < NK; k++)
        printf("RESULT kernel=%s mbps=%.1f ratio=%.4f\n", names[k], mbps[k],
               mbps[k] / mbps[K_MEMCPY]);
    smtp_buf_free(&out);
    free(in);
    free(dst);
    return bad;
}
