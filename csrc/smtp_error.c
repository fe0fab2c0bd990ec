#include "smtp_error.h"

const char *smtp_strerror(int code)
{
    switch (code) {
    case SMTP_OK: return "success";
    case SMTP_E_NOMEM: return "out of memory";
    case SMTP_E_LIMIT: return "size limit exceeded";
    case SMTP_E_PROTOCOL: return "protocol error";
    case SMTP_E_ARGUMENT: return "invalid argument";
    case SMTP_E_STATE: return "not allowed in this session state";
    case SMTP_E_SIZE: return "message exceeds the server's size limit";
    case SMTP_E_TIMEOUT: return "timed out";
    case SMTP_E_CLOSED: return "connection closed";
    case SMTP_E_IO: return "input/output error";
    case SMTP_E_CONNECT: return "could not connect";
    case SMTP_E_LINE: return "message line longer than 998 octets";
    case SMTP_E_TLS: return "TLS failure";
    case SMTP_E_INSECURE: return "authentication refused over an unencrypted connection";
    default: return "unknown error";
    }
}
