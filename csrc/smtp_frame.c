#include "smtp_frame.h"

#include <string.h>

#include "smtp_error.h"

void smtp_frame_init(smtp_frame *f, size_t max_line)
{
    f->max_line = max_line;
    f->line_len = 0;
    f->pending_cr = 0;
    f->at_line_start = 1;
    f->stuffing = 1;
    f->lines = 0;
    f->error_line = 0;
}

size_t smtp_frame_bound(size_t len)
{
    /* Worst case: every byte a bare CR or LF (2 bytes), or a '.' opening a
     * line after one (the CRLF plus "..": 3 bytes for two input bytes). */
    return len * 2 + 8;
}

/* The state machine shared by writing and checking: advances f over data,
 * and when out is non-NULL writes the framed bytes to w. Returns the number
 * of bytes written, or SMTP_E_LINE. */
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* The first CR or LF in data[i..len), or len. Lines are long and line
 * ends rare, so this scan is the framer's whole cost: 16 bytes at a time
 * where SSE2 exists (every x86-64), a byte loop elsewhere. */
static size_t next_line_end(const char *data, size_t i, size_t len)
{
#if defined(__SSE2__)
    const __m128i cr = _mm_set1_epi8('\r'), lf = _mm_set1_epi8('\n');
    while (i + 16 <= len) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(data + i));
        int m = _mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(v, cr), _mm_cmpeq_epi8(v, lf)));
        if (m)
            return i + (size_t)__builtin_ctz((unsigned)m);
        i += 16;
    }
#endif
    while (i < len && data[i] != '\r' && data[i] != '\n')
        i++;
    return i;
}

#if defined(__SSE2__)
/* For the 64 bytes at data, loaded into v[0..3]: bit k of *cr, *lf, *dot
 * set where data[k] is CR, LF, '.'. Each 16-byte piece is loaded once for
 * all three, and kept for the copy. */
static void masks64(const char *data, __m128i v[4], unsigned long long *cr,
                    unsigned long long *lf, unsigned long long *dot)
{
    const __m128i cr_c = _mm_set1_epi8('\r'), lf_c = _mm_set1_epi8('\n');
    const __m128i dot_c = _mm_set1_epi8('.');
    unsigned long long c = 0, l = 0, d = 0;
    int k;
    for (k = 0; k < 4; k++) {
        v[k] = _mm_loadu_si128((const __m128i *)(const void *)(data + 16 * k));
        c |= (unsigned long long)(unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v[k], cr_c)) << (16 * k);
        l |= (unsigned long long)(unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v[k], lf_c)) << (16 * k);
        d |= (unsigned long long)(unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v[k], dot_c)) << (16 * k);
    }
    *cr = c;
    *lf = l;
    *dot = d;
}

static int popcount64(unsigned long long m)
{
    return __builtin_popcountll(m);
}

/* Skips 64-byte blocks that go out unchanged: every CR followed by an LF
 * in the same block, every LF after a CR, no line starting with a dot, no
 * line too long. Returns where the first block that needs the careful path
 * starts. State (line count, line length, line start) is kept exact. With
 * no mispredicted branch per line, this is what makes framing cheap. */
static char *copy_span(char *w, const char *data, size_t from, size_t to);

/* ... and, when *wp is not NULL, writes those blocks out while they are
 * still in registers (after the pending span data[*span..i)), so that clean
 * input is read once instead of once to scan and once more to copy. On
 * return data[*span..result) is still to be written. */
static size_t skip_clean_blocks(smtp_frame *f, const char *data, size_t i, size_t len,
                                char **wp, size_t *span)
{
    /* Only a block's first line and the line it carries over are measured
     * below; the lines between are under 64 octets, so a limit below 64
     * takes the careful path. */
    if (f->pending_cr || (f->max_line && f->max_line < 64))
        return i;
    while (i + 64 <= len) {
        unsigned long long cr, lf, dot, starts, last;
        __m128i v[4];
        masks64(data + i, v, &cr, &lf, &dot);
        if ((cr >> 63) || (lf & 1) || lf != (cr << 1))
            break;
        starts = (lf << 1) | (unsigned long long)(f->at_line_start ? 1 : 0);
        if (f->stuffing && (starts & dot))
            break;
        if (lf == 0) {
            if (f->max_line && f->line_len + 64 > f->max_line)
                break;
            f->line_len += 64;
            f->at_line_start = 0;
        } else {
            size_t first = (size_t)__builtin_ctzll(lf);
            if (f->max_line && f->line_len + first - 1 > f->max_line)
                break;
            last = 63 - (unsigned long long)__builtin_clzll(lf);
            f->lines += (unsigned long long)popcount64(lf);
            f->line_len = 63 - (size_t)last;
            f->at_line_start = last == 63;
        }
        if (*wp != NULL) {
            char *w = *wp;
            int k;
            if (*span < i) {
                w = copy_span(w, data, *span, i);
                *span = i;
            }
            for (k = 0; k < 4; k++)
                _mm_storeu_si128((__m128i *)(void *)(w + 16 * k), v[k]);
            *wp = w + 64;
            *span = i + 64;
        }
        i += 64;
    }
    return i;
}
#endif

/* Writes data[from..to) verbatim. */
static char *copy_span(char *w, const char *data, size_t from, size_t to)
{
    if (w && to > from) {
        memcpy(w, data + from, to - from);
        w += to - from;
    }
    return w;
}

/* Input that already has CRLF line ends and no line starting with a dot is
 * copied in spans of many lines; only what needs rewriting (a bare CR or
 * LF, a leading dot, a CR at the end of the chunk) breaks a span. */
static long long frame_run(smtp_frame *f, const char *data, size_t len, char *w)
{
    size_t i = 0, span = 0, e;
    char *start = w;

    if (len && f->pending_cr) {
        /* The CR that ended the last chunk was written as CRLF already; an
         * LF right after it is the same line end, not another one. */
        f->pending_cr = 0;
        if (data[0] == '\n')
            i = span = 1;
    }
    while (i < len) {
#if defined(__SSE2__)
        i = skip_clean_blocks(f, data, i, len, &w, &span);
        if (i >= len)
            break;
#endif
        if (f->at_line_start && data[i] == '.' && f->stuffing) {
            w = copy_span(w, data, span, i);
            if (w)
                *w++ = '.';
            span = i; /* the dot itself goes out with the span */
        }
        e = next_line_end(data, i, len);
        if (f->max_line && e - i > f->max_line - f->line_len) {
            f->error_line = f->lines + 1;
            return SMTP_E_LINE;
        }
        if (e == len) {
            f->line_len += e - i;
            f->at_line_start = e == i ? f->at_line_start : 0;
            i = len;
            break;
        }
        f->lines++;
        f->line_len = 0;
        f->at_line_start = 1;
        if (data[e] == '\r' && e + 1 < len && data[e + 1] == '\n') {
            i = e + 2; /* a proper CRLF: stays in the span */
            continue;
        }
        /* A bare LF, a bare CR, or a CR whose LF may open the next chunk. */
        w = copy_span(w, data, span, e);
        if (w) {
            *w++ = '\r';
            *w++ = '\n';
        }
        f->pending_cr = data[e] == '\r' && e + 1 == len;
        i = span = e + 1;
    }
    w = copy_span(w, data, span, len);
    return w ? (long long)(w - start) : 0;
}

int smtp_frame_write(smtp_frame *f, const char *data, size_t len, smtp_buf *out)
{
    smtp_frame saved = *f;
    char *w;
    long long n;

    if (len == 0)
        return 0;
    {
        int rc = smtp_buf_reserve_rc(out, smtp_frame_bound(len), &w);
        if (rc)
            return rc;
    }
    n = frame_run(f, data, len, w);
    if (n < 0) {
        /* The state goes back, but the error names the line that failed,
         * which may come after line ends in this very chunk. */
        unsigned long long bad = f->error_line;
        *f = saved;
        f->error_line = bad;
        return (int)n;
    }
    smtp_buf_commit(out, (size_t)n);
    return 0;
}

int smtp_frame_check(smtp_frame *f, const char *data, size_t len)
{
    long long n = frame_run(f, data, len, NULL);
    return n < 0 ? (int)n : 0;
}

int smtp_frame_finish(smtp_frame *f, smtp_buf *out)
{
    int rc;
    /* A held CR has already been written as CRLF; an empty body or a body
     * ending with a line end needs only ".\r\n". */
    if (f->at_line_start)
        rc = smtp_buf_append(out, ".\r\n", 3);
    else
        rc = smtp_buf_append(out, "\r\n.\r\n", 5);
    if (rc == 0) {
        f->pending_cr = 0;
        f->at_line_start = 1;
        f->line_len = 0;
    }
    return rc;
}
