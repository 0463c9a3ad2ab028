// rb_supstorm: ROUNDS rounds, each: a UDP socket (made by the supervisor's sandbox and installed
// with ADDFD), a blocking direct connect to a loopback listener (AllowOutboundLocalhost), and a
// blocking proxied connect + HTTP GET to argv[1]:argv[2]. The test meanwhile sends SIGURG to every
// thread of the supervisor: each syscall the supervisor makes for the program may be interrupted
// and restarted. Every socket() must return a new datagram socket, every connect must succeed and
// every response must be complete.
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define ROUNDS 150

static int tcp_connect(const char *ip, int port) {
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0) return -1;
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
	inet_pton(AF_INET, ip, &sa.sin_addr);
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
		fprintf(stderr, "connect %s:%d: %s\n", ip, port, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

int main(int argc, char **argv) {
	if (argc < 4) return 2;
	int bad = 0;
	for (int i = 0; i < ROUNDS; i++) {
		int u = socket(AF_INET, SOCK_DGRAM, 0);
		int typ = 0;
		socklen_t tl = sizeof typ;
		if (u <= 2 || getsockopt(u, SOL_SOCKET, SO_TYPE, &typ, &tl) != 0 || typ != SOCK_DGRAM) {
			fprintf(stderr, "round %d: socket(AF_INET, SOCK_DGRAM) returned %d (SO_TYPE %d): %s\n", i, u, typ, strerror(errno));
			bad++;
		}
		if (u > 2) close(u);

		int l = tcp_connect("127.0.0.1", atoi(argv[3]));
		if (l < 0) bad++;
		else close(l);

		int fd = tcp_connect(argv[1], atoi(argv[2]));
		if (fd < 0) {
			bad++;
			continue;
		}
		const char *req = "GET / HTTP/1.0\r\n\r\n";
		if (write(fd, req, strlen(req)) != (ssize_t)strlen(req)) bad++;
		char buf[4096];
		size_t n = 0;
		for (;;) {
			ssize_t k = read(fd, buf + n, sizeof buf - 1 - n);
			if (k <= 0) break;
			n += k;
		}
		buf[n] = 0;
		if (strncmp(buf, "HTTP/1.0 200", 12) != 0 || strstr(buf, "canary") == NULL) {
			fprintf(stderr, "round %d: bad response (%zu bytes): %.40s\n", i, n, buf);
			bad++;
		}
		close(fd);
	}
	printf("RESULT rounds=%d bad=%d\n", ROUNDS, bad);
	return bad != 0;
}
