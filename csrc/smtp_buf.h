/* Growable byte buffer with a hard cap.
 *
 * Every buffer in the core is bounded: a hostile peer or a runaway caller
 * gets SMTP_E_LIMIT instead of unbounded allocation. Bytes are consumed from
 * the front by advancing an offset; the storage is compacted lazily so that
 * short writes and partial parses cost no memmove per call.
 */
#ifndef SMTP_BUF_H
#define SMTP_BUF_H

#include <stddef.h>
#include "smtp_mem.h"

typedef struct smtp_buf {
    char *data;    /* storage, owned */
    size_t start;  /* first unconsumed byte */
    size_t end;    /* one past the last byte */
    size_t cap;    /* allocated size */
    size_t limit;  /* maximum number of unconsumed bytes */
    const smtp_mem *mem; /* its allocator (NULL: the C library's) */
} smtp_buf;

/* An empty buffer (nothing allocated until the first append). */
void smtp_buf_init(smtp_buf *b, size_t limit);
/* The same with an allocator, kept for the buffer's life (also across
 * smtp_buf_free). */
void smtp_buf_init_mem(smtp_buf *b, size_t limit, const smtp_mem *mem);
/* Frees the storage; the buffer stays valid and empty. */
void smtp_buf_free(smtp_buf *b);

/* Number of unconsumed bytes and a pointer to the first of them. */
size_t smtp_buf_len(const smtp_buf *b);
const char *smtp_buf_ptr(const smtp_buf *b);

/* Ensures room for n more bytes; returns a pointer to write them at, or NULL
 * (limit exceeded or out of memory). Commit them with smtp_buf_commit. */
char *smtp_buf_reserve(smtp_buf *b, size_t n);
void smtp_buf_commit(smtp_buf *b, size_t n);
/* The same, saying why: 0 (*w set; n == 0 gives *w NULL), SMTP_E_LIMIT or
 * SMTP_E_NOMEM. */
int smtp_buf_reserve_rc(smtp_buf *b, size_t n, char **w);

/* Appends; 0 on success, SMTP_E_LIMIT or SMTP_E_NOMEM. */
int smtp_buf_append(smtp_buf *b, const void *p, size_t n);
int smtp_buf_append_str(smtp_buf *b, const char *s);

/* Drops n bytes from the front (n <= len). */
void smtp_buf_consume(smtp_buf *b, size_t n);
void smtp_buf_clear(smtp_buf *b);

#endif
