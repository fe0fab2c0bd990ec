/* DATA framing (RFC 5321 sections 2.3.8, 4.1.1.4 and 4.5.2).
 *
 * Streaming: the message arrives in chunks split anywhere. Output is what
 * goes on the wire between "354" and the end of data:
 *  - every line end (CRLF, bare LF, bare CR) becomes CRLF, so no lone CR or
 *    LF ever reaches the server (SMTP smuggling);
 *  - a line that starts with '.' gets one more '.';
 *  - the end adds only what is missing of CRLF "." CRLF.
 * A CR at the end of a chunk is held until the next byte shows whether an LF
 * follows; that state lives in smtp_frame, so chunk boundaries never matter.
 *
 * Lines longer than max_line octets (998 by RFC 5322 section 2.1.1, CRLF
 * excluded) make smtp_frame_write fail with SMTP_E_LINE; nothing is written
 * for that call. 0 disables the check.
 */
#ifndef SMTP_FRAME_H
#define SMTP_FRAME_H

#include <stddef.h>
#include "smtp_buf.h"

#define SMTP_MAX_LINE 998

typedef struct smtp_frame {
    size_t max_line;
    size_t line_len;    /* octets in the current line so far */
    int pending_cr;     /* previous chunk ended with CR */
    int at_line_start;
    int stuffing;       /* 1: dot-stuff (DATA); 0: BDAT, line ends only */
    unsigned long long lines;  /* completed lines, for error messages */
    unsigned long long error_line; /* after SMTP_E_LINE: the long line, from 1 */
} smtp_frame;

void smtp_frame_init(smtp_frame *f, size_t max_line);

/* Frames one chunk into out. 0, SMTP_E_LINE, SMTP_E_LIMIT or SMTP_E_NOMEM.
 * On error the frame state and out are left as before the call. */
int smtp_frame_write(smtp_frame *f, const char *data, size_t len, smtp_buf *out);

/* Appends the end of data: the missing part of CRLF "." CRLF. */
int smtp_frame_finish(smtp_frame *f, smtp_buf *out);

/* Scans without output, for checking a message before DATA is sent: the
 * same line end and line length rules as smtp_frame_write. Returns 0 or
 * SMTP_E_LINE; the state carries across chunks. */
int smtp_frame_check(smtp_frame *f, const char *data, size_t len);

/* Upper bound of the framed size of len input octets (for buffer sizing). */
size_t smtp_frame_bound(size_t len);

#endif
