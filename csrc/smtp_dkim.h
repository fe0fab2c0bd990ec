/* DKIM (RFC 6376, RFC 8463): the streamed body hash and the signature.
 *
 * A message is fed once, in chunks split anywhere, exactly as it will be
 * handed to the framer. Its line ends are made CRLF by the same rules as
 * the wire (smtp_frame: CRLF, bare LF and bare CR all become CRLF), so the
 * hash is of what the server receives. The header section (up to its
 * empty line) is kept, bounded, for the caller to canonicalise and sign;
 * the body is canonicalised ("simple" or "relaxed", section 3.4) and
 * hashed with SHA-256 as it streams, in constant memory. No "l=" tag.
 *
 * Signing uses OpenSSL's EVP: rsa-sha256 is RSASSA-PKCS1-v1_5 over the
 * data with SHA-256; ed25519-sha256 is PureEdDSA Ed25519 over the SHA-256
 * digest of the data (RFC 8463 section 3).
 *
 * Every function returns 0 or a negative SMTP_E_* code.
 */
#ifndef SMTP_DKIM_H
#define SMTP_DKIM_H

#include <stddef.h>
#include "smtp_buf.h"

#define SMTP_DKIM_HASH_LEN 32

typedef enum { SMTP_DKIM_RSA_SHA256 = 0, SMTP_DKIM_ED25519_SHA256 = 1 } smtp_dkim_alg;

/* Smallest RSA key accepted (RFC 8301 section 3.2). */
#define SMTP_DKIM_MIN_RSA_BITS 1024

typedef struct smtp_dkim_body smtp_dkim_body;

/* A new hasher. relaxed: 1 for "relaxed" body canonicalisation, 0 for
 * "simple". max_header: the most octets the header section may have (more
 * is SMTP_E_LIMIT from update). SMTP_E_NOMEM or SMTP_E_TLS (OpenSSL). */
int smtp_dkim_body_new(smtp_dkim_body **out, int relaxed, size_t max_header);
/* The same with an allocator (smtp_mem.h) for the hasher and its buffers
 * (OpenSSL's digest context is OpenSSL's); NULL: the C library. */
int smtp_dkim_body_new_mem(smtp_dkim_body **out, int relaxed, size_t max_header,
                           const smtp_mem *mem);

/* Feeds a chunk. SMTP_E_LIMIT (header section too long), SMTP_E_NOMEM,
 * SMTP_E_TLS (digest failure), SMTP_E_STATE after finish. */
int smtp_dkim_body_update(smtp_dkim_body *d, const char *data, size_t len);

/* Ends the message. *header, *header_len: the header section with CRLF
 * line ends, without the empty line that ends it (valid until free);
 * hash: the body hash. SMTP_E_TLS, SMTP_E_STATE when called twice. */
int smtp_dkim_body_finish(smtp_dkim_body *d, const char **header, size_t *header_len,
                          unsigned char hash[SMTP_DKIM_HASH_LEN]);

void smtp_dkim_body_free(smtp_dkim_body *d);

/* A private key, read once and used for many signatures. */
typedef struct smtp_dkim_key smtp_dkim_key;

/* Reads a PEM private key for alg. SMTP_E_ARGUMENT: the key cannot be
 * read, is not of the algorithm's type, or is an RSA key under
 * SMTP_DKIM_MIN_RSA_BITS (*msg, if msg is not NULL, gets a static text
 * saying which); SMTP_E_NOMEM. */
int smtp_dkim_key_new(smtp_dkim_key **out, smtp_dkim_alg alg, const char *pem, size_t pem_len,
                      const char **msg);
/* The same with an allocator for the key object (the EVP_PKEY is
 * OpenSSL's). */
int smtp_dkim_key_new_mem(smtp_dkim_key **out, smtp_dkim_alg alg, const char *pem,
                          size_t pem_len, const char **msg, const smtp_mem *mem);

void smtp_dkim_key_free(smtp_dkim_key *key);

/* Signs data (the canonicalised header fields and the DKIM-Signature
 * field with an empty b=); appends the raw signature to sig. SMTP_E_TLS:
 * signing failed; SMTP_E_NOMEM. */
int smtp_dkim_sign(const smtp_dkim_key *key, const char *data, size_t len, smtp_buf *sig);

#endif
