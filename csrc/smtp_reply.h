/* Incremental SMTP reply parser (RFC 5321 section 4.2).
 *
 * The parser is fed whole lines by smtp_reply_line(); the caller (the
 * engine) keeps the unparsed bytes and finds the line ends, so a reply may be
 * split anywhere across reads without the parser copying the input twice.
 *
 * Rules enforced, each a protocol error (never a success):
 *  - every line starts with three digits, the first 2..5, followed by
 *    SP, '-' or the line end;
 *  - every line of a multiline reply carries the same code;
 *  - a line is at most max_line octets, a reply at most max_lines lines.
 * A bare LF is accepted as a line end; a trailing CR is removed.
 *
 * Errors are sticky: after a negative return every later call returns the
 * same error until smtp_reply_reset().
 */
#ifndef SMTP_REPLY_H
#define SMTP_REPLY_H

#include <stddef.h>
#include "smtp_buf.h"

#define SMTP_ENHANCED_MAX 16

typedef struct smtp_reply {
    int code;                            /* 200..599 */
    char enhanced[SMTP_ENHANCED_MAX];    /* "5.1.1", or "" when absent */
    const char *text;                    /* lines' text joined by '\n'; borrowed */
    size_t text_len;
    int lines;
} smtp_reply;

typedef struct smtp_reply_parser {
    size_t max_line;       /* longest accepted line, line end excluded */
    size_t max_lines;      /* most lines in one reply */
    int code;              /* code of the reply being assembled, 0 if none */
    int lines;
    int error;             /* sticky, 0 or SMTP_E_* */
    smtp_buf text;
    char enhanced[SMTP_ENHANCED_MAX];
} smtp_reply_parser;

void smtp_reply_init(smtp_reply_parser *p, size_t max_line, size_t max_lines);
/* The same with an allocator for the reply text (NULL: the C library). */
void smtp_reply_init_mem(smtp_reply_parser *p, size_t max_line, size_t max_lines,
                         const smtp_mem *mem);
void smtp_reply_free(smtp_reply_parser *p);
void smtp_reply_reset(smtp_reply_parser *p);

/* Feeds one line (its end, CRLF or LF, already removed or not: a trailing
 * CR and LF are stripped here). Returns 1 when this line completed a reply
 * (*out is filled, valid until the next call), 0 when more lines are needed,
 * or a negative SMTP_E_* code. */
int smtp_reply_line(smtp_reply_parser *p, const char *line, size_t len, smtp_reply *out);

/* True when a reply is partly assembled (a continuation line was seen). */
int smtp_reply_pending(const smtp_reply_parser *p);

/* Parses "class.subject.detail" at the start of text (RFC 3463: class 2, 4
 * or 5 matching the reply code's first digit, subject 1-3 digits, detail 1-3
 * digits, followed by SP or the end). Returns the length of the code, or 0. */
size_t smtp_enhanced_code(int code, const char *text, size_t len);

#endif
