/* Tests for smtp_net against real loopback sockets. Every peer is created
 * here (listener on 127.0.0.1 port 0, fork() where the peer must run
 * concurrently), so the test needs no network and no fixed ports.
 *
 * SIGPIPE is deliberately left at its default action: smtp_net promises it
 * is never raised, and a regression must show up as a killed process. */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "smtp_error.h"
#include "smtp_net.h"

/* The brief allows 10% over the deadline. */
#define TIMEOUT_S 0.3
#define TIMEOUT_SLACK (TIMEOUT_S * 0.10)

/* ---- helpers ------------------------------------------------------------- */

static int listen_on(int family, const char *addr, char *port, size_t port_size)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int fd, one = 1;

    memset(&ss, 0, sizeof ss);
    if (family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        in->sin_family = AF_INET;
        inet_pton(AF_INET, addr, &in->sin_addr);
        len = sizeof *in;
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        in6->sin6_family = AF_INET6;
        inet_pton(AF_INET6, addr, &in6->sin6_addr);
        len = sizeof *in6;
    }
    fd = socket(family, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, len) != 0 || listen(fd, 16) != 0) {
        close(fd);
        return -1;
    }
    len = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &len);
    snprintf(port, port_size, "%u",
             (unsigned)ntohs(family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                               : ((struct sockaddr_in6 *)&ss)->sin6_port));
    return fd;
}

static int listen_loopback(char *port, size_t port_size)
{
    return listen_on(AF_INET, "127.0.0.1", port, port_size);
}

/* A port nothing listens on: bound once to learn a free number, then freed. */
static void closed_port(char *port, size_t port_size)
{
    int fd = listen_loopback(port, port_size);
    close(fd);
}

/* Connects n to a fresh listener and hands back the accepted peer socket;
 * loopback connects complete through the backlog, so no second process is
 * needed when the peer only has to sit still or close. */
static int connect_pair(smtp_net *n)
{
    char port[16];
    int lfd = listen_loopback(port, sizeof port);
    int peer = -1;

    smtp_net_init(n);
    if (lfd >= 0 && smtp_net_connect(n, "127.0.0.1", port, smtp_net_now() + 5) == SMTP_OK)
        peer = accept(lfd, NULL, NULL);
    if (lfd >= 0)
        close(lfd);
    return peer;
}

/* Close with SO_LINGER 0 so the peer sees a reset, not an orderly FIN. */
static void close_with_reset(int fd)
{
    struct linger lg;

    lg.l_onoff = 1;
    lg.l_linger = 0;
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

static void sleep_ms(long ms)
{
    struct timespec ts;

    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* stdout must be flushed before fork() or buffered TAP lines print twice. */
static pid_t fork_flushed(void)
{
    fflush(stdout);
    fflush(stderr);
    return fork();
}

/* Exit status of a child, or -1 if it did not exit normally; the signal
 * number is reported so a SIGPIPE death is visible in the output. */
static int wait_child(pid_t pid)
{
    int status;

    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return -1;
    if (WIFSIGNALED(status)) {
        printf("# child %d killed by signal %d\n", (int)pid, WTERMSIG(status));
        return -1;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int within_timeout(double elapsed)
{
    return elapsed >= TIMEOUT_S && elapsed <= TIMEOUT_S + TIMEOUT_SLACK;
}

static int send_all(smtp_net *n, const char *p, size_t len, double deadline)
{
    while (len > 0) {
        ssize_t r = smtp_net_send(n, p, len, deadline);
        if (r < 0)
            return (int)r;
        p += r;
        len -= (size_t)r;
    }
    return SMTP_OK;
}

/* ---- tests --------------------------------------------------------------- */

static void test_init_and_close(void)
{
    smtp_net n;
    char c;

    smtp_net_init(&n);
    CHECK(n.fd == -1 && n.errmsg[0] == '\0' && n.peer[0] == '\0', "init: closed, empty strings");
    smtp_net_close(&n);
    smtp_net_close(&n);
    CHECK(n.fd == -1, "close is idempotent");
    CHECK(smtp_net_recv(&n, &c, 1, 0) == SMTP_E_IO, "recv when not connected is SMTP_E_IO");
    CHECK(strstr(n.errmsg, "not connected") != NULL, "  ... and says so");
}

/* Echo peer in a child: reads one CRLF-terminated line, writes it back. */
static void echo_one_line(int lfd)
{
    char buf[256];
    size_t got = 0;
    int fd = accept(lfd, NULL, NULL);

    if (fd < 0)
        _exit(2);
    while (got < sizeof buf && (got < 2 || memcmp(buf + got - 2, "\r\n", 2) != 0)) {
        ssize_t r = read(fd, buf + got, sizeof buf - got);
        if (r <= 0)
            _exit(3);
        got += (size_t)r;
    }
    if (write(fd, buf, got) != (ssize_t)got)
        _exit(4);
    close(fd);
    _exit(0);
}

static void test_round_trip(void)
{
    static const char line[] = "EHLO client.example\r\n";
    char port[16], want_peer[64], buf[64];
    size_t got = 0;
    smtp_net n;
    int lfd = listen_loopback(port, sizeof port);
    int r, one = 0, flags;
    socklen_t len = sizeof one;
    pid_t pid = fork_flushed();

    if (pid == 0)
        echo_one_line(lfd);
    close(lfd);

    smtp_net_init(&n);
    r = smtp_net_connect(&n, "127.0.0.1", port, smtp_net_now() + 5);
    CHECK(r == SMTP_OK, "round trip: connect");
    CHECK(n.errmsg[0] == '\0', "round trip: no error text after success");
    snprintf(want_peer, sizeof want_peer, "127.0.0.1:%s", port);
    CHECK(strcmp(n.peer, want_peer) == 0, "round trip: peer is numeric addr:port");
    getsockopt(n.fd, IPPROTO_TCP, TCP_NODELAY, &one, &len);
    CHECK(one != 0, "round trip: TCP_NODELAY is set");
    flags = fcntl(n.fd, F_GETFL);
    CHECK(flags >= 0 && (flags & O_NONBLOCK), "round trip: socket is non-blocking");
    flags = fcntl(n.fd, F_GETFD);
    CHECK(flags >= 0 && (flags & FD_CLOEXEC), "round trip: socket is close-on-exec");

    r = send_all(&n, line, sizeof line - 1, smtp_net_now() + 5);
    CHECK(r == SMTP_OK, "round trip: send");
    /* Deadline 0 means none; the echo arrives, so this cannot hang. */
    while (got < sizeof line - 1) {
        ssize_t k = smtp_net_recv(&n, buf + got, sizeof buf - got, 0);
        if (k < 0)
            break;
        got += (size_t)k;
    }
    CHECK_MEM(buf, got, line, sizeof line - 1, "round trip: echo received (no deadline)");
    CHECK(smtp_net_recv(&n, buf, sizeof buf, smtp_net_now() + 5) == SMTP_E_CLOSED,
          "round trip: end of stream after the echo");
    smtp_net_close(&n);
    CHECK(n.fd == -1, "round trip: closed");
    CHECK(wait_child(pid) == 0, "round trip: echo peer exited cleanly");
}

static void test_zero_length(void)
{
    smtp_net n;
    char c = 'x';
    int peer = connect_pair(&n);

    CHECK(smtp_net_send(&n, &c, 0, 0) == SMTP_E_ARGUMENT, "zero-length send is rejected");
    CHECK(smtp_net_recv(&n, &c, 0, 0) == SMTP_E_ARGUMENT, "zero-length recv is rejected");
    smtp_net_close(&n);
    close(peer);
}

static void test_recv_timeout(void)
{
    smtp_net n;
    char buf[16];
    int peer = connect_pair(&n);
    double start = smtp_net_now();
    ssize_t r = smtp_net_recv(&n, buf, sizeof buf, start + TIMEOUT_S);
    double elapsed = smtp_net_now() - start;

    CHECK(peer >= 0, "recv timeout: connected");
    CHECK(r == SMTP_E_TIMEOUT, "recv timeout: SMTP_E_TIMEOUT from a silent peer");
    printf("# recv timeout after %.4f s (deadline %.1f s)\n", elapsed, TIMEOUT_S);
    CHECK(within_timeout(elapsed), "recv timeout: honoured within 10%");
    CHECK(strcmp(n.errmsg, "timed out waiting for data") == 0, "recv timeout: message");

    start = smtp_net_now();
    r = smtp_net_recv(&n, buf, sizeof buf, start - 1);
    CHECK(r == SMTP_E_TIMEOUT && smtp_net_now() - start < 0.05,
          "recv with a past deadline times out at once");
    smtp_net_close(&n);
    close(peer);
}

static void test_connect_refused(void)
{
    char port[16], want[64];
    smtp_net n;
    int r;

    closed_port(port, sizeof port);
    smtp_net_init(&n);
    r = smtp_net_connect(&n, "127.0.0.1", port, smtp_net_now() + 5);
    CHECK(r == SMTP_E_CONNECT, "closed port: SMTP_E_CONNECT");
    printf("# %s\n", n.errmsg);
    snprintf(want, sizeof want, "connect to 127.0.0.1:%s: ", port);
    CHECK(strncmp(n.errmsg, want, strlen(want)) == 0, "closed port: message names the address");
    CHECK(strstr(n.errmsg, strerror(ECONNREFUSED)) != NULL, "closed port: message gives the reason");
    CHECK(n.fd == -1 && n.peer[0] == '\0', "closed port: nothing left open");
}

#ifdef __linux__
/* Linux drops SYNs while a listener's accept queue is full, so with a
 * backlog of 0 and nobody accepting, a later connect can only time out. */
static void test_connect_timeout(void)
{
    char port[16], want[64];
    smtp_net n[4];
    int lfd = listen_loopback(port, sizeof port);
    int i, r = SMTP_OK;
    double elapsed = 0;

    listen(lfd, 0);
    for (i = 0; i < 4 && r != SMTP_E_TIMEOUT; i++) {
        double start = smtp_net_now();
        smtp_net_init(&n[i]);
        r = smtp_net_connect(&n[i], "127.0.0.1", port, start + TIMEOUT_S);
        elapsed = smtp_net_now() - start;
    }
    printf("# connect %d timed out after %.4f s: %s\n", i, elapsed, n[i - 1].errmsg);
    CHECK(r == SMTP_E_TIMEOUT, "connect timeout: SMTP_E_TIMEOUT when the SYN goes unanswered");
    CHECK(within_timeout(elapsed), "connect timeout: honoured within 10%");
    snprintf(want, sizeof want, "connect to 127.0.0.1:%s: timed out", port);
    CHECK(strcmp(n[i - 1].errmsg, want) == 0, "connect timeout: message names the address");
    CHECK(n[i - 1].fd == -1, "connect timeout: nothing left open");
    while (i-- > 0)
        smtp_net_close(&n[i]);
    close(lfd);
}
#endif

static void test_peer_closes(void)
{
    smtp_net n;
    char buf[16];
    int peer = connect_pair(&n);
    ssize_t r;

    close(peer);
    r = smtp_net_recv(&n, buf, sizeof buf, smtp_net_now() + 5);
    CHECK(r == SMTP_E_CLOSED, "peer closes: recv gives SMTP_E_CLOSED");
    CHECK(strcmp(n.errmsg, "connection closed by peer") == 0, "peer closes: message");
    smtp_net_close(&n);

    peer = connect_pair(&n);
    close_with_reset(peer);
    r = smtp_net_recv(&n, buf, sizeof buf, smtp_net_now() + 5);
    CHECK(r == SMTP_E_CLOSED, "peer resets: recv gives SMTP_E_CLOSED");
    smtp_net_close(&n);
}

/* Runs in a child so that a SIGPIPE kills only the child and is reported
 * as a failure, instead of silently ending the whole test run. After a
 * reset the first send fails with ECONNRESET, which never raises SIGPIPE;
 * only later sends hit EPIPE, so sending goes on after the first failure.
 * Exit status: 0 = SMTP_E_CLOSED throughout, 1 = other error, 2 = never
 * failed. */
static void send_until_failure(smtp_net *n)
{
    char chunk[1024];
    int i, failures = 0;

    memset(chunk, 'x', sizeof chunk);
    for (i = 0; i < 500 && failures < 3; i++) {
        ssize_t r = smtp_net_send(n, chunk, sizeof chunk, smtp_net_now() + 5);
        if (r < 0 && r != SMTP_E_CLOSED)
            _exit(1);
        if (r < 0)
            failures++;
        else
            sleep_ms(2);
    }
    _exit(failures == 3 ? 0 : 2);
}

static void check_send_after_close(int reset, const char *name)
{
    smtp_net n;
    int peer = connect_pair(&n);
    pid_t pid;

    if (reset)
        close_with_reset(peer);
    else
        close(peer);
    pid = fork_flushed();
    if (pid == 0)
        send_until_failure(&n);
    CHECK(wait_child(pid) == 0, name);
    smtp_net_close(&n);
}

static void test_send_to_closed_peer(void)
{
    check_send_after_close(0, "peer closed: send gives SMTP_E_CLOSED, no SIGPIPE");
    check_send_after_close(1, "peer reset: send gives SMTP_E_CLOSED, no SIGPIPE");
}

static void test_big_send_timeout(void)
{
    const size_t size = 8u << 20;
    char *big = malloc(size);
    size_t off = 0, total = 0;
    smtp_net n;
    int peer = connect_pair(&n);
    double start, elapsed;
    ssize_t r = 0;

    if (!big) {
        CHECK(0, "big send: allocate 8 MiB");
        return;
    }
    memset(big, 'a', size);
    start = smtp_net_now();
    /* The peer never reads, so the kernel buffers fill and send must give
     * up at the deadline; wrap round in case 8 MiB all fits (1 GiB cap). */
    while (total < (1u << 30)) {
        r = smtp_net_send(&n, big + off, size - off, start + TIMEOUT_S);
        if (r < 0)
            break;
        total += (size_t)r;
        off = (off + (size_t)r) % size;
    }
    elapsed = smtp_net_now() - start;
    printf("# big send: %zu bytes accepted, gave up after %.4f s\n", total, elapsed);
    CHECK(r == SMTP_E_TIMEOUT, "big send: SMTP_E_TIMEOUT against a peer that reads nothing");
    CHECK(total > 0 && total < size, "big send: short writes before the timeout");
    CHECK(within_timeout(elapsed), "big send: deadline honoured within 10%");
    CHECK(strcmp(n.errmsg, "timed out sending data") == 0, "big send: message");
    smtp_net_close(&n);
    close(peer);
    free(big);
}

/* Diagnostic only: shows whether the fall-through from ::1 is exercised on
 * this machine (it is when "localhost" also resolves to ::1). */
static void describe_localhost(void)
{
    struct addrinfo hints, *list, *ai;
    int v4 = 0, v6 = 0;

    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo("localhost", "25", &hints, &list) != 0)
        return;
    for (ai = list; ai; ai = ai->ai_next) {
        v4 += ai->ai_family == AF_INET;
        v6 += ai->ai_family == AF_INET6;
    }
    freeaddrinfo(list);
    printf("# localhost resolves to %d IPv4 and %d IPv6 address(es)%s\n", v4, v6,
           v6 ? "" : "; the ::1 fall-through is not exercised here");
}

static void test_connect_localhost(void)
{
    char port[16], want[64];
    smtp_net n;
    int lfd = listen_loopback(port, sizeof port);
    int r;

    describe_localhost();
    smtp_net_init(&n);
    r = smtp_net_connect(&n, "localhost", port, smtp_net_now() + 5);
    CHECK(r == SMTP_OK, "localhost: connects to the 127.0.0.1-only listener");
    snprintf(want, sizeof want, "127.0.0.1:%s", port);
    CHECK(strcmp(n.peer, want) == 0, "localhost: peer is 127.0.0.1");
    smtp_net_close(&n);
    close(lfd);
}

static void test_ipv6_addresses(void)
{
    char port[16], want[64];
    smtp_net n;
    int lfd = listen_loopback(port, sizeof port);
    int r;

    /* IPv4-only listener: ::1 must fail and be named in brackets. */
    smtp_net_init(&n);
    r = smtp_net_connect(&n, "::1", port, smtp_net_now() + 5);
    CHECK(r == SMTP_E_CONNECT, "::1 with an IPv4-only listener: SMTP_E_CONNECT");
    snprintf(want, sizeof want, "connect to [::1]:%s: ", port);
    CHECK(strncmp(n.errmsg, want, strlen(want)) == 0, "::1 failure names [::1]:port");
    close(lfd);

    lfd = listen_on(AF_INET6, "::1", port, sizeof port);
    if (lfd < 0) {
        printf("# no IPv6 loopback here; skipping the ::1 connect\n");
        return;
    }
    r = smtp_net_connect(&n, "::1", port, smtp_net_now() + 5);
    CHECK(r == SMTP_OK, "::1 listener: connect");
    snprintf(want, sizeof want, "[::1]:%s", port);
    CHECK(strcmp(n.peer, want) == 0, "::1 listener: peer is [::1]:port");
    smtp_net_close(&n);
    close(lfd);
}

static void test_unresolvable_host(void)
{
    static const char prefix[] = "cannot resolve host 'no-such-host.invalid': ";
    smtp_net n;
    double start = smtp_net_now(), elapsed;
    int r;

    smtp_net_init(&n);
    r = smtp_net_connect(&n, "no-such-host.invalid", "25", start + 5);
    elapsed = smtp_net_now() - start;
    printf("# %s (%.3f s)\n", n.errmsg, elapsed);
    CHECK(r == SMTP_E_CONNECT, "unresolvable host: SMTP_E_CONNECT");
    CHECK(strncmp(n.errmsg, prefix, sizeof prefix - 1) == 0 && n.errmsg[sizeof prefix - 1],
          "unresolvable host: message names the host and the reason");
    CHECK(elapsed < 3.0, "unresolvable host: fails quickly");
    CHECK(n.fd == -1, "unresolvable host: nothing left open");
}

int main(void)
{
    test_init_and_close();
    test_round_trip();
    test_zero_length();
    test_recv_timeout();
    test_connect_refused();
#ifdef __linux__
    test_connect_timeout();
#endif
    test_peer_closes();
    test_send_to_closed_peer();
    test_big_send_timeout();
    test_connect_localhost();
    test_ipv6_addresses();
    test_unresolvable_host();
    return check_done();
}
