/* The SMTP client session as a sans-I/O state machine.
 *
 * The engine never reads or writes a socket, never looks at a clock and
 * never calls Lua. A driver owns the connection and runs this loop:
 *
 *     write everything smtp_engine_output() holds, smtp_engine_consumed(n);
 *     switch (smtp_engine_next(e, &ev)):
 *       SMTP_EV_NEED_INPUT   read some bytes, smtp_engine_feed() them
 *       SMTP_EV_REPLY        a reply matched to its command (for transcripts
 *                            and per-recipient results)
 *       SMTP_EV_NEED_BODY    the server said 354: smtp_engine_body() the
 *                            message in chunks, then smtp_engine_body_end()
 *       SMTP_EV_STARTTLS     the server said 220 to STARTTLS: hand the
 *                            connection to TLS, then smtp_engine_tls_done()
 *       SMTP_EV_CHALLENGE    a 334 inside AUTH (ev.reply.text: the
 *                            challenge): answer with smtp_engine_auth_response
 *       SMTP_EV_DONE         the operation succeeded (ev.reply: final reply)
 *       SMTP_EV_FAILED       the operation failed (ev.fail says where)
 *       SMTP_EV_IDLE         nothing in flight: start the next operation
 *
 * Operations (hello, a transaction, rset, noop, quit) run one at a time.
 * Commands are staged and released to the output buffer when the protocol
 * allows: one at a time, or as RFC 2920 groups when the server offers
 * PIPELINING. Every command in flight is remembered in order, so each reply
 * is matched to the command it answers; a reply that arrives before its
 * command has been handed to the transport is a protocol error.
 *
 * Return conventions (each declaration below says which applies):
 *  - "0 or SMTP_E_*": 0 on success, else a negative code of smtp_error.h.
 *    SMTP_E_ARGUMENT (a string that cannot go on the wire) and SMTP_E_STATE
 *    (the call is not valid now) leave the engine exactly as it was and
 *    put nothing on the wire. SMTP_E_LIMIT and SMTP_E_NOMEM do the same:
 *    nothing of the call is staged, written or counted, and an operation
 *    that could not start leaves none running (csrc/test/test_failmalloc.c
 *    checks this for every allocation). A call whose command is staged
 *    succeeds even when it cannot go out yet: smtp_engine_next releases
 *    it, and a failure there (or anywhere inside smtp_engine_next) fails
 *    the session: SMTP_EV_FAILED, SMTP_FAIL_PROTOCOL, ev.error set, dead.
 *  - Queries (smtp_engine_transactions, _can_chain, _staged, _dead,
 *    _extended, _cap, _has_cap, _max_size, _waiting_for, _last_txn,
 *    _line_error, _chunk_len, _written, _sent, _state, _op) return counts, booleans
 *    (1/0) or values, never an error, and change nothing.
 *  - smtp_engine_next always returns 0 and describes what happened in *ev.
 *
 * Ownership: the engine owns every buffer it uses; spans it hands out
 * (smtp_engine_output, ev->reply.text, capability strings) are borrowed
 * and valid until the next call that changes the engine. One engine may be
 * used by one thread at a time; there is no global state.
 */
#ifndef SMTP_ENGINE_H
#define SMTP_ENGINE_H

#include <stddef.h>
#include "smtp_buf.h"
#include "smtp_frame.h"
#include "smtp_reply.h"

typedef enum smtp_cmd {
    SMTP_CMD_NONE = 0,
    SMTP_CMD_GREETING, /* not a command: the 220 the server opens with */
    SMTP_CMD_EHLO,
    SMTP_CMD_HELO,
    SMTP_CMD_LHLO,
    SMTP_CMD_STARTTLS,
    SMTP_CMD_AUTH,
    SMTP_CMD_AUTH_STEP, /* a response line inside an AUTH exchange */
    SMTP_CMD_MAIL,
    SMTP_CMD_RCPT,
    SMTP_CMD_DATA,
    SMTP_CMD_DOT,      /* the end of data */
    SMTP_CMD_BDAT,     /* a CHUNKING chunk, its data attached */
    SMTP_CMD_RSET,
    SMTP_CMD_NOOP,
    SMTP_CMD_QUIT,
    SMTP_CMD_COUNT
} smtp_cmd;

typedef enum smtp_event_kind {
    SMTP_EV_NEED_INPUT = 1,
    SMTP_EV_REPLY,
    SMTP_EV_NEED_BODY,
    SMTP_EV_STARTTLS,
    SMTP_EV_CHALLENGE,
    SMTP_EV_DONE,
    SMTP_EV_FAILED,
    SMTP_EV_IDLE
} smtp_event_kind;

/* Where an operation failed; maps to the error kinds of the Lua API. */
typedef enum smtp_fail {
    SMTP_FAIL_NONE = 0,
    SMTP_FAIL_GREETING,   /* 4xx/5xx greeting */
    SMTP_FAIL_HELLO,      /* EHLO and HELO (or LHLO) refused */
    SMTP_FAIL_TLS,        /* STARTTLS refused */
    SMTP_FAIL_AUTH,       /* AUTH refused (535, 534, 454, ...) */
    SMTP_FAIL_SENDER,     /* MAIL refused */
    SMTP_FAIL_RECIPIENTS, /* every RCPT refused */
    SMTP_FAIL_DATA,       /* DATA or the end of data refused */
    SMTP_FAIL_COMMAND,    /* RSET or NOOP refused */
    SMTP_FAIL_CLOSING,    /* 421: the server is closing the session */
    SMTP_FAIL_PROTOCOL    /* malformed, oversized or unexpected reply */
} smtp_fail;

typedef struct smtp_event {
    smtp_event_kind kind;
    unsigned txn;        /* the transaction (from 1) a REPLY, DONE or FAILED
                            belongs to; 0 for other operations */
    smtp_cmd cmd;        /* REPLY: the command answered; FAILED: the one refused */
    int index;           /* REPLY to RCPT: the recipient's position, from 0 */
    smtp_fail fail;      /* FAILED only */
    int error;           /* FAILED with SMTP_FAIL_PROTOCOL: the SMTP_E_* code */
    smtp_reply reply;    /* REPLY, DONE, FAILED (code 0 when no reply) */
} smtp_event;

typedef struct smtp_limits {
    size_t max_line;     /* longest reply line accepted (default 4096) */
    size_t max_lines;    /* most lines in one reply (default 256) */
    size_t max_output;   /* most bytes staged for the transport (default 4 MiB) */
    int max_commands;    /* most commands staged or in flight (default 100000) */
} smtp_limits;

/* A command waiting for its turn (n: its length in e->staged) or for its
 * reply (n: the output position just past it). */
typedef struct smtp_cmd_entry {
    smtp_cmd cmd;
    int index;
    int txn;                 /* slot in e->txns, -1 outside transactions */
    int left;                /* LMTP end of data: replies still expected */
    unsigned long long n;
} smtp_cmd_entry;

/* Challenges one AUTH exchange may take (smtplib's bound): a server that
 * answers 334 for ever gets a protocol error, not an endless exchange. */
#define SMTP_AUTH_MAX_CHALLENGES 5

/* Transactions in flight at once: with PIPELINING the next one starts as
 * soon as the previous one's data is written (its outcome still unknown). */
#define SMTP_TXN_MAX 64

typedef struct smtp_txn {
    unsigned id;             /* from 1, in the order they were started */
    int rcpt_count, rcpt_replied, rcpt_accepted;
    int data_staged;         /* DATA, or a first BDAT, is on its way */
    int bdat;                /* the body goes in BDAT chunks */
    int body_done;           /* the end of data or BDAT LAST is written */
    int pending;             /* its commands staged or awaiting replies */
    int lmtp_replies, lmtp_ok;
    int done, failed;
    smtp_fail fail;
    smtp_cmd fail_cmd;
    int code;                /* the reply it ended on */
    char enhanced[SMTP_ENHANCED_MAX];
    smtp_buf text;
} smtp_txn;

/* A FIFO of commands that grows on demand up to a limit. */
typedef struct smtp_ring {
    smtp_cmd_entry *items;
    int head, count, cap, limit;
} smtp_ring;

/* The session's state is two values changed together, only by the one
 * transition function of smtp_engine.c (its tables list every legal move;
 * scripts/engine-states.lua prints them):
 *  - where the connection stands (smtp_state), and
 *  - the operation running (smtp_op), with its two waiting sub-states
 *    (CHALLENGE inside AUTH, BODY inside a transaction).
 * Knowledge that is not control flow (extended, secure, lmtp, need_rset,
 * the capabilities) and the queued outcome (op_finished) are plain fields. */
typedef enum smtp_state {
    SMTP_STATE_CONNECTED = 0, /* no greeting received yet */
    SMTP_STATE_GREETED,       /* greeting in; no hello accepted (again, after
                                 STARTTLS) */
    SMTP_STATE_READY,         /* EHLO/HELO/LHLO accepted */
    SMTP_STATE_TLS_WAIT,      /* 220 to STARTTLS: the handshake is pending */
    SMTP_STATE_CLOSED,        /* no further command can be sent */
    SMTP_STATE_COUNT
} smtp_state;

typedef enum smtp_op {
    SMTP_OP_NONE = 0,
    SMTP_OP_HELLO,
    SMTP_OP_STARTTLS,
    SMTP_OP_AUTH,
    SMTP_OP_CHALLENGE,        /* AUTH: a 334 awaits smtp_engine_auth_response */
    SMTP_OP_TRANSACTION,
    SMTP_OP_BODY,             /* transaction: 354 received, body being written */
    SMTP_OP_RSET,
    SMTP_OP_NOOP,
    SMTP_OP_QUIT,
    SMTP_OP_COUNT
} smtp_op;

/* Embeddable (the Lua binding places it inside a userdata) so its size is
 * public, but every field is private to smtp_engine.c: callers use the
 * functions below only. */
typedef struct smtp_engine {
    const smtp_mem *mem;     /* every allocation (NULL: the C library) */
    smtp_limits limits;
    smtp_reply_parser parser;
    smtp_buf in;             /* bytes received, not yet parsed */
    smtp_buf out;            /* bytes for the transport */
    smtp_buf staged;         /* command lines waiting for their turn */
    smtp_buf caps;           /* EHLO reply text, lines after the first */
    smtp_buf saved;          /* text of the reply an operation ended on */
    smtp_buf scratch;        /* a BDAT chunk being framed */
    smtp_frame frame;

    smtp_ring inflight;      /* sent (or in out), awaiting replies */
    smtp_ring stage;         /* not yet released to out */

    unsigned long long written;   /* bytes ever put into out */
    unsigned long long sent;      /* bytes the transport took */

    smtp_state state;        /* changed by the transition function only */
    smtp_op op;              /* likewise */
    int op_finished;         /* the operation's outcome is queued for
                                smtp_engine_next (not a state: an event) */
    smtp_fail op_fail;
    smtp_cmd op_fail_cmd;
    int op_error;
    int saved_code;
    char saved_enhanced[SMTP_ENHANCED_MAX];

    int extended;            /* EHLO (or LHLO) accepted: caps are valid */
    int lmtp;
    int pipelining;          /* use PIPELINING when offered */
    int error;               /* sticky protocol error */
    int need_rset;           /* a failed transaction awaits RSET */
    int secure;              /* the channel is TLS (STARTTLS done or implicit) */
    int insecure_auth;       /* the caller allowed AUTH without TLS, by name */
    int auth_challenges;     /* 334s in this AUTH exchange */
    int auth_cancelled;      /* the client answered "*" */
    int tracing;             /* record transitions in trace */
    smtp_buf trace;          /* "from -> to" lines, for smtp_engine_trace */
    char hello_name[256];

    /* transactions, oldest first; the newest is the one being built */
    smtp_txn txns[SMTP_TXN_MAX];
    int txn_head, txn_count;
    unsigned txn_next_id;
} smtp_engine;

/* Fills l with the defaults given in smtp_limits. */
void smtp_limits_default(smtp_limits *l);

/* Initialises e (any previous content is ignored); limits NULL: the
 * defaults. 0 or SMTP_E_ARGUMENT (a limit below its minimum: max_line 512,
 * max_lines 1, max_output 4096, max_commands 4). Allocates nothing: buffers
 * grow on demand. smtp_engine_free must be called in both cases. */
int smtp_engine_init(smtp_engine *e, const smtp_limits *limits);
/* The same with an allocator (smtp_mem.h), used for everything the engine
 * allocates until smtp_engine_free; NULL: the C library's. It must outlive
 * the engine. */
int smtp_engine_init_mem(smtp_engine *e, const smtp_limits *limits, const smtp_mem *mem);
/* Releases every buffer; e may be initialised again afterwards. */
void smtp_engine_free(smtp_engine *e);

/* Server bytes in. 0, SMTP_E_LIMIT if more than a line's worth plus one
 * read (max_line + 2 + 65536 bytes) would be pending, SMTP_E_NOMEM. On
 * error nothing is kept and the engine is unchanged. */
int smtp_engine_feed(smtp_engine *e, const char *data, size_t len);

/* Bytes to send: a borrowed span valid until the next mutating call. Never
 * NULL when *len > 0. */
const char *smtp_engine_output(const smtp_engine *e, size_t *len);
/* The transport took n bytes from the front of the output (n larger than
 * what is pending counts as all of it). */
void smtp_engine_consumed(smtp_engine *e, size_t n);

/* Advances the session as far as the input allows and fills *ev with the
 * next thing the driver must know or do (see the loop above). Returns 0
 * always: errors arrive as SMTP_EV_FAILED with fail = SMTP_FAIL_PROTOCOL
 * and ev->error = the SMTP_E_* code (SMTP_E_PROTOCOL, SMTP_E_LIMIT,
 * SMTP_E_NOMEM), after which the session is dead. ev->reply.text is
 * borrowed until the next mutating call. */
int smtp_engine_next(smtp_engine *e, smtp_event *ev);

/* Operations. Each returns 0 or SMTP_E_*; SMTP_E_STATE when another
 * operation is running, the body is being written, a STARTTLS handshake is
 * pending, or the session is dead. */

/* Starts the greeting (first call only) and EHLO name, or LHLO under lmtp;
 * HELO follows by itself when EHLO is refused with 500/502/504/550.
 * SMTP_E_ARGUMENT: empty, longer than 255 bytes, a space or a control
 * character. */
int smtp_engine_hello(smtp_engine *e, const char *name, int lmtp);
/* STARTTLS (RFC 3207). SMTP_E_STATE before a successful hello. On
 * SMTP_EV_STARTTLS the driver runs the handshake and calls
 * smtp_engine_tls_done; on failure it closes the session. */
int smtp_engine_starttls(smtp_engine *e);
/* The handshake after STARTTLS succeeded: the channel is secure, input
 * received before it is dropped and the capabilities are forgotten (a new
 * hello is needed). 0, or SMTP_E_STATE when no handshake was pending. */
int smtp_engine_tls_done(smtp_engine *e);
/* Starts the engine as if greeting and EHLO (LHLO) had just happened, for
 * a connection taken from a pool: ehlo is the text of the EHLO reply
 * (first line, then one capability a line). 0, SMTP_E_STATE when the
 * engine has been used, SMTP_E_LIMIT (or SMTP_E_NOMEM) when the text
 * cannot be kept; on error the engine is unchanged. */
int smtp_engine_restore(smtp_engine *e, const char *ehlo, size_t len, int lmtp, int secure);

/* Declares the channel encrypted (implicit TLS, before the greeting). */
void smtp_engine_set_secure(smtp_engine *e, int on);
/* Allows AUTH over a plaintext channel; off by default. */
void smtp_engine_set_insecure_auth(smtp_engine *e, int on);
/* Starts AUTH (RFC 4954). initial: the base64 initial response, "=" for an
 * empty one, or NULL/"" for none. SMTP_E_ARGUMENT (empty mechanism, spaces
 * or control characters, too long), SMTP_E_STATE before a successful hello,
 * SMTP_E_INSECURE unless the channel is TLS or insecure AUTH was allowed. */
int smtp_engine_auth(smtp_engine *e, const char *mech, const char *initial);
/* Answers the challenge of SMTP_EV_CHALLENGE with a base64 line ("*"
 * cancels). SMTP_E_STATE when no challenge is pending, SMTP_E_ARGUMENT. */
int smtp_engine_auth_response(smtp_engine *e, const char *response);

/* Starts a transaction with MAIL FROM:<from> (empty: the null path).
 * size: the message size for SIZE= (0: unknown). params: extra MAIL
 * parameters, "" or NULL for none. With PIPELINING, while
 * smtp_engine_can_chain() is 1, the new transaction travels behind the
 * ones in flight. SMTP_E_ARGUMENT, SMTP_E_STATE (before a successful hello,
 * or another operation is running), SMTP_E_SIZE when the server's SIZE
 * limit is smaller. On success the new transaction's id is
 * smtp_engine_last_txn(); on any error no transaction was opened. */
int smtp_engine_mail(smtp_engine *e, const char *from, unsigned long long size,
                     const char *params);
/* Adds a recipient to the transaction being built. SMTP_E_ARGUMENT (empty
 * address too), SMTP_E_STATE (no transaction being built, or DATA/BDAT
 * already staged). */
int smtp_engine_rcpt(smtp_engine *e, const char *to, const char *params);
/* DATA. SMTP_E_STATE without a recipient or a transaction being built. */
int smtp_engine_data(smtp_engine *e);
/* Message bytes after SMTP_EV_NEED_BODY, framed (smtp_frame.h) into the
 * output. SMTP_E_STATE outside the body, SMTP_E_LINE when a line is longer
 * than 998 octets (smtp_engine_line_error() gives its number; nothing of
 * this call is written and the driver may end the session), SMTP_E_LIMIT
 * when the output would pass max_output (send, then retry), SMTP_E_NOMEM. */
int smtp_engine_body(smtp_engine *e, const char *data, size_t len);
/* Ends the body ("." line). SMTP_E_STATE outside the body, SMTP_E_LIMIT,
 * SMTP_E_NOMEM (nothing written: the call may be retried). */
int smtp_engine_body_end(smtp_engine *e);
/* CHUNKING (RFC 3030): instead of DATA, the body in chunks, each sent as
 * "BDAT n" with its bytes (line ends made CRLF, no dot-stuffing); last
 * marks the final chunk (it may be empty). SMTP_E_STATE (no recipient,
 * DATA already staged, LAST already sent), SMTP_E_LINE as for
 * smtp_engine_body, SMTP_E_LIMIT, SMTP_E_NOMEM; on error nothing of this
 * chunk is staged. On success smtp_engine_chunk_len() is the chunk's size
 * after framing (0: nothing staged for a non-last piece). */
int smtp_engine_bdat(smtp_engine *e, const char *data, size_t len, int last);
/* RSET, NOOP and QUIT as operations of their own. */
int smtp_engine_rset(smtp_engine *e);
int smtp_engine_noop(smtp_engine *e);
int smtp_engine_quit(smtp_engine *e);

/* Marks the session unusable (the driver lost the connection or gave up)
 * and frees the I/O buffers; every later operation is SMTP_E_STATE. */
void smtp_engine_close(smtp_engine *e);

/* Queries: see the conventions at the top. */

/* Transactions started and not yet reported (0 outside a transaction). */
int smtp_engine_transactions(const smtp_engine *e);
/* 1 when smtp_engine_mail may start the next transaction now, behind
 * those in flight (PIPELINING active, the newest one's body complete). */
int smtp_engine_can_chain(const smtp_engine *e);
/* Commands staged and not yet released to the output (without PIPELINING
 * a command waits for the reply to the one before it). */
int smtp_engine_staged(const smtp_engine *e);
/* 1 once no further command can be sent (closed, 421, QUIT answered, or a
 * protocol error). */
int smtp_engine_dead(const smtp_engine *e);
/* 1 when EHLO (or LHLO) was accepted: the capabilities are valid. */
int smtp_engine_extended(const smtp_engine *e);
/* The oldest command in flight; SMTP_CMD_DATA while the body is being
 * written; SMTP_CMD_NONE when nothing is awaited. */
smtp_cmd smtp_engine_waiting_for(const smtp_engine *e);
/* The server's SIZE limit; 0 when none (or absurdly large). */
unsigned long long smtp_engine_max_size(const smtp_engine *e);
/* The id of the newest transaction smtp_engine_mail opened (0: none). */
unsigned smtp_engine_last_txn(const smtp_engine *e);
/* After SMTP_E_LINE from smtp_engine_body/bdat: the long line, from 1. */
unsigned long long smtp_engine_line_error(const smtp_engine *e);
/* After a successful smtp_engine_bdat: the octets of that chunk. */
size_t smtp_engine_chunk_len(const smtp_engine *e);
/* Octets ever put into the output, and octets the transport took: data
 * queued is on the wire once sent reaches the written it had just after. */
unsigned long long smtp_engine_written(const smtp_engine *e);
unsigned long long smtp_engine_sent(const smtp_engine *e);

/* The current state and operation (for tests and debugging). */
smtp_state smtp_engine_state(const smtp_engine *e);
smtp_op smtp_engine_op(const smtp_engine *e);
/* "connected", "ready", ...; "idle", "transaction", "body", ... */
const char *smtp_state_name(smtp_state s);
const char *smtp_op_name(smtp_op op);

/* Tracing of transitions (off by default). While on, every transition
 * appends a line "state/op -> state/op" (at most 4 KiB are kept; more are
 * dropped). smtp_engine_trace returns the lines recorded since the last
 * call (borrowed, valid until the next mutating call; *len 0: none) and
 * forgets them. */
void smtp_engine_set_trace(smtp_engine *e, int on);
const char *smtp_engine_trace(smtp_engine *e, size_t *len);

/* Uses PIPELINING when the server offers it (on by default). */
void smtp_engine_set_pipelining(smtp_engine *e, int on);

/* Capability i (from 0) of the last EHLO reply: keyword and parameters
 * (borrowed). Returns 1, or 0 when there is no such line (or no EHLO). */
int smtp_engine_cap(const smtp_engine *e, int i, const char **kw, size_t *kwlen,
                    const char **params, size_t *plen);
/* Looks a keyword up, case-insensitively; params may be NULL. 1 when
 * offered (params/plen then set), else 0. */
int smtp_engine_has_cap(const smtp_engine *e, const char *kw, const char **params,
                        size_t *plen);

/* "ehlo", "rcpt", ...: the lower-case name of a command; "none" when out
 * of range. */
const char *smtp_cmd_name(smtp_cmd c);

/* Validates a string for use inside a command: no control characters
 * (CR, LF, NUL, ...), at most max bytes. 0 or SMTP_E_ARGUMENT. */
int smtp_check_arg(const char *s, size_t len, size_t max);

/* Validates an envelope address (without the angle brackets): no control
 * characters, no '<' or '>', at most 998 octets. 0 or SMTP_E_ARGUMENT. */
int smtp_check_address(const char *s);

#endif
