/* rawconnect MODE IP PORT PATH: an HTTP GET whose socket, connect, send and receive bypass libc's
 * wrappers, as programs that escape an LD_PRELOAD torsocks do.
 *   MODE libc: through libc's generic syscall(2) function (the C torsocks wraps that one too)
 *   MODE asm:  with the syscall instruction itself (as static and Go binaries do)
 * Prints the response; exit 0 on a 200 status. */
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

static int use_asm;

static long asm_syscall(long n, long a, long b, long c, long d, long e, long f)
{
#if defined(__x86_64__)
	long ret;
	register long r10 __asm__("r10") = d;
	register long r8 __asm__("r8") = e;
	register long r9 __asm__("r9") = f;
	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
			 : "rcx", "r11", "memory");
	return ret;
#elif defined(__aarch64__)
	register long x8 __asm__("x8") = n;
	register long x0 __asm__("x0") = a;
	register long x1 __asm__("x1") = b;
	register long x2 __asm__("x2") = c;
	register long x3 __asm__("x3") = d;
	register long x4 __asm__("x4") = e;
	register long x5 __asm__("x5") = f;
	__asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5) : "memory");
	return x0;
#else
#error "rawconnect: no inline syscall for this architecture"
#endif
}

static long sys(long n, long a, long b, long c, long d, long e, long f)
{
	if (!use_asm)
		return syscall(n, a, b, c, d, e, f);
	long r = asm_syscall(n, a, b, c, d, e, f);
	if (r < 0 && r > -4096) {
		errno = -r;
		return -1;
	}
	return r;
}

int main(int argc, char **argv)
{
	if (argc != 5 || (strcmp(argv[1], "libc") != 0 && strcmp(argv[1], "asm") != 0)) {
		fprintf(stderr, "usage: rawconnect libc|asm IP PORT PATH\n");
		return 2;
	}
	use_asm = strcmp(argv[1], "asm") == 0;
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
	if (inet_pton(AF_INET, argv[2], &sin.sin_addr) != 1) {
		fprintf(stderr, "rawconnect: bad IPv4 address %s\n", argv[2]);
		return 2;
	}
	long fd = sys(SYS_socket, AF_INET, SOCK_STREAM, 0, 0, 0, 0);
	if (fd < 0) {
		fprintf(stderr, "rawconnect: socket: %s\n", strerror(errno));
		return 1;
	}
	struct timeval tv = {.tv_sec = 60};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	if (sys(SYS_connect, fd, (long)&sin, sizeof sin, 0, 0, 0) != 0) {
		fprintf(stderr, "rawconnect: connect: %s\n", strerror(errno));
		return 1;
	}
	char req[512];
	int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", argv[4], argv[2]);
	if (sys(SYS_sendto, fd, (long)req, n, MSG_NOSIGNAL, 0, 0) != n) {
		fprintf(stderr, "rawconnect: send: %s\n", strerror(errno));
		return 1;
	}
	char buf[8192];
	size_t got = 0;
	for (;;) {
		long r = sys(SYS_recvfrom, fd, (long)(buf + got), sizeof buf - 1 - got, 0, 0, 0);
		if (r <= 0)
			break;
		got += r;
	}
	buf[got] = 0;
	fputs(buf, stdout);
	return strncmp(buf + 8, " 200", 4) == 0 ? 0 : 1;
}
