/* DKIM body hashing and signing: see smtp_dkim.h. */
#include "smtp_dkim.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "smtp_error.h"
#include "smtp_frame.h"

/* Canonicalised bytes are collected here and handed to the digest in one
 * call per block, not one per octet. */
#define DKIM_BLOCK 4096
/* Input is framed this many octets at a time, so the normalised copy stays
 * small whatever the caller hands over at once. */
#define DKIM_SLICE 65536

struct smtp_dkim_body {
    const smtp_mem *mem; /* its allocator (NULL: the C library) */
    EVP_MD_CTX *md;
    smtp_frame frame;   /* line ends made CRLF, as on the wire */
    smtp_buf norm;      /* the framer's output for one chunk */
    smtp_buf header;    /* the header section, bounded */
    int relaxed;
    int in_header;
    int at_line_start;  /* in the normalised stream */
    int finished;
    /* body canonicalisation */
    unsigned long long empty_lines;  /* held back: trailing ones vanish */
    int line_has_content;
    int pending_space;  /* relaxed: a run of WSP not yet written */
    int wrote_any;
    unsigned char block[DKIM_BLOCK];
    size_t nblock;
};

static int flush_block(smtp_dkim_body *d)
{
    if (d->nblock && EVP_DigestUpdate(d->md, d->block, d->nblock) != 1)
        return SMTP_E_TLS;
    d->nblock = 0;
    return 0;
}

static int put(smtp_dkim_body *d, const char *p, size_t n)
{
    int rc;
    d->wrote_any = 1;
    while (n) {
        size_t room = DKIM_BLOCK - d->nblock, k = n < room ? n : room;
        memcpy(d->block + d->nblock, p, k);
        d->nblock += k;
        p += k;
        n -= k;
        if (d->nblock == DKIM_BLOCK && (rc = flush_block(d)) != 0)
            return rc;
    }
    return 0;
}

/* A line of the body ended (its CRLF): empty lines are only counted, since
 * trailing ones are dropped (section 3.4.3 and 3.4.4). */
static int end_line(smtp_dkim_body *d)
{
    int rc = 0;
    if (d->line_has_content)
        rc = put(d, "\r\n", 2);
    else
        d->empty_lines++;
    d->line_has_content = 0;
    d->pending_space = 0; /* relaxed: WSP at the end of a line goes */
    return rc;
}

static int content(smtp_dkim_body *d, char c)
{
    int rc;
    if (d->relaxed && (c == ' ' || c == '\t')) {
        d->pending_space = 1;
        return 0;
    }
    if (!d->line_has_content) {
        for (; d->empty_lines; d->empty_lines--)
            if ((rc = put(d, "\r\n", 2)) != 0)
                return rc;
        d->line_has_content = 1;
    }
    if (d->pending_space) {
        d->pending_space = 0;
        if ((rc = put(d, " ", 1)) != 0)
            return rc;
    }
    return put(d, &c, 1);
}

/* Normalised input (every line end CRLF, both octets in the same span). */
static int take(smtp_dkim_body *d, const char *p, size_t n)
{
    size_t i = 0;
    int rc;
    while (i < n) {
        if (d->in_header) {
            /* An empty line ends the header section; it belongs to neither. */
            if (d->at_line_start && p[i] == '\r') {
                d->in_header = 0;
                d->at_line_start = 1;
                i += 2;
                continue;
            }
            {
                const char *nl = memchr(p + i, '\n', n - i);
                size_t stop = nl ? (size_t)(nl - p) + 1 : n;
                if ((rc = smtp_buf_append(&d->header, p + i, stop - i)) != 0)
                    return rc;
                d->at_line_start = nl != NULL;
                i = stop;
            }
            continue;
        }
        if (p[i] == '\r') {
            if ((rc = end_line(d)) != 0)
                return rc;
            i += 2;
            continue;
        }
        if (!d->relaxed && d->line_has_content) {
            /* simple: copy the rest of the line as it is */
            const char *cr = memchr(p + i, '\r', n - i);
            size_t stop = cr ? (size_t)(cr - p) : n;
            if ((rc = put(d, p + i, stop - i)) != 0)
                return rc;
            i = stop;
            continue;
        }
        if ((rc = content(d, p[i])) != 0)
            return rc;
        i++;
    }
    return 0;
}

int smtp_dkim_body_new(smtp_dkim_body **out, int relaxed, size_t max_header)
{
    return smtp_dkim_body_new_mem(out, relaxed, max_header, NULL);
}

int smtp_dkim_body_new_mem(smtp_dkim_body **out, int relaxed, size_t max_header,
                           const smtp_mem *mem)
{
    smtp_dkim_body *d = smtp_mem_malloc(mem, sizeof *d);
    *out = NULL;
    if (!d)
        return SMTP_E_NOMEM;
    memset(d, 0, sizeof *d);
    d->mem = mem;
    d->md = EVP_MD_CTX_new();
    if (!d->md) {
        smtp_mem_free(mem, d);
        return SMTP_E_NOMEM;
    }
    if (EVP_DigestInit_ex(d->md, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(d->md);
        smtp_mem_free(mem, d);
        return SMTP_E_TLS;
    }
    smtp_frame_init(&d->frame, 0);
    d->frame.stuffing = 0;
    smtp_buf_init_mem(&d->norm, smtp_frame_bound(DKIM_SLICE), mem);
    smtp_buf_init_mem(&d->header, max_header, mem);
    d->relaxed = relaxed ? 1 : 0;
    d->in_header = 1;
    d->at_line_start = 1;
    *out = d;
    return 0;
}

int smtp_dkim_body_update(smtp_dkim_body *d, const char *data, size_t len)
{
    int rc;
    if (d->finished)
        return SMTP_E_STATE;
    while (len) {
        size_t k = len < DKIM_SLICE ? len : DKIM_SLICE;
        smtp_buf_clear(&d->norm);
        if ((rc = smtp_frame_write(&d->frame, data, k, &d->norm)) != 0)
            return rc;
        if ((rc = take(d, smtp_buf_ptr(&d->norm), smtp_buf_len(&d->norm))) != 0)
            return rc;
        data += k;
        len -= k;
    }
    return 0;
}

int smtp_dkim_body_finish(smtp_dkim_body *d, const char **header, size_t *header_len,
                          unsigned char hash[SMTP_DKIM_HASH_LEN])
{
    unsigned int n = 0;
    int rc;
    if (d->finished)
        return SMTP_E_STATE;
    d->finished = 1;
    /* A last line without its line end gets one, as on the wire. */
    if (!d->in_header && (d->line_has_content || d->pending_space) && (rc = end_line(d)) != 0)
        return rc;
    if (d->in_header && !d->at_line_start && (rc = smtp_buf_append(&d->header, "\r\n", 2)) != 0)
        return rc;
    /* An empty body is CRLF under "simple", nothing under "relaxed". */
    if (!d->relaxed && !d->wrote_any && (rc = put(d, "\r\n", 2)) != 0)
        return rc;
    if ((rc = flush_block(d)) != 0)
        return rc;
    if (EVP_DigestFinal_ex(d->md, hash, &n) != 1 || n != SMTP_DKIM_HASH_LEN)
        return SMTP_E_TLS;
    *header = smtp_buf_ptr(&d->header);
    *header_len = smtp_buf_len(&d->header);
    return 0;
}

void smtp_dkim_body_free(smtp_dkim_body *d)
{
    if (!d)
        return;
    EVP_MD_CTX_free(d->md);
    smtp_buf_free(&d->norm);
    smtp_buf_free(&d->header);
    smtp_mem_free(d->mem, d);
}

struct smtp_dkim_key {
    EVP_PKEY *pkey;
    smtp_dkim_alg alg;
    const smtp_mem *mem;
};

static EVP_PKEY *read_key(const char *pem, size_t pem_len)
{
    EVP_PKEY *key = NULL;
    BIO *bio;
    if (pem_len > (size_t)2147483647)
        return NULL;
    bio = BIO_new_mem_buf(pem, (int)pem_len);
    if (!bio)
        return NULL;
    key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    BIO_free(bio);
    return key;
}

int smtp_dkim_key_new(smtp_dkim_key **out, smtp_dkim_alg alg, const char *pem, size_t pem_len,
                      const char **msg)
{
    return smtp_dkim_key_new_mem(out, alg, pem, pem_len, msg, NULL);
}

int smtp_dkim_key_new_mem(smtp_dkim_key **out, smtp_dkim_alg alg, const char *pem,
                          size_t pem_len, const char **msg, const smtp_mem *mem)
{
    const char *why = NULL;
    smtp_dkim_key *k;
    EVP_PKEY *pkey = read_key(pem, pem_len);

    *out = NULL;
    if (!pkey)
        why = "the DKIM key is not a PEM private key";
    else if (alg == SMTP_DKIM_RSA_SHA256 && EVP_PKEY_id(pkey) != EVP_PKEY_RSA)
        why = "rsa-sha256 needs an RSA key";
    else if (alg == SMTP_DKIM_RSA_SHA256 && EVP_PKEY_bits(pkey) < SMTP_DKIM_MIN_RSA_BITS)
        why = "the RSA key is shorter than 1024 bits (RFC 8301)";
    else if (alg == SMTP_DKIM_ED25519_SHA256 && EVP_PKEY_id(pkey) != EVP_PKEY_ED25519)
        why = "ed25519-sha256 needs an Ed25519 key";
    if (why) {
        EVP_PKEY_free(pkey);
        if (msg)
            *msg = why;
        return SMTP_E_ARGUMENT;
    }
    k = smtp_mem_malloc(mem, sizeof *k);
    if (!k) {
        EVP_PKEY_free(pkey);
        return SMTP_E_NOMEM;
    }
    k->pkey = pkey;
    k->alg = alg;
    k->mem = mem;
    *out = k;
    return 0;
}

void smtp_dkim_key_free(smtp_dkim_key *key)
{
    if (!key)
        return;
    EVP_PKEY_free(key->pkey);
    smtp_mem_free(key->mem, key);
}

int smtp_dkim_sign(const smtp_dkim_key *key, const char *data, size_t len, smtp_buf *sig)
{
    unsigned char digest[SMTP_DKIM_HASH_LEN];
    unsigned int dlen = 0;
    const unsigned char *input = (const unsigned char *)data;
    size_t input_len = len, sig_len = 0;
    EVP_MD_CTX *ctx;
    char *out;
    int rc = SMTP_E_TLS;

    if (key->alg == SMTP_DKIM_ED25519_SHA256) {
        /* RFC 8463 section 3: Ed25519 signs the SHA-256 of the data. */
        if (EVP_Digest(data, len, digest, &dlen, EVP_sha256(), NULL) != 1)
            return SMTP_E_TLS;
        input = digest;
        input_len = dlen;
    }
    ctx = EVP_MD_CTX_new();
    if (!ctx)
        return SMTP_E_NOMEM;
    if (EVP_DigestSignInit(ctx, NULL, key->alg == SMTP_DKIM_RSA_SHA256 ? EVP_sha256() : NULL, NULL,
                           key->pkey) != 1 ||
        EVP_DigestSign(ctx, NULL, &sig_len, input, input_len) != 1)
        goto done;
    out = smtp_buf_reserve(sig, sig_len);
    if (!out) {
        rc = SMTP_E_NOMEM;
        goto done;
    }
    if (EVP_DigestSign(ctx, (unsigned char *)out, &sig_len, input, input_len) != 1)
        goto done;
    smtp_buf_commit(sig, sig_len);
    rc = 0;
done:
    EVP_MD_CTX_free(ctx);
    return rc;
}
