/* Tests for smtp_reply: the incremental reply parser and enhanced codes. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "smtp_error.h"
#include "smtp_reply.h"

/* Feeds the lines of s (each ended by LF) to p; returns the result of the
 * last line, or the first negative one. */
static int feed_lines(smtp_reply_parser *p, const char *s, smtp_reply *out)
{
    int rc = 0;
    while (*s) {
        const char *nl = strchr(s, '\n');
        size_t len = nl ? (size_t)(nl - s) + 1 : strlen(s);
        rc = smtp_reply_line(p, s, len, out);
        if (rc < 0)
            return rc;
        s += len;
    }
    return rc;
}

/* One whole reply through a fresh parser with roomy limits. */
static int parse_one(const char *s, smtp_reply *out, smtp_reply_parser *p)
{
    smtp_reply_init(p, 4096, 256);
    return feed_lines(p, s, out);
}

static int text_is(const smtp_reply *r, const char *want)
{
    return r->text_len == strlen(want) && memcmp(r->text, want, r->text_len) == 0;
}

static void test_single_lines(void)
{
    smtp_reply_parser p;
    smtp_reply r;

    CHECK(parse_one("250 ok\r\n", &r, &p) == 1, "one line completes a reply");
    CHECK(r.code == 250 && text_is(&r, "ok") && r.lines == 1 && r.enhanced[0] == '\0',
          "code, text, one line, no enhanced code");
    CHECK(!smtp_reply_pending(&p), "nothing pending after a complete reply");
    smtp_reply_free(&p);

    CHECK(parse_one("250\r\n", &r, &p) == 1 && r.code == 250 && text_is(&r, ""),
          "a bare code is a complete reply with empty text");
    smtp_reply_free(&p);

    CHECK(parse_one("250 \r\n", &r, &p) == 1 && text_is(&r, ""), "code and space: empty text");
    smtp_reply_free(&p);

    CHECK(parse_one("220 mx.example ready\n", &r, &p) == 1 && r.code == 220 &&
              text_is(&r, "mx.example ready"),
          "a bare LF ends a line");
    smtp_reply_free(&p);

    CHECK(parse_one("221 bye", &r, &p) == 1 && text_is(&r, "bye"),
          "a line given without its end");
    smtp_reply_free(&p);

    CHECK(parse_one("554 5.7.1 relay denied\r\n", &r, &p) == 1 && r.code == 554 &&
              strcmp(r.enhanced, "5.7.1") == 0 && text_is(&r, "5.7.1 relay denied"),
          "the enhanced code is parsed and the text kept whole");
    smtp_reply_free(&p);

    CHECK(parse_one("550 2.1.1 odd\r\n", &r, &p) == 1 && r.enhanced[0] == '\0',
          "an enhanced code of another class is ignored");
    smtp_reply_free(&p);
}

static void test_multiline(void)
{
    smtp_reply_parser p;
    smtp_reply r;

    smtp_reply_init(&p, 4096, 256);
    CHECK(smtp_reply_line(&p, "250-mx.example\r\n", 16, &r) == 0, "a continuation line asks for more");
    CHECK(smtp_reply_pending(&p), "pending after a continuation line");
    CHECK(smtp_reply_line(&p, "250-SIZE 1000\r\n", 15, &r) == 0, "a second continuation line");
    CHECK(smtp_reply_line(&p, "250 PIPELINING\r\n", 16, &r) == 1, "the last line completes it");
    CHECK(r.code == 250 && r.lines == 3 && text_is(&r, "mx.example\nSIZE 1000\nPIPELINING"),
          "lines joined by LF");
    CHECK(!smtp_reply_pending(&p), "nothing pending afterwards");

    CHECK(feed_lines(&p, "451-4.3.0 first\r\n451 4.4.1 second\r\n", &r) == 1 &&
              strcmp(r.enhanced, "4.3.0") == 0 && text_is(&r, "4.3.0 first\n4.4.1 second"),
          "the enhanced code comes from the first line; a second reply parses cleanly");

    CHECK(feed_lines(&p, "250-\r\n250 last\r\n", &r) == 1 && text_is(&r, "\nlast") &&
              r.lines == 2,
          "an empty continuation line");
    smtp_reply_free(&p);
}

static void test_mismatch_and_sticky_errors(void)
{
    smtp_reply_parser p;
    smtp_reply r;

    smtp_reply_init(&p, 4096, 256);
    CHECK(smtp_reply_line(&p, "250-a\r\n", 7, &r) == 0, "first line of a mixed reply");
    CHECK(smtp_reply_line(&p, "251 b\r\n", 7, &r) == SMTP_E_PROTOCOL,
          "a line with another code is a protocol error");
    CHECK(smtp_reply_line(&p, "250 ok\r\n", 8, &r) == SMTP_E_PROTOCOL,
          "the error is sticky for a valid line");
    CHECK(smtp_reply_line(&p, "250 ok\r\n", 8, &r) == SMTP_E_PROTOCOL, "and stays sticky");
    smtp_reply_reset(&p);
    CHECK(smtp_reply_line(&p, "250 ok\r\n", 8, &r) == 1 && r.code == 250 && text_is(&r, "ok"),
          "reset clears the error and the half reply");
    smtp_reply_free(&p);
}

static void test_invalid_lines(void)
{
    static const char *const bad[] = {
        "\r\n", "2\r\n", "25\r\n", "2500 x\r\n", "25O ok\r\n", "O50 ok\r\n", "150 x\r\n",
        "650 x\r\n", "050 x\r\n", "250\tok\r\n", "250_ok\r\n", "hello\r\n", " 250 ok\r\n",
    };
    size_t i;
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        smtp_reply_parser p;
        smtp_reply r;
        char name[64];
        snprintf(name, sizeof name, "invalid line %zu is a protocol error", i);
        smtp_reply_init(&p, 4096, 256);
        CHECK(smtp_reply_line(&p, bad[i], strlen(bad[i]), &r) == SMTP_E_PROTOCOL, name);
        smtp_reply_free(&p);
    }
}

static void test_limits(void)
{
    smtp_reply_parser p;
    smtp_reply r;

    smtp_reply_init(&p, 10, 3);
    CHECK(smtp_reply_line(&p, "250 abcdef\r\n", 12, &r) == 1, "a line of max_line octets passes");
    CHECK(smtp_reply_line(&p, "250 abcdefg\r\n", 13, &r) == SMTP_E_LIMIT,
          "one octet more is a limit error (the line end not counted)");
    CHECK(smtp_reply_line(&p, "250 ok\r\n", 8, &r) == SMTP_E_LIMIT, "the limit error is sticky");
    smtp_reply_free(&p);

    smtp_reply_init(&p, 10, 3);
    CHECK(feed_lines(&p, "250-a\r\n250-b\r\n250 c\r\n", &r) == 1 && r.lines == 3,
          "max_lines lines pass");
    CHECK(feed_lines(&p, "250-a\r\n250-b\r\n250-c\r\n", &r) == 0, "three continuation lines");
    CHECK(smtp_reply_line(&p, "250 d\r\n", 7, &r) == SMTP_E_LIMIT, "the line past max_lines fails");
    smtp_reply_free(&p);
}

static void test_enhanced_codes(void)
{
    static const struct {
        int code;
        const char *text;
        size_t want;
    } cases[] = {
        {250, "2.0.0 ok", 5},       {250, "2.0.0", 5},        {550, "5.1.1 no user", 5},
        {421, "4.4.2 bye", 5},      {250, "2.123.456 x", 9},  {250, "2.1234.5 x", 0},
        {250, "2.1.5678 x", 0},     {550, "2.1.1 x", 0},      {550, "4.1.1 x", 0},
        {354, "3.0.0 go", 0},       {250, "2..0 x", 0},       {250, "2.0. x", 0},
        {250, "2.0.0x", 0},         {250, "2.0.0\tx", 0},     {250, "2.0", 0},
        {250, "20.0.0 x", 0},       {250, "x.0.0 x", 0},      {250, "", 0},
    };
    size_t i;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[80];
        snprintf(name, sizeof name, "enhanced code of %d \"%s\" is %zu long", cases[i].code,
                 cases[i].text, cases[i].want);
        CHECK(smtp_enhanced_code(cases[i].code, cases[i].text, strlen(cases[i].text)) ==
                  cases[i].want,
              name);
    }
    CHECK(smtp_enhanced_code(250, "2.0.0 ok", 3) == 0, "the length given is respected");
}

/* Random lines must give a result, never a crash (ASan watches). */
static void test_random_lines(void)
{
    static const char alphabet[] = "012345-  \r\n.x";
    smtp_reply_parser p;
    smtp_reply r;
    uint32_t x = 12345;
    int i, completed = 0, failed = 0;

    smtp_reply_init(&p, 64, 8);
    for (i = 0; i < 200000; i++) {
        char line[80];
        size_t len, j;
        int rc;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        len = x % sizeof line;
        for (j = 0; j < len; j++) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            line[j] = alphabet[x % (sizeof alphabet - 1)];
        }
        if (len >= 4 && x % 2) {
            line[0] = '2';
            line[1] = '5';
            line[2] = '0';
        }
        rc = smtp_reply_line(&p, line, len, &r);
        if (rc == 1)
            completed++;
        if (rc < 0) {
            failed++;
            smtp_reply_reset(&p);
        }
    }
    smtp_reply_free(&p);
    CHECK(completed > 0 && failed > 0, "random lines: some replies, some errors, no crash");
}

int main(void)
{
    test_single_lines();
    test_multiline();
    test_mismatch_and_sticky_errors();
    test_invalid_lines();
    test_limits();
    test_enhanced_codes();
    test_random_lines();
    return check_done();
}
