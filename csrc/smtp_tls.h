/* TLS (OpenSSL) on top of smtp_net, for STARTTLS (RFC 3207) and implicit
 * TLS (RFC 8314). Secure by default: TLS 1.2 or later, the server's chain
 * verified against the trust store and its name checked against the
 * certificate.
 *
 * Same conventions as smtp_net: the socket stays non-blocking, every call
 * takes an absolute deadline on the smtp_net_now() time line (0 = none) and
 * no call waits past it; a failing call returns a negative SMTP_E_* code and
 * leaves a readable reason in n->errmsg. SIGPIPE is never raised (the record
 * layer writes with MSG_NOSIGNAL through a BIO of its own, never through
 * OpenSSL's socket BIO). There is no global state here; OpenSSL 1.1.1 and
 * 3.x initialise themselves. One smtp_tls may be used by one thread at a
 * time; separate objects are independent.
 *
 * Error codes used by every function below:
 *   SMTP_E_TLS      handshake refused, certificate verification failed, a TLS
 *                   protocol error or alert, or a configuration problem
 *                   (trust store, client certificate or key not loadable);
 *                   errmsg gives the precise reason, e.g.
 *                   "certificate verify failed: certificate has expired".
 *   SMTP_E_TIMEOUT  the deadline passed.
 *   SMTP_E_CLOSED   the peer closed the connection: TLS close_notify, end of
 *                   stream without close_notify, or a reset.
 *   SMTP_E_IO       a system error on the socket (errno is kept), or the
 *                   smtp_net is not connected ("not connected", EBADF).
 *   SMTP_E_NOMEM    allocation failed.
 *   SMTP_E_ARGUMENT misuse: a zero-length transfer, a client key without a
 *                   certificate, a session used with another socket.
 * After any error other than SMTP_E_TIMEOUT from smtp_tls_recv the session
 * is unusable: free it and close the socket. After SMTP_E_TIMEOUT from
 * smtp_tls_send, only a retry with the same bytes is valid (OpenSSL may
 * hold part of a record); in practice treat it as fatal too.
 */
#ifndef SMTP_TLS_H
#define SMTP_TLS_H

#include <stddef.h>
#include <sys/types.h>

#include "smtp_net.h"

typedef struct smtp_tls_opts {
    const char *servername; /* SNI and the name verified, by the rule of
                             * smtp_tls_check_name (RFC 9525). A host name is
                             * sent as SNI. An IPv4 or IPv6 literal
                             * ("192.0.2.1", "::1", also "[::1]") is never
                             * sent as SNI (RFC 6066). NULL or "": no SNI,
                             * and with verify = 1 the handshake is
                             * refused. */
    int verify;             /* non-zero: chain and name verified (default, see
                             * smtp_tls_opts_init); 0: no checks at all */
    const char *cafile;     /* PEM bundle; cafile and/or capath replace the */
    const char *capath;     /* system trust store (NULL, NULL: system default
                             * paths). Ignored when verify = 0. */
    const char *cert;       /* client certificate chain file (PEM), optional */
    const char *key;        /* its private key (PEM, unencrypted), optional;
                             * NULL with cert set: the key is read from cert */
} smtp_tls_opts;

typedef struct smtp_tls smtp_tls; /* opaque: owns the SSL_CTX and SSL */

/* Fills o with the defaults: verify = 1, every string NULL. A zeroed struct
 * would mean verify = 0, so start from this rather than from memset. */
void smtp_tls_opts_init(smtp_tls_opts *o);

/* Runs a TLS client handshake on n's connected socket (n->fd), with the
 * options o (NULL: the smtp_tls_opts_init defaults, which are refused for
 * lack of a server name). Returns 0 and stores the session in *out, or
 * returns SMTP_E_TLS, SMTP_E_TIMEOUT, SMTP_E_CLOSED, SMTP_E_IO,
 * SMTP_E_NOMEM or SMTP_E_ARGUMENT with *out set to NULL and nothing leaked.
 * out and n must not be NULL.
 * Verification failures read "certificate verify failed: <OpenSSL's
 * reason>", e.g. "certificate has expired", "unable to get local issuer
 * certificate", "self-signed certificate" ("self signed" in 1.1.1), and
 * the name check's reasons (see smtp_tls_check_name), e.g. "hostname
 * mismatch (server name 'x')" / "IP address mismatch (server name 'x')";
 * verify = 1 without a server name gives "no server name to verify"; other
 * handshake failures read
 * "TLS handshake failed: <OpenSSL's reason>" (e.g. "wrong version number"
 * for a peer not speaking TLS, "tlsv1 alert protocol version" for a server
 * below TLS 1.2). n keeps owning the socket; no bytes beyond the handshake
 * are consumed. */
int smtp_tls_start(smtp_tls **out, smtp_net *n, const smtp_tls_opts *o, double deadline);

/* The server name rule, the one place both transports take it from (the C
 * one during smtp_tls_start's handshake, the OpenResty one, where nginx does
 * the TLS, on the certificate the handshake got), after RFC 9525:
 *  - a host name matches only the certificate's dNSName subjectAltNames, a
 *    wildcard only as the whole left-most label ("*.example.com" matches
 *    "mail.example.com", neither "a.b.example.com" nor "example.com"), and
 *    no partial wildcard ("m*.example.com") at all;
 *  - an IPv4 or IPv6 literal ("192.0.2.1", "::1", "[::1]") matches only its
 *    iPAddress subjectAltNames, never a dNSName spelling the address;
 *  - the subject CN is never used, not even without any subjectAltName.
 * Checks the DER certificate der (len bytes) against servername. Returns 1
 * when it is for that name; 0 when not, with the reason in why (size > 0,
 * always NUL-terminated): "hostname mismatch (server name 'x')" or "IP
 * address mismatch (server name 'x')", followed by ": the certificate has no
 * subjectAltName, and its subject CN is not used (RFC 9525)" or ": the
 * certificate has 192.0.2.1 as a DNS name only, which does not certify an
 * IP address (RFC 9525)" where that is why; "no server name to verify" for
 * NULL or "". Returns SMTP_E_TLS when der is not exactly one certificate
 * ("the server certificate cannot be parsed"), SMTP_E_ARGUMENT for size 0.
 * Does not check the chain, dates or anything else. */
int smtp_tls_check_name(const void *der, size_t len, const char *servername, char *why,
                        size_t size);

/* What a report says of a server's certificate (smtp_tls_cert_info), in
 * fixed, bounded buffers: longer values are cut (always NUL-terminated),
 * and subjectAltNames past SMTP_CERT_SAN_MAX are counted in san_more. */
#define SMTP_CERT_NAME_MAX 512
#define SMTP_CERT_SAN_MAX 32
#define SMTP_CERT_SAN_LEN 260

typedef struct smtp_cert_info {
    char subject[SMTP_CERT_NAME_MAX]; /* one line, RFC 2253 ("CN=localhost,O=x"), UTF-8 */
    char issuer[SMTP_CERT_NAME_MAX];
    char not_after[24];               /* ISO 8601 UTC: "2036-12-03T08:55:58Z"; "" unknown */
    int nsan;                         /* entries in san */
    int san_more;                     /* DNS/IP entries left out (more than SMTP_CERT_SAN_MAX) */
    char san[SMTP_CERT_SAN_MAX][SMTP_CERT_SAN_LEN]; /* "DNS:mail.example", "IP:192.0.2.1" */
} smtp_cert_info;

/* Reads subject, issuer, end of validity and the DNS and IP
 * subjectAltNames of the DER certificate der (len bytes) into out: the one
 * place both transports take them from (the C one from its own handshake,
 * the OpenResty one from the certificate nginx's handshake got). Control
 * characters and NULs in names come out escaped (RFC 2253) or as '?'.
 * Returns 0, or SMTP_E_TLS when der is not exactly one certificate. Checks
 * nothing. */
int smtp_tls_cert_info(const void *der, size_t len, smtp_cert_info *out);

/* The server certificate of t's handshake (also after resumption), DER:
 * its length when buf is NULL or size is too small (nothing written), else
 * the length written into buf; 0 when there is none. */
size_t smtp_tls_peer_der(const smtp_tls *t, unsigned char *buf, size_t size);

/* ---- reuse: contexts and sessions ----------------------------------------
 * Building a context loads the trust store (the system bundle: about 20 ms
 * of CPU) and the client certificate; resuming a session skips the
 * certificate exchange and its verification. A caller that makes several
 * connections keeps a context per set of options and a session per server,
 * e.g. the Lua binding for the life of its Lua state. Nothing here is
 * global: the caller owns every object and frees it.
 *
 * Verification stays as strict on resumption: a session records the server
 * name it was verified for and whether it was; smtp_tls_start_ctx offers it
 * only to a connection with the same name and the same verify setting, and
 * after a resumed handshake the session's verify result must be OK and the
 * server name is checked again (smtp_tls_check_name's rule) against the
 * certificate the session holds. */
typedef struct smtp_tls_ctx smtp_tls_ctx;         /* opaque: an SSL_CTX */
typedef struct smtp_tls_session smtp_tls_session; /* opaque: an SSL_SESSION */

/* Builds a context from o's verify, cafile, capath, cert and key (o's
 * servername is not used). Returns 0 with *out set, or SMTP_E_TLS,
 * SMTP_E_NOMEM or SMTP_E_ARGUMENT with the reason in n->errmsg (n is only
 * used for that) and *out NULL. */
int smtp_tls_ctx_new(smtp_tls_ctx **out, smtp_net *n, const smtp_tls_opts *o);

/* Frees c; sessions started on it keep their own reference. NULL is fine. */
void smtp_tls_ctx_free(smtp_tls_ctx *c);

/* What the files behind o are now (cafile, capath, cert, key, or the system
 * trust store's file and directory when neither cafile nor capath is given):
 * device, inode, size and modification time of each, written into buf (NUL
 * terminated, at most size - 1 bytes). A context built from o stays valid
 * while this text and o's own fields stay the same; a caller that caches
 * contexts makes it part of the key. Missing files read as "-". */
void smtp_tls_opts_stamp(const smtp_tls_opts *o, char *buf, size_t size);

/* smtp_tls_start with a context built by smtp_tls_ctx_new and the server
 * name servername (same rules as smtp_tls_opts.servername). resume: a
 * session taken from an earlier connection (smtp_tls_take_session) to offer
 * for resumption, or NULL; it is offered only when it was verified for the
 * same server name with the same verify setting, and stays owned by the
 * caller. The server may refuse it: a full handshake follows. On failure
 * after offering a session, drop that session. */
int smtp_tls_start_ctx(smtp_tls **out, smtp_net *n, smtp_tls_ctx *c, const char *servername,
                       const smtp_tls_session *resume, double deadline);

/* 1 when t's handshake resumed an earlier session, else 0 (also for NULL). */
int smtp_tls_reused(const smtp_tls *t);

/* Whether the server has handed t a new resumable session (TLS 1.2: at the
 * end of a full handshake; TLS 1.3: a ticket, which arrives with the first
 * data read after the handshake). */
int smtp_tls_has_session(const smtp_tls *t);

/* Takes that session (the caller owns it: smtp_tls_session_free), or NULL
 * when there is none or memory ran out. */
smtp_tls_session *smtp_tls_take_session(smtp_tls *t);

/* 1 while s can still be offered (not expired, not spoilt by a failed
 * connection), else 0. */
int smtp_tls_session_resumable(const smtp_tls_session *s);


void smtp_tls_session_free(smtp_tls_session *s);

/* Encrypts and sends up to len bytes of buf: returns the number of bytes
 * taken (>= 1; short writes are normal, at most one TLS record's worth) or
 * a negative SMTP_E_* code, like smtp_net_send. May need to read from the
 * socket as well (TLS post-handshake messages). n must be the smtp_net the
 * session was started on. */
ssize_t smtp_tls_send(smtp_tls *t, smtp_net *n, const void *buf, size_t len, double deadline);

/* Receives and decrypts up to len bytes: returns the number read (>= 1) or
 * a negative SMTP_E_* code, like smtp_net_recv: SMTP_E_CLOSED at the peer's
 * close_notify or at end of stream. Data already decrypted inside OpenSSL
 * is returned at once, without waiting on the socket and even with a past
 * deadline. May need to write to the socket as well. */
ssize_t smtp_tls_recv(smtp_tls *t, smtp_net *n, void *buf, size_t len, double deadline);

/* Bytes already decrypted and buffered inside OpenSSL (SSL_pending), which
 * smtp_tls_recv hands back without touching the socket; 0 for NULL. A
 * caller that polls the socket itself must check this first. */
size_t smtp_tls_pending(const smtp_tls *t);

/* Negotiated protocol version, e.g. "TLSv1.3" or "TLSv1.2"; "" for NULL.
 * The string is static or owned by t. */
const char *smtp_tls_version(const smtp_tls *t);

/* Negotiated cipher suite (OpenSSL name, e.g. "TLS_AES_256_GCM_SHA384");
 * "" for NULL. The string is static or owned by t. */
const char *smtp_tls_cipher(const smtp_tls *t);

/* Frees the session and its OpenSSL objects; NULL is allowed. Does no I/O
 * (no close_notify is sent: the socket may already be closed or reused)
 * and does not close the socket; that stays smtp_net_close's job. */
void smtp_tls_free(smtp_tls *t);

#endif
