/* The increment protocol as a single-threaded C epoll server: the ceiling
 * that shows benchmarks/compare.py's load generator is not what limits the
 * Python servers (it must run well above all of them in the same run).
 *
 *   cc -O2 -o epoll_server epoll_server.c && ./epoll_server PORT [--backlog N]
 *
 * Prints "listening on 127.0.0.1:PORT" once it accepts.  Flow control: a
 * reply the kernel does not take is kept, and reading from that client stops
 * until it is sent.  Half-close: once the client stops sending, what is owed
 * is sent, then the connection is closed.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define CHUNK 65536

typedef struct {
    int fd, in_msg;
    unsigned char *pending; /* reply bytes the kernel did not take */
    size_t start, end;
} Conn;

static int ep;
static unsigned char buffer[CHUNK], replies[CHUNK];

static void arm(Conn *c, int op) {
    struct epoll_event ev = {.events = c->end > c->start ? EPOLLOUT : EPOLLIN, .data.ptr = c};
    epoll_ctl(ep, op, c->fd, &ev);
}

static void drop(Conn *c) {
    close(c->fd);
    free(c->pending);
    free(c);
}

/* Send what is pending; 1 if all of it went, 0 if some waits, -1 on error. */
static int flush(Conn *c) {
    while (c->start < c->end) {
        ssize_t n = send(c->fd, c->pending + c->start, c->end - c->start, MSG_NOSIGNAL);
        if (n < 0) return errno == EAGAIN ? 0 : -1;
        c->start += n;
    }
    c->start = c->end = 0;
    return 1;
}

/* Reply to one read into out; returns the reply's length.  Runs inside a
 * message are found with memchr and incremented in a loop the compiler
 * vectorizes. */
static size_t increment(Conn *c, const unsigned char *data, size_t n, unsigned char *out) {
    size_t pos = 0, len = 0;
    while (pos < n) {
        if (!c->in_msg) {
            const unsigned char *open = memchr(data + pos, '^', n - pos);
            if (!open) break;
            pos = open - data + 1;
            c->in_msg = 1;
            continue;
        }
        const unsigned char *close = memchr(data + pos, '$', n - pos);
        size_t end = close ? (size_t)(close - data) : n;
        for (size_t i = pos; i < end; i++) out[len++] = (unsigned char)(data[i] + 1);
        pos = end;
        if (close) pos++, c->in_msg = 0;
    }
    return len;
}

static void serve(Conn *c) {
    if (c->end > c->start) { /* waiting to send: only EPOLLOUT is armed */
        int sent = flush(c);
        if (sent < 0) return drop(c);
        if (sent == 0) return;
        return arm(c, EPOLL_CTL_MOD);
    }
    ssize_t n = recv(c->fd, buffer, CHUNK, 0);
    if (n < 0) {
        if (errno != EAGAIN) drop(c);
        return;
    }
    if (n == 0) return drop(c); /* nothing pending: all owed was sent */
    size_t len = increment(c, buffer, n, replies), sent = 0;
    while (sent < len) {
        ssize_t k = send(c->fd, replies + sent, len - sent, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno != EAGAIN) return drop(c);
            break;
        }
        sent += k;
    }
    if (sent < len) {
        c->pending = realloc(c->pending, len - sent);
        memcpy(c->pending, replies + sent, len - sent);
        c->start = 0, c->end = len - sent;
        arm(c, EPOLL_CTL_MOD);
    }
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fputs("usage: epoll_server PORT [--backlog N]\n", stderr);
        return 2;
    }
    int backlog = argc > 3 && !strcmp(argv[2], "--backlog") ? atoi(argv[3]) : 1024;
    struct rlimit files;
    getrlimit(RLIMIT_NOFILE, &files);
    files.rlim_cur = files.rlim_max;
    setrlimit(RLIMIT_NOFILE, &files);
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in at = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    inet_pton(AF_INET, "127.0.0.1", &at.sin_addr);
    socklen_t len = sizeof at;
    if (bind(listener, (struct sockaddr *)&at, len) < 0 || listen(listener, backlog) < 0) {
        perror("epoll_server: listen");
        return 1;
    }
    getsockname(listener, (struct sockaddr *)&at, &len);
    printf("listening on 127.0.0.1:%d\n", ntohs(at.sin_port));
    fflush(stdout);
    ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL}, events[256];
    epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev);
    for (;;) {
        int n = epoll_wait(ep, events, 256, -1);
        for (int i = 0; i < n; i++) {
            Conn *c = events[i].data.ptr;
            if (c) {
                serve(c);
                continue;
            }
            int fd;
            while ((fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                if (send(fd, "*", 1, MSG_NOSIGNAL) != 1) {
                    close(fd);
                    continue;
                }
                c = calloc(1, sizeof *c);
                c->fd = fd;
                arm(c, EPOLL_CTL_ADD);
            }
        }
    }
}
