/* Transfer encodings for message bodies and headers (RFC 2045, RFC 2047).
 *
 * The encoders are streaming: state carries across calls, so a file can be
 * encoded block by block in constant memory. Output goes to an smtp_buf.
 * Line ends in the output are CRLF. The output of any split of the input,
 * concatenated, equals the output of one call with the whole input.
 *
 * The int-returning functions (all but smtp_header_is_plain) give 0,
 * SMTP_E_LIMIT or SMTP_E_NOMEM, and smtp_b64_decode also SMTP_E_ARGUMENT.
 * On error nothing is written and the encoder state is unchanged, so the
 * call can be retried after draining out.
 */
#ifndef SMTP_CODEC_H
#define SMTP_CODEC_H

#include <stddef.h>
#include "smtp_buf.h"

/* base64 (RFC 2045 section 6.8): lines of line_len characters (76 for MIME
 * bodies; 0 for no line breaks). line_len is rounded down to a multiple of
 * 4 (at least 4) so that lines end on whole 4-character groups. */
typedef struct smtp_b64 {
    unsigned char carry[3];
    int ncarry;
    size_t line_len;
    size_t col;
} smtp_b64;

void smtp_b64_init(smtp_b64 *s, size_t line_len);
int smtp_b64_update(smtp_b64 *s, const char *data, size_t len, smtp_buf *out);
/* Flushes the last partial group with padding and ends the last line with
 * CRLF when line breaking is on and the line is not empty. */
int smtp_b64_finish(smtp_b64 *s, smtp_buf *out);
/* Decodes, ignoring space, tab, CR and LF; SMTP_E_ARGUMENT on any other
 * invalid byte, a lone trailing character, or data after padding. Missing
 * final padding is accepted. */
int smtp_b64_decode(const char *data, size_t len, smtp_buf *out);

/* quoted-printable (RFC 2045 section 6.7) for text: input line ends (CRLF,
 * LF or CR) become CRLF hard breaks; lines are soft-broken so that no output
 * line exceeds 76 characters counting the '=' of the soft break (a line
 * carries at most 75 characters of content); an =XX escape is never split;
 * '=', bytes >= 0x7f, control characters other than tab, and trailing space
 * or tab (before a line end or at the end of input) are encoded; a '.' at a
 * line start is encoded too, so the output survives any transport.
 * smtp_qp_finish adds no line break the input did not have, and resets the
 * state for reuse. */
typedef struct smtp_qp {
    size_t col;            /* characters on the current output line */
    int pending_cr;
    unsigned char held;    /* a space or tab not yet known to be trailing */
    int has_held;
} smtp_qp;

void smtp_qp_init(smtp_qp *s);
int smtp_qp_update(smtp_qp *s, const char *data, size_t len, smtp_buf *out);
int smtp_qp_finish(smtp_qp *s, smtp_buf *out);
/* Decodes; soft breaks (=CRLF, =LF, '=' at the very end) removed, hard line
 * ends (CRLF, LF or CR) kept as CRLF, =XX decoded in either case. Lenient:
 * invalid escapes are kept literally. Blanks at the end of a line are
 * deleted, as RFC 2045 rule 3 requires (transport may have added them). */
int smtp_qp_decode(const char *data, size_t len, smtp_buf *out);

/* RFC 2047 encoded words for an unstructured header value in UTF-8: the
 * text is cut into words of at most 75 characters each, never inside a
 * UTF-8 sequence, using B or Q, whichever gives the shorter result, and
 * joined by CRLF SP (a fold). first_col is the column where the value starts
 * (after "Subject: "), so the first line also stays within 78 columns; when
 * not even one character fits there, the output starts with the fold. Empty
 * text gives empty output. Q keeps only letters, digits and "!*+-/" literal
 * (RFC 2047 5(3)), so the words are safe in phrases too. Invalid UTF-8 is
 * carried byte by byte. */
int smtp_encode_words(const char *text, size_t len, size_t first_col, smtp_buf *out);

/* True when the text needs no encoding in a header: printable ASCII, tabs
 * and spaces only, and no sequence that looks like an encoded word. */
int smtp_header_is_plain(const char *text, size_t len);

/* The shape of a body, for choosing its transfer encoding (RFC 2045 2.7):
 * only_crlf: every CR is followed by LF and every LF follows a CR;
 * seven_bit: printable ASCII, TAB, CR and LF only (no NUL, no other
 * control, no octet over 127); longest_line: the most octets between two
 * CRLF pairs (or an end of the text), a bare CR or LF counting as one. */
typedef struct smtp_text_shape {
    int only_crlf;
    int seven_bit;
    size_t longest_line;
} smtp_text_shape;
void smtp_text_shape_of(const char *text, size_t len, smtp_text_shape *shape);

/* Text in canonical form (RFC 2046 4.1.1): CRLF, a bare CR and a bare LF
 * each become CRLF; nothing else changes (no final CRLF is added). On
 * SMTP_E_LIMIT or SMTP_E_NOMEM out may hold part of the text. */
int smtp_crlf(const char *text, size_t len, smtp_buf *out);

#endif
