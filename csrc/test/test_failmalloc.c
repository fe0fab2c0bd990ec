/* Allocation-failure run of the engine: each scenario is played once to
 * count its allocations, then again for every N with the Nth allocation
 * failing. Every call that gets SMTP_E_NOMEM must keep the promise of
 * smtp_engine.h (nothing staged or written by that call, no transaction
 * counted, the operation not left set), a failure inside smtp_engine_next
 * must come as SMTP_EV_FAILED with error SMTP_E_NOMEM and a dead session,
 * and after smtp_engine_free nothing may stay allocated (counted here, and
 * checked again by LeakSanitizer). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "smtp_codec.h"
#include "smtp_dkim.h"
#include "smtp_engine.h"
#include "smtp_error.h"
#include "smtp_sasl.h"

typedef struct failmem {
    long count;   /* allocations so far */
    long fail_at; /* fail this one (0: none) */
    long live;    /* blocks not yet freed */
    int failed;   /* the failure was injected */
} failmem;

static int injected(failmem *f)
{
    if (++f->count == f->fail_at) {
        f->failed = 1;
        return 1;
    }
    return 0;
}

static void *fm_malloc(size_t n, void *ud)
{
    failmem *f = ud;
    void *p;
    if (injected(f))
        return NULL;
    p = malloc(n);
    if (p)
        f->live++;
    return p;
}

static void *fm_realloc(void *ptr, size_t n, void *ud)
{
    failmem *f = ud;
    void *p;
    if (injected(f))
        return NULL;
    p = realloc(ptr, n);
    if (p && !ptr)
        f->live++;
    return p;
}

static void fm_free(void *ptr, void *ud)
{
    failmem *f = ud;
    f->live--;
    free(ptr);
}

/* One run: the engine, its scripted server and what went wrong. */
typedef struct run {
    smtp_engine e;
    const smtp_mem *mem;
    const char *const *replies;
    int nreplies, fed;
    int nomem;      /* a call or the session failed for memory */
    int broken;     /* a promise was not kept */
    char why[160];
} run;

static void broke(run *r, const char *what)
{
    if (!r->broken)
        snprintf(r->why, sizeof r->why, "%s", what);
    r->broken = 1;
}

/* Snapshot of what a failed call must leave as it was. */
typedef struct snap {
    int staged, txns;
    size_t out;
    unsigned last_txn;
    smtp_state state;
    smtp_op op;
} snap;

static snap take(const smtp_engine *e)
{
    snap s;
    s.staged = smtp_engine_staged(e);
    s.txns = smtp_engine_transactions(e);
    smtp_engine_output(e, &s.out);
    s.last_txn = smtp_engine_last_txn(e);
    s.state = smtp_engine_state(e);
    s.op = smtp_engine_op(e);
    return s;
}

/* Checks one operation call's result; returns 0 to go on. */
static int call(run *r, int rc, snap before, const char *name)
{
    snap after;
    if (rc == 0)
        return 0;
    if (rc != SMTP_E_NOMEM) {
        broke(r, name);
        return 1;
    }
    r->nomem = 1;
    after = take(&r->e);
    if (after.staged != before.staged || after.out != before.out)
        broke(r, "a call that failed for memory staged or wrote something");
    if (after.txns != before.txns || after.last_txn != before.last_txn)
        broke(r, "a call that failed for memory counted a transaction");
    if (after.state != before.state || after.op != before.op)
        broke(r, "a call that failed for memory changed the state");
    return 1;
}

#define CALL(r, expr, name)                                                                   \
    do {                                                                                      \
        snap before_ = take(&(r)->e);                                                         \
        int rc_ = (expr);                                                                     \
        if (call((r), rc_, before_, (name)))                                                  \
            return;                                                                           \
    } while (0)

/* Runs the loop until an event other than a reply; 0 on the expected kind. */
static int pump(run *r, smtp_event_kind want)
{
    int i;
    for (i = 0; i < 200; i++) {
        smtp_event ev;
        size_t n;
        smtp_engine_output(&r->e, &n);
        smtp_engine_consumed(&r->e, n);
        smtp_engine_next(&r->e, &ev);
        if (ev.kind == SMTP_EV_REPLY)
            continue;
        if (ev.kind == SMTP_EV_NEED_INPUT && r->fed < r->nreplies) {
            const char *p = r->replies[r->fed++];
            int rc = smtp_engine_feed(&r->e, p, strlen(p));
            if (rc == SMTP_E_NOMEM) {
                r->nomem = 1;
                return 1;
            }
            continue;
        }
        if (ev.kind == SMTP_EV_FAILED && ev.error == SMTP_E_NOMEM) {
            r->nomem = 1;
            if (!smtp_engine_dead(&r->e))
                broke(r, "a session failed for memory is not dead");
            return 1;
        }
        if (ev.kind != want) {
            broke(r, "unexpected event");
            return 1;
        }
        return 0;
    }
    broke(r, "no end");
    return 1;
}

#define PUMP(r, kind)                                                                         \
    do {                                                                                      \
        if (pump((r), (kind)))                                                                \
            return;                                                                           \
    } while (0)

/* Pipelined: hello, a DATA transaction to two recipients, a chained BDAT
 * transaction behind it, RSET, NOOP, QUIT. */
static const char *const pipelined_replies[] = {
    "220 mx.example ESMTP\r\n",
    "250-mx.example\r\n250-PIPELINING\r\n250-CHUNKING\r\n250-SIZE 100000\r\n250 8BITMIME\r\n",
    "250 ok\r\n250 a\r\n550 b no\r\n354 go\r\n",
    "250 queued 1\r\n250 ok\r\n250 c\r\n250 chunk\r\n250 queued 2\r\n",
    "250 reset\r\n", "250 noop\r\n", "221 bye\r\n",
};

static void pipelined(run *r)
{
    r->replies = pipelined_replies;
    r->nreplies = 7;
    smtp_engine_set_trace(&r->e, 1);
    CALL(r, smtp_engine_hello(&r->e, "client.example", 0), "hello");
    PUMP(r, SMTP_EV_DONE);
    CALL(r, smtp_engine_mail(&r->e, "from@example.org", 20, NULL), "mail");
    CALL(r, smtp_engine_rcpt(&r->e, "a@example.org", NULL), "rcpt");
    CALL(r, smtp_engine_rcpt(&r->e, "b@example.org", "NOTIFY=NEVER"), "rcpt");
    CALL(r, smtp_engine_data(&r->e), "data");
    PUMP(r, SMTP_EV_NEED_BODY);
    CALL(r, smtp_engine_body(&r->e, "Subject: x\n\n.hi\n", 16), "body");
    {
        /* Enough lines for the output buffer to grow several times. */
        char lines[4000];
        size_t i;
        for (i = 0; i < sizeof lines; i++)
            lines[i] = (i % 80 == 79) ? '\n' : (char)('a' + i % 26);
        CALL(r, smtp_engine_body(&r->e, lines, sizeof lines), "body");
    }
    CALL(r, smtp_engine_body_end(&r->e), "body_end");
    if (!smtp_engine_can_chain(&r->e)) {
        broke(r, "cannot chain");
        return;
    }
    CALL(r, smtp_engine_mail(&r->e, "from@example.org", 0, NULL), "chained mail");
    CALL(r, smtp_engine_rcpt(&r->e, "c@example.org", NULL), "rcpt");
    CALL(r, smtp_engine_bdat(&r->e, "line\nmore", 9, 0), "bdat");
    CALL(r, smtp_engine_bdat(&r->e, "\n", 1, 1), "bdat last");
    PUMP(r, SMTP_EV_DONE);
    PUMP(r, SMTP_EV_DONE);
    CALL(r, smtp_engine_rset(&r->e), "rset");
    PUMP(r, SMTP_EV_DONE);
    CALL(r, smtp_engine_noop(&r->e), "noop");
    PUMP(r, SMTP_EV_DONE);
    CALL(r, smtp_engine_quit(&r->e), "quit");
    PUMP(r, SMTP_EV_DONE);
}

/* Sequential: EHLO refused, HELO, STARTTLS, EHLO again, AUTH with a
 * challenge, an LMTP-free DATA transaction refused at the envelope. */
static const char *const sequential_replies[] = {
    "220 mx.example ESMTP\r\n", "502 no ehlo\r\n", "250 mx.example\r\n",
    "250-mx.example\r\n250-STARTTLS\r\n250 AUTH LOGIN\r\n", "220 go ahead\r\n",
    "250-mx.example\r\n250 AUTH LOGIN\r\n", "334 VXNlcm5hbWU6\r\n", "235 ok\r\n",
    "550 sender no\r\n", "250 a\r\n", "354 go\r\n", "250 dot\r\n",
};

static void sequential(run *r)
{
    r->replies = sequential_replies;
    r->nreplies = 12;
    smtp_engine_set_pipelining(&r->e, 0);
    CALL(r, smtp_engine_hello(&r->e, "client.example", 0), "hello");
    PUMP(r, SMTP_EV_DONE);
    CALL(r, smtp_engine_hello(&r->e, "client.example", 0), "hello again");
    PUMP(r, SMTP_EV_DONE);
    CALL(r, smtp_engine_starttls(&r->e), "starttls");
    PUMP(r, SMTP_EV_STARTTLS);
    CALL(r, smtp_engine_tls_done(&r->e), "tls_done");
    CALL(r, smtp_engine_hello(&r->e, "client.example", 0), "hello after tls");
    PUMP(r, SMTP_EV_DONE);
    CALL(r, smtp_engine_auth(&r->e, "LOGIN", NULL), "auth");
    PUMP(r, SMTP_EV_CHALLENGE);
    CALL(r, smtp_engine_auth_response(&r->e, "dXNlcg=="), "auth_response");
    PUMP(r, SMTP_EV_DONE);
    CALL(r, smtp_engine_mail(&r->e, "from@example.org", 0, NULL), "mail");
    CALL(r, smtp_engine_rcpt(&r->e, "a@example.org", NULL), "rcpt");
    CALL(r, smtp_engine_data(&r->e), "data");
    PUMP(r, SMTP_EV_FAILED);
}

/* A pooled connection: restore, then LMTP over BDAT. */
static const char *const restored_replies[] = {
    "250 ok\r\n250 a\r\n250 b\r\n250 a done\r\n452 b full\r\n",
};

static void restored(run *r)
{
    static const char ehlo[] = "mx.example\nPIPELINING\nCHUNKING";
    r->replies = restored_replies;
    r->nreplies = 1;
    CALL(r, smtp_engine_restore(&r->e, ehlo, sizeof ehlo - 1, 1, 1), "restore");
    CALL(r, smtp_engine_mail(&r->e, "from@example.org", 0, NULL), "mail");
    CALL(r, smtp_engine_rcpt(&r->e, "a@example.org", NULL), "rcpt");
    CALL(r, smtp_engine_rcpt(&r->e, "b@example.org", NULL), "rcpt");
    CALL(r, smtp_engine_bdat(&r->e, "Hi", 2, 1), "bdat");
    PUMP(r, SMTP_EV_DONE);
}

/* ---- the other objects that allocate ----------------------------------- */

/* A result from a codec, SASL or DKIM call: 0 goes on; NOMEM is noted. */
static int outcome(run *r, int rc, const char *name)
{
    if (rc == 0)
        return 0;
    if (rc == SMTP_E_NOMEM)
        r->nomem = 1;
    else
        broke(r, name);
    return 1;
}

/* Codecs write into the caller's buffer: on failure it is as before. */
static void codecs(run *r)
{
    static const char text[] = "Gr\xc3\xbc\xc3\x9f" "e aus K\xc3\xb6ln, a line of text "
                               "that is long enough to be folded into several words =?x?=";
    smtp_buf out;
    smtp_b64 b64;
    smtp_qp qp;
    size_t before;
    int rc, i;
    for (i = 0; i < 6 && !r->nomem && !r->broken; i++) {
        /* A new buffer each, so each codec's first allocation is tried. */
        smtp_buf_init_mem(&out, 1 << 20, r->mem);
        if (i == 4 && smtp_buf_append(&out, "kept", 4) != 0) {
            r->nomem = 1;
            smtp_buf_free(&out);
            break;
        }
        before = smtp_buf_len(&out);
        switch (i) {
        case 0:
            smtp_b64_init(&b64, 76);
            rc = smtp_b64_update(&b64, text, sizeof text - 1, &out);
            if (rc == 0)
                rc = smtp_b64_finish(&b64, &out);
            break;
        case 1:
            smtp_qp_init(&qp);
            rc = smtp_qp_update(&qp, text, sizeof text - 1, &out);
            if (rc == 0)
                rc = smtp_qp_finish(&qp, &out);
            break;
        case 2: rc = smtp_encode_words(text, sizeof text - 1, 9, &out); break;
        case 3: rc = smtp_b64_decode("SGVsbG8sIHdvcmxkIQ==", 20, &out); break;
        case 4: rc = smtp_qp_decode("caf=C3=A9 =\r\nnext", 18, &out); break;
        default: {
            smtp_frame f;
            smtp_frame_init(&f, SMTP_MAX_LINE);
            rc = smtp_frame_write(&f, text, sizeof text - 1, &out);
            if (rc == 0)
                rc = smtp_frame_finish(&f, &out);
            break;
        }
        }
        if (rc == SMTP_E_NOMEM && smtp_buf_len(&out) != before)
            broke(r, "a codec that failed for memory wrote part of its output");
        outcome(r, rc, "codec");
        smtp_buf_free(&out);
    }
}

/* Each SASL mechanism through its exchange. */
static void sasl_one(run *r, const char *mech)
{
    smtp_sasl *s = NULL;
    smtp_buf ir, resp;
    int rc;
    smtp_buf_init_mem(&ir, 4096, r->mem);
    smtp_buf_init_mem(&resp, 4096, r->mem);
    rc = smtp_sasl_start_mem(&s, mech, NULL, "user=,x", "pencil", &ir, r->mem);
    if (rc) {
        if (s != NULL || smtp_buf_len(&ir) != 0)
            broke(r, "smtp_sasl_start failed but left an exchange or a response");
        outcome(r, rc, mech);
        goto done;
    }
    if (strcmp(mech, "LOGIN") == 0) {
        if (outcome(r, smtp_sasl_step(s, "VXNlcm5hbWU6", 12, &resp), "LOGIN user"))
            goto done;
        rc = smtp_sasl_step(s, "UGFzc3dvcmQ6", 12, &resp);
    } else if (strcmp(mech, "CRAM-MD5") == 0) {
        static const char ch[] = "PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UuZXhhbXBsZS5uZXQ+";
        rc = smtp_sasl_step(s, ch, sizeof ch - 1, &resp);
    } else if (strcmp(mech, "XOAUTH2") == 0) {
        rc = smtp_sasl_step(s, "eyJzdGF0dXMiOiI0MDEifQ==", 24, &resp);
    } else if (strcmp(mech, "SCRAM-SHA-256") == 0) {
        /* server-first for the client's nonce, built with the C library. */
        smtp_buf first, msg, enc;
        smtp_b64 b;
        const char *nonce;
        smtp_buf_init(&first, 4096);
        smtp_buf_init(&msg, 4096);
        smtp_buf_init(&enc, 4096);
        smtp_b64_decode(smtp_buf_ptr(&ir), smtp_buf_len(&ir), &first);
        smtp_buf_append(&first, "", 1);
        nonce = strstr(smtp_buf_ptr(&first), ",r=");
        smtp_buf_append_str(&msg, "r=");
        smtp_buf_append_str(&msg, nonce ? nonce + 3 : "x");
        smtp_buf_append_str(&msg, "srv,s=c2FsdHNhbHQ=,i=4096");
        smtp_b64_init(&b, 0);
        smtp_b64_update(&b, smtp_buf_ptr(&msg), smtp_buf_len(&msg), &enc);
        smtp_b64_finish(&b, &enc);
        rc = smtp_sasl_step(s, smtp_buf_ptr(&enc), smtp_buf_len(&enc), &resp);
        smtp_buf_free(&first);
        smtp_buf_free(&msg);
        smtp_buf_free(&enc);
        if (rc == 0) { /* an unproven server is refused */
            rc = smtp_sasl_finish(s, "dj1ubw==", 8);
            rc = rc == SMTP_E_PROTOCOL ? 0 : rc == SMTP_E_NOMEM ? rc : SMTP_E_STATE;
        }
    } else {
        rc = smtp_sasl_finish(s, "", 0);
    }
    outcome(r, rc, mech);
done:
    smtp_sasl_free(s);
    smtp_buf_free(&ir);
    smtp_buf_free(&resp);
}

static void sasl(run *r)
{
    static const char *const mechs[] = {"PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2",
                                        "SCRAM-SHA-256"};
    size_t i;
    for (i = 0; i < sizeof mechs / sizeof mechs[0] && !r->nomem && !r->broken; i++)
        sasl_one(r, mechs[i]);
}

/* A DKIM body hash and a signature with the RFC 8463 Ed25519 key. */
static void dkim(run *r)
{
    static const char pem[] = "-----BEGIN PRIVATE KEY-----\n"
                              "MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n"
                              "-----END PRIVATE KEY-----\n";
    static const char message[] = "From: a@example.org\r\nSubject: hi\r\n\r\nbody  \r\n\r\n";
    smtp_dkim_body *d = NULL;
    smtp_dkim_key *key = NULL;
    smtp_buf sig;
    unsigned char hash[SMTP_DKIM_HASH_LEN];
    const char *h, *msg = NULL;
    size_t hlen;
    smtp_buf_init_mem(&sig, 4096, r->mem);
    if (outcome(r, smtp_dkim_body_new_mem(&d, 1, 65536, r->mem), "dkim body"))
        goto done;
    if (outcome(r, smtp_dkim_body_update(d, message, sizeof message - 1), "dkim update") ||
        outcome(r, smtp_dkim_body_finish(d, &h, &hlen, hash), "dkim finish"))
        goto done;
    if (outcome(r, smtp_dkim_key_new_mem(&key, SMTP_DKIM_ED25519_SHA256, pem, sizeof pem - 1,
                                         &msg, r->mem), "dkim key"))
        goto done;
    outcome(r, smtp_dkim_sign(key, h, hlen, &sig), "dkim sign");
done:
    smtp_dkim_body_free(d);
    smtp_dkim_key_free(key);
    smtp_buf_free(&sig);
}

typedef struct scenario {
    const char *name;
    void (*play)(run *r);
} scenario;

/* Plays s with the Nth allocation failing (0: none); returns the run's
 * allocation count, or -1 when a promise was broken or memory leaked. */
static long play(const scenario *s, long n, int *nomem, char *why, size_t whylen)
{
    failmem f;
    smtp_mem mem;
    run *r = calloc(1, sizeof *r);
    long count;
    int ok;
    memset(&f, 0, sizeof f);
    f.fail_at = n;
    mem.malloc = fm_malloc;
    mem.realloc = fm_realloc;
    mem.free = fm_free;
    mem.ud = &f;
    smtp_engine_init_mem(&r->e, NULL, &mem);
    r->mem = &mem;
    s->play(r);
    /* Whatever happened, the engine can still be closed and freed. */
    smtp_engine_close(&r->e);
    smtp_engine_free(&r->e);
    ok = !r->broken && f.live == 0;
    if (!ok)
        snprintf(why, whylen, "%s", r->broken ? r->why : "memory left allocated");
    *nomem = r->nomem;
    count = f.count;
    free(r);
    return ok ? count : -1;
}

int main(void)
{
    static const scenario scenarios[] = {
        {"pipelined DATA, chained BDAT, RSET, NOOP, QUIT", pipelined},
        {"HELO fallback, STARTTLS, AUTH challenge, refused sender", sequential},
        {"restored connection, LMTP over BDAT", restored},
        {"codecs: base64, quoted-printable, encoded words, framing", codecs},
        {"SASL: PLAIN, LOGIN, CRAM-MD5, XOAUTH2, SCRAM-SHA-256", sasl},
        {"DKIM: body hash, Ed25519 key and signature", dkim},
    };
    long failed_total = 0, seen_total = 0;
    size_t i;
    for (i = 0; i < sizeof scenarios / sizeof scenarios[0]; i++) {
        const scenario *s = &scenarios[i];
        char why[160] = "", label[256];
        int nomem;
        long total = play(s, 0, &nomem, why, sizeof why), n, bad = 0, seen = 0;
        CHECK(total > 0 && !nomem, s->name);
        for (n = 1; n <= total; n++) {
            char w[160];
            if (play(s, n, &nomem, w, sizeof w) < 0) {
                if (!bad)
                    printf("#   allocation %ld of %ld: %s\n", n, total, w);
                bad++;
            }
            if (nomem)
                seen++;
        }
        snprintf(label, sizeof label,
                 "%s: each of %ld allocations failed in turn, %ld of them reported as "
                 "SMTP_E_NOMEM; every promise kept, nothing leaked",
                 s->name, total, seen);
        CHECK(bad == 0, label);
        failed_total += total;
        seen_total += seen;
    }
    printf("# failmalloc: %ld allocations failed one at a time, %ld reported SMTP_E_NOMEM\n",
           failed_total, seen_total);
    return check_done();
}
