/* Shared by smtp_net.c and smtp_tls.c only (not installed, not part of any
 * API): the SIGPIPE flag, the printf-format attribute and the one error
 * formatter that fills smtp_net's errmsg. */
#ifndef SMTP_NET_PRIVATE_H
#define SMTP_NET_PRIVATE_H

#include <stddef.h>
#include <sys/socket.h>

#include "smtp_net.h"

/* Where MSG_NOSIGNAL is missing (macOS), smtp_net sets SO_NOSIGPIPE on the
 * socket instead, so the flag can safely be a no-op there. */
#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0
#endif

#if defined(__GNUC__) || defined(__clang__)
#define SMTP_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define SMTP_PRINTF(f, a)
#endif

/* Formats into out: always bounded and NUL-terminated (an over-long
 * diagnostic is truncated, never an error), errno left intact, since
 * SMTP_E_IO promises callers the failing call's errno. */
SMTP_PRINTF(3, 4)
void smtp_net_format(char *out, size_t size, const char *fmt, ...);

/* Puts a reason into n->errmsg as smtp_net_format does; returns code. */
SMTP_PRINTF(3, 4)
int smtp_net_fail(smtp_net *n, int code, const char *fmt, ...);

/* The short name both files use. */
#define fail(...) smtp_net_fail(__VA_ARGS__)

#endif
