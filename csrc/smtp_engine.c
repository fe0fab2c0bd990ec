#include "smtp_engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_error.h"

/* RFC 5321 4.5.3.1: paths are at most 256 octets, command lines 512; with
 * ESMTP parameters lines grow, so we allow more but keep a hard bound. */
#define MAX_ADDRESS 998
#define MAX_PARAMS 2000
#define MAX_HELLO 255

static const char *const cmd_names[SMTP_CMD_COUNT] = {
    "none", "greeting", "ehlo", "helo", "lhlo", "starttls", "auth", "auth",
    "mail", "rcpt", "data", "dot", "bdat", "rset", "noop", "quit",
};

const char *smtp_cmd_name(smtp_cmd c)
{
    return (c >= 0 && c < SMTP_CMD_COUNT) ? cmd_names[c] : "none";
}

void smtp_limits_default(smtp_limits *l)
{
    l->max_line = 4096;
    l->max_lines = 256;
    l->max_output = 4u << 20;
    l->max_commands = 100000;
}

int smtp_engine_init(smtp_engine *e, const smtp_limits *limits)
{
    return smtp_engine_init_mem(e, limits, NULL);
}

int smtp_engine_init_mem(smtp_engine *e, const smtp_limits *limits, const smtp_mem *mem)
{
    memset(e, 0, sizeof *e);
    e->mem = mem;
    if (limits)
        e->limits = *limits;
    else
        smtp_limits_default(&e->limits);
    if (e->limits.max_line < 512 || e->limits.max_lines < 1 || e->limits.max_output < 4096 ||
        e->limits.max_commands < 4)
        return SMTP_E_ARGUMENT;
    e->inflight.limit = e->stage.limit = e->limits.max_commands;
    smtp_reply_init_mem(&e->parser, e->limits.max_line, e->limits.max_lines, mem);
    /* Input never holds more than one partial line plus one read. */
    smtp_buf_init_mem(&e->in, e->limits.max_line + 2 + 65536, mem);
    smtp_buf_init_mem(&e->out, e->limits.max_output, mem);
    smtp_buf_init_mem(&e->staged, (size_t)e->limits.max_commands * (MAX_ADDRESS + MAX_PARAMS + 32),
                      mem);
    smtp_buf_init_mem(&e->caps, e->parser.text.limit, mem);
    smtp_buf_init_mem(&e->saved, e->parser.text.limit, mem);
    smtp_buf_init_mem(&e->scratch, e->limits.max_output, mem);
    smtp_buf_init_mem(&e->trace, 4096, mem);
    {
        int i;
        for (i = 0; i < SMTP_TXN_MAX; i++)
            smtp_buf_init_mem(&e->txns[i].text, e->parser.text.limit, mem);
    }
    smtp_frame_init(&e->frame, SMTP_MAX_LINE);
    e->pipelining = 1;
    return 0;
}

void smtp_engine_free(smtp_engine *e)
{
    smtp_reply_free(&e->parser);
    smtp_buf_free(&e->in);
    smtp_buf_free(&e->out);
    smtp_buf_free(&e->staged);
    smtp_buf_free(&e->caps);
    smtp_buf_free(&e->saved);
    smtp_buf_free(&e->scratch);
    smtp_buf_free(&e->trace);
    {
        int i;
        for (i = 0; i < SMTP_TXN_MAX; i++)
            smtp_buf_free(&e->txns[i].text);
    }
    smtp_mem_free(e->mem, e->inflight.items);
    smtp_mem_free(e->mem, e->stage.items);
    e->inflight.items = e->stage.items = NULL;
}

int smtp_check_arg(const char *s, size_t len, size_t max)
{
    size_t i;
    if (len > max)
        return SMTP_E_ARGUMENT;
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return SMTP_E_ARGUMENT;
    }
    return 0;
}

int smtp_check_address(const char *s)
{
    size_t len = strlen(s);
    if (smtp_check_arg(s, len, MAX_ADDRESS))
        return SMTP_E_ARGUMENT;
    /* The engine adds the brackets; inside them they would end the path. */
    if (memchr(s, '<', len) || memchr(s, '>', len))
        return SMTP_E_ARGUMENT;
    return 0;
}

/* The oldest entry; only valid when count > 0. */
static smtp_cmd_entry *ring_front(const smtp_ring *r)
{
    return &r->items[r->head];
}

/* ---- states ------------------------------------------------------------- */

static const char *const state_names[SMTP_STATE_COUNT] = {
    "connected", "greeted", "ready", "tls_wait", "closed",
};

static const char *const op_names[SMTP_OP_COUNT] = {
    "idle", "hello", "starttls", "auth", "challenge", "transaction", "body", "rset", "noop",
    "quit",
};

const char *smtp_state_name(smtp_state s)
{
    return (s >= 0 && s < SMTP_STATE_COUNT) ? state_names[s] : "?";
}

const char *smtp_op_name(smtp_op op)
{
    return (op >= 0 && op < SMTP_OP_COUNT) ? op_names[op] : "?";
}

typedef struct smtp_edge {
    unsigned char from, to;
    const char *when;
} smtp_edge;

/* Every legal change of the connection's state (scripts/engine-states.lua
 * prints this table; keep one edge a line). */
static const smtp_edge state_edges[] = {
    /* BEGIN state_edges */
    {SMTP_STATE_CONNECTED, SMTP_STATE_GREETED, "greeting received (220, or a 4xx/5xx refusal)"},
    {SMTP_STATE_CONNECTED, SMTP_STATE_READY, "smtp_engine_restore (a pooled connection)"},
    {SMTP_STATE_CONNECTED, SMTP_STATE_CLOSED, "421, QUIT answered, protocol error, close"},
    {SMTP_STATE_GREETED, SMTP_STATE_READY, "250 to EHLO, HELO or LHLO"},
    {SMTP_STATE_GREETED, SMTP_STATE_CLOSED, "421, QUIT answered, protocol error, close"},
    {SMTP_STATE_READY, SMTP_STATE_TLS_WAIT, "220 to STARTTLS"},
    {SMTP_STATE_READY, SMTP_STATE_CLOSED, "421, QUIT answered, protocol error, close"},
    {SMTP_STATE_TLS_WAIT, SMTP_STATE_GREETED, "smtp_engine_tls_done (a new hello is needed)"},
    {SMTP_STATE_TLS_WAIT, SMTP_STATE_CLOSED, "close (the handshake failed)"},
    /* END state_edges */
};

/* Every legal change of the operation. */
static const smtp_edge op_edges[] = {
    /* BEGIN op_edges */
    {SMTP_OP_NONE, SMTP_OP_HELLO, "smtp_engine_hello"},
    {SMTP_OP_NONE, SMTP_OP_STARTTLS, "smtp_engine_starttls"},
    {SMTP_OP_NONE, SMTP_OP_AUTH, "smtp_engine_auth"},
    {SMTP_OP_NONE, SMTP_OP_TRANSACTION, "smtp_engine_mail"},
    {SMTP_OP_NONE, SMTP_OP_RSET, "smtp_engine_rset"},
    {SMTP_OP_NONE, SMTP_OP_NOOP, "smtp_engine_noop"},
    {SMTP_OP_NONE, SMTP_OP_QUIT, "smtp_engine_quit"},
    {SMTP_OP_HELLO, SMTP_OP_NONE, "outcome reported, or the call could not stage"},
    {SMTP_OP_STARTTLS, SMTP_OP_NONE, "outcome reported, or the call could not stage"},
    {SMTP_OP_AUTH, SMTP_OP_CHALLENGE, "334"},
    {SMTP_OP_AUTH, SMTP_OP_NONE, "outcome reported, or the call could not stage"},
    {SMTP_OP_CHALLENGE, SMTP_OP_AUTH, "smtp_engine_auth_response"},
    {SMTP_OP_CHALLENGE, SMTP_OP_NONE, "failure reported (input during the challenge)"},
    {SMTP_OP_TRANSACTION, SMTP_OP_BODY, "354 to DATA"},
    {SMTP_OP_TRANSACTION, SMTP_OP_NONE, "all transactions reported, or mail could not stage"},
    {SMTP_OP_BODY, SMTP_OP_TRANSACTION, "smtp_engine_body_end; 421, protocol error, close"},
    {SMTP_OP_RSET, SMTP_OP_NONE, "outcome reported, or the call could not stage"},
    {SMTP_OP_NOOP, SMTP_OP_NONE, "outcome reported, or the call could not stage"},
    {SMTP_OP_QUIT, SMTP_OP_NONE, "outcome reported, or the call could not stage"},
    /* END op_edges */
};

static int edge_legal(const smtp_edge *t, size_t n, int from, int to)
{
    size_t i;
    for (i = 0; i < n; i++) {
        if (t[i].from == from && t[i].to == to)
            return 1;
    }
    return 0;
}

/* The only place the state or the operation changes. A move missing from
 * the tables is a bug of this file: builds with SMTP_ENGINE_DEBUG (the C
 * unit tests) abort on it. */
static void transition(smtp_engine *e, smtp_state state, smtp_op op)
{
    if (state == e->state && op == e->op)
        return;
    if ((state != e->state &&
         !edge_legal(state_edges, sizeof state_edges / sizeof state_edges[0], e->state, state)) ||
        (op != e->op && !edge_legal(op_edges, sizeof op_edges / sizeof op_edges[0], e->op, op))) {
#ifdef SMTP_ENGINE_DEBUG
        fprintf(stderr, "smtp_engine: illegal transition %s/%s -> %s/%s\n",
                smtp_state_name(e->state), smtp_op_name(e->op), smtp_state_name(state),
                smtp_op_name(op));
        abort();
#endif
    }
    if (e->tracing) {
        char line[80];
        int n = snprintf(line, sizeof line, "%s/%s -> %s/%s\n", smtp_state_name(e->state),
                         smtp_op_name(e->op), smtp_state_name(state), smtp_op_name(op));
        if (n > 0 && (size_t)n < sizeof line)
            (void)smtp_buf_append(&e->trace, line, (size_t)n); /* full: dropped */
    }
    e->state = state;
    e->op = op;
}

/* The session fails (or ends): no command can be sent any more. A body
 * being written ends with it. */
static void close_session(smtp_engine *e)
{
    transition(e, SMTP_STATE_CLOSED, e->op == SMTP_OP_BODY ? SMTP_OP_TRANSACTION : e->op);
}

/* A transaction is running, in its envelope or its body. */
static int in_transaction(const smtp_engine *e)
{
    return e->op == SMTP_OP_TRANSACTION || e->op == SMTP_OP_BODY;
}

smtp_state smtp_engine_state(const smtp_engine *e)
{
    return e->state;
}

smtp_op smtp_engine_op(const smtp_engine *e)
{
    return e->op;
}

void smtp_engine_set_trace(smtp_engine *e, int on)
{
    e->tracing = on;
    if (!on)
        smtp_buf_free(&e->trace);
}

const char *smtp_engine_trace(smtp_engine *e, size_t *len)
{
    const char *p = smtp_buf_ptr(&e->trace);
    *len = smtp_buf_len(&e->trace);
    smtp_buf_clear(&e->trace); /* the bytes stay until the next append */
    return p;
}

/* ---- session facts ------------------------------------------------------ */

int smtp_engine_dead(const smtp_engine *e)
{
    return e->state == SMTP_STATE_CLOSED;
}

int smtp_engine_extended(const smtp_engine *e)
{
    return e->extended;
}

unsigned smtp_engine_last_txn(const smtp_engine *e)
{
    return e->txn_next_id;
}

unsigned long long smtp_engine_line_error(const smtp_engine *e)
{
    return e->frame.error_line;
}

size_t smtp_engine_chunk_len(const smtp_engine *e)
{
    return smtp_buf_len(&e->scratch);
}

unsigned long long smtp_engine_written(const smtp_engine *e)
{
    return e->written;
}

unsigned long long smtp_engine_sent(const smtp_engine *e)
{
    return e->sent;
}

smtp_cmd smtp_engine_waiting_for(const smtp_engine *e)
{
    if (e->inflight.count > 0)
        return ring_front(&e->inflight)->cmd;
    if (e->op == SMTP_OP_BODY)
        return SMTP_CMD_DATA;
    return SMTP_CMD_NONE;
}

void smtp_engine_set_pipelining(smtp_engine *e, int on)
{
    e->pipelining = on;
}

int smtp_engine_cap(const smtp_engine *e, int i, const char **kw, size_t *kwlen,
                    const char **params, size_t *plen)
{
    const char *p = smtp_buf_ptr(&e->caps);
    const char *end = p + smtp_buf_len(&e->caps);
    const char *line_end, *sp;

    if (!e->extended || p == end)
        return 0;
    while (i-- > 0) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            return 0;
        p = nl + 1;
    }
    line_end = memchr(p, '\n', (size_t)(end - p));
    if (!line_end)
        line_end = end;
    sp = memchr(p, ' ', (size_t)(line_end - p));
    *kw = p;
    *kwlen = (size_t)((sp ? sp : line_end) - p);
    *params = sp ? sp + 1 : line_end;
    *plen = (size_t)(line_end - *params);
    return 1;
}

static int same_keyword(const char *a, size_t alen, const char *b)
{
    size_t i;
    if (alen != strlen(b))
        return 0;
    for (i = 0; i < alen; i++) {
        char x = a[i], y = b[i];
        if (x >= 'a' && x <= 'z')
            x = (char)(x - 32);
        if (y >= 'a' && y <= 'z')
            y = (char)(y - 32);
        if (x != y)
            return 0;
    }
    return 1;
}

/* One pass over the capability lines (smtp_engine_cap(e, i) starts from the
 * first line for every i): asked for every transaction (SIZE, PIPELINING). */
int smtp_engine_has_cap(const smtp_engine *e, const char *kw, const char **params,
                        size_t *plen)
{
    const char *p = smtp_buf_ptr(&e->caps);
    const char *end = p + smtp_buf_len(&e->caps);

    if (!e->extended)
        return 0;
    while (p < end) {
        const char *line_end = memchr(p, '\n', (size_t)(end - p));
        const char *sp;
        if (!line_end)
            line_end = end;
        sp = memchr(p, ' ', (size_t)(line_end - p));
        if (same_keyword(p, (size_t)((sp ? sp : line_end) - p), kw)) {
            if (params) {
                *params = sp ? sp + 1 : line_end;
                *plen = (size_t)(line_end - *params);
            }
            return 1;
        }
        p = line_end + 1;
    }
    return 0;
}

unsigned long long smtp_engine_max_size(const smtp_engine *e)
{
    const char *p;
    size_t len, i;
    unsigned long long v = 0;
    if (!smtp_engine_has_cap(e, "SIZE", &p, &len))
        return 0;
    for (i = 0; i < len && p[i] >= '0' && p[i] <= '9'; i++) {
        if (v > (~0ULL - 9) / 10)
            return 0; /* absurd: treat as no limit rather than wrap */
        v = v * 10 + (unsigned long long)(p[i] - '0');
    }
    return v;
}

/* ---- in-flight and staged commands -------------------------------------- */

/* Makes room for one more entry: afterwards a push cannot fail. */
static int ring_reserve(smtp_ring *r, const smtp_mem *mem)
{
    if (r->count == r->cap) {
        int cap = r->cap ? r->cap * 2 : 16, i;
        smtp_cmd_entry *items;
        if (r->count >= r->limit)
            return SMTP_E_LIMIT;
        if (cap > r->limit)
            cap = r->limit;
        items = smtp_mem_malloc(mem, (size_t)cap * sizeof *items);
        if (!items)
            return SMTP_E_NOMEM;
        for (i = 0; i < r->count; i++)
            items[i] = r->items[(r->head + i) % r->cap];
        smtp_mem_free(mem, r->items);
        r->items = items;
        r->cap = cap;
        r->head = 0;
    }
    return 0;
}

static int ring_push(smtp_ring *r, const smtp_mem *mem, smtp_cmd cmd, int index, int txn,
                     unsigned long long n)
{
    smtp_cmd_entry *slot;
    int rc = ring_reserve(r, mem);
    if (rc)
        return rc;
    slot = &r->items[(r->head + r->count) % r->cap];
    slot->cmd = cmd;
    slot->index = index;
    slot->txn = txn;
    slot->left = 0;
    slot->n = n;
    r->count++;
    return 0;
}

static smtp_cmd_entry ring_pop(smtp_ring *r)
{
    smtp_cmd_entry head = r->items[r->head];
    r->head = (r->head + 1) % r->cap;
    r->count--;
    return head;
}

static int write_out(smtp_engine *e, const char *p, size_t n)
{
    int rc = smtp_buf_append(&e->out, p, n);
    if (rc == 0)
        e->written += n;
    return rc;
}

static int push_inflight(smtp_engine *e, smtp_cmd cmd, int index, int txn)
{
    return ring_push(&e->inflight, e->mem, cmd, index, txn, e->written);
}

/* RFC 2920 3.1: only these may be followed by more commands before their
 * reply arrives; every other command ends a group. */
static int may_be_followed(smtp_cmd c)
{
    /* The end of data and BDAT chunks end no group either: the next
     * transaction may follow them (RFC 2920 3.1, RFC 3030 4). */
    return c == SMTP_CMD_MAIL || c == SMTP_CMD_RCPT || c == SMTP_CMD_RSET ||
           c == SMTP_CMD_DOT || c == SMTP_CMD_BDAT;
}

static int pipelining_active(const smtp_engine *e)
{
    return e->pipelining && e->extended && smtp_engine_has_cap(e, "PIPELINING", NULL, NULL);
}

static int inflight_all_followable(const smtp_engine *e)
{
    const smtp_ring *r = &e->inflight;
    int i;
    for (i = 0; i < r->count; i++) {
        if (!may_be_followed(r->items[(r->head + i) % r->cap].cmd))
            return 0;
    }
    return 1;
}

static int release_staged(smtp_engine *e)
{
    while (e->stage.count > 0) {
        smtp_cmd_entry *s = ring_front(&e->stage);
        int rc;
        if (e->inflight.count > 0 && !(pipelining_active(e) && inflight_all_followable(e)))
            break;
        /* Room in flight first: a command written is never left staged
         * (written twice), nor sent without its entry (its reply would be
         * taken for the next command's). On error nothing moved. */
        rc = ring_reserve(&e->inflight, e->mem);
        if (rc == 0)
            rc = write_out(e, smtp_buf_ptr(&e->staged), (size_t)s->n);
        if (rc)
            return rc;
        smtp_buf_consume(&e->staged, (size_t)s->n);
        (void)push_inflight(e, s->cmd, s->index, s->txn); /* reserved */
        ring_pop(&e->stage);
    }
    return 0;
}

static void drop_staged(smtp_engine *e)
{
    int i;
    for (i = 0; i < e->stage.count; i++) {
        const smtp_cmd_entry *c = &e->stage.items[(e->stage.head + i) % e->stage.cap];
        if (c->txn >= 0)
            e->txns[c->txn].pending--;
    }
    e->stage.head = e->stage.count = 0;
    smtp_buf_clear(&e->staged);
}

/* Stages "parts[0] parts[1] ... CRLF" as one command; every part has been
 * validated by the caller. Nothing is staged on error. */
static int stage_cmd_data(smtp_engine *e, smtp_cmd cmd, int index, int txn,
                          const char *const *parts, int n, const char *data, size_t len)
{
    size_t before = smtp_buf_len(&e->staged);
    int i, rc = 0;

    if (e->stage.count + e->inflight.count >= e->limits.max_commands)
        return SMTP_E_LIMIT;
    for (i = 0; i < n && rc == 0; i++)
        rc = smtp_buf_append_str(&e->staged, parts[i]);
    if (rc == 0)
        rc = smtp_buf_append(&e->staged, "\r\n", 2);
    if (rc == 0 && len)
        rc = smtp_buf_append(&e->staged, data, len);
    if (rc == 0)
        rc = ring_push(&e->stage, e->mem, cmd, index, txn, smtp_buf_len(&e->staged) - before);
    if (rc) {
        e->staged.end = e->staged.start + before;
        return rc;
    }
    if (txn >= 0)
        e->txns[txn].pending++;
    return 0;
}

static int stage_cmd(smtp_engine *e, smtp_cmd cmd, int index, const char *const *parts, int n)
{
    return stage_cmd_data(e, cmd, index, -1, parts, n, NULL, 0);
}

/* ---- operations --------------------------------------------------------- */

static int op_start(smtp_engine *e, smtp_op op)
{
    if (e->state == SMTP_STATE_CLOSED || e->state == SMTP_STATE_TLS_WAIT ||
        e->op != SMTP_OP_NONE)
        return SMTP_E_STATE;
    transition(e, e->state, op);
    e->op_finished = 0;
    e->op_fail = SMTP_FAIL_NONE;
    e->op_fail_cmd = SMTP_CMD_NONE;
    e->op_error = 0;
    e->saved_code = 0;
    e->saved_enhanced[0] = '\0';
    smtp_buf_clear(&e->saved);
    return 0;
}

/* An operation call whose command is staged: it goes out now if the
 * protocol allows. A failure to release it (no memory, the output full) is
 * not this call's: the command stays staged, whole, and smtp_engine_next
 * releases it or fails the session. So an operation call returns an error
 * only when it staged nothing. */
static int released(smtp_engine *e)
{
    (void)release_staged(e);
    return 0;
}

/* Takes back the newest staged command (the call that staged it failed). */
static void unstage_last(smtp_engine *e)
{
    smtp_ring *r = &e->stage;
    smtp_cmd_entry *c = &r->items[(r->head + r->count - 1) % r->cap];
    if (c->txn >= 0)
        e->txns[c->txn].pending--;
    e->staged.end -= (size_t)c->n;
    r->count--;
}

/* An operation that could not start: back to idle, nothing sent. */
static int op_abort(smtp_engine *e, int rc)
{
    transition(e, e->state, SMTP_OP_NONE);
    return rc;
}

static int stage_hello(smtp_engine *e)
{
    const char *parts[2];
    parts[0] = e->lmtp ? "LHLO " : "EHLO ";
    parts[1] = e->hello_name;
    return stage_cmd(e, e->lmtp ? SMTP_CMD_LHLO : SMTP_CMD_EHLO, 0, parts, 2);
}

int smtp_engine_hello(smtp_engine *e, const char *name, int lmtp)
{
    size_t len = strlen(name);
    int rc;
    if (len == 0 || smtp_check_arg(name, len, MAX_HELLO) || memchr(name, ' ', len))
        return SMTP_E_ARGUMENT;
    rc = op_start(e, SMTP_OP_HELLO);
    if (rc)
        return rc;
    memcpy(e->hello_name, name, len + 1);
    e->lmtp = lmtp;
    if (e->state == SMTP_STATE_CONNECTED && e->inflight.count == 0) {
        rc = push_inflight(e, SMTP_CMD_GREETING, 0, -1);
        if (rc)
            return op_abort(e, rc);
        rc = stage_hello(e);
        if (rc) {
            e->inflight.count = 0; /* the greeting is awaited by the next hello */
            return op_abort(e, rc);
        }
        return released(e);
    }
    rc = stage_hello(e);
    return rc ? op_abort(e, rc) : released(e);
}

int smtp_engine_starttls(smtp_engine *e)
{
    static const char *const parts[1] = {"STARTTLS"};
    int rc;
    if (e->state != SMTP_STATE_READY)
        return SMTP_E_STATE;
    rc = op_start(e, SMTP_OP_STARTTLS);
    if (rc)
        return rc;
    rc = stage_cmd(e, SMTP_CMD_STARTTLS, 0, parts, 1);
    return rc ? op_abort(e, rc) : released(e);
}

int smtp_engine_tls_done(smtp_engine *e)
{
    if (e->state != SMTP_STATE_TLS_WAIT)
        return SMTP_E_STATE;
    transition(e, SMTP_STATE_GREETED, e->op);
    e->secure = 1;
    /* RFC 3207 4.2: whatever came before the handshake is not to be
     * trusted, and the capabilities must be learnt again. */
    smtp_buf_clear(&e->in);
    smtp_buf_clear(&e->caps);
    smtp_reply_reset(&e->parser);
    e->extended = 0;
    return 0;
}

int smtp_engine_restore(smtp_engine *e, const char *ehlo, size_t len, int lmtp, int secure)
{
    const char *nl;
    if (e->state != SMTP_STATE_CONNECTED || e->op != SMTP_OP_NONE || e->inflight.count)
        return SMTP_E_STATE;
    smtp_buf_clear(&e->caps);
    nl = memchr(ehlo, '\n', len);
    if (nl) {
        int rc = smtp_buf_append(&e->caps, nl + 1, len - (size_t)(nl + 1 - ehlo));
        if (rc)
            return rc;
    }
    transition(e, SMTP_STATE_READY, e->op);
    e->extended = 1;
    e->lmtp = lmtp;
    e->secure = secure;
    return 0;
}

void smtp_engine_set_secure(smtp_engine *e, int on)
{
    e->secure = on;
}

void smtp_engine_set_insecure_auth(smtp_engine *e, int on)
{
    e->insecure_auth = on;
}

static int check_auth_token(const char *s, size_t max)
{
    size_t len = strlen(s);
    if (smtp_check_arg(s, len, max) || memchr(s, ' ', len))
        return SMTP_E_ARGUMENT;
    return 0;
}

int smtp_engine_auth(smtp_engine *e, const char *mech, const char *initial)
{
    const char *parts[4];
    int n = 0, rc;
    if (!initial)
        initial = "";
    if (mech[0] == '\0' || check_auth_token(mech, 40) || check_auth_token(initial, 12288))
        return SMTP_E_ARGUMENT;
    if (e->state != SMTP_STATE_READY)
        return SMTP_E_STATE;
    /* The one place every AUTH passes: no secret crosses plaintext unless
     * the caller said so by name. */
    if (!e->secure && !e->insecure_auth)
        return SMTP_E_INSECURE;
    rc = op_start(e, SMTP_OP_AUTH);
    if (rc)
        return rc;
    e->auth_challenges = 0;
    e->auth_cancelled = 0;
    parts[n++] = "AUTH ";
    parts[n++] = mech;
    if (initial[0]) {
        parts[n++] = " ";
        parts[n++] = initial;
    }
    rc = stage_cmd(e, SMTP_CMD_AUTH, 0, parts, n);
    return rc ? op_abort(e, rc) : released(e);
}

int smtp_engine_auth_response(smtp_engine *e, const char *response)
{
    const char *parts[1];
    int rc;
    if (e->op != SMTP_OP_CHALLENGE)
        return SMTP_E_STATE;
    if (check_auth_token(response, 12288))
        return SMTP_E_ARGUMENT;
    parts[0] = response;
    rc = stage_cmd(e, SMTP_CMD_AUTH_STEP, 0, parts, 1);
    if (rc)
        return rc;
    transition(e, e->state, SMTP_OP_AUTH);
    if (strcmp(response, "*") == 0)
        e->auth_cancelled = 1;
    return released(e);
}

/* ---- transactions ------------------------------------------------------- */

static smtp_txn *txn_at(smtp_engine *e, int slot)
{
    return &e->txns[slot];
}

static int txn_tail_slot(const smtp_engine *e)
{
    return (e->txn_head + e->txn_count - 1) % SMTP_TXN_MAX;
}

/* The transaction being built (commands may still be added), or NULL. */
static smtp_txn *txn_building(smtp_engine *e)
{
    smtp_txn *t;
    if (!in_transaction(e) || e->txn_count == 0)
        return NULL;
    t = txn_at(e, txn_tail_slot(e));
    return t->body_done || t->failed ? NULL : t;
}

int smtp_engine_transactions(const smtp_engine *e)
{
    return in_transaction(e) ? e->txn_count : 0;
}

int smtp_engine_staged(const smtp_engine *e)
{
    return e->stage.count;
}

int smtp_engine_can_chain(const smtp_engine *e)
{
    const smtp_txn *t;
    if (e->op != SMTP_OP_TRANSACTION || e->state == SMTP_STATE_CLOSED || e->txn_count == 0 ||
        e->txn_count >= SMTP_TXN_MAX || !pipelining_active(e))
        return 0;
    t = &e->txns[txn_tail_slot(e)];
    return t->body_done;
}

static int txn_open(smtp_engine *e)
{
    int slot = (e->txn_head + e->txn_count) % SMTP_TXN_MAX;
    smtp_txn *t = txn_at(e, slot);
    smtp_buf text = t->text;
    memset(t, 0, sizeof *t);
    t->text = text;
    smtp_buf_clear(&t->text);
    t->id = ++e->txn_next_id;
    e->txn_count++;
    return slot;
}

int smtp_engine_mail(smtp_engine *e, const char *from, unsigned long long size,
                     const char *params)
{
    const char *parts[6];
    char size_param[32];
    unsigned long long max;
    int n = 0, rc, slot, chained, need_rset;

    if (!params)
        params = "";
    if (smtp_check_address(from) || smtp_check_arg(params, strlen(params), MAX_PARAMS))
        return SMTP_E_ARGUMENT;
    if (e->state != SMTP_STATE_READY)
        return SMTP_E_STATE;
    max = smtp_engine_max_size(e);
    if (size > 0 && max > 0 && size > max)
        return SMTP_E_SIZE;
    chained = smtp_engine_can_chain(e);
    if (!chained) {
        rc = op_start(e, SMTP_OP_TRANSACTION);
        if (rc)
            return rc;
    }
    /* A chunked transaction still in flight may yet fail and leave the
     * server mid-transaction: the next one starts clean with RSET. */
    need_rset = e->need_rset || (chained && txn_at(e, txn_tail_slot(e))->bdat);
    slot = txn_open(e);

    if (need_rset) {
        static const char *const rset[1] = {"RSET"};
        rc = stage_cmd_data(e, SMTP_CMD_RSET, -1, slot, rset, 1, NULL, 0);
        if (rc)
            goto undo;
    }
    parts[n++] = "MAIL FROM:<";
    parts[n++] = from;
    parts[n++] = ">";
    if (size > 0 && smtp_engine_has_cap(e, "SIZE", NULL, NULL)) {
        snprintf(size_param, sizeof size_param, " SIZE=%llu", size);
        parts[n++] = size_param;
    }
    if (params[0]) {
        parts[n++] = " ";
        parts[n++] = params;
    }
    rc = stage_cmd_data(e, SMTP_CMD_MAIL, 0, slot, parts, n, NULL, 0);
    if (rc) {
        if (need_rset)
            unstage_last(e);
        goto undo;
    }
    e->need_rset = 0;
    smtp_frame_init(&e->frame, SMTP_MAX_LINE);
    return released(e);

undo:
    /* Nothing of this transaction stays: not counted, no id used. */
    e->txn_count--;
    e->txn_next_id--;
    return chained ? rc : op_abort(e, rc);
}

int smtp_engine_rcpt(smtp_engine *e, const char *to, const char *params)
{
    const char *parts[5];
    smtp_txn *t;
    int n = 0, rc;
    if (!params)
        params = "";
    if (smtp_check_address(to) || to[0] == '\0' ||
        smtp_check_arg(params, strlen(params), MAX_PARAMS))
        return SMTP_E_ARGUMENT;
    t = txn_building(e);
    if (!t || t->data_staged)
        return SMTP_E_STATE;
    parts[n++] = "RCPT TO:<";
    parts[n++] = to;
    parts[n++] = ">";
    if (params[0]) {
        parts[n++] = " ";
        parts[n++] = params;
    }
    rc = stage_cmd_data(e, SMTP_CMD_RCPT, t->rcpt_count, txn_tail_slot(e), parts, n, NULL, 0);
    if (rc)
        return rc;
    t->rcpt_count++;
    return released(e);
}

int smtp_engine_data(smtp_engine *e)
{
    static const char *const parts[1] = {"DATA"};
    smtp_txn *t = txn_building(e);
    int rc;
    if (!t || t->data_staged || t->rcpt_count == 0)
        return SMTP_E_STATE;
    rc = stage_cmd_data(e, SMTP_CMD_DATA, 0, txn_tail_slot(e), parts, 1, NULL, 0);
    if (rc)
        return rc;
    t->data_staged = 1;
    return released(e);
}

int smtp_engine_body(smtp_engine *e, const char *data, size_t len)
{
    size_t before;
    int rc;
    if (e->op != SMTP_OP_BODY)
        return SMTP_E_STATE;
    before = smtp_buf_len(&e->out);
    rc = smtp_frame_write(&e->frame, data, len, &e->out);
    if (rc == 0)
        e->written += smtp_buf_len(&e->out) - before;
    return rc;
}

int smtp_engine_body_end(smtp_engine *e)
{
    size_t before;
    int rc, slot;
    if (e->op != SMTP_OP_BODY)
        return SMTP_E_STATE;
    slot = txn_tail_slot(e);
    /* Room for the end of data in flight before it is written. */
    rc = ring_reserve(&e->inflight, e->mem);
    if (rc)
        return rc;
    before = smtp_buf_len(&e->out);
    rc = smtp_frame_finish(&e->frame, &e->out);
    if (rc)
        return rc;
    e->written += smtp_buf_len(&e->out) - before;
    (void)push_inflight(e, SMTP_CMD_DOT, 0, slot); /* reserved */
    transition(e, e->state, SMTP_OP_TRANSACTION);
    txn_at(e, slot)->body_done = 1;
    txn_at(e, slot)->pending++;
    /* With PIPELINING the next transaction may travel with the end of data. */
    return released(e);
}

int smtp_engine_bdat(smtp_engine *e, const char *data, size_t len, int last)
{
    const char *parts[2];
    char line[48];
    smtp_txn *t = txn_building(e);
    smtp_frame frame;
    int rc;
    if (!t || t->rcpt_count == 0 || (t->data_staged && !t->bdat))
        return SMTP_E_STATE;
    if (!t->bdat)
        e->frame.stuffing = 0;
    frame = e->frame; /* taken back when the chunk cannot be staged */
    smtp_buf_clear(&e->scratch);
    rc = smtp_frame_write(&e->frame, data, len, &e->scratch);
    /* RFC 3030 ends the message where the last chunk ends: it must end with
     * CRLF exactly as the same message would after DATA. */
    if (rc == 0 && last && !e->frame.at_line_start)
        rc = smtp_buf_append(&e->scratch, "\r\n", 2);
    if (rc)
        return rc;
    /* Nothing framed (an empty piece, or a CR held for the next one): no
     * BDAT 0 except the empty terminating BDAT 0 LAST. */
    if (!last && smtp_buf_len(&e->scratch) == 0) {
        t->bdat = 1;
        t->data_staged = 1;
        return 0;
    }
    snprintf(line, sizeof line, "BDAT %lu%s", (unsigned long)smtp_buf_len(&e->scratch),
             last ? " LAST" : "");
    parts[0] = line;
    rc = stage_cmd_data(e, SMTP_CMD_BDAT, last ? 1 : 0, txn_tail_slot(e), parts, 1,
                        smtp_buf_ptr(&e->scratch), smtp_buf_len(&e->scratch));
    if (rc) {
        e->frame = frame;
        return rc;
    }
    t->bdat = 1;
    t->data_staged = 1;
    if (last)
        t->body_done = 1;
    return released(e);
}

static int simple_op(smtp_engine *e, smtp_op op, smtp_cmd cmd, const char *word)
{
    const char *parts[1];
    int rc = op_start(e, op);
    if (rc)
        return rc;
    parts[0] = word;
    rc = stage_cmd(e, cmd, 0, parts, 1);
    return rc ? op_abort(e, rc) : released(e);
}

int smtp_engine_rset(smtp_engine *e)
{
    int rc = simple_op(e, SMTP_OP_RSET, SMTP_CMD_RSET, "RSET");
    if (rc == 0)
        e->need_rset = 0;
    return rc;
}

int smtp_engine_noop(smtp_engine *e)
{
    return simple_op(e, SMTP_OP_NOOP, SMTP_CMD_NOOP, "NOOP");
}

int smtp_engine_quit(smtp_engine *e)
{
    return simple_op(e, SMTP_OP_QUIT, SMTP_CMD_QUIT, "QUIT");
}

void smtp_engine_close(smtp_engine *e)
{
    close_session(e);
    drop_staged(e);
    /* A closed session keeps no buffers: the Lua collector cannot see this
     * memory, and a session may wait long for its __gc. Emptied buffers are
     * valid (they grow again on demand), so later calls stay safe. */
    smtp_buf_free(&e->in);
    smtp_buf_free(&e->out);
    smtp_buf_free(&e->staged);
    smtp_buf_free(&e->scratch);
    smtp_buf_free(&e->parser.text);
}

/* ---- input and output --------------------------------------------------- */

int smtp_engine_feed(smtp_engine *e, const char *data, size_t len)
{
    return smtp_buf_append(&e->in, data, len);
}

const char *smtp_engine_output(const smtp_engine *e, size_t *len)
{
    *len = smtp_buf_len(&e->out);
    return smtp_buf_ptr(&e->out);
}

void smtp_engine_consumed(smtp_engine *e, size_t n)
{
    size_t have = smtp_buf_len(&e->out);
    if (n > have)
        n = have;
    smtp_buf_consume(&e->out, n);
    e->sent += n;
}

/* ---- replies ------------------------------------------------------------ */

static int save_reply(smtp_engine *e, const smtp_reply *r)
{
    e->saved_code = r->code;
    memcpy(e->saved_enhanced, r->enhanced, SMTP_ENHANCED_MAX);
    smtp_buf_clear(&e->saved);
    return smtp_buf_append(&e->saved, r->text, r->text_len);
}

static void finish_op(smtp_engine *e, smtp_fail fail, smtp_cmd cmd, const smtp_reply *r)
{
    e->op_finished = 1;
    e->op_fail = fail;
    e->op_fail_cmd = cmd;
    if (r && save_reply(e, r)) {
        /* The text did not fit: keep the code, drop the words. */
        smtp_buf_clear(&e->saved);
    }
}

static void protocol_error(smtp_engine *e, int err)
{
    e->error = err;
    close_session(e);
    drop_staged(e);
    e->op_error = err;
    /* No reply goes with this failure: forget one saved earlier (a refusal
     * being drained, or the last operation's outcome). */
    e->saved_code = 0;
    e->saved_enhanced[0] = '\0';
    smtp_buf_clear(&e->saved);
    finish_op(e, SMTP_FAIL_PROTOCOL, smtp_engine_waiting_for(e), NULL);
}

/* Dead with no operation left to fail: the failure has been reported, and
 * input left over (or arriving later) must not report it again on every
 * call to smtp_engine_next. */
static int failure_reported(const smtp_engine *e)
{
    return e->state == SMTP_STATE_CLOSED && e->op == SMTP_OP_NONE && !e->op_finished;
}

/* Bytes beyond every reply we asked for. An operation that already
 * succeeded keeps its outcome (the server did accept the message), but the
 * session is not trusted with another command. */
static void unexpected_input(smtp_engine *e)
{
    /* In a transaction, one reply too many means replies may have shifted
     * (a duplicated 250 taken for a later command's): no outcome still
     * unreported can be trusted, so every one fails with the session. */
    if (e->op_finished && e->op_fail == SMTP_FAIL_NONE && e->op != SMTP_OP_TRANSACTION) {
        e->error = SMTP_E_PROTOCOL;
        close_session(e);
        drop_staged(e);
        return;
    }
    protocol_error(e, SMTP_E_PROTOCOL);
}

static int is_2xx(int code)
{
    return code >= 200 && code < 300;
}

static void txn_save(smtp_txn *t, const smtp_reply *r)
{
    t->code = r->code;
    memcpy(t->enhanced, r->enhanced, SMTP_ENHANCED_MAX);
    smtp_buf_clear(&t->text);
    if (smtp_buf_append(&t->text, r->text, r->text_len))
        smtp_buf_clear(&t->text); /* too long to keep: the code stays */
}

/* Drops the staged commands of one transaction: they must never go out.
 * Its commands already in flight get drained. */
static void drop_staged_txn(smtp_engine *e, int slot)
{
    smtp_ring kept;
    smtp_buf bytes;
    int i;
    if (e->stage.count == 0)
        return;
    /* Rare path: rebuild the stage without this transaction's entries. */
    kept = e->stage;
    kept.items = NULL;
    kept.head = kept.count = kept.cap = 0;
    smtp_buf_init_mem(&bytes, e->staged.limit, e->mem);
    for (i = 0; i < e->stage.count; i++) {
        const smtp_cmd_entry *c = &e->stage.items[(e->stage.head + i) % e->stage.cap];
        const char *p = smtp_buf_ptr(&e->staged);
        size_t off = 0;
        int j;
        for (j = 0; j < i; j++)
            off += (size_t)e->stage.items[(e->stage.head + j) % e->stage.cap].n;
        if (c->txn == slot) {
            e->txns[slot].pending--;
            continue;
        }
        if (smtp_buf_append(&bytes, p + off, (size_t)c->n) ||
            ring_push(&kept, e->mem, c->cmd, c->index, c->txn, c->n)) {
            smtp_mem_free(e->mem, kept.items);
            smtp_buf_free(&bytes);
            protocol_error(e, SMTP_E_NOMEM);
            return;
        }
    }
    smtp_mem_free(e->mem, e->stage.items);
    smtp_buf_free(&e->staged);
    e->stage = kept;
    e->staged = bytes;
}

static void fail_transaction(smtp_engine *e, int slot, smtp_fail fail, smtp_cmd cmd,
                             const smtp_reply *r)
{
    smtp_txn *t = txn_at(e, slot);
    if (t->failed || t->done)
        return;
    t->failed = 1;
    t->fail = fail;
    t->fail_cmd = cmd;
    txn_save(t, r);
    e->need_rset = 1;
    drop_staged_txn(e, slot);
}

static void succeed_transaction(smtp_txn *t, const smtp_reply *r)
{
    if (t->failed || t->done)
        return;
    t->done = 1;
    txn_save(t, r);
}

/* The final reply(ies) to the end of data or BDAT LAST. Under LMTP there
 * is one per accepted recipient (RFC 2033 4.2): the message is delivered
 * when any of them is 2xx. */
static void on_final_reply(smtp_engine *e, smtp_cmd_entry *c, const smtp_reply *r)
{
    smtp_txn *t = txn_at(e, c->txn);
    if (!e->lmtp) {
        if (is_2xx(r->code))
            succeed_transaction(t, r);
        else
            fail_transaction(e, c->txn, SMTP_FAIL_DATA, c->cmd, r);
        return;
    }
    if (t->lmtp_replies == 0)
        c->left = t->rcpt_accepted; /* counts this reply too */
    t->lmtp_replies++;
    c->left--;
    if (is_2xx(r->code)) {
        t->lmtp_ok++;
        if (!t->code || !is_2xx(t->code))
            txn_save(t, r);
    } else if (t->lmtp_ok == 0) {
        txn_save(t, r);
    }
    if (c->left > 0)
        return;
    if (t->lmtp_ok > 0) {
        t->done = 1;
    } else {
        smtp_reply last = *r;
        fail_transaction(e, c->txn, SMTP_FAIL_DATA, c->cmd, &last);
    }
}

static void on_transaction_reply(smtp_engine *e, smtp_cmd_entry *c, const smtp_reply *r)
{
    smtp_txn *t = txn_at(e, c->txn);
    switch (c->cmd) {
    case SMTP_CMD_RSET:
        break; /* a clean-up RSET ahead of MAIL: its reply decides nothing */
    case SMTP_CMD_MAIL:
        if (!is_2xx(r->code))
            fail_transaction(e, c->txn, SMTP_FAIL_SENDER, SMTP_CMD_MAIL, r);
        break;
    case SMTP_CMD_RCPT:
        t->rcpt_replied++;
        if (is_2xx(r->code))
            t->rcpt_accepted++;
        else if (t->rcpt_replied == t->rcpt_count && t->rcpt_accepted == 0)
            fail_transaction(e, c->txn, SMTP_FAIL_RECIPIENTS, SMTP_CMD_RCPT, r);
        break;
    case SMTP_CMD_DATA:
        if (r->code == 354 && t->failed) {
            /* A server that opens DATA for a failed envelope gets an empty
             * message ended at once, so it cannot wait for a body. */
            int rc = ring_reserve(&e->inflight, e->mem);
            if (rc == 0)
                rc = write_out(e, ".\r\n", 3);
            if (rc) {
                protocol_error(e, rc); /* the server would take what follows as data */
            } else {
                (void)push_inflight(e, SMTP_CMD_DOT, -1, c->txn); /* reserved */
                t->pending++;
            }
        } else if (r->code == 354) {
            transition(e, e->state, SMTP_OP_BODY);
        } else {
            fail_transaction(e, c->txn, SMTP_FAIL_DATA, SMTP_CMD_DATA, r);
        }
        break;
    case SMTP_CMD_DOT:
        if (c->index >= 0 && !t->failed)
            on_final_reply(e, c, r);
        break;
    case SMTP_CMD_BDAT:
        if (t->failed)
            break;
        /* BDAT LAST is answered like the end of data: under LMTP with one
         * reply per accepted recipient, in any mix of 2xx, 4xx and 5xx. */
        if (c->index == 1)
            on_final_reply(e, c, r);
        else if (!is_2xx(r->code))
            fail_transaction(e, c->txn, SMTP_FAIL_DATA, SMTP_CMD_BDAT, r);
        break;
    default:
        break;
    }
}

static void on_hello_reply(smtp_engine *e, const smtp_cmd_entry *c, const smtp_reply *r)
{
    if (c->cmd == SMTP_CMD_GREETING) {
        if (r->code == 220)
            transition(e, SMTP_STATE_GREETED, e->op);
        else if (is_2xx(r->code) || r->code < 400) {
            protocol_error(e, SMTP_E_PROTOCOL);
            e->op_fail_cmd = SMTP_CMD_GREETING; /* what protocol_error named from the
                                                   in-flight list: said outright */
        } else {
            /* The greeting did come: a later hello must not wait for
             * another one (the server answers EHLO with 503 instead). */
            transition(e, SMTP_STATE_GREETED, e->op);
            drop_staged(e);
            finish_op(e, SMTP_FAIL_GREETING, SMTP_CMD_GREETING, r);
        }
        return;
    }
    if (r->code == 250) {
        transition(e, SMTP_STATE_READY, e->op);
        e->extended = c->cmd != SMTP_CMD_HELO;
        smtp_buf_clear(&e->caps);
        if (e->extended) {
            /* Keep the lines after the first: one capability each. */
            const char *nl = memchr(r->text, '\n', r->text_len);
            int rc = nl ? smtp_buf_append(&e->caps, nl + 1,
                                          r->text_len - (size_t)(nl + 1 - r->text)) : 0;
            if (rc) {
                protocol_error(e, rc); /* the capabilities would be wrong */
                return;
            }
        }
        finish_op(e, SMTP_FAIL_NONE, c->cmd, r);
        return;
    }
    if (c->cmd == SMTP_CMD_EHLO &&
        (r->code == 500 || r->code == 502 || r->code == 504 || r->code == 550)) {
        const char *parts[2];
        int rc;
        parts[0] = "HELO ";
        parts[1] = e->hello_name;
        rc = stage_cmd(e, SMTP_CMD_HELO, 0, parts, 2);
        if (rc == 0)
            return;
        protocol_error(e, rc);
        return;
    }
    finish_op(e, SMTP_FAIL_HELLO, c->cmd, r);
}

static void on_reply(smtp_engine *e, smtp_cmd_entry *c, const smtp_reply *r)
{
    if (r->code == 421 && c->cmd != SMTP_CMD_QUIT) {
        /* RFC 5321 3.8: the server is shutting the channel down. A reply
         * drained after the session already failed reports nothing more. */
        int reported = failure_reported(e);
        close_session(e);
        drop_staged(e);
        if (!reported)
            finish_op(e, c->cmd == SMTP_CMD_GREETING ? SMTP_FAIL_GREETING : SMTP_FAIL_CLOSING,
                      c->cmd, r);
        return;
    }
    switch (e->op) {
    case SMTP_OP_HELLO:
        on_hello_reply(e, c, r);
        break;
    case SMTP_OP_STARTTLS:
        if (r->code == 220) {
            transition(e, SMTP_STATE_TLS_WAIT, e->op);
            finish_op(e, SMTP_FAIL_NONE, c->cmd, r);
        } else {
            finish_op(e, SMTP_FAIL_TLS, c->cmd, r);
        }
        break;
    case SMTP_OP_AUTH:
    case SMTP_OP_CHALLENGE:
        if (r->code == 334 &&
            (e->auth_cancelled || ++e->auth_challenges > SMTP_AUTH_MAX_CHALLENGES)) {
            /* RFC 4954 4: "*" ends the exchange with a 501; another
             * challenge after it, or too many, is a broken server. */
            protocol_error(e, SMTP_E_PROTOCOL);
        } else if (r->code == 334) {
            /* The driver answers through smtp_engine_auth_response. */
            transition(e, e->state, SMTP_OP_CHALLENGE);
            if (save_reply(e, r))
                smtp_buf_clear(&e->saved);
            e->saved_code = r->code;
        } else {
            finish_op(e, r->code == 235 ? SMTP_FAIL_NONE : SMTP_FAIL_AUTH, c->cmd, r);
        }
        break;
    case SMTP_OP_TRANSACTION:
    case SMTP_OP_BODY:
        on_transaction_reply(e, c, r);
        break;
    case SMTP_OP_RSET:
    case SMTP_OP_NOOP:
        finish_op(e, is_2xx(r->code) ? SMTP_FAIL_NONE : SMTP_FAIL_COMMAND, c->cmd, r);
        break;
    case SMTP_OP_QUIT:
        close_session(e);
        finish_op(e, SMTP_FAIL_NONE, c->cmd, r);
        break;
    default:
        break;
    }
}

/* True when the next unparsed byte may be a reply to something we sent. */
static int input_expected(const smtp_engine *e)
{
    return e->inflight.count > 0 && ring_front(&e->inflight)->n <= e->sent;
}

static void fill_outcome(smtp_engine *e, smtp_event *ev)
{
    ev->kind = e->op_fail == SMTP_FAIL_NONE ? SMTP_EV_DONE : SMTP_EV_FAILED;
    if (e->op == SMTP_OP_STARTTLS && ev->kind == SMTP_EV_DONE)
        ev->kind = SMTP_EV_STARTTLS;
    ev->cmd = e->op_fail_cmd;
    ev->fail = e->op_fail;
    ev->error = e->op_error;
    ev->reply.code = e->saved_code;
    memcpy(ev->reply.enhanced, e->saved_enhanced, SMTP_ENHANCED_MAX);
    ev->reply.text = smtp_buf_ptr(&e->saved);
    ev->reply.text_len = smtp_buf_len(&e->saved);
    ev->reply.lines = e->saved_code ? 1 : 0;
    /* A session-level failure ends every transaction still in flight: the
     * driver reports them all. */
    e->txn_count = 0;
    transition(e, e->state, SMTP_OP_NONE);
    e->op_finished = 0;
}

/* The oldest transaction, once every reply it waits for has come. */
static int txn_report(smtp_engine *e, smtp_event *ev)
{
    smtp_txn *t;
    if (!in_transaction(e) || e->txn_count == 0)
        return 0;
    t = txn_at(e, e->txn_head);
    if (!(t->done || t->failed) || t->pending > 0)
        return 0;
    /* Replies already received are parsed first: one too many among them
     * shows that this outcome may rest on a shifted reply. */
    if (e->state != SMTP_STATE_CLOSED && memchr(smtp_buf_ptr(&e->in), '\n', smtp_buf_len(&e->in)))
        return 0;
    if (e->op == SMTP_OP_BODY && e->txn_count == 1)
        return 0;
    ev->kind = t->done ? SMTP_EV_DONE : SMTP_EV_FAILED;
    ev->txn = t->id;
    ev->cmd = t->done ? (t->bdat ? SMTP_CMD_BDAT : SMTP_CMD_DOT) : t->fail_cmd;
    ev->fail = t->done ? SMTP_FAIL_NONE : t->fail;
    ev->reply.code = t->code;
    memcpy(ev->reply.enhanced, t->enhanced, SMTP_ENHANCED_MAX);
    ev->reply.text = smtp_buf_ptr(&t->text);
    ev->reply.text_len = smtp_buf_len(&t->text);
    ev->reply.lines = t->code ? 1 : 0;
    e->txn_head = (e->txn_head + 1) % SMTP_TXN_MAX;
    e->txn_count--;
    if (e->txn_count == 0)
        transition(e, e->state, SMTP_OP_NONE);
    return 1;
}

int smtp_engine_next(smtp_engine *e, smtp_event *ev)
{
    memset(ev, 0, sizeof *ev);

    for (;;) {
        const char *p, *nl;
        size_t avail;
        smtp_reply r;
        int rc;

        if (e->op_finished) {
            fill_outcome(e, ev);
            return 0;
        }
        if (txn_report(e, ev))
            return 0;
        if (e->state != SMTP_STATE_CLOSED) {
            rc = release_staged(e);
            if (rc) {
                protocol_error(e, rc);
                continue;
            }
        }
        if (e->inflight.count == 0 && e->state != SMTP_STATE_TLS_WAIT &&
            e->state != SMTP_STATE_CLOSED && smtp_buf_len(&e->in) > 0) {
            protocol_error(e, SMTP_E_PROTOCOL); /* bytes nobody asked for */
            continue;
        }
        if (e->inflight.count == 0) {
            if (e->op == SMTP_OP_CHALLENGE) {
                ev->kind = SMTP_EV_CHALLENGE;
                ev->cmd = SMTP_CMD_AUTH;
                ev->reply.code = e->saved_code;
                ev->reply.text = smtp_buf_ptr(&e->saved);
                ev->reply.text_len = smtp_buf_len(&e->saved);
                ev->reply.lines = 1;
                return 0;
            }
            ev->kind = e->op == SMTP_OP_BODY ? SMTP_EV_NEED_BODY : SMTP_EV_IDLE;
            return 0;
        }
        if (!input_expected(e)) {
            if (smtp_buf_len(&e->in) > 0 && !failure_reported(e)) {
                protocol_error(e, SMTP_E_PROTOCOL); /* a reply before its command */
                continue;
            }
            ev->kind = SMTP_EV_NEED_INPUT; /* the driver must send first */
            return 0;
        }
        p = smtp_buf_ptr(&e->in);
        avail = smtp_buf_len(&e->in);
        nl = memchr(p, '\n', avail);
        if (!nl) {
            if (avail > e->limits.max_line + 1 && !failure_reported(e)) {
                protocol_error(e, SMTP_E_LIMIT);
                continue;
            }
            ev->kind = SMTP_EV_NEED_INPUT;
            return 0;
        }
        rc = smtp_reply_line(&e->parser, p, (size_t)(nl - p) + 1, &r);
        smtp_buf_consume(&e->in, (size_t)(nl - p) + 1);
        if (rc < 0) {
            if (!failure_reported(e))
                protocol_error(e, rc);
            continue;
        }
        if (rc == 0)
            continue;
        {
            /* Work on a copy: answering may push entries and move the ring.
             * An LMTP end of data stays at the front until every
             * recipient's reply is in. */
            smtp_cmd_entry c = *ring_front(&e->inflight);
            on_reply(e, &c, &r);
            if (c.left > 0) {
                ring_front(&e->inflight)->left = c.left;
            } else {
                ring_pop(&e->inflight);
                if (c.txn >= 0)
                    e->txns[c.txn].pending--;
            }
            ev->kind = SMTP_EV_REPLY;
            ev->cmd = c.cmd;
            ev->index = c.cmd == SMTP_CMD_DOT || c.cmd == SMTP_CMD_BDAT ? c.txn >= 0 ?
                e->txns[c.txn].lmtp_replies - 1 : 0 : c.index;
            ev->txn = c.txn >= 0 ? e->txns[c.txn].id : 0;
            ev->reply = r;
            /* Leftover bytes with nothing sent awaiting them: the server
             * answered ahead of the client (an injection or a broken peer).
             * After STARTTLS they are dropped by tls_done instead. */
            if (smtp_buf_len(&e->in) > 0 && e->state != SMTP_STATE_TLS_WAIT &&
                e->state != SMTP_STATE_CLOSED && !input_expected(e))
                unexpected_input(e);
            return 0;
        }
    }
}
