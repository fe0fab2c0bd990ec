/* Blocking TCP (and later TLS) with absolute deadlines.
 *
 * Every call takes an absolute deadline on the CLOCK_MONOTONIC time line
 * (smtp_net_now()); the socket itself is non-blocking and every wait is a
 * poll() bounded by that deadline, so no call blocks past it whatever the
 * peer does. A deadline of 0 means "no deadline".
 *
 * Errors: SMTP_E_TIMEOUT, SMTP_E_CLOSED (orderly close or reset by peer),
 * SMTP_E_CONNECT (no address accepted the connection), SMTP_E_IO; the text
 * for the last error (with the address tried and strerror) is in n->errmsg.
 * SIGPIPE is never raised (MSG_NOSIGNAL / SO_NOSIGPIPE).
 */
#ifndef SMTP_NET_H
#define SMTP_NET_H

#include <stddef.h>
#include <sys/types.h>

typedef struct smtp_net {
    int fd;                 /* -1 when closed */
    char errmsg[256];
    char peer[64];          /* numeric address:port connected to */
    int more;               /* the last recv filled its buffer: more may be
                             * waiting, so the next one reads before polling */
} smtp_net;

double smtp_net_now(void);

void smtp_net_init(smtp_net *n);

/* Resolves host (getaddrinfo, AF_UNSPEC) and tries every address in turn
 * until one connects; each attempt is bounded by the deadline. */
int smtp_net_connect(smtp_net *n, const char *host, const char *port, double deadline);

/* Connects to a Unix-domain stream socket (LMTP servers such as Dovecot
 * listen on one). */
int smtp_net_connect_unix(smtp_net *n, const char *path, double deadline);

/* Sends up to len bytes: returns the number sent (>= 1; short writes are
 * normal) or a negative SMTP_E_* code. */
ssize_t smtp_net_send(smtp_net *n, const void *buf, size_t len, double deadline);

/* Receives up to len bytes: returns the number read (>= 1) or a negative
 * SMTP_E_* code (SMTP_E_CLOSED at end of stream). */
ssize_t smtp_net_recv(smtp_net *n, void *buf, size_t len, double deadline);

void smtp_net_close(smtp_net *n);

/* Shared with smtp_tls.c, which waits on the same socket for OpenSSL. */
int smtp_net_deadline_passed(double deadline);   /* 0 is "no deadline" */
/* Waits until fd is ready for events (poll flags) or the deadline passes:
 * 0 when ready (errors and hang-ups included: the next I/O call reports
 * them), SMTP_E_TIMEOUT, or SMTP_E_IO with errno set. */
int smtp_net_wait(int fd, short events, double deadline);
int smtp_net_peer_gone(int err);     /* EPIPE, ECONNRESET */
int smtp_net_would_block(int err);   /* EAGAIN, EWOULDBLOCK */

#endif
