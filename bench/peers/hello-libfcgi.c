/*
 * The libfcgi peer of the benchmark (bench/scenarios/hello.ts): the canonical FastCGI "hello" program (an FCGI_Accept loop
 * printing "123"), pre-forked so it can keep up with nginx's concurrency.
 *
 *   hello-libfcgi PORT NPROCS
 *
 * The parent opens 127.0.0.1:PORT, puts it on fd 0 (FCGI_LISTENSOCK_FILENO, where FCGI_Accept
 * looks for the listening socket, as under spawn-fcgi or cgi-fcgi -start), forks NPROCS children
 * that accept on it, and waits. libfcgi serves one connection at a time per process (a kept
 * connection pins its process), so NPROCS must exceed the number of connections nginx keeps open.
 *
 * Built by the benchmark at run time: gcc -O2 -o hello-libfcgi hello-libfcgi.c -lfcgi
 */
#include <fcgi_stdio.h> /* first: it replaces stdio's printf with the FastCGI stream's */

#include <fcgiapp.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_PROCS 1024

static pid_t children[MAX_PROCS];
static int nchildren;

static void stop_children(int sig) {
    for (int i = 0; i < nchildren; i++) kill(children[i], SIGTERM);
    /* _exit: we are in a signal handler, and the children's stdio is none of our business. */
    _exit(sig == SIGTERM ? 0 : 128 + sig);
}

static void serve(void) {
    while (FCGI_Accept() >= 0) {
        printf("Content-Type: text/plain\r\n\r\n123");
    }
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s PORT NPROCS\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]);
    int nprocs = atoi(argv[2]);
    if (port <= 0 || port > 65535 || nprocs <= 0 || nprocs > MAX_PROCS) {
        fprintf(stderr, "hello-libfcgi: bad PORT or NPROCS\n");
        return 2;
    }
    if (FCGX_Init() != 0) {
        fprintf(stderr, "hello-libfcgi: FCGX_Init failed\n");
        return 1;
    }
    /* An explicit loopback host: ":PORT" alone would bind every interface. */
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    int fd = FCGX_OpenSocket(addr, 1024);
    if (fd < 0) {
        fprintf(stderr, "hello-libfcgi: cannot listen on %s\n", addr);
        return 1;
    }
    if (fd != 0) {
        if (dup2(fd, 0) < 0) {
            perror("hello-libfcgi: dup2");
            return 1;
        }
        close(fd);
    }

    pid_t parent = getpid();
    for (int i = 0; i < nprocs; i++) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("hello-libfcgi: fork");
            stop_children(SIGTERM);
        }
        if (pid == 0) {
            /* Die with the parent, so a killed benchmark leaves no stray workers behind. */
            prctl(PR_SET_PDEATHSIG, SIGTERM);
            if (getppid() != parent) _exit(1);
            serve();
            return 0;
        }
        children[nchildren++] = pid;
    }
    signal(SIGTERM, stop_children);
    signal(SIGINT, stop_children);
    /* A worker that dies is a broken benchmark, not something to paper over by restarting it. */
    int status;
    pid_t dead = wait(&status);
    if (dead > 0) fprintf(stderr, "hello-libfcgi: worker %d exited (status %d)\n", (int)dead, status);
    stop_children(SIGTERM);
    return 1;
}
