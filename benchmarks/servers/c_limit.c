/*
 * Reference (d): the fan-out of benchmarks/servers/python_limit.py, in C: the limit of
 * the machine, to read every figure against.
 *
 * One thread, one epoll, raw non-blocking sockets. For each update the producer formats
 * the notification once (the JSON of benchmarks.messages.reference_notification: the
 * same members, in the same order, with ids of the same lengths), prepends the frame
 * header once, and calls send(2) on every client in turn with those same bytes. No
 * backpressure: a client whose socket buffer is full misses the update (EAGAIN); one
 * whose socket took part of a frame is taken off the hot list until epoll says it is
 * writable and the rest is written; one that fails a send or whose read returns 0 is
 * dropped.
 *
 * Just enough WebSocket for benchmarks/loadgen.py: the opening handshake with
 * Sec-WebSocket-Accept (SHA-1 and base64 below, no library) and the subprotocol echoed,
 * one masked request frame answered like benchmarks.messages.reference_ack, then
 * unmasked text frames. A close frame from a client is echoed and the connection ended;
 * anything else it sends afterwards is read and ignored.
 *
 * The control protocol of benchmarks/servers/control.py on stdin and stdout: it prints
 * {"port": N}, then answers "start", "stats" and "stop" lines; end of input ends it.
 *
 * Built and started by benchmarks/servers/c_limit.py (cc -O2), which passes the thingID:
 *     c_limit THING_ID
 * Linux only (epoll), like the rest of the benchmark. Binds 127.0.0.1 only.
 */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

enum { HANDSHAKING, SUBSCRIBING, OPEN };
#define INBUF 8192
#define FRAME_MAX 1024
#define EVENTS 256

struct client {
    int fd;
    int state;
    int hot;          /* index in the hot list, or -1 */
    size_t inlen;
    char in[INBUF];
    char *rest;       /* the unwritten end of a frame, or NULL */
    size_t restlen;
};

static struct client **clients;  /* by descriptor */
static size_t nclients_cap;
static int *hotlist;             /* descriptors of open clients with nothing left to write */
static size_t nhot, hot_cap;
static int epfd, listener;
static const char *thing_id = "urn:uuid:d57772bd-1ee4-5de0-adc5-2008312d73cf";

/* The plan */
static int producing;
static int kind_event;
static double rate;              /* 0: full speed */
static long long count = -1;     /* -1: until stopped */
static long long plan_index;
static double plan_start;
static unsigned long long updates;

/* ------------------------------------------------------------------ small helpers */

static double monotonic(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double wallclock(struct timespec *out) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (out) *out = ts;
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t rng_state;
static uint64_t rng(void) {  /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}

/* A version-4 UUID, 36 characters and a NUL. */
static void uuid4(char *out) {
    static const char hex[] = "0123456789abcdef";
    unsigned char b[16];
    uint64_t a = rng(), c = rng();
    memcpy(b, &a, 8);
    memcpy(b + 8, &c, 8);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    char *p = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) *p++ = '-';
        *p++ = hex[b[i] >> 4];
        *p++ = hex[b[i] & 15];
    }
    *p = 0;
}

/* ISO 8601 UTC with microseconds and a Z, as orjson writes a datetime. */
static void timestamp(char *out, size_t size, struct timespec ts) {
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    snprintf(out, size, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             ts.tv_nsec / 1000);
}

static void write_all(int fd, const char *data, size_t len) {
    while (len) {
        ssize_t n = write(fd, data, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return;
        }
        data += n;
        len -= (size_t)n;
    }
}

static size_t frame_header(unsigned char *out, size_t length) {
    out[0] = 0x81;
    if (length < 126) {
        out[1] = (unsigned char)length;
        return 2;
    }
    out[1] = 126;
    out[2] = (unsigned char)(length >> 8);
    out[3] = (unsigned char)length;
    return 4;
}

/* ------------------------------------------------------------------ SHA-1, base64 */

static uint32_t rol(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

static void sha1(const unsigned char *data, size_t len, unsigned char out[20]) {
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    size_t total = ((len + 8) / 64 + 1) * 64;
    unsigned char *msg = calloc(total, 1);
    memcpy(msg, data, len);
    msg[len] = 0x80;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++) msg[total - 1 - i] = (unsigned char)(bits >> (8 * i));
    for (size_t off = 0; off < total; off += 64) {
        uint32_t w[80];
        for (int i = 0; i < 16; i++)
            w[i] = (uint32_t)msg[off + 4 * i] << 24 | (uint32_t)msg[off + 4 * i + 1] << 16 |
                   (uint32_t)msg[off + 4 * i + 2] << 8 | msg[off + 4 * i + 3];
        for (int i = 16; i < 80; i++) w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
        for (int i = 0; i < 80; i++) {
            uint32_t f, k;
            if (i < 20) { f = (b & c) | (~b & d); k = 0x5A827999; }
            else if (i < 40) { f = b ^ c ^ d; k = 0x6ED9EBA1; }
            else if (i < 60) { f = (b & c) | (b & d) | (c & d); k = 0x8F1BBCDC; }
            else { f = b ^ c ^ d; k = 0xCA62C1D6; }
            uint32_t t = rol(a, 5) + f + e + k + w[i];
            e = d; d = c; c = rol(b, 30); b = a; a = t;
        }
        h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e;
    }
    free(msg);
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 4; j++) out[4 * i + j] = (unsigned char)(h[i] >> (24 - 8 * j));
}

static void base64(const unsigned char *in, size_t len, char *out) {
    static const char table[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t i = 0;
    char *p = out;
    for (; i + 2 < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        *p++ = table[v >> 18]; *p++ = table[(v >> 12) & 63];
        *p++ = table[(v >> 6) & 63]; *p++ = table[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0);
        *p++ = table[v >> 18]; *p++ = table[(v >> 12) & 63];
        *p++ = i + 1 < len ? table[(v >> 6) & 63] : '=';
        *p++ = '=';
    }
    *p = 0;
}

/* ------------------------------------------------------------------ clients */

static void hot_add(struct client *c) {
    if (nhot == hot_cap) {
        hot_cap = hot_cap ? hot_cap * 2 : 1024;
        hotlist = realloc(hotlist, hot_cap * sizeof *hotlist);
    }
    c->hot = (int)nhot;
    hotlist[nhot++] = c->fd;
}

static void hot_remove(struct client *c) {
    if (c->hot < 0) return;
    int last = hotlist[--nhot];
    hotlist[c->hot] = last;
    clients[last]->hot = c->hot;
    c->hot = -1;
}

static void drop(struct client *c) {
    hot_remove(c);
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    clients[c->fd] = NULL;
    free(c->rest);
    free(c);
}

static void accept_clients(void) {
    for (int i = 0; i < 64; i++) {
        int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK);
        if (fd < 0) return;
        if ((size_t)fd >= nclients_cap) {
            size_t cap = nclients_cap;
            while ((size_t)fd >= cap) cap *= 2;
            clients = realloc(clients, cap * sizeof *clients);
            memset(clients + nclients_cap, 0, (cap - nclients_cap) * sizeof *clients);
            nclients_cap = cap;
        }
        int one = 1;  /* as asyncio, Trio and so every server here: no Nagle delay */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct client *c = calloc(1, sizeof *c);
        c->fd = fd;
        c->state = HANDSHAKING;
        c->hot = -1;
        clients[fd] = c;
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
        epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
    }
}

/* The JSON string value of "key" in json (as a quoted JSON string, or "null"). */
static void json_member(const char *json, const char *key, char *out, size_t size) {
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\"", key);
    const char *p = strstr(json, pattern);
    snprintf(out, size, "null");
    if (!p) return;
    p += strlen(pattern);
    while (*p == ' ' || *p == ':') p++;
    if (*p != '"') return;
    const char *end = strchr(p + 1, '"');
    if (!end || (size_t)(end - p + 2) > size) return;
    memcpy(out, p, (size_t)(end - p + 1));
    out[end - p + 1] = 0;
}

static void handshake(struct client *c) {
    c->in[c->inlen] = 0;
    char *end = strstr(c->in, "\r\n\r\n");
    if (!end) return;
    *end = 0;
    char *key = strcasestr(c->in, "\r\nSec-WebSocket-Key:");
    if (!key) {
        static const char bad[] = "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        send(c->fd, bad, sizeof bad - 1, MSG_NOSIGNAL);
        drop(c);
        return;
    }
    key += strlen("\r\nSec-WebSocket-Key:");
    while (*key == ' ') key++;
    size_t keylen = strcspn(key, " \r\n");
    unsigned char material[128], digest[20];
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    if (keylen > 64) keylen = 64;
    memcpy(material, key, keylen);
    memcpy(material + keylen, guid, sizeof guid - 1);
    sha1(material, keylen + sizeof guid - 1, digest);
    char accept[32];
    base64(digest, 20, accept);
    /* Echo the subprotocol if the client offers it (on its own header line). */
    int echo = 0;
    char *protocol = strcasestr(c->in, "\r\nSec-WebSocket-Protocol:");
    if (protocol) {
        char *eol = strstr(protocol + 2, "\r\n");
        if (eol) *eol = 0;
        echo = strstr(protocol, "webthingprotocol") != NULL;
        if (eol) *eol = '\r';
    }
    char response[512];
    int n = snprintf(response, sizeof response,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n%s\r\n", accept,
                     echo ? "Sec-WebSocket-Protocol: webthingprotocol\r\n" : "");
    send(c->fd, response, (size_t)n, MSG_NOSIGNAL);  /* a few hundred bytes, an empty buffer */
    size_t used = (size_t)(end + 4 - c->in);
    memmove(c->in, c->in + used, c->inlen - used);
    c->inlen -= used;
    c->state = SUBSCRIBING;
}

static void subscribe(struct client *c) {
    unsigned char *b = (unsigned char *)c->in;
    if (c->inlen < 2) return;
    size_t length = b[1] & 0x7F, start = 2;
    if (length == 126) {
        if (c->inlen < 4) return;
        length = (size_t)b[2] << 8 | b[3];
        start = 4;
    } else if (length == 127) {
        drop(c);  /* no subscribe request is that long */
        return;
    }
    int masked = b[1] & 0x80;
    unsigned char mask[4] = {0, 0, 0, 0};
    if (masked) {
        if (c->inlen < start + 4) return;
        memcpy(mask, b + start, 4);
        start += 4;
    }
    if (c->inlen < start + length || start + length >= INBUF) return;
    char payload[INBUF];
    for (size_t i = 0; i < length; i++) payload[i] = (char)(b[start + i] ^ mask[i & 3]);
    payload[length] = 0;

    char operation[128], name[128], correlation[128], id[40], stamp[96];
    json_member(payload, "operation", operation, sizeof operation);
    json_member(payload, "name", name, sizeof name);
    json_member(payload, "correlationID", correlation, sizeof correlation);
    uuid4(id);
    struct timespec now;
    wallclock(&now);
    timestamp(stamp, sizeof stamp, now);
    unsigned char frame[FRAME_MAX];
    char *json = (char *)frame + 4;
    int n = snprintf(json, FRAME_MAX - 4,
                     "{\"thingID\":\"%s\",\"messageID\":\"%s\",\"messageType\":\"response\","
                     "\"operation\":%s,\"name\":%s,\"timestamp\":\"%s\",\"correlationID\":%s}",
                     thing_id, id, operation, name, stamp, correlation);
    unsigned char head[4];
    size_t h = frame_header(head, (size_t)n);
    memcpy(json - h, head, h);
    send(c->fd, json - h, h + (size_t)n, MSG_NOSIGNAL);
    c->inlen = 0;
    c->state = OPEN;
    hot_add(c);
}

static void on_client(struct client *c, uint32_t events) {
    if ((events & EPOLLOUT) && c->rest) {
        ssize_t n = send(c->fd, c->rest, c->restlen, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno != EAGAIN) {
            drop(c);
            return;
        }
        if (n > 0) {
            memmove(c->rest, c->rest + n, c->restlen - (size_t)n);
            c->restlen -= (size_t)n;
        }
        if (!c->restlen) {
            free(c->rest);
            c->rest = NULL;
            struct epoll_event ev = {.events = EPOLLIN, .data.fd = c->fd};
            epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
            hot_add(c);
        }
    }
    if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR))) return;
    if (c->state == OPEN) {
        char scratch[65536];  /* whatever an open client sends is ignored */
        ssize_t n = recv(c->fd, scratch, sizeof scratch, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            drop(c);
        } else if (n > 0 && (scratch[0] & 0x0F) == 0x8) {  /* a close frame: echo, end */
            static const char close_frame[] = "\x88\x02\x03\xe8";  /* 1000 */
            send(c->fd, close_frame, 4, MSG_NOSIGNAL | MSG_DONTWAIT);
            drop(c);
        }
        return;
    }
    ssize_t n = recv(c->fd, c->in + c->inlen, INBUF - 1 - c->inlen, 0);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        drop(c);
        return;
    }
    if (n < 0) return;
    c->inlen += (size_t)n;
    if (c->state == HANDSHAKING) handshake(c);
    if (clients[c->fd] == c && c->state == SUBSCRIBING) subscribe(c);
    else if (clients[c->fd] == c && c->inlen >= INBUF - 1) drop(c);
}

/* ------------------------------------------------------------------ the hot path */

static void publish(void) {
    static unsigned char frame[FRAME_MAX];
    char id[40], stamp[96];
    struct timespec now;
    double t = wallclock(&now);
    uuid4(id);
    timestamp(stamp, sizeof stamp, now);
    updates++;
    char *json = (char *)frame + 4;
    int n = snprintf(json, FRAME_MAX - 4,
                     "{\"messageID\":\"%s\",\"messageType\":\"notification\",\"name\":\"%s\","
                     "\"%s\":{\"n\":%llu,\"t\":%.7f},\"timestamp\":\"%s\",\"operation\":\"%s\","
                     "\"thingID\":\"%s\",\"correlationID\":"
                     "\"00000000-0000-4000-8000-000000000000\"}",
                     id, kind_event ? "ticked" : "tick", kind_event ? "data" : "value",
                     updates, t, stamp, kind_event ? "subscribeevent" : "observeproperty",
                     thing_id);
    unsigned char head[4];
    size_t h = frame_header(head, (size_t)n);
    unsigned char *start = (unsigned char *)json - h;
    memcpy(start, head, h);
    size_t size = h + (size_t)n;
    /* Backwards, so that a client taken off the list (swapped with the last one, which
     * was already served) never makes the loop skip one. */
    for (size_t i = nhot; i-- > 0;) {
        int fd = hotlist[i];
        ssize_t sent = send(fd, start, size, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (sent == (ssize_t)size) continue;
        struct client *c = clients[fd];
        if (sent < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) continue;  /* full: missed */
            drop(c);
            continue;
        }
        c->restlen = size - (size_t)sent;
        c->rest = malloc(c->restlen);
        memcpy(c->rest, start + sent, c->restlen);
        hot_remove(c);
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.fd = fd};
        epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev);
    }
}

/* ------------------------------------------------------------------ control */

static char control[65536];
static size_t control_len;

static double json_number(const char *line, const char *key, double otherwise) {
    char pattern[32];
    snprintf(pattern, sizeof pattern, "\"%s\"", key);
    const char *p = strstr(line, pattern);
    if (!p) return otherwise;
    p += strlen(pattern);
    while (*p == ' ' || *p == ':') p++;
    if (!strncmp(p, "null", 4)) return otherwise;
    char *end;
    double v = strtod(p, &end);
    return end == p ? otherwise : v;
}

static void reply_stats(void) {
    char out[256];
    int n = snprintf(out, sizeof out,
                     "{\"updates\":%llu,\"producing\":%s,\"cpu\":%.6f,\"time\":%.6f}\n",
                     updates, producing ? "true" : "false", cpu_seconds(), wallclock(NULL));
    write_all(1, out, (size_t)n);
}

static void on_line(char *line) {
    if (strstr(line, "\"start\"")) {
        kind_event = strstr(line, "\"event\"") != NULL;
        rate = json_number(line, "rate", 0);
        count = (long long)json_number(line, "count", -1);
        plan_index = 0;
        plan_start = monotonic();
        producing = count != 0;
        write_all(1, "{\"ok\":true}\n", 12);
    } else if (strstr(line, "\"stop\"")) {
        producing = 0;
        reply_stats();
    } else if (strstr(line, "\"stats\"")) {
        reply_stats();
    } else {
        static const char error[] = "{\"error\":\"unknown op\"}\n";
        write_all(1, error, sizeof error - 1);
    }
}

static int on_control(void) {
    ssize_t n = read(0, control + control_len, sizeof control - 1 - control_len);
    if (n <= 0) return n < 0 && errno == EINTR;
    control_len += (size_t)n;
    char *start = control, *newline;
    while ((newline = memchr(start, '\n', control_len - (size_t)(start - control)))) {
        *newline = 0;
        if (newline > start) on_line(start);
        start = newline + 1;
    }
    control_len -= (size_t)(start - control);
    memmove(control, start, control_len);
    return 1;
}

/* ------------------------------------------------------------------ main */

int main(int argc, char **argv) {
    if (argc > 1) thing_id = argv[1];
    signal(SIGPIPE, SIG_IGN);
    struct rlimit limit;
    if (!getrlimit(RLIMIT_NOFILE, &limit)) {
        limit.rlim_cur = limit.rlim_max == RLIM_INFINITY ? 1 << 20 : limit.rlim_max;
        setrlimit(RLIMIT_NOFILE, &limit);
    }
    rng_state = (uint64_t)wallclock(NULL) * 1000003ULL ^ (uint64_t)getpid() << 32 ^ 0x9E3779B97F4A7C15ULL;
    nclients_cap = 4096;
    clients = calloc(nclients_cap, sizeof *clients);

    listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = 0};
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listener, (struct sockaddr *)&address, sizeof address) || listen(listener, 4096)) {
        perror("c_limit: listen");
        return 1;
    }
    socklen_t length = sizeof address;
    getsockname(listener, (struct sockaddr *)&address, &length);
    epfd = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = listener};
    epoll_ctl(epfd, EPOLL_CTL_ADD, listener, &ev);
    ev.data.fd = 0;
    int no_control = epoll_ctl(epfd, EPOLL_CTL_ADD, 0, &ev) != 0;
    char line[64];
    int n = snprintf(line, sizeof line, "{\"port\":%d}\n", ntohs(address.sin_port));
    write_all(1, line, (size_t)n);
    if (no_control) return 0;  /* stdin is no pipe (a file, /dev/null): nothing to obey */

    struct epoll_event events[EVENTS];
    for (;;) {
        int timeout = -1;
        if (producing) {
            if (rate <= 0) {
                timeout = 0;
            } else {
                double wait = plan_start + plan_index / rate - monotonic();
                timeout = wait <= 0 ? 0 : (int)(wait * 1000);
            }
        }
        int ready = epoll_wait(epfd, events, EVENTS, timeout);
        for (int i = 0; i < ready; i++) {
            int fd = events[i].data.fd;
            if (fd == listener) {
                accept_clients();
            } else if (fd == 0) {
                if (!on_control()) return 0;
            } else if ((size_t)fd < nclients_cap && clients[fd]) {
                on_client(clients[fd], events[i].events);
            }
        }
        if (producing && (rate <= 0 || monotonic() >= plan_start + plan_index / rate)) {
            plan_index++;
            publish();
            if (count >= 0 && plan_index >= count) producing = 0;
        }
    }
}
