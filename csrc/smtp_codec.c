#include "smtp_codec.h"

#include <stdint.h>
#include <string.h>

#include "smtp_error.h"

/* One more than 64 so the literal keeps its NUL and no compiler complains
 * about an unterminated string. */
static const char b64_alphabet[65] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static const char hex_upper[17] = "0123456789ABCDEF";

/* Inputs longer than this could overflow size_t in the output-size
 * arithmetic (no encoding here grows data by more than 4x); no real buffer
 * limit is anywhere near it. */
#define SMTP_CODEC_MAX_INPUT ((SIZE_MAX - 64) / 4)

/* ---- output helpers ---------------------------------------------------- */


/* The QP and encoded-word writers run twice: first with p == NULL to learn
 * the exact output size, then into the reserved space. One code path for
 * both passes means the size can never disagree with what gets written, and
 * a failed reserve leaves the caller's state and buffer untouched. */
typedef struct sink {
    char *p;
    size_t n;
} sink;

static void sink_put(sink *k, const char *src, size_t n)
{
    if (k->p)
        memcpy(k->p + k->n, src, n);
    k->n += n;
}

static void sink_byte(sink *k, char c)
{
    if (k->p)
        k->p[k->n] = c;
    k->n++;
}

static void sink_escape(sink *k, unsigned char c)
{
    char esc[3];
    esc[0] = '=';
    esc[1] = hex_upper[c >> 4];
    esc[2] = hex_upper[c & 15];
    sink_put(k, esc, 3);
}

/* Reserves exactly what a counting pass produced, then returns the sink
 * for the writing pass. */
static int sink_open(smtp_buf *out, size_t n, sink *k)
{
    int rc = smtp_buf_reserve_rc(out, n, &k->p);
    k->n = 0;
    return rc;
}

/* ---- base64 encoding --------------------------------------------------- */

static char *b64_encode_group(char *w, const unsigned char *in)
{
    uint32_t v = (uint32_t)in[0] << 16 | (uint32_t)in[1] << 8 | in[2];
    w[0] = b64_alphabet[v >> 18];
    w[1] = b64_alphabet[(v >> 12) & 63];
    w[2] = b64_alphabet[(v >> 6) & 63];
    w[3] = b64_alphabet[v & 63];
    return w + 4;
}

/* The last 1 or 2 bytes of a stream, padded with '='. */
static char *b64_encode_tail(char *w, const unsigned char *in, size_t n)
{
    unsigned char group[3] = {0, 0, 0};
    memcpy(group, in, n);
    b64_encode_group(w, group);
    if (n < 3)
        w[3] = '=';
    if (n < 2)
        w[2] = '=';
    return w + 4;
}

static char *b64_encode_run(char *w, const unsigned char *in, size_t groups)
{
    while (groups--) {
        w = b64_encode_group(w, in);
        in += 3;
    }
    return w;
}

/* Line length is kept a multiple of 4 so a line always ends on a group
 * boundary: the hot loop then never has to split a group around a CRLF. */
void smtp_b64_init(smtp_b64 *s, size_t line_len)
{
    if (line_len > 0 && line_len < 4)
        line_len = 4;
    s->line_len = line_len - line_len % 4;
    s->ncarry = 0;
    s->col = 0;
}

static size_t b64_output_size(const smtp_b64 *s, size_t groups)
{
    size_t chars = groups * 4;
    size_t breaks = s->line_len ? (s->col + chars) / s->line_len : 0;
    return chars + 2 * breaks;
}

/* Writes whole groups, a CRLF after every full line. */
static char *b64_encode_lines(smtp_b64 *s, char *w, const unsigned char *in, size_t groups)
{
    if (s->line_len == 0)
        return b64_encode_run(w, in, groups);
    while (groups > 0) {
        size_t room = (s->line_len - s->col) / 4;
        size_t n = groups < room ? groups : room;
        w = b64_encode_run(w, in, n);
        in += 3 * n;
        groups -= n;
        s->col += 4 * n;
        if (s->col == s->line_len) {
            *w++ = '\r';
            *w++ = '\n';
            s->col = 0;
        }
    }
    return w;
}

int smtp_b64_update(smtp_b64 *s, const char *data, size_t len, smtp_buf *out)
{
    const unsigned char *in = (const unsigned char *)data;
    size_t ncarry = (size_t)s->ncarry;
    size_t groups, size, rest;
    char *w, *start;
    int rc;

    if (len == 0)
        return 0;
    if (len > SMTP_CODEC_MAX_INPUT)
        return SMTP_E_LIMIT;
    groups = (ncarry + len) / 3;
    if (groups == 0) {
        memcpy(s->carry + ncarry, in, len);
        s->ncarry = (int)(ncarry + len);
        return 0;
    }
    size = b64_output_size(s, groups);
    rc = smtp_buf_reserve_rc(out, size, &w);
    if (rc)
        return rc;
    start = w;
    if (ncarry > 0) {
        size_t fill = 3 - ncarry;
        memcpy(s->carry + ncarry, in, fill);
        w = b64_encode_lines(s, w, s->carry, 1);
        in += fill;
        len -= fill;
        groups--;
    }
    w = b64_encode_lines(s, w, in, groups);
    rest = len - groups * 3;
    memcpy(s->carry, in + groups * 3, rest);
    s->ncarry = (int)rest;
    smtp_buf_commit(out, (size_t)(w - start));
    return 0;
}

int smtp_b64_finish(smtp_b64 *s, smtp_buf *out)
{
    size_t tail = s->ncarry > 0 ? 4 : 0;
    int end_line = s->line_len > 0 && s->col + tail > 0;
    size_t size = tail + (end_line ? 2 : 0);
    char *w, *start;
    int rc = smtp_buf_reserve_rc(out, size, &w);

    if (rc)
        return rc;
    start = w;
    if (tail)
        w = b64_encode_tail(w, s->carry, (size_t)s->ncarry);
    if (end_line) {
        *w++ = '\r';
        *w++ = '\n';
    }
    smtp_buf_commit(out, (size_t)(w - start));
    s->ncarry = 0;
    s->col = 0;
    return 0;
}

/* ---- base64 decoding --------------------------------------------------- */

enum { B64_INVALID = -1, B64_SPACE = -2, B64_PAD = -3 };

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    switch (c) {
    case '+': return 62;
    case '/': return 63;
    case '=': return B64_PAD;
    case ' ': case '\t': case '\r': case '\n': return B64_SPACE;
    default: return B64_INVALID;
    }
}

/* Decodes into w (room for the worst case), storing the byte count in
 * *written; SMTP_E_ARGUMENT on bad input. Missing padding at the end is
 * accepted; data after padding is not, since it means two streams were
 * glued together or the text is not base64. */
static int b64_decode_into(char *w, const unsigned char *in, size_t len, size_t *written)
{
    char *start = w;
    uint32_t acc = 0;
    int n = 0, pads = 0;
    size_t i;

    for (i = 0; i < len; i++) {
        int v = b64_value(in[i]);
        if (v == B64_SPACE)
            continue;
        if (v == B64_PAD) {
            if (n < 2 || n + ++pads > 4)
                return SMTP_E_ARGUMENT;
            continue;
        }
        if (v == B64_INVALID || pads > 0)
            return SMTP_E_ARGUMENT;
        acc = acc << 6 | (uint32_t)v;
        if (++n == 4) {
            *w++ = (char)(acc >> 16);
            *w++ = (char)(acc >> 8);
            *w++ = (char)acc;
            acc = 0;
            n = 0;
        }
    }
    if (n == 1)
        return SMTP_E_ARGUMENT; /* six bits cannot make a byte */
    if (n == 2)
        *w++ = (char)(acc >> 4);
    if (n == 3) {
        *w++ = (char)(acc >> 10);
        *w++ = (char)(acc >> 2);
    }
    *written = (size_t)(w - start);
    return 0;
}

int smtp_b64_decode(const char *data, size_t len, smtp_buf *out)
{
    size_t bound = len / 4 * 3 + 2;
    size_t written = 0;
    char *w;
    int rc;

    if (len == 0)
        return 0;
    rc = smtp_buf_reserve_rc(out, bound, &w);
    if (rc)
        return rc;
    rc = b64_decode_into(w, (const unsigned char *)data, len, &written);
    if (rc)
        return rc; /* nothing committed: out is as before */
    smtp_buf_commit(out, written);
    return 0;
}

/* ---- quoted-printable encoding ----------------------------------------- */

/* Content characters allowed before a soft break: the '=' makes 76. */
#define QP_MAX_CONTENT 75

void smtp_qp_init(smtp_qp *s)
{
    s->col = 0;
    s->pending_cr = 0;
    s->held = 0;
    s->has_held = 0;
}

static int qp_needs_escape(unsigned char c)
{
    return c == '=' || c >= 0x7f || (c < 0x20 && c != '\t');
}

static void qp_soft_break(smtp_qp *s, sink *k)
{
    sink_put(k, "=\r\n", 3);
    s->col = 0;
}

static void qp_hard_break(smtp_qp *s, sink *k)
{
    sink_put(k, "\r\n", 2);
    s->col = 0;
}

/* Writes one input byte, soft-breaking first if it would not fit. The
 * escape is decided as a whole, so =XX is never split across lines. A dot
 * is re-examined after a soft break because it may now start the line. */
static void qp_emit(smtp_qp *s, sink *k, unsigned char c, int force_escape)
{
    int escape = force_escape || qp_needs_escape(c) || (c == '.' && s->col == 0);

    if (s->col + (escape ? 3 : 1) > QP_MAX_CONTENT) {
        qp_soft_break(s, k);
        escape = escape || c == '.';
    }
    if (escape)
        sink_escape(k, c);
    else
        sink_byte(k, (char)c);
    s->col += escape ? 3 : 1;
}

/* A held space or tab is literal unless it turned out to end the line. */
static void qp_release_held(smtp_qp *s, sink *k, int trailing)
{
    if (!s->has_held)
        return;
    s->has_held = 0;
    qp_emit(s, k, s->held, trailing);
}

static void qp_encode_byte(smtp_qp *s, sink *k, unsigned char c)
{
    /* The break for a CR went out at once; an LF right after it is the
     * second half of the same CRLF, even across a chunk boundary. */
    if (s->pending_cr) {
        s->pending_cr = 0;
        if (c == '\n')
            return;
    }
    if (c == '\r' || c == '\n') {
        qp_release_held(s, k, 1);
        qp_hard_break(s, k);
        s->pending_cr = c == '\r';
        return;
    }
    qp_release_held(s, k, 0);
    if (c == ' ' || c == '\t') {
        s->held = c;
        s->has_held = 1;
        return;
    }
    qp_emit(s, k, c, 0);
}

static void qp_encode_run(smtp_qp *s, sink *k, const unsigned char *in, size_t len)
{
    size_t i;
    for (i = 0; i < len; i++)
        qp_encode_byte(s, k, in[i]);
}

int smtp_qp_update(smtp_qp *s, const char *data, size_t len, smtp_buf *out)
{
    const unsigned char *in = (const unsigned char *)data;
    smtp_qp trial = *s;
    sink count = {NULL, 0}, k;
    int rc;

    if (len > SMTP_CODEC_MAX_INPUT)
        return SMTP_E_LIMIT;
    qp_encode_run(&trial, &count, in, len);
    rc = sink_open(out, count.n, &k);
    if (rc)
        return rc;
    qp_encode_run(s, &k, in, len);
    smtp_buf_commit(out, k.n);
    return 0;
}

/* The end of input ends the last line, so a held space or tab is trailing.
 * No final CRLF is added: the text did not have one. */
int smtp_qp_finish(smtp_qp *s, smtp_buf *out)
{
    smtp_qp trial = *s;
    sink count = {NULL, 0}, k;
    int rc;

    qp_release_held(&trial, &count, 1);
    rc = sink_open(out, count.n, &k);
    if (rc)
        return rc;
    qp_release_held(s, &k, 1);
    smtp_buf_commit(out, k.n);
    smtp_qp_init(s);
    return 0;
}

/* ---- quoted-printable decoding ----------------------------------------- */

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static int is_blank(unsigned char c)
{
    return c == ' ' || c == '\t';
}

/* Length of the line end (CRLF, LF or CR) at in[i], 0 if none. */
static size_t line_end_at(const unsigned char *in, size_t len, size_t i)
{
    if (i >= len)
        return 0;
    if (in[i] == '\r')
        return (i + 1 < len && in[i + 1] == '\n') ? 2 : 1;
    return in[i] == '\n' ? 1 : 0;
}

static size_t skip_blanks(const unsigned char *in, size_t len, size_t i)
{
    while (i < len && is_blank(in[i]))
        i++;
    return i;
}

/* Handles the '=' at in[i]; returns the index after what it consumed.
 * Blanks between '=' and the line end were added in transit (RFC 2045 6.7
 * rule 3), so "=  CRLF" is still a soft break; a bare '=' at the very end is
 * how an encoder says "no final line break". */
static size_t qp_decode_equals(sink *k, const unsigned char *in, size_t len, size_t i)
{
    size_t j = skip_blanks(in, len, i + 1);
    size_t eol = line_end_at(in, len, j);
    int hi, lo;

    if (j == len || eol > 0)
        return j + eol;
    hi = i + 1 < len ? hex_value(in[i + 1]) : -1;
    lo = i + 2 < len ? hex_value(in[i + 2]) : -1;
    if (hi >= 0 && lo >= 0) {
        sink_byte(k, (char)(hi << 4 | lo));
        return i + 3;
    }
    sink_byte(k, '='); /* not an escape: keep it, be lenient */
    return i + 1;
}

static void qp_decode_run(sink *k, const unsigned char *in, size_t len)
{
    size_t i = 0;

    while (i < len) {
        size_t eol = line_end_at(in, len, i);
        if (eol > 0) {
            sink_put(k, "\r\n", 2);
            i += eol;
        } else if (in[i] == '=') {
            i = qp_decode_equals(k, in, len, i);
        } else if (is_blank(in[i])) {
            /* Trailing blanks cannot come from a conforming encoder; RFC
             * 2045 says to delete them. */
            size_t j = skip_blanks(in, len, i);
            if (j < len && line_end_at(in, len, j) == 0)
                sink_put(k, (const char *)in + i, j - i);
            i = j;
        } else {
            sink_byte(k, (char)in[i]);
            i++;
        }
    }
}

int smtp_qp_decode(const char *data, size_t len, smtp_buf *out)
{
    const unsigned char *in = (const unsigned char *)data;
    sink count = {NULL, 0}, k;
    int rc;

    if (len > SMTP_CODEC_MAX_INPUT)
        return SMTP_E_LIMIT;
    qp_decode_run(&count, in, len);
    rc = sink_open(out, count.n, &k);
    if (rc)
        return rc;
    qp_decode_run(&k, in, len);
    smtp_buf_commit(out, k.n);
    return 0;
}

/* ---- RFC 2047 encoded words -------------------------------------------- */

#define EW_MAX_WORD 75   /* RFC 2047 section 2 */
#define EW_MAX_LINE 78   /* RFC 5322 section 2.1.1 */
#define EW_OVERHEAD 12   /* "=?UTF-8?B?" and "?=" */

enum ew_scheme { EW_B, EW_Q };

static int in_range(unsigned char c, unsigned char lo, unsigned char hi)
{
    return c >= lo && c <= hi;
}

/* Length of the well-formed UTF-8 sequence at p (Unicode table 3-7), or 1
 * for any byte that does not start one: such a byte is its own unit. */
static size_t utf8_unit_len(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    unsigned char lo = 0x80, hi = 0xbf;
    size_t need, i;

    if (c < 0xc2 || c > 0xf4)
        return 1;
    need = c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
    if (c == 0xe0) lo = 0xa0;
    if (c == 0xed) hi = 0x9f;
    if (c == 0xf0) lo = 0x90;
    if (c == 0xf4) hi = 0x8f;
    if (n < need || !in_range(p[1], lo, hi))
        return 1;
    for (i = 2; i < need; i++)
        if (!in_range(p[i], 0x80, 0xbf))
            return 1;
    return need;
}

/* RFC 2047 section 5 (3): the characters a Q word may carry literally
 * anywhere, even inside a phrase. */
static int q_is_safe(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '!' || c == '*' || c == '+' || c == '-' || c == '/';
}

/* A space travels as '_', one character like a safe one. */
static size_t q_width(const unsigned char *p, size_t n)
{
    size_t w = 0, i;
    for (i = 0; i < n; i++)
        w += (p[i] == ' ' || q_is_safe(p[i])) ? 1 : 3;
    return w;
}

static size_t b64_width(size_t bytes)
{
    return (bytes + 2) / 3 * 4;
}

/* How many bytes from p make the longest run of whole units whose payload
 * fits in max_payload characters. */
static size_t ew_fit(enum ew_scheme scheme, const unsigned char *p, size_t n, size_t max_payload)
{
    size_t taken = 0, width = 0;

    while (taken < n) {
        size_t unit = utf8_unit_len(p + taken, n - taken);
        if (scheme == EW_B) {
            if (b64_width(taken + unit) > max_payload)
                break;
        } else {
            size_t uw = q_width(p + taken, unit);
            if (width + uw > max_payload)
                break;
            width += uw;
        }
        taken += unit;
    }
    return taken;
}

static void ew_put_b_payload(sink *k, const unsigned char *p, size_t n)
{
    char quad[4];
    while (n >= 3) {
        sink_put(k, quad, (size_t)(b64_encode_group(quad, p) - quad));
        p += 3;
        n -= 3;
    }
    if (n > 0)
        sink_put(k, quad, (size_t)(b64_encode_tail(quad, p, n) - quad));
}

static void ew_put_q_payload(sink *k, const unsigned char *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        if (p[i] == ' ')
            sink_byte(k, '_');
        else if (q_is_safe(p[i]))
            sink_byte(k, (char)p[i]);
        else
            sink_escape(k, p[i]);
    }
}

static void ew_put_word(sink *k, enum ew_scheme scheme, const unsigned char *p, size_t n)
{
    sink_put(k, scheme == EW_B ? "=?UTF-8?B?" : "=?UTF-8?Q?", 10);
    if (scheme == EW_B)
        ew_put_b_payload(k, p, n);
    else
        ew_put_q_payload(k, p, n);
    sink_put(k, "?=", 2);
}

static size_t ew_first_word_max(size_t first_col)
{
    size_t room = first_col < EW_MAX_LINE ? EW_MAX_LINE - first_col : 0;
    return room < EW_MAX_WORD ? room : EW_MAX_WORD;
}

/* Greedy: each word takes as many whole units as fit. When not even one
 * unit fits after first_col, the value starts on a folded line instead of
 * overflowing the first. */
static void ew_encode(sink *k, enum ew_scheme scheme, const unsigned char *p, size_t len,
                      size_t first_col)
{
    size_t max_word = ew_first_word_max(first_col);
    size_t pos = 0;
    int fold = 0;

    while (pos < len) {
        size_t max_payload = max_word > EW_OVERHEAD ? max_word - EW_OVERHEAD : 0;
        size_t n = ew_fit(scheme, p + pos, len - pos, max_payload);
        if (n == 0) {
            sink_put(k, "\r\n ", 3);
            max_word = EW_MAX_WORD;
            continue;
        }
        if (fold)
            sink_put(k, "\r\n ", 3);
        ew_put_word(k, scheme, p + pos, n);
        pos += n;
        fold = 1;
        max_word = EW_MAX_WORD;
    }
}

int smtp_encode_words(const char *text, size_t len, size_t first_col, smtp_buf *out)
{
    const unsigned char *p = (const unsigned char *)text;
    sink b = {NULL, 0}, q = {NULL, 0}, k;
    enum ew_scheme scheme;
    int rc;

    if (len > SMTP_CODEC_MAX_INPUT)
        return SMTP_E_LIMIT;
    ew_encode(&b, EW_B, p, len, first_col);
    ew_encode(&q, EW_Q, p, len, first_col);
    /* On a tie Q wins: it stays readable in a raw header. */
    scheme = q.n <= b.n ? EW_Q : EW_B;
    rc = sink_open(out, scheme == EW_Q ? q.n : b.n, &k);
    if (rc)
        return rc;
    ew_encode(&k, scheme, p, len, first_col);
    smtp_buf_commit(out, k.n);
    return 0;
}

int smtp_header_is_plain(const char *text, size_t len)
{
    const unsigned char *p = (const unsigned char *)text;
    size_t i;

    for (i = 0; i < len; i++) {
        if (!(in_range(p[i], 0x20, 0x7e) || p[i] == '\t'))
            return 0;
        if (p[i] == '=' && i + 1 < len && p[i + 1] == '?')
            return 0;
    }
    return 1;
}

void smtp_text_shape_of(const char *text, size_t len, smtp_text_shape *shape)
{
    const unsigned char *p = (const unsigned char *)text;
    size_t i, line_start = 0;
    shape->only_crlf = 1;
    shape->seven_bit = 1;
    shape->longest_line = 0;
    for (i = 0; i < len; i++) {
        unsigned char c = p[i];
        if (c >= 0x20 && c <= 0x7e)
            continue;
        if (c == '\r' && i + 1 < len && p[i + 1] == '\n') {
            if (i - line_start > shape->longest_line)
                shape->longest_line = i - line_start;
            i++;
            line_start = i + 1;
        } else if (c == '\r' || c == '\n') {
            shape->only_crlf = 0; /* bare: the pair check above saw no partner */
        } else if (c != '\t') {
            shape->seven_bit = 0;
        }
    }
    if (len - line_start > shape->longest_line)
        shape->longest_line = len - line_start;
}

int smtp_crlf(const char *text, size_t len, smtp_buf *out)
{
    size_t i, span = 0;
    int rc;
    for (i = 0; i < len; i++) {
        if (text[i] != '\r' && text[i] != '\n')
            continue;
        if ((rc = smtp_buf_append(out, text + span, i - span)) != 0 ||
            (rc = smtp_buf_append(out, "\r\n", 2)) != 0)
            return rc;
        if (text[i] == '\r' && i + 1 < len && text[i + 1] == '\n')
            i++;
        span = i + 1;
    }
    return smtp_buf_append(out, text + span, len - span);
}
