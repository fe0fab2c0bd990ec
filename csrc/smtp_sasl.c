#include "smtp_sasl.h"

#include <stringprep.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "smtp_codec.h"
#include "smtp_error.h"

enum mech { M_SCRAM_SHA_256, M_CRAM_MD5, M_PLAIN, M_LOGIN, M_XOAUTH2, M_OAUTHBEARER };

/* In order of preference (strongest first); the token mechanisms
 * (OAUTHBEARER, then XOAUTH2) are chosen apart. */
static const char *const mech_names[] = {
    "SCRAM-SHA-256", "CRAM-MD5", "PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER"
};

static int is_token_mech(size_t m) { return m == M_XOAUTH2 || m == M_OAUTHBEARER; }
#define N_MECHS (sizeof mech_names / sizeof mech_names[0])

enum scram_state {
    SCRAM_SENT_FIRST,  /* client-first produced; waiting for server-first */
    SCRAM_SENT_FINAL,  /* client-final produced; waiting for server-final */
    SCRAM_DONE         /* server signature verified */
};

#define SCRAM_HASH_LEN 32              /* SHA-256 */
#define SCRAM_NONCE_RANDOM 24          /* random bytes in a client nonce */
#define SCRAM_MAX_TEST_NONCE 256

struct smtp_sasl {
    const smtp_mem *mem; /* its allocator (NULL: the C library) */
    enum mech mech;
    int steps;          /* challenges seen */
    int failed;         /* a step failed: the exchange is over */

    /* Owned, NUL-terminated copies, wiped on free. For SCRAM, user and
     * authzid are SASLprep'ed and escaped, secret is SASLprep'ed and is
     * wiped as soon as the proof is computed. */
    char *authzid;
    size_t authzid_len;
    char *user;
    size_t user_len;
    char *secret;
    size_t secret_len;

    /* LOGIN */
    int sent_user, sent_pass;
    /* CRAM-MD5 */
    int answered;
    /* SCRAM-SHA-256 */
    enum scram_state scram;
    int resent_first;          /* client-first given to an empty challenge */
    char *client_first;        /* gs2-header client-first-message-bare */
    size_t client_first_len;
    size_t gs2_len;            /* length of the gs2 header at its front */
    size_t nonce_len;          /* client nonce, at the end of client_first */
    unsigned char server_sig[SCRAM_HASH_LEN];
};

/* ---- small helpers ----------------------------------------------------- */

static int ascii_lower(int c)
{
    return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

/* p/n equals the NUL-terminated word, ignoring ASCII case. */
static int ascii_ieq(const char *p, size_t n, const char *word)
{
    size_t i;
    for (i = 0; i < n; i++) {
        if (word[i] == '\0' ||
            ascii_lower((unsigned char)p[i]) != ascii_lower((unsigned char)word[i]))
            return 0;
    }
    return word[n] == '\0';
}

/* p/n starts with the NUL-terminated prefix, ignoring ASCII case. */
static int ascii_iprefix(const char *p, size_t n, const char *prefix)
{
    size_t i;
    for (i = 0; prefix[i]; i++) {
        if (i >= n || ascii_lower((unsigned char)p[i]) != ascii_lower((unsigned char)prefix[i]))
            return 0;
    }
    return 1;
}

static int is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static int mech_lookup(const char *name)
{
    size_t i, n;
    if (!name)
        return -1;
    n = strlen(name);
    for (i = 0; i < N_MECHS; i++) {
        if (ascii_ieq(name, n, mech_names[i]))
            return (int)i;
    }
    return -1;
}

/* strlen that gives up past max: returns max + 1 for anything longer. */
static size_t bounded_len(const char *s, size_t max)
{
    const char *nul = memchr(s, '\0', max + 1);
    return nul ? (size_t)(nul - s) : max + 1;
}

/* Wipes and frees p, allocated through mem (NULL: malloc, as libidn's). */
static void wipe_free(const smtp_mem *mem, void *p, size_t n)
{
    if (p) {
        OPENSSL_cleanse(p, n);
        smtp_mem_free(mem, p);
    }
}

/* Owned NUL-terminated copy; release with wipe_free(mem, p, n + 1). */
static char *dup_bytes(const smtp_mem *mem, const void *p, size_t n)
{
    char *d = smtp_mem_malloc(mem, n + 1);
    if (!d)
        return NULL;
    if (n)
        memcpy(d, p, n);
    d[n] = '\0';
    return d;
}

/* Releases a local smtp_buf after wiping all its storage. */
static void buf_wipe_free(smtp_buf *b)
{
    if (b->data)
        OPENSSL_cleanse(b->data, b->cap);
    smtp_buf_free(b);
}

/* A fixed-capacity byte builder for secrets: it never reallocates, so no
 * unwiped copy of a secret is left behind in freed memory. The capacity is
 * computed up front; an overflow (a sizing bug) is remembered and reported
 * by sb_check instead of writing past the end. */
typedef struct sbuf {
    const smtp_mem *mem;
    unsigned char *p;
    size_t len, cap;
    int overflow;
} sbuf;

static int sb_alloc(sbuf *b, size_t cap, const smtp_mem *mem)
{
    b->mem = mem;
    b->len = 0;
    b->cap = cap;
    b->overflow = 0;
    b->p = smtp_mem_malloc(mem, cap ? cap : 1);
    return b->p ? 0 : SMTP_E_NOMEM;
}

static void sb_put(sbuf *b, const void *d, size_t n)
{
    if (n > b->cap - b->len) {
        b->overflow = 1;
        return;
    }
    if (n)
        memcpy(b->p + b->len, d, n);
    b->len += n;
}

static void sb_str(sbuf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

static int sb_check(const sbuf *b)
{
    return b->overflow ? SMTP_E_LIMIT : 0;
}

static void sb_free(sbuf *b)
{
    wipe_free(b->mem, b->p, b->cap ? b->cap : 1);
    b->p = NULL;
}

static size_t b64_len(size_t n)
{
    return (n + 2) / 3 * 4;
}

/* Appends base64 (no line breaks) of data to out: all of it or, on error,
 * nothing (whatever was written is wiped and dropped again). */
static int put_b64(smtp_buf *out, const void *data, size_t n)
{
    size_t before = smtp_buf_len(out);
    size_t need = b64_len(n);
    smtp_b64 e;
    int rc;

    if (n == 0)
        return 0;
    /* Reserving everything first means the encoder cannot fail half way
     * (and the buffer never reallocates while holding our output). */
    if (!smtp_buf_reserve(out, need))
        return (need > out->limit || before > out->limit - need) ? SMTP_E_LIMIT : SMTP_E_NOMEM;
    smtp_b64_init(&e, 0);
    rc = smtp_b64_update(&e, (const char *)data, n, out);
    if (!rc)
        rc = smtp_b64_finish(&e, out);
    if (rc) {
        size_t after = smtp_buf_len(out);
        if (after > before)
            OPENSSL_cleanse(out->data + out->start + before, after - before);
        out->end = out->start + before;
    }
    OPENSSL_cleanse(&e, sizeof e);
    return rc;
}

/* Appends base64 of data to a secret builder. */
static int sb_put_b64(sbuf *b, const void *data, size_t n)
{
    smtp_buf tmp;
    int rc;

    smtp_buf_init_mem(&tmp, b64_len(n) + 4, b->mem);
    rc = put_b64(&tmp, data, n);
    if (!rc)
        sb_put(b, smtp_buf_ptr(&tmp), smtp_buf_len(&tmp));
    buf_wipe_free(&tmp);
    return rc ? rc : sb_check(b);
}

/* Decodes base64 text from the server into out (initialised here; release
 * with buf_wipe_free even on error). SMTP_E_PROTOCOL when it is not base64,
 * SMTP_E_LIMIT when it is or decodes to more than max bytes. */
static int decode_b64(const char *text, size_t len, size_t max, smtp_buf *out,
                      const smtp_mem *mem)
{
    int rc;

    smtp_buf_init_mem(out, len / 4 * 3 + 3, mem);
    if (len > 2 * max)
        return SMTP_E_LIMIT; /* at most 4/3 of max plus generous blanks */
    rc = smtp_b64_decode(text, len, out);
    if (rc == SMTP_E_ARGUMENT)
        return SMTP_E_PROTOCOL;
    if (rc)
        return rc;
    if (smtp_buf_len(out) > max)
        return SMTP_E_LIMIT;
    return 0;
}

/* ---- UTF-8 and SASLprep ------------------------------------------------ */

/* Decodes the UTF-8 sequence at p (n > 0 bytes available). Returns its
 * length, or 0 when it is invalid: a stray continuation byte, a truncated
 * sequence, an overlong form, a surrogate, or beyond U+10FFFF. */
static size_t utf8_next(const unsigned char *p, size_t n, uint32_t *cp)
{
    uint32_t c = p[0];
    size_t len, i;

    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        c &= 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        c &= 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        c &= 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        c = c << 6 | (p[i] & 0x3f);
    }
    if ((len == 3 && c < 0x800) || (len == 4 && (c < 0x10000 || c > 0x10ffff)) ||
        (c >= 0xd800 && c <= 0xdfff))
        return 0;
    *cp = c;
    return len;
}

static int utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    uint32_t cp;
    while (n > 0) {
        size_t k = utf8_next(p, n, &cp);
        if (k == 0)
            return 0;
        p += k;
        n -= k;
    }
    return 1;
}

/* SASLprep (RFC 4013) through GNU libidn's stringprep profile: mapping,
 * NFKC, the prohibited tables and the bidi rule, as a query string (so
 * unassigned code points pass). Input must be strict UTF-8 first (libidn
 * is more lenient). The result is malloc'd by libidn and is at least
 * *outlen + 1 bytes, so wipe_free(NULL, *out, *outlen + 1) wipes all of it.
 * SMTP_E_ARGUMENT on invalid UTF-8, a prohibited character, a bidi error
 * or an empty result; SMTP_E_NOMEM. (libidn's own intermediate copies are
 * freed without being wiped: that is beyond this code's reach.) */
static int saslprep(const char *in, size_t n, char **out, size_t *outlen)
{
    char *prep = NULL;
    int rc;

    *out = NULL;
    *outlen = 0;
    if (!utf8_valid(in, n))
        return SMTP_E_ARGUMENT;
    rc = stringprep_profile(in, &prep, "SASLprep", (Stringprep_profile_flags)0);
    if (rc == STRINGPREP_MALLOC_ERROR)
        return SMTP_E_NOMEM;
    if (rc != STRINGPREP_OK || prep == NULL) {
        free(prep);
        return SMTP_E_ARGUMENT;
    }
    if (prep[0] == '\0') {
        free(prep);
        return SMTP_E_ARGUMENT;
    }
    *out = prep;
    *outlen = strlen(prep);
    return 0;
}

/* RFC 5802 saslname: "=" -> "=3D", "," -> "=2C". Release with
 * wipe_free(mem, *out, *outlen + 1). */
static int scram_escape(const smtp_mem *mem, const char *in, size_t n, char **out,
                        size_t *outlen)
{
    size_t i, len = 0;
    char *d;

    for (i = 0; i < n; i++)
        len += (in[i] == '=' || in[i] == ',') ? 3 : 1;
    d = smtp_mem_malloc(mem, len + 1);
    *out = d;
    *outlen = len;
    if (!d)
        return SMTP_E_NOMEM;
    len = 0;
    for (i = 0; i < n; i++) {
        if (in[i] == '=') {
            memcpy(d + len, "=3D", 3);
            len += 3;
        } else if (in[i] == ',') {
            memcpy(d + len, "=2C", 3);
            len += 3;
        } else {
            d[len++] = in[i];
        }
    }
    d[len] = '\0';
    return 0;
}

/* SASLprep, then escape. */
static int scram_name(const smtp_mem *mem, const char *in, char **out, size_t *outlen)
{
    char *prep;
    size_t prep_len;
    int rc = saslprep(in, strlen(in), &prep, &prep_len);
    if (rc)
        return rc;
    rc = scram_escape(mem, prep, prep_len, out, outlen);
    wipe_free(NULL, prep, prep_len + 1); /* libidn's */
    return rc;
}

/* ---- the exchange object ----------------------------------------------- */

void smtp_sasl_free(smtp_sasl *s)
{
    if (!s)
        return;
    const smtp_mem *mem = s->mem;
    wipe_free(mem, s->authzid, s->authzid_len + 1);
    wipe_free(mem, s->user, s->user_len + 1);
    wipe_free(mem, s->secret, s->secret_len + 1);
    wipe_free(mem, s->client_first, s->client_first_len + 1);
    wipe_free(mem, s, sizeof *s);
}

static smtp_sasl *sasl_new(enum mech m, const smtp_mem *mem)
{
    smtp_sasl *s = smtp_mem_malloc(mem, sizeof *s);
    if (s) {
        memset(s, 0, sizeof *s);
        s->mem = mem;
        s->mech = m;
    }
    return s;
}

static void forget_secret(smtp_sasl *s)
{
    wipe_free(s->mem, s->secret, s->secret_len + 1);
    s->secret = NULL;
    s->secret_len = 0;
}

/* ---- mechanism choice ---------------------------------------------------- */

static int offered(const char *list, const char *name)
{
    const char *p = list;
    while (*p) {
        size_t n = 0;
        while (*p && is_blank(*p))
            p++;
        while (p[n] && !is_blank(p[n]))
            n++;
        if (n && ascii_ieq(p, n, name))
            return 1;
        p += n;
    }
    return 0;
}

const char *smtp_sasl_choose(const char *server_mechs, int have_token)
{
    size_t i;
    if (!server_mechs)
        return NULL;
    if (have_token) {
        /* OAUTHBEARER is the standard (RFC 7628); XOAUTH2 its predecessor. */
        if (offered(server_mechs, mech_names[M_OAUTHBEARER]))
            return mech_names[M_OAUTHBEARER];
        return offered(server_mechs, mech_names[M_XOAUTH2]) ? mech_names[M_XOAUTH2] : NULL;
    }
    for (i = 0; i < N_MECHS; i++) {
        if (!is_token_mech(i) && offered(server_mechs, mech_names[i]))
            return mech_names[i];
    }
    return NULL;
}

int smtp_sasl_supported(const char *mech)
{
    return mech_lookup(mech) >= 0;
}

/* ---- PLAIN, LOGIN, XOAUTH2, CRAM-MD5 ------------------------------------- */

/* The PLAIN message (authzid NUL user NUL password), the XOAUTH2 one
 * ("user=" user ^A "auth=Bearer " token ^A ^A) or the OAUTHBEARER one
 * (RFC 7628 3.1: gs2 header "n,a=" saslname "," then ^A "auth=Bearer "
 * token ^A ^A), base64 into out. */
static int put_message(smtp_sasl *s, smtp_buf *out)
{
    sbuf m;
    /* saslname escaping at most triples the user name */
    int rc = sb_alloc(&m, s->authzid_len + 3 * s->user_len + s->secret_len + 32, s->mem);
    size_t i;
    if (rc)
        return rc;
    if (s->mech == M_OAUTHBEARER) {
        sb_str(&m, "n,a=");
        for (i = 0; i < s->user_len; i++) {
            if (s->user[i] == '=')
                sb_str(&m, "=3D");
            else if (s->user[i] == ',')
                sb_str(&m, "=2C");
            else
                sb_put(&m, s->user + i, 1);
        }
        sb_str(&m, ",\001auth=Bearer ");
        sb_put(&m, s->secret, s->secret_len);
        sb_str(&m, "\001\001");
    } else if (s->mech == M_PLAIN) {
        sb_put(&m, s->authzid, s->authzid_len);
        sb_put(&m, "", 1);
        sb_put(&m, s->user, s->user_len);
        sb_put(&m, "", 1);
        sb_put(&m, s->secret, s->secret_len);
    } else {
        sb_str(&m, "user=");
        sb_put(&m, s->user, s->user_len);
        sb_str(&m, "\001auth=Bearer ");
        sb_put(&m, s->secret, s->secret_len);
        sb_str(&m, "\001\001");
    }
    rc = sb_check(&m);
    if (!rc)
        rc = put_b64(out, m.p, m.len);
    sb_free(&m);
    return rc;
}

static int plain_step(smtp_sasl *s, const smtp_buf *ch, smtp_buf *out)
{
    if (s->steps != 1 || smtp_buf_len(ch) != 0)
        return SMTP_E_PROTOCOL;
    return put_message(s, out);
}

/* XOAUTH2 and OAUTHBEARER: the token message to an empty first challenge;
 * anything else is the server's JSON error report, answered so that the
 * server sends its failure reply: an empty line (XOAUTH2) or, as RFC 7628
 * 3.2.3 requires, a single ^A (OAUTHBEARER). */
static int token_step(smtp_sasl *s, const smtp_buf *ch, smtp_buf *out)
{
    if (s->steps == 1 && smtp_buf_len(ch) == 0)
        return put_message(s, out);
    if (s->mech == M_OAUTHBEARER)
        return put_b64(out, "\001", 1);
    return 0;
}

static int login_step(smtp_sasl *s, const smtp_buf *ch, smtp_buf *out)
{
    const char *p = smtp_buf_ptr(ch);
    size_t n = smtp_buf_len(ch);
    int want_user;
    int rc;

    if (ascii_iprefix(p, n, "user"))
        want_user = 1;
    else if (ascii_iprefix(p, n, "pass"))
        want_user = 0;
    else if (!s->sent_user)
        want_user = 1;
    else if (!s->sent_pass)
        want_user = 0;
    else
        return SMTP_E_PROTOCOL;
    if (want_user) {
        rc = put_b64(out, s->user, s->user_len);
        if (!rc)
            s->sent_user = 1;
    } else {
        rc = put_b64(out, s->secret, s->secret_len);
        if (!rc)
            s->sent_pass = 1;
    }
    return rc;
}

static int cram_md5_step(smtp_sasl *s, const smtp_buf *ch, smtp_buf *out)
{
    static const char hex[17] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0, i;
    sbuf m;
    int rc;

    if (s->answered || smtp_buf_len(ch) == 0)
        return SMTP_E_PROTOCOL;
    if (!HMAC(EVP_md5(), s->secret, (int)s->secret_len,
              (const unsigned char *)smtp_buf_ptr(ch), smtp_buf_len(ch), md, &md_len))
        return SMTP_E_NOMEM;
    rc = sb_alloc(&m, s->user_len + 1 + 2 * (size_t)md_len, s->mem);
    if (!rc) {
        sb_put(&m, s->user, s->user_len);
        sb_put(&m, " ", 1);
        for (i = 0; i < md_len; i++) {
            char h[2];
            h[0] = hex[md[i] >> 4];
            h[1] = hex[md[i] & 15];
            sb_put(&m, h, 2);
        }
        rc = sb_check(&m);
        if (!rc)
            rc = put_b64(out, m.p, m.len);
        sb_free(&m);
    }
    OPENSSL_cleanse(md, sizeof md);
    if (!rc)
        s->answered = 1;
    return rc;
}

/* ---- SCRAM-SHA-256 ------------------------------------------------------- */

static int hmac256(const unsigned char *key, size_t key_len, const void *data, size_t n,
                   unsigned char out[SCRAM_HASH_LEN])
{
    unsigned int len = 0;
    if (!HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)data, n, out, &len) ||
        len != SCRAM_HASH_LEN)
        return SMTP_E_NOMEM;
    return 0;
}

/* RFC 5802 printable: %x21-2B / %x2D-7E. */
static int nonce_valid(const char *p, size_t n)
{
    size_t i;
    if (n == 0)
        return 0;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c < 0x21 || c > 0x7e || c == ',')
            return 0;
    }
    return 1;
}

/* Reads the attribute "<name>=value" at *pos of msg/n, up to the next ','
 * or the end; *pos moves past the ','. 0 if the attribute is not there. */
static int scram_attr(const char *msg, size_t n, size_t *pos, char name, const char **val,
                      size_t *val_len)
{
    size_t i = *pos, start;
    if (n - i < 2 || msg[i] != name || msg[i + 1] != '=')
        return 0;
    start = i + 2;
    for (i = start; i < n && msg[i] != ','; i++)
        ;
    *val = msg + start;
    *val_len = i - start;
    *pos = i < n ? i + 1 : n;
    return 1;
}

static int scram_start(smtp_sasl **out, const char *authzid, const char *user,
                       const char *password, const char *fixed_nonce, smtp_buf *initial,
                       const smtp_mem *mem)
{
    smtp_sasl *s;
    char nonce[SCRAM_MAX_TEST_NONCE + 1];
    size_t nonce_len;
    sbuf m;
    int rc;

    if (authzid && bounded_len(authzid, SMTP_SASL_MAX_FIELD) > SMTP_SASL_MAX_FIELD)
        return SMTP_E_ARGUMENT;
    if (bounded_len(user, SMTP_SASL_MAX_FIELD) > SMTP_SASL_MAX_FIELD ||
        bounded_len(password, SMTP_SASL_MAX_FIELD) > SMTP_SASL_MAX_FIELD)
        return SMTP_E_ARGUMENT;

    if (fixed_nonce) {
        nonce_len = bounded_len(fixed_nonce, SCRAM_MAX_TEST_NONCE);
        if (nonce_len > SCRAM_MAX_TEST_NONCE || !nonce_valid(fixed_nonce, nonce_len))
            return SMTP_E_ARGUMENT;
        memcpy(nonce, fixed_nonce, nonce_len);
    } else {
        unsigned char rnd[SCRAM_NONCE_RANDOM];
        smtp_buf enc;
        if (RAND_bytes(rnd, (int)sizeof rnd) != 1)
            return SMTP_E_IO;
        smtp_buf_init_mem(&enc, b64_len(sizeof rnd), mem);
        rc = put_b64(&enc, rnd, sizeof rnd);
        OPENSSL_cleanse(rnd, sizeof rnd);
        nonce_len = smtp_buf_len(&enc);
        if (!rc)
            memcpy(nonce, smtp_buf_ptr(&enc), nonce_len);
        buf_wipe_free(&enc);
        if (rc)
            return rc;
    }

    s = sasl_new(M_SCRAM_SHA_256, mem);
    if (!s)
        return SMTP_E_NOMEM;
    rc = scram_name(mem, user, &s->user, &s->user_len);
    if (!rc && authzid && *authzid)
        rc = scram_name(mem, authzid, &s->authzid, &s->authzid_len);
    if (!rc) {
        /* libidn's copy is moved into one of ours (mem's), then wiped. */
        char *prep;
        size_t prep_len;
        rc = saslprep(password, strlen(password), &prep, &prep_len);
        if (!rc) {
            s->secret = dup_bytes(mem, prep, prep_len);
            s->secret_len = prep_len;
            wipe_free(NULL, prep, prep_len + 1);
            if (!s->secret) {
                s->secret_len = 0;
                rc = SMTP_E_NOMEM;
            }
        }
    }
    if (rc) {
        smtp_sasl_free(s);
        return rc;
    }

    /* gs2-header "n," ["a=" authzid] "," then "n=" user ",r=" nonce:
     * 10 fixed bytes at most. */
    rc = sb_alloc(&m, 10 + s->authzid_len + s->user_len + nonce_len, mem);
    if (rc) {
        smtp_sasl_free(s);
        return rc;
    }
    sb_str(&m, "n,");
    if (s->authzid) {
        sb_str(&m, "a=");
        sb_put(&m, s->authzid, s->authzid_len);
    }
    sb_str(&m, ",");
    s->gs2_len = m.len;
    sb_str(&m, "n=");
    sb_put(&m, s->user, s->user_len);
    sb_str(&m, ",r=");
    sb_put(&m, nonce, nonce_len);
    OPENSSL_cleanse(nonce, sizeof nonce);
    rc = sb_check(&m);
    if (!rc) {
        s->client_first = dup_bytes(mem, m.p, m.len);
        s->client_first_len = m.len;
        s->nonce_len = nonce_len;
        if (!s->client_first) {
            s->client_first_len = 0;
            rc = SMTP_E_NOMEM;
        }
    }
    sb_free(&m);
    if (!rc)
        rc = put_b64(initial, s->client_first, s->client_first_len);
    if (rc) {
        smtp_sasl_free(s);
        return rc;
    }
    s->scram = SCRAM_SENT_FIRST;
    *out = s;
    return 0;
}

/* server-first-message -> client-final-message. */
static int scram_client_final(smtp_sasl *s, const char *msg, size_t n, smtp_buf *out)
{
    const char *cnonce = s->client_first + s->client_first_len - s->nonce_len;
    const char *bare = s->client_first + s->gs2_len;
    size_t bare_len = s->client_first_len - s->gs2_len;
    const char *snonce, *salt_b64, *iter;
    size_t snonce_len, salt_b64_len, iter_len, pos = 0, i;
    unsigned long iterations = 0;
    smtp_buf salt;
    sbuf without_proof, auth, final;
    unsigned char salted[SCRAM_HASH_LEN], client_key[SCRAM_HASH_LEN];
    unsigned char stored_key[SCRAM_HASH_LEN], client_sig[SCRAM_HASH_LEN];
    unsigned char proof[SCRAM_HASH_LEN], server_key[SCRAM_HASH_LEN];
    unsigned int md_len = 0;
    int rc;

    /* [reserved-mext ","] nonce "," salt "," iteration-count ["," ext] */
    if (!scram_attr(msg, n, &pos, 'r', &snonce, &snonce_len) ||
        !scram_attr(msg, n, &pos, 's', &salt_b64, &salt_b64_len) ||
        !scram_attr(msg, n, &pos, 'i', &iter, &iter_len))
        return SMTP_E_PROTOCOL; /* an "m=" extension lands here too */
    if (!nonce_valid(snonce, snonce_len) || snonce_len <= s->nonce_len ||
        memcmp(snonce, cnonce, s->nonce_len) != 0)
        return SMTP_E_PROTOCOL;
    if (iter_len == 0 || iter[0] == '0')
        return SMTP_E_PROTOCOL;
    for (i = 0; i < iter_len; i++) {
        if (iter[i] < '0' || iter[i] > '9')
            return SMTP_E_PROTOCOL;
        iterations = iterations * 10 + (unsigned long)(iter[i] - '0');
        if (iterations > SMTP_SASL_SCRAM_MAX_ITERATIONS)
            return SMTP_E_PROTOCOL; /* stop before unsigned long could wrap */
    }
    if (iterations < SMTP_SASL_SCRAM_MIN_ITERATIONS ||
        iterations > SMTP_SASL_SCRAM_MAX_ITERATIONS)
        return SMTP_E_PROTOCOL;
    rc = decode_b64(salt_b64, salt_b64_len, SMTP_SASL_MAX_CHALLENGE, &salt, s->mem);
    if (!rc && smtp_buf_len(&salt) == 0)
        rc = SMTP_E_PROTOCOL;
    if (rc) {
        buf_wipe_free(&salt);
        return rc == SMTP_E_LIMIT ? SMTP_E_PROTOCOL : rc;
    }

    /* client-final-message-without-proof: "c=" base64(gs2-header) ",r=" nonce */
    rc = sb_alloc(&without_proof, 8 + b64_len(s->gs2_len) + snonce_len, s->mem);
    if (rc) {
        buf_wipe_free(&salt);
        return rc;
    }
    sb_str(&without_proof, "c=");
    rc = sb_put_b64(&without_proof, s->client_first, s->gs2_len);
    sb_str(&without_proof, ",r=");
    sb_put(&without_proof, snonce, snonce_len);
    if (!rc)
        rc = sb_check(&without_proof);

    /* AuthMessage = client-first-message-bare "," server-first-message ","
     *               client-final-message-without-proof */
    auth.p = final.p = NULL;
    auth.cap = final.cap = 0;
    auth.mem = final.mem = s->mem;
    if (!rc)
        rc = sb_alloc(&auth, bare_len + n + without_proof.len + 2, s->mem);
    if (!rc) {
        sb_put(&auth, bare, bare_len);
        sb_put(&auth, ",", 1);
        sb_put(&auth, msg, n);
        sb_put(&auth, ",", 1);
        sb_put(&auth, without_proof.p, without_proof.len);
        rc = sb_check(&auth);
    }

    /* SaltedPassword  = Hi(Normalize(password), salt, i)
     * ClientKey       = HMAC(SaltedPassword, "Client Key")
     * StoredKey       = H(ClientKey)
     * ClientSignature = HMAC(StoredKey, AuthMessage)
     * ClientProof     = ClientKey XOR ClientSignature
     * ServerKey       = HMAC(SaltedPassword, "Server Key")
     * ServerSignature = HMAC(ServerKey, AuthMessage) */
    if (!rc && !s->secret)
        rc = SMTP_E_STATE; /* cannot happen: the password goes only below */
    if (!rc && PKCS5_PBKDF2_HMAC(s->secret, (int)s->secret_len,
                                 (const unsigned char *)smtp_buf_ptr(&salt),
                                 (int)smtp_buf_len(&salt), (int)iterations, EVP_sha256(),
                                 SCRAM_HASH_LEN, salted) != 1)
        rc = SMTP_E_NOMEM;
    if (!rc)
        rc = hmac256(salted, sizeof salted, "Client Key", 10, client_key);
    if (!rc && (EVP_Digest(client_key, sizeof client_key, stored_key, &md_len, EVP_sha256(),
                           NULL) != 1 || md_len != SCRAM_HASH_LEN))
        rc = SMTP_E_NOMEM;
    if (!rc)
        rc = hmac256(stored_key, sizeof stored_key, auth.p, auth.len, client_sig);
    if (!rc) {
        for (i = 0; i < SCRAM_HASH_LEN; i++)
            proof[i] = client_key[i] ^ client_sig[i];
        rc = hmac256(salted, sizeof salted, "Server Key", 10, server_key);
    }
    if (!rc)
        rc = hmac256(server_key, sizeof server_key, auth.p, auth.len, s->server_sig);

    /* client-final-message = without-proof ",p=" base64(ClientProof) */
    if (!rc)
        rc = sb_alloc(&final, without_proof.len + 3 + b64_len(SCRAM_HASH_LEN), s->mem);
    if (!rc) {
        sb_put(&final, without_proof.p, without_proof.len);
        sb_str(&final, ",p=");
        rc = sb_put_b64(&final, proof, sizeof proof);
    }
    if (!rc)
        rc = put_b64(out, final.p, final.len);

    OPENSSL_cleanse(salted, sizeof salted);
    OPENSSL_cleanse(client_key, sizeof client_key);
    OPENSSL_cleanse(stored_key, sizeof stored_key);
    OPENSSL_cleanse(client_sig, sizeof client_sig);
    OPENSSL_cleanse(proof, sizeof proof);
    OPENSSL_cleanse(server_key, sizeof server_key);
    sb_free(&final);
    sb_free(&auth);
    sb_free(&without_proof);
    buf_wipe_free(&salt);
    if (rc)
        return rc;
    s->scram = SCRAM_SENT_FINAL;
    forget_secret(s); /* the server signature is all that is left to check */
    return 0;
}

/* server-final-message: ("e=" error / "v=" verifier) ["," extensions]. */
static int scram_verify(smtp_sasl *s, const char *msg, size_t n)
{
    const char *v;
    size_t v_len, pos = 0;
    smtp_buf sig;
    int rc;

    if (!scram_attr(msg, n, &pos, 'v', &v, &v_len))
        return SMTP_E_PROTOCOL; /* "e=..." or anything else */
    rc = decode_b64(v, v_len, 64, &sig, s->mem);
    if (!rc && (smtp_buf_len(&sig) != SCRAM_HASH_LEN ||
                CRYPTO_memcmp(smtp_buf_ptr(&sig), s->server_sig, SCRAM_HASH_LEN) != 0))
        rc = SMTP_E_PROTOCOL;
    buf_wipe_free(&sig);
    if (rc)
        return rc == SMTP_E_NOMEM ? rc : SMTP_E_PROTOCOL;
    s->scram = SCRAM_DONE;
    return 0;
}

static int scram_step(smtp_sasl *s, const smtp_buf *ch, smtp_buf *out)
{
    const char *p = smtp_buf_ptr(ch);
    size_t n = smtp_buf_len(ch);

    switch (s->scram) {
    case SCRAM_SENT_FIRST:
        if (n == 0 && !s->resent_first) {
            /* The caller did not send the initial response. */
            s->resent_first = 1;
            return put_b64(out, s->client_first, s->client_first_len);
        }
        return scram_client_final(s, p, n, out);
    case SCRAM_SENT_FINAL:
        return scram_verify(s, p, n); /* the response is empty */
    case SCRAM_DONE:
    default:
        return SMTP_E_PROTOCOL;
    }
}

/* ---- public entry points ------------------------------------------------- */

static int token_valid(const char *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c < 0x21 || c > 0x7e)
            return 0;
    }
    return 1;
}

static int has_control(const char *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c < 0x20 || c == 0x7f)
            return 1;
    }
    return 0;
}

int smtp_sasl_start(smtp_sasl **out, const char *mech, const char *authzid,
                    const char *user, const char *secret, smtp_buf *initial)
{
    return smtp_sasl_start_mem(out, mech, authzid, user, secret, initial, NULL);
}

int smtp_sasl_start_mem(smtp_sasl **out, const char *mech, const char *authzid,
                        const char *user, const char *secret, smtp_buf *initial,
                        const smtp_mem *mem)
{
    size_t az_len, user_len, secret_len;
    smtp_sasl *s;
    int m, rc = 0;

    if (!out)
        return SMTP_E_ARGUMENT;
    *out = NULL;
    m = mech_lookup(mech);
    if (m < 0 || !user || !secret || !initial)
        return SMTP_E_ARGUMENT;
    if (m == M_SCRAM_SHA_256)
        return scram_start(out, authzid, user, secret, NULL, initial, mem);

    az_len = authzid ? bounded_len(authzid, SMTP_SASL_MAX_FIELD) : 0;
    user_len = bounded_len(user, SMTP_SASL_MAX_FIELD);
    secret_len = bounded_len(secret, SMTP_SASL_MAX_FIELD);
    if (az_len > SMTP_SASL_MAX_FIELD || user_len > SMTP_SASL_MAX_FIELD ||
        secret_len > SMTP_SASL_MAX_FIELD || user_len == 0 || secret_len == 0)
        return SMTP_E_ARGUMENT;
    if (m != M_PLAIN && az_len > 0)
        return SMTP_E_ARGUMENT; /* the mechanism has no place for it */

    switch (m) {
    case M_PLAIN:
        if (!utf8_valid(user, user_len) || !utf8_valid(secret, secret_len) ||
            (az_len && !utf8_valid(authzid, az_len)))
            return SMTP_E_ARGUMENT;
        break;
    case M_XOAUTH2:
    case M_OAUTHBEARER:
        if (!utf8_valid(user, user_len) || has_control(user, user_len) ||
            !token_valid(secret, secret_len))
            return SMTP_E_ARGUMENT;
        break;
    case M_CRAM_MD5: {
        /* Fail now, not mid-exchange, when MD5 is unavailable (FIPS). */
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int md_len = 0;
        if (!HMAC(EVP_md5(), "k", 1, (const unsigned char *)"d", 1, md, &md_len))
            return SMTP_E_ARGUMENT;
        break;
    }
    default:
        break;
    }

    s = sasl_new((enum mech)m, mem);
    if (!s)
        return SMTP_E_NOMEM;
    s->authzid = dup_bytes(mem, authzid ? authzid : "", az_len);
    s->authzid_len = az_len;
    s->user = dup_bytes(mem, user, user_len);
    s->user_len = user_len;
    s->secret = dup_bytes(mem, secret, secret_len);
    s->secret_len = secret_len;
    if (!s->authzid || !s->user || !s->secret)
        rc = SMTP_E_NOMEM;
    if (!rc && (m == M_PLAIN || is_token_mech((size_t)m)))
        rc = put_message(s, initial);
    if (rc) {
        /* lengths of the NULL ones do not matter: wipe_free skips NULL */
        smtp_sasl_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

int smtp_sasl_start_scram_nonce(smtp_sasl **out, const char *user, const char *password,
                                const char *nonce, smtp_buf *initial)
{
    if (!out)
        return SMTP_E_ARGUMENT;
    *out = NULL;
    if (!user || !password || !nonce || !initial)
        return SMTP_E_ARGUMENT;
    return scram_start(out, NULL, user, password, nonce, initial, NULL);
}

int smtp_sasl_step(smtp_sasl *s, const char *challenge, size_t len, smtp_buf *response)
{
    smtp_buf ch;
    int rc;

    if (!s || !response || (!challenge && len > 0))
        return SMTP_E_ARGUMENT;
    if (s->failed)
        return SMTP_E_STATE;
    if (++s->steps > SMTP_SASL_MAX_STEPS) {
        s->failed = 1;
        return SMTP_E_PROTOCOL;
    }
    rc = decode_b64(challenge ? challenge : "", len, SMTP_SASL_MAX_CHALLENGE, &ch, s->mem);
    if (!rc) {
        switch (s->mech) {
        case M_PLAIN: rc = plain_step(s, &ch, response); break;
        case M_LOGIN: rc = login_step(s, &ch, response); break;
        case M_CRAM_MD5: rc = cram_md5_step(s, &ch, response); break;
        case M_XOAUTH2:
        case M_OAUTHBEARER: rc = token_step(s, &ch, response); break;
        case M_SCRAM_SHA_256: rc = scram_step(s, &ch, response); break;
        default: rc = SMTP_E_STATE; break;
        }
    }
    buf_wipe_free(&ch);
    if (rc)
        s->failed = 1;
    return rc;
}

int smtp_sasl_finish(smtp_sasl *s, const char *text, size_t len)
{
    size_t start, end, word;
    int rc, attempt;

    if (!s || (!text && len > 0))
        return SMTP_E_ARGUMENT;
    if (s->mech != M_SCRAM_SHA_256)
        return 0;
    if (s->scram == SCRAM_DONE)
        return 0;
    if (s->failed || s->scram != SCRAM_SENT_FINAL)
        return SMTP_E_PROTOCOL;
    if (len > 2 * SMTP_SASL_MAX_CHALLENGE)
        return SMTP_E_LIMIT;
    if (len == 0) {
        /* No text, so no signature: text may be NULL, never offset it. */
        s->failed = 1;
        return SMTP_E_PROTOCOL;
    }

    /* The whole text, then its last word ("235 2.7.0 <base64>"). */
    start = 0;
    end = len;
    while (start < end && is_blank(text[start]))
        start++;
    while (end > start && is_blank(text[end - 1]))
        end--;
    word = end;
    while (word > start && !is_blank(text[word - 1]))
        word--;
    for (attempt = 0; attempt < 2; attempt++) {
        size_t from = attempt == 0 ? start : word;
        smtp_buf dec;
        if (attempt == 1 && word == start)
            break; /* a single word: already tried */
        rc = decode_b64(text + from, end - from, SMTP_SASL_MAX_CHALLENGE, &dec, s->mem);
        if (rc == SMTP_E_NOMEM) {
            buf_wipe_free(&dec);
            return rc;
        }
        if (!rc && smtp_buf_len(&dec) >= 2 &&
            (memcmp(smtp_buf_ptr(&dec), "v=", 2) == 0 ||
             memcmp(smtp_buf_ptr(&dec), "e=", 2) == 0)) {
            rc = scram_verify(s, smtp_buf_ptr(&dec), smtp_buf_len(&dec));
            buf_wipe_free(&dec);
            if (rc)
                s->failed = 1;
            return rc == SMTP_E_NOMEM ? rc : (rc ? SMTP_E_PROTOCOL : 0);
        }
        buf_wipe_free(&dec);
    }
    s->failed = 1;
    return SMTP_E_PROTOCOL;
}
