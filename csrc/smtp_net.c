/* _DEFAULT_SOURCE for NI_MAXHOST/NI_NUMERICHOST and the BSD socket extras
 * that strict C99 hides; _POSIX_C_SOURCE for clock_gettime and getaddrinfo. */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE

#include "smtp_net.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "smtp_error.h"
#include "smtp_net_private.h"

/* ---- errors -------------------------------------------------------------- */

static void format_v(char *out, size_t size, const char *fmt, va_list ap)
{
    int saved = errno;

    vsnprintf(out, size, fmt, ap);
    errno = saved;
}

void smtp_net_format(char *out, size_t size, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    format_v(out, size, fmt, ap);
    va_end(ap);
}

int smtp_net_fail(smtp_net *n, int code, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    format_v(n->errmsg, sizeof n->errmsg, fmt, ap);
    va_end(ap);
    return code;
}

int smtp_net_peer_gone(int err)
{
    return err == EPIPE || err == ECONNRESET;
}

int smtp_net_would_block(int err)
{
    return err == EAGAIN || err == EWOULDBLOCK;
}

/* ---- time ---------------------------------------------------------------- */

double smtp_net_now(void)
{
    struct timespec ts;

    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
        return 0.0;
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int smtp_net_deadline_passed(double deadline)
{
    return deadline != 0.0 && smtp_net_now() >= deadline;
}

/* Rounds up so poll() never wakes before the deadline (rounding down would
 * spin with a 0 ms timeout for the last fraction of a millisecond). Done by
 * hand rather than with ceil() so the core does not need libm. */
static int poll_timeout_ms(double deadline)
{
    double ms;
    int whole;

    if (deadline == 0.0)
        return -1;
    ms = (deadline - smtp_net_now()) * 1000.0;
    if (ms <= 0.0)
        return 0;
    if (ms >= (double)INT_MAX)
        return INT_MAX;
    whole = (int)ms;
    return whole < ms ? whole + 1 : whole;
}

/* Waits until fd is ready for events or the deadline passes. Returns 0 when
 * ready (including error/hang-up conditions, which the following I/O call
 * reports precisely), SMTP_E_TIMEOUT, or SMTP_E_IO with errno set. */
int smtp_net_wait(int fd, short events, double deadline)
{
    for (;;) {
        struct pollfd p;
        int r;

        p.fd = fd;
        p.events = events;
        p.revents = 0;
        /* Recomputed each round: after EINTR or an early wake-up only the
         * time that is left may be waited. */
        r = poll(&p, 1, poll_timeout_ms(deadline));
        if (r > 0) {
            if (p.revents & POLLNVAL) {
                errno = EBADF;
                return SMTP_E_IO;
            }
            return 0;
        }
        if (r == 0) {
            if (smtp_net_deadline_passed(deadline))
                return SMTP_E_TIMEOUT;
            continue;
        }
        if (errno != EINTR)
            return SMTP_E_IO;
    }
}

/* ---- connect ------------------------------------------------------------- */

void smtp_net_init(smtp_net *n)
{
    n->fd = -1;
    n->errmsg[0] = '\0';
    n->peer[0] = '\0';
    n->more = 0;
}

void smtp_net_close(smtp_net *n)
{
    if (n->fd >= 0) {
        /* No retry on EINTR: on Linux the descriptor is gone either way and
         * retrying could close one another thread just opened. */
        close(n->fd);
        n->fd = -1;
    }
}

/* "addr:port", or "[addr]:port" for IPv6 so the port stays unambiguous. */
static void format_address(const struct addrinfo *ai, char *out, size_t size)
{
    char host[NI_MAXHOST], serv[NI_MAXSERV];

    if (ai->ai_family == AF_UNIX) {
        smtp_net_format(out, size, "unix:%s", ((const struct sockaddr_un *)ai->ai_addr)->sun_path);
        return;
    }
    if (getnameinfo(ai->ai_addr, ai->ai_addrlen, host, sizeof host, serv, sizeof serv,
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        smtp_net_format(out, size, "(unknown address)");
        return;
    }
    if (ai->ai_family == AF_INET6)
        smtp_net_format(out, size, "[%s]:%s", host, serv);
    else
        smtp_net_format(out, size, "%s:%s", host, serv);
}

static int open_socket(const struct addrinfo *ai)
{
    int fd;

#if defined(SOCK_CLOEXEC) && defined(SOCK_NONBLOCK)
    /* Atomic, so a fork+exec in another thread cannot inherit the socket;
     * non-blocking from the start, without two fcntl calls. */
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    if (fd < 0)
        return -1;
#else
    int flags;

#ifdef SOCK_CLOEXEC
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
#else
    fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd >= 0)
        (void)fcntl(fd, F_SETFD, FD_CLOEXEC);
#endif
    if (fd < 0)
        return -1;
    flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
#endif
#ifdef SO_NOSIGPIPE
    {
        int one = 1;
        /* Where MSG_NOSIGNAL does not exist this is the only SIGPIPE guard. */
        (void)setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
    }
#endif
    return fd;
}

/* Completes a non-blocking connect: 0 on success, otherwise an SMTP_E_*
 * code with errno describing why. */
static int finish_connect(int fd, const struct addrinfo *ai, double deadline)
{
    int err = 0;
    socklen_t len = sizeof err;
    int r;

    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
        return 0;
    /* EINTR: the connection attempt carries on asynchronously, exactly as
     * with EINPROGRESS, and calling connect() again would give EALREADY. */
    if (errno != EINPROGRESS && errno != EINTR)
        return SMTP_E_CONNECT;
    r = smtp_net_wait(fd, POLLOUT, deadline);
    if (r == SMTP_E_TIMEOUT) {
        errno = ETIMEDOUT;
        return SMTP_E_TIMEOUT;
    }
    if (r != 0)
        return SMTP_E_CONNECT;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        return SMTP_E_CONNECT;
    if (err != 0) {
        errno = err;
        return SMTP_E_CONNECT;
    }
    return 0;
}

/* One address: on success the socket is stored in n; on failure errmsg
 * names the address and the reason. */
static int try_address(smtp_net *n, const struct addrinfo *ai, double deadline)
{
    char addr[sizeof n->peer];
    int fd, r;

    format_address(ai, addr, sizeof addr);
    fd = open_socket(ai);
    if (fd < 0)
        return fail(n, SMTP_E_CONNECT, "connect to %s: %s", addr, strerror(errno));
    r = finish_connect(fd, ai, deadline);
    if (r != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        if (r == SMTP_E_TIMEOUT)
            return fail(n, r, "connect to %s: timed out", addr);
        return fail(n, r, "connect to %s: %s", addr, strerror(errno));
    }
    {
        int one = 1;
        /* SMTP is a chain of small command/reply exchanges; Nagle plus
         * delayed ACKs would add up to ~40 ms of stall to each of them. A
         * failure only costs latency, never correctness, so it is ignored. */
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    n->fd = fd;
    smtp_net_format(n->peer, sizeof n->peer, "%s", addr);
    return SMTP_OK;
}

static int resolve(smtp_net *n, const char *host, const char *port, struct addrinfo **out)
{
    struct addrinfo hints;
    int r;

    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    /* No AI_ADDRCONFIG: glibc ignores loopback when deciding which address
     * families are "configured", so on a loopback-only machine it would
     * drop ::1 or even every address of "localhost". */
    hints.ai_flags = 0;
    /* getaddrinfo() cannot be given a timeout, so the deadline does not
     * bound name resolution; a slow resolver can overrun it. Callers that
     * need a hard bound must resolve elsewhere and pass a numeric host. */
    r = getaddrinfo(host, port, &hints, out);
    if (r == 0)
        return SMTP_OK;
    if (r == EAI_SYSTEM)
        return fail(n, SMTP_E_CONNECT, "cannot resolve host '%s': %s", host, strerror(errno));
    return fail(n, SMTP_E_CONNECT, "cannot resolve host '%s': %s", host, gai_strerror(r));
}

/* Rewrites the last address's error so it also says how many addresses
 * were tried, and whether the deadline cut the list short: a refusal from
 * the last address must not hide that earlier ones failed too. */
static void note_attempts(smtp_net *n, int tried, int cut_short)
{
    char last[sizeof n->errmsg];

    if (tried < 2 && !cut_short)
        return;
    memcpy(last, n->errmsg, sizeof last);
    if (cut_short)
        smtp_net_format(n->errmsg, sizeof n->errmsg, "timed out after %d address%s tried, last: %s",
                       tried, tried == 1 ? "" : "es", last);
    else
        smtp_net_format(n->errmsg, sizeof n->errmsg, "%d addresses tried, last: %s", tried, last);
}

int smtp_net_connect(smtp_net *n, const char *host, const char *port, double deadline)
{
    struct addrinfo *list, *ai;
    int r, tried = 0, cut_short = 0;

    /* Reconnecting must not leak the previous socket. */
    smtp_net_close(n);
    n->peer[0] = '\0';
    n->errmsg[0] = '\0';
    r = resolve(n, host, port, &list);
    if (r != SMTP_OK)
        return r;
    r = SMTP_E_CONNECT;
    for (ai = list; ai; ai = ai->ai_next) {
        /* The first address is always tried: an already-expired deadline
         * still allows a connect that completes at once. */
        if (tried > 0 && smtp_net_deadline_passed(deadline)) {
            r = SMTP_E_TIMEOUT;
            cut_short = 1;
            break;
        }
        tried++;
        r = try_address(n, ai, deadline);
        /* A timeout means the whole budget is spent: later addresses would
         * only time out at once. */
        if (r == SMTP_OK || r == SMTP_E_TIMEOUT)
            break;
    }
    freeaddrinfo(list);
    if (tried == 0) /* getaddrinfo() should never succeed with no results */
        return fail(n, SMTP_E_CONNECT, "cannot resolve host '%s': no addresses", host);
    if (r != SMTP_OK)
        note_attempts(n, tried, cut_short);
    return r;
}

/* ---- transfer ------------------------------------------------------------ */

/* send()/recv() report through ssize_t, so a larger request is shortened;
 * the caller sees a short count, which it must handle anyway. */
int smtp_net_connect_unix(smtp_net *n, const char *path, double deadline)
{
    struct sockaddr_un sun;
    struct addrinfo ai;
    size_t len = strlen(path);

    smtp_net_close(n);
    n->errmsg[0] = '\0';
    n->peer[0] = '\0';
    if (len == 0 || len >= sizeof sun.sun_path)
        return fail(n, SMTP_E_CONNECT, "socket path '%.64s' is empty or too long", path);
    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    memcpy(sun.sun_path, path, len + 1);
    memset(&ai, 0, sizeof ai);
    ai.ai_family = AF_UNIX;
    ai.ai_socktype = SOCK_STREAM;
    ai.ai_addr = (struct sockaddr *)&sun;
    ai.ai_addrlen = (socklen_t)sizeof sun;
    return try_address(n, &ai, deadline);
}

static size_t clamp_len(size_t len)
{
    return len > (size_t)SSIZE_MAX ? (size_t)SSIZE_MAX : len;
}

static ssize_t check_transfer_args(smtp_net *n, size_t len)
{
    if (n->fd < 0) {
        errno = EBADF;
        return fail(n, SMTP_E_IO, "not connected");
    }
    /* A zero-byte read returning 0 would be indistinguishable from end of
     * stream, and the API promises at least one byte on success. */
    if (len == 0)
        return fail(n, SMTP_E_ARGUMENT, "zero-length transfer");
    return SMTP_OK;
}

ssize_t smtp_net_send(smtp_net *n, const void *buf, size_t len, double deadline)
{
    ssize_t r = check_transfer_args(n, len);

    if (r != SMTP_OK)
        return r;
    len = clamp_len(len);
    for (;;) {
        int w;

        r = send(n->fd, buf, len, MSG_NOSIGNAL);
        if (r > 0)
            return r;
        if (r == 0) /* cannot happen for len > 0 on a stream; be safe */
            return fail(n, SMTP_E_CLOSED, "connection closed by peer");
        if (errno == EINTR)
            continue;
        if (smtp_net_peer_gone(errno))
            return fail(n, SMTP_E_CLOSED, "connection closed by peer (%s)", strerror(errno));
        if (!smtp_net_would_block(errno))
            return fail(n, SMTP_E_IO, "send: %s", strerror(errno));
        w = smtp_net_wait(n->fd, POLLOUT, deadline);
        if (w == SMTP_E_TIMEOUT)
            return fail(n, w, "timed out sending data");
        if (w != 0)
            return fail(n, w, "poll: %s", strerror(errno));
    }
}

ssize_t smtp_net_recv(smtp_net *n, void *buf, size_t len, double deadline)
{
    ssize_t r = check_transfer_args(n, len);

    if (r != SMTP_OK)
        return r;
    len = clamp_len(len);
    for (;;) {
        /* After a full buffer the rest is likely there already: recv first
         * (EAGAIN then leads to the poll). Otherwise poll first: after a
         * short read the socket is usually empty, and a recv would be one
         * more system call for nothing. */
        int w = n->more ? 0 : smtp_net_wait(n->fd, POLLIN, deadline);

        n->more = 0;
        if (w == SMTP_E_TIMEOUT)
            return fail(n, w, "timed out waiting for data");
        if (w != 0)
            return fail(n, w, "poll: %s", strerror(errno));
        r = recv(n->fd, buf, len, 0);
        if (r > 0) {
            n->more = (size_t)r == len;
            return r;
        }
        if (r == 0)
            return fail(n, SMTP_E_CLOSED, "connection closed by peer");
        /* EAGAIN after a readiness report is a spurious wake-up: wait again. */
        if (errno == EINTR || smtp_net_would_block(errno))
            continue;
        if (smtp_net_peer_gone(errno))
            return fail(n, SMTP_E_CLOSED, "connection closed by peer (%s)", strerror(errno));
        return fail(n, SMTP_E_IO, "recv: %s", strerror(errno));
    }
}
