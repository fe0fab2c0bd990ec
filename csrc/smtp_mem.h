/* The allocator hook (in the manner of nghttp2_mem): the objects that
 * allocate (smtp_buf and the engine built on it) take a const smtp_mem *
 * and use only its functions; NULL everywhere means the C library's
 * malloc/realloc/free. There is no global allocator to set: each object is
 * given its own at init, and keeps it until freed.
 *
 * The functions get the user pointer ud back. malloc and realloc return
 * NULL on failure (the caller then returns SMTP_E_NOMEM); free accepts
 * NULL. The C unit tests use this to fail the Nth allocation for every N
 * (csrc/test/test_failmalloc.c).
 */
#ifndef SMTP_MEM_H
#define SMTP_MEM_H

#include <stddef.h>

typedef struct smtp_mem {
    void *(*malloc)(size_t size, void *ud);
    void *(*realloc)(void *ptr, size_t size, void *ud);
    void (*free)(void *ptr, void *ud);
    void *ud;
} smtp_mem;

/* m NULL: the C library. size 0 allocates 1 byte (never NULL for success). */
void *smtp_mem_malloc(const smtp_mem *m, size_t size);
void *smtp_mem_realloc(const smtp_mem *m, void *ptr, size_t size);
void smtp_mem_free(const smtp_mem *m, void *ptr);

#endif
