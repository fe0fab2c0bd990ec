/* TLS client over smtp_net's non-blocking socket; see smtp_tls.h.
 *
 * Builds against OpenSSL 1.1.1 and 3.x: only APIs present since 1.1.0 are
 * used unguarded; 3.0-only names are behind #ifdef. */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE

#include "smtp_tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "smtp_error.h"
#include "smtp_net_private.h"

#if OPENSSL_VERSION_NUMBER < 0x10101000L
#error "lua-smtp needs OpenSSL 1.1.1 or later"
#endif

/* BIO type of the socket BIO below. A fixed value, not BIO_get_new_index():
 * that hands out indexes from a process-wide counter that runs out after
 * 127 calls (3.x returns -1 beyond BIO_TYPE_MASK), and a method is created
 * per session. 0x7d is below that counter's range and above every built-in
 * index; the type only matters to BIO_find_type(). DESCRIPTOR lets
 * SSL_get_fd() find the socket through BIO_C_GET_FD. */
#define SMTP_BIO_TYPE (0x7d | BIO_TYPE_SOURCE_SINK | BIO_TYPE_DESCRIPTOR)

/* Size of a name-check reason (smtp_tls_check_name's why). */
#define WHY_SIZE 256

struct smtp_tls_ctx {
    SSL_CTX *ctx;
    int verify;
};

struct smtp_tls_session {
    SSL_SESSION *sess;
    int verify;          /* the connection it came from verified the server */
    char servername[];   /* ... for this name ("" for none) */
};

struct smtp_tls {
    SSL_CTX *ctx;     /* a reference of its own */
    SSL *ssl;
    BIO_METHOD *meth;
    char *servername; /* the name sent and checked (a copy); NULL for none */
    SSL_SESSION *fresh; /* the latest session the server handed out */
    int fd;
    int verify;
    int broken;     /* a TLS or socket error ended it: its session is spoilt */
    int io_errno;   /* errno of the BIO's last failed send/recv, else 0 */
    int eof;        /* the BIO saw end of stream */
    int name_is_ip;         /* servername is an IP literal */
    int name_checked;       /* verify_cb matched the name */
    char name_why[WHY_SIZE]; /* verify_cb's reason for a mismatch, else "" */
};

/* ---- errors -------------------------------------------------------------- */

/* OpenSSL's readable reason for one packed error code ("wrong version
 * number", "tlsv1 alert protocol version", ...), else its full string. */
static const char *reason_text(unsigned long e, char *buf, size_t size)
{
    const char *r;

    if (e == 0)
        return "unknown error";
#ifdef ERR_SYSTEM_ERROR
    /* 3.x packs errno into system errors and has no string for them. */
    if (ERR_SYSTEM_ERROR(e))
        return strerror(ERR_GET_REASON(e));
#endif
    r = ERR_reason_error_string(e);
    if (r != NULL)
        return r;
    ERR_error_string_n(e, buf, size);
    return buf;
}

/* Fails with the oldest queued OpenSSL error (the root cause), then drops
 * the rest of the queue so nothing stale reaches a later message. */
static int fail_openssl(smtp_net *n, int code, const char *what)
{
    char buf[256];
    unsigned long e = ERR_get_error();
    int r = fail(n, code, "%s: %s", what, reason_text(e, buf, sizeof buf));

    ERR_clear_error();
    return r;
}

/* ---- socket BIO ---------------------------------------------------------- */

/* OpenSSL's own socket BIO writes with plain send()/write(), which raises
 * SIGPIPE on Linux when the peer is gone; this one passes MSG_NOSIGNAL and
 * records errno and end of stream for the error classification below. */

static int bio_sock_write(BIO *b, const char *buf, int len)
{
    smtp_tls *t = BIO_get_data(b);
    ssize_t r;

    BIO_clear_retry_flags(b);
    if (len <= 0)
        return 0;
    r = send(t->fd, buf, (size_t)len, MSG_NOSIGNAL);
    if (r >= 0)
        return (int)r;
    if (errno == EINTR || smtp_net_would_block(errno)) {
        BIO_set_retry_write(b);
    } else {
        t->io_errno = errno;
    }
    return -1;
}

static int bio_sock_read(BIO *b, char *buf, int len)
{
    smtp_tls *t = BIO_get_data(b);
    ssize_t r;

    BIO_clear_retry_flags(b);
    if (len <= 0)
        return 0;
    r = recv(t->fd, buf, (size_t)len, 0);
    if (r > 0)
        return (int)r;
    if (r == 0) {
        t->eof = 1;
        return 0;
    }
    if (errno == EINTR || smtp_net_would_block(errno))
        BIO_set_retry_read(b);
    else
        t->io_errno = errno;
    return -1;
}

static int bio_sock_puts(BIO *b, const char *s)
{
    size_t len = strlen(s);

    return bio_sock_write(b, s, len > INT_MAX ? INT_MAX : (int)len);
}

/* Only what libssl asks of a transport; everything else (kTLS queries,
 * pending counts) is "not supported", which libssl handles. */
static long bio_sock_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    smtp_tls *t = BIO_get_data(b);

    (void)num;
    switch (cmd) {
    case BIO_CTRL_FLUSH: /* writes go straight to the socket */
        return 1;
    case BIO_C_GET_FD:
        if (ptr != NULL)
            *(int *)ptr = t->fd;
        return t->fd;
    case BIO_CTRL_GET_CLOSE: /* the socket belongs to smtp_net */
        return BIO_NOCLOSE;
    case BIO_CTRL_SET_CLOSE:
        return 1;
    case BIO_CTRL_EOF:
        return t->eof;
    default:
        return 0;
    }
}

static BIO_METHOD *bio_sock_method(void)
{
    BIO_METHOD *m = BIO_meth_new(SMTP_BIO_TYPE, "lua-smtp socket");

    if (m == NULL)
        return NULL;
    if (!BIO_meth_set_write(m, bio_sock_write) || !BIO_meth_set_read(m, bio_sock_read) ||
        !BIO_meth_set_puts(m, bio_sock_puts) || !BIO_meth_set_ctrl(m, bio_sock_ctrl)) {
        BIO_meth_free(m);
        return NULL;
    }
    return m;
}

/* ---- error classification ------------------------------------------------ */

static int is_unexpected_eof(unsigned long e)
{
#ifdef SSL_R_UNEXPECTED_EOF_WHILE_READING
    /* OpenSSL 3.x reports a missing close_notify this way; 1.1.1 gives
     * SSL_ERROR_SYSCALL with errno 0 instead (t->eof covers both). */
    return ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING;
#else
    (void)e;
    return 0;
#endif
}

/* A system error OpenSSL queued itself: the errno path below reports it. */
static int is_system_error(unsigned long e)
{
#ifdef ERR_SYSTEM_ERROR
    return ERR_SYSTEM_ERROR(e);
#else
    return ERR_GET_LIB(e) == ERR_LIB_SYS;
#endif
}

/* Turns a failed SSL_connect/SSL_read/SSL_write (ssl_err from
 * SSL_get_error, not WANT_*) into an SMTP_E_* code and message. what is the
 * operation for the message ("TLS handshake failed", "TLS error"). */
static int classify(smtp_tls *t, smtp_net *n, int ssl_err, const char *what, const char *servername)
{
    char buf[256];
    unsigned long e = ERR_peek_error();
    int r, saved;

    t->broken = 1;
    if (ssl_err == SSL_ERROR_SSL && t->verify) {
        long vr = SSL_get_verify_result(t->ssl);

        if (vr != X509_V_OK) {
            const char *why = X509_verify_cert_error_string(vr);
            if ((vr == X509_V_ERR_HOSTNAME_MISMATCH || vr == X509_V_ERR_IP_ADDRESS_MISMATCH) &&
                t->name_why[0] != '\0')
                r = fail(n, SMTP_E_TLS, "certificate verify failed: %s", t->name_why);
            else if ((vr == X509_V_ERR_HOSTNAME_MISMATCH || vr == X509_V_ERR_IP_ADDRESS_MISMATCH) &&
                     servername != NULL)
                r = fail(n, SMTP_E_TLS, "certificate verify failed: %s (server name '%s')", why,
                         servername);
            else
                r = fail(n, SMTP_E_TLS, "certificate verify failed: %s", why);
            ERR_clear_error();
            return r;
        }
    }
    if (ssl_err == SSL_ERROR_ZERO_RETURN) {
        r = fail(n, SMTP_E_CLOSED, "connection closed by peer (TLS close_notify)");
    } else if (e != 0 && !is_unexpected_eof(e) && !is_system_error(e)) {
        r = fail(n, SMTP_E_TLS, "%s: %s", what, reason_text(e, buf, sizeof buf));
    } else if (t->eof || is_unexpected_eof(e) ||
               (ssl_err == SSL_ERROR_SYSCALL && t->io_errno == 0)) {
        r = fail(n, SMTP_E_CLOSED, "connection closed by peer without TLS close_notify");
    } else if (t->io_errno != 0) {
        errno = t->io_errno;
        if (smtp_net_peer_gone(errno))
            r = fail(n, SMTP_E_CLOSED, "connection closed by peer (%s)", strerror(errno));
        else
            r = fail(n, SMTP_E_IO, "%s: %s", what, strerror(errno));
    } else {
        r = fail(n, SMTP_E_TLS, "%s: SSL error %d", what, ssl_err);
    }
    saved = errno;
    ERR_clear_error();
    errno = saved;
    return r;
}

/* Servers that write a reply in pieces (Postfix writes its handshake
 * flight, and a TLS 1.3 session ticket just after the client, done with the
 * handshake, has sent its next command) have each later piece held by
 * Nagle's algorithm until the client ACKs the earlier one, and the client,
 * in the interactive mode Linux enters after a few exchanges, delays that
 * ACK by 40 ms. Leaving delayed-ACK mode before each wait for the server
 * ACKs every piece at once. Linux only; elsewhere, and on a non-TCP socket,
 * nothing. */
static void quick_ack(int fd)
{
#ifdef TCP_QUICKACK
    int one = 1;

    (void)setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
#else
    (void)fd;
#endif
}

/* Waits in the direction OpenSSL asked for. 1: retry the call; otherwise an
 * SMTP_E_* code (with message). The deadline is checked before waiting, so
 * a peer trickling bytes cannot stretch a call past it. */
static int wait_for(smtp_tls *t, smtp_net *n, int ssl_err, double deadline, const char *timeout_msg)
{
    int w;

    if (smtp_net_deadline_passed(deadline))
        return fail(n, SMTP_E_TIMEOUT, "%s", timeout_msg);
    if (ssl_err != SSL_ERROR_WANT_WRITE)
        quick_ack(t->fd);
    w = smtp_net_wait(t->fd, ssl_err == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN, deadline);
    if (w == 0)
        return 1;
    if (w == SMTP_E_TIMEOUT)
        return fail(n, w, "%s", timeout_msg);
    return fail(n, w, "poll: %s", strerror(errno));
}

/* ---- the server name (RFC 9525) ------------------------------------------ */

/* "[::1]" and "::1" and "192.0.2.1" are IP literals; copies the bare
 * address into ip (size >= INET6_ADDRSTRLEN + 1) and returns 1 if so. */
static int ip_literal(const char *name, char *ip, size_t size)
{
    unsigned char addr[sizeof(struct in6_addr)];
    size_t len = strlen(name);

    if (len >= 2 && name[0] == '[' && name[len - 1] == ']') {
        name++;
        len -= 2;
    }
    if (len == 0 || len >= size)
        return 0;
    memcpy(ip, name, len);
    ip[len] = '\0';
    return inet_pton(AF_INET, ip, addr) == 1 || inet_pton(AF_INET6, ip, addr) == 1;
}

/* The one rule for matching the server name against a certificate, for both
 * transports: the C one calls it from verify_cb during the handshake, the
 * OpenResty one (where nginx does the TLS) through smtp_tls_check_name.
 *  - A host name matches only a dNSName subjectAltName; a wildcard only as
 *    the whole left-most label ("*.example.com" matches "mail.example.com",
 *    not "a.b.example.com"); partial wildcards ("m*.example.com") never.
 *  - An IPv4 or IPv6 literal matches only an iPAddress subjectAltName, never
 *    a dNSName that spells the address.
 *  - The subject CN is never used, not even when the certificate has no
 *    subjectAltName at all (RFC 9525 dropped RFC 6125's CN fallback). */
#define NAME_FLAGS (X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS | X509_CHECK_FLAG_NEVER_CHECK_SUBJECT)

/* Whether a dNSName of the certificate spells the address ip: what RFC 9525
 * refuses and what is worth telling the user about. */
static int dns_name_spells(const GENERAL_NAMES *sans, const char *ip)
{
    size_t len = strlen(ip);
    int i;

    for (i = 0; i < sk_GENERAL_NAME_num(sans); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);

        if (g->type == GEN_DNS && ASN1_STRING_length(g->d.dNSName) == (int)len &&
            strncasecmp((const char *)ASN1_STRING_get0_data(g->d.dNSName), ip, len) == 0)
            return 1;
    }
    return 0;
}

/* 1 when cert is for servername; 0 when not, with the reason in why (size
 * > 0), e.g. "hostname mismatch (server name 'x')". Never leaves anything on
 * OpenSSL's error queue. */
static int name_matches(X509 *cert, const char *servername, char *why, size_t size)
{
    char ip[INET6_ADDRSTRLEN + 1];
    const char *what;
    GENERAL_NAMES *sans;
    int is_ip, r, crit = -1;

    why[0] = '\0';
    if (servername == NULL || servername[0] == '\0') {
        snprintf(why, size, "no server name to verify");
        return 0;
    }
    is_ip = ip_literal(servername, ip, sizeof ip);
    what = is_ip ? "IP address mismatch" : "hostname mismatch";
    /* X509_check_host() reads a leading dot as "any subdomain of". */
    if (!is_ip && servername[0] == '.') {
        snprintf(why, size, "%s (server name '%s'): not a host name", what, servername);
        return 0;
    }
    ERR_clear_error();
    if (is_ip)
        r = X509_check_ip_asc(cert, ip, NAME_FLAGS);
    else
        r = X509_check_host(cert, servername, strlen(servername), NAME_FLAGS, NULL);
    if (r == 1) {
        ERR_clear_error();
        return 1;
    }
    sans = X509_get_ext_d2i(cert, NID_subject_alt_name, &crit, NULL);
    if (r < 0)
        snprintf(why, size, "%s (server name '%s'): the certificate's names cannot be read", what,
                 servername);
    else if (crit == -1) /* no subjectAltName extension */
        snprintf(why, size,
                 "%s (server name '%s'): the certificate has no subjectAltName, and its"
                 " subject CN is not used (RFC 9525)",
                 what, servername);
    else if (is_ip && sans != NULL && dns_name_spells(sans, ip))
        snprintf(why, size,
                 "%s (server name '%s'): the certificate has %s as a DNS name only, which"
                 " does not certify an IP address (RFC 9525)",
                 what, servername, ip);
    else
        snprintf(why, size, "%s (server name '%s')", what, servername);
    GENERAL_NAMES_free(sans);
    ERR_clear_error();
    return 0;
}

/* OpenSSL calls this for every certificate of the chain, the leaf (depth 0)
 * last, with ok = 1 once everything it checks itself has passed; the name is
 * checked there, so chain errors (expired, unknown issuer ...) come first.
 * A mismatch fails the handshake as OpenSSL's own name check would, with
 * the verify result HOSTNAME_MISMATCH / IP_ADDRESS_MISMATCH and the reason
 * in t->name_why. */
static int verify_cb(int ok, X509_STORE_CTX *ctx)
{
    SSL *ssl;
    smtp_tls *t;
    X509 *cert;

    if (!ok || X509_STORE_CTX_get_error_depth(ctx) != 0)
        return ok;
    ssl = X509_STORE_CTX_get_ex_data(ctx, SSL_get_ex_data_X509_STORE_CTX_idx());
    t = ssl != NULL ? SSL_get_app_data(ssl) : NULL;
    cert = X509_STORE_CTX_get0_cert(ctx);
    if (t == NULL || cert == NULL || t->servername == NULL) {
        X509_STORE_CTX_set_error(ctx, X509_V_ERR_APPLICATION_VERIFICATION);
        return 0;
    }
    if (name_matches(cert, t->servername, t->name_why, sizeof t->name_why) == 1) {
        t->name_checked = 1;
        return 1;
    }
    X509_STORE_CTX_set_error(ctx, t->name_is_ip ? X509_V_ERR_IP_ADDRESS_MISMATCH
                                                : X509_V_ERR_HOSTNAME_MISMATCH);
    return 0;
}

/* After a successful handshake with verify on: verify_cb must have matched
 * the name. Should OpenSSL ever skip the callback for the leaf, the name is
 * checked here instead, so a handshake never succeeds unchecked. */
static int check_peer_name(smtp_tls *t, smtp_net *n)
{
    X509 *cert;
    int m;

    if (t->name_checked)
        return SMTP_OK;
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    cert = SSL_get1_peer_certificate(t->ssl);
#else
    cert = SSL_get_peer_certificate(t->ssl);
#endif
    if (cert == NULL)
        return fail(n, SMTP_E_TLS, "certificate verify failed: the server sent no certificate");
    m = name_matches(cert, t->servername, t->name_why, sizeof t->name_why);
    X509_free(cert);
    if (m != 1)
        return fail(n, SMTP_E_TLS, "certificate verify failed: %s", t->name_why);
    t->name_checked = 1;
    return SMTP_OK;
}

int smtp_tls_check_name(const void *der, size_t len, const char *servername, char *why,
                        size_t size)
{
    const unsigned char *p = der;
    X509 *cert;
    int r;

    if (size == 0)
        return SMTP_E_ARGUMENT;
    why[0] = '\0';
    if (der == NULL || len == 0 || len > LONG_MAX) {
        snprintf(why, size, "no server certificate to check");
        return SMTP_E_TLS;
    }
    ERR_clear_error();
    cert = d2i_X509(NULL, &p, (long)len);
    if (cert == NULL || p != (const unsigned char *)der + len) {
        X509_free(cert);
        ERR_clear_error();
        snprintf(why, size, "the server certificate cannot be parsed");
        return SMTP_E_TLS;
    }
    r = name_matches(cert, servername, why, size);
    X509_free(cert);
    return r;
}

/* ---- certificate details for a report --------------------------------- */

/* name as one line, RFC 2253, UTF-8 kept (not escaped as \XX). */
static void name_line(const X509_NAME *name, char *out, size_t size)
{
    BIO *b;
    char *p;
    long n;

    out[0] = '\0';
    if (name == NULL || (b = BIO_new(BIO_s_mem())) == NULL)
        return;
    if (X509_NAME_print_ex(b, name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) >= 0) {
        n = BIO_get_mem_data(b, &p);
        if (n > 0) {
            size_t len = (size_t)n < size - 1 ? (size_t)n : size - 1;
            size_t i;
            memcpy(out, p, len);
            out[len] = '\0';
            for (i = 0; i < len; i++)
                if (out[i] == '\0')
                    out[i] = '?';
        }
    }
    BIO_free(b);
}

/* One subjectAltName as "DNS:x" or "IP:x"; 0 for any other kind. */
static int san_text(const GENERAL_NAME *g, char *out, size_t size)
{
    if (g->type == GEN_DNS) {
        const unsigned char *d = ASN1_STRING_get0_data(g->d.dNSName);
        int len = ASN1_STRING_length(g->d.dNSName);
        size_t i, o = 4;
        memcpy(out, "DNS:", 4);
        for (i = 0; i < (size_t)(len > 0 ? len : 0) && o < size - 1; i++) {
            unsigned char c = d[i];
            out[o++] = (char)(c < 0x20 || c == 0x7f ? '?' : c);
        }
        out[o] = '\0';
        return 1;
    }
    if (g->type == GEN_IPADD) {
        const unsigned char *d = ASN1_STRING_get0_data(g->d.iPAddress);
        int len = ASN1_STRING_length(g->d.iPAddress);
        char ip[INET6_ADDRSTRLEN];
        if (!((len == 4 && inet_ntop(AF_INET, d, ip, sizeof ip)) ||
              (len == 16 && inet_ntop(AF_INET6, d, ip, sizeof ip))))
            snprintf(ip, sizeof ip, "(%d octets)", len);
        snprintf(out, size, "IP:%s", ip);
        return 1;
    }
    return 0;
}

int smtp_tls_cert_info(const void *der, size_t len, smtp_cert_info *out)
{
    const unsigned char *p = der;
    X509 *cert;
    GENERAL_NAMES *sans;
    const ASN1_TIME *na;
    struct tm tm;
    int i;

    memset(out, 0, sizeof *out);
    if (der == NULL || len == 0 || len > LONG_MAX)
        return SMTP_E_TLS;
    ERR_clear_error();
    cert = d2i_X509(NULL, &p, (long)len);
    if (cert == NULL || p != (const unsigned char *)der + len) {
        X509_free(cert);
        ERR_clear_error();
        return SMTP_E_TLS;
    }
    name_line(X509_get_subject_name(cert), out->subject, sizeof out->subject);
    name_line(X509_get_issuer_name(cert), out->issuer, sizeof out->issuer);
    na = X509_get0_notAfter(cert);
    memset(&tm, 0, sizeof tm);
    if (na != NULL && ASN1_TIME_to_tm(na, &tm) == 1 &&
        strftime(out->not_after, sizeof out->not_after, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        out->not_after[0] = '\0';
    sans = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    for (i = 0; sans != NULL && i < sk_GENERAL_NAME_num(sans); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        if (g->type != GEN_DNS && g->type != GEN_IPADD)
            continue;
        if (out->nsan >= SMTP_CERT_SAN_MAX) {
            out->san_more++;
            continue;
        }
        if (san_text(g, out->san[out->nsan], sizeof out->san[out->nsan]))
            out->nsan++;
    }
    GENERAL_NAMES_free(sans);
    X509_free(cert);
    ERR_clear_error();
    return SMTP_OK;
}

size_t smtp_tls_peer_der(const smtp_tls *t, unsigned char *buf, size_t size)
{
    X509 *cert;
    int n;

    if (t == NULL)
        return 0;
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    cert = SSL_get1_peer_certificate(t->ssl);
#else
    cert = SSL_get_peer_certificate(t->ssl);
#endif
    if (cert == NULL)
        return 0;
    n = i2d_X509(cert, NULL);
    if (n > 0 && buf != NULL && (size_t)n <= size) {
        unsigned char *q = buf;
        n = i2d_X509(cert, &q);
    }
    X509_free(cert);
    return n > 0 ? (size_t)n : 0;
}

/* ---- set-up -------------------------------------------------------------- */

void smtp_tls_opts_init(smtp_tls_opts *o)
{
    memset(o, 0, sizeof *o);
    o->verify = 1;
}

/* Never prompt on the terminal for a key passphrase (OpenSSL's default
 * callback reads /dev/tty, which would block a server process); an
 * encrypted key fails to load instead. */
static int no_passphrase(char *buf, int size, int rwflag, void *userdata)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)userdata;
    return 0;
}

static int load_trust(SSL_CTX *ctx, smtp_net *n, const smtp_tls_opts *o)
{
    ERR_clear_error();
    if (o->cafile == NULL && o->capath == NULL) {
        if (SSL_CTX_set_default_verify_paths(ctx) != 1)
            return fail_openssl(n, SMTP_E_TLS, "cannot load the system trust store");
        return SMTP_OK;
    }
    if (SSL_CTX_load_verify_locations(ctx, o->cafile, o->capath) != 1) {
        char what[200];
        if (o->cafile != NULL)
            snprintf(what, sizeof what, "cannot load CA file '%s'", o->cafile);
        else
            snprintf(what, sizeof what, "cannot load CA directory '%s'", o->capath);
        return fail_openssl(n, SMTP_E_TLS, what);
    }
    return SMTP_OK;
}

static int key_mismatch(smtp_net *n, const char *cert, const char *key)
{
    ERR_clear_error();
    return fail(n, SMTP_E_TLS, "client certificate '%s' and key '%s' do not match", cert, key);
}

static int load_client_cert(SSL_CTX *ctx, smtp_net *n, const smtp_tls_opts *o)
{
    char what[200];
    const char *key = o->key != NULL ? o->key : o->cert;

    if (o->cert == NULL) {
        if (o->key != NULL)
            return fail(n, SMTP_E_ARGUMENT, "client key given without a client certificate");
        return SMTP_OK;
    }
    SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
    ERR_clear_error();
    if (SSL_CTX_use_certificate_chain_file(ctx, o->cert) != 1) {
        snprintf(what, sizeof what, "cannot load client certificate '%s'", o->cert);
        return fail_openssl(n, SMTP_E_TLS, what);
    }
    ERR_clear_error();
    /* Loading the key already compares it with the certificate. */
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        unsigned long e = ERR_peek_error();
        if (ERR_GET_LIB(e) == ERR_LIB_X509 && (ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH ||
                                               ERR_GET_REASON(e) == X509_R_KEY_TYPE_MISMATCH))
            return key_mismatch(n, o->cert, key);
        snprintf(what, sizeof what, "cannot load client key '%s'", key);
        return fail_openssl(n, SMTP_E_TLS, what);
    }
    ERR_clear_error();
    if (SSL_CTX_check_private_key(ctx) != 1)
        return key_mismatch(n, o->cert, key);
    return SMTP_OK;
}

/* OpenSSL hands every new session of a connection here (client cache mode
 * without the internal store): kept in t->fresh until the caller takes it. */
static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    smtp_tls *t = SSL_get_app_data(ssl);

    if (t == NULL)
        return 0;
    SSL_SESSION_free(t->fresh);
    t->fresh = sess;
    return 1; /* the reference is ours */
}

static int make_ctx(SSL_CTX **out, int verify, smtp_net *n, const smtp_tls_opts *o)
{
    SSL_CTX *ctx;
    int r;

    ERR_clear_error();
    ctx = *out = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL)
        return fail_openssl(n, SMTP_E_TLS, "cannot create TLS context");
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1)
        return fail_openssl(n, SMTP_E_TLS, "cannot require TLS 1.2");
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION);
    /* Partial writes give smtp_net_send semantics (a short count instead
     * of all-or-nothing); a retry may pass the same bytes at another
     * address. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* Sessions go to new_session_cb, never into a cache of OpenSSL's: the
     * caller decides which connection may offer which session. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
    if (verify) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verify_cb);
        r = load_trust(ctx, n, o);
        if (r != SMTP_OK)
            return r;
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    return load_client_cert(ctx, n, o);
}

int smtp_tls_ctx_new(smtp_tls_ctx **out, smtp_net *n, const smtp_tls_opts *o)
{
    smtp_tls_opts defaults;
    smtp_tls_ctx *c;
    int r;

    *out = NULL;
    n->errmsg[0] = '\0';
    if (o == NULL) {
        smtp_tls_opts_init(&defaults);
        o = &defaults;
    }
    c = calloc(1, sizeof *c);
    if (c == NULL)
        return fail(n, SMTP_E_NOMEM, "out of memory");
    c->verify = o->verify != 0;
    r = make_ctx(&c->ctx, c->verify, n, o);
    if (r != SMTP_OK) {
        int saved = errno;
        smtp_tls_ctx_free(c);
        ERR_clear_error();
        errno = saved;
        return r;
    }
    *out = c;
    return SMTP_OK;
}

void smtp_tls_ctx_free(smtp_tls_ctx *c)
{
    if (c == NULL)
        return;
    SSL_CTX_free(c->ctx);
    free(c);
}

/* "dev:ino:size:mtime:ctime;" of one file, "-;" when it is not there. */
static size_t stamp_file(char *buf, size_t size, const char *path)
{
    struct stat st;
    int k;

    if (path == NULL || stat(path, &st) != 0)
        k = snprintf(buf, size, "-;");
    else
        k = snprintf(buf, size, "%lx:%lx:%lld:%lld:%lld;", (unsigned long)st.st_dev,
                     (unsigned long)st.st_ino, (long long)st.st_size, (long long)st.st_mtime,
                     (long long)st.st_ctime);
    if (k < 0)
        return 0;
    return (size_t)k < size ? (size_t)k : size - 1;
}

void smtp_tls_opts_stamp(const smtp_tls_opts *o, char *buf, size_t size)
{
    const char *files[4];
    size_t used = 0;
    int i, nfiles = 0;

    if (size == 0)
        return;
    buf[0] = '\0';
    if (o == NULL)
        return;
    if (o->verify && o->cafile == NULL && o->capath == NULL) {
        /* SSL_CTX_set_default_verify_paths: the environment may move them */
        const char *f = getenv(X509_get_default_cert_file_env());
        const char *d = getenv(X509_get_default_cert_dir_env());
        files[nfiles++] = f != NULL ? f : X509_get_default_cert_file();
        files[nfiles++] = d != NULL ? d : X509_get_default_cert_dir();
    } else if (o->verify) {
        files[nfiles++] = o->cafile;
        files[nfiles++] = o->capath;
    }
    files[nfiles++] = o->cert;
    files[nfiles++] = o->key;
    for (i = 0; i < nfiles && used + 1 < size; i++)
        used += stamp_file(buf + used, size - used, files[i]);
}

/* SNI, and the name verify_cb checks; a missing name with verify was
 * refused already. */
static int set_peer_name(smtp_tls *t, smtp_net *n, const char *servername)
{
    char ip[INET6_ADDRSTRLEN + 1];
    int is_ip;

    if (servername == NULL || servername[0] == '\0')
        return SMTP_OK;
    is_ip = ip_literal(servername, ip, sizeof ip);
    ERR_clear_error();
    /* RFC 6066 section 3: literal addresses are not permitted in SNI. */
    if (!is_ip && SSL_set_tlsext_host_name(t->ssl, servername) != 1)
        return fail_openssl(n, SMTP_E_TLS, "cannot set the TLS server name");
    /* Not OpenSSL's own check (SSL_set1_host): with verify, verify_cb
     * applies the rule of name_matches, the one the cosocket transport uses
     * too. The copy also labels the sessions this connection gets. */
    t->servername = strdup(servername);
    if (t->servername == NULL)
        return fail(n, SMTP_E_NOMEM, "out of memory");
    t->name_is_ip = is_ip;
    return SMTP_OK;
}

static int make_ssl(smtp_tls *t, smtp_net *n)
{
    BIO *bio;

    ERR_clear_error();
    t->meth = bio_sock_method();
    if (t->meth == NULL)
        return fail(n, SMTP_E_NOMEM, "cannot create the TLS socket BIO method");
    t->ssl = SSL_new(t->ctx);
    if (t->ssl == NULL)
        return fail_openssl(n, SMTP_E_TLS, "cannot create TLS session");
    SSL_set_app_data(t->ssl, t); /* for verify_cb */
    bio = BIO_new(t->meth);
    if (bio == NULL)
        return fail(n, SMTP_E_NOMEM, "cannot create the TLS socket BIO");
    BIO_set_data(bio, t);
    BIO_set_init(bio, 1);
    /* One BIO for both directions: SSL_set_bio then takes ownership of a
     * single reference, so no BIO_up_ref here. */
    SSL_set_bio(t->ssl, bio, bio);
    return SMTP_OK;
}

static int handshake(smtp_tls *t, smtp_net *n, const char *servername, double deadline)
{
    for (;;) {
        int r, err, w;

        t->io_errno = 0;
        ERR_clear_error();
        r = SSL_connect(t->ssl);
        if (r == 1)
            return SMTP_OK;
        err = SSL_get_error(t->ssl, r);
        if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE)
            return classify(t, n, err, "TLS handshake failed", servername);
        w = wait_for(t, n, err, deadline, "timed out during TLS handshake");
        if (w != 1)
            return w;
    }
}

void smtp_tls_free(smtp_tls *t)
{
    if (t == NULL)
        return;
    /* OpenSSL spoils the session of a connection freed without a shutdown
     * (ssl_clear_bad_session). A healthy one ends without close_notify only
     * because this function does no I/O: its session stays resumable. A
     * broken one keeps the rule, which also spoils the session object a
     * cache may hold. */
    if (t->ssl != NULL && !t->broken && SSL_is_init_finished(t->ssl))
        SSL_set_shutdown(t->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    /* The SSL owns the BIO, which uses the method: free in that order. */
    SSL_free(t->ssl);
    SSL_CTX_free(t->ctx);
    BIO_meth_free(t->meth);
    SSL_SESSION_free(t->fresh);
    free(t->servername);
    free(t);
}

/* A resumed handshake skips the certificate exchange and verify_cb: the
 * session must come from a verified connection, and the name is checked
 * again on the certificate it holds. */
static int check_resumed(smtp_tls *t, smtp_net *n)
{
    long vr = SSL_get_verify_result(t->ssl);

    if (vr != X509_V_OK)
        return fail(n, SMTP_E_TLS, "certificate verify failed: %s (resumed session)",
                    X509_verify_cert_error_string(vr));
    t->name_checked = 0;
    return check_peer_name(t, n);
}

/* Offers s when it was verified for this very name and verify setting.
 *
 * A copy is offered, not s itself: OpenSSL's client spends a TLS 1.3 ticket
 * on its first use (RFC 8446 C.4 "SHOULD NOT reuse", against observers
 * linking connections), and a server that does not renew tickets on
 * resumption (Postfix) would then get a full handshake every other
 * connection. For SMTP the linking is there anyway (the client's address,
 * and with STARTTLS its EHLO name in the clear before the handshake), while
 * each full handshake costs both sides the certificate signature and
 * verification. A server that refuses a reused ticket (anti-replay) simply
 * gets a full handshake and hands out a new one. */
static void offer_session(smtp_tls *t, const smtp_tls_session *s)
{
    const char *name = t->servername != NULL ? t->servername : "";
    SSL_SESSION *copy;

    if (s == NULL || s->verify != t->verify || strcmp(s->servername, name) != 0 ||
        !SSL_SESSION_is_resumable(s->sess))
        return;
    ERR_clear_error();
    copy = SSL_SESSION_dup(s->sess);
    if (copy == NULL || SSL_set_session(t->ssl, copy) != 1)
        ERR_clear_error(); /* a full handshake then */
    SSL_SESSION_free(copy); /* the SSL holds its own reference */
}

int smtp_tls_start_ctx(smtp_tls **out, smtp_net *n, smtp_tls_ctx *c, const char *servername,
                       const smtp_tls_session *resume, double deadline)
{
    smtp_tls *t;
    int r;

    *out = NULL;
    n->errmsg[0] = '\0';
    if (n->fd < 0) {
        errno = EBADF;
        return fail(n, SMTP_E_IO, "not connected");
    }
    if (c == NULL)
        return fail(n, SMTP_E_ARGUMENT, "no TLS context");
    t = calloc(1, sizeof *t);
    if (t == NULL)
        return fail(n, SMTP_E_NOMEM, "out of memory");
    t->fd = n->fd;
    t->verify = c->verify;
    if (t->verify && (servername == NULL || servername[0] == '\0')) {
        r = fail(n, SMTP_E_TLS, "no server name to verify");
    } else if (SSL_CTX_up_ref(c->ctx) != 1) {
        r = fail(n, SMTP_E_NOMEM, "out of memory");
    } else {
        t->ctx = c->ctx;
        r = make_ssl(t, n);
    }
    if (r == SMTP_OK)
        r = set_peer_name(t, n, servername);
    if (r == SMTP_OK) {
        offer_session(t, resume);
        r = handshake(t, n, servername, deadline);
    }
    if (r == SMTP_OK && t->verify)
        r = SSL_session_reused(t->ssl) ? check_resumed(t, n) : check_peer_name(t, n);
    if (r != SMTP_OK) {
        int saved = errno; /* SMTP_E_IO promises the failing call's errno */
        t->broken = 1;
        smtp_tls_free(t);
        ERR_clear_error();
        errno = saved;
        return r;
    }
    n->errmsg[0] = '\0';
    *out = t;
    return SMTP_OK;
}

int smtp_tls_start(smtp_tls **out, smtp_net *n, const smtp_tls_opts *o, double deadline)
{
    smtp_tls_opts defaults;
    smtp_tls_ctx *c;
    int r;

    *out = NULL;
    n->errmsg[0] = '\0';
    if (o == NULL) {
        smtp_tls_opts_init(&defaults);
        o = &defaults;
    }
    if (n->fd < 0) {
        errno = EBADF;
        return fail(n, SMTP_E_IO, "not connected");
    }
    /* Refused before any OpenSSL work: nothing to load for a lost cause. */
    if (o->verify && (o->servername == NULL || o->servername[0] == '\0'))
        return fail(n, SMTP_E_TLS, "no server name to verify");
    r = smtp_tls_ctx_new(&c, n, o);
    if (r != SMTP_OK)
        return r;
    r = smtp_tls_start_ctx(out, n, c, o->servername, NULL, deadline);
    smtp_tls_ctx_free(c); /* the session keeps its own reference */
    return r;
}

int smtp_tls_reused(const smtp_tls *t)
{
    return t != NULL && t->ssl != NULL && SSL_session_reused(t->ssl) ? 1 : 0;
}

int smtp_tls_has_session(const smtp_tls *t)
{
    return t != NULL && t->fresh != NULL && !t->broken;
}

smtp_tls_session *smtp_tls_take_session(smtp_tls *t)
{
    const char *name;
    smtp_tls_session *s;
    size_t len;

    if (!smtp_tls_has_session(t))
        return NULL;
    name = t->servername != NULL ? t->servername : "";
    len = strlen(name);
    s = malloc(sizeof *s + len + 1);
    if (s != NULL) {
        s->sess = t->fresh;
        s->verify = t->verify;
        memcpy(s->servername, name, len + 1);
    } else {
        SSL_SESSION_free(t->fresh);
    }
    t->fresh = NULL;
    return s;
}

int smtp_tls_session_resumable(const smtp_tls_session *s)
{
    return s != NULL && SSL_SESSION_is_resumable(s->sess) ? 1 : 0;
}

void smtp_tls_session_free(smtp_tls_session *s)
{
    if (s == NULL)
        return;
    SSL_SESSION_free(s->sess);
    free(s);
}

/* ---- transfer ------------------------------------------------------------ */

static int check_transfer_args(smtp_tls *t, smtp_net *n, size_t len)
{
    if (n->fd < 0 || t == NULL) {
        errno = EBADF;
        return fail(n, SMTP_E_IO, "not connected");
    }
    if (n->fd != t->fd)
        return fail(n, SMTP_E_ARGUMENT, "TLS session belongs to another socket");
    /* The API promises at least one byte on success. */
    if (len == 0)
        return fail(n, SMTP_E_ARGUMENT, "zero-length transfer");
    return SMTP_OK;
}

ssize_t smtp_tls_send(smtp_tls *t, smtp_net *n, const void *buf, size_t len, double deadline)
{
    int r = check_transfer_args(t, n, len);

    if (r != SMTP_OK)
        return r;
    if (len > INT_MAX)
        len = INT_MAX;
    for (;;) {
        int k, err;

        t->io_errno = 0;
        ERR_clear_error();
        k = SSL_write(t->ssl, buf, (int)len);
        if (k > 0)
            return k;
        err = SSL_get_error(t->ssl, k);
        if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE)
            return classify(t, n, err, "TLS error", NULL);
        r = wait_for(t, n, err, deadline, "timed out sending data");
        if (r != 1)
            return r;
    }
}

ssize_t smtp_tls_recv(smtp_tls *t, smtp_net *n, void *buf, size_t len, double deadline)
{
    int r = check_transfer_args(t, n, len);

    if (r != SMTP_OK)
        return r;
    if (len > INT_MAX)
        len = INT_MAX;
    for (;;) {
        int k, err;

        /* SSL_read comes before any wait: it returns what OpenSSL already
         * holds (SSL_pending) and whatever the socket has, without poll. */
        t->io_errno = 0;
        ERR_clear_error();
        k = SSL_read(t->ssl, buf, (int)len);
        if (k > 0)
            return k;
        err = SSL_get_error(t->ssl, k);
        if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE)
            return classify(t, n, err, "TLS error", NULL);
        r = wait_for(t, n, err, deadline, "timed out waiting for data");
        if (r != 1)
            return r;
    }
}

/* ---- information --------------------------------------------------------- */

size_t smtp_tls_pending(const smtp_tls *t)
{
    int p;

    if (t == NULL)
        return 0;
    p = SSL_pending(t->ssl);
    return p > 0 ? (size_t)p : 0;
}

const char *smtp_tls_version(const smtp_tls *t)
{
    return t != NULL ? SSL_get_version(t->ssl) : "";
}

const char *smtp_tls_cipher(const smtp_tls *t)
{
    const char *name;

    if (t == NULL)
        return "";
    name = SSL_CIPHER_get_name(SSL_get_current_cipher(t->ssl));
    return name != NULL ? name : "";
}
