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
static long long frame_run(smtp_frame *f, const char *data, size_t len, char *w)
{
    size_t i = 0;
    char *start = w;

    while (i < len) {
        unsigned char c = (unsigned char)data[i];

        if (f->pending_cr) {
            /* The CR ended a line whatever follows; an LF right after it is
             * the same line end, not another one. */
            f->pending_cr = 0;
            if (c == '\n') {
                i++;
                continue;
            }
        }
        if (c == '\r' || c == '\n') {
            if (w) {
                *w++ = '\r';
                *w++ = '\n';
            }
            f->pending_cr = (c == '\r');
            f->at_line_start = 1;
            f->line_len = 0;
            f->lines++;
            i++;
            continue;
        }
        if (f->at_line_start && c == '.' && f->stuffing) {
            if (w)
                *w++ = '.';
        }
        f->at_line_start = 0;
        /* Copy the run of ordinary bytes up to the next line end at once. */
        {
            size_t j = i + 1, room;
            while (j < len && data[j] != '\r' && data[j] != '\n')
                j++;
            room = f->max_line ? f->max_line - f->line_len : (size_t)-1;
            if (j - i > room) {
                f->error_line = f->lines + 1;
                return SMTP_E_LINE;
            }
            if (w) {
                memcpy(w, data + i, j - i);
                w += j - i;
            }
            f->line_len += j - i;
            i = j;
        }
    }
    return w ? (long long)(w - start) : 0;
}

int smtp_frame_write(smtp_frame *f, const char *data, size_t len, smtp_buf *out)
{
    smtp_frame saved = *f;
    char *w;
    long long n;

    if (len == 0)
        return 0;
    w = smtp_buf_reserve(out, smtp_frame_bound(len));
    if (!w)
        return SMTP_E_LIMIT;
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
