/* libFuzzer target: the SMTP reply parser (csrc/smtp_reply.c).
 *
 * Input: byte 0 picks the limits (default 4096/256, or small ones from
 * bytes 1 and 2); the rest is split on LF into lines, each fed with its LF.
 * A small reference model of RFC 5321 4.2 runs beside the parser and every
 * return value is compared with it.
 *
 * Invariants checked:
 *  - never crashes (ASan/UBSan);
 *  - return value is 1, 0, SMTP_E_LIMIT, SMTP_E_PROTOCOL or SMTP_E_NOMEM,
 *    and equals the model's;
 *  - a completed reply has a code 200..599 whose first digit is 2..5,
 *    lines 1..max_lines, text = the lines' texts joined by '\n', and an
 *    enhanced code that smtp_enhanced_code accepts (or "");
 *  - errors are sticky until smtp_reply_reset, after which the parser
 *    works again;
 *  - smtp_enhanced_code never reads past len and its result matches the
 *    RFC 3463 grammar.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_error.h"
#include "smtp_reply.h"

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "fuzz_reply: invariant failed at line %d: %s\n", __LINE__, \
                    #cond);                                                           \
            abort();                                                                  \
        }                                                                             \
    } while (0)

static int isdig(char c)
{
    return c >= '0' && c <= '9';
}

/* Reference for smtp_enhanced_code: same grammar, written differently. */
static size_t model_enhanced(int code, const char *t, size_t len)
{
    size_t i = 0, d;
    if (len < 1 || t[0] != (char)('0' + code / 100) || !(t[0] == '2' || t[0] == '4' || t[0] == '5'))
        return 0;
    i = 1;
    if (i >= len || t[i] != '.')
        return 0;
    i++;
    for (d = 0; i < len && isdig(t[i]); i++, d++)
        ;
    if (d < 1 || d > 3)
        return 0;
    if (i >= len || t[i] != '.')
        return 0;
    i++;
    for (d = 0; i < len && isdig(t[i]); i++, d++)
        ;
    if (d < 1 || d > 3)
        return 0;
    if (i < len && t[i] != ' ')
        return 0;
    return i;
}

typedef struct model {
    size_t max_line, max_lines;
    int code, lines, error;
    char *text;  /* room for the whole input: text never outgrows it */
    size_t text_len;
} model;

static model M;

/* Returns what the parser must return for this line; on 1 fills the
 * expected reply text in M.text (valid until the next call). */
static int model_line(model *m, const char *line, size_t len, int *code_out, int *lines_out)
{
    int code, last;
    size_t tl;
    if (m->error)
        return m->error;
    if (len > 0 && line[len - 1] == '\n')
        len--;
    if (len > 0 && line[len - 1] == '\r')
        len--;
    if (len > m->max_line || (size_t)m->lines >= m->max_lines)
        return m->error = SMTP_E_LIMIT;
    if (len < 3 || line[0] < '2' || line[0] > '5' || !isdig(line[1]) || !isdig(line[2]) ||
        (len > 3 && line[3] != ' ' && line[3] != '-'))
        return m->error = SMTP_E_PROTOCOL;
    code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    if (m->lines > 0 && code != m->code)
        return m->error = SMTP_E_PROTOCOL;
    last = len == 3 || line[3] == ' ';
    tl = len > 4 ? len - 4 : 0;
    if (m->lines == 0) {
        m->code = code;
        m->text_len = 0;
    } else {
        m->text[m->text_len++] = '\n';
    }
    memcpy(m->text + m->text_len, line + 4, tl);
    m->text_len += tl;
    m->lines++;
    if (!last)
        return 0;
    *code_out = m->code;
    *lines_out = m->lines;
    m->lines = 0;
    m->code = 0;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    smtp_reply_parser p;
    smtp_reply r;
    size_t max_line = 4096, max_lines = 256, pos;
    const char *in;
    int sticky = 0;

    if (size < 3)
        return 0;
    if (data[0] & 1) {
        max_line = 1 + data[1] % 80;
        max_lines = 1 + data[2] % 8;
    }
    in = (const char *)data + 3;
    size -= 3;

    /* The enhanced-code scanner on the raw bytes, for every code class,
     * on an exact-size heap copy so ASan sees any overread. */
    {
        char *copy = malloc(size ? size : 1);
        int cls;
        memcpy(copy, in, size);
        for (cls = 2; cls <= 5; cls++) {
            size_t n = smtp_enhanced_code(cls * 100 + 50, copy, size);
            CHECK(n <= size);
            CHECK(n == model_enhanced(cls * 100 + 50, copy, size));
        }
        free(copy);
    }

    smtp_reply_init(&p, max_line, max_lines);
    memset(&M, 0, sizeof M);
    M.text = malloc(size + 16);
    M.max_line = max_line;
    M.max_lines = max_lines;
    pos = 0;
    while (pos < size) {
        const char *nl = memchr(in + pos, '\n', size - pos);
        size_t len = nl ? (size_t)(nl - (in + pos)) + 1 : size - pos;
        char *line = malloc(len ? len : 1);
        int rc, want, mcode = 0, mlines = 0;

        memcpy(line, in + pos, len); /* exact size: overreads are caught */
        memset(&r, 0x5a, sizeof r);
        rc = smtp_reply_line(&p, line, len, &r);
        want = model_line(&M, line, len, &mcode, &mlines);
        CHECK(rc == 1 || rc == 0 || rc == SMTP_E_LIMIT || rc == SMTP_E_PROTOCOL ||
              rc == SMTP_E_NOMEM);
        if (rc != SMTP_E_NOMEM)
            CHECK(rc == want);
        if (sticky)
            CHECK(rc == sticky); /* errors are sticky */
        if (rc < 0) {
            sticky = rc;
            CHECK(p.error == rc);
        }
        if (rc == 1) {
            size_t i, nls = 0, en = strnlen(r.enhanced, SMTP_ENHANCED_MAX);
            CHECK(r.code >= 200 && r.code <= 599);
            CHECK(r.code == mcode);
            CHECK(r.lines >= 1 && (size_t)r.lines <= max_lines && r.lines == mlines);
            CHECK(r.text != NULL);
            CHECK(r.text_len == M.text_len);
            CHECK(memcmp(r.text, M.text, r.text_len) == 0);
            for (i = 0; i < r.text_len; i++)
                nls += r.text[i] == '\n';
            CHECK(nls == (size_t)(r.lines - 1));
            CHECK(en < SMTP_ENHANCED_MAX);
            if (en > 0) {
                CHECK(r.enhanced[0] == (char)('0' + r.code / 100));
                CHECK(smtp_enhanced_code(r.code, r.enhanced, en) == en);
            }
            CHECK(!smtp_reply_pending(&p));
        } else if (rc == 0) {
            CHECK(smtp_reply_pending(&p));
        }
        free(line);
        pos += len;
    }

    /* After an error, a reset makes the parser usable again. */
    if (sticky) {
        int rc;
        CHECK(smtp_reply_line(&p, "250 ok\r\n", 8, &r) == sticky);
        smtp_reply_reset(&p);
        CHECK(!smtp_reply_pending(&p));
        rc = smtp_reply_line(&p, "250 ok\r\n", 8, &r);
        if (max_line >= 6)
            CHECK(rc == 1 && r.code == 250 && r.lines == 1 && r.text_len == 2);
        else
            CHECK(rc == SMTP_E_LIMIT);
    }
    smtp_reply_free(&p);
    free(M.text);
    return 0;
}
