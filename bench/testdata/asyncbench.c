// asyncbench: asynchronous connects (issue 11), from one thread, directly (mode "direct": what
// torsocks intercepts) or speaking SOCKS5 itself to 127.0.0.1:SOCKSPORT (mode "socks").
//   asyncbench MODE many K HOST PORT SOCKSPORT   K non-blocking connects started at once, one
//       poll() loop (socks mode: each socket's greeting and CONNECT by IP driven by the same
//       loop); prints ms=X, from the first socket() until every connection is established
//       (direct: writable with SO_ERROR 0; socks: the CONNECT's success reply read)
//   asyncbench MODE ttfb N HOST PORT SOCKSPORT   N GETs one after another (non-blocking connect,
//       poll for writability, "GET / HTTP/1.0", poll for the first byte of the answer); prints
//       ms=X, the median time from socket() to that first byte
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define die(...) do { fprintf(stderr, "asyncbench: " __VA_ARGS__); fprintf(stderr, "\n"); exit(1); } while (0)

static double now_ms(void) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

struct conn {
	int fd, state; // 0 connecting, 1 greeting sent, 2 CONNECT sent, 3 done
	unsigned char buf[32];
	int got;
};

static int socks, port, sport;
static struct in_addr dst;

static void start(struct conn *c) {
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (c->fd < 0) die("socket: %s", strerror(errno));
	struct sockaddr_in sa = {.sin_family = AF_INET};
	if (socks) {
		sa.sin_port = htons(sport);
		inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	} else {
		sa.sin_port = htons(port);
		sa.sin_addr = dst;
	}
	if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS)
		die("connect: %s", strerror(errno));
	c->state = 0;
	c->got = 0;
}

// step advances c on readiness; returns 1 once the connection is established.
static int step(struct conn *c) {
	if (c->state == 0) {
		int e = 0;
		socklen_t l = sizeof e;
		getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &e, &l);
		if (e) die("connect: SO_ERROR %s", strerror(e));
		if (!socks) return c->state = 3;
		unsigned char g[3] = {5, 1, 0};
		if (write(c->fd, g, 3) != 3) die("greeting: %s", strerror(errno));
		c->state = 1;
		return 0;
	}
	ssize_t k = read(c->fd, c->buf + c->got, sizeof c->buf - c->got);
	if (k < 0 && errno == EAGAIN) return 0;
	if (k <= 0) die("read: %s", k ? strerror(errno) : "EOF");
	c->got += k;
	if (c->state == 1 && c->got >= 2) {
		if (c->buf[1] != 0) die("greeting refused");
		unsigned char req[10] = {5, 1, 0, 1};
		memcpy(req + 4, &dst, 4);
		req[8] = port >> 8;
		req[9] = port & 0xff;
		if (write(c->fd, req, 10) != 10) die("CONNECT: %s", strerror(errno));
		c->got = 0;
		c->state = 2;
	} else if (c->state == 2 && c->got >= 4) {
		if (c->buf[1] != 0) die("CONNECT reply %d", c->buf[1]);
		int want = c->buf[3] == 1 ? 10 : c->buf[3] == 4 ? 22 : 5 + c->buf[4] + 2;
		if (c->got >= want) return c->state = 3;
	}
	return 0;
}

static short events(struct conn *c) { return c->state == 0 ? POLLOUT : POLLIN; }

static int cmp(const void *a, const void *b) {
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
	if (argc < 7) return 2;
	socks = strcmp(argv[1], "socks") == 0;
	int n = atoi(argv[3]);
	if (inet_pton(AF_INET, argv[4], &dst) != 1) die("bad address %s", argv[4]);
	port = atoi(argv[5]);
	sport = atoi(argv[6]);
	if (strcmp(argv[2], "many") == 0) {
		struct conn *c = calloc(n, sizeof *c);
		struct pollfd *p = calloc(n, sizeof *p);
		double t0 = now_ms();
		for (int i = 0; i < n; i++) start(&c[i]);
		int left = n;
		while (left) {
			int m = 0;
			int idx[n];
			for (int i = 0; i < n; i++)
				if (c[i].state != 3) {
					p[m].fd = c[i].fd;
					p[m].events = events(&c[i]);
					p[m].revents = 0;
					idx[m++] = i;
				}
			if (poll(p, m, -1) < 0) {
				if (errno == EINTR) continue;
				die("poll: %s", strerror(errno));
			}
			for (int j = 0; j < m; j++)
				if (p[j].revents && step(&c[idx[j]])) left--;
		}
		printf("ms=%.2f\n", now_ms() - t0);
		return 0;
	}
	double *t = calloc(n, sizeof *t);
	for (int i = 0; i < n; i++) {
		struct conn c;
		double t0 = now_ms();
		start(&c);
		while (c.state != 3) {
			struct pollfd p = {.fd = c.fd, .events = events(&c)};
			if (poll(&p, 1, -1) < 0) die("poll: %s", strerror(errno));
			step(&c);
		}
		const char req[] = "GET / HTTP/1.0\r\n\r\n";
		if (write(c.fd, req, sizeof req - 1) != (ssize_t)sizeof req - 1) die("write: %s", strerror(errno));
		struct pollfd p = {.fd = c.fd, .events = POLLIN};
		if (poll(&p, 1, -1) < 0) die("poll: %s", strerror(errno));
		char b[64];
		if (read(c.fd, b, sizeof b) <= 0 || strncmp(b, "HTTP/", 5)) die("no answer");
		t[i] = now_ms() - t0;
		close(c.fd);
	}
	qsort(t, n, sizeof *t, cmp);
	printf("ms=%.2f\n", t[n / 2]);
	return 0;
}
