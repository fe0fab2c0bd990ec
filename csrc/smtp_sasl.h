/* Client side of the SASL mechanisms used by SMTP AUTH (RFC 4954):
 * SCRAM-SHA-256 (RFC 5802, RFC 7677; no channel binding, gs2 flag "n"),
 * CRAM-MD5 (RFC 2195), PLAIN (RFC 4616), LOGIN (draft-murchison-sasl-login)
 * XOAUTH2 (Google / Microsoft bearer tokens) and OAUTHBEARER (RFC 7628).
 *
 * The exchange does no I/O. The caller sends "AUTH <mech>" followed by the
 * initial response smtp_sasl_start gave (if any), feeds the text of every
 * 334 reply to smtp_sasl_step and sends back the line it produces, and on
 * the final 235 calls smtp_sasl_finish, which for SCRAM is where the server
 * proves that it knows the password too.
 *
 * Output conventions, for every function that takes an smtp_buf:
 *   - the result is base64 without line breaks, APPENDED to the buffer
 *     (pass an empty buffer: its content is then exactly the line to send);
 *   - an empty result means "no data": for smtp_sasl_start no initial
 *     response (send "AUTH <mech>" alone), for smtp_sasl_step an empty
 *     response (send an empty line);
 *   - on error nothing is appended;
 *   - the buffer's limit applies: SMTP_E_LIMIT when the result does not fit.
 * The output may carry the password or token in base64 (PLAIN, LOGIN,
 * XOAUTH2): the caller should OPENSSL_cleanse the buffer once it is sent.
 *
 * Strings are C strings, so an embedded NUL cannot be seen here: a binding
 * that takes counted strings (Lua) must reject them before calling.
 *
 * SASLprep (RFC 4013), applied to the SCRAM user name, authzid and password
 * (as query strings, so unassigned code points pass), is GNU libidn's
 * stringprep "SASLprep" profile after a strict UTF-8 check (overlong forms,
 * surrogates and code points above U+10FFFF rejected): the B.1 and C.1.2
 * mappings, NFKC, every prohibited table and the bidi rule. A string that
 * fails any of them, or is empty after mapping, is SMTP_E_ARGUMENT.
 *
 * No global mutable state: separate exchanges may run in separate threads.
 * Requires libcrypto (OpenSSL 1.1.1 or 3.x).
 */
#ifndef SMTP_SASL_H
#define SMTP_SASL_H

#include <stddef.h>

#include "smtp_buf.h"

/* At most this many 334 challenges per exchange; one more is
 * SMTP_E_PROTOCOL. */
#define SMTP_SASL_MAX_STEPS 5
/* Longest accepted challenge, decoded (bytes); longer is SMTP_E_LIMIT. */
#define SMTP_SASL_MAX_CHALLENGE 8192
/* Longest accepted user name, authzid, password or token (bytes); longer
 * is SMTP_E_ARGUMENT. */
#define SMTP_SASL_MAX_FIELD 16384
/* Accepted SCRAM iteration counts. RFC 7677 section 4 asks for at least
 * 4096: a lower count (a man in the middle can pick 1) makes an offline
 * attack on the proof cheap, so it is refused (SMTP_E_PROTOCOL). The upper
 * bound keeps a hostile server from making the client spin. */
#define SMTP_SASL_SCRAM_MIN_ITERATIONS 4096
#define SMTP_SASL_SCRAM_MAX_ITERATIONS 1000000

/* One authentication exchange. Opaque, heap-allocated. It owns copies of
 * the credentials, which smtp_sasl_free wipes (OPENSSL_cleanse) before
 * releasing them; every temporary copy of a secret is wiped too. */
typedef struct smtp_sasl smtp_sasl;

/* Picks the mechanism to use from the server's AUTH capability parameters
 * (mechanism names separated by spaces or tabs, any case; NULL counts as
 * empty).
 *   have_token == 0 (the secret is a password): the first offered of
 *     "SCRAM-SHA-256", "CRAM-MD5", "PLAIN", "LOGIN", strongest first;
 *     the token mechanisms are never chosen.
 *   have_token != 0 (the secret is an OAuth 2 access token): "OAUTHBEARER"
 *     (RFC 7628) if offered, else "XOAUTH2"; no password mechanism can
 *     carry a token.
 * Returns one of those static names (upper case), or NULL when none fits.
 * SCRAM-SHA-256-PLUS is not chosen (no channel binding here); a server that
 * offers it usually offers SCRAM-SHA-256 too. Note that PLAIN and the SCRAM
 * family need the credentials to be UTF-8; a legacy non-UTF-8 password can
 * only go through LOGIN or CRAM-MD5 (see smtp_sasl_start). */
const char *smtp_sasl_choose(const char *server_mechs, int have_token);

/* 1 when mech (any case) names a mechanism this module implements:
 * SCRAM-SHA-256, CRAM-MD5, PLAIN, LOGIN, XOAUTH2, OAUTHBEARER. 0 otherwise, and for
 * NULL. */
int smtp_sasl_supported(const char *mech);

/* Starts an exchange with mechanism mech (any case).
 *   authzid: identity to act as, or NULL / "" for none. Only PLAIN and
 *     SCRAM-SHA-256 can carry one; for the others a non-empty authzid is
 *     SMTP_E_ARGUMENT rather than silently dropped.
 *   user: the authentication identity; must not be empty.
 *   secret: the password, or for XOAUTH2 and OAUTHBEARER the access token;
 *     not empty.
 * Checks per mechanism (any failure is SMTP_E_ARGUMENT):
 *   PLAIN: all three valid UTF-8 (RFC 4616); sent as is (the server
 *     prepares them).
 *   LOGIN, CRAM-MD5: any bytes. CRAM-MD5 also fails when HMAC-MD5 is not
 *     available from libcrypto (an OpenSSL 3 FIPS-only configuration).
 *   XOAUTH2, OAUTHBEARER: user valid UTF-8 without control characters
 *     (OAUTHBEARER sends it as a gs2 saslname, "=" and "," escaped); token printable
 *     ASCII (0x21..0x7e), which also keeps the 0x01 separators unambiguous.
 *   SCRAM-SHA-256: user, authzid and password through SASLprep (see the top
 *     of this file); none may become empty (authzid may be absent).
 * *initial receives the initial response to send as "AUTH <mech> <ir>":
 * PLAIN, XOAUTH2, OAUTHBEARER and SCRAM-SHA-256 produce one; LOGIN and CRAM-MD5 leave it
 * empty. A caller may also choose not to send it: the server then answers
 * "334 " with an empty challenge, and smtp_sasl_step produces the same
 * response from it.
 * The SCRAM client nonce is 24 bytes from RAND_bytes, base64-encoded.
 * Returns 0 with *out set (free with smtp_sasl_free), or, with *out NULL
 * and initial unchanged:
 *   SMTP_E_ARGUMENT  NULL argument, unknown mechanism, a check above failed,
 *                    a field longer than SMTP_SASL_MAX_FIELD;
 *   SMTP_E_NOMEM     allocation (or a libcrypto allocation) failed;
 *   SMTP_E_LIMIT     the initial response does not fit initial's limit;
 *   SMTP_E_IO        RAND_bytes failed (no usable random source). */
int smtp_sasl_start(smtp_sasl **out, const char *mech, const char *authzid,
                    const char *user, const char *secret, smtp_buf *initial);
/* The same with an allocator (smtp_mem.h) for everything the exchange
 * allocates until smtp_sasl_free (libidn's and libcrypto's own allocations
 * excepted); NULL: the C library. */
int smtp_sasl_start_mem(smtp_sasl **out, const char *mech, const char *authzid,
                        const char *user, const char *secret, smtp_buf *initial,
                        const smtp_mem *mem);

/* Answers one 334 challenge: challenge/len is the reply text after "334 "
 * exactly as the server sent it (base64; spaces, tabs, CR and LF ignored;
 * may be empty; challenge may be NULL when len is 0). The base64 response
 * is appended to response (empty: send an empty line).
 *   PLAIN: an empty challenge (the initial response was not sent) gets the
 *     PLAIN message; anything else is SMTP_E_PROTOCOL.
 *   LOGIN: a challenge decoding to "Username:" / "Password:" (any case; in
 *     fact anything starting "user" / "pass") gets the user name / password;
 *     an unrecognised one gets the user name first, then the password, and
 *     a third unrecognised one is SMTP_E_PROTOCOL.
 *   CRAM-MD5: the decoded challenge (non-empty) gets
 *     user SP lowercase-hex(HMAC-MD5(password, challenge)); a second
 *     challenge is SMTP_E_PROTOCOL.
 *   XOAUTH2, OAUTHBEARER: an empty first challenge gets the token message;
 *     any other challenge is the server's JSON error report and gets an
 *     empty response (XOAUTH2) or a single ^A (OAUTHBEARER, RFC 7628
 *     3.2.3), after which the server sends its failure reply (535...).
 *   SCRAM-SHA-256: the server-first-message gets the client-final-message;
 *     the server-final-message ("v=...") is verified and gets an empty
 *     response. An empty challenge before the server-first-message (once)
 *     gets the client-first-message. SMTP_E_PROTOCOL for: a reserved "m="
 *     extension, a nonce that does not start with the client nonce or adds
 *     nothing to it or is not printable, a missing or undecodable salt, an
 *     iteration count outside SMTP_SASL_SCRAM_MIN/MAX_ITERATIONS, a server
 *     "e=" error, a server signature that does not match (compared in
 *     constant time), any challenge after a verified server-final.
 * Returns:
 *   0                success;
 *   SMTP_E_PROTOCOL  the challenge is not base64, does not fit the
 *                    mechanism (above), or is the (SMTP_SASL_MAX_STEPS+1)th;
 *   SMTP_E_LIMIT     the challenge decodes to more than
 *                    SMTP_SASL_MAX_CHALLENGE bytes, or the response does not
 *                    fit response's limit;
 *   SMTP_E_NOMEM     allocation (or a libcrypto operation) failed;
 *   SMTP_E_ARGUMENT  s or response NULL, or challenge NULL with len > 0;
 *   SMTP_E_STATE     an earlier step of this exchange failed: the exchange
 *                    is over (cancel it with "*" and start a new one). */
int smtp_sasl_step(smtp_sasl *s, const char *challenge, size_t len, smtp_buf *response);

/* Called with the text of the final 235 reply (after "235 "; text may be
 * NULL when len is 0). RFC 4954 lets a server put its last SASL data in the
 * 235 reply instead of a 334, and some do: for SCRAM-SHA-256 the text is
 * tried as base64, whole and then its last space-separated word, and a
 * "v=..." found there is verified.
 * Returns:
 *   0                for SCRAM-SHA-256: the server signature was verified
 *                    (in a step, or from this text); for the other
 *                    mechanisms always 0 (they do not authenticate the
 *                    server);
 *   SMTP_E_PROTOCOL  SCRAM-SHA-256 and the server signature was never
 *                    verified, did not match, or the server reported an
 *                    "e=" error, or an earlier step failed: the server
 *                    claimed success without proving it knows the password,
 *                    so the session must not be trusted;
 *   SMTP_E_LIMIT     SCRAM-SHA-256, not yet verified, and text longer than
 *                    twice SMTP_SASL_MAX_CHALLENGE;
 *   SMTP_E_NOMEM     allocation failed while decoding text;
 *   SMTP_E_ARGUMENT  s NULL, or text NULL with len > 0. */
int smtp_sasl_finish(smtp_sasl *s, const char *text, size_t len);

/* Wipes and frees the exchange. NULL-safe. */
void smtp_sasl_free(smtp_sasl *s);

/* For tests only: starts SCRAM-SHA-256 (no authzid) with a fixed client
 * nonce instead of one from RAND_bytes. nonce must be non-empty printable
 * ASCII without ',' (RFC 5802) and at most 256 bytes. Returns as
 * smtp_sasl_start. Never use a fixed nonce against a real server. */
int smtp_sasl_start_scram_nonce(smtp_sasl **out, const char *user, const char *password,
                                const char *nonce, smtp_buf *initial);

#endif
