/* Tests for smtp_dkim: body hashes against RFC 6376/8463 values, however
 * the input is cut; the header section; limits; signing and its refusals
 * (the RFC 8463 example key reproduces the RFC's signature). */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "smtp_buf.h"
#include "smtp_codec.h"
#include "smtp_dkim.h"
#include "smtp_error.h"

static const char RFC_MESSAGE[] =
    "From: Joe SixPack <joe@football.example.com>\r\n"
    "To: Suzie Q <suzie@shopping.example.net>\r\n"
    "Subject: Is dinner ready?\r\n"
    "Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"
    "Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n"
    "\r\n"
    "Hi.\r\n"
    "\r\n"
    "We lost the game.  Are you hungry yet?\r\n"
    "\r\n"
    "Joe.\r\n";

/* The body hash of msg fed in pieces of step octets, in base64. */
static int body_hash(const char *msg, size_t len, size_t step, int relaxed, char *b64, size_t b64_size,
                     size_t *header_len)
{
    smtp_dkim_body *d;
    unsigned char hash[SMTP_DKIM_HASH_LEN];
    const char *header;
    smtp_buf out;
    smtp_b64 enc;
    size_t i;
    int rc = smtp_dkim_body_new(&d, relaxed, 65536);
    if (rc)
        return rc;
    for (i = 0; i < len && rc == 0; i += step)
        rc = smtp_dkim_body_update(d, msg + i, len - i < step ? len - i : step);
    if (rc == 0)
        rc = smtp_dkim_body_finish(d, &header, header_len, hash);
    smtp_dkim_body_free(d);
    if (rc)
        return rc;
    smtp_buf_init(&out, 1024);
    smtp_b64_init(&enc, 0);
    smtp_b64_update(&enc, (const char *)hash, sizeof hash, &out);
    smtp_b64_finish(&enc, &out);
    snprintf(b64, b64_size, "%.*s", (int)smtp_buf_len(&out), smtp_buf_ptr(&out));
    smtp_buf_free(&out);
    return 0;
}

static void test_body_hashes(void)
{
    static const size_t steps[] = {1, 2, 3, 7, 64, 100000};
    char b64[64];
    size_t i, header_len = 0;
    int ok_relaxed = 1, ok_simple = 1;
    for (i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        body_hash(RFC_MESSAGE, strlen(RFC_MESSAGE), steps[i], 1, b64, sizeof b64, &header_len);
        ok_relaxed &= strcmp(b64, "2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=") == 0;
        body_hash(RFC_MESSAGE, strlen(RFC_MESSAGE), steps[i], 0, b64, sizeof b64, &header_len);
        ok_simple &= strcmp(b64, "4bLNXImK9drULnmePzZNEBleUanJCX5PIsDIFoH4KTQ=") == 0;
    }
    CHECK(ok_relaxed, "dkim: RFC 8463 relaxed body hash, input cut anywhere");
    CHECK(ok_simple, "dkim: RFC 8463 simple body hash, input cut anywhere");
    CHECK(header_len == (size_t)(strstr(RFC_MESSAGE, "\r\n\r\n") - RFC_MESSAGE) + 2, "dkim: the header section is kept without its empty line");

    body_hash("From: a\r\n\r\n", 11, 64, 0, b64, sizeof b64, &header_len);
    CHECK(strcmp(b64, "frcCV1k9oG9oKj3dpUqdJg1PxRT2RSN/XKdLCPjaYaY=") == 0, "dkim: empty body, simple is CRLF");
    body_hash("From: a\r\n\r\n", 11, 64, 1, b64, sizeof b64, &header_len);
    CHECK(strcmp(b64, "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=") == 0, "dkim: empty body, relaxed is nothing");
    body_hash("From: a\r\n", 9, 64, 1, b64, sizeof b64, &header_len);
    CHECK(strcmp(b64, "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=") == 0 && header_len == 9,
          "dkim: no empty line: all header, empty body");
    {
        /* Bare LF and bare CR are line ends, as on the wire. */
        char a[64], b[64];
        static const char lf[] = "From: a\n\nHi.\n\nWe lost the game.  Are you hungry yet?\n\nJoe.\n\n\n";
        static const char cr[] = "From: a\r\rHi.\r\rWe lost the game.  Are you hungry yet?\r\rJoe.";
        body_hash(lf, strlen(lf), 3, 1, a, sizeof a, &header_len);
        body_hash(cr, strlen(cr), 5, 1, b, sizeof b, &header_len);
        CHECK(strcmp(a, "2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=") == 0 && strcmp(a, b) == 0,
              "dkim: bare LF and bare CR hash like CRLF; trailing empty lines and a missing last line end");
    }
}

static void test_limits(void)
{
    smtp_dkim_body *d;
    unsigned char hash[SMTP_DKIM_HASH_LEN];
    const char *h;
    size_t hl;
    smtp_dkim_body_new(&d, 1, 16);
    CHECK(smtp_dkim_body_update(d, "Subject: a long header line\r\n\r\n", 31) == SMTP_E_LIMIT,
          "dkim: a header section over the limit is SMTP_E_LIMIT");
    smtp_dkim_body_free(d);
    smtp_dkim_body_new(&d, 1, 1024);
    smtp_dkim_body_finish(d, &h, &hl, hash);
    CHECK(smtp_dkim_body_update(d, "x", 1) == SMTP_E_STATE, "dkim: update after finish is SMTP_E_STATE");
    CHECK(smtp_dkim_body_finish(d, &h, &hl, hash) == SMTP_E_STATE, "dkim: finish twice is SMTP_E_STATE");
    smtp_dkim_body_free(d);
    smtp_dkim_body_free(NULL);
}

static void test_sign(void)
{
    /* RFC 8463 A.2's key as PKCS#8: the Ed25519 OID prefix, then the seed. */
    static const char pem[] = "-----BEGIN PRIVATE KEY-----\n"
                              "MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n"
                              "-----END PRIVATE KEY-----\n";
    static const char data[] =
        "from:Joe SixPack <joe@football.example.com>\r\n"
        "to:Suzie Q <suzie@shopping.example.net>\r\n"
        "subject:Is dinner ready?\r\n"
        "date:Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"
        "message-id:<20030712040037.46341.5F8J@football.example.com>\r\n"
        "dkim-signature:v=1; a=ed25519-sha256; c=relaxed/relaxed; d=football.example.com;"
        " i=@football.example.com; q=dns/txt; s=brisbane; t=1528637909; h=from : to : subject :"
        " date : message-id : from : subject : date; bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=; b=";
    static const char want[] =
        "/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11BusFa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==";
    smtp_buf sig, b64;
    smtp_b64 enc;
    smtp_dkim_key *key = NULL, *none = NULL;
    const char *msg = NULL;
    int rc;
    smtp_buf_init(&sig, 4096);
    smtp_buf_init(&b64, 4096);
    rc = smtp_dkim_key_new(&key, SMTP_DKIM_ED25519_SHA256, pem, strlen(pem), &msg);
    CHECK(rc == 0 && key, "dkim: the RFC 8463 Ed25519 key is read");
    if (rc == 0)
        rc = smtp_dkim_sign(key, data, strlen(data), &sig);
    smtp_b64_init(&enc, 0);
    smtp_b64_update(&enc, smtp_buf_ptr(&sig), smtp_buf_len(&sig), &b64);
    smtp_b64_finish(&enc, &b64);
    CHECK(rc == 0 && smtp_buf_len(&b64) == strlen(want) && memcmp(smtp_buf_ptr(&b64), want, strlen(want)) == 0,
          "dkim: RFC 8463 example signature reproduced");
    smtp_buf_clear(&sig);
    CHECK(key && smtp_dkim_sign(key, data, strlen(data), &sig) == 0 && smtp_buf_len(&sig) == 64,
          "dkim: one key signs again (Ed25519 signatures are 64 octets)");
    smtp_dkim_key_free(key);
    msg = NULL;
    rc = smtp_dkim_key_new(&none, SMTP_DKIM_RSA_SHA256, pem, strlen(pem), &msg);
    CHECK(rc == SMTP_E_ARGUMENT && msg && strstr(msg, "RSA") && none == NULL,
          "dkim: rsa-sha256 with an Ed25519 key is refused");
    msg = NULL;
    rc = smtp_dkim_key_new(&none, SMTP_DKIM_RSA_SHA256, "junk", 4, &msg);
    CHECK(rc == SMTP_E_ARGUMENT && msg && strstr(msg, "PEM") && none == NULL,
          "dkim: a key that is not PEM is refused");
    smtp_dkim_key_free(NULL);
    smtp_buf_free(&sig);
    smtp_buf_free(&b64);
}

int main(void)
{
    test_body_hashes();
    test_limits();
    test_sign();
    return check_done();
}
