/* Tests for smtp_engine, driven without sockets: a scripted server feeds its
 * replies whenever the engine asks for input, and every byte the engine
 * writes and every event it returns go into one log, compared exactly.
 * Each script is also replayed with every reply cut at every offset. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "smtp_engine.h"
#include "smtp_error.h"

#define LOG_MAX 8192
#define MAX_CHUNKS 512

typedef struct chunk {
    const char *p;
    size_t n;
} chunk;

typedef struct convo {
    smtp_engine e;
    chunk chunks[MAX_CHUNKS];
    size_t nchunks, fed;
    char log[LOG_MAX];
    size_t log_len;
} convo;

typedef void (*client_fn)(convo *c);

static void note(convo *c, const char *s, size_t n)
{
    if (c->log_len + 2 >= LOG_MAX)
        return;
    if (c->log_len + n + 2 > LOG_MAX)
        n = LOG_MAX - c->log_len - 2;
    memcpy(c->log + c->log_len, s, n);
    c->log_len += n;
    c->log[c->log_len++] = '|';
    c->log[c->log_len] = '\0';
}

static void note_str(convo *c, const char *s)
{
    note(c, s, strlen(s));
}

static const char *kind_name(smtp_event_kind k)
{
    switch (k) {
    case SMTP_EV_NEED_INPUT: return "need_input";
    case SMTP_EV_REPLY: return "reply";
    case SMTP_EV_NEED_BODY: return "need_body";
    case SMTP_EV_STARTTLS: return "starttls";
    case SMTP_EV_DONE: return "done";
    case SMTP_EV_FAILED: return "failed";
    case SMTP_EV_IDLE: return "idle";
    default: return "other";
    }
}

static const char *fail_name(smtp_fail f)
{
    switch (f) {
    case SMTP_FAIL_NONE: return "none";
    case SMTP_FAIL_GREETING: return "greeting";
    case SMTP_FAIL_HELLO: return "hello";
    case SMTP_FAIL_SENDER: return "sender";
    case SMTP_FAIL_RECIPIENTS: return "recipients";
    case SMTP_FAIL_DATA: return "data";
    case SMTP_FAIL_CLOSING: return "closing";
    case SMTP_FAIL_PROTOCOL: return "protocol";
    default: return "other";
    }
}

/* "> bytes" for whatever the engine wrote. */
static void flush(convo *c)
{
    size_t n;
    const char *p = smtp_engine_output(&c->e, &n);
    if (n > 0) {
        char line[LOG_MAX];
        size_t len = n + 2 < sizeof line ? n : sizeof line - 3;
        line[0] = '>';
        line[1] = ' ';
        memcpy(line + 2, p, len);
        note(c, line, len + 2);
        smtp_engine_consumed(&c->e, n);
    }
}

static void note_event(convo *c, const smtp_event *ev)
{
    char line[1024];
    int n;
    if (ev->kind == SMTP_EV_NEED_BODY || ev->kind == SMTP_EV_IDLE) {
        note_str(c, kind_name(ev->kind));
        return;
    }
    n = snprintf(line, sizeof line, "%s %s", kind_name(ev->kind), smtp_cmd_name(ev->cmd));
    if (ev->kind == SMTP_EV_REPLY && ev->cmd == SMTP_CMD_RCPT)
        n += snprintf(line + n, sizeof line - (size_t)n, " #%d", ev->index);
    if (ev->reply.code)
        n += snprintf(line + n, sizeof line - (size_t)n, " %d '%.*s'", ev->reply.code,
                      (int)ev->reply.text_len, ev->reply.text);
    if (ev->kind == SMTP_EV_FAILED)
        n += snprintf(line + n, sizeof line - (size_t)n, " fail=%s", fail_name(ev->fail));
    if (ev->error)
        n += snprintf(line + n, sizeof line - (size_t)n, " error=%d", ev->error);
    note(c, line, (size_t)n);
}

/* Runs until an event other than a reply; returns its kind. */
static smtp_event_kind run(convo *c)
{
    for (;;) {
        smtp_event ev;
        size_t pending;
        flush(c);
        smtp_engine_next(&c->e, &ev);
        if (ev.kind == SMTP_EV_NEED_INPUT) {
            smtp_engine_output(&c->e, &pending);
            if (pending > 0)
                continue;
            if (c->fed == c->nchunks) {
                note_str(c, "need_input");
                return ev.kind;
            }
            if (smtp_engine_feed(&c->e, c->chunks[c->fed].p, c->chunks[c->fed].n) != 0)
                note_str(c, "feed refused");
            c->fed++;
            continue;
        }
        note_event(c, &ev);
        if (ev.kind != SMTP_EV_REPLY)
            return ev.kind;
    }
}

/* Plays client against replies, the reply numbered split_reply cut after
 * split_at bytes (split_reply < 0: none; split_at == 0: byte by byte). The
 * log goes to out. */
static void play(const char *const *replies, size_t nreplies, client_fn client, int split_reply,
                 size_t split_at, char *out)
{
    convo *c = calloc(1, sizeof *c);
    size_t i;
    smtp_engine_init(&c->e, NULL);
    for (i = 0; i < nreplies; i++) {
        size_t n = strlen(replies[i]), j;
        if ((int)i != split_reply) {
            c->chunks[c->nchunks].p = replies[i];
            c->chunks[c->nchunks++].n = n;
        } else if (split_at == 0) {
            for (j = 0; j < n && c->nchunks < MAX_CHUNKS; j++) {
                c->chunks[c->nchunks].p = replies[i] + j;
                c->chunks[c->nchunks++].n = 1;
            }
        } else {
            c->chunks[c->nchunks].p = replies[i];
            c->chunks[c->nchunks++].n = split_at;
            c->chunks[c->nchunks].p = replies[i] + split_at;
            c->chunks[c->nchunks++].n = n - split_at;
        }
    }
    client(c);
    memcpy(out, c->log, c->log_len + 1);
    smtp_engine_free(&c->e);
    free(c);
}

/* The log of the whole script, after checking that every cut of every
 * reply, and byte-by-byte feeding, give the same log. */
static void play_every_split(const char *const *replies, size_t nreplies, client_fn client,
                             char *out, const char *name)
{
    char *log = malloc(LOG_MAX);
    size_t i, at;
    int same = 1;
    char label[128];

    play(replies, nreplies, client, -1, 0, out);
    for (i = 0; i < nreplies; i++) {
        size_t n = strlen(replies[i]);
        for (at = 1; at < n; at++) {
            play(replies, nreplies, client, (int)i, at, log);
            if (strcmp(log, out) != 0)
                same = 0;
        }
        play(replies, nreplies, client, (int)i, 0, log);
        if (strcmp(log, out) != 0)
            same = 0;
    }
    snprintf(label, sizeof label, "%s: the same at every split", name);
    CHECK(same, label);
    free(log);
}

static void check_log(const char *got, const char *want, const char *name)
{
    CHECK(strcmp(got, want) == 0, name);
    if (strcmp(got, want) != 0)
        printf("#   got:  %s\n#   want: %s\n", got, want);
}

/* ---- scripts ---------------------------------------------------------- */

#define GREETING "220 mx.example ESMTP\r\n"
#define EHLO_PIPELINING "250-mx.example\r\n250-PIPELINING\r\n250 SIZE 1000\r\n"
#define EHLO_SEQUENTIAL "250-mx.example\r\n250 8BITMIME\r\n"
#define HELLO_PIPELINING_LOG                                                                  \
    "reply greeting 220 'mx.example ESMTP'|> EHLO client.example\r\n|"                        \
    "reply ehlo 250 'mx.example\nPIPELINING\nSIZE 1000'|"                                     \
    "done ehlo 250 'mx.example\nPIPELINING\nSIZE 1000'|"
#define HELLO_SEQUENTIAL_LOG                                                                  \
    "reply greeting 220 'mx.example ESMTP'|> EHLO client.example\r\n|"                        \
    "reply ehlo 250 'mx.example\n8BITMIME'|done ehlo 250 'mx.example\n8BITMIME'|"

static void hello(convo *c)
{
    if (smtp_engine_hello(&c->e, "client.example", 0) != 0)
        note_str(c, "hello refused");
    run(c);
}

/* hello, MAIL, RCPT to a and b, DATA, and the body when asked for. */
static void send_to_two(convo *c)
{
    hello(c);
    if (smtp_engine_mail(&c->e, "from@example.org", 12, NULL) != 0 ||
        smtp_engine_rcpt(&c->e, "a@example.org", NULL) != 0 ||
        smtp_engine_rcpt(&c->e, "b@example.org", NULL) != 0 || smtp_engine_data(&c->e) != 0)
        note_str(c, "envelope refused");
    if (run(c) == SMTP_EV_NEED_BODY) {
        if (smtp_engine_body(&c->e, "Hi\n.\nbye", 8) != 0 || smtp_engine_body_end(&c->e) != 0)
            note_str(c, "body refused");
        run(c);
    }
}

static void send_to_two_sequentially(convo *c)
{
    smtp_engine_set_pipelining(&c->e, 0);
    send_to_two(c);
}

static void test_pipelined_send(void)
{
    static const char *const replies[] = {
        GREETING, EHLO_PIPELINING, "250 ok\r\n250 a ok\r\n250 b ok\r\n354 go\r\n",
        "250 2.0.0 queued\r\n",
    };
    char log[LOG_MAX];
    play_every_split(replies, 4, send_to_two, log, "pipelined send");
    check_log(log,
              HELLO_PIPELINING_LOG
              "> MAIL FROM:<from@example.org> SIZE=12\r\nRCPT TO:<a@example.org>\r\n"
              "RCPT TO:<b@example.org>\r\nDATA\r\n|"
              "reply mail 250 'ok'|reply rcpt #0 250 'a ok'|reply rcpt #1 250 'b ok'|"
              "reply data 354 'go'|need_body|> Hi\r\n..\r\nbye\r\n.\r\n|"
              "reply dot 250 '2.0.0 queued'|done dot 250 '2.0.0 queued'|",
              "pipelined send: one batch for the envelope, exact body");
}

static void test_sequential_send(void)
{
    static const char *const replies[] = {
        GREETING, EHLO_SEQUENTIAL, "250 ok\r\n", "250 a ok\r\n", "250 b ok\r\n", "354 go\r\n",
        "250 queued\r\n",
    };
    char log[LOG_MAX];
    play_every_split(replies, 7, send_to_two, log, "sequential send");
    check_log(log,
              HELLO_SEQUENTIAL_LOG
              "> MAIL FROM:<from@example.org>\r\n|reply mail 250 'ok'|"
              "> RCPT TO:<a@example.org>\r\n|reply rcpt #0 250 'a ok'|"
              "> RCPT TO:<b@example.org>\r\n|reply rcpt #1 250 'b ok'|"
              "> DATA\r\n|reply data 354 'go'|need_body|> Hi\r\n..\r\nbye\r\n.\r\n|"
              "reply dot 250 'queued'|done dot 250 'queued'|",
              "sequential send: one command at a time");
}

static void test_one_recipient_refused(void)
{
    static const char *const replies[] = {
        GREETING, EHLO_PIPELINING, "250 ok\r\n550 5.1.1 no such user\r\n250 b ok\r\n354 go\r\n",
        "250 queued\r\n",
    };
    char log[LOG_MAX];
    play_every_split(replies, 4, send_to_two, log, "one recipient refused");
    check_log(log,
              HELLO_PIPELINING_LOG
              "> MAIL FROM:<from@example.org> SIZE=12\r\nRCPT TO:<a@example.org>\r\n"
              "RCPT TO:<b@example.org>\r\nDATA\r\n|"
              "reply mail 250 'ok'|reply rcpt #0 550 '5.1.1 no such user'|"
              "reply rcpt #1 250 'b ok'|reply data 354 'go'|need_body|"
              "> Hi\r\n..\r\nbye\r\n.\r\n|reply dot 250 'queued'|"
              "done dot 250 'queued'|",
              "one recipient refused: the message still goes");
}

static void test_all_recipients_refused(void)
{
    static const char *const pipelined[] = {
        GREETING, EHLO_PIPELINING, "250 ok\r\n550 no a\r\n550 no b\r\n554 no recipients\r\n",
    };
    static const char *const sequential[] = {
        GREETING, EHLO_SEQUENTIAL, "250 ok\r\n", "550 no a\r\n", "550 no b\r\n",
    };
    char log[LOG_MAX];
    char want[LOG_MAX];

    play_every_split(pipelined, 3, send_to_two, log, "all refused, pipelined");
    check_log(log,
              HELLO_PIPELINING_LOG
              "> MAIL FROM:<from@example.org> SIZE=12\r\nRCPT TO:<a@example.org>\r\n"
              "RCPT TO:<b@example.org>\r\nDATA\r\n|"
              "reply mail 250 'ok'|reply rcpt #0 550 'no a'|reply rcpt #1 550 'no b'|"
              "reply data 554 'no recipients'|failed rcpt 550 'no b' fail=recipients|",
              "all refused, pipelined: DATA's reply drained, no body, fail recipients");

    play_every_split(sequential, 5, send_to_two_sequentially, log, "all refused, sequential");
    snprintf(want, sizeof want, "%s",
             HELLO_SEQUENTIAL_LOG
             "> MAIL FROM:<from@example.org>\r\n|reply mail 250 'ok'|"
             "> RCPT TO:<a@example.org>\r\n|reply rcpt #0 550 'no a'|"
             "> RCPT TO:<b@example.org>\r\n|reply rcpt #1 550 'no b'|"
             "failed rcpt 550 'no b' fail=recipients|");
    check_log(log, want, "all refused, sequential: DATA never sent");
}

static void test_argument_errors(void)
{
    static const char *const bad[] = {
        "a\r\nRCPT TO:<x@example.org>", "a\rb", "a\nb", "a\tb", "a\177b", "a<b", "a>b",
    };
    smtp_engine e;
    size_t i, n;
    int ok = 1;

    smtp_engine_init(&e, NULL);
    CHECK(smtp_engine_hello(&e, "bad name", 0) == SMTP_E_ARGUMENT, "EHLO name with a space");
    CHECK(smtp_engine_hello(&e, "bad\r\nname", 0) == SMTP_E_ARGUMENT, "EHLO name with CRLF");
    CHECK(smtp_engine_hello(&e, "", 0) == SMTP_E_ARGUMENT, "empty EHLO name");
    smtp_engine_output(&e, &n);
    CHECK(n == 0 && smtp_engine_waiting_for(&e) == SMTP_CMD_NONE,
          "refused hellos change nothing");

    /* Bring the engine to a successful EHLO, then try bad envelopes. */
    smtp_engine_hello(&e, "client.example", 0);
    smtp_engine_feed(&e, GREETING, strlen(GREETING));
    {
        smtp_event ev;
        smtp_engine_next(&e, &ev);
        smtp_engine_next(&e, &ev);
        smtp_engine_output(&e, &n);
        smtp_engine_consumed(&e, n);
        smtp_engine_feed(&e, EHLO_PIPELINING, strlen(EHLO_PIPELINING));
        smtp_engine_next(&e, &ev);
        smtp_engine_next(&e, &ev);
        CHECK(ev.kind == SMTP_EV_DONE, "hello done");
    }
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (smtp_engine_mail(&e, bad[i], 0, NULL) != SMTP_E_ARGUMENT)
            ok = 0;
        smtp_engine_output(&e, &n);
        if (n != 0)
            ok = 0;
    }
    CHECK(ok, "bad senders refused, nothing written");
    CHECK(smtp_engine_mail(&e, "ok@example.org", 0, "X=1\r\nRSET") == SMTP_E_ARGUMENT,
          "MAIL parameters with CRLF refused");
    CHECK(smtp_engine_mail(&e, "ok@example.org", 1001, NULL) == SMTP_E_SIZE,
          "a message over SIZE refused");
    smtp_engine_output(&e, &n);
    CHECK(n == 0, "nothing written for refused MAILs");
    CHECK(smtp_engine_mail(&e, "ok@example.org", 0, NULL) == 0, "a good MAIL");
    ok = 1;
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t before, after;
        smtp_engine_output(&e, &before);
        if (smtp_engine_rcpt(&e, bad[i], NULL) != SMTP_E_ARGUMENT)
            ok = 0;
        smtp_engine_output(&e, &after);
        if (after != before)
            ok = 0;
    }
    CHECK(ok, "bad recipients refused, nothing more written");
    CHECK(smtp_engine_rcpt(&e, "", NULL) == SMTP_E_ARGUMENT, "an empty recipient refused");
    smtp_engine_free(&e);
}

static void test_reply_before_command(void)
{
    static const char both[] = GREETING "250 ok\r\n";
    smtp_engine e;
    smtp_event ev;
    size_t n;

    smtp_engine_init(&e, NULL);
    smtp_engine_hello(&e, "client.example", 0);
    smtp_engine_feed(&e, both, sizeof both - 1);
    smtp_engine_next(&e, &ev);
    CHECK(ev.kind == SMTP_EV_REPLY && ev.cmd == SMTP_CMD_GREETING, "the greeting is read");
    smtp_engine_next(&e, &ev);
    CHECK(ev.kind == SMTP_EV_FAILED && ev.fail == SMTP_FAIL_PROTOCOL &&
              ev.error == SMTP_E_PROTOCOL && ev.reply.code == 0,
          "a reply ahead of EHLO is a protocol error");
    smtp_engine_output(&e, &n);
    CHECK(n == 0 && smtp_engine_dead(&e), "EHLO never sent, the engine is dead");
    smtp_engine_free(&e);
}

static void test_limits(void)
{
    smtp_engine e;
    smtp_limits l;
    smtp_limits_default(&l);
    l.max_line = 100;
    CHECK(smtp_engine_init(&e, &l) == SMTP_E_ARGUMENT, "max_line under 512 refused");
    smtp_engine_free(&e);
    smtp_limits_default(&l);
    l.max_line = 512;
    CHECK(smtp_engine_init(&e, &l) == 0, "max_line 512 accepted");
    {
        char line[600];
        smtp_event ev;
        memset(line, 'x', sizeof line);
        smtp_engine_hello(&e, "client.example", 0);
        smtp_engine_feed(&e, "220", 3);
        smtp_engine_feed(&e, line, sizeof line);
        smtp_engine_next(&e, &ev);
        CHECK(ev.kind == SMTP_EV_FAILED && ev.fail == SMTP_FAIL_PROTOCOL && ev.error == SMTP_E_LIMIT,
              "an endless greeting line fails with a limit error");
    }
    smtp_engine_free(&e);
}


/* ---- delivery record cases (BDAT, LMTP, AUTH, shifted replies) ---------- */

#define EHLO_CHUNKING "250-mx.example\r\n250-PIPELINING\r\n250 CHUNKING\r\n"

/* LMTP over BDAT: MAIL, two RCPTs, one chunk with LAST. */
static void lmtp_bdat(convo *c)
{
    if (smtp_engine_hello(&c->e, "client.example", 1) != 0)
        note_str(c, "hello refused");
    run(c);
    if (smtp_engine_mail(&c->e, "from@example.org", 0, NULL) != 0 ||
        smtp_engine_rcpt(&c->e, "a@example.org", NULL) != 0 ||
        smtp_engine_rcpt(&c->e, "b@example.org", NULL) != 0 ||
        smtp_engine_bdat(&c->e, "Hi", 2, 1) != 0)
        note_str(c, "transaction refused");
    run(c);
    run(c);
}

static void test_lmtp_bdat_mixed_replies(void)
{
    static const char *const replies[] = {
        GREETING, EHLO_CHUNKING, "250 ok\r\n250 a\r\n250 b\r\n250 a done\r\n452 b full\r\n",
    };
    char log[LOG_MAX];
    play_every_split(replies, 3, lmtp_bdat, log, "LMTP after BDAT LAST");
    CHECK(strstr(log, "reply bdat 452 'b full'|done bdat") != NULL,
          "LMTP after BDAT LAST: one reply per recipient, a 452 among them, then done");
    if (!strstr(log, "reply bdat 452 'b full'|done bdat"))
        printf("#   log: %s\n", log);
}

/* MAIL, RCPT and a blind BDAT LAST, all in one write. */
static void blind_bdat(convo *c)
{
    hello(c);
    if (smtp_engine_mail(&c->e, "from@example.org", 0, NULL) != 0 ||
        smtp_engine_rcpt(&c->e, "a@example.org", NULL) != 0 ||
        smtp_engine_bdat(&c->e, "", 0, 0) != 0 || smtp_engine_bdat(&c->e, "x", 1, 1) != 0)
        note_str(c, "transaction refused");
    run(c);
    run(c);
}

static void test_shifted_reply(void)
{
    static const char *const replies[] = {
        GREETING, EHLO_CHUNKING, "250 ok\r\n250 ok\r\n250 a\r\n250 queued\r\n550 no\r\n",
    };
    char log[LOG_MAX];
    /* Not every split: an extra reply that arrives in a later read than the
     * final reply cannot be told from a late one (the outcome is out). */
    play(replies, 3, blind_bdat, -1, 0, log);
    CHECK(strstr(log, "> MAIL FROM:<from@example.org>\r\nRCPT TO:<a@example.org>\r\n"
                      "BDAT 3 LAST\r\nx\r\n|") != NULL,
          "no BDAT 0 for an empty piece; the last chunk ends with CRLF");
    CHECK(strstr(log, "done bdat") == NULL && strstr(log, "fail=protocol") != NULL,
          "one reply too many: the transaction is never reported done");
    if (strstr(log, "done bdat") != NULL)
        printf("#   log: %s\n", log);
}

/* Greeting, then EHLO offering AUTH LOGIN, each fed once the engine waits. */
static void greet_auth(smtp_engine *e)
{
    static const char *const replies[] = {GREETING, "250-mx.example\r\n250 AUTH LOGIN\r\n"};
    smtp_event ev;
    size_t n;
    int fed = 0, i;
    smtp_engine_init(e, NULL);
    smtp_engine_hello(e, "client.example", 0);
    for (i = 0; i < 20; i++) {
        smtp_engine_output(e, &n);
        smtp_engine_consumed(e, n);
        smtp_engine_next(e, &ev);
        if (ev.kind == SMTP_EV_NEED_INPUT && fed < 2) {
            smtp_engine_feed(e, replies[fed], strlen(replies[fed]));
            fed++;
        } else if (ev.kind != SMTP_EV_REPLY) {
            break;
        }
    }
    smtp_engine_set_insecure_auth(e, 1);
}

static void test_auth_bounded(void)
{
    smtp_engine e;
    smtp_event ev;
    size_t n;
    int challenges = 0, i;

    greet_auth(&e);
    CHECK(smtp_engine_auth(&e, "LOGIN", NULL) == 0, "AUTH LOGIN starts");
    for (i = 0; i < 20; i++) {
        smtp_engine_output(&e, &n);
        smtp_engine_consumed(&e, n);
        smtp_engine_feed(&e, "334 VXNlcm5hbWU6\r\n", 18);
        do
            smtp_engine_next(&e, &ev);
        while (ev.kind == SMTP_EV_REPLY);
        if (ev.kind != SMTP_EV_CHALLENGE)
            break;
        challenges++;
        smtp_engine_auth_response(&e, "eA==");
    }
    CHECK(challenges == SMTP_AUTH_MAX_CHALLENGES && ev.kind == SMTP_EV_FAILED &&
              ev.fail == SMTP_FAIL_PROTOCOL,
          "a server answering 334 for ever gets a protocol error after 5 challenges");
    smtp_engine_free(&e);

    greet_auth(&e);
    smtp_engine_auth(&e, "LOGIN", NULL);
    smtp_engine_output(&e, &n);
    smtp_engine_consumed(&e, n);
    smtp_engine_feed(&e, "334 VXNlcm5hbWU6\r\n", 18);
    do
        smtp_engine_next(&e, &ev);
    while (ev.kind == SMTP_EV_REPLY);
    CHECK(ev.kind == SMTP_EV_CHALLENGE, "the first challenge");
    smtp_engine_auth_response(&e, "*");
    smtp_engine_output(&e, &n);
    smtp_engine_consumed(&e, n);
    smtp_engine_feed(&e, "334 UGFzc3dvcmQ6\r\n", 18);
    do
        smtp_engine_next(&e, &ev);
    while (ev.kind == SMTP_EV_REPLY);
    CHECK(ev.kind == SMTP_EV_FAILED && ev.fail == SMTP_FAIL_PROTOCOL,
          "a challenge after the client cancelled with '*' is a protocol error");
    smtp_engine_free(&e);
}

/* The queries the binding uses instead of the engine's fields. */
static void test_queries(void)
{
    static const char *const replies[] = {GREETING, EHLO_CHUNKING};
    smtp_engine e;
    smtp_event ev;
    size_t n;
    int i, fed = 0;
    char line[1200];

    smtp_engine_init(&e, NULL);
    CHECK(smtp_engine_last_txn(&e) == 0 && smtp_engine_written(&e) == 0 &&
              smtp_engine_sent(&e) == 0 && smtp_engine_chunk_len(&e) == 0,
          "a new engine: no transaction, nothing written or sent");
    smtp_engine_hello(&e, "client.example", 0);
    for (i = 0; i < 20; i++) {
        smtp_engine_output(&e, &n);
        smtp_engine_consumed(&e, n);
        smtp_engine_next(&e, &ev);
        if (ev.kind == SMTP_EV_NEED_INPUT && fed < 2) {
            smtp_engine_feed(&e, replies[fed], strlen(replies[fed]));
            fed++;
        } else if (ev.kind != SMTP_EV_REPLY) {
            break;
        }
    }
    CHECK(smtp_engine_written(&e) == 21 && smtp_engine_sent(&e) == 21,
          "written and sent count the EHLO line");
    CHECK(smtp_engine_mail(&e, "a@example.org", 0, NULL) == 0 && smtp_engine_last_txn(&e) == 1,
          "the first transaction has id 1");
    smtp_engine_rcpt(&e, "b@example.org", NULL);
    CHECK(smtp_engine_bdat(&e, "ab\n", 3, 0) == 0 && smtp_engine_chunk_len(&e) == 4,
          "chunk_len: the framed size of a BDAT chunk");
    memset(line, 'x', sizeof line);
    line[0] = '\n';
    CHECK(smtp_engine_bdat(&e, line, sizeof line, 0) == SMTP_E_LINE &&
              smtp_engine_line_error(&e) == 3,
          "line_error: the number of the long line");
    smtp_engine_free(&e);
}

int main(void)
{
    test_pipelined_send();
    test_sequential_send();
    test_one_recipient_refused();
    test_all_recipients_refused();
    test_argument_errors();
    test_reply_before_command();
    test_limits();
    test_lmtp_bdat_mixed_replies();
    test_shifted_reply();
    test_auth_bounded();
    test_queries();
    return check_done();
}
