#include "smtp_buf.h"

#include <stdlib.h>
#include <string.h>

#include "smtp_error.h"

void smtp_buf_init(smtp_buf *b, size_t limit)
{
    smtp_buf_init_mem(b, limit, NULL);
}

void smtp_buf_init_mem(smtp_buf *b, size_t limit, const smtp_mem *mem)
{
    b->data = NULL;
    b->start = b->end = b->cap = 0;
    b->limit = limit;
    b->mem = mem;
}

void smtp_buf_free(smtp_buf *b)
{
    smtp_mem_free(b->mem, b->data);
    b->data = NULL;
    b->start = b->end = b->cap = 0;
}

size_t smtp_buf_len(const smtp_buf *b)
{
    return b->end - b->start;
}

const char *smtp_buf_ptr(const smtp_buf *b)
{
    return b->data ? b->data + b->start : "";
}

char *smtp_buf_reserve(smtp_buf *b, size_t n)
{
    size_t len = b->end - b->start;
    size_t want, cap;
    char *p;

    if (n > b->limit || len > b->limit - n)
        return NULL;
    if (b->cap - b->end >= n)
        return b->data + b->end;
    /* Reclaim the consumed front before growing. */
    if (b->start > 0 && b->cap - len >= n) {
        memmove(b->data, b->data + b->start, len);
        b->start = 0;
        b->end = len;
        return b->data + b->end;
    }
    want = len + n;
    cap = b->cap ? b->cap : 256;
    while (cap < want)
        cap = cap > ((size_t)-1) / 2 ? want : cap * 2;
    p = smtp_mem_malloc(b->mem, cap);
    if (!p)
        return NULL;
    if (len)
        memcpy(p, b->data + b->start, len);
    smtp_mem_free(b->mem, b->data);
    b->data = p;
    b->cap = cap;
    b->start = 0;
    b->end = len;
    return b->data + b->end;
}

int smtp_buf_reserve_rc(smtp_buf *b, size_t n, char **w)
{
    size_t len = b->end - b->start;

    *w = NULL;
    if (n == 0)
        return 0; /* a zero reserve on an empty buffer would yield NULL */
    *w = smtp_buf_reserve(b, n);
    if (*w)
        return 0;
    return (n > b->limit || len > b->limit - n) ? SMTP_E_LIMIT : SMTP_E_NOMEM;
}

void smtp_buf_commit(smtp_buf *b, size_t n)
{
    b->end += n;
}

int smtp_buf_append(smtp_buf *b, const void *p, size_t n)
{
    char *w;
    if (n == 0)
        return 0;
    w = smtp_buf_reserve(b, n);
    if (!w) {
        size_t len = b->end - b->start;
        return (n > b->limit || len > b->limit - n) ? SMTP_E_LIMIT : SMTP_E_NOMEM;
    }
    memcpy(w, p, n);
    b->end += n;
    return 0;
}

int smtp_buf_append_str(smtp_buf *b, const char *s)
{
    return smtp_buf_append(b, s, strlen(s));
}

void smtp_buf_consume(smtp_buf *b, size_t n)
{
    b->start += n;
    if (b->start >= b->end)
        b->start = b->end = 0;
}

void smtp_buf_clear(smtp_buf *b)
{
    b->start = b->end = 0;
}
