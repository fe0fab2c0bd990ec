/* libFuzzer target: the sans-I/O SMTP engine (csrc/smtp_engine.c) driven
 * through a whole client session while the server side is the fuzz input.
 *
 * Input layout:
 *   byte 0     session flags:
 *                bit 0  PIPELINING use allowed (smtp_engine_set_pipelining)
 *                bit 1  LMTP (LHLO)
 *                bit 2  AUTH after hello (smtp_engine_set_insecure_auth)
 *                bit 3  chain each transaction right after the previous
 *                       one's end of data when smtp_engine_can_chain says so
 *                bit 4  small limits (max_line 512, max_lines 4, max_output
 *                       4096, max_commands 4)
 *                bit 5  AUTH LOGIN answered by smtp_sasl (else AUTH PLAIN
 *                       with an initial response, challenges answered "*"
 *                       after the second)
 *                bit 6  NOOP and RSET before QUIT
 *                bit 7  STARTTLS (then tls_done and a second hello)
 *   byte 1     bits 0-5 bytes the transport takes per write (0: all);
 *              bit 6 the second transaction uses DATA too (else BDAT);
 *              bit 7 eager reads (feed even while output is still pending)
 *   bytes 2-5  feed sizes, used in turn (0: one line, 255: everything left)
 *   byte 6     more flags: bit 0 the first transaction uses BDAT (else
 *              DATA); bit 1 a third transaction; bit 2 it uses BDAT
 *   rest       what the server sends.
 *
 * The client script, one operation each time the engine is IDLE: hello,
 * [starttls, hello], [auth], two or three transactions, each either DATA
 * (MAIL, 2 RCPT, DATA, a body with dots, bare CR and bare LF, end of data)
 * or BDAT (MAIL, 2 RCPT, BDAT, BDAT LAST), [noop, rset], quit. By default
 * the first is DATA and the second BDAT.
 *
 * Invariants checked:
 *  - never crashes (ASan/UBSan), never loops: the event loop is bounded by
 *    the input size, and a hang inside smtp_engine_next is a libFuzzer
 *    timeout;
 *  - a transaction is reported DONE only if, after its end of data (the
 *    final CRLF.CRLF, or the end of the BDAT LAST chunk) was written by the
 *    engine, the server sent a whole line starting "2xx" + SP or line end
 *    (without eager reads, written means taken by the transport: input is
 *    only fed when all output is written); the end of data must have been
 *    taken by the transport by the time of the DONE;
 *  - operation outcomes: hello DONE only on 250, AUTH on 235, RSET and NOOP
 *    on 2xx, STARTTLS on 220;
 *  - a transaction is reported at most once, and only one that was started;
 *    an operation outcome (DONE/FAILED without a transaction) comes once
 *    per operation the driver started, never when none is outstanding;
 *  - a DONE operation outcome never stands for a transaction;
 *  - the output never holds a bare CR or LF (only CRLF), and nothing is
 *    written after QUIT;
 *  - events are well formed: REPLY codes 200..599, FAILED with
 *    SMTP_FAIL_PROTOCOL carries a negative error.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_engine.h"
#include "smtp_error.h"
#include "smtp_sasl.h"

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "fuzz_engine: invariant failed at line %d: %s\n", __LINE__, \
                    #cond);                                                            \
            abort();                                                                   \
        }                                                                              \
    } while (0)

enum op {
    OP_HELLO, OP_STARTTLS, OP_HELLO2, OP_AUTH, OP_TXN, OP_NOOP, OP_RSET,
    OP_QUIT, OP_END
};

#define MAX_TXN 8
#define MAX_FEEDS 4200

typedef struct txn_rec {
    unsigned id;
    int bdat;
    int eod_set;                 /* DATA: end of data written */
    unsigned long long eod;      /* DATA: output position just past it */
    int bdat_last_called;
    unsigned long long bdat_from; /* BDAT: produced output when LAST was called */
    int reported;
} txn_rec;

typedef struct driver {
    smtp_engine e;
    const char *in;
    size_t in_len, in_pos;
    const uint8_t *sizes;
    size_t size_k;
    size_t take;
    int eager;
    int kinds[3];      /* per planned transaction: 1 BDAT, 0 DATA */
    int planned;       /* transactions in the script: 2 or 3 */
    int chain;         /* start the next one as soon as can_chain */
    /* everything the engine wrote and the transport took */
    char *wire;
    size_t wire_len, wire_cap;
    /* everything fed, and per feed: where it starts and how much output
     * had been produced by then */
    size_t feed_start[MAX_FEEDS];
    unsigned long long feed_out[MAX_FEEDS];
    size_t nfeeds;
    txn_rec txns[MAX_TXN];
    int ntxns;
    int quit_sent;
    int op_open;       /* an operation other than a transaction awaits its outcome */
    smtp_sasl *sasl;
    int challenges;
} driver;

static void wire_add(driver *d, const char *p, size_t n)
{
    if (d->wire_len + n > d->wire_cap) {
        size_t cap = d->wire_cap ? d->wire_cap : 4096;
        while (cap < d->wire_len + n)
            cap *= 2;
        d->wire = realloc(d->wire, cap);
        d->wire_cap = cap;
    }
    memcpy(d->wire + d->wire_len, p, n);
    d->wire_len += n;
}

static size_t pending(driver *d)
{
    size_t n;
    smtp_engine_output(&d->e, &n);
    return n;
}

/* Output produced so far: taken by the transport plus still pending. */
static unsigned long long produced(driver *d)
{
    return d->wire_len + pending(d);
}

/* The transport takes up to d->take bytes (all when 0). */
static void flush(driver *d)
{
    size_t n;
    const char *p = smtp_engine_output(&d->e, &n);
    if (n == 0)
        return;
    if (d->take && n > d->take)
        n = d->take;
    wire_add(d, p, n);
    smtp_engine_consumed(&d->e, n);
}

/* Feed sizes: 0 one line (up to and with the next LF), 255 everything
 * left, else that many bytes. */
static int feed(driver *d)
{
    size_t n = d->sizes[d->size_k++ % 4], left = d->in_len - d->in_pos;
    if (n == 0) {
        const char *nl = memchr(d->in + d->in_pos, '\n', left);
        n = nl ? (size_t)(nl - (d->in + d->in_pos)) + 1 : left;
    }
    if (n == 255 || n > left)
        n = left;
    if (d->nfeeds < MAX_FEEDS) {
        d->feed_start[d->nfeeds] = d->in_pos;
        d->feed_out[d->nfeeds] = produced(d);
        d->nfeeds++;
    }
    if (smtp_engine_feed(&d->e, d->in + d->in_pos, n) != 0)
        return -1;
    d->in_pos += n;
    return 0;
}

static txn_rec *txn_find(driver *d, unsigned id)
{
    int i;
    for (i = 0; i < d->ntxns; i++)
        if (d->txns[i].id == id)
            return &d->txns[i];
    return NULL;
}

/* All output as produced so far (wire + pending), in a fresh buffer. */
static char *all_output(driver *d, size_t *len)
{
    size_t n;
    const char *p = smtp_engine_output(&d->e, &n);
    char *all = malloc(d->wire_len + n + 1);
    memcpy(all, d->wire, d->wire_len);
    memcpy(all + d->wire_len, p, n);
    *len = d->wire_len + n;
    return all;
}

/* Where the BDAT LAST chunk of t ends in the output; 0 when not there. */
static unsigned long long bdat_eod(driver *d, const txn_rec *t)
{
    size_t len, i;
    char *all = all_output(d, &len);
    unsigned long long eod = 0;
    for (i = (size_t)t->bdat_from; i + 5 <= len; i++) {
        if ((i == 0 || all[i - 1] == '\n') && memcmp(all + i, "BDAT ", 5) == 0) {
            char *end;
            unsigned long n = strtoul(all + i + 5, &end, 10);
            size_t line_end = (size_t)(end - all);
            if (line_end + 7 <= len && memcmp(end, " LAST\r\n", 7) == 0) {
                eod = line_end + 7 + n;
                break;
            }
        }
    }
    free(all);
    return eod;
}

/* The DONE invariant: a whole "2xx" line fed after the end of data. */
static void check_txn_done(driver *d, txn_rec *t)
{
    unsigned long long eod = 0;
    size_t f, from = d->in_pos, i;
    int found = 0;

    if (t->bdat) {
        CHECK(t->bdat_last_called);
        eod = bdat_eod(d, t);
    } else {
        CHECK(t->eod_set);
        eod = t->eod;
    }
    CHECK(eod > 0);
    CHECK(eod <= d->wire_len); /* it was on the wire */
    for (f = 0; f < d->nfeeds; f++) {
        if (d->feed_out[f] >= eod && d->wire_len >= eod) {
            from = d->feed_start[f];
            break;
        }
    }
    /* Only bytes fed once the end of data was written. */
    for (i = from; i + 3 < d->in_pos && !found; i++) {
        const char *s = d->in + i;
        if (i > 0 && d->in[i - 1] != '\n')
            continue;
        if (s[0] == '2' && s[1] >= '0' && s[1] <= '9' && s[2] >= '0' && s[2] <= '9' &&
            (s[3] == ' ' || s[3] == '\r' || s[3] == '\n') &&
            memchr(s + 3, '\n', d->in_pos - i - 3))
            found = 1;
    }
    if (!found) {
        fprintf(stderr, "fuzz_engine: txn %u DONE, but no 2xx line was fed after its end of "
                        "data (output offset %llu)\n", t->id, eod);
    }
    CHECK(found);
}

static void check_crlf_only(const char *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        if (p[i] == '\r')
            CHECK(i + 1 < n && p[i + 1] == '\n');
        if (p[i] == '\n')
            CHECK(i > 0 && p[i - 1] == '\r');
    }
}

static void start_txn_rec(driver *d, int bdat)
{
    txn_rec *t;
    if (d->ntxns >= MAX_TXN)
        return;
    t = &d->txns[d->ntxns++];
    memset(t, 0, sizeof *t);
    t->id = d->e.txn_next_id;
    t->bdat = bdat;
}

static int run_txn(driver *d, int bdat);

/* Chains the next planned transaction behind a finished body. */
static void maybe_chain(driver *d)
{
    if (d->chain && d->ntxns < d->planned && smtp_engine_can_chain(&d->e))
        (void)run_txn(d, d->kinds[d->ntxns]);
}

/* MAIL, two RCPT and then DATA or the BDAT chunks. */
static int run_txn(driver *d, int bdat)
{
    unsigned before = d->e.txn_next_id;
    int rc = smtp_engine_mail(&d->e, "sender@example.org", 1000, NULL);
    if (d->e.txn_next_id != before)
        start_txn_rec(d, bdat);
    if (rc)
        return rc;
    (void)smtp_engine_rcpt(&d->e, "one@example.net", NULL);
    (void)smtp_engine_rcpt(&d->e, "two@example.net", "NOTIFY=NEVER");
    if (!bdat)
        return smtp_engine_data(&d->e);
    (void)smtp_engine_bdat(&d->e, "line 1\r\n.\r\nline 2\n", 18, 0);
    if (d->ntxns > 0 && d->txns[d->ntxns - 1].id == d->e.txn_next_id) {
        d->txns[d->ntxns - 1].bdat_last_called = 1;
        d->txns[d->ntxns - 1].bdat_from = produced(d);
    }
    rc = smtp_engine_bdat(&d->e, "last\r", 5, 1);
    if (rc == 0)
        maybe_chain(d);
    return rc;
}

static void write_body(driver *d)
{
    static const char *const chunks[] = {"Subject: x\r\n\r\n.\r\n", ".a\rb\nc\r", "\n."};
    size_t i;
    unsigned long long before;
    txn_rec *t = NULL;
    int k;
    /* The body belongs to the newest DATA transaction without one. */
    for (k = 0; k < d->ntxns; k++)
        if (!d->txns[k].bdat && !d->txns[k].eod_set)
            t = &d->txns[k];
    for (i = 0; i < 3; i++) {
        if (smtp_engine_body(&d->e, chunks[i], strlen(chunks[i])) != 0) {
            smtp_engine_close(&d->e); /* the driver gives up */
            return;
        }
    }
    before = produced(d);
    if (smtp_engine_body_end(&d->e) != 0) {
        smtp_engine_close(&d->e);
        return;
    }
    if (t && !t->bdat) {
        size_t n;
        const char *p = smtp_engine_output(&d->e, &n);
        /* The end of data starts at 'before' (the body did not end with a
         * line end here: "\r\n.\r\n"). */
        size_t off = (size_t)(before - d->wire_len);
        CHECK(off + 5 <= n && memcmp(p + off, "\r\n.\r\n", 5) == 0);
        t->eod = before + 5;
        t->eod_set = 1;
    }
    maybe_chain(d);
}

/* 0, or -1 when the response could not be staged (the driver gives up). */
static int auth_challenge(driver *d, const smtp_event *ev)
{
    int rc;
    const char *resp = "*";
    smtp_buf out;
    smtp_buf_init(&out, 4096);
    if (d->sasl && d->challenges < 6) {
        if (smtp_sasl_step(d->sasl, ev->reply.text, ev->reply.text_len, &out) == 0) {
            if (smtp_buf_len(&out) == 0)
                CHECK(smtp_buf_append(&out, "=", 1) == 0);
            CHECK(smtp_buf_append(&out, "", 1) == 0);
            resp = smtp_buf_ptr(&out);
        }
    } else if (!d->sasl && d->challenges < 2) {
        resp = "dGVzdA==";
    }
    d->challenges++;
    rc = smtp_engine_auth_response(&d->e, resp);
    smtp_buf_free(&out);
    return rc ? -1 : 0;
}

static int start_op(driver *d, enum op op, int flags)
{
    switch (op) {
    case OP_HELLO:
    case OP_HELLO2:
        return smtp_engine_hello(&d->e, "client.example", (flags >> 1) & 1);
    case OP_STARTTLS:
        return smtp_engine_starttls(&d->e);
    case OP_AUTH:
        smtp_engine_set_insecure_auth(&d->e, 1);
        if ((flags >> 5) & 1) {
            smtp_buf init;
            smtp_buf_init(&init, 1024);
            smtp_sasl_free(d->sasl);
            d->sasl = NULL;
            if (smtp_sasl_start(&d->sasl, "LOGIN", NULL, "user", "pencil", &init) != 0) {
                smtp_buf_free(&init);
                return -1;
            }
            smtp_buf_free(&init);
            return smtp_engine_auth(&d->e, "LOGIN", NULL);
        }
        return smtp_engine_auth(&d->e, "PLAIN", "AHVzZXIAcGVuY2ls");
    case OP_TXN:
        /* Skipped when already sent, chained behind the one before. */
        if (d->ntxns >= d->planned)
            return -1;
        return run_txn(d, d->kinds[d->ntxns]);
    case OP_NOOP:
        return smtp_engine_noop(&d->e);
    case OP_RSET:
        return smtp_engine_rset(&d->e);
    case OP_QUIT: {
        int rc = smtp_engine_quit(&d->e);
        if (rc == 0)
            d->quit_sent = 1;
        return rc;
    }
    default:
        return -1;
    }
}

static void exercise_caps(driver *d)
{
    const char *kw, *params;
    size_t kwlen, plen;
    int i;
    for (i = 0; i < 300 && smtp_engine_cap(&d->e, i, &kw, &kwlen, &params, &plen); i++) {
        CHECK(kw != NULL && params != NULL);
        CHECK(memchr(kw, '\n', kwlen) == NULL && memchr(params, '\n', plen) == NULL);
    }
    (void)smtp_engine_has_cap(&d->e, "PIPELINING", NULL, NULL);
    (void)smtp_engine_has_cap(&d->e, "AUTH", &params, &plen);
    (void)smtp_engine_max_size(&d->e);
    (void)smtp_engine_extended(&d->e);
    (void)smtp_engine_waiting_for(&d->e);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static driver D;
    static int trace = -1;
    driver *d = &D;
    smtp_limits lim;
    enum op script[16];
    int nscript = 0, si = 0, flags;
    long iter, max_iter;

    if (trace < 0)
        trace = getenv("FUZZ_TRACE") != NULL; /* events and wire on stderr */
    if (size < 7)
        return 0;
    memset(d, 0, sizeof *d);
    flags = data[0];
    d->take = data[1] & 0x3f;
    d->chain = (flags >> 3) & 1;
    d->kinds[0] = data[6] & 1;
    d->kinds[1] = !((data[1] >> 6) & 1);
    d->kinds[2] = (data[6] >> 2) & 1;
    d->planned = (data[6] >> 1) & 1 ? 3 : 2;
    d->eager = data[1] >> 7;
    d->sizes = data + 2;
    d->in = (const char *)data + 7;
    d->in_len = size - 7;

    smtp_limits_default(&lim);
    if ((flags >> 4) & 1) {
        lim.max_line = 512;
        lim.max_lines = 4;
        lim.max_output = 4096;
        lim.max_commands = 4;
    }
    CHECK(smtp_engine_init(&d->e, &lim) == 0);
    smtp_engine_set_pipelining(&d->e, flags & 1);

    script[nscript++] = OP_HELLO;
    if ((flags >> 7) & 1) {
        script[nscript++] = OP_STARTTLS;
        script[nscript++] = OP_HELLO2;
    }
    if ((flags >> 2) & 1)
        script[nscript++] = OP_AUTH;
    script[nscript++] = OP_TXN;
    script[nscript++] = OP_TXN;
    if (d->planned == 3)
        script[nscript++] = OP_TXN;
    if ((flags >> 6) & 1) {
        script[nscript++] = OP_NOOP;
        script[nscript++] = OP_RSET;
    }
    script[nscript++] = OP_QUIT;
    script[nscript++] = OP_END;

    /* Every event consumes input, produces output or moves the script on;
     * anything beyond this bound is a loop. */
    max_iter = 64 * ((long)size + 64);
    for (iter = 0;; iter++) {
        smtp_event ev;
        int rc;

        CHECK(iter < max_iter);
        flush(d);
        rc = smtp_engine_next(&d->e, &ev);
        CHECK(rc == 0);
        CHECK(ev.kind >= SMTP_EV_NEED_INPUT && ev.kind <= SMTP_EV_IDLE);
        if (trace && ev.kind != SMTP_EV_NEED_INPUT)
            fprintf(stderr, "event %d cmd %s txn %u code %d fail %d error %d\n", (int)ev.kind,
                    smtp_cmd_name(ev.cmd), ev.txn, ev.reply.code, (int)ev.fail, ev.error);

        switch (ev.kind) {
        case SMTP_EV_NEED_INPUT:
            if (pending(d) > 0 && !d->eager)
                continue; /* the transport must write first */
            if (d->in_pos < d->in_len) {
                if (feed(d) != 0)
                    smtp_engine_close(&d->e);
                continue;
            }
            if (pending(d) > 0)
                continue;
            goto done; /* the server closed the connection */
        case SMTP_EV_REPLY:
            CHECK(ev.reply.code >= 200 && ev.reply.code <= 599);
            CHECK(ev.reply.lines >= 1);
            CHECK(ev.reply.text != NULL);
            break;
        case SMTP_EV_NEED_BODY:
            write_body(d);
            break;
        case SMTP_EV_STARTTLS:
            CHECK(ev.reply.code == 220);
            CHECK(d->op_open);
            d->op_open = 0;
            CHECK(smtp_engine_tls_done(&d->e) == 0);
            break;
        case SMTP_EV_CHALLENGE:
            if (auth_challenge(d, &ev) != 0)
                goto done;
            break;
        case SMTP_EV_DONE:
        case SMTP_EV_FAILED:
            if (ev.kind == SMTP_EV_FAILED && ev.fail == SMTP_FAIL_PROTOCOL)
                CHECK(ev.error < 0);
            if (ev.txn == 0) {
                /* An operation outcome: only for an outstanding operation,
                 * once; it ends every transaction still in flight. */
                int k, open = d->op_open;
                for (k = 0; k < d->ntxns; k++) {
                    open |= !d->txns[k].reported;
                    d->txns[k].reported = 1;
                }
                CHECK(open);
                d->op_open = 0;
            }
            if (ev.txn != 0) {
                txn_rec *t = txn_find(d, ev.txn);
                CHECK(t != NULL);
                CHECK(!t->reported);
                t->reported = 1;
                if (ev.kind == SMTP_EV_DONE) {
                    CHECK(ev.reply.code >= 200 && ev.reply.code < 300);
                    check_txn_done(d, t);
                }
            } else if (ev.kind == SMTP_EV_DONE) {
                /* An operation outcome: never a transaction's success, and
                 * only on the reply that means success. */
                CHECK(ev.cmd != SMTP_CMD_DOT && ev.cmd != SMTP_CMD_BDAT);
                if (ev.cmd == SMTP_CMD_EHLO || ev.cmd == SMTP_CMD_HELO || ev.cmd == SMTP_CMD_LHLO)
                    CHECK(ev.reply.code == 250);
                else if (ev.cmd == SMTP_CMD_AUTH || ev.cmd == SMTP_CMD_AUTH_STEP)
                    CHECK(ev.reply.code == 235);
                else if (ev.cmd == SMTP_CMD_RSET || ev.cmd == SMTP_CMD_NOOP)
                    CHECK(ev.reply.code >= 200 && ev.reply.code < 300);
                else
                    CHECK(ev.cmd == SMTP_CMD_QUIT);
            }
            if (ev.kind == SMTP_EV_DONE && ev.txn == 0)
                exercise_caps(d);
            break;
        case SMTP_EV_IDLE:
            for (;;) {
                if (si >= nscript || script[si] == OP_END)
                    goto done;
                if (start_op(d, script[si], flags) == 0) {
                    d->op_open = script[si++] != OP_TXN;
                    break;
                }
                si++;
            }
            break;
        default:
            break;
        }
    }

done:
    flush(d);
    while (pending(d) > 0)
        flush(d);
    if (trace)
        fprintf(stderr, "wire:\n%.*s\n", (int)d->wire_len, d->wire);
    check_crlf_only(d->wire, d->wire_len);
    if (d->quit_sent) {
        /* QUIT is the last thing written, if it was written at all. */
        size_t i;
        for (i = 0; i + 6 <= d->wire_len; i++)
            if ((i == 0 || d->wire[i - 1] == '\n') && memcmp(d->wire + i, "QUIT\r\n", 6) == 0)
                CHECK(i + 6 == d->wire_len);
    }
    smtp_engine_close(&d->e);
    smtp_engine_free(&d->e);
    smtp_sasl_free(d->sasl);
    free(d->wire);
    return 0;
}
