#include "smtp_mem.h"

#include <stdlib.h>

void *smtp_mem_malloc(const smtp_mem *m, size_t size)
{
    if (size == 0)
        size = 1;
    return m ? m->malloc(size, m->ud) : malloc(size);
}

void *smtp_mem_realloc(const smtp_mem *m, void *ptr, size_t size)
{
    if (size == 0)
        size = 1;
    return m ? m->realloc(ptr, size, m->ud) : realloc(ptr, size);
}

void smtp_mem_free(const smtp_mem *m, void *ptr)
{
    if (!ptr)
        return;
    if (m)
        m->free(ptr, m->ud);
    else
        free(ptr);
}
