/* A minimal test harness for the C units: each CHECK prints one TAP line,
 * and check_done() prints "N passed, N failed" and gives the exit status. */
#ifndef SMTP_CHECK_H
#define SMTP_CHECK_H

#include <stdio.h>
#include <string.h>

static int check_passed, check_failed;

#define CHECK(cond, name) check_report((cond) ? 1 : 0, (name), __FILE__, __LINE__)

#define CHECK_MEM(got, got_len, want, want_len, name)                                   \
    check_report(((got_len) == (want_len) && memcmp((got), (want), (want_len)) == 0),   \
                 (name), __FILE__, __LINE__)

static void check_report(int ok, const char *name, const char *file, int line)
{
    if (ok) {
        check_passed++;
        printf("ok %d - %s\n", check_passed + check_failed, name);
    } else {
        check_failed++;
        printf("not ok %d - %s (%s:%d)\n", check_passed + check_failed, name, file, line);
    }
}

static int check_done(void)
{
    printf("%d passed, %d failed\n", check_passed, check_failed);
    return check_failed ? 1 : 0;
}

#endif
