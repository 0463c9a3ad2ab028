/* rawconnect IP PORT PATH: an HTTP GET whose socket, connect, send and receive are raw syscall(2)s,
 * not libc's wrappers: what a program that bypasses an LD_PRELOAD torsocks does (as Go, static and
 * io_uring programs do in their own ways). Prints the response; exit 0 on "200". */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: rawconnect IP PORT PATH\n");
		return 2;
	}
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
	if (inet_pton(AF_INET, argv[1], &sin.sin_addr) != 1) {
		fprintf(stderr, "rawconnect: bad IPv4 address %s\n", argv[1]);
		return 2;
	}
	long fd = syscall(SYS_socket, AF_INET, SOCK_STREAM, 0);
	if (fd < 0) {
		fprintf(stderr, "rawconnect: socket: %s\n", strerror(errno));
		return 1;
	}
	struct timeval tv = {.tv_sec = 60};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	if (syscall(SYS_connect, fd, &sin, sizeof sin) != 0) {
		fprintf(stderr, "rawconnect: connect: %s\n", strerror(errno));
		return 1;
	}
	char req[512];
	int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", argv[3], argv[1]);
	if (syscall(SYS_sendto, fd, req, n, MSG_NOSIGNAL, NULL, 0) != n) {
		fprintf(stderr, "rawconnect: send: %s\n", strerror(errno));
		return 1;
	}
	char buf[8192];
	size_t got = 0;
	for (;;) {
		long r = syscall(SYS_recvfrom, fd, buf + got, sizeof buf - 1 - got, 0, NULL, NULL);
		if (r <= 0)
			break;
		got += r;
	}
	buf[got] = 0;
	fputs(buf, stdout);
	return strncmp(buf, "HTTP/1.0 200", 12) == 0 || strncmp(buf, "HTTP/1.1 200", 12) == 0 ? 0 : 1;
}
