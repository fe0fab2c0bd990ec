/* Tests for smtp_tls against real TLS peers on loopback. Certificates are
 * made at test time with the openssl command into a mkdtemp directory (a
 * test CA, a second CA, good / expired / wrong-host / self-signed server
 * certificates and a client certificate); every server is a forked child
 * running a small OpenSSL server on a listener bound to port 0, so the test
 * needs no network, no fixed ports and no fixtures.
 *
 * SIGPIPE is deliberately left at its default action in the client: smtp_tls
 * promises it is never raised. */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "check.h"
#include "smtp_error.h"
#include "smtp_net.h"
#include "smtp_tls.h"

/* Every deadline test allows 10% over; 0.5 s keeps that above scheduling
 * noise under ASan on a loaded machine. */
#define TIMEOUT_S 0.5

static char dir[64];

/* ---- helpers ------------------------------------------------------------- */

static const char *path(const char *file)
{
    static char buf[8][128];
    static int next;
    char *p = buf[next++ % 8];

    snprintf(p, sizeof buf[0], "%s/%s", dir, file);
    return p;
}

static int contains_nocase(const char *hay, const char *needle)
{
    size_t n = strlen(needle);

    for (; *hay; hay++)
        if (strncasecmp(hay, needle, n) == 0)
            return 1;
    return 0;
}

static void sleep_ms(long ms)
{
    struct timespec ts;

    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static int listen_loopback(char *port, size_t port_size)
{
    struct sockaddr_in in;
    socklen_t len = sizeof in;
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

    if (fd < 0)
        return -1;
    memset(&in, 0, sizeof in);
    in.sin_family = AF_INET;
    in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&in, sizeof in) != 0 || listen(fd, 16) != 0) {
        close(fd);
        return -1;
    }
    getsockname(fd, (struct sockaddr *)&in, &len);
    snprintf(port, port_size, "%u", (unsigned)ntohs(in.sin_port));
    return fd;
}

/* stdout must be flushed before fork() or buffered TAP lines print twice. */
static pid_t fork_flushed(void)
{
    fflush(stdout);
    fflush(stderr);
    return fork();
}

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

static void kill_child(pid_t pid)
{
    int status;

    kill(pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
}

/* ---- certificates -------------------------------------------------------- */

static const char config[] =
    "[ req ]\n"
    "distinguished_name = dn\n"
    "prompt = no\n"
    "[ dn ]\n"
    "CN = unused\n"
    "[ v3_ca ]\n"
    "basicConstraints = critical,CA:TRUE\n"
    "keyUsage = critical,keyCertSign,cRLSign\n"
    "subjectKeyIdentifier = hash\n"
    "[ v3_good ]\n"
    "basicConstraints = CA:FALSE\n"
    "keyUsage = critical,digitalSignature,keyEncipherment\n"
    "extendedKeyUsage = serverAuth\n"
    "subjectAltName = DNS:localhost,IP:127.0.0.1\n"
    "[ v3_nosan ]\n"
    "basicConstraints = CA:FALSE\n"
    "keyUsage = critical,digitalSignature,keyEncipherment\n"
    "extendedKeyUsage = serverAuth\n"
    "[ v3_dnsip ]\n"
    "basicConstraints = CA:FALSE\n"
    "keyUsage = critical,digitalSignature,keyEncipherment\n"
    "extendedKeyUsage = serverAuth\n"
    "subjectAltName = DNS:127.0.0.1,DNS:*.example.test,DNS:m*.example.org\n"
    "[ v3_wrong ]\n"
    "basicConstraints = CA:FALSE\n"
    "keyUsage = critical,digitalSignature,keyEncipherment\n"
    "extendedKeyUsage = serverAuth\n"
    "subjectAltName = DNS:wrong.example\n"
    /* No keyUsage: with one lacking keyCertSign OpenSSL does not treat the
     * certificate as self-signed and reports a missing issuer instead. */
    "[ v3_self ]\n"
    "basicConstraints = CA:FALSE\n"
    "subjectAltName = DNS:localhost,IP:127.0.0.1\n"
    "[ v3_client ]\n"
    "basicConstraints = CA:FALSE\n"
    "keyUsage = critical,digitalSignature\n"
    "extendedKeyUsage = clientAuth\n"
    "[ ca ]\n"
    "default_ca = testca\n"
    "[ testca ]\n"
    "database = ./index.txt\n"
    "new_certs_dir = .\n"
    "serial = ./serial\n"
    "default_md = sha256\n"
    "policy = policy_any\n"
    "unique_subject = no\n"
    "copy_extensions = none\n"
    "[ policy_any ]\n"
    "commonName = supplied\n";

/* `openssl x509` cannot date a certificate in the past, so the expired one
 * comes from `openssl ca` with explicit start and end dates. */
static const char script[] =
    "set -e\n"
    "K='genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256'\n"
    "openssl $K -out ca.key\n"
    "openssl $K -out ca2.key\n"
    "openssl $K -out srv.key\n"
    "openssl $K -out cli.key\n"
    "openssl req -config cnf -new -x509 -sha256 -days 3650 -key ca.key"
    " -subj '/CN=lua-smtp test CA' -extensions v3_ca -out ca.pem\n"
    "openssl req -config cnf -new -x509 -sha256 -days 3650 -key ca2.key"
    " -subj '/CN=lua-smtp other CA' -extensions v3_ca -out ca2.pem\n"
    "openssl req -config cnf -new -key srv.key -subj /CN=localhost -out srv.csr\n"
    "openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -set_serial 2 -days 3650"
    " -sha256 -extfile cnf -extensions v3_good -out good.pem\n"
    "openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -set_serial 3 -days 3650"
    " -sha256 -extfile cnf -extensions v3_wrong -out wrong.pem\n"
    "openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -set_serial 5 -days 3650"
    " -sha256 -extfile cnf -extensions v3_nosan -out nosan.pem\n"
    "openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -set_serial 6 -days 3650"
    " -sha256 -extfile cnf -extensions v3_dnsip -out dnsip.pem\n"
    "openssl req -config cnf -new -x509 -sha256 -days 3650 -key srv.key -subj /CN=localhost"
    " -extensions v3_self -out self.pem\n"
    ": > index.txt\n"
    "echo 10 > serial\n"
    "openssl ca -config cnf -batch -notext -in srv.csr -cert ca.pem -keyfile ca.key"
    " -startdate 20200101000000Z -enddate 20200102000000Z -extensions v3_good -out expired.pem\n"
    "openssl req -config cnf -new -key cli.key -subj /CN=test-client -out cli.csr\n"
    "openssl x509 -req -in cli.csr -CA ca.pem -CAkey ca.key -set_serial 4 -days 3650"
    " -sha256 -extfile cnf -extensions v3_client -out client.pem\n"
    "openssl pkey -in cli.key -aes128 -passout pass:secret -out enc.key\n"
    "cat client.pem cli.key > combined.pem\n";

static int make_certificates(void)
{
    char cmd[256];
    FILE *f;
    int ok;

    strcpy(dir, "/tmp/test_tls.XXXXXX");
    if (mkdtemp(dir) == NULL)
        return 0;
    f = fopen(path("cnf"), "w");
    if (f == NULL)
        return 0;
    fputs(config, f);
    fclose(f);
    f = fopen(path("gen.sh"), "w");
    if (f == NULL)
        return 0;
    fputs(script, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "cd '%s' && sh gen.sh > gen.log 2>&1 < /dev/null", dir);
    ok = system(cmd) == 0;
    if (!ok) {
        snprintf(cmd, sizeof cmd, "sed 's/^/# /' '%s/gen.log'", dir);
        if (system(cmd) != 0)
            printf("# (no log)\n");
    }
    return ok;
}

static void remove_certificates(void)
{
    char cmd[128];

    if (dir[0] == '\0')
        return;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        printf("# could not remove %s\n", dir);
}

/* ---- the server ---------------------------------------------------------- */

enum {
    SRV_ECHO,        /* greet, echo one line, close_notify, close */
    SRV_ABRUPT,      /* greet, echo one line, close without close_notify */
    SRV_GREET_CLOSE, /* greet, close at once (whatever the client sends) */
    SRV_GREET_HOLD   /* greet, then read nothing until killed */
};

struct srv {
    const char *cert, *key;
    const char *client_ca; /* non-NULL: a client certificate is required */
    int max_version;       /* 0: OpenSSL's default; TLS1_1_VERSION: only 1.0/1.1 */
    int mode;
};

/* Records the SNI the client sent; the callback is the one place every
 * OpenSSL version reports it reliably. */
static int sni_cb(SSL *ssl, int *alert, void *arg)
{
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);

    (void)alert;
    if (name != NULL)
        snprintf(arg, 128, "%s", name);
    return SSL_TLSEXT_ERR_OK;
}

static void client_cn(SSL *ssl, char *out, size_t size)
{
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    X509 *c = SSL_get1_peer_certificate(ssl);
#else
    X509 *c = SSL_get_peer_certificate(ssl);
#endif

    snprintf(out, size, "-");
    if (c != NULL) {
        X509_NAME_get_text_by_NID(X509_get_subject_name(c), NID_commonName, out, (int)size);
        X509_free(c);
    }
}

/* Runs in the child and never returns. Exit 0 when the whole script ran. */
static void serve(int lfd, const struct srv *s)
{
    char sni[128] = "-", cn[128], line[256];
    size_t got = 0;
    SSL_CTX *ctx;
    SSL *ssl;
    int fd, len;

    alarm(10); /* never outlive a broken test */
    signal(SIGPIPE, SIG_IGN);
    fd = accept(lfd, NULL, NULL);
    close(lfd);
    ctx = SSL_CTX_new(TLS_server_method());
    if (fd < 0 || ctx == NULL ||
        SSL_CTX_use_certificate_chain_file(ctx, s->cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, s->key, SSL_FILETYPE_PEM) != 1)
        _exit(10);
    if (s->max_version != 0 && s->max_version < TLS1_2_VERSION) {
        SSL_CTX_set_security_level(ctx, 0);
        SSL_CTX_set_cipher_list(ctx, "DEFAULT:@SECLEVEL=0");
        SSL_CTX_set_min_proto_version(ctx, TLS1_VERSION);
    }
    if (s->max_version != 0)
        SSL_CTX_set_max_proto_version(ctx, s->max_version);
    if (s->client_ca != NULL) {
        if (SSL_CTX_load_verify_locations(ctx, s->client_ca, NULL) != 1)
            _exit(11);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }
    SSL_CTX_set_tlsext_servername_callback(ctx, sni_cb);
    SSL_CTX_set_tlsext_servername_arg(ctx, sni);
    ssl = SSL_new(ctx);
    if (ssl == NULL || SSL_set_fd(ssl, fd) != 1)
        _exit(12);
    if (SSL_accept(ssl) != 1)
        _exit(1); /* expected whenever the client refuses the server */
    client_cn(ssl, cn, sizeof cn);
    len = snprintf(line, sizeof line, "hello sni=%s client=%s\r\n", sni, cn);
    if (SSL_write(ssl, line, len) != len)
        _exit(13);
    if (s->mode == SRV_GREET_CLOSE) {
        close(fd);
        _exit(0);
    }
    if (s->mode == SRV_GREET_HOLD)
        for (;;)
            pause();
    while (got < sizeof line && (got < 2 || memcmp(line + got - 2, "\r\n", 2) != 0)) {
        int r = SSL_read(ssl, line + got, (int)(sizeof line - got));
        if (r <= 0)
            _exit(14);
        got += (size_t)r;
    }
    if (SSL_write(ssl, line, (int)got) != (int)got)
        _exit(15);
    if (s->mode == SRV_ECHO)
        SSL_shutdown(ssl);
    close(fd);
    _exit(0);
}

static pid_t start_server(const struct srv *s, char *port, size_t port_size)
{
    int lfd = listen_loopback(port, port_size);
    pid_t pid;

    if (lfd < 0)
        return -1;
    pid = fork_flushed();
    if (pid == 0)
        serve(lfd, s);
    close(lfd);
    return pid;
}

/* ---- client side --------------------------------------------------------- */

static void opts_for(smtp_tls_opts *o, const char *servername, const char *cafile)
{
    smtp_tls_opts_init(o);
    o->servername = servername;
    o->cafile = cafile;
}

static int connect_to(smtp_net *n, const char *port)
{
    smtp_net_init(n);
    return smtp_net_connect(n, "127.0.0.1", port, smtp_net_now() + 5);
}

/* Reads up to and including CRLF; returns the length or an SMTP_E_* code. */
static ssize_t read_line(smtp_tls *t, smtp_net *n, char *buf, size_t size, double deadline)
{
    size_t got = 0;

    while (got + 1 < size && (got < 2 || memcmp(buf + got - 2, "\r\n", 2) != 0)) {
        ssize_t r = smtp_tls_recv(t, n, buf + got, size - 1 - got, deadline);
        if (r < 0)
            return r;
        got += (size_t)r;
    }
    buf[got] = '\0';
    return (ssize_t)got;
}

static int send_all(smtp_tls *t, smtp_net *n, const char *p, size_t len, double deadline)
{
    while (len > 0) {
        ssize_t r = smtp_tls_send(t, n, p, len, deadline);
        if (r < 0)
            return (int)r;
        p += r;
        len -= (size_t)r;
    }
    return SMTP_OK;
}

/* One handshake against a server running s: returns the smtp_tls_start
 * code; errmsg (if not NULL) gets n.errmsg. The server is reaped. */
static int handshake_only(const struct srv *s, const smtp_tls_opts *o, char *errmsg, size_t size)
{
    char port[16];
    smtp_net n;
    smtp_tls *t = (smtp_tls *)&n; /* must be reset to NULL on failure */
    pid_t pid = start_server(s, port, sizeof port);
    int r = SMTP_E_CONNECT;

    if (pid > 0 && connect_to(&n, port) == SMTP_OK) {
        r = smtp_tls_start(&t, &n, o, smtp_net_now() + 5);
        if (r != SMTP_OK && t != NULL)
            printf("# *out not NULL after a failure\n");
    }
    if (errmsg != NULL)
        snprintf(errmsg, size, "%s", n.errmsg);
    if (r == SMTP_OK)
        smtp_tls_free(t);
    smtp_net_close(&n);
    if (pid > 0)
        kill_child(pid);
    return r;
}

/* ---- tests --------------------------------------------------------------- */

/* Full exchange with the good certificate against a server allowing TLS up
 * to max_version (0: any); want_sni is what the server must have seen. */
static void check_good_exchange(const char *servername, const char *want_sni, int max_version,
                                const char *label)
{
    static const char line[] = "EHLO client.example\r\n";
    char port[16], buf[256], name[160];
    struct srv s = { NULL, NULL, NULL, 0, SRV_ECHO };
    smtp_tls_opts o;
    smtp_net n;
    smtp_tls *t = NULL;
    pid_t pid;
    ssize_t k;
    int r;

    s.cert = path("good.pem");
    s.key = path("srv.key");
    s.max_version = max_version;
    pid = start_server(&s, port, sizeof port);
    opts_for(&o, servername, path("ca.pem"));
    CHECK(pid > 0 && connect_to(&n, port) == SMTP_OK, label);
    r = smtp_tls_start(&t, &n, &o, smtp_net_now() + 5);
    snprintf(name, sizeof name, "%s: handshake verified", label);
    CHECK(r == SMTP_OK && t != NULL, name);
    if (r != SMTP_OK) {
        printf("# %d %s\n", r, n.errmsg);
        smtp_net_close(&n);
        kill_child(pid);
        return;
    }
    printf("# %s: %s %s\n", label, smtp_tls_version(t), smtp_tls_cipher(t));
    if (max_version == TLS1_2_VERSION) {
        snprintf(name, sizeof name, "%s: TLSv1.2", label);
        CHECK(strcmp(smtp_tls_version(t), "TLSv1.2") == 0, name);
    } else {
        snprintf(name, sizeof name, "%s: TLSv1.2 or TLSv1.3", label);
        CHECK(strcmp(smtp_tls_version(t), "TLSv1.3") == 0 ||
                  strcmp(smtp_tls_version(t), "TLSv1.2") == 0,
              name);
    }
    snprintf(name, sizeof name, "%s: cipher named, no error text", label);
    CHECK(smtp_tls_cipher(t)[0] != '\0' && n.errmsg[0] == '\0', name);
    {
        /* the server certificate for the report: DER that reads back */
        unsigned char der[4096];
        smtp_cert_info ci;
        size_t dlen = smtp_tls_peer_der(t, NULL, 0);
        snprintf(name, sizeof name, "%s: peer certificate for the report", label);
        CHECK(dlen > 0 && dlen <= sizeof der && smtp_tls_peer_der(t, der, 8) == dlen &&
                  smtp_tls_peer_der(t, der, sizeof der) == dlen &&
                  smtp_tls_cert_info(der, dlen, &ci) == SMTP_OK &&
                  strcmp(ci.subject, "CN=localhost") == 0,
              name);
    }

    /* One byte first: the rest of the record stays inside OpenSSL, and must
     * come back without waiting, even with a deadline already past. */
    k = smtp_tls_recv(t, &n, buf, 1, smtp_net_now() + 5);
    snprintf(name, sizeof name, "%s: first byte of the greeting", label);
    CHECK(k == 1 && buf[0] == 'h', name);
    snprintf(name, sizeof name, "%s: rest of the record is pending", label);
    CHECK(smtp_tls_pending(t) > 0, name);
    k = read_line(t, &n, buf + 1, sizeof buf - 1, smtp_net_now() - 1);
    snprintf(name, sizeof name, "%s: pending data read despite a past deadline", label);
    CHECK(k > 0 && smtp_tls_pending(t) == 0, name);
    printf("# greeting: %s", buf);
    snprintf(name, sizeof name, "hello sni=%s client=-\r\n", want_sni);
    CHECK(k > 0 && strcmp(buf, name) == 0, want_sni[0] == '-' ? "  ... and no SNI was sent"
                                                                : "  ... and the SNI was sent");

    CHECK(smtp_tls_send(t, &n, line, 0, 0) == SMTP_E_ARGUMENT, "zero-length send is rejected");
    CHECK(smtp_tls_recv(t, &n, buf, 0, 0) == SMTP_E_ARGUMENT, "zero-length recv is rejected");

    r = send_all(t, &n, line, sizeof line - 1, smtp_net_now() + 5);
    k = read_line(t, &n, buf, sizeof buf, smtp_net_now() + 5);
    snprintf(name, sizeof name, "%s: send + echo", label);
    CHECK(r == SMTP_OK && k == (ssize_t)sizeof line - 1 && strcmp(buf, line) == 0, name);
    k = smtp_tls_recv(t, &n, buf, sizeof buf, smtp_net_now() + 5);
    snprintf(name, sizeof name, "%s: close_notify gives SMTP_E_CLOSED", label);
    CHECK(k == SMTP_E_CLOSED && strstr(n.errmsg, "close_notify") != NULL, name);
    smtp_tls_free(t);
    smtp_net_close(&n);
    snprintf(name, sizeof name, "%s: server ran its script", label);
    CHECK(wait_child(pid) == 0, name);
}

static void test_good(void)
{
    check_good_exchange("localhost", "localhost", 0, "good cert, name localhost");
    check_good_exchange("127.0.0.1", "-", 0, "good cert, IP 127.0.0.1");
    check_good_exchange("[127.0.0.1]", "-", 0, "good cert, address literal [127.0.0.1]");
    check_good_exchange("localhost", "localhost", TLS1_2_VERSION, "TLS 1.2-only server");
}

static void check_refused(const char *cert, const char *servername, const char *cafile,
                          const char *want, const char *want2, const char *label)
{
    struct srv s = { NULL, NULL, NULL, 0, SRV_ECHO };
    smtp_tls_opts o;
    char msg[256], name[160];
    int r;

    s.cert = cert;
    s.key = path("srv.key");
    opts_for(&o, servername, cafile);
    r = handshake_only(&s, &o, msg, sizeof msg);
    printf("# %s: %s\n", label, msg);
    snprintf(name, sizeof name, "%s: SMTP_E_TLS", label);
    CHECK(r == SMTP_E_TLS, name);
    snprintf(name, sizeof name, "%s: message names the reason", label);
    CHECK(strncmp(msg, "certificate verify failed: ", 27) == 0 &&
              (contains_nocase(msg, want) || (want2 != NULL && contains_nocase(msg, want2))),
          name);
}

static void test_verification_failures(void)
{
    check_refused(path("expired.pem"), "localhost", path("ca.pem"), "expired", NULL, "expired");
    check_refused(path("wrong.pem"), "localhost", path("ca.pem"), "hostname mismatch", NULL,
                  "wrong host");
    check_refused(path("good.pem"), "::1", path("ca.pem"), "IP address mismatch", NULL,
                  "wrong IPv6 address");
    check_refused(path("good.pem"), "127.0.0.2", path("ca.pem"), "IP address mismatch", NULL,
                  "wrong IPv4 address");
    check_refused(path("self.pem"), "localhost", path("ca.pem"), "self-signed", "self signed",
                  "self-signed");
    check_refused(path("good.pem"), "localhost", path("ca2.pem"), "unable to get local issuer",
                  NULL, "unknown issuer");
    check_refused(path("good.pem"), "localhost", NULL, "unable to get local issuer", NULL,
                  "test CA not in the system store");
}

static void test_partial_wildcard_flag(void)
{
    /* The good certificate has no wildcard; this only shows that a host
     * name differing by a suffix is not accepted as a match. */
    struct srv s = { NULL, NULL, NULL, 0, SRV_ECHO };
    smtp_tls_opts o;
    char msg[256];

    s.cert = path("good.pem");
    s.key = path("srv.key");
    opts_for(&o, "localhost.example", path("ca.pem"));
    CHECK(handshake_only(&s, &o, msg, sizeof msg) == SMTP_E_TLS &&
              contains_nocase(msg, "hostname mismatch"),
          "suffixed host name is a mismatch");
}

/* The name rule (RFC 9525) on DER certificates, as the cosocket transport
 * uses it, and end to end in the handshake. */
static int load_der(const char *file, unsigned char **der)
{
    FILE *f = fopen(file, "r");
    X509 *x = f != NULL ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
    int len;

    if (f != NULL)
        fclose(f);
    *der = NULL;
    len = x != NULL ? i2d_X509(x, der) : -1;
    X509_free(x);
    return len;
}

static void check_name(const unsigned char *der, int len, const char *name, int want,
                       const char *want_why, const char *label)
{
    char why[256];
    int r = smtp_tls_check_name(der, len > 0 ? (size_t)len : 0, name, why, sizeof why);

    if (r != want || (want_why != NULL && strcmp(why, want_why) != 0))
        printf("# %s: %d '%s'\n", label, r, why);
    CHECK(r == want && (want_why == NULL || strcmp(why, want_why) == 0), label);
}

static void test_name_rule(void)
{
    unsigned char *good, *nosan, *dnsip;
    int good_len = load_der(path("good.pem"), &good);
    int nosan_len = load_der(path("nosan.pem"), &nosan);
    int dnsip_len = load_der(path("dnsip.pem"), &dnsip);
    char why[8];

    CHECK(good_len > 0 && nosan_len > 0 && dnsip_len > 0, "name rule: certificates as DER");
    check_name(good, good_len, "localhost", 1, "", "name rule: DNS SAN localhost");
    check_name(good, good_len, "LocalHost", 1, "", "name rule: case does not matter");
    check_name(good, good_len, "127.0.0.1", 1, "", "name rule: IP SAN 127.0.0.1");
    check_name(good, good_len, "[127.0.0.1]", 1, "", "name rule: address literal [127.0.0.1]");
    check_name(good, good_len, "::1", 0, "IP address mismatch (server name '::1')",
               "name rule: another address");
    check_name(good, good_len, "localhost.example", 0,
               "hostname mismatch (server name 'localhost.example')", "name rule: another name");
    check_name(good, good_len, ".localhost", 0,
               "hostname mismatch (server name '.localhost'): not a host name",
               "name rule: a leading dot is not \"any subdomain\"");
    check_name(good, good_len, "", 0, "no server name to verify", "name rule: empty name");
    check_name(good, good_len, NULL, 0, "no server name to verify", "name rule: no name");
    check_name(nosan, nosan_len, "localhost", 0,
               "hostname mismatch (server name 'localhost'): the certificate has no"
               " subjectAltName, and its subject CN is not used (RFC 9525)",
               "name rule: never the CN");
    check_name(dnsip, dnsip_len, "127.0.0.1", 0,
               "IP address mismatch (server name '127.0.0.1'): the certificate has 127.0.0.1"
               " as a DNS name only, which does not certify an IP address (RFC 9525)",
               "name rule: a DNS name spelling an address is not an IP SAN");
    check_name(dnsip, dnsip_len, "mail.example.test", 1, "", "name rule: wildcard, one label");
    check_name(dnsip, dnsip_len, "a.b.example.test", 0, NULL, "name rule: wildcard, two labels");
    check_name(dnsip, dnsip_len, "example.test", 0, NULL, "name rule: wildcard, no label");
    check_name(dnsip, dnsip_len, "mail.example.org", 0, NULL, "name rule: no partial wildcard");
    check_name(good, good_len - 1, "localhost", SMTP_E_TLS,
               "the server certificate cannot be parsed", "name rule: truncated DER");
    check_name((const unsigned char *)"x", 1, "localhost", SMTP_E_TLS, NULL,
               "name rule: not DER");
    check_name(NULL, 0, "localhost", SMTP_E_TLS, "no server certificate to check",
               "name rule: no certificate");
    CHECK(smtp_tls_check_name(good, (size_t)good_len, "localhost", why, 0) == SMTP_E_ARGUMENT,
          "name rule: no room for a reason");
    check_name(good, good_len, "a-very-long-host-name.example", 0, NULL,
               "name rule: a reason longer than why is cut");
    CHECK(smtp_tls_check_name(good, (size_t)good_len, "a-very-long-host-name.example", why,
                              sizeof why) == 0 && strlen(why) == sizeof why - 1,
          "  ... and NUL-terminated");
    OPENSSL_free(good);
    OPENSSL_free(nosan);
    OPENSSL_free(dnsip);

    check_refused(path("nosan.pem"), "localhost", path("ca.pem"), "no subjectAltName", NULL,
                  "handshake: no SAN, CN=localhost");
    check_refused(path("dnsip.pem"), "127.0.0.1", path("ca.pem"), "as a DNS name only", NULL,
                  "handshake: DNS SAN 127.0.0.1 for the address");
    check_refused(path("dnsip.pem"), "mail.example.org", path("ca.pem"), "hostname mismatch",
                  NULL, "handshake: partial wildcard");
}

/* smtp_tls_cert_info: what the send report says of a certificate. */
static void test_cert_info(void)
{
    unsigned char *good = NULL, *dnsip = NULL;
    int good_len = load_der(path("good.pem"), &good);
    int dnsip_len = load_der(path("dnsip.pem"), &dnsip);
    smtp_cert_info ci;

    CHECK(good_len > 0 && dnsip_len > 0, "cert info: certificates load");
    CHECK(smtp_tls_cert_info(good, (size_t)good_len, &ci) == SMTP_OK, "cert info: parses");
    CHECK(strcmp(ci.subject, "CN=localhost") == 0, "cert info: subject, RFC 2253");
    CHECK(strcmp(ci.issuer, "CN=lua-smtp test CA") == 0, "cert info: issuer");
    CHECK(strlen(ci.not_after) == 20 && ci.not_after[4] == '-' && ci.not_after[10] == 'T' &&
              ci.not_after[19] == 'Z',
          "cert info: not_after, ISO 8601 UTC");
    CHECK(ci.nsan == 2 && ci.san_more == 0 && strcmp(ci.san[0], "DNS:localhost") == 0 &&
              strcmp(ci.san[1], "IP:127.0.0.1") == 0,
          "cert info: DNS and IP subjectAltNames");
    CHECK(smtp_tls_cert_info(dnsip, (size_t)dnsip_len, &ci) == SMTP_OK && ci.nsan == 3 &&
              strcmp(ci.san[1], "DNS:*.example.test") == 0,
          "cert info: DNS names as they are");
    CHECK(smtp_tls_cert_info(good, (size_t)good_len - 1, &ci) == SMTP_E_TLS &&
              ci.subject[0] == '\0',
          "cert info: a cut certificate is refused");
    CHECK(smtp_tls_cert_info(NULL, 0, &ci) == SMTP_E_TLS, "cert info: nothing is refused");
    OPENSSL_free(good);
    OPENSSL_free(dnsip);
}

static void test_no_verify(void)
{
    struct srv s = { NULL, NULL, NULL, 0, SRV_ECHO };
    smtp_tls_opts o;
    char msg[256];

    s.key = path("srv.key");
    s.cert = path("wrong.pem");
    opts_for(&o, "localhost", path("ca2.pem"));
    o.verify = 0;
    CHECK(handshake_only(&s, &o, msg, sizeof msg) == SMTP_OK, "verify=0 accepts the wrong-host cert");
    s.cert = path("self.pem");
    o.cafile = NULL;
    CHECK(handshake_only(&s, &o, msg, sizeof msg) == SMTP_OK, "verify=0 accepts a self-signed cert");
    o.servername = NULL;
    CHECK(handshake_only(&s, &o, msg, sizeof msg) == SMTP_OK, "verify=0 needs no server name");
}

static void test_refused_before_handshake(void)
{
    char port[16];
    int lfd = listen_loopback(port, sizeof port);
    smtp_tls_opts o;
    smtp_net n;
    smtp_tls *t = (smtp_tls *)&o;
    int r;

    CHECK(connect_to(&n, port) == SMTP_OK, "config errors: connected to a silent listener");

    opts_for(&o, NULL, path("ca.pem"));
    r = smtp_tls_start(&t, &n, &o, smtp_net_now() + 5);
    CHECK(r == SMTP_E_TLS && t == NULL, "verify without a server name: SMTP_E_TLS, *out NULL");
    CHECK(strcmp(n.errmsg, "no server name to verify") == 0, "  ... message");
    o.servername = "";
    CHECK(smtp_tls_start(&t, &n, &o, smtp_net_now() + 5) == SMTP_E_TLS,
          "verify with an empty server name: SMTP_E_TLS");
    t = (smtp_tls *)&o;
    CHECK(smtp_tls_start(&t, &n, NULL, smtp_net_now() + 5) == SMTP_E_TLS && t == NULL,
          "NULL options mean verify on, no name: refused");

    opts_for(&o, "localhost", path("missing-ca.pem"));
    r = smtp_tls_start(&t, &n, &o, smtp_net_now() + 5);
    printf("# %s\n", n.errmsg);
    CHECK(r == SMTP_E_TLS && strstr(n.errmsg, "missing-ca.pem") != NULL,
          "missing CA file: SMTP_E_TLS naming the file");

    opts_for(&o, "localhost", path("ca.pem"));
    o.cert = path("missing-client.pem");
    r = smtp_tls_start(&t, &n, &o, smtp_net_now() + 5);
    printf("# %s\n", n.errmsg);
    CHECK(r == SMTP_E_TLS && strstr(n.errmsg, "cannot load client certificate") != NULL,
          "missing client certificate: SMTP_E_TLS");

    o.cert = path("client.pem");
    o.key = path("srv.key");
    r = smtp_tls_start(&t, &n, &o, smtp_net_now() + 5);
    printf("# %s\n", n.errmsg);
    CHECK(r == SMTP_E_TLS && strstr(n.errmsg, "do not match") != NULL,
          "client certificate with another key: SMTP_E_TLS");

    o.key = path("enc.key");
    r = smtp_tls_start(&t, &n, &o, smtp_net_now() + 5);
    printf("# %s\n", n.errmsg);
    CHECK(r == SMTP_E_TLS && strstr(n.errmsg, "cannot load client key") != NULL,
          "encrypted client key: fails without prompting");

    o.cert = NULL;
    o.key = path("cli.key");
    CHECK(smtp_tls_start(&t, &n, &o, smtp_net_now() + 5) == SMTP_E_ARGUMENT,
          "client key without certificate: SMTP_E_ARGUMENT");

    smtp_net_close(&n);
    opts_for(&o, "localhost", path("ca.pem"));
    r = smtp_tls_start(&t, &n, &o, smtp_net_now() + 5);
    CHECK(r == SMTP_E_IO && t == NULL && strcmp(n.errmsg, "not connected") == 0,
          "not connected: SMTP_E_IO");
    CHECK(smtp_tls_recv(NULL, &n, port, 1, 0) == SMTP_E_IO, "recv without a session: SMTP_E_IO");
    smtp_tls_free(NULL);
    CHECK(smtp_tls_pending(NULL) == 0 && smtp_tls_version(NULL)[0] == '\0' &&
              smtp_tls_cipher(NULL)[0] == '\0',
          "NULL-safe accessors and free");
    close(lfd);
}

static void test_handshake_timeout(void)
{
    char port[16];
    int lfd = listen_loopback(port, sizeof port);
    smtp_tls_opts o;
    smtp_net n;
    smtp_tls *t = NULL;
    double start, elapsed;
    int r;

    /* The listener never accepts: the connect completes through the
     * backlog, the ClientHello sits in the kernel, no answer ever comes. */
    CHECK(connect_to(&n, port) == SMTP_OK, "silent peer: connected");
    opts_for(&o, "localhost", path("ca.pem"));
    start = smtp_net_now();
    r = smtp_tls_start(&t, &n, &o, start + TIMEOUT_S);
    elapsed = smtp_net_now() - start;
    printf("# handshake timeout after %.4f s (deadline %.1f s): %s\n", elapsed,
           TIMEOUT_S, n.errmsg);
    CHECK(r == SMTP_E_TIMEOUT && t == NULL, "silent peer: SMTP_E_TIMEOUT");
    CHECK(elapsed >= TIMEOUT_S && elapsed <= TIMEOUT_S * 1.10,
          "silent peer: deadline honoured within 10%");
    CHECK(strcmp(n.errmsg, "timed out during TLS handshake") == 0, "silent peer: message");
    smtp_net_close(&n);
    close(lfd);
}

static void test_peer_not_tls(void)
{
    char port[16], msg[256];
    int lfd = listen_loopback(port, sizeof port);
    smtp_tls_opts o;
    smtp_net n;
    smtp_tls *t = NULL;
    pid_t pid;
    int r;

    pid = fork_flushed();
    if (pid == 0) {
        static const char banner[] = "220 plain.example ESMTP\r\n";
        int fd = accept(lfd, NULL, NULL);
        char junk[512];
        if (fd < 0 || write(fd, banner, sizeof banner - 1) < 0 || read(fd, junk, sizeof junk) < 0)
            _exit(1);
        sleep_ms(200);
        _exit(0);
    }
    close(lfd);
    CHECK(connect_to(&n, port) == SMTP_OK, "plain-text peer: connected");
    opts_for(&o, "localhost", path("ca.pem"));
    r = smtp_tls_start(&t, &n, &o, smtp_net_now() + 5);
    snprintf(msg, sizeof msg, "%s", n.errmsg);
    printf("# plain-text peer: %s\n", msg);
    CHECK(r == SMTP_E_TLS && strncmp(msg, "TLS handshake failed: ", 22) == 0,
          "plain-text peer: SMTP_E_TLS with OpenSSL's reason");
    smtp_net_close(&n);
    wait_child(pid);
}

static void test_peer_closes_during_handshake(void)
{
    char port[16];
    int lfd = listen_loopback(port, sizeof port);
    smtp_tls_opts o;
    smtp_net n;
    smtp_tls *t = NULL;
    int peer, r;

    CHECK(connect_to(&n, port) == SMTP_OK, "closing peer: connected");
    peer = accept(lfd, NULL, NULL);
    close(peer);
    opts_for(&o, "localhost", path("ca.pem"));
    r = smtp_tls_start(&t, &n, &o, smtp_net_now() + 5);
    printf("# closing peer: %d %s\n", r, n.errmsg);
    CHECK(r == SMTP_E_CLOSED && t == NULL, "peer closes during the handshake: SMTP_E_CLOSED");
    smtp_net_close(&n);
    close(lfd);
}

static void test_recv_timeout_and_abrupt_close(void)
{
    static const char line[] = "NOOP\r\n";
    struct srv s = { NULL, NULL, NULL, 0, SRV_ABRUPT };
    char port[16], buf[256];
    smtp_tls_opts o;
    smtp_net n;
    smtp_tls *t = NULL;
    double start, elapsed;
    pid_t pid;
    ssize_t k;

    s.cert = path("good.pem");
    s.key = path("srv.key");
    pid = start_server(&s, port, sizeof port);
    opts_for(&o, "localhost", path("ca.pem"));
    if (connect_to(&n, port) != SMTP_OK || smtp_tls_start(&t, &n, &o, smtp_net_now() + 5) != 0) {
        CHECK(0, "abrupt close: handshake");
        smtp_net_close(&n);
        kill_child(pid);
        return;
    }
    k = read_line(t, &n, buf, sizeof buf, smtp_net_now() + 5);
    CHECK(k > 0, "recv timeout: greeting read");
    start = smtp_net_now();
    k = smtp_tls_recv(t, &n, buf, sizeof buf, start + TIMEOUT_S);
    elapsed = smtp_net_now() - start;
    printf("# recv timeout after %.4f s (deadline %.1f s)\n", elapsed, TIMEOUT_S);
    CHECK(k == SMTP_E_TIMEOUT && strcmp(n.errmsg, "timed out waiting for data") == 0,
          "recv timeout: SMTP_E_TIMEOUT");
    CHECK(elapsed >= TIMEOUT_S && elapsed <= TIMEOUT_S * 1.10,
          "recv timeout: deadline honoured within 10%");
    CHECK(send_all(t, &n, line, sizeof line - 1, smtp_net_now() + 5) == SMTP_OK &&
              read_line(t, &n, buf, sizeof buf, smtp_net_now() + 5) == (ssize_t)sizeof line - 1,
          "recv timeout: session still usable afterwards");
    k = smtp_tls_recv(t, &n, buf, sizeof buf, smtp_net_now() + 5);
    printf("# %s\n", n.errmsg);
    CHECK(k == SMTP_E_CLOSED && strstr(n.errmsg, "without TLS close_notify") != NULL,
          "EOF without close_notify: SMTP_E_CLOSED");
    smtp_tls_free(t);
    smtp_net_close(&n);
    CHECK(wait_child(pid) == 0, "abrupt close: server ran its script");
}

/* In a child, so a SIGPIPE kills only the child and shows as a failure.
 * Exit 0: SMTP_E_CLOSED three times; 1: another error; 2: never failed. */
static void send_until_failure(smtp_tls *t, smtp_net *n)
{
    char chunk[1024];
    int i, failures = 0;

    memset(chunk, 'x', sizeof chunk);
    for (i = 0; i < 500 && failures < 3; i++) {
        ssize_t r = smtp_tls_send(t, n, chunk, sizeof chunk, smtp_net_now() + 5);
        if (r < 0 && r != SMTP_E_CLOSED) {
            printf("# send: %d %s\n", (int)r, n->errmsg);
            _exit(1);
        }
        if (r < 0)
            failures++;
        else
            sleep_ms(2);
    }
    _exit(failures == 3 ? 0 : 2);
}

static void test_send_to_closed_peer(void)
{
    struct srv s = { NULL, NULL, NULL, 0, SRV_GREET_CLOSE };
    char port[16], buf[256];
    smtp_tls_opts o;
    smtp_net n;
    smtp_tls *t = NULL;
    pid_t pid, sender;

    s.cert = path("good.pem");
    s.key = path("srv.key");
    pid = start_server(&s, port, sizeof port);
    opts_for(&o, "localhost", path("ca.pem"));
    if (connect_to(&n, port) != SMTP_OK || smtp_tls_start(&t, &n, &o, smtp_net_now() + 5) != 0) {
        CHECK(0, "closed peer: handshake");
        smtp_net_close(&n);
        kill_child(pid);
        return;
    }
    read_line(t, &n, buf, sizeof buf, smtp_net_now() + 5);
    CHECK(wait_child(pid) == 0, "closed peer: server greeted and closed");
    sender = fork_flushed();
    if (sender == 0)
        send_until_failure(t, &n);
    CHECK(wait_child(sender) == 0, "closed peer: send gives SMTP_E_CLOSED, no SIGPIPE");
    /* The child's sends drew a reset on the shared socket. */
    CHECK(smtp_tls_recv(t, &n, buf, sizeof buf, smtp_net_now() + 5) == SMTP_E_CLOSED,
          "closed peer: recv after the reset gives SMTP_E_CLOSED");
    printf("# %s\n", n.errmsg);
    smtp_tls_free(t);
    smtp_net_close(&n);
}

static void test_big_send_timeout(void)
{
    const size_t size = 4u << 20;
    char *big = malloc(size);
    struct srv s = { NULL, NULL, NULL, 0, SRV_GREET_HOLD };
    char port[16], buf[256];
    smtp_tls_opts o;
    smtp_net n;
    smtp_tls *t = NULL;
    size_t total = 0, max_chunk = 0;
    double start, elapsed;
    ssize_t r = 0;
    pid_t pid;

    s.cert = path("good.pem");
    s.key = path("srv.key");
    pid = start_server(&s, port, sizeof port);
    opts_for(&o, "localhost", path("ca.pem"));
    if (big == NULL || connect_to(&n, port) != SMTP_OK ||
        smtp_tls_start(&t, &n, &o, smtp_net_now() + 5) != 0) {
        CHECK(0, "big send: set-up");
        free(big);
        smtp_net_close(&n);
        kill_child(pid);
        return;
    }
    read_line(t, &n, buf, sizeof buf, smtp_net_now() + 5);
    memset(big, 'a', size);
    start = smtp_net_now();
    while (total < (256u << 20)) {
        r = smtp_tls_send(t, &n, big, size, start + TIMEOUT_S);
        if (r < 0)
            break;
        total += (size_t)r;
        if ((size_t)r > max_chunk)
            max_chunk = (size_t)r;
    }
    elapsed = smtp_net_now() - start;
    printf("# big send: %zu bytes taken (largest %zu), gave up after %.4f s\n", total, max_chunk,
           elapsed);
    CHECK(r == SMTP_E_TIMEOUT && strcmp(n.errmsg, "timed out sending data") == 0,
          "big send: SMTP_E_TIMEOUT against a peer that reads nothing");
    CHECK(total > 0 && max_chunk <= 16384, "big send: partial writes of at most one record");
    CHECK(elapsed >= TIMEOUT_S && elapsed <= TIMEOUT_S * 1.10,
          "big send: deadline honoured within 10%");
    smtp_tls_free(t);
    smtp_net_close(&n);
    kill_child(pid);
    free(big);
}

static void test_client_certificate(void)
{
    struct srv s = { NULL, NULL, NULL, 0, SRV_ECHO };
    char port[16], buf[256];
    smtp_tls_opts o;
    smtp_net n;
    smtp_tls *t = NULL;
    pid_t pid;
    int pass;

    s.cert = path("good.pem");
    s.key = path("srv.key");
    s.client_ca = path("ca.pem");
    for (pass = 0; pass < 2; pass++) {
        pid = start_server(&s, port, sizeof port);
        opts_for(&o, "localhost", path("ca.pem"));
        if (pass == 0) {
            o.cert = path("client.pem");
            o.key = path("cli.key");
        } else {
            o.cert = path("combined.pem"); /* key read from the same file */
        }
        buf[0] = '\0';
        if (connect_to(&n, port) == SMTP_OK &&
            smtp_tls_start(&t, &n, &o, smtp_net_now() + 5) == SMTP_OK) {
            read_line(t, &n, buf, sizeof buf, smtp_net_now() + 5);
            smtp_tls_free(t);
        } else {
            printf("# %s\n", n.errmsg);
        }
        smtp_net_close(&n);
        kill_child(pid);
        CHECK(strcmp(buf, "hello sni=localhost client=test-client\r\n") == 0,
              pass == 0 ? "client certificate presented (cert + key files)"
                        : "client certificate presented (one file, key = NULL)");
    }
}

/* Whether this OpenSSL can speak TLS 1.1 at all: a client allowing it,
 * against the same TLS 1.1 server. Without that, refusing it proves
 * nothing. */
static int tls11_available(const struct srv *s)
{
    char port[16];
    pid_t pid = start_server(s, port, sizeof port);
    struct sockaddr_in in;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl = NULL;
    int fd = socket(AF_INET, SOCK_STREAM, 0), ok = 0;

    memset(&in, 0, sizeof in);
    in.sin_family = AF_INET;
    in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    in.sin_port = htons((unsigned short)atoi(port));
    if (pid > 0 && ctx != NULL && fd >= 0 &&
        connect(fd, (struct sockaddr *)&in, sizeof in) == 0) {
        SSL_CTX_set_security_level(ctx, 0);
        SSL_CTX_set_cipher_list(ctx, "DEFAULT:@SECLEVEL=0");
        SSL_CTX_set_min_proto_version(ctx, TLS1_VERSION);
        SSL_CTX_set_max_proto_version(ctx, TLS1_1_VERSION);
        ssl = SSL_new(ctx);
        if (ssl != NULL && SSL_set_fd(ssl, fd) == 1)
            ok = SSL_connect(ssl) == 1;
    }
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    ERR_clear_error();
    if (fd >= 0)
        close(fd);
    if (pid > 0)
        kill_child(pid);
    return ok;
}

static void test_old_protocol_refused(void)
{
    struct srv s = { NULL, NULL, NULL, TLS1_1_VERSION, SRV_ECHO };
    smtp_tls_opts o;
    char msg[256];
    int r;

    s.cert = path("good.pem");
    s.key = path("srv.key");
    if (!tls11_available(&s)) {
        printf("# skip: this OpenSSL cannot negotiate TLS 1.1 even when asked to\n");
        return;
    }
    opts_for(&o, "localhost", path("ca.pem"));
    r = handshake_only(&s, &o, msg, sizeof msg);
    printf("# TLS 1.1 server: %s\n", msg);
    CHECK(r == SMTP_E_TLS && strncmp(msg, "TLS handshake failed: ", 22) == 0,
          "TLS 1.1-only server is refused");
}

/* ---- reuse: contexts and sessions ------------------------------------------ */

/* A server for `count` connections on one SSL_CTX, so its tickets resume:
 * each gets "hello reused=N\r\n", one line echoed, close_notify. A
 * connection whose handshake fails is skipped. Never returns. */
static void serve_many(int lfd, const char *cert, const char *key, int max_version, int count)
{
    SSL_CTX *ctx;
    int i;

    alarm(20);
    signal(SIGPIPE, SIG_IGN);
    ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL || SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
        _exit(10);
    if (max_version != 0)
        SSL_CTX_set_max_proto_version(ctx, max_version);
    for (i = 0; i < count; i++) {
        char line[256];
        size_t got = 0;
        int fd = accept(lfd, NULL, NULL), len;
        SSL *ssl = SSL_new(ctx);

        if (fd < 0 || ssl == NULL || SSL_set_fd(ssl, fd) != 1)
            _exit(12);
        if (SSL_accept(ssl) == 1) {
            len = snprintf(line, sizeof line, "hello reused=%d\r\n", (int)SSL_session_reused(ssl));
            SSL_write(ssl, line, len);
            while (got < sizeof line && (got < 2 || memcmp(line + got - 2, "\r\n", 2) != 0)) {
                int r = SSL_read(ssl, line + got, (int)(sizeof line - got));
                if (r <= 0)
                    break;
                got += (size_t)r;
            }
            if (got > 0)
                SSL_write(ssl, line, (int)got);
            SSL_shutdown(ssl);
        }
        SSL_free(ssl);
        close(fd);
    }
    _exit(0);
}

/* One connection on context c offering resume: the smtp_tls_start_ctx code;
 * on success *reused and the server's greeting, and the session the server
 * handed out in *taken (NULL if none). */
static int reuse_round(const char *port, smtp_tls_ctx *c, const char *servername,
                       const smtp_tls_session *resume, int *reused, char *greeting, size_t size,
                       smtp_tls_session **taken, char *errmsg, size_t errsize)
{
    static const char line[] = "QUIT\r\n";
    smtp_net n;
    smtp_tls *t = NULL;
    int r;

    *reused = -1;
    greeting[0] = '\0';
    if (taken != NULL)
        *taken = NULL;
    if (connect_to(&n, port) != SMTP_OK)
        return SMTP_E_CONNECT;
    r = smtp_tls_start_ctx(&t, &n, c, servername, resume, smtp_net_now() + 5);
    snprintf(errmsg, errsize, "%s", n.errmsg);
    if (r == SMTP_OK) {
        *reused = smtp_tls_reused(t);
        if (read_line(t, &n, greeting, size, smtp_net_now() + 5) < 0)
            greeting[0] = '\0';
        send_all(t, &n, line, sizeof line - 1, smtp_net_now() + 5);
        if (taken != NULL)
            *taken = smtp_tls_take_session(t);
        smtp_tls_free(t);
    } else if (t != NULL) {
        printf("# *out not NULL after a failure\n");
    }
    smtp_net_close(&n);
    return r;
}

static void check_reuse(int max_version, const char *label)
{
    char port[16], greeting[128], err[256], name[200];
    smtp_tls_opts o;
    smtp_tls_ctx *c = NULL, *c_noverify = NULL;
    smtp_tls_session *s1 = NULL, *s2 = NULL;
    smtp_net n;
    int lfd = listen_loopback(port, sizeof port), reused, r;
    pid_t pid;

    if (lfd < 0) {
        CHECK(0, "listen for the reuse server");
        return;
    }
    pid = fork_flushed();
    if (pid == 0)
        serve_many(lfd, path("good.pem"), path("srv.key"), max_version, 6);
    close(lfd);

    smtp_net_init(&n);
    opts_for(&o, NULL, path("ca.pem"));
    r = smtp_tls_ctx_new(&c, &n, &o);
    snprintf(name, sizeof name, "%s: context built once", label);
    CHECK(r == SMTP_OK && c != NULL, name);
    o.verify = 0;
    CHECK(smtp_tls_ctx_new(&c_noverify, &n, &o) == SMTP_OK, "context without verification");

    r = reuse_round(port, c, "localhost", NULL, &reused, greeting, sizeof greeting, &s1, err,
                    sizeof err);
    snprintf(name, sizeof name, "%s: first connection, full handshake, a session handed out", label);
    CHECK(r == SMTP_OK && reused == 0 && strcmp(greeting, "hello reused=0\r\n") == 0 && s1 != NULL &&
              smtp_tls_session_resumable(s1),
          name);

    r = reuse_round(port, c, "localhost", s1, &reused, greeting, sizeof greeting, &s2, err,
                    sizeof err);
    snprintf(name, sizeof name, "%s: second connection on the same context resumes", label);
    CHECK(r == SMTP_OK && reused == 1 && strcmp(greeting, "hello reused=1\r\n") == 0, name);
    snprintf(name, sizeof name, "%s: the offered session stays resumable", label);
    CHECK(smtp_tls_session_resumable(s1), name);

    r = reuse_round(port, c, "127.0.0.1", s1, &reused, greeting, sizeof greeting, NULL, err,
                    sizeof err);
    snprintf(name, sizeof name, "%s: a session for localhost is not offered for 127.0.0.1", label);
    CHECK(r == SMTP_OK && reused == 0 && strcmp(greeting, "hello reused=0\r\n") == 0, name);

    r = reuse_round(port, c_noverify, "localhost", s1, &reused, greeting, sizeof greeting, NULL, err,
                    sizeof err);
    snprintf(name, sizeof name, "%s: nor on a context that does not verify", label);
    CHECK(r == SMTP_OK && reused == 0 && strcmp(greeting, "hello reused=0\r\n") == 0, name);

    r = reuse_round(port, c, "wrong.example", s1, &reused, greeting, sizeof greeting, NULL, err,
                    sizeof err);
    printf("# %s\n", err);
    snprintf(name, sizeof name, "%s: another name gets a full handshake and fails verification",
             label);
    CHECK(r == SMTP_E_TLS && strstr(err, "hostname mismatch") != NULL, name);

    r = reuse_round(port, c, "localhost", s2 != NULL ? s2 : s1, &reused, greeting, sizeof greeting,
                    NULL, err, sizeof err);
    snprintf(name, sizeof name, "%s: still resumes after that failure", label);
    CHECK(r == SMTP_OK && reused == 1, name);

    snprintf(name, sizeof name, "%s: server served every connection", label);
    CHECK(wait_child(pid) == 0, name);
    smtp_tls_session_free(s1);
    smtp_tls_session_free(s2);
    smtp_tls_ctx_free(c);
    smtp_tls_ctx_free(c_noverify);
    CHECK(smtp_tls_take_session(NULL) == NULL && smtp_tls_reused(NULL) == 0 &&
              smtp_tls_session_resumable(NULL) == 0,
          "NULL is handled");
}

static void test_reuse(void)
{
    check_reuse(0, "TLS 1.3");
    check_reuse(TLS1_2_VERSION, "TLS 1.2");
}

static void test_opts_stamp(void)
{
    char a[512], b[512], c[512];
    smtp_tls_opts o;
    FILE *f;
    const char *file = path("stamp.pem");

    smtp_tls_opts_init(&o);
    o.cafile = file;
    remove(file);
    smtp_tls_opts_stamp(&o, a, sizeof a);
    CHECK(strncmp(a, "-;", 2) == 0, "stamp: a missing file reads as -");
    f = fopen(file, "w");
    fputs("one\n", f);
    fclose(f);
    smtp_tls_opts_stamp(&o, b, sizeof b);
    CHECK(strcmp(a, b) != 0, "stamp: a new file changes it");
    f = fopen(file, "w");
    fputs("one two\n", f);
    fclose(f);
    smtp_tls_opts_stamp(&o, c, sizeof c);
    CHECK(strcmp(b, c) != 0, "stamp: a rewritten file changes it");
    smtp_tls_opts_stamp(&o, a, sizeof a);
    CHECK(strcmp(a, c) == 0, "stamp: the same file gives the same text");
    smtp_tls_opts_stamp(&o, a, 4);
    CHECK(strlen(a) == 3, "stamp: bounded by the buffer");
    o.cafile = NULL;
    smtp_tls_opts_stamp(&o, a, sizeof a);
    CHECK(strcmp(a, "-;-;-;-;") != 0, "stamp: the system trust store is stamped");
    remove(file);
}

int main(void)
{
    if (!make_certificates()) {
        CHECK(0, "generate test certificates with the openssl command");
        remove_certificates();
        return check_done();
    }
    CHECK(1, "test certificates generated");
    test_good();
    test_verification_failures();
    test_partial_wildcard_flag();
    test_name_rule();
    test_cert_info();
    test_no_verify();
    test_refused_before_handshake();
    test_handshake_timeout();
    test_peer_not_tls();
    test_peer_closes_during_handshake();
    test_recv_timeout_and_abrupt_close();
    test_send_to_closed_peer();
    test_big_send_timeout();
    test_client_certificate();
    test_old_protocol_refused();
    test_reuse();
    test_opts_stamp();
    remove_certificates();
    return check_done();
}
