// pol_probe: one policy probe at the syscall level; prints key=value lines, errnos by name.
//
//	pol_probe connect ADDR PORT   socket, connect, getpeername, a second connect, an echo round trip
//	pol_probe udp ADDR PORT       socket(SOCK_DGRAM), then sendto, connect+send and sendmsg if it exists
//	pol_probe listen ADDR         socket, bind(ADDR:0), listen
//	pol_probe socket6             socket(AF_INET6, SOCK_STREAM)
//	pol_probe fastopen ADDR PORT  sendto(MSG_FASTOPEN) of an HTTP request, getpeername, the page
//	pol_probe fastopen-msg ...    the same with sendmsg(MSG_FASTOPEN)
//
// ADDR is numeric IPv4 or IPv6. Every line also names the process: pid=... ppid=...
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static const char *en(int r) { return r < 0 ? strerrorname_np(errno) : "0"; }

static socklen_t parse(const char *a, int port, struct sockaddr_storage *ss) {
	memset(ss, 0, sizeof *ss);
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, a, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		return sizeof *s4;
	}
	if (inet_pton(AF_INET6, a, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(port);
		return sizeof *s6;
	}
	fprintf(stderr, "bad address %s\n", a);
	exit(2);
}

static void show(const char *what, const struct sockaddr_storage *ss, socklen_t len) {
	char buf[INET6_ADDRSTRLEN] = "?";
	int port = 0;
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *s4 = (const void *)ss;
		inet_ntop(AF_INET, &s4->sin_addr, buf, sizeof buf);
		port = ntohs(s4->sin_port);
		printf("%s=%s:%d len=%u\n", what, buf, port, (unsigned)len);
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const void *)ss;
		inet_ntop(AF_INET6, &s6->sin6_addr, buf, sizeof buf);
		port = ntohs(s6->sin6_port);
		printf("%s=[%s]:%d len=%u\n", what, buf, port, (unsigned)len);
	} else {
		printf("%s=family%d len=%u\n", what, ss->ss_family, (unsigned)len);
	}
}

int main(int argc, char **argv) {
	if (argc < 2) return 2;
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("pid=%d ppid=%d\n", getpid(), getppid());
	const char *op = argv[1];
	struct sockaddr_storage ss;
	struct timeval tv = {.tv_sec = 20};

	if (!strcmp(op, "connect") && argc == 4) {
		socklen_t len = parse(argv[2], atoi(argv[3]), &ss);
		int fd = socket(ss.ss_family, SOCK_STREAM, 0);
		printf("socket=%d errno=%s\n", fd < 0 ? -1 : 0, en(fd));
		if (fd < 0) return 0;
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
		int r = connect(fd, (struct sockaddr *)&ss, len);
		printf("connect=%d errno=%s\n", r, en(r));
		if (r < 0) return 0;
		struct sockaddr_storage peer;
		socklen_t plen = sizeof peer;
		r = getpeername(fd, (struct sockaddr *)&peer, &plen);
		if (r < 0)
			printf("getpeername=%d errno=%s\n", r, en(r));
		else
			show("peer", &peer, plen);
		r = connect(fd, (struct sockaddr *)&ss, len);
		printf("connect2=%d errno=%s\n", r, en(r));
		const char msg[] = "pol-probe-echo\n";
		char buf[64] = {0};
		ssize_t n = write(fd, msg, sizeof msg - 1);
		if (n == (ssize_t)sizeof msg - 1) n = recv(fd, buf, sizeof msg - 1, MSG_WAITALL);
		printf("echo=%s\n", n == (ssize_t)sizeof msg - 1 && !memcmp(buf, msg, n) ? "ok" : "bad");
		return 0;
	}
	if ((!strcmp(op, "fastopen") || !strcmp(op, "fastopen-msg")) && argc == 4) {
		socklen_t len = parse(argv[2], atoi(argv[3]), &ss);
		int fd = socket(ss.ss_family, SOCK_STREAM, 0);
		printf("socket=%d errno=%s\n", fd < 0 ? -1 : 0, en(fd));
		if (fd < 0) return 0;
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
		char req[] = "GET / HTTP/1.0\r\n\r\n";
		ssize_t r;
		if (!strcmp(op, "fastopen")) {
			r = sendto(fd, req, sizeof req - 1, MSG_FASTOPEN, (struct sockaddr *)&ss, len);
		} else {
			struct iovec iov = {.iov_base = req, .iov_len = sizeof req - 1};
			struct msghdr mh = {.msg_name = &ss, .msg_namelen = len, .msg_iov = &iov, .msg_iovlen = 1};
			r = sendmsg(fd, &mh, MSG_FASTOPEN);
		}
		printf("send=%zd errno=%s\n", r, r < 0 ? strerrorname_np(errno) : "0");
		if (r < 0) return 0;
		struct sockaddr_storage peer;
		socklen_t plen = sizeof peer;
		if (getpeername(fd, (struct sockaddr *)&peer, &plen) == 0) show("peer", &peer, plen);
		char buf[4096];
		size_t got = 0;
		while (got < sizeof buf - 1 && (r = recv(fd, buf + got, sizeof buf - 1 - got, 0)) > 0) got += r;
		buf[got] = 0;
		printf("page=%s\n", strstr(buf, "canary") ? "canary" : "none");
		return 0;
	}
	if (!strcmp(op, "udp") && argc == 4) {
		socklen_t len = parse(argv[2], atoi(argv[3]), &ss);
		int fd = socket(ss.ss_family, SOCK_DGRAM, 0);
		printf("socket=%d errno=%s\n", fd < 0 ? -1 : 0, en(fd));
		if (fd < 0) return 0;
		char d[] = "pol-probe-datagram";
		int r = sendto(fd, d, sizeof d, 0, (struct sockaddr *)&ss, len);
		printf("sendto=%d errno=%s\n", r < 0 ? -1 : r, en(r));
		struct iovec iov = {.iov_base = d, .iov_len = sizeof d};
		struct msghdr mh = {.msg_name = &ss, .msg_namelen = len, .msg_iov = &iov, .msg_iovlen = 1};
		r = sendmsg(fd, &mh, 0);
		printf("sendmsg=%d errno=%s\n", r < 0 ? -1 : r, en(r));
		r = connect(fd, (struct sockaddr *)&ss, len);
		printf("connect=%d errno=%s\n", r, en(r));
		r = send(fd, d, sizeof d, 0);
		printf("send=%d errno=%s\n", r < 0 ? -1 : r, en(r));
		return 0;
	}
	if (!strcmp(op, "listen") && argc == 3) {
		socklen_t len = parse(argv[2], 0, &ss);
		int fd = socket(ss.ss_family, SOCK_STREAM, 0);
		printf("socket=%d errno=%s\n", fd < 0 ? -1 : 0, en(fd));
		if (fd < 0) return 0;
		int r = bind(fd, (struct sockaddr *)&ss, len);
		printf("bind=%d errno=%s\n", r, en(r));
		r = listen(fd, 8);
		printf("listen=%d errno=%s\n", r, en(r));
		return 0;
	}
	if (!strcmp(op, "socket6") && argc == 2) {
		int fd = socket(AF_INET6, SOCK_STREAM, 0);
		printf("socket=%d errno=%s\n", fd < 0 ? -1 : 0, en(fd));
		return 0;
	}
	fprintf(stderr, "usage: pol_probe connect|udp ADDR PORT | listen ADDR | socket6\n");
	return 2;
}
