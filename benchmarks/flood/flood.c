/* A connection flood for benchmarks/flood.py: open TCP connections to
 * 127.0.0.1:PORT, CONCURRENCY at a time, and close each as soon as it is
 * established (or has failed), for SECONDS; print how many completed.
 * A lean, independent load generator: the server must not be able to keep up.
 *
 *   cc -O2 -o flood flood.c && ./flood PORT SECONDS [CONCURRENCY]
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int open_one(int ep, struct sockaddr_in *to) {
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (s < 0) return -1;
    if (connect(s, (struct sockaddr *)to, sizeof *to) < 0 && errno != EINPROGRESS) {
        close(s);
        return -1;
    }
    struct epoll_event ev = {.events = EPOLLOUT, .data.fd = s};
    epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
    return s;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: flood PORT SECONDS [CONCURRENCY]\n");
        return 2;
    }
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    double seconds = atof(argv[2]), end = now() + seconds;
    int concurrency = argc > 3 ? atoi(argv[3]) : 200;
    struct rlimit files;
    getrlimit(RLIMIT_NOFILE, &files);
    files.rlim_cur = files.rlim_max;  /* CONCURRENCY sockets at once */
    setrlimit(RLIMIT_NOFILE, &files);
    int ep = epoll_create1(0), open_count = 0;
    long connected = 0, failed = 0;
    struct epoll_event events[256];
    while (now() < end) {
        while (open_count < concurrency && open_one(ep, &to) >= 0) open_count++;
        int n = epoll_wait(ep, events, 256, 100);
        for (int i = 0; i < n; i++) {
            int s = events[i].data.fd, err = 0;
            socklen_t len = sizeof err;
            getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len);
            if (err) failed++; else connected++;
            close(s);
            open_count--;
        }
    }
    printf("%ld %ld\n", connected, failed);
    return 0;
}
