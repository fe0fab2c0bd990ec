/* libFuzzer target: the SASL client mechanisms (csrc/smtp_sasl.c) fed
 * arbitrary server challenges.
 *
 * Input layout:
 *   byte 0  mechanism: % 6 -> PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-256 with
 *           the RFC 7677 nonce and credentials, SCRAM-SHA-256 with a random
 *           nonce, XOAUTH2
 *   byte 1  flags: bit 0 the segments are raw challenges (base64-encoded
 *           here before being fed, so the fuzzer works on the decoded
 *           grammar); bit 1 the first two segments are the user name and
 *           the secret (SASLprep and the per-mechanism checks); bit 2 a
 *           small response buffer limit (byte 2); bit 3 the last segment is
 *           the text of the final 235 reply (smtp_sasl_finish)
 *   byte 2  the small limit
 *   rest    segments separated by LF: the mechanism list for
 *           smtp_sasl_choose, [user, secret,] challenges..., [235 text]
 *
 * Invariants checked:
 *  - never crashes; every call returns one of its documented codes;
 *  - after a failed step every later one is SMTP_E_STATE; the
 *    (SMTP_SASL_MAX_STEPS+1)th step fails;
 *  - a response is appended base64 (alphabet only, length % 4 == 0) and
 *    decodes to what the mechanism must send; on error nothing is appended;
 *  - SCRAM with the RFC 7677 server-first gives the RFC's client-final and
 *    the RFC's server-final verifies; smtp_sasl_finish succeeds after a
 *    verified server-final and never before a client-final was produced;
 *  - bounded: iteration counts above 10000 are not fed (each costs PBKDF2
 *    time; the library's own bound, 1000000, is checked by the unit tests),
 *    the loop over challenges is bounded by the input.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_buf.h"
#include "smtp_codec.h"
#include "smtp_error.h"
#include "smtp_sasl.h"

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "fuzz_sasl: invariant failed at line %d: %s\n", __LINE__, \
                    #cond);                                                          \
            abort();                                                                 \
        }                                                                            \
    } while (0)

#define RFC_NONCE "rOprNGfwEbeRWgbNEkqO"
#define RFC_SERVER_FIRST \
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
#define RFC_CLIENT_FINAL                                                       \
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+" \
    "Ute9ytag9zjfMHgsqmmiz7AndVQ="
#define RFC_SERVER_FINAL "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
#define MAX_ITER_FED 10000UL

enum { PLAIN, LOGIN, CRAM, SCRAM_FIXED, SCRAM_RANDOM, XOAUTH2 };
static const char *const names[] = {"PLAIN", "login", "CRAM-MD5", "SCRAM-SHA-256",
                                    "scram-sha-256", "XOAUTH2"};

static int is_b64_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '+' || c == '/' || c == '=';
}

/* A NUL-terminated copy (an embedded NUL ends it, as for any C string). */
static char *cstr(const char *p, size_t n)
{
    char *s = malloc(n + 1);
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

/* Decodes b64 into a fresh buffer; 0 when it is not base64. */
static int b64dec(const char *p, size_t n, smtp_buf *out)
{
    smtp_buf_init(out, (size_t)1 << 20);
    return smtp_b64_decode(p, n, out) == 0;
}

/* A SCRAM server-first whose "i=" asks for more than MAX_ITER_FED. */
static int too_many_iterations(const char *p, size_t n)
{
    size_t i;
    for (i = 0; i + 2 < n; i++) {
        if ((i == 0 || p[i - 1] == ',') && p[i] == 'i' && p[i + 1] == '=') {
            unsigned long v = 0;
            size_t j;
            for (j = i + 2; j < n && p[j] >= '0' && p[j] <= '9'; j++) {
                v = v * 10 + (unsigned long)(p[j] - '0');
                if (v > MAX_ITER_FED)
                    return 1;
            }
        }
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int mech, raw, custom, small, finish;
    const char *p, *end;
    const char *seg[64];
    size_t seglen[64], nseg = 0, k;
    char *user = NULL, *secret = NULL;
    smtp_sasl *s = NULL;
    smtp_buf init;
    int rc, failed = 0, steps = 0, scram_phase = 0, resent = 0, login_user = 0, login_pass = 0;

    if (size < 3)
        return 0;
    mech = data[0] % 6;
    raw = data[1] & 1;
    custom = (data[1] >> 1) & 1;
    small = (data[1] >> 2) & 1;
    finish = (data[1] >> 3) & 1;
    p = (const char *)data + 3;
    end = (const char *)data + size;
    while (p <= end && nseg < 64) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        seg[nseg] = p;
        seglen[nseg] = nl ? (size_t)(nl - p) : (size_t)(end - p);
        nseg++;
        if (!nl)
            break;
        p = nl + 1;
    }
    k = 0;

    /* smtp_sasl_choose on the first segment. */
    {
        char *list = cstr(seg[0], seglen[0]);
        int t;
        for (t = 0; t < 2; t++) {
            const char *c = smtp_sasl_choose(list, t);
            if (c) {
                CHECK(smtp_sasl_supported(c));
                CHECK(t ? strcmp(c, "XOAUTH2") == 0 : strcmp(c, "XOAUTH2") != 0);
            }
        }
        (void)smtp_sasl_supported(list);
        free(list);
        k = 1;
    }

    if (custom && nseg - k >= 2) {
        user = cstr(seg[k], seglen[k]);
        secret = cstr(seg[k + 1], seglen[k + 1]);
        k += 2;
    } else {
        user = cstr("user", 4);
        secret = cstr("pencil", 6);
    }

    smtp_buf_init(&init, small ? data[2] : 65536);
    if (mech == SCRAM_FIXED)
        rc = smtp_sasl_start_scram_nonce(&s, user, secret, RFC_NONCE, &init);
    else
        rc = smtp_sasl_start(&s, names[mech], NULL, user, secret, &init);
    CHECK(rc == 0 || rc == SMTP_E_ARGUMENT || rc == SMTP_E_LIMIT || rc == SMTP_E_NOMEM);
    CHECK((rc == 0) == (s != NULL));
    if (rc) {
        CHECK(smtp_buf_len(&init) == 0);
        goto out;
    }
    {
        const char *ip = smtp_buf_ptr(&init);
        size_t in = smtp_buf_len(&init), i;
        for (i = 0; i < in; i++)
            CHECK(is_b64_char(ip[i]));
        CHECK(in % 4 == 0);
        if (mech == LOGIN || mech == CRAM)
            CHECK(in == 0);
        else
            CHECK(in > 0);
    }

    for (; k < nseg && k < 64; k++) {
        smtp_buf resp, chal, dec;
        const char *cp = seg[k];
        size_t cn = seglen[k], before;
        int empty_chal, plain_ok;

        if (finish && k == nseg - 1)
            break; /* the last segment is the 235 text */
        smtp_buf_init(&chal, (size_t)1 << 20);
        if (raw) {
            smtp_b64 e;
            smtp_b64_init(&e, 0);
            CHECK(smtp_b64_update(&e, cp, cn, &chal) == 0);
            CHECK(smtp_b64_finish(&e, &chal) == 0);
            cp = smtp_buf_ptr(&chal);
            cn = smtp_buf_len(&chal);
        }
        /* What the challenge decodes to, for the checks below. */
        plain_ok = b64dec(cp, cn, &dec);
        empty_chal = plain_ok && smtp_buf_len(&dec) == 0;
        if ((mech == SCRAM_FIXED || mech == SCRAM_RANDOM) && plain_ok &&
            too_many_iterations(smtp_buf_ptr(&dec), smtp_buf_len(&dec))) {
            smtp_buf_free(&dec);
            smtp_buf_free(&chal);
            break;
        }

        smtp_buf_init(&resp, small ? data[2] : 65536);
        CHECK(smtp_buf_append(&resp, "", 0) == 0);
        before = smtp_buf_len(&resp);
        rc = smtp_sasl_step(s, cn ? cp : NULL, cn, &resp);
        steps++;
        CHECK(rc == 0 || rc == SMTP_E_PROTOCOL || rc == SMTP_E_LIMIT || rc == SMTP_E_NOMEM ||
              rc == SMTP_E_STATE);
        if (failed)
            CHECK(rc == SMTP_E_STATE);
        else if (steps > SMTP_SASL_MAX_STEPS)
            CHECK(rc == SMTP_E_PROTOCOL);
        if (rc == SMTP_E_STATE)
            CHECK(failed);
        if (!plain_ok && !failed)
            CHECK(rc != 0); /* not base64: refused */
        if (rc) {
            CHECK(smtp_buf_len(&resp) == before);
            failed = 1;
        } else {
            const char *rp = smtp_buf_ptr(&resp) + before;
            size_t rn = smtp_buf_len(&resp) - before, i;
            smtp_buf r;
            for (i = 0; i < rn; i++)
                CHECK(is_b64_char(rp[i]));
            CHECK(rn % 4 == 0);
            CHECK(b64dec(rp, rn, &r));
            switch (mech) {
            case PLAIN:
                CHECK(steps == 1 && empty_chal);
                CHECK(smtp_buf_len(&r) == strlen(user) + strlen(secret) + 2);
                CHECK(memcmp(smtp_buf_ptr(&r) + 1, user, strlen(user)) == 0);
                break;
            case LOGIN:
                if (smtp_buf_len(&r) == strlen(user) &&
                    memcmp(smtp_buf_ptr(&r), user, strlen(user)) == 0) {
                    login_user = 1;
                } else {
                    CHECK(smtp_buf_len(&r) == strlen(secret) &&
                          memcmp(smtp_buf_ptr(&r), secret, strlen(secret)) == 0);
                    login_pass = 1;
                }
                break;
            case CRAM:
                CHECK(steps == 1 && !empty_chal);
                CHECK(smtp_buf_len(&r) == strlen(user) + 1 + 32);
                CHECK(memcmp(smtp_buf_ptr(&r), user, strlen(user)) == 0);
                CHECK(smtp_buf_ptr(&r)[strlen(user)] == ' ');
                for (i = strlen(user) + 1; i < smtp_buf_len(&r); i++)
                    CHECK(strchr("0123456789abcdef", smtp_buf_ptr(&r)[i]) != NULL);
                break;
            case XOAUTH2:
                if (steps == 1 && empty_chal)
                    CHECK(smtp_buf_len(&r) > 0);
                else
                    CHECK(smtp_buf_len(&r) == 0);
                break;
            default: /* SCRAM */
                if (scram_phase == 0 && empty_chal && !resent) {
                    resent = 1;
                    CHECK(rn == smtp_buf_len(&init) &&
                          memcmp(rp, smtp_buf_ptr(&init), rn) == 0);
                } else if (scram_phase == 0) {
                    CHECK(smtp_buf_len(&r) > 9 && memcmp(smtp_buf_ptr(&r), "c=biws,r=", 9) == 0);
                    if (mech == SCRAM_FIXED && strcmp(user, "user") == 0 &&
                        strcmp(secret, "pencil") == 0 &&
                        smtp_buf_len(&dec) == strlen(RFC_SERVER_FIRST) &&
                        memcmp(smtp_buf_ptr(&dec), RFC_SERVER_FIRST, smtp_buf_len(&dec)) == 0)
                        CHECK(smtp_buf_len(&r) == strlen(RFC_CLIENT_FINAL) &&
                              memcmp(smtp_buf_ptr(&r), RFC_CLIENT_FINAL, smtp_buf_len(&r)) == 0);
                    scram_phase = 1;
                } else {
                    CHECK(scram_phase == 1 && smtp_buf_len(&r) == 0);
                    scram_phase = 2;
                }
                break;
            }
            smtp_buf_free(&r);
        }
        /* The RFC 7677 known answer, whatever the fuzzer fed. */
        if (mech == SCRAM_FIXED && scram_phase == 1 && !failed && steps < SMTP_SASL_MAX_STEPS &&
            strcmp(user, "user") == 0 && strcmp(secret, "pencil") == 0 && plain_ok &&
            smtp_buf_len(&dec) == strlen(RFC_SERVER_FIRST) &&
            memcmp(smtp_buf_ptr(&dec), RFC_SERVER_FIRST, smtp_buf_len(&dec)) == 0) {
            smtp_buf r2, fin;
            smtp_b64 e;
            smtp_buf_init(&fin, 256);
            smtp_b64_init(&e, 0);
            CHECK(smtp_b64_update(&e, RFC_SERVER_FINAL, strlen(RFC_SERVER_FINAL), &fin) == 0);
            CHECK(smtp_b64_finish(&e, &fin) == 0);
            smtp_buf_init(&r2, 256);
            CHECK(smtp_sasl_step(s, smtp_buf_ptr(&fin), smtp_buf_len(&fin), &r2) == 0);
            CHECK(smtp_buf_len(&r2) == 0);
            steps++;
            scram_phase = 2;
            smtp_buf_free(&r2);
            smtp_buf_free(&fin);
        }
        smtp_buf_free(&resp);
        smtp_buf_free(&dec);
        smtp_buf_free(&chal);
    }
    if (mech == LOGIN && !failed)
        CHECK(steps <= 2 || login_user || login_pass);

    if (finish && nseg >= 1) {
        const char *t = seg[nseg - 1];
        size_t tn = seglen[nseg - 1];
        rc = smtp_sasl_finish(s, tn ? t : NULL, tn);
        CHECK(rc == 0 || rc == SMTP_E_PROTOCOL || rc == SMTP_E_LIMIT || rc == SMTP_E_NOMEM);
        if (mech != SCRAM_FIXED && mech != SCRAM_RANDOM) {
            CHECK(rc == 0);
        } else {
            if (scram_phase == 2 && !failed)
                CHECK(rc == 0);
            if (rc == 0)
                CHECK(scram_phase >= 1 && (scram_phase == 2 || !failed));
        }
        /* A verified SCRAM exchange takes no further challenge. */
        if (scram_phase == 2) {
            smtp_buf r;
            smtp_buf_init(&r, 1024);
            CHECK(smtp_sasl_step(s, "", 0, &r) != 0);
            CHECK(smtp_buf_len(&r) == 0);
            smtp_buf_free(&r);
        }
    }

out:
    smtp_sasl_free(s);
    smtp_buf_free(&init);
    free(user);
    free(secret);
    return 0;
}
