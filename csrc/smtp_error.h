/* Error codes shared by every C piece of the core. All are negative; 0 is
 * success. smtp_strerror() gives the one readable text for each. */
#ifndef SMTP_ERROR_H
#define SMTP_ERROR_H

enum {
    SMTP_OK = 0,
    SMTP_E_NOMEM = -1,     /* allocation failed */
    SMTP_E_LIMIT = -2,     /* a configured size limit was exceeded */
    SMTP_E_PROTOCOL = -3,  /* the peer broke the protocol */
    SMTP_E_ARGUMENT = -4,  /* caller input that cannot go on the wire */
    SMTP_E_STATE = -5,     /* call not valid in the current session state */
    SMTP_E_SIZE = -6,      /* message larger than the server's SIZE limit */
    SMTP_E_TIMEOUT = -7,   /* deadline passed */
    SMTP_E_CLOSED = -8,    /* connection closed by the peer */
    SMTP_E_IO = -9,        /* other system error (errno kept by the caller) */
    SMTP_E_CONNECT = -10,  /* no address could be connected */
    SMTP_E_LINE = -11,     /* a message line longer than 998 octets */
    SMTP_E_TLS = -12,      /* TLS handshake or certificate verification failed */
    SMTP_E_INSECURE = -13  /* AUTH refused: the channel is not encrypted */
};

const char *smtp_strerror(int code);

#endif
