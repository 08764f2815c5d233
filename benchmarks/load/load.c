/* A native load generator for benchmarks/compare.py: the increment protocol
 * driven from C with epoll, every reply byte checked, so that the generator
 * is not what limits a Python server's figure.
 *
 *   cc -O2 -pthread -o load load.c
 *   ./load churn  [-c 50] [-d 3] [-t 1] HOST PORT   connect, read '*', close
 *   ./load ping   [-c 100] [-l 8] [-d 5] [-t 1] HOST PORT
 *                 C connections, each sends '^' + L bytes + '$' and waits for
 *                 its L reply bytes, again and again
 *   ./load stream [-m 256] HOST PORT                one message of M MiB
 *   ./load burst  [-n 10000] [-H 1] HOST PORT       N connections at once,
 *                 each greeted and answered once ("^burst$" -> "cvstu"),
 *                 held until all are served and H seconds more
 *
 * -t spreads churn and ping over T threads (an epoll loop each); -T is the
 * time limit of the whole run (default 60 s).  Prints one JSON object (rate,
 * latency_p50/p99 in seconds, ...), as incproto-client --json does; on a
 * wrong byte, a refused or closed connection or the time limit, prints a
 * one-line reason on standard error and exits 1.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { CHURN, PING, STREAM, BURST };
enum { OPENING, ACTIVE, HELD, DONE };

#define BUCKETS 1000000 /* latency histogram: 1 us buckets up to 1 s */
#define PATTERN 65521   /* stream data repeats with a prime period */
#define CHUNK 65536

static struct {
    int mode, connections, length, threads;
    double duration, mebibytes, hold, limit;
    struct sockaddr_storage to;
    socklen_t tolen;
} opt = {CHURN, 0, 8, 1, 0, 256, 1, 60, {0}, 0};

static double started, deadline;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void fail(const char *format, ...) {
    va_list args;
    va_start(args, format);
    fputs("load: ", stderr);
    vfprintf(stderr, format, args);
    fputc('\n', stderr);
    va_end(args);
    exit(1);
}

typedef struct {
    int fd, number, state;
    size_t sent, got;      /* of the message (or stream) in progress */
    double at;             /* when the connect or the message began */
} Conn;

typedef struct {
    int first, count;      /* the connections this thread drives */
    Conn *conns;
    int ep, open;
    long done;             /* connections churned, messages answered */
    uint32_t *histogram;
    long overflow;
    double served;         /* burst: when the last was answered */
} Worker;

static unsigned char message[1 << 16], reply[1 << 16];
static size_t message_len, reply_len;
static unsigned char pattern[2 * PATTERN], answer[2 * PATTERN]; /* twice over */

static void record(Worker *w, double seconds) {
    long us = (long)(seconds * 1e6);
    if (us < 0) us = 0;
    if (us < BUCKETS) w->histogram[us]++;
    else w->overflow++;
}

static void watch(Worker *w, Conn *c, uint32_t events, int op) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(w->ep, op, c->fd, &ev) < 0) fail("epoll_ctl: %s", strerror(errno));
}

static void open_conn(Worker *w, Conn *c) {
    c->fd = socket(opt.to.ss_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0) fail("socket: %s", strerror(errno));
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (struct sockaddr *)&opt.to, opt.tolen) < 0 && errno != EINPROGRESS)
        fail("connection %d: connect: %s", c->number, strerror(errno));
    c->state = OPENING;
    c->sent = c->got = 0;
    c->at = now();
    watch(w, c, EPOLLIN, EPOLL_CTL_ADD);
    w->open++;
}

static void close_conn(Worker *w, Conn *c) {
    close(c->fd); /* also leaves the epoll set */
    c->fd = -1;
    c->state = DONE;
    w->open--;
}

/* Read into buf; 0 on EAGAIN, fails on EOF or error. */
static ssize_t receive(Conn *c, unsigned char *buf, size_t size, const char *waiting) {
    ssize_t n = recv(c->fd, buf, size, 0);
    if (n > 0) return n;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
    if (n == 0) fail("connection %d: closed by the server while waiting for %s", c->number, waiting);
    fail("connection %d: %s while waiting for %s", c->number, strerror(errno), waiting);
    return -1;
}

/* The greeting: returns 1 once '*' arrived; anything more is an error. */
static int greeted(Conn *c) {
    unsigned char buf[64];
    ssize_t n = receive(c, buf, sizeof buf, "the greeting");
    if (n == 0) return 0;
    if (buf[0] != '*') fail("connection %d: greeting was byte 0x%02x, not '*'", c->number, buf[0]);
    if (n > 1) fail("connection %d: %zd bytes after the greeting, none owed", c->number, n - 1);
    return 1;
}

static void send_all(Conn *c, const unsigned char *data, size_t len) {
    while (len) {
        ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);
        if (n < 0) fail("connection %d: send: %s", c->number, strerror(errno));
        data += n, len -= n; /* small messages: the kernel takes them whole */
    }
}

/* Check reply bytes against what is owed; returns how many arrived. */
static ssize_t check_reply(Conn *c, const unsigned char *want, size_t owed) {
    unsigned char buf[CHUNK];
    ssize_t n = receive(c, buf, sizeof buf, "a reply");
    if ((size_t)n > owed) fail("connection %d: %zd bytes more than owed", c->number, n - (ssize_t)owed);
    for (ssize_t i = 0; i < n; i++)
        if (buf[i] != want[c->got + i])
            fail("connection %d: reply byte %zu is 0x%02x, not 0x%02x", c->number,
                 c->got + i, buf[i], want[c->got + i]);
    return n;
}

static int running(void) { return now() < started + opt.duration; }

static void *drive(void *arg) {
    Worker *w = arg;
    w->ep = epoll_create1(0);
    w->histogram = calloc(BUCKETS, sizeof *w->histogram);
    if (w->ep < 0 || !w->histogram) fail("out of resources");
    for (int i = 0; i < w->count; i++) {
        w->conns[i].number = w->first + i;
        open_conn(w, &w->conns[i]);
    }
    int greeted_count = 0, served = 0;
    struct epoll_event events[256];
    while (w->open) {
        double t = now();
        if (t > deadline) fail("time limit of %.0f s reached with %d connections open", opt.limit, w->open);
        int n = epoll_wait(w->ep, events, 256, 100);
        for (int i = 0; i < n; i++) {
            Conn *c = events[i].data.ptr;
            if (c->state == OPENING) {
                if (!greeted(c)) continue;
                t = now();
                if (opt.mode == CHURN) {
                    record(w, t - c->at);
                    w->done++;
                    close_conn(w, c);
                    if (running()) open_conn(w, c);
                    continue;
                }
                c->state = ACTIVE;
                if (opt.mode == BURST) {
                    send_all(c, message, message_len);
                    continue;
                }
                if (++greeted_count == w->count) { /* ping: all start at once */
                    started = started ? started : t;
                    for (int j = 0; j < w->count; j++) {
                        w->conns[j].at = now();
                        send_all(&w->conns[j], message, message_len);
                    }
                }
                continue;
            }
            if (c->state == HELD)
                fail("connection %d: bytes or a close from the server, none owed", c->number);
            c->got += check_reply(c, reply, reply_len - c->got);
            if (c->got < reply_len) continue;
            t = now();
            if (opt.mode == BURST) {
                c->state = HELD;
                if (++served == w->count) {
                    w->served = t;
                    started = t; /* hold from here */
                    opt.duration = opt.hold;
                }
                continue;
            }
            record(w, t - c->at);
            w->done++;
            c->got = 0;
            if (running()) {
                c->at = t;
                send_all(c, message, message_len);
            } else {
                close_conn(w, c);
            }
        }
        if (opt.mode == BURST && served == w->count && !running()) {
            for (int j = 0; j < w->count; j++) close_conn(w, &w->conns[j]);
        }
    }
    return NULL;
}

static double percentile(Worker *ws, int count, double p) {
    long total = 0, seen = 0;
    for (int i = 0; i < count; i++) {
        total += ws[i].overflow;
        for (long b = 0; b < BUCKETS; b++) total += ws[i].histogram[b];
    }
    long rank = (long)(p / 100.0 * (total - 1)) + 1;
    for (long b = 0; b < BUCKETS; b++) {
        for (int i = 0; i < count; i++) seen += ws[i].histogram[b];
        if (seen >= rank) return (b + 0.5) / 1e6;
    }
    return 1.0;
}

static void stream(void) {
    Conn c = {.number = 0};
    Worker w = {0};
    w.ep = epoll_create1(0);
    open_conn(&w, &c);
    size_t total = (size_t)(opt.mebibytes * 1024 * 1024), sent = 0, got = 0;
    unsigned char in[CHUNK];
    int sending = 1;
    double first = 0, last = 0;
    struct epoll_event events[4];
    for (;;) {
        if (now() > deadline) fail("time limit of %.0f s reached, %zu of %zu bytes back", opt.limit, got, total);
        if (epoll_wait(w.ep, events, 4, 100) <= 0) continue;
        if (c.state == OPENING) {
            if (!greeted(&c)) continue;
            c.state = ACTIVE;
            first = now();
            send_all(&c, (const unsigned char *)"^", 1);
            watch(&w, &c, EPOLLIN | EPOLLOUT, EPOLL_CTL_MOD);
            continue;
        }
        if (events[0].events & EPOLLIN) {
            ssize_t n = receive(&c, in, sizeof in, "a reply");
            if ((size_t)n > total - got) fail("connection 0: more reply bytes than owed");
            for (ssize_t done = 0; done < n;) { /* compare in runs of at most PATTERN */
                const unsigned char *want = answer + (got + done) % PATTERN;
                size_t run = n - done < PATTERN ? n - done : PATTERN;
                if (memcmp(in + done, want, run)) {
                    size_t i = 0;
                    while (in[done + i] == want[i]) i++;
                    fail("connection 0: reply byte %zu is 0x%02x, not 0x%02x", got + done + i,
                         in[done + i], want[i]);
                }
                done += run;
            }
            got += n;
            if (got == total) {
                last = now();
                break;
            }
        }
        if (sending && (events[0].events & EPOLLOUT)) {
            size_t len = total - sent < PATTERN ? total - sent : PATTERN;
            ssize_t n = send(c.fd, pattern + sent % PATTERN, len, MSG_NOSIGNAL);
            if (n < 0 && errno != EAGAIN) fail("connection 0: send: %s", strerror(errno));
            if (n > 0) sent += n;
            if (sent == total) {
                sending = 0;
                watch(&w, &c, EPOLLIN, EPOLL_CTL_MOD);
            }
        }
    }
    close(c.fd);
    double seconds = last - first;
    printf("{\"mode\": \"stream\", \"bytes\": %zu, \"seconds\": %.6f, \"mb_per_s\": %.3f}\n",
           total, seconds, total / 1e6 / seconds);
}

static void usage(void) {
    fputs("usage: load churn|ping|stream|burst [-c CONNECTIONS] [-l LENGTH] [-d SECONDS]\n"
          "            [-m MIB] [-n CONNECTIONS] [-H HOLD] [-t THREADS] [-T LIMIT] HOST PORT\n",
          stderr);
    exit(2);
}

int main(int argc, char **argv) {
    if (argc < 2) usage();
    const char *modes[] = {"churn", "ping", "stream", "burst"};
    opt.mode = -1;
    for (int i = 0; i < 4; i++)
        if (!strcmp(argv[1], modes[i])) opt.mode = i;
    if (opt.mode < 0) usage();
    opt.connections = opt.mode == CHURN ? 50 : opt.mode == PING ? 100 : opt.mode == BURST ? 10000 : 1;
    opt.duration = opt.mode == CHURN ? 3 : 5;
    int o;
    optind = 2;
    while ((o = getopt(argc, argv, "c:n:l:d:m:H:t:T:")) != -1) {
        switch (o) {
        case 'c': case 'n': opt.connections = atoi(optarg); break;
        case 'l': opt.length = atoi(optarg); break;
        case 'd': opt.duration = atof(optarg); break;
        case 'm': opt.mebibytes = atof(optarg); break;
        case 'H': opt.hold = atof(optarg); break;
        case 't': opt.threads = atoi(optarg); break;
        case 'T': opt.limit = atof(optarg); break;
        default: usage();
        }
    }
    if (argc - optind != 2 || opt.connections < 1 || opt.threads < 1 || opt.length < 1 ||
        opt.length > (int)sizeof reply || opt.duration < 0)
        usage();
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *found;
    int error = getaddrinfo(argv[optind], argv[optind + 1], &hints, &found);
    if (error) fail("%s: %s", argv[optind], gai_strerror(error));
    memcpy(&opt.to, found->ai_addr, found->ai_addrlen);
    opt.tolen = found->ai_addrlen;
    freeaddrinfo(found);
    struct rlimit files;
    getrlimit(RLIMIT_NOFILE, &files);
    files.rlim_cur = files.rlim_max;
    setrlimit(RLIMIT_NOFILE, &files);
    if ((rlim_t)opt.connections + 64 > files.rlim_cur)
        fail("%d connections need more open files than the limit of %ld", opt.connections,
             (long)files.rlim_cur);

    /* What ping and burst send, and what they must get back. */
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    if (opt.mode == BURST) {
        memcpy(message, "^burst$", 7), message_len = 7;
        memcpy(reply, "cvstu", 5), reply_len = 5;
    } else {
        message[0] = '^';
        for (int i = 0; i < opt.length; i++) {
            message[1 + i] = alphabet[i % 36];
            reply[i] = alphabet[i % 36] + 1;
        }
        message[1 + opt.length] = '$';
        message_len = opt.length + 2, reply_len = opt.length;
    }
    for (int i = 0; i < 2 * PATTERN; i++) {
        unsigned char b = (unsigned char)((i % PATTERN) * 131 + (i % PATTERN) / 256);
        pattern[i] = b == '$' ? '%' : b; /* one long message: no '$' inside */
        answer[i] = (unsigned char)(pattern[i] + 1);
    }

    double begin = now();
    deadline = begin + opt.limit;
    if (opt.mode == STREAM) {
        stream();
        return 0;
    }
    if (opt.mode == BURST) opt.threads = 1;
    if (opt.threads > opt.connections) opt.threads = opt.connections;
    Worker *ws = calloc(opt.threads, sizeof *ws);
    Conn *conns = calloc(opt.connections, sizeof *conns);
    pthread_t *ids = calloc(opt.threads, sizeof *ids);
    started = opt.mode == CHURN ? begin : 0; /* ping: once the first thread's are greeted */
    for (int i = 0, first = 0; i < opt.threads; i++) {
        int count = opt.connections / opt.threads + (i < opt.connections % opt.threads);
        ws[i] = (Worker){.first = first, .count = count, .conns = conns + first};
        first += count;
        pthread_create(&ids[i], NULL, drive, &ws[i]);
    }
    long done = 0;
    for (int i = 0; i < opt.threads; i++) {
        pthread_join(ids[i], NULL);
        done += ws[i].done;
    }
    double end = now();
    if (opt.mode == BURST) {
        printf("{\"mode\": \"burst\", \"connections\": %d, \"seconds\": %.6f}\n", opt.connections,
               ws[0].served - begin);
        return 0;
    }
    double seconds = end - (opt.mode == CHURN ? begin : started);
    printf("{\"mode\": \"%s\", \"%s\": %ld, \"concurrency\": %d, \"seconds\": %.6f, "
           "\"rate\": %.3f, \"latency_p50\": %.7f, \"latency_p99\": %.7f}\n",
           modes[opt.mode], opt.mode == CHURN ? "connections" : "messages", done,
           opt.connections, seconds, done / seconds, percentile(ws, opt.threads, 50),
           percentile(ws, opt.threads, 99));
    return 0;
}
