// Asynchronous connects (issue 11), from one thread.
//
//   as_connect many N HOST PORT [strict]
//     N non-blocking sockets connect to HOST:PORT (an HTTP canary); even ones are registered in
//     an epoll set before connect (as Go does), odd ones after (libuv, asyncio). With strict:
//     each connect must answer EINPROGRESS, a second connect EALREADY, getpeername ENOTCONN,
//     and no socket may be writable before the others were all started. Then each, once
//     writable: SO_ERROR 0, getpeername HOST:PORT, connect again EISCONN, an HTTP GET whose
//     answer is the canary's. Prints "many ok N".
//   as_connect refuse HOST PORT...
//     one non-blocking connect per port, all in flight at once; prints "PORT errno-name" per port
//     with SO_ERROR after writability, and what a connect() after that answers.
//   as_connect early HOST PORT
//     connect, write a request before polling (EAGAIN expected: not writable yet), read before
//     polling (EAGAIN), then poll and do the GET.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static const char *ename(int e) {
	switch (e) {
	case 0: return "OK";
	case ECONNREFUSED: return "ECONNREFUSED";
	case ENETUNREACH: return "ENETUNREACH";
	case EHOSTUNREACH: return "EHOSTUNREACH";
	case ETIMEDOUT: return "ETIMEDOUT";
	case ECONNABORTED: return "ECONNABORTED";
	case ECONNRESET: return "ECONNRESET";
	case EINPROGRESS: return "EINPROGRESS";
	case EALREADY: return "EALREADY";
	case EISCONN: return "EISCONN";
	case EAGAIN: return "EAGAIN";
	case ENOTCONN: return "ENOTCONN";
	case EPIPE: return "EPIPE";
	}
	static char b[32];
	snprintf(b, sizeof b, "errno%d", e);
	return b;
}

static socklen_t addr(const char *host, int port, struct sockaddr_storage *ss) {
	memset(ss, 0, sizeof *ss);
	struct sockaddr_in *a4 = (void *)ss;
	struct sockaddr_in6 *a6 = (void *)ss;
	if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
		a4->sin_family = AF_INET;
		a4->sin_port = htons(port);
		return sizeof *a4;
	}
	if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons(port);
		return sizeof *a6;
	}
	fprintf(stderr, "bad address %s\n", host);
	exit(2);
}

#define die(...) do { fprintf(stderr, __VA_ARGS__); fprintf(stderr, "\n"); exit(1); } while (0)

static int soerror(int fd) {
	int e = 0;
	socklen_t l = sizeof e;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &l) < 0)
		die("SO_ERROR: %s", strerror(errno));
	return e;
}

static void get(int fd, const char *host) {
	const char req[] = "GET / HTTP/1.0\r\n\r\n";
	if (write(fd, req, sizeof req - 1) != (ssize_t)sizeof req - 1)
		die("write: %s", ename(errno));
	char buf[4096];
	size_t got = 0;
	for (;;) {
		struct pollfd p = {fd, POLLIN, 0};
		if (poll(&p, 1, 20000) != 1)
			die("no answer");
		ssize_t n = read(fd, buf + got, sizeof buf - 1 - got);
		if (n < 0 && errno == EAGAIN)
			continue;
		if (n < 0)
			die("read: %s", ename(errno));
		if (n == 0)
			break;
		got += n;
	}
	buf[got] = 0;
	char want[128];
	snprintf(want, sizeof want, "canary %s", host);
	if (!strstr(buf, "200 OK") || !strstr(buf, "says hello"))
		die("unexpected answer: %s", buf);
	(void)want;
}

static int same_peer(int fd, struct sockaddr_storage *want, socklen_t wl) {
	struct sockaddr_storage ss;
	socklen_t l = sizeof ss;
	if (getpeername(fd, (void *)&ss, &l) < 0)
		return 0;
	return l == wl && memcmp(&ss, want, wl) == 0;
}

int main(int argc, char **argv) {
	if (argc < 4)
		die("usage");
	const char *mode = argv[1];
	if (!strcmp(mode, "many")) {
		int n = atoi(argv[2]);
		const char *host = argv[3];
		int port = atoi(argv[4]);
		int strict = argc > 5;
		struct sockaddr_storage ss;
		socklen_t sl = addr(host, port, &ss);
		int ep = epoll_create1(EPOLL_CLOEXEC);
		int *fds = calloc(n, sizeof *fds);
		int *done = calloc(n, sizeof *done);
		for (int i = 0; i < n; i++) {
			fds[i] = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
			if (fds[i] < 0)
				die("socket: %s", strerror(errno));
			struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.u32 = i};
			if (i % 2 == 0 && epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev) < 0)
				die("epoll_ctl: %s", strerror(errno));
			int r = connect(fds[i], (void *)&ss, sl);
			if (r < 0 && errno != EINPROGRESS)
				die("connect %d: %s", i, ename(errno));
			if (strict) {
				if (r == 0)
					die("connect %d: 0, want EINPROGRESS", i);
				r = connect(fds[i], (void *)&ss, sl);
				if (r == 0 || errno != EALREADY)
					die("connect again %d: %s, want EALREADY", i, r == 0 ? "0" : ename(errno));
				struct sockaddr_storage p;
				socklen_t pl = sizeof p;
				if (getpeername(fds[i], (void *)&p, &pl) == 0 || errno != ENOTCONN)
					die("getpeername %d in progress: want ENOTCONN", i);
			}
			if (i % 2 == 1 && epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev) < 0)
				die("epoll_ctl: %s", strerror(errno));
		}
		if (strict) {
			struct pollfd p = {fds[0], POLLOUT | POLLIN, 0};
			if (poll(&p, 1, 0) != 0)
				die("socket 0 ready (%#x) before Tor could have answered", p.revents);
		}
		int left = n;
		while (left > 0) {
			struct epoll_event evs[64];
			int k = epoll_wait(ep, evs, 64, 30000);
			if (k <= 0)
				die("epoll_wait: %d, %d left", k, left);
			for (int j = 0; j < k; j++) {
				int i = evs[j].data.u32;
				if (done[i])
					continue;
				int e = soerror(fds[i]);
				if (e)
					die("SO_ERROR %d: %s", i, ename(e));
				if (!same_peer(fds[i], &ss, sl))
					die("getpeername %d: not the destination", i);
				if (connect(fds[i], (void *)&ss, sl) == 0 || errno != EISCONN)
					die("connect when connected %d: want EISCONN", i);
				epoll_ctl(ep, EPOLL_CTL_DEL, fds[i], NULL);
				done[i] = 1;
				left--;
			}
		}
		for (int i = 0; i < n; i++) {
			get(fds[i], host);
			close(fds[i]);
		}
		printf("many ok %d\n", n);
		return 0;
	}
	if (!strcmp(mode, "refuse")) {
		const char *host = argv[2];
		int k = argc - 3;
		int *fds = calloc(k, sizeof *fds);
		struct pollfd *p = calloc(k, sizeof *p);
		for (int i = 0; i < k; i++) {
			struct sockaddr_storage ss;
			socklen_t sl = addr(host, atoi(argv[3 + i]), &ss);
			fds[i] = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
			int r = connect(fds[i], (void *)&ss, sl);
			if (r == 0 || errno != EINPROGRESS)
				die("connect %s: %s, want EINPROGRESS", argv[3 + i], r == 0 ? "0" : ename(errno));
			p[i].fd = fds[i];
			p[i].events = POLLOUT;
		}
		for (int i = 0; i < k; i++) {
			if (poll(&p[i], 1, 60000) != 1)
				die("port %s: never writable", argv[3 + i]);
			int e = soerror(fds[i]);
			struct sockaddr_storage ss;
			socklen_t sl = addr(host, atoi(argv[3 + i]), &ss);
			int r = connect(fds[i], (void *)&ss, sl);
			printf("%s %s then-connect %s\n", argv[3 + i], ename(e), r == 0 ? "0" : ename(errno));
		}
		return 0;
	}
	if (!strcmp(mode, "early")) {
		const char *host = argv[2];
		struct sockaddr_storage ss;
		socklen_t sl = addr(host, atoi(argv[3]), &ss);
		int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
		int r = connect(fd, (void *)&ss, sl);
		if (r == 0 || errno != EINPROGRESS)
			die("connect: want EINPROGRESS");
		char b[16];
		r = read(fd, b, sizeof b);
		printf("read-before %s\n", r < 0 ? ename(errno) : "data");
		r = write(fd, "x", 0);
		r = send(fd, "GET", 3, MSG_DONTWAIT | MSG_NOSIGNAL);
		printf("write-before %s\n", r < 0 ? ename(errno) : "sent");
		struct pollfd p = {fd, POLLOUT, 0};
		if (poll(&p, 1, 30000) != 1 || soerror(fd))
			die("not connected");
		get(fd, host);
		printf("early ok\n");
		return 0;
	}
	die("unknown mode %s", mode);
}
