/* Tests for smtp_sasl: SCRAM-SHA-256 (RFC 7677 vector), CRAM-MD5 (RFC 2195
 * vector), PLAIN, LOGIN, XOAUTH2, mechanism choice, SASLprep, limits. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "smtp_buf.h"
#include "smtp_codec.h"
#include "smtp_error.h"
#include "smtp_sasl.h"

#define LIMIT 65536

/* RFC 7677 section 3. */
#define SCRAM_NONCE "rOprNGfwEbeRWgbNEkqO"
#define SCRAM_SERVER_FIRST \
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
#define SCRAM_CLIENT_FINAL                                            \
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"   \
    "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
#define SCRAM_SERVER_FINAL "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

/* ---- helpers ------------------------------------------------------------ */

/* base64 of raw into out (cleared first). */
static void enc(const char *raw, size_t n, smtp_buf *out)
{
    smtp_b64 e;
    smtp_buf_clear(out);
    smtp_b64_init(&e, 0);
    if (smtp_b64_update(&e, raw, n, out) || smtp_b64_finish(&e, out)) {
        fprintf(stderr, "test encoder failed\n");
        exit(2);
    }
}

static void encs(const char *raw, smtp_buf *out)
{
    enc(raw, strlen(raw), out);
}

/* The base64 content of b decodes to exactly want/want_len. */
static int decodes_to(const smtp_buf *b, const char *want, size_t want_len)
{
    smtp_buf d;
    int ok;
    smtp_buf_init(&d, LIMIT);
    ok = smtp_b64_decode(smtp_buf_ptr(b), smtp_buf_len(b), &d) == 0 &&
         smtp_buf_len(&d) == want_len && memcmp(smtp_buf_ptr(&d), want, want_len) == 0;
    if (!ok) {
        printf("# got (decoded, %zu bytes): %.*s\n", smtp_buf_len(&d), (int)smtp_buf_len(&d),
               smtp_buf_ptr(&d));
        printf("# want: %.*s\n", (int)want_len, want);
    }
    smtp_buf_free(&d);
    return ok;
}

static int decodes_to_s(const smtp_buf *b, const char *want)
{
    return decodes_to(b, want, strlen(want));
}

/* Decoded content of b into d (cleared first). */
static void dec(const smtp_buf *b, smtp_buf *d)
{
    smtp_buf_clear(d);
    if (smtp_b64_decode(smtp_buf_ptr(b), smtp_buf_len(b), d)) {
        fprintf(stderr, "test decoder failed\n");
        exit(2);
    }
}

/* Feeds a raw (not yet base64) challenge. */
static int step_raw(smtp_sasl *s, const char *raw, smtp_buf *resp)
{
    smtp_buf ch;
    int rc;
    smtp_buf_init(&ch, LIMIT);
    encs(raw, &ch);
    smtp_buf_clear(resp);
    rc = smtp_sasl_step(s, smtp_buf_ptr(&ch), smtp_buf_len(&ch), resp);
    smtp_buf_free(&ch);
    return rc;
}

/* Runs the RFC 7677 exchange up to the client-final with the given
 * password; the decoded client-final goes to final_out. */
static int scram_to_final(const char *password, smtp_buf *final_out)
{
    smtp_sasl *s = NULL;
    smtp_buf ir, resp;
    int rc;
    smtp_buf_init(&ir, LIMIT);
    smtp_buf_init(&resp, LIMIT);
    rc = smtp_sasl_start_scram_nonce(&s, "user", password, SCRAM_NONCE, &ir);
    if (!rc)
        rc = step_raw(s, SCRAM_SERVER_FIRST, &resp);
    if (!rc)
        dec(&resp, final_out);
    smtp_sasl_free(s);
    smtp_buf_free(&ir);
    smtp_buf_free(&resp);
    return rc;
}

/* ---- mechanism choice ----------------------------------------------------- */

static int name_is(const char *got, const char *want)
{
    if (!got || !want)
        return got == want;
    return strcmp(got, want) == 0;
}

static void test_choose(void)
{
    CHECK(name_is(smtp_sasl_choose("PLAIN LOGIN CRAM-MD5", 0), "CRAM-MD5"), "choose: CRAM-MD5 over PLAIN/LOGIN");
    CHECK(name_is(smtp_sasl_choose("LOGIN PLAIN", 0), "PLAIN"), "choose: PLAIN over LOGIN");
    CHECK(name_is(smtp_sasl_choose("LOGIN", 0), "LOGIN"), "choose: LOGIN alone");
    CHECK(name_is(smtp_sasl_choose("XOAUTH2 PLAIN", 1), "XOAUTH2"), "choose: XOAUTH2 with a token");
    CHECK(name_is(smtp_sasl_choose("XOAUTH2 PLAIN", 0), "PLAIN"), "choose: no XOAUTH2 without a token");
    CHECK(name_is(smtp_sasl_choose("PLAIN LOGIN", 1), NULL), "choose: token but no XOAUTH2");
    CHECK(name_is(smtp_sasl_choose("GSSAPI", 0), NULL), "choose: GSSAPI only");
    CHECK(name_is(smtp_sasl_choose("GSSAPI", 1), NULL), "choose: GSSAPI only, token");
    CHECK(name_is(smtp_sasl_choose("", 0), NULL), "choose: empty list");
    CHECK(name_is(smtp_sasl_choose(NULL, 0), NULL), "choose: NULL list");
    CHECK(name_is(smtp_sasl_choose("plain  cram-md5\tscram-sha-256 ", 0), "SCRAM-SHA-256"),
          "choose: case and blanks");
    CHECK(name_is(smtp_sasl_choose("SCRAM-SHA-256-PLUS PLAIN", 0), "PLAIN"), "choose: -PLUS is not SCRAM-SHA-256");
    CHECK(name_is(smtp_sasl_choose("SCRAM-SHA-1 CRAM-MD5X LOGIN", 0), "LOGIN"), "choose: whole names only");

    CHECK(smtp_sasl_supported("plain") && smtp_sasl_supported("Login") &&
          smtp_sasl_supported("CRAM-MD5") && smtp_sasl_supported("xoauth2") &&
          smtp_sasl_supported("SCRAM-SHA-256"), "supported: all five, any case");
    CHECK(!smtp_sasl_supported("GSSAPI") && !smtp_sasl_supported("PLAINX") &&
          !smtp_sasl_supported("") && !smtp_sasl_supported(NULL), "supported: others not");
}

/* ---- PLAIN ---------------------------------------------------------------- */

static void test_plain(void)
{
    smtp_sasl *s = NULL;
    smtp_buf ir, resp;
    int rc;

    smtp_buf_init(&ir, LIMIT);
    smtp_buf_init(&resp, LIMIT);

    rc = smtp_sasl_start(&s, "PLAIN", NULL, "tim", "tanstaaf", &ir);
    CHECK(rc == 0 && s != NULL, "plain: start");
    CHECK(decodes_to(&ir, "\0tim\0tanstaaf", 13), "plain: initial response");
    CHECK_MEM(smtp_buf_ptr(&ir), smtp_buf_len(&ir), "AHRpbQB0YW5zdGFhZg==", (size_t)20,
              "plain: base64 text, no line break");
    CHECK(smtp_sasl_finish(s, "2.7.0 Authentication successful", 31) == 0, "plain: finish");
    smtp_sasl_free(s);

    smtp_buf_clear(&ir);
    rc = smtp_sasl_start(&s, "plain", "admin", "tim", "tanstaaf", &ir);
    CHECK(rc == 0 && decodes_to(&ir, "admin\0tim\0tanstaaf", 18), "plain: with authzid");
    smtp_sasl_free(s);

    smtp_buf_clear(&ir);
    rc = smtp_sasl_start(&s, "PLAIN", "", "tim", "tanstaaf", &ir);
    CHECK(rc == 0 && decodes_to(&ir, "\0tim\0tanstaaf", 13), "plain: empty authzid is none");
    /* The server asks with an empty 334 (no initial response was sent). */
    rc = smtp_sasl_step(s, "", 0, &resp);
    CHECK(rc == 0 && decodes_to(&resp, "\0tim\0tanstaaf", 13), "plain: empty challenge gets the message");
    smtp_sasl_free(s);

    smtp_buf_clear(&ir);
    rc = smtp_sasl_start(&s, "PLAIN", NULL, "tim", "tanstaaf", &ir);
    CHECK(rc == 0 && step_raw(s, "what?", &resp) == SMTP_E_PROTOCOL, "plain: non-empty challenge");
    CHECK(smtp_sasl_step(s, "", 0, &resp) == SMTP_E_STATE, "plain: exchange over after a failure");
    smtp_sasl_free(s);

    smtp_buf_clear(&ir);
    rc = smtp_sasl_start(&s, "PLAIN", NULL, "j\xc3\xb6rg", "p\xc3\xa4ss", &ir);
    {
        static const char want[] = "\0j\xc3\xb6rg\0p\xc3\xa4ss";
        CHECK(rc == 0 && decodes_to(&ir, want, sizeof want - 1), "plain: UTF-8 passes as is");
    }
    smtp_sasl_free(s);

    smtp_buf_clear(&ir);
    s = (smtp_sasl *)&rc; /* must be reset to NULL on failure */
    rc = smtp_sasl_start(&s, "PLAIN", NULL, "tim", "p\xe4ss", &ir);
    CHECK(rc == SMTP_E_ARGUMENT && s == NULL && smtp_buf_len(&ir) == 0, "plain: Latin-1 password refused");
    CHECK(smtp_sasl_start(&s, "PLAIN", "\xff", "tim", "x", &ir) == SMTP_E_ARGUMENT, "plain: invalid authzid");
    CHECK(smtp_sasl_start(&s, "PLAIN", NULL, "", "x", &ir) == SMTP_E_ARGUMENT, "plain: empty user");
    CHECK(smtp_sasl_start(&s, "PLAIN", NULL, "tim", "", &ir) == SMTP_E_ARGUMENT, "plain: empty password");
    CHECK(smtp_sasl_start(&s, "GSSAPI", NULL, "tim", "x", &ir) == SMTP_E_ARGUMENT && s == NULL,
          "start: unknown mechanism");
    CHECK(smtp_sasl_start(&s, NULL, NULL, "tim", "x", &ir) == SMTP_E_ARGUMENT, "start: NULL mechanism");
    CHECK(smtp_sasl_start(&s, "PLAIN", NULL, NULL, "x", &ir) == SMTP_E_ARGUMENT, "start: NULL user");
    CHECK(smtp_sasl_start(NULL, "PLAIN", NULL, "tim", "x", &ir) == SMTP_E_ARGUMENT, "start: NULL out");
    CHECK(smtp_buf_len(&ir) == 0, "start: failures append nothing");

    {
        /* Output that does not fit the caller's buffer limit. */
        smtp_buf tiny;
        smtp_buf_init(&tiny, 8);
        rc = smtp_sasl_start(&s, "PLAIN", NULL, "tim", "tanstaaf", &tiny);
        CHECK(rc == SMTP_E_LIMIT && s == NULL && smtp_buf_len(&tiny) == 0, "plain: output limit");
        smtp_buf_free(&tiny);
    }
    {
        char *big = malloc(SMTP_SASL_MAX_FIELD + 2);
        memset(big, 'a', SMTP_SASL_MAX_FIELD + 1);
        big[SMTP_SASL_MAX_FIELD + 1] = '\0';
        CHECK(smtp_sasl_start(&s, "PLAIN", NULL, big, "x", &ir) == SMTP_E_ARGUMENT, "start: user too long");
        big[SMTP_SASL_MAX_FIELD] = '\0';
        rc = smtp_sasl_start(&s, "LOGIN", NULL, "u", big, &ir);
        CHECK(rc == 0, "start: secret of exactly the maximum");
        smtp_sasl_free(s);
        free(big);
    }

    smtp_buf_free(&ir);
    smtp_buf_free(&resp);
}

/* ---- LOGIN ---------------------------------------------------------------- */

static void test_login(void)
{
    smtp_sasl *s = NULL;
    smtp_buf ir, resp;
    int rc, i;

    smtp_buf_init(&ir, LIMIT);
    smtp_buf_init(&resp, LIMIT);

    rc = smtp_sasl_start(&s, "LOGIN", NULL, "tim", "tanstaaf", &ir);
    CHECK(rc == 0 && smtp_buf_len(&ir) == 0, "login: no initial response");
    rc = smtp_sasl_step(s, "VXNlcm5hbWU6", 12, &resp);
    CHECK(rc == 0 && decodes_to_s(&resp, "tim"), "login: Username:");
    smtp_buf_clear(&resp);
    rc = smtp_sasl_step(s, "UGFzc3dvcmQ6\r\n", 14, &resp);
    CHECK(rc == 0 && decodes_to_s(&resp, "tanstaaf"), "login: Password:");
    CHECK(smtp_sasl_finish(s, "", 0) == 0 && smtp_sasl_finish(s, NULL, 0) == 0, "login: finish");
    smtp_sasl_free(s);

    /* Prompts recognised by content, whatever the order. */
    rc = smtp_sasl_start(&s, "LOGIN", NULL, "tim", "tanstaaf", &ir);
    CHECK(rc == 0 && step_raw(s, "password:", &resp) == 0 && decodes_to_s(&resp, "tanstaaf"),
          "login: password asked first");
    CHECK(step_raw(s, "User Name", &resp) == 0 && decodes_to_s(&resp, "tim"), "login: User Name");
    smtp_sasl_free(s);

    /* Unrecognised prompts: user, then password, then an error. */
    rc = smtp_sasl_start(&s, "LOGIN", NULL, "tim", "tanstaaf", &ir);
    CHECK(rc == 0 && step_raw(s, "Who?", &resp) == 0 && decodes_to_s(&resp, "tim"), "login: unknown prompt 1");
    CHECK(step_raw(s, "", &resp) == 0 && decodes_to_s(&resp, "tanstaaf"), "login: unknown prompt 2");
    CHECK(step_raw(s, "And?", &resp) == SMTP_E_PROTOCOL, "login: unknown prompt 3");
    smtp_sasl_free(s);

    /* Too many steps. */
    rc = smtp_sasl_start(&s, "LOGIN", NULL, "tim", "tanstaaf", &ir);
    for (i = 0; rc == 0 && i < SMTP_SASL_MAX_STEPS; i++)
        rc = step_raw(s, "Password:", &resp);
    CHECK(rc == 0, "login: five steps accepted");
    CHECK(step_raw(s, "Password:", &resp) == SMTP_E_PROTOCOL && smtp_buf_len(&resp) == 0,
          "login: sixth step refused");
    CHECK(step_raw(s, "Password:", &resp) == SMTP_E_STATE, "login: and stays refused");
    smtp_sasl_free(s);

    /* Undecodable challenge (a server sending the prompt in clear). */
    rc = smtp_sasl_start(&s, "LOGIN", NULL, "tim", "tanstaaf", &ir);
    smtp_buf_clear(&resp);
    CHECK(rc == 0 && smtp_sasl_step(s, "Username:", 9, &resp) == SMTP_E_PROTOCOL &&
          smtp_buf_len(&resp) == 0, "login: non-base64 challenge");
    smtp_sasl_free(s);

    CHECK(smtp_sasl_start(&s, "LOGIN", "admin", "tim", "x", &ir) == SMTP_E_ARGUMENT,
          "login: authzid refused");
    rc = smtp_sasl_start(&s, "LOGIN", NULL, "tim", "p\xe4ss", &ir);
    CHECK(rc == 0 && step_raw(s, "Password:", &resp) == 0 && decodes_to_s(&resp, "p\xe4ss"),
          "login: non-UTF-8 password passes as bytes");
    CHECK(smtp_sasl_step(NULL, "", 0, &resp) == SMTP_E_ARGUMENT &&
          smtp_sasl_step(s, NULL, 3, &resp) == SMTP_E_ARGUMENT &&
          smtp_sasl_step(s, "", 0, NULL) == SMTP_E_ARGUMENT, "step: NULL arguments");
    smtp_sasl_free(s);
    smtp_sasl_free(NULL);

    smtp_buf_free(&ir);
    smtp_buf_free(&resp);
}

/* ---- CRAM-MD5 ------------------------------------------------------------- */

static void test_cram_md5(void)
{
    smtp_sasl *s = NULL;
    smtp_buf ir, resp, ch;
    int rc;

    smtp_buf_init(&ir, LIMIT);
    smtp_buf_init(&resp, LIMIT);
    smtp_buf_init(&ch, LIMIT);

    rc = smtp_sasl_start(&s, "CRAM-MD5", NULL, "tim", "tanstaaftanstaaf", &ir);
    CHECK(rc == 0 && smtp_buf_len(&ir) == 0, "cram-md5: no initial response");
    encs("<1896.697170952@postoffice.reston.mci.net>", &ch);
    CHECK_MEM(smtp_buf_ptr(&ch), smtp_buf_len(&ch),
              "PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+", (size_t)56,
              "cram-md5: RFC 2195 challenge text");
    rc = smtp_sasl_step(s, smtp_buf_ptr(&ch), smtp_buf_len(&ch), &resp);
    CHECK(rc == 0 && decodes_to_s(&resp, "tim b913a602c7eda7a495b4e6e7334d3890"), "cram-md5: RFC 2195 vector");
    CHECK(step_raw(s, "<again@x>", &resp) == SMTP_E_PROTOCOL, "cram-md5: second challenge");
    CHECK(smtp_sasl_finish(s, "", 0) == 0, "cram-md5: finish");
    smtp_sasl_free(s);

    rc = smtp_sasl_start(&s, "CRAM-MD5", NULL, "tim", "tanstaaftanstaaf", &ir);
    CHECK(rc == 0 && smtp_sasl_step(s, "", 0, &resp) == SMTP_E_PROTOCOL, "cram-md5: empty challenge");
    smtp_sasl_free(s);

    rc = smtp_sasl_start(&s, "CRAM-MD5", NULL, "tim", "tanstaaftanstaaf", &ir);
    CHECK(rc == 0 && smtp_sasl_step(s, "@@@@", 4, &resp) == SMTP_E_PROTOCOL, "cram-md5: undecodable challenge");
    smtp_sasl_free(s);

    {
        /* A challenge larger than the bound. */
        char *big = malloc(2 * SMTP_SASL_MAX_CHALLENGE + 5);
        memset(big, 'A', 2 * SMTP_SASL_MAX_CHALLENGE + 4);
        rc = smtp_sasl_start(&s, "CRAM-MD5", NULL, "tim", "tanstaaftanstaaf", &ir);
        CHECK(rc == 0 && smtp_sasl_step(s, big, 2 * SMTP_SASL_MAX_CHALLENGE + 4, &resp) == SMTP_E_LIMIT,
              "cram-md5: oversized challenge text");
        smtp_sasl_free(s);
        /* Valid text within the text bound that decodes beyond the limit. */
        rc = smtp_sasl_start(&s, "CRAM-MD5", NULL, "tim", "tanstaaftanstaaf", &ir);
        CHECK(rc == 0 && smtp_sasl_step(s, big, 12000, &resp) == SMTP_E_LIMIT,
              "cram-md5: oversized decoded challenge");
        smtp_sasl_free(s);
        /* Exactly the maximum is fine. */
        rc = smtp_sasl_start(&s, "CRAM-MD5", NULL, "tim", "tanstaaftanstaaf", &ir);
        CHECK(rc == 0 && smtp_sasl_step(s, big, SMTP_SASL_MAX_CHALLENGE / 3 * 4, &resp) == 0,
              "cram-md5: challenge at the limit");
        smtp_sasl_free(s);
        free(big);
    }

    smtp_buf_free(&ir);
    smtp_buf_free(&resp);
    smtp_buf_free(&ch);
}

/* ---- XOAUTH2 -------------------------------------------------------------- */

static void test_xoauth2(void)
{
    static const char want[] =
        "user=someuser@example.com\001auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\001\001";
    smtp_sasl *s = NULL;
    smtp_buf ir, resp;
    int rc, i;

    smtp_buf_init(&ir, LIMIT);
    smtp_buf_init(&resp, LIMIT);

    rc = smtp_sasl_start(&s, "XOAUTH2", NULL, "someuser@example.com",
                         "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg", &ir);
    CHECK(rc == 0 && decodes_to(&ir, want, sizeof want - 1), "xoauth2: initial response");
    /* Google's example token in base64 is the documented string. */
    {
        static const char google[] =
            "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ==";
        CHECK_MEM(smtp_buf_ptr(&ir), smtp_buf_len(&ir), google, sizeof google - 1,
                  "xoauth2: Google's documented encoding");
    }
    rc = step_raw(s, "{\"status\":\"401\",\"schemes\":\"bearer\",\"scope\":\"https://mail.google.com/\"}", &resp);
    CHECK(rc == 0 && smtp_buf_len(&resp) == 0, "xoauth2: error challenge gets an empty response");
    CHECK(smtp_sasl_finish(s, "", 0) == 0, "xoauth2: finish");
    smtp_sasl_free(s);

    smtp_buf_clear(&ir);
    rc = smtp_sasl_start(&s, "xoauth2", NULL, "someuser@example.com", "tok", &ir);
    CHECK(rc == 0 && smtp_sasl_step(s, "", 0, &resp) == 0 &&
          decodes_to_s(&resp, "user=someuser@example.com\001auth=Bearer tok\001\001"),
          "xoauth2: empty first challenge gets the message");
    for (i = 1; rc == 0 && i < SMTP_SASL_MAX_STEPS; i++)
        rc = step_raw(s, "{}", &resp);
    CHECK(rc == 0 && step_raw(s, "{}", &resp) == SMTP_E_PROTOCOL, "xoauth2: too many steps");
    smtp_sasl_free(s);

    smtp_buf_clear(&ir);
    CHECK(smtp_sasl_start(&s, "XOAUTH2", NULL, "u@example.com", "tok en", &ir) == SMTP_E_ARGUMENT,
          "xoauth2: space in token");
    CHECK(smtp_sasl_start(&s, "XOAUTH2", NULL, "u@example.com", "tok\001", &ir) == SMTP_E_ARGUMENT,
          "xoauth2: ^A in token");
    CHECK(smtp_sasl_start(&s, "XOAUTH2", NULL, "u\001@example.com", "tok", &ir) == SMTP_E_ARGUMENT,
          "xoauth2: ^A in user");
    CHECK(smtp_sasl_start(&s, "XOAUTH2", NULL, "u@example.com", "tok\n", &ir) == SMTP_E_ARGUMENT,
          "xoauth2: newline in token");
    CHECK(smtp_sasl_start(&s, "XOAUTH2", "admin", "u@example.com", "tok", &ir) == SMTP_E_ARGUMENT,
          "xoauth2: authzid refused");
    CHECK(smtp_buf_len(&ir) == 0, "xoauth2: failures append nothing");

    smtp_buf_free(&ir);
    smtp_buf_free(&resp);
}

/* ---- OAUTHBEARER (RFC 7628) ------------------------------------------------ */

static void test_oauthbearer(void)
{
    /* RFC 7628 section 4.1's message, without the optional host and port. */
    static const char want[] = "n,a=user@example.com,\001auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\001\001";
    smtp_sasl *s = NULL;
    smtp_buf ir, resp;
    int rc;

    smtp_buf_init(&ir, LIMIT);
    smtp_buf_init(&resp, LIMIT);
    rc = smtp_sasl_start(&s, "OAUTHBEARER", NULL, "user@example.com",
                         "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==", &ir);
    CHECK(rc == 0 && decodes_to(&ir, want, sizeof want - 1), "oauthbearer: initial response (RFC 7628 4.1)");
    rc = step_raw(s, "{\"status\":\"invalid_token\",\"scope\":\"example_scope\"}", &resp);
    CHECK(rc == 0 && decodes_to_s(&resp, "\001"), "oauthbearer: an error challenge gets ^A (RFC 7628 3.2.3)");
    smtp_sasl_free(s);

    smtp_buf_clear(&ir);
    rc = smtp_sasl_start(&s, "oauthbearer", NULL, "a=b,c", "tok", &ir);
    CHECK(rc == 0 && decodes_to_s(&ir, "n,a=a=3Db=2Cc,\001auth=Bearer tok\001\001"),
          "oauthbearer: the user name is a saslname (= and , escaped)");
    smtp_sasl_free(s);
    smtp_buf_clear(&ir);
    CHECK(smtp_sasl_start(&s, "OAUTHBEARER", NULL, "u@example.com", "tok en", &ir) == SMTP_E_ARGUMENT,
          "oauthbearer: space in token");
    CHECK(smtp_sasl_start(&s, "OAUTHBEARER", "admin", "u@example.com", "tok", &ir) == SMTP_E_ARGUMENT,
          "oauthbearer: authzid refused");
    CHECK(name_is(smtp_sasl_choose("XOAUTH2 OAUTHBEARER PLAIN", 1), "OAUTHBEARER"),
          "choose: OAUTHBEARER before XOAUTH2 with a token");
    CHECK(name_is(smtp_sasl_choose("OAUTHBEARER PLAIN", 0), "PLAIN"), "choose: no OAUTHBEARER without a token");
    smtp_buf_free(&ir);
    smtp_buf_free(&resp);
}

/* ---- SCRAM-SHA-256 -------------------------------------------------------- */

static void test_scram_vector(void)
{
    smtp_sasl *s = NULL;
    smtp_buf ir, resp, ch;
    int rc;

    smtp_buf_init(&ir, LIMIT);
    smtp_buf_init(&resp, LIMIT);
    smtp_buf_init(&ch, LIMIT);

    rc = smtp_sasl_start_scram_nonce(&s, "user", "pencil", SCRAM_NONCE, &ir);
    CHECK(rc == 0 && decodes_to_s(&ir, "n,,n=user,r=" SCRAM_NONCE), "scram: client-first (RFC 7677)");
    rc = step_raw(s, SCRAM_SERVER_FIRST, &resp);
    CHECK(rc == 0 && decodes_to_s(&resp, SCRAM_CLIENT_FINAL), "scram: client-final (RFC 7677)");
    CHECK(smtp_sasl_finish(s, "", 0) == SMTP_E_PROTOCOL, "scram: finish before server-final fails");
    smtp_sasl_free(s);

    /* Full exchange, server-final in a 334. */
    smtp_buf_clear(&ir);
    rc = smtp_sasl_start_scram_nonce(&s, "user", "pencil", SCRAM_NONCE, &ir);
    rc = rc ? rc : step_raw(s, SCRAM_SERVER_FIRST, &resp);
    rc = rc ? rc : step_raw(s, SCRAM_SERVER_FINAL, &resp);
    CHECK(rc == 0 && smtp_buf_len(&resp) == 0, "scram: server-final verified, empty response");
    CHECK(smtp_sasl_finish(s, "2.7.0 Authentication successful", 31) == 0, "scram: finish after verification");
    CHECK(step_raw(s, SCRAM_SERVER_FINAL, &resp) == SMTP_E_PROTOCOL, "scram: challenge after the end");
    smtp_sasl_free(s);

    /* Wrong server signature. */
    smtp_buf_clear(&ir);
    rc = smtp_sasl_start_scram_nonce(&s, "user", "pencil", SCRAM_NONCE, &ir);
    rc = rc ? rc : step_raw(s, SCRAM_SERVER_FIRST, &resp);
    CHECK(rc == 0 && step_raw(s, "v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=", &resp) == SMTP_E_PROTOCOL,
          "scram: wrong v= fails");
    CHECK(smtp_sasl_finish(s, "", 0) == SMTP_E_PROTOCOL, "scram: and finish fails");
    smtp_sasl_free(s);

    /* Truncated server signature. */
    smtp_buf_clear(&ir);
    rc = smtp_sasl_start_scram_nonce(&s, "user", "pencil", SCRAM_NONCE, &ir);
    rc = rc ? rc : step_raw(s, SCRAM_SERVER_FIRST, &resp);
    CHECK(rc == 0 && step_raw(s, "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95A==", &resp) == SMTP_E_PROTOCOL,
          "scram: short v= fails");
    smtp_sasl_free(s);

    /* Server error. */
    smtp_buf_clear(&ir);
    rc = smtp_sasl_start_scram_nonce(&s, "user", "pencil", SCRAM_NONCE, &ir);
    rc = rc ? rc : step_raw(s, SCRAM_SERVER_FIRST, &resp);
    CHECK(rc == 0 && step_raw(s, "e=invalid-proof", &resp) == SMTP_E_PROTOCOL, "scram: e= fails");
    smtp_sasl_free(s);

    /* Server-final carried by the 235 reply. */
    smtp_buf_clear(&ir);
    rc = smtp_sasl_start_scram_nonce(&s, "user", "pencil", SCRAM_NONCE, &ir);
    rc = rc ? rc : step_raw(s, SCRAM_SERVER_FIRST, &resp);
    encs(SCRAM_SERVER_FINAL, &ch);
    CHECK(rc == 0 && smtp_sasl_finish(s, smtp_buf_ptr(&ch), smtp_buf_len(&ch)) == 0,
          "scram: server-final in the 235 text");
    smtp_sasl_free(s);

    smtp_buf_clear(&ir);
    rc = smtp_sasl_start_scram_nonce(&s, "user", "pencil", SCRAM_NONCE, &ir);
    rc = rc ? rc : step_raw(s, SCRAM_SERVER_FIRST, &resp);
    smtp_buf_clear(&ch);
    smtp_buf_append_str(&ch, "2.7.0 ");
    {
        smtp_buf tmp;
        smtp_buf_init(&tmp, LIMIT);
        encs(SCRAM_SERVER_FINAL, &tmp);
        smtp_buf_append(&ch, smtp_buf_ptr(&tmp), smtp_buf_len(&tmp));
        smtp_buf_append_str(&ch, "\r\n");
        smtp_buf_free(&tmp);
    }
    CHECK(rc == 0 && smtp_sasl_finish(s, smtp_buf_ptr(&ch), smtp_buf_len(&ch)) == 0,
          "scram: server-final after an enhanced code in the 235 text");
    smtp_sasl_free(s);

    smtp_buf_clear(&ir);
    rc = smtp_sasl_start_scram_nonce(&s, "user", "pencil", SCRAM_NONCE, &ir);
    rc = rc ? rc : step_raw(s, SCRAM_SERVER_FIRST, &resp);
    CHECK(rc == 0 && smtp_sasl_finish(s, "2.7.0 Authentication successful", 31) == SMTP_E_PROTOCOL,
          "scram: 235 without server signature fails");
    smtp_sasl_free(s);

    smtp_buf_clear(&ir);
    rc = smtp_sasl_start_scram_nonce(&s, "user", "pencil", SCRAM_NONCE, &ir);
    rc = rc ? rc : step_raw(s, SCRAM_SERVER_FIRST, &resp);
    encs("v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=", &ch);
    CHECK(rc == 0 && smtp_sasl_finish(s, smtp_buf_ptr(&ch), smtp_buf_len(&ch)) == SMTP_E_PROTOCOL,
          "scram: wrong v= in the 235 text fails");
    smtp_sasl_free(s);

    /* No initial response sent: the empty 334 gets the client-first. */
    smtp_buf_clear(&ir);
    rc = smtp_sasl_start_scram_nonce(&s, "user", "pencil", SCRAM_NONCE, &ir);
    smtp_buf_clear(&resp);
    rc = rc ? rc : smtp_sasl_step(s, "", 0, &resp);
    CHECK(rc == 0 && decodes_to_s(&resp, "n,,n=user,r=" SCRAM_NONCE), "scram: empty challenge gets client-first");
    rc = rc ? rc : step_raw(s, SCRAM_SERVER_FIRST, &resp);
    CHECK(rc == 0 && decodes_to_s(&resp, SCRAM_CLIENT_FINAL), "scram: then the client-final");
    smtp_sasl_free(s);

    smtp_buf_free(&ir);
    smtp_buf_free(&resp);
    smtp_buf_free(&ch);
}

/* One bad server-first against a fresh RFC 7677 exchange. */
static int scram_bad_first(const char *server_first)
{
    smtp_sasl *s = NULL;
    smtp_buf ir, resp;
    int rc;
    smtp_buf_init(&ir, LIMIT);
    smtp_buf_init(&resp, LIMIT);
    rc = smtp_sasl_start_scram_nonce(&s, "user", "pencil", SCRAM_NONCE, &ir);
    if (rc == 0) {
        rc = step_raw(s, server_first, &resp);
        if (rc != 0 && smtp_buf_len(&resp) != 0)
            rc = 1; /* output on error: wrong */
    }
    smtp_sasl_free(s);
    smtp_buf_free(&ir);
    smtp_buf_free(&resp);
    return rc;
}

static void test_scram_errors(void)
{
    smtp_sasl *s = NULL;
    smtp_buf ir, resp;
    int rc;

    CHECK(scram_bad_first("r=XOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
          == SMTP_E_PROTOCOL, "scram: nonce mismatch");
    CHECK(scram_bad_first("r=rOprNGfwEbeRWgbNEkq,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096") == SMTP_E_PROTOCOL,
          "scram: nonce shorter than the client's");
    CHECK(scram_bad_first("r=" SCRAM_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096") == SMTP_E_PROTOCOL,
          "scram: server adds nothing to the nonce");
    CHECK(scram_bad_first("r=" SCRAM_NONCE "x y,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096") == SMTP_E_PROTOCOL,
          "scram: unprintable nonce");
    CHECK(scram_bad_first("m=ext,r=" SCRAM_NONCE "x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096") == SMTP_E_PROTOCOL,
          "scram: mandatory extension");
    CHECK(scram_bad_first("r=" SCRAM_NONCE "x,s=,i=4096") == SMTP_E_PROTOCOL, "scram: empty salt");
    CHECK(scram_bad_first("r=" SCRAM_NONCE "x,s=@@@@,i=4096") == SMTP_E_PROTOCOL, "scram: undecodable salt");
    CHECK(scram_bad_first("r=" SCRAM_NONCE "x,s=W22ZaJ0SNY7soEsUEjb6gQ==") == SMTP_E_PROTOCOL,
          "scram: no iteration count");
    CHECK(scram_bad_first("r=" SCRAM_NONCE "x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0") == SMTP_E_PROTOCOL,
          "scram: zero iterations");
    CHECK(scram_bad_first("r=" SCRAM_NONCE "x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=-1") == SMTP_E_PROTOCOL,
          "scram: negative iterations");
    CHECK(scram_bad_first("r=" SCRAM_NONCE "x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1000001") == SMTP_E_PROTOCOL,
          "scram: too many iterations");
    CHECK(scram_bad_first("r=" SCRAM_NONCE "x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=99999999999999999999") == SMTP_E_PROTOCOL,
          "scram: iteration count overflow");
    CHECK(scram_bad_first("r=" SCRAM_NONCE "x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4x") == SMTP_E_PROTOCOL,
          "scram: iteration count not a number");
    CHECK(scram_bad_first("e=other-error") == SMTP_E_PROTOCOL, "scram: error instead of server-first");
    CHECK(scram_bad_first("r=" SCRAM_NONCE "x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1") == SMTP_E_PROTOCOL,
          "scram: 1 iteration is refused (RFC 7677: at least 4096)");
    CHECK(scram_bad_first("r=" SCRAM_NONCE "x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4095") == SMTP_E_PROTOCOL,
          "scram: 4095 iterations are refused");
    CHECK(scram_bad_first("r=" SCRAM_NONCE "x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,ext=1") == 0,
          "scram: 4096 iterations and an extension accepted");

    /* Undecodable server-first. */
    smtp_buf_init(&ir, LIMIT);
    smtp_buf_init(&resp, LIMIT);
    rc = smtp_sasl_start_scram_nonce(&s, "user", "pencil", SCRAM_NONCE, &ir);
    CHECK(rc == 0 && smtp_sasl_step(s, "cj1,", 4, &resp) == SMTP_E_PROTOCOL, "scram: undecodable challenge");
    smtp_sasl_free(s);

    /* Nonce and argument checks of the test entry point. */
    smtp_buf_clear(&ir);
    CHECK(smtp_sasl_start_scram_nonce(&s, "user", "pencil", "a,b", &ir) == SMTP_E_ARGUMENT, "scram: nonce with ','");
    CHECK(smtp_sasl_start_scram_nonce(&s, "user", "pencil", "", &ir) == SMTP_E_ARGUMENT, "scram: empty nonce");
    CHECK(smtp_sasl_start_scram_nonce(&s, "user", "pencil", "a b", &ir) == SMTP_E_ARGUMENT, "scram: nonce with space");
    CHECK(smtp_sasl_start_scram_nonce(&s, "user", NULL, "abc", &ir) == SMTP_E_ARGUMENT && s == NULL,
          "scram: NULL password");
    CHECK(smtp_buf_len(&ir) == 0, "scram: failures append nothing");

    smtp_buf_free(&ir);
    smtp_buf_free(&resp);
}

static void test_scram_random_and_authzid(void)
{
    smtp_sasl *s1 = NULL, *s2 = NULL;
    smtp_buf ir1, ir2, d1, d2, resp, sf;
    int rc;
    const char *p;

    smtp_buf_init(&ir1, LIMIT);
    smtp_buf_init(&ir2, LIMIT);
    smtp_buf_init(&d1, LIMIT);
    smtp_buf_init(&d2, LIMIT);
    smtp_buf_init(&resp, LIMIT);
    smtp_buf_init(&sf, LIMIT);

    rc = smtp_sasl_start(&s1, "SCRAM-SHA-256", NULL, "user", "pencil", &ir1);
    rc = rc ? rc : smtp_sasl_start(&s2, "scram-sha-256", NULL, "user", "pencil", &ir2);
    CHECK(rc == 0, "scram: start with a random nonce");
    dec(&ir1, &d1);
    dec(&ir2, &d2);
    CHECK(smtp_buf_len(&d1) == 12 + 32 && memcmp(smtp_buf_ptr(&d1), "n,,n=user,r=", 12) == 0,
          "scram: random client-first has a 32-character nonce");
    CHECK(smtp_buf_len(&d2) == smtp_buf_len(&d1) &&
          memcmp(smtp_buf_ptr(&d1), smtp_buf_ptr(&d2), smtp_buf_len(&d1)) != 0, "scram: nonces differ");
    /* The exchange works with the random nonce too. */
    smtp_buf_append(&sf, "r=", 2);
    smtp_buf_append(&sf, smtp_buf_ptr(&d1) + 12, 32);
    smtp_buf_append_str(&sf, "srv,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
    smtp_buf_append(&sf, "", 1); /* NUL for step_raw */
    rc = step_raw(s1, smtp_buf_ptr(&sf), &resp);
    dec(&resp, &d1);
    CHECK(rc == 0 && smtp_buf_len(&d1) > 9 && memcmp(smtp_buf_ptr(&d1), "c=biws,r=", 9) == 0,
          "scram: client-final with the random nonce");
    smtp_sasl_free(s1);
    smtp_sasl_free(s2);

    /* authzid goes in the gs2 header, and so in the channel binding. */
    smtp_buf_clear(&ir1);
    rc = smtp_sasl_start(&s1, "SCRAM-SHA-256", "ad=m,in", "user", "pencil", &ir1);
    dec(&ir1, &d1);
    p = smtp_buf_ptr(&d1);
    CHECK(rc == 0 && smtp_buf_len(&d1) > 28 && memcmp(p, "n,a=ad=3Dm=2Cin,n=user,r=", 25) == 0,
          "scram: authzid escaped in the gs2 header");
    smtp_buf_clear(&sf);
    smtp_buf_append(&sf, "r=", 2);
    smtp_buf_append(&sf, p + 25, smtp_buf_len(&d1) - 25);
    smtp_buf_append_str(&sf, "srv,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
    smtp_buf_append(&sf, "", 1);
    rc = step_raw(s1, smtp_buf_ptr(&sf), &resp);
    dec(&resp, &d2);
    /* base64("n,a=ad=3Dm=2Cin,") */
    CHECK(rc == 0 && smtp_buf_len(&d2) > 28 &&
          memcmp(smtp_buf_ptr(&d2), "c=bixhPWFkPTNEbT0yQ2luLA==,r=", 29) == 0,
          "scram: c= carries the gs2 header with the authzid");
    smtp_sasl_free(s1);

    /* User name escaping. */
    smtp_buf_clear(&ir1);
    rc = smtp_sasl_start(&s1, "SCRAM-SHA-256", NULL, "a=b,c", "pencil", &ir1);
    dec(&ir1, &d1);
    CHECK(rc == 0 && smtp_buf_len(&d1) > 20 && memcmp(smtp_buf_ptr(&d1), "n,,n=a=3Db=2Cc,r=", 17) == 0,
          "scram: user name escaping");
    smtp_sasl_free(s1);

    smtp_buf_free(&ir1);
    smtp_buf_free(&ir2);
    smtp_buf_free(&d1);
    smtp_buf_free(&d2);
    smtp_buf_free(&resp);
    smtp_buf_free(&sf);
}

/* ---- SASLprep ------------------------------------------------------------- */

static void test_saslprep(void)
{
    smtp_buf f1, f2, ir;
    smtp_sasl *s = NULL;
    int rc1, rc2;

    smtp_buf_init(&f1, LIMIT);
    smtp_buf_init(&f2, LIMIT);
    smtp_buf_init(&ir, LIMIT);

    /* Mapped to nothing: the RFC vector still comes out. */
    rc1 = scram_to_final("pen\xc2\xad" "cil", &f1); /* U+00AD */
    CHECK(rc1 == 0 && smtp_buf_len(&f1) == strlen(SCRAM_CLIENT_FINAL) &&
          memcmp(smtp_buf_ptr(&f1), SCRAM_CLIENT_FINAL, smtp_buf_len(&f1)) == 0,
          "saslprep: U+00AD removed (RFC vector holds)");
    rc1 = scram_to_final("\xef\xbb\xbfpen\xe2\x81\xa0" "cil\xef\xb8\x8f", &f1); /* U+FEFF, U+2060, U+FE0F */
    CHECK(rc1 == 0 && smtp_buf_len(&f1) == strlen(SCRAM_CLIENT_FINAL) &&
          memcmp(smtp_buf_ptr(&f1), SCRAM_CLIENT_FINAL, smtp_buf_len(&f1)) == 0,
          "saslprep: U+FEFF, U+2060, U+FE0F removed");

    /* Non-ASCII spaces map to U+0020. */
    rc1 = scram_to_final("pen\xc2\xa0" "cil", &f1);    /* U+00A0 */
    rc2 = scram_to_final("pen cil", &f2);
    CHECK(rc1 == 0 && rc2 == 0 && smtp_buf_len(&f1) == smtp_buf_len(&f2) &&
          memcmp(smtp_buf_ptr(&f1), smtp_buf_ptr(&f2), smtp_buf_len(&f1)) == 0,
          "saslprep: U+00A0 in the password is a space");
    rc1 = scram_to_final("pen\xe3\x80\x80" "cil", &f1); /* U+3000 */
    CHECK(rc1 == 0 && smtp_buf_len(&f1) == smtp_buf_len(&f2) &&
          memcmp(smtp_buf_ptr(&f1), smtp_buf_ptr(&f2), smtp_buf_len(&f1)) == 0,
          "saslprep: U+3000 in the password is a space");
    rc1 = scram_to_final("pen cil", &f1);
    rc2 = scram_to_final("pencil", &f2);
    CHECK(rc1 == 0 && rc2 == 0 && !(smtp_buf_len(&f1) == smtp_buf_len(&f2) &&
          memcmp(smtp_buf_ptr(&f1), smtp_buf_ptr(&f2), smtp_buf_len(&f1)) == 0),
          "saslprep: (control) the password matters");
    /* Non-ASCII passes unchanged (no NFKC): differs from its ASCII look-alike. */
    rc1 = scram_to_final("p\xc3\xa9ncil", &f1);
    CHECK(rc1 == 0 && !(smtp_buf_len(&f1) == smtp_buf_len(&f2) &&
          memcmp(smtp_buf_ptr(&f1), smtp_buf_ptr(&f2), smtp_buf_len(&f1)) == 0),
          "saslprep: non-ASCII letters pass");

    /* RFC 4013 section 3's examples, through the user name (GNU libidn). */
#define MAPS(user, want, name)                                                          \
    do {                                                                                \
        smtp_buf_clear(&ir);                                                            \
        rc1 = smtp_sasl_start_scram_nonce(&s, (user), "pencil", "abc", &ir);            \
        CHECK(rc1 == 0 && decodes_to_s(&ir, "n,,n=" want ",r=abc"), (name));            \
        smtp_sasl_free(s);                                                              \
        s = NULL;                                                                       \
    } while (0)
    MAPS("I\xc2\xadX", "IX", "saslprep RFC 4013 #1: SOFT HYPHEN mapped to nothing");
    MAPS("user", "user", "saslprep RFC 4013 #2: no transformation");
    MAPS("USER", "USER", "saslprep RFC 4013 #3: case preserved");
    MAPS("\xc2\xaa", "a", "saslprep RFC 4013 #4: U+00AA is NFKC a");
    MAPS("\xe2\x85\xa8", "IX", "saslprep RFC 4013 #5: U+2168 is NFKC IX");
    MAPS("\xef\xac\x81le", "file", "saslprep: NFKC ligature U+FB01");
    MAPS("e\xcc\x81", "\xc3\xa9", "saslprep: NFKC composes e + U+0301");
#undef MAPS
    CHECK(smtp_sasl_start_scram_nonce(&s, "\x07", "pencil", "abc", &ir) == SMTP_E_ARGUMENT && s == NULL,
          "saslprep RFC 4013 #6: U+0007 prohibited");
    CHECK(smtp_sasl_start_scram_nonce(&s, "\xd8\xa7" "1", "pencil", "abc", &ir) == SMTP_E_ARGUMENT && s == NULL,
          "saslprep RFC 4013 #7: U+0627 U+0031 fails the bidi rule");
    smtp_buf_clear(&ir);

    /* User name: mapping applies too. */
    rc1 = smtp_sasl_start_scram_nonce(&s, "a\xc2\xa0" "b\xc2\xad", "pencil", "abc", &ir);
    CHECK(rc1 == 0 && decodes_to_s(&ir, "n,,n=a b,r=abc"), "saslprep: user name mapped");
    smtp_sasl_free(s);
    smtp_buf_clear(&ir);

    /* Rejected. */
#define REJECTS(pw, name) \
    CHECK(smtp_sasl_start_scram_nonce(&s, "user", (pw), "abc", &ir) == SMTP_E_ARGUMENT && s == NULL, (name))
    REJECTS("pen\xc3" "cil", "saslprep: truncated UTF-8");
    REJECTS("pen\xff" "cil", "saslprep: invalid byte");
    REJECTS("\xc0\xaf", "saslprep: overlong form");
    REJECTS("\xe0\x80\xaf", "saslprep: overlong 3-byte form");
    REJECTS("\xed\xa0\x80", "saslprep: surrogate");
    REJECTS("\xf4\x90\x80\x80", "saslprep: beyond U+10FFFF");
    REJECTS("\x80pencil", "saslprep: stray continuation byte");
    REJECTS("pen\tcil", "saslprep: ASCII control (tab)");
    REJECTS("pencil\x7f", "saslprep: DEL");
    REJECTS("pen\xc2\x85" "cil", "saslprep: C1 control U+0085");
    REJECTS("\xee\x80\x80", "saslprep: private use U+E000");
    REJECTS("\xef\xbf\xbe", "saslprep: non-character U+FFFE");
    REJECTS("\xef\xb7\x90", "saslprep: non-character U+FDD0");
    REJECTS("\xe2\x80\x8e", "saslprep: U+200E (C.8)");
    REJECTS("\xe2\xbf\xb0", "saslprep: U+2FF0 (C.7)");
    REJECTS("\xf3\xa0\x80\x81", "saslprep: tag U+E0001 (C.9)");
    REJECTS("\xc2\xad", "saslprep: nothing left after mapping");
    REJECTS("", "saslprep: empty password");
#undef REJECTS
    CHECK(smtp_sasl_start_scram_nonce(&s, "us\x01" "er", "pencil", "abc", &ir) == SMTP_E_ARGUMENT,
          "saslprep: control in the user name");
    CHECK(smtp_sasl_start_scram_nonce(&s, "\xc2\xad\xe2\x81\xa0", "pencil", "abc", &ir) == SMTP_E_ARGUMENT,
          "saslprep: user name empty after mapping (U+00AD U+2060)");
    CHECK(smtp_sasl_start(&s, "SCRAM-SHA-256", "\xff", "user", "pencil", &ir) == SMTP_E_ARGUMENT,
          "saslprep: invalid authzid");
    CHECK(smtp_buf_len(&ir) == 0, "saslprep: failures append nothing");

    smtp_buf_free(&f1);
    smtp_buf_free(&f2);
    smtp_buf_free(&ir);
}

int main(void)
{
    test_choose();
    test_plain();
    test_login();
    test_cram_md5();
    test_xoauth2();
    test_oauthbearer();
    test_scram_vector();
    test_scram_errors();
    test_scram_random_and_authzid();
    test_saslprep();
    return check_done();
}
