#include "smtp_reply.h"

#include <string.h>

#include "smtp_error.h"

void smtp_reply_init(smtp_reply_parser *p, size_t max_line, size_t max_lines)
{
    smtp_reply_init_mem(p, max_line, max_lines, NULL);
}

void smtp_reply_init_mem(smtp_reply_parser *p, size_t max_line, size_t max_lines,
                         const smtp_mem *mem)
{
    memset(p, 0, sizeof *p);
    p->max_line = max_line;
    p->max_lines = max_lines;
    /* A reply's text can never be larger than its lines. */
    smtp_buf_init_mem(&p->text, max_line * max_lines + max_lines, mem);
}

void smtp_reply_free(smtp_reply_parser *p)
{
    smtp_buf_free(&p->text);
}

void smtp_reply_reset(smtp_reply_parser *p)
{
    p->code = 0;
    p->lines = 0;
    p->error = 0;
    p->enhanced[0] = '\0';
    smtp_buf_clear(&p->text);
}

int smtp_reply_pending(const smtp_reply_parser *p)
{
    return p->lines > 0;
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Counts 1..max digits at s; returns how many, or 0 if outside that range. */
static size_t digit_run(const char *s, size_t len, size_t max)
{
    size_t n = 0;
    while (n < len && is_digit(s[n]))
        n++;
    return (n >= 1 && n <= max) ? n : 0;
}

size_t smtp_enhanced_code(int code, const char *text, size_t len)
{
    size_t i = 0, n;

    if (len < 5 || text[0] != (char)('0' + code / 100))
        return 0;
    if (text[0] != '2' && text[0] != '4' && text[0] != '5')
        return 0;
    if (text[1] != '.')
        return 0;
    i = 2;
    n = digit_run(text + i, len - i, 3);
    if (!n)
        return 0;
    i += n;
    if (i >= len || text[i] != '.')
        return 0;
    i++;
    n = digit_run(text + i, len - i, 3);
    if (!n)
        return 0;
    i += n;
    if (i < len && text[i] != ' ')
        return 0;
    return i;
}

static int fail(smtp_reply_parser *p, int err)
{
    p->error = err;
    return err;
}

int smtp_reply_line(smtp_reply_parser *p, const char *line, size_t len, smtp_reply *out)
{
    int code, last, rc;
    const char *text;
    size_t text_len;

    if (p->error)
        return p->error;
    if (len > 0 && line[len - 1] == '\n')
        len--;
    if (len > 0 && line[len - 1] == '\r')
        len--;
    if (len > p->max_line)
        return fail(p, SMTP_E_LIMIT);
    if (p->lines >= 0 && (size_t)p->lines >= p->max_lines)
        return fail(p, SMTP_E_LIMIT);

    /* "ddd", "ddd text", "ddd-text": anything else is not a reply line. */
    if (len < 3 || line[0] < '2' || line[0] > '5' || !is_digit(line[1]) || !is_digit(line[2]))
        return fail(p, SMTP_E_PROTOCOL);
    if (len > 3 && line[3] != ' ' && line[3] != '-')
        return fail(p, SMTP_E_PROTOCOL);
    code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    if (p->lines > 0 && code != p->code)
        return fail(p, SMTP_E_PROTOCOL);
    last = (len == 3 || line[3] == ' ');
    text = len > 4 ? line + 4 : "";
    text_len = len > 4 ? len - 4 : 0;

    if (p->lines == 0) {
        size_t n = smtp_enhanced_code(code, text, text_len);
        p->code = code;
        if (n && n < SMTP_ENHANCED_MAX) {
            memcpy(p->enhanced, text, n);
            p->enhanced[n] = '\0';
        } else {
            p->enhanced[0] = '\0';
        }
    } else {
        rc = smtp_buf_append(&p->text, "\n", 1);
        if (rc)
            return fail(p, rc);
    }
    rc = smtp_buf_append(&p->text, text, text_len);
    if (rc)
        return fail(p, rc);
    p->lines++;
    if (!last)
        return 0;

    out->code = p->code;
    memcpy(out->enhanced, p->enhanced, SMTP_ENHANCED_MAX);
    out->text = smtp_buf_ptr(&p->text);
    out->text_len = smtp_buf_len(&p->text);
    out->lines = p->lines;
    /* The text stays valid until the next call, which clears it first. */
    p->code = 0;
    p->lines = 0;
    p->text.start = p->text.end = 0;
    return 1;
}
